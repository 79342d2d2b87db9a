use crate::cache::control::RequestDirectives;
use crate::cache::entry::{CachedResponse, EntryError};
use crate::cache::policy::{
    decide, decide_for, evaluate_conditional, is_client_validator, storable, strong_eq, weak_eq,
    write_validators, NotStorable, Precondition, StoreOptions, Use,
};

use super::{entry, entry_at, get, req, resp, t0, Req, Resp, T0_STR};

fn store_check(q: &Req, r: &Resp) -> Result<(), NotStorable> {
    storable(&q.head, &q.buf, &r.head, &r.buf, &StoreOptions::default()).map(|_| ())
}

#[test]
fn storable_rules() {
    let ok = resp(200, &["Cache-Control: max-age=60"]);
    assert_eq!(store_check(&get(&[]), &ok), Ok(()));
    // The proxy fills a HEAD miss with a GET: the response judged is the GET's.
    assert_eq!(store_check(&req("HEAD /x", &[]), &ok), Ok(()));
    assert_eq!(
        store_check(&req("POST /x", &["Content-Length: 0"]), &ok),
        Err(NotStorable::Method)
    );
    for status in [100, 206, 304] {
        assert_eq!(
            store_check(&get(&[]), &resp(status, &["Cache-Control: max-age=60"])),
            Err(NotStorable::Status)
        );
    }
    assert_eq!(
        store_check(&get(&["Cache-Control: no-store"]), &ok),
        Err(NotStorable::NoStore)
    );
    assert_eq!(
        store_check(
            &get(&[]),
            &resp(200, &["Cache-Control: max-age=60, no-store"])
        ),
        Err(NotStorable::NoStore)
    );
    assert_eq!(
        store_check(
            &get(&[]),
            &resp(200, &["Cache-Control: max-age=60, private"])
        ),
        Err(NotStorable::Private)
    );
    assert_eq!(
        store_check(
            &get(&[]),
            &resp(200, &["Vary: *", "Cache-Control: max-age=60"])
        ),
        Err(NotStorable::VaryStar)
    );
    assert_eq!(
        store_check(
            &get(&[]),
            &resp(200, &["Set-Cookie: a=b", "Cache-Control: max-age=60"])
        ),
        Err(NotStorable::SetCookie)
    );
    let cookie = resp(200, &["Set-Cookie: a=b", "Cache-Control: max-age=60"]);
    let allow = StoreOptions {
        allow_set_cookie: true,
        ..StoreOptions::default()
    };
    assert!(storable(
        &get(&[]).head,
        &get(&[]).buf,
        &cookie.head,
        &cookie.buf,
        &allow
    )
    .is_ok());
}

#[test]
fn storable_authorization_and_must_understand() {
    let auth = get(&["Authorization: Basic eA=="]);
    assert_eq!(
        store_check(&auth, &resp(200, &["Cache-Control: max-age=60"])),
        Err(NotStorable::Authorization)
    );
    for allowing in ["public", "s-maxage=5", "must-revalidate, max-age=5"] {
        let r = resp(200, &[&format!("Cache-Control: {allowing}")]);
        assert_eq!(store_check(&auth, &r), Ok(()), "{allowing}");
    }
    // must-understand overrides no-store for an implemented status only.
    let r = resp(
        200,
        &["Cache-Control: max-age=60, no-store, must-understand"],
    );
    assert_eq!(store_check(&get(&[]), &r), Ok(()));
    let r = resp(
        299,
        &["Cache-Control: max-age=60, no-store, must-understand"],
    );
    assert_eq!(store_check(&get(&[]), &r), Err(NotStorable::MustUnderstand));
}

#[test]
fn storable_needs_freshness_information() {
    // 200 is heuristically cacheable; 302 and 500 need explicit freshness.
    assert_eq!(store_check(&get(&[]), &resp(200, &[])), Ok(()));
    assert_eq!(
        store_check(&get(&[]), &resp(302, &[])),
        Err(NotStorable::NoFreshness)
    );
    assert_eq!(
        store_check(&get(&[]), &resp(500, &[])),
        Err(NotStorable::NoFreshness)
    );
    assert_eq!(
        store_check(&get(&[]), &resp(302, &["Cache-Control: max-age=1"])),
        Ok(())
    );
    assert_eq!(store_check(&get(&[]), &resp(500, &["Expires: 0"])), Ok(()));
    assert_eq!(
        store_check(&get(&[]), &resp(307, &["Cache-Control: public"])),
        Ok(())
    );
}

