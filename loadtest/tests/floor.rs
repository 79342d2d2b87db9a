//! `loadtest floor` end to end, with 1 and 2 shards in front of a real
//! `loadtest origin`: keep-alive requests are forwarded and answered byte
//! for byte as the origin answers them, `loadtest run --verify` through it
//! sees no error, and what it refuses (a request body) it refuses clearly.

mod common;

use common::{run_json, serve, start_origin_with, Served};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn start_floor(origin: &str, shards: usize) -> Served {
    let shards = shards.to_string();
    serve(&["floor", "--upstream", origin, "--shards", &shards])
}

/// Sends `request` on `conn` and reads one response: (status line, body).
/// A response to HEAD has a Content-Length but no body.
fn exchange(conn: &mut BufReader<TcpStream>, request: &str) -> (String, Vec<u8>) {
    let bodiless = request.starts_with("HEAD ");
    conn.get_mut().write_all(request.as_bytes()).unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; if bodiless { 0 } else { length }];
    conn.read_exact(&mut body).unwrap();
    (status.trim_end().to_string(), body)
}

fn connect(addr: &str) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

#[test]
fn keep_alive_requests_are_answered_as_the_origin_answers_them() {
    let origin = start_origin_with(1, &[]);
    for shards in [1, 2] {
        let floor = start_floor(&origin.addr, shards);
        let mut direct = connect(&origin.addr);
        let mut through = connect(&floor.addr);
        for path in ["/bytes/1024", "/bytes/70000", "/bytes/1"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
            let (status, body) = exchange(&mut through, &request);
            let (_, expected) = exchange(&mut direct, &request);
            assert_eq!(status, "HTTP/1.1 200 OK", "{shards} shards, {path}");
            assert!(
                !body.is_empty() && body == expected,
                "{shards} shards, {path}: body differs"
            );
        }
        // HEAD: the head only, and the connection still serves the next request.
        let (status, body) = exchange(&mut through, "HEAD /bytes/1024 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((status.as_str(), body.len()), ("HTTP/1.1 200 OK", 0));
        let request = "GET /bytes/10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let (_, body) = exchange(&mut through, request);
        assert_eq!(body.len(), 10);
        let mut rest = Vec::new();
        through.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "the floor closes after `Connection: close`"
        );
    }
}

#[test]
fn a_verified_load_through_the_floor_sees_no_error() {
    let origin = start_origin_with(2, &[]);
    let floor = start_floor(&origin.addr, 2);
    let url = format!("http://{}/bytes/4096", floor.addr);
    let v = run_json(&[
        &url, "-c", "8", "-t", "2", "-d", "300ms", "--warmup", "0s", "--verify",
    ]);
    assert!(v["requests"].as_u64().unwrap() > 10, "{v}");
    assert_eq!(v["errors"]["total"], 0, "{v}");
}

#[test]
fn a_request_body_is_refused_with_501_and_a_close() {
    let origin = start_origin_with(1, &[]);
    let floor = start_floor(&origin.addr, 1);
    let mut conn = connect(&floor.addr);
    let (status, _) = exchange(
        &mut conn,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(status, "HTTP/1.1 501 Not Implemented");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}
