//! The load-aware balancers: least connections and power of two choices.
//! "Load" is the number of requests this shard has in flight to a server,
//! divided by its weight; another shard's requests are not seen (a global
//! count would be a cross-core write per request). With SO_REUSEPORT
//! spreading clients evenly, each shard's view is a fair sample of the whole.

use std::cell::{Cell, RefCell};

use super::{weights, Balancer, Candidates};
use crate::config::ServerEntry;

/// Whether server `a` is less loaded than `b` per unit of weight:
/// `load_a / w_a < load_b / w_b`, without division.
fn lighter(candidates: &Candidates<'_>, weights: &[u64], a: usize, b: usize) -> bool {
    let load = |i: usize| u64::from((candidates.load)(i));
    load(a) * weights[b] < load(b) * weights[a]
}

/// The usable server with the fewest requests in flight per unit of weight;
/// ties go round-robin, so an idle upstream still spreads its requests.
pub struct LeastConn {
    weights: Vec<u64>,
    next: Cell<usize>,
}

impl LeastConn {
    pub fn new(servers: &[ServerEntry]) -> LeastConn {
        LeastConn {
            weights: weights(servers),
            next: Cell::new(0),
        }
    }
}

impl Balancer for LeastConn {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let n = self.weights.len();
        let start = self.next.get();
        let best = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| (candidates.usable)(i))
            .reduce(|best, i| {
                if lighter(candidates, &self.weights, i, best) {
                    i
                } else {
                    best
                }
            })?;
        self.next.set(best + 1);
        Some(best)
    }
}

/// Power of two choices: two distinct usable servers at random, the lighter
/// wins. Nearly as good as least connections at spreading load, and without
/// its herding: many shards with stale views do not all pile onto the one
/// server that looks idlest.
pub struct PowerOfTwo {
    weights: Vec<u64>,
    /// The usable servers of the current pick; kept to avoid an allocation per pick.
    usable: RefCell<Vec<usize>>,
}

impl PowerOfTwo {
    pub fn new(servers: &[ServerEntry]) -> PowerOfTwo {
        PowerOfTwo {
            weights: weights(servers),
            usable: RefCell::new(Vec::with_capacity(servers.len())),
        }
    }
}

