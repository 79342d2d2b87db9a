//! A request's path through the cache (RFC 9111 shared cache, RFC 5861, RFC 9211).
//!
//! GET and HEAD are looked up under their key (a forward proxy's requests
//! under keys of their own, `origin`) on the key's owner shard
//! (`cache::ownership`): a usable stored response is served from memory (the
//! body is an `Arc` shared with the store: written to the socket without a
//! copy); a stale one is revalidated, or served while one background refresh
//! runs (stale-while-revalidate), or served when the origin fails
//! (stale-if-error); a miss is fetched by exactly one request while the others
//! wait for it (coalescing), and the response is copied into the cache while it
//! streams to the client. Unsafe methods that succeed invalidate what they
//! touched; PURGE removes a key on its owner.
//!
//! Files: this one (phase 3, the lookup: find the stored response, decide its
//! use per RFC 9111, answer or say what to fetch), `fetch` (phases 4 to 6 of
//! a trip to the origin for the cache), `reply` (answering from a stored
//! response), `invalidate` (unsafe methods, PURGE), `refresh`
//! (stale-while-revalidate in the background), `cluster` (a miss whose key
//! another node owns, and requests from other nodes), `cluster_purge`
//! (invalidations sent on to the owner node). Other shards are reached only
//! through `CacheShard`'s messages; no `RefCell` borrow spans an `.await`.

mod cluster;
mod cluster_purge;
mod fetch;
mod invalidate;
mod refresh;
mod reply;
mod whole;

pub(super) use fetch::{fetch, Fetch};
pub use invalidate::Invalidation;

use std::sync::Arc;

use super::{
    error::ProxyError,
    exchange::{Exchange, Lookup, Next},
    origin::Origin,
};
use crate::{
    cache::{
        age::{self, FreshnessOptions},
        control::{RequestDirectives, Targets},
        entry::CachedResponse,
        key::{forward_request_key, hash_key, request_key, vary_matches, Scheme},
        ownership::{Answer, CacheShard, Want},
        policy::{decide_for, StoreOptions, Use},
        Secs,
    },
    config::{CacheConfig, RouteConfig},
    http::head::Framing,
};
use fetch::Stale;
use invalidate::{purge, uncached};
use refresh::{refresh, Refresh};
use reply::reply_hit;

/// Phase 3 on a route with the cache on: answers from the cache when it
/// can, else says what the trip upstream is for. `Err`: the request is
/// answered with the error's status (only-if-cached and nothing usable: 504).
pub(in crate::proxy) async fn lookup<'c>(
    ex: &mut Exchange<'_>,
    cache: &'c CacheShard,
) -> Result<Lookup<'c>, ProxyError> {
    cluster::admit(ex)?;
    let (req, buf) = (ex.req, ex.client.buf.filled());
    // PURGE is the reverse proxy's; through a forward proxy it is one more
    // unsafe method for the destination (and invalidates on success).
    if req.method.of(buf) == b"PURGE" && !ex.origin.is_forward() {
        return purge(ex, cache).await.map(Lookup::Answered);
    }
    let mut bytes = Vec::with_capacity(128);
    let keyed = match ex.origin.is_forward() {
        true => forward_request_key(&mut bytes, req, buf),
        false => request_key(&mut bytes, Scheme::Http, req, buf),
    }
    .is_ok();
    if !keyed || req.fields.framing != Framing::None {
        return Ok(uncached(ex, cache));
    }
    let key = CacheKey {
        cache,
        hash: hash_key(&bytes),
        bytes,
    };
    let directives = RequestDirectives::parse(&req.fields, buf);
    // A HEAD miss fetches with a GET too (`whole`): the entry it fills
    // answers the HEAD and every later GET.
    let want = if !directives.only_if_cached {
        Want::Fill
    } else {
        Want::Peek
    };
    match find(ex, &key, want).await {
        Found::Stored(entry) => use_stored(ex, key, entry, &directives).await,
        Found::Missing { fetcher } => miss(ex, key.fill_guard(fetcher), &directives),
    }
}

/// A request's cache key, with its hash and the shard part that asks its owner.
struct CacheKey<'c> {
    cache: &'c CacheShard,
    hash: u64,
    bytes: Vec<u8>,
}

impl<'c> CacheKey<'c> {
    /// `armed`: this request is the key's fetcher, and others wait for its fill.
    fn fill_guard(self, armed: bool) -> FillGuard<'c> {
        FillGuard { key: self, armed }
    }
}

/// What the owner holds for one request.
enum Found {
    /// A stored response whose Vary fits the request.
    Stored(Arc<CachedResponse>),
    /// Nothing that fits; `fetcher`: this request is to fetch and fill the key.
    Missing { fetcher: bool },
}

/// Asks the key's owner for a stored response that fits the request (Vary).
async fn find(ex: &Exchange<'_>, key: &CacheKey<'_>, want: Want) -> Found {
    let (req, buf) = (ex.req, ex.client.buf.filled());
    let fits = |v: &CachedResponse| vary_matches(v.vary_key(), &req.fields, buf);
    let (cache, hash) = (key.cache, key.hash);
    let mut answer = cache.lookup(hash, &key.bytes, want, fits).await;
    if let (Answer::Variants(variants), Want::Fill) = (&answer, want) {
        if !variants.iter().any(|v| fits(v)) {
            // Stored, but not this request's Vary variant: coalesce on the key like a miss.
            answer = cache
                .lookup(hash, &key.bytes, Want::FillVariant, fits)
                .await;
        }
    }
    match answer {
        Answer::Variants(variants) => match variants.into_iter().find(|v| fits(v)) {
            Some(entry) => Found::Stored(entry),
            None => Found::Missing { fetcher: false },
        },
        Answer::Fetch => Found::Missing { fetcher: true },
        _ => Found::Missing { fetcher: false },
    }
}

