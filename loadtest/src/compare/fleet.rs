//! The set of servers `compare` drives, with what it takes to restart them.
//! The machine is shared, and a server that dies mid-benchmark (crash, or
//! killed by someone else's cleanup) is restarted and the run repeated, a
//! bounded number of times, with a note in the report.

use super::systems::{self, Kind, Layout, Server};
use crate::util::CpuList;
use std::path::PathBuf;

/// Most restarts over a whole comparison before giving up.
const MAX_RESTARTS: usize = 6;

pub struct Fleet {
    pub exe: PathBuf,
    pub work: PathBuf,
    pub shardproxy: PathBuf,
    pub layout: Layout,
    pub client_cpus: CpuList,
    pub cache_dir: PathBuf,
    pub upstream: Server,
    pub servers: Vec<Server>,
    restarts: usize,
    pub notes: Vec<String>,
}

pub struct FleetConfig {
    pub exe: PathBuf,
    pub work: PathBuf,
    pub shardproxy: PathBuf,
    pub layout: Layout,
    pub client_cpus: CpuList,
    pub cache_dir: PathBuf,
}

impl Fleet {
    pub fn start(c: FleetConfig, kinds: &[Kind]) -> Result<Fleet, String> {
        let log = c.work.join("upstream-origin.log");
        let upstream = systems::start_origin(
            &c.exe,
            0,
            origin_shards(&c.client_cpus),
            &c.client_cpus,
            c.layout.sessions,
            &log,
        )?;
        let mut f = Fleet {
            exe: c.exe,
            work: c.work,
            shardproxy: c.shardproxy,
            layout: c.layout,
            client_cpus: c.client_cpus,
            cache_dir: c.cache_dir,
            upstream,
            servers: Vec::new(),
            restarts: 0,
            notes: Vec::new(),
        };
        for &k in kinds {
            let s = f.launch(k)?;
            eprintln!("compare: {} on port {}", k.name(), s.port);
            f.servers.push(s);
        }
        Ok(f)
    }

    fn launch(&self, k: Kind) -> Result<Server, String> {
        match k {
            Kind::Origin => systems::start_origin(
                &self.exe,
                0,
                self.layout.shards,
                &self.layout.cpus,
                self.layout.sessions,
                &self.work.join("origin.log"),
            ),
            Kind::Floor => systems::start_floor(
                &self.exe,
                self.upstream.port,
                &self.layout,
                &self.work.join("floor.log"),
            ),
            _ => systems::start_proxy(
                k,
                &self.work,
                &self.shardproxy,
                self.upstream.port,
                &self.layout,
                &self.cache_dir,
            ),
        }
    }

    /// Both the server `i` and the upstream origin are running.
    pub fn healthy(&mut self, i: usize) -> bool {
        self.upstream.alive() && self.servers[i].alive()
    }

    /// Restarts whatever of server `i`'s chain has died.
    pub fn ensure(&mut self, i: usize, when: &str) -> Result<(), String> {
        if !self.upstream.alive() {
            self.bump(format!("upstream origin died ({when}); restarted"))?;
            let port = self.upstream.port;
            let log = self.work.join("upstream-origin.log");
            let shards = origin_shards(&self.client_cpus);
            let sessions = self.layout.sessions;
            self.upstream =
                systems::start_origin(&self.exe, port, shards, &self.client_cpus, sessions, &log)?;
        }
        if !self.servers[i].alive() {
            let k = self.servers[i].kind;
            self.bump(format!("{} died ({when}); restarted", k.name()))?;
            self.servers[i] = self.launch(k)?;
        }
        Ok(())
    }

    fn bump(&mut self, note: String) -> Result<(), String> {
        eprintln!("compare: {note}");
        self.restarts += 1;
        if self.restarts > MAX_RESTARTS {
            return Err(format!(
                "too many server deaths ({note}); see logs in {}",
                self.work.display()
            ));
        }
        self.notes.push(note);
        Ok(())
    }
}

/// One upstream-origin shard per client CPU. A single origin thread pinned to
/// the first of them shared that CPU with the load generator's thread while
/// the others idled, so the 2-shard layout (server and client CPUs 0,1)
/// measured the pile-up on CPU 0 more than the proxies.
fn origin_shards(client_cpus: &CpuList) -> usize {
    client_cpus.0.len().max(1)
}
