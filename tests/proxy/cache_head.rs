//! HEAD through the cache: a HEAD miss is filled with a GET (the origin sees
//! GET, the client gets the head only, with the GET's Content-Length), and a
//! later GET is a hit; a HEAD whose GET cannot be stored gets the head and
//! the cache keeps nothing; an unstorable answer without a body (a 204)
//! passes through to HEAD and Range requests alike.

use crate::support::cache::{
    cache_config, method_requests_for, pattern, scripted_origin, CacheStatus, Reply,
};
use crate::support::*;

#[test]
fn head_miss_fills_the_cache_and_a_later_get_is_a_hit() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            let reply = Reply::ok(pattern(n as u64, 5_000)).cache_control("max-age=60");
            if request.target.ends_with("chunked") {
                reply.chunked()
            } else {
                reply
            }
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for path in ["/head-fill", "/head-fill-chunked"] {
            let mut client = proxy.client();
            let head = client.request("HEAD", path);
            assert_status(&head, 200);
            assert!(head.body.is_empty());
            assert_eq!(head.header("content-length"), Some("5000"), "{path}");
            let status = CacheStatus::of(&head).expect("a Cache-Status");
            assert!(status.stored && !status.hit, "{path}: {:?}", status.raw);
            // The connection is in step, and the GET is served from the fill.
            let get = client.get(path);
            assert_status(&get, 200);
            assert_eq!(get.body, pattern(0, 5_000), "{path}");
            assert!(CacheStatus::of(&get).expect("a Cache-Status").hit);
            let again = proxy.client().request("HEAD", path);
            assert!(CacheStatus::of(&again).expect("a Cache-Status").hit);
            assert_eq!(method_requests_for(&origin, "GET", path), 1, "{path}");
            assert_eq!(method_requests_for(&origin, "HEAD", path), 0, "{path}");
        }
    });
}

#[test]
fn head_miss_of_an_unstorable_response_gets_the_head_only() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            let reply = Reply::ok(format!("fresh {n}"));
            match request.target.as_str() {
                "/private" => reply.cache_control("private"),
                _ => reply.body(pattern(1, 100_000)).cache_control("max-age=60"),
            }
        });
        let config = cache_config(shards, &origin, &[]).cache("max_object_size", "\"64KiB\"");
        let proxy = Proxy::start(&config);
        for (path, length) in [("/private", "7"), ("/too-big", "100000")] {
            let mut client = proxy.client();
            let head = client.request("HEAD", path);
            assert_status(&head, 200);
            assert_eq!(head.header("content-length"), Some(length), "{path}");
            assert!(!CacheStatus::of(&head).expect("a Cache-Status").stored);
            let get = client.get(path);
            assert_status(&get, 200);
            assert_eq!(get.body.len().to_string(), length, "{path}");
            assert_eq!(method_requests_for(&origin, "GET", path), 2, "{path}");
        }
    });
}

#[test]
fn bodiless_unstorable_answers_to_head_and_range_misses_pass_through() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, _| {
            Reply::status(204)
                .header("X-Origin", "yes")
                .cache_control("no-store")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let mut client = proxy.client();
        let head = client.request("HEAD", "/empty");
        assert_status(&head, 204);
        assert_eq!(head.header("x-origin"), Some("yes"));
        let ranged = client.request_with("GET", "/empty", &[("Range", "bytes=0-1")]);
        assert_status(&ranged, 204);
        assert!(ranged.body.is_empty());
        // One request each, on a connection still in step.
        assert_status(&client.request("HEAD", "/empty"), 204);
        assert_eq!(origin.request_count(), 3);
    });
}
