//! Criterion benchmarks of the cache's hot paths: building and hashing a
//! primary key, a store hit (hash + key compare + Vary match + `Arc` clone),
//! the freshness decision on a hit, and an insert into a full store (which
//! evicts). Run with `cargo bench -p shardproxy --bench cache`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use shardproxy::{
    cache::{
        age::FreshnessOptions,
        entry::CachedResponse,
        key::{hash_key, owner_shard, request_key, Scheme},
        policy::decide_for,
        store::{Store, StoreConfig},
    },
    http::head::{parse_request, parse_response, Limits, Method, RequestHead, ResponseHead},
};

const LIMITS: Limits = Limits {
    max_head_bytes: 16384,
    max_headers: 100,
    max_uri_length: 8192,
};

const REQUEST: &[u8] = b"GET /assets/app.3f2a1c.js?v=12 HTTP/1.1\r\nHost: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
Connection: keep-alive\r\n\r\n";

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Sun, 22 Nov 2026 05:00:00 GMT\r\n\
Content-Type: application/javascript\r\nContent-Length: 1024\r\nCache-Control: max-age=3600\r\n\
ETag: \"3f2a1c\"\r\nVary: Accept-Encoding\r\n\r\n";

const NOW: u64 = 1_795_323_600; // Sun, 22 Nov 2026 05:00:00 GMT

fn parsed() -> (RequestHead, ResponseHead) {
    let mut req = RequestHead::default();
    assert!(parse_request(REQUEST, &LIMITS, &mut req).unwrap());
    let mut resp = ResponseHead::default();
    assert!(parse_response(RESPONSE, &LIMITS, Method::Get, &mut resp).unwrap());
    (req, resp)
}

fn object(req: &RequestHead, resp: &ResponseHead, body: usize) -> Arc<CachedResponse> {
    let entry = CachedResponse::from_response(
        resp,
        RESPONSE,
        Arc::from(vec![b'x'; body]),
        req,
        REQUEST,
        NOW,
        NOW,
        &FreshnessOptions::default(),
    )
    .unwrap();
    Arc::new(entry)
}

fn key_of(i: usize) -> Vec<u8> {
    format!("G http://www.example.com/assets/{i:08}.js").into_bytes()
}

fn bench_key(c: &mut Criterion) {
    let (req, _) = parsed();
    let mut key = Vec::with_capacity(256);
    c.bench_function("cache/key build + hash + owner", |b| {
        b.iter(|| {
            request_key(&mut key, Scheme::Http, black_box(&req), REQUEST).unwrap();
            let h = hash_key(&key);
            owner_shard(h, black_box(8))
        })
    });
}

fn bench_lookup(c: &mut Criterion) {
    let (req, resp) = parsed();
    let obj = object(&req, &resp, 1024);
    let mut store = Store::new(StoreConfig {
        budget: 64 << 20,
        max_object: 1 << 20,
        max_variants: 8,
    });
    for i in 0..10_000 {
        let k = key_of(i);
        store.insert(hash_key(&k), &k, Arc::clone(&obj)).unwrap();
    }
    let k = key_of(4321);
    let h = hash_key(&k);
    c.bench_function("cache/store lookup hit (vary match)", |b| {
        b.iter(|| {
            store
                .lookup_request(black_box(h), black_box(&k), &req, REQUEST)
                .unwrap()
        })
    });
    c.bench_function("cache/decide on hit", |b| {
        b.iter(|| decide_for(black_box(&obj), &req, REQUEST, NOW + 10))
    });
}

fn bench_insert(c: &mut Criterion) {
    let (req, resp) = parsed();
    let obj = object(&req, &resp, 1024);
    let charge = Store::charge_of(&key_of(0), &obj);
    let keys: Vec<(u64, Vec<u8>)> = (0..200_000)
        .map(|i| {
            let k = key_of(i);
            (hash_key(&k), k)
        })
        .collect();
    c.bench_function("cache/insert into full store (evicts)", |b| {
        b.iter_batched_ref(
            || {
                let mut store = Store::new(StoreConfig {
                    budget: 1_000 * charge,
                    max_object: 1 << 20,
                    max_variants: 8,
                });
                for (h, k) in &keys[..1_000] {
                    store.insert(*h, k, Arc::clone(&obj)).unwrap();
                }
                (store, 1_000usize)
            },
            |(store, next)| {
                for _ in 0..1_000 {
                    let (h, k) = &keys[*next % keys.len()];
                    store.insert(*h, k, Arc::clone(&obj)).unwrap();
                    *next += 1;
                }
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, bench_key, bench_lookup, bench_insert);
criterion_main!(benches);
