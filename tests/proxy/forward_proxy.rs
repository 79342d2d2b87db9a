//! The forward proxy (`[forward_proxy]`): off by default (no open relay);
//! absolute-form GET through to an origin with the request rewritten to
//! origin-form, Host checked and `Proxy-*` fields removed, destination
//! connections pooled; strict parsing in forward mode; ACL refusals with a
//! one-line reason (SSRF defaults, ports, client addresses); users with 407,
//! argon2 hashes made by `shardproxy hash-password` and per-user limits; a
//! name from /etc/hosts resolved off the shard through its cache; DNS and
//! connect failures told apart. Tunnels are in `forward_tunnels.rs`, parent
//! proxies in `forward_parents.rs`; the helpers here serve all three. Real
//! clients: curl where installed (tests that need it say so and pass
//! vacuously without it), raw sockets otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    assert_error_response, assert_status, for_each_shard_count,
    origin::{self, After, Origin},
    proxy::PROXY_BINARY,
    Client, Proxy, ProxyConfig,
};

/// A forward proxy that may reach loopback origins (the SSRF defaults refuse them).
pub(crate) fn forward_config(shards: usize) -> ProxyConfig {
    ProxyConfig::new(shards)
        .set("forward_proxy", "enabled", "true")
        .set("forward_proxy", "allow", r#"["127.0.0.0/8"]"#)
}

/// Runs curl with `args` (proxy environment cleared); `None` if curl is not installed.
pub(crate) fn curl(args: &[&str]) -> Option<(u16, String)> {
    let output = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20", "--noproxy", ""])
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: curl is not installed; this test needs a real proxy client");
            return None;
        }
        Err(e) => panic!("running curl: {e}"),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    let code = code.trim().parse().unwrap_or(0);
    Some((code, body.to_string()))
}

pub(crate) fn proxy_url(proxy: &Proxy) -> String {
    format!("http://{}", proxy.addr())
}

/// Reads a response head byte by byte (nothing after it is consumed).
pub(crate) fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "reading a head: {other:?} after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8(head).unwrap()
}

pub(crate) fn connect_to(proxy: &Proxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// A TCP server for one connection: echoes the first 5 bytes at once, then
/// reads to EOF and answers `bye` after it (so a tunnel must pass the
/// client's FIN on while keeping the other direction open), then closes.
pub(crate) fn half_close_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).unwrap();
        stream.write_all(&hello).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        stream
            .write_all(format!("bye {}", rest.len()).as_bytes())
            .unwrap();
    });
    addr
}

#[test]
fn absolute_form_is_refused_unless_enabled() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::in_front_of(&origin, shards);
        let target = format!("http://{}/secret", origin.addr());
        let mut client = proxy.client();
        client.send(format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", origin.addr()).as_bytes());
        assert_error_response(&client.read_response("GET"), 400);
        if let Some((code, _)) = curl(&["-x", &proxy_url(&proxy), &target]) {
            assert_eq!(code, 400, "curl -x through a reverse proxy");
        }
        assert_eq!(
            origin.heads(),
            0,
            "a reverse proxy relayed a forward request"
        );
    });
}

#[test]
fn absolute_form_get_is_rewritten_and_pooled() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&forward_config(shards));
        let mut client = proxy.client();
        for path in ["/a?x=1", "/b"] {
            let head = format!(
                "GET http://{addr}{path} HTTP/1.1\r\nHost: {addr}\r\nProxy-Connection: keep-alive\r\n\
                 Proxy-Authorization: Basic eDp5\r\nProxy-Other: z\r\nX-Keep: 1\r\n\r\n",
                addr = origin.addr()
            );
            client.send(head.as_bytes());
            let response = client.read_response("GET");
            assert_status(&response, 200);
            assert_eq!(
                response.body_text(),
                path,
                "the origin must see origin-form"
            );
        }
        let seen = origin.requests();
        let first = &seen[0];
        assert_eq!(
            first.header("host"),
            Some(origin.addr().to_string().as_str())
        );
        assert_eq!(first.header("x-keep"), Some("1"));
        assert_eq!(first.header("proxy-connection"), None);
        assert_eq!(first.header("proxy-authorization"), None);
        assert_eq!(
            origin.connections(),
            1,
            "the second request must reuse the pooled connection"
        );
        // A Host naming another server than the target is refused.
        let mut other = proxy.client();
        other.send(
            format!(
                "GET http://{}/ HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
                origin.addr()
            )
            .as_bytes(),
        );
        assert_error_response(&other.read_response("GET"), 400);
        assert_eq!(origin.request_count(), 2);
    });
}

#[test]
fn curl_gets_through_the_forward_proxy_by_name_from_etc_hosts() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&forward_config(shards));
        // `localhost` comes from /etc/hosts, resolved on a resolver thread.
        let url = format!("http://localhost:{}/via-name", origin.addr().port());
        let Some((code, body)) = curl(&["-x", &proxy_url(&proxy), &url]) else {
            return;
        };
        assert_eq!(code, 200, "{body}\n{}", proxy.output());
        assert_eq!(body, "/via-name");
        let host = origin.requests()[0].header("host").unwrap().to_string();
        assert_eq!(host, format!("localhost:{}", origin.addr().port()));
    });
}

