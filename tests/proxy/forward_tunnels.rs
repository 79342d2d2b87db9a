//! CONNECT tunnels of the forward proxy: both directions with half-close
//! (a TCP echo that answers only after the client's FIN), the idle timeout,
//! idle tunnels giving their buffers back, curl's --proxytunnel to an HTTP
//! origin, curl to an HTTPS origin (`openssl s_server`) through CONNECT, and
//! downloads spliced (byte-exact, pipes held; none with splicing off; a
//! client leaving one mid-way).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::forward_proxy::{
    connect_to, curl, forward_config, half_close_echo, proxy_url, read_head, tunnel_config,
};
use crate::splicing::pipes_around;
use crate::support::{
    for_each_shard_count,
    origin::{self, Origin},
    BodyDigest, PatternBody, Proxy,
};

/// Opens `CONNECT target` (a [`half_close_echo`]) through `proxy`, checks
/// the 200 and the echo, sends `payload` and a FIN, and expects the server's
/// answer after its EOF.
pub(crate) fn assert_tunnel_to_echo(proxy: &Proxy, target: &str, payload: &[u8]) {
    let mut stream = connect_to(proxy);
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream.write_all(b"hello").unwrap();
    let mut hello = [0u8; 5];
    stream.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    stream.write_all(payload).unwrap();
    // Our FIN: the server answers only after its EOF, through the open other half.
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, format!("bye {}", payload.len()));
}

#[test]
fn connect_tunnels_both_ways_with_half_close() {
    for_each_shard_count(|shards| {
        let echo = half_close_echo();
        let proxy = Proxy::start(&tunnel_config(shards));
        assert_tunnel_to_echo(&proxy, &echo.to_string(), &vec![7u8; 1 << 20]);
    });
}

#[test]
fn idle_tunnels_close() {
    for_each_shard_count(|shards| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = listener.local_addr().unwrap();
        let holder = thread::spawn(move || listener.accept().map(|(s, _)| s));
        let config = tunnel_config(shards).set("forward_proxy", "tunnel_idle", r#""300ms""#);
        let proxy = Proxy::start(&config);
        let mut stream = connect_to(&proxy);
        stream
            .write_all(format!("CONNECT {silent} HTTP/1.1\r\nHost: {silent}\r\n\r\n").as_bytes())
            .unwrap();
        assert!(read_head(&mut stream).starts_with("HTTP/1.1 200"));
        let started = Instant::now();
        let mut rest = Vec::new();
        stream
            .read_to_end(&mut rest)
            .expect("the proxy must close an idle tunnel");
        assert!(rest.is_empty());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
            "closed after {waited:?}"
        );
        drop(holder.join());
    });
}

#[test]
fn curl_proxytunnel_reaches_an_http_origin() {
    for_each_shard_count(|shards| {
        let origin = Origin::start(origin::echo_target());
        let proxy = Proxy::start(&tunnel_config(shards));
        let url = format!("http://{}/tunnelled", origin.addr());
        let Some((code, body)) = curl(&["-p", "-x", &proxy_url(&proxy), &url]) else {
            return;
        };
        assert_eq!(code, 200, "{body}\n{}", proxy.output());
        assert_eq!(body, "/tunnelled");
        let request = origin.single_request();
        assert_eq!(
            request.header("via"),
            None,
            "a tunnel must not touch the bytes"
        );
    });
}

/// `openssl s_server -www` on an ephemeral loopback port with a fresh
/// self-signed certificate for `localhost`; `None` if openssl is missing.
struct TlsOrigin {
    child: std::process::Child,
    port: u16,
    cert: crate::support::proxy::TempFile,
    _key: crate::support::proxy::TempFile,
}

impl TlsOrigin {
    fn start() -> Option<TlsOrigin> {
        use std::io::BufRead;
        let cert = crate::support::proxy::TempFile::with_contents("");
        let key = crate::support::proxy::TempFile::with_contents("");
        let made = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args([
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
            ])
            .arg("-keyout")
            .arg(&key.path)
            .arg("-out")
            .arg(&cert.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match made {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("SKIPPED: openssl is not installed; no TLS origin for CONNECT");
                return None;
            }
            other => assert!(other.unwrap().success(), "openssl req failed"),
        }
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                "127.0.0.1:0",
                "-www",
                "-naccept",
                "1",
            ])
            .arg("-cert")
            .arg(&cert.path)
            .arg("-key")
            .arg(&key.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting openssl s_server");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // Blocks until s_server prints its address (or exits, ending the lines).
        let port = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("ACCEPT ")?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("s_server printed no ACCEPT line");
        Some(TlsOrigin {
            child,
            port,
            cert,
            _key: key,
        })
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn curl_reaches_an_https_origin_through_connect() {
    for_each_shard_count(|shards| {
        let Some(origin) = TlsOrigin::start() else {
            return;
        };
        let ports = format!("[{}]", origin.port);
        let config = forward_config(shards).set("forward_proxy", "allowed_connect_ports", &ports);
        let proxy = Proxy::start(&config);
        let url = format!("https://localhost:{}/", origin.port);
        let cacert = origin.cert.path.to_str().unwrap().to_string();
        let Some((code, body)) = curl(&["-x", &proxy_url(&proxy), "--cacert", &cacert, &url])
        else {
            return;
        };
        assert_eq!(code, 200, "{body}\n{}", proxy.output());
        assert!(
            body.contains("s_server"),
            "not the TLS origin's page: {body}"
        );
    });
}

/// A TCP echo server for any number of connections.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

/// Writes `message` into an open tunnel and expects it back.
fn assert_echoes(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).unwrap();
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, message);
}

