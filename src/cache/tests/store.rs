use std::sync::Arc;

use crate::cache::entry::CachedResponse;
use crate::cache::key::hash_key;
use crate::cache::store::{InsertError, Store, StoreConfig};

use super::{entry_at, get, resp, t0, T0_STR};

/// A plain stored response with a body of `len` bytes.
fn object(len: usize) -> Arc<CachedResponse> {
    let r = resp(
        200,
        &[&format!("Date: {T0_STR}"), "Cache-Control: max-age=60"],
    );
    Arc::new(entry_at(&get(&[]), &r, &vec![b'x'; len], t0(), t0()))
}

/// A response varying on Accept-Encoding, stored for a request sending `ae`.
fn variant(ae: &str) -> Arc<CachedResponse> {
    let r = resp(200, &["Vary: Accept-Encoding", "Cache-Control: max-age=60"]);
    let q = get(&[&format!("Accept-Encoding: {ae}")]);
    Arc::new(entry_at(&q, &r, ae.as_bytes(), t0(), t0()))
}

fn key(i: usize) -> Vec<u8> {
    format!("G http://a/{i:06}").into_bytes()
}

fn store_for(entries: usize, body: usize) -> Store {
    let charge = Store::charge_of(&key(0), &object(body));
    Store::new(StoreConfig {
        budget: entries * charge,
        max_object: charge,
        max_variants: 4,
    })
}

fn has(store: &mut Store, i: usize) -> bool {
    let k = key(i);
    store.lookup(hash_key(&k), &k, |_| true).is_some()
}

fn put(store: &mut Store, i: usize, body: usize) {
    let k = key(i);
    store.insert(hash_key(&k), &k, object(body)).unwrap();
}

#[test]
fn hit_miss_and_counters() {
    let mut s = store_for(10, 100);
    assert!(!has(&mut s, 1));
    put(&mut s, 1, 100);
    assert!(has(&mut s, 1));
    let k = key(1);
    let hit = s.lookup(hash_key(&k), &k, |_| true).unwrap();
    assert_eq!(hit.body().len(), 100);
    let st = s.stats();
    assert_eq!((st.hits, st.misses, st.inserts, st.entries), (2, 1, 1, 1));
    assert_eq!(st.bytes, Store::charge_of(&k, &hit));
    // Accounting covers more than the body: head, key, metadata.
    assert!(st.bytes > 100 + hit.head().len() + k.len() + 64);
    s.check_invariants();
}

#[test]
fn vary_variants_select_replace_and_cap() {
    let mut s = store_for(20, 100);
    let k = key(7);
    let h = hash_key(&k);
    for ae in ["gzip", "br", "identity"] {
        s.insert(h, &k, variant(ae)).unwrap();
    }
    for ae in ["gzip", "br", "identity"] {
        let q = get(&[&format!("Accept-Encoding: {ae}")]);
        let hit = s.lookup_request(h, &k, &q.head, &q.buf).unwrap();
        assert_eq!(&**hit.body(), ae.as_bytes());
    }
    let q = get(&["Accept-Encoding: zstd"]);
    assert!(s.lookup_request(h, &k, &q.head, &q.buf).is_none());
    // Same variant again: replaced, not duplicated.
    let again = variant("gzip");
    s.insert(h, &k, Arc::clone(&again)).unwrap();
    assert_eq!(s.variants(h, &k).count(), 3);
    assert_eq!(s.stats().replaced, 1);
    let q = get(&["Accept-Encoding: gzip"]);
    assert!(Arc::ptr_eq(
        &s.lookup_request(h, &k, &q.head, &q.buf).unwrap(),
        &again
    ));
    // max_variants = 4: the fifth variant pushes out the oldest ("br").
    s.insert(h, &k, variant("zstd")).unwrap();
    s.insert(h, &k, variant("deflate")).unwrap();
    assert_eq!(s.variants(h, &k).count(), 4);
    let q = get(&["Accept-Encoding: br"]);
    assert!(s.lookup_request(h, &k, &q.head, &q.buf).is_none());
    s.check_invariants();
    // Invalidation removes every variant.
    assert_eq!(s.invalidate(h, &k), 4);
    assert_eq!(s.stats().entries, 0);
    assert_eq!(s.stats().bytes, 0);
    s.check_invariants();
}

#[test]
fn colliding_hashes_stay_apart() {
    let mut s = store_for(10, 10);
    let (a, b) = (key(1), key(2));
    s.insert(42, &a, object(10)).unwrap();
    s.insert(42, &b, object(10)).unwrap();
    assert!(s.lookup(42, &a, |_| true).is_some());
    assert!(s.lookup(42, &b, |_| true).is_some());
    assert_eq!(s.invalidate(42, &a), 1);
    assert!(s.lookup(42, &a, |_| true).is_none());
    assert!(s.lookup(42, &b, |_| true).is_some());
    s.check_invariants();
}

#[test]
fn oversized_objects_are_refused() {
    let mut s = store_for(10, 100);
    let k = key(1);
    assert!(matches!(
        s.insert(hash_key(&k), &k, object(101)),
        Err(InsertError::TooLarge { .. })
    ));
    assert_eq!(s.stats().refused, 1);
    assert_eq!(s.stats().entries, 0);
}

