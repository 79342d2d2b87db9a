//! Key distributions for cache workloads (`--paths N --dist uniform|zipf:S`).
//! The client appends `/{i}` to each URL's path, with `i` in `0..N` drawn from
//! the distribution; index 0 is the most popular key under zipf.

use crate::util::Rng;
use std::sync::Arc;

/// Largest `--paths` we accept: the zipf table costs 8 bytes per key.
pub const MAX_PATHS: u64 = 50_000_000;

#[derive(Clone, Debug, PartialEq)]
pub enum DistSpec {
    Uniform,
    Zipf(f64),
}

/// Parses `uniform` or `zipf:S` (S > 0, e.g. `zipf:0.99`, `zipf:1.2`).
pub fn parse_dist(s: &str) -> Result<DistSpec, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("uniform") {
        return Ok(DistSpec::Uniform);
    }
    if let Some(exp) = s.strip_prefix("zipf:").or_else(|| s.strip_prefix("zipf=")) {
        let v: f64 = exp
            .parse()
            .map_err(|_| format!("invalid zipf exponent {exp:?}: expected a number like 0.99"))?;
        if !(v.is_finite() && v > 0.0 && v <= 10.0) {
            return Err(format!("zipf exponent must be in (0, 10], got {v}"));
        }
        return Ok(DistSpec::Zipf(v));
    }
    if s.eq_ignore_ascii_case("zipf") {
        return Ok(DistSpec::Zipf(1.0));
    }
    Err(format!(
        "invalid distribution {s:?}: expected uniform or zipf:S (e.g. zipf:0.99)"
    ))
}

/// A sampler over `0..n`. Zipf keeps a shared cumulative table (built once,
/// shared read-only by every connection) and samples by binary search, which
/// is exact and needs no per-sample allocation.
#[derive(Clone, Debug)]
pub enum KeyDist {
    Uniform(u64),
    Zipf(Arc<[f64]>),
}

impl KeyDist {
    pub fn new(n: u64, spec: &DistSpec) -> Result<KeyDist, String> {
        if n == 0 || n > MAX_PATHS {
            return Err(format!("--paths must be in 1..={MAX_PATHS}, got {n}"));
        }
        match spec {
            DistSpec::Uniform => Ok(KeyDist::Uniform(n)),
            DistSpec::Zipf(s) => {
                let mut cdf = Vec::with_capacity(n as usize);
                let mut acc = 0.0f64;
                for k in 1..=n {
                    acc += 1.0 / (k as f64).powf(*s);
                    cdf.push(acc);
                }
                let total = acc;
                for v in cdf.iter_mut() {
                    *v /= total;
                }
                Ok(KeyDist::Zipf(cdf.into()))
            }
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyDist::Uniform(n) => rng.below(*n),
            KeyDist::Zipf(cdf) => {
                let u = rng.next_f64();
                let idx = cdf.partition_point(|&c| c < u);
                idx.min(cdf.len() - 1) as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_specs() {
        assert_eq!(parse_dist("uniform").unwrap(), DistSpec::Uniform);
        assert_eq!(parse_dist("zipf:0.99").unwrap(), DistSpec::Zipf(0.99));
        assert_eq!(parse_dist("zipf").unwrap(), DistSpec::Zipf(1.0));
        assert!(parse_dist("zipf:-1").is_err());
        assert!(parse_dist("normal").is_err());
    }

    #[test]
    fn uniform_covers_range() {
        let d = KeyDist::new(10, &DistSpec::Uniform).unwrap();
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[d.sample(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }

    #[test]
    fn zipf_frequencies_follow_power_law() {
        let n = 1000;
        let d = KeyDist::new(n, &DistSpec::Zipf(1.0)).unwrap();
        let mut rng = Rng::new(42);
        let mut counts = vec![0u32; n as usize];
        let samples = 200_000;
        for _ in 0..samples {
            counts[d.sample(&mut rng) as usize] += 1;
        }
        // With s = 1, P(k) = 1/(k * H_n); H_1000 ≈ 7.485.
        let h = 7.485;
        let expect0 = samples as f64 / h;
        let expect1 = samples as f64 / (2.0 * h);
        assert!((counts[0] as f64 - expect0).abs() < expect0 * 0.05);
        assert!((counts[1] as f64 - expect1).abs() < expect1 * 0.07);
        // Ratio of rank 1 to rank 10 should be about 10.
        let ratio = counts[0] as f64 / counts[9] as f64;
        assert!((7.0..14.0).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn bad_sizes_rejected() {
        assert!(KeyDist::new(0, &DistSpec::Uniform).is_err());
        assert!(KeyDist::new(MAX_PATHS + 1, &DistSpec::Uniform).is_err());
    }
}
