//! A workflow that breaks its promise: it promised `extract -> load`, then spawns an `audit`.
//! The orchestrator refuses the spawn and terminates the run with an error naming the promise,
//! the mutation and the node. The command exits with status 1.
//!
//! ```sh
//! cargo run --example broken_promise
//! ```

use salt::prelude::*;

/// Produces some rows.
#[task]
async fn extract() -> Vec<u64> {
    vec![1, 2, 3]
}

/// Stores them.
#[task]
async fn load(rows: Vec<u64>) -> u64 {
    rows.len() as u64
}

/// Looks at them once more: not part of the promised shape.
#[task]
async fn audit(rows: Vec<u64>) -> bool {
    rows.iter().all(|r| *r > 0)
}

// ANCHOR: workflow
/// Promises `extract -> load`, then also audits: terminated.
#[workflow(promise = "extract -> load")]
async fn broken_promise() -> salt::Result<u64> {
    let rows = extract();
    let audited = audit(rows.clone());
    let loaded = load(rows);
    audited.await?;
    loaded.await
}
// ANCHOR_END: workflow

fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/broken_promise.db")
}
