//! Parsing and validating message heads (request line or status line plus
//! header fields), strictly enough that the proxy and the server behind it can
//! never disagree about where a message ends (RFC 9112 §6, §11.2).
//!
//! httparse does the tokenising; this module adds what it leaves to callers:
//! bare CR / bare LF / NUL anywhere in the head, Content-Length and
//! Transfer-Encoding rules, Host, Expect, Connection options, and limits.
//! A parsed head stores [`Span`]s into the caller's buffer, so one
//! [`RequestHead`] / [`ResponseHead`] per connection is reused for every
//! message without allocating.

use std::mem::MaybeUninit;

use super::{list_elements, Span};
use crate::config::MAX_HEADERS_CAP;

/// Why a head was refused. The proxy maps each kind to one status code
/// (400/414/431/417/501 for clients, 502 for upstream responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("request target too long")]
    UriTooLong,
    #[error("header section too large")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("unsupported expectation")]
    UnsupportedExpectation,
    #[error("request target is not in origin-form")]
    NotOriginForm,
    #[error("method not implemented")]
    MethodNotImplemented,
}

/// Size limits applied while parsing, from `[http]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_uri_length: usize,
}

/// How the body that follows a head is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// No body at all.
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: ... chunked`.
    Chunked,
    /// Response body that ends when the server closes the connection.
    UntilClose,
}

/// Header fields the proxy treats specially; computed once at parse time so
/// that rewriting never compares names again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Other,
    /// Connection, Keep-Alive, Proxy-Connection, TE, Upgrade.
    HopByHop,
    /// Announces the trailer fields of a chunked body (RFC 9110 §6.6.2):
    /// passed on exactly when the chunked body (trailers included) is.
    Trailer,
    Host,
    Expect,
    ContentLength,
    TransferEncoding,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Via,
}

#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    pub kind: HeaderKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    Connect,
    Other,
}

impl Method {
    fn classify(name: &[u8]) -> Method {
        match name {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Safe methods (RFC 9110 §9.2.1): GET, HEAD, OPTIONS, TRACE. Any
    /// other, including every method without a name here, may change state.
    pub fn is_safe(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Trace
        )
    }

    /// Idempotent methods (RFC 9110 §9.2.2) may be sent again after a failure.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// Fields shared by request and response heads.
#[derive(Debug, Default)]
pub struct Fields {
    pub headers: Vec<Header>,
    /// Bytes of the head, including the final CRLFCRLF.
    pub head_len: usize,
    pub minor_version: u8,
    pub framing: Framing,
    /// `Connection: close` was sent.
    pub close: bool,
    /// `Connection: keep-alive` was sent (matters for HTTP/1.0).
    pub keep_alive: bool,
    /// Other Connection options: names of extra hop-by-hop fields to drop.
    pub connection_options: Vec<Span>,
}

impl Fields {
    fn reset(&mut self) {
        self.headers.clear();
        self.connection_options.clear();
        self.head_len = 0;
        self.minor_version = 1;
        self.framing = Framing::None;
        self.close = false;
        self.keep_alive = false;
    }

    /// Whether the sender allows the connection to be reused after this message.
    pub fn wants_keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }

    /// Whether the field named `name` was listed as a Connection option.
    pub fn is_connection_option(&self, buf: &[u8], name: &[u8]) -> bool {
        self.connection_options
            .iter()
            .any(|opt| opt.of(buf).eq_ignore_ascii_case(name))
    }
}

/// Which request-target forms a listener takes (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedForms {
    /// A reverse proxy: origin-form (and `OPTIONS *`) only; CONNECT is 501.
    Origin,
    /// A forward proxy as well: absolute-form `http://` targets and CONNECT
    /// with authority-form (`[forward_proxy] enabled`).
    OriginAndProxy,
}

/// The form of a parsed request's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetForm {
    #[default]
    Origin,
    /// `OPTIONS *`.
    Asterisk,
    /// `http://host[:port]/path` (forward proxy).
    Absolute,
    /// CONNECT's `host:port` (forward proxy).
    Authority,
}

#[derive(Debug, Default)]
pub struct RequestHead {
    pub fields: Fields,
    pub method: Span,
    pub method_kind: Option<Method>,
    pub target: Span,
    pub form: TargetForm,
    pub host: Option<Span>,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

impl RequestHead {
    pub fn method(&self) -> Method {
        self.method_kind.unwrap_or(Method::Other)
    }
}

#[derive(Debug, Default)]
pub struct ResponseHead {
    pub fields: Fields,
    pub status: u16,
    pub reason: Span,
}

/// Refuses line endings other than CRLF. httparse accepts a lone LF as a line
/// end, which is exactly the kind of disagreement request smuggling feeds on;
/// httparse itself rejects bare CR, NUL and other controls. Every header line
/// starts right after a line ending, and the head ends with CRLFCRLF, so
/// checking those spots covers every line without scanning the bytes again.
fn check_line_endings(
    buf: &[u8],
    end: usize,
    headers: &[httparse::Header<'_>],
) -> Result<(), HeadError> {
    if end < 4 || &buf[end - 4..end] != b"\r\n\r\n" {
        return Err(HeadError::Malformed("bare LF in header section"));
    }
    for header in headers {
        let start = Span::within(buf, header.name.as_bytes()).start as usize;
        if start < 2 || &buf[start - 2..start] != b"\r\n" {
            return Err(HeadError::Malformed("bare LF in header section"));
        }
    }
    Ok(())
}

/// What to report when the buffer is full and the head still has no end.
fn overflow_error(buf: &[u8], limits: &Limits) -> HeadError {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    if line_end > limits.max_uri_length {
        HeadError::UriTooLong
    } else {
        HeadError::HeadTooLarge
    }
}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header field name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header field value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status code"),
        httparse::Error::Token => HeadError::Malformed("invalid token"),
        httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
    }
}

