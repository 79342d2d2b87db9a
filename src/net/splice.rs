//! Moving a large body from one socket to another through a pipe with
//! splice(2): the bytes go from the upstream's receive queue into the pipe
//! and from the pipe into the client's send queue as page references, never
//! copied into the shard and out again. On the 64 KiB keep-alive path those
//! two copies are the largest single cost (docs/PERFORMANCE.md).
//!
//! The calls are made from the shard directly, not as io_uring SPLICE
//! operations: the kernel runs those on an io-wq worker thread (a hand-off
//! each way per chunk). Both sockets are switched to O_NONBLOCK first, so a
//! splice never sleeps: it moves what is there and answers EAGAIN
//! otherwise, and the shard waits for readiness through its ring as for any
//! other operation. Shard-local: each shard keeps its own idle pipes.

use std::{
    cell::{Cell, RefCell},
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::Duration,
};

use super::Socket;

/// What a pipe may hold at once: fewer splices per large body than the
/// default 64 KiB, and only page references, not copies.
const PIPE_BYTES: usize = 256 << 10;

/// The most a head's receive takes on a connection expecting a large body:
/// a head and a little of the body.
const HEAD_READ: usize = 4096;

/// Idle pipes a shard keeps for the next large body.
const KEEP_IDLE: usize = 32;

/// Pipes a shard lends at once. Past it, bodies and tunnels are copied:
/// each pipe is two descriptors and up to [`PIPE_BYTES`] of kernel memory
/// held while its reader is slow, so thousands of slow downloads must not
/// each take one.
const MAX_LENT: usize = 256;

/// A shard's splicing: which bodies are large enough, its idle pipes, and
/// how many it has lent.
pub struct Splicer {
    above: u64,
    idle: RefCell<Vec<PipeEnds>>,
    lent: Cell<usize>,
}

/// Why [`Splicer::relay`] stopped before the body's end, by side.
#[derive(Debug)]
pub enum SpliceError {
    SourceClosed,
    SourceTimeout,
    Source(io::Error),
    Destination(io::Error),
}

impl Splicer {
    /// `above`: the smallest body that is spliced rather than copied
    /// (`http.splice_above`); `None` when 0 (off).
    pub fn new(above: u64) -> Option<Splicer> {
        (above > 0).then(|| Splicer {
            above,
            idle: RefCell::new(Vec::new()),
            lent: Cell::new(0),
        })
    }

    /// How much of a response one receive may take while its head is read,
    /// on a connection whose previous exchange received `last_received`
    /// bytes. Whatever of a body lands in the shard's buffer is copied, so
    /// after a large response (the next is likely alike) the head's receives
    /// stop short of the body; otherwise they take all there is, as a
    /// smaller body costs less copied than spliced (16 KiB bodies: 13.2
    /// µs a request copied, 14.9 spliced).
    pub fn head_read_at_most(&self, last_received: usize) -> usize {
        if last_received as u64 > self.above {
            HEAD_READ
        } else {
            usize::MAX
        }
    }

    /// Whether the `remaining` bytes of a body from `src` should be spliced:
    /// large enough, and `src` not delivering through its multishot receive
    /// (which would take the bytes first).
    pub fn wants(&self, src: &Socket, remaining: u64) -> bool {
        remaining > self.above && self.may_splice_from(src)
    }

    /// Whether a stream without framing (a tunnel direction) that has
    /// already carried `moved` bytes should splice the next ones from
    /// `src`: the first `above` bytes of every direction are copied, so a
    /// TLS handshake or an interactive session costs what it did, and a
    /// bulk transfer is spliced once it shows itself.
    pub fn wants_stream(&self, src: &Socket, moved: u64) -> bool {
        moved >= self.above && self.may_splice_from(src)
    }

    /// Nothing else reads `src` (its multishot receive would take the bytes
    /// first), and a pipe can be lent.
    fn may_splice_from(&self, src: &Socket) -> bool {
        !src.multishot_armed() && self.can_lend()
    }

