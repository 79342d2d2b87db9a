//! Methods the proxy has no name for (WebDAV's PROPFIND, MKCOL, UPnP's
//! M-SEARCH, anything else) are unsafe (RFC 9111 §4.4: every method not
//! known to be safe): a non-error response invalidates the target URI and
//! the same-host Location / Content-Location; an error response does not,
//! and the safe OPTIONS does not either.

use crate::support::cache::{cache_config, scripted_origin, CacheStatus, Reply};
use crate::support::*;

fn is_hit(response: &Response) -> bool {
    CacheStatus::of(response).is_some_and(|status| status.hit)
}

#[test]
fn unknown_methods_invalidate_the_target_on_success() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| match request.method.as_str() {
            "GET" => Reply::ok(format!("{} {n}", request.target)).cache_control("max-age=60"),
            "MKCOL" => Reply::status(201).header("Location", "/dav/made"),
            "LOCK" => Reply::status(423),
            _ if request.target == "/dav/failing" => Reply::status(404),
            _ => Reply::status(207),
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let cases = [
            ("PROPFIND", "/dav/props", "/dav/props", true),
            ("M-SEARCH", "/upnp", "/upnp", true),
            ("MKCOL", "/dav/new", "/dav/made", true),
            // An error response leaves the stored response alone.
            ("PROPPATCH", "/dav/failing", "/dav/failing", false),
            ("LOCK", "/dav/locked", "/dav/locked", false),
            // OPTIONS is safe.
            ("OPTIONS", "/dav/options", "/dav/options", false),
        ];
        for (method, target, stored, invalidated) in cases {
            let first = proxy.client().get(stored);
            assert_eq!(first.body_text(), format!("{stored} 0"));
            assert!(is_hit(&proxy.client().get(stored)), "{stored} not stored");
            let response = proxy.client().request(method, target);
            assert!(response.status >= 200, "{method}: {}", response.status);
            let after = proxy.client().get(stored);
            assert_eq!(
                !is_hit(&after),
                invalidated,
                "{method} {target}: {stored} invalidated? got {}",
                after.body_text()
            );
            // Refetched (a later arrival number) or still the first copy.
            assert_eq!(after.body != first.body, invalidated, "{method}");
        }
    });
}