/// Parses a request head at the start of `buf` into `out`.
///
/// `Ok(false)`: incomplete, read more (unless `buf` is already
/// `max_head_bytes` long, which is reported as an error here).
/// `Ok(true)`: `out` holds the head; the body starts at `out.fields.head_len`.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    out: &mut RequestHead,
) -> Result<bool, HeadError> {
    parse_request_with(buf, limits, AcceptedForms::Origin, out)
}

/// [`parse_request`] taking the target forms `forms` allows.
pub fn parse_request_with(
    buf: &[u8],
    limits: &Limits,
    forms: AcceptedForms,
    out: &mut RequestHead,
) -> Result<bool, HeadError> {
    let mut slots = [MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let status = req
        .parse_with_uninit_headers(buf, &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)])
        .map_err(map_httparse)?;
    let httparse::Status::Complete(end) = status else {
        if buf.len() >= limits.max_head_bytes {
            return Err(overflow_error(buf, limits));
        }
        return Ok(false);
    };
    if end > limits.max_head_bytes {
        return Err(overflow_error(buf, limits));
    }
    check_line_endings(buf, end, req.headers)?;
    out.fields.reset();
    out.host = None;
    out.expect_continue = false;
    // Complete implies a whole request line.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    if target.len() > limits.max_uri_length {
        return Err(HeadError::UriTooLong);
    }
    let kind = Method::classify(method.as_bytes());
    out.method = Span::within(buf, method.as_bytes());
    out.method_kind = Some(kind);
    out.target = Span::within(buf, target.as_bytes());
    out.fields.minor_version = version;
    out.fields.head_len = end;
    out.form = target_form(kind, target.as_bytes(), forms)?;

    let mut summary = HeaderSummary::default();
    for h in req.headers.iter() {
        let header = summary.record(buf, h.name.as_bytes(), h.value, &mut out.fields)?;
        match header.kind {
            HeaderKind::Host => {
                if out.host.is_some() {
                    return Err(HeadError::Malformed("more than one Host field"));
                }
                if !valid_host(header.value.of(buf)) {
                    return Err(HeadError::Malformed("invalid Host"));
                }
                out.host = Some(header.value);
            }
            // RFC 9110 §10.1.1: an HTTP/1.0 client cannot expect 100-continue.
            HeaderKind::Expect if version >= 1 => {
                if header.value.of(buf).eq_ignore_ascii_case(b"100-continue") {
                    out.expect_continue = true;
                } else {
                    return Err(HeadError::UnsupportedExpectation);
                }
            }
            _ => {}
        }
        out.fields.headers.push(header);
    }
    if version >= 1 && out.host.is_none() {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    if summary.transfer_encoding && version == 0 {
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    out.fields.framing = summary.framing(Framing::None)?;
    if out.form == TargetForm::Authority && out.fields.framing != Framing::None {
        // A CONNECT body has no meaning (RFC 9110 §9.3.6); its bytes would be
        // taken for the tunnel's.
        return Err(HeadError::Malformed("CONNECT with a body"));
    }
    Ok(true)
}

/// The target's form, if `forms` accepts it for this method.
fn target_form(kind: Method, target: &[u8], forms: AcceptedForms) -> Result<TargetForm, HeadError> {
    let proxy = forms == AcceptedForms::OriginAndProxy;
    match (kind, target) {
        (Method::Connect, _) if !proxy => Err(HeadError::MethodNotImplemented),
        (Method::Connect, t) => super::target::connect_authority(t)
            .map(|_| TargetForm::Authority)
            .ok_or(HeadError::Malformed("CONNECT target is not host:port")),
        (_, [b'/', ..]) => Ok(TargetForm::Origin),
        (Method::Options, b"*") => Ok(TargetForm::Asterisk),
        (_, t) if proxy && super::target::absolute(t).is_some() => Ok(TargetForm::Absolute),
        _ => Err(HeadError::NotOriginForm),
    }
}

/// Parses a response head; `request_method` decides whether a body follows
/// (RFC 9112 §6.3: none after HEAD, none for 1xx/204/304).
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    request_method: Method,
    out: &mut ResponseHead,
) -> Result<bool, HeadError> {
    let mut slots = [MaybeUninit::<httparse::Header>::uninit(); MAX_HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut slots[..limits.max_headers.min(MAX_HEADERS_CAP)],
        )
        .map_err(map_httparse)?;
    let httparse::Status::Complete(end) = status else {
        if buf.len() >= limits.max_head_bytes {
            return Err(HeadError::HeadTooLarge);
        }
        return Ok(false);
    };
    if end > limits.max_head_bytes {
        return Err(HeadError::HeadTooLarge);
    }
    check_line_endings(buf, end, resp.headers)?;
    out.fields.reset();
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    if !(100..=999).contains(&status) {
        return Err(HeadError::Malformed("invalid status code"));
    }
    out.status = status;
    out.reason = resp
        .reason
        .map(|r| Span::within(buf, r.as_bytes()))
        .unwrap_or_default();
    out.fields.minor_version = version;
    out.fields.head_len = end;

    let mut summary = HeaderSummary::default();
    for h in resp.headers.iter() {
        let header = summary.record(buf, h.name.as_bytes(), h.value, &mut out.fields)?;
        out.fields.headers.push(header);
    }
    let bodiless = request_method == Method::Head || status < 200 || status == 204 || status == 304;
    let framing = summary.framing(Framing::UntilClose)?;
    out.fields.framing = if bodiless { Framing::None } else { framing };
    Ok(true)
}

