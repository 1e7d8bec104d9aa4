//! The command line of `salt`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Registers, serves and runs salt workflow binaries.
#[derive(Debug, Parser)]
#[command(name = "salt", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of `salt`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take attempts of some queues from a server and run them.
    Worker(crate::worker::WorkerArgs),
}

/// Runs the `salt` command line and returns its exit code.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Worker(args) => block_on(crate::worker::run(args.options())),
    }
}

/// Runs `fut` on a multi-threaded runtime; an error is printed and exits with 1.
fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
