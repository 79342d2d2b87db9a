//! One access log line from one request's [`Entry`], in the combined format
//! or as a JSON object. Appended to the shard's buffer: no I/O here, and no
//! allocation: the request's text is copied into a buffer the shard reuses
//! ([`RequestText::capture`]), and the line is written byte by byte into
//! the batch (`text.rs`), not through serde or `core::fmt`.

use std::{net::SocketAddr, ops::Range, time::Duration};

use super::{
    text::{is_plain, json_string, millis, socket_addr, uint},
    time::Civil,
};
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
    /// Copies the parts the log shows from a head parsed out of `buf` into
    /// `bytes` (cleared first: a buffer the shard hands round, so that a
    /// request costs no allocation once the buffer has grown).
    pub fn capture(req: &RequestHead, buf: &[u8], mut bytes: Vec<u8>) -> RequestText {
        bytes.clear();
        let mut text = RequestText {
            bytes,
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

    /// The buffer back, for the next request's capture.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn push(&mut self, span: Span, buf: &[u8]) -> Range<usize> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(span.of(buf));
        start..self.bytes.len()
    }

    fn get(&self, range: &Range<usize>) -> &[u8] {
        &self.bytes[range.clone()]
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

/// Appends `entry`, at `time`, as one line (ending in `\n`) to `out`.
pub fn write(out: &mut Vec<u8>, format: AccessFormat, time: &Civil, entry: &Entry<'_>) {
    // Room for the line at once: the writes below then never reallocate.
    out.reserve(LINE_ROOM + entry.request.bytes.len());
    match format {
        AccessFormat::Combined => write_combined(out, time, entry),
        AccessFormat::Json => write_json(out, time, entry),
    }
}

/// A line's length beyond the request's own text, with room to spare.
const LINE_ROOM: usize = 384;

/// `{"time":…,"client":…,"user":…,"method":…,"target":…,"status":…,
/// "bytes":…,"duration_ms":…,"upstream":…,"upstream_ms":…,"cache":…,
/// "shard":…,"referer":…,"user_agent":…}`, `null` for what is unknown;
/// durations in milliseconds with microsecond resolution.
fn write_json(out: &mut Vec<u8>, time: &Civil, e: &Entry<'_>) {
    let r = e.request;
    out.extend_from_slice(b"{\"time\":\"");
    time.write_rfc3339(out);
    out.extend_from_slice(b"\",\"client\":");
    json_string(out, if e.client.is_empty() { b"-" } else { e.client });
    out.extend_from_slice(b",\"user\":");
    json_or_null(out, e.user.map(str::as_bytes), json_string);
    out.extend_from_slice(b",\"method\":");
    json_string(out, r.get(&r.method));
    out.extend_from_slice(b",\"target\":");
    json_string(out, r.get(&r.target));
    out.extend_from_slice(b",\"status\":");
    json_or_null(out, e.status.map(u64::from), uint);
    out.extend_from_slice(b",\"bytes\":");
    json_or_null(out, e.bytes, uint);
    out.extend_from_slice(b",\"duration_ms\":");
    millis(out, e.duration);
    out.extend_from_slice(b",\"upstream\":");
    json_or_null(out, e.upstream, |out, addr| {
        out.push(b'"');
        socket_addr(out, addr);
        out.push(b'"');
    });
    out.extend_from_slice(b",\"upstream_ms\":");
    json_or_null(out, e.upstream_time, millis);
    out.extend_from_slice(b",\"cache\":");
    json_string(out, e.cache.as_bytes());
    out.extend_from_slice(b",\"shard\":");
    uint(out, e.shard as u64);
    out.extend_from_slice(b",\"referer\":");
    json_or_null(out, r.referer.as_ref().map(|x| r.get(x)), json_string);
    out.extend_from_slice(b",\"user_agent\":");
    json_or_null(out, r.user_agent.as_ref().map(|x| r.get(x)), json_string);
    out.extend_from_slice(b"}\n");
}

/// `value` written by `write`, or `null`.
fn json_or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
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
    out.extend_from_slice(b" HTTP/1.");
    uint(out, u64::from(r.minor_version));
    out.extend_from_slice(b"\" ");
    for number in [e.status.map(u64::from), e.bytes] {
        match number {
            Some(n) => uint(out, n),
            None => out.push(b'-'),
        }
        out.push(b' ');
    }
    out.push(b'"');
    for (i, field) in [&r.referer, &r.user_agent].into_iter().enumerate() {
        match field {
            Some(range) => quoted(out, &r.bytes[range.clone()]),
            None => out.push(b'-'),
        }
        out.extend_from_slice(if i == 0 { b"\" \"" } else { b"\"\n" });
    }
}

fn quoted(out: &mut Vec<u8>, text: &[u8]) {
    if is_plain(text) {
        out.extend_from_slice(text);
        return;
    }
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

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// A request text as `capture` would make it.
    fn text(method: &[u8], target: &[u8], agent: Option<&[u8]>) -> RequestText {
        let mut bytes = [method, target].concat();
        let user_agent = agent.map(|agent| {
            bytes.extend_from_slice(agent);
            bytes.len() - agent.len()..bytes.len()
        });
        RequestText {
            method: 0..method.len(),
            target: method.len()..method.len() + target.len(),
            referer: None,
            user_agent,
            minor_version: 1,
            bytes,
        }
    }

    fn entry<'a>(request: &'a RequestText, user: Option<&'a str>) -> Entry<'a> {
        Entry {
            client: b"10.1.2.3",
            request,
            status: Some(200),
            bytes: None,
            duration: Duration::from_micros(1_234_567),
            upstream: Some("10.0.0.9:8080".parse().unwrap()),
            upstream_time: Some(Duration::from_micros(999)),
            cache: "miss",
            shard: 3,
            user,
        }
    }

    #[test]
    fn a_json_line_is_one_object_with_every_field() {
        let time = Civil::of(UNIX_EPOCH + Duration::from_millis(971_186_136_042));
        let request = text(b"GET", b"/a?\"q\"=\xff\x01", Some(b"agent/1.0"));
        let mut out = Vec::new();
        write(
            &mut out,
            AccessFormat::Json,
            &time,
            &entry(&request, Some("ann")),
        );
        assert_eq!(out.pop(), Some(b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let expected = serde_json::json!({
            "time": "2000-10-10T13:55:36.042Z", "client": "10.1.2.3", "user": "ann",
            "method": "GET", "target": "/a?\"q\"=\u{FFFD}\u{1}", "status": 200,
            "bytes": null, "duration_ms": 1234.567, "upstream": "10.0.0.9:8080",
            "upstream_ms": 0.999, "cache": "miss", "shard": 3, "referer": null,
            "user_agent": "agent/1.0",
        });
        assert_eq!(line, expected);
    }

    #[test]
    fn a_combined_line_keeps_its_fields() {
        let time = Civil::of(UNIX_EPOCH + Duration::from_secs(971_186_136));
        let request = text(b"GET", b"/x \"y\"", None);
        let mut out = Vec::new();
        let e = entry(&request, Some("bob smith"));
        write(&mut out, AccessFormat::Combined, &time, &e);
        let line = String::from_utf8(out).unwrap();
        assert_eq!(
            line,
            "10.1.2.3 - bob%20smith [10/Oct/2000:13:55:36 +0000] \"GET /x \\\"y\\\" HTTP/1.1\" 200 - \"-\" \"-\"\n"
        );
    }
}
