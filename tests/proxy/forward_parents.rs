//! Parent proxies of the forward proxy: requests and tunnels through a
//! parent with credentials (two shardproxy instances, `Via` from both), a
//! parent refusing the tunnel, an unreachable parent failing or falling back
//! to direct, and a black-holed parent set aside.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::forward_proxy::{half_close_echo, hash_password, tunnel_config};
use crate::forward_tunnels::assert_tunnel_to_echo;
use crate::support::{
    assert_error_response, assert_status, for_each_shard_count,
    origin::{self, After, Origin},
    Proxy, ProxyConfig,
};

/// A forward proxy whose only way out is `parent` (its own ACL keeps the
/// SSRF defaults, so a loopback origin is reachable only through the parent).
fn child_of(shards: usize, parent: SocketAddr, credentials: &str) -> ProxyConfig {
    ProxyConfig::new(shards)
        .set("forward_proxy", "enabled", "true")
        .set(
            "forward_proxy",
            "allowed_connect_ports",
            r#"["1024-65535"]"#,
        )
        .table(&format!(
            "[[forward_proxy.parent]]\naddr = \"{parent}\"\n{credentials}"
        ))
}

#[test]
fn parent_proxies_carry_requests_and_tunnels() {
    let hash = hash_password("exit");
    for_each_shard_count(|shards| {
        let origin = Origin::start(|request, stream| {
            let via = request.header("via").unwrap_or_default().to_string();
            origin::send_ok(stream, format!("{} via {via}", request.target).as_bytes());
            After::KeepAlive
        });
        let parent = Proxy::start(&tunnel_config(shards).table(&format!(
            "[[forward_proxy.user]]\nname = \"peer\"\npassword_hash = \"{hash}\"\n"
        )));
        let child = Proxy::start(&child_of(
            shards,
            parent.addr(),
            "username = \"peer\"\npassword = \"exit\"\n",
        ));
        // A name: the parent resolves it (an address literal would meet the child's own SSRF check).
        let host = format!("localhost:{}", origin.addr().port());
        let url = format!("http://{host}/hop");
        let mut client = child.client();
        for _ in 0..2 {
            client.send(format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
            let response = client.read_response("GET");
            assert_status(&response, 200);
            assert_eq!(
                response.body_text(),
                "/hop via 1.1 shardproxy, 1.1 shardproxy",
                "both proxies must be on the way"
            );
        }
        // A tunnel through both.
        let echo = format!("localhost:{}", half_close_echo().port());
        assert_tunnel_to_echo(&child, &echo, b"through two proxies");
        // Wrong credentials: the parent refuses the tunnel, the child says so.
        let refused = Proxy::start(&child_of(
            shards,
            parent.addr(),
            "username = \"peer\"\npassword = \"wrong\"\n",
        ));
        let mut client = refused.client();
        client.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes());
        let response = client.read_response("CONNECT");
        assert_error_response(&response, 502);
        assert!(
            response.body_text().contains("407"),
            "{}",
            response.body_text()
        );
    });
}

#[test]
fn an_unreachable_parent_fails_or_falls_back_to_direct() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let dead = crate::support::sockets::closed_port();
        let host = format!("localhost:{}", origin.addr().port());
        let url = format!("http://{host}/fallback");
        let request = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n");

        let strict = Proxy::start(&child_of(shards, dead, ""));
        let mut client = strict.client();
        client.send(request.as_bytes());
        let response = client.read_response("GET");
        assert_error_response(&response, 502);
        let reason = response.body_text();
        assert!(
            reason.contains(&format!("cannot connect to {dead}")),
            "{reason}"
        );
        assert_eq!(origin.heads(), 0);

        let lenient = child_of(shards, dead, "")
            .set("forward_proxy", "parent_fallback", r#""direct""#)
            .set("forward_proxy", "allow", r#"["127.0.0.0/8"]"#);
        let proxy = Proxy::start(&lenient);
        let mut client = proxy.client();
        client.send(request.as_bytes());
        let response = client.read_response("GET");
        assert_status(&response, 200);
        assert_eq!(response.body_text(), "/fallback");
    });
}

#[test]
fn a_dead_parent_is_set_aside() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let parent = Proxy::start(&tunnel_config(shards));
        let hole = crate::support::sockets::Blackhole::new();
        let config = child_of(shards, hole.addr, "")
            .table(&format!(
                "[[forward_proxy.parent]]\naddr = \"{}\"\n",
                parent.addr()
            ))
            .timeout("upstream_connect", "1s");
        let child = Proxy::start(&config);
        let host = format!("localhost:{}", origin.addr().port());
        let request = format!("GET http://{host}/x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        // One connection, so one shard: its first request may wait out the
        // black hole's connect timeout; after that the hole is left out.
        let mut client = child.client();
        client.send(request.as_bytes());
        assert_status(&client.read_response("GET"), 200);
        for _ in 0..3 {
            let started = Instant::now();
            client.send(request.as_bytes());
            assert_status(&client.read_response("GET"), 200);
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(900),
                "a request waited {took:?} for the dead parent"
            );
        }
    });
}
