//! The resilience tables of an `[[upstream]]`: `health_check` (active probes),
//! `outlier` (passive ejection), `retry` (attempts, backoff, budget), and the
//! failure names their `on` lists share. Raw tables in, typed policies out;
//! every error names the key and its line.

use std::{ops::Range, time::Duration};

use toml::Spanned;

use super::{
    raw::{RawHealthCheck, RawOutlier, RawRetry, Text},
    resolver::Resolver,
    ConfigError,
};

/// One way an upstream exchange can fail, as far as retries and outlier
/// detection care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Connecting was refused or timed out (nothing was sent).
    Connect,
    /// The connection was reset or closed before a complete response head.
    Reset,
    /// No response head within `upstream_first_byte`.
    Timeout,
    /// A response head with this status came back.
    Status(u16),
}

/// A set of [`Failure`]s, written as `on = ["connect", "reset", "timeout",
/// "5xx", "502", "503", "504"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failures(u8);

const CONNECT: u8 = 1;
const RESET: u8 = 2;
const TIMEOUT: u8 = 4;
const S502: u8 = 8;
const S503: u8 = 16;
const S504: u8 = 32;
const S5XX: u8 = 64;

const FAILURE_NAMES: [(&str, u8); 7] = [
    ("connect", CONNECT),
    ("reset", RESET),
    ("timeout", TIMEOUT),
    ("502", S502),
    ("503", S503),
    ("504", S504),
    ("5xx", S5XX),
];

impl Failures {
    fn named(names: &[&str]) -> Failures {
        let bits = FAILURE_NAMES
            .iter()
            .filter(|(name, _)| names.contains(name))
            .fold(0, |bits, (_, bit)| bits | bit);
        Failures(bits)
    }

    /// Whether `failure` is in the set.
    pub fn matches(self, failure: Failure) -> bool {
        let bits = match failure {
            Failure::Connect => CONNECT,
            Failure::Reset => RESET,
            Failure::Timeout => TIMEOUT,
            Failure::Status(502) => S502 | S5XX,
            Failure::Status(503) => S503 | S5XX,
            Failure::Status(504) => S504 | S5XX,
            Failure::Status(status) if status >= 500 => S5XX,
            Failure::Status(_) => 0,
        };
        self.0 & bits != 0
    }
}

/// Active health checks: a `GET path` on a fresh connection every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down server back.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
    /// The status a pass needs; `None`: any 2xx or 3xx.
    pub expect_status: Option<u16>,
}

/// Passive checks: `consecutive` failures in `on` eject a server from this
/// shard's picks for `base_ejection`, doubled on each repeat ejection up to
/// `max_ejection`; at most `max_ejected_percent` of the upstream (at least
/// one server) is ejected at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    pub consecutive: u32,
    pub on: Failures,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

/// Retries: up to `attempts` tries in all, for failures in `on`, with full
/// jitter backoff, within a per-shard budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included: 1 means no retries.
    pub attempts: u32,
    pub on: Failures,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retries in flight may be at most this percent of requests in flight...
    pub budget_percent: u32,
    /// ...or this many, whichever is more (so a quiet shard can still retry).
    pub budget_min: u32,
    /// Retry methods that are not idempotent (POST, PATCH) too.
    pub non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            on: Failures::named(&["connect", "reset", "timeout", "502", "503", "504"]),
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20,
            budget_min: 3,
            non_idempotent: false,
        }
    }
}

