//! Starting `loadtest` servers for the end-to-end tests: each binds port 0
//! and prints `NAME listening on ADDR` once bound, which is read here (no
//! fixed sleeps, no fixed ports).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_loadtest");

/// A `loadtest origin` or `loadtest floor` process, killed on drop.
pub struct Served {
    child: Child,
    pub addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `loadtest ARGS` and waits for its `NAME listening on` line.
pub fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn loadtest");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read loadtest stdout");
    let prefix = format!("{} listening on ", args[0]);
    let addr = line
        .trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        .to_string();
    Served { child, addr }
}

/// Runs `loadtest run ARGS --json` to its end and returns its result object.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .expect("run client");
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

pub fn start_origin_with(shards: usize, extra: &[&str]) -> Served {
    let shards = shards.to_string();
    let mut args = vec!["origin", "--listen", "127.0.0.1:0", "--shards", &shards];
    args.extend_from_slice(extra);
    serve(&args)
}
