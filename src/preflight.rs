//! Startup checks that turn an environment without usable io_uring into a
//! clear message naming the cause and the fix: kernel too old, io_uring
//! disabled by sysctl, blocked by seccomp (Docker's default profile), or
//! memlock too low. With `server.io = "auto"` the message becomes a warning
//! and the shards run on epoll instead.

use std::io;

/// Size of `struct io_uring_params` (stable kernel ABI).
const IO_URING_PARAMS_SIZE: usize = 120;

/// Creates and closes a tiny io_uring to prove the kernel lets us.
pub fn check_io_uring() -> Result<(), String> {
    let mut params = [0u8; IO_URING_PARAMS_SIZE];
    // SAFETY: io_uring_setup reads/writes exactly one io_uring_params struct.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is not used elsewhere.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    Err(explain(io::Error::last_os_error()))
}

/// Names the cause and the fix for an io_uring_setup failure.
pub fn explain(error: io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let cause = match error.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (needs Linux 5.8 or newer), or a seccomp profile \
             blocks io_uring_setup (e.g. a container runtime's default profile: allow io_uring_setup, \
             io_uring_enter and io_uring_register)"
            .to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) => match disabled.as_deref().map(str::trim) {
            Some("2") => "io_uring is disabled system-wide: run `sysctl -w kernel.io_uring_disabled=0`".to_string(),
            Some("1") => "io_uring is restricted to the group in kernel.io_uring_group: add this user to it, \
                 or run `sysctl -w kernel.io_uring_disabled=0`"
                .to_string(),
            _ => "a security policy (seccomp or an LSM) denies io_uring_setup: allow io_uring_setup, \
                 io_uring_enter and io_uring_register for this process"
                .to_string(),
        },
        Some(libc::ENOMEM) => memlock_advice(),
        _ => format!("io_uring_setup failed unexpectedly ({error})"),
    };
    format!("io_uring is unavailable: {cause}")
}

/// Advice when ring or buffer registration runs out of locked memory.
pub fn memlock_advice() -> String {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    let current = if known {
        format!("{} KiB", limit.rlim_cur / 1024)
    } else {
        "unknown".to_string()
    };
    format!(
        "not enough locked memory for the io_uring rings and buffers (RLIMIT_MEMLOCK is {current}): \
         raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, --ulimit memlock=-1 in a \
         container) or lower [server.tuning] ring_depth"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_names_a_cause_and_a_fix() {
        let seccomp = explain(io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(
            seccomp.contains("5.8") && seccomp.contains("seccomp"),
            "{seccomp}"
        );
        let memlock = explain(io::Error::from_raw_os_error(libc::ENOMEM));
        assert!(
            memlock.contains("RLIMIT_MEMLOCK") && memlock.contains("ulimit -l"),
            "{memlock}"
        );
        let denied = explain(io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            denied.contains("io_uring_disabled") || denied.contains("seccomp"),
            "{denied}"
        );
    }

    #[test]
    fn this_machine_has_io_uring() {
        // The project's CI and development machines run kernels with io_uring;
        // if this fails, the message says why.
        check_io_uring().unwrap();
    }
}
