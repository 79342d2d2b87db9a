//! Request forwarding: upstream keep-alive reuse, pipelining, the headers the
//! upstream sees (hop-by-hop removal, X-Forwarded-*, Via, order and case of
//! everything else), and route selection (host beats no host, longest prefix,
//! no match → 404).

use crate::support::origin::{self, After};
use crate::support::*;

#[test]
fn sequential_requests_reuse_upstream_connections() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut sent = 0;
        for client_number in 0..3 {
            let mut client = proxy.client();
            for request_number in 0..10 {
                let path = format!("/keepalive/{client_number}/{request_number}");
                let response = client.get(&path);
                assert_status(&response, 200);
                assert_eq!(response.body_text(), path);
                sent += 1;
            }
        }
        assert_eq!(origin.request_count(), sent);
        let connections = origin.connections();
        assert!(
            connections <= 2 * shards,
            "{sent} sequential requests used {connections} upstream connections with {shards} shard(s)"
        );
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let batch = format!(
            "GET /pipe/1 HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n\
             POST /pipe/2 HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: 5\r\n\r\nhello\
             GET /pipe/3 HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n\
             GET /pipe/4 HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n"
        );
        client.send(batch.as_bytes());
        for (method, path) in [
            ("GET", "/pipe/1"),
            ("POST", "/pipe/2"),
            ("GET", "/pipe/3"),
            ("GET", "/pipe/4"),
        ] {
            let response = client.read_response(method);
            assert_status(&response, 200);
            assert_eq!(
                response.body_text(),
                path,
                "pipelined responses out of order"
            );
        }
        let posted = origin
            .requests()
            .into_iter()
            .find(|r| r.target == "/pipe/2")
            .unwrap();
        assert_eq!(posted.body, b"hello");
        // The connection is still usable afterwards.
        assert_eq!(client.get("/pipe/5").body_text(), "/pipe/5");
    });
}

const HOP_BY_HOP_REQUEST: &str = "GET /headers HTTP/1.1\r\n\
    Host: front.example\r\n\
    X-First: 1\r\n\
    Connection: keep-alive, X-Hop-Custom\r\n\
    X-Hop-Custom: secret\r\n\
    Keep-Alive: timeout=5\r\n\
    x-lower-case: two\r\n\
    Proxy-Connection: keep-alive\r\n\
    TE: trailers\r\n\
    Trailer: X-Checksum\r\n\
    Upgrade: h2c\r\n\
    X-Forwarded-For: 10.1.2.3\r\n\
    ACCEPT: */*\r\n\
    X-Repeated: a\r\n\
    X-Repeated: b\r\n\
    \r\n";

/// Headers the proxy adds or may manage itself toward the upstream.
fn is_proxy_managed(name: &str) -> bool {
    [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "connection",
    ]
    .iter()
    .any(|managed| name.eq_ignore_ascii_case(managed))
}

#[test]
fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(HOP_BY_HOP_REQUEST.as_bytes());
        assert_status(&client.read_response("GET"), 200);
        let seen = origin.single_request();

        for hop_by_hop in [
            "X-Hop-Custom",
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "Trailer",
            "Upgrade",
        ] {
            assert_eq!(
                seen.header(hop_by_hop),
                None,
                "{hop_by_hop} reached the upstream"
            );
        }
        // The proxy may speak for itself on its upstream connection, but the
        // client's Connection header must not leak through.
        if let Some(connection) = seen.header("connection") {
            assert!(
                connection.eq_ignore_ascii_case("keep-alive"),
                "the client's Connection header reached the upstream: {connection:?}"
            );
        }
        assert_eq!(seen.header("x-forwarded-for"), Some("10.1.2.3, 127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("x-forwarded-host"), Some("front.example"));
        assert_eq!(seen.header("via"), Some("1.1 shardproxy"));

        let end_to_end: Vec<(&str, &str)> = seen
            .headers
            .iter()
            .filter(|(name, _)| !is_proxy_managed(name))
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            end_to_end,
            [
                ("Host", "front.example"),
                ("X-First", "1"),
                ("x-lower-case", "two"),
                ("ACCEPT", "*/*"),
                ("X-Repeated", "a"),
                ("X-Repeated", "b"),
            ],
            "end-to-end headers must arrive in order, with their case, and nothing else added"
        );
        let raw_head = String::from_utf8_lossy(&seen.head);
        assert!(
            raw_head.contains("\r\nx-lower-case: two\r\n"),
            "header bytes changed:\n{raw_head}"
        );
    });
}

