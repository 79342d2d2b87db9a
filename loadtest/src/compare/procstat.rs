//! CPU accounting for `compare`: the CPU time of a server process and all
//! its descendants (nginx's workers, say), and the CPU time of our own
//! finished children (the load generators) from getrusage. Sampled before
//! and after each run; the difference divided by the requests served gives
//! CPU µs per request.
//!
//! A server's time is the first field of `/proc/PID/task/*/schedstat`
//! (nanoseconds on the CPU, summed over its threads), the method of
//! docs/PERFORMANCE.md. `/proc/PID/stat`'s utime+stime are sampled on the
//! scheduler tick, which misplaces the short bursts of a mostly idle server
//! (the constant-rate scenario read 1.06–1.16× nginx from ticks where
//! schedstat read 0.97×); it stays as the fallback where schedstat is absent.

use std::time::Duration;

/// (ppid, utime + stime in ticks) of one process, from /proc/PID/stat.
/// utime/stime there already include all of the process's threads.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after ')': state(3) ppid(4) ... utime(14) stime(15), 1-based.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Time on the CPU of every live thread of `pid`, from schedstat; `None`
/// when the kernel keeps no schedstat.
fn sched_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    let mut any = false;
    for task in tasks.flatten() {
        let path = task.path().join("schedstat");
        // A thread that ended since the listing has nothing more to add.
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        if let Some(on_cpu) = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
        {
            ns += on_cpu;
            any = true;
        }
    }
    any.then(|| Duration::from_nanos(ns))
}

/// CPU time used so far by `root` and every live descendant.
pub fn tree_cpu(root: u32) -> Duration {
    let mut procs = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ppid, t)) = stat(pid) {
                    procs.push((pid, ppid, t));
                }
            }
        }
    }
    let mut tree = vec![root];
    // Grow the set until stable; process trees here are shallow.
    for _ in 0..8 {
        let before = tree.len();
        for &(pid, ppid, _) in &procs {
            if tree.contains(&ppid) && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        if tree.len() == before {
            break;
        }
    }
    procs
        .iter()
        .filter(|(pid, _, _)| tree.contains(pid))
        .map(|&(pid, _, ticks)| {
            sched_time(pid)
                .unwrap_or_else(|| Duration::from_micros(ticks * 1_000_000 / ticks_per_sec()))
        })
        .sum()
}

/// User+system time of all children we have waited for, so far.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_stat() {
        let me = std::process::id();
        assert!(stat(me).is_some());
    }

    /// Burning CPU shows up in the count (bounded in wall time: a shared
    /// machine may keep this thread off the CPU for a while).
    #[test]
    fn burnt_cpu_is_counted() {
        let me = std::process::id();
        let before = tree_cpu(me);
        let wall = std::time::Instant::now();
        let mut x = 0u64;
        while tree_cpu(me) < before + Duration::from_millis(30)
            && wall.elapsed() < Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        assert!(x > 0);
        let after = tree_cpu(me);
        assert!(
            after >= before + Duration::from_millis(30),
            "{before:?} -> {after:?}"
        );
    }
}
