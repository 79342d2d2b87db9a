//! Maps a request target to what the origin should do, without I/O so it can
//! be unit-tested. Modifier segments may be stacked in front of any endpoint:
//!
//! - `/delay/<duration>/...` waits (e.g. `50ms`, `1s`; up to 60 s in total)
//! - `/cache/<directives>/...` sends `Cache-Control: <directives>` (e.g. `max-age=60`)
//! - `/nocache/...` sends `Cache-Control: no-store`
//!
//! Endpoints (anything after them in the path is ignored, which is where
//! `loadtest run --paths` puts its `/{i}` keys):
//!
//! - `/bytes/N` — N-byte body (also `?size=N` on any body endpoint)
//! - `/chunked/N` — the same body with chunked encoding (also `?chunked=1`)
//! - `/status/CODE` — that status (200..=599) with a short text body
//! - `/echo` — streams the request body back, chunked, checksum in a trailer
//! - `/__stats` — JSON counters summed over all shards
//! - anything else, including `/` — the default body (`--default-size`, 1024 bytes)

use super::content::MAX_BODY;
use crate::util::parse_duration;
use std::time::Duration;

const MAX_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Bytes(u64),
    Status(u16),
    Echo,
    Stats,
}

/// A Cache-Control value copied out of the request (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    buf: [u8; 64],
    len: u8,
}

impl CacheControl {
    fn new(v: &[u8]) -> CacheControl {
        let mut buf = [0u8; 64];
        let len = v.len().min(64);
        buf[..len].copy_from_slice(&v[..len]);
        CacheControl {
            buf,
            len: len as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
}

/// `Cache-Control: no-store`, for responses that must never be cached.
pub fn no_store() -> CacheControl {
    CacheControl::new(b"no-store")
}

impl std::fmt::Debug for CacheControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub action: Action,
    pub delay: Duration,
    pub cache_control: Option<CacheControl>,
    pub chunked: bool,
}

/// Why a target was refused (answered with 400).
pub type RouteError = &'static str;

pub fn plan(target: &[u8], default_size: u64) -> Result<Plan, RouteError> {
    // Absolute-form targets (through a forward proxy) carry scheme://authority first.
    let target = strip_absolute(target);
    let (path, query) = match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], &target[i + 1..]),
        None => (target, &b""[..]),
    };
    let mut delay = Duration::ZERO;
    let mut cache_control = None;
    let mut rest = path;
    loop {
        if let Some(r) = rest.strip_prefix(b"/delay/") {
            let (seg, after) = split_segment(r);
            let d = std::str::from_utf8(seg)
                .ok()
                .and_then(|s| parse_duration(s).ok())
                .ok_or("bad /delay/ duration")?;
            delay = (delay + d).min(MAX_DELAY);
            rest = after;
        } else if let Some(r) = rest.strip_prefix(b"/cache/") {
            let (seg, after) = split_segment(r);
            let ok = !seg.is_empty()
                && seg.len() <= 64
                && seg
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b"=,-_".contains(&b));
            if !ok {
                return Err("bad /cache/ directives");
            }
            cache_control = Some(CacheControl::new(seg));
            rest = after;
        } else if rest == b"/nocache" || rest.starts_with(b"/nocache/") {
            cache_control = Some(CacheControl::new(b"no-store"));
            rest = &rest[b"/nocache".len()..];
        } else {
            break;
        }
    }
    let mut chunked = false;
    let (first, after) = split_segment(rest.strip_prefix(b"/").unwrap_or(rest));
    let (second, _) = split_segment(after.strip_prefix(b"/").unwrap_or(after));
    let mut action = match first {
        b"bytes" => Action::Bytes(parse_num(second).ok_or("bad /bytes/ size")?),
        b"chunked" => {
            chunked = true;
            Action::Bytes(parse_num(second).ok_or("bad /chunked/ size")?)
        }
        b"status" => {
            let code = parse_num(second).ok_or("bad /status/ code")?;
            if !(200..=599).contains(&code) {
                return Err("status code must be 200..=599");
            }
            Action::Status(code as u16)
        }
        b"echo" => Action::Echo,
        b"__stats" => Action::Stats,
        _ => Action::Bytes(default_size),
    };
    for pair in query.split(|&b| b == b'&') {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        match k {
            b"size" => {
                if let Action::Bytes(_) = action {
                    action = Action::Bytes(parse_num(v).ok_or("bad size= parameter")?);
                }
            }
            b"chunked" => chunked = v != b"0" && v != b"false",
            _ => {}
        }
    }
    if let Action::Bytes(n) = action {
        if n > MAX_BODY {
            return Err("body size over 1 GiB");
        }
    }
    Ok(Plan {
        action,
        delay,
        cache_control,
        chunked,
    })
}

fn strip_absolute(t: &[u8]) -> &[u8] {
    let Some(i) = t.windows(3).position(|w| w == b"://") else {
        return t;
    };
    if t.first() == Some(&b'/') {
        return t;
    }
    let rest = &t[i + 3..];
    match rest.iter().position(|&b| b == b'/' || b == b'?') {
        Some(j) => &rest[j..],
        None => b"/",
    }
}

/// Splits "seg/rest" into ("seg", "/rest"); without a slash the rest is "".
fn split_segment(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b'/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, b""),
    }
}

fn parse_num(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 12 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &c| n * 10 + (c - b'0') as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str) -> Plan {
        plan(t.as_bytes(), 1024).unwrap()
    }

    #[test]
    fn endpoints() {
        assert_eq!(p("/").action, Action::Bytes(1024));
        assert_eq!(p("/17").action, Action::Bytes(1024));
        assert_eq!(p("/bytes/10").action, Action::Bytes(10));
        assert_eq!(p("/bytes/10/123").action, Action::Bytes(10));
        assert_eq!(p("/anything?size=5").action, Action::Bytes(5));
        let c = p("/chunked/100");
        assert_eq!((c.action, c.chunked), (Action::Bytes(100), true));
        assert!(p("/bytes/3?chunked=1").chunked);
        assert_eq!(p("/status/418").action, Action::Status(418));
        assert_eq!(p("/echo").action, Action::Echo);
        assert_eq!(p("/__stats").action, Action::Stats);
    }

    #[test]
    fn modifiers_stack() {
        let x = p("/delay/50ms/cache/max-age=60/bytes/7/99");
        assert_eq!(x.delay, Duration::from_millis(50));
        assert_eq!(x.cache_control.unwrap().as_bytes(), b"max-age=60");
        assert_eq!(x.action, Action::Bytes(7));
        let y = p("/nocache/status/503");
        assert_eq!(y.cache_control.unwrap().as_bytes(), b"no-store");
        assert_eq!(y.action, Action::Status(503));
        assert_eq!(p("/nocache").action, Action::Bytes(1024));
        assert_eq!(p("/delay/1h/").delay, MAX_DELAY);
    }

    #[test]
    fn absolute_form() {
        assert_eq!(p("http://h:1/bytes/3").action, Action::Bytes(3));
        assert_eq!(p("http://h:1").action, Action::Bytes(1024));
    }

    #[test]
    fn errors() {
        for bad in [
            "/bytes/x",
            "/status/99",
            "/status/600",
            "/delay/abc/",
            "/cache/a b/",
            "/bytes/99999999999",
        ] {
            assert!(plan(bad.as_bytes(), 1).is_err(), "{bad}");
        }
    }
}
