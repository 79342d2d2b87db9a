//! Who holds a key, and the only messages that cross shards.
//!
//! Every cache key has one owner shard (`key::owner_shard`). The owner's
//! [`Store`] is the only copy of record; other shards ask the owner over the
//! shard mesh ([`crate::shard::mesh`]) and get back the stored variants (shared `Arc`s — no
//! bytes are copied across cores), permission to fetch and fill, or, while
//! another request is already fetching that key, a place in its waiting list
//! (request coalescing). Nothing else a shard owns is ever touched by
//! another shard.
//!
//! Messages are bounded (the mesh's queues have a fixed size) and sent with
//! `try_send`: a full queue means the owner is overloaded, and the asking
//! request sheds the cache and goes to the origin rather than piling up.
//!
//! A small per-shard near cache keeps short-lived copies (`Arc` clones) of
//! objects fetched from other owners, so one very hot key does not funnel
//! every request through its owner's queue; the owner tells every shard to
//! drop its copy when the object is replaced, invalidated or purged.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use super::{
    entry::CachedResponse,
    key::owner_shard,
    store::{Store, StoreConfig},
};
use crate::{
    config::CacheConfig,
    shard::{mesh::MeshEnd, oneshot},
};

/// A shard's ends of the cache's mesh.
pub type Mesh = MeshEnd<Message>;

/// Messages between shards. Sizes: a key travels as a boxed slice (one
/// pointer + length plus the URL bytes); answers carry `Arc`s only.
#[derive(Debug)]
pub enum Message {
    /// Asks the owner for the variants of a key.
    Lookup {
        from: usize,
        id: u64,
        hash: u64,
        key: Box<[u8]>,
        want: Want,
    },
    /// Asks the owner for the right to refresh a stale entry in the background
    /// (once per key). `stale` identifies the stored response the asker saw
    /// (its `Arc` address): a key already refreshed is not refreshed again.
    Claim {
        from: usize,
        id: u64,
        hash: u64,
        key: Box<[u8]>,
        stale: usize,
        background: bool,
    },
    /// A fetch finished: store `response` (if any) and wake the key's waiters.
    Fill {
        hash: u64,
        key: Box<[u8]>,
        response: Option<Arc<CachedResponse>>,
    },
    /// Removes a key (unsafe method succeeded, or PURGE); answers if `reply` is set.
    Invalidate {
        hash: u64,
        key: Box<[u8]>,
        reply: Option<(usize, u64)>,
    },
    /// Drop the near-cache copy of a key; acknowledged if `reply` is set.
    Forget {
        hash: u64,
        key: Box<[u8]>,
        reply: Option<(usize, u64)>,
    },
    /// Owner → asker.
    Answer { id: u64, answer: Answer },
}

/// What a lookup is after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Only what is stored (HEAD, only-if-cached): never becomes the fetcher.
    Peek,
    /// A GET: if nothing is stored and nobody is fetching, the asker fetches.
    Fill,
    /// A GET whose Vary variant is not among the stored ones: ignore them, wait
    /// for a fetch of the key already under way, or fetch.
    FillVariant,
}

/// The owner's answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Stored variants, newest first; the asker picks by Vary.
    Variants(Vec<Arc<CachedResponse>>),
    /// Nothing stored and nobody fetching: fetch, then send `Fill`.
    Fetch,
    /// Go to the origin without filling (owner busy, waiting timed out, or the fill was abandoned).
    Alone,
    Granted,
    Denied,
    /// Whether an invalidation removed anything.
    Removed(bool),
}

/// Where an owner sends an answer it could not give at once.
enum Waiter {
    Local(oneshot::Sender<Answer>),
    Remote { shard: usize, id: u64 },
}

struct InFlight {
    since: Instant,
    waiters: Vec<Waiter>,
    /// A stale-while-revalidate refresh: lookups keep getting the stale copy
    /// instead of waiting for it.
    background: bool,
}

impl InFlight {
    fn new(background: bool) -> InFlight {
        InFlight {
            since: Instant::now(),
            waiters: Vec::new(),
            background,
        }
    }
}

/// Per-shard counters, reported at shutdown.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub stale_served: u64,
    pub revalidated: u64,
    pub coalesced_waits: u64,
    pub cross_shard_lookups: u64,
    pub near_hits: u64,
    pub shed: u64,
}

