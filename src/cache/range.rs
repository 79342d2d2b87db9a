//! Range requests answered from a stored response (RFC 9110 §14, §13.1.5):
//! parsing `Range: bytes=...`, `If-Range` against the stored validators,
//! and the pieces of a 206 (one `Content-Range`, or a `multipart/byteranges`
//! body with a boundary) or a 416 (`Content-Range: bytes */len`).
//!
//! Pure functions over the request's fields and a stored entry; touches
//! nothing else. Choices, each one RFC 9110 permits a server:
//! - a Range field that does not parse, names another unit, or asks for more
//!   than [`MAX_RANGES`] ranges is ignored (the full 200 is served, §14.2);
//! - overlapping ranges are ignored likewise: `bytes=0-,0-,0-...` would
//!   otherwise multiply the response (§14.2 lets a server ignore such sets);
//! - only stored 200 responses to GET are ranged, and an empty
//!   representation is served whole (it has no byte to select).

use super::age::parse_http_date;
use super::entry::CachedResponse;
use super::policy::strong_eq;
use super::{field_lines, first_field};
use crate::http::{head::Fields, list_elements, trim_ows};

/// Most ranges one request may ask for; more and the Range field is ignored.
pub const MAX_RANGES: usize = 64;

/// One satisfiable range, resolved against the representation's length:
/// bytes `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    /// Bytes in the range (never zero).
    pub fn byte_count(&self) -> u64 {
        self.last - self.first + 1
    }

    fn slice<'b>(&self, body: &'b [u8]) -> &'b [u8] {
        &body[self.first as usize..=self.last as usize]
    }
}

/// How a stored response answers a request's Range field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranged {
    /// The whole representation (no usable Range, or If-Range did not match).
    Full,
    /// 206 with these ranges, in the order asked.
    Partial(Vec<ByteRange>),
    /// 416: no range overlaps the representation.
    Unsatisfiable,
}

/// Parses a `Range` value against a representation of `len` bytes. `None`:
/// the field is to be ignored (malformed, another unit, too many ranges,
/// overlapping ranges).
pub fn parse_range(value: &[u8], len: u64) -> Option<Ranged> {
    let value = trim_ows(value);
    let eq = value.iter().position(|&b| b == b'=')?;
    if !trim_ows(&value[..eq]).eq_ignore_ascii_case(b"bytes") {
        return None;
    }
    let mut ranges = Vec::new();
    let mut specs = 0;
    for spec in list_elements(&value[eq + 1..]) {
        specs += 1;
        if specs > MAX_RANGES {
            return None;
        }
        if let Some(range) = parse_spec(spec, len)? {
            ranges.push(range);
        }
    }
    if specs == 0 {
        return None;
    }
    if ranges.is_empty() {
        return Some(Ranged::Unsatisfiable);
    }
    let mut sorted = ranges.clone();
    sorted.sort_by_key(|r| r.first);
    if sorted.windows(2).any(|w| w[1].first <= w[0].last) {
        return None;
    }
    Some(Ranged::Partial(ranges))
}

/// One range-spec: `Some(None)` when valid but unsatisfiable, `None` when malformed.
fn parse_spec(spec: &[u8], len: u64) -> Option<Option<ByteRange>> {
    let dash = spec.iter().position(|&b| b == b'-')?;
    let (first, last) = (&spec[..dash], &spec[dash + 1..]);
    if first.is_empty() {
        // suffix-range: the last N bytes.
        let n = digits(last)?;
        if n == 0 || len == 0 {
            return Some(None);
        }
        return Some(Some(ByteRange {
            first: len.saturating_sub(n),
            last: len - 1,
        }));
    }
    let first = digits(first)?;
    let last = if last.is_empty() {
        None
    } else {
        Some(digits(last)?)
    };
    if last.is_some_and(|l| l < first) {
        return None;
    }
    if first >= len {
        return Some(None);
    }
    let last = last.map_or(len - 1, |l| l.min(len - 1));
    Some(Some(ByteRange { first, last }))
}

