//! Criterion benchmarks of the per-request hot paths: request head parse and
//! rewrite, response head parse and rewrite, chunked decoding, and the
//! balancer pick. Run with `cargo bench -p shardproxy`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardproxy::{
    config::ServerEntry,
    http::{
        body::BodyState,
        head::{parse_request, parse_response, Framing, Limits, Method, RequestHead, ResponseHead},
        rewrite::{write_request_head, write_response_head, ClientFraming, ForwardOptions},
    },
    upstream::{
        balance::{Balancer, Candidates, WeightedRoundRobin},
        rng::Rng,
    },
};

const LIMITS: Limits = Limits {
    max_head_bytes: 16384,
    max_headers: 100,
    max_uri_length: 8192,
};
const OPTS: ForwardOptions = ForwardOptions {
    x_forwarded_for: true,
    x_forwarded_proto: true,
    x_forwarded_host: true,
    via: true,
};

/// A typical browser request head (~500 bytes, 10 fields).
const REQUEST: &[u8] = b"GET /assets/app.3f2a1c.js?v=12 HTTP/1.1\r\nHost: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n\
Referer: https://www.example.com/\r\nConnection: keep-alive\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\nSec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\r\n";

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: origin\r\nDate: Sun, 22 Nov 2026 05:00:00 GMT\r\n\
Content-Type: application/javascript\r\nContent-Length: 1024\r\nCache-Control: max-age=3600\r\n\
ETag: \"3f2a1c\"\r\nConnection: keep-alive\r\n\r\n";

fn request_head(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_head");
    group.throughput(Throughput::Bytes(REQUEST.len() as u64));
    let mut head = RequestHead::default();
    group.bench_function("parse", |b| {
        b.iter(|| parse_request(black_box(REQUEST), &LIMITS, &mut head).unwrap())
    });
    let mut out = Vec::with_capacity(2048);
    parse_request(REQUEST, &LIMITS, &mut head).unwrap();
    group.bench_function("rewrite", |b| {
        b.iter(|| {
            out.clear();
            write_request_head(&mut out, black_box(REQUEST), &head, b"127.0.0.1", OPTS);
        })
    });
    group.bench_function("parse_and_rewrite", |b| {
        b.iter(|| {
            parse_request(black_box(REQUEST), &LIMITS, &mut head).unwrap();
            out.clear();
            write_request_head(&mut out, REQUEST, &head, b"127.0.0.1", OPTS);
        })
    });
    group.finish();
}

fn response_head(c: &mut Criterion) {
    let mut head = ResponseHead::default();
    let mut out = Vec::with_capacity(2048);
    let framing = ClientFraming {
        close: false,
        http10: false,
        dechunk: false,
    };
    c.bench_function("response_head/parse_and_rewrite", |b| {
        b.iter(|| {
            parse_response(black_box(RESPONSE), &LIMITS, Method::Get, &mut head).unwrap();
            out.clear();
            write_response_head(&mut out, RESPONSE, &head, true, framing, b"");
        })
    });
}

fn chunked(c: &mut Criterion) {
    // 64 KiB of payload in 4 KiB chunks, the shape of a streamed upstream body.
    let mut body = Vec::new();
    for _ in 0..16 {
        body.extend_from_slice(b"1000\r\n");
        body.extend(std::iter::repeat_n(b'x', 4096));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut group = c.benchmark_group("chunked");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("decode_64KiB", |b| {
        b.iter(|| {
            let mut state = BodyState::new(Framing::Chunked);
            let accepted = state.accept(black_box(&body)).unwrap();
            assert!(accepted.done);
        })
    });
    group.finish();
}

fn balancer(c: &mut Criterion) {
    let servers: Vec<ServerEntry> = (0..4)
        .map(|i| ServerEntry {
            addr: format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
            weight: i + 1,
        })
        .collect();
    let rr = WeightedRoundRobin::new(&servers);
    let rng = Rng::seeded(1);
    let candidates = Candidates {
        usable: &|_| true,
        load: &|_| 0,
        key: None,
        rng: &rng,
    };
    c.bench_function("balancer/weighted_round_robin_4", |b| {
        b.iter(|| black_box(rr.pick(&candidates)))
    });
}

criterion_group!(benches, request_head, response_head, chunked, balancer);
criterion_main!(benches);
