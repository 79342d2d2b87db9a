//! RFC 9111 (and RFC 5861) decisions as pure functions: may a response be
//! stored by a shared cache, may a stored response answer a request (and
//! how), does a client's conditional request match a stored response, and
//! which validators a revalidation request carries.
//!
//! Reads parsed heads, their buffers and Unix-second times; touches nothing
//! else. The request path calls [`storable`] when a response head arrives
//! (before deciding to keep its body), [`decide`] on every lookup hit, and
//! [`evaluate_conditional`] before serving a hit.

use super::age::{heuristically_cacheable, parse_http_date};
use super::control::{MaxStale, RequestDirectives, ResponseDirectives, Targets};
use super::entry::{CachedResponse, Meta};
use super::key::vary_star;
use super::{field_elements, first_field, has_field, Secs};
use crate::http::head::{Method, RequestHead, ResponseHead};

/// Per-route storage options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Store responses carrying Set-Cookie (off by default: a cookie meant
    /// for one client would be handed to every client).
    pub allow_set_cookie: bool,
    /// Targeted cache-control fields obeyed before Cache-Control (RFC 9213).
    pub targets: Targets,
}

/// Why a response is not stored. Each maps to `Cache-Status: fwd=...;
/// detail=...` or a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    #[error("request method is not GET")]
    Method,
    #[error("status code is not storable")]
    Status,
    #[error("no-store")]
    NoStore,
    #[error("private")]
    Private,
    #[error("request has Authorization and the response does not allow sharing")]
    Authorization,
    #[error("response sets a cookie")]
    SetCookie,
    #[error("Vary: *")]
    VaryStar,
    #[error("must-understand with a status code this cache does not implement")]
    MustUnderstand,
    #[error("no explicit freshness and not heuristically cacheable")]
    NoFreshness,
}

/// Status codes whose caching rules this cache implements (for must-understand).
fn understood(status: u16) -> bool {
    heuristically_cacheable(status) || matches!(status, 302 | 303 | 307)
}

/// Whether a shared cache may store this response (RFC 9111 §3, §3.5).
///
/// Only responses to GET are stored: a HEAD response has no body to serve
/// a later GET. `req` may be a HEAD because the proxy fills a HEAD miss
/// with a GET (as nginx does) and answers head-only from the entry: the
/// response judged here is then the GET's.
/// 206 and 304 are never stored (this cache keeps whole representations; a
/// 304 freshens an entry instead, see `CachedResponse::freshen`).
pub fn storable(
    req: &RequestHead,
    req_buf: &[u8],
    resp: &ResponseHead,
    resp_buf: &[u8],
    opts: &StoreOptions,
) -> Result<ResponseDirectives, NotStorable> {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Err(NotStorable::Method);
    }
    let status = resp.status;
    if status < 200 || status == 206 || status == 304 {
        return Err(NotStorable::Status);
    }
    let d = ResponseDirectives::parse_for(&resp.fields, resp_buf, &opts.targets);
    let req_d = RequestDirectives::parse(&req.fields, req_buf);
    if req_d.no_store {
        return Err(NotStorable::NoStore);
    }
    // §5.2.2.3: must-understand overrides no-store for statuses we implement,
    // and forbids storing any other.
    if d.must_understand {
        if !understood(status) {
            return Err(NotStorable::MustUnderstand);
        }
    } else if d.no_store {
        return Err(NotStorable::NoStore);
    }
    if d.private {
        return Err(NotStorable::Private);
    }
    if has_field(&req.fields, req_buf, b"authorization")
        && !(d.public || d.s_maxage.is_some() || d.must_revalidate)
    {
        return Err(NotStorable::Authorization);
    }
    if !opts.allow_set_cookie && has_field(&resp.fields, resp_buf, b"set-cookie") {
        return Err(NotStorable::SetCookie);
    }
    if vary_star(&resp.fields, resp_buf) {
        return Err(NotStorable::VaryStar);
    }
    let explicit = d.public
        || d.max_age.is_some()
        || d.s_maxage.is_some()
        || (!d.targeted && has_field(&resp.fields, resp_buf, b"expires"));
    if !(explicit || heuristically_cacheable(status)) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(d)
}

