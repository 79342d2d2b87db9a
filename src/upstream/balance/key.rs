//! The hash key of a request for `consistent_hash` (`hash_key`): the client
//! address, the target, a header's or a cookie's value, hashed to 64 bits.
//! Read from the request head before it is consumed; a request without the
//! header or cookie has no key (its pick is then random).

use crate::{
    config::HashKey,
    http::head::{HeaderKind, RequestHead},
};

/// 64-bit FNV-1a with a final avalanche (from splitmix64), so keys that differ
/// in one byte land far apart on the ring.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The request's key, from the head parsed out of `buf`.
pub fn request_key(key: &HashKey, buf: &[u8], req: &RequestHead, client_ip: &[u8]) -> Option<u64> {
    let value = match key {
        HashKey::ClientIp => client_ip,
        HashKey::Uri => req.target.of(buf),
        HashKey::Header(name) => header_value(buf, req, name.as_bytes())?,
        HashKey::Cookie(name) => cookie_value(buf, req, name.as_bytes())?,
    };
    Some(hash_bytes(value))
}

/// The first value of the header `name` (lower case).
pub fn header_value<'b>(buf: &'b [u8], req: &RequestHead, name: &[u8]) -> Option<&'b [u8]> {
    req.fields
        .headers
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(name))
        .map(|h| h.value.of(buf))
}

/// The value of cookie `name` in any `Cookie` header (`a=1; b=2`).
fn cookie_value<'b>(buf: &'b [u8], req: &RequestHead, name: &[u8]) -> Option<&'b [u8]> {
    req.fields
        .headers
        .iter()
        .filter(|h| h.kind == HeaderKind::Other && h.name.of(buf).eq_ignore_ascii_case(b"cookie"))
        .flat_map(|h| h.value.of(buf).split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name).then(|| &pair[eq + 1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::{parse_request, Limits};

    fn key_of(key: &HashKey, head: &str) -> Option<u64> {
        let limits = Limits {
            max_head_bytes: 8192,
            max_headers: 64,
            max_uri_length: 4096,
        };
        let mut req = RequestHead::default();
        assert!(parse_request(head.as_bytes(), &limits, &mut req).unwrap());
        request_key(key, head.as_bytes(), &req, b"10.0.0.7")
    }

    #[test]
    fn keys_come_from_the_named_part_of_the_request() {
        let head = "GET /a?b=1 HTTP/1.1\r\nHost: h\r\nX-User: alice\r\nCookie: theme=dark; user=bob\r\n\r\n";
        let header = HashKey::Header("x-user".into());
        assert_eq!(key_of(&header, head), Some(hash_bytes(b"alice")));
        assert_eq!(
            key_of(&HashKey::Cookie("user".into()), head),
            Some(hash_bytes(b"bob"))
        );
        assert_eq!(key_of(&HashKey::Uri, head), Some(hash_bytes(b"/a?b=1")));
        assert_eq!(
            key_of(&HashKey::ClientIp, head),
            Some(hash_bytes(b"10.0.0.7"))
        );
        // Absent header or cookie: no key; a cookie name is matched exactly.
        assert_eq!(key_of(&HashKey::Header("x-team".into()), head), None);
        assert_eq!(key_of(&HashKey::Cookie("use".into()), head), None);
        let split = "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\nCookie: user=carol\r\n\r\n";
        assert_eq!(
            key_of(&HashKey::Cookie("user".into()), split),
            Some(hash_bytes(b"carol"))
        );
    }
}
