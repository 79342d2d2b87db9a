//! Choosing the upstream for a request from its Host and path: the most
//! specific `[[route]]` wins — a route naming the host beats one that does not,
//! then the longest `path_prefix`. Routes are sorted once, so a lookup is a
//! linear scan that stops at the first match.

use crate::config::RouteConfig;

pub struct Router {
    /// Most specific first.
    routes: Vec<RouteConfig>,
}

impl Router {
    pub fn new(routes: &[RouteConfig]) -> Router {
        let mut routes = routes.to_vec();
        // Stable sort keeps file order among equally specific routes.
        routes.sort_by_key(|r| (r.host.is_none(), std::cmp::Reverse(r.path_prefix.len())));
        Router { routes }
    }

    /// The route for this request, or `None` (404).
    /// `host` is the Host value without its port.
    pub fn route(&self, host: Option<&[u8]>, path: &[u8]) -> Option<&RouteConfig> {
        self.find(host, path).map(|(_, route)| route)
    }

    /// The routes, most specific first: the order [`Router::find`]'s indices count in.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// Like [`Router::route`], with the route's index in [`Router::routes`]
    /// (per-route metrics are a vector in that order).
    pub fn find(&self, host: Option<&[u8]>, path: &[u8]) -> Option<(usize, &RouteConfig)> {
        self.routes.iter().enumerate().find(|(_, r)| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(have)) => want.as_bytes().eq_ignore_ascii_case(have),
                (Some(_), None) => false,
            };
            host_ok && path.starts_with(r.path_prefix.as_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, upstream: usize) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_string),
            path_prefix: prefix.to_string(),
            upstream,
            cache: true,
            cache_default_ttl: None,
            cache_set_cookie: false,
            priority: 0,
            priority_header: None,
            rate_limit: None,
        }
    }

    #[test]
    fn most_specific_wins() {
        let router = Router::new(&[
            route(None, "/", 0),
            route(None, "/api/", 1),
            route(Some("a.example"), "/", 2),
            route(Some("a.example"), "/static/", 3),
        ]);
        assert_eq!(
            router.route(Some(b"b.example"), b"/x").map(|r| r.upstream),
            Some(0)
        );
        assert_eq!(
            router
                .route(Some(b"b.example"), b"/api/v1")
                .map(|r| r.upstream),
            Some(1)
        );
        assert_eq!(
            router
                .route(Some(b"A.Example"), b"/api/v1")
                .map(|r| r.upstream),
            Some(2)
        );
        assert_eq!(
            router
                .route(Some(b"a.example"), b"/static/x.css")
                .map(|r| r.upstream),
            Some(3)
        );
        let only_api = Router::new(&[route(None, "/api/", 1)]);
        assert_eq!(only_api.route(None, b"/other").map(|r| r.upstream), None);
    }
}
