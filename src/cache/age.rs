//! Time arithmetic of RFC 9111 §4.2: HTTP dates, the freshness lifetime of a
//! response (§4.2.1, heuristics §4.2.2) and its current age (§4.2.3).
//!
//! Pure functions over parsed heads and Unix-second times; touches nothing
//! else. Dates are parsed by the `httpdate` crate, which handles all three
//! formats RFC 9110 §5.6.7 requires recipients to accept (IMF-fixdate,
//! RFC 850, asctime) and is small, dependency-free and well kept.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::control::{ResponseDirectives, Targets};
use super::{first_field, Secs};
use crate::http::head::ResponseHead;

/// Parses an HTTP date; `None` when malformed or before 1970.
pub fn parse_http_date(value: &[u8]) -> Option<Secs> {
    let s = std::str::from_utf8(value).ok()?;
    let t = httpdate::parse_http_date(s).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Appends `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn write_http_date(out: &mut Vec<u8>, t: Secs) {
    let time = UNIX_EPOCH + Duration::from_secs(t);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", httpdate::HttpDate::from(time));
}

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn now() -> Secs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Status codes that are heuristically cacheable (RFC 9110 §15.1), minus 206:
/// this cache stores only complete representations.
pub fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// How freshness is computed where the response gives no explicit lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessOptions {
    /// Share of (Date − Last-Modified) used as the heuristic lifetime, in percent.
    pub heuristic_percent: u8,
    /// Upper bound of a heuristic lifetime.
    pub heuristic_cap: Secs,
    /// Lifetime given to responses without explicit freshness (overrides the
    /// Last-Modified heuristic when set). Applies to heuristically cacheable
    /// statuses only, as the heuristic does.
    pub default_ttl: Option<Secs>,
    /// Targeted cache-control fields obeyed before Cache-Control (RFC 9213).
    pub targets: Targets,
}

impl Default for FreshnessOptions {
    fn default() -> Self {
        FreshnessOptions {
            heuristic_percent: 10,
            heuristic_cap: 86_400,
            default_ttl: None,
            targets: Targets::default(),
        }
    }
}

/// Where a freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// s-maxage, max-age or Expires − Date.
    Explicit(Secs),
    /// A fraction of the time since Last-Modified (§4.2.2).
    Heuristic(Secs),
    /// The configured default TTL.
    Default(Secs),
    /// No way to tell: the response is stale at once (still storable if
    /// something else allows it, and usable after validation).
    Unknown,
}

impl Lifetime {
    pub fn secs(self) -> Secs {
        match self {
            Lifetime::Explicit(s) | Lifetime::Heuristic(s) | Lifetime::Default(s) => s,
            Lifetime::Unknown => 0,
        }
    }

    pub fn is_explicit(self) -> bool {
        matches!(self, Lifetime::Explicit(_))
    }
}

/// The time fields of a response head that age and freshness depend on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResponseTimes {
    /// Date, if present and valid.
    pub date: Option<Secs>,
    /// Age, if present and valid (delta-seconds; first value of a list).
    pub age: Option<Secs>,
    /// Expires: `None` absent, `Some(None)` present but invalid (= already
    /// expired, §5.3), `Some(Some(t))` valid.
    pub expires: Option<Option<Secs>>,
    pub last_modified: Option<Secs>,
}

impl ResponseTimes {
    pub fn parse(head: &ResponseHead, buf: &[u8]) -> ResponseTimes {
        let fields = &head.fields;
        let date = first_field(fields, buf, b"date").and_then(parse_http_date);
        let age = first_field(fields, buf, b"age").and_then(|v| {
            let first = v.split(|&b| b == b',').next().unwrap_or(v);
            super::control::parse_delta_seconds(crate::http::trim_ows(first))
                .ok()
                .map(Secs::from)
        });
        let expires = first_field(fields, buf, b"expires").map(parse_http_date);
        let last_modified = first_field(fields, buf, b"last-modified").and_then(parse_http_date);
        ResponseTimes {
            date,
            age,
            expires,
            last_modified,
        }
    }
}

/// The freshness lifetime a shared cache gives a response (RFC 9111 §4.2.1):
/// s-maxage, then max-age, then Expires − Date, then the default TTL or the
/// Last-Modified heuristic. `response_time` stands in for a missing Date.
pub fn freshness_lifetime(
    status: u16,
    dirs: &ResponseDirectives,
    times: &ResponseTimes,
    response_time: Secs,
    opts: &FreshnessOptions,
) -> Lifetime {
    if let Some(s) = dirs.s_maxage {
        return Lifetime::Explicit(s.into());
    }
    if let Some(s) = dirs.max_age {
        return Lifetime::Explicit(s.into());
    }
    let date = times.date.unwrap_or(response_time);
    // A targeted field replaces Expires as well as Cache-Control (RFC 9213 §2.1).
    let expires = if dirs.targeted { None } else { times.expires };
    match expires {
        Some(Some(expires)) => return Lifetime::Explicit(expires.saturating_sub(date)),
        Some(None) => return Lifetime::Explicit(0),
        None => {}
    }
    // §4.2.2: a heuristic only for heuristically cacheable statuses or
    // responses marked explicitly cacheable (public).
    if !(heuristically_cacheable(status) || dirs.public) {
        return Lifetime::Unknown;
    }
    if let Some(ttl) = opts.default_ttl {
        return Lifetime::Default(ttl);
    }
    match times.last_modified {
        Some(lm) => {
            let since = date.saturating_sub(lm);
            let h = since.saturating_mul(u64::from(opts.heuristic_percent)) / 100;
            Lifetime::Heuristic(h.min(opts.heuristic_cap))
        }
        None => Lifetime::Unknown,
    }
}

/// The age a response had when it arrived (RFC 9111 §4.2.3):
/// `max(apparent_age, age_value + response_delay)`.
pub fn corrected_initial_age(
    request_time: Secs,
    response_time: Secs,
    date: Option<Secs>,
    age_value: Option<Secs>,
) -> Secs {
    // Without Date the apparent age is 0: the response was dated on receipt.
    let apparent_age = date.map_or(0, |d| response_time.saturating_sub(d));
    let response_delay = response_time.saturating_sub(request_time);
    let corrected_age_value = age_value.unwrap_or(0).saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// current_age = corrected_initial_age + resident_time (RFC 9111 §4.2.3).
pub fn current_age(corrected_initial_age: Secs, response_time: Secs, now: Secs) -> Secs {
    corrected_initial_age.saturating_add(now.saturating_sub(response_time))
}
