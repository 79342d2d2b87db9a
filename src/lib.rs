//! shardproxy: a thread-per-core io_uring HTTP/1.1 proxy.
//!
//! # Layout
//! - [`config`]: the TOML file, parsed raw and validated into typed values.
//! - [`http`]: message syntax — head parsing, body framing, header rewriting.
//!
//! See `docs/ARCHITECTURE.md` for the shard model and the path of one request.

pub mod config;
pub mod http;
