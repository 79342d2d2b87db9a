//! Turns raw values into typed ones: the shared helpers every section's
//! resolver uses (durations, sizes, counts, keywords, addresses), each naming
//! the key and line of a bad value.

use std::{
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    ops::Range,
    time::Duration,
};

use toml::Spanned;

use super::{
    raw::{RawConfig, Size, Text},
    units::{parse_duration, parse_size},
    Config, ConfigError,
};

/// A setting chosen by name from a fixed set; lets one resolver method parse
/// every such key and list the allowed names in its error.
pub(super) trait Keyword: Copy + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

/// Turns raw values into typed ones, remembering the text to compute line numbers.
pub(super) struct Resolver<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
}

impl Resolver<'_> {
    pub(super) fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        let line = span.map(|s| {
            self.text[..s.start.min(self.text.len())]
                .matches('\n')
                .count()
                + 1
        });
        ConfigError {
            origin: self.origin.to_string(),
            line,
            message,
        }
    }

    pub(super) fn invalid(
        &self,
        key: &str,
        span: Range<usize>,
        why: impl fmt::Display,
    ) -> ConfigError {
        self.error(Some(span), format!("invalid `{key}`: {why}"))
    }

    pub(super) fn duration(
        &self,
        key: &str,
        value: Option<Text>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|why| self.invalid(key, v.span(), why)),
        }
    }

    pub(super) fn size(
        &self,
        key: &str,
        value: Option<Size>,
        default: u64,
        min: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let size = parse_size(v.get_ref()).map_err(|why| self.invalid(key, v.span(), why))?;
        if size < min {
            return Err(self.invalid(key, v.span(), format!("must be at least {min} bytes")));
        }
        Ok(size)
    }

    pub(super) fn keyword<K: Keyword>(
        &self,
        key: &str,
        value: Option<Text>,
        default: K,
    ) -> Result<K, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        if let Some(k) = K::ALL.iter().find(|k| k.name() == v.get_ref()) {
            return Ok(*k);
        }
        let allowed: Vec<String> = K::ALL.iter().map(|k| format!("\"{}\"", k.name())).collect();
        let why = format!("`{}` is not one of {}", v.get_ref(), allowed.join(", "));
        Err(self.invalid(key, v.span(), why))
    }

    pub(super) fn count(
        &self,
        key: &str,
        value: Option<Spanned<i64>>,
        default: usize,
        range: Range<i64>,
    ) -> Result<usize, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let n = *v.get_ref();
        if !range.contains(&n) {
            let why = format!("{n} is out of range {}..{}", range.start, range.end);
            return Err(self.invalid(key, v.span(), why));
        }
        Ok(n as usize)
    }

    pub(super) fn address(
        &self,
        key: &str,
        text: &str,
        span: Range<usize>,
    ) -> Result<SocketAddr, ConfigError> {
        // Resolution happens here, once, on the main thread: shards never do DNS.
        let mut addrs = text
            .to_socket_addrs()
            .map_err(|e| self.invalid(key, span.clone(), format!("`{text}`: {e}")))?;
        addrs
            .next()
            .ok_or_else(|| self.invalid(key, span, format!("`{text}` resolves to no address")))
    }

    pub(super) fn resolve(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let (server, tuning) = self.server(raw.server)?;
        let http = self.http(raw.http)?;
        let timeouts = self.timeouts(raw.timeouts)?;
        let forward_cache = raw.forward_proxy.cache.as_ref().map(|c| c.span());
        let forward = self.forward(raw.forward_proxy)?;
        // A forward proxy alone needs no upstream or route.
        let reverse = !(forward.enabled && raw.upstream.is_empty() && raw.route.is_empty());
        let (upstreams, by_name) = match reverse {
            true => self.upstreams(raw.upstream)?,
            false => Default::default(),
        };
        let routes = match reverse {
            true => self.routes(raw.route, &by_name)?,
            false => Vec::new(),
        };
        let cache = self.cache(raw.cache)?;
        let cluster = self.cluster(raw.cluster)?;
        if cluster.is_some() && !cache.enabled {
            return Err(self.error(
                None,
                "invalid `cluster.self`: a cluster shares a cache; set `[cache] enabled = true`"
                    .into(),
            ));
        }
        if let (true, false, Some(span)) = (forward.cache, cache.enabled, forward_cache) {
            return Err(self.invalid(
                "forward_proxy.cache",
                span,
                "the forward cache is the response cache: set `[cache] enabled = true`",
            ));
        }
        let admin = self.admin(raw.admin)?;
        let log = self.log(raw.log)?;
        let limits = self.limits(raw.limits)?;
        Ok(Config {
            server,
            tuning,
            http,
            timeouts,
            cache,
            cluster,
            upstreams,
            routes,
            admin,
            log,
            limits,
            forward,
        })
    }
}
