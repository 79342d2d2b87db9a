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
