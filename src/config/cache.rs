//! `[cache]`: size and behaviour of the sharded response cache.

use std::time::Duration;

use super::{raw, raw::Text, resolver::Resolver, ConfigError, IpNet};
use crate::{cache::control::MAX_TARGET_NAME, http::head::is_token};

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Total bytes over all shards; each shard owns `capacity / shards`.
    pub capacity: u64,
    pub max_object_size: u64,
    /// How long a request waits for another request's fetch of the same key.
    pub coalesce_wait: Duration,
    /// Per-shard bytes of near-cache copies of objects owned elsewhere; 0 = off.
    pub near_cache_size: u64,
    pub near_cache_ttl: Duration,
    /// Clients allowed to send PURGE.
    pub purge_allow: Vec<IpNet>,
    /// This cache's own targeted cache-control field (RFC 9213), obeyed
    /// before CDN-Cache-Control and Cache-Control.
    pub targeted_cache_control: Option<String>,
}

impl Resolver<'_> {
    pub(super) fn cache(&self, raw: raw::RawCache) -> Result<CacheConfig, ConfigError> {
        let mut purge_allow = Vec::new();
        match raw.purge_allow {
            None => purge_allow.extend(
                ["127.0.0.1/32", "::1/128"]
                    .iter()
                    .filter_map(|n| IpNet::parse(n)),
            ),
            Some(list) => {
                for entry in list {
                    let net = IpNet::parse(entry.get_ref()).ok_or_else(|| {
                        self.invalid(
                            "cache.purge_allow",
                            entry.span(),
                            format!("`{}` is not an address or address/prefix", entry.get_ref()),
                        )
                    })?;
                    purge_allow.push(net);
                }
            }
        }
        Ok(CacheConfig {
            enabled: raw.enabled.unwrap_or(false),
            capacity: self.size("cache.capacity", raw.capacity, 256 << 20, 64 << 10)?,
            max_object_size: self.size("cache.max_object_size", raw.max_object_size, 8 << 20, 1)?,
            coalesce_wait: self.duration(
                "cache.coalesce_wait",
                raw.coalesce_wait,
                Duration::from_secs(5),
            )?,
            near_cache_size: self.size("cache.near_cache_size", raw.near_cache_size, 4 << 20, 0)?,
            near_cache_ttl: self.duration(
                "cache.near_cache_ttl",
                raw.near_cache_ttl,
                Duration::from_secs(1),
            )?,
            purge_allow,
            targeted_cache_control: self
                .field_name("cache.targeted_cache_control", raw.targeted_cache_control)?,
        })
    }

    /// A header field name (a token, at most `MAX_TARGET_NAME` bytes) that
    /// is not one of the fields it would be obeyed before.
    fn field_name(&self, key: &str, raw: Option<Text>) -> Result<Option<String>, ConfigError> {
        let Some(value) = raw else { return Ok(None) };
        let name = value.get_ref();
        let lower = name.to_ascii_lowercase();
        let why = if name.is_empty() || !name.bytes().all(is_token) {
            "must be a header field name (letters, digits, `-` and the like)".to_owned()
        } else if name.len() > MAX_TARGET_NAME {
            format!("is too long (at most {MAX_TARGET_NAME} bytes)")
        } else if lower == "cache-control" || lower == "cdn-cache-control" {
            "names a field the cache reads anyway; pick a name of your own".to_owned()
        } else {
            return Ok(Some(name.clone()));
        };
        Err(self.invalid(key, value.span(), why))
    }
}
