//! Strict request parsing against request smuggling: every ambiguous or
//! malformed request gets `400` and a closed connection, and nothing of it
//! reaches the upstream. Each test first sends a valid request to prove the
//! proxy works at all, then one connection per vector.

use crate::support::origin;
use crate::support::*;

/// A named malformed request.
type Vector = (&'static str, &'static [u8]);

/// A request and the body the origin must receive for it.
type RequestAndBody = (&'static [u8], &'static [u8]);

/// How much of a rejected request the origin may have seen.
#[derive(Clone, Copy)]
enum Leak {
    /// Not even the head (the head itself is invalid).
    Nothing,
    /// A head perhaps, never a complete request (the body is invalid).
    NoCompleteRequest,
}

/// Checks each vector with 1 and 2 shards; reports all failing vectors.
fn assert_all_rejected(vectors: &[Vector], allowed_leak: Leak) {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        assert_status(&proxy.client().get("/valid"), 200);
        // The checker itself must be able to fail.
        let valid = client::request_head("GET", "/valid-again");
        assert!(check_rejected(&proxy, &origin, allowed_leak, valid.as_bytes()).is_err());
        assert_every_case(
            "vectors not rejected with 400 + close",
            vectors,
            |request| check_rejected(&proxy, &origin, allowed_leak, request),
        );
    });
}

fn check_rejected(
    proxy: &Proxy,
    origin: &Origin,
    allowed_leak: Leak,
    request: &[u8],
) -> Result<(), String> {
    let (heads_before, requests_before) = (origin.heads(), origin.request_count());
    let mut client = proxy.client();
    client.send(request);
    expect_status(client.try_read_response("GET"), 400)?;
    let after = client
        .try_read_to_close()
        .map_err(|error| format!("400 but the connection stayed open ({error:?})"))?;
    if !after.is_empty() {
        return Err(format!(
            "bytes after the 400: {:?}",
            String::from_utf8_lossy(&after)
        ));
    }
    match allowed_leak {
        Leak::Nothing if origin.heads() != heads_before => {
            Err("the upstream received the request head".into())
        }
        _ if origin.request_count() != requests_before => {
            Err("the upstream received the complete request".into())
        }
        _ => Ok(()),
    }
}

#[test]
fn ambiguous_body_framing_is_rejected() {
    assert_all_rejected(
        &[
            (
                "Content-Length with Transfer-Encoding",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "Transfer-Encoding with Content-Length",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            ),
            (
                "two differing Content-Length",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            ),
            ("differing Content-Length list", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!"),
            ("non-numeric Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5x\r\n\r\nhello"),
            ("signed Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello"),
            ("negative Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"),
            (
                "Transfer-Encoding chunked, gzip",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
            ),
            ("Transfer-Encoding identity", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"),
            ("Transfer-Encoding xchunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            ("Transfer-Encoding gzip only", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n"),
            (
                "chunked applied twice",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ],
        Leak::Nothing,
    );
}

#[test]
fn bad_chunked_request_bodies_are_rejected() {
    assert_all_rejected(
        &[
            ("chunk size zz", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            ("chunk size -1", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n"),
            ("chunk size 0x5", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"),
            (
                "chunk size overflowing 64 bits",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            (
                "bare LF after chunk size",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            ),
            (
                "chunk data longer than its size",
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
            ),
        ],
        Leak::NoCompleteRequest,
    );
}

#[test]
fn malformed_header_syntax_is_rejected() {
    assert_all_rejected(
        &[
            (
                "space before colon",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Foo : bar\r\n\r\n",
            ),
            (
                "space before colon in Content-Length",
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 5\r\n\r\nhello",
            ),
            (
                "obs-fold with space",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Foo: a\r\n b\r\n\r\n",
            ),
            (
                "obs-fold with tab",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Foo: a\r\n\tb\r\n\r\n",
            ),
            (
                "bare CR in a value",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Foo: a\rb\r\n\r\n",
            ),
            ("bare LF line endings", b"GET / HTTP/1.1\nHost: h\n\n"),
            (
                "one bare LF line ending",
                b"GET / HTTP/1.1\r\nHost: h\nX-Foo: a\r\n\r\n",
            ),
            (
                "NUL in a value",
                b"GET / HTTP/1.1\r\nHost: h\r\nX-Foo: a\0b\r\n\r\n",
            ),
            (
                "space in a name",
                b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
            ),
            (
                "parenthesis in a name",
                b"GET / HTTP/1.1\r\nHost: h\r\nBad(Name: x\r\n\r\n",
            ),
            (
                "control byte in a name",
                b"GET / HTTP/1.1\r\nHost: h\r\nBad\x01Name: x\r\n\r\n",
            ),
            ("empty name", b"GET / HTTP/1.1\r\nHost: h\r\n: x\r\n\r\n"),
        ],
        Leak::Nothing,
    );
}

#[test]
fn bad_request_line_or_host_is_rejected() {
    assert_all_rejected(
        &[
            (
                "absolute-form target",
                b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            ),
            ("missing Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"),
            (
                "two Host headers",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            ),
            (
                "double space in request line",
                b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            ),
            (
                "trailing space in request line",
                b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
            ),
        ],
        Leak::Nothing,
    );
}

#[test]
fn unusual_but_valid_requests_are_accepted() {
    const VALID: [(&str, RequestAndBody); 8] = [
        ("upper-case CHUNKED", (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok")),
        ("tab as whitespace", (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\t\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok")),
        ("Content-Length with leading zeros", (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 002\r\n\r\nok", b"ok")),
        ("chunk size with leading zeros", (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0002\r\nok\r\n0\r\n\r\n", b"ok")),
        ("every token character in a name", (b"GET / HTTP/1.1\r\nHost: h\r\nX-!#$%&'*+-.^_`|~09az: v\r\n\r\n", b"")),
        ("empty header value", (b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\n\r\n", b"")),
        (
            "obs-text in a value",
            (b"GET / HTTP/1.1\r\nHost: h\r\nX-Latin: caf\xe9\r\n\r\n", b""),
        ),
        (
            "GET with a body",
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        ),
    ];
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = Proxy::in_front_of(&origin, shards);
        assert_every_case(
            "valid requests refused or mangled",
            &VALID,
            |(request, body)| {
                let mut client = proxy.client();
                client.send(request);
                let response = expect_status(client.try_read_response("POST"), 200)?;
                let expected = BodyDigest::of(body).to_text();
                match response.body_text() == expected {
                    true => Ok(()),
                    false => Err(format!(
                        "the origin saw {:?}, not {expected:?}",
                        response.body_text()
                    )),
                }
            },
        );
    });
}

#[test]
fn connect_is_refused_not_tunnelled() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n");
        let response = client.read_response("CONNECT");
        assert!(
            [400, 405, 501].contains(&response.status),
            "CONNECT got {} (expected 400, 405 or 501)",
            response.status
        );
        assert_eq!(origin.heads(), 0, "CONNECT reached the upstream");
    });
}