#[test]
fn refresh_replaces_in_place() {
    let mut s = store_for(10, 4);
    let k = key(1);
    let h = hash_key(&k);
    let stale = object(4);
    s.insert(h, &k, Arc::clone(&stale)).unwrap();
    let nm = resp(304, &["Cache-Control: max-age=600"]);
    let fresh = Arc::new(
        stale
            .freshen(&nm.head, &nm.buf, t0() + 5, t0() + 5, &Default::default())
            .unwrap(),
    );
    assert!(s.refresh(h, &k, &stale, Arc::clone(&fresh)));
    assert!(Arc::ptr_eq(&s.lookup(h, &k, |_| true).unwrap(), &fresh));
    // The old pointer no longer names a stored variant.
    assert!(!s.refresh(h, &k, &stale, Arc::clone(&fresh)));
    assert_eq!(s.stats().refreshed, 1);
    s.check_invariants();
}

#[test]
fn sieve_eviction_order() {
    let mut s = store_for(4, 16);
    for i in 0..4 {
        put(&mut s, i, 16); // queue, oldest first: 0 1 2 3
    }
    assert!(has(&mut s, 1) && has(&mut s, 3));
    put(&mut s, 4, 16); // hand at 0: unvisited, evicted
    assert!(!has(&mut s, 0));
    // `has` marks visited, so probe absent keys only from here on.
    let live = |s: &Store| -> Vec<usize> {
        (0..20)
            .filter(|&i| {
                let k = key(i);
                let present = s.variants(hash_key(&k), &k).next().is_some();
                present
            })
            .collect()
    };
    assert_eq!(live(&s), [1, 2, 3, 4]);
    put(&mut s, 5, 16); // hand at 1: visited → cleared; 2 unvisited → evicted
    assert_eq!(live(&s), [1, 3, 4, 5]);
    put(&mut s, 6, 16); // hand at 3: visited → cleared; 4 evicted
    assert_eq!(live(&s), [1, 3, 5, 6]);
    put(&mut s, 7, 16); // hand at 5: unvisited → evicted
    assert_eq!(live(&s), [1, 3, 6, 7]);
    put(&mut s, 8, 16); // hand at 6 → evicted
    put(&mut s, 9, 16); // hand at 7 → evicted: new entries demote fast
    assert_eq!(live(&s), [1, 3, 8, 9]);
    put(&mut s, 10, 16); // hand at 8 → evicted
    assert_eq!(live(&s), [1, 3, 9, 10]);
    // Hit 9 and 10: the hand clears both, runs off the newest end, wraps to
    // the oldest (1, cleared on the earlier lap) and evicts it.
    assert!(has(&mut s, 9) && has(&mut s, 10));
    put(&mut s, 11, 16);
    assert_eq!(live(&s), [3, 9, 10, 11]);
    assert_eq!(s.stats().evictions, 8);
    s.check_invariants();
}

/// xorshift64*: a fixed-seed PRNG so churn tests are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn budget_never_exceeded_under_churn() {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let budget = 64 * 1024;
    let mut s = Store::new(StoreConfig {
        budget,
        max_object: 16 * 1024,
        max_variants: 3,
    });
    // A few shared bodies of many sizes (building entries is the slow part).
    let sizes = [0, 1, 10, 100, 700, 1500, 4000, 9000, 15_000, 17_000];
    let objects: Vec<_> = sizes.iter().map(|&n| object(n)).collect();
    let variants: Vec<_> = ["a", "b", "c", "d"].iter().map(|v| variant(v)).collect();
    for step in 0..20_000 {
        let k = key(rng.below(300) as usize);
        let h = hash_key(&k);
        match rng.below(10) {
            0..=4 => {
                let o = &objects[rng.below(objects.len() as u64) as usize];
                let r = s.insert(h, &k, Arc::clone(o));
                assert_eq!(r.is_err(), Store::charge_of(&k, o) > 16 * 1024);
            }
            5 => {
                let v = &variants[rng.below(4) as usize];
                s.insert(h, &k, Arc::clone(v)).unwrap();
            }
            6..=8 => {
                let _ = s.lookup(h, &k, |_| true);
            }
            _ => {
                s.invalidate(h, &k);
            }
        }
        assert!(s.stats().bytes <= budget, "step {step}");
        if step % 97 == 0 {
            s.check_invariants();
        }
    }
    s.check_invariants();
    let st = s.stats();
    assert!(
        st.evictions > 1000 && st.refused > 100 && st.hits > 100,
        "{st:?}"
    );
}

#[test]
fn scan_does_not_evict_a_hot_set() {
    // 100 slots; 20 hot keys hit while a single pass over 5,000 cold keys
    // streams through (one hot hit per cold insert).
    let mut s = store_for(100, 32);
    let hot: Vec<usize> = (0..20).collect();
    for &i in &hot {
        put(&mut s, i, 32);
        assert!(has(&mut s, i));
    }
    let mut hot_misses = 0;
    for n in 0..5_000 {
        put(&mut s, 1_000 + n, 32);
        let i = hot[n % hot.len()];
        if !has(&mut s, i) {
            hot_misses += 1;
            put(&mut s, i, 32);
        }
    }
    assert_eq!(hot_misses, 0);
    // Most cold keys were evicted; the budget held throughout.
    assert!(s.stats().evictions >= 5_000 - 80);
    s.check_invariants();
}
