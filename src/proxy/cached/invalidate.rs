//! What unsafe methods and PURGE remove from the cache (RFC 9111 §4.4).

use std::rc::Rc;

use crate::proxy::{
    client::Client,
    error::ProxyError,
    forward::{forward, Next},
};
use crate::{
    cache::{
        key::{hash_key, location_key, write_key, Scheme},
        ownership::CacheShard,
        policy::invalidates,
    },
    config::RouteConfig,
    http::{
        head::{Method, RequestHead, ResponseHead},
        status::write_error,
    },
    shard::context::ShardContext,
};

/// Requests the cache does not answer: forwarded; the unsafe ones invalidate
/// the target and the same-host Location / Content-Location when they succeed.
pub(super) async fn uncached(
    ctx: &Rc<ShardContext>,
    cache: &CacheShard,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
    route: &RouteConfig,
) -> Result<Next, ProxyError> {
    let method = req.method();
    if !matches!(
        method,
        Method::Post | Method::Put | Method::Delete | Method::Patch
    ) {
        return forward(ctx, client, req, resp, route, None, b"").await;
    }
    let buf = client.buf.filled();
    let host = req.host.map(|h| h.of(buf).to_vec()).unwrap_or_default();
    let mut target_key = Vec::new();
    write_key(&mut target_key, Scheme::Http, &host, req.target.of(buf));
    let invalidation = Invalidation {
        cache,
        method,
        host,
        target_key,
    };
    forward(ctx, client, req, resp, route, Some(&invalidation), b"").await
}

/// What a successful unsafe request invalidates (RFC 9111 §4.4): its target
/// and the same-host URLs in Location and Content-Location. Applied once the
/// response head is known and before the client sees it, so the client's next
/// request cannot meet the old copy.
pub struct Invalidation<'a> {
    cache: &'a CacheShard,
    method: Method,
    host: Vec<u8>,
    target_key: Vec<u8>,
}

impl Invalidation<'_> {
    pub(in crate::proxy) async fn apply(&self, resp: &ResponseHead, buf: &[u8]) {
        if !invalidates(self.method, resp.status) {
            return;
        }
        let cache = self.cache;
        cache
            .invalidate(hash_key(&self.target_key), &self.target_key)
            .await;
        let mut key = Vec::new();
        for name in [&b"location"[..], b"content-location"] {
            let Some(value) = crate::cache::first_field(&resp.fields, buf, name) else {
                continue;
            };
            if location_key(&mut key, Scheme::Http, &self.host, value) {
                cache.invalidate(hash_key(&key), &key).await;
            }
        }
    }
}

/// PURGE: removes the key on its owner (allowed clients only).
pub(super) async fn purge(
    ctx: &ShardContext,
    cache: &CacheShard,
    client: &mut Client,
    req: &RequestHead,
) -> Result<Next, ProxyError> {
    let buf = client.buf.filled();
    let mut key = Vec::new();
    if let Some(host) = req.host {
        write_key(&mut key, Scheme::Http, host.of(buf), req.target.of(buf));
    }
    let keep_alive = req.fields.wants_keep_alive() && !ctx.draining.get();
    client.buf.consume(req.fields.head_len);
    let allowed = std::str::from_utf8(&client.ip)
        .ok()
        .and_then(|ip| ip.parse().ok())
        .is_some_and(|ip| {
            cache
                .config()
                .purge_allow
                .iter()
                .any(|net| net.contains(ip))
        });
    let status = if !allowed {
        403
    } else if cache.invalidate(hash_key(&key), &key).await {
        200
    } else {
        404
    };
    client.out.clear();
    write_error(&mut client.out, status, !keep_alive);
    client
        .send_out()
        .await
        .map_err(|e| ProxyError::ClientGone(e.into()))?;
    Ok(if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    })
}
