//! A request's path through the cache (RFC 9111 shared cache, RFC 5861, RFC 9211).
//!
//! GET and HEAD are looked up under their key on the key's owner shard
//! (`cache::ownership`): a usable stored response is served from memory (the
//! body is an `Arc` shared with the store: written to the socket without a
//! copy); a stale one is revalidated, or served while one background refresh
//! runs (stale-while-revalidate), or served when the origin fails
//! (stale-if-error); a miss is fetched by exactly one request while the others
//! wait for it (coalescing), and the response is copied into the cache while it
//! streams to the client. Unsafe methods that succeed invalidate what they
//! touched; PURGE removes a key on its owner.
//!
//! Files: this one (lookup, fill, the decision per RFC 9111), `reply` (answering
//! from a stored response), `invalidate` (unsafe methods, PURGE), `refresh`
//! (stale-while-revalidate in the background).

mod invalidate;
mod refresh;
mod reply;

pub use invalidate::Invalidation;

use std::{io::Write, rc::Rc, sync::Arc};

use super::{
    client::Client,
    error::ProxyError,
    forward::{acquire, client_side, exchange_head, finish, forward, Next},
    relay::Tee,
    response::{send_response, ResponseEnd},
};
use crate::{
    cache::{
        age::{self, FreshnessOptions},
        control::RequestDirectives,
        entry::CachedResponse,
        key::{hash_key, request_key, vary_matches, Scheme},
        ownership::{Answer, CacheShard, Want},
        policy::{
            decide_for, is_client_validator, is_error_status, storable, write_validators,
            StoreOptions, Use,
        },
    },
    config::RouteConfig,
    http::{
        head::{Framing, Method, RequestHead, ResponseHead},
        rewrite::{write_request_head_edited, RequestEdit},
    },
    shard::context::ShardContext,
};
use invalidate::{purge, uncached};
use refresh::refresh;
use reply::{plan_reply, reply_hit, reply_stored};

