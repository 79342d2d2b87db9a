//! Head parsing: framing rules, smuggling vectors, limits, Connection and Expect.

use super::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 8192,
    max_headers: 100,
    max_uri_length: 1024,
};

fn request(raw: &str) -> Result<RequestHead, HeadError> {
    let mut head = RequestHead::default();
    match parse_request(raw.as_bytes(), &LIMITS, &mut head)? {
        true => Ok(head),
        false => panic!("incomplete: {raw:?}"),
    }
}

fn rejects(raw: &str) -> HeadError {
    request(raw).expect_err(raw)
}

#[test]
fn simple_get() {
    let raw = "GET /a?b HTTP/1.1\r\nHost: x.example:80\r\nX-Thing: 1\r\n\r\nrest";
    let head = request(raw).unwrap();
    assert_eq!(head.method(), Method::Get);
    assert_eq!(head.target.of(raw.as_bytes()), b"/a?b");
    assert_eq!(head.host.unwrap().of(raw.as_bytes()), b"x.example:80");
    assert_eq!(head.fields.framing, Framing::None);
    assert_eq!(head.fields.head_len, raw.len() - 4);
    assert!(head.fields.wants_keep_alive());
}

#[test]
fn framing_rules() {
    let h =
        request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
    assert_eq!(h.fields.framing, Framing::Length(5));
    let h =
        request("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
    assert_eq!(h.fields.framing, Framing::Chunked);
    let h = request("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!(h.fields.framing, Framing::None);
}

#[test]
fn smuggling_vectors() {
    let host = "Host: a\r\n";
    for bad in [
        format!("POST / HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Content-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Content-Length: 5, 6\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Content-Length: +5\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked, gzip\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: identity\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding : chunked\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n{host}X-A: 1\r\n folded\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n{host}X-A: 1\r2\r\n\r\n"),
        format!("GET / HTTP/1.1\n{host}\r\n"),
        format!("GET / HTTP/1.1\r\n{host}X-A: a\0b\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n{host}Bad(Name: x\r\n\r\n"),
        format!("GET http://a/ HTTP/1.1\r\n{host}\r\n"),
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        format!("GET / HTTP/1.1\r\n{host}{host}\r\n"),
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
    ] {
        rejects(&bad);
    }
}

#[test]
fn limits() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000));
    assert_eq!(rejects(&long), HeadError::UriTooLong);
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        rejects(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
        HeadError::TooManyHeaders
    );
    let mut head = RequestHead::default();
    let huge = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(9000));
    assert_eq!(
        parse_request(huge.as_bytes(), &LIMITS, &mut head),
        Err(HeadError::HeadTooLarge)
    );
    let partial_long_line = format!("GET /{}", "a".repeat(9000));
    assert_eq!(
        parse_request(partial_long_line.as_bytes(), &LIMITS, &mut head),
        Err(HeadError::UriTooLong)
    );
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nHo", &LIMITS, &mut head),
        Ok(false)
    );
}

#[test]
fn connection_options_and_expect() {
    let raw = "POST / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    let h = request(raw).unwrap();
    assert!(h.fields.close && !h.fields.wants_keep_alive());
    assert!(h.expect_continue);
    assert!(h.fields.is_connection_option(raw.as_bytes(), b"x-secret"));
    assert_eq!(
        rejects("GET / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n"),
        HeadError::UnsupportedExpectation
    );
    let h = request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert!(h.fields.wants_keep_alive());
    let h = request("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(!h.fields.wants_keep_alive());
}

#[test]
fn responses() {
    let mut head = ResponseHead::default();
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    assert!(parse_response(raw, &LIMITS, Method::Get, &mut head).unwrap());
    assert_eq!(head.fields.framing, Framing::Length(10));
    assert!(parse_response(raw, &LIMITS, Method::Head, &mut head).unwrap());
    assert_eq!(head.fields.framing, Framing::None);
    let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n";
    assert!(parse_response(raw, &LIMITS, Method::Get, &mut head).unwrap());
    assert_eq!(head.fields.framing, Framing::UntilClose);
    let raw = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
    assert!(parse_response(raw, &LIMITS, Method::Get, &mut head).unwrap());
    assert_eq!(head.fields.framing, Framing::None);
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(parse_response(raw, &LIMITS, Method::Get, &mut head).is_err());
    assert!(parse_response(b"garbage\r\n\r\n", &LIMITS, Method::Get, &mut head).is_err());
}

#[test]
fn host_port_split() {
    assert_eq!(host_without_port(b"a.example:8080"), b"a.example");
    assert_eq!(host_without_port(b"a.example"), b"a.example");
    assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
}