/// Nothing stored fits: only-if-cached is a 504, else the request fetches
/// (and fills, if it is the key's fetcher). Dropping `fill` on the 504
/// releases the key's waiters.
fn miss<'c>(
    ex: &mut Exchange<'_>,
    fill: FillGuard<'c>,
    directives: &RequestDirectives,
) -> Result<Lookup<'c>, ProxyError> {
    fill.key.cache.counters.borrow_mut().misses += 1;
    if directives.only_if_cached {
        ex.consume_head();
        return Err(ProxyError::UpstreamTimeout);
    }
    Ok(Lookup::Fetch(Fetch {
        fill,
        stale: None,
        forwarded: "fwd=uri-miss",
    }))
}

/// A stored response fits: it answers now (fresh, or stale within what the
/// client accepts), answers while a background refresh runs, is revalidated
/// first, or cannot be used (RFC 9111 §4).
async fn use_stored<'c>(
    ex: &mut Exchange<'_>,
    key: CacheKey<'c>,
    entry: Arc<CachedResponse>,
    directives: &RequestDirectives,
) -> Result<Lookup<'c>, ProxyError> {
    let now = age::now();
    let cache = key.cache;
    // A request `max-age=0` is how clients ask for an end-to-end check (a
    // reload): revalidate even when the stored response is zero seconds old,
    // which RFC 9111 allows a cache to do at any time.
    let decision = match decide_for(&entry, ex.req, ex.client.buf.filled(), now) {
        Use::Fresh { .. } if directives.max_age == Some(0) => Use::MustRevalidate {
            stale_if_error: false,
        },
        decision => decision,
    };
    let fetch = |fill, stale, forwarded| {
        Ok(Lookup::Fetch(Fetch {
            fill,
            stale,
            forwarded,
        }))
    };
    match decision {
        Use::Fresh { .. } | Use::Stale { .. } => {
            cache.counters.borrow_mut().hits += 1;
            reply_hit(ex, &entry, now, "hit")
                .await
                .map(Lookup::Answered)
        }
        Use::StaleWhileRevalidate { .. } => stale_while_revalidate(ex, key, entry, now)
            .await
            .map(Lookup::Answered),
        Use::MustRevalidate { stale_if_error } => {
            cache.counters.borrow_mut().revalidated += 1;
            // Claimed, the revalidation makes other requests for the key wait
            // for its result (coalesced) instead of revalidating again.
            let armed = cache.claim(key.hash, &key.bytes, &entry, false).await;
            let stale = Stale {
                entry,
                if_error: stale_if_error,
            };
            fetch(key.fill_guard(armed), Some(stale), "fwd=stale")
        }
        Use::Forward => fetch(key.fill_guard(false), None, "fwd=request"),
        Use::GatewayTimeout => {
            ex.consume_head();
            Err(ProxyError::UpstreamTimeout)
        }
    }
}

/// Serves the stale entry now and, if this request wins the key's claim,
/// refreshes it in the background (RFC 5861 §3).
async fn stale_while_revalidate(
    ex: &mut Exchange<'_>,
    key: CacheKey<'_>,
    entry: Arc<CachedResponse>,
    now: Secs,
) -> Result<Next, ProxyError> {
    {
        let mut counters = key.cache.counters.borrow_mut();
        counters.hits += 1;
        counters.stale_served += 1;
    }
    if key.cache.claim(key.hash, &key.bytes, &entry, true).await {
        // The task outlives this request: it gets its own copies.
        let job = Refresh {
            route: ex.route.clone(),
            head: ex.client.buf.filled()[..ex.req.fields.head_len].to_vec(),
            key: key.bytes,
            hash: key.hash,
            stale: Arc::clone(&entry),
            client_ip: ex.client.ip,
            destination: match &ex.origin {
                Origin::Forward(forward) => Some(forward.destination().clone()),
                Origin::Upstream => None,
            },
        };
        compio::runtime::spawn(refresh(ex.ctx.clone(), job)).detach();
    }
    reply_hit(ex, &entry, now, "hit; detail=stale-while-revalidate").await
}

/// Releases a key's coalesced waiters unless a fill has been delivered.
struct FillGuard<'c> {
    key: CacheKey<'c>,
    /// This request is the key's fetcher: the owner waits for its `fill`.
    armed: bool,
}

impl FillGuard<'_> {
    /// Hands the result of the fetch to the owner (storing it if `Some`).
    fn complete(mut self, response: Option<Arc<CachedResponse>>) {
        if self.armed || response.is_some() {
            let key = &self.key;
            key.cache.fill(key.hash, &key.bytes, response);
        }
        self.armed = false;
    }
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let key = &self.key;
            key.cache.fill(key.hash, &key.bytes, None);
        }
    }
}

/// How lifetimes are computed on `route`.
fn freshness(cache: &CacheConfig, route: &RouteConfig) -> FreshnessOptions {
    FreshnessOptions {
        default_ttl: route.cache_default_ttl.map(|d| d.as_secs()),
        targets: targets(cache),
        ..FreshnessOptions::default()
    }
}

/// What may be stored on `route`.
fn store_options(cache: &CacheConfig, route: &RouteConfig) -> StoreOptions {
    StoreOptions {
        allow_set_cookie: route.cache_set_cookie,
        targets: targets(cache),
    }
}

/// The targeted cache-control fields obeyed (RFC 9213): the configured own
/// name, then CDN-Cache-Control.
fn targets(cache: &CacheConfig) -> Targets {
    Targets::new(cache.targeted_cache_control.as_deref())
}