/// Serves a request on a route with the cache on.
pub async fn serve(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
    route: &RouteConfig,
) -> Result<Next, ProxyError> {
    let Some(cache) = &ctx.cache else {
        return forward(ctx, client, req, resp, route, None, b"").await;
    };
    let buf = client.buf.filled();
    if req.method.of(buf) == b"PURGE" {
        return purge(ctx, cache, client, req).await;
    }
    let method = req.method();
    let mut key = Vec::with_capacity(128);
    let keyed = request_key(&mut key, Scheme::Http, req, buf).is_ok();
    if !keyed || req.fields.framing != Framing::None {
        return uncached(ctx, cache, client, req, resp, route).await;
    }
    let hash = hash_key(&key);
    let directives = RequestDirectives::parse(&req.fields, buf);
    // HEAD never fetches for the cache: it has no body to store.
    let want = if method == Method::Get && !directives.only_if_cached {
        Want::Fill
    } else {
        Want::Peek
    };
    let fits = |v: &CachedResponse| vary_matches(v.vary_key(), &req.fields, client.buf.filled());
    let mut answer = cache.lookup(hash, &key, want, fits).await;
    if let (Answer::Variants(variants), Want::Fill) = (&answer, want) {
        if !variants.iter().any(|v| fits(v)) {
            // Stored, but not this request's Vary variant: coalesce on the key like a miss.
            answer = cache.lookup(hash, &key, Want::FillVariant, fits).await;
        }
    }
    let (entry, filler) = match answer {
        Answer::Variants(variants) => (variants.into_iter().find(|v| fits(v)), false),
        Answer::Fetch => (None, true),
        _ => (None, false),
    };
    // The guard releases the key's waiters on every path that does not fill it.
    let fill = FillGuard {
        cache,
        hash,
        key: &key,
        armed: filler,
    };
    let now = age::now();

    let Some(entry) = entry else {
        cache.counters.borrow_mut().misses += 1;
        if directives.only_if_cached {
            client.buf.consume(req.fields.head_len);
            return Err(ProxyError::UpstreamTimeout);
        }
        if method == Method::Head {
            drop(fill);
            return forward(ctx, client, req, resp, route, None, b"").await;
        }
        return fetch(
            ctx,
            cache,
            client,
            req,
            resp,
            route,
            fill,
            None,
            "fwd=uri-miss",
        )
        .await;
    };
    drop(fill);

    let buf = client.buf.filled();
    // A request `max-age=0` is how clients ask for an end-to-end check (a
    // reload): revalidate even when the stored response is zero seconds old,
    // which RFC 9111 allows a cache to do at any time.
    let decision = match decide_for(&entry, req, buf, now) {
        Use::Fresh { .. } if directives.max_age == Some(0) => Use::MustRevalidate {
            stale_if_error: false,
        },
        decision => decision,
    };
    match decision {
        Use::Fresh { .. } | Use::Stale { .. } => {
            cache.counters.borrow_mut().hits += 1;
            reply_hit(ctx, client, req, &entry, now, "hit").await
        }
        Use::StaleWhileRevalidate { .. } => {
            {
                let mut counters = cache.counters.borrow_mut();
                counters.hits += 1;
                counters.stale_served += 1;
            }
            let head = buf[..req.fields.head_len].to_vec();
            if cache.claim(hash, &key, &entry, true).await {
                let task = refresh(
                    ctx.clone(),
                    route.clone(),
                    head,
                    key.clone(),
                    hash,
                    Arc::clone(&entry),
                    client.ip.clone(),
                );
                compio::runtime::spawn(task).detach();
            }
            reply_hit(
                ctx,
                client,
                req,
                &entry,
                now,
                "hit; detail=stale-while-revalidate",
            )
            .await
        }
        Use::MustRevalidate { stale_if_error } => {
            cache.counters.borrow_mut().revalidated += 1;
            // Claimed, the revalidation makes other requests for the key wait
            // for its result (coalesced) instead of revalidating again.
            let armed = cache.claim(hash, &key, &entry, false).await;
            let guard = FillGuard {
                cache,
                hash,
                key: &key,
                armed,
            };
            let stale = Some((entry, stale_if_error));
            fetch(
                ctx,
                cache,
                client,
                req,
                resp,
                route,
                guard,
                stale,
                "fwd=stale",
            )
            .await
        }
        Use::Forward => {
            let guard = FillGuard {
                cache,
                hash,
                key: &key,
                armed: false,
            };
            fetch(
                ctx,
                cache,
                client,
                req,
                resp,
                route,
                guard,
                None,
                "fwd=request",
            )
            .await
        }
        Use::GatewayTimeout => {
            client.buf.consume(req.fields.head_len);
            Err(ProxyError::UpstreamTimeout)
        }
    }
}

/// Releases a key's coalesced waiters unless a fill has been delivered.
struct FillGuard<'a> {
    cache: &'a CacheShard,
    hash: u64,
    key: &'a [u8],
    /// This request is the key's fetcher: the owner waits for its `fill`.
    armed: bool,
}

impl FillGuard<'_> {
    /// Hands the result of the fetch to the owner (storing it if `Some`).
    fn complete(mut self, response: Option<Arc<CachedResponse>>) {
        if self.armed || response.is_some() {
            self.cache.fill(self.hash, self.key, response);
        }
        self.armed = false;
    }
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.cache.fill(self.hash, self.key, None);
        }
    }
}

fn freshness(route: &RouteConfig) -> FreshnessOptions {
    FreshnessOptions {
        default_ttl: route.cache_default_ttl.map(|d| d.as_secs()),
        ..FreshnessOptions::default()
    }
}

