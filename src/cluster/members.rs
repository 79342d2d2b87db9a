//! Who is in the cluster: this node and its peers, each with the hash its
//! rendezvous score starts from. Static members come from `[cluster] self`
//! and `peers`; the list is sorted by address so that every node holds the
//! same list whatever order its config wrote it in.
//!
//! `peers_dns` members come from [`DnsMembers`]: a resolver thread (DNS
//! blocks, so never on a shard) resolves the name every `dns_refresh` and
//! publishes the addresses as a new snapshot with a new version number.
//! It is the one deliberately shared, mutable piece of cluster state:
//! read-mostly, a shard loads the version (one atomic read of a line that
//! changes only when the membership does) before it picks an owner, and
//! takes the snapshot's lock only when the version moved.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use super::rendezvous::MemberHash;

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

/// `self_addr` and `peers` as one sorted list without duplicates.
pub fn members_of(self_addr: SocketAddr, peers: &[SocketAddr]) -> Vec<Member> {
    let mut addrs: Vec<SocketAddr> = peers.to_vec();
    addrs.push(self_addr);
    addrs.sort_unstable();
    addrs.dedup();
    addrs.into_iter().map(Member::new).collect()
}

/// The members a DNS name resolves to, as last published by its resolver thread.
#[derive(Debug)]
pub struct DnsMembers {
    /// `name:port`, as `ToSocketAddrs` takes it.
    name: String,
    refresh: Duration,
    /// 0 until the first answer; bumped on every change.
    version: AtomicU64,
    addrs: Mutex<Arc<[SocketAddr]>>,
    started: AtomicBool,
}

impl DnsMembers {
    pub fn new(name: String, refresh: Duration) -> Arc<DnsMembers> {
        Arc::new(DnsMembers {
            name,
            refresh,
            version: AtomicU64::new(0),
            addrs: Mutex::new(Arc::from(Vec::new())),
            started: AtomicBool::new(false),
        })
    }

    /// A board no resolver thread will ever feed: tests publish by hand.
    #[cfg(test)]
    pub fn fed_by_hand() -> Arc<DnsMembers> {
        let board = DnsMembers::new("unused:1".into(), Duration::from_secs(60));
        board.started.store(true, Ordering::Relaxed);
        board
    }

    /// Starts the resolver thread, once per process (every shard calls
    /// this). It lives as long as the process: it holds no socket or file,
    /// and sleeps between lookups.
    pub fn start(self: &Arc<DnsMembers>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let board = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("cluster-dns".into())
            .spawn(move || loop {
                board.resolve_once();
                std::thread::sleep(board.refresh);
            });
        if let Err(e) = spawned {
            log::error!("cluster: cannot start the peers_dns resolver: {e}");
        }
    }

    /// Resolves the name and publishes the answer if it changed. A failed
    /// lookup keeps the last list: a DNS hiccup must not empty the cluster.
    fn resolve_once(&self) {
        match self.name.to_socket_addrs() {
            Ok(addrs) => {
                self.publish(addrs.collect());
            }
            Err(e) => log::warn!("cluster: resolving {}: {e}; keeping the members", self.name),
        }
    }

    /// Publishes `addrs` (sorted, deduplicated) if they differ from the last
    /// list; returns whether they did.
    pub fn publish(&self, mut addrs: Vec<SocketAddr>) -> bool {
        addrs.sort_unstable();
        addrs.dedup();
        // A poisoned lock only means a reader panicked; the list is whole.
        let mut current = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        if current[..] == addrs[..] {
            return false;
        }
        log::info!("cluster: members from {}: {addrs:?}", self.name);
        *current = Arc::from(addrs);
        self.version.fetch_add(1, Ordering::Release);
        true
    }

    /// The version of the current snapshot (0: nothing resolved yet).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current snapshot and its version.
    pub fn snapshot(&self) -> (u64, Arc<[SocketAddr]>) {
        let addrs = self.addrs.lock().unwrap_or_else(|e| e.into_inner());
        (self.version(), Arc::clone(&addrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_snapshot_changes_version_only_when_the_members_do() {
        let board = DnsMembers::fed_by_hand();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(board.version(), 0);
        assert!(board.publish(vec![b, a]));
        assert!(!board.publish(vec![a, b, a]));
        let (version, addrs) = board.snapshot();
        assert_eq!((version, &addrs[..]), (1, &[a, b][..]));
        assert!(board.publish(vec![a]));
        assert_eq!(board.version(), 2);
    }

    #[test]
    fn self_is_a_member_once_and_the_list_is_sorted() {
        let a: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let members = members_of(a, &[a, b, b]);
        let addrs: Vec<_> = members.iter().map(|m| m.addr).collect();
        assert_eq!(addrs, [b, a]);
    }
}
