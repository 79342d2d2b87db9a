//! Range requests answered from the cache (RFC 9110 §14): single, suffix and
//! open ranges (206 with Content-Range), several ranges (multipart/byteranges
//! with a boundary), If-Range by strong ETag and by date, unsatisfiable
//! ranges (416 with `Content-Range: bytes */len`), malformed Range fields
//! (ignored: 200 in full), and a Range request that misses: the origin sees a
//! GET without Range, the whole object is stored, the client gets its 206,
//! and concurrent range misses coalesce into one fetch. Objects the cache
//! will not keep are delivered whole (200).

use std::sync::Arc;
use std::thread;

use crate::support::cache::{
    cache_config, pattern, requests_for, scripted_origin, send_concurrently, CacheStatus, Reply,
};
use crate::support::client::request_head_with;
use crate::support::*;

const LEN: u64 = 10_000;
const ETAG: &str = "\"v1\"";
const LAST_MODIFIED: &str = "Tue, 15 Nov 1994 12:45:26 GMT";

/// An origin serving `pattern(seed, LEN)` (chunked under `/chunked*`), with
/// an ETag, a Last-Modified, `Content-Type: text/plain` and max-age=60.
fn ranged_origin() -> Origin {
    scripted_origin(|request, _| {
        let reply = Reply::ok(pattern(seed(&request.target), LEN))
            .header("ETag", ETAG)
            .header("Last-Modified", LAST_MODIFIED)
            .header("Content-Type", "text/plain")
            .cache_control("max-age=60");
        if request.target.starts_with("/chunked") {
            reply.chunked()
        } else {
            reply
        }
    })
}

fn seed(target: &str) -> u64 {
    target.bytes().map(u64::from).sum()
}

fn body_of(target: &str) -> Vec<u8> {
    pattern(seed(target), LEN)
}

