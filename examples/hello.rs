//! The smallest complete salt program: one task, one workflow with a default input, and `main`.
//!
//! ```text
//! cargo run --example hello -- run
//! cargo run --example hello -- run --input '{"name": "Ferris"}'
//! cargo run --example hello -- show 1
//! ```
//!
//! `run` prints the workflow's output, `"Hello, world!"`, on stdout; the run is stored in
//! `.salt/salt.db`.

use salt::prelude::*;

/// Greets someone.
#[task]
async fn greet(name: String) -> String {
    format!("Hello, {name}!")
}

/// Greets `name` by running `greet` as a node of the run.
#[workflow(input = r#"{"name": "world"}"#)]
async fn hello(name: String) -> salt::Result<String> {
    greet(name).await
}

/// The command line: `run`, `runs`, `show`, `logs`, `graph`… (`--help` lists them).
fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/hello.db")
}