impl Resolver<'_> {
    /// A count in `range` as `u32`.
    fn small(
        &self,
        key: &str,
        value: Option<Spanned<i64>>,
        default: u32,
        range: Range<i64>,
    ) -> Result<u32, ConfigError> {
        // `count` checked the range, which lies within u32.
        Ok(self.count(key, value, default as usize, range)? as u32)
    }

    /// A duration that must not be zero.
    fn positive(
        &self,
        key: &str,
        value: Option<Text>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let span = value.as_ref().map(|v| v.span());
        let duration = self.duration(key, value, default)?;
        match span {
            Some(span) if duration.is_zero() => Err(self.invalid(key, span, "must be more than 0")),
            _ => Ok(duration),
        }
    }

    fn failures(
        &self,
        key: &str,
        value: Option<Spanned<Vec<Text>>>,
        default: Failures,
    ) -> Result<Failures, ConfigError> {
        let Some(list) = value else {
            return Ok(default);
        };
        let mut names = Vec::new();
        for name in list.get_ref() {
            if !FAILURE_NAMES.iter().any(|(n, _)| n == name.get_ref()) {
                let allowed: Vec<String> = FAILURE_NAMES
                    .iter()
                    .map(|(n, _)| format!("\"{n}\""))
                    .collect();
                let why = format!("`{}` is not one of {}", name.get_ref(), allowed.join(", "));
                return Err(self.invalid(key, name.span(), why));
            }
            names.push(name.get_ref().as_str());
        }
        Ok(Failures::named(&names))
    }

    pub(super) fn health_check(
        &self,
        raw: Option<Spanned<RawHealthCheck>>,
    ) -> Result<Option<HealthCheck>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let raw = raw.into_inner();
        let path = match raw.path {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains([' ', '\r', '\n']) => {
                p.into_inner()
            }
            Some(p) => {
                let why = "must start with `/` and contain no spaces";
                return Err(self.invalid("upstream.health_check.path", p.span(), why));
            }
        };
        let expect_status = match raw.expect_status {
            None => None,
            Some(v) => Some(self.small(
                "upstream.health_check.expect_status",
                Some(v),
                200,
                100..600,
            )? as u16),
        };
        let interval = self.positive(
            "upstream.health_check.interval",
            raw.interval,
            Duration::from_secs(5),
        )?;
        let timeout = self.positive(
            "upstream.health_check.timeout",
            raw.timeout,
            Duration::from_secs(1),
        )?;
        Ok(Some(HealthCheck {
            path,
            interval,
            timeout,
            rise: self.small("upstream.health_check.rise", raw.rise, 2, 1..1001)?,
            fall: self.small("upstream.health_check.fall", raw.fall, 3, 1..1001)?,
            expect_status,
        }))
    }

    pub(super) fn outlier(
        &self,
        raw: Option<Spanned<RawOutlier>>,
    ) -> Result<Option<OutlierPolicy>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let span = raw.span();
        let raw = raw.into_inner();
        let default_on = Failures::named(&["connect", "reset", "timeout", "5xx"]);
        let base_ejection = self.positive(
            "upstream.outlier.base_ejection",
            raw.base_ejection,
            Duration::from_secs(10),
        )?;
        let max_ejection = self.positive(
            "upstream.outlier.max_ejection",
            raw.max_ejection,
            Duration::from_secs(300),
        )?;
        if max_ejection < base_ejection {
            let why = "must not be shorter than `base_ejection`";
            return Err(self.invalid("upstream.outlier.max_ejection", span, why));
        }
        Ok(Some(OutlierPolicy {
            consecutive: self.small(
                "upstream.outlier.consecutive",
                raw.consecutive,
                5,
                1..100_001,
            )?,
            on: self.failures("upstream.outlier.on", raw.on, default_on)?,
            base_ejection,
            max_ejection,
            max_ejected_percent: self.small(
                "upstream.outlier.max_ejected_percent",
                raw.max_ejected_percent,
                50,
                0..101,
            )?,
        }))
    }

    pub(super) fn retry(
        &self,
        raw: Option<Spanned<RawRetry>>,
        non_idempotent: Option<bool>,
    ) -> Result<RetryPolicy, ConfigError> {
        let default = RetryPolicy::default();
        let non_idempotent = non_idempotent.unwrap_or(false);
        let Some(raw) = raw else {
            return Ok(RetryPolicy {
                non_idempotent,
                ..default
            });
        };
        let span = raw.span();
        let raw = raw.into_inner();
        let backoff_base = self.duration(
            "upstream.retry.backoff_base",
            raw.backoff_base,
            default.backoff_base,
        )?;
        let backoff_max = self.duration(
            "upstream.retry.backoff_max",
            raw.backoff_max,
            default.backoff_max,
        )?;
        if backoff_max < backoff_base {
            let why = "must not be shorter than `backoff_base`";
            return Err(self.invalid("upstream.retry.backoff_max", span, why));
        }
        Ok(RetryPolicy {
            attempts: self.small(
                "upstream.retry.attempts",
                raw.attempts,
                default.attempts,
                1..11,
            )?,
            on: self.failures("upstream.retry.on", raw.on, default.on)?,
            backoff_base,
            backoff_max,
            budget_percent: self.small(
                "upstream.retry.budget_percent",
                raw.budget_percent,
                default.budget_percent,
                0..101,
            )?,
            budget_min: self.small(
                "upstream.retry.budget_min",
                raw.budget_min,
                default.budget_min,
                0..100_001,
            )?,
            non_idempotent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Balance, Config, HashKey};

    /// An upstream with `keys` (raw TOML lines) and a route to it.
    fn upstream(keys: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[upstream]]\nname = \"u\"\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n{keys}\n[[route]]\nupstream = \"u\"\n"
        );
        Config::parse(&text, "t.toml")
    }

    #[track_caller]
    fn rejected(keys: &str, key: &str) {
        let err = upstream(keys).expect_err(keys);
        assert!(err.message.contains(key), "{keys}: {err}");
        assert_eq!(err.line, Some(4), "{keys}: {err}");
    }

    #[test]
    fn defaults_change_nothing() {
        let config = upstream("").unwrap();
        let u = &config.upstreams[0];
        assert_eq!(u.balance, Balance::Weighted);
        assert_eq!((u.hash_key.clone(), u.max_conns), (None, 0));
        assert_eq!((u.health_check.clone(), u.outlier), (None, None));
        assert_eq!(u.retry.attempts, 1, "no retries unless asked");
        assert_eq!(config.routes[0].priority, 0);
    }

    #[test]
    fn every_knob_parses() {
        let config = upstream(concat!(
            "balance = \"consistent_hash\"\nhash_key = \"header:X-User\"\nhash_epsilon = 0.5\n",
            "max_conns = 4\nqueue_size = 10\nqueue_timeout = \"250ms\"\n",
            "health_check = { path = \"/hc\", interval = \"2s\", timeout = \"500ms\", rise = 1, fall = 2, expect_status = 204 }\n",
            "outlier = { consecutive = 3, on = [\"5xx\"], base_ejection = \"1s\", max_ejection = \"8s\", max_ejected_percent = 30 }\n",
            "retry = { attempts = 3, on = [\"503\", \"connect\"], backoff_base = \"10ms\", backoff_max = \"80ms\", budget_percent = 10, budget_min = 1 }\n",
            "retry_non_idempotent = true",
        ))
        .unwrap();
        let u = &config.upstreams[0];
        assert_eq!(u.hash_key, Some(HashKey::Header("x-user".into())));
        assert_eq!((u.max_conns, u.queue_size), (4, 10));
        let check = u.health_check.clone().unwrap();
        assert_eq!(
            (check.rise, check.fall, check.expect_status),
            (1, 2, Some(204))
        );
        let outlier = u.outlier.unwrap();
        assert!(outlier.on.matches(Failure::Status(500)) && !outlier.on.matches(Failure::Connect));
        assert_eq!(outlier.max_ejected_percent, 30);
        let retry = u.retry;
        assert_eq!(
            (retry.attempts, retry.budget_min, retry.non_idempotent),
            (3, 1, true)
        );
        assert!(retry.on.matches(Failure::Status(503)) && !retry.on.matches(Failure::Status(502)));
    }

    #[test]
    fn nonsense_is_rejected_naming_the_key() {
        rejected("balance = \"fastest\"", "upstream.balance");
        rejected("hash_key = \"uri\"", "upstream.hash_key");
        rejected(
            "hash_key = \"header:\"\nbalance = \"consistent_hash\"",
            "upstream.hash_key",
        );
        rejected(
            "hash_key = \"cookie:\"\nbalance = \"consistent_hash\"",
            "upstream.hash_key",
        );
        rejected(
            "hash_key = \"path\"\nbalance = \"consistent_hash\"",
            "upstream.hash_key",
        );
        rejected("hash_epsilon = 0.0", "upstream.hash_epsilon");
        rejected("health_check = { rise = 0 }", "upstream.health_check.rise");
        rejected("health_check = { fall = 0 }", "upstream.health_check.fall");
        rejected(
            "health_check = { interval = \"0s\" }",
            "upstream.health_check.interval",
        );
        rejected(
            "health_check = { path = \"health\" }",
            "upstream.health_check.path",
        );
        rejected(
            "health_check = { expect_status = 99 }",
            "upstream.health_check.expect_status",
        );
        rejected(
            "outlier = { consecutive = 0 }",
            "upstream.outlier.consecutive",
        );
        rejected("outlier = { on = [\"sometimes\"] }", "upstream.outlier.on");
        rejected(
            "outlier = { max_ejected_percent = 101 }",
            "upstream.outlier.max_ejected_percent",
        );
        rejected(
            "outlier = { base_ejection = \"10s\", max_ejection = \"1s\" }",
            "upstream.outlier.max_ejection",
        );
        rejected("retry = { attempts = 0 }", "upstream.retry.attempts");
        rejected("retry = { on = [\"418\"] }", "upstream.retry.on");
        rejected(
            "retry = { budget_percent = 200 }",
            "upstream.retry.budget_percent",
        );
        rejected(
            "retry = { backoff_base = \"1s\", backoff_max = \"10ms\" }",
            "upstream.retry.backoff_max",
        );
        rejected("retry = { tries = 2 }", "tries");
        rejected("max_conns = -1", "upstream.max_conns");
    }

    #[test]
    fn route_priority_is_checked() {
        let text = "[[upstream]]\nname = \"u\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\nupstream = \"u\"\npriority = 8\n";
        let err = Config::parse(text, "t").unwrap_err();
        assert!(
            err.message.contains("route.priority") && err.line == Some(6),
            "{err}"
        );
        let text = "[[upstream]]\nname = \"u\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\nupstream = \"u\"\npriority_header = \"x prio\"\n";
        let err = Config::parse(text, "t").unwrap_err();
        assert!(err.message.contains("route.priority_header"), "{err}");
        let text = "[[upstream]]\nname = \"u\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\nupstream = \"u\"\npriority = 5\npriority_header = \"X-Priority\"\n";
        let route = &Config::parse(text, "t").unwrap().routes[0];
        assert_eq!(
            (route.priority, route.priority_header.as_deref()),
            (5, Some("x-priority"))
        );
    }

    #[test]
    fn failure_sets_match_statuses() {
        let on = Failures::named(&["502", "timeout"]);
        assert!(on.matches(Failure::Status(502)));
        assert!(!on.matches(Failure::Status(503)));
        assert!(on.matches(Failure::Timeout));
        assert!(!on.matches(Failure::Connect));
        let any = Failures::named(&["5xx"]);
        assert!(any.matches(Failure::Status(500)) && any.matches(Failure::Status(599)));
        assert!(!any.matches(Failure::Status(404)));
    }
}
