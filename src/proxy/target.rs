//! Where a request goes and how it queues, decided once in phase 2 while
//! the request head is still in the client buffer: the route's upstream, the
//! hash key for `consistent_hash` (client address, target, a header or a
//! cookie) and the priority class (the route's `priority`, or the value 0-7
//! of its `priority_header` when the request carries a valid one).

use crate::{
    config::RouteConfig,
    http::head::RequestHead,
    shard::context::ShardContext,
    upstream::{
        balance::key::{header_value, request_key},
        queue::CLASSES,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Index into the shard's upstreams.
    pub upstream: usize,
    /// The request's hash key, for `consistent_hash`.
    pub key: Option<u64>,
    /// Priority class: 0 (lowest) to 7.
    pub class: u8,
}

impl Target {
    /// A request with no key and the route's own class (background refreshes).
    pub fn of_route(route: &RouteConfig) -> Target {
        Target {
            upstream: route.upstream,
            key: None,
            class: route.priority,
        }
    }

    /// The target of `req`, parsed from `buf`, sent by `client_ip`.
    pub fn of_request(
        ctx: &ShardContext,
        route: &RouteConfig,
        buf: &[u8],
        req: &RequestHead,
        client_ip: &[u8],
    ) -> Target {
        let upstream = &ctx.config.upstreams[route.upstream];
        let key = upstream
            .hash_key
            .as_ref()
            .and_then(|key| request_key(key, buf, req, client_ip));
        let class = route
            .priority_header
            .as_ref()
            .and_then(|name| header_value(buf, req, name.as_bytes()))
            .and_then(parse_class)
            .unwrap_or(route.priority);
        Target {
            upstream: route.upstream,
            key,
            class,
        }
    }
}

/// `"0"` to `"7"` (surrounding blanks allowed); anything else is ignored.
fn parse_class(value: &[u8]) -> Option<u8> {
    match value.trim_ascii() {
        [digit @ b'0'..=b'9'] if usize::from(digit - b'0') < CLASSES => Some(digit - b'0'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_single_digits_up_to_seven() {
        assert_eq!(parse_class(b"7"), Some(7));
        assert_eq!(parse_class(b" 0 "), Some(0));
        assert_eq!(parse_class(b"8"), None);
        assert_eq!(parse_class(b"high"), None);
        assert_eq!(parse_class(b"12"), None);
    }
}
