//! `[[route]]`: which upstream (and cache policy) serves a host and path prefix.

use std::{collections::HashMap, time::Duration};

use super::{raw::RawRoute, resolver::Resolver, ConfigError};

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Lower-case host name without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Use the cache for this route (when `[cache]` is enabled).
    pub cache: bool,
    /// Freshness for responses that carry none.
    pub cache_default_ttl: Option<Duration>,
    /// Store responses that set cookies.
    pub cache_set_cookie: bool,
    /// Priority class 0 (lowest) to 7 (highest) of the route's requests.
    pub priority: u8,
    /// A request header (lower case) whose value 0..=7 picks the class instead.
    pub priority_header: Option<String>,
    /// Requests per second over all clients of this route; `None`: no limit.
    pub rate_limit: Option<super::Rate>,
}

impl RouteConfig {
    /// The route's name in metrics and the status page: host and path prefix
    /// (`example.com/api/`, or `/api/` for any host).
    pub fn label(&self) -> String {
        format!("{}{}", self.host.as_deref().unwrap_or(""), self.path_prefix)
    }
}

impl Resolver<'_> {
    /// The routes in file order; `upstreams` maps upstream names to indices.
    pub(super) fn routes(
        &self,
        raw: Vec<RawRoute>,
        upstreams: &HashMap<String, usize>,
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        if raw.is_empty() {
            return Err(self.error(None, "no [[route]] is defined".into()));
        }
        let mut routes = Vec::with_capacity(raw.len());
        for route in raw {
            let upstream = *upstreams.get(route.upstream.get_ref()).ok_or_else(|| {
                let name = route.upstream.get_ref();
                self.invalid(
                    "route.upstream",
                    route.upstream.span(),
                    format!("no [[upstream]] is named `{name}`"),
                )
            })?;
            let path_prefix = match route.path_prefix {
                None => "/".to_string(),
                Some(p) if p.get_ref().starts_with('/') => p.into_inner(),
                Some(p) => {
                    return Err(self.invalid("route.path_prefix", p.span(), "must start with `/`"))
                }
            };
            let host = match route.host {
                None => None,
                Some(h) if !h.get_ref().is_empty() && !h.get_ref().contains(['/', ' ']) => {
                    Some(h.into_inner().to_ascii_lowercase())
                }
                Some(h) => {
                    return Err(self.invalid(
                        "route.host",
                        h.span(),
                        "must be a host name without scheme or path",
                    ))
                }
            };
            let cache_default_ttl = match route.cache_default_ttl {
                None => None,
                Some(ttl) => {
                    Some(self.duration("route.cache_default_ttl", Some(ttl), Duration::ZERO)?)
                }
            };
            let priority = self.count("route.priority", route.priority, 0, 0..8)? as u8;
            let priority_header = match route.priority_header {
                None => None,
                Some(h)
                    if !h.get_ref().is_empty()
                        && h.get_ref().bytes().all(crate::http::head::is_token) =>
                {
                    Some(h.into_inner().to_ascii_lowercase())
                }
                Some(h) => {
                    return Err(self.invalid(
                        "route.priority_header",
                        h.span(),
                        "must be a header name",
                    ))
                }
            };
            routes.push(RouteConfig {
                host,
                path_prefix,
                upstream,
                cache: route.cache.unwrap_or(true),
                cache_default_ttl,
                cache_set_cookie: route.cache_set_cookie.unwrap_or(false),
                priority,
                priority_header,
                rate_limit: self.rate(
                    "route.rate_limit",
                    route.rate_limit,
                    "route.rate_burst",
                    route.rate_burst,
                )?,
            });
        }
        Ok(routes)
    }
}