/// `1*DIGIT` as a u64; `None` if empty, not digits, or too large.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Whether `If-Range` lets the Range field apply (RFC 9110 §13.1.5): an
/// entity-tag must match the stored ETag by strong comparison; a date must
/// equal the stored Last-Modified, which must itself be strong (at least one
/// second older than the stored Date). No If-Range: the range applies.
pub fn if_range_allows(fields: &Fields, buf: &[u8], entry: &CachedResponse) -> bool {
    let Some(value) = first_field(fields, buf, b"if-range") else {
        return true;
    };
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return entry.etag().is_some_and(|stored| strong_eq(value, stored));
    }
    let meta = entry.meta();
    match (parse_http_date(value), meta.last_modified) {
        (Some(date), Some(modified)) => date == modified && modified < meta.date,
        _ => false,
    }
}

/// How `entry` answers a GET with these fields: ranges only apply to a
/// stored 200 with a non-empty body.
pub fn ranged(fields: &Fields, buf: &[u8], entry: &CachedResponse) -> Ranged {
    let mut lines = field_lines(fields, buf, b"range");
    let (Some(value), None) = (lines.next(), lines.next()) else {
        return Ranged::Full;
    };
    let len = entry.body().len() as u64;
    if entry.meta().status != 200 || len == 0 || !if_range_allows(fields, buf, entry) {
        return Ranged::Full;
    }
    parse_range(value, len).unwrap_or(Ranged::Full)
}

/// The fields and body of a 206 built from `body`: for one range a
/// `Content-Range` and the slice; for several a `multipart/byteranges`
/// body whose parts carry `content_type` and their own `Content-Range`.
/// `fields` are complete field lines (Content-Length included) to append
/// to the stored head, which must then omit its own Content-Length (and,
/// for several ranges, Content-Type).
pub struct Partial {
    pub fields: Vec<u8>,
    pub body: Vec<u8>,
}

/// Builds the 206 for `ranges` (at least one) of `body`. `boundary` names
/// the multipart delimiter; it only has to be absent from the parts.
pub fn partial(
    body: &[u8],
    ranges: &[ByteRange],
    content_type: Option<&[u8]>,
    boundary: &str,
) -> Partial {
    let len = body.len() as u64;
    let mut fields = Vec::with_capacity(96);
    let mut out = Vec::new();
    if let [range] = ranges {
        push_content_range(&mut fields, *range, len);
        out.extend_from_slice(range.slice(body));
    } else {
        let total: u64 = ranges.iter().map(ByteRange::byte_count).sum();
        out.reserve(total as usize + ranges.len() * 128);
        for (i, range) in ranges.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
            if let Some(content_type) = content_type {
                out.extend_from_slice(b"Content-Type: ");
                out.extend_from_slice(content_type);
                out.extend_from_slice(b"\r\n");
            }
            push_content_range(&mut out, *range, len);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(range.slice(body));
        }
        out.extend_from_slice(b"\r\n--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        fields.extend_from_slice(b"Content-Type: multipart/byteranges; boundary=");
        fields.extend_from_slice(boundary.as_bytes());
        fields.extend_from_slice(b"\r\n");
    }
    push_line(&mut fields, format_args!("Content-Length: {}", out.len()));
    Partial { fields, body: out }
}

/// The fields of a 416 for a representation of `len` bytes.
pub fn unsatisfiable_fields(out: &mut Vec<u8>, len: u64) {
    push_line(out, format_args!("Content-Range: bytes */{len}"));
    out.extend_from_slice(b"Content-Length: 0\r\n");
}

fn push_content_range(out: &mut Vec<u8>, range: ByteRange, len: u64) {
    let (first, last) = (range.first, range.last);
    push_line(
        out,
        format_args!("Content-Range: bytes {first}-{last}/{len}"),
    );
}

fn push_line(out: &mut Vec<u8>, line: std::fmt::Arguments<'_>) {
    // Writing into a Vec cannot fail.
    let _ = std::io::Write::write_fmt(out, line);
    out.extend_from_slice(b"\r\n");
}
