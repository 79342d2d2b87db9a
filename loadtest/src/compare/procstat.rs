//! CPU accounting for `compare`: the user+system time of a server process
//! and all its descendants (nginx's workers, say), read from /proc/PID/stat,
//! and the CPU time of our own finished children (the load generators) from
//! getrusage. Sampled before and after each run; the difference divided by
//! the requests served gives CPU µs per request.

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
    let ticks: u64 = procs
        .iter()
        .filter(|(pid, _, _)| tree.contains(pid))
        .map(|&(_, _, t)| t)
        .sum();
    Duration::from_micros(ticks * 1_000_000 / ticks_per_sec())
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
        // Burn a little CPU and see it counted.
        let before = tree_cpu(me);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(tree_cpu(me) >= before);
    }
}