/// One shard's part of the cache: the store it owns, the near cache, the
/// in-flight table for keys it owns, and its end of the mesh.
pub struct CacheShard {
    /// This shard's id: the owner numbering of keys.
    pub id: usize,
    shards: usize,
    config: CacheConfig,
    store: RefCell<Store>,
    near: Option<RefCell<Store>>,
    /// Near caches are on (for every shard: they share the config).
    near_enabled: bool,
    near_born: RefCell<HashMap<u64, Instant>>,
    in_flight: RefCell<HashMap<Box<[u8]>, InFlight>>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: Cell<u64>,
    mesh: Option<Mesh>,
    pub counters: RefCell<Counters>,
    /// Cross-shard lookup round trips, microseconds.
    pub lookup_latency: RefCell<Histogram<u64>>,
}

/// Most variants kept per URL; bounds what one URL with a wide Vary can take.
const MAX_VARIANTS: usize = 8;

impl CacheShard {
    pub fn new(id: usize, shards: usize, config: &CacheConfig, mesh: Option<Mesh>) -> CacheShard {
        let budget = (config.capacity / shards.max(1) as u64) as usize;
        let store = Store::new(StoreConfig {
            budget,
            max_object: config.max_object_size as usize + 64 * 1024,
            max_variants: MAX_VARIANTS,
        });
        let near = (config.near_cache_size > 0 && shards > 1).then(|| {
            RefCell::new(Store::new(StoreConfig {
                budget: config.near_cache_size as usize,
                max_object: config.near_cache_size as usize,
                max_variants: MAX_VARIANTS,
            }))
        });
        CacheShard {
            id,
            shards,
            config: config.clone(),
            store: RefCell::new(store),
            near_enabled: near.is_some(),
            near,
            near_born: RefCell::new(HashMap::new()),
            in_flight: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            mesh,
            counters: RefCell::new(Counters::default()),
            // 1 µs .. 60 s at 2 significant digits: a few KiB.
            lookup_latency: RefCell::new(
                Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds"),
            ),
        }
    }

