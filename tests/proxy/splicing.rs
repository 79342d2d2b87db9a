//! Large bodies spliced (`http.splice_above`): responses byte-exact on one
//! pooled upstream connection across a mix of sizes, uploads byte-exact on
//! fresh and reused client connections, the same with splicing off, and a
//! peer that leaves in the middle of a spliced body costs only that exchange.

use std::net::TcpStream;

use crate::support::client::{request_head, ResponseHead};
use crate::support::origin::{self, After};
use crate::support::*;

/// Sizes around the 32 KiB threshold and far above it, small ones between.
const SIZES: [u64; 10] = [
    100_000, 1_000, 70_000, 40_000, 32_768, 32_769, 2_000_000, 20_000, 300_000, 5,
];

/// `/bytes/N`: an N-byte pattern body (seed N) with Content-Length.
/// `/cut/N`: announces N bytes, sends a quarter of them and closes.
fn sized_bodies(request: &Request, stream: &mut TcpStream) -> After {
    let mut parts = request.target.trim_start_matches('/').splitn(2, '/');
    let kind = parts.next().unwrap_or_default();
    let Some(len) = parts.next().and_then(|n| n.parse::<u64>().ok()) else {
        origin::send_ok(stream, b"no size");
        return After::KeepAlive;
    };
    match kind {
        "cut" => {
            origin::send(
                stream,
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
            );
            PatternBody::new(len, len / 4).stream(&mut |piece| origin::send(stream, piece));
            After::Close
        }
        _ => {
            origin::send_pattern_body(stream, len, len);
            After::KeepAlive
        }
    }
}

fn expected(len: u64) -> BodyDigest {
    PatternBody::new(len, len).stream(&mut |_| {})
}

/// Pipes the proxy process holds open: a shard keeps the pipes it spliced
/// through for the next large body (the process has a few others from its
/// start: compare with the count before any request).
fn open_pipes(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// The pipes `proxy` holds open before and after `work`.
pub(crate) fn pipes_around(proxy: &Proxy, work: impl FnOnce()) -> (usize, usize) {
    let before = open_pipes(proxy.pid());
    work();
    (before, open_pipes(proxy.pid()))
}

fn proxy_with_splice_above(origin: &Origin, shards: usize, above: &str) -> Proxy {
    Proxy::start(
        &ProxyConfig::for_origin(shards, origin.addr()).http("splice_above", &format!("{above:?}")),
    )
}

/// Every size in turn on one client connection, hence one shard and one
/// pooled upstream connection; each body compared by digest.
fn assert_sizes_arrive_whole(proxy: &Proxy, origin: &Origin) {
    let mut client = proxy.client();
    for len in SIZES {
        let response = client.get(&format!("/bytes/{len}"));
        assert_status(&response, 200);
        assert_eq!(
            BodyDigest::of(&response.body),
            expected(len),
            "the {len}-byte body arrived different"
        );
    }
    assert_eq!(
        origin.connections(),
        1,
        "one pooled upstream connection should have carried every response"
    );
}

/// Runs [`assert_sizes_arrive_whole`] with `splice_above = above`; returns
/// the proxy's open pipes before and after.
fn pipes_around_sizes(shards: usize, above: &str) -> (usize, usize) {
    let origin = Origin::start(sized_bodies);
    let proxy = proxy_with_splice_above(&origin, shards, above);
    pipes_around(&proxy, || assert_sizes_arrive_whole(&proxy, &origin))
}

#[test]
fn large_bodies_on_a_pooled_connection_arrive_whole_and_spliced() {
    for_each_shard_count(|shards| {
        let (before, after) = pipes_around_sizes(shards, "32KiB");
        assert!(
            after > before,
            "no pipe kept: the large bodies were copied, not spliced"
        );
    });
}

#[test]
fn with_splicing_off_the_same_bodies_are_copied() {
    for_each_shard_count(|shards| {
        let (before, after) = pipes_around_sizes(shards, "0");
        assert_eq!(after, before, "splice_above = \"0\" still spliced");
    });
}

/// Sends GET `target` on a client whose upstream connection just carried a
/// large response (so this one is spliced) and reads the response's head.
fn spliced_response_head(proxy: &Proxy, target: &str) -> (Client, ResponseHead) {
    let mut client = proxy.client();
    assert_status(&client.get("/bytes/100000"), 200);
    client.send(request_head("GET", target).as_bytes());
    let head = client.read_head().expect("the response's head");
    assert_eq!(head.status, 200);
    (client, head)
}

#[test]
fn a_client_leaving_mid_body_costs_only_its_exchange() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(sized_bodies);
        let proxy = proxy_with_splice_above(&origin, shards, "32KiB");
        let (leaving, _) = spliced_response_head(&proxy, "/bytes/50000000");
        drop(leaving);

        let mut next = proxy.client();
        for len in [100_000, 1_000, 300_000] {
            let response = next.get(&format!("/bytes/{len}"));
            assert_status(&response, 200);
            assert_eq!(BodyDigest::of(&response.body), expected(len));
        }
    });
}

