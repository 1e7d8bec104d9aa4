//! A predetermined pipeline: it only wires handles, so its whole graph is known before it runs,
//! and its plan equals its final graph, every time.
//!
//! ```sh
//! cargo run --example static_pipeline                                  # run it
//! cargo run --example static_pipeline -- graph static_pipeline --plan   # its plan (dot)
//! cargo run --example static_pipeline -- graph 1                        # the run's graph
//! ```

use salt::prelude::*;

/// Produces the numbers 1 to `n`.
#[task]
async fn extract(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// Squares each number.
#[task]
async fn transform(rows: Vec<u64>) -> Vec<u64> {
    rows.iter().map(|x| x * x).collect()
}

/// Sums them.
#[task]
async fn load(rows: Vec<u64>) -> u64 {
    rows.iter().sum()
}

// ANCHOR: workflow
/// extract -> transform -> load, wired by handles; the shape promise says nothing else will
/// ever be added, so no wildcard is drawn.
#[workflow(input = r#"{"n": 10}"#, promise = "extract -> transform -> load")]
async fn static_pipeline(n: u64) -> salt::Result<u64> {
    let rows = extract(n);
    let squares = transform(rows);
    load(squares).await
}
// ANCHOR_END: workflow

fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/static_pipeline.db")
}
