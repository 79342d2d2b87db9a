//! `loadtest`: shardproxy's bundled HTTP/1.1 load generator (`run`), fast test
//! origin (`origin`), benchmark harness against nginx/HAProxy (`compare`) and the
//! minimal forwarding proxy it can run beside them as a reference (`floor`).
//! This file only parses the command line and dispatches; each subcommand
//! lives in its own module.

mod body;
mod checksum;
mod cli;
mod client;
mod compare;
mod dist;
mod floor;
mod origin;
mod report;
mod util;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    let res = match &cli.command {
        Command::Run(a) => client::main(a),
        Command::Origin(a) => origin::main(a),
        Command::Compare(a) => compare::main(a),
        Command::Floor(a) => floor::main(a),
    };
    if let Err(e) = res {
        eprintln!("loadtest: {e}");
        std::process::exit(1);
    }
}
