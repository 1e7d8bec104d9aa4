//! Tasks that fail with the error types of other crates: `anyhow::Error`, a boxed
//! `std::error::Error`, a `String`, and `?` on each inside a `salt::Result` body.

use anyhow::Context as _;

/// Reads a number from a file; fails with anyhow's chain of context when it cannot.
#[salt::task]
async fn load(path: String) -> Result<u64, anyhow::Error> {
    let text = std::fs::read_to_string(&path).with_context(|| format!("loading the limit from {path}"))?;
    text.trim().parse().with_context(|| format!("parsing the limit in {path}"))
}

/// Checks a number; fails with a `String`.
#[salt::task]
async fn check(limit: u64) -> Result<u64, String> {
    if limit > 100 { Err(format!("the limit {limit} is above 100")) } else { Ok(limit) }
}

/// Halves a number; fails with a boxed error.
#[salt::task]
async fn halve(limit: u64) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    if limit % 2 == 1 { Err(format!("{limit} is odd").into()) } else { Ok(limit / 2) }
}

/// A helper of the workflow that speaks anyhow: `?` on a task's result works in it.
async fn checked(path: String) -> anyhow::Result<u64> {
    let limit = load(path).await?;
    // `salt::Error` is not a `std::error::Error`: through `anyhow::Error` for `.context`.
    let limit = check(limit).await.map_err(anyhow::Error::from).context("checking the limit")?;
    Ok(limit)
}

/// Loads, checks and halves a limit.
#[salt::workflow]
async fn limit(path: String) -> salt::Result<u64> {
    let limit = checked(path).await?;
    halve(limit).await
}

fn main() -> std::process::ExitCode {
    salt::main()
}