    fn can_lend(&self) -> bool {
        self.lent.get() < MAX_LENT
    }

    /// Moves exactly `remaining` bytes from `src` to `dst`, waiting at most
    /// `idle` for either side to be ready.
    pub async fn relay(
        &self,
        src: &Socket,
        dst: &Socket,
        mut remaining: u64,
        idle: Duration,
    ) -> Result<(), SpliceError> {
        nonblocking(src, dst)?;
        // Dropped on every way out: back to the idle pipes if empty, closed if not.
        let mut pipe = self.lend().map_err(SpliceError::Source)?;
        let mut since_yield = 0;
        while remaining > 0 {
            let want = remaining.min(PIPE_BYTES as u64) as usize;
            match pipe.fill(src, want) {
                Ok(0) => return Err(SpliceError::SourceClosed),
                Ok(n) => remaining -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match src.readable(idle).await {
                    Ok(true) => continue,
                    Ok(false) => return Err(SpliceError::SourceTimeout),
                    Err(e) => return Err(SpliceError::Source(e)),
                },
                Err(e) => return Err(SpliceError::Source(e)),
            }
            since_yield += pipe.drain(dst, idle).await?;
            if since_yield >= YIELD_EVERY {
                since_yield = 0;
                yield_now().await;
            }
        }
        Ok(())
    }

    /// A pipe for one body or one tunnel direction: an idle one, or a new
    /// one. Callers ask [`Splicer::wants`] or [`Splicer::wants_stream`]
    /// first, which keep the lent pipes under [`MAX_LENT`].
    pub fn lend(&self) -> io::Result<Pipe<'_>> {
        let ends = match self.idle.borrow_mut().pop() {
            Some(ends) => ends,
            None => PipeEnds::new()?,
        };
        self.lent.set(self.lent.get() + 1);
        Ok(Pipe {
            ends: Some(ends),
            held: 0,
            splicer: self,
        })
    }
}

/// What [`Pipe::pass_on`] did.
pub enum Passed {
    /// This many bytes went through (0 when the readiness was spurious).
    Moved(usize),
    /// `src` reached EOF; everything before it was passed on.
    Eof,
}

/// Bytes moved without an await before a splice loop lets the shard's other
/// tasks run: both sides of a loopback transfer can stay ready for as long
/// as it lasts.
const YIELD_EVERY: usize = 1 << 20;

/// Sets O_NONBLOCK on both sockets, so no splice sleeps on the shard.
fn nonblocking(src: &Socket, dst: &Socket) -> Result<(), SpliceError> {
    src.set_nonblocking().map_err(SpliceError::Source)?;
    dst.set_nonblocking().map_err(SpliceError::Destination)
}

/// Returns `Pending` once, after asking to be polled again: the rest of the
/// shard's ready tasks run first.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// A pipe lent by a [`Splicer`], and how many bytes it holds. Dropped
/// empty, it goes back to the shard's idle pipes (up to [`KEEP_IDLE`]); one
/// still holding bytes (a peer left mid-stream, or the tunnel ended while
/// this direction was between its two splices) is closed: its bytes belong
/// to a stream that is over and must not leak into another.
pub struct Pipe<'a> {
    /// `Some` until dropped (taken out to be kept idle).
    ends: Option<PipeEnds>,
    held: usize,
    splicer: &'a Splicer,
}

impl Drop for Pipe<'_> {
    fn drop(&mut self) {
        let splicer = self.splicer;
        splicer.lent.set(splicer.lent.get() - 1);
        let mut idle = splicer.idle.borrow_mut();
        if self.held == 0 && idle.len() < KEEP_IDLE {
            idle.extend(self.ends.take());
        }
    }
}

/// Both ends of a pipe, owned.
struct PipeEnds {
    read: OwnedFd,
    write: OwnedFd,
}

