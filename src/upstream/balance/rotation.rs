//! The rotating balancers: plain round-robin (weights ignored) and smooth
//! weighted round-robin (the nginx algorithm). Both skip servers the caller
//! marks unusable without disturbing the order among the others.

use std::cell::{Cell, RefCell};

use super::{weights, Balancer, Candidates};
use crate::config::ServerEntry;

/// Each usable server in turn.
pub struct RoundRobin {
    servers: usize,
    next: Cell<usize>,
}

impl RoundRobin {
    pub fn new(servers: usize) -> RoundRobin {
        RoundRobin {
            servers,
            next: Cell::new(0),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let start = self.next.get();
        let picked = (0..self.servers)
            .map(|k| (start + k) % self.servers)
            .find(|&i| (candidates.usable)(i))?;
        self.next.set(picked + 1);
        Some(picked)
    }
}

/// Smooth weighted round-robin: every usable server's score grows by its
/// weight on each pick, the highest score wins and pays back the usable
/// total. Heavier servers get proportionally more picks, spread out rather
/// than in bursts. With equal weights this is plain round-robin.
pub struct WeightedRoundRobin {
    weights: Vec<i64>,
    scores: RefCell<Vec<i64>>,
}

impl WeightedRoundRobin {
    pub fn new(servers: &[ServerEntry]) -> WeightedRoundRobin {
        let weights: Vec<i64> = weights(servers).into_iter().map(|w| w as i64).collect();
        WeightedRoundRobin {
            scores: RefCell::new(vec![0; weights.len()]),
            weights,
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let mut scores = self.scores.borrow_mut();
        let mut total = 0;
        for (i, score) in scores.iter_mut().enumerate() {
            if (candidates.usable)(i) {
                *score += self.weights[i];
                total += self.weights[i];
            }
        }
        let best = (0..scores.len())
            .filter(|&i| (candidates.usable)(i))
            .reduce(|best, i| if scores[i] > scores[best] { i } else { best })?;
        scores[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::upstream::rng::Rng;

    fn picks(balancer: &dyn Balancer, n: usize, usable: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let rng = Rng::seeded(1);
        let candidates = Candidates {
            usable,
            load: &|_| 0,
            key: None,
            rng: &rng,
        };
        (0..n)
            .map(|_| balancer.pick(&candidates).unwrap())
            .collect()
    }

    #[test]
    fn equal_weights_rotate() {
        let rr = WeightedRoundRobin::new(&servers(&[1, 1, 1]));
        assert_eq!(picks(&rr, 6, &|_| true), [0, 1, 2, 0, 1, 2]);
        let plain = RoundRobin::new(3);
        assert_eq!(picks(&plain, 6, &|_| true), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_proportional_and_smooth() {
        let rr = WeightedRoundRobin::new(&servers(&[5, 1, 1]));
        assert_eq!(picks(&rr, 7, &|_| true), [0, 0, 1, 0, 2, 0, 0]);
        let weights = [5, 3, 2];
        let rr = WeightedRoundRobin::new(&servers(&weights));
        assert_weighted(&count_picks(&rr, 3, 10_000), &weights);
    }

    #[test]
    fn round_robin_ignores_weights() {
        let rr = RoundRobin::new(3);
        assert_weighted(&count_picks(&rr, 3, 10_000), &[1, 1, 1]);
    }

    #[test]
    fn unusable_servers_are_skipped() {
        let rr = WeightedRoundRobin::new(&servers(&[1, 1, 1]));
        assert_eq!(picks(&rr, 4, &|i| i != 1), [0, 2, 0, 2]);
        let plain = RoundRobin::new(3);
        assert_eq!(picks(&plain, 4, &|i| i != 0), [1, 2, 1, 2]);
        let rng = Rng::seeded(1);
        let none = Candidates {
            usable: &|_| false,
            load: &|_| 0,
            key: None,
            rng: &rng,
        };
        assert_eq!(rr.pick(&none), None);
        assert_eq!(plain.pick(&none), None);
    }
}
