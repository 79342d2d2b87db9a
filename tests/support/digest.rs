//! Streaming body fingerprints and reproducible pseudo-random bodies, so that
//! large bodies can be generated on one end and verified on the other without
//! holding them in memory.

use std::fmt;

/// Length plus 64-bit FNV-1a hash of a byte stream, fed piece by piece.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BodyDigest {
    pub len: u64,
    pub hash: u64,
}

impl Default for BodyDigest {
    fn default() -> Self {
        BodyDigest {
            len: 0,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl BodyDigest {
    pub fn of(bytes: &[u8]) -> Self {
        let mut digest = Self::default();
        digest.update(bytes);
        digest
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut hash = self.hash;
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.hash = hash;
        self.len += bytes.len() as u64;
    }

    /// The form the echoing origin handlers put in their response bodies.
    pub fn to_text(self) -> String {
        format!("len={} hash={:016x}", self.len, self.hash)
    }
}

impl fmt::Debug for BodyDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A reproducible pseudo-random body of `len` bytes, produced in pieces.
pub struct PatternBody {
    state: u64,
    remaining: u64,
}

pub const PIECE: usize = 64 * 1024;

impl PatternBody {
    pub fn new(seed: u64, len: u64) -> Self {
        PatternBody {
            state: seed | 1,
            remaining: len,
        }
    }

    /// The next piece (at most 64 KiB), or `None` at the end.
    pub fn next_piece(&mut self, buf: &mut Vec<u8>) -> Option<()> {
        if self.remaining == 0 {
            return None;
        }
        let size = self.remaining.min(PIECE as u64) as usize;
        buf.clear();
        while buf.len() < size {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let word = self.state.to_le_bytes();
            let take = (size - buf.len()).min(8);
            buf.extend_from_slice(&word[..take]);
        }
        self.remaining -= size as u64;
        Some(())
    }

    /// Feeds every piece to `sink` and returns the digest of the whole body.
    pub fn stream(mut self, sink: &mut dyn FnMut(&[u8])) -> BodyDigest {
        let mut digest = BodyDigest::default();
        let mut buf = Vec::with_capacity(PIECE);
        while self.next_piece(&mut buf).is_some() {
            digest.update(&buf);
            sink(&buf);
        }
        digest
    }
}
