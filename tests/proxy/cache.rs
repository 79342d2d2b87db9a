//! The HTTP cache (`[cache]`, per-route `cache*` keys), seen from outside:
//! one origin fetch for many requests of a key arriving on any shard, request
//! coalescing, RFC 9111 storability and freshness, validation (stale entries,
//! `no-cache` responses, the client's own conditionals), RFC 5861 stale
//! extensions, Vary variants, invalidation by unsafe methods and PURGE (also
//! of near-cache copies), per-route bypass, the object size limit, the byte
//! budget, and bodies of every framing and size served byte-exact.
//!
//! The origin counts what it receives, so "served from the cache" is checked
//! as "the origin saw no new request", plus the proxy's `Cache-Status`
//! (RFC 9211) and `Age`. Ageing needs real time (HTTP ages are whole
//! seconds): only the tests of stale entries sleep, once, just over 2 s.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::cache::{
    cache_config, http_date, http_date_from_now, method_requests_for, pattern, requests_for,
    scripted_origin, CacheStatus, Reply,
};
use crate::support::*;

/// Long enough for a `max-age=1` entry to be stale at whole-second
/// resolution, whatever the sub-second phase of the store.
const AGE_PAST_ONE_SECOND: Duration = Duration::from_millis(2100);

/// A fixed Last-Modified well in the past.
const LAST_MODIFIED: &str = "Tue, 15 Nov 1994 12:45:26 GMT";

fn show(response: &Response) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&response.head.raw),
        if response.body.len() > 200 {
            format!("[{} body bytes]", response.body.len())
        } else {
            response.body_text()
        }
    )
}

/// Asserts `response` was served from the cache: 200 or `status`,
/// `Cache-Status` with `hit`, and an integer `Age`.
#[track_caller]
fn assert_hit(response: &Response) -> CacheStatus {
    check_hit(response).unwrap_or_else(|why| panic!("{why}"))
}

fn check_hit(response: &Response) -> Result<CacheStatus, String> {
    let Some(status) = CacheStatus::of(response) else {
        return Err(format!(
            "expected a cache hit, got no shardproxy Cache-Status:\n{}",
            show(response)
        ));
    };
    if !status.hit {
        return Err(format!(
            "expected a cache hit, got Cache-Status {:?}:\n{}",
            status.raw,
            show(response)
        ));
    }
    match response.header("age").map(|age| age.trim().parse::<u64>()) {
        Some(Ok(_)) => Ok(status),
        _ => Err(format!(
            "a response served from the cache needs an integer Age:\n{}",
            show(response)
        )),
    }
}

/// Asserts `response` was not served from the cache (it may have no
/// Cache-Status at all).
#[track_caller]
fn assert_not_hit(response: &Response) {
    if let Some(status) = CacheStatus::of(response) {
        assert!(
            !status.hit,
            "expected a response from the origin, got Cache-Status {:?}:\n{}",
            status.raw,
            show(response)
        );
    }
}

#[track_caller]
fn assert_body(response: &Response, expected: &[u8]) {
    assert_status(response, 200);
    if response.body != expected {
        panic!(
            "wrong body: got {} bytes ({:?}), expected {} bytes ({:?}); head:\n{}",
            response.body.len(),
            BodyDigest::of(&response.body),
            expected.len(),
            BodyDigest::of(expected),
            String::from_utf8_lossy(&response.head.raw)
        );
    }
}

/// GET `path` on a new connection (so with 2 shards successive calls land
/// on either shard).
fn get(proxy: &Proxy, path: &str) -> Response {
    proxy.client().get(path)
}

fn get_with(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Response {
    proxy.client().request_with("GET", path, headers)
}

/// `gets_each` GETs of `path` on each of `connections` new connections,
/// opened one after the other (SO_REUSEPORT spreads them over the shards).
fn get_on_many_connections(
    proxy: &Proxy,
    path: &str,
    connections: usize,
    gets_each: usize,
) -> Vec<Response> {
    let mut responses = Vec::new();
    for _ in 0..connections {
        let mut client = proxy.client();
        for _ in 0..gets_each {
            responses.push(client.get(path));
        }
    }
    responses
}

fn ttl_of(response: &Response) -> i64 {
    CacheStatus::of(response)
        .and_then(|status| status.ttl)
        .unwrap_or_else(|| panic!("no Cache-Status ttl:\n{}", show(response)))
}

fn age_of(response: &Response) -> u64 {
    response
        .header("age")
        .and_then(|age| age.trim().parse().ok())
        .unwrap_or_else(|| panic!("no integer Age:\n{}", show(response)))
}

// ---- one fetch, many clients ----

#[test]
fn one_origin_fetch_serves_many_connections_on_every_shard() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, n| {
            Reply::ok(format!("shared body {n}"))
                .cache_control("max-age=60")
                .header("Content-Type", "text/x-shared")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let first = get(&proxy, "/shared");
        assert_body(&first, b"shared body 0");
        let status = CacheStatus::of(&first)
            .unwrap_or_else(|| panic!("no Cache-Status on the miss:\n{}", show(&first)));
        assert_eq!(
            (status.fwd.as_deref(), status.stored, status.hit),
            (Some("uri-miss"), true, false),
            "the first response should say `fwd=uri-miss; stored`, got {:?}",
            status.raw
        );
        for response in get_on_many_connections(&proxy, "/shared", 20, 3) {
            assert_body(&response, b"shared body 0");
            assert_eq!(
                response.header("content-type"),
                Some("text/x-shared"),
                "a hit keeps the stored headers:\n{}",
                show(&response)
            );
            let status = assert_hit(&response);
            let ttl = status
                .ttl
                .unwrap_or_else(|| panic!("a hit needs Cache-Status ttl, got {:?}", status.raw));
            assert!(
                (1..=60).contains(&ttl),
                "ttl of a max-age=60 hit should be in 1..=60, got {:?}",
                status.raw
            );
            assert!(age_of(&response) <= 60);
        }
        assert_eq!(origin.request_count(), 1, "every later GET should be a hit");
    });
}

