//! The request targets only a forward proxy receives (RFC 9112 §3.2.2,
//! §3.2.3): absolute-form `http://host[:port]/path?query` and CONNECT's
//! authority-form `host:port`. Parsed strictly: the scheme must be `http`
//! (a forward proxy cannot originate TLS; clients use CONNECT for https),
//! no user info, a host of name or IP-literal characters only, a decimal
//! port from 1 to 65535. The parser calls these to accept or refuse a
//! target; the forward proxy calls them again to take the parts.

/// `host[:port]` as written, and its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// As written (`Example.com:8080`, `[::1]:80`): what `Host` is set to.
    pub text: &'a [u8],
    /// Without the port; an IPv6 literal keeps its brackets.
    pub host: &'a [u8],
    pub port: u16,
}

impl Authority<'_> {
    /// The host as a resolver takes it: an IPv6 literal loses its brackets.
    pub fn host_for_lookup(&self) -> &[u8] {
        self.host
            .strip_prefix(b"[")
            .and_then(|h| h.strip_suffix(b"]"))
            .unwrap_or(self.host)
    }
}

/// An absolute-form target split into the authority and the origin-form rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsoluteTarget<'a> {
    pub authority: Authority<'a>,
    /// Path and query; empty when the target had neither (send `/`).
    pub path: &'a [u8],
}

/// Splits `http://authority[/path][?query]`. `None`: not an http
/// absolute-form target this proxy forwards.
pub fn absolute(target: &[u8]) -> Option<AbsoluteTarget<'_>> {
    const SCHEME: &[u8] = b"http://";
    if target.len() < SCHEME.len() || !target[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &target[SCHEME.len()..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = authority(&rest[..end], 80)?;
    // httparse has already refused spaces and controls in the target.
    Some(AbsoluteTarget {
        authority,
        path: &rest[end..],
    })
}

/// `host:port` of a CONNECT request; the port is required.
pub fn connect_authority(target: &[u8]) -> Option<Authority<'_>> {
    let parsed = authority(target, 0)?;
    (parsed.port != 0).then_some(parsed)
}

/// Parses `host[:port]`; `default_port` when the port is absent (0: none).
fn authority(text: &[u8], default_port: u16) -> Option<Authority<'_>> {
    let (host, port_text) = if text.first() == Some(&b'[') {
        let close = text.iter().position(|&b| b == b']')?;
        let (host, after) = text.split_at(close + 1);
        let literal = &host[1..host.len() - 1];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match after {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return None,
        }
    } else {
        match text.iter().rposition(|&b| b == b':') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        }
    };
    if host.is_empty() || !(host[0] == b'[' || host.iter().all(|&b| is_name_byte(b))) {
        return None;
    }
    let port = match port_text {
        None => default_port,
        Some(digits) => parse_port(digits)?,
    };
    Some(Authority { text, host, port })
}

/// Letters, digits, `-`, `.`, `_`: DNS names and IPv4 literals. No `@`, so no user info.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    u16::try_from(n).ok().filter(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_form_parts() {
        let t = absolute(b"HTTP://Example.com:8080/a?b=1").unwrap();
        assert_eq!(t.authority.text, b"Example.com:8080");
        assert_eq!(t.authority.host, b"Example.com");
        assert_eq!(t.authority.port, 8080);
        assert_eq!(t.path, b"/a?b=1");
        let t = absolute(b"http://h?q").unwrap();
        assert_eq!((t.authority.port, t.path), (80, &b"?q"[..]));
        let t = absolute(b"http://[::1]:81/").unwrap();
        assert_eq!(t.authority.host_for_lookup(), b"::1");
        assert_eq!(t.authority.port, 81);
    }

    #[test]
    fn refused_targets() {
        for bad in [
            &b"https://h/"[..],
            b"ftp://h/",
            b"http://user@h/",
            b"http:///x",
            b"http://h:0/",
            b"http://h:65536/",
            b"http://h:/",
            b"http://h:8x/",
            b"http://[::1/",
            b"http://[zz]/",
            b"/origin",
        ] {
            assert!(absolute(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(connect_authority(b"h").is_none(), "CONNECT needs a port");
        assert!(connect_authority(b"h:443/x").is_none());
        assert_eq!(connect_authority(b"h:443").unwrap().port, 443);
    }
}