/// What the header walk learns about framing.
#[derive(Default)]
struct HeaderSummary {
    content_length: Option<u64>,
    transfer_encoding: bool,
    /// The last transfer coding seen is `chunked`.
    chunked_last: bool,
}

impl HeaderSummary {
    /// Classifies one field and folds framing-relevant values into the summary.
    fn record(
        &mut self,
        buf: &[u8],
        name: &[u8],
        value: &[u8],
        fields: &mut Fields,
    ) -> Result<Header, HeadError> {
        let kind = classify(name);
        match kind {
            HeaderKind::ContentLength => {
                for element in value.split(|&b| b == b',') {
                    let n = parse_content_length(super::trim_ows(element))?;
                    match self.content_length {
                        Some(seen) if seen != n => {
                            return Err(HeadError::Malformed("conflicting Content-Length values"))
                        }
                        _ => self.content_length = Some(n),
                    }
                }
            }
            HeaderKind::TransferEncoding => {
                self.transfer_encoding = true;
                for coding in list_elements(value) {
                    if self.chunked_last {
                        // Anything after chunked (even chunked again) is refused.
                        return Err(HeadError::Malformed("transfer coding after chunked"));
                    }
                    if !coding.iter().all(|&b| is_token(b)) {
                        return Err(HeadError::Malformed("invalid transfer coding"));
                    }
                    self.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                }
            }
            HeaderKind::HopByHop if name.eq_ignore_ascii_case(b"connection") => {
                for option in list_elements(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        fields.close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        fields.keep_alive = true;
                    } else {
                        fields.connection_options.push(Span::within(buf, option));
                    }
                }
            }
            _ => {}
        }
        Ok(Header {
            name: Span::within(buf, name),
            value: Span::within(buf, value),
            kind,
        })
    }

    fn framing(&self, without_headers: Framing) -> Result<Framing, HeadError> {
        match (self.transfer_encoding, self.content_length) {
            (true, Some(_)) => Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            )),
            (true, None) if self.chunked_last => Ok(Framing::Chunked),
            (true, None) => Err(HeadError::Malformed(
                "Transfer-Encoding does not end in chunked",
            )),
            (false, Some(0)) => Ok(Framing::None),
            (false, Some(n)) => Ok(Framing::Length(n)),
            (false, None) => Ok(without_headers),
        }
    }
}

fn parse_content_length(digits: &[u8]) -> Result<u64, HeadError> {
    // 19 digits always fit in a u64; a longer value is no real body size.
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("invalid Content-Length"));
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

fn classify(name: &[u8]) -> HeaderKind {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => HeaderKind::HopByHop,
        3 if is(b"via") => HeaderKind::Via,
        4 if is(b"host") => HeaderKind::Host,
        6 if is(b"expect") => HeaderKind::Expect,
        7 if is(b"trailer") => HeaderKind::Trailer,
        7 if is(b"upgrade") => HeaderKind::HopByHop,
        10 if is(b"connection") || is(b"keep-alive") => HeaderKind::HopByHop,
        14 if is(b"content-length") => HeaderKind::ContentLength,
        15 if is(b"x-forwarded-for") => HeaderKind::XForwardedFor,
        16 if is(b"proxy-connection") => HeaderKind::HopByHop,
        16 if is(b"x-forwarded-host") => HeaderKind::XForwardedHost,
        17 if is(b"transfer-encoding") => HeaderKind::TransferEncoding,
        17 if is(b"x-forwarded-proto") => HeaderKind::XForwardedProto,
        _ => HeaderKind::Other,
    }
}

/// tchar from RFC 9110 §5.6.2.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// uri-host [":" port]: reg-name or IP literal characters only.
fn valid_host(host: &[u8]) -> bool {
    host.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~:[]%!$&'()*+,;=".contains(&b))
}

/// The host part of a Host value, without port or IPv6 brackets' port.
pub fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
