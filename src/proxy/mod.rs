//! The reverse proxy: one client connection's life (`client`), one request's
//! trip to the upstream and back (`forward`), body streaming (`relay`),
//! route selection (`routing`) and the error-to-status map (`error`).

pub mod client;
pub mod error;
pub mod forward;
pub mod relay;
pub mod routing;
