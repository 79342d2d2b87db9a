//! Parent proxies (`[[forward_proxy.parent]]`): forward requests and CONNECT
//! tunnels leave through another proxy instead of going straight to their
//! destination — a pool of exit peers. Parents are picked round-robin per
//! shard; one that cannot be reached is skipped for the next and left out
//! for [`SET_ASIDE`] (unless every parent is), so a dead parent costs one
//! failed connect per shard in that time rather than one per request; when
//! none can be reached, `parent_fallback` says whether to go direct or
//! answer 502.
//!
//! Through a parent, an absolute-form request keeps its absolute-form target
//! and `Host`, our client's `Proxy-Authorization` is replaced by the parent's
//! credentials, and the connection to the parent is pooled like any other
//! (keyed by the parent's address). A CONNECT is sent on to the parent as a
//! CONNECT; its 2xx opens the tunnel. The destination's name rules apply
//! here; its addresses are the parent's to resolve and police (an IP-literal
//! destination is still checked against the SSRF rules here).
//!
//! Per-shard state: the round-robin position and when each parent failed.

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::{error::ProxyError, forward::unreachable, tunnel::read_answer_head, upstream::connect};
use crate::{
    config::ParentProxy,
    http::head::{Method, ResponseHead},
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// How long a parent that could not be connected to is left out.
const SET_ASIDE: Duration = Duration::from_secs(5);

/// One shard's position in the parents' round-robin, and which are set aside.
pub struct Parents {
    next: Cell<usize>,
    /// Per parent (config order): left out until then.
    set_aside: RefCell<Vec<Option<Instant>>>,
}

impl Parents {
    pub fn new(count: usize) -> Parents {
        Parents {
            next: Cell::new(0),
            set_aside: RefCell::new(vec![None; count]),
        }
    }

    /// Whether parent `index` is set aside now (and not every parent is).
    fn skipped(&self, index: usize) -> bool {
        let now = Instant::now();
        let set_aside = self.set_aside.borrow();
        let down = |until: &Option<Instant>| until.is_some_and(|t| t > now);
        down(&set_aside[index]) && !set_aside.iter().all(down)
    }

    /// A connection to a parent, starting at the round-robin pick and trying
    /// each parent once: a pooled connection if `pooled` and one is idle,
    /// else a new one.
    pub(super) async fn acquire<'c>(
        &self,
        ctx: &'c ShardContext,
        pooled: bool,
    ) -> Result<(UpstreamConn, SocketAddr, &'c ParentProxy), ProxyError> {
        let parents = &ctx.config.forward.parents;
        let mut last_error = None;
        for _ in 0..parents.len() {
            let index = self.next.get() % parents.len();
            self.next.set(index + 1);
            let parent = &parents[index];
            if self.skipped(index) {
                continue;
            }
            if pooled {
                if let Some(mut conn) = ctx.pool.take(parent.addr) {
                    conn.buf = ctx.upstream_buffers.lease().await;
                    return Ok((conn, parent.addr, parent));
                }
            }
            match connect(ctx, parent.addr).await {
                Ok(conn) => {
                    self.set_aside.borrow_mut()[index] = None;
                    return Ok((conn, parent.addr, parent));
                }
                Err(e) => {
                    log::warn!("shard {}: parent proxy {}: {e}", ctx.id, parent.addr);
                    self.set_aside.borrow_mut()[index] = Some(Instant::now() + SET_ASIDE);
                    last_error = Some(unreachable(parent.addr, e));
                }
            }
        }
        Err(last_error.unwrap_or(ProxyError::UpstreamClosed))
    }
}

/// The field line that authenticates us to `parent`, if it wants one.
pub(super) fn authorization_line(parent: &ParentProxy) -> Vec<u8> {
    match &parent.authorization {
        Some(value) => format!("Proxy-Authorization: {value}\r\n").into_bytes(),
        None => Vec::new(),
    }
}

/// Asks `parent` (over `conn`) for a tunnel to `authority`. `Ok`: the
/// parent answered 2xx; bytes after its head stay in `conn.buf` as the
/// tunnel's first. A refusal is a 502 naming the parent's status.
pub(super) async fn open_tunnel(
    ctx: &ShardContext,
    conn: &mut UpstreamConn,
    parent: &ParentProxy,
    authority: &[u8],
    resp: &mut ResponseHead,
) -> Result<(), ProxyError> {
    let mut head = b"CONNECT ".to_vec();
    head.extend_from_slice(authority);
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(authority);
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&authorization_line(parent));
    head.extend_from_slice(b"\r\n");
    read_answer_head(ctx, conn, &mut head, Method::Connect, resp).await?;
    if !(200..300).contains(&resp.status) {
        return Err(ProxyError::ParentRefused(resp.status));
    }
    conn.buf.consume(resp.fields.head_len);
    Ok(())
}
