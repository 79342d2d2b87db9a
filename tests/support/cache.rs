//! Helpers for the cache tests: an origin scripted as "request number N gets
//! this reply" (`Reply`, `scripted_origin`), the proxy's `Cache-Status`
//! (RFC 9211) parsed into its parameters, HTTP dates, and a config with the
//! cache turned on in front of one origin.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::client::Response;
use super::digest::PatternBody;
use super::origin::{self, After, Origin, Request};
use super::proxy::Proxy;
use super::proxy::ProxyConfig;
use super::wire::encode_chunk;
use super::wire::ReadError;

/// The name the proxy uses as its Cache-Status member.
pub const CACHE_NAME: &str = "shardproxy";

/// One origin response, built up header by header.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body chunked instead of with Content-Length.
    pub chunked: bool,
    /// Close the connection without answering at all.
    pub hang_up: bool,
}

impl Reply {
    /// `200 OK` with `body` (Content-Length framing).
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::status(200).body(body)
    }

    /// An empty response with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            chunked: false,
            hang_up: false,
        }
    }

    /// No response: the origin closes the connection.
    pub fn hang_up() -> Reply {
        Reply {
            hang_up: true,
            ..Reply::status(502)
        }
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn cache_control(self, value: &str) -> Reply {
        self.header("Cache-Control", value)
    }

    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }

    /// Writes the response to `request` (head only for HEAD, 304 and 204).
    pub fn send(&self, request: &Request, stream: &mut TcpStream) -> After {
        if self.hang_up {
            return After::Close;
        }
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let bodiless = matches!(self.status, 204 | 304) || self.status < 200;
        if !bodiless {
            if self.chunked {
                head.push_str("Transfer-Encoding: chunked\r\n");
            } else {
                head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
            }
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if !bodiless && request.method != "HEAD" {
            if self.chunked {
                for piece in self.body.chunks(1000) {
                    bytes.extend(encode_chunk(piece));
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
            } else {
                bytes.extend_from_slice(&self.body);
            }
        }
        origin::send(stream, &bytes);
        After::KeepAlive
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// An origin whose handler gets each request with its 0-based arrival
/// number among the requests for the same target (so `0` is the first fetch
/// of a URL, `1` its first refetch or revalidation) and returns the reply.
pub fn scripted_origin(
    script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
) -> Origin {
    let arrived: Mutex<HashMap<String, usize>> = Mutex::default();
    Origin::start(move |request, stream| {
        let n = {
            let mut arrived = arrived.lock().unwrap();
            let count = arrived.entry(request.target.clone()).or_default();
            *count += 1;
            *count - 1
        };
        script(request, n).send(request, stream)
    })
}

/// How many requests for `target` (any method) the origin has received.
pub fn requests_for(origin: &Origin, target: &str) -> usize {
    origin
        .requests()
        .iter()
        .filter(|request| request.target == target)
        .count()
}

/// How many `method` requests for `target` the origin has received.
pub fn method_requests_for(origin: &Origin, method: &str, target: &str) -> usize {
    origin
        .requests()
        .iter()
        .filter(|request| request.target == target && request.method == method)
        .count()
}

/// A reproducible pseudo-random body of `len` bytes.
pub fn pattern(seed: u64, len: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(len as usize);
    PatternBody::new(seed, len).stream(&mut |piece| body.extend_from_slice(piece));
    body
}

/// `[cache] enabled = true`, one upstream `o` made of `origin`, and one
/// route `/` with `route_keys`.
pub fn cache_config(shards: usize, origin: &Origin, route_keys: &[(&str, &str)]) -> ProxyConfig {
    ProxyConfig::new(shards)
        .with_cache()
        .upstream("o", &[origin.addr()])
        .route_with(None, "/", "o", route_keys)
}

/// Starts `clients` threads that each connect, send `head` (a GET or HEAD
/// request head), and wait on a barrier; returns once every request is
/// written, plus a settle time for the proxy to read them all. The handles
/// give each response.
pub fn send_concurrently<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    proxy: &'scope Proxy,
    head: String,
    clients: usize,
) -> Vec<thread::ScopedJoinHandle<'scope, Result<Response, ReadError>>> {
    let sent = Arc::new(Barrier::new(clients + 1));
    let method = head.split(' ').next().unwrap_or("GET").to_owned();
    let handles = (0..clients)
        .map(|_| {
            let (sent, head, method) = (Arc::clone(&sent), head.clone(), method.clone());
            scope.spawn(move || {
                let mut client = proxy.client();
                client.send(head.as_bytes());
                sent.wait();
                client.try_read_response(&method)
            })
        })
        .collect();
    sent.wait();
    // The proxy cannot be observed queueing the waiters; give it a moment
    // to read every request it has been sent.
    thread::sleep(Duration::from_millis(300));
    handles
}

/// The proxy's member of a `Cache-Status` field (RFC 9211), parsed.
#[derive(Debug, Clone, Default)]
pub struct CacheStatus {
    pub raw: String,
    pub hit: bool,
    pub fwd: Option<String>,
    pub stored: bool,
    pub collapsed: bool,
    pub ttl: Option<i64>,
    /// Every parameter as written, e.g. `("fwd", "uri-miss")`, `("hit", "")`.
    pub params: Vec<(String, String)>,
}

impl CacheStatus {
    /// The proxy's member of `response`'s Cache-Status, if any.
    pub fn of(response: &Response) -> Option<CacheStatus> {
        let field: Vec<&str> = response
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("cache-status"))
            .map(|(_, value)| value.as_str())
            .collect();
        let joined = field.join(",");
        // The cache closest to the client comes last.
        let member = joined
            .split(',')
            .map(str::trim)
            .rfind(|member| member.split(';').next().map(str::trim) == Some(CACHE_NAME))?;
        let mut status = CacheStatus {
            raw: member.to_owned(),
            ..CacheStatus::default()
        };
        for param in member.split(';').skip(1) {
            let param = param.trim();
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), value.trim().trim_matches('"')),
                None => (param, ""),
            };
            let name = name.to_ascii_lowercase();
            match name.as_str() {
                "hit" => status.hit = true,
                "fwd" => status.fwd = Some(value.to_owned()),
                "stored" => status.stored = true,
                "collapsed" => status.collapsed = true,
                "ttl" => status.ttl = value.parse().ok(),
                _ => {}
            }
            status.params.push((name, value.to_owned()));
        }
        Some(status)
    }
}

/// `time` as an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (hour, minute, second) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // 1970-01-01 was a Thursday.
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {month_name} {year} {hour:02}:{minute:02}:{second:02} GMT")
}

/// The HTTP date `offset` from now (past when `ago`).
pub fn http_date_from_now(offset: Duration, ago: bool) -> String {
    let now = SystemTime::now();
    http_date(if ago { now - offset } else { now + offset })
}

#[test]
fn http_date_formats_the_rfc_example() {
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    assert_eq!(
        http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}