/// The sum over shards of `name` in the `forward proxy: dns ...` shutdown lines.
fn dns_counter(output: &str, name: &str) -> u64 {
    output
        .lines()
        .filter(|line| line.contains("forward proxy: dns"))
        .filter_map(|line| {
            let rest = line.split_once(&format!("{name} "))?.1;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn names_are_resolved_once_per_shard_through_the_cache() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let mut proxy = Proxy::start(&forward_config(shards));
        let host = format!("localhost:{}", origin.addr().port());
        let requests = 6;
        for i in 0..requests {
            let mut client = proxy.client();
            client
                .send(format!("GET http://{host}/{i} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
            assert_status(&client.read_response("GET"), 200);
        }
        proxy.send_sigterm();
        assert!(proxy.wait_for_exit(Duration::from_secs(10)).success());
        let output = proxy.output();
        let lookups = dns_counter(&output, "lookups");
        let answered = dns_counter(&output, "cache-hits") + dns_counter(&output, "joined");
        assert!(
            lookups >= 1 && lookups <= shards as u64,
            "{lookups} lookups\n{output}"
        );
        assert_eq!(lookups + answered, requests, "{output}");
    });
}

#[test]
fn ssrf_defaults_refuse_loopback_with_a_reason() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let config = ProxyConfig::new(shards).set("forward_proxy", "enabled", "true");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        for target in [
            format!("http://{}/", origin.addr()),
            format!("http://localhost:{}/", origin.addr().port()),
        ] {
            let host = target.trim_start_matches("http://").trim_end_matches('/');
            client.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
            let response = client.read_response("GET");
            assert_error_response(&response, 403);
            assert!(
                response.body_text().contains("loopback"),
                "the 403 must say why: {:?}",
                response.body_text()
            );
        }
        assert_eq!(origin.heads(), 0, "a private destination was reached");
    });
}

/// Sends `CONNECT addr` on `client` and expects a 403 whose reason mentions `why`.
fn assert_connect_refused(client: &mut Client, addr: SocketAddr, why: &str) {
    client.send(format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes());
    let response = client.read_response("CONNECT");
    assert_error_response(&response, 403);
    let reason = response.body_text();
    assert!(
        reason.contains(why),
        "the 403 should mention {why}: {reason:?}"
    );
}