/// Goes to the origin for a GET: a miss (fill), a revalidation of `stale`
/// (with its validators), or a forced fetch. The client's own validators are
/// not forwarded — the cache wants the full response — and are answered from
/// the stored copy afterwards.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    ctx: &Rc<ShardContext>,
    cache: &CacheShard,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
    route: &RouteConfig,
    fill: FillGuard<'_>,
    stale: Option<(Arc<CachedResponse>, bool)>,
    forwarded: &str,
) -> Result<Next, ProxyError> {
    // The request head outlives its bytes in the client buffer: keep a copy for storing.
    let head_len = req.fields.head_len;
    let req_bytes = client.buf.filled()[..head_len].to_vec();
    let side = client_side(ctx, req);
    let mut validators = Vec::new();
    if let Some((entry, _)) = &stale {
        write_validators(&mut validators, entry);
    }
    client.out.clear();
    let edit = RequestEdit {
        drop_field: is_client_validator,
        extra: &validators,
    };
    write_request_head_edited(
        &mut client.out,
        &req_bytes,
        req,
        &client.ip,
        ctx.forward,
        edit,
    );
    client.buf.consume(head_len);

    let serve_stale_on_error = stale.as_ref().is_some_and(|(_, sie)| *sie);
    let exchanged = async {
        let (mut conn, server) = acquire(ctx, route.upstream).await?;
        let request_time = age::now();
        match exchange_head(ctx, &mut client.out, &mut conn, Method::Get, resp, server).await {
            Ok(()) => Ok((conn, request_time)),
            Err(e) => {
                ctx.pool.recycle(conn);
                Err(e)
            }
        }
    }
    .await;
    let (mut conn, request_time) = match exchanged {
        Ok(done) => done,
        Err(e) => {
            if let (true, Some((entry, _))) = (serve_stale_on_error, &stale) {
                cache.counters.borrow_mut().stale_served += 1;
                let now = age::now();
                let plan = plan_reply(ctx, req, &req_bytes, entry, now);
                return reply_stored(client, entry, now, "hit; detail=stale-if-error", plan).await;
            }
            return Err(e);
        }
    };
    let response_time = age::now();
    let upstream = &ctx.config.upstreams[route.upstream];

    if let (Some((entry, _)), 304) = (&stale, resp.status) {
        let freshened = entry.freshen(
            resp,
            conn.buf.filled(),
            request_time,
            response_time,
            &freshness(route),
        );
        conn.buf.consume(resp.fields.head_len);
        let reusable = resp.fields.wants_keep_alive();
        let end = ResponseEnd {
            complete: true,
            close_client: false,
            upstream_reusable: reusable,
        };
        finish(ctx, conn, upstream, end, true);
        let fresh = Arc::new(freshened.map_err(|_| {
            ProxyError::BadResponse(crate::http::head::HeadError::Malformed(
                "304 for another representation",
            ))
        })?);
        fill.complete(Some(Arc::clone(&fresh)));
        let now = age::now();
        let plan = plan_reply(ctx, req, &req_bytes, &fresh, now);
        return reply_stored(client, &fresh, now, "fwd=stale; fwd-status=304", plan).await;
    }
    if let (true, Some((entry, _))) = (serve_stale_on_error && is_error_status(resp.status), &stale)
    {
        // The error response is never read: the connection cannot be reused.
        ctx.pool.recycle(conn);
        cache.counters.borrow_mut().stale_served += 1;
        let now = age::now();
        let plan = plan_reply(ctx, req, &req_bytes, entry, now);
        return reply_stored(client, entry, now, "hit; detail=stale-if-error", plan).await;
    }

    let opts = StoreOptions {
        allow_set_cookie: route.cache_set_cookie,
    };
    let resp_bytes = conn.buf.filled();
    let cacheable = resp.fields.framing != Framing::UntilClose
        && storable(req, &req_bytes, resp, resp_bytes, &opts).is_ok();
    let stored_head = cacheable.then(|| resp_bytes[..resp.fields.head_len].to_vec());
    let mut status_field = Vec::with_capacity(64);
    let _ = write!(
        status_field,
        "Cache-Status: shardproxy; {forwarded}; fwd-status={}{}\r\n",
        resp.status,
        if cacheable { "; stored" } else { "" }
    );
    let mut tee = cacheable.then(|| Tee::new(cache.config().max_object_size as usize));
    let sent = send_response(
        &client.stream,
        &mut client.out,
        &conn.stream,
        &mut conn.buf,
        resp,
        side,
        &status_field,
        tee.as_mut(),
    )
    .await;
    let end = match sent {
        Ok(end) => end,
        Err(e) => {
            ctx.pool.recycle(conn);
            return Err(e);
        }
    };
    let stored = match (end.complete, tee.and_then(Tee::finish), stored_head) {
        (true, Some(payload), Some(head)) => CachedResponse::from_response(
            resp,
            &head,
            Arc::from(payload),
            req,
            &req_bytes,
            request_time,
            response_time,
            &freshness(route),
        )
        .ok()
        .map(Arc::new),
        _ => None,
    };
    fill.complete(stored);
    Ok(finish(ctx, conn, upstream, end, true))
}
