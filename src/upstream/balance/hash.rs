//! Consistent hashing with bounded load: a ring of virtual nodes (points per
//! server in proportion to its weight, placed by hashing the server's
//! address, so a server's points do not move when another joins or leaves).
//! A key goes to the first server clockwise from its hash whose load is under
//! `ceil((1 + epsilon) * (total + 1) / usable)`: no server takes more than
//! `1 + epsilon` times the mean, and removing one of N servers moves only the
//! keys it held (about 1/N of them). Unusable servers are walked past, which
//! is the same as removing them. The loads are this shard's in-flight counts.

use super::{key::hash_bytes, weights, Balancer, Candidates};
use crate::config::ServerEntry;

/// Points per unit of weight: enough for an even split of the key space
/// (spread within a few percent at 160), few enough for a fast binary search.
const POINTS_PER_WEIGHT: u64 = 160;
/// The ring's size limit; heavy weights are scaled down to fit.
const MAX_POINTS: u64 = 64 * 1024;

pub struct HashRing {
    /// (point, server), sorted by point.
    ring: Vec<(u64, u32)>,
    servers: usize,
    epsilon: f64,
}

impl HashRing {
    pub fn new(servers: &[ServerEntry], epsilon: f64) -> HashRing {
        let weights = weights(servers);
        let total: u64 = weights.iter().sum();
        let scale = (POINTS_PER_WEIGHT * total).div_ceil(MAX_POINTS).max(1);
        let mut ring = Vec::new();
        for (i, (server, weight)) in servers.iter().zip(&weights).enumerate() {
            let points = (POINTS_PER_WEIGHT * weight / scale).max(1);
            let name = server.addr.to_string();
            for point in 0..points {
                let label = format!("{name}#{point}");
                ring.push((hash_bytes(label.as_bytes()), i as u32));
            }
        }
        ring.sort_unstable();
        HashRing {
            ring,
            servers: servers.len(),
            epsilon,
        }
    }

    /// Most requests in flight a server may hold for a new one to join it.
    fn capacity(&self, candidates: &Candidates<'_>) -> Option<u64> {
        let (mut total, mut usable) = (0u64, 0u64);
        for i in (0..self.servers).filter(|&i| (candidates.usable)(i)) {
            total += u64::from((candidates.load)(i));
            usable += 1;
        }
        if usable == 0 {
            return None;
        }
        let bound = (1.0 + self.epsilon) * (total + 1) as f64 / usable as f64;
        Some(bound.ceil() as u64)
    }
}

impl Balancer for HashRing {
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let capacity = self.capacity(candidates)?;
        // A request without a key lands anywhere (still under the bound).
        let key = candidates.key.unwrap_or_else(|| candidates.rng.next_u64());
        let start = self.ring.partition_point(|&(point, _)| point < key);
        let mut first_usable = None;
        for k in 0..self.ring.len() {
            let server = self.ring[(start + k) % self.ring.len()].1 as usize;
            if !(candidates.usable)(server) {
                continue;
            }
            if u64::from((candidates.load)(server)) < capacity {
                return Some(server);
            }
            first_usable.get_or_insert(server);
        }
        // Unreachable while one server is usable (one is always under the
        // bound), kept so a pick never fails while a server is usable.
        first_usable
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::super::testing::*;
    use super::*;
    use crate::upstream::rng::Rng;

    fn owner(ring: &HashRing, key: u64, usable: &dyn Fn(usize) -> bool) -> usize {
        let rng = Rng::seeded(1);
        let candidates = Candidates {
            usable,
            load: &|_| 0,
            key: Some(key),
            rng: &rng,
        };
        ring.pick(&candidates).unwrap()
    }

    #[test]
    fn a_key_stays_on_its_server() {
        let ring = HashRing::new(&servers(&[1, 1, 1, 1]), 0.25);
        for key in 0..100u64 {
            let key = hash_bytes(&key.to_le_bytes());
            let first = owner(&ring, key, &|_| true);
            assert_eq!(owner(&ring, key, &|_| true), first);
        }
    }

    #[test]
    fn keys_spread_by_weight() {
        let weights = [1, 1, 2];
        let ring = HashRing::new(&servers(&weights), 0.25);
        let mut counts = [0usize; 3];
        for key in 0..10_000u64 {
            counts[owner(&ring, hash_bytes(&key.to_le_bytes()), &|_| true)] += 1;
        }
        // A ring is only statistically even: 10 % rather than the rotations' 5 %.
        let total: usize = counts.iter().sum();
        for (count, weight) in counts.iter().zip(weights) {
            let expected = total as f64 * f64::from(weight) / 4.0;
            assert!(
                (*count as f64 - expected).abs() / expected < 0.10,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_the_keys() {
        const N: usize = 5;
        let ring = HashRing::new(&servers(&[1; N]), 0.25);
        let keys: Vec<u64> = (0..10_000u64)
            .map(|k| hash_bytes(&k.to_le_bytes()))
            .collect();
        let before: Vec<usize> = keys.iter().map(|&k| owner(&ring, k, &|_| true)).collect();
        // Server 3 leaves (down or ejected: unusable is the same as removed).
        let after: Vec<usize> = keys.iter().map(|&k| owner(&ring, k, &|i| i != 3)).collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == 3, "a key on a remaining server moved");
        }
        let share = moved as f64 / keys.len() as f64;
        assert!((0.15..0.25).contains(&share), "moved {share} of the keys");
        // A new ring built without server 3 agrees: points depend on addresses.
        let mut fewer = servers(&[1; N]);
        fewer.remove(3);
        let smaller = HashRing::new(&fewer, 0.25);
        let agree = keys
            .iter()
            .zip(&after)
            .filter(|(&k, &a)| {
                let s = owner(&smaller, k, &|_| true);
                fewer[s].addr == servers(&[1; N])[a].addr
            })
            .count();
        assert_eq!(agree, keys.len());
    }

    #[test]
    fn bounded_load_holds() {
        // Every request has the same key: without the bound one server would take all.
        let epsilon = 0.25;
        let ring = HashRing::new(&servers(&[1, 1, 1, 1]), epsilon);
        let rng = Rng::seeded(5);
        let loads: Vec<Cell<u32>> = (0..4).map(|_| Cell::new(0)).collect();
        for placed in 0..400u32 {
            let candidates = Candidates {
                usable: &|_| true,
                load: &|i| loads[i].get(),
                key: Some(42),
                rng: &rng,
            };
            let s = ring.pick(&candidates).unwrap();
            loads[s].set(loads[s].get() + 1);
            let mean = f64::from(placed + 1) / 4.0;
            let max = loads.iter().map(Cell::get).max().unwrap();
            assert!(
                f64::from(max) <= ((1.0 + epsilon) * mean).ceil(),
                "after {} requests a server holds {max} (mean {mean})",
                placed + 1
            );
        }
    }
}