#[test]
fn head_after_get_is_served_from_the_get_entry() {
    for_each_shard_count(|shards| {
        let origin =
            scripted_origin(|_, n| Reply::ok(format!("head me {n}")).cache_control("max-age=60"));
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/head"), b"head me 0");
        for _ in 0..6 {
            let mut client = proxy.client();
            let head = client.request("HEAD", "/head");
            assert_status(&head, 200);
            assert_hit(&head);
            assert!(head.body.is_empty());
            if let Some(length) = head.header("content-length") {
                assert_eq!(
                    length.trim(),
                    "9",
                    "HEAD Content-Length should be the GET's"
                );
            }
            // The connection is still in step: no body bytes followed the HEAD.
            assert_body(&client.get("/head"), b"head me 0");
        }
        assert_eq!(origin.request_count(), 1);
    });
}

#[test]
fn head_miss_is_answered_without_a_body_and_the_connection_stays_usable() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            Reply::ok(format!("{} {n}", request.target)).cache_control("max-age=60")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let mut client = proxy.client();
        let head = client.request("HEAD", "/head-first");
        assert_status(&head, 200);
        assert!(head.body.is_empty());
        let body = client.get("/head-first");
        assert_status(&body, 200);
        assert!(
            body.body_text().starts_with("/head-first "),
            "wrong body after a HEAD miss: {}",
            show(&body)
        );
    });
}

#[test]
fn hits_count_the_age_the_origin_reported() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, _| {
            Reply::ok("aged")
                .cache_control("max-age=60")
                .header("Age", "30")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/aged"), b"aged");
        let hit = get(&proxy, "/aged");
        assert_body(&hit, b"aged");
        assert_hit(&hit);
        assert!(
            age_of(&hit) >= 30,
            "Age must include the origin's Age: 30:\n{}",
            show(&hit)
        );
        let ttl = ttl_of(&hit);
        assert!(
            (1..=30).contains(&ttl),
            "max-age=60 with Age: 30 leaves at most 30 s, got ttl={ttl}"
        );
        assert_eq!(origin.request_count(), 1);
    });
}

// ---- coalescing ----

/// `clients` concurrent GETs of `path` (see `support::cache::send_concurrently`).
fn send_concurrently<'scope>(
    scope: &'scope thread::Scope<'scope, '_>,
    proxy: &'scope Proxy,
    path: &'static str,
    clients: usize,
) -> Vec<thread::ScopedJoinHandle<'scope, Result<Response, ReadError>>> {
    cache::send_concurrently(scope, proxy, client::request_head("GET", path), clients)
}

#[test]
fn concurrent_misses_coalesce_into_one_origin_fetch() {
    const CLIENTS: usize = 50;
    for_each_shard_count(|shards| {
        let body = pattern(7, 20_000);
        let gate = Gate::new();
        let held = Arc::clone(&gate);
        let served = body.clone();
        let origin = scripted_origin(move |_, _| {
            held.wait();
            Reply::ok(served.clone()).cache_control("max-age=60")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        thread::scope(|scope| {
            let handles = send_concurrently(scope, &proxy, "/popular", CLIENTS);
            origin.wait_for_requests(1);
            let in_flight = origin.heads();
            gate.open();
            for handle in handles {
                let response = handle
                    .join()
                    .unwrap()
                    .expect("a coalesced client's response");
                assert_body(&response, &body);
            }
            assert_eq!(
                (in_flight, origin.request_count()),
                (1, 1),
                "{CLIENTS} concurrent misses of one key should make one origin request"
            );
        });
    });
}

#[test]
fn uncacheable_response_releases_coalesced_waiters() {
    const CLIENTS: usize = 10;
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let held = Arc::clone(&gate);
        let origin = scripted_origin(move |_, n| {
            held.wait();
            Reply::ok(format!("private copy {n}")).cache_control("no-store")
        });
        // A long wait limit: released waiters must not sit it out.
        let config = cache_config(shards, &origin, &[]).cache("coalesce_wait", "\"30s\"");
        let proxy = Proxy::start(&config);
        thread::scope(|scope| {
            let handles = send_concurrently(scope, &proxy, "/no-store", CLIENTS);
            origin.wait_for_requests(1);
            let released = Instant::now();
            gate.open();
            let mut bodies: Vec<String> = handles
                .into_iter()
                .map(|handle| {
                    let response = handle
                        .join()
                        .unwrap()
                        .expect("a released waiter should get its own response");
                    assert_status(&response, 200);
                    response.body_text()
                })
                .collect();
            assert!(
                released.elapsed() < Duration::from_secs(5),
                "waiters were released only after {:?}",
                released.elapsed()
            );
            bodies.sort();
            bodies.dedup();
            assert_eq!(
                (origin.request_count(), bodies.len()),
                (CLIENTS, CLIENTS),
                "a no-store response must not be shared: each waiter fetches its own"
            );
        });
    });
}

