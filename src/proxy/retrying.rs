//! Retries of one request under the upstream's `retry` policy: which
//! failures allow another try (`on`: connect, reset, timeout, a 502/503/504
//! head), for which requests (idempotent methods unless
//! `retry_non_idempotent`; only while the whole request is still in hand;
//! never once a response byte has gone to the client, which holds by
//! construction: every retry happens before phase 5 starts), on which
//! server (one not tried yet where one is usable), after how long
//! (exponential backoff with full jitter) and whether the shard's retry
//! budget has room. Used by the plain forward and the cache's fetch (the
//! cache's background refresh is not retried). Touches the shard's upstream
//! state only.

use std::time::Duration;

use compio::time::sleep;

use super::{
    error::ProxyError,
    response::Interim,
    target::Target,
    upstream::{acquire, exchange_head, server_of},
};
use crate::{
    config::{Failure, RetryPolicy},
    http::head::{Method, ResponseHead},
    shard::context::ShardContext,
    upstream::{
        pool::UpstreamConn,
        retry::{backoff, RetryToken},
        state::UpstreamState,
    },
};

/// One request's tries so far.
pub(super) struct Retries<'c> {
    ctx: &'c ShardContext,
    target: Target,
    state: &'c UpstreamState,
    policy: &'c RetryPolicy,
    /// The method allows retries under the policy.
    allowed: bool,
    /// Tries made so far (the first included).
    tries: u32,
    /// Servers tried, avoided by the next pick where possible.
    tried: Vec<usize>,
    /// Held from the first retry until the request ends.
    token: Option<RetryToken<'c>>,
}

impl<'c> Retries<'c> {
    pub fn new(ctx: &'c ShardContext, target: Target, method: Method) -> Retries<'c> {
        let policy = &ctx.config.upstreams[target.upstream].retry;
        Retries {
            ctx,
            target,
            state: &ctx.upstreams[target.upstream],
            policy,
            allowed: method.is_idempotent() || policy.non_idempotent,
            tries: 1,
            tried: Vec::new(),
            token: None,
        }
    }

    /// After `failure` on `server`: how long to wait before another try, or
    /// `None` when no other try may follow.
    fn decide(&mut self, failure: Failure, server: Option<usize>) -> Option<Duration> {
        // A failed connect sent nothing: retrying it is safe for any method.
        let safe = self.allowed || failure == Failure::Connect;
        if !safe || self.tries >= self.policy.attempts || !self.policy.on.matches(failure) {
            return None;
        }
        if self.token.is_none() {
            let in_flight = self.state.requests_in_flight();
            match self.state.budget.claim(self.policy, in_flight) {
                Some(token) => self.token = Some(token),
                None => {
                    log::debug!("shard {}: retry budget spent; not retrying", self.ctx.id);
                    return None;
                }
            }
        }
        if let Some(server) = server.filter(|s| !self.tried.contains(s)) {
            self.tried.push(server);
        }
        let wait = backoff(self.policy, self.tries, &self.state.rng);
        self.tries += 1;
        Some(wait)
    }

    /// A connection for the next try, retrying failed connects under the policy.
    pub async fn connection(&mut self) -> Result<UpstreamConn, ProxyError> {
        loop {
            match acquire(self.ctx, &self.target, &self.tried).await {
                Ok(conn) => {
                    // Every try after the first counts as its server's retry.
                    if let Some(lease) = conn.lease.as_ref().filter(|_| self.tries > 1) {
                        lease.stats().count_retry();
                    }
                    return Ok(conn);
                }
                Err(e) => match e.failure().and_then(|f| self.decide(f, None)) {
                    Some(wait) => sleep(wait).await,
                    None => return Err(e),
                },
            }
        }
    }

    /// Sends `request` on `conn` and reads the response head into `resp`;
    /// on a failure or status the policy retries, tries again on a new
    /// connection (to another server where one is usable). The last try's
    /// outcome is returned as it is: a 503 head that may not be retried is
    /// passed on to the client.
    pub async fn exchange(
        &mut self,
        request: &mut Vec<u8>,
        conn: &mut UpstreamConn,
        method: Method,
        resp: &mut ResponseHead,
        interim: Option<Interim<'_>>,
    ) -> Result<(), ProxyError> {
        loop {
            // Interim 1xx responses a failed try forwarded do not stop a
            // retry: a client may get any number of them before the final
            // response, which no try has begun to send.
            let server = conn.addr;
            let outcome =
                exchange_head(self.ctx, request, conn, method, resp, server, interim).await;
            let failure = match &outcome {
                Ok(()) => Failure::Status(resp.status),
                Err(e) => match e.failure() {
                    Some(failure) => failure,
                    None => return outcome,
                },
            };
            // A send that timed out took the request's bytes with it: nothing to send again.
            if request.is_empty() {
                return outcome;
            }
            let Some(wait) = self.decide(failure, server_of(conn)) else {
                return outcome;
            };
            // The failed try no longer counts against its server (max_conns,
            // least_conn) while this request waits out its backoff.
            conn.lease = None;
            sleep(wait).await;
            let next = self.connection().await?;
            // The old connection holds an unread response or a broken stream.
            self.ctx.pool.discard(std::mem::replace(conn, next));
        }
    }
}
