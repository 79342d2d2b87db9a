//! One shard's slice of the cache: a byte budget, a per-object limit, an
//! index from key hash to stored variants, and SIEVE eviction.
//!
//! Owned by one shard and used only from its thread (`&mut self`, no locks,
//! no interior mutability); it touches nothing outside itself. Stored
//! responses are `Arc<CachedResponse>`: a hit clones the pointer, and that
//! pointer may be sent to the shard that asked (shards are threads,
//! so `Rc` could not cross), which serves the same immutable bytes without a
//! copy. Evicting an entry drops the store's reference; bytes a reader still
//! holds are freed when it is done.
//!
//! Why SIEVE (Zhang et al., NSDI '24): one FIFO queue, one "visited" bit per
//! entry and a hand that sweeps from old to new, clearing bits and evicting
//! the first unvisited entry. A hit only sets a bit (no list moves), so hits
//! cost no pointer writes; new entries start unvisited, so a one-pass scan of
//! cold keys is evicted before anything that was hit since the hand last
//! passed — scan-resistant the way the issue asks. S3-FIFO gets similar hit
//! ratios with three queues and a ghost table, and W-TinyLFU adds a count-min
//! sketch, window and segmented LRU: both more state and more tuning for a
//! small gain on web traces. `quick_cache`'s unsync cache (S3-FIFO, weighted)
//! was the alternative; it keys by one `K: Eq + Hash` value, while this store
//! must keep several Vary variants per URL under one hash, look them up by a
//! precomputed hash plus borrowed key bytes without building a key, refresh a
//! variant in place on a 304, and charge metadata exactly — each of which
//! would fight its API.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::entry::CachedResponse;
use super::key::vary_matches;
use crate::http::head::RequestHead;

/// Sizes of one shard's slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Bytes this shard may hold: the configured capacity / shards.
    pub budget: usize,
    /// Largest charge of one entry (body + head + metadata).
    pub max_object: usize,
    /// Variants kept per URL; beyond it the oldest variant goes. Bounds what
    /// one URL with `Vary: User-Agent` can take.
    pub max_variants: usize,
}

/// Counters, read by the proxy for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    /// Entries replaced by a newer response with the same key and variant.
    pub replaced: u64,
    pub evictions: u64,
    /// Entries removed by `invalidate`.
    pub invalidated: u64,
    /// Inserts refused because the object is over the limit.
    pub refused: u64,
    pub refreshed: u64,
    pub bytes: usize,
    pub entries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("object of {charge} bytes is over the {limit}-byte limit")]
    TooLarge { charge: usize, limit: usize },
}

type Idx = u32;
const NIL: Idx = Idx::MAX;

struct Node {
    hash: u64,
    key: Box<[u8]>,
    response: Arc<CachedResponse>,
    charge: usize,
    visited: bool,
    /// SIEVE queue neighbours (toward the newest / oldest end).
    newer: Idx,
    older: Idx,
    /// Next node in this hash's chain (variants, and the rare colliding key).
    next: Idx,
}

enum Slot {
    Used(Node),
    Free,
}

/// Per-entry bookkeeping beyond the response itself: the slot, and about
/// two index entries' worth of table (the map runs at most 7/8 full and
/// grows by doubling).
pub const NODE_OVERHEAD: usize =
    std::mem::size_of::<Slot>() + 2 * (std::mem::size_of::<(u64, Idx)>() + 1);

/// The key hash's high bits choose the owner shard (`key::owner_shard`), so
/// within one shard they are nearly constant — and hashbrown takes its 7-bit
/// control tags from the high bits. Multiplying by an odd constant spreads
/// every input bit into the high bits again (and keeps the low bits, already
/// uniform, uniform).
#[derive(Default)]
struct Remix(u64);

impl Hasher for Remix {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// One shard's slice of the cache. See the module doc.
pub struct Store {
    cfg: StoreConfig,
    slots: Vec<Slot>,
    free: Vec<Idx>,
    index: HashMap<u64, Idx, BuildHasherDefault<Remix>>,
    newest: Idx,
    oldest: Idx,
    hand: Idx,
    stats: Stats,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        Store {
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::default(),
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn node(&self, i: Idx) -> &Node {
        match &self.slots[i as usize] {
            Slot::Used(n) => n,
            // Every Idx reachable from the index, the queue or the hand
            // names a used slot: `remove` unlinks a node before freeing it.
            Slot::Free => unreachable!("free slot {i} reached from a live link"),
        }
    }

    fn node_mut(&mut self, i: Idx) -> &mut Node {
        match &mut self.slots[i as usize] {
            Slot::Used(n) => n,
            Slot::Free => unreachable!("free slot {i} reached from a live link"),
        }
    }

    /// Walks the chain for `hash`: nodes whose key is `key`, newest first.
    fn chain<'s>(&'s self, hash: u64, key: &'s [u8]) -> impl Iterator<Item = (Idx, &'s Node)> + 's {
        let mut i = self.index.get(&hash).copied().unwrap_or(NIL);
        std::iter::from_fn(move || {
            while i != NIL {
                let node = self.node(i);
                let at = i;
                i = node.next;
                if *node.key == *key {
                    return Some((at, node));
                }
            }
            None
        })
    }