fn get_range(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Response {
    proxy.client().request_with("GET", path, headers)
}

/// Asserts a 206 of `first..=last` of `body`.
#[track_caller]
fn assert_partial(response: &Response, body: &[u8], first: usize, last: usize) {
    assert_status(response, 206);
    let expected = format!("bytes {first}-{last}/{}", body.len());
    assert_eq!(response.header("content-range"), Some(expected.as_str()));
    assert_eq!(
        response.body,
        &body[first..=last],
        "wrong bytes for {expected}"
    );
}

#[track_caller]
fn assert_cache_hit(response: &Response) {
    let status = CacheStatus::of(response).expect("a Cache-Status");
    assert!(status.hit, "expected a hit, got {:?}", status.raw);
}

#[test]
fn single_suffix_and_open_ranges_are_served_from_the_cache() {
    for_each_shard_count(|shards| {
        let origin = ranged_origin();
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let body = body_of("/r");
        assert_eq!(proxy.client().get("/r").body, body);
        let cases = [
            ("bytes=0-99", 0, 99),
            ("bytes=100-", 100, 9999),
            ("bytes=-500", 9500, 9999),
            ("bytes=9990-20000", 9990, 9999),
            ("bytes=-20000", 0, 9999),
            ("BYTES=5-5", 5, 5),
        ];
        let mut client = proxy.client();
        for (range, first, last) in cases {
            let response = client.request_with("GET", "/r", &[("Range", range)]);
            assert_partial(&response, &body, first, last);
            assert_cache_hit(&response);
            assert_eq!(response.header("etag"), Some(ETAG), "{range}");
        }
        // A HEAD with a Range gets the plain head.
        let head = client.request_with("HEAD", "/r", &[("Range", "bytes=0-1")]);
        assert_status(&head, 200);
        assert_eq!(requests_for(&origin, "/r"), 1);
    });
}

/// The parts of a multipart/byteranges body: (Content-Type, Content-Range, data).
fn parts(response: &Response) -> Vec<(String, String, Vec<u8>)> {
    let content_type = response.header("content-type").expect("a Content-Type");
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart/byteranges: {content_type}"));
    let delimiter = format!("--{boundary}");
    let body = &response.body;
    let mut found = Vec::new();
    let mut at = 0;
    loop {
        let start = find(&body[at..], delimiter.as_bytes()).expect("a delimiter") + at;
        let after = start + delimiter.len();
        if body[after..].starts_with(b"--") {
            assert_eq!(
                &body[after..],
                b"--\r\n",
                "epilogue after the close delimiter"
            );
            return found;
        }
        let head_end = find(&body[after..], b"\r\n\r\n").expect("part head") + after;
        let head = String::from_utf8_lossy(&body[after + 2..head_end]).into_owned();
        let field = |name: &str| {
            head.lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_default()
                .to_owned()
        };
        let data_start = head_end + 4;
        let next = find(&body[data_start..], format!("\r\n{delimiter}").as_bytes())
            .expect("the next delimiter")
            + data_start;
        found.push((
            field("Content-Type: "),
            field("Content-Range: "),
            body[data_start..next].to_vec(),
        ));
        at = next + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn several_ranges_come_as_multipart_byteranges() {
    for_each_shard_count(|shards| {
        let origin = ranged_origin();
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let body = body_of("/multi");
        assert_eq!(proxy.client().get("/multi").body, body);
        let response = get_range(&proxy, "/multi", &[("Range", "bytes=0-9, 100-199,-5")]);
        assert_status(&response, 206);
        assert_cache_hit(&response);
        assert!(response.header("content-range").is_none());
        let got = parts(&response);
        let expected = [(0, 9), (100, 199), (9995, 9999)];
        assert_eq!(got.len(), expected.len());
        for ((content_type, content_range, data), (first, last)) in got.iter().zip(expected) {
            assert_eq!(content_type, "text/plain");
            assert_eq!(content_range, &format!("bytes {first}-{last}/{LEN}"));
            assert_eq!(data, &body[first..=last]);
        }
        assert_eq!(requests_for(&origin, "/multi"), 1);
    });
}

#[test]
fn if_range_applies_the_range_only_to_the_same_representation() {
    for_each_shard_count(|shards| {
        let origin = ranged_origin();
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let body = body_of("/if-range");
        assert_eq!(proxy.client().get("/if-range").body, body);
        let cases = [
            (ETAG, true),
            ("\"other\"", false),
            // Weak tags never match If-Range (strong comparison).
            ("W/\"v1\"", false),
            (LAST_MODIFIED, true),
            ("Wed, 16 Nov 1994 12:45:26 GMT", false),
        ];
        let mut client = proxy.client();
        for (if_range, partial) in cases {
            let headers = [("Range", "bytes=10-19"), ("If-Range", if_range)];
            let response = client.request_with("GET", "/if-range", &headers);
            if partial {
                assert_partial(&response, &body, 10, 19);
            } else {
                assert_status(&response, 200);
                assert_eq!(response.body, body, "If-Range {if_range}: the full body");
            }
        }
        assert_eq!(requests_for(&origin, "/if-range"), 1);
    });
}

#[test]
fn unsatisfiable_ranges_get_416_and_malformed_ones_are_ignored() {
    for_each_shard_count(|shards| {
        let origin = ranged_origin();
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let body = body_of("/edge");
        assert_eq!(proxy.client().get("/edge").body, body);
        let mut client = proxy.client();
        for range in ["bytes=10000-", "bytes=20000-30000", "bytes=-0"] {
            let response = client.request_with("GET", "/edge", &[("Range", range)]);
            assert_status(&response, 416);
            assert_eq!(
                response.header("content-range"),
                Some(format!("bytes */{LEN}").as_str()),
                "{range}"
            );
            assert!(response.body.is_empty());
        }
        for range in [
            "bytes=abc",
            "items=0-5",
            "bytes=5-1",
            "bytes=",
            "bytes=0-5,3-8",
            "0-5",
        ] {
            let response = client.request_with("GET", "/edge", &[("Range", range)]);
            assert_status(&response, 200);
            assert_eq!(response.body, body, "Range {range:?} should be ignored");
        }
        // The connection stayed in step through all of them.
        assert_eq!(client.get("/edge").body, body);
        assert_eq!(requests_for(&origin, "/edge"), 1);
    });
}

#[test]
fn range_miss_fills_the_whole_object_and_is_answered_206() {
    for_each_shard_count(|shards| {
        let origin = ranged_origin();
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for path in ["/miss", "/chunked-miss"] {
            let body = body_of(path);
            let first = get_range(&proxy, path, &[("Range", "bytes=1000-1999")]);
            assert_partial(&first, &body, 1000, 1999);
            let status = CacheStatus::of(&first).expect("a Cache-Status");
            assert!(status.stored, "{path}: {:?}", status.raw);
            let upstream = origin.requests();
            let fetch = upstream.iter().find(|r| r.target == path).unwrap();
            assert_eq!(fetch.method, "GET");
            assert!(
                fetch.header("range").is_none(),
                "{path}: Range was forwarded"
            );
            let again = get_range(&proxy, path, &[("Range", "bytes=-10")]);
            assert_partial(&again, &body, 9990, 9999);
            assert_cache_hit(&again);
            assert_eq!(proxy.client().get(path).body, body);
            assert_eq!(requests_for(&origin, path), 1, "{path}");
        }
    });
}

#[test]
fn concurrent_range_misses_coalesce_into_one_fetch() {
    const CLIENTS: usize = 8;
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let held = Arc::clone(&gate);
        let origin = scripted_origin(move |_, _| {
            held.wait();
            Reply::ok(body_of("/together")).cache_control("max-age=60")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let head = request_head_with("GET", "/together", &[("Range", "bytes=0-9")]);
        thread::scope(|scope| {
            let handles = send_concurrently(scope, &proxy, head, CLIENTS);
            origin.wait_for_requests(1);
            gate.open();
            for handle in handles {
                let response = handle.join().unwrap().expect("a response");
                assert_partial(&response, &body_of("/together"), 0, 9);
            }
        });
        assert_eq!(origin.request_count(), 1);
    });
}

#[test]
fn range_misses_of_objects_the_cache_will_not_keep_still_get_206() {
    for_each_shard_count(|shards| {
        // An origin that honours Range itself (one range of the form `a-b`).
        let origin = scripted_origin(|request, _| {
            let body = pattern(9, 100_000);
            let reply = match request
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
            {
                Some(range) => {
                    let (first, last) = range.split_once('-').unwrap();
                    let (first, last): (usize, usize) =
                        (first.parse().unwrap(), last.parse().unwrap());
                    Reply::status(206)
                        .header("Content-Range", format!("bytes {first}-{last}/100000"))
                        .body(body[first..=last].to_vec())
                }
                None => Reply::ok(body),
            };
            match request.target.as_str() {
                "/big-chunked" => reply.chunked().cache_control("max-age=60"),
                "/no-store" => reply.cache_control("no-store"),
                _ => reply.cache_control("max-age=60"),
            }
        });
        let config = cache_config(shards, &origin, &[]).cache("max_object_size", "\"128KiB\"");
        let proxy = Proxy::start(&config);
        let small =
            Proxy::start(&cache_config(shards, &origin, &[]).cache("max_object_size", "\"64KiB\""));
        // Too large to keep: the request goes again as sent, the origin answers 206.
        for path in ["/big", "/big-chunked"] {
            let response = get_range(&small, path, &[("Range", "bytes=10-19")]);
            assert_partial(&response, &pattern(9, 100_000), 10, 19);
            let seen: Vec<Option<String>> = origin
                .requests()
                .iter()
                .filter(|r| r.target == path)
                .map(|r| r.header("range").map(str::to_owned))
                .collect();
            assert_eq!(seen, [None, Some("bytes=10-19".to_owned())], "{path}");
        }
        // Small enough to read but not to store: answered from what was read.
        for round in 1..=2 {
            let response = get_range(&proxy, "/no-store", &[("Range", "bytes=0-9")]);
            assert_partial(&response, &pattern(9, 100_000), 0, 9);
            assert_eq!(requests_for(&origin, "/no-store"), round);
        }
        assert!(origin
            .requests()
            .iter()
            .all(|r| r.target != "/no-store" || r.header("range").is_none()));
    });
}
