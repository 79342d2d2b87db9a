//! Incremental HTTP/1.1 response parsing for the client: the head is parsed
//! with httparse, the body is framed by Content-Length, chunked encoding or
//! connection close, and fed through a streaming decoder so that bodies of any
//! size pass through a fixed per-connection buffer without being stored.
//! The optional checksum runs over the decoded body bytes as they stream by.

pub use crate::body::{BodyDecoder, Framing, ParseError};
use crate::checksum;

/// What the client needs from a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Value of X-Checksum, if present and well formed.
    pub checksum: Option<u64>,
    /// The server asked to close (or is HTTP/1.0 without keep-alive).
    pub close: bool,
    /// Bytes of the head, including the final CRLF CRLF.
    pub len: usize,
}

const MAX_HEADERS: usize = 64;

/// Parses a response head from the start of `buf`; `Ok(None)` means more bytes
/// are needed. `head_request` suppresses the body (responses to HEAD).
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ParseError::Head(e.to_string())),
    };
    // Invariant: httparse fills code and version on Complete.
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    let mut checksum = None;
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = parse_u64(h.value).ok_or(ParseError::Framing("invalid Content-Length"))?;
            if content_length.is_some_and(|old| old != v) {
                return Err(ParseError::Framing("conflicting Content-Length"));
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only the last coding decides framing; "chunked" must be last.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                content_length = None;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(checksum::HEADER.as_bytes()) {
            checksum = checksum::parse_hex(h.value);
        }
    }
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        if n == 0 {
            Framing::Empty
        } else {
            Framing::Length(n)
        }
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        framing,
        checksum,
        close,
        len,
    }))
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in v {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as u64;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_content_length() {
        let r =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Checksum: 00000000000000ff\r\n\r\nhello";
        let h = parse_head(r, false).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(h.checksum, Some(255));
        assert!(!h.close);
        assert_eq!(&r[h.len..], b"hello");
    }

    #[test]
    fn head_partial_and_errors() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Ok(None)
        );
        assert!(parse_head(b"garbage\r\n\r\n", false).is_err());
        assert!(parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
    }

    #[test]
    fn head_no_body_cases() {
        let h = parse_head(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = parse_head(b"HTTP/1.1 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(h.close);
        let h = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(h.close);
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.close);
    }
}