#[test]
fn coalesce_wait_limits_how_long_a_request_waits_for_another_fetch() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let held = Arc::clone(&gate);
        let origin = scripted_origin(move |_, n| {
            if n == 0 {
                held.wait();
            }
            Reply::ok(format!("fetch {n}")).cache_control("max-age=60")
        });
        let config = cache_config(shards, &origin, &[]).cache("coalesce_wait", "\"300ms\"");
        let proxy = Proxy::start(&config);
        let mut slow = proxy.client();
        slow.send(client::request_head("GET", "/slow-fill").as_bytes());
        origin.wait_for_requests(1);
        let started = Instant::now();
        let impatient = get(&proxy, "/slow-fill");
        let waited = started.elapsed();
        gate.open();
        assert_body(&impatient, b"fetch 1");
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "with coalesce_wait = 300ms the second request should go to the origin after \
             about 300ms, it took {waited:?}"
        );
        assert_status(&slow.read_response("GET"), 200);
    });
}

// ---- storability and freshness (RFC 9111 §3, §4.2) ----

struct StoreCase {
    /// Path prefix choosing the route: `/` (defaults), `/ttl/`
    /// (`cache_default_ttl = "30s"`) or `/cookies/` (`cache_set_cookie`).
    route: &'static str,
    reply: fn() -> Reply,
    /// Headers of the first request only; the second is a plain GET.
    request: &'static [(&'static str, &'static str)],
    stored: bool,
}

fn store_cases() -> Vec<(&'static str, StoreCase)> {
    let case = |route, reply, request, stored| StoreCase {
        route,
        reply,
        request,
        stored,
    };
    vec![
        (
            "max-age=60",
            case(
                "/",
                || Reply::ok("x").cache_control("max-age=60"),
                &[],
                true,
            ),
        ),
        (
            "no-store",
            case(
                "/",
                || Reply::ok("x").cache_control("no-store, max-age=60"),
                &[],
                false,
            ),
        ),
        (
            "private",
            case(
                "/",
                || Reply::ok("x").cache_control("private, max-age=60"),
                &[],
                false,
            ),
        ),
        (
            "s-maxage=60 with max-age=0",
            case(
                "/",
                || Reply::ok("x").cache_control("max-age=0, s-maxage=60"),
                &[],
                true,
            ),
        ),
        (
            "Expires in an hour, no max-age",
            case(
                "/",
                || {
                    Reply::ok("x")
                        .header("Date", http_date_from_now(Duration::ZERO, false))
                        .header(
                            "Expires",
                            http_date_from_now(Duration::from_secs(3600), false),
                        )
                },
                &[],
                true,
            ),
        ),
        (
            "Expires in the past",
            case(
                "/",
                || {
                    Reply::ok("x")
                        .header("Date", http_date_from_now(Duration::ZERO, false))
                        .header(
                            "Expires",
                            http_date_from_now(Duration::from_secs(3600), true),
                        )
                },
                &[],
                false,
            ),
        ),
        (
            "no freshness information",
            case("/", || Reply::ok("x"), &[], false),
        ),
        (
            "Last-Modified ten days ago (heuristic freshness)",
            case(
                "/",
                || {
                    Reply::ok("x")
                        .header("Date", http_date_from_now(Duration::ZERO, false))
                        .header(
                            "Last-Modified",
                            http_date_from_now(Duration::from_secs(10 * 86_400), true),
                        )
                },
                &[],
                true,
            ),
        ),
        (
            "cache_default_ttl, no freshness information",
            case("/ttl/", || Reply::ok("x"), &[], true),
        ),
        (
            "cache_default_ttl does not override no-store",
            case(
                "/ttl/",
                || Reply::ok("x").cache_control("no-store"),
                &[],
                false,
            ),
        ),
        (
            "request with Authorization",
            case(
                "/",
                || Reply::ok("x").cache_control("max-age=60"),
                &[("Authorization", "Bearer secret")],
                false,
            ),
        ),
        (
            "request with Authorization, response public",
            case(
                "/",
                || Reply::ok("x").cache_control("public, max-age=60"),
                &[("Authorization", "Bearer secret")],
                true,
            ),
        ),
        (
            "request with Authorization, response s-maxage",
            case(
                "/",
                || Reply::ok("x").cache_control("s-maxage=60"),
                &[("Authorization", "Bearer secret")],
                true,
            ),
        ),
        (
            "Set-Cookie on a default route",
            case(
                "/",
                || {
                    Reply::ok("x")
                        .cache_control("max-age=60")
                        .header("Set-Cookie", "session=abc")
                },
                &[],
                false,
            ),
        ),
        (
            "Set-Cookie on a cache_set_cookie route",
            case(
                "/cookies/",
                || {
                    Reply::ok("x")
                        .cache_control("max-age=60")
                        .header("Set-Cookie", "theme=dark")
                },
                &[],
                true,
            ),
        ),
        (
            "request no-store",
            case(
                "/",
                || Reply::ok("x").cache_control("max-age=60"),
                &[("Cache-Control", "no-store")],
                false,
            ),
        ),
        (
            "404 with max-age=60",
            case(
                "/",
                || Reply::status(404).body("x").cache_control("max-age=60"),
                &[],
                true,
            ),
        ),
        (
            "Vary: *",
            case(
                "/",
                || {
                    Reply::ok("x")
                        .cache_control("max-age=60")
                        .header("Vary", "*")
                },
                &[],
                false,
            ),
        ),
    ]
}

