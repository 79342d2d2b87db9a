//! Graceful shutdown on SIGTERM: listeners close, a request in flight still
//! gets its complete response, idle keep-alive connections are closed at
//! once, and the process exits with status 0.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::origin;
use crate::support::*;

const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

fn proxy_for_shutdown(origin: &Origin, shards: usize) -> Proxy {
    Proxy::start(&ProxyConfig::for_origin(shards, origin.addr()).set(
        "server",
        "shutdown_timeout",
        r#""10s""#,
    ))
}

/// Polls until connecting to `proxy` is refused, i.e. every shard has closed
/// its listener; `false` if that did not happen within `limit`.
fn stops_accepting_within(proxy: &Proxy, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&proxy.addr(), Duration::from_millis(100)).is_ok() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn listeners_close_on_sigterm() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let mut proxy = proxy_for_shutdown(&origin, shards);
        proxy.send_sigterm();
        assert!(
            stops_accepting_within(&proxy, Duration::from_secs(3)),
            "the proxy still accepts connections 3s after SIGTERM"
        );
        assert!(proxy.wait_for_exit(Duration::from_secs(3)).success());
    });
}

#[test]
fn request_in_flight_completes_after_sigterm() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = Origin::start(origin::held_until_open(&gate));
        let mut proxy = proxy_for_shutdown(&origin, shards);
        let mut client = proxy.client();
        client.send(client::request_head("GET", "/in-flight").as_bytes());
        origin.wait_for_requests(1);
        proxy.send_sigterm();
        // Let the shutdown begin before the response goes (whether listeners
        // close is `listeners_close_on_sigterm`'s business).
        stops_accepting_within(&proxy, Duration::from_secs(2));
        gate.open();
        let response = client.read_response("GET");
        assert_status(&response, 200);
        assert_eq!(response.body_text(), "/in-flight");
        let status = proxy.wait_for_exit(SHUTDOWN_TIMEOUT);
        assert!(
            status.success(),
            "the proxy exited with {status} after a graceful shutdown"
        );
    });
}

#[test]
fn idle_connection_is_closed_promptly_on_sigterm() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let mut proxy = proxy_for_shutdown(&origin, shards);
        let mut client = proxy.client();
        assert_status(&client.get("/before"), 200);
        let signalled = Instant::now();
        proxy.send_sigterm();
        let received = client.expect_closed();
        assert!(
            received.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&received)
        );
        // Well under shutdown_timeout: idle connections are not waited for.
        let limit = Duration::from_secs(3);
        assert!(
            signalled.elapsed() < limit,
            "the idle connection was closed only after {:?}",
            signalled.elapsed()
        );
        let status = proxy.wait_for_exit(limit);
        assert!(status.success(), "the proxy exited with {status}");
    });
}

#[test]
fn sigint_shuts_down_gracefully_too() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let mut proxy = proxy_for_shutdown(&origin, shards);
        assert_status(&proxy.client().get("/before"), 200);
        proxy.send_signal(libc::SIGINT);
        let status = proxy.wait_for_exit(Duration::from_secs(3));
        assert!(status.success(), "the proxy exited with {status} on SIGINT");
    });
}

#[test]
fn stuck_request_is_cut_off_at_shutdown_timeout() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = Origin::start(origin::held_until_open(&gate));
        let config = ProxyConfig::for_origin(shards, origin.addr()).set(
            "server",
            "shutdown_timeout",
            r#""500ms""#,
        );
        let mut proxy = Proxy::start(&config);
        let mut client = proxy.client();
        client.send(client::request_head("GET", "/stuck").as_bytes());
        origin.wait_for_requests(1);
        let signalled = Instant::now();
        proxy.send_sigterm();
        proxy.wait_for_exit(Duration::from_secs(3));
        assert!(
            client.try_read_to_close().is_ok(),
            "the client connection outlived the proxy"
        );
        gate.open();
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "exit took {:?}",
            signalled.elapsed()
        );
    });
}
