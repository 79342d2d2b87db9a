use crate::cache::age::{
    corrected_initial_age, current_age, freshness_lifetime, parse_http_date, write_http_date,
    FreshnessOptions, Lifetime, ResponseTimes,
};
use crate::cache::control::ResponseDirectives;

use super::{resp, t, t0, T0_STR};

fn lifetime_of(status: u16, fields: &[&str], opts: &FreshnessOptions) -> Lifetime {
    let r = resp(status, fields);
    let d = ResponseDirectives::parse(&r.head.fields, &r.buf);
    let times = ResponseTimes::parse(&r.head, &r.buf);
    freshness_lifetime(status, &d, &times, t0(), opts)
}

fn lifetime(status: u16, fields: &[&str]) -> Lifetime {
    lifetime_of(status, fields, &FreshnessOptions::default())
}

#[test]
fn dates_in_all_three_formats() {
    let want = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(
        parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(want)
    );
    assert_eq!(
        parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"),
        Some(want)
    );
    assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(want));
    assert_eq!(parse_http_date(b"yesterday"), None);
    assert_eq!(parse_http_date(b"0"), None);
    let mut out = Vec::new();
    write_http_date(&mut out, t0());
    assert_eq!(out, T0_STR.as_bytes());
}

#[test]
fn precedence_s_maxage_max_age_expires() {
    let date = format!("Date: {T0_STR}");
    let expires = "Expires: Sun, 22 Nov 2026 06:00:00 GMT"; // Date + 3600
    let lm = "Last-Modified: Sun, 01 Nov 2026 05:00:00 GMT";
    assert_eq!(
        lifetime(
            200,
            &[&date, expires, lm, "Cache-Control: max-age=60, s-maxage=30"]
        ),
        Lifetime::Explicit(30)
    );
    assert_eq!(
        lifetime(200, &[&date, expires, lm, "Cache-Control: max-age=60"]),
        Lifetime::Explicit(60)
    );
    assert_eq!(
        lifetime(200, &[&date, expires, lm]),
        Lifetime::Explicit(3600)
    );
    // Expires before Date: 0; invalid Expires: already expired.
    assert_eq!(
        lifetime(200, &[&date, "Expires: Sun, 22 Nov 2026 04:00:00 GMT"]),
        Lifetime::Explicit(0)
    );
    assert_eq!(lifetime(200, &[&date, "Expires: 0"]), Lifetime::Explicit(0));
    // Without Date, the response time (t0) stands in.
    assert_eq!(lifetime(200, &[expires]), Lifetime::Explicit(3600));
}

#[test]
fn heuristic_freshness() {
    let date = format!("Date: {T0_STR}");
    // 21 days since Last-Modified → 10% = 2.1 days, capped at 1 day.
    assert_eq!(
        lifetime(
            200,
            &[&date, "Last-Modified: Sun, 01 Nov 2026 05:00:00 GMT"]
        ),
        Lifetime::Heuristic(86_400)
    );
    // 10 hours → 1 hour.
    assert_eq!(
        lifetime(
            404,
            &[&date, "Last-Modified: Sat, 21 Nov 2026 19:00:00 GMT"]
        ),
        Lifetime::Heuristic(3600)
    );
    // Last-Modified after Date → 0.
    assert_eq!(
        lifetime(
            200,
            &[&date, "Last-Modified: Mon, 23 Nov 2026 05:00:00 GMT"]
        ),
        Lifetime::Heuristic(0)
    );
    // Not heuristically cacheable status: nothing, unless public.
    let lm = "Last-Modified: Sat, 21 Nov 2026 19:00:00 GMT";
    assert_eq!(lifetime(302, &[&date, lm]), Lifetime::Unknown);
    assert_eq!(
        lifetime(302, &[&date, lm, "Cache-Control: public"]),
        Lifetime::Heuristic(3600)
    );
    assert_eq!(lifetime(200, &[&date]), Lifetime::Unknown);
}

#[test]
fn default_ttl_overrides_heuristic_not_explicit() {
    let opts = FreshnessOptions {
        default_ttl: Some(120),
        ..FreshnessOptions::default()
    };
    let date = format!("Date: {T0_STR}");
    let lm = "Last-Modified: Sat, 21 Nov 2026 19:00:00 GMT";
    assert_eq!(
        lifetime_of(200, &[&date, lm], &opts),
        Lifetime::Default(120)
    );
    assert_eq!(lifetime_of(200, &[&date], &opts), Lifetime::Default(120));
    assert_eq!(
        lifetime_of(200, &[&date, "Cache-Control: max-age=5"], &opts),
        Lifetime::Explicit(5)
    );
    assert_eq!(lifetime_of(500, &[&date], &opts), Lifetime::Unknown);
}

#[test]
fn age_per_rfc_9111_section_4_2_3() {
    let t0 = t0();
    // Clean: dated when received, no Age, no delay.
    assert_eq!(corrected_initial_age(t0, t0, Some(t0), None), 0);
    // Apparent age: Date 10 s before receipt.
    assert_eq!(corrected_initial_age(t0 - 2, t0, Some(t0 - 10), None), 10);
    // Age + response delay beats apparent age: 30 + 2.
    assert_eq!(
        corrected_initial_age(t0 - 2, t0, Some(t0 - 10), Some(30)),
        32
    );
    // Date in the future (origin clock ahead): apparent age 0, delay counts.
    assert_eq!(corrected_initial_age(t0 - 3, t0, Some(t0 + 100), None), 3);
    // No Date: apparent age 0.
    assert_eq!(corrected_initial_age(t0, t0, None, Some(7)), 7);
    // Resident time adds up.
    assert_eq!(current_age(32, t0, t0 + 100), 132);
    assert_eq!(current_age(32, t0, t0 - 5), 32);
}

#[test]
fn response_times_parse() {
    let r = resp(
        200,
        &[
            "Date: Sun, 22 Nov 2026 05:00:00 GMT",
            "Age: 12, 13",
            "Expires: never",
            "Last-Modified: Sat, 21 Nov 2026 19:00:00 GMT",
        ],
    );
    let times = ResponseTimes::parse(&r.head, &r.buf);
    assert_eq!(times.date, Some(t0()));
    assert_eq!(times.age, Some(12));
    assert_eq!(times.expires, Some(None));
    assert_eq!(
        times.last_modified,
        Some(t("Sat, 21 Nov 2026 19:00:00 GMT"))
    );
    let r = resp(200, &["Age: -1"]);
    assert_eq!(ResponseTimes::parse(&r.head, &r.buf).age, None);
}