impl Balancer for PowerOfTwo {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let mut usable = self.usable.borrow_mut();
        usable.clear();
        usable.extend((0..self.weights.len()).filter(|&i| (candidates.usable)(i)));
        let n = usable.len() as u64;
        match n {
            0 => return None,
            1 => return Some(usable[0]),
            _ => {}
        }
        let first = candidates.rng.below(n);
        let mut second = candidates.rng.below(n - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (usable[first as usize], usable[second as usize]);
        Some(if lighter(candidates, &self.weights, b, a) {
            b
        } else {
            a
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::upstream::rng::Rng;

    /// Simulates `n` requests that each stay in flight for `hold` picks.
    fn simulate(balancer: &dyn Balancer, servers: usize, n: usize, hold: usize) -> Vec<usize> {
        let rng = Rng::seeded(9);
        let loads: Vec<Cell<u32>> = (0..servers).map(|_| Cell::new(0)).collect();
        let mut in_flight = std::collections::VecDeque::new();
        let mut counts = vec![0; servers];
        for _ in 0..n {
            if in_flight.len() == hold {
                let done: usize = in_flight.pop_front().unwrap();
                loads[done].set(loads[done].get() - 1);
            }
            let candidates = Candidates {
                usable: &|_| true,
                load: &|i| loads[i].get(),
                key: None,
                rng: &rng,
            };
            let picked = balancer.pick(&candidates).unwrap();
            loads[picked].set(loads[picked].get() + 1);
            in_flight.push_back(picked);
            counts[picked] += 1;
        }
        counts
    }

    #[test]
    fn least_conn_follows_weights_under_load() {
        let weights = [3, 1];
        let lc = LeastConn::new(&servers(&weights));
        assert_weighted(&simulate(&lc, 2, 10_000, 8), &weights);
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let lc = LeastConn::new(&servers(&[1, 1, 1]));
        let rng = Rng::seeded(1);
        let loads = [4, 0, 2];
        let candidates = Candidates {
            usable: &|_| true,
            load: &|i| loads[i],
            key: None,
            rng: &rng,
        };
        assert_eq!(lc.pick(&candidates), Some(1));
        let busy_one_unusable = Candidates {
            usable: &|i| i != 1,
            ..candidates
        };
        assert_eq!(lc.pick(&busy_one_unusable), Some(2));
    }

    #[test]
    fn p2c_spreads_evenly_and_follows_weights() {
        let p2c = PowerOfTwo::new(&servers(&[1, 1, 1, 1]));
        assert_weighted(&simulate(&p2c, 4, 10_000, 8), &[1, 1, 1, 1]);
        let weights = [2, 1];
        let p2c = PowerOfTwo::new(&servers(&weights));
        assert_weighted(&simulate(&p2c, 2, 10_000, 12), &weights);
    }

    #[test]
    fn p2c_never_picks_an_unusable_server() {
        let p2c = PowerOfTwo::new(&servers(&[1, 1, 1]));
        let rng = Rng::seeded(3);
        let candidates = Candidates {
            usable: &|i| i == 2,
            load: &|_| 0,
            key: None,
            rng: &rng,
        };
        for _ in 0..100 {
            assert_eq!(p2c.pick(&candidates), Some(2));
        }
    }

    type MakeBalancer<'a> = dyn Fn() -> Box<dyn Balancer> + 'a;

    /// Mean spread (most loaded minus least loaded server, by the global
    /// count) seen at each arrival, with `shards` balancers that each see
    /// only their own requests; a closed loop of 24 requests in flight over 3
    /// servers, each arrival on a random shard, each completion a random
    /// request in flight.
    fn mean_spread(make: &MakeBalancer<'_>, shards: usize) -> f64 {
        const SERVERS: usize = 3;
        let rng = Rng::seeded(11);
        let balancers: Vec<Box<dyn Balancer>> = (0..shards).map(|_| make()).collect();
        let local: Vec<Vec<Cell<u32>>> = (0..shards)
            .map(|_| (0..SERVERS).map(|_| Cell::new(0)).collect())
            .collect();
        let mut in_flight: Vec<(usize, usize)> = Vec::new();
        let (mut spread_sum, mut arrivals) = (0u64, 0u64);
        for _ in 0..200_000 {
            if in_flight.len() < 24 && rng.below(2) == 0 || in_flight.is_empty() {
                let shard = rng.below(shards as u64) as usize;
                let candidates = Candidates {
                    usable: &|_| true,
                    load: &|i| local[shard][i].get(),
                    key: None,
                    rng: &rng,
                };
                let server = balancers[shard].pick(&candidates).unwrap();
                local[shard][server].set(local[shard][server].get() + 1);
                in_flight.push((shard, server));
                let global: Vec<u32> = (0..SERVERS)
                    .map(|i| local.iter().map(|l| l[i].get()).sum())
                    .collect();
                spread_sum +=
                    u64::from(global.iter().max().unwrap() - global.iter().min().unwrap());
                arrivals += 1;
            } else {
                let done = rng.below(in_flight.len() as u64) as usize;
                let (shard, server) = in_flight.swap_remove(done);
                local[shard][server].set(local[shard][server].get() - 1);
            }
        }
        spread_sum as f64 / arrivals as f64
    }

    /// How far per-shard views drift from a global one: the same simulated
    /// traffic balanced by one balancer that sees every request (1 shard)
    /// and by two that each see their own half. The numbers are printed
    /// (`cargo test --lib drift -- --nocapture`); the bound is loose.
    #[test]
    fn per_shard_views_drift_little_from_a_global_one() {
        let equal = servers(&[1, 1, 1]);
        let least_conn = || Box::new(LeastConn::new(&equal)) as Box<dyn Balancer>;
        let p2c = || Box::new(PowerOfTwo::new(&equal)) as Box<dyn Balancer>;
        let kinds: [(&str, &MakeBalancer<'_>); 2] = [("least_conn", &least_conn), ("p2c", &p2c)];
        for (name, make) in kinds {
            let global = mean_spread(make, 1);
            let sharded = mean_spread(make, 2);
            eprintln!(
                "{name}: mean spread {global:.2} with a global view, {sharded:.2} with 2 shards"
            );
            assert!(sharded <= global + 1.5, "{name}: {global} vs {sharded}");
        }
    }
}
