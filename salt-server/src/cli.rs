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
pub enum Command {}

/// Runs the `salt` command line and returns its exit code.
pub fn main() -> ExitCode {
    match Cli::parse().command {}
}
