//! Hot reload: SIGHUP (or `POST /reload` on the admin endpoint) applies a
//! rewritten config file — a new route takes effect, also on a keep-alive
//! connection opened before the reload — while an invalid file is refused
//! with its key and line and the running config keeps serving.

use std::time::{Duration, Instant};

use crate::support::*;
use crate::support::{prometheus, proxy};

fn base(shards: usize, origin: &Origin) -> ProxyConfig {
    ProxyConfig::new(shards)
        .upstream("o", &[origin.addr()])
        .route(None, "/old", "o")
        .set("admin", "listen", r#""127.0.0.1:0""#)
}

/// Polls `check` every 20 ms until it holds, for at most 5 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until each of `shards` shards has logged that it switched (once).
fn every_shard_switched(proxy: &Proxy, shards: usize) {
    eventually("every shard switches to the new config", || {
        let output = proxy.output();
        (0..shards).all(|id| output.contains(&format!("shard {id}: new config in use")))
    });
}

/// An origin, the base config, the proxy running it and a keep-alive client
/// that has had one answer.
fn started(shards: usize) -> (Origin, ProxyConfig, Proxy, Client) {
    let origin = Origin::start(origin::echo_target());
    let config = base(shards, &origin);
    let proxy = Proxy::start(&config);
    let mut kept = proxy.client();
    assert_status(&kept.get("/old/1"), 200);
    (origin, config, proxy, kept)
}

#[test]
fn sighup_applies_a_new_route_and_refuses_an_invalid_file() {
    for_each_shard_count(|shards| {
        let (_origin, config, proxy, mut kept) = started(shards);
        assert_status(&kept.get("/new/1"), 404);

        let with_new = config.clone().route(None, "/new", "o");
        std::fs::write(proxy.config_path(), with_new.render()).unwrap();
        proxy.send_signal(libc::SIGHUP);
        every_shard_switched(&proxy, shards);
        assert_status(&proxy.client().get("/new/2"), 200);
        // The connection opened before the reload moves to the new config.
        assert_status(&kept.get("/new/3"), 200);
        assert_status(&kept.get("/old/2"), 200);

        let invalid = with_new.clone().route(None, "/bad", "no-such-upstream");
        let text = invalid.render();
        std::fs::write(proxy.config_path(), &text).unwrap();
        proxy.send_signal(libc::SIGHUP);
        let line = 1 + text[..text.find("\"no-such-upstream\"").unwrap()]
            .matches('\n')
            .count();
        let expected = format!("line {line}: invalid `route.upstream`");
        eventually("the refusal is logged with key and line", || {
            proxy.output().contains("config reload refused") && proxy.output().contains(&expected)
        });
        assert_status(&proxy.client().get("/new/4"), 200);
        assert_status(&kept.get("/bad/1"), 404);
        assert_status(&kept.get("/old/3"), 200);
    });
}

#[test]
fn admin_reload_answers_with_the_outcome() {
    let origin = Origin::start(origin::echo_target());
    let config = base(2, &origin);
    let proxy = Proxy::start(&config);
    let invalid = config.clone().set("timeouts", "body_idle", r#""soon""#);
    std::fs::write(proxy.config_path(), invalid.render()).unwrap();
    let (status, body) = proxy.admin("POST", "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("timeouts.body_idle") && body.contains("line"),
        "{body}"
    );

    std::fs::write(
        proxy.config_path(),
        config.route(None, "/new", "o").render(),
    )
    .unwrap();
    assert_eq!(
        proxy.admin("POST", "/reload"),
        (200, "reloaded\n".to_string())
    );
    every_shard_switched(&proxy, 2);
    assert_status(&proxy.client().get("/new/x"), 200);
    let (_, metrics) = proxy.admin("GET", "/metrics");
    let metrics = prometheus::parse(&metrics).unwrap();
    assert_eq!(metrics.sum("shardproxy_config_reloads_total", &[]), 1.0);
    assert_eq!(
        metrics.sum("shardproxy_config_reload_failures_total", &[]),
        1.0
    );
    assert_eq!(proxy.admin("GET", "/reload").0, 405);
}

#[test]
fn reload_flag_reaches_the_running_proxy_through_its_admin_endpoint() {
    let origin = Origin::start(origin::echo_target());
    let config = base(1, &origin);
    let proxy = Proxy::start(&config);
    // The file now names the admin address the proxy actually got (port 0
    // at start), which is what `--reload` reads; [admin] itself is fixed
    // until a restart, so the reload changes only the routes.
    let admin = format!("\"{}\"", proxy.admin_addr());
    let reload = |config: &ProxyConfig| {
        let text = config.clone().set("admin", "listen", &admin).render();
        std::fs::write(proxy.config_path(), text).unwrap();
        std::process::Command::new(proxy::PROXY_BINARY)
            .arg("--reload")
            .arg("--config")
            .arg(proxy.config_path())
            .output()
            .expect("running shardproxy --reload")
    };
    let refused = reload(&config.clone().route(None, "/bad", "missing"));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("route.upstream") && stderr.contains("line"),
        "{stderr}"
    );
    let applied = reload(&config.clone().route(None, "/new", "o"));
    assert!(applied.status.success(), "{applied:?}");
    every_shard_switched(&proxy, 1);
    assert_status(&proxy.client().get("/new/1"), 200);
}

/// The address every shard logged `now accepting on` for `ip`, once all have.
fn accepting_on(proxy: &Proxy, shards: usize, ip: &str) -> std::net::SocketAddr {
    let marker = format!(": now accepting on {ip}:");
    let mut found = None;
    eventually("every shard accepts on the added address", || {
        let output = proxy.output();
        let lines: Vec<&str> = output.lines().filter(|l| l.contains(&marker)).collect();
        found = lines
            .first()
            .and_then(|l| l.rsplit(' ').next()?.parse().ok());
        lines.len() >= shards
    });
    found.expect("an address in the log line")
}

#[test]
fn listen_addresses_open_and_close_without_disturbing_the_others() {
    for_each_shard_count(|shards| {
        let (_origin, config, proxy, mut kept) = started(shards);
        let two = config
            .clone()
            .set("server", "listen", r#"["127.0.0.1:0", "127.0.0.2:0"]"#);
        std::fs::write(proxy.config_path(), two.render()).unwrap();
        proxy.send_signal(libc::SIGHUP);
        let added = accepting_on(&proxy, shards, "127.0.0.2");
        let mut on_added = Client::connect(added);
        assert_status(&on_added.get("/old/2"), 200);
        assert_status(&kept.get("/old/3"), 200);

        std::fs::write(proxy.config_path(), config.render()).unwrap();
        proxy.send_signal(libc::SIGHUP);
        let stopped = ": stopped accepting on 127.0.0.2:0";
        eventually("every shard stops accepting on the removed address", || {
            proxy.output().matches(stopped).count() >= shards
        });
        eventually("the removed address refuses connections", || {
            std::net::TcpStream::connect_timeout(&added, Duration::from_millis(200)).is_err()
        });
        // Connections already accepted there, and everything else, carry on.
        assert_status(&on_added.get("/old/4"), 200);
        assert_status(&kept.get("/old/5"), 200);
        assert_status(&proxy.client().get("/old/6"), 200);
    });
}

/// A reload that adds servers (and health checks for them) gives every shard
/// a health table sized for the new config and new probers: a server the
/// old table had no slot for is checked, marked down, and requests keep
/// being answered by the other one.
#[test]
fn a_reload_that_adds_checked_servers_probes_them() {
    for_each_shard_count(|shards| {
        let (origin, config, proxy, _kept) = started(shards);
        let dead = sockets::closed_port();
        let grown = config.clone().upstream_with(
            "p",
            &[dead, origin.addr()],
            &[(
                "health_check",
                r#"{ path = "/", interval = "100ms", timeout = "300ms", rise = 1, fall = 1 }"#,
            )],
        );
        let grown = grown.route(None, "/p", "p");
        std::fs::write(proxy.config_path(), grown.render()).unwrap();
        proxy.send_signal(libc::SIGHUP);
        every_shard_switched(&proxy, shards);
        eventually("the added dead server is probed and marked down", || {
            proxy
                .output()
                .contains(&format!("upstream server {dead} is down"))
        });
        let mut client = proxy.client();
        for i in 0..6 {
            assert_status(&client.get(&format!("/p/{i}")), 200);
        }
        assert_status(&client.get("/old/after"), 200);
    });
}
