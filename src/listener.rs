//! Listening sockets: one per shard per listen address, all bound to the same
//! port with SO_REUSEPORT so the kernel spreads new connections over shards
//! without any shard touching another's accept queue.
//!
//! Sockets are created on the main thread (socket2 gives the options compio's
//! own `bind` does not expose) and handed to the shards as plain std
//! listeners, which are `Send`.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` SO_REUSEPORT sockets on `addr`. With port 0 the first bind
/// picks the port and the rest join it, so every shard serves the same address.
pub fn bind_shared(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
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
        socket.bind(&addr.into())?;
        socket.listen(backlog)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_is_shared() {
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 2, 16).unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_ne!(ports[0], 0);
        assert_eq!(ports[0], ports[1]);
    }
}
