use crate::cache::control::{
    directives, parse_delta_seconds, Directive, MaxStale, RequestDirectives, ResponseDirectives,
    Targets, DELTA_MAX, MAX_TARGET_NAME,
};

use super::{get, resp};

fn names(v: &str) -> Vec<(String, Option<String>, bool)> {
    directives(v.as_bytes())
        .map(|d: Directive| {
            (
                String::from_utf8_lossy(d.name).into_owned(),
                d.value.map(|v| String::from_utf8_lossy(v).into_owned()),
                d.quoted,
            )
        })
        .collect()
}

fn n(name: &str, value: Option<&str>, quoted: bool) -> (String, Option<String>, bool) {
    (name.into(), value.map(Into::into), quoted)
}

#[test]
fn tokens_values_and_quotes() {
    assert_eq!(
        names(r#"max-age=60, no-cache="Set-Cookie, X-A",public ,  s-maxage = 5"#),
        vec![
            n("max-age", Some("60"), false),
            n("no-cache", Some("Set-Cookie, X-A"), true),
            n("public", None, false),
            n("s-maxage", Some("5"), false),
        ]
    );
    // Escaped quote and comma inside a quoted string do not split.
    assert_eq!(
        names(r#"private="a\"b,c", x"#),
        vec![n("private", Some(r#"a\"b,c"#), true), n("x", None, false)]
    );
}

#[test]
fn garbage_is_skipped_to_the_next_comma() {
    assert_eq!(
        names(",, =oops, max-age=1 junk, (bad), no-store,"),
        vec![n("no-store", None, false)]
    );
    // An unterminated quote ends parsing.
    assert_eq!(names(r#"a, b="open, c"#), vec![n("a", None, false)]);
    assert!(names("").is_empty());
}

#[test]
fn delta_seconds() {
    assert_eq!(parse_delta_seconds(b"0"), Ok(0));
    assert_eq!(parse_delta_seconds(b"3600"), Ok(3600));
    assert_eq!(parse_delta_seconds(b"99999999999999999999"), Ok(DELTA_MAX));
    assert!(parse_delta_seconds(b"").is_err());
    assert!(parse_delta_seconds(b"-1").is_err());
    assert!(parse_delta_seconds(b"1.5").is_err());
}

#[test]
fn response_directives_every_one() {
    let r = resp(
        200,
        &[
            "Cache-Control: max-age=60, s-maxage=30, no-store, no-cache, private",
            "cache-control: PUBLIC, must-revalidate, proxy-revalidate, must-understand, immutable",
            "Cache-Control: stale-while-revalidate=10, stale-if-error=\"20\"",
        ],
    );
    let d = ResponseDirectives::parse(&r.head.fields, &r.buf);
    assert_eq!(
        d,
        ResponseDirectives {
            max_age: Some(60),
            s_maxage: Some(30),
            no_store: true,
            no_cache: true,
            private: true,
            public: true,
            must_revalidate: true,
            proxy_revalidate: true,
            must_understand: true,
            immutable: true,
            stale_while_revalidate: Some(10),
            stale_if_error: Some(20),
            targeted: false,
        }
    );
    assert!(d.forbids_stale());
}

#[test]
fn response_directive_leniency() {
    // First occurrence wins; malformed max-age is 0; malformed swr ignored.
    let r = resp(
        200,
        &["Cache-Control: max-age=10, max-age=99, s-maxage=x, stale-while-revalidate=y"],
    );
    let d = ResponseDirectives::parse(&r.head.fields, &r.buf);
    assert_eq!(d.max_age, Some(10));
    assert_eq!(d.s_maxage, Some(0));
    assert_eq!(d.stale_while_revalidate, None);
    // Qualified no-cache / private count as unqualified.
    let r = resp(
        200,
        &["Cache-Control: no-cache=\"Set-Cookie\", private=\"X\""],
    );
    let d = ResponseDirectives::parse(&r.head.fields, &r.buf);
    assert!(d.no_cache && d.private);
    assert!(!d.forbids_stale());
    let r = resp(200, &["Cache-Control: s-maxage=5"]);
    assert!(ResponseDirectives::parse(&r.head.fields, &r.buf).forbids_stale());
}

#[test]
fn request_directives_every_one() {
    let q = get(&[
        "Cache-Control: max-age=5, max-stale, min-fresh=7",
        "Cache-Control: no-cache, no-store, only-if-cached, stale-if-error=9",
    ]);
    let d = RequestDirectives::parse(&q.head.fields, &q.buf);
    assert_eq!(
        d,
        RequestDirectives {
            max_age: Some(5),
            max_stale: Some(MaxStale::Any),
            min_fresh: Some(7),
            no_cache: true,
            no_store: true,
            only_if_cached: true,
            stale_if_error: Some(9),
        }
    );
    let q = get(&["Cache-Control: max-stale=30, max-age=bad"]);
    let d = RequestDirectives::parse(&q.head.fields, &q.buf);
    assert_eq!(d.max_stale, Some(MaxStale::Limit(30)));
    assert_eq!(d.max_age, Some(0));
    let q = get(&["Cache-Control: max-stale=bad"]);
    assert_eq!(
        RequestDirectives::parse(&q.head.fields, &q.buf).max_stale,
        None
    );
}

#[test]
fn pragma_only_without_cache_control() {
    let q = get(&["Pragma: no-cache"]);
    assert!(RequestDirectives::parse(&q.head.fields, &q.buf).no_cache);
    let q = get(&["Pragma: no-cache", "Cache-Control: max-age=10"]);
    assert!(!RequestDirectives::parse(&q.head.fields, &q.buf).no_cache);
}

#[test]
fn targeted_fields_replace_cache_control() {
    let own = Targets::new(Some("Shardproxy-Cache-Control"));
    let parse = |fields: &[&str], targets: &Targets| {
        let r = resp(200, fields);
        ResponseDirectives::parse_for(&r.head.fields, &r.buf, targets)
    };
    // CDN-Cache-Control wins over Cache-Control, whole (nothing merged).
    let d = parse(
        &[
            "Cache-Control: no-store, max-age=5",
            "CDN-Cache-Control: max-age=60",
        ],
        &Targets::default(),
    );
    assert_eq!((d.max_age, d.no_store, d.targeted), (Some(60), false, true));
    // The own name wins over both, when configured.
    let fields = [
        "Cache-Control: max-age=5",
        "CDN-Cache-Control: no-store",
        "shardproxy-cache-control: s-maxage=30",
    ];
    let d = parse(&fields, &own);
    assert_eq!((d.s_maxage, d.no_store), (Some(30), false));
    let d = parse(&fields, &Targets::default());
    assert!(d.no_store, "an unconfigured own name is just another field");
    // An empty targeted field does not count; Cache-Control applies.
    let d = parse(&["CDN-Cache-Control: ", "Cache-Control: max-age=7"], &own);
    assert_eq!((d.max_age, d.targeted), (Some(7), false));
    // A name longer than the limit is ignored rather than truncated.
    let long = "x".repeat(MAX_TARGET_NAME + 1);
    assert_eq!(Targets::new(Some(&long)), Targets::default());
}
