//! The fork in a request's road: find its route, then send it straight to the
//! upstream (`forward`) or through the cache (`cached`) when the cache is on
//! for that route.

use std::rc::Rc;

use super::{
    cached,
    client::Client,
    error::ProxyError,
    forward::{forward, Next},
};
use crate::{
    http::head::{host_without_port, RequestHead, ResponseHead},
    shard::context::ShardContext,
};

/// Marks responses on routes that opt out of an enabled cache (RFC 9211).
const BYPASS: &[u8] = b"Cache-Status: shardproxy; fwd=bypass\r\n";

/// Handles the request whose head `req` was parsed from the front of `client.buf`.
pub async fn handle(
    ctx: &Rc<ShardContext>,
    client: &mut Client,
    req: &RequestHead,
    resp: &mut ResponseHead,
) -> Result<Next, ProxyError> {
    let buf = client.buf.filled();
    let host = req.host.map(|h| host_without_port(h.of(buf)));
    let Some(route) = ctx.router.route(host, req.target.of(buf)) else {
        // The connection may carry on after a 404: the next request starts after this head.
        client.buf.consume(req.fields.head_len);
        return Err(ProxyError::NoRoute);
    };
    match &ctx.cache {
        Some(_) if route.cache => cached::serve(ctx, client, req, resp, route).await,
        Some(_) => forward(ctx, client, req, resp, route, None, BYPASS).await,
        None => forward(ctx, client, req, resp, route, None, b"").await,
    }
}
