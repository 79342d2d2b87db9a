//! Where a request's trips to the origin go, for the phases the reverse and
//! the forward proxy share (the cache's fetch, `cached::fetch`): a route's
//! `[[upstream]]` (balancer, retry policy, outlier detection: `upstream`,
//! `retrying`), or a forward-proxy destination: its ACL-admitted addresses,
//! or a parent proxy (`forward`). [`Origin`] writes the request head in the
//! form the next hop takes, hands out the connection, and settles it after.
//!
//! A forward destination's way out is chosen once per request
//! ([`ForwardOrigin::choose`]), after the cache lookup missed: a hit needs
//! neither a DNS answer nor a connection. Touches the shard's pool and the
//! forward proxy's per-shard state only.

use std::net::SocketAddr;

use super::{
    error::ProxyError,
    exchange::Next,
    forward::{self, Destination, ForwardShard, Hop},
    parent,
    response::ResponseEnd,
    upstream::finish,
};
use crate::{
    config::{ParentProxy, RouteConfig},
    http::{
        head::RequestHead,
        rewrite::{
            write_forward_request_head, write_parent_request_head, write_request_head_edited,
            ForwardOptions, RequestEdit,
        },
        target::absolute,
    },
    shard::context::ShardContext,
    upstream::pool::UpstreamConn,
};

/// The origin side of one request.
pub enum Origin<'a> {
    /// The route's upstream (`Exchange::target`).
    Upstream,
    /// An absolute-form request's destination.
    Forward(ForwardOrigin<'a>),
}

/// A forward request's destination and, once chosen, its way out.
pub struct ForwardOrigin<'a> {
    fwd: &'a ForwardShard,
    destination: &'a Destination,
    way: Option<Way<'a>>,
    /// The connection opened while choosing (a parent's), for the first trip.
    opened: Option<(UpstreamConn, SocketAddr)>,
}

/// How a forward request leaves.
enum Way<'a> {
    /// Straight to the destination's admitted addresses.
    Direct(Vec<SocketAddr>),
    /// Through this parent (at this address), in absolute-form.
    Parent(SocketAddr, &'a ParentProxy),
}

impl<'a> ForwardOrigin<'a> {
    pub(super) fn new(fwd: &'a ForwardShard, destination: &'a Destination) -> Self {
        ForwardOrigin {
            fwd,
            destination,
            way: None,
            opened: None,
        }
    }

    /// Where the request goes.
    pub(super) fn destination(&self) -> &'a Destination {
        self.destination
    }

    /// Picks the way out (a parent, else the destination's addresses, as
    /// `forward::next_hop` decides) unless already picked. `Err`: no DNS
    /// answer, an ACL refusal, or no parent reachable.
    pub(super) async fn choose(&mut self, ctx: &'a ShardContext) -> Result<(), ProxyError> {
        if self.way.is_some() {
            return Ok(());
        }
        self.way = Some(
            match forward::next_hop(ctx, self.fwd, self.destination, true).await? {
                Hop::Direct(addrs) => Way::Direct(addrs),
                Hop::Parent(conn, addr, parent) => {
                    self.opened = Some((conn, addr));
                    Way::Parent(addr, parent)
                }
            },
        );
        Ok(())
    }

    /// A connection for the next trip: the one opened while choosing, else
    /// a pooled or new one to the same place.
    pub(super) async fn connection(
        &mut self,
        ctx: &ShardContext,
    ) -> Result<(UpstreamConn, SocketAddr), ProxyError> {
        if let Some((conn, addr)) = self.opened.take() {
            return Ok((conn, addr));
        }
        match &self.way {
            Some(Way::Direct(addrs)) => forward::acquire(ctx, addrs, true).await,
            Some(Way::Parent(addr, _)) => forward::acquire(ctx, &[*addr], true).await,
            // `choose` runs before any trip (see `forward`).
            None => Err(ProxyError::UpstreamClosed),
        }
    }
}

impl Origin<'_> {
    /// Whether this is a forward-proxy destination.
    pub fn is_forward(&self) -> bool {
        matches!(self, Origin::Forward(_))
    }

    /// Writes the head of `req` (whose bytes are `head`) for the next hop,
    /// with `edit` applied: as the reverse proxy rewrites it; origin-form
    /// with `Host` from the target for a destination; absolute-form with our
    /// credentials for a parent. A forward origin must have been chosen.
    pub(super) fn write_head(
        &self,
        out: &mut Vec<u8>,
        head: &[u8],
        req: &RequestHead,
        client_ip: &[u8],
        opts: ForwardOptions,
        edit: RequestEdit<'_>,
    ) {
        let way = match self {
            Origin::Upstream => None,
            Origin::Forward(origin) => origin.way.as_ref(),
        };
        let target = absolute(req.target.of(head));
        match (way, target) {
            (Some(Way::Parent(_, parent)), _) => {
                let mut extra = edit.extra.to_vec();
                extra.extend_from_slice(&parent::authorization_line(parent));
                let edit = RequestEdit {
                    extra: &extra,
                    ..edit
                };
                write_parent_request_head(out, head, req, client_ip, opts, edit);
            }
            (Some(Way::Direct(_)), Some(target)) => {
                let parts = (target.authority.text, target.path);
                write_forward_request_head(out, head, req, parts, client_ip, opts, edit);
            }
            // The reverse proxy; or (never: the parser took the target as
            // absolute-form, and the way is chosen first) as it came.
            _ => write_request_head_edited(out, head, req, client_ip, opts, edit),
        }
    }

    /// Phase 6 for a connection the exchange is done with: pooled (under
    /// the upstream's or the forward proxy's keep-alive limits) or closed;
    /// returns the client connection's fate.
    pub(super) fn settle(
        &self,
        ctx: &ShardContext,
        route: &RouteConfig,
        conn: UpstreamConn,
        end: ResponseEnd,
        request_complete: bool,
    ) -> Next {
        match self {
            Origin::Upstream => {
                let upstream = &ctx.config.upstreams[route.upstream];
                finish(ctx, conn, upstream, end, request_complete)
            }
            Origin::Forward(_) => forward::after(ctx, conn, end, request_complete),
        }
    }
}
