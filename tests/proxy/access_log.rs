//! The access log: one parsable line per request (JSON and combined formats,
//! a refused malformed head included),
//! written by the writer thread within a bounded wait, and SIGUSR1 reopening
//! the file after it was moved away, with no line lost across the rotation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// A log path in the temp dir, removed (with its rotated copy) on drop.
struct LogPath(PathBuf);

impl LogPath {
    fn new() -> LogPath {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        LogPath(
            std::env::temp_dir().join(format!("shardproxy-access-{}-{n}.log", std::process::id())),
        )
    }

    fn rotated(&self) -> PathBuf {
        self.0.with_extension("log.1")
    }
}

impl Drop for LogPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.rotated());
    }
}

fn logging_proxy(shards: usize, origin: &Origin, log: &LogPath, format: &str) -> Proxy {
    let config = ProxyConfig::new(shards)
        .upstream("o", &[origin.addr()])
        .route(None, "/app", "o")
        .set(
            "log",
            "access",
            &format!("{:?}", log.0.display().to_string()),
        )
        .set("log", "format", &format!("{format:?}"));
    Proxy::start(&config)
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The file's lines once it has at least `n` (lines are flushed every
/// 100 ms), or what it has after a few seconds.
fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = lines_of(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn json_log_has_one_parsable_line_per_request() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let log = LogPath::new();
        let proxy = logging_proxy(shards, &origin, &log, "json");
        for i in 0..6 {
            assert_status(&proxy.client().get(&format!("/app/{i}?q=\"x\"")), 200);
        }
        let mut client = proxy.client();
        assert_status(&client.request("DELETE", "/app/gone"), 200);
        assert_status(&client.get("/nowhere"), 404);
        let lines = wait_for_lines(&log.0, 8);
        assert_eq!(lines.len(), 8, "{lines:#?}");
        let entries: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let origin_addr = origin.addr().to_string();
        for e in &entries {
            assert_eq!(e["client"], "127.0.0.1");
            assert!(e["shard"].as_u64().unwrap() < shards as u64);
            assert!(e["duration_ms"].as_f64().unwrap() >= 0.0);
            assert!(e["time"].as_str().unwrap().ends_with('Z'));
            if e["status"] == 200 {
                assert_eq!(e["upstream"], origin_addr.as_str());
                assert!(e["upstream_ms"].as_f64().is_some());
                assert_eq!(e["bytes"], e["target"].as_str().unwrap().len());
            }
        }
        let count = |key: &str, value: &str| entries.iter().filter(|e| e[key] == value).count();
        assert_eq!(count("method", "GET"), 7);
        assert_eq!(count("method", "DELETE"), 1);
        assert_eq!(count("target", "/app/3?q=\"x\""), 1);
        assert_eq!(entries.iter().filter(|e| e["status"] == 404).count(), 1);
    });
}

/// `client - - [time] "request" status bytes "referer" "agent"` → its fields,
/// with `\"` and `\\` unescaped inside quotes; `None` if the line does not parse.
fn parse_combined(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (field, tail) = match rest.as_bytes()[0] {
            b'"' => {
                let mut value = String::new();
                let mut chars = rest[1..].char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => value.push(chars.next()?.1),
                        (i, '"') => break i + 2,
                        (_, c) => value.push(c),
                    }
                };
                (value, &rest[end..])
            }
            b'[' => {
                let end = rest.find(']')?;
                (rest[1..end].to_string(), &rest[end + 1..])
            }
            _ => {
                let end = rest.find(' ').unwrap_or(rest.len());
                (rest[..end].to_string(), &rest[end..])
            }
        };
        fields.push(field);
        rest = tail.strip_prefix(' ').unwrap_or(tail);
        if !tail.is_empty() && !tail.starts_with(' ') {
            return None;
        }
    }
    Some(fields)
}

#[test]
fn combined_log_lines_parse() {
    let origin = Origin::start(origin::echo_target());
    let log = LogPath::new();
    let proxy = logging_proxy(1, &origin, &log, "combined");
    let mut client = proxy.client();
    let agent = [
        ("User-Agent", "tester \"quoted\" 1.0"),
        ("Referer", "http://r.example/"),
    ];
    assert_status(&client.request_with("GET", "/app/x", &agent), 200);
    assert_status(&client.get("/missing"), 404);
    // A head refused as malformed is logged too, with what is known of it.
    let mut bad = proxy.client();
    bad.send(b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n");
    assert_status(&bad.expect_response_then_close("GET"), 400);
    let lines = wait_for_lines(&log.0, 3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let first = parse_combined(&lines[0]).unwrap_or_else(|| panic!("{}", lines[0]));
    assert_eq!(first.len(), 9, "{first:?}");
    assert_eq!(first[0], "127.0.0.1");
    assert!(first[3].ends_with(" +0000"), "{first:?}");
    assert_eq!(first[4], "GET /app/x HTTP/1.1");
    assert_eq!(
        &first[5..],
        ["200", "6", "http://r.example/", "tester \"quoted\" 1.0"]
    );
    let second = parse_combined(&lines[1]).unwrap_or_else(|| panic!("{}", lines[1]));
    assert_eq!(&second[4..8], ["GET /missing HTTP/1.1", "404", "-", "-"]);
    let third = parse_combined(&lines[2]).unwrap_or_else(|| panic!("{}", lines[2]));
    assert_eq!(&third[4..6], ["- - HTTP/1.1", "400"]);
}

#[test]
fn sigusr1_reopens_the_log_and_no_line_is_lost() {
    let origin = Origin::start(origin::echo_target());
    let log = LogPath::new();
    let proxy = logging_proxy(2, &origin, &log, "json");
    for i in 0..5 {
        assert_status(&proxy.client().get(&format!("/app/before/{i}")), 200);
    }
    assert_eq!(wait_for_lines(&log.0, 5).len(), 5);
    std::fs::rename(&log.0, log.rotated()).unwrap();
    proxy.send_signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.0.exists() {
        assert!(
            Instant::now() < deadline,
            "the log was not reopened after SIGUSR1"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..4 {
        assert_status(&proxy.client().get(&format!("/app/after/{i}")), 200);
    }
    let after = wait_for_lines(&log.0, 4);
    assert_eq!(after.len(), 4, "{after:#?}");
    assert!(after.iter().all(|l| l.contains("/app/after/")));
    let before = lines_of(&log.rotated());
    assert_eq!(before.len(), 5, "{before:#?}");
    assert!(before.iter().all(|l| l.contains("/app/before/")));
}
