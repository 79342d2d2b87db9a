//! One stored response: its head bytes (kept parsed, so a hit never parses
//! again), its decoded body, its Vary secondary key, and the metadata that
//! freshness decisions need, computed once when it is stored or freshened.
//!
//! Builds on `stored`, `age`, `control` and `key`; touches nothing else.
//! A `CachedResponse` is immutable and lives behind an `Arc`: a hit hands out a
//! clone of the pointer (one atomic increment), which can cross to another
//! shard, while a 304 builds a new `CachedResponse` that shares the same body
//! buffer, so readers keep a consistent snapshot and the body is never copied.

use std::sync::Arc;

use super::age::{
    corrected_initial_age, current_age, freshness_lifetime, FreshnessOptions, Lifetime,
    ResponseTimes,
};
use super::control::ResponseDirectives;
use super::key::{write_vary_key, VaryStar};
use super::stored::{write_freshened_head, write_stored_head};
use super::{first_field, Secs};
use crate::config::MAX_HEADERS_CAP;
use crate::http::head::{parse_response, HeadError, Limits, Method, RequestHead, ResponseHead};
use crate::http::Span;

/// Why a response could not become (or stay) a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("stored head does not parse: {0}")]
    Head(#[from] HeadError),
    #[error("stored head is incomplete")]
    Incomplete,
    #[error(transparent)]
    VaryStar(#[from] VaryStar),
    #[error("304 validators do not select the stored response")]
    ValidatorMismatch,
}

/// What freshness decisions need, computed from the stored head and the
/// times of the exchange that produced (or last validated) it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub status: u16,
    /// When the request that produced this response was sent.
    pub request_time: Secs,
    /// When the response head arrived.
    pub response_time: Secs,
    /// RFC 9111 §4.2.3 corrected_initial_age.
    pub corrected_initial_age: Secs,
    pub lifetime: Lifetime,
    pub directives: ResponseDirectives,
    /// Date of the stored head (always present: added when missing).
    pub date: Secs,
    pub last_modified: Option<Secs>,
    /// Raw ETag / Last-Modified values, as spans into the stored head.
    pub etag: Option<Span>,
    pub last_modified_raw: Option<Span>,
}

impl Meta {
    /// RFC 9111 §3.5: a shared cache may answer a request carrying
    /// Authorization only from responses marked public, s-maxage or
    /// must-revalidate.
    pub fn serves_authorized(&self) -> bool {
        let d = &self.directives;
        d.public || d.s_maxage.is_some() || d.must_revalidate
    }
}

/// A complete stored response. See the module doc for sharing rules.
#[derive(Debug)]
pub struct CachedResponse {
    head: Box<[u8]>,
    parsed: ResponseHead,
    body: Arc<[u8]>,
    vary_key: Box<[u8]>,
    meta: Meta,
}

fn parse_stored(head: &[u8]) -> Result<ResponseHead, EntryError> {
    let limits = Limits {
        max_head_bytes: head.len(),
        max_headers: MAX_HEADERS_CAP,
        max_uri_length: head.len(),
    };
    let mut parsed = ResponseHead::default();
    if !parse_response(head, &limits, Method::Get, &mut parsed)? {
        return Err(EntryError::Incomplete);
    }
    Ok(parsed)
}

fn describe(
    head: &[u8],
    parsed: &ResponseHead,
    request_time: Secs,
    response_time: Secs,
    opts: &FreshnessOptions,
) -> Meta {
    let directives = ResponseDirectives::parse_for(&parsed.fields, head, &opts.targets);
    let times = ResponseTimes::parse(parsed, head);
    let span = |name: &[u8]| first_field(&parsed.fields, head, name).map(|v| Span::within(head, v));
    Meta {
        status: parsed.status,
        request_time,
        response_time,
        corrected_initial_age: corrected_initial_age(
            request_time,
            response_time,
            times.date,
            times.age,
        ),
        lifetime: freshness_lifetime(parsed.status, &directives, &times, response_time, opts),
        directives,
        date: times.date.unwrap_or(response_time),
        last_modified: times.last_modified,
        etag: span(b"etag"),
        last_modified_raw: span(b"last-modified"),
    }
}

