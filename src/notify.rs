//! systemd readiness notification (`sd_notify`): with `Type=notify`, systemd
//! passes a datagram socket in `NOTIFY_SOCKET`, and the service reports
//! `READY=1` once it serves, `RELOADING=1` … `READY=1` around a reload and
//! `STOPPING=1` when it begins to shut down. Without the variable every call
//! does nothing. Called from the control thread only.

use std::{io, os::unix::net::UnixDatagram, time::Duration};

/// Where to report, read once from the environment at startup.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// The service serves requests.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload begins (`MONOTONIC_USEC`, as `Type=notify-reload` wants it).
    pub fn reloading(&self) {
        let now = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
    }

    /// A graceful shutdown begins.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    fn send(&self, message: &str) {
        let Some(path) = &self.socket else { return };
        if let Err(e) = send_to(path, message) {
            log::warn!("sd_notify to {path}: {e}");
        }
    }
}

fn send_to(path: &str, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(Duration::from_secs(1)))?;
    match path.strip_prefix('@') {
        // A name in the abstract namespace (Linux).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(message.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let path = std::env::temp_dir().join(format!("shardproxy-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            socket: Some(path.display().to_string()),
        };
        notifier.ready("serving");
        notifier.reloading();
        let mut buf = [0u8; 256];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        let n = receiver.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"RELOADING=1\nMONOTONIC_USEC="));
        let _ = std::fs::remove_file(&path);
        Notifier::default().stopping();
    }
}
