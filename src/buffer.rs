//! A fixed-size byte buffer with a read window, reused for the whole life of a
//! connection: bytes arrive at `end`, are consumed from `start`, and the window
//! slides back to the front only when the tail runs out of room.

/// Bytes read from a socket and not yet consumed.
pub struct IoBuf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl IoBuf {
    pub fn with_capacity(capacity: usize) -> IoBuf {
        IoBuf {
            data: vec![0; capacity].into_boxed_slice(),
            start: 0,
            end: 0,
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
        if self.end == self.data.len() && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.data[self.end..]
    }

    /// Records that `n` bytes were written into [`IoBuf::spare`].
    #[inline]
    pub fn commit(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end += n;
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
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
}