impl CachedResponse {
    /// Builds an entry from the response as it arrived from the origin (head
    /// parsed from `resp_buf`), its complete decoded body, and the request it
    /// answered. Storability is the caller's decision (`policy::storable`).
    #[allow(clippy::too_many_arguments)]
    pub fn from_response(
        resp: &ResponseHead,
        resp_buf: &[u8],
        body: Arc<[u8]>,
        req: &RequestHead,
        req_buf: &[u8],
        request_time: Secs,
        response_time: Secs,
        opts: &FreshnessOptions,
    ) -> Result<CachedResponse, EntryError> {
        let mut vary_key = Vec::new();
        write_vary_key(&mut vary_key, &resp.fields, resp_buf, &req.fields, req_buf)?;
        let mut head = Vec::with_capacity(resp.fields.head_len + 48);
        write_stored_head(&mut head, resp, resp_buf, body.len() as u64, response_time);
        CachedResponse::assemble(head, body, vary_key, request_time, response_time, opts)
    }

    fn assemble(
        head: Vec<u8>,
        body: Arc<[u8]>,
        vary_key: Vec<u8>,
        request_time: Secs,
        response_time: Secs,
        opts: &FreshnessOptions,
    ) -> Result<CachedResponse, EntryError> {
        let head = head.into_boxed_slice();
        let parsed = parse_stored(&head)?;
        let meta = describe(&head, &parsed, request_time, response_time, opts);
        Ok(CachedResponse {
            head,
            parsed,
            body,
            vary_key: vary_key.into_boxed_slice(),
            meta,
        })
    }

    /// The entry after a successful revalidation answered 304 (RFC 9111
    /// §4.3.4): headers merged, times those of the revalidation exchange, body
    /// shared. Refused when the 304's validators name another representation.
    pub fn freshen(
        &self,
        not_modified: &ResponseHead,
        nm_buf: &[u8],
        request_time: Secs,
        response_time: Secs,
        opts: &FreshnessOptions,
    ) -> Result<CachedResponse, EntryError> {
        let nm_etag = first_field(&not_modified.fields, nm_buf, b"etag");
        let nm_lm = first_field(&not_modified.fields, nm_buf, b"last-modified");
        let selected = match (nm_etag, self.etag(), nm_lm, self.last_modified_raw()) {
            (Some(new), Some(old), _, _) => {
                if new.starts_with(b"W/") {
                    super::policy::weak_eq(new, old)
                } else {
                    super::policy::strong_eq(new, old)
                }
            }
            (Some(_), None, _, _) => false,
            (None, _, Some(new), Some(old)) => new == old,
            (None, _, Some(_), None) => false,
            (None, _, None, _) => true,
        };
        if !selected {
            return Err(EntryError::ValidatorMismatch);
        }
        let mut head = Vec::with_capacity(self.head.len() + not_modified.fields.head_len);
        write_freshened_head(
            &mut head,
            &self.parsed,
            &self.head,
            not_modified,
            nm_buf,
            response_time,
        );
        CachedResponse::assemble(
            head,
            Arc::clone(&self.body),
            self.vary_key.to_vec(),
            request_time,
            response_time,
            opts,
        )
    }

    /// The stored head bytes (status line to final CRLF).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// The stored head, parsed; its spans point into [`Self::head`].
    pub fn parsed(&self) -> &ResponseHead {
        &self.parsed
    }

    pub fn body(&self) -> &Arc<[u8]> {
        &self.body
    }

    pub fn vary_key(&self) -> &[u8] {
        &self.vary_key
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn etag(&self) -> Option<&[u8]> {
        self.meta.etag.map(|s| s.of(&self.head))
    }

    pub fn last_modified_raw(&self) -> Option<&[u8]> {
        self.meta.last_modified_raw.map(|s| s.of(&self.head))
    }

    /// RFC 9111 §4.2.3 current_age at `now`.
    pub fn current_age(&self, now: Secs) -> Secs {
        current_age(
            self.meta.corrected_initial_age,
            self.meta.response_time,
            now,
        )
    }

    /// Remaining freshness at `now` (negative when stale), for Cache-Status `ttl`.
    pub fn ttl(&self, now: Secs) -> i64 {
        self.meta.lifetime.secs() as i64 - self.current_age(now) as i64
    }

    /// Bytes this entry is charged against a store's budget: the buffers,
    /// the parsed head's vectors, the struct itself and the two `Arc`
    /// allocation headers (strong + weak counts each).
    pub fn charge(&self) -> usize {
        use crate::http::head::Header;
        const ARC_HEADER: usize = 2 * std::mem::size_of::<usize>();
        self.head.len()
            + self.body.len()
            + self.vary_key.len()
            + self.parsed.fields.headers.capacity() * std::mem::size_of::<Header>()
            + self.parsed.fields.connection_options.capacity() * std::mem::size_of::<Span>()
            + std::mem::size_of::<CachedResponse>()
            + 2 * ARC_HEADER
    }
}
