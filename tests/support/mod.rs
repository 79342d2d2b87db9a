//! Test harness for the shardproxy integration tests: the proxy process
//! (`proxy`), the scriptable origin (`origin`), the raw client (`client`),
//! the HTTP framing reader they share (`wire`), body digests (`digest`),
//! deliberately failing upstream addresses (`sockets`), named origins behind
//! one upstream (`fleet`), the cache tests'
//! scripted origin and Cache-Status parsing (`cache`), the admin endpoint
//! (`admin`) and a strict Prometheus text reader (`prometheus`), and the rule that
//! every proxy-facing test runs with 1 and with 2 shards.

pub mod admin;
pub mod cache;
pub mod client;
pub mod digest;
pub mod fleet;
pub mod origin;
pub mod prometheus;
pub mod proxy;
pub mod sockets;
pub mod wire;

pub use client::{Client, Response, TEST_HOST};
pub use digest::{BodyDigest, PatternBody};
pub use origin::{Gate, Origin, Request};
pub use proxy::{Proxy, ProxyConfig};
pub use wire::ReadError;

/// The shard counts every proxy-facing test runs with (the machine has 2 cores).
pub const SHARD_COUNTS: [usize; 2] = [1, 2];

/// Runs `test` once per shard count; the count is printed so a failure says
/// which run failed.
pub fn for_each_shard_count(test: impl Fn(usize)) {
    for shards in SHARD_COUNTS {
        eprintln!("==== running with {shards} shard(s)");
        test(shards);
    }
}

impl Proxy {
    /// A proxy with the minimal config sending everything to `origin`.
    pub fn in_front_of(origin: &Origin, shards: usize) -> Proxy {
        Proxy::start(&ProxyConfig::for_origin(shards, origin.addr()))
    }
}

/// Asserts `response` has `status`, showing the whole response otherwise.
#[track_caller]
pub fn assert_status(response: &Response, status: u16) {
    assert_eq!(
        response.status,
        status,
        "unexpected response:\n{}{}",
        String::from_utf8_lossy(&response.head.raw),
        response.body_text()
    );
}

/// Asserts a proxy-generated error: `status`, a short text/plain body.
#[track_caller]
pub fn assert_error_response(response: &Response, status: u16) {
    assert_status(response, status);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "a {status} from the proxy should be text/plain, got Content-Type {content_type:?}"
    );
    assert!(
        !response.body.is_empty() && response.body.len() < 1024,
        "a {status} from the proxy should have a short body, got {} bytes",
        response.body.len()
    );
}

/// Checks every named case and fails once, listing each case that failed
/// with its reason (so one run shows every broken vector).
#[track_caller]
pub fn assert_every_case<'a, T: 'a>(
    what: &str,
    cases: impl IntoIterator<Item = &'a (&'static str, T)>,
    check: impl Fn(&T) -> Result<(), String>,
) {
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(name, case)| check(case).err().map(|why| format!("{name}: {why}")))
        .collect();
    assert!(failures.is_empty(), "{what}:\n{}", failures.join("\n"));
}

/// `Ok` if `outcome` is a response with `status`, a description otherwise.
pub fn expect_status(
    outcome: Result<Response, ReadError>,
    status: u16,
) -> Result<Response, String> {
    match outcome {
        Ok(response) if response.status == status => Ok(response),
        Ok(response) => Err(format!(
            "got {} {:?} instead of {status}",
            response.status,
            response.body_text()
        )),
        Err(error) => Err(format!("no response ({error:?})")),
    }
}
