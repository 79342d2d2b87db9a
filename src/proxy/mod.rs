//! The reverse proxy: one client connection's life (`client`), the choice of
//! route and path (`dispatch`), one request's trip to the upstream and back
//! (`forward`) or through the cache (`cached`), body streaming (`relay`),
//! the response's way back (`response`), route selection (`routing`) and the
//! error-to-status map (`error`).

pub mod cached;
pub mod client;
pub mod dispatch;
pub mod error;
pub mod forward;
pub mod relay;
pub mod response;
pub mod routing;
