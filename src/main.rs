//! The `shardproxy` command: parse arguments, load and validate the config,
//! then hand over to [`shardproxy::control::run`].

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use shardproxy::config::ConfigSource;

/// A thread-per-core io_uring HTTP/1.1 reverse proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Config file. Default: ./config.toml if it exists, else built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Number of shards, overriding `server.shards` and `server.cpus`.
    #[arg(long)]
    shards: Option<usize>,
    /// Validate the config and exit: 0 if valid, 2 with the bad key and line if not.
    #[arg(long)]
    check: bool,
    /// Ask the running proxy to reload its config file, through the admin
    /// endpoint named in this config's `[admin] listen` (like SIGHUP): 0 if
    /// applied, 1 with the reason if refused or unreachable.
    #[arg(long, conflicts_with = "check")]
    reload: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Read a password (first line of stdin) and print its argon2 PHC string
    /// for a `[[forward_proxy.user]]` `password_hash`.
    HashPassword,
}

/// `shardproxy hash-password`: the password never appears in argv or the config.
fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("shardproxy: cannot read the password from stdin: {e}");
        return ExitCode::from(2);
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("shardproxy: empty password (give it on stdin)");
        return ExitCode::from(2);
    }
    match shardproxy::proxy::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardproxy: hashing failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    // Millisecond timestamps: health transitions and ejections are timed
    // against restarts and kills (scripts/fault/recovery.py), and a health
    // interval is often under a second.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    shardproxy::heap::tune_for_server();
    let source = ConfigSource {
        path: cli.config.clone(),
        shards: cli.shards,
    };
    let config = match source.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shardproxy: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.reload {
        return match config.admin.listen {
            None => {
                eprintln!(
                    "shardproxy: --reload needs `[admin] listen` in the config (or send SIGHUP)"
                );
                ExitCode::FAILURE
            }
            Some(addr) => match shardproxy::admin::request_reload(addr) {
                Ok(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    eprintln!("shardproxy: {why}");
                    ExitCode::FAILURE
                }
            },
        };
    }
    if cli.check {
        println!(
            "config OK: {} listen address(es), {} upstream(s), {} route(s)",
            config.server.listen.len(),
            config.upstreams.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    match shardproxy::control::run(config, source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