/// Decision for a stored response with `cc` (dated t0, received at t0), a
/// request with `req_cc`, `after` seconds later.
fn decide_after(cc: &str, req_cc: &[&str], after: u64) -> Use {
    let q = get(req_cc);
    let r = resp(
        200,
        &[&format!("Date: {T0_STR}"), &format!("Cache-Control: {cc}")],
    );
    let e = entry(&get(&[]), &r);
    decide_for(&e, &q.head, &q.buf, t0() + after)
}

#[test]
fn fresh_then_stale() {
    assert_eq!(decide_after("max-age=60", &[], 0), Use::Fresh { age: 0 });
    assert_eq!(decide_after("max-age=60", &[], 59), Use::Fresh { age: 59 });
    assert_eq!(
        decide_after("max-age=60", &[], 60),
        Use::MustRevalidate {
            stale_if_error: false
        }
    );
}

#[test]
fn request_max_age_min_fresh_max_stale() {
    let cc = |v: &str| format!("Cache-Control: {v}");
    assert_eq!(
        decide_after("max-age=60", &[&cc("max-age=10")], 10),
        Use::Fresh { age: 10 }
    );
    assert_eq!(
        decide_after("max-age=60", &[&cc("max-age=10")], 11),
        Use::MustRevalidate {
            stale_if_error: true
        }
    );
    assert_eq!(
        decide_after("max-age=60", &[&cc("min-fresh=20")], 40),
        Use::Fresh { age: 40 }
    );
    assert!(matches!(
        decide_after("max-age=60", &[&cc("min-fresh=20")], 41),
        Use::MustRevalidate { .. }
    ));
    assert_eq!(
        decide_after("max-age=60", &[&cc("max-stale")], 1000),
        Use::Stale { age: 1000 }
    );
    assert_eq!(
        decide_after("max-age=60", &[&cc("max-stale=30")], 90),
        Use::Stale { age: 90 }
    );
    assert!(matches!(
        decide_after("max-age=60", &[&cc("max-stale=30")], 91),
        Use::MustRevalidate { .. }
    ));
    // max-stale cannot override must-revalidate, proxy-revalidate or s-maxage.
    for strict in [
        "max-age=60, must-revalidate",
        "max-age=60, proxy-revalidate",
        "s-maxage=60",
    ] {
        assert_eq!(
            decide_after(strict, &[&cc("max-stale")], 100),
            Use::MustRevalidate {
                stale_if_error: false
            },
            "{strict}"
        );
    }
}

#[test]
fn no_cache_on_either_side_forces_validation() {
    assert_eq!(
        decide_after("max-age=60, no-cache", &[], 0),
        Use::MustRevalidate {
            stale_if_error: false
        }
    );
    assert_eq!(
        decide_after("max-age=60", &["Cache-Control: no-cache"], 0),
        Use::MustRevalidate {
            stale_if_error: false
        }
    );
    assert_eq!(
        decide_after("max-age=60", &["Pragma: no-cache"], 0),
        Use::MustRevalidate {
            stale_if_error: false
        }
    );
    // no-store in the request does not stop serving what is already stored.
    assert_eq!(
        decide_after("max-age=60", &["Cache-Control: no-store"], 0),
        Use::Fresh { age: 0 }
    );
}

#[test]
fn only_if_cached() {
    let oic = "Cache-Control: only-if-cached";
    assert_eq!(decide_after("max-age=60", &[oic], 5), Use::Fresh { age: 5 });
    assert_eq!(decide_after("max-age=60", &[oic], 61), Use::GatewayTimeout);
    assert_eq!(
        decide_after(
            "max-age=60",
            &["Cache-Control: only-if-cached, max-stale"],
            61
        ),
        Use::Stale { age: 61 }
    );
}

#[test]
fn stale_while_revalidate_and_stale_if_error() {
    let cc = "max-age=60, stale-while-revalidate=30, stale-if-error=300";
    assert_eq!(decide_after(cc, &[], 59), Use::Fresh { age: 59 });
    assert_eq!(
        decide_after(cc, &[], 90),
        Use::StaleWhileRevalidate { age: 90 }
    );
    assert_eq!(
        decide_after(cc, &[], 91),
        Use::MustRevalidate {
            stale_if_error: true
        }
    );
    assert_eq!(
        decide_after(cc, &[], 360),
        Use::MustRevalidate {
            stale_if_error: true
        }
    );
    assert_eq!(
        decide_after(cc, &[], 361),
        Use::MustRevalidate {
            stale_if_error: false
        }
    );
    // The request's stale-if-error also permits it (RFC 5861 §4).
    assert_eq!(
        decide_after("max-age=60", &["Cache-Control: stale-if-error=100"], 150),
        Use::MustRevalidate {
            stale_if_error: true
        }
    );
    // must-revalidate forbids both windows.
    assert_eq!(
        decide_after(&format!("{cc}, must-revalidate"), &[], 70),
        Use::MustRevalidate {
            stale_if_error: false
        }
    );
}

