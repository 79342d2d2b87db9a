//! shardproxy: a thread-per-core io_uring HTTP/1.1 reverse proxy.
//!
//! # Layout
//! - [`config`]: the TOML file, parsed raw and validated into typed values.
//! - [`control`]: process lifecycle — starts shards, relays signals to them.
//! - [`shard`]: one pinned compio runtime (own io_uring ring) per core and everything it owns.
//! - [`listener`]: SO_REUSEPORT listening sockets, one per shard per address.
//! - [`proxy`]: a client connection's life and one request's trip upstream.
//! - [`upstream`]: server selection and the per-shard keep-alive pool.
//! - [`http`]: message syntax — head parsing, body framing, header rewriting.
//! - [`cache`]: RFC 9111 cache building blocks — policy, keys, per-shard store.
//! - [`cluster`]: nodes sharing one cache — key owners by rendezvous hashing, signed peer requests.
//! - [`buffer`]: streaming buffers and the per-shard pool they are leased from.
//! - [`net`]: socket I/O with owned buffers and deadlines.
//! - [`offload`]: a shard's own threads for blocking work (DNS, password hashes).
//! - [`preflight`]: turns a missing io_uring into a message with a fix.
//! - [`heap`]: glibc allocator settings for a long-running server.
//! - [`admin`]: the admin endpoint's side thread (metrics, status, reload).
//! - [`metrics`]: per-shard counters and histograms, merged when scraped.
//! - [`access_log`]: per-shard line buffers and the writer thread.
//! - [`limits`]: per-client-IP and per-route limits (token buckets).
//! - [`notify`]: systemd readiness notification.
//!
//! See `docs/ARCHITECTURE.md` for the shard model and the path of one request.

pub mod access_log;
pub mod admin;
pub mod buffer;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod control;
pub mod heap;
pub mod http;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod offload;
pub mod preflight;
pub mod proxy;
pub mod shard;
pub mod upstream;
