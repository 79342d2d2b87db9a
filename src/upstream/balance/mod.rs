//! Server selection within an upstream, behind the [`Balancer`] trait: each
//! policy (`rotation`: round-robin and smooth weighted round-robin; `load`:
//! least connections and power of two choices; `hash`: a consistent-hash ring
//! with bounded load) picks among the servers the caller says are usable
//! (health-checked up, not ejected, under `max_conns`, not already tried).
//!
//! Balancer state is per shard (`Cell`/`RefCell`), so picks never synchronise
//! with other cores; loads are this shard's own requests in flight.

mod hash;
pub mod key;
mod load;
mod rotation;

use crate::{
    config::{Balance, ServerEntry},
    upstream::rng::Rng,
};

pub use hash::HashRing;
pub use load::{LeastConn, PowerOfTwo};
pub use rotation::{RoundRobin, WeightedRoundRobin};

/// What a balancer may look at for one pick.
pub struct Candidates<'a> {
    /// Whether server `i` may take this request.
    pub usable: &'a dyn Fn(usize) -> bool,
    /// Server `i`'s requests in flight from this shard.
    pub load: &'a dyn Fn(usize) -> u32,
    /// The request's hash key, for `consistent_hash`.
    pub key: Option<u64>,
    pub rng: &'a Rng,
}

/// Picks the server for the next request.
pub trait Balancer {
    /// Index into the upstream's server list, or `None` when no server is usable.
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize>;
}

/// The balancer `balance` names, over `servers`.
pub fn build(balance: Balance, servers: &[ServerEntry], epsilon: f64) -> Box<dyn Balancer> {
    match balance {
        Balance::RoundRobin => Box::new(RoundRobin::new(servers.len())),
        Balance::Weighted => Box::new(WeightedRoundRobin::new(servers)),
        Balance::LeastConn => Box::new(LeastConn::new(servers)),
        Balance::P2c => Box::new(PowerOfTwo::new(servers)),
        Balance::ConsistentHash => Box::new(HashRing::new(servers, epsilon)),
    }
}

/// Weights as the balancers use them (at least 1).
fn weights(servers: &[ServerEntry]) -> Vec<u64> {
    servers.iter().map(|s| u64::from(s.weight.max(1))).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers the balancer tests share: server lists and pick counting.

    use super::*;

    pub fn servers(weights: &[u32]) -> Vec<ServerEntry> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| ServerEntry {
                addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                weight,
            })
            .collect()
    }

    /// Picks `n` times with every server usable and no load; counts per server.
    pub fn count_picks(balancer: &dyn Balancer, servers: usize, n: usize) -> Vec<usize> {
        let rng = Rng::seeded(1);
        let mut counts = vec![0; servers];
        for i in 0..n {
            let candidates = Candidates {
                usable: &|_| true,
                load: &|_| 0,
                key: Some(i as u64),
                rng: &rng,
            };
            counts[balancer.pick(&candidates).unwrap()] += 1;
        }
        counts
    }

    /// Asserts each server got its weight's share of `n` picks within 5 %.
    #[track_caller]
    pub fn assert_weighted(counts: &[usize], weights: &[u32]) {
        let total: usize = counts.iter().sum();
        let weight_sum: u32 = weights.iter().sum();
        for (count, weight) in counts.iter().zip(weights) {
            let expected = total as f64 * f64::from(*weight) / f64::from(weight_sum);
            let off = (*count as f64 - expected).abs() / expected;
            assert!(off <= 0.05, "{counts:?} vs weights {weights:?}");
        }
    }
}
