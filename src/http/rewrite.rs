//! Writes the head a message carries to the other side of the proxy: hop-by-hop
//! fields removed (RFC 9110 §7.6.1), forwarding fields added, every other
//! field passed on in its original order and case. `Trailer` goes with the
//! trailer section it announces: kept when a chunked body passes through
//! verbatim (trailers and all), dropped when the body is de-chunked or not
//! chunked at all (no trailers can follow).
//!
//! Output goes into a per-connection `Vec` that is cleared, never shrunk, so
//! the steady state allocates nothing.

use super::head::{Fields, Framing, HeaderKind, RequestHead, ResponseHead};

/// Which forwarding fields to add, from `[http]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub x_forwarded_host: bool,
    pub via: bool,
}

/// Our Via entry (RFC 9110 §7.6.3): protocol version and a pseudonym.
pub const VIA: &[u8] = b"1.1 shardproxy";

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Pushes `name: value, extra` — used to append to X-Forwarded-For and Via.
fn push_appended(out: &mut Vec<u8>, name: &[u8], value: &[u8], extra: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    if !value.is_empty() {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// Whether a field must not cross the proxy.
#[inline]
fn is_hop_by_hop(fields: &Fields, buf: &[u8], kind: HeaderKind, name: &[u8]) -> bool {
    kind == HeaderKind::HopByHop
        || (!fields.connection_options.is_empty() && fields.is_connection_option(buf, name))
}

fn last_of(fields: &Fields, kind: HeaderKind) -> Option<usize> {
    fields.headers.iter().rposition(|h| h.kind == kind)
}

/// Changes to a forwarded request beyond the usual rewriting: the cache drops
/// the client's validators and sends its own when it revalidates or fills.
#[derive(Debug, Clone, Copy)]
pub struct RequestEdit<'a> {
    /// Fields (by name) not to forward.
    pub drop_field: fn(&[u8]) -> bool,
    /// Complete field lines (each ending in CRLF) to add.
    pub extra: &'a [u8],
    /// The method to send instead of the client's (the cache fills a HEAD
    /// miss with a GET).
    pub method: Option<&'a [u8]>,
}

impl RequestEdit<'_> {
    pub const NONE: RequestEdit<'static> = RequestEdit {
        drop_field: |_| false,
        extra: b"",
        method: None,
    };
}

/// Writes the request head to send upstream. Always HTTP/1.1 with a persistent
/// connection; `Expect` is dropped because the proxy answers 100-continue itself.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client_ip: &[u8],
    opts: ForwardOptions,
) {
    write_request_head_edited(out, buf, head, client_ip, opts, RequestEdit::NONE)
}

/// [`write_request_head`] with fields dropped and added as `edit` says.
pub fn write_request_head_edited(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client_ip: &[u8],
    opts: ForwardOptions,
    edit: RequestEdit<'_>,
) {
    let fields = (client_ip, opts, edit, Omit::HopByHop);
    write_with_target_as_sent(out, buf, head, fields);
}

/// The head a forward proxy sends a parent proxy: the absolute-form target
/// kept, our own `Proxy-*` fields (in `edit.extra`) instead of the
/// client's, `edit` applied and the usual rewriting otherwise.
pub fn write_parent_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client_ip: &[u8],
    opts: ForwardOptions,
    edit: RequestEdit<'_>,
) {
    write_with_target_as_sent(out, buf, head, (client_ip, opts, edit, Omit::Proxy));
}

/// A request line with the client's target, then the fields as
/// [`write_request_fields`] writes them with `fields`' arguments.
fn write_with_target_as_sent(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    fields: (&[u8], ForwardOptions, RequestEdit<'_>, Omit),
) {
    let (client_ip, opts, edit, omit) = fields;
    out.extend_from_slice(edit.method.unwrap_or(head.method.of(buf)));
    out.push(b' ');
    out.extend_from_slice(head.target.of(buf));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    write_request_fields(out, buf, head, client_ip, opts, edit, omit);
}

/// The head a forward proxy sends for an absolute-form request (RFC 9112
/// §3.2.2): origin-form `path` (`/` when empty), `Host` set to the target's
/// authority, `Proxy-*` fields (ours to consume) dropped, then `edit`
/// applied (another method, fields dropped and added) and the usual
/// rewriting otherwise.
pub fn write_forward_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    target: (&[u8], &[u8]),
    client_ip: &[u8],
    opts: ForwardOptions,
    edit: RequestEdit<'_>,
) {
    let (authority, path) = target;
    out.extend_from_slice(edit.method.unwrap_or(head.method.of(buf)));
    out.push(b' ');
    if !path.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(out, b"Host", authority);
    write_request_fields(out, buf, head, client_ip, opts, edit, Omit::HostAndProxy);
}

