//! The head bytes a cache keeps and sends: the head stored with a response
//! (RFC 9111 §3.1), the head after a 304 freshened it (§3.2, §4.3.4), the head
//! of a response served from the cache, and a 304 answered by the cache.
//!
//! Writes into caller-owned `Vec`s from parsed heads; touches nothing else.
//! The stored head is what arrived minus what must not be stored: hop-by-hop
//! fields and fields named in Connection (§3.1), and the framing fields,
//! because the body is stored decoded and is re-framed with its own
//! Content-Length. `Age` is kept as received: the entry's metadata is computed
//! from the stored head, and a served head replaces it with the current age.

use super::age::write_http_date;
use super::Secs;
use crate::http::head::{Fields, HeaderKind, ResponseHead};

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_status_line(out: &mut Vec<u8>, status: u16, reason_phrase: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let _ = std::io::Write::write_fmt(out, format_args!("{status:03}"));
    out.push(b' ');
    out.extend_from_slice(reason_phrase);
    out.extend_from_slice(b"\r\n");
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    // Writing into a Vec cannot fail.
    let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
}

/// Fields that never go into the store, nor come out of a 304 into it.
fn excluded(fields: &Fields, buf: &[u8], kind: HeaderKind, name: &[u8]) -> bool {
    matches!(
        kind,
        HeaderKind::HopByHop
            | HeaderKind::ContentLength
            | HeaderKind::TransferEncoding
            // The body is stored decoded: its trailers are not kept.
            | HeaderKind::Trailer
    ) || (!fields.connection_options.is_empty() && fields.is_connection_option(buf, name))
}

fn is(name: &[u8], wanted: &[u8]) -> bool {
    name.eq_ignore_ascii_case(wanted)
}

/// Writes the head to store for a response whose decoded body is `body_len`
/// bytes. A missing Date is added as `response_time` (RFC 9110 §6.6.1: a
/// cache must date what it stores), so stored heads always carry one.
pub fn write_stored_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    buf: &[u8],
    body_len: u64,
    response_time: Secs,
) {
    out.clear();
    push_status_line(out, resp.status, resp.reason.of(buf));
    push_end_to_end_fields(out, &resp.fields, buf, response_time);
    // 204 and 1xx never carry Content-Length (RFC 9110 §8.6).
    if resp.status != 204 {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, body_len);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the stored head freshened by a 304 (RFC 9111 §3.2): each field the
/// 304 carries replaces every stored line of that name; the rest is kept in
/// order. Content-Length and framing are never taken from the 304. `Date` and
/// `Age` describe the new exchange only, so the stored ones are always
/// dropped: a 304 without Date is dated `response_time`, and one without Age
/// leaves none (a stale Age would make the refreshed entry look old).
pub fn write_freshened_head(
    out: &mut Vec<u8>,
    stored: &ResponseHead,
    stored_buf: &[u8],
    not_modified: &ResponseHead,
    nm_buf: &[u8],
    response_time: Secs,
) {
    out.clear();
    push_status_line(out, stored.status, stored.reason.of(stored_buf));
    let nm = &not_modified.fields;
    let updated = |name: &[u8]| {
        is(name, b"date")
            || is(name, b"age")
            || nm.headers.iter().any(|h| {
                let n = h.name.of(nm_buf);
                !excluded(nm, nm_buf, h.kind, n) && is(n, name)
            })
    };
    for h in &stored.fields.headers {
        let name = h.name.of(stored_buf);
        if !updated(name) || h.kind == HeaderKind::ContentLength {
            push_field(out, name, h.value.of(stored_buf));
        }
    }
    push_end_to_end_fields(out, nm, nm_buf, response_time);
    out.extend_from_slice(b"\r\n");
}

/// Copies the fields a cache keeps (hop-by-hop and framing excluded), then a
/// `Date` of `response_time` if none was among them.
fn push_end_to_end_fields(out: &mut Vec<u8>, fields: &Fields, buf: &[u8], response_time: Secs) {
    let mut dated = false;
    for h in &fields.headers {
        let name = h.name.of(buf);
        if excluded(fields, buf, h.kind, name) {
            continue;
        }
        dated |= is(name, b"date");
        push_field(out, name, h.value.of(buf));
    }
    if !dated {
        out.extend_from_slice(b"Date: ");
        write_http_date(out, response_time);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes the head of a response served from the cache: the status line and
/// every stored field except Age, then `Age: <age>`. The final CRLF is NOT
/// written, so the caller can append Cache-Status, Via and Connection first.
pub fn write_hit_head(out: &mut Vec<u8>, stored: &ResponseHead, buf: &[u8], age: Secs) {
    push_status_line(out, stored.status, stored.reason.of(buf));
    push_hit_fields(out, stored, buf, age, |_| false);
}

/// The status line and fields of a range answer from the cache (206 or
/// 416): every stored field except Age and those `leave_out` names (the
/// caller writes its own Content-Length, Content-Type), then `Age`. Like
/// [`write_hit_head`], without the final CRLF.
pub fn write_ranged_head(
    out: &mut Vec<u8>,
    status: (u16, &[u8]),
    stored: &ResponseHead,
    buf: &[u8],
    age: Secs,
    leave_out: impl Fn(&[u8]) -> bool,
) {
    push_status_line(out, status.0, status.1);
    push_hit_fields(out, stored, buf, age, leave_out);
}

fn push_hit_fields(
    out: &mut Vec<u8>,
    stored: &ResponseHead,
    buf: &[u8],
    age: Secs,
    leave_out: impl Fn(&[u8]) -> bool,
) {
    for h in &stored.fields.headers {
        let name = h.name.of(buf);
        if !is(name, b"age") && !leave_out(name) {
            push_field(out, name, h.value.of(buf));
        }
    }
    out.extend_from_slice(b"Age: ");
    push_decimal(out, age);
    out.extend_from_slice(b"\r\n");
}

/// Writes a 304 answering a client's conditional request from a stored
/// response: the fields RFC 9110 §15.4.5 requires (Cache-Control,
/// Content-Location, Date, ETag, Expires, Vary) plus Last-Modified, then
/// `Age`. Like [`write_hit_head`], without the final CRLF.
pub fn write_not_modified_head(out: &mut Vec<u8>, stored: &ResponseHead, buf: &[u8], age: Secs) {
    push_status_line(out, 304, b"Not Modified");
    for h in &stored.fields.headers {
        let name = h.name.of(buf);
        let keep = [
            &b"cache-control"[..],
            b"content-location",
            b"date",
            b"etag",
            b"expires",
            b"vary",
            b"last-modified",
        ]
        .iter()
        .any(|k| is(name, k));
        if keep {
            push_field(out, name, h.value.of(buf));
        }
    }
    out.extend_from_slice(b"Age: ");
    push_decimal(out, age);
    out.extend_from_slice(b"\r\n");
}