#[test]
fn ports_and_clients_outside_the_acl_are_refused() {
    for_each_shard_count(|shards| {
        let echo = half_close_echo();
        let proxy = Proxy::start(&forward_config(shards));
        // CONNECT only to allowed_connect_ports (default 443).
        let mut client = proxy.client();
        assert_connect_refused(&mut client, echo, "port");
        // Absolute-form to a port outside allowed_ports.
        client.send(b"GET http://127.0.0.1:25/ HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n");
        assert_error_response(&client.read_response("GET"), 403);

        let strangers_only =
            forward_config(shards).set("forward_proxy", "client_allow", r#"["10.0.0.0/8"]"#);
        let proxy = Proxy::start(&strangers_only);
        assert_connect_refused(&mut proxy.client(), echo, "client");
    });
}

pub(crate) fn tunnel_config(shards: usize) -> ProxyConfig {
    forward_config(shards).set(
        "forward_proxy",
        "allowed_connect_ports",
        r#"["1024-65535"]"#,
    )
}

/// `shardproxy hash-password` with `password` on stdin.
pub(crate) fn hash_password(password: &str) -> String {
    let mut child = Command::new(PROXY_BINARY)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    // A short password can turn up in the base64 salt and hash by chance
    // ("pw" does in about one hash in sixty), so only longer ones are checked.
    assert!(
        password.len() < 8 || !hash.contains(password),
        "the hash must not contain the password"
    );
    hash
}

#[test]
fn users_must_authenticate() {
    let hash = hash_password("open sesame");
    for_each_shard_count(|shards| {
        let origin = Origin::start(|request, stream| {
            origin::send_ok(stream, request.target.as_bytes());
            After::KeepAlive
        });
        let config = forward_config(shards)
            .set("forward_proxy", "realm", r#""test realm""#)
            .table(&format!(
                "[[forward_proxy.user]]\nname = \"ann\"\npassword_hash = \"{hash}\"\n"
            ));
        let proxy = Proxy::start(&config);
        let url = format!("http://{}/private", origin.addr());
        let mut client = Client::connect(proxy.addr());
        let host = origin.addr().to_string();
        client.send(format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        let response = client.read_response("GET");
        assert_error_response(&response, 407);
        assert_eq!(
            response.header("proxy-authenticate"),
            Some("Basic realm=\"test realm\", charset=\"UTF-8\"")
        );
        // The connection survives a 407: the client answers the challenge on it.
        client.send(
            format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic YW5uOm9wZW4gc2VzYW1l\r\n\r\n")
                .as_bytes(),
        );
        assert_status(&client.read_response("GET"), 200);
        assert_eq!(origin.single_request().header("proxy-authorization"), None);
        let Some((code, _)) = curl(&["-x", &proxy_url(&proxy), "-U", "ann:wrong", &url]) else {
            return;
        };
        assert_eq!(code, 407);
        let (code, body) =
            curl(&["-x", &proxy_url(&proxy), "-U", "ann:open sesame", &url]).unwrap();
        assert_eq!((code, body.as_str()), (200, "/private"));
    });
}

#[test]
fn dns_and_connect_failures_are_told_apart() {
    for_each_shard_count(|shards| {
        let proxy = Proxy::start(&forward_config(shards));
        let dead = crate::support::sockets::closed_port();
        let cases = [
            // RFC 6761: .invalid never resolves.
            (
                "no-such-host.invalid:8080".to_string(),
                "DNS lookup of no-such-host.invalid",
            ),
            (dead.to_string(), "cannot connect to"),
        ];
        for (authority, reason) in cases {
            let mut client = proxy.client();
            client.send(
                format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
            );
            let response = client.read_response("GET");
            assert_error_response(&response, 502);
            assert!(
                response.body_text().contains(reason),
                "{}",
                response.body_text()
            );
        }
    });
}

#[test]
fn a_user_over_max_connections_gets_429_until_one_ends() {
    let hash = hash_password("pw");
    for_each_shard_count(|shards| {
        // Holds every connection open until the other side's EOF.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let holder_addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                thread::spawn(move || std::io::copy(&mut stream, &mut std::io::sink()));
            }
        });
        let config = tunnel_config(shards).table(&format!(
            "[[forward_proxy.user]]\nname = \"ann\"\npassword_hash = \"{hash}\"\nmax_connections = 1\n"
        ));
        let proxy = Proxy::start(&config);
        // "ann:pw"
        let connect = format!(
            "CONNECT {holder_addr} HTTP/1.1\r\nHost: {holder_addr}\r\nProxy-Authorization: Basic YW5uOnB3\r\n\r\n"
        );
        // The limit is per shard: of shards + 1 tunnels at once, one at least is refused.
        let mut open = Vec::new();
        let mut refusals = Vec::new();
        for _ in 0..=shards {
            let mut stream = connect_to(&proxy);
            stream.write_all(connect.as_bytes()).unwrap();
            let head = read_head(&mut stream);
            if head.starts_with("HTTP/1.1 200") {
                open.push(stream);
            } else {
                assert!(head.starts_with("HTTP/1.1 429"), "{head}");
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")?
                            .parse()
                            .ok()
                    })
                    .expect("a 429 with Content-Length");
                let mut body = vec![0u8; length];
                stream.read_exact(&mut body).unwrap();
                refusals.push(String::from_utf8(body).unwrap());
            }
        }
        assert!(
            open.len() <= shards,
            "{} tunnels for max_connections = 1 per shard",
            open.len()
        );
        assert!(!refusals.is_empty());
        assert!(refusals[0].contains("max_connections"), "{}", refusals[0]);
        // Once the tunnels end, the user may open one again.
        drop(open);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut stream = connect_to(&proxy);
            stream.write_all(connect.as_bytes()).unwrap();
            if read_head(&mut stream).starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "the limit was never released");
            thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn forward_requests_are_parsed_as_strictly_as_any() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&forward_config(shards));
        let a = origin.addr();
        let vectors = [
            format!("POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            format!("GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n\r\n"),
            format!("GET http://user@{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n"),
            format!("GET https://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n"),
            format!("GET http://{a}/ HTTP/1.1\nHost: {a}\r\n\r\n"),
            format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\n\r\nhello"),
            format!("CONNECT http://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n"),
            format!("GET {a} HTTP/1.1\r\nHost: {a}\r\n\r\n"),
        ];
        for vector in &vectors {
            let mut client = proxy.client();
            client.send(vector.as_bytes());
            let response = client.read_response("GET");
            assert_eq!(response.status, 400, "{vector:?} got {}", response.status);
        }
        assert_eq!(
            origin.heads(),
            0,
            "a malformed forward request reached the origin"
        );
    });
}

/// Regression: a refusal of the resolved address left the head in the
/// buffer while keeping the connection, so the proxy answered that same
/// request 403 over and over (tens of thousands a second) and never read
/// the next one.
#[test]
fn a_refused_address_is_answered_once_and_the_connection_carries_on() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&ProxyConfig::new(shards).set("forward_proxy", "enabled", "true"));
        let mut client = proxy.client();
        for (target, why) in [
            (format!("http://{}/", origin.addr()), "loopback"),
            ("http://example.invalid:22/".to_string(), "port 22"),
            (format!("http://{}/again", origin.addr()), "loopback"),
        ] {
            let host = target
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap();
            client.send(format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
            let response = client.read_response("GET");
            assert_error_response(&response, 403);
            assert!(
                response.body_text().contains(why),
                "{target}: {}",
                response.body_text()
            );
        }
        client.set_read_timeout(Duration::from_millis(300));
        let extra = client.try_read_response("GET");
        assert!(extra.is_err(), "more answers than requests: {extra:?}");
        assert_eq!(origin.heads(), 0);
    });
}
