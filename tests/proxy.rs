//! Integration tests for shardproxy: the real binary, a real origin on an
//! ephemeral loopback port and raw-socket clients. One module per area; the
//! harness lives in `support/`. Every proxy-facing test runs with 1 and with
//! 2 shards.

mod support;

#[path = "proxy/bodies.rs"]
mod bodies;
#[path = "proxy/cache.rs"]
mod cache;
#[path = "proxy/cli.rs"]
mod cli;
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
#[path = "proxy/large_bodies.rs"]
mod large_bodies;
#[path = "proxy/limits.rs"]
mod limits;
#[path = "proxy/pooling.rs"]
mod pooling;
#[path = "proxy/shutdown.rs"]
mod shutdown;
#[path = "proxy/strict_parsing.rs"]
mod strict_parsing;
#[path = "proxy/timeouts.rs"]
mod timeouts;
#[path = "proxy/upgrade.rs"]
mod upgrade;
#[path = "proxy/upstream_failures.rs"]
mod upstream_failures;
