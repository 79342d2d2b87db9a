//! Small shared helpers: parsing human-friendly durations and sizes from the
//! command line, counting CPUs, raising resource limits, pinning threads,
//! making room in a read buffer, announcing a server's addresses.
//! Kept dependency-free so both the client and the origin can use them.

use std::io::Write;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

/// Prints `NAME listening on ADDR` for every bound address (scripts and
/// `compare` read the port from that line), then waits for the shard
/// threads: the first one's error, or its panic, is the server's.
pub fn announce_and_join(
    name: &str,
    bound: &[SocketAddr],
    shards: Vec<JoinHandle<Result<(), String>>>,
) -> Result<(), String> {
    {
        let mut out = std::io::stdout().lock();
        for addr in bound {
            let _ = writeln!(out, "{name} listening on {addr}");
        }
        let _ = out.flush();
    }
    for shard in shards {
        match shard.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(format!("a {name} shard panicked")),
        }
    }
    Ok(())
}

/// Parses "10s", "250ms", "1.5s", "2m", "1h", "100us" or a bare number of
/// seconds. Clap calls this, so the error text is what the user sees.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: expected e.g. 10s, 250ms, 2m"
        ));
    }
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: bad number {num:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
    };
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("invalid duration {s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses "1024", "64KiB", "1MiB", "16k" into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 1024, 64KiB, 1MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
    };
    value
        .checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// Online CPUs; thread-per-core defaults follow it.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A list of CPU ids from the command line (a newtype so clap treats it as
/// one value rather than a repeated argument).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses "0,1" or "0-3" or "0-1,4" into a list of CPU ids.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("invalid cpu list {s:?}: expected e.g. 0,1 or 0-3");
        if let Some((a, b)) = part.split_once('-') {
            let a: usize = a.trim().parse().map_err(|_| bad())?;
            let b: usize = b.trim().parse().map_err(|_| bad())?;
            if a > b || b - a > 4096 {
                return Err(bad());
            }
            out.extend(a..=b);
        } else {
            out.push(part.parse().map_err(|_| bad())?);
        }
    }
    if out.is_empty() {
        return Err(format!("invalid cpu list {s:?}: empty"));
    }
    Ok(CpuList(out))
}

/// Many connections need many descriptors, and before Linux 5.12 io_uring
/// rings count against RLIMIT_MEMLOCK. Raise both soft limits to the hard
/// limits; failures are harmless (we just keep the old limit).
pub fn raise_limits() {
    for res in [libc::RLIMIT_NOFILE, libc::RLIMIT_MEMLOCK] {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        unsafe {
            if libc::getrlimit(res, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(res, &lim);
            }
        }
    }
}

/// Pins the calling thread to `cpu` if such a core exists; a missing core is
/// not fatal (the thread just floats), but we say so once.
pub fn pin_current_thread(cpu: usize) {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    match ids.into_iter().find(|c| c.id == cpu) {
        Some(core) => {
            if !core_affinity::set_for_current(core) {
                log::warn!("could not pin thread to cpu {cpu}");
            }
        }
        None => log::warn!("cpu {cpu} not available; thread not pinned"),
    }
}

/// The CPU a worker/shard index lands on: an explicit list wins, otherwise
/// round-robin over the online CPUs.
pub fn cpu_for(index: usize, cpus: Option<&CpuList>) -> usize {
    match cpus {
        Some(CpuList(list)) if !list.is_empty() => list[index % list.len()],
        _ => index % cpu_count(),
    }
}

/// Tiny splitmix64 generator: per-connection, allocation-free and good enough
/// for picking paths and jittering start times (not for cryptography).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Writes `v` in decimal into `out` without allocating.
pub fn push_decimal(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = v;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Writes `v` in lowercase hex into `out` without allocating.
pub fn push_hex(out: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    let mut v = v;
    loop {
        i -= 1;
        tmp[i] = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Makes room at the end of a read buffer whose unread bytes are
/// `buf[*start..*end]`: rewinds when everything was read, slides the unread
/// bytes to the front only when the tail is full (so a steady stream of small
/// messages never copies).
pub fn make_read_room(buf: &mut [u8], start: &mut usize, end: &mut usize) {
    if *start == *end {
        *start = 0;
        *end = 0;
    } else if *end == buf.len() {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("10parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1m").unwrap(), 1 << 20);
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,1").unwrap().0, vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,5").unwrap().0, vec![0, 1, 2, 5]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn number_formatting() {
        let mut v = Vec::new();
        push_decimal(&mut v, 0);
        v.push(b' ');
        push_decimal(&mut v, 1234567890);
        v.push(b' ');
        push_hex(&mut v, 0xdead_beef);
        assert_eq!(v, b"0 1234567890 deadbeef");
    }

    #[test]
    fn rng_below_in_range() {
        let mut r = Rng::new(1);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
