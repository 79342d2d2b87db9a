//! Listening sockets: one per shard per listen address, all bound to the same
//! port with SO_REUSEPORT so the kernel spreads new connections over shards
//! without any shard touching another's accept queue.
//!
//! Sockets are created on the main thread (socket2 gives the options compio's
//! own `bind` does not expose) and handed to the shards as plain std
//! listeners, which are `Send`.

use std::{io, net::SocketAddr, os::fd::AsRawFd, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// How every listening socket is set up.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    pub backlog: i32,
    /// `server.tuning.defer_accept`: how long the kernel may hold a new
    /// connection until its first bytes arrive (TCP_DEFER_ACCEPT), if at all.
    pub defer_accept: Option<Duration>,
}

impl ListenOptions {
    pub fn of(config: &Config) -> ListenOptions {
        ListenOptions {
            backlog: config.tuning.backlog,
            // As long as a client may take to send its head anyway: a
            // connection that sends nothing for that long would be closed
            // by the header timeout once accepted.
            defer_accept: config
                .tuning
                .defer_accept
                .then_some(config.timeouts.client_header),
        }
    }
}

/// Binds `count` SO_REUSEPORT sockets on `addr`. With port 0 the first bind
/// picks the port and the rest join it, so every shard serves the same address.
pub fn bind_shared(
    addr: SocketAddr,
    count: usize,
    options: ListenOptions,
) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Accepted sockets inherit TCP_NODELAY from the listener (Linux), which
        // saves a setsockopt per connection.
        socket.set_tcp_nodelay(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        if let Some(wait) = options.defer_accept {
            defer_accept(&socket, wait)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(options.backlog)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// TCP_DEFER_ACCEPT: the kernel completes an accept only once the client's
/// first bytes are in (or `wait` has passed). HTTP clients always speak
/// first, so the shard's first receive finds the request instead of arming
/// a poll and sleeping until it comes: a connection per request cost 21 %
/// less CPU (docs/PERFORMANCE.md). Connections that never send are held by
/// the kernel (as a SYN-queue entry, not a socket) instead of by a shard.
fn defer_accept(socket: &Socket, wait: Duration) -> io::Result<()> {
    // The kernel takes whole seconds (rounded to SYN-ACK retransmissions).
    let seconds = libc::c_int::try_from(wait.as_secs_f64().ceil() as u64)
        .unwrap_or(libc::c_int::MAX)
        .max(1);
    // SAFETY: the option value is a c_int that outlives the call, and its
    // size is passed alongside; the descriptor is the live socket above.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&seconds as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_shared() {
        let options = ListenOptions {
            backlog: 16,
            defer_accept: Some(Duration::from_secs(1)),
        };
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 2, options).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert_eq!(ports[0], ports[1]);
        for listener in &listeners {
            assert_ne!(deferred_seconds(listener), 0, "TCP_DEFER_ACCEPT not set");
        }
    }

    #[test]
    fn defer_accept_can_be_left_off() {
        let options = ListenOptions {
            backlog: 16,
            defer_accept: None,
        };
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 1, options).unwrap();
        assert_eq!(deferred_seconds(&listeners[0]), 0);
    }

    fn deferred_seconds(listener: &std::net::TcpListener) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are valid for the call and sized for a c_int.
        let got = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(got, 0);
        value
    }
}
