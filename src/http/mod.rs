//! HTTP/1.1 message syntax, shared by both sides of the proxy: head parsing and
//! validation (`head`), body framing (`body`, `chunked`), header rewriting
//! toward the other side (`rewrite`), the canned responses the proxy sends
//! itself (`status`) and the forward proxy's request targets (`target`).
//!
//! Everything here is synchronous and works on byte slices the caller owns;
//! no I/O, no allocation per message once the caller's buffers are warm.

pub mod body;
pub mod chunked;
pub mod head;
pub mod rewrite;
pub mod status;
pub mod target;

/// A byte range into the buffer a head was parsed from; kept instead of slices
/// so that a parsed head can live beside its buffer without borrowing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes this span covers in `buf` (the buffer the head was parsed from).
    #[inline]
    pub fn of<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The span of `part`, a sub-slice of `base`.
    #[inline]
    pub(crate) fn within(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// Splits a comma-separated header value into trimmed, non-empty elements.
pub fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB) from both ends.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
