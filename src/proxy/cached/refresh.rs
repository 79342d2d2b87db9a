//! stale-while-revalidate: refreshing a stale entry in the background while
//! the stale copy answers clients (RFC 5861 §3).

use std::{rc::Rc, sync::Arc};

use super::{freshness, FillGuard};
use crate::proxy::{
    forward::{acquire, exchange_head, finish},
    relay::{read_some, Tee},
    response::ResponseEnd,
};
use crate::{
    cache::{
        age::{self},
        entry::CachedResponse,
        policy::{is_client_validator, storable, write_validators, StoreOptions},
    },
    config::RouteConfig,
    http::{
        body::BodyState,
        head::{parse_request, Framing, Method, RequestHead, ResponseHead},
        rewrite::{write_request_head_edited, RequestEdit},
    },
    shard::context::ShardContext,
};

/// Refreshes a stale entry in the background (stale-while-revalidate): one
/// conditional request; a 304 freshens the entry, a cacheable 200 replaces it.
/// Whatever happens, the claim on the key is released with a `fill`.
pub(super) async fn refresh(
    ctx: Rc<ShardContext>,
    route: RouteConfig,
    head_bytes: Vec<u8>,
    key: Vec<u8>,
    hash: u64,
    stale: Arc<CachedResponse>,
    client_ip: Vec<u8>,
) {
    let Some(cache) = &ctx.cache else { return };
    let fill = FillGuard {
        cache,
        hash,
        key: &key,
        armed: true,
    };
    let mut req = RequestHead::default();
    if !matches!(
        parse_request(&head_bytes, &ctx.request_limits, &mut req),
        Ok(true)
    ) {
        return;
    }
    let mut validators = Vec::new();
    write_validators(&mut validators, &stale);
    let mut out = Vec::new();
    let edit = RequestEdit {
        drop_field: is_client_validator,
        extra: &validators,
    };
    write_request_head_edited(&mut out, &head_bytes, &req, &client_ip, ctx.forward, edit);
    let Ok((mut conn, server)) = acquire(&ctx, route.upstream).await else {
        return;
    };
    let request_time = age::now();
    let mut resp = ResponseHead::default();
    if exchange_head(&ctx, &mut out, &mut conn, Method::Get, &mut resp, server)
        .await
        .is_err()
    {
        ctx.pool.recycle(conn);
        return;
    }
    let response_time = age::now();
    let upstream = &ctx.config.upstreams[route.upstream];
    let head = conn.buf.filled()[..resp.fields.head_len].to_vec();
    conn.buf.consume(resp.fields.head_len);
    let fresh = if resp.status == 304 {
        stale
            .freshen(
                &resp,
                &head,
                request_time,
                response_time,
                &freshness(&route),
            )
            .ok()
    } else {
        let opts = StoreOptions {
            allow_set_cookie: route.cache_set_cookie,
        };
        let cacheable = storable(&req, &head_bytes, &resp, &head, &opts).is_ok();
        match read_whole_body(
            &ctx,
            &mut conn,
            resp.fields.framing,
            cache.config().max_object_size as usize,
        )
        .await
        {
            Some(body) if cacheable => CachedResponse::from_response(
                &resp,
                &head,
                Arc::from(body),
                &req,
                &head_bytes,
                request_time,
                response_time,
                &freshness(&route),
            )
            .ok(),
            Some(_) => None,
            None => {
                ctx.pool.recycle(conn);
                return;
            }
        }
    };
    fill.complete(fresh.map(Arc::new));
    let reusable = resp.fields.wants_keep_alive() && resp.fields.framing != Framing::UntilClose;
    let end = ResponseEnd {
        complete: true,
        close_client: false,
        upstream_reusable: reusable,
    };
    finish(&ctx, conn, upstream, end, true);
}

/// Reads a response body with no client to send it to (background refresh),
/// up to `limit` payload bytes. `None`: it failed or was too large.
async fn read_whole_body(
    ctx: &ShardContext,
    conn: &mut crate::upstream::pool::UpstreamConn,
    framing: Framing,
    limit: usize,
) -> Option<Vec<u8>> {
    let mut body = BodyState::new(framing);
    let mut tee = Tee::new(limit);
    let idle = ctx.config.timeouts.body_idle;
    while !body.is_done() {
        if conn.buf.is_empty() {
            match read_some(&conn.stream, &mut conn.buf, idle).await {
                Ok(0) if matches!(body, BodyState::UntilClose) => break,
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        let accepted = body.accept_with(conn.buf.filled(), |p| tee.push(p)).ok()?;
        conn.buf.consume(accepted.bytes);
    }
    tee.finish()
}
