//! End-to-end checks of the `loadtest` binary: start the origin on port 0,
//! wait for its "origin listening on" line (no fixed sleeps), drive it with
//! `loadtest run --json --verify` for a short, bounded run, and check the
//! result object; also exercise the origin's endpoints over a raw socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod common;

use common::{run_json, start_origin_with, Served as Origin};

fn start_origin(shards: usize) -> Origin {
    start_origin_with(shards, &[])
}

fn raw(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn client_against_origin_keepalive_and_verify() {
    let o = start_origin(2);
    for path in ["/", "/bytes/70000", "/chunked/5000", "/bytes/100?chunked=1"] {
        let url = format!("http://{}{path}", o.addr);
        let v = run_json(&[
            &url, "-c", "4", "-t", "2", "-d", "300ms", "--warmup", "0s", "--verify",
        ]);
        assert!(v["requests"].as_u64().unwrap() > 10, "{path}: {v}");
        assert_eq!(v["errors"]["total"], 0, "{path}: {v}");
        for k in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            assert!(v["latency_ms"][k].is_number(), "{k}");
        }
        assert!(v["requests_per_sec"].as_f64().unwrap() > 0.0);
        assert!(v["bytes_per_sec"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn client_modes_new_connection_pipeline_rate_requests() {
    let o = start_origin(1);
    let url = format!("http://{}/", o.addr);
    let v = run_json(&[
        &url,
        "-c",
        "2",
        "-t",
        "1",
        "-n",
        "200",
        "--warmup",
        "0s",
        "--new-connection-per-request",
    ]);
    assert_eq!(v["requests"], 200, "{v}");
    assert_eq!(v["errors"]["total"], 0);
    let v = run_json(&[
        &url,
        "-c",
        "2",
        "-t",
        "1",
        "-n",
        "500",
        "--warmup",
        "0s",
        "--pipeline",
        "8",
    ]);
    assert_eq!(v["requests"], 500, "{v}");
    let v = run_json(&[
        &url, "-c", "2", "-t", "1", "-d", "500ms", "--warmup", "0s", "--rate", "200",
    ]);
    let n = v["requests"].as_u64().unwrap();
    assert!((80..=120).contains(&n), "open loop sent {n}");
    let echo = format!("http://{}/echo", o.addr);
    let v = run_json(&[
        &echo,
        "-c",
        "2",
        "-t",
        "1",
        "-n",
        "50",
        "--warmup",
        "0s",
        "-m",
        "POST",
        "--body-size",
        "3000",
        "--verify",
    ]);
    assert_eq!(v["requests"], 50);
    assert_eq!(v["errors"]["total"], 0);
    let st = format!("http://{}/status/503", o.addr);
    let v = run_json(&[&st, "-c", "1", "-t", "1", "-n", "5", "--warmup", "0s"]);
    assert_eq!(v["errors"]["status_5xx"], 5);
}

#[test]
fn client_counts_connect_errors_and_timeouts() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let v = run_json(&[
        &format!("http://127.0.0.1:{port}/"),
        "-c",
        "1",
        "-t",
        "1",
        "-d",
        "200ms",
        "--warmup",
        "0s",
    ]);
    assert!(v["errors"]["connect"].as_u64().unwrap() > 0, "{v}");
    let o = start_origin(1);
    let slow = format!("http://{}/delay/2s/", o.addr);
    let v = run_json(&[
        &slow,
        "-c",
        "1",
        "-t",
        "1",
        "-d",
        "300ms",
        "--warmup",
        "0s",
        "--timeout",
        "100ms",
    ]);
    assert!(v["errors"]["timeout"].as_u64().unwrap() > 0, "{v}");
}

#[test]
fn origin_endpoints_and_conditionals() {
    let o = start_origin(2);
    let r = raw(
        &o.addr,
        "GET /cache/max-age=60/bytes/5/17 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(r.contains("Content-Length: 5\r\n"));
    assert!(r.contains("Cache-Control: max-age=60\r\n"));
    assert!(r.contains("X-Checksum: "));
    let etag = r
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("etag")
        .to_string();
    let lm = r
        .lines()
        .find_map(|l| l.strip_prefix("Last-Modified: "))
        .expect("last-modified")
        .to_string();
    let r = raw(
        &o.addr,
        &format!("GET /bytes/5 HTTP/1.1\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    let r = raw(
        &o.addr,
        &format!("GET /bytes/5 HTTP/1.1\r\nIf-Modified-Since: {lm}\r\nConnection: close\r\n\r\n"),
    );
    assert!(r.starts_with("HTTP/1.1 304"), "{r}");
    let r = raw(
        &o.addr,
        "GET /nocache/status/418 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 418"), "{r}");
    assert!(r.contains("Cache-Control: no-store"));
    let r = raw(&o.addr, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n");
    assert!(
        r.contains("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: "),
        "{r}"
    );
    // Pipelined requests on one connection, answered in order.
    let r = raw(
        &o.addr,
        "GET /bytes/1 HTTP/1.1\r\n\r\nGET /bytes/2 HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.matches("HTTP/1.1 200 OK").count(), 2, "{r}");
    let r = raw(
        &o.addr,
        "GET /__stats HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    let body = r.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v["requests"].as_u64().unwrap() >= 7, "{v}");
    assert!(v["connections"].as_u64().unwrap() >= 7, "{v}");
    let r = raw(&o.addr, "GARBAGE\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}

#[test]
fn origin_delay_slows_every_response() {
    let o = start_origin_with(1, &["--delay", "150ms"]);
    let started = std::time::Instant::now();
    let response = raw(
        &o.addr,
        "GET /bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}
