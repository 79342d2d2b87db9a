//! The command line: `--check` accepts the repository's documented config
//! (and every optional key it mentions), rejects configs with an unknown key,
//! a bad duration or a route to a missing upstream with a message naming the
//! culprit and its line, and `--version` prints the version.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::support::proxy::{wait_with_limit, TempFile, PROXY_BINARY};

const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");

struct CliOutcome {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`; it must exit within 20 s.
fn run_cli(args: &[&str]) -> CliOutcome {
    let mut child = Command::new(PROXY_BINARY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the proxy");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = wait_with_limit(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
    }
    let outcome = CliOutcome {
        success: status.is_some_and(|status| status.success()),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "`shardproxy {}` did not exit; stderr:\n{}",
        args.join(" "),
        outcome.stderr
    );
    outcome
}

fn check_config(text: &str) -> CliOutcome {
    let file = TempFile::with_contents(text);
    run_cli(&["--check", "--config", file.path.to_str().unwrap()])
}

#[test]
fn check_accepts_the_repository_config() {
    let outcome = run_cli(&["--check", "--config", REPO_CONFIG]);
    assert!(
        outcome.success,
        "--check rejected config.toml:\n{}",
        outcome.stderr
    );
}

#[test]
fn check_accepts_every_documented_optional_key() {
    let documented = std::fs::read_to_string(REPO_CONFIG).unwrap();
    let uncommented = documented
        .replace("# cpus = [0, 1]", "cpus = [0, 1]")
        .replace("# host = \"example.com\"", "host = \"example.com\"")
        .replace(
            "servers = [\"127.0.0.1:9000\"]",
            "servers = [\"127.0.0.1:9000\", { addr = \"127.0.0.1:9001\", weight = 2 }]",
        );
    assert_ne!(
        uncommented, documented,
        "config.toml no longer documents the optional keys this test enables"
    );
    let outcome = check_config(&uncommented);
    assert!(
        outcome.success,
        "--check rejected documented keys:\n{}\n---\n{uncommented}",
        outcome.stderr
    );
}

/// Asserts `--check` rejects `config`, naming `culprit` and its `line`.
fn assert_rejected_naming(config: &str, culprit: &str, line: usize) {
    let outcome = check_config(config);
    assert!(!outcome.success, "--check accepted a bad config:\n{config}");
    assert!(
        outcome.stderr.contains(culprit),
        "the error does not name {culprit:?}:\n{}",
        outcome.stderr
    );
    assert!(
        outcome.stderr.contains(&format!("line {line}")),
        "the error does not say `line {line}`:\n{}",
        outcome.stderr
    );
}

const VALID_PREFIX: &str = "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\n\n";
const VALID_ROUTING: &str =
    "[[upstream]]\nname = \"o\"\nservers = [\"127.0.0.1:9000\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"o\"\n";

#[test]
fn check_reports_unknown_key_with_its_line() {
    // Lines 1-4: VALID_PREFIX; 5: [http]; 6: good key; 7: typo.
    let config = format!("{VALID_PREFIX}[http]\nmax_body_size = \"1MiB\"\nmax_bodysize = \"2MiB\"\n\n{VALID_ROUTING}");
    assert_rejected_naming(&config, "max_bodysize", 7);
}

#[test]
fn check_reports_bad_duration_with_its_line() {
    // Lines 1-4: VALID_PREFIX; 5: [timeouts]; 6: the bad duration.
    let config = format!("{VALID_PREFIX}[timeouts]\nclient_header = \"ten\"\n\n{VALID_ROUTING}");
    assert_rejected_naming(&config, "client_header", 6);
}

#[test]
fn check_reports_route_to_missing_upstream_with_its_line() {
    // Lines 1-4: VALID_PREFIX; 5-8: upstream; 9: [[route]]; 10: prefix; 11: upstream.
    let config = format!(
        "{VALID_PREFIX}[[upstream]]\nname = \"o\"\nservers = [\"127.0.0.1:9000\"]\n\n[[route]]\npath_prefix = \"/\"\nupstream = \"nowhere\"\n"
    );
    assert_rejected_naming(&config, "nowhere", 11);
}

#[test]
fn version_flag_prints_the_version() {
    let outcome = run_cli(&["--version"]);
    assert!(outcome.success, "--version failed:\n{}", outcome.stderr);
    assert!(
        outcome.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {:?}",
        outcome.stdout
    );
}

#[test]
fn check_does_not_bind_the_listen_address() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = occupied.local_addr().unwrap();
    let config = format!("[server]\nlisten = [\"{addr}\"]\nshards = 1\n\n{VALID_ROUTING}");
    let outcome = check_config(&config);
    assert!(
        outcome.success,
        "--check must only validate, not bind:\n{}",
        outcome.stderr
    );
}

#[test]
fn occupied_listen_address_fails_startup() {
    let occupied = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = occupied.local_addr().unwrap();
    let file = TempFile::with_contents(&format!(
        "[server]\nlisten = [\"{addr}\"]\nshards = 1\n\n{VALID_ROUTING}"
    ));
    let outcome = run_cli(&["--config", file.path.to_str().unwrap()]);
    assert!(
        !outcome.success,
        "the proxy started on an address already in use"
    );
    assert!(
        outcome.stderr.contains(&addr.to_string()),
        "the error does not name {addr}:\n{}",
        outcome.stderr
    );
}

#[test]
fn check_names_the_key_of_a_mistyped_value() {
    // The line alone left the reader to guess which key `"many"` belonged to.
    assert_rejected_naming(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\nshards = \"many\"\n",
        "server.shards",
        4,
    );
}

#[test]
fn check_rejects_glommio_tuning_keys_naming_their_replacement() {
    let outcome = check_config("[server.tuning]\nio_memory = \"2MiB\"\n");
    assert!(!outcome.success, "io_memory was accepted");
    assert!(
        outcome.stderr.contains("server.tuning.io_memory") && outcome.stderr.contains("buffers"),
        "the error does not say what replaced io_memory:\n{}",
        outcome.stderr
    );
}

/// Each shard says which engine it runs on, and `server.io` picks it.
#[test]
fn each_shard_names_its_io_engine() {
    use crate::support::{origin, Origin, Proxy, ProxyConfig};
    let origin = Origin::start(origin::echo_target());
    for (io, engine) in [
        ("io_uring", "(io_uring, SINGLE_ISSUER|DEFER_TASKRUN)"),
        ("poll", "(epoll)"),
    ] {
        let config =
            ProxyConfig::for_origin(2, origin.addr()).set("server", "io", &format!("{io:?}"));
        let proxy = Proxy::start(&config);
        let response = proxy.client().get("/");
        crate::support::assert_status(&response, 200);
        let output = proxy.output();
        assert_eq!(
            output.matches(engine).count(),
            2,
            "with io = {io:?} both shards should log {engine}:\n{output}"
        );
    }
}
