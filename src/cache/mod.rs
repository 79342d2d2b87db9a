//! The HTTP cache's building blocks (RFC 9111 shared cache, RFC 5861 stale
//! extensions): pure policy decisions over parsed heads and times, the cache
//! key and its owner shard, and one shard's slice of the store.
//!
//! Nothing here does I/O, owns a timer or knows about other shards; the proxy
//! passes in parsed heads, their buffers and times (Unix seconds), and moves
//! the `Arc`-shared stored responses wherever it needs them. Files:
//! - [`control`]: allocation-free Cache-Control parsing into directive sets.
//! - [`targeted`]: RFC 9213 targeted fields (CDN-Cache-Control, an own name).
//! - [`age`]: HTTP dates, freshness lifetime and current age (RFC 9111 §4.2).
//! - [`policy`]: storability, whether a stored response may be used, and
//!   conditional requests (RFC 9110 §13, RFC 9111 §4.3).
//! - [`entry`]: one stored response, its metadata, and 304 freshening.
//! - [`range`]: Range and If-Range against a stored response, 206 and 416 pieces.
//! - [`stored`]: the head bytes kept for a stored response, and 304 merging.
//! - [`key`]: the primary key, its hash, the owner shard, and Vary matching.
//! - [`store`]: one shard's byte-budgeted store with SIEVE eviction.
//! - [`ownership`]: the owner shard of each key, the cross-shard messages,
//!   request coalescing and the near cache. The only state that crosses shards.

pub mod age;
pub mod control;
pub mod entry;
pub mod key;
pub mod ownership;
pub mod policy;
pub mod range;
pub mod store;
pub mod stored;
pub mod targeted;

#[cfg(test)]
mod tests;

use crate::http::{head::Fields, list_elements, trim_ows};

/// Seconds since the Unix epoch. HTTP dates have one-second resolution, so
/// every time in the cache is kept in whole seconds.
pub type Secs = u64;

/// The raw value of every field line named `name` (case-insensitive), in order.
pub(crate) fn field_lines<'b>(
    fields: &'b Fields,
    buf: &'b [u8],
    name: &'b [u8],
) -> impl Iterator<Item = &'b [u8]> + 'b {
    fields
        .headers
        .iter()
        .filter(move |h| h.name.len() == name.len() && h.name.of(buf).eq_ignore_ascii_case(name))
        .map(move |h| trim_ows(h.value.of(buf)))
}

/// The value of the first field line named `name`.
pub(crate) fn first_field<'b>(
    fields: &'b Fields,
    buf: &'b [u8],
    name: &'b [u8],
) -> Option<&'b [u8]> {
    field_lines(fields, buf, name).next()
}

/// Whether any field line named `name` is present.
pub(crate) fn has_field(fields: &Fields, buf: &[u8], name: &[u8]) -> bool {
    field_lines(fields, buf, name).next().is_some()
}

/// The list elements of every field line named `name` (RFC 9110 §5.6.1).
pub(crate) fn field_elements<'b>(
    fields: &'b Fields,
    buf: &'b [u8],
    name: &'b [u8],
) -> impl Iterator<Item = &'b [u8]> + 'b {
    field_lines(fields, buf, name).flat_map(list_elements)
}
