//! The access log: one parsable line per request (JSON and combined formats,
//! a refused malformed head included),
//! written by the writer thread within a bounded wait, and SIGUSR1 reopening
//! the file after it was moved away, with no line lost across the rotation;
//! the forward proxy's authenticated user in both formats and in the
//! per-user request counter.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::forward_proxy::{connect_to, half_close_echo, hash_password, read_head, tunnel_config};
use crate::support::prometheus;
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

/// A forward proxy with users `ann` and `bob smith` (password `open sesame`
/// both), the access log in `format` and the admin endpoint.
fn users_proxy(shards: usize, log: &LogPath, format: &str) -> Proxy {
    let hash = hash_password("open sesame");
    let users: String = ["ann", "bob smith"]
        .iter()
        .map(|name| {
            format!("[[forward_proxy.user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\n")
        })
        .collect();
    let config = tunnel_config(shards)
        .set(
            "log",
            "access",
            &format!("{:?}", log.0.display().to_string()),
        )
        .set("log", "format", &format!("{format:?}"))
        .set("admin", "listen", r#""127.0.0.1:0""#)
        .table(&users);
    Proxy::start(&config)
}

/// Sends an absolute-form GET through `proxy` on a new connection, with
/// `credentials` (base64 of `name:password`), and returns its status.
fn forward_get(proxy: &Proxy, origin: &Origin, path: &str, credentials: Option<&str>) -> u16 {
    let host = origin.addr().to_string();
    let auth = credentials.map_or(String::new(), |c| {
        format!("Proxy-Authorization: Basic {c}\r\n")
    });
    let mut client = proxy.client();
    client
        .send(format!("GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n").as_bytes());
    client.read_response("GET").status
}

const ANN: &str = "YW5uOm9wZW4gc2VzYW1l";
const BOB_SMITH: &str = "Ym9iIHNtaXRoOm9wZW4gc2VzYW1l";

#[test]
fn forward_users_are_logged_and_counted() {
    let origin = Origin::start(origin::echo_target());
    let log = LogPath::new();
    let proxy = users_proxy(2, &log, "json");
    assert_eq!(forward_get(&proxy, &origin, "/a1", Some(ANN)), 200);
    assert_eq!(forward_get(&proxy, &origin, "/b1", Some(BOB_SMITH)), 200);
    assert_eq!(forward_get(&proxy, &origin, "/anonymous", None), 407);
    assert_eq!(forward_get(&proxy, &origin, "/a2", Some(ANN)), 200);
    // A tunnel is logged with its user too, once it is over.
    let echo = half_close_echo();
    let mut tunnel = connect_to(&proxy);
    let connect = format!(
        "CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: Basic {ANN}\r\n\r\n"
    );
    tunnel.write_all(connect.as_bytes()).unwrap();
    assert!(read_head(&mut tunnel).starts_with("HTTP/1.1 200"));
    tunnel.write_all(b"hello").unwrap();
    tunnel.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = String::new();
    tunnel.read_to_string(&mut echoed).unwrap();
    assert_eq!(echoed, "hellobye 0");
    let lines = wait_for_lines(&log.0, 5);
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let entry_of = |path: &str| {
        let line = lines.iter().find(|l| l.contains(path)).expect(path);
        serde_json::from_str::<serde_json::Value>(line).expect(line)
    };
    let user_of = |path: &str| entry_of(path)["user"].clone();
    assert_eq!(user_of("/a1"), "ann");
    assert_eq!(user_of("/a2"), "ann");
    assert_eq!(user_of("/b1"), "bob smith");
    assert_eq!(user_of("/anonymous"), serde_json::Value::Null);
    let tunnel_line = entry_of(&format!("\"CONNECT\",\"target\":\"{echo}\""));
    assert_eq!(
        (&tunnel_line["user"], &tunnel_line["status"]),
        (&"ann".into(), &200.into())
    );

    // Requests are counted after their response is written: poll a little.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let (_, text) = proxy.admin("GET", "/metrics");
        let m = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if m.sum("shardproxy_requests_total", &[]) >= 5.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let of = |user: &str| metrics.sum("shardproxy_user_requests_total", &[("user", user)]);
    assert_eq!((of("ann"), of("bob smith")), (3.0, 1.0));
    let ann_ok = [("user", "ann"), ("status", "2xx")];
    assert_eq!(metrics.sum("shardproxy_user_requests_total", &ann_ok), 3.0);
    // The 407 belongs to no user; the label set is the configured names only.
    assert_eq!(metrics.sum("shardproxy_user_requests_total", &[]), 4.0);
    let (_, status) = proxy.admin("GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("/status is JSON");
    let users = &status["users"];
    assert_eq!(users[0]["user"], "ann", "{status}");
    assert_eq!(
        (&users[0]["requests"], &users[0]["status"]["2xx"]),
        (&3.into(), &3.into())
    );
    assert_eq!(users[1]["user"], "bob smith");
}

#[test]
fn combined_log_shows_the_user_as_authuser() {
    let origin = Origin::start(origin::echo_target());
    let log = LogPath::new();
    let proxy = users_proxy(1, &log, "combined");
    assert_eq!(forward_get(&proxy, &origin, "/a", Some(ANN)), 200);
    assert_eq!(forward_get(&proxy, &origin, "/b", Some(BOB_SMITH)), 200);
    assert_eq!(forward_get(&proxy, &origin, "/n", None), 407);
    let lines = wait_for_lines(&log.0, 3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let authuser: Vec<String> = lines
        .iter()
        .map(|l| parse_combined(l).unwrap_or_else(|| panic!("{l}"))[2].clone())
        .collect();
    // A space would split the field: it is written %20.
    assert_eq!(authuser, ["ann", "bob%20smith", "-"]);
}
