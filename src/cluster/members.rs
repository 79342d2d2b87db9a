//! Who is in the cluster: this node and its peers, each with the hash its
//! rendezvous score starts from. Static members come from `[cluster] self`
//! and `peers`; the list is sorted by address so that every node holds the
//! same list whatever order its config wrote it in.
//!
//! Built on the shard's own thread from the read-only config; nothing here
//! is shared between shards.

use std::net::SocketAddr;

use super::rendezvous::MemberHash;
use crate::config::ClusterConfig;

/// One node of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub addr: SocketAddr,
    pub hash: MemberHash,
}

impl Member {
    pub fn new(addr: SocketAddr) -> Member {
        Member {
            addr,
            hash: MemberHash::of(addr),
        }
    }
}

/// This node and its configured peers, sorted by address, without duplicates.
pub fn static_members(config: &ClusterConfig) -> Vec<Member> {
    members_of(config.self_addr, &config.peers)
}

/// `self_addr` and `peers` as one sorted list without duplicates.
pub fn members_of(self_addr: SocketAddr, peers: &[SocketAddr]) -> Vec<Member> {
    let mut addrs: Vec<SocketAddr> = peers.to_vec();
    addrs.push(self_addr);
    addrs.sort_unstable();
    addrs.dedup();
    addrs.into_iter().map(Member::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_is_a_member_once_and_the_list_is_sorted() {
        let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let members = members_of(a, &[a, b, b]);
        let addrs: Vec<_> = members.iter().map(|m| m.addr).collect();
        assert_eq!(addrs, [b, a]);
    }
}
