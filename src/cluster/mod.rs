//! A cluster of shardproxy nodes sharing one cache: every cacheable key has
//! one owner node, picked by rendezvous hashing over the live members, and
//! a miss on any other node is fetched from the owner, which answers from
//! its cache or fetches once from the origin (coalescing across the cluster
//! happens there). No gossip, no consensus: every node computes the same
//! owner from the same member list.
//!
//! Files: `members` (who is in the cluster), `rendezvous` (which member
//! owns a key), `peer` (one shard's view: owners, down marks with backoff,
//! signing, counters), `sign` (HMAC-SHA256 peer request signatures),
//! `digest` (RFC 9530 Content-Digest on peer responses). The request path's
//! side (sending a miss to the owner, answering a peer) is
//! `proxy/cached/cluster.rs`; invalidations sent on to the owner node are
//! `proxy/cached/cluster_purge.rs`.

pub mod digest;
pub mod members;
pub mod peer;
pub mod rendezvous;
pub mod sign;

pub use peer::ClusterShard;
