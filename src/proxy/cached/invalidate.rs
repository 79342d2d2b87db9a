//! What unsafe methods and PURGE remove from the cache (RFC 9111 §4.4).
//! Removal happens on the key's owner and in every shard's near cache,
//! through `CacheShard`; nothing here touches another shard directly. In a
//! cluster the owner node is told too (`cluster_purge`).

use std::rc::Rc;

use super::cluster_purge::purge_on_owner;
use crate::proxy::{
    error::ProxyError,
    exchange::{Exchange, Forward, Lookup, Next},
};
use crate::{
    cache::{
        key::{hash_key, location_key, write_forward_key, write_key, Scheme, FORWARD_CLASS},
        ownership::CacheShard,
        policy::invalidates,
    },
    http::{
        head::{Method, ResponseHead},
        status::write_error,
        target::absolute,
    },
    shard::context::ShardContext,
};

/// Requests the cache does not answer go to the upstream as they are; the
/// unsafe ones invalidate the target and the same-host Location /
/// Content-Location when they succeed. Every method not known to be safe is
/// unsafe (RFC 9111 §4.4): POST, PUT, DELETE, PATCH and any method this
/// proxy has no name for (WebDAV's PROPFIND, MKCOL, ..., UPnP's M-SEARCH).
pub(super) fn uncached<'c>(ex: &Exchange<'_>, cache: &'c CacheShard) -> Lookup<'c> {
    let req = ex.req;
    let method = req.method();
    if method.is_safe() {
        return Lookup::Forward(Forward::plain(b""));
    }
    let buf = ex.client.buf.filled();
    let mut target_key = Vec::new();
    let forward = ex.origin.is_forward();
    let host = match forward {
        // The destination's authority: what the key and Location resolve against.
        true => {
            let target = req.target.of(buf);
            write_forward_key(&mut target_key, target);
            absolute(target).map(|t| t.authority.text.to_vec())
        }
        false => {
            let host = req.host.map(|h| h.of(buf).to_vec());
            let host = host.unwrap_or_default();
            write_key(&mut target_key, Scheme::Http, &host, req.target.of(buf));
            Some(host)
        }
    };
    let invalidation = Invalidation {
        ctx: Rc::clone(ex.ctx),
        cache,
        method,
        host: host.unwrap_or_default(),
        target_key,
        forward,
    };
    Lookup::Forward(Forward {
        cache_status: b"",
        invalidation: Some(invalidation),
    })
}

/// What a successful unsafe request invalidates (RFC 9111 §4.4): its target
/// and the same-host URLs in Location and Content-Location. Applied once the
/// response head is known and before the client sees it, so the client's next
/// request cannot meet the old copy.
pub struct Invalidation<'a> {
    /// For telling the owner node (`cluster_purge`).
    ctx: Rc<ShardContext>,
    cache: &'a CacheShard,
    method: Method,
    host: Vec<u8>,
    target_key: Vec<u8>,
    /// The keys are a forward proxy's (`cache::key::FORWARD_CLASS`).
    forward: bool,
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
        purge_on_owner(&self.ctx, &self.target_key).await;
        let mut key = Vec::new();
        for name in [&b"location"[..], b"content-location"] {
            let Some(value) = crate::cache::first_field(&resp.fields, buf, name) else {
                continue;
            };
            if location_key(&mut key, Scheme::Http, &self.host, value) {
                if self.forward {
                    key[0] = FORWARD_CLASS;
                }
                cache.invalidate(hash_key(&key), &key).await;
                purge_on_owner(&self.ctx, &key).await;
            }
        }
    }
}

/// PURGE: removes the key on its owner (allowed clients, or a peer node
/// whose signature `cluster::admit` checked), and on its owner node.
pub(super) async fn purge(ex: &mut Exchange<'_>, cache: &CacheShard) -> Result<Next, ProxyError> {
    let (req, buf, ctx) = (ex.req, ex.client.buf.filled(), ex.ctx);
    let from_peer = super::cluster::from_peer(ex, buf);
    let mut key = Vec::new();
    if let Some(host) = req.host {
        write_key(&mut key, Scheme::Http, host.of(buf), req.target.of(buf));
    }
    let keep_alive = req.fields.wants_keep_alive() && !ex.ctx.draining.get();
    ex.consume_head();
    let client = &mut *ex.client;
    let allowed = from_peer
        || std::str::from_utf8(&client.ip)
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
    } else {
        let here = cache.invalidate(hash_key(&key), &key).await;
        let owner = if from_peer {
            None
        } else {
            purge_on_owner(ctx, &key).await
        };
        if here || owner == Some(true) {
            200
        } else {
            404
        }
    };
    client.trip.status = Some(status);
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