#[test]
fn an_upstream_cut_mid_body_closes_the_client_connection() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(sized_bodies);
        let proxy = proxy_with_splice_above(&origin, shards, "32KiB");
        let (mut client, head) = spliced_response_head(&proxy, "/cut/1000000");
        let mut received = 0u64;
        let body = client.read_body(&head, "GET", &mut |piece| received += piece.len() as u64);
        assert!(
            body.is_err(),
            "the client saw a complete body ({received} bytes) though the origin sent a quarter"
        );
        assert_eq!(
            received, 250_000,
            "the bytes the origin did send should all arrive"
        );

        let mut next = proxy.client();
        let response = next.get("/bytes/70000");
        assert_status(&response, 200);
        assert_eq!(BodyDigest::of(&response.body), expected(70_000));
    });
}

/// POSTs a `len`-byte pattern body (seed `len`) on `client` and checks the
/// origin (`describe_body`) received exactly it.
fn assert_upload_arrives_whole(client: &mut Client, len: u64) {
    client.send(
        format!("POST /upload HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: {len}\r\n\r\n")
            .as_bytes(),
    );
    let sent = PatternBody::new(len, len).stream(&mut |piece| client.send(piece));
    let response = client.read_response("POST");
    assert_status(&response, 200);
    assert_eq!(
        response.body_text(),
        sent.to_text(),
        "the origin received a different {len}-byte body"
    );
}

/// Uploads on a fresh connection (nothing reads it but the request: spliced
/// when large) and then on the same one again (with io_uring its multishot
/// receive is armed by then, so copied; on epoll spliced again); the
/// proxy's open pipes before and after.
fn pipes_around_uploads(shards: usize, above: &str) -> (usize, usize) {
    let origin = Origin::start(origin::describe_body());
    let proxy = proxy_with_splice_above(&origin, shards, above);
    pipes_around(&proxy, || {
        for len in [3_000_000, 1_000, 100_000] {
            let mut fresh = proxy.client();
            assert_upload_arrives_whole(&mut fresh, len);
            for again in [70_000, 5] {
                assert_upload_arrives_whole(&mut fresh, again);
            }
        }
    })
}

#[test]
fn large_uploads_arrive_whole_and_spliced() {
    for_each_shard_count(|shards| {
        let (before, after) = pipes_around_uploads(shards, "32KiB");
        assert!(
            after > before,
            "no pipe kept: the uploads were copied, not spliced"
        );
    });
}

#[test]
fn with_splicing_off_uploads_are_copied() {
    for_each_shard_count(|shards| {
        let (before, after) = pipes_around_uploads(shards, "0");
        assert_eq!(after, before, "splice_above = \"0\" still spliced");
    });
}

#[test]
fn a_client_leaving_mid_upload_costs_only_its_exchange() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::describe_body());
        let proxy = proxy_with_splice_above(&origin, shards, "32KiB");
        let mut leaving = proxy.client();
        leaving.send(
            format!(
                "POST /upload HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: 50000000\r\n\r\n"
            )
            .as_bytes(),
        );
        PatternBody::new(1, 1_000_000).stream(&mut |piece| leaving.send(piece));
        drop(leaving);

        let mut next = proxy.client();
        assert_upload_arrives_whole(&mut next, 300_000);
    });
}