#[test]
fn authorization_needs_a_sharing_directive() {
    let auth = "Authorization: Bearer x";
    assert_eq!(decide_after("max-age=60", &[auth], 0), Use::Forward);
    assert_eq!(
        decide_after("max-age=60, public", &[auth], 0),
        Use::Fresh { age: 0 }
    );
    assert_eq!(
        decide_after("s-maxage=60", &[auth], 0),
        Use::Fresh { age: 0 }
    );
    assert_eq!(
        decide_after("max-age=60, must-revalidate", &[auth], 0),
        Use::Fresh { age: 0 }
    );
}

#[test]
fn age_header_and_delays_count() {
    // Arrived with Age: 50 after a 2 s round trip: 52 s old on arrival.
    let r = resp(
        200,
        &[
            &format!("Date: {T0_STR}"),
            "Age: 50",
            "Cache-Control: max-age=60",
        ],
    );
    let e = entry_at(&get(&[]), &r, b"", t0() - 2, t0());
    assert_eq!(e.current_age(t0()), 52);
    assert_eq!(e.ttl(t0() + 7), 1);
    let q = get(&[]);
    assert_eq!(
        decide_for(&e, &q.head, &q.buf, t0() + 7),
        Use::Fresh { age: 59 }
    );
    assert!(matches!(
        decide_for(&e, &q.head, &q.buf, t0() + 8),
        Use::MustRevalidate { .. }
    ));
    assert_eq!(
        decide(e.meta(), 8, &RequestDirectives::default(), false),
        Use::Fresh { age: 8 }
    );
}

#[test]
fn entity_tag_comparison() {
    assert!(weak_eq(b"W/\"a\"", b"\"a\""));
    assert!(weak_eq(b"\"a\"", b"\"a\""));
    assert!(!weak_eq(b"\"a\"", b"\"b\""));
    assert!(strong_eq(b"\"a\"", b"\"a\""));
    assert!(!strong_eq(b"W/\"a\"", b"\"a\""));
    assert!(!strong_eq(b"W/\"a\"", b"W/\"a\""));
}

fn stored_with_validators() -> CachedResponse {
    let r = resp(
        200,
        &[
            &format!("Date: {T0_STR}"),
            "ETag: W/\"v1\"",
            "Last-Modified: Sat, 21 Nov 2026 19:00:00 GMT",
            "Cache-Control: max-age=60",
        ],
    );
    entry(&get(&[]), &r)
}

fn conditional(fields: &[&str], e: &CachedResponse) -> Precondition {
    let q = get(fields);
    evaluate_conditional(&q.head, &q.buf, e, t0() + 10)
}

#[test]
fn if_none_match() {
    let e = stored_with_validators();
    assert_eq!(
        conditional(&["If-None-Match: \"v1\""], &e),
        Precondition::NotModified
    );
    assert_eq!(
        conditional(&["If-None-Match: W/\"v1\""], &e),
        Precondition::NotModified
    );
    assert_eq!(
        conditional(&["If-None-Match: \"x\", \"v1\""], &e),
        Precondition::NotModified
    );
    assert_eq!(
        conditional(&["If-None-Match: \"x\"", "If-None-Match: W/\"v1\""], &e),
        Precondition::NotModified
    );
    assert_eq!(
        conditional(&["If-None-Match: *"], &e),
        Precondition::NotModified
    );
    assert_eq!(
        conditional(&["If-None-Match: \"x\""], &e),
        Precondition::Serve
    );
    // If-None-Match wins over a matching If-Modified-Since.
    assert_eq!(
        conditional(
            &[
                "If-None-Match: \"x\"",
                &format!("If-Modified-Since: {T0_STR}")
            ],
            &e
        ),
        Precondition::Serve
    );
    assert_eq!(conditional(&[], &e), Precondition::Serve);
    assert_eq!(
        conditional(&["If-Match: \"v1\""], &e),
        Precondition::Forward
    );
    assert_eq!(
        conditional(&["If-Unmodified-Since: Sat, 21 Nov 2026 19:00:00 GMT"], &e),
        Precondition::Forward
    );
    // HEAD too; preconditions ignored on a non-2xx stored response.
    let q = req("HEAD /x", &["If-None-Match: *"]);
    assert_eq!(
        evaluate_conditional(&q.head, &q.buf, &e, t0()),
        Precondition::NotModified
    );
    let nf = entry(
        &get(&[]),
        &resp(404, &["ETag: \"v1\"", "Cache-Control: max-age=60"]),
    );
    assert_eq!(
        conditional(&["If-None-Match: \"v1\""], &nf),
        Precondition::Serve
    );
}

