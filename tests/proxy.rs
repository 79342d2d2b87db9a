//! Integration tests for shardproxy: the real binary, a real origin on an
//! ephemeral loopback port and raw-socket clients. One module per area; the
//! harness lives in `support/`. Every proxy-facing test runs with 1 and with
//! 2 shards.

mod support;

#[path = "proxy/access_log.rs"]
mod access_log;
#[path = "proxy/admin.rs"]
mod admin;
#[path = "proxy/balancing.rs"]
mod balancing;
#[path = "proxy/bodies.rs"]
mod bodies;
#[path = "proxy/cache.rs"]
mod cache;
#[path = "proxy/cache_head.rs"]
mod cache_head;
#[path = "proxy/cdn_cache_control.rs"]
mod cdn_cache_control;
#[path = "proxy/cli.rs"]
mod cli;
#[path = "proxy/client_limits.rs"]
mod client_limits;
#[path = "proxy/cluster.rs"]
mod cluster;
#[path = "proxy/deploy.rs"]
mod deploy;
#[path = "proxy/forward_cache.rs"]
mod forward_cache;
#[path = "proxy/forward_parents.rs"]
mod forward_parents;
#[path = "proxy/forward_proxy.rs"]
mod forward_proxy;
#[path = "proxy/forward_tunnels.rs"]
mod forward_tunnels;
#[path = "proxy/forwarding.rs"]
mod forwarding;
#[path = "proxy/harness.rs"]
mod harness;
#[path = "proxy/health.rs"]
mod health;
#[path = "proxy/interim.rs"]
mod interim;
#[path = "proxy/large_bodies.rs"]
mod large_bodies;
#[path = "proxy/limits.rs"]
mod limits;
#[path = "proxy/outlier.rs"]
mod outlier;
#[path = "proxy/pooling.rs"]
mod pooling;
#[path = "proxy/priority.rs"]
mod priority;
#[path = "proxy/ranges.rs"]
mod ranges;
#[path = "proxy/reload.rs"]
mod reload;
#[path = "proxy/retries.rs"]
mod retries;
#[path = "proxy/shutdown.rs"]
mod shutdown;
#[path = "proxy/splicing.rs"]
mod splicing;
#[path = "proxy/strict_parsing.rs"]
mod strict_parsing;
#[path = "proxy/systemd.rs"]
mod systemd;
#[path = "proxy/timeouts.rs"]
mod timeouts;
#[path = "proxy/trailers.rs"]
mod trailers;
#[path = "proxy/unknown_methods.rs"]
mod unknown_methods;
#[path = "proxy/upgrade.rs"]
mod upgrade;
#[path = "proxy/upstream_failures.rs"]
mod upstream_failures;
#[path = "proxy/validators.rs"]
mod validators;
