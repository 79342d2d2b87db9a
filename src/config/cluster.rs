//! `[cluster]`: the other shardproxy nodes this one shares its cache with
//! (one owner node per cache key, by rendezvous hashing), the secret their
//! requests are signed with, and how failed peers are backed off.
//!
//! Addresses are resolved here, once, on the main thread; `peers_dns` is
//! only checked for form: it is resolved later, off the shards, by
//! `cluster::members`.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use super::{raw::RawCluster, resolver::Resolver, ConfigError};
use crate::cluster::members::DnsMembers;

/// A node's identity is its address as `ip:port`: every node computes the
/// same owner only if it names the members the same way, and a resolved
/// address is the one name static lists and DNS answers agree on.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node, as the others reach it.
    pub self_addr: SocketAddr,
    /// The other nodes from `peers` (this node dropped from the list, so one
    /// list can be shared by every node).
    pub peers: Vec<SocketAddr>,
    /// The members a DNS name and port resolve to (A/AAAA records, as a
    /// Kubernetes headless Service gives them), re-resolved every
    /// `dns_refresh` by a thread the first shard starts. The one value in
    /// the config that changes after validation; see `cluster::members`.
    pub peers_dns: Option<Arc<DnsMembers>>,
    /// The HMAC key every node signs and checks peer requests with.
    pub secret: Vec<u8>,
    /// A signature older (or further in the future) than this is refused.
    pub signature_max_age: Duration,
    /// Connecting to a peer and its response head, together; past it the
    /// peer is marked down and the request goes to the origin. Shorter than
    /// `upstream_first_byte`: a peer answers from memory or after one fetch.
    pub peer_timeout: Duration,
    /// How long a peer that refused or timed out is first left alone;
    /// doubled on each further failure, up to 32 times this.
    pub peer_backoff: Duration,
}

/// The shortest secret accepted: HMAC-SHA256 keys shorter than the hash
/// (32 bytes) weaken it; 16 is the floor below which a guess is plausible.
const MIN_SECRET: usize = 16;

impl Resolver<'_> {
    pub(super) fn cluster(&self, raw: RawCluster) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(self_text) = raw.self_addr else {
            if let Some(peers) = raw.peers {
                return Err(self.invalid("cluster.peers", peers.span(), "needs `cluster.self`"));
            }
            return Ok(None);
        };
        let expanded = expand_env(self_text.get_ref())
            .map_err(|why| self.invalid("cluster.self", self_text.span(), why))?;
        let self_addr = self.address("cluster.self", &expanded, self_text.span())?;
        let mut peers = Vec::new();
        if let Some(list) = &raw.peers {
            for peer in list.get_ref() {
                let addr = self.address("cluster.peers", peer.get_ref(), peer.span())?;
                if addr != self_addr && !peers.contains(&addr) {
                    peers.push(addr);
                }
            }
        }
        let peers_dns = match raw.peers_dns {
            Some(name)
                if name
                    .get_ref()
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Some(name.into_inner())
            }
            Some(name) => {
                return Err(self.invalid("cluster.peers_dns", name.span(), "must be `name:port`"))
            }
            None => None,
        };
        let dns_refresh = self.duration(
            "cluster.dns_refresh",
            raw.dns_refresh,
            Duration::from_secs(5),
        )?;
        let peers_dns = peers_dns.map(|name| DnsMembers::new(name, dns_refresh));
        let secret = match (raw.secret, raw.secret_file) {
            (Some(secret), None) => secret.get_ref().trim().as_bytes().to_vec(),
            (None, Some(file)) => std::fs::read_to_string(Path::new(file.get_ref()))
                .map(|text| text.trim().as_bytes().to_vec())
                .map_err(|e| self.invalid("cluster.secret_file", file.span(), e))?,
            (Some(secret), Some(_)) => {
                return Err(self.invalid(
                    "cluster.secret",
                    secret.span(),
                    "give `secret` or `secret_file`, not both",
                ))
            }
            (None, None) => {
                return Err(self.error(
                    None,
                    "invalid `cluster.secret`: a cluster needs `secret` or `secret_file`".into(),
                ))
            }
        };
        if secret.len() < MIN_SECRET {
            return Err(self.error(
                None,
                format!("invalid `cluster.secret`: shorter than {MIN_SECRET} bytes"),
            ));
        }
        Ok(Some(ClusterConfig {
            self_addr,
            peers,
            peers_dns,
            secret,
            signature_max_age: self.duration(
                "cluster.signature_max_age",
                raw.signature_max_age,
                Duration::from_secs(30),
            )?,
            peer_timeout: self.duration(
                "cluster.peer_timeout",
                raw.peer_timeout,
                Duration::from_secs(10),
            )?,
            peer_backoff: self.duration(
                "cluster.peer_backoff",
                raw.peer_backoff,
                Duration::from_secs(1),
            )?,
        }))
    }
}

/// Replaces `${NAME}` with the environment variable's value, so one config
/// file (a Kubernetes ConfigMap) can say `self = "${POD_IP}:8080"` on every node.
fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("`${` without `}`")?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn expands_environment_variables() {
        std::env::set_var("SHARDPROXY_TEST_POD_IP", "10.1.2.3");
        assert_eq!(
            expand_env("${SHARDPROXY_TEST_POD_IP}:8080").unwrap(),
            "10.1.2.3:8080"
        );
        assert_eq!(expand_env("127.0.0.1:1").unwrap(), "127.0.0.1:1");
        assert!(expand_env("${SHARDPROXY_TEST_UNSET_VARIABLE}:1").is_err());
        assert!(expand_env("${OPEN:1").is_err());
    }
}
