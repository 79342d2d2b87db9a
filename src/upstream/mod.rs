//! Talking to upstream servers: which server gets a request (`balance`), the
//! shard's view of each upstream (`state`: requests in flight, leases, the
//! pick), the shard's warm connections (`pool`), active health checks and
//! their shared table (`health`), passive ejection (`outlier`), retry timing
//! and budget (`retry`), the `max_conns` priority queue (`queue`) and a small
//! random source (`rng`), and forward-proxy destination names resolved off
//! the shard (`dns`). Everything here is owned by one shard except the
//! health table, which every shard reads and only probers write.

pub mod balance;
pub mod dns;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod queue;
pub mod retry;
pub mod rng;
pub mod state;