/// How a stored response may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Fresh and acceptable to the client: serve with `Age: age`.
    Fresh { age: Secs },
    /// Stale, but the client's max-stale accepts it: serve as is.
    Stale { age: Secs },
    /// Stale within stale-while-revalidate: serve now and revalidate once in
    /// the background (RFC 5861 §3).
    StaleWhileRevalidate { age: Secs },
    /// Send a conditional request ([`write_validators`]). On 304 freshen and
    /// serve; on 200 replace. If the origin fails or answers 5xx and
    /// `stale_if_error` is set, serve the stored response instead (RFC 5861 §4).
    MustRevalidate { stale_if_error: bool },
    /// The stored response cannot answer this request at all (Authorization
    /// without public/s-maxage/must-revalidate): forward unconditionally.
    Forward,
    /// only-if-cached and nothing servable without the origin: answer 504
    /// (RFC 9111 §5.2.1.7).
    GatewayTimeout,
}

impl Use {
    /// Whether the stored response is sent to the client without contacting the origin first.
    pub fn serves_stored(self) -> bool {
        matches!(
            self,
            Use::Fresh { .. } | Use::Stale { .. } | Use::StaleWhileRevalidate { .. }
        )
    }
}

/// Decides how a stored response may answer a request at `now` (RFC 9111
/// §4, §4.2.4, §5.2; RFC 5861). `authorized`: the request carries Authorization.
pub fn decide(meta: &Meta, age: Secs, req: &RequestDirectives, authorized: bool) -> Use {
    let outcome = decide_inner(meta, age, req, authorized);
    if req.only_if_cached && !outcome.serves_stored() {
        return Use::GatewayTimeout;
    }
    outcome
}

fn decide_inner(meta: &Meta, age: Secs, req: &RequestDirectives, authorized: bool) -> Use {
    if authorized && !meta.serves_authorized() {
        return Use::Forward;
    }
    let d = &meta.directives;
    let lifetime = meta.lifetime.secs();
    let fresh = lifetime > age;
    let staleness = age.saturating_sub(lifetime);
    let within = |window: Option<u32>| window.is_some_and(|w| staleness <= Secs::from(w));

    // The stored response itself, or the client, demands validation: no
    // stale fallback either (§4.2.4 forbids stale after no-cache).
    if d.no_cache || req.no_cache {
        return Use::MustRevalidate {
            stale_if_error: false,
        };
    }
    let stale_if_error =
        fresh || (!d.forbids_stale() && (within(d.stale_if_error) || within(req.stale_if_error)));
    let revalidate = Use::MustRevalidate { stale_if_error };
    // Client constraints apply to fresh and stale responses alike.
    if req.max_age.is_some_and(|m| age > Secs::from(m)) {
        return revalidate;
    }
    if let Some(min_fresh) = req.min_fresh {
        if lifetime.saturating_sub(age) < Secs::from(min_fresh) || !fresh {
            return revalidate;
        }
    }
    if fresh {
        return Use::Fresh { age };
    }
    if d.forbids_stale() {
        return revalidate;
    }
    match req.max_stale {
        Some(MaxStale::Any) => return Use::Stale { age },
        Some(MaxStale::Limit(n)) if staleness <= Secs::from(n) => return Use::Stale { age },
        _ => {}
    }
    if within(d.stale_while_revalidate) {
        return Use::StaleWhileRevalidate { age };
    }
    revalidate
}

/// Convenience: parse the request's directives and decide for `entry` at `now`.
pub fn decide_for(entry: &CachedResponse, req: &RequestHead, req_buf: &[u8], now: Secs) -> Use {
    let directives = RequestDirectives::parse(&req.fields, req_buf);
    let authorized = has_field(&req.fields, req_buf, b"authorization");
    decide(
        entry.meta(),
        entry.current_age(now),
        &directives,
        authorized,
    )
}

/// The opaque-tag of an entity-tag (`W/"x"` → `"x"`).
fn opaque(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// Weak comparison (RFC 9110 §8.8.3.2): opaque-tags equal, weakness ignored.
pub fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (opaque(a), opaque(b));
    a.len() >= 2 && a.first() == Some(&b'"') && a == b
}