/// The case's URL: its route prefix plus a slug of its name.
fn case_path(name: &str, case: &StoreCase) -> String {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{}{slug}", case.route)
}

#[test]
fn storability_follows_rfc_9111_and_the_route_options() {
    for_each_shard_count(|shards| {
        let cases: Vec<(&str, (String, StoreCase))> = store_cases()
            .into_iter()
            .map(|(name, case)| (name, (case_path(name, &case), case)))
            .collect();
        let replies: Vec<(String, fn() -> Reply)> = cases
            .iter()
            .map(|(_, (path, case))| (path.clone(), case.reply))
            .collect();
        let origin = scripted_origin(move |request, _| {
            let (_, reply) = replies
                .iter()
                .find(|(path, _)| *path == request.target)
                .unwrap_or_else(|| panic!("no case for {}", request.target));
            reply()
        });
        let config = ProxyConfig::new(shards)
            .with_cache()
            .upstream("o", &[origin.addr()])
            .route_with(None, "/ttl/", "o", &[("cache_default_ttl", "\"30s\"")])
            .route_with(None, "/cookies/", "o", &[("cache_set_cookie", "true")])
            .route_with(None, "/", "o", &[]);
        let proxy = Proxy::start(&config);
        assert_every_case("storability", &cases, |(path, case)| {
            let path = path.as_str();
            let expected_status = (case.reply)().status;
            let first = get_with(&proxy, path, case.request);
            if first.status != expected_status || first.body != b"x" {
                return Err(format!("first response wrong:\n{}", show(&first)));
            }
            let second = get(&proxy, path);
            if second.status != expected_status || second.body != b"x" {
                return Err(format!("second response wrong:\n{}", show(&second)));
            }
            let fetches = requests_for(&origin, path);
            let hit = CacheStatus::of(&second).is_some_and(|status| status.hit);
            match (case.stored, fetches, hit) {
                (true, 1, true) | (false, 2, false) => Ok(()),
                _ => Err(format!(
                    "expected {}, but the origin saw {fetches} requests; second response:\n{}",
                    if case.stored {
                        "the second GET to be a hit"
                    } else {
                        "the second GET to go to the origin"
                    },
                    show(&second)
                )),
            }
        });
    });
}

#[test]
fn max_age_expiry_and_validators_on_stale_entries() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| match (request.target.as_str(), n) {
            ("/expires", n) => Reply::ok(format!("expiring {n}")).cache_control("max-age=1"),
            ("/etag", 0) => Reply::ok("etag body")
                .cache_control("max-age=1")
                .header("ETag", "\"e1\""),
            ("/etag", _) if request.header("if-none-match") == Some("\"e1\"") => Reply::status(304)
                .cache_control("max-age=60")
                .header("ETag", "\"e1\""),
            ("/last-modified", 0) => Reply::ok("lm body")
                .cache_control("max-age=1")
                .header("Last-Modified", LAST_MODIFIED),
            ("/last-modified", _) if request.header("if-modified-since") == Some(LAST_MODIFIED) => {
                Reply::status(304)
                    .cache_control("max-age=60")
                    .header("Last-Modified", LAST_MODIFIED)
            }
            (_, n) => Reply::ok(format!("unconditional refetch {n}")).cache_control("max-age=60"),
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/expires"), b"expiring 0");
        assert_body(&get(&proxy, "/etag"), b"etag body");
        assert_body(&get(&proxy, "/last-modified"), b"lm body");
        thread::sleep(AGE_PAST_ONE_SECOND);

        let expired = get(&proxy, "/expires");
        assert_body(&expired, b"expiring 1");
        assert_not_hit(&expired);
        assert_eq!(requests_for(&origin, "/expires"), 2);

        for (path, validator, value, body) in [
            ("/etag", "if-none-match", "\"e1\"", &b"etag body"[..]),
            (
                "/last-modified",
                "if-modified-since",
                LAST_MODIFIED,
                &b"lm body"[..],
            ),
        ] {
            let revalidated = get(&proxy, path);
            let requests = origin.requests();
            let revalidation = requests
                .iter()
                .filter(|request| request.target == path)
                .nth(1)
                .unwrap_or_else(|| panic!("the stale {path} was not revalidated"));
            assert_eq!(
                revalidation.header(validator),
                Some(value),
                "the revalidation of {path} should carry {validator}: {value}; it was:\n{}",
                String::from_utf8_lossy(&revalidation.head)
            );
            assert_body(&revalidated, body);
            // The 304 refreshed the entry (now max-age=60).
            let refreshed = get(&proxy, path);
            assert_body(&refreshed, body);
            assert_hit(&refreshed);
            assert_eq!(requests_for(&origin, path), 2, "{path} after the 304");
        }
    });
}

