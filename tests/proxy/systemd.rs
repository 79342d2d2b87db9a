//! systemd's `Type=notify` protocol: with `NOTIFY_SOCKET` set, the proxy
//! reports `READY=1` once it serves, `RELOADING=1` then `READY=1` around a
//! SIGHUP reload, and `STOPPING=1` when SIGTERM begins the shutdown.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::proxy::{wait_with_limit, TempFile, PROXY_BINARY};
use crate::support::*;

/// Kills the child if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 1024];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn readiness_reload_and_stop_reach_the_notify_socket() {
    let origin = Origin::start(origin::echo_target());
    let config = TempFile::with_contents(&ProxyConfig::for_origin(2, origin.addr()).render());
    let path = config.path.with_extension("notify");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut proxy = Running(
        Command::new(PROXY_BINARY)
            .arg("--config")
            .arg(&config.path)
            .env("NOTIFY_SOCKET", &path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the proxy"),
    );
    let ready = next_message(&socket);
    assert!(
        ready.starts_with("READY=1\nSTATUS=2 shard(s) serving"),
        "{ready:?}"
    );

    signal(&proxy.0, libc::SIGHUP);
    let reloading = next_message(&socket);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert!(next_message(&socket).starts_with("READY=1"));

    signal(&proxy.0, libc::SIGTERM);
    assert_eq!(next_message(&socket), "STOPPING=1");
    let status =
        wait_with_limit(&mut proxy.0, Duration::from_secs(15)).expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(&path);
}
