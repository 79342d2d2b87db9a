//! Peer request authentication: an HMAC-SHA256 (RFC 2104) over the method,
//! the target, a timestamp and the sender's identity, keyed with the
//! cluster's shared secret, carried in one request field:
//!
//! ```text
//! Shardproxy-Peer: <unix seconds> <sender ip:port> <base64 signature>
//! ```
//!
//! The owner recomputes it and compares in constant time (the `hmac`
//! crate's `verify_slice`), so a forger learns nothing from how long a
//! refusal takes. The timestamp bounds replay: a signature older (or newer)
//! than `signature_max_age` is refused. A request carrying the field is a
//! peer request: it is never forwarded to another peer (no loops), and an
//! invalid one is answered 403. Pure functions over bytes; no state.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request field a peer request carries (lower case for lookups).
pub const PEER_FIELD: &[u8] = b"shardproxy-peer";

type HmacSha256 = Hmac<Sha256>;

/// Why a peer request's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("peer field is not `<time> <sender> <signature>`")]
    Malformed,
    #[error("peer signature does not match")]
    Mismatch,
    #[error("peer signature is stale")]
    Stale,
}

fn mac(secret: &[u8], method: &[u8], target: &[u8], time: &[u8], sender: &[u8]) -> HmacSha256 {
    // new_from_slice fails only for fixed-size keys; HMAC takes any length.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    // Newline-separated: none of the parts can contain one (a target or
    // method with a newline never parses), so the message is unambiguous.
    for (i, part) in [method, target, time, sender].iter().enumerate() {
        if i > 0 {
            mac.update(b"\n");
        }
        mac.update(part);
    }
    mac
}

/// Appends the `Shardproxy-Peer` field line (CRLF included) for a request
/// from `sender` at `now` (Unix seconds).
pub fn write_field(
    out: &mut Vec<u8>,
    secret: &[u8],
    method: &[u8],
    target: &[u8],
    now: u64,
    sender: &str,
) {
    let time = now.to_string();
    let tag = mac(secret, method, target, time.as_bytes(), sender.as_bytes()).finalize();
    out.extend_from_slice(b"Shardproxy-Peer: ");
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(sender.as_bytes());
    out.push(b' ');
    out.extend_from_slice(STANDARD.encode(tag.into_bytes()).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Checks a `Shardproxy-Peer` field value for the request `method target`
/// at `now`; `max_age` bounds the clock difference either way. Returns the
/// sender's identity as it signed it.
pub fn verify<'v>(
    value: &'v [u8],
    secret: &[u8],
    method: &[u8],
    target: &[u8],
    now: u64,
    max_age: u64,
) -> Result<&'v [u8], SignatureError> {
    let mut parts = value.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(time), Some(sender), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::Malformed);
    };
    let signed_at: u64 = std::str::from_utf8(time)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(SignatureError::Malformed)?;
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| SignatureError::Malformed)?;
    mac(secret, method, target, time, sender)
        .verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)?;
    // Checked after the MAC, so an attacker cannot probe the clock cheaply.
    if signed_at.abs_diff(now) > max_age {
        return Err(SignatureError::Stale);
    }
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef-cluster";

    fn signed(method: &[u8], target: &[u8], now: u64) -> Vec<u8> {
        let mut line = Vec::new();
        write_field(&mut line, SECRET, method, target, now, "10.0.0.1:8080");
        let value = line.strip_prefix(b"Shardproxy-Peer: ").unwrap();
        value.strip_suffix(b"\r\n").unwrap().to_vec()
    }

    #[test]
    fn a_signature_verifies_for_what_it_signed() {
        let value = signed(b"GET", b"/a?b", 1_000);
        let sender = verify(&value, SECRET, b"GET", b"/a?b", 1_010, 30).unwrap();
        assert_eq!(sender, b"10.0.0.1:8080");
    }

    #[test]
    fn anything_changed_is_a_mismatch() {
        let value = signed(b"GET", b"/a", 1_000);
        let check = |secret: &[u8], method: &[u8], target: &[u8]| {
            verify(&value, secret, method, target, 1_000, 30)
        };
        assert_eq!(check(SECRET, b"GET", b"/b"), Err(SignatureError::Mismatch));
        assert_eq!(check(SECRET, b"HEAD", b"/a"), Err(SignatureError::Mismatch));
        assert_eq!(
            check(b"another secret, long", b"GET", b"/a"),
            Err(SignatureError::Mismatch)
        );
        let mut forged = value.clone();
        let sender_at = forged.iter().position(|&b| b == b' ').unwrap() + 1;
        forged[sender_at] = b'9';
        assert_eq!(
            verify(&forged, SECRET, b"GET", b"/a", 1_000, 30),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_old_or_future_signature_is_stale() {
        let value = signed(b"GET", b"/a", 1_000);
        let at = |now| verify(&value, SECRET, b"GET", b"/a", now, 30);
        assert_eq!(at(1_031), Err(SignatureError::Stale));
        assert_eq!(at(969), Err(SignatureError::Stale));
        assert!(at(1_030).is_ok());
    }

    #[test]
    fn malformed_fields_are_refused() {
        for value in [
            &b""[..],
            b"1000",
            b"1000 sender",
            b"x sender c2ln",
            b"1 a b c",
            b"1 a !!",
        ] {
            assert_eq!(
                verify(value, SECRET, b"GET", b"/", 1, 30),
                Err(SignatureError::Malformed),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }
}