#[test]
fn no_cache_responses_are_stored_but_revalidated_on_every_use() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            if n > 0 && request.header("if-none-match") == Some("\"nc\"") {
                Reply::status(304)
                    .header("ETag", "\"nc\"")
                    .cache_control("no-cache")
            } else {
                Reply::ok(format!("no-cache body {n}"))
                    .cache_control("no-cache")
                    .header("ETag", "\"nc\"")
            }
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/no-cache"), b"no-cache body 0");
        for round in 1..=3 {
            assert_body(&get(&proxy, "/no-cache"), b"no-cache body 0");
            let requests = origin.requests();
            assert_eq!(requests.len(), round + 1, "every use goes to the origin");
            assert_eq!(
                requests[round].header("if-none-match"),
                Some("\"nc\""),
                "the stored no-cache response should be revalidated, not refetched:\n{}",
                String::from_utf8_lossy(&requests[round].head)
            );
        }
    });
}

/// Request headers and the status they should get.
type Conditional = (Vec<(&'static str, &'static str)>, u16);

#[test]
fn client_conditionals_are_answered_from_the_cache() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, n| {
            Reply::ok(format!("conditional body {n}"))
                .cache_control("max-age=60")
                .header("ETag", "\"c1\"")
                .header("Last-Modified", LAST_MODIFIED)
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/cond"), b"conditional body 0");
        let later = "Wed, 16 Nov 1994 12:45:26 GMT";
        let earlier = "Mon, 14 Nov 1994 12:45:26 GMT";
        let cases: Vec<(&'static str, Conditional)> = vec![
            (
                "If-None-Match matching",
                (vec![("If-None-Match", "\"c1\"")], 304),
            ),
            (
                "If-None-Match weak match",
                (vec![("If-None-Match", "W/\"c1\"")], 304),
            ),
            (
                "If-None-Match list",
                (vec![("If-None-Match", "\"zz\", \"c1\"")], 304),
            ),
            ("If-None-Match *", (vec![("If-None-Match", "*")], 304)),
            (
                "If-None-Match other",
                (vec![("If-None-Match", "\"other\"")], 200),
            ),
            (
                "If-Modified-Since = Last-Modified",
                (vec![("If-Modified-Since", LAST_MODIFIED)], 304),
            ),
            (
                "If-Modified-Since later",
                (vec![("If-Modified-Since", later)], 304),
            ),
            (
                "If-Modified-Since earlier",
                (vec![("If-Modified-Since", earlier)], 200),
            ),
            (
                "If-None-Match other wins over a matching If-Modified-Since",
                (
                    vec![
                        ("If-None-Match", "\"other\""),
                        ("If-Modified-Since", LAST_MODIFIED),
                    ],
                    200,
                ),
            ),
        ];
        assert_every_case("client conditionals", &cases, |(headers, status)| {
            let response = get_with(&proxy, "/cond", headers);
            if response.status != *status {
                return Err(format!("expected {status}, got:\n{}", show(&response)));
            }
            if *status == 304 {
                if !response.body.is_empty() {
                    return Err("a 304 has no body".into());
                }
                if response.header("etag") != Some("\"c1\"") {
                    return Err(format!(
                        "the 304 should carry the ETag:\n{}",
                        show(&response)
                    ));
                }
            } else if response.body != b"conditional body 0" {
                return Err(format!("wrong body:\n{}", show(&response)));
            }
            check_hit(&response).map(|_| ())
        });
        assert_eq!(
            origin.request_count(),
            1,
            "conditionals matching a fresh entry are answered by the cache"
        );
    });
}

