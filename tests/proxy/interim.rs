//! Interim 1xx responses (RFC 9110 §15.2): a `103 Early Hints` and a
//! `100 Continue` the origin sends itself reach the client before the final
//! response (the origin holds the final one until the client has read the
//! interim one, so "before" is observed, not assumed), on plain and on cached
//! routes, with hop-by-hop fields dropped; the proxy then reads the final
//! response as usual; the cache never stores a 1xx (a later hit has none);
//! HTTP/1.0 clients get none.

use std::net::TcpStream;
use std::sync::Arc;

use crate::support::cache::{cache_config, CacheStatus};
use crate::support::client::{request_head, ResponseHead};
use crate::support::origin::{self, After};
use crate::support::*;

const EARLY_HINTS: &[u8] =
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: x-hop\r\nX-Hop: 1\r\n\r\n";
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An origin that sends `interims`, waits for `gate`, then a cacheable 200
/// whose body is the request target.
fn hinting_origin(interims: &'static [&'static [u8]], gate: &Arc<Gate>) -> Origin {
    let gate = Arc::clone(gate);
    Origin::start(move |request: &Request, stream: &mut TcpStream| {
        for interim in interims {
            origin::send(stream, interim);
        }
        gate.wait();
        let body = request.target.as_bytes();
        let head = format!(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        origin::send(stream, head.as_bytes());
        origin::send(stream, body);
        After::KeepAlive
    })
}

/// Reads the interim heads the proxy sends before the final one, which it
/// returns with its body.
fn read_interims_then_final(
    client: &mut Client,
    count: usize,
    gate: &Gate,
) -> (Vec<ResponseHead>, Response) {
    let mut interims = Vec::new();
    for _ in 0..count {
        let head = client.read_head().expect("an interim response head");
        assert!(
            (100..200).contains(&head.status),
            "expected a 1xx first, got {}",
            head.status
        );
        interims.push(head);
    }
    gate.open();
    (interims, client.read_response("GET"))
}

#[track_caller]
fn assert_early_hints(head: &ResponseHead) {
    assert_eq!(head.status, 103);
    assert_eq!(head.header("link"), Some("</style.css>; rel=preload"));
    assert!(
        !head.has_header("x-hop"),
        "a Connection-named field was forwarded"
    );
    assert!(!head.has_header("connection"));
}

#[test]
fn early_hints_and_continue_reach_the_client_before_the_final_response() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = hinting_origin(&[EARLY_HINTS, CONTINUE], &gate);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(request_head("GET", "/hints").as_bytes());
        let (interims, response) = read_interims_then_final(&mut client, 2, &gate);
        assert_early_hints(&interims[0]);
        assert_eq!(interims[1].status, 100);
        assert_status(&response, 200);
        assert_eq!(response.body, b"/hints");
        // The connection is still in step for the next exchange.
        client.send(request_head("GET", "/next").as_bytes());
        let (interims, response) = read_interims_then_final(&mut client, 2, &gate);
        assert_eq!((interims[0].status, interims[1].status), (103, 100));
        assert_eq!(response.body, b"/next");
    });
}

#[test]
fn early_hints_pass_on_cached_routes_and_are_never_stored() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = hinting_origin(&[EARLY_HINTS], &gate);
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let mut client = proxy.client();
        client.send(request_head("GET", "/cached-hints").as_bytes());
        let (interims, response) = read_interims_then_final(&mut client, 1, &gate);
        assert_early_hints(&interims[0]);
        assert_eq!(response.body, b"/cached-hints");
        assert!(CacheStatus::of(&response).expect("a Cache-Status").stored);
        // A hit is the stored 200 alone: its first head is the final one.
        let hit = proxy.client().get("/cached-hints");
        assert_status(&hit, 200);
        assert!(CacheStatus::of(&hit).expect("a Cache-Status").hit);
        assert_eq!(hit.body, b"/cached-hints");
        assert_eq!(origin.request_count(), 1);
    });
}

#[test]
fn http10_clients_get_no_interim_responses() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        gate.open();
        let origin = hinting_origin(&[EARLY_HINTS, CONTINUE], &gate);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        client.send(b"GET /old HTTP/1.0\r\nHost: test.example\r\n\r\n");
        let response = client.read_response("GET");
        assert_status(&response, 200);
        assert_eq!(response.body, b"/old");
    });
}

#[test]
fn interim_responses_reach_a_client_still_sending_its_body() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let origin = hinting_origin(&[EARLY_HINTS], &gate);
        let proxy = Proxy::in_front_of(&origin, shards);
        let mut client = proxy.client();
        // The body goes only after the proxy's own 100 Continue, so it is
        // still arriving when the upstream exchange starts (full duplex).
        client.send(
            b"POST /upload HTTP/1.1\r\nHost: test.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        );
        let invited = client.read_head().expect("the proxy's 100 Continue");
        assert_eq!(invited.status, 100);
        client.send(b"hello");
        let (interims, response) = read_interims_then_final(&mut client, 1, &gate);
        assert_early_hints(&interims[0]);
        assert_eq!(response.body, b"/upload");
    });
}
