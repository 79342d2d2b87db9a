//! Target URLs and request templates. Each URL is parsed and resolved once at
//! startup into a template split around the spot where the `--paths` key goes,
//! so that building a request in the hot loop is three `extend_from_slice`
//! calls into a reused buffer (no allocation).

use crate::util::push_decimal;
use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed `http://host[:port]/path?query` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
    /// Including the leading '?', or empty.
    pub query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = if let Some(r) = s.strip_prefix("http://") {
            r
        } else if s.starts_with("https://") {
            return Err(format!("{s}: https is not supported (plain http/1.1 only)"));
        } else if s.contains("://") {
            return Err(format!("{s}: only http:// URLs are supported"));
        } else {
            s
        };
        let (authority, path_query) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => match rest.find('?') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            },
        };
        if authority.is_empty() {
            return Err(format!("{s}: missing host"));
        }
        if authority.contains('@') {
            return Err(format!("{s}: credentials in URLs are not supported"));
        }
        let (host, port) = split_host_port(authority, 80).map_err(|e| format!("{s}: {e}"))?;
        let (path, query) = match path_query.find('?') {
            Some(i) => (&path_query[..i], &path_query[i..]),
            None => (path_query, ""),
        };
        let path = if path.is_empty() { "/" } else { path };
        if path
            .bytes()
            .chain(query.bytes())
            .any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(format!("{s}: URL contains spaces or control characters"));
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
            query: query.to_string(),
        })
    }

    /// The Host header value: port omitted when it is the default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub fn resolve(&self) -> Result<SocketAddr, String> {
        resolve(&self.host, self.port)
    }
}

/// Splits "host:port", "[v6]:port" or "host" (with `default_port`).
pub fn split_host_port(s: &str, default_port: u16) -> Result<(&str, u16), String> {
    let bad_port = |p: &str| format!("invalid port {p:?}");
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed '[' in host")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("unexpected {after:?} after host")),
        };
        return Ok((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h, p.parse().map_err(|_| bad_port(p))?)),
        None => Ok((s, default_port)),
    }
}

pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolved to no address"))
}

/// Everything needed to write one request, minus the optional key.
#[derive(Debug, Clone)]
pub struct Template {
    /// "GET /path" or "GET http://host/path" (absolute form through a proxy).
    before_key: Vec<u8>,
    /// Separator before the key: "/" or "" if the path already ends in '/'.
    key_sep: &'static [u8],
    /// Query, protocol, headers, blank line and body.
    after_key: Vec<u8>,
    /// The request is a HEAD (responses then carry no body).
    pub head_request: bool,
}

pub struct TemplateOptions<'a> {
    pub method: &'a str,
    pub headers: &'a [(String, String)],
    pub body_size: u64,
    pub absolute_form: bool,
    pub close: bool,
}

impl Template {
    pub fn new(url: &Url, opts: &TemplateOptions) -> Template {
        let mut before = Vec::new();
        before.extend_from_slice(opts.method.as_bytes());
        before.push(b' ');
        if opts.absolute_form {
            before.extend_from_slice(b"http://");
            before.extend_from_slice(url.authority().as_bytes());
        }
        before.extend_from_slice(url.path.as_bytes());
        let key_sep: &'static [u8] = if url.path.ends_with('/') { b"" } else { b"/" };

        let mut after = Vec::new();
        after.extend_from_slice(url.query.as_bytes());
        after.extend_from_slice(b" HTTP/1.1\r\n");
        let user_host = opts
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !user_host {
            after.extend_from_slice(b"Host: ");
            after.extend_from_slice(url.authority().as_bytes());
            after.extend_from_slice(b"\r\n");
        }
        for (k, v) in opts.headers {
            after.extend_from_slice(k.as_bytes());
            after.extend_from_slice(b": ");
            after.extend_from_slice(v.as_bytes());
            after.extend_from_slice(b"\r\n");
        }
        let user_cl = opts
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
        if opts.body_size > 0 && !user_cl {
            after.extend_from_slice(b"Content-Length: ");
            push_decimal(&mut after, opts.body_size);
            after.extend_from_slice(b"\r\n");
        }
        if opts.close {
            after.extend_from_slice(b"Connection: close\r\n");
        }
        after.extend_from_slice(b"\r\n");
        // The body is prebuilt once; it goes out with every request.
        after.resize(after.len() + opts.body_size as usize, b'x');
        Template {
            before_key: before,
            key_sep,
            after_key: after,
            head_request: opts.method.eq_ignore_ascii_case("HEAD"),
        }
    }

    /// Appends one request to `out`; `key` is the `--paths` index if any.
    pub fn write(&self, out: &mut Vec<u8>, key: Option<u64>) {
        out.extend_from_slice(&self.before_key);
        if let Some(k) = key {
            out.extend_from_slice(self.key_sep);
            push_decimal(out, k);
        }
        out.extend_from_slice(&self.after_key);
    }
}

/// Parses a "Name: value" header argument.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid header {s:?}: expected \"Name: value\""))?;
    let k = k.trim();
    let v = v.trim();
    let token_ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token_ok {
        return Err(format!("invalid header name {k:?}"));
    }
    if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(format!("invalid header value for {k}"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Checks the method is an HTTP token.
pub fn check_method(m: &str) -> Result<(), String> {
    if !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
        Ok(())
    } else {
        Err(format!("invalid method {m:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_urls() {
        let u = Url::parse("http://127.0.0.1:9000/bytes/10?x=1").unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 9000);
        assert_eq!(u.path, "/bytes/10");
        assert_eq!(u.query, "?x=1");
        let u = Url::parse("localhost").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = Url::parse("http://[::1]:8080").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.authority(), "[::1]:8080");
        assert!(Url::parse("https://x/").is_err());
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://x:notaport/").is_err());
        assert!(Url::parse("http:///path").is_err());
    }

    #[test]
    fn template_with_key_and_body() {
        let u = Url::parse("http://h:81/bytes/5?q=1").unwrap();
        let headers = vec![("X-A".to_string(), "b".to_string())];
        let t = Template::new(
            &u,
            &TemplateOptions {
                method: "POST",
                headers: &headers,
                body_size: 3,
                absolute_form: false,
                close: true,
            },
        );
        let mut out = Vec::new();
        t.write(&mut out, Some(42));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /bytes/5/42?q=1 HTTP/1.1\r\nHost: h:81\r\nX-A: b\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxxx"
        );
    }

    #[test]
    fn template_absolute_form_root() {
        let u = Url::parse("http://h/").unwrap();
        let t = Template::new(
            &u,
            &TemplateOptions {
                method: "GET",
                headers: &[],
                body_size: 0,
                absolute_form: true,
                close: false,
            },
        );
        let mut out = Vec::new();
        t.write(&mut out, Some(7));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET http://h/7 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
    }

    #[test]
    fn headers_and_methods() {
        assert_eq!(
            parse_header("Accept:  */* ").unwrap(),
            ("Accept".into(), "*/*".into())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(check_method("GET").is_ok());
        assert!(check_method("G T").is_err());
    }
}
