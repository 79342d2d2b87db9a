//! Config validation: defaults, the shipped file, errors with key and line.

use super::*;

#[test]
fn builtin_default_is_valid() {
    let config = Config::parse(DEFAULT_CONFIG, "built-in").expect("default config");
    assert_eq!(
        config.server.listen,
        vec!["127.0.0.1:8080".parse().unwrap()]
    );
    assert_eq!(
        config.upstreams[0].servers[0].addr,
        "127.0.0.1:9000".parse().unwrap()
    );
    assert_eq!(config.http.max_body_size, Some(1 << 30));
}

#[test]
fn shipped_config_is_valid() {
    let text = include_str!("../../config.toml");
    let config = Config::parse(text, "config.toml").expect("shipped config");
    assert_eq!(config.routes[0].path_prefix, "/");
}

#[test]
fn errors_name_key_and_line() {
    let text = "[timeouts]\nclient_header = \"ten\"\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(2));
    assert!(err.message.contains("timeouts.client_header"), "{err}");

    let text = "[server]\nlisten = [\"127.0.0.1:1\"]\nbogus = 1\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("bogus"), "{err}");

    let text =
        "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n[[route]]\nupstream = \"b\"\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.message.contains("`b`"), "{err}");
}

#[test]
fn targeted_cache_control_is_a_field_name_of_its_own() {
    let ok = Config::parse(
        &with("[cache]\ntargeted_cache_control = \"Shardproxy-Cache-Control\""),
        "x",
    )
    .expect("a valid name");
    assert_eq!(
        ok.cache.targeted_cache_control.as_deref(),
        Some("Shardproxy-Cache-Control")
    );
    assert_eq!(
        Config::parse(&with(""), "x")
            .unwrap()
            .cache
            .targeted_cache_control,
        None
    );
    for bad in [
        "",
        "Bad Name",
        "x:y",
        "CDN-Cache-Control",
        "cache-control",
        &"x".repeat(65),
    ] {
        let text = with(&format!("[cache]\ntargeted_cache_control = \"{bad}\""));
        let err = Config::parse(&text, "x").unwrap_err();
        assert_eq!(err.line, Some(2), "{bad:?}: {err}");
        assert!(
            err.message.contains("cache.targeted_cache_control"),
            "{err}"
        );
    }
}

/// A minimal valid config with `extra` prepended; `extra` starts at line 1.
fn with(extra: &str) -> String {
    format!("{extra}\n{DEFAULT_CONFIG}")
}

#[test]
fn io_engine_defaults() {
    let config = Config::parse(DEFAULT_CONFIG, "built-in").expect("default config");
    assert_eq!(config.server.io, IoBackend::Auto);
    assert_eq!(config.tuning.ring_mode, RingMode::Auto);
    assert_eq!(config.tuning.buffers, 1024);
    assert_eq!(config.tuning.ring_depth, 128);
}

#[test]
fn io_engine_keys_parse() {
    for (text, io) in [
        ("auto", IoBackend::Auto),
        ("io_uring", IoBackend::IoUring),
        ("poll", IoBackend::Poll),
    ] {
        let config = Config::parse(&with(&format!("[server]\nio = \"{text}\"")), "x").unwrap();
        assert_eq!(config.server.io, io);
        assert_eq!(io.to_string(), text);
    }
    for (text, mode) in [
        ("auto", RingMode::Auto),
        ("defer", RingMode::Defer),
        ("coop", RingMode::Coop),
        ("plain", RingMode::Plain),
    ] {
        let toml = with(&format!("[server.tuning]\nring_mode = \"{text}\""));
        let config = Config::parse(&toml, "x").unwrap();
        assert_eq!(config.tuning.ring_mode, mode);
        assert_eq!(mode.to_string(), text);
    }
    let config = Config::parse(&with("[server.tuning]\nbuffers = 1"), "x").unwrap();
    assert_eq!(config.tuning.buffers, 1);
    let config = Config::parse(&with("[server.tuning]\nbuffers = 1000000"), "x").unwrap();
    assert_eq!(config.tuning.buffers, 1_000_000);
}

