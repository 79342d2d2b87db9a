//! Streaming buffers, and the per-shard pool they are leased from.
//!
//! An [`IoBuf`] is a fixed-size byte buffer with a read window: bytes arrive
//! at `end`, are consumed from `start`, and the window slides back to the
//! front only when the tail runs out of room. A connection holds one only
//! while bytes move: it is leased from the shard's [`BufferPool`] when a
//! request (or response) starts arriving and goes back when the exchange is
//! done, so an idle keep-alive connection holds no buffer at all.
//!
//! compio's I/O takes buffers by value (the kernel owns a buffer until its
//! completion arrives, even if the future that asked is dropped). A buffer
//! lent to a receive or send travels inside [`ReadTail`] or [`WriteWindow`]
//! and comes back with the result; a buffer whose operation was abandoned
//! (a timeout) is dropped by the runtime when the kernel lets go of it, and
//! its drop gives the memory and the lease back to the pool. Everything here
//! is shard-local (`Rc`): buffers never cross shards.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    mem::MaybeUninit,
    rc::Rc,
    task::{Poll, Waker},
};

use compio::buf::{IoBuf as CompioBuf, IoBufMut, SetLen};

/// Bytes read from a socket and not yet consumed.
pub struct IoBuf {
    data: Chunk,
    start: usize,
    end: usize,
    /// The pool this buffer was leased from; dropping the buffer returns it.
    home: Option<Rc<BufferPool>>,
}

/// An empty, unallocated buffer: what is left behind while the real one is
/// lent to an operation, or after that operation was abandoned.
impl Default for IoBuf {
    fn default() -> IoBuf {
        IoBuf {
            data: Chunk::default(),
            start: 0,
            end: 0,
            home: None,
        }
    }
}

impl IoBuf {
    /// A buffer outside any pool (tests, benches, one-off uses).
    pub fn with_capacity(capacity: usize) -> IoBuf {
        IoBuf {
            data: Chunk::new(capacity),
            start: 0,
            end: 0,
            home: None,
        }
    }

    /// Unconsumed bytes.
    #[inline]
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Free space behind the unconsumed bytes, reachable without moving them.
    #[inline]
    pub fn tail_room(&self) -> usize {
        self.data.len() - self.end
    }

    /// Marks `n` leading bytes as consumed.
    #[inline]
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into, after moving unconsumed bytes to the front if
    /// the tail is full. Empty only when the buffer holds `capacity` unconsumed bytes.
    #[inline]
    pub fn spare(&mut self) -> &mut [u8] {
        self.make_room();
        &mut self.data[self.end..]
    }

    /// Slides unconsumed bytes to the front when the tail is full; returns the free space.
    #[inline]
    pub fn make_room(&mut self) -> usize {
        if self.end == self.data.len() {
            return self.compact();
        }
        self.data.len() - self.end
    }

    /// Moves the unconsumed bytes to the front, so that all the free space
    /// follows them; returns it.
    pub fn compact(&mut self) -> usize {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.data.len() - self.end
    }

    /// Records that `n` bytes were written into [`IoBuf::spare`].
    #[inline]
    pub fn commit(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end += n;
    }

    /// Appends `bytes`, which must fit in the free space.
    pub fn push(&mut self, bytes: &[u8]) {
        self.spare()[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home.give_back(std::mem::take(&mut self.data));
        }
    }
}

/// An [`IoBuf`] lent to a receive: the kernel writes into the free tail (at
/// most the given number of bytes of it), and the received length extends
/// the window.
pub struct ReadTail(pub IoBuf, pub usize);

impl CompioBuf for ReadTail {
    fn as_init(&self) -> &[u8] {
        // Nothing of the tail is initialised by this operation yet.
        &self.0.data[self.0.end..self.0.end]
    }
}

impl SetLen for ReadTail {
    unsafe fn set_len(&mut self, len: usize) {
        // compio calls this once with the received length (from an empty start).
        self.0.end += len;
    }
}

impl IoBufMut for ReadTail {
    fn as_uninit(&mut self) -> &mut [MaybeUninit<u8>] {
        let end = self.0.end.saturating_add(self.1).min(self.0.data.len());
        let tail = &mut self.0.data[self.0.end..end];
        // SAFETY: initialised bytes are valid `MaybeUninit<u8>`; same layout and length.
        unsafe { &mut *(tail as *mut [u8] as *mut [MaybeUninit<u8>]) }
    }
}

/// The first `len` unconsumed bytes of an [`IoBuf`], lent to a send.
pub struct WriteWindow(pub IoBuf, pub usize);

impl CompioBuf for WriteWindow {
    fn as_init(&self) -> &[u8] {
        &self.0.filled()[..self.1]
    }
}