    /// Finds the newest variant of `key` that `selects` accepts, marks it
    /// visited and counts a hit; otherwise counts a miss. Allocation-free.
    pub fn lookup(
        &mut self,
        hash: u64,
        key: &[u8],
        mut selects: impl FnMut(&CachedResponse) -> bool,
    ) -> Option<Arc<CachedResponse>> {
        let found = self
            .chain(hash, key)
            .find(|(_, n)| selects(&n.response))
            .map(|(i, _)| i);
        match found {
            Some(i) => {
                self.stats.hits += 1;
                let node = self.node_mut(i);
                node.visited = true;
                Some(Arc::clone(&node.response))
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// [`Self::lookup`] selecting by the request's Vary-named fields.
    pub fn lookup_request(
        &mut self,
        hash: u64,
        key: &[u8],
        req: &RequestHead,
        req_buf: &[u8],
    ) -> Option<Arc<CachedResponse>> {
        self.lookup(hash, key, |r| {
            vary_matches(r.vary_key(), &req.fields, req_buf)
        })
    }

    /// Every stored variant of `key`, newest first, without touching
    /// visited bits or counters (for answering another shard, which selects
    /// the variant itself, and for tests).
    pub fn variants<'s>(
        &'s self,
        hash: u64,
        key: &'s [u8],
    ) -> impl Iterator<Item = &'s Arc<CachedResponse>> + 's {
        self.chain(hash, key).map(|(_, n)| &n.response)
    }

    /// What inserting `response` under `key` would charge against the budget.
    pub fn charge_of(key: &[u8], response: &CachedResponse) -> usize {
        response.charge() + key.len() + NODE_OVERHEAD
    }

    /// Stores `response` as the newest variant of `key`, replacing a stored
    /// variant with the same Vary secondary key, dropping the oldest variant
    /// beyond `max_variants`, and evicting until it fits.
    pub fn insert(
        &mut self,
        hash: u64,
        key: &[u8],
        response: Arc<CachedResponse>,
    ) -> Result<(), InsertError> {
        let charge = Store::charge_of(key, &response);
        let limit = self.cfg.max_object.min(self.cfg.budget);
        if charge > limit {
            self.stats.refused += 1;
            return Err(InsertError::TooLarge { charge, limit });
        }
        let same = self
            .chain(hash, key)
            .find(|(_, n)| *n.response.vary_key() == *response.vary_key())
            .map(|(i, _)| i);
        if let Some(i) = same {
            self.remove(i);
            self.stats.replaced += 1;
        }
        let max_variants = self.cfg.max_variants.max(1);
        while self.chain(hash, key).count() >= max_variants {
            // The chain is newest first, so its last match is the oldest.
            match self.chain(hash, key).last() {
                Some((i, _)) => self.remove(i),
                None => break,
            }
            self.stats.evictions += 1;
        }
        while self.stats.bytes + charge > self.cfg.budget && self.oldest != NIL {
            self.evict_one();
        }
        let node = Node {
            hash,
            key: key.into(),
            response,
            charge,
            visited: false,
            newer: NIL,
            older: self.newest,
            next: self.index.get(&hash).copied().unwrap_or(NIL),
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Slot::Used(node);
                i
            }
            None => {
                self.slots.push(Slot::Used(node));
                (self.slots.len() - 1) as Idx
            }
        };
        if self.newest != NIL {
            let newest = self.newest;
            self.node_mut(newest).newer = i;
        } else {
            self.oldest = i;
        }
        self.newest = i;
        self.index.insert(hash, i);
        self.stats.bytes += charge;
        self.stats.entries += 1;
        self.stats.inserts += 1;
        Ok(())
    }

    /// Replaces the variant `stale` (the `Arc` a lookup returned) with its
    /// freshened form after a 304. False if it is gone meanwhile (evicted,
    /// invalidated or replaced): the caller may then `insert` instead.
    pub fn refresh(
        &mut self,
        hash: u64,
        key: &[u8],
        stale: &Arc<CachedResponse>,
        fresh: Arc<CachedResponse>,
    ) -> bool {
        let found = self
            .chain(hash, key)
            .find(|(_, n)| Arc::ptr_eq(&n.response, stale))
            .map(|(i, _)| i);
        let Some(i) = found else {
            return false;
        };
        let charge = Store::charge_of(key, &fresh);
        let node = self.node_mut(i);
        let old_charge = std::mem::replace(&mut node.charge, charge);
        node.response = fresh;
        self.stats.bytes = self.stats.bytes - old_charge + charge;
        self.stats.refreshed += 1;
        // A bigger head may push the slice over budget; the refreshed entry
        // itself may be the one to go, which is still correct.
        while self.stats.bytes > self.cfg.budget && self.oldest != NIL {
            self.evict_one();
        }
        true
    }

    /// Removes every variant of `key` (unsafe-method invalidation, PURGE).
    /// Returns how many were removed.
    pub fn invalidate(&mut self, hash: u64, key: &[u8]) -> usize {
        let mut removed = 0;
        loop {
            let Some(i) = self.chain(hash, key).next().map(|(i, _)| i) else {
                break;
            };
            self.remove(i);
            removed += 1;
        }
        self.stats.invalidated += removed as u64;
        removed
    }

    /// Drops everything (counters other than bytes/entries are kept).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.free.clear();
        self.index.clear();
        self.newest = NIL;
        self.oldest = NIL;
        self.hand = NIL;
        self.stats.bytes = 0;
        self.stats.entries = 0;
    }