#[test]
fn connection_listed_names_are_matched_case_insensitively() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(b"GET /case HTTP/1.1\r\nHost: h\r\nCONNECTION: x-drop-ME\r\nX-DROP-me: 1\r\nkeep-alive: 1\r\nX-Kept: 1\r\n\r\n");
        assert_status(&client.read_response("GET"), 200);
        let seen = origin.single_request();
        assert_eq!(
            seen.header("x-drop-me"),
            None,
            "a header listed in Connection reached the upstream"
        );
        assert_eq!(seen.header("keep-alive"), None);
        assert_eq!(seen.header("x-kept"), Some("1"));
    });
}

#[test]
fn forwarding_headers_are_created_when_absent() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(b"GET /plain HTTP/1.1\r\nHost: front.example:8080\r\n\r\n");
        assert_status(&client.read_response("GET"), 200);
        let seen = origin.single_request();
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-host"), Some("front.example:8080"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.header("via"), Some("1.1 shardproxy"));
        assert_eq!(
            seen.target, "/plain",
            "the target must be forwarded unchanged"
        );
    });
}

#[test]
fn forwarding_headers_can_be_switched_off() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let config = [
            "x_forwarded_for",
            "x_forwarded_proto",
            "x_forwarded_host",
            "via",
        ]
        .into_iter()
        .fold(
            ProxyConfig::for_origin(shards, origin.addr()),
            |config, key| config.http(key, "false"),
        );
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        client.send(b"GET /plain HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n");
        assert_status(&client.read_response("GET"), 200);
        let seen = origin.single_request();
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("10.9.9.9"),
            "a client's value must pass unchanged"
        );
        for added in ["x-forwarded-proto", "x-forwarded-host", "via"] {
            assert_eq!(
                seen.header(added),
                None,
                "{added} added although switched off"
            );
        }
    });
}

/// An origin whose every response body is `name`.
fn named_origin(name: &'static str) -> Origin {
    Origin::start(move |_, stream| {
        origin::send_ok(stream, name.as_bytes());
        After::KeepAlive
    })
}

fn get_with_host(client: &mut Client, host: &str, path: &str) -> Response {
    client.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
    client.read_response("GET")
}

#[test]
fn most_specific_route_wins() {
    for_each_shard_count(|shards| {
        let (root, api, host_root) = (
            named_origin("root"),
            named_origin("api"),
            named_origin("host"),
        );
        let config = ProxyConfig::new(shards)
            .upstream("root", &[root.addr()])
            .upstream("api", &[api.addr()])
            .upstream("host", &[host_root.addr()])
            .route(Some("h.example"), "/", "host")
            .route(None, "/api", "api")
            .route(None, "/", "root");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        for (host, path, expected) in [
            ("other.example", "/x", "root"),
            ("other.example", "/api/x", "api"),
            ("other.example", "/api", "api"),
            ("h.example", "/api/x", "host"),
            ("H.Example:8080", "/x", "host"),
        ] {
            let response = get_with_host(&mut client, host, path);
            assert_status(&response, 200);
            assert_eq!(
                response.body_text(),
                expected,
                "route for Host {host}, path {path}"
            );
        }
    });
}

#[test]
fn unmatched_request_gets_404_and_connection_stays_usable() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let config = ProxyConfig::new(shards)
            .upstream("o", &[origin.addr()])
            .route(None, "/api", "o");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        assert_status(&client.get("/elsewhere"), 404);
        assert_eq!(
            origin.heads(),
            0,
            "an unrouted request reached the upstream"
        );
        let routed = client.get("/api/ok");
        assert_status(&routed, 200);
        assert_eq!(routed.body_text(), "/api/ok");
    });
}

#[test]
fn client_connection_close_is_honoured() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(
            format!("GET /last HTTP/1.1\r\nHost: {TEST_HOST}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let response = client.expect_response_then_close("GET");
        assert_eq!(response.body_text(), "/last");
    });
}

#[test]
fn http10_client_connection_closes_after_response() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(format!("GET /old HTTP/1.0\r\nHost: {TEST_HOST}\r\n\r\n").as_bytes());
        let response = client.expect_response_then_close("GET");
        assert_eq!(response.body_text(), "/old");
    });
}

