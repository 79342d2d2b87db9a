//! Server selection within an upstream, behind the [`Balancer`] trait so that
//! later policies (least connections, consistent hashing) slot in beside
//! weighted round-robin without touching the proxy.
//!
//! Balancer state is per shard (interior mutability through `Cell`), so picks
//! never synchronise with other cores; each shard's rotation is independent.

use std::cell::RefCell;

use crate::config::ServerEntry;

/// Picks the server for the next request.
pub trait Balancer {
    /// Index into the upstream's server list.
    fn pick(&self) -> usize;
}

/// Smooth weighted round-robin (the nginx algorithm): every server's score grows
/// by its weight on each pick, the highest score wins and pays back the total.
/// Heavier servers get proportionally more picks, spread out rather than in bursts.
/// With equal weights this is plain round-robin.
pub struct WeightedRoundRobin {
    weights: Vec<i64>,
    total: i64,
    scores: RefCell<Vec<i64>>,
}

impl WeightedRoundRobin {
    pub fn new(servers: &[ServerEntry]) -> WeightedRoundRobin {
        let weights: Vec<i64> = servers.iter().map(|s| i64::from(s.weight.max(1))).collect();
        WeightedRoundRobin {
            total: weights.iter().sum(),
            scores: RefCell::new(vec![0; weights.len()]),
            weights,
        }
    }
}

impl Balancer for WeightedRoundRobin {
    fn pick(&self) -> usize {
        if self.weights.len() == 1 {
            return 0;
        }
        let mut scores = self.scores.borrow_mut();
        let mut best = 0;
        for (i, score) in scores.iter_mut().enumerate() {
            *score += self.weights[i];
        }
        for i in 1..scores.len() {
            if scores[i] > scores[best] {
                best = i;
            }
        }
        scores[best] -= self.total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(weights: &[u32]) -> Vec<ServerEntry> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| ServerEntry {
                addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                weight,
            })
            .collect()
    }

    #[test]
    fn equal_weights_rotate() {
        let rr = WeightedRoundRobin::new(&servers(&[1, 1, 1]));
        let picks: Vec<usize> = (0..6).map(|_| rr.pick()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_proportional_and_smooth() {
        let rr = WeightedRoundRobin::new(&servers(&[5, 1, 1]));
        let picks: Vec<usize> = (0..7).map(|_| rr.pick()).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }
}