impl PipeEnds {
    fn new() -> io::Result<PipeEnds> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open descriptors we now own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe only means more splices per body: failing is fine.
        // SAFETY: fcntl on a descriptor we own, with an integer argument.
        unsafe {
            libc::fcntl(
                write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                PIPE_BYTES as libc::c_int,
            )
        };
        Ok(PipeEnds { read, write })
    }
}

impl Pipe<'_> {
    /// Passes on what `src` has now (through the pipe, which ends empty) until
    /// it has no more, reaches EOF, or [`YIELD_EVERY`] bytes went by (then
    /// yields to the shard's other tasks first). Waits at most `idle` for
    /// `dst` to take bytes; never waits for `src`.
    pub async fn pass_on(
        &mut self,
        src: &Socket,
        dst: &Socket,
        idle: Duration,
    ) -> Result<Passed, SpliceError> {
        nonblocking(src, dst)?;
        let mut moved = 0;
        loop {
            match self.fill(src, PIPE_BYTES) {
                Ok(0) => return Ok(Passed::Eof),
                Ok(_) => moved += self.drain(dst, idle).await?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Passed::Moved(moved)),
                Err(e) => return Err(SpliceError::Source(e)),
            }
            if moved >= YIELD_EVERY {
                yield_now().await;
                return Ok(Passed::Moved(moved));
            }
        }
    }

    fn ends(&self) -> &PipeEnds {
        // Taken out only by `drop`.
        self.ends
            .as_ref()
            .expect("a lent pipe has its ends until dropped")
    }

    /// One non-blocking splice of at most `want` bytes from `src` into the
    /// pipe (which must be empty): how many came, 0 at EOF.
    fn fill(&mut self, src: &Socket, want: usize) -> io::Result<usize> {
        debug_assert_eq!(self.held, 0);
        let n = splice(src.as_raw_fd(), self.ends().write.as_raw_fd(), want)?;
        self.held = n;
        src.count_received(n);
        Ok(n)
    }

    /// Splices everything the pipe holds into `dst`, waiting at most `idle`
    /// each time it is full; returns how much that was.
    async fn drain(&mut self, dst: &Socket, idle: Duration) -> Result<usize, SpliceError> {
        let held = self.held;
        while self.held > 0 {
            match splice(self.ends().read.as_raw_fd(), dst.as_raw_fd(), self.held) {
                Ok(n) => self.held -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match dst.writable(idle).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(SpliceError::Destination(io::ErrorKind::TimedOut.into()))
                    }
                    Err(e) => return Err(SpliceError::Destination(e)),
                },
                Err(e) => return Err(SpliceError::Destination(e)),
            }
        }
        Ok(held)
    }
}

/// One non-blocking splice of at most `len` bytes from `from` to `to`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and null offsets (sockets and pipes have none).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lent_pipes_are_capped_and_come_back_to_the_shard() {
        let splicer = Splicer::new(1).expect("splicing on");
        let pipes: Vec<_> = (0..MAX_LENT)
            .map(|_| splicer.lend().expect("a pipe"))
            .collect();
        assert!(!splicer.can_lend(), "lent past MAX_LENT");
        drop(pipes);
        assert!(splicer.can_lend());
        assert_eq!(splicer.lent.get(), 0);
        assert_eq!(splicer.idle.borrow().len(), KEEP_IDLE);
        // An idle pipe is lent again before a new one is made.
        let again = splicer.lend().expect("a pipe");
        assert_eq!(splicer.idle.borrow().len(), KEEP_IDLE - 1);
        drop(again);
    }

    #[test]
    fn a_pipe_dropped_holding_bytes_is_closed_not_kept() {
        let splicer = Splicer::new(1).expect("splicing on");
        let mut pipe = splicer.lend().expect("a pipe");
        pipe.held = 5;
        drop(pipe);
        assert_eq!(splicer.lent.get(), 0);
        assert!(splicer.idle.borrow().is_empty());
    }

    #[test]
    fn zero_turns_splicing_off() {
        assert!(Splicer::new(0).is_none());
    }
}
