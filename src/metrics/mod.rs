//! Metrics: per-shard counters and histograms, merged only when scraped.
//!
//! How a number gets from a request to `/metrics` without a lock or a shared
//! atomic on the request path:
//!
//! 1. A request's "after" phase (`proxy/exchange.rs`) bumps `Cell`s and an
//!    hdrhistogram in its shard's [`shard::ShardMetrics`] — memory only that
//!    shard touches.
//! 2. A scrape reaches the admin thread (`admin`), which sends every shard a
//!    `Control::Snapshot` carrying a reply channel, over the same crossbeam
//!    control channel that carries shutdown.
//! 3. Each shard answers when it next polls control (every 50 ms, without
//!    blocking) with a [`shard::ShardSnapshot`]: copies of its numbers.
//! 4. The admin thread merges the snapshots (routes summed over shards,
//!    histograms added) and renders them ([`exposition`], and the `/status` JSON).
//!
//! A scrape thus costs each shard one copy of its counters every scrape
//! interval, and the request path nothing but its own increments.
//! Metric names are constants in [`names`].

pub mod exposition;
pub mod names;
pub mod process;
pub mod shard;
pub mod upstream;