#[test]
fn request_directives_force_revalidation_and_only_if_cached() {
    for_each_shard_count(|shards| {
        // Revalidating conditionally or refetching are both fine: the
        // representation does not change. `Age: 5` makes the stored response
        // older than `max-age=0` even within its first second (a response
        // of age 0 would satisfy a request `max-age=0` to the letter); each
        // directive gets its own URL, so no 304 has reset that age.
        let origin = scripted_origin(|request, _| {
            if request.header("if-none-match") == Some("\"r1\"") {
                Reply::status(304)
                    .header("ETag", "\"r1\"")
                    .cache_control("max-age=60")
            } else {
                Reply::ok("directives 0")
                    .cache_control("max-age=60")
                    .header("ETag", "\"r1\"")
                    .header("Age", "5")
            }
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for (path, directive) in [
            ("/directives/no-cache", "no-cache"),
            ("/directives/max-age", "max-age=0"),
            ("/directives", "max-age=1"),
        ] {
            assert_body(&get(&proxy, path), b"directives 0");
            let response = get_with(&proxy, path, &[("Cache-Control", directive)]);
            assert_body(&response, b"directives 0");
            assert_eq!(
                requests_for(&origin, path),
                2,
                "request Cache-Control: {directive} (stored Age 5) must go to the origin"
            );
            assert_hit(&get(&proxy, path));
            assert_eq!(requests_for(&origin, path), 2);
        }

        let cached = get_with(
            &proxy,
            "/directives",
            &[("Cache-Control", "only-if-cached")],
        );
        assert_body(&cached, b"directives 0");
        let missing = get_with(
            &proxy,
            "/not-cached",
            &[("Cache-Control", "only-if-cached")],
        );
        assert_status(&missing, 504);
        assert_eq!(
            requests_for(&origin, "/not-cached"),
            0,
            "only-if-cached must not contact the origin"
        );
    });
}

// ---- RFC 5861 ----

#[test]
fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background() {
    for_each_shard_count(|shards| {
        let gate = Gate::new();
        let held = Arc::clone(&gate);
        let origin = scripted_origin(move |_, n| {
            if n == 0 {
                Reply::ok("swr v0").cache_control("max-age=1, stale-while-revalidate=30")
            } else {
                held.wait();
                Reply::ok(format!("swr v{n}")).cache_control("max-age=60")
            }
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/swr"), b"swr v0");
        thread::sleep(AGE_PAST_ONE_SECOND);
        let stale_served = Instant::now();
        // The background revalidation is held at the origin: these must not wait for it.
        let stale: Vec<Response> = (0..5)
            .map(|_| {
                let mut client = proxy.client();
                client.set_read_timeout(Duration::from_secs(3));
                client.try_get("/swr").unwrap_or_else(|error| {
                    gate.open();
                    panic!(
                        "a stale-while-revalidate hit waited for the revalidation \
                         the origin is holding ({error:?})"
                    )
                })
            })
            .collect();
        let took = stale_served.elapsed();
        gate.open();
        for response in &stale {
            assert_body(response, b"swr v0");
            let status = assert_hit(response);
            assert!(
                status.ttl.is_some_and(|ttl| ttl <= 0),
                "a stale hit should have ttl <= 0, got {:?}",
                status.raw
            );
            assert!(age_of(response) >= 2, "stale Age:\n{}", show(response));
        }
        assert!(
            took < Duration::from_secs(2),
            "stale responses waited for the revalidation ({took:?})"
        );
        origin.wait_for_requests(2);
        // The refreshed entry replaces the stale one.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let response = get(&proxy, "/swr");
            if response.body != b"swr v0" {
                assert_eq!(
                    origin.request_count(),
                    2,
                    "more than one background revalidation; the response now:\n{}",
                    show(&response)
                );
                assert_body(&response, b"swr v1");
                assert_hit(&response);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the background refresh never landed"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            origin.request_count(),
            2,
            "exactly one background revalidation for many stale hits"
        );
    });
}

#[test]
fn stale_if_error_serves_stale_when_the_origin_fails() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| match (request.target.as_str(), n) {
            (_, 0) => Reply::ok(format!("{} v0", request.target))
                .cache_control("max-age=1, stale-if-error=60"),
            ("/sie-500", _) => Reply::status(500).body("origin broke"),
            _ => Reply::hang_up(),
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        assert_body(&get(&proxy, "/sie-500"), b"/sie-500 v0");
        assert_body(&get(&proxy, "/sie-closed"), b"/sie-closed v0");
        thread::sleep(AGE_PAST_ONE_SECOND);
        for path in ["/sie-500", "/sie-closed"] {
            let response = get(&proxy, path);
            assert_body(&response, format!("{path} v0").as_bytes());
            assert!(
                requests_for(&origin, path) >= 2,
                "{path}: the stale entry should have been tried at the origin first"
            );
        }
    });
}

// ---- Vary ----

#[test]
fn vary_keeps_one_variant_per_request_header_value() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, _| {
            let encoding = request.header("accept-encoding").unwrap_or("none");
            Reply::ok(format!("variant {encoding}"))
                .cache_control("max-age=60")
                .header("Vary", "Accept-Encoding")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for encoding in ["gzip", "br"] {
            let response = get_with(&proxy, "/vary", &[("Accept-Encoding", encoding)]);
            assert_body(&response, format!("variant {encoding}").as_bytes());
        }
        assert_eq!(origin.request_count(), 2, "two values, two variants");
        for _ in 0..3 {
            for encoding in ["br", "gzip"] {
                let response = get_with(&proxy, "/vary", &[("Accept-Encoding", encoding)]);
                assert_body(&response, format!("variant {encoding}").as_bytes());
                assert_hit(&response);
            }
        }
        assert_eq!(origin.request_count(), 2, "repeated values are hits");
    });
}

#[test]
fn vary_star_is_never_served_from_the_cache() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|_, n| {
            Reply::ok(format!("star {n}"))
                .cache_control("max-age=60")
                .header("Vary", "*")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for n in 0..4 {
            let response = get(&proxy, "/star");
            assert_body(&response, format!("star {n}").as_bytes());
            assert_not_hit(&response);
        }
        assert_eq!(origin.request_count(), 4);
    });
}

// ---- invalidation ----

#[test]
fn successful_unsafe_methods_invalidate_the_target() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            if request.method == "GET" {
                Reply::ok(format!("{} {n}", request.target)).cache_control("max-age=60")
            } else {
                Reply::ok("done")
            }
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let path = format!("/invalidate/{method}");
            assert_body(&get(&proxy, &path), format!("{path} 0").as_bytes());
            assert_hit(&get(&proxy, &path));
            let unsafe_response =
                proxy
                    .client()
                    .request_with(method, &path, &[("Content-Length", "0")]);
            assert_body(&unsafe_response, b"done");
            let after = get(&proxy, &path);
            assert_not_hit(&after);
            assert_eq!(
                method_requests_for(&origin, "GET", &path),
                2,
                "a successful {method} should invalidate {path}"
            );
            assert_body(&after, format!("{path} 2").as_bytes());
        }
    });
}