#[test]
fn idle_tunnels_hold_no_buffers() {
    for_each_shard_count(|shards| {
        let echo = echo_server();
        // Two buffers per direction per shard: without giving them back,
        // a third tunnel on a shard could not even have its CONNECT read.
        let config = tunnel_config(shards).set("server.tuning", "buffers", "2");
        let proxy = Proxy::start(&config);
        let mut tunnels = Vec::new();
        for i in 0..(2 * shards + 1) {
            let mut stream = connect_to(&proxy);
            stream
                .write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
                .unwrap();
            let head = read_head(&mut stream);
            assert!(head.starts_with("HTTP/1.1 200"), "tunnel {i}: {head}");
            assert_echoes(&mut stream, format!("ping {i}").as_bytes());
            tunnels.push(stream);
        }
        for (i, stream) in tunnels.iter_mut().enumerate() {
            assert_echoes(stream, format!("again {i}").as_bytes());
        }
    });
}

/// A TCP server for any number of connections: each reads an 8-byte
/// big-endian length N, sends an N-byte pattern body (seed N) and closes.
fn download_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            thread::spawn(move || {
                let mut announced = [0u8; 8];
                if stream.read_exact(&mut announced).is_err() {
                    return;
                }
                let len = u64::from_be_bytes(announced);
                // A client that left makes the writes fail: stop writing, not the test.
                let mut gone = false;
                PatternBody::new(len, len).stream(&mut |piece| {
                    gone = gone || stream.write_all(piece).is_err();
                });
            });
        }
    });
    addr
}

/// Opens a tunnel through `proxy` to `server` (a [`download_server`]) and
/// asks it for `len` bytes; the open stream.
fn start_download(proxy: &Proxy, server: SocketAddr, len: u64) -> TcpStream {
    let mut stream = connect_to(proxy);
    stream
        .write_all(format!("CONNECT {server} HTTP/1.1\r\nHost: {server}\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream.write_all(&len.to_be_bytes()).unwrap();
    stream
}

/// Downloads `len` bytes through a tunnel, to the server's close, and
/// compares them with the pattern.
fn assert_download_arrives_whole(proxy: &Proxy, server: SocketAddr, len: u64) {
    let mut stream = start_download(proxy, server, len);
    let mut body = Vec::new();
    stream.read_to_end(&mut body).unwrap();
    assert_eq!(body.len() as u64, len, "{}", proxy.output());
    assert_eq!(
        BodyDigest::of(&body),
        PatternBody::new(len, len).stream(&mut |_| {}),
        "the {len}-byte download arrived different"
    );
}

/// Sizes below and far above the 32 KiB a direction copies before it splices.
const DOWNLOADS: [u64; 4] = [5, 40_000, 3_000_000, 1_000];

/// Runs the [`DOWNLOADS`] with `splice_above = above`; the proxy's open
/// pipes before and after.
fn pipes_around_downloads(shards: usize, above: &str) -> (usize, usize) {
    let server = download_server();
    let config = tunnel_config(shards).http("splice_above", &format!("{above:?}"));
    let proxy = Proxy::start(&config);
    pipes_around(&proxy, || {
        for len in DOWNLOADS {
            assert_download_arrives_whole(&proxy, server, len);
        }
    })
}

#[test]
fn tunnel_downloads_arrive_whole_and_spliced() {
    for_each_shard_count(|shards| {
        let (before, after) = pipes_around_downloads(shards, "32KiB");
        assert!(
            after > before,
            "no pipe kept: the downloads were copied, not spliced"
        );
    });
}

#[test]
fn with_splicing_off_tunnels_copy() {
    for_each_shard_count(|shards| {
        let (before, after) = pipes_around_downloads(shards, "0");
        assert_eq!(after, before, "splice_above = \"0\" still spliced");
    });
}

#[test]
fn a_client_leaving_a_spliced_download_costs_only_its_tunnel() {
    for_each_shard_count(|shards| {
        let server = download_server();
        let proxy = Proxy::start(&tunnel_config(shards));
        let mut leaving = start_download(&proxy, server, 50_000_000);
        let mut some = vec![0u8; 1 << 20];
        leaving.read_exact(&mut some).unwrap();
        drop(leaving);
        for len in [3_000_000, 5] {
            assert_download_arrives_whole(&proxy, server, len);
        }
    });
}
