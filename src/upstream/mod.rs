//! Talking to upstream servers: which server gets a request (`balance`) and
//! the shard's warm connections to them (`pool`), and forward-proxy
//! destination names resolved off the shard (`dns`). Everything here is owned by
//! one shard; nothing is shared between shards.

pub mod balance;
pub mod dns;
pub mod pool;
