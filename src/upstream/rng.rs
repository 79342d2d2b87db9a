//! A small per-shard pseudo-random source (xorshift64*) for the balancers'
//! random choices (p2c) and the retry backoff's jitter. Statistical quality is
//! all these need: no crate, no syscall, no state shared with another shard.

use std::cell::Cell;

pub struct Rng(Cell<u64>);

impl Rng {
    /// A generator whose sequence depends on `seed` (e.g. the shard id and the
    /// upstream index mixed with the start time).
    pub fn seeded(seed: u64) -> Rng {
        // splitmix64 spreads a small seed over all bits; xorshift needs non-zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng(Cell::new((z ^ (z >> 31)) | 1))
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift (no modulo bias worth naming).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_covers_the_range_evenly() {
        let rng = Rng::seeded(7);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[rng.below(4) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }
}
