//! Measurement results: per-worker statistics (latency histogram, counters,
//! errors by kind), merging them at the end of a run, and presenting the
//! merged result as text or as the JSON object other tools (and `compare`)
//! consume.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latencies are recorded in nanoseconds; an hour bounds the histogram.
const HIST_MAX_NS: u64 = 3_600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // Invariant: the bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// Errors by kind. Statuses 4xx/5xx are complete responses that also count here.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    pub bad_response: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    pub checksum: u64,
    pub other: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Timeout,
    Reset,
    BadResponse,
    Status4xx,
    Status5xx,
    Checksum,
    Other,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        let slot = match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Reset => &mut self.reset,
            ErrorKind::BadResponse => &mut self.bad_response,
            ErrorKind::Status4xx => &mut self.status_4xx,
            ErrorKind::Status5xx => &mut self.status_5xx,
            ErrorKind::Checksum => &mut self.checksum,
            ErrorKind::Other => &mut self.other,
        };
        *slot += 1;
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.bad_response += o.bad_response;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.checksum += o.checksum;
        self.other += o.other;
    }

    pub fn total(&self) -> u64 {
        self.connect
            + self.timeout
            + self.reset
            + self.bad_response
            + self.status_4xx
            + self.status_5xx
            + self.checksum
            + self.other
    }
}

/// One worker's measurements; merged into a `RunResult` at the end.
pub struct WorkerStats {
    pub hist: Histogram<u64>,
    /// Completed responses (any status) sent during measurement.
    pub requests: u64,
    /// Bytes read from sockets during measurement (heads and bodies).
    pub bytes: u64,
    pub errors: ErrorCounts,
    /// Responses per status class, index = status / 100 (0 unused).
    pub status: [u64; 6],
    /// First few checksum mismatches, for printing.
    pub mismatches: Vec<String>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            hist: new_histogram(),
            requests: 0,
            bytes: 0,
            errors: ErrorCounts::default(),
            status: [0; 6],
            mismatches: Vec::new(),
        }
    }
}

impl WorkerStats {
    pub fn record_latency(&mut self, d: Duration) {
        let ns = (d.as_nanos() as u64).clamp(1, HIST_MAX_NS);
        // Invariant: the value is clamped into the histogram's range.
        let _ = self.hist.record(ns);
    }

    pub fn merge(&mut self, o: &WorkerStats) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
        self.requests += o.requests;
        self.bytes += o.bytes;
        self.errors.merge(&o.errors);
        for (a, b) in self.status.iter_mut().zip(o.status.iter()) {
            *a += b;
        }
        for m in &o.mismatches {
            if self.mismatches.len() < 20 {
                self.mismatches.push(m.clone());
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyMs {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorsOut {
    #[serde(flatten)]
    pub by_kind: ErrorCounts,
    pub total: u64,
}

/// The JSON object printed by `run --json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub requests: u64,
    pub duration_secs: f64,
    pub requests_per_sec: f64,
    pub bytes: u64,
    pub bytes_per_sec: f64,
    pub errors: ErrorsOut,
    pub status: StatusOut,
    pub latency_ms: LatencyMs,
    /// (percentile in 0..100, latency in ms) points for plotting, HdrHistogram style.
    pub latency_curve: Vec<(f64, f64)>,
    pub connections: usize,
    pub threads: usize,
    /// Target rate in open-loop mode (latency corrected for coordinated omission).
    pub rate: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusOut {
    #[serde(rename = "1xx")]
    pub s1xx: u64,
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl RunResult {
    pub fn from_stats(
        s: &WorkerStats,
        elapsed: Duration,
        connections: usize,
        threads: usize,
        rate: Option<f64>,
    ) -> RunResult {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let h = &s.hist;
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(p))
            }
        };
        let mut curve = Vec::new();
        if !h.is_empty() {
            for v in h.iter_quantiles(4) {
                let p = v.quantile_iterated_to() * 100.0;
                curve.push((p, ms(v.value_iterated_to())));
                if p >= 99.9999 {
                    break;
                }
            }
        }
        RunResult {
            requests: s.requests,
            duration_secs: secs,
            requests_per_sec: s.requests as f64 / secs,
            bytes: s.bytes,
            bytes_per_sec: s.bytes as f64 / secs,
            errors: ErrorsOut {
                by_kind: s.errors,
                total: s.errors.total(),
            },
            status: StatusOut {
                s1xx: s.status[1],
                s2xx: s.status[2],
                s3xx: s.status[3],
                s4xx: s.status[4],
                s5xx: s.status[5],
            },
            latency_ms: LatencyMs {
                mean: if h.is_empty() { 0.0 } else { h.mean() / 1e6 },
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                p9999: q(0.9999),
                max: if h.is_empty() { 0.0 } else { ms(h.max()) },
            },
            latency_curve: curve,
            connections,
            threads,
            rate,
        }
    }

    pub fn print_text(&self, full_curve: bool) {
        let mode = match self.rate {
            Some(r) => format!("open loop at {r:.0} req/s (latency from intended send time)"),
            None => "closed loop".to_string(),
        };
        println!(
            "{} connections, {} threads, {:.2}s, {mode}",
            self.connections, self.threads, self.duration_secs
        );
        println!(
            "  requests:   {:>12}   {:>12.1} req/s",
            self.requests, self.requests_per_sec
        );
        println!(
            "  transfer:   {:>12}   {:>12} /s",
            human_bytes(self.bytes as f64),
            human_bytes(self.bytes_per_sec)
        );
        let l = &self.latency_ms;
        println!("  latency ms: mean {:.3}", l.mean);
        println!(
            "    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p999, l.p9999, l.max
        );
        let st = &self.status;
        println!(
            "  status:     1xx {}  2xx {}  3xx {}  4xx {}  5xx {}",
            st.s1xx, st.s2xx, st.s3xx, st.s4xx, st.s5xx
        );
        let e = &self.errors.by_kind;
        println!(
            "  errors:     {} total (connect {}, timeout {}, reset {}, bad response {}, 4xx {}, 5xx {}, checksum {}, other {})",
            self.errors.total,
            e.connect,
            e.timeout,
            e.reset,
            e.bad_response,
            e.status_4xx,
            e.status_5xx,
            e.checksum,
            e.other
        );
        if full_curve {
            println!("  percentile      latency ms");
            for (p, v) in &self.latency_curve {
                println!("  {p:>10.5}   {v:>12.3}");
            }
        }
    }
}

pub fn human_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", UNITS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_percentiles() {
        let mut a = WorkerStats::default();
        let mut b = WorkerStats::default();
        for i in 1..=100u64 {
            a.record_latency(Duration::from_micros(i * 10));
            a.requests += 1;
        }
        b.record_latency(Duration::from_millis(50));
        b.requests += 1;
        b.errors.add(ErrorKind::Timeout);
        b.errors.add(ErrorKind::Status5xx);
        a.merge(&b);
        let r = RunResult::from_stats(&a, Duration::from_secs(2), 1, 1, None);
        assert_eq!(r.requests, 101);
        assert_eq!(r.errors.total, 2);
        assert!((r.requests_per_sec - 50.5).abs() < 1e-9);
        assert!(
            (r.latency_ms.p50 - 0.51).abs() < 0.01,
            "{}",
            r.latency_ms.p50
        );
        assert!((r.latency_ms.max - 50.0).abs() < 0.1);
        assert!(!r.latency_curve.is_empty());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["errors"]["timeout"], 1);
        assert_eq!(json["errors"]["total"], 2);
        assert!(json["latency_ms"]["p9999"].is_number());
    }
}
