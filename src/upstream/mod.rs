//! Talking to upstream servers: which server gets a request (`balance`) and
//! the shard's warm connections to them (`pool`). Everything here is owned by
//! one shard; nothing is shared between shards.

pub mod balance;
pub mod pool;
