//! Integrity of peer responses: `Content-Digest: sha-256=:<base64>:`
//! (RFC 9530 §2, the digest of the content as sent, here the whole
//! decoded body). The owner adds it to every response it gives a peer; the
//! receiver recomputes it over the body it read before serving or storing
//! anything, and treats a missing or different digest as a failed fetch.
//! Pure functions over bytes; no state.

use base64::{engine::general_purpose::STANDARD, Engine};
use sha2::{Digest, Sha256};

/// The response field (lower case for lookups).
pub const DIGEST_FIELD: &[u8] = b"content-digest";

/// Appends `Content-Digest: sha-256=:…:` for `body` (CRLF included).
pub fn write_field(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(b"Content-Digest: sha-256=:");
    out.extend_from_slice(STANDARD.encode(Sha256::digest(body)).as_bytes());
    out.extend_from_slice(b":\r\n");
}

/// Whether a `Content-Digest` value holds a sha-256 member equal to the
/// digest of `body`. Other algorithms in the list are skipped (RFC 9530
/// lets a sender offer several); without a sha-256 member it is `false`.
pub fn matches(value: &[u8], body: &[u8]) -> bool {
    let Some(encoded) = value
        .split(|&b| b == b',')
        .map(trim)
        .find_map(|member| member.strip_prefix(b"sha-256=:"))
        .and_then(|rest| rest.strip_suffix(b":"))
    else {
        return false;
    };
    match STANDARD.decode(encoded) {
        // Not secret: the digest travels in the clear, so `==` is fine here.
        Ok(expected) => expected.as_slice() == Sha256::digest(body).as_slice(),
        Err(_) => false,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_for(body: &[u8]) -> Vec<u8> {
        let mut line = Vec::new();
        write_field(&mut line, body);
        line[b"Content-Digest: ".len()..line.len() - 2].to_vec()
    }

    #[test]
    fn rfc_9530_example() {
        // RFC 9530 appendix B.1: the body `{"hello": "world"}`.
        assert_eq!(
            value_for(b"{\"hello\": \"world\"}"),
            b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
    }

    #[test]
    fn a_digest_matches_its_body_only() {
        let value = value_for(b"body");
        assert!(matches(&value, b"body"));
        assert!(!matches(&value, b"bodY"));
        assert!(!matches(b"sha-512=:AAAA:", b"body"));
        assert!(!matches(b"sha-256=:not base64!:", b"body"));
        assert!(!matches(b"", b"body"));
        let mut listed = b"sha-512=:AAAA:, ".to_vec();
        listed.extend_from_slice(&value);
        assert!(matches(&listed, b"body"));
    }
}