    /// SIEVE: from the hand (or the oldest entry), clear visited bits until
    /// an unvisited entry is found; evict it and leave the hand on its newer
    /// neighbour. Terminates within one lap plus one: the first lap clears
    /// every bit it passes.
    fn evict_one(&mut self) {
        let mut i = if self.hand == NIL {
            self.oldest
        } else {
            self.hand
        };
        while i != NIL {
            let node = self.node_mut(i);
            if !node.visited {
                break;
            }
            node.visited = false;
            let newer = node.newer;
            i = if newer == NIL { self.oldest } else { newer };
        }
        if i == NIL {
            return;
        }
        let newer = self.node(i).newer;
        self.remove(i);
        self.hand = newer;
        self.stats.evictions += 1;
    }

    /// Unlinks node `i` from its chain and the queue, frees its slot.
    fn remove(&mut self, i: Idx) {
        let (hash, newer, older, next) = {
            let n = self.node(i);
            (n.hash, n.newer, n.older, n.next)
        };
        // Chain: either the index points at `i`, or a predecessor does.
        match self.index.get(&hash).copied() {
            Some(head) if head == i => {
                if next == NIL {
                    self.index.remove(&hash);
                } else {
                    self.index.insert(hash, next);
                }
            }
            Some(mut p) => loop {
                let pn = self.node(p).next;
                if pn == i {
                    self.node_mut(p).next = next;
                    break;
                }
                if pn == NIL {
                    break;
                }
                p = pn;
            },
            None => {}
        }
        // Queue.
        if newer != NIL {
            self.node_mut(newer).older = older;
        } else {
            self.newest = older;
        }
        if older != NIL {
            self.node_mut(older).newer = newer;
        } else {
            self.oldest = newer;
        }
        if self.hand == i {
            self.hand = newer;
        }
        let charge = self.node(i).charge;
        self.slots[i as usize] = Slot::Free;
        self.free.push(i);
        self.stats.bytes -= charge;
        self.stats.entries -= 1;
    }

    /// Recomputes the accounting from scratch and checks the queue; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut bytes = 0;
        let mut count = 0;
        let mut i = self.oldest;
        let mut prev = NIL;
        while i != NIL {
            let n = self.node(i);
            assert_eq!(n.older, prev);
            assert_eq!(n.charge, Store::charge_of(&n.key, &n.response));
            bytes += n.charge;
            count += 1;
            prev = i;
            i = n.newer;
        }
        assert_eq!(prev, self.newest);
        assert_eq!(bytes, self.stats.bytes);
        assert_eq!(count, self.stats.entries);
        assert!(self.stats.bytes <= self.cfg.budget);
        let chained: usize = self
            .index
            .values()
            .map(|&h| {
                let mut k = 0;
                let mut j = h;
                while j != NIL {
                    k += 1;
                    j = self.node(j).next;
                }
                k
            })
            .sum();
        assert_eq!(chained, count);
    }
}