#[test]
fn upstream_connection_close_is_not_reused_and_client_stays_connected() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(|request, stream| {
            let body = request.target.as_bytes();
            let head = format!(
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            origin::send(stream, &[head.as_bytes(), body].concat());
            After::Close
        });
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        for round in 0..4 {
            let path = format!("/announced-close/{round}");
            let response = client.get(&path);
            assert_status(&response, 200);
            assert_eq!(response.body_text(), path);
        }
        assert_eq!(
            origin.connections(),
            4,
            "each announced close needs a new upstream connection"
        );
    });
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::raw_response(
            b"HTTP/1.1 200 OK\r\n\
              X-First: 1\r\n\
              Connection: X-Resp-Hop\r\n\
              X-Resp-Hop: secret\r\n\
              Keep-Alive: timeout=5\r\n\
              set-cookie: a=1\r\n\
              Proxy-Connection: keep-alive\r\n\
              Upgrade: h2c\r\n\
              Content-Length: 2\r\n\
              X-Last: 2\r\n\
              \r\n\
              ok",
            After::KeepAlive,
        ));
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let response = client.get("/response-headers");
        assert_status(&response, 200);
        for hop_by_hop in ["X-Resp-Hop", "Keep-Alive", "Proxy-Connection", "Upgrade"] {
            assert_eq!(
                response.header(hop_by_hop),
                None,
                "{hop_by_hop} reached the client"
            );
        }
        let names: Vec<&str> = response
            .headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let position = |name: &str| names.iter().position(|n| *n == name);
        assert!(
            position("X-First") < position("set-cookie")
                && position("set-cookie") < position("X-Last"),
            "end-to-end response headers must keep their order and case: {names:?}"
        );
        assert!(position("X-First").is_some(), "X-First missing: {names:?}");
        // Still one usable connection.
        assert_eq!(client.get("/again").body_text(), "ok");
    });
}

#[test]
fn concurrent_clients_each_get_their_own_responses() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        std::thread::scope(|scope| {
            for client_number in 0..16 {
                let proxy = &proxy;
                scope.spawn(move || {
                    let mut client = proxy.client();
                    for request_number in 0..20 {
                        let path = format!("/concurrent/{client_number}/{request_number}");
                        assert_eq!(client.get(&path).body_text(), path);
                    }
                });
            }
        });
        assert_eq!(origin.request_count(), 16 * 20);
    });
}

#[test]
fn target_with_query_is_forwarded_unchanged() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let target = "/search/a%2Fb/../c?q=%20x&y=1;z";
        assert_eq!(proxy.client().get(target).body_text(), target);
    });
}

#[test]
fn hundred_pipelined_requests_are_answered_in_order() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let paths: Vec<String> = (0..100).map(|n| format!("/many/{n}")).collect();
        let batch: String = paths
            .iter()
            .map(|path| client::request_head("GET", path))
            .collect();
        client.send(batch.as_bytes());
        for path in &paths {
            assert_eq!(
                &client.read_response("GET").body_text(),
                path,
                "pipelined responses out of order"
            );
        }
    });
}

#[test]
fn pipelined_requests_before_a_bad_one_are_answered_then_400() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        let batch = [
            client::request_head("GET", "/good/1"),
            client::request_head("GET", "/good/2"),
            "GET /bad HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            client::request_head("GET", "/never"),
        ]
        .concat();
        client.send(batch.as_bytes());
        assert_eq!(client.read_response("GET").body_text(), "/good/1");
        assert_eq!(client.read_response("GET").body_text(), "/good/2");
        assert_status(&client.expect_response_then_close("GET"), 400);
        let targets: Vec<String> = origin.requests().into_iter().map(|r| r.target).collect();
        assert_eq!(targets, ["/good/1", "/good/2"]);
    });
}

#[test]
fn half_closed_client_still_gets_its_response() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(client::request_head("GET", "/half-closed").as_bytes());
        client.stream().shutdown(std::net::Shutdown::Write).unwrap();
        let response = client.expect_response_then_close("GET");
        assert_eq!(response.body_text(), "/half-closed");
    });
}

#[test]
fn http10_keepalive_client_stays_connected() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        for round in 0..3 {
            let path = format!("/old-keepalive/{round}");
            client.send(
                format!(
                    "GET {path} HTTP/1.0\r\nHost: {TEST_HOST}\r\nConnection: keep-alive\r\n\r\n"
                )
                .as_bytes(),
            );
            let response = client.read_response("GET");
            assert_eq!(response.body_text(), path);
            assert!(
                response.has_header("content-length"),
                "a kept-alive HTTP/1.0 response needs a Content-Length"
            );
        }
    });
}
