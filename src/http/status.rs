//! Responses the proxy writes itself: interim 100 Continue and short
//! plain-text error pages, one per status the proxy can produce.

/// Sent to a client that asked `Expect: 100-continue` once its request is routed.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for every status the proxy generates itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

/// Appends a complete error response: `status reason` as a text/plain body.
/// The proxy's own 503s (overload, no server up) tell clients when to come
/// back: `Retry-After: 1`.
pub fn write_error(out: &mut Vec<u8>, status: u16, close: bool) {
    use std::io::Write;
    let reason = reason(status);
    let body_len = 3 + 1 + reason.len() + 1;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\n{}{}\r\n{status} {reason}\n",
        if status == 503 { "Retry-After: 1\r\n" } else { "" },
        if close { "Connection: close\r\n" } else { "" }
    );
}

/// [`write_error`] with extra field lines (each ending in CRLF) and a
/// one-line reason after the status in the body (`403 Forbidden: why`).
pub fn write_error_detailed(out: &mut Vec<u8>, status: u16, close: bool, fields: &str, why: &str) {
    use std::io::Write;
    let reason = reason(status);
    // One line: a reason must not start a second line or a second message.
    let why: String = why.chars().filter(|c| !c.is_control()).collect();
    let body = format!("{status} {reason}: {why}\n");
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{fields}{}\r\n{body}",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_page_is_well_framed() {
        let mut out = Vec::new();
        write_error(&mut out, 502, true);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(head.contains("Connection: close"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
