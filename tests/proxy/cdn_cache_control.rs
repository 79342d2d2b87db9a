//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control` replaces
//! `Cache-Control` (and `Expires`) for this cache whenever it is present,
//! in both directions (no-store, private, no-cache, max-age, s-maxage)
//! unless it is not a valid Structured Field dictionary (then ignored); a
//! configured own field (`cache.targeted_cache_control`) takes precedence
//! over both; an own field that is not configured means nothing. Targeted
//! fields are forwarded downstream unchanged (RFC 9213 lets a cache remove
//! them; a cache in front of this one may obey them too).

use crate::support::cache::{
    cache_config, http_date_from_now, scripted_origin, CacheStatus, Reply,
};
use crate::support::*;

use std::time::Duration;

const OWN: &str = "Shardproxy-Cache-Control";

/// The origin answers `/<case>` with the header lines of that case.
fn targeted_origin() -> Origin {
    scripted_origin(|request, n| {
        let past = http_date_from_now(Duration::from_secs(3600), true);
        let fields: Vec<(&str, String)> = match request.target.as_str() {
            "/cdn-no-store" => vec![
                ("Cache-Control", "max-age=60".into()),
                ("CDN-Cache-Control", "no-store".into()),
            ],
            "/cdn-private" => vec![
                ("Cache-Control", "public, max-age=60".into()),
                ("CDN-Cache-Control", "private".into()),
            ],
            "/cdn-max-age" => vec![
                ("Cache-Control", "no-store".into()),
                ("CDN-Cache-Control", "max-age=60".into()),
            ],
            "/cdn-s-maxage" => vec![
                ("Cache-Control", "max-age=0".into()),
                ("CDN-Cache-Control", "s-maxage=60".into()),
            ],
            "/cdn-over-expires" => vec![
                ("Expires", past),
                ("CDN-Cache-Control", "max-age=60".into()),
            ],
            "/cdn-no-cache" => vec![
                ("Cache-Control", "max-age=60".into()),
                ("CDN-Cache-Control", "no-cache".into()),
                ("ETag", "\"e\"".into()),
            ],
            // Not a Structured Field dictionary / max-age not an integer: ignored.
            "/cdn-invalid" => vec![
                ("Cache-Control", "no-store".into()),
                ("CDN-Cache-Control", "max-age=10000, &&&&&".into()),
            ],
            "/cdn-mistyped" => vec![
                ("Cache-Control", "no-store".into()),
                ("CDN-Cache-Control", "max-age=\"10000\"".into()),
            ],
            "/own-no-store" => vec![
                ("CDN-Cache-Control", "max-age=60".into()),
                (OWN, "no-store".into()),
            ],
            "/own-max-age" => vec![
                ("Cache-Control", "private".into()),
                ("CDN-Cache-Control", "no-store".into()),
                (OWN, "max-age=60".into()),
            ],
            _ => vec![("Cache-Control", "max-age=60".into())],
        };
        let mut reply = Reply::ok(format!("{} {n}", request.target));
        for (name, value) in fields {
            reply = reply.header(name, value);
        }
        reply
    })
}

/// Whether `path` is served from the cache the second time.
fn stored(proxy: &Proxy, path: &str) -> bool {
    let first = proxy.client().get(path);
    assert_status(&first, 200);
    let second = proxy.client().get(path);
    assert_status(&second, 200);
    CacheStatus::of(&second).is_some_and(|status| status.hit)
}

#[test]
fn cdn_cache_control_overrides_cache_control() {
    for_each_shard_count(|shards| {
        let origin = targeted_origin();
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let cases = [
            ("/cdn-no-store", false),
            ("/cdn-private", false),
            ("/cdn-max-age", true),
            ("/cdn-s-maxage", true),
            ("/cdn-over-expires", true),
            ("/cdn-invalid", false),
            ("/cdn-mistyped", false),
            // Not configured here: just another field.
            ("/own-no-store", true),
            ("/own-max-age", false),
        ];
        for (path, expected) in cases {
            assert_eq!(stored(&proxy, path), expected, "{path}");
        }
        // Forwarded downstream as they came.
        let response = proxy.client().get("/cdn-max-age");
        assert_eq!(response.header("cdn-cache-control"), Some("max-age=60"));
        assert_eq!(response.header("cache-control"), Some("no-store"));
    });
}

#[test]
fn cdn_no_cache_revalidates_every_use() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            if request.header("if-none-match").is_some() {
                return Reply::status(304).header("ETag", "\"e\"");
            }
            Reply::ok(format!("body {n}"))
                .header("ETag", "\"e\"")
                .cache_control("max-age=60")
                .header("CDN-Cache-Control", "no-cache")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_eq!(proxy.client().get("/nc").body, b"body 0");
        for _ in 0..3 {
            let again = proxy.client().get("/nc");
            assert_eq!(again.body, b"body 0");
            let status = CacheStatus::of(&again).expect("a Cache-Status");
            assert_eq!(status.fwd.as_deref(), Some("stale"), "{:?}", status.raw);
        }
        assert_eq!(origin.request_count(), 4);
    });
}

#[test]
fn the_configured_own_field_takes_precedence() {
    for_each_shard_count(|shards| {
        let origin = targeted_origin();
        let config = cache_config(shards, &origin, &[])
            .cache("targeted_cache_control", &format!("\"{OWN}\""));
        let proxy = Proxy::start(&config);
        for (path, expected) in [
            ("/own-no-store", false),
            ("/own-max-age", true),
            ("/cdn-max-age", true),
            ("/cdn-no-store", false),
            ("/plain", true),
        ] {
            assert_eq!(stored(&proxy, path), expected, "{path}");
        }
    });
}