/// Whether a request field is addressed to the proxy (`Proxy-Authorization`,
/// `Proxy-Connection`, ...), not to the server behind it.
pub fn is_proxy_field(name: &[u8]) -> bool {
    name.len() > 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
}

/// Which of the client's fields a forwarded head leaves out, beyond
/// hop-by-hop ones and `RequestEdit::drop_field`'s.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Omit {
    HopByHop,
    /// `Proxy-*`: a forward proxy consumes them.
    Proxy,
    /// `Host` too: written already, from an absolute-form target.
    HostAndProxy,
}

/// The field lines and the blank line of a forwarded request head.
fn write_request_fields(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client_ip: &[u8],
    opts: ForwardOptions,
    edit: RequestEdit<'_>,
    omit: Omit,
) {
    let fields = &head.fields;
    let last_xff = last_of(fields, HeaderKind::XForwardedFor);
    let last_via = last_of(fields, HeaderKind::Via);
    for (i, h) in fields.headers.iter().enumerate() {
        let (name, value) = (h.name.of(buf), h.value.of(buf));
        if is_hop_by_hop(fields, buf, h.kind, name) || (edit.drop_field)(name) {
            continue;
        }
        let dropped = match omit {
            Omit::HopByHop => false,
            Omit::Proxy => is_proxy_field(name),
            Omit::HostAndProxy => name.eq_ignore_ascii_case(b"host") || is_proxy_field(name),
        };
        if dropped {
            continue;
        }
        match h.kind {
            HeaderKind::Expect => {}
            HeaderKind::Trailer if fields.framing != Framing::Chunked => {}
            HeaderKind::XForwardedFor if opts.x_forwarded_for && Some(i) == last_xff => {
                push_appended(out, name, value, client_ip)
            }
            HeaderKind::Via if opts.via && Some(i) == last_via => {
                push_appended(out, name, value, VIA)
            }
            // What a client claims about the original scheme and host is not trusted: ours replace it.
            HeaderKind::XForwardedProto if opts.x_forwarded_proto => {}
            HeaderKind::XForwardedHost if opts.x_forwarded_host => {}
            _ => push_field(out, name, value),
        }
    }
    if opts.x_forwarded_for && last_xff.is_none() {
        push_field(out, b"X-Forwarded-For", client_ip);
    }
    if opts.x_forwarded_proto {
        push_field(out, b"X-Forwarded-Proto", b"http");
    }
    if let (true, Some(host)) = (opts.x_forwarded_host, head.host) {
        push_field(out, b"X-Forwarded-Host", host.of(buf));
    }
    if opts.via && last_via.is_none() {
        push_field(out, b"Via", VIA);
    }
    out.extend_from_slice(edit.extra);
    out.extend_from_slice(b"\r\n");
}

/// How the client side of a response is framed.
#[derive(Debug, Clone, Copy)]
pub struct ClientFraming {
    /// Send `Connection: close` and close after the body.
    pub close: bool,
    /// The client speaks HTTP/1.0 (needs an explicit `Connection: keep-alive`).
    pub http10: bool,
    /// The body is sent de-chunked (HTTP/1.0 client): drop Transfer-Encoding.
    pub dechunk: bool,
}

