//! Config validation of the operations sections: `[admin]`, `[log]`,
//! `[limits]`, a route's rate limit, and what a reload keeps from the
//! running config.

use std::path::PathBuf;

use super::*;

/// A minimal valid config with `extra` prepended; `extra` starts at line 1.
fn with(extra: &str) -> String {
    format!("{extra}\n{DEFAULT_CONFIG}")
}

#[test]
fn operations_defaults_are_off() {
    let config = Config::parse(DEFAULT_CONFIG, "built-in").unwrap();
    assert_eq!(config.admin.listen, None);
    assert_eq!(config.log.access, AccessTarget::Off);
    assert_eq!(config.log.format, AccessFormat::Combined);
    assert_eq!(config.limits.connections_per_ip, None);
    assert_eq!(config.limits.rate_per_ip, None);
    assert_eq!(config.routes[0].rate_limit, None);
}

#[test]
fn operations_keys_parse() {
    let text = with(
        "[admin]\nlisten = \"127.0.0.1:9901\"\n[log]\naccess = \"/tmp/a.log\"\nformat = \"json\"\n\
         [limits]\nconnections_per_ip = 8\nrate = 20\n",
    );
    let config = Config::parse(&text, "x.toml").unwrap();
    assert_eq!(config.admin.listen, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(
        config.log.access,
        AccessTarget::File(PathBuf::from("/tmp/a.log"))
    );
    assert_eq!(config.log.format, AccessFormat::Json);
    assert_eq!(config.limits.connections_per_ip, Some(8));
    let rate = config.limits.rate_per_ip.unwrap();
    assert_eq!(
        (rate.per_second, rate.burst),
        (20.0, 20),
        "burst defaults to the rate"
    );
    let stdout = Config::parse(&with("[log]\naccess = \"stdout\""), "x").unwrap();
    assert_eq!(stdout.log.access, AccessTarget::Stdout);
}

#[test]
fn operations_errors_name_key_and_line() {
    let cases = [
        ("[admin]\nlisten = \"localhost\"", 2, "admin.listen"),
        ("[log]\nformat = \"xml\"", 2, "log.format"),
        ("[log]\naccess = \"\"", 2, "log.access"),
        ("[limits]\n\nrate = -1", 3, "limits.rate"),
        ("[limits]\nburst = \"ten\"", 2, "limits.burst"),
    ];
    for (extra, line, key) in cases {
        let err = Config::parse(&with(extra), "x.toml").unwrap_err();
        assert_eq!(err.line, Some(line), "{extra}: {err}");
        assert!(err.message.contains(key), "{extra}: {err}");
    }
    let text = "[[upstream]]\nname = \"a\"\nservers = [\"127.0.0.1:1\"]\n\
                [[route]]\nupstream = \"a\"\nrate_limit = -5\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.line, Some(6), "{err}");
    assert!(err.message.contains("route.rate_limit"), "{err}");
}

#[test]
fn reload_keeps_what_needs_a_restart() {
    let running = Config::parse(DEFAULT_CONFIG, "built-in").unwrap();
    let text = with(
        "[server]\nlisten = [\"127.0.0.1:1\"]\nshards = 3\n[timeouts]\nbody_idle = \"5s\"\n\
         [http]\nbuffer_size = \"16KiB\"\nmax_headers = 50\n",
    );
    let new = Config::parse(&text, "x.toml").unwrap();
    let (applied, ignored) = new.for_reload(&running);
    assert_eq!(applied.server.listen, ["127.0.0.1:1".parse().unwrap()]);
    assert_eq!(applied.server.shards, running.server.shards);
    assert_eq!(applied.http.buffer_size, running.http.buffer_size);
    assert_eq!(applied.http.max_headers, 50);
    assert_eq!(
        applied.timeouts.body_idle,
        std::time::Duration::from_secs(5)
    );
    assert_eq!(
        ignored,
        ["[server]", "http.buffer_size, http.max_header_bytes"]
    );
}
