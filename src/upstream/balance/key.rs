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
