//! The `shardproxy` command: parse arguments, load and validate the config,
//! then hand over to [`shardproxy::control::run`].

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use shardproxy::config::{Config, ConfigError, DEFAULT_CONFIG};

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

fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let default_path = PathBuf::from("config.toml");
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None if default_path.exists() => Config::load(&default_path)?,
        None => Config::parse(DEFAULT_CONFIG, "built-in config")?,
    };
    if let Some(shards) = cli.shards {
        config.server.shards = shards;
        config.server.cpus.clear();
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashPassword) = cli.command {
        return hash_password();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("shardproxy: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!(
            "config OK: {} listen address(es), {} upstream(s), {} route(s)",
            config.server.listen.len(),
            config.upstreams.len(),
            config.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    match shardproxy::control::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