#[test]
fn if_modified_since() {
    let e = stored_with_validators();
    let ims = |d: &str| conditional(&[&format!("If-Modified-Since: {d}")], &e);
    assert_eq!(
        ims("Sat, 21 Nov 2026 19:00:00 GMT"),
        Precondition::NotModified
    );
    assert_eq!(
        ims("Sat, 21 Nov 2026 20:00:00 GMT"),
        Precondition::NotModified
    );
    assert_eq!(ims("Sat, 21 Nov 2026 18:59:59 GMT"), Precondition::Serve);
    assert_eq!(ims("not a date"), Precondition::Serve);
    // In the future (after now = t0 + 10): ignored.
    assert_eq!(ims("Mon, 23 Nov 2026 05:00:00 GMT"), Precondition::Serve);
    // Without Last-Modified the stored Date is the comparison point.
    let dated = entry(
        &get(&[]),
        &resp(
            200,
            &[&format!("Date: {T0_STR}"), "Cache-Control: max-age=5"],
        ),
    );
    let q = get(&[&format!("If-Modified-Since: {T0_STR}")]);
    assert_eq!(
        evaluate_conditional(&q.head, &q.buf, &dated, t0()),
        Precondition::NotModified
    );
    let q = get(&["If-Modified-Since: Sun, 22 Nov 2026 04:59:59 GMT"]);
    assert_eq!(
        evaluate_conditional(&q.head, &q.buf, &dated, t0()),
        Precondition::Serve
    );
}

#[test]
fn revalidation_validators() {
    let e = stored_with_validators();
    let mut out = Vec::new();
    assert!(write_validators(&mut out, &e));
    assert_eq!(
        out,
        b"If-None-Match: W/\"v1\"\r\nIf-Modified-Since: Sat, 21 Nov 2026 19:00:00 GMT\r\n"
    );
    let plain = entry(&get(&[]), &resp(200, &["Cache-Control: max-age=5"]));
    out.clear();
    assert!(!write_validators(&mut out, &plain));
    assert!(out.is_empty());
    assert!(is_client_validator(b"If-None-Match"));
    assert!(is_client_validator(b"if-range"));
    assert!(!is_client_validator(b"If"));
}

#[test]
fn freshen_on_304() {
    let e = stored_with_validators();
    assert!(e.ttl(t0() + 100) < 0);
    let later = t0() + 100;
    let nm = resp(
        304,
        &[
            "Date: Sun, 22 Nov 2026 05:01:40 GMT",
            "ETag: W/\"v1\"",
            "Cache-Control: max-age=120",
            "X-New: 1",
            "Content-Length: 999",
            "Connection: close",
        ],
    );
    let fresh = e
        .freshen(&nm.head, &nm.buf, later, later, &Default::default())
        .unwrap();
    assert_eq!(fresh.current_age(later), 0);
    assert_eq!(fresh.ttl(later), 120);
    assert!(std::sync::Arc::ptr_eq(fresh.body(), e.body()));
    let q = get(&[]);
    assert_eq!(
        decide_for(&fresh, &q.head, &q.buf, later + 5),
        Use::Fresh { age: 5 }
    );
    let head = String::from_utf8(fresh.head().to_vec()).unwrap();
    assert!(head.contains("Cache-Control: max-age=120\r\n"), "{head}");
    assert!(!head.contains("max-age=60"), "{head}");
    assert!(head.contains("X-New: 1\r\n"), "{head}");
    assert!(head.contains("Content-Length: 4\r\n"), "{head}");
    assert!(
        !head.contains("999") && !head.contains("Connection"),
        "{head}"
    );
    // A 304 naming another representation does not freshen.
    let other = resp(304, &["ETag: \"v2\""]);
    assert_eq!(
        e.freshen(&other.head, &other.buf, later, later, &Default::default())
            .unwrap_err(),
        EntryError::ValidatorMismatch
    );
}

#[test]
fn unsafe_methods_invalidate_on_success() {
    use crate::cache::policy::invalidates;
    use crate::http::head::Method;
    for m in [
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Other,
    ] {
        assert!(invalidates(m, 200) && invalidates(m, 303), "{m:?}");
        assert!(!invalidates(m, 404) && !invalidates(m, 500), "{m:?}");
    }
    assert!(!invalidates(Method::Get, 200));
    assert!(!invalidates(Method::Head, 200));
}