#[test]
fn io_engine_bad_values_name_key_and_line() {
    let err = Config::parse(&with("[server]\npin = true\nio = \"uring\""), "x").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("server.io"), "{err}");
    assert!(err.message.contains("`uring`"), "{err}");
    assert!(
        err.message.contains(r#""auto", "io_uring", "poll""#),
        "{err}"
    );

    let err = Config::parse(&with("[server.tuning]\nring_mode = \"fast\""), "x").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.message.contains("server.tuning.ring_mode"), "{err}");
    assert!(
        err.message.contains(r#""auto", "defer", "coop", "plain""#),
        "{err}"
    );

    for bad in ["0", "-1", "1000001"] {
        let toml = with(&format!("[server.tuning]\nbuffers = {bad}"));
        let err = Config::parse(&toml, "x").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("server.tuning.buffers"), "{err}");
    }

    // A wrong type is a serde error: it names the key too (item 10).
    let err = Config::parse(&with("[server.tuning]\nring_mode = 1"), "x").unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(
        err.message.starts_with("server.tuning.ring_mode: "),
        "{err}"
    );
}

#[test]
fn glommio_keys_are_rejected_with_their_replacement() {
    for (key, value, hint) in [
        ("io_memory", "\"2MiB\"", "`buffers` × `http.buffer_size`"),
        ("spin_before_park", "\"0ms\"", "`ring_mode`"),
        ("preempt_timer", "\"100ms\"", "no preemption timer"),
        // Any value, even one of the wrong type, gets the same message.
        ("io_memory", "true", "remove it"),
    ] {
        let toml = with(&format!(
            "[server.tuning]\nring_depth = 64\n{key} = {value}"
        ));
        let err = Config::parse(&toml, "x.toml").unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert!(
            err.message
                .contains(&format!("`server.tuning.{key}` was a glommio setting")),
            "{err}"
        );
        assert!(err.message.contains(hint), "{err}");
    }
}

#[test]
fn type_errors_name_the_key() {
    let err = Config::parse("[server]\nshards = \"many\"\n", "x.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"x.toml line 2: server.shards: invalid type: string "many", expected i64"#
    );

    // Inside an array of tables the key carries the table's index.
    let text = "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\
                [[upstream]]\nname = \"b\"\nservers = \"127.0.0.1:2\"\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    assert!(err.message.starts_with("upstream[1].servers: "), "{err}");

    let text = "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\nkeepalive = \"k\"\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.message.starts_with("upstream[0].keepalive: "), "{err}");

    // Elements of an array are indexed too; inline tables name the same keys.
    let err = Config::parse("[server]\nlisten = [\"127.0.0.1:1\", 2]\n", "x").unwrap_err();
    assert!(err.message.starts_with("server.listen[1]: "), "{err}");
    let err = Config::parse("server = { shards = \"m\" }\n", "x").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
    assert!(err.message.starts_with("server.shards: "), "{err}");
    let err = Config::parse("[http]\nvia = 1\n", "x").unwrap_err();
    assert!(err.message.starts_with("http.via: "), "{err}");

    // A syntax error belongs to no key: no prefix.
    let err = Config::parse("[server\n", "x").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
    assert!(!err.message.starts_with(':'), "{err}");
}

