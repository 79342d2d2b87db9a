//! The response cache for forward requests (`[forward_proxy] cache`): a
//! second GET (or a HEAD) for an absolute URI is a hit on any shard, two
//! destinations' `/x` never collide, nor a reverse route's key with a
//! forward one, and what one user's credentials fetched is not handed to
//! another (RFC 9111 §3.5, `private`), while admission still runs before
//! every hit; misses, revalidations and background refreshes leave in
//! origin-form (or through a parent), and unsafe requests invalidate their
//! destination's entries.
//! Off by default. "Served from the cache" is checked as "the origin saw no
//! new request" plus the proxy's `Cache-Status`.

use crate::forward_proxy::{curl, forward_config, hash_password, proxy_url};
use crate::support::cache::{requests_for, scripted_origin, CacheStatus, Reply};
use crate::support::*;

/// A forward proxy to loopback origins with the forward cache on.
fn cached_forward(shards: usize) -> ProxyConfig {
    forward_config(shards)
        .with_cache()
        .set("forward_proxy", "cache", "true")
}

/// Sends `GET <url>` (plus `fields`, each a full line without CRLF) through
/// `proxy` on a new connection, so that with 2 shards requests land on
/// either shard and a hit must come from the key's owner.
fn get_via(proxy: &Proxy, method: &str, url: &str, fields: &[&str]) -> Response {
    let host = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let mut head = format!("{method} {url} HTTP/1.1\r\nHost: {host}\r\n");
    for field in fields {
        head.push_str(field);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut client = proxy.client();
    client.send(head.as_bytes());
    client.read_response(method)
}

fn is_hit(response: &Response) -> bool {
    CacheStatus::of(response).is_some_and(|s| s.hit)
}

/// An origin answering `<name> <target> #<n>` (n: the how-many-th request
/// for the target), cacheable for a minute.
fn named_origin(name: &'static str) -> Origin {
    scripted_origin(move |request, n| {
        Reply::ok(format!("{name} {} #{n}", request.target)).cache_control("max-age=60")
    })
}

#[test]
fn forward_gets_are_cached_per_destination_on_any_shard() {
    for_each_shard_count(|shards| {
        let (a, b) = (named_origin("a"), named_origin("b"));
        let proxy = Proxy::start(&cached_forward(shards));
        let url_a = format!("http://{}/x", a.addr());
        let url_b = format!("http://{}/x", b.addr());
        let first = get_via(&proxy, "GET", &url_a, &["Proxy-Authorization: Basic eDp5"]);
        assert_status(&first, 200);
        assert_eq!(first.body_text(), "a /x #0");
        let status = CacheStatus::of(&first).expect("a Cache-Status on the miss");
        assert!(!status.hit && status.stored, "{}", status.raw);
        // The cache's fetch went out in origin-form, Host from the target, no Proxy-*.
        let seen = &a.requests()[0];
        assert_eq!(seen.target, "/x");
        assert_eq!(seen.header("host"), Some(a.addr().to_string().as_str()));
        assert_eq!(seen.header("proxy-authorization"), None);
        // Several connections: with 2 shards some land on the shard that does not own the key.
        for _ in 0..4 {
            let again = get_via(&proxy, "GET", &url_a, &[]);
            assert!(is_hit(&again), "{:?}", again.headers);
            assert_eq!(again.body_text(), "a /x #0");
        }
        let head = get_via(&proxy, "HEAD", &url_a, &[]);
        assert!(is_hit(&head), "a HEAD is answered by the stored GET");
        assert!(head.body.is_empty());
        // Another destination's /x is its own key.
        let other = get_via(&proxy, "GET", &url_b, &[]);
        assert_eq!(other.body_text(), "b /x #0");
        assert!(!is_hit(&other));
        assert!(is_hit(&get_via(&proxy, "GET", &url_b, &[])));
        // A real client: curl -x gets the stored copy too.
        if let Some((code, body)) = curl(&["-x", &proxy_url(&proxy), &url_a]) {
            assert_eq!((code, body.as_str()), (200, "a /x #0"));
        }
        assert_eq!(requests_for(&a, "/x"), 1, "{}", proxy.output());
        assert_eq!(requests_for(&b, "/x"), 1);
    });
}

#[test]
fn the_forward_cache_is_off_unless_asked_for() {
    let origin = named_origin("o");
    let proxy = Proxy::start(&forward_config(1).with_cache());
    let url = format!("http://{}/x", origin.addr());
    for n in 0..2 {
        let response = get_via(&proxy, "GET", &url, &[]);
        assert_eq!(response.body_text(), format!("o /x #{n}"));
    }
    assert_eq!(requests_for(&origin, "/x"), 2);
}

#[test]
fn reverse_and_forward_keys_never_meet() {
    for_each_shard_count(|shards| {
        let backend = named_origin("backend");
        let site = named_origin("site");
        // A catch-all route: a reverse client may send any Host it likes.
        let config = cached_forward(shards)
            .upstream("o", &[backend.addr()])
            .route(None, "/", "o");
        let proxy = Proxy::start(&config);
        let site_host = site.addr().to_string();
        let mut client = proxy.client();
        let forged = format!("GET /x HTTP/1.1\r\nHost: {site_host}\r\n\r\n");
        client.send(forged.as_bytes());
        assert_eq!(client.read_response("GET").body_text(), "backend /x #0");
        let url = format!("http://{site_host}/x");
        let forward = get_via(&proxy, "GET", &url, &[]);
        assert_eq!(
            forward.body_text(),
            "site /x #0",
            "the reverse entry leaked"
        );
        assert!(!is_hit(&forward));
        // And the forward entry does not answer the reverse client.
        client.send(forged.as_bytes());
        let reverse = client.read_response("GET");
        assert_eq!(reverse.body_text(), "backend /x #0");
        assert!(is_hit(&reverse));
    });
}

/// An origin that tells who asked: `<target> for <Authorization> #<n>`,
/// with the Cache-Control the path names (`/private`, `/public`, else
/// `max-age=60` alone).
fn telling_origin() -> Origin {
    scripted_origin(|request, n| {
        let who = request.header("authorization").unwrap_or("nobody");
        let control = match request.target.as_str() {
            "/private" => "private, max-age=60",
            "/public" => "public, max-age=60",
            _ => "max-age=60",
        };
        Reply::ok(format!("{} for {who} #{n}", request.target)).cache_control(control)
    })
}

#[test]
fn one_users_private_responses_are_not_served_to_another() {
    let hash = hash_password("pw");
    for_each_shard_count(|shards| {
        let origin = telling_origin();
        let users = format!(
            "[[forward_proxy.user]]\nname = \"ann\"\npassword_hash = \"{hash}\"\n\
             [[forward_proxy.user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n"
        );
        let proxy = Proxy::start(&cached_forward(shards).table(&users));
        // ann:pw and bob:pw.
        let ann = "Proxy-Authorization: Basic YW5uOnB3";
        let bob = "Proxy-Authorization: Basic Ym9iOnB3";
        let url = |path: &str| format!("http://{}{path}", origin.addr());
        // Fetched with the origin's Authorization and not marked shareable: never stored.
        let mine = get_via(
            &proxy,
            "GET",
            &url("/mine"),
            &[ann, "Authorization: Bearer ann"],
        );
        assert_eq!(mine.body_text(), "/mine for Bearer ann #0");
        let theirs = get_via(
            &proxy,
            "GET",
            &url("/mine"),
            &[bob, "Authorization: Bearer bob"],
        );
        assert_eq!(theirs.body_text(), "/mine for Bearer bob #1");
        let bare = get_via(&proxy, "GET", &url("/mine"), &[bob]);
        assert_eq!(bare.body_text(), "/mine for nobody #2");
        // `private`: never stored by this shared cache.
        let private = get_via(&proxy, "GET", &url("/private"), &[ann]);
        assert_eq!(private.body_text(), "/private for nobody #0");
        let again = get_via(&proxy, "GET", &url("/private"), &[bob]);
        assert_eq!(again.body_text(), "/private for nobody #1");
        assert!(!is_hit(&again));
        // `public` lets a response to an authorized request be shared (RFC 9111 §3.5).
        let public = get_via(
            &proxy,
            "GET",
            &url("/public"),
            &[ann, "Authorization: Bearer ann"],
        );
        assert_eq!(public.body_text(), "/public for Bearer ann #0");
        let shared = get_via(&proxy, "GET", &url("/public"), &[bob]);
        assert!(is_hit(&shared));
        // Proxy users share what the origin gave everyone, but only once admitted.
        assert_eq!(
            get_via(&proxy, "GET", &url("/open"), &[ann]).body_text(),
            "/open for nobody #0"
        );
        assert!(is_hit(&get_via(&proxy, "GET", &url("/open"), &[bob])));
        assert_error_response(&get_via(&proxy, "GET", &url("/open"), &[]), 407);
        let wrong = "Proxy-Authorization: Basic Ym9iOnh4";
        assert_error_response(&get_via(&proxy, "GET", &url("/open"), &[wrong]), 407);
        assert_eq!(requests_for(&origin, "/open"), 1);
        assert_eq!(requests_for(&origin, "/public"), 1);
    });
}

#[test]
fn misses_go_through_the_parent_with_its_credentials() {
    let hash = hash_password("exit");
    let origin = named_origin("o");
    let parent = Proxy::start(&forward_config(1).table(&format!(
        "[[forward_proxy.user]]\nname = \"peer\"\npassword_hash = \"{hash}\"\n"
    )));
    // The child keeps the SSRF defaults: a loopback origin is reachable only through the parent.
    let child = Proxy::start(
        &ProxyConfig::new(2)
            .set("forward_proxy", "enabled", "true")
            .set("forward_proxy", "cache", "true")
            .with_cache()
            .table(&format!(
                "[[forward_proxy.parent]]\naddr = \"{}\"\nusername = \"peer\"\npassword = \"exit\"\n",
                parent.addr()
            )),
    );
    let url = format!("http://localhost:{}/p", origin.addr().port());
    let first = get_via(&child, "GET", &url, &[]);
    assert_status(&first, 200);
    assert_eq!(first.body_text(), "o /p #0", "{}", child.output());
    for _ in 0..3 {
        let again = get_via(&child, "GET", &url, &[]);
        assert!(is_hit(&again), "{:?}", again.headers);
    }
    assert_eq!(requests_for(&origin, "/p"), 1);
}

#[test]
fn stored_forward_responses_are_revalidated_in_origin_form() {
    for_each_shard_count(|shards| {
        let origin = scripted_origin(|request, n| {
            if request.header("if-none-match") == Some("\"v1\"") {
                Reply::status(304)
                    .header("ETag", "\"v1\"")
                    .cache_control("no-cache")
            } else {
                Reply::ok(format!("body {n}"))
                    .cache_control("no-cache")
                    .header("ETag", "\"v1\"")
            }
        });
        let proxy = Proxy::start(&cached_forward(shards));
        let url = format!("http://{}/r", origin.addr());
        assert_eq!(get_via(&proxy, "GET", &url, &[]).body_text(), "body 0");
        for round in 1..=2 {
            let response = get_via(&proxy, "GET", &url, &[]);
            assert_eq!(
                response.body_text(),
                "body 0",
                "answered by the freshened entry"
            );
            let requests = origin.requests();
            let sent = &requests[round];
            assert_eq!(
                sent.target, "/r",
                "the revalidation goes out in origin-form"
            );
            assert_eq!(sent.header("if-none-match"), Some("\"v1\""));
            assert_eq!(
                sent.header("host"),
                Some(origin.addr().to_string().as_str())
            );
        }
    });
}

#[test]
fn unsafe_forward_requests_invalidate_their_destinations_entries() {
    for_each_shard_count(|shards| {
        let (a, b) = (
            scripted_origin(|request, n| match request.method.as_str() {
                "POST" => Reply::ok("posted").header("Location", "/y"),
                _ => Reply::ok(format!("a {} #{n}", request.target)).cache_control("max-age=60"),
            }),
            named_origin("b"),
        );
        let proxy = Proxy::start(&cached_forward(shards));
        let url = |origin: &Origin, path: &str| format!("http://{}{path}", origin.addr());
        for (origin, path) in [(&a, "/x"), (&a, "/y"), (&b, "/x")] {
            get_via(&proxy, "GET", &url(origin, path), &[]);
            assert!(is_hit(&get_via(&proxy, "GET", &url(origin, path), &[])));
        }
        let post = get_via(&proxy, "POST", &url(&a, "/x"), &["Content-Length: 0"]);
        assert_eq!(post.body_text(), "posted");
        // The target and its Location are gone (the POST was /x's request #1);
        // the other destination's /x is not.
        assert_eq!(
            get_via(&proxy, "GET", &url(&a, "/x"), &[]).body_text(),
            "a /x #2"
        );
        assert_eq!(
            get_via(&proxy, "GET", &url(&a, "/y"), &[]).body_text(),
            "a /y #1"
        );
        assert!(is_hit(&get_via(&proxy, "GET", &url(&b, "/x"), &[])));
    });
}

#[test]
fn stale_while_revalidate_refreshes_a_forward_entry_in_the_background() {
    let gate = Gate::new();
    let held = std::sync::Arc::clone(&gate);
    let origin = scripted_origin(move |_, n| match n {
        0 => Reply::ok("v0").cache_control("max-age=1, stale-while-revalidate=30"),
        _ => {
            held.wait();
            Reply::ok(format!("v{n}")).cache_control("max-age=60")
        }
    });
    let proxy = Proxy::start(&cached_forward(2));
    let url = format!("http://{}/swr", origin.addr());
    assert_eq!(get_via(&proxy, "GET", &url, &[]).body_text(), "v0");
    // HTTP ages are whole seconds: past max-age=1 whatever the phase.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // The refresh is held at the origin: the stale copy must answer meanwhile.
    for _ in 0..3 {
        let stale = get_via(&proxy, "GET", &url, &[]);
        assert_eq!(stale.body_text(), "v0");
        assert!(is_hit(&stale), "{:?}", stale.headers);
    }
    gate.open();
    origin.wait_for_requests(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = get_via(&proxy, "GET", &url, &[]);
        if response.body_text() == "v1" {
            assert!(is_hit(&response));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never landed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let refresh = &origin.requests()[1];
    assert_eq!(
        refresh.target, "/swr",
        "the refresh goes out in origin-form"
    );
    assert_eq!(origin.request_count(), 2, "one background refresh");
}