#[test]
fn location_and_content_location_invalidate_same_host_urls_only() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| match request.target.as_str() {
            "/form/local" => Reply::status(201)
                .body("created")
                .header("Location", "/loc/a")
                .header("Content-Location", format!("http://{TEST_HOST}/loc/b")),
            "/form/foreign" => Reply::status(201)
                .body("created")
                .header("Location", "http://elsewhere.example/loc/c")
                .header("Content-Location", "http://elsewhere.example/loc/c"),
            target => Reply::ok(format!("{target} {n}")).cache_control("max-age=60"),
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for path in ["/loc/a", "/loc/b", "/loc/c"] {
            assert_body(&get(&proxy, path), format!("{path} 0").as_bytes());
            assert_hit(&get(&proxy, path));
        }
        let post = proxy
            .client()
            .request_with("POST", "/form/local", &[("Content-Length", "0")]);
        assert_status(&post, 201);
        for path in ["/loc/a", "/loc/b"] {
            let after = get(&proxy, path);
            assert_body(&after, format!("{path} 1").as_bytes());
        }
        let post = proxy
            .client()
            .request_with("POST", "/form/foreign", &[("Content-Length", "0")]);
        assert_status(&post, 201);
        let kept = get(&proxy, "/loc/c");
        assert_body(&kept, b"/loc/c 0");
        assert_hit(&kept);
    });
}

#[test]
fn purge_removes_entries_on_their_owner_shard() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            Reply::ok(format!("{} {n}", request.target)).cache_control("max-age=60")
        });
        let config = cache_config(shards, &origin, &[])
            .cache("purge_allow", r#"["127.0.0.1/32", "::1/128"]"#);
        let proxy = Proxy::start(&config);
        let paths: Vec<String> = (0..6).map(|n| format!("/purge/{n}")).collect();
        for path in &paths {
            assert_body(&get(&proxy, path), format!("{path} 0").as_bytes());
        }
        for path in &paths {
            // A new connection each: with 2 shards some land off the owner.
            let purged = proxy.client().request("PURGE", path);
            assert_status(&purged, 200);
        }
        for path in &paths {
            let after = get(&proxy, path);
            assert_body(&after, format!("{path} 1").as_bytes());
            assert_not_hit(&after);
        }
        let absent = proxy.client().request("PURGE", "/purge/never-cached");
        assert_status(&absent, 404);
        assert!(
            origin
                .requests()
                .iter()
                .all(|request| request.method == "GET"),
            "PURGE must not reach the origin"
        );
    });
}

#[test]
fn purge_is_refused_to_clients_outside_purge_allow() {
    for_each_shard_count(|shards| {
        let origin =
            scripted_origin(|_, n| Reply::ok(format!("guarded {n}")).cache_control("max-age=60"));
        let config = cache_config(shards, &origin, &[]).cache("purge_allow", r#"["10.0.0.0/8"]"#);
        let proxy = Proxy::start(&config);
        assert_body(&get(&proxy, "/guarded"), b"guarded 0");
        assert_status(&proxy.client().request("PURGE", "/guarded"), 403);
        let kept = get(&proxy, "/guarded");
        assert_body(&kept, b"guarded 0");
        assert_hit(&kept);
        assert_eq!(origin.request_count(), 1);
    });
}

#[test]
fn invalidation_reaches_near_cache_copies() {
    for_each_shard_count(|shards| {
        let gets = AtomicUsize::new(0);
        let origin = scripted_origin(move |request, _| {
            if request.method == "GET" {
                let n = gets.fetch_add(1, Ordering::SeqCst);
                Reply::ok(format!("hot v{n}")).cache_control("max-age=600")
            } else {
                Reply::ok("changed")
            }
        });
        // Near copies live long: only invalidation can remove them in time.
        let config = cache_config(shards, &origin, &[])
            .cache("near_cache_size", "\"4MiB\"")
            .cache("near_cache_ttl", "\"60s\"");
        let proxy = Proxy::start(&config);
        let mut version = 0;
        for invalidate in ["PURGE", "POST", "PURGE"] {
            for response in get_on_many_connections(&proxy, "/hot", 16, 4) {
                assert_body(&response, format!("hot v{version}").as_bytes());
            }
            let headers: &[(&str, &str)] = if invalidate == "POST" {
                &[("Content-Length", "0")]
            } else {
                &[]
            };
            assert_status(
                &proxy.client().request_with(invalidate, "/hot", headers),
                200,
            );
            version += 1;
            for response in get_on_many_connections(&proxy, "/hot", 16, 2) {
                assert_body(&response, format!("hot v{version}").as_bytes());
            }
        }
        assert_eq!(method_requests_for(&origin, "GET", "/hot"), version + 1);
    });
}

// ---- route control ----

#[test]
fn route_with_cache_false_bypasses_the_cache() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            Reply::ok(format!("{} {n}", request.target)).cache_control("max-age=60")
        });
        let config = ProxyConfig::new(shards)
            .with_cache()
            .upstream("o", &[origin.addr()])
            .route_with(None, "/live/", "o", &[("cache", "false")])
            .route_with(None, "/", "o", &[]);
        let proxy = Proxy::start(&config);
        for n in 0..3 {
            let response = get(&proxy, "/live/feed");
            assert_body(&response, format!("/live/feed {n}").as_bytes());
            let status = CacheStatus::of(&response).unwrap_or_else(|| {
                panic!("a bypassed response still says so:\n{}", show(&response))
            });
            assert_eq!(
                (status.hit, status.fwd.as_deref()),
                (false, Some("bypass")),
                "expected `fwd=bypass`, got {:?}",
                status.raw
            );
        }
        // The other route still caches.
        assert_body(&get(&proxy, "/cached"), b"/cached 0");
        assert_hit(&get(&proxy, "/cached"));
    });
}