/// A shard's streaming buffers: at most `max` leased at once, each `size`
/// bytes. When all are leased, [`BufferPool::lease`] waits for one to come
/// back rather than allocate without bound. Returned buffers are kept for
/// the next lease, so a busy shard allocates nothing per request, and
/// [`BufferPool::trim`] (each second) unmaps what the last second's peak
/// did not need, so a quiet one gives its memory back.
pub struct BufferPool {
    size: usize,
    max: usize,
    /// Free chunks kept however quiet the shard is.
    keep: usize,
    leased: Cell<usize>,
    /// The most leased at once since the last trim.
    peak: Cell<usize>,
    free: RefCell<Vec<Chunk>>,
    /// Leases waiting for a buffer, oldest first.
    waiting: RefCell<VecDeque<WaiterSlot>>,
}

/// A waiting lease's waker; emptied when the lease is woken or gives up, so
/// a return never spends its wake-up on a lease that no longer waits.
type WaiterSlot = Rc<RefCell<Option<Waker>>>;

/// A lease's place in the queue. Dropped with the lease: a lease that gives
/// up (its connection timed out or closed) leaves the queue, and passes on a
/// wake-up it may have received but not used.
struct Waiting<'p> {
    pool: &'p BufferPool,
    slot: WaiterSlot,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.slot.borrow_mut().take();
        if self.pool.leased.get() < self.pool.max {
            self.pool.wake_next();
        }
    }
}

impl BufferPool {
    pub fn new(size: usize, max: usize) -> Rc<BufferPool> {
        Rc::new(BufferPool {
            size,
            max: max.max(1),
            // Enough for a burst of a few dozen concurrent exchanges; the rest is freed.
            keep: max.clamp(1, 64),
            leased: Cell::new(0),
            peak: Cell::new(0),
            free: RefCell::new(Vec::new()),
            waiting: RefCell::new(VecDeque::new()),
        })
    }

    /// Bytes in each buffer.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Buffers leased now.
    pub fn leased(&self) -> usize {
        self.leased.get()
    }

    /// A buffer, once one is free. The lease ends when the buffer is dropped.
    pub async fn lease(self: &Rc<Self>) -> IoBuf {
        if let Some(buf) = self.try_lease() {
            return buf;
        }
        let waiting = Waiting {
            pool: self,
            slot: Rc::default(),
        };
        poll_fn(|cx| match self.try_lease() {
            Some(buf) => Poll::Ready(buf),
            None => {
                let queued = waiting.slot.borrow_mut().replace(cx.waker().clone());
                if queued.is_none() {
                    self.waiting.borrow_mut().push_back(waiting.slot.clone());
                }
                Poll::Pending
            }
        })
        .await
    }

    /// Wakes the oldest lease still waiting, skipping those that gave up.
    fn wake_next(&self) {
        loop {
            let Some(slot) = self.waiting.borrow_mut().pop_front() else {
                return;
            };
            let waker = slot.borrow_mut().take();
            if let Some(waker) = waker {
                waker.wake();
                return;
            }
        }
    }

    /// A buffer if one is free now.
    pub fn try_lease(self: &Rc<Self>) -> Option<IoBuf> {
        if self.leased.get() >= self.max {
            return None;
        }
        let leased = self.leased.get() + 1;
        self.leased.set(leased);
        self.peak.set(self.peak.get().max(leased));
        let data = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Chunk::new(self.size));
        Some(IoBuf {
            data,
            start: 0,
            end: 0,
            home: Some(self.clone()),
        })
    }

    /// Keeps the returned chunk for the next lease. Trimming here, as the
    /// load dipped (to twice the buffers leased), unmapped chunks that the
    /// next upswing mapped again: with 1,000 client connections half the
    /// requests paid an mmap, a page fault and an munmap, 16.0–16.7 against
    /// 9.8–10.0 µs a request (docs/PERFORMANCE.md, eleventh pass). [`BufferPool::trim`]
    /// does it once a second instead.
    fn give_back(&self, data: Chunk) {
        self.leased.set(self.leased.get().saturating_sub(1));
        if data.len() == self.size {
            self.free.borrow_mut().push(data);
        }
        self.wake_next();
    }

    /// Unmaps the free chunks beyond what the peak since the last trim
    /// leased (at least `keep` stay), and starts the next period's peak
    /// from what is leased now. Called each second by the shard: a burst's
    /// memory is given back within two calls of its end.
    pub fn trim(&self) {
        let wanted = self.peak.get().max(self.keep);
        let surplus = {
            let mut free = self.free.borrow_mut();
            let keep = free.len().min(wanted);
            free.split_off(keep)
        };
        drop(surplus);
        self.peak.set(self.leased.get());
    }
}

