//! Socket I/O as the proxy uses it: a [`Socket`] receives into an
//! [`IoBuf`]'s free tail, sends bytes from a `Vec`, the front of an `IoBuf`
//! or the cache's shared copy, and waits for a client's next request without
//! holding any buffer of its own (in the shard's provided-buffer ring, or for
//! readiness on epoll), each within a deadline.
//!
//! compio takes buffers by value; these methods lend the caller's buffer to
//! the operation and put it back, so callers keep working with `&mut IoBuf`.
//! When a deadline passes, the operation is abandoned and its buffer with it
//! (the runtime frees it once the kernel lets go): every caller treats a
//! timeout as the end of the exchange, so nothing is lost that was still
//! needed.
//!
//! Deadlines are cheap on purpose: a socket's [`Watchdog`] keeps one timer
//! armed and moves it only lazily (when it fires early it is re-armed for
//! the current deadline), so an operation costs a clock read and no timer
//! insertion; a per-operation `timeout()` cost ~2.5 µs of a ~13 µs proxied
//! request (docs/PERFORMANCE.md). Shard-local; nothing here blocks.

use std::{
    cell::{Cell, RefCell},
    future::{poll_fn, Future},
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    pin::{pin, Pin},
    sync::{Arc, Mutex},
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use compio::{
    buf::IoBuf as CompioBuf,
    io::{AsyncRead, AsyncReadManaged, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::sleep_until,
    BufResult,
};

mod inbox;
mod peer;
mod splice;

pub use inbox::Received;
pub use peer::PeerText;
pub use splice::{Passed, Pipe, SpliceError, Splicer};

use inbox::{Delivery, Inbox};

use crate::buffer::{IoBuf, ReadTail, WriteWindow};

/// Why a receive or a send did not complete.
#[derive(Debug)]
pub enum IoError {
    TimedOut,
    Io(io::Error),
}

impl From<IoError> for io::Error {
    fn from(e: IoError) -> io::Error {
        match e {
            IoError::TimedOut => io::ErrorKind::TimedOut.into(),
            IoError::Io(e) => e,
        }
    }
}

/// A connected socket and the watchdog of its pending operations.
pub struct Socket {
    stream: TcpStream,
    watch: Watchdog,
    /// The multishot receive, once a wait for a client's request (or
    /// [`Socket::choose_next_receive`] on a pooled upstream connection) armed it.
    inbox: Inbox,
    /// Bytes received since the last [`Socket::choose_next_receive`].
    received: Cell<usize>,
    /// O_NONBLOCK is set (for splicing; the ring does not need it).
    nonblocking: Cell<bool>,
}

impl Socket {
    /// A socket this side connected: sets TCP_NODELAY (heads and bodies go
    /// out in as few writes as possible; Nagle would only delay them).
    pub fn new(stream: TcpStream) -> Socket {
        // Failing to set this only costs latency; the connection still works.
        let _ = stream.set_nodelay(true);
        Socket::accepted(stream)
    }

    /// A socket from the listener, which already carries TCP_NODELAY.
    pub fn accepted(stream: TcpStream) -> Socket {
        Socket {
            stream,
            watch: Watchdog::default(),
            inbox: Inbox::default(),
            received: Cell::new(0),
            nonblocking: Cell::new(false),
        }
    }

    /// Chooses how the next exchange's bytes will be received, as a pooled
    /// connection goes idle: with the multishot receive (see [`inbox`]) when
    /// the exchange just finished received at most `ring_buffer_len` bytes,
    /// single-shot receives into the connection's own buffer otherwise.
    ///
    /// The multishot saves a submission and a poll arm per response, but it
    /// delivers in ring buffers, each one a completion and a copy: a 64 KiB
    /// response arriving as sixteen 4 KiB pieces cost 40 % more CPU than one
    /// receive straight into the buffer (docs/PERFORMANCE.md). So it stays
    /// armed only while responses fit one ring buffer. `ring`: whether the
    /// shard has a provided-buffer ring at all. Returns the bytes the
    /// exchange received.
    pub fn choose_next_receive(&self, ring: bool, ring_buffer_len: usize) -> usize {
        let received = self.received.replace(0);
        if !ring {
            return received;
        }
        if received <= ring_buffer_len {
            // Failing to arm (no ring) leaves reads single-shot.
            let _ = self.inbox.arm(&self.stream, ring_buffer_len);
        } else {
            self.inbox.disarm();
        }
        received
    }

    /// Whether the multishot receive is armed: it takes bytes as they
    /// arrive, so nothing else may read the socket meanwhile.
    pub fn multishot_armed(&self) -> bool {
        self.inbox.is_active()
    }

    /// Counts bytes taken from the socket, received or spliced, for
    /// [`Socket::choose_next_receive`].
    pub fn count_received(&self, n: usize) {
        self.received.set(self.received.get() + n);
    }

    /// Sets O_NONBLOCK, once, so a splice(2) on the shard never sleeps.
    /// Ring operations behave the same either way.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        if !self.nonblocking.get() {
            socket2::SockRef::from(&self.stream).set_nonblocking(true)?;
            self.nonblocking.set(true);
        }
        Ok(())
    }

    /// Waits until the socket can take more bytes. `Ok(false)`: `limit`
    /// passed first.
    pub async fn writable(&self, limit: Duration) -> io::Result<bool> {
        let poll = self.stream.to_poll_fd()?;
        match self.watch.guard(limit, poll.write_ready()).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    }

    /// Whether bytes the peer sent wait here unread (kept from a ring buffer
    /// a reader had no room for), which makes the connection unfit to reuse.
    pub fn has_unread(&self) -> bool {
        self.inbox.has_leftover()
    }

    /// Closes through the ring (no close(2) on the shard's thread).
    pub async fn close(self) {
        // Cancels an armed multishot first: it holds a reference to the descriptor.
        drop(self.inbox);
        // An error closing changes nothing: the descriptor is released either way.
        let _ = self.stream.close().await;
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Receives once into `buf`'s free space. `Ok(0)`: EOF (or no free space).
    pub async fn recv(&self, buf: &mut IoBuf, limit: Duration) -> Result<usize, IoError> {
        self.recv_at_most(buf, usize::MAX, limit).await
    }

    /// [`Socket::recv`], taking at most `at_most` bytes (a single-shot
    /// receive; the multishot's deliveries are already at most a ring buffer).
    pub async fn recv_at_most(
        &self,
        buf: &mut IoBuf,
        at_most: usize,
        limit: Duration,
    ) -> Result<usize, IoError> {
        if buf.make_room() == 0 {
            return Ok(0);
        }
        if self.inbox.is_active() {
            match self.inbox.next(&self.watch, limit).await? {
                Delivery::Bytes(received) => {
                    let (n, rest) = received.copy_into(buf.spare());
                    buf.commit(n);
                    if let Some(rest) = rest {
                        self.inbox.keep(rest);
                    }
                    self.count_received(n);
                    return Ok(n);
                }
                Delivery::Eof => return Ok(0),
                Delivery::NotArmed => {}
            }
        }
        let lent = ReadTail(std::mem::take(buf), at_most);
        let mut reader = &self.stream;
        let BufResult(result, ReadTail(back, _)) =
            self.watch.guard(limit, reader.read(lent)).await?;
        *buf = back;
        let n = result.map_err(IoError::Io)?;
        self.count_received(n);
        Ok(n)
    }

    /// Receives into `buf`'s free space only what has already arrived, without
    /// waiting (a non-blocking `recv(2)`: no ring operation, no poll arm).
    /// 0 when nothing is there, or when the multishot receive is armed (it
    /// alone reads the socket then).
    pub fn recv_arrived(&self, buf: &mut IoBuf) -> usize {
        if self.inbox.is_active() {
            return 0;
        }
        let spare = buf.spare();
        // SAFETY: `spare` is writable memory of `spare.len()` bytes that
        // outlives the call; the descriptor is this socket's, open.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        // EAGAIN, EOF or an error: the next awaited receive reports it.
        let Ok(n) = usize::try_from(n) else { return 0 };
        buf.commit(n);
        self.count_received(n);
        n
    }

    /// Sends all of `bytes` (a `Vec` the caller reuses), within `limit` of silence.
    pub async fn send_vec(&self, bytes: &mut Vec<u8>, limit: Duration) -> Result<(), IoError> {
        let lent = std::mem::take(bytes);
        let mut writer = &self.stream;
        let BufResult(result, back) = self.watch.guard(limit, writer.write_all(lent)).await?;
        *bytes = back;
        result.map_err(IoError::Io)
    }

    /// Sends all of `head`, then the first `len` unconsumed bytes of `buf`,
    /// in one write, and consumes those bytes from `buf`. A short body is
    /// copied behind the head: cheaper than the vectored send's per-write
    /// iovec allocation; a long one is sent from `buf` in a vectored write.
    pub async fn send_vec_then_buffered(
        &self,
        head: &mut Vec<u8>,
        buf: &mut IoBuf,
        len: usize,
        limit: Duration,
    ) -> Result<(), IoError> {
        if len <= COPY_BEHIND_HEAD_AT_MOST {
            head.extend_from_slice(&buf.filled()[..len]);
            buf.consume(len);
            return self.send_vec(head, limit).await;
        }
        let lent = (
            std::mem::take(head),
            (WriteWindow(std::mem::take(buf), len),),
        );
        let mut writer = &self.stream;
        let BufResult(result, (back_head, (WriteWindow(back_buf, _),))) = self
            .watch
            .guard(limit, writer.write_vectored_all(lent))
            .await?;
        *head = back_head;
        *buf = back_buf;
        result.map_err(IoError::Io)?;
        buf.consume(len);
        Ok(())
    }

    /// Sends the first `len` unconsumed bytes of `buf` and consumes them.
    pub async fn send_buffered(
        &self,
        buf: &mut IoBuf,
        len: usize,
        limit: Duration,
    ) -> Result<(), IoError> {
        if len == 0 {
            return Ok(());
        }
        let lent = WriteWindow(std::mem::take(buf), len);
        let mut writer = &self.stream;
        let BufResult(result, WriteWindow(back, _)) =
            self.watch.guard(limit, writer.write_all(lent)).await?;
        *buf = back;
        result.map_err(IoError::Io)?;
        buf.consume(len);
        Ok(())
    }

    /// Sends a stored body straight from the cache's shared copy.
    pub async fn send_shared(&self, bytes: &Arc<[u8]>, limit: Duration) -> Result<(), IoError> {
        let mut writer = &self.stream;
        let lent = SharedBytes(Arc::clone(bytes));
        let BufResult(result, _) = self.watch.guard(limit, writer.write_all(lent)).await?;
        result.map_err(IoError::Io)
    }

    /// Sends a static byte string (interim responses).
    pub async fn send_static(&self, bytes: &'static [u8], limit: Duration) -> Result<(), IoError> {
        let mut writer = &self.stream;
        let BufResult(result, _) = self.watch.guard(limit, writer.write_all(bytes)).await?;
        result.map_err(IoError::Io)
    }

    /// Waits for the next bytes without holding a buffer of ours. With the
    /// shard's provided-buffer ring (io_uring) the kernel picks a ring
    /// buffer only when bytes arrive, and the caller copies them out and
    /// drops the ring buffer at once: `RingWait::Once` is one receive into
    /// the ring; `RingWait::Multishot` arms the connection's multishot
    /// receive (see [`inbox`]) and leaves it armed for every later read, which
    /// saves a submission and a poll arm per request on a keep-alive
    /// connection but costs an arm and a cancel on a connection that
    /// carries one request. Where the ring is unavailable or empty
    /// (ENOBUFS), or on epoll, it waits for readiness instead and the caller
    /// receives into its own buffer. A delivery holds at most `max_len`
    /// bytes (so it fits the buffer it is copied to).
    pub async fn wait_for_bytes(&self, limit: Duration, ring: RingWait, max_len: usize) -> Arrival {
        if ring == RingWait::Multishot && max_len > 0 {
            // Failing to arm (no ring) leaves the waits below.
            let _ = self.inbox.arm(&self.stream, max_len);
        }
        if self.inbox.is_active() {
            match self.inbox.next(&self.watch, limit).await {
                Ok(Delivery::Bytes(received)) => return Arrival::Bytes(received),
                Ok(Delivery::Eof) => return Arrival::Closed,
                Err(IoError::TimedOut) => return Arrival::TimedOut,
                Err(IoError::Io(_)) => return Arrival::Closed,
                Ok(Delivery::NotArmed) => {}
            }
        } else if ring == RingWait::Once && max_len > 0 {
            let mut reader = &self.stream;
            // Boxed: a connection's first wait only, and inline it made
            // every idle connection's task 430 bytes larger.
            let once = Box::pin(self.watch.guard(limit, reader.read_managed(max_len)));
            match once.await {
                Ok(Ok(Some(bytes))) => return Arrival::Bytes(Received::whole(bytes)),
                Ok(Ok(None)) => return Arrival::Closed,
                Err(IoError::TimedOut) => return Arrival::TimedOut,
                // ENOBUFS (ring empty) or no ring: wait for readiness below.
                Ok(Err(_)) | Err(IoError::Io(_)) => {}
            }
        }
        // Boxed: the fallback is rare, and inline it would add its size to
        // every idle connection's task.
        match Box::pin(self.readable(limit)).await {
            Ok(true) => Arrival::Readable,
            Ok(false) => Arrival::TimedOut,
            Err(_) => Arrival::Closed,
        }
    }

    /// Waits until the socket has bytes (or EOF, or an error) to read,
    /// holding no buffer meanwhile. `Ok(false)`: `limit` passed first.
    /// With the multishot receive armed, readiness is its next delivery
    /// (kept for the next receive): a readiness wait would never see bytes
    /// the multishot already took.
    pub async fn readable(&self, limit: Duration) -> io::Result<bool> {
        if self.inbox.is_active() {
            match self.inbox.next(&self.watch, limit).await {
                Ok(Delivery::Bytes(received)) => {
                    self.inbox.keep(received);
                    return Ok(true);
                }
                Ok(Delivery::Eof) => return Ok(true),
                Err(IoError::TimedOut) => return Ok(false),
                Err(IoError::Io(e)) => return Err(e),
                Ok(Delivery::NotArmed) => {}
            }
        }
        let poll = self.stream.to_poll_fd()?;
        match self.watch.guard(limit, poll.read_ready()).await {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    }

    /// Receives once into a scratch vector (cleared first), for draining.
    pub async fn recv_scratch(
        &self,
        scratch: &mut Vec<u8>,
        limit: Duration,
    ) -> Result<usize, IoError> {
        scratch.clear();
        if self.inbox.is_active() {
            match self.inbox.next(&self.watch, limit).await? {
                Delivery::Bytes(received) => {
                    // Drained bytes are discarded: keep none for later.
                    scratch.extend_from_slice(received.bytes());
                    return Ok(scratch.len());
                }
                Delivery::Eof => return Ok(0),
                Delivery::NotArmed => {}
            }
        }
        let lent = std::mem::take(scratch);
        let mut reader = &self.stream;
        let BufResult(result, back) = self.watch.guard(limit, reader.read(lent)).await?;
        *scratch = back;
        result.map_err(IoError::Io)
    }

    /// Half-closes the sending side (FIN), keeping the socket open for reading.
    pub async fn shutdown_write(&self) {
        let mut writer = &self.stream;
        // Failing to send FIN changes nothing for us: the socket closes on drop.
        let _ = writer.shutdown().await;
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// How [`Socket::wait_for_bytes`] uses the shard's provided-buffer ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingWait {
    /// No ring (epoll): wait for readiness.
    None,
    /// One receive into the ring (a connection's first wait: it may carry
    /// only one request).
    Once,
    /// Arm the connection's multishot receive and leave it armed.
    Multishot,
}

/// What [`Socket::wait_for_bytes`] found.
pub enum Arrival {
    /// Bytes, in a provided-ring buffer to copy out and drop.
    Bytes(Received),
    /// Bytes (or EOF) are waiting to be received.
    Readable,
    Closed,
    TimedOut,
}

/// The longest body [`Socket::send_vec_then_buffered`] copies behind its head.
const COPY_BEHIND_HEAD_AT_MOST: usize = 2048;

/// Bytes shared with the cache, lent to a send without a copy.
struct SharedBytes(Arc<[u8]>);

impl CompioBuf for SharedBytes {
    fn as_init(&self) -> &[u8] {
        &self.0
    }
}

/// The deadline of a socket's pending operations, enforced by one lazily
/// moved timer. Operations of one socket all run in the task that uses it
/// (both directions of a full-duplex exchange included), but a pooled
/// upstream socket is used by a different client's task on every request:
/// once a second task waits, the timer wakes a [`WakeRelay`] that points at
/// whichever task waits now, and moving the relay is a waker swap where
/// re-registering the timer's waker was two searches of the runtime's timer
/// tree a request. A socket only one task uses needs no relay.
///
/// A timer left armed while its socket idles in a pool may fire with no
/// operation pending: it then wakes the task that last waited on it, which
/// finds nothing to do. That costs one spurious poll per `body_idle` at most,
/// where disarming on every return to the pool cost a timer insertion per
/// request.
#[derive(Default)]
pub struct Watchdog {
    timer: RefCell<Option<ArmedTimer>>,
}

/// A timer armed for `fires`, registered with the runtime to wake `waiter`.
struct ArmedTimer {
    fires: Instant,
    waiter: TimerWaiter,
    sleep: Pin<Box<dyn Future<Output = ()>>>,
}

/// Whom the runtime's timer wakes: the one task that has waited on the
/// socket (a client's socket, all its life), or, once a second task waited
/// (a pooled upstream socket), a relay pointing at the latest.
enum TimerWaiter {
    Task(Waker),
    Relay { relay: Arc<WakeRelay>, waker: Waker },
}

impl TimerWaiter {
    fn relay(relay: Arc<WakeRelay>) -> TimerWaiter {
        TimerWaiter::Relay {
            waker: Waker::from(relay.clone()),
            relay,
        }
    }

    /// Makes the timer's wake-up reach `task`. True when the waker the
    /// timer must hold changed (the timer has to be polled again with it).
    fn follow(&mut self, task: &Waker) -> bool {
        match self {
            TimerWaiter::Task(w) if w.will_wake(task) => false,
            TimerWaiter::Task(_) => {
                let relay = Arc::new(WakeRelay::default());
                relay.point_at(task);
                *self = TimerWaiter::relay(relay);
                true
            }
            TimerWaiter::Relay { relay, .. } => {
                relay.point_at(task);
                false
            }
        }
    }

    fn waker(&self) -> &Waker {
        match self {
            TimerWaiter::Task(w) => w,
            TimerWaiter::Relay { waker, .. } => waker,
        }
    }
}

/// Forwards a timer's wake-up to the task that last waited on the socket.
/// `Send + Sync` only because `Waker` requires it: the timer fires on the
/// shard that armed it, so the lock is never contended.
#[derive(Default)]
struct WakeRelay {
    waiter: Mutex<Option<Waker>>,
}

impl WakeRelay {
    fn point_at(&self, waker: &Waker) {
        let mut waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner());
        if !waiter.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *waiter = Some(waker.clone());
        }
    }
}

impl Wake for WakeRelay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waiter = self.waiter.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waiter.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Watchdog {
    /// Runs `op`, giving up once `limit` has passed.
    async fn guard<F: Future>(&self, limit: Duration, op: F) -> Result<F::Output, IoError> {
        let mut op = pin!(op);
        // Read the clock once per wait, not once per operation and again per poll.
        let mut deadline = None;
        poll_fn(|cx| match op.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Ok(output)),
            Poll::Pending => {
                let now = crate::shard::clock::now();
                let deadline = *deadline.get_or_insert(now + limit);
                self.poll_expired(deadline, now, cx)
            }
        })
        .await
    }

    /// Ready with `TimedOut` once `deadline` has passed; keeps the timer
    /// armed no later than `deadline` (a timer armed later is replaced; one
    /// that fires early is re-armed for `deadline`).
    fn poll_expired<T>(
        &self,
        deadline: Instant,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, IoError>> {
        let mut timer = self.timer.borrow_mut();
        if let Some(armed) = timer.as_mut().filter(|t| t.fires <= deadline) {
            let changed = armed.waiter.follow(cx.waker());
            // Registered with the right waker and not due: it will wake us.
            if now < armed.fires && !changed {
                return Poll::Pending;
            }
            let mut timer_cx = Context::from_waker(armed.waiter.waker());
            if armed.sleep.as_mut().poll(&mut timer_cx).is_pending() {
                return Poll::Pending;
            }
            if crate::shard::clock::now() >= deadline {
                *timer = None;
                return Poll::Ready(Err(IoError::TimedOut));
            }
            // It fired for an earlier deadline: re-armed below for this one.
        }
        // A relay stays (the socket changes tasks); a task's waker is replaced.
        let waiter = match timer.take().map(|t| t.waiter) {
            Some(mut relayed @ TimerWaiter::Relay { .. }) => {
                relayed.follow(cx.waker());
                relayed
            }
            _ => TimerWaiter::Task(cx.waker().clone()),
        };
        let mut armed = ArmedTimer {
            fires: deadline,
            waiter,
            sleep: Box::pin(sleep_until(deadline)),
        };
        // The first poll registers the timer with the runtime.
        let mut timer_cx = Context::from_waker(armed.waiter.waker());
        if armed.sleep.as_mut().poll(&mut timer_cx).is_ready() {
            return Poll::Ready(Err(IoError::TimedOut));
        }
        *timer = Some(armed);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::{rc::Rc, time::Duration};

    use compio::{
        runtime::{spawn, Runtime},
        time::sleep,
    };

    use super::*;

    #[test]
    fn a_pending_operation_times_out_in_whichever_task_waits() {
        Runtime::new().unwrap().block_on(async {
            let watch = Rc::new(Watchdog::default());
            // Task A arms the timer (its operation is pending at first) and finishes in time.
            let first = spawn({
                let watch = watch.clone();
                async move {
                    let op = sleep(Duration::from_millis(10));
                    watch.guard(Duration::from_millis(200), op).await.is_ok()
                }
            });
            assert!(first.await.unwrap(), "a timely operation must not time out");
            // Task B moves the timer's wake-up to a relay, and finishes in time too.
            let second = spawn({
                let watch = watch.clone();
                async move {
                    let op = sleep(Duration::from_millis(10));
                    watch.guard(Duration::from_millis(250), op).await.is_ok()
                }
            });
            assert!(
                second.await.unwrap(),
                "a timely operation must not time out"
            );
            // Task C waits on the timer A armed, through the relay B made: it
            // must be woken, and only at its own deadline.
            let started = Instant::now();
            let third = spawn({
                let watch = watch.clone();
                async move {
                    let op = std::future::pending::<()>();
                    watch.guard(Duration::from_millis(300), op).await
                }
            });
            assert!(matches!(third.await.unwrap(), Err(IoError::TimedOut)));
            assert!(
                started.elapsed() >= Duration::from_millis(300),
                "timed out early"
            );
        });
    }
}