/// Strong comparison: neither weak, opaque-tags equal.
pub fn strong_eq(a: &[u8], b: &[u8]) -> bool {
    !a.starts_with(b"W/") && !b.starts_with(b"W/") && weak_eq(a, b)
}

/// What a client's conditional request gets from a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the stored response in full.
    Serve,
    /// Answer 304 (`stored::write_not_modified_head`).
    NotModified,
    /// The request carries preconditions meant for the origin (If-Match,
    /// If-Unmodified-Since): forward it rather than evaluate them here
    /// (RFC 9111 §4.3.2 leaves them to the origin).
    Forward,
}

/// Evaluates If-None-Match / If-Modified-Since against a stored response
/// (RFC 9110 §13.2.2, RFC 9111 §4.3.2). If-None-Match wins when present;
/// a stored response without Last-Modified is compared by its Date; an
/// If-Modified-Since date in the future or unparseable is ignored.
/// Preconditions are ignored for non-2xx stored responses (§13.2.1).
pub fn evaluate_conditional(
    req: &RequestHead,
    req_buf: &[u8],
    entry: &CachedResponse,
    now: Secs,
) -> Precondition {
    let fields = &req.fields;
    if has_field(fields, req_buf, b"if-match") || has_field(fields, req_buf, b"if-unmodified-since")
    {
        return Precondition::Forward;
    }
    let meta = entry.meta();
    if !(200..300).contains(&meta.status) || !matches!(req.method(), Method::Get | Method::Head) {
        return Precondition::Serve;
    }
    if has_field(fields, req_buf, b"if-none-match") {
        let stored = entry.etag();
        let matched = field_elements(fields, req_buf, b"if-none-match")
            .any(|tag| tag == b"*" || stored.is_some_and(|s| weak_eq(tag, s)));
        return if matched {
            Precondition::NotModified
        } else {
            Precondition::Serve
        };
    }
    let since = first_field(fields, req_buf, b"if-modified-since").and_then(parse_http_date);
    match since {
        Some(since) if since <= now => {
            let modified = meta.last_modified.unwrap_or(meta.date);
            if modified <= since {
                Precondition::NotModified
            } else {
                Precondition::Serve
            }
        }
        _ => Precondition::Serve,
    }
}

/// Request fields that carry the client's own validators. When the proxy
/// revalidates a stored response it drops these and sends the entry's own
/// ([`write_validators`]), then answers the client's conditions locally from
/// the refreshed entry: a 304 to the client's validators could not refresh
/// the entry.
pub fn is_client_validator(name: &[u8]) -> bool {
    [
        &b"if-none-match"[..],
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// Request fields a fetch for the cache does not forward: the client's
/// validators ([`is_client_validator`]) and `Range`, because the cache
/// fetches whole representations and answers ranges from them (`range`).
pub fn is_dropped_by_cache_fetch(name: &[u8]) -> bool {
    is_client_validator(name) || name.eq_ignore_ascii_case(b"range")
}

/// Appends the validator fields of a revalidation request (RFC 9111 §4.3.1):
/// If-None-Match from the stored ETag, If-Modified-Since from the stored
/// Last-Modified. Returns false when the entry has neither (the request is
/// then an unconditional refetch).
pub fn write_validators(out: &mut Vec<u8>, entry: &CachedResponse) -> bool {
    let mut any = false;
    if let Some(etag) = entry.etag() {
        out.extend_from_slice(b"If-None-Match: ");
        out.extend_from_slice(etag);
        out.extend_from_slice(b"\r\n");
        any = true;
    }
    if let Some(lm) = entry.last_modified_raw() {
        out.extend_from_slice(b"If-Modified-Since: ");
        out.extend_from_slice(lm);
        out.extend_from_slice(b"\r\n");
        any = true;
    }
    any
}

/// After a failed revalidation: whether the origin's answer counts as an
/// error that stale-if-error may cover (RFC 5861 §4: 500, 502, 503, 504).
pub fn is_error_status(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504)
}

/// Whether a response to this request invalidates stored responses for the
/// target URI and its same-host Location / Content-Location (RFC 9111 §4.4):
/// an unsafe method answered with a non-error status (2xx or 3xx).
/// Unknown methods count as unsafe.
pub fn invalidates(method: Method, status: u16) -> bool {
    !method.is_safe() && (200..400).contains(&status)
}
