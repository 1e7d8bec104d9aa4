//! A branch chosen at run time: the graph always ends as `A` or `B`. Before it runs, its plan
//! shows both possibilities as one wildcard, `A | B`, because the workflow promises that shape.
//!
//! ```sh
//! cargo run --example random_branch                                  # flips a coin
//! cargo run --example random_branch -- run --input '{"seed": 1}'     # or takes a seed
//! cargo run --example random_branch -- graph random_branch --plan    # the plan: root, then `A | B`
//! ```

use salt::prelude::*;

/// One branch.
#[task(name = "A", color = "#b8d8ff")]
async fn branch_a() -> String {
    "took A".to_string()
}

/// The other branch.
#[task(name = "B", color = "#ffd8b8")]
async fn branch_b() -> String {
    "took B".to_string()
}

// ANCHOR: workflow
/// Takes `A` or `B` by a coin flip (journaled, so a replay takes the same branch), or by `seed`.
#[workflow(input = r#"{"seed": null}"#, promise = "A | B")]
async fn random_branch(seed: Option<u64>, ctx: &Context) -> salt::Result<String> {
    let coin = match seed {
        Some(seed) => seed,
        None => ctx.random().await,
    };
    if coin % 2 == 0 { branch_a().await } else { branch_b().await }
}
// ANCHOR_END: workflow

fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/random_branch.db")
}
