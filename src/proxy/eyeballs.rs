//! Connecting to a forward destination with several addresses the way
//! Happy Eyeballs v2 (RFC 8305 §4-5) does: addresses interleaved by family
//! (the resolver's first family first), one attempt started every 250 ms
//! (or at once when the previous one failed), the first to connect wins and
//! the others are dropped (their sockets closed). A destination whose IPv6
//! address is a black hole is reached over IPv4 a quarter second later
//! instead of after a whole `upstream_connect`. Each attempt keeps its own
//! `upstream_connect` limit. Runs in the request's task; nothing spawned.

use std::{
    future::{poll_fn, Future},
    net::SocketAddr,
    pin::Pin,
    task::Poll,
    time::Duration,
};

use compio::time::sleep;

use super::{error::ProxyError, forward::unreachable, upstream::connect};
use crate::{shard::context::ShardContext, upstream::pool::UpstreamConn};

/// RFC 8305 §5's recommended Connection Attempt Delay.
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

type Attempt<'a> =
    Pin<Box<dyn Future<Output = (SocketAddr, Result<UpstreamConn, ProxyError>)> + 'a>>;

/// The first of `addrs` to accept a connection, racing staggered attempts.
/// All failing: the last failure, naming its address.
pub(super) async fn connect_first(
    ctx: &ShardContext,
    addrs: &[SocketAddr],
) -> Result<(UpstreamConn, SocketAddr), ProxyError> {
    let order = interleave(addrs);
    let mut attempts: Vec<Attempt<'_>> = Vec::new();
    let mut next = 0;
    let mut start_now = true;
    let mut delay: Pin<Box<dyn Future<Output = ()>>> = Box::pin(sleep(ATTEMPT_DELAY));
    let mut last_error = None;
    poll_fn(|cx| loop {
        if next < order.len() && (start_now || delay.as_mut().poll(cx).is_ready()) {
            let addr = order[next];
            next += 1;
            start_now = false;
            attempts.push(Box::pin(async move { (addr, connect(ctx, addr).await) }));
            delay = Box::pin(sleep(ATTEMPT_DELAY));
            continue;
        }
        let mut i = 0;
        while i < attempts.len() {
            match attempts[i].as_mut().poll(cx) {
                Poll::Ready((addr, Ok(conn))) => return Poll::Ready(Ok((conn, addr))),
                Poll::Ready((addr, Err(e))) => {
                    // Finished: dropped, never polled again.
                    drop(attempts.swap_remove(i));
                    last_error = Some(unreachable(addr, e));
                    // A failure starts the next attempt without waiting.
                    start_now = true;
                }
                Poll::Pending => i += 1,
            }
        }
        if attempts.is_empty() && next >= order.len() {
            return Poll::Ready(Err(last_error.take().unwrap_or(ProxyError::UpstreamClosed)));
        }
        if !(start_now && next < order.len()) {
            return Poll::Pending;
        }
    })
    .await
}

/// `addrs` alternating between address families, starting with the first's
/// family, each family in its own order (RFC 8305 §4).
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut order = Vec::with_capacity(addrs.len());
    while !same.is_empty() || !other.is_empty() {
        order.extend(same.pop());
        order.extend(other.pop());
    }
    order
}

#[cfg(test)]
mod tests {
    use std::{
        net::{TcpListener, TcpStream},
        rc::Rc,
        sync::Arc,
        time::Instant,
    };

    use super::*;
    use crate::config::Config;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn families_alternate_from_the_first() {
        let addrs = [
            addr("[::1]:1"),
            addr("[::2]:1"),
            addr("10.0.0.1:1"),
            addr("10.0.0.2:1"),
            addr("10.0.0.3:1"),
        ];
        let order = interleave(&addrs);
        assert_eq!(
            order,
            [addrs[0], addrs[2], addrs[1], addrs[3], addrs[4]],
            "{order:?}"
        );
    }

    /// A listener whose accept queue is full: connecting to it hangs.
    fn black_hole() -> (SocketAddr, socket2::Socket, Vec<TcpStream>) {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.bind(&addr("127.0.0.1:0").into()).unwrap();
        listener.listen(0).unwrap();
        let hole = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while let Ok(stream) = TcpStream::connect_timeout(&hole, Duration::from_millis(200)) {
            queued.push(stream);
            assert!(queued.len() < 64, "could not fill the accept queue");
        }
        (hole, listener, queued)
    }

    #[test]
    fn a_black_hole_costs_one_attempt_delay_not_a_connect_timeout() {
        let (hole, _listener, _queued) = black_hole();
        let good = TcpListener::bind("127.0.0.1:0").unwrap();
        let good_addr = good.local_addr().unwrap();
        let text = "[timeouts]\nupstream_connect = \"20s\"\n[forward_proxy]\nenabled = true\n";
        let config = Arc::new(Config::parse(text, "test").unwrap());
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let health = Arc::new(crate::upstream::health::HealthTable::new(&config));
            let metrics = Rc::new(crate::metrics::shard::ShardMetrics::new("test".into()));
            let ctx = Rc::new(ShardContext::new(
                0, config, None, false, health, metrics, 1,
            ));
            let started = Instant::now();
            let (_conn, winner) = connect_first(&ctx, &[hole, good_addr]).await.unwrap();
            assert_eq!(winner, good_addr);
            let took = started.elapsed();
            assert!(
                took >= ATTEMPT_DELAY && took < Duration::from_secs(5),
                "{took:?}"
            );
            let refused = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let failed = connect_first(&ctx, &[refused]).await;
            assert!(matches!(failed, Err(ProxyError::Unreachable { .. })));
        });
    }
}