#[test]
fn address_blocks() {
    let net = IpNet::parse("10.0.0.0/8").unwrap();
    assert!(net.contains("10.1.2.3".parse().unwrap()));
    assert!(!net.contains("11.0.0.1".parse().unwrap()));
    assert!(!net.contains("::1".parse().unwrap()));
    assert!(IpNet::parse("::1")
        .unwrap()
        .contains("::1".parse().unwrap()));
    assert!(IpNet::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!(IpNet::parse("1.2.3.4/33").is_none());
    assert!(IpNet::parse("nonsense").is_none());
}

#[test]
fn weighted_servers() {
    let text = "[[upstream]]\nname = \"a\"\nservers = [{ addr = \"127.0.0.1:1\", weight = 3 }, \"127.0.0.1:2\"]\n[[route]]\nupstream = \"a\"\n";
    let config = Config::parse(text, "x").unwrap();
    assert_eq!(config.upstreams[0].servers[0].weight, 3);
    assert_eq!(config.upstreams[0].servers[1].weight, 1);
}

#[test]
fn cluster_keys_parse() {
    let config = Config::parse(DEFAULT_CONFIG, "built-in").unwrap();
    assert!(config.cluster.is_none(), "no [cluster]: a single node");
    let text = with(
        "[cache]\nenabled = true\n[cluster]\nself = \"127.0.0.1:8080\"\n\
         peers = [\"127.0.0.1:8080\", \"127.0.0.1:8081\", \"127.0.0.1:8081\"]\n\
         secret = \"a secret of sixteen+\"\npeer_backoff = \"2s\"\n",
    );
    let cluster = Config::parse(&text, "x.toml").unwrap().cluster.unwrap();
    assert_eq!(cluster.self_addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(cluster.peers, ["127.0.0.1:8081".parse().unwrap()]);
    assert_eq!(cluster.secret, b"a secret of sixteen+");
    assert_eq!(cluster.peer_backoff, std::time::Duration::from_secs(2));
    assert_eq!(
        cluster.signature_max_age,
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn cluster_errors_name_key_and_line() {
    let cases = [
        ("[cluster]\npeers = [\"127.0.0.1:1\"]\n", "cluster.peers", Some(2)),
        ("[cluster]\nself = \"nowhere\"\nsecret = \"0123456789abcdef\"\n", "cluster.self", Some(2)),
        ("[cluster]\nself = \"127.0.0.1:1\"\n", "cluster.secret", None),
        ("[cluster]\nself = \"127.0.0.1:1\"\nsecret = \"short\"\n", "cluster.secret", None),
        (
            "[cluster]\nself = \"127.0.0.1:1\"\nsecret = \"0123456789abcdef\"\npeers_dns = \"svc\"\n",
            "cluster.peers_dns",
            Some(4),
        ),
        (
            "[cluster]\nself = \"127.0.0.1:1\"\nsecret_file = \"/nonexistent/secret\"\n",
            "cluster.secret_file",
            Some(3),
        ),
    ];
    for (text, key, line) in cases {
        let text = format!("[cache]\nenabled = true\n{text}");
        let line = line.map(|l| l + 2);
        let err = Config::parse(&with(&text), "x.toml").unwrap_err();
        assert!(err.message.contains(key), "{text}: {err}");
        assert_eq!(err.line, line, "{text}: {err}");
    }
    let without_cache = "[cluster]\nself = \"127.0.0.1:1\"\nsecret = \"0123456789abcdef\"\n";
    let err = Config::parse(&with(without_cache), "x.toml").unwrap_err();
    assert!(err.message.contains("[cache] enabled"), "{err}");
}

#[test]
fn forward_cache_is_off_by_default_and_needs_the_cache() {
    let config = Config::parse(DEFAULT_CONFIG, "built-in").expect("default config");
    assert!(!config.forward.cache);
    let on = "[cache]\nenabled = true\n[forward_proxy]\nenabled = true\ncache = true\n";
    assert!(Config::parse(&with(on), "x.toml").unwrap().forward.cache);
    let err = Config::parse(&with("[forward_proxy]\ncache = true\n"), "x.toml").unwrap_err();
    assert!(err.message.contains("forward_proxy.cache"), "{err}");
    assert!(err.message.contains("[cache] enabled"), "{err}");
    assert_eq!(err.line, Some(2), "{err}");
}
