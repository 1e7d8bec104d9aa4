//! A wide workflow for the chaos test and the benchmark: `spread` fans out `n` `touch` nodes,
//! each of which appends one line to its own marker file, so a test can tell how often each
//! node really ran. `limited` fans out `hold` nodes of the queue `limited`, each of which
//! records when it started and ended, so a test can tell how many ran at once.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use salt::prelude::*;

/// Appends one line to `dir/tag-i` (one execution of node `i` of run `tag`), sleeps
/// `slow_ms`, and returns `i`.
#[task(retries = 2)]
async fn touch(dir: String, tag: String, i: u64, slow_ms: u64) -> u64 {
    let path = Path::new(&dir).join(format!("{tag}-{i}"));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("marker file");
    let _ = writeln!(f, "ran");
    drop(f);
    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    i
}

/// `n` `touch` nodes side by side; returns how many ran.
#[workflow]
async fn spread(dir: String, tag: String, n: u64, slow_ms: u64) -> salt::Result<u64> {
    let handles: Vec<salt::Handle<u64>> = (0..n).map(|i| touch(dir.clone(), tag.clone(), i, slow_ms)).collect();
    let mut count = 0;
    for h in handles {
        h.await?;
        count += 1;
    }
    Ok(count)
}

/// Sleeps `slow_ms` in the queue `limited`, then appends `START END` (ms since the epoch) to
/// `dir/tag-i`.
#[task(queue = "limited")]
async fn hold(dir: String, tag: String, i: u64, slow_ms: u64) -> u64 {
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let start = now();
    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    let end = now();
    let path = Path::new(&dir).join(format!("{tag}-{i}"));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("marker file");
    let _ = writeln!(f, "{start} {end}");
    i
}

/// `n` `hold` nodes side by side; returns how many ran.
#[workflow]
async fn limited(dir: String, tag: String, n: u64, slow_ms: u64) -> salt::Result<u64> {
    let handles: Vec<salt::Handle<u64>> = (0..n).map(|i| hold(dir.clone(), tag.clone(), i, slow_ms)).collect();
    let mut count = 0;
    for h in handles {
        h.await?;
        count += 1;
    }
    Ok(count)
}

fn main() -> std::process::ExitCode {
    salt::main()
}
