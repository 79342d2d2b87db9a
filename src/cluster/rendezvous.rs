//! Rendezvous (highest random weight) hashing: which node owns a cache key.
//!
//! Every node scores each member against the key's hash and the highest
//! score owns it. Nodes agree without talking because the score depends only
//! on the key and the member's identity (its `ip:port`), never on the order
//! of the list or on how many members there are. Removing a member moves
//! only the keys it owned (each to its runner-up); adding one moves to it
//! about 1/N of the keys, taken evenly from every other member. Consistent
//! hashing on a ring does the same with virtual nodes to even out the load;
//! rendezvous needs none, and N is small (a score per member per miss).
//!
//! Pure functions; no state, nothing shared.

use std::net::SocketAddr;

/// A member's identity folded to 64 bits once, so a score is one mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberHash(u64);

impl MemberHash {
    /// FNV-1a over the address as text (`ip:port`): the same on every node
    /// and every build, unlike `std`'s randomly keyed hasher.
    pub fn of(addr: SocketAddr) -> MemberHash {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in addr.to_string().bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        MemberHash(hash)
    }
}

/// The weight of `member` for the key whose hash is `key_hash`: a strong
/// 64-bit mix (murmur3's finalizer) of both, so scores of two members for
/// one key are unrelated, and so are one member's scores for two keys.
pub fn score(key_hash: u64, member: MemberHash) -> u64 {
    let mut x = key_hash ^ member.0.rotate_left(17) ^ member.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The index of the member with the highest score among those `live` says
/// may own keys; `None` when none may. Ties (equal 64-bit scores, odds
/// 2^-64) go to the lower index: member lists are sorted by address
/// (`members`), so every node breaks a tie the same way.
pub fn owner<T>(
    key_hash: u64,
    members: &[T],
    hash_of: impl Fn(&T) -> MemberHash,
    live: impl Fn(&T) -> bool,
) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .filter(|(_, m)| live(m))
        .map(|(i, m)| (score(key_hash, hash_of(m)), i))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> (SocketAddr, MemberHash) {
        let addr = SocketAddr::from(([10, 0, 0, (i % 250) as u8 + 1], 8080 + i));
        (addr, MemberHash::of(addr))
    }

    fn owners(nodes: &[(SocketAddr, MemberHash)], keys: u64) -> Vec<SocketAddr> {
        (0..keys)
            .map(|k| {
                let hash = crate::cache::key::hash_key(format!("G http://h/k{k}").as_bytes());
                let i = owner(hash, nodes, |n| n.1, |_| true).expect("members");
                nodes[i].0
            })
            .collect()
    }

    const KEYS: u64 = 10_000;

    #[test]
    fn the_owner_does_not_depend_on_list_order() {
        let nodes: Vec<_> = (0..5).map(node).collect();
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(owners(&nodes, KEYS), owners(&reversed, KEYS));
    }

    #[test]
    fn keys_spread_evenly() {
        let nodes: Vec<_> = (0..4).map(node).collect();
        let owned = owners(&nodes, KEYS);
        for (addr, _) in &nodes {
            let share = owned.iter().filter(|o| *o == addr).count() as f64 / KEYS as f64;
            assert!((0.22..0.28).contains(&share), "{addr} owns {share}");
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_nth_of_the_keys_all_to_it() {
        let three: Vec<_> = (0..3).map(node).collect();
        let four: Vec<_> = (0..4).map(node).collect();
        let (before, after) = (owners(&three, KEYS), owners(&four, KEYS));
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        let share = moved.len() as f64 / KEYS as f64;
        assert!(
            (0.22..0.28).contains(&share),
            "moved {share}, expected ~1/4"
        );
        assert!(
            moved.iter().all(|(_, a)| **a == four[3].0),
            "a key moved between old nodes"
        );
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let four: Vec<_> = (0..4).map(node).collect();
        let three = &four[..3];
        let (before, after) = (owners(&four, KEYS), owners(three, KEYS));
        let gone = four[3].0;
        for (b, a) in before.iter().zip(&after) {
            assert!(*b == gone || b == a, "a key of a remaining node moved");
        }
        let moved = before.iter().filter(|b| **b == gone).count() as f64 / KEYS as f64;
        assert!((0.22..0.28).contains(&moved), "moved {moved}");
    }

    #[test]
    fn a_member_not_live_passes_its_keys_to_the_runner_up() {
        let nodes: Vec<_> = (0..3).map(node).collect();
        let hash = crate::cache::key::hash_key(b"G http://h/x");
        let first = owner(hash, &nodes, |n| n.1, |_| true).unwrap();
        let second = owner(hash, &nodes, |n| n.1, |n| n.0 != nodes[first].0).unwrap();
        assert_ne!(first, second);
        let without: Vec<_> = nodes
            .iter()
            .copied()
            .filter(|n| n.0 != nodes[first].0)
            .collect();
        let expected = owner(hash, &without, |n| n.1, |_| true).unwrap();
        assert_eq!(nodes[second].0, without[expected].0);
        assert_eq!(owner(hash, &nodes, |n| n.1, |_| false), None);
    }
}
