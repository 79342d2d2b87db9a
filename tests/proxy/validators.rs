//! A revalidation answered with a 304 whose validator matches no stored
//! response (RFC 9111 §4.3.3): the proxy does not turn it into a 502; it
//! repeats the request without validators and the client gets the full
//! representation, which replaces the stored one.

use crate::support::cache::{cache_config, scripted_origin, CacheStatus, Reply};
use crate::support::*;

#[test]
fn a_304_for_another_representation_is_followed_by_an_unconditional_fetch() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| match n {
            // Stored, but to be revalidated on every use.
            0 => Reply::ok("v1")
                .header("ETag", "\"a\"")
                .cache_control("no-cache"),
            // The revalidation: a 304 naming a representation not stored here.
            1 => Reply::status(304).header("ETag", "\"b\""),
            _ if request.header("if-none-match").is_none() => Reply::ok("v2")
                .header("ETag", "\"b\"")
                .cache_control("max-age=60"),
            _ => Reply::status(500),
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_eq!(proxy.client().get("/rep").body, b"v1");
        let mut client = proxy.client();
        let response = client.get("/rep");
        assert_status(&response, 200);
        assert_eq!(response.body, b"v2");
        assert_eq!(response.header("etag"), Some("\"b\""));
        let requests = origin.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[1].header("if-none-match"), Some("\"a\""));
        assert_eq!(requests[2].header("if-none-match"), None);
        // What came back replaced the stored response.
        let hit = client.get("/rep");
        assert_eq!(hit.body, b"v2");
        assert!(CacheStatus::of(&hit).expect("a Cache-Status").hit);
        assert_eq!(origin.request_count(), 3);
    });
}

#[test]
fn a_head_revalidated_with_a_304_for_another_representation_gets_the_new_head() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, n| match n {
            0 => Reply::ok("v1")
                .header("ETag", "\"a\"")
                .cache_control("no-cache"),
            1 => Reply::status(304).header("ETag", "\"b\""),
            _ => Reply::ok("v2-longer")
                .header("ETag", "\"b\"")
                .cache_control("max-age=60"),
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_eq!(proxy.client().get("/head-rep").body, b"v1");
        let mut client = proxy.client();
        let head = client.request("HEAD", "/head-rep");
        assert_status(&head, 200);
        assert_eq!(head.header("etag"), Some("\"b\""));
        assert_eq!(head.header("content-length"), Some("9"));
        assert_eq!(client.get("/head-rep").body, b"v2-longer");
        assert_eq!(origin.request_count(), 3);
    });
}
