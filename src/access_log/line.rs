//! One access log line from one request's [`Entry`], in the combined format
//! or as a JSON object. Appended to the shard's buffer: no I/O here.

use std::{borrow::Cow, fmt, io::Write, net::SocketAddr, ops::Range, time::Duration};

use serde::{Serialize, Serializer};

use super::time::Civil;
use crate::{
    config::AccessFormat,
    http::{head::RequestHead, Span},
};

/// The request's own text, copied out of the client buffer before the
/// phases consume it: method, target, Referer, User-Agent.
#[derive(Debug, Default)]
pub struct RequestText {
    bytes: Vec<u8>,
    method: Range<usize>,
    target: Range<usize>,
    referer: Option<Range<usize>>,
    user_agent: Option<Range<usize>>,
    minor_version: u8,
}

impl RequestText {
    /// Copies the parts the log shows from a head parsed out of `buf`.
    pub fn capture(req: &RequestHead, buf: &[u8]) -> RequestText {
        let mut text = RequestText {
            minor_version: req.fields.minor_version,
            ..RequestText::default()
        };
        text.method = text.push(req.method, buf);
        text.target = text.push(req.target, buf);
        for header in &req.fields.headers {
            let name = header.name.of(buf);
            if name.eq_ignore_ascii_case(b"referer") {
                text.referer = Some(text.push(header.value, buf));
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                text.user_agent = Some(text.push(header.value, buf));
            }
        }
        text
    }

    /// For a request whose head was refused before it could be read: `-` `-`.
    pub fn unparsed() -> RequestText {
        RequestText {
            bytes: b"--".to_vec(),
            method: 0..1,
            target: 1..2,
            minor_version: 1,
            ..RequestText::default()
        }
    }

    fn push(&mut self, span: Span, buf: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(span.of(buf));
        start..self.bytes.len()
    }

    /// Borrowed unless the client sent invalid UTF-8 (then a lossy copy).
    fn get(&self, range: &Range<usize>) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes[range.clone()])
    }
}

/// What one line says about one request (the time is the log's: now).
pub struct Entry<'a> {
    pub client: &'a [u8],
    pub request: &'a RequestText,
    /// `None`: the client left before any answer.
    pub status: Option<u16>,
    /// Body bytes sent, when known.
    pub bytes: Option<u64>,
    pub duration: Duration,
    pub upstream: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
    pub cache: &'static str,
    pub shard: usize,
    /// The forward-proxy user the request authenticated as.
    pub user: Option<&'a str>,
}

/// One JSON line. Every field borrows or is written in place: a line costs
/// no allocation of its own (the shard writes one per request).
#[derive(Serialize)]
struct JsonLine<'a> {
    #[serde(serialize_with = "as_text")]
    time: Rfc3339<'a>,
    client: &'a str,
    user: Option<&'a str>,
    method: Cow<'a, str>,
    target: Cow<'a, str>,
    status: Option<u16>,
    bytes: Option<u64>,
    duration_ms: f64,
    upstream: Option<SocketAddr>,
    upstream_ms: Option<f64>,
    cache: &'a str,
    shard: usize,
    referer: Option<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
}

/// The line's time as RFC 3339 text, formatted straight into the output.
struct Rfc3339<'a>(&'a Civil);

impl fmt::Display for Rfc3339<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_rfc3339(f)
    }
}

fn as_text<S: Serializer>(value: &impl fmt::Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Appends `entry`, at `time`, as one line (ending in `\n`) to `out`.
pub fn write(out: &mut Vec<u8>, format: AccessFormat, time: &Civil, entry: &Entry<'_>) {
    match format {
        AccessFormat::Combined => write_combined(out, time, entry),
        AccessFormat::Json => write_json(out, time, entry),
    }
}

fn write_json(out: &mut Vec<u8>, time: &Civil, e: &Entry<'_>) {
    let r = e.request;
    let line = JsonLine {
        time: Rfc3339(time),
        client: std::str::from_utf8(e.client).unwrap_or("-"),
        user: e.user,
        method: r.get(&r.method),
        target: r.get(&r.target),
        status: e.status,
        bytes: e.bytes,
        duration_ms: e.duration.as_secs_f64() * 1000.0,
        upstream: e.upstream,
        upstream_ms: e.upstream_time.map(|d| d.as_secs_f64() * 1000.0),
        cache: e.cache,
        shard: e.shard,
        referer: r.referer.as_ref().map(|x| r.get(x)),
        user_agent: r.user_agent.as_ref().map(|x| r.get(x)),
    };
    // Serializing plain strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// `client - user [time] "METHOD target HTTP/1.x" status bytes "referer" "user-agent"`
/// (`-` for no user),
/// with `"` and `\` in client-sent text escaped and controls dropped, so a
/// line always parses. Status `-` if none was sent, bytes `-` when unknown.
fn write_combined(out: &mut Vec<u8>, time: &Civil, e: &Entry<'_>) {
    let r = e.request;
    out.extend_from_slice(if e.client.is_empty() { b"-" } else { e.client });
    out.extend_from_slice(b" - ");
    match e.user {
        Some(user) => authuser(out, user.as_bytes()),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" [");
    time.write_clf(out);
    out.extend_from_slice(b"] \"");
    quoted(out, &r.bytes[r.method.clone()]);
    out.push(b' ');
    quoted(out, &r.bytes[r.target.clone()]);
    let _ = write!(out, " HTTP/1.{}\" ", r.minor_version);
    match e.status {
        Some(status) => {
            let _ = write!(out, "{status} ");
        }
        None => out.extend_from_slice(b"- "),
    }
    match e.bytes {
        Some(bytes) => {
            let _ = write!(out, "{bytes} \"");
        }
        None => out.extend_from_slice(b"- \""),
    }
    for (i, field) in [&r.referer, &r.user_agent].into_iter().enumerate() {
        match field {
            Some(range) => quoted(out, &r.bytes[range.clone()]),
            None => out.push(b'-'),
        }
        out.extend_from_slice(if i == 0 { b"\" \"" } else { b"\"\n" });
    }
}

fn quoted(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..=0x1f | 0x7f => {}
            b => out.push(b),
        }
    }
}

/// The combined format's unquoted authuser field: a configured user name may
/// hold spaces, quotes or non-ASCII text, which would break the line's
/// fields; those bytes are written `%XX` (as in a URL), the rest as they are.
fn authuser(out: &mut Vec<u8>, name: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in name {
        match b {
            b'"' | b'\\' | b'%' | 0..=0x20 | 0x7f.. => {
                out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            }
            b => out.push(b),
        }
    }
}
