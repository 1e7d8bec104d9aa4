//! A workflow binary the server's tests register and run on workers: each step appends a line
//! to a marker file, so a test can count how often it really ran.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use salt::prelude::*;

/// Appends one line to `dir/name`: one execution of `name`.
fn mark(dir: &str, name: &str) {
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(Path::new(dir).join(name)).expect("marker file");
    let _ = writeln!(f, "ran");
}

/// Counts a step's run, sleeps `slow_ms`, and returns `x + 1`.
#[task]
async fn step(dir: String, name: String, x: u64, slow_ms: u64) -> u64 {
    mark(&dir, &name);
    println!("step {name} got {x}");
    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    x + 1
}

/// Three steps in a row; the middle one takes `slow_ms`.
#[workflow]
async fn chain(dir: String, slow_ms: u64) -> salt::Result<u64> {
    let a = step(dir.clone(), "a".to_string(), 1, 0).await?;
    let b = step(dir.clone(), "b".to_string(), a, slow_ms).await?;
    step(dir, "c".to_string(), b, 0).await
}

/// Squares `x`.
#[task]
async fn square(x: u64) -> u64 {
    x * x
}

/// Squares on the `gpu` queue.
#[task(queue = "gpu")]
async fn gpu_square(x: u64) -> u64 {
    x * x
}

/// The sum of the squares of `0..n`, each square a node.
#[workflow]
async fn fan(n: u64, gpu: bool) -> salt::Result<u64> {
    let mut total = 0;
    let handles: Vec<salt::Handle<u64>> = (0..n).map(|x| if gpu { gpu_square(x) } else { square(x) }).collect();
    for h in handles {
        total += h.await?;
    }
    Ok(total)
}

/// Waits for the signal `go` (a number), then steps once from it.
#[workflow]
async fn gate(dir: String, ctx: &Context) -> salt::Result<u64> {
    let x: u64 = ctx.wait_for("go").await?;
    step(dir, "gated".to_string(), x, 0).await
}

/// Sleeps `secs` seconds on the `batch` queue (which a test serves with a Slurm worker).
#[task(queue = "batch")]
async fn nap(secs: u64) -> u64 {
    println!("napping {secs} s");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    secs
}

/// One nap on the `batch` queue.
#[workflow]
async fn nap_once(secs: u64) -> salt::Result<u64> {
    nap(secs).await
}

/// Fills `mb` MiB of memory on the `batch` queue, holds it for `secs` seconds, and returns how
/// many bytes it held.
#[task(queue = "batch")]
async fn hog(mb: u64, secs: u64) -> u64 {
    let held = vec![1u8; usize::try_from(mb << 20).unwrap_or(usize::MAX)];
    println!("holding {mb} MiB");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    held.iter().map(|b| u64::from(*b)).sum()
}

/// One hog on the `batch` queue.
#[workflow]
async fn hog_once(mb: u64, secs: u64) -> salt::Result<u64> {
    hog(mb, secs).await
}

/// A command step sent to `queue` by its call: it appends a line to `dir/command`.
#[workflow]
async fn queued_command(dir: String, queue: String) -> salt::Result<i32> {
    Ok(salt::shell("echo ran >> command").current_dir(&dir).queue(queue).await?.exit_code)
}

fn main() -> std::process::ExitCode {
    salt::main()
}
