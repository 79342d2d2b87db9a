//! The cache key: the primary key (method class, scheme, host, target), its
//! 64-bit hash, the shard that owns it, and the secondary key that Vary
//! selects (RFC 9111 §4.1).
//!
//! Pure functions over parsed heads; touches nothing else. Keys are written
//! into a caller-owned `Vec` that is cleared and reused, so building one
//! allocates nothing once the buffer is warm, and Vary matching compares a
//! request against a stored secondary key without building anything.

use std::hash::Hasher;

use super::{field_elements, has_field};
use crate::http::{
    head::{host_without_port, Fields, Method, RequestHead},
    target::absolute,
};

/// Why a request has no cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("method is not cacheable")]
    Method,
    #[error("request has no Host")]
    NoHost,
}

/// The scheme the client used to reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn name(self) -> &'static [u8] {
        match self {
            Scheme::Http => b"http",
            Scheme::Https => b"https",
        }
    }

    fn default_port(self) -> &'static [u8] {
        match self {
            Scheme::Http => b"80",
            Scheme::Https => b"443",
        }
    }
}

/// GET and HEAD share entries: a stored GET response answers a HEAD (RFC
/// 9110 §9.3.2), so both map to one class byte. Other methods have no key.
pub fn method_class(method: Method) -> Option<u8> {
    match method {
        Method::Get | Method::Head => Some(b'G'),
        _ => None,
    }
}

/// Writes the primary key `G <scheme>://<host><target>` into `out` (cleared
/// first). The host is lower-cased and loses a default port; the target is
/// kept byte for byte (normalising percent-encoding could merge URIs the
/// origin treats as distinct).
pub fn write_key(out: &mut Vec<u8>, scheme: Scheme, host: &[u8], target: &[u8]) {
    out.clear();
    out.extend_from_slice(b"G ");
    out.extend_from_slice(scheme.name());
    out.extend_from_slice(b"://");
    let bare = host_without_port(host);
    let port = host.get(bare.len() + 1..).unwrap_or(&[]);
    let host = if port == scheme.default_port() || (port.is_empty() && host.len() > bare.len()) {
        // "host:80" for http, or an empty port ("host:"): drop it.
        bare
    } else {
        host
    };
    let start = out.len();
    out.extend_from_slice(host);
    out[start..].make_ascii_lowercase();
    out.extend_from_slice(target);
}

/// The primary key of a request, written into `out`.
pub fn request_key(
    out: &mut Vec<u8>,
    scheme: Scheme,
    req: &RequestHead,
    buf: &[u8],
) -> Result<(), KeyError> {
    method_class(req.method()).ok_or(KeyError::Method)?;
    let host = req.host.ok_or(KeyError::NoHost)?;
    write_key(out, scheme, host.of(buf), req.target.of(buf));
    Ok(())
}

/// Writes the primary key of an absolute-form request to a forward proxy,
/// `F http://<host><path>` (`/` for an empty path), into `out`.
///
/// The same normalisation as [`write_key`], under another class byte: a
/// reverse-proxy key names what a `[[route]]`'s upstream serves for a Host
/// the client chose, a forward key the destination itself. Were they one
/// namespace, a reverse client sending `Host: bank.example` to a catch-all
/// route would fill the entry forward clients get for the real
/// `http://bank.example/`, and the reverse.
pub fn forward_request_key(
    out: &mut Vec<u8>,
    req: &RequestHead,
    buf: &[u8],
) -> Result<(), KeyError> {
    method_class(req.method()).ok_or(KeyError::Method)?;
    match write_forward_key(out, req.target.of(buf)) {
        true => Ok(()),
        false => Err(KeyError::NoHost),
    }
}

/// Writes the forward key ([`forward_request_key`]) of an absolute-form
/// `target` whatever the method (an unsafe one invalidates it); `false`
/// if the target is not absolute-form.
pub fn write_forward_key(out: &mut Vec<u8>, target: &[u8]) -> bool {
    let Some(target) = absolute(target) else {
        return false;
    };
    let (authority, path) = (target.authority.text, target.path);
    match path.first() {
        Some(b'/') => write_key(out, Scheme::Http, authority, path),
        // Empty, or a bare query (`http://a.example?q`): origin-form puts `/` first.
        _ => {
            write_key(out, Scheme::Http, authority, b"/");
            out.extend_from_slice(path);
        }
    }
    out[0] = FORWARD_CLASS;
    true
}

/// The class byte of forward-proxy keys ([`forward_request_key`]).
pub const FORWARD_CLASS: u8 = b'F';

/// Hashes a primary key: SipHash-1-3 (the std `DefaultHasher`) with its fixed
/// keys. Fixed, because every shard must compute the same owner for a key;
/// SipHash rather than an FxHash-style multiply-xor because keys come from
/// clients, and a weak hash lets a client craft thousands of URLs with one
/// hash value and turn every lookup in that bucket into a linear scan. It
/// costs tens of nanoseconds on a URL-sized key, small beside one syscall.
pub fn hash_key(key: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(key);
    h.finish()
}

