//! The process's own numbers, read from `/proc/self` when `/metrics` is
//! scraped (on the admin thread, never on a shard): CPU seconds, memory, file
//! descriptors, start time. Anything unreadable is left out, not guessed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        // SAFETY: sysconf reads constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields = stat_fields(&stat);
        let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
        let ticks = (ticks > 0).then_some(ticks as f64);
        let cpu_seconds = match (field(13), field(14), ticks) {
            (Some(utime), Some(stime), Some(hz)) => Some((utime + stime) as f64 / hz),
            _ => None,
        };
        let start_time_seconds = match (field(21), ticks, boot_time()) {
            (Some(start), Some(hz), Some(boot)) => Some(boot + start as f64 / hz),
            _ => None,
        };
        let page = page.max(1) as u64;
        ProcessStats {
            cpu_seconds,
            resident_bytes: field(23).map(|pages| pages * page),
            virtual_bytes: field(22),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
            max_fds: max_fds(),
            start_time_seconds,
        }
    }
}

/// `/proc/self/stat` fields numbered from 0 as in proc(5) minus one: the
/// command name (field 2, in parentheses, may hold spaces) is skipped whole.
fn stat_fields(stat: &str) -> Vec<&str> {
    match stat.rfind(')') {
        Some(end) => ["", ""]
            .into_iter()
            .chain(stat[end + 1..].split_whitespace())
            .collect(),
        None => Vec::new(),
    }
}

fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime = stat.lines().find_map(|l| l.strip_prefix("btime "))?;
    btime.trim().parse::<f64>().ok()
}

fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Seconds since the epoch, for the status page's clock.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        assert!(stats.cpu_seconds.is_some());
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.open_fds.unwrap() >= 3);
        let start = stats.start_time_seconds.unwrap();
        assert!(start <= unix_now() + 1.0 && start > unix_now() - 86_400.0 * 365.0);
    }

    #[test]
    fn command_names_with_spaces_and_parens() {
        let fields = stat_fields("42 (a b) c) S 1 2");
        assert_eq!(fields[2], "S");
        assert_eq!(fields[3], "1");
    }
}
