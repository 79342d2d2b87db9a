//! One shard's view of its peers: which node owns a key (rendezvous over the
//! members not marked down), the passive failure marks with their backoff,
//! signing outgoing and checking incoming peer requests, and the shard's
//! cluster counters.
//!
//! A peer that refuses a connection, times out or breaks an exchange is
//! marked down for `peer_backoff`, doubled on each further failure up to 32
//! times; while down, its keys fall to the next member in rendezvous order
//! (or to this node, which then fetches from the origin). The first request
//! after the backoff tries it again; a success clears the mark. Marks are
//! per shard: each shard learns on its own, which costs one failed request
//! per shard and needs no cross-shard message.
//!
//! Per-shard state in `Cell`/`RefCell`, owned by the shard context; no
//! borrow is held across an `.await` (nothing here is async).

use std::{
    cell::{Cell, RefCell},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    members::{members_of, DnsMembers, Member},
    rendezvous, sign,
};
use crate::config::ClusterConfig;

/// A peer's failure mark.
#[derive(Debug, Clone, Copy)]
struct Down {
    until: Instant,
    failures: u32,
}

/// Events counted per shard (logged at shutdown, exported on `/metrics`).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterCounters {
    /// Fetches this shard sent to the key's owner node.
    pub peer_requests_sent: u64,
    /// Verified answers the owner node gave (the rest went to the origin).
    pub peer_answers: u64,
    /// Signed requests from other nodes this shard admitted.
    pub peer_requests_received: u64,
    /// Peer requests refused with 403 (missing parts, wrong or stale signature).
    pub signature_rejections: u64,
    /// Peer responses whose Content-Digest was missing or wrong.
    pub digest_mismatches: u64,
    /// Times a peer was marked down.
    pub peers_marked_down: u64,
}

/// The cluster as one shard sees it.
pub struct ClusterShard {
    self_addr: SocketAddr,
    /// `self_addr` as text: the sender identity this node signs with.
    self_id: String,
    secret: Vec<u8>,
    signature_max_age: u64,
    backoff: Duration,
    /// Connect plus response head from a peer (`[cluster] peer_timeout`).
    pub peer_timeout: Duration,
    members: RefCell<Vec<Member>>,
    /// `self` and `peers` from the config: always members.
    static_peers: Vec<SocketAddr>,
    /// `peers_dns`'s published members, and the version last taken from it.
    dns: Option<Arc<DnsMembers>>,
    dns_seen: Cell<u64>,
    down: RefCell<Vec<(SocketAddr, Down)>>,
    pub counters: Cell<ClusterCounters>,
}

/// The longest backoff, as a multiple of `peer_backoff`.
const MAX_BACKOFF_DOUBLINGS: u32 = 5;

impl ClusterShard {
    pub fn new(config: &ClusterConfig) -> ClusterShard {
        if let Some(dns) = &config.peers_dns {
            dns.start();
        }
        ClusterShard {
            self_addr: config.self_addr,
            self_id: config.self_addr.to_string(),
            secret: config.secret.clone(),
            signature_max_age: config.signature_max_age.as_secs(),
            backoff: config.peer_backoff,
            peer_timeout: config.peer_timeout,
            members: RefCell::new(members_of(config.self_addr, &config.peers)),
            static_peers: config.peers.clone(),
            dns: config.peers_dns.clone(),
            dns_seen: Cell::new(0),
            down: RefCell::new(Vec::new()),
            counters: Cell::new(ClusterCounters::default()),
        }
    }

    /// The node that owns the key whose hash is `key_hash`: `None` when it
    /// is this node (or no peer is up), else the peer to ask.
    pub fn owner(&self, key_hash: u64) -> Option<SocketAddr> {
        self.follow_dns();
        let now = Instant::now();
        let down = self.down.borrow();
        let members = self.members.borrow();
        let live = |m: &Member| {
            m.addr == self.self_addr || !down.iter().any(|(a, d)| *a == m.addr && d.until > now)
        };
        let index = rendezvous::owner(key_hash, &members, |m| m.hash, live)?;
        Some(members[index].addr).filter(|addr| *addr != self.self_addr)
    }

    /// Takes `peers_dns`'s new snapshot, if one was published since the
    /// last look: the members are then the static ones plus its addresses.
    fn follow_dns(&self) {
        let Some(dns) = &self.dns else { return };
        if dns.version() == self.dns_seen.get() {
            return;
        }
        let (version, addrs) = dns.snapshot();
        let mut peers = self.static_peers.clone();
        peers.extend_from_slice(&addrs);
        *self.members.borrow_mut() = members_of(self.self_addr, &peers);
        self.dns_seen.set(version);
    }

    /// Marks `peer` down after a refusal, timeout or broken exchange.
    pub fn peer_failed(&self, peer: SocketAddr) {
        let mut down = self.down.borrow_mut();
        let failures = match down.iter().position(|(a, _)| *a == peer) {
            Some(i) => down.swap_remove(i).1.failures + 1,
            None => 1,
        };
        let backoff = self.backoff * (1 << (failures - 1).min(MAX_BACKOFF_DOUBLINGS));
        log::warn!("cluster: peer {peer} marked down for {backoff:?} (failure {failures})");
        down.push((
            peer,
            Down {
                until: Instant::now() + backoff,
                failures,
            },
        ));
        self.count(|c| c.peers_marked_down += 1);
    }

