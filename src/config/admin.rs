//! `[admin]`: the operator's endpoint (metrics, status, health, reload), served
//! by a side thread off the data path. Off unless `listen` is set.

use std::net::SocketAddr;

use super::{raw::RawAdmin, resolver::Resolver, ConfigError};

#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Where the admin endpoint listens; `None`: no admin endpoint.
    pub listen: Option<SocketAddr>,
}

impl Resolver<'_> {
    pub(super) fn admin(&self, raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
        let listen = match raw.listen {
            None => None,
            Some(text) if text.get_ref().is_empty() => None,
            Some(text) => Some(text.get_ref().parse().map_err(|_| {
                self.invalid(
                    "admin.listen",
                    text.span(),
                    format!("`{}` is not an ip:port address", text.get_ref()),
                )
            })?),
        };
        Ok(AdminConfig { listen })
    }
}
