//! The reverse proxy. `exchange` is the path of one request, phase by phase
//! (read head → route → cache lookup → upstream exchange → respond → after);
//! start there. Around it: one client connection's life (`client`), route
//! selection (`routing`), the cache's phases (`cached`), the upstream
//! connection (`upstream`), the full-duplex path for bodies still arriving
//! (`duplex`), the response's way back (`response`), body streaming
//! (`relay`) and the error-to-status map (`error`). The forward proxy
//! (`forward`) adds its admission (`acl`, `auth`) and tunnels (`tunnel`);
//! `origin` says where a trip to the origin goes (an upstream or a forward
//! destination) for the phases both share.
//!
//! Everything here runs on one shard, in the connection's own task.

// A `RefCell` borrow held across `.await` panics when another task on the
// shard borrows it meanwhile; the pool, the cache counters and the context's
// vectors are all `RefCell`s.
#![deny(clippy::await_holding_refcell_ref)]

pub mod acl;
mod admission;
pub mod auth;
pub mod cached;
pub mod client;
mod duplex;
pub mod error;
pub mod exchange;
mod eyeballs;
pub mod forward;
mod origin;
mod parent;
pub mod relay;
pub mod response;
mod retrying;
pub mod routing;
pub mod target;
pub mod trip;
mod tunnel;
mod upstream;
mod user_limits;