    /// Handles the messages other shards send this one, until they all stop.
    /// Runs as one task on the shard; returns at once without a mesh (one shard).
    pub async fn serve_mesh(&self) {
        if let Some(mesh) = &self.mesh {
            mesh.receive(|message| self.handle(message)).await;
        }
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    pub fn owner(&self, hash: u64) -> usize {
        owner_shard(hash, self.shards)
    }

    /// Store statistics of the slice this shard owns.
    pub fn store_stats(&self) -> super::store::Stats {
        self.store.borrow().stats()
    }

    /// Asks the key's owner what it holds. With `claim`, a miss makes this
    /// request the fetcher (`Answer::Fetch`) unless another fetch of the key
    /// is under way, in which case this waits for it (up to `coalesce_wait`).
    /// `selects` tells whether a stored variant fits the request (Vary): a
    /// near-cache copy answers only if one fits, else the owner is asked.
    pub async fn lookup(
        &self,
        hash: u64,
        key: &[u8],
        want: Want,
        selects: impl Fn(&CachedResponse) -> bool,
    ) -> Answer {
        let owner = self.owner(hash);
        if owner == self.id {
            return match self.owner_lookup(hash, key, want) {
                Ok(answer) => answer,
                Err(()) => {
                    let (tx, rx) = oneshot::channel();
                    self.wait_in_line(key, Waiter::Local(tx));
                    self.wait(rx).await
                }
            };
        }
        if let (Some(near), false) = (&self.near, want == Want::FillVariant) {
            let fresh = self
                .near_born
                .borrow()
                .get(&hash)
                .is_some_and(|born| born.elapsed() < self.config.near_cache_ttl);
            if fresh {
                let variants: Vec<_> = near.borrow().variants(hash, key).cloned().collect();
                if variants.iter().any(|v| selects(v)) {
                    self.counters.borrow_mut().near_hits += 1;
                    return Answer::Variants(variants);
                }
            }
        }
        let started = Instant::now();
        let message = |id| Message::Lookup {
            from: self.id,
            id,
            hash,
            key: key.into(),
            want,
        };
        let answer = self.ask(owner, message).await;
        self.counters.borrow_mut().cross_shard_lookups += 1;
        let _ = self
            .lookup_latency
            .borrow_mut()
            .record(started.elapsed().as_micros() as u64);
        if let (Some(near), Answer::Variants(variants)) = (&self.near, &answer) {
            let mut near = near.borrow_mut();
            for variant in variants.iter().rev() {
                let _ = near.insert(hash, key, Arc::clone(variant));
            }
            self.near_born.borrow_mut().insert(hash, Instant::now());
        }
        answer
    }

    /// Asks for the right to refresh `stale` in the background; granted once
    /// per key, and not at all if the key has been refreshed since.
    /// `background`: a stale-while-revalidate refresh, during which lookups
    /// keep getting the stale copy; otherwise (a revalidation the client waits
    /// for) other requests for the key wait for its result.
    pub async fn claim(
        &self,
        hash: u64,
        key: &[u8],
        stale: &Arc<CachedResponse>,
        background: bool,
    ) -> bool {
        let owner = self.owner(hash);
        let stale = Arc::as_ptr(stale) as usize;
        let answer = if owner == self.id {
            self.owner_claim(hash, key, stale, background)
        } else {
            self.ask(owner, |id| Message::Claim {
                from: self.id,
                id,
                hash,
                key: key.into(),
                stale,
                background,
            })
            .await
        };
        matches!(answer, Answer::Granted)
    }

    /// Ends a fetch: stores `response` on the owner (or only releases the
    /// waiters if `None`: the response was not cacheable, or too large).
    /// A replacement also drops this shard's own near copy at once: the
    /// owner's `Forget` arrives later, and the client that caused the fill
    /// may ask again before it does (and must not meet the old copy).
    pub fn fill(&self, hash: u64, key: &[u8], response: Option<Arc<CachedResponse>>) {
        let owner = self.owner(hash);
        if response.is_some() {
            self.forget(hash, key);
        }
        if owner == self.id {
            self.owner_fill(hash, key, response);
        } else {
            self.tell(
                owner,
                Message::Fill {
                    hash,
                    key: key.into(),
                    response,
                },
            );
        }
    }

    /// Removes a key everywhere: from its owner's store and from every
    /// shard's near cache, all acknowledged before this returns, so a request
    /// that follows the invalidating response never sees the old copy.
    /// Returns whether the owner held it.
    pub async fn invalidate(&self, hash: u64, key: &[u8]) -> bool {
        let owner = self.owner(hash);
        self.forget(hash, key);
        let removed = if owner == self.id {
            self.store.borrow_mut().invalidate(hash, key) > 0
        } else {
            let message = |id| Message::Invalidate {
                hash,
                key: key.into(),
                reply: Some((self.id, id)),
            };
            matches!(self.ask(owner, message).await, Answer::Removed(true))
        };
        if self.near_enabled {
            for shard in (0..self.shards).filter(|&s| s != self.id && s != owner) {
                let message = |id| Message::Forget {
                    hash,
                    key: key.into(),
                    reply: Some((self.id, id)),
                };
                self.ask(shard, message).await;
            }
        }
        removed
    }

    /// Handles one message from another shard.
    pub fn handle(&self, message: Message) {
        match message {
            Message::Lookup {
                from,
                id,
                hash,
                key,
                want,
            } => match self.owner_lookup(hash, &key, want) {
                Ok(answer) => self.tell(from, Message::Answer { id, answer }),
                Err(()) => self.wait_in_line(&key, Waiter::Remote { shard: from, id }),
            },
            Message::Claim {
                from,
                id,
                hash,
                key,
                stale,
                background,
            } => {
                let answer = self.owner_claim(hash, &key, stale, background);
                self.tell(from, Message::Answer { id, answer });
            }
            Message::Fill {
                hash,
                key,
                response,
            } => self.owner_fill(hash, &key, response),
            Message::Invalidate { hash, key, reply } => {
                let removed = self.store.borrow_mut().invalidate(hash, &key) > 0;
                if let Some((shard, id)) = reply {
                    self.tell(
                        shard,
                        Message::Answer {
                            id,
                            answer: Answer::Removed(removed),
                        },
                    );
                }
            }
            Message::Forget { hash, key, reply } => {
                self.forget(hash, &key);
                if let Some((shard, id)) = reply {
                    self.tell(
                        shard,
                        Message::Answer {
                            id,
                            answer: Answer::Removed(true),
                        },
                    );
                }
            }
            Message::Answer { id, answer } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    tx.send(answer);
                }
            }
        }
    }

    /// The owner's side of a lookup. `Err(())`: a fetch is under way, wait for it.
    fn owner_lookup(&self, hash: u64, key: &[u8], want: Want) -> Result<Answer, ()> {
        let mut in_flight = self.in_flight.borrow_mut();
        let pending = in_flight
            .get(key)
            .filter(|fetch| fetch.since.elapsed() < self.config.coalesce_wait);
        // A fetch or revalidation under way (or just finished, its fill still
        // queued) will have the answer: wait for it rather than serve what it replaces.
        if pending.is_some_and(|fetch| !fetch.background) {
            return Err(());
        }
        let mut store = self.store.borrow_mut();
        // Marks the newest variant visited (for SIEVE) and counts the hit or miss.
        if want != Want::FillVariant && store.lookup(hash, key, |_| true).is_some() {
            return Ok(Answer::Variants(
                store.variants(hash, key).cloned().collect(),
            ));
        }
        match pending {
            Some(_) => Err(()),
            None if want == Want::Peek => Ok(Answer::Alone),
            // No fetch, or one that overran the wait limit (its fetcher may be gone): this one fetches.
            None => {
                in_flight.insert(key.into(), InFlight::new(false));
                Ok(Answer::Fetch)
            }
        }
    }

    fn owner_claim(&self, hash: u64, key: &[u8], stale: usize, background: bool) -> Answer {
        let still_stored = self
            .store
            .borrow()
            .variants(hash, key)
            .any(|v| Arc::as_ptr(v) as usize == stale);
        let mut in_flight = self.in_flight.borrow_mut();
        match in_flight.get(key) {
            Some(fetch) if fetch.since.elapsed() < self.config.coalesce_wait => Answer::Denied,
            // Refreshed (or dropped) since the asker saw it: nothing to do.
            _ if !still_stored => Answer::Denied,
            _ => {
                in_flight.insert(key.into(), InFlight::new(background));
                Answer::Granted
            }
        }
    }

    fn wait_in_line(&self, key: &[u8], waiter: Waiter) {
        self.counters.borrow_mut().coalesced_waits += 1;
        match self.in_flight.borrow_mut().get_mut(key) {
            Some(fetch) => fetch.waiters.push(waiter),
            None => self.answer(waiter, Answer::Alone),
        }
    }

    fn owner_fill(&self, hash: u64, key: &[u8], response: Option<Arc<CachedResponse>>) {
        let replaced = match &response {
            Some(response) => {
                let mut store = self.store.borrow_mut();
                let existed = store.variants(hash, key).next().is_some();
                let _ = store.insert(hash, key, Arc::clone(response));
                existed
            }
            None => false,
        };
        if replaced {
            self.broadcast_forget(hash, key);
        }
        let waiters = self
            .in_flight
            .borrow_mut()
            .remove(key)
            .map(|f| f.waiters)
            .unwrap_or_default();
        let answer = match response {
            Some(response) => Answer::Variants(vec![response]),
            None => Answer::Alone,
        };
        for waiter in waiters {
            self.answer(waiter, answer.clone());
        }
    }

    fn forget(&self, hash: u64, key: &[u8]) {
        if let Some(near) = &self.near {
            near.borrow_mut().invalidate(hash, key);
            self.near_born.borrow_mut().remove(&hash);
        }
    }

    fn broadcast_forget(&self, hash: u64, key: &[u8]) {
        if !self.near_enabled {
            return;
        }
        for shard in (0..self.shards).filter(|&s| s != self.id) {
            self.tell(
                shard,
                Message::Forget {
                    hash,
                    key: key.into(),
                    reply: None,
                },
            );
        }
    }

    fn answer(&self, waiter: Waiter, answer: Answer) {
        match waiter {
            Waiter::Local(tx) => tx.send(answer),
            Waiter::Remote { shard, id } => self.tell(shard, Message::Answer { id, answer }),
        }
    }

    /// Sends without waiting; a full queue drops the message (the other side times out and sheds).
    fn tell(&self, shard: usize, message: Message) {
        if let Some(mesh) = &self.mesh {
            if mesh.try_send(shard, message).is_err() {
                self.counters.borrow_mut().shed += 1;
            }
        }
    }

    /// Sends a request and waits for its answer, at most `coalesce_wait` (plus
    /// a margin for the queue); on timeout or overload the answer is `Alone`.
    async fn ask(&self, shard: usize, message: impl FnOnce(u64) -> Message) -> Answer {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let sent = match &self.mesh {
            Some(mesh) => mesh.try_send(shard, message(id)).is_ok(),
            None => false,
        };
        if !sent {
            self.pending.borrow_mut().remove(&id);
            self.counters.borrow_mut().shed += 1;
            return Answer::Alone;
        }
        let answer = self.wait(rx).await;
        self.pending.borrow_mut().remove(&id);
        answer
    }

    async fn wait(&self, rx: oneshot::Receiver<Answer>) -> Answer {
        let limit = self.config.coalesce_wait + Duration::from_millis(100);
        match compio::time::timeout(limit, rx).await {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(_) => Answer::Alone,
        }
    }
}