#[test]
fn without_cache_enabled_nothing_is_cached_and_no_cache_status_is_sent() {
    for_each_shard_count(|shards| {
        let origin =
            scripted_origin(|_, n| Reply::ok(format!("uncached {n}")).cache_control("max-age=60"));
        let config = ProxyConfig::for_origin(shards, origin.addr()).cache("capacity", "\"1MiB\"");
        let proxy = Proxy::start(&config);
        for n in 0..3 {
            let response = get(&proxy, "/plain");
            assert_body(&response, format!("uncached {n}").as_bytes());
            assert!(
                !response.has_header("cache-status"),
                "no Cache-Status without the cache:\n{}",
                show(&response)
            );
        }
        assert_eq!(origin.request_count(), 3);
    });
}

// ---- sizes and bodies ----

#[test]
fn objects_over_max_object_size_are_delivered_but_not_stored() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, _| {
            let reply = match request.target.as_str() {
                "/small" => Reply::ok(pattern(1, 10_000)),
                "/big" => Reply::ok(pattern(2, 100_000)),
                _ => Reply::ok(pattern(3, 100_000)).chunked(),
            };
            reply.cache_control("max-age=60")
        });
        let config = cache_config(shards, &origin, &[]).cache("max_object_size", "\"64KiB\"");
        let proxy = Proxy::start(&config);
        for (path, body, stored) in [
            ("/small", pattern(1, 10_000), true),
            ("/big", pattern(2, 100_000), false),
            ("/big-chunked", pattern(3, 100_000), false),
        ] {
            assert_body(&get(&proxy, path), &body);
            let again = get(&proxy, path);
            assert_body(&again, &body);
            assert_eq!(
                requests_for(&origin, path),
                if stored { 1 } else { 2 },
                "{path}: stored {stored} expected"
            );
        }
    });
}

#[test]
fn cached_bodies_are_served_byte_exact_whatever_their_framing_and_size() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, _| {
            let reply = match request.target.as_str() {
                "/chunked" => Reply::ok(pattern(11, 5_000)).chunked(),
                "/64k" => Reply::ok(pattern(12, 64 * 1024)),
                "/1m" => Reply::ok(pattern(13, 1024 * 1024)),
                _ => Reply::ok(pattern(14, 300_000)).chunked(),
            };
            reply.cache_control("max-age=60")
        });
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        for (path, body) in [
            ("/chunked", pattern(11, 5_000)),
            ("/64k", pattern(12, 64 * 1024)),
            ("/1m", pattern(13, 1024 * 1024)),
            ("/big-chunked", pattern(14, 300_000)),
        ] {
            assert_body(&get(&proxy, path), &body);
            let mut client = proxy.client();
            for _ in 0..3 {
                let hit = client.get(path);
                assert_body(&hit, &body);
                assert_hit(&hit);
            }
            assert_eq!(requests_for(&origin, path), 1, "{path}");
        }
    });
}

#[test]
fn capacity_bounds_what_the_cache_keeps() {
    const CAPACITY: u64 = 1024 * 1024;
    for_each_shard_count(|shards| {
        // Reproducible sizes from 20 KiB to 200 KiB, about 4 MiB in all.
        let sizes: Vec<u64> = (0..40u64)
            .map(|n| 20_000 + (n * 7919 + 13) * 104_729 % 180_000)
            .collect();
        let script_sizes = sizes.clone();
        let origin = scripted_origin(move |request, _| {
            let n: usize = request
                .target
                .trim_start_matches("/churn/")
                .parse()
                .unwrap();
            Reply::ok(pattern(n as u64, script_sizes[n])).cache_control("max-age=600")
        });
        let config = cache_config(shards, &origin, &[])
            .cache("capacity", "\"1MiB\"")
            .cache("max_object_size", "\"512KiB\"")
            .cache("near_cache_size", "0");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        for (n, size) in sizes.iter().enumerate() {
            assert_body(
                &client.get(&format!("/churn/{n}")),
                &pattern(n as u64, *size),
            );
        }
        // A hit in this second pass was resident after the first, and
        // everything resident at once fits the capacity.
        let mut hit_bytes = 0;
        for (n, size) in sizes.iter().enumerate() {
            let path = format!("/churn/{n}");
            assert_body(&client.get(&path), &pattern(n as u64, *size));
            if requests_for(&origin, &path) == 1 {
                hit_bytes += size;
            }
        }
        assert!(
            hit_bytes <= CAPACITY,
            "{hit_bytes} bytes of bodies were served from a {CAPACITY}-byte cache \
             after {} bytes went through it",
            sizes.iter().sum::<u64>()
        );
    });
}

#[test]
fn requests_racing_the_first_fill_are_still_served() {
    // Not a promise about hits: clients hammering a key while it is being
    // stored must all get the complete body.
    for_each_shard_count(|shards| {
        let body = pattern(21, 200_000);
        let served = body.clone();
        let origin =
            scripted_origin(move |_, _| Reply::ok(served.clone()).cache_control("max-age=60"));
        let proxy = Proxy::start(&cache_config(shards, &origin, &[]));
        let failed = AtomicBool::new(false);
        thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let mut client = proxy.client();
                    for _ in 0..5 {
                        if client.get("/racing").body != body {
                            failed.store(true, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(
            !failed.load(Ordering::SeqCst),
            "a racing client got a wrong body"
        );
        assert!(origin.request_count() >= 1);
    });
}

#[test]
fn http_dates_in_fixtures_are_well_formed() {
    let date = http_date(std::time::SystemTime::now());
    assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
}
