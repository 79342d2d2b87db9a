//! A connection's multishot receive: one receive operation, armed once and
//! left in the ring for the connection's life, that the kernel completes
//! every time bytes arrive, each time into a buffer it picks from the
//! shard's provided-buffer ring. Against a single-shot receive per read it
//! saves a submission, a poll arm (most reads find the socket empty and the
//! kernel must arm one) and the runtime's per-operation allocation.
//!
//! While armed it is the only reader of its socket: a second receive would
//! race it for the bytes and could reorder them. So every read of a socket
//! goes through [`Inbox::next`] first, and single-shot receives resume only
//! once the multishot has ended (the ring ran out of buffers, the kernel
//! stopped it, or it was never armed). A ring buffer bigger than the
//! reader's free space is kept here, with how much was handed out, until the
//! rest is read. Shard-local; owned by one [`Socket`](super::Socket).

use std::{
    cell::{Cell, RefCell},
    io,
};

use compio::{
    net::TcpStream,
    runtime::{submit_multi, Runtime, SubmitMultiManaged},
};
use compio_driver::{
    op::{RecvFlags, RecvMulti},
    BufferRef, SharedFd, ToSharedFd,
};
use futures_lite::StreamExt;

use super::{IoError, Watchdog};
use std::time::Duration;

type Multishot = SubmitMultiManaged<RecvMulti<SharedFd<socket2::Socket>>, BufferRef>;

/// Bytes the kernel put in a ring buffer, of which the first `from` were
/// already handed out. Dropping it gives the buffer back to the ring.
pub struct Received {
    buf: BufferRef,
    from: usize,
}

impl Received {
    /// All of a ring buffer a single-shot receive filled.
    pub fn whole(buf: BufferRef) -> Received {
        Received { buf, from: 0 }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.from..]
    }

    /// Copies as much as fits into `dst`; `Some(self)` if bytes are left.
    pub fn copy_into(mut self, dst: &mut [u8]) -> (usize, Option<Received>) {
        let bytes = self.bytes();
        let n = bytes.len().min(dst.len());
        dst[..n].copy_from_slice(&bytes[..n]);
        self.from += n;
        let rest = (self.from < self.buf.len()).then_some(self);
        (n, rest)
    }
}

/// What the multishot delivered.
pub enum Delivery {
    Bytes(Received),
    /// The peer closed its side.
    Eof,
    /// No multishot is armed, or it ended (the ring was empty, or the kernel
    /// stopped it) with nothing left to hand out: read with a single-shot receive.
    NotArmed,
}

#[derive(Default)]
pub struct Inbox {
    /// Taken out while a read awaits it (no borrow is held across the wait).
    /// Boxed: inline it tripled the socket's size (136 bytes of 216), and
    /// sockets move with their connections on every request, armed or not.
    armed: RefCell<Option<Box<Multishot>>>,
    /// Boxed for the same reason: bytes are kept only when a delivery did
    /// not fit the reader's buffer, and inline they cost every socket 48 bytes.
    leftover: RefCell<Option<Box<Received>>>,
    eof: Cell<bool>,
}

impl Inbox {
    /// Arms the multishot receive if it is not armed yet; each delivery holds
    /// at most `max_len` bytes. An error (no ring on this driver) leaves it
    /// unarmed and reads go single-shot.
    pub fn arm(&self, stream: &TcpStream, max_len: usize) -> io::Result<()> {
        let mut armed = self.armed.borrow_mut();
        if armed.is_some() || self.eof.get() {
            return Ok(());
        }
        let pool = Runtime::with_current(|rt| rt.buffer_pool())?;
        let op = RecvMulti::new(stream.to_shared_fd(), &pool, max_len, RecvFlags::empty())?;
        *armed = Some(Box::new(submit_multi(op).into_managed(pool)));
        Ok(())
    }

    /// Cancels an armed multishot (dropping it submits the cancellation,
    /// which the kernel applies before anything submitted after it). Only
    /// between exchanges, when the peer has nothing more to send: bytes it
    /// took after the cancellation was queued would be lost.
    pub fn disarm(&self) {
        drop(self.armed.borrow_mut().take());
    }

    /// Whether bytes from a ring buffer wait to be handed out.
    pub fn has_leftover(&self) -> bool {
        self.leftover.borrow().is_some()
    }

    /// Whether reads must come through [`Inbox::next`].
    pub fn is_active(&self) -> bool {
        self.eof.get() || self.leftover.borrow().is_some() || self.armed.borrow().is_some()
    }

    /// Keeps bytes a reader had no room for; they are handed out first.
    pub fn keep(&self, rest: Received) {
        *self.leftover.borrow_mut() = Some(Box::new(rest));
    }

    /// The next bytes: kept ones first, then the multishot's next delivery
    /// within `limit`.
    pub async fn next(&self, watch: &Watchdog, limit: Duration) -> Result<Delivery, IoError> {
        if let Some(rest) = self.leftover.borrow_mut().take() {
            return Ok(Delivery::Bytes(*rest));
        }
        if self.eof.get() {
            return Ok(Delivery::Eof);
        }
        let Some(mut multishot) = self.armed.borrow_mut().take() else {
            return Ok(Delivery::NotArmed);
        };
        let delivery = match watch.guard(limit, multishot.next()).await {
            Err(timed_out) => {
                *self.armed.borrow_mut() = Some(multishot);
                return Err(timed_out);
            }
            Ok(delivery) => delivery,
        };
        match delivery {
            Some(Ok(Some(buf))) if !buf.is_empty() => {
                *self.armed.borrow_mut() = Some(multishot);
                Ok(Delivery::Bytes(Received { buf, from: 0 }))
            }
            // A completion without bytes and without a buffer is the peer's FIN.
            Some(Ok(_)) => {
                self.eof.set(true);
                Ok(Delivery::Eof)
            }
            // The ring had no free buffer (ENOBUFS, which compio reports as
            // `ResourceBusy`): the multishot ended; the caller reads
            // single-shot into its own buffer, and the next wait re-arms.
            Some(Err(e)) if e.kind() == io::ErrorKind::ResourceBusy => Ok(Delivery::NotArmed),
            Some(Err(e)) => Err(IoError::Io(e)),
            // Ended after its last bytes were handed out.
            None => Ok(Delivery::NotArmed),
        }
    }
}