    /// Clears `peer`'s failure mark after an answer that verified, and counts it.
    pub fn peer_ok(&self, peer: SocketAddr) {
        self.count(|c| c.peer_answers += 1);
        let mut down = self.down.borrow_mut();
        if let Some(i) = down.iter().position(|(a, _)| *a == peer) {
            down.swap_remove(i);
            log::info!("cluster: peer {peer} is up again");
        }
    }

    /// Appends the signed `Shardproxy-Peer` field for `method target`.
    pub fn sign(&self, out: &mut Vec<u8>, method: &[u8], target: &[u8]) {
        sign::write_field(out, &self.secret, method, target, unix_now(), &self.self_id);
        self.count(|c| c.peer_requests_sent += 1);
    }

    /// Checks a peer request's `Shardproxy-Peer` value; counts the outcome.
    pub fn admit(
        &self,
        value: &[u8],
        method: &[u8],
        target: &[u8],
    ) -> Result<(), sign::SignatureError> {
        let now = unix_now();
        match sign::verify(
            value,
            &self.secret,
            method,
            target,
            now,
            self.signature_max_age,
        ) {
            Ok(_) => {
                self.count(|c| c.peer_requests_received += 1);
                Ok(())
            }
            Err(e) => {
                self.count(|c| c.signature_rejections += 1);
                Err(e)
            }
        }
    }

    /// Counts a peer response whose Content-Digest did not match its body.
    pub fn digest_mismatch(&self) {
        self.count(|c| c.digest_mismatches += 1);
    }

    /// The members this shard knows, and how many of them it does not hold
    /// down now (this node always counts as up), for metrics.
    pub fn membership(&self) -> (usize, usize) {
        let now = Instant::now();
        let members = self.members.borrow();
        let down = self.down.borrow();
        let up = members
            .iter()
            .filter(|m| {
                m.addr == self.self_addr || !down.iter().any(|(a, d)| *a == m.addr && d.until > now)
            })
            .count();
        (members.len(), up)
    }

    /// Logs the counters (at shutdown, beside the cache's).
    pub fn log_counters(&self, shard: usize) {
        let c = self.counters.get();
        log::info!(
            "shard {shard} cluster: peer requests sent {} answered {} received {} | signature rejections {} | digest mismatches {} | peers marked down {} | members {}",
            c.peer_requests_sent, c.peer_answers, c.peer_requests_received, c.signature_rejections,
            c.digest_mismatches, c.peers_marked_down, self.members.borrow().len()
        );
    }

    fn count(&self, event: impl FnOnce(&mut ClusterCounters)) {
        let mut counters = self.counters.get();
        event(&mut counters);
        self.counters.set(counters);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(peers: &[&str]) -> ClusterShard {
        ClusterShard::new(&config(peers))
    }

    fn config(peers: &[&str]) -> ClusterConfig {
        ClusterConfig {
            self_addr: "127.0.0.1:1".parse().unwrap(),
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
            peers_dns: None,
            secret: b"0123456789abcdef".to_vec(),
            signature_max_age: Duration::from_secs(30),
            peer_timeout: Duration::from_secs(1),
            peer_backoff: Duration::from_secs(60),
        }
    }

    /// The first key hash the shard says `peer` owns.
    fn key_of(shard: &ClusterShard, peer: SocketAddr) -> u64 {
        (0..).find(|&k| shard.owner(k) == Some(peer)).unwrap()
    }

    #[test]
    fn a_down_peer_passes_its_keys_on_until_it_is_up() {
        let shard = shard(&["127.0.0.1:2", "127.0.0.1:3"]);
        let peer: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let key = key_of(&shard, peer);
        shard.peer_failed(peer);
        let next = shard.owner(key);
        assert_ne!(next, Some(peer));
        assert_eq!(shard.counters.get().peers_marked_down, 1);
        shard.peer_ok(peer);
        assert_eq!(shard.owner(key), Some(peer));
    }

    #[test]
    fn dns_members_join_the_static_ones() {
        let mut config = config(&[]);
        let dns = DnsMembers::fed_by_hand();
        config.peers_dns = Some(Arc::clone(&dns));
        let shard = ClusterShard::new(&config);
        assert!((0..1000).all(|k| shard.owner(k).is_none()));
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        dns.publish(vec![peer, config.self_addr]);
        assert!((0..1000).any(|k| shard.owner(k) == Some(peer)));
        dns.publish(vec![config.self_addr]);
        assert!((0..1000).all(|k| shard.owner(k).is_none()));
    }

    #[test]
    fn a_lone_node_owns_everything() {
        let shard = shard(&["127.0.0.1:1"]);
        assert!((0..1000).all(|k| shard.owner(k).is_none()));
    }

    #[test]
    fn its_own_signatures_are_admitted() {
        let shard = shard(&[]);
        let mut line = Vec::new();
        shard.sign(&mut line, b"GET", b"/x");
        let value = &line[b"Shardproxy-Peer: ".len()..line.len() - 2];
        assert!(shard.admit(value, b"GET", b"/x").is_ok());
        assert!(shard.admit(value, b"GET", b"/y").is_err());
        let counters = shard.counters.get();
        assert_eq!(
            (
                counters.peer_requests_received,
                counters.signature_rejections
            ),
            (1, 1)
        );
    }
}