/// The shard that owns `hash`: `(hash × shards) >> 64` (Lemire's
/// multiply-shift range reduction). Uniform, one multiply, no division.
/// A consistent hash (jump hash, rendezvous) only pays off when the shard
/// count changes while keys survive; here the count is fixed for the life of
/// the process and the cache is in memory, so nothing would ever be remapped.
/// It uses the hash's high bits, so the store remixes the hash before using
/// it in its own table (see `store`).
pub fn owner_shard(hash: u64, shards: usize) -> usize {
    ((u128::from(hash) * shards as u128) >> 64) as usize
}

/// A response's `Vary` says every request is different: never store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Vary: * can never be served from a cache")]
pub struct VaryStar;

/// Whether the response varies on `*`.
pub fn vary_star(resp: &Fields, resp_buf: &[u8]) -> bool {
    field_elements(resp, resp_buf, b"vary").any(|n| n == b"*")
}

/// Writes the secondary key of a request for a response with the given Vary
/// fields into `out` (cleared first); empty when the response has no Vary.
///
/// Format, one line per Vary name in order: the lower-cased name, then either
/// `\0` (the request lacks the field) or `:` and the normalised value, then
/// `\n`. Field values cannot contain CR, LF or NUL (the parser refuses them),
/// so the encoding is unambiguous. Normalising (RFC 9111 §4.1) joins every
/// field line's list elements, each trimmed of whitespace, with `,`; case is
/// kept, because only some fields are case-insensitive and a false mismatch
/// costs a miss while a false match would serve the wrong variant.
pub fn write_vary_key(
    out: &mut Vec<u8>,
    resp: &Fields,
    resp_buf: &[u8],
    req: &Fields,
    req_buf: &[u8],
) -> Result<(), VaryStar> {
    out.clear();
    for name in field_elements(resp, resp_buf, b"vary") {
        if name == b"*" {
            out.clear();
            return Err(VaryStar);
        }
        let start = out.len();
        out.extend_from_slice(name);
        out[start..].make_ascii_lowercase();
        if has_field(req, req_buf, name) {
            out.push(b':');
            for (i, e) in field_elements(req, req_buf, name).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(e);
            }
        } else {
            out.push(0);
        }
        out.push(b'\n');
    }
    Ok(())
}

/// Whether a request selects the stored variant whose secondary key is
/// `vary_key` (written by [`write_vary_key`]). Allocation-free: the request's
/// normalised values are compared element by element against the stored bytes.
pub fn vary_matches(vary_key: &[u8], req: &Fields, req_buf: &[u8]) -> bool {
    for line in vary_key.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let Some(sep) = line.iter().position(|&b| b == b':' || b == 0) else {
            return false;
        };
        let (name, stored) = (&line[..sep], &line[sep + 1..]);
        let present = has_field(req, req_buf, name);
        if line[sep] == 0 {
            if present {
                return false;
            }
            continue;
        }
        if !present || !normalised_equals(req, req_buf, name, stored) {
            return false;
        }
    }
    true
}

fn normalised_equals(req: &Fields, req_buf: &[u8], name: &[u8], mut expected: &[u8]) -> bool {
    for (i, e) in field_elements(req, req_buf, name).enumerate() {
        if i > 0 {
            match expected.split_first() {
                Some((b',', rest)) => expected = rest,
                _ => return false,
            }
        }
        match expected.strip_prefix(e) {
            Some(rest) => expected = rest,
            None => return false,
        }
    }
    expected.is_empty()
}

/// The primary key named by a Location or Content-Location value of a
/// response to an unsafe request on `host` (RFC 9111 §4.4), written into
/// `out`. Only URIs on the same host are invalidated (a response must not
/// purge another origin's entries): a path (`/a`), or an absolute URI whose
/// scheme and authority equal the request's. Relative references other
/// than absolute paths are not resolved and yield `false`.
pub fn location_key(out: &mut Vec<u8>, scheme: Scheme, host: &[u8], location: &[u8]) -> bool {
    let location = crate::http::trim_ows(location);
    if location.starts_with(b"/") && !location.starts_with(b"//") {
        write_key(out, scheme, host, location);
        return true;
    }
    let mut prefix = scheme.name().to_vec();
    prefix.extend_from_slice(b"://");
    let Some(rest) = location
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(&prefix))
        .map(|_| &location[prefix.len()..])
    else {
        return false;
    };
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    let (authority, path) = (&rest[..end], &rest[end..]);
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    // Compare normalised hosts by building both keys' authority parts.
    let mut theirs = Vec::new();
    write_key(&mut theirs, scheme, authority, b"");
    write_key(out, scheme, host, b"");
    if theirs != *out {
        out.clear();
        return false;
    }
    out.extend_from_slice(path);
    true
}
