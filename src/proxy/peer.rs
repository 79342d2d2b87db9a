//! A socket the relay can read from and write to, either owned outright
//! (`TcpStream`, the fast path) or shared between the two directions of a
//! full-duplex exchange ([`Shared`]).
//!
//! Full duplex matters when the upstream answers while the request body is
//! still arriving (an echo or streaming service, or an early error): the proxy
//! must then read the response and write the request body at the same time or
//! both sides stall on full socket buffers. glommio streams keep separate read
//! and write state, so the two directions can interleave on one stream; the
//! `RefCell` is borrowed only inside a single `poll_*` call, never across an
//! `.await`.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// An async byte stream with a per-read timeout.
pub trait Peer: AsyncRead + AsyncWrite + Unpin {
    /// Applies to reads started after this call.
    fn set_read_timeout(&self, timeout: Duration);
}

impl Peer for TcpStream {
    fn set_read_timeout(&self, timeout: Duration) {
        // Only a zero duration is refused, and callers never pass one.
        let _ = TcpStream::set_read_timeout(self, Some(timeout));
    }
}

/// One direction's handle on a stream the other direction also uses.
pub struct Shared<'c, 's>(pub &'c RefCell<&'s mut TcpStream>);

impl AsyncRead for Shared<'_, '_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Shared<'_, '_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut **self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut **self.0.borrow_mut()).poll_close(cx)
    }
}

impl Peer for Shared<'_, '_> {
    fn set_read_timeout(&self, timeout: Duration) {
        let _ = self.0.borrow().set_read_timeout(Some(timeout));
    }
}
