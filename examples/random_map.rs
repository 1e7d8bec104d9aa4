//! A map whose width is chosen at run time: always `A -> M* -> B`, with anywhere from zero to
//! five `M`s. The plan shows `A`, then a wildcard `M* -> B`, and `B` dashed: the promise
//! guarantees it will come.
//!
//! ```sh
//! cargo run --example random_map                                 # a random width
//! cargo run --example random_map -- run --input '{"seed": 3}'    # three M's
//! cargo run --example random_map -- graph random_map --plan      # the plan
//! ```

use salt::prelude::*;

/// Prepares the items.
#[task(name = "A")]
async fn prepare() -> u64 {
    10
}

/// Maps one item.
#[task(name = "M")]
async fn map_one(base: u64, i: u64) -> u64 {
    base + i
}

/// Reduces the mapped items.
#[task(name = "B")]
async fn reduce(items: Vec<u64>) -> u64 {
    items.iter().sum()
}

// ANCHOR: workflow
/// `A`, then `seed % 6` (or a random number of) `M`s in parallel, then `B`.
#[workflow(input = r#"{"seed": null}"#, promise = "A -> M* -> B")]
async fn random_map(seed: Option<u64>, ctx: &Context) -> salt::Result<u64> {
    let base = prepare().await?;
    let width = match seed {
        Some(seed) => seed % 6,
        None => ctx.random_below(6).await,
    };
    let items = salt::join_all((0..width).map(|i| map_one(base, i))).await?;
    reduce(items).await
}
// ANCHOR_END: workflow

fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/random_map.db")
}