/// A buffer's memory, mapped straight from the kernel rather than taken
/// from the allocator. Why: a burst of concurrent exchanges leases hundreds
/// of 64 KiB buffers at once; from malloc's heap they come back as holes
/// between long-lived small allocations (connection tasks) that glibc never
/// returns, so the burst's peak stayed in RSS for the life of the process
/// (measured: +3.7 KiB per idle connection after a 256-wide burst). An
/// unmapped chunk is gone. Only leases beyond the pool's kept chunks pay the
/// mmap; the kept ones are reused.
struct Chunk {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl Chunk {
    fn new(len: usize) -> Chunk {
        if len == 0 {
            return Chunk::default();
        }
        // SAFETY: an anonymous private mapping of `len` bytes; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            // Out of address space or memory: the same outcome as a failed allocation.
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len, 4096)
                    .unwrap_or(std::alloc::Layout::new::<u8>()),
            );
        }
        Chunk {
            // A successful mmap never returns null.
            ptr: std::ptr::NonNull::new(ptr.cast()).unwrap_or(std::ptr::NonNull::dangling()),
            len,
        }
    }
}

impl Default for Chunk {
    fn default() -> Chunk {
        Chunk {
            ptr: std::ptr::NonNull::dangling(),
            len: 0,
        }
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes (zero-filled by the kernel), or len is 0.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping was made by `Chunk::new` with this length and is unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_slides_only_when_full() {
        let mut buf = IoBuf::with_capacity(8);
        buf.spare()[..6].copy_from_slice(b"abcdef");
        buf.commit(6);
        buf.consume(4);
        assert_eq!(buf.filled(), b"ef");
        assert_eq!(buf.spare().len(), 2);
        buf.spare()[..2].copy_from_slice(b"gh");
        buf.commit(2);
        assert_eq!(buf.spare().len(), 4, "compacted to the front");
        assert_eq!(buf.filled(), b"efgh");
        buf.consume(4);
        assert!(buf.is_empty());
        assert_eq!(buf.spare().len(), 8);
    }

    #[test]
    fn leases_are_bounded_and_come_back_on_drop() {
        let pool = BufferPool::new(16, 2);
        let a = pool.try_lease().expect("first lease");
        let b = pool.try_lease().expect("second lease");
        assert!(pool.try_lease().is_none(), "the pool holds at most 2");
        assert_eq!(pool.leased(), 2);
        drop(a);
        assert_eq!(pool.leased(), 1);
        let c = pool.try_lease().expect("a returned buffer is leased again");
        assert_eq!(c.capacity(), 16);
        drop((b, c));
        assert_eq!(pool.leased(), 0);
    }

    #[test]
    fn free_chunks_follow_the_load_and_shrink_back_when_it_ends() {
        let pool = BufferPool::new(16, 1000);
        let mut burst: Vec<IoBuf> = (0..400).map(|_| pool.try_lease().unwrap()).collect();
        // Half the burst comes back while the other half is still in use:
        // all of it is kept for the next requests, through a trim too.
        burst.truncate(200);
        assert_eq!(pool.free.borrow().len(), 200);
        pool.trim();
        assert_eq!(
            pool.free.borrow().len(),
            200,
            "the last period's peak was 400"
        );
        burst.extend((0..200).map(|_| pool.try_lease().unwrap()));
        assert_eq!(pool.free.borrow().len(), 0, "the kept chunks were reused");
        // The load ends: everything is kept until a trim, and the second
        // trim after the end shrinks the free list back to `keep` (64).
        burst.clear();
        assert_eq!(pool.leased(), 0);
        assert_eq!(pool.free.borrow().len(), 400);
        pool.trim();
        assert_eq!(
            pool.free.borrow().len(),
            400,
            "this period still peaked at 400"
        );
        pool.trim();
        assert_eq!(pool.free.borrow().len(), 64);
    }

    #[test]
    fn a_lease_that_gave_up_does_not_swallow_a_return() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let pool = BufferPool::new(16, 1);
            let held = pool.lease().await;
            // This lease queues first, then gives up (as a timed-out connection would).
            let abandoned = compio::runtime::spawn({
                let pool = pool.clone();
                async move { pool.lease().await.capacity() }
            });
            let waiter = compio::runtime::spawn({
                let pool = pool.clone();
                async move { pool.lease().await.capacity() }
            });
            compio::time::sleep(std::time::Duration::from_millis(10)).await;
            drop(abandoned);
            drop(held);
            assert_eq!(
                waiter.await.unwrap(),
                16,
                "the live waiter got the returned buffer"
            );
        });
    }

    #[test]
    fn a_waiting_lease_is_woken_by_a_return() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let pool = BufferPool::new(16, 1);
            let held = pool.lease().await;
            let waiter = compio::runtime::spawn({
                let pool = pool.clone();
                async move { pool.lease().await.capacity() }
            });
            compio::runtime::spawn(async move { drop(held) }).detach();
            assert_eq!(waiter.await.unwrap(), 16);
        });
    }
}