/// Writes the response head to send to the client; `extra` holds complete
/// field lines the proxy adds (such as `Cache-Status`).
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    via: bool,
    framing: ClientFraming,
    extra: &[u8],
) {
    let fields = &head.fields;
    out.extend_from_slice(b"HTTP/1.1 ");
    push_status(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason.of(buf));
    out.extend_from_slice(b"\r\n");
    let last_via = last_of(fields, HeaderKind::Via);
    for (i, h) in fields.headers.iter().enumerate() {
        let (name, value) = (h.name.of(buf), h.value.of(buf));
        if is_hop_by_hop(fields, buf, h.kind, name) {
            continue;
        }
        match h.kind {
            HeaderKind::TransferEncoding if framing.dechunk => {}
            HeaderKind::Trailer if framing.dechunk || fields.framing != Framing::Chunked => {}
            HeaderKind::Via if via && Some(i) == last_via => push_appended(out, name, value, VIA),
            _ => push_field(out, name, value),
        }
    }
    if via && last_via.is_none() {
        push_field(out, b"Via", VIA);
    }
    out.extend_from_slice(extra);
    if framing.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if framing.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_status(out: &mut Vec<u8>, status: u16) {
    let digits = [
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ];
    out.extend_from_slice(&digits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_request, parse_response, Limits, Method};

    const LIMITS: Limits = Limits {
        max_head_bytes: 8192,
        max_headers: 100,
        max_uri_length: 1024,
    };
    const ALL: ForwardOptions = ForwardOptions {
        x_forwarded_for: true,
        x_forwarded_proto: true,
        x_forwarded_host: true,
        via: true,
    };

    fn rewrite_request(raw: &str, opts: ForwardOptions) -> String {
        let mut head = RequestHead::default();
        assert!(parse_request(raw.as_bytes(), &LIMITS, &mut head).unwrap());
        let mut out = Vec::new();
        write_request_head(&mut out, raw.as_bytes(), &head, b"10.0.0.1", opts);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn request_hop_by_hop_removed_and_forwarding_added() {
        let raw = "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Up: 1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
                   Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTrailer: y\r\nx-down: 2\r\n\r\n";
        let out = rewrite_request(raw, ALL);
        assert_eq!(
            out,
            "GET /x HTTP/1.1\r\nHost: a.example\r\nX-Up: 1\r\nx-down: 2\r\nX-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: a.example\r\nVia: 1.1 shardproxy\r\n\r\n"
        );
    }

    #[test]
    fn request_appends_to_existing_chain() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-for: 1.2.3.4\r\nVia: 1.0 other\r\nX-Forwarded-Proto: https\r\n\r\n";
        let none = ForwardOptions {
            x_forwarded_for: true,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            via: true,
        };
        let out = rewrite_request(raw, none);
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-for: 1.2.3.4, 10.0.0.1\r\nVia: 1.0 other, 1.1 shardproxy\r\n\
             X-Forwarded-Proto: https\r\n\r\n"
        );
    }

    #[test]
    fn trailer_goes_with_a_chunked_body_only() {
        let chunked =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n";
        assert!(rewrite_request(chunked, ALL).contains("Trailer: X-Sum\r\n"));
        let sized = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTrailer: X-Sum\r\n\r\n";
        assert!(!rewrite_request(sized, ALL).contains("Trailer"));

        let respond = |raw: &[u8], dechunk: bool| {
            let mut head = ResponseHead::default();
            assert!(parse_response(raw, &LIMITS, Method::Get, &mut head).unwrap());
            let mut out = Vec::new();
            let framing = ClientFraming {
                close: dechunk,
                http10: dechunk,
                dechunk,
            };
            write_response_head(&mut out, raw, &head, false, framing, b"");
            String::from_utf8(out).unwrap()
        };
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n";
        assert!(respond(chunked, false).contains("Trailer: X-Sum\r\n"));
        assert!(!respond(chunked, true).contains("Trailer"));
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nTrailer: X-Sum\r\n\r\n";
        assert!(!respond(sized, false).contains("Trailer"));
    }

    #[test]
    fn forward_request_goes_out_in_origin_form() {
        let raw = "GET http://A.example:8080?q HTTP/1.1\r\nHost: a.example:8080\r\nProxy-Authorization: Basic x\r\n\
                   Proxy-Connection: keep-alive\r\nX-Up: 1\r\n\r\n";
        let mut head = RequestHead::default();
        let forms = crate::http::head::AcceptedForms::OriginAndProxy;
        assert!(
            crate::http::head::parse_request_with(raw.as_bytes(), &LIMITS, forms, &mut head)
                .unwrap()
        );
        let target = crate::http::target::absolute(head.target.of(raw.as_bytes())).unwrap();
        let mut out = Vec::new();
        let none = ForwardOptions {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            via: false,
        };
        let parts = (target.authority.text, target.path);
        write_forward_request_head(
            &mut out,
            raw.as_bytes(),
            &head,
            parts,
            b"10.0.0.1",
            none,
            RequestEdit {
                extra: b"X-Extra: 1\r\n",
                ..RequestEdit::NONE
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /?q HTTP/1.1\r\nHost: A.example:8080\r\nX-Up: 1\r\nX-Extra: 1\r\n\r\n"
        );
    }

    #[test]
    fn response_head_for_http10_client() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\nX-A: b\r\n\r\n";
        let mut head = ResponseHead::default();
        assert!(parse_response(raw, &LIMITS, Method::Get, &mut head).unwrap());
        let mut out = Vec::new();
        let framing = ClientFraming {
            close: true,
            http10: true,
            dechunk: true,
        };
        write_response_head(&mut out, raw, &head, false, framing, b"");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n"
        );
    }
}
