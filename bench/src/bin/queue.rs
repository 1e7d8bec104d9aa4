//! The database's own queue: nodes of a task on a named queue wait in the database until a
//! worker of that queue (`bench worker --queue q`, another process) claims them, and the
//! orchestrator reads their results back from it.
//!
//! It times the round trip of one node through the queue, nothing else running: from its spawn
//! in the workflow's body to its result reaching the body (p50, p99 of `--nodes` nodes in a
//! row, 100 by default), with 1 and 2 idle workers waiting. On PostgreSQL, the enqueue wakes
//! the workers (`NOTIFY`) and the result wakes the orchestrator; on SQLite both poll.
//!
//! `cargo build --release -p bench && target/release/queue` on a fresh SQLite file;
//! `-- --db postgres` on a throwaway PostgreSQL server, `--db postgres://USER@HOST/DB` on that
//! (empty) database.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// What the command line asks for.
struct Options {
    db: Option<String>,
    nodes: u64,
}

fn options() -> Result<Options, String> {
    let usage = "usage: queue [--db postgres|postgres://USER@HOST/DB] [--nodes N]";
    let mut opts = Options { db: None, nodes: 100 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        match flag.as_str() {
            "--db" if value == "postgres" => {
                opts.db = Some(salt_testkit::postgres::database("bench_queue"));
            }
            "--db" => opts.db = Some(value),
            "--nodes" => opts.nodes = value.parse().map_err(|_| usage)?,
            _ => return Err(usage.into()),
        }
    }
    Ok(opts)
}

/// The `bench` binary next to this one.
fn bench_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.with_file_name("bench");
    path.exists()
        .then_some(path.clone())
        .ok_or_else(|| format!("{} is missing: `cargo build --release -p bench`", path.display()))
}

/// `p`-th percentile of sorted `xs`.
fn percentile(xs: &[u64], p: f64) -> u64 {
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

/// Workers of the queue `q`, stopped when dropped.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

fn workers(bin: &Path, db: &str, dir: &Path, n: usize) -> Result<Workers, String> {
    let spawn = |_| {
        Command::new(bin)
            .args(["worker", "--queue", "q", "--slots", "2", "--db", db])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())
    };
    let workers = Workers((0..n).map(spawn).collect::<Result<_, _>>()?);
    // Let them start and wait on the queue.
    std::thread::sleep(Duration::from_millis(500));
    Ok(workers)
}

/// The round trips (µs) of `nodes` nodes through the queue, one after the other.
fn round_trips(bin: &Path, db: &str, dir: &Path, nodes: u64) -> Result<Vec<u64>, String> {
    let input = serde_json::json!({ "n": nodes }).to_string();
    let out = Command::new(bin)
        .args(["run", "qchain", "--executor", "inline", "--json", "--input", &input, "--db", db])
        .current_dir(dir)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).map_err(|e| {
        format!("`bench run qchain` printed no JSON ({e}): {text}{}", String::from_utf8_lossy(&out.stderr))
    })?;
    let mut trips: Vec<u64> = report["output"]
        .as_array()
        .ok_or_else(|| format!("`bench run qchain` did not succeed: {report}"))?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    trips.sort_unstable();
    if trips.len() as u64 != nodes {
        return Err(format!("{} round trips, not {nodes}: {report}", trips.len()));
    }
    Ok(trips)
}

fn bench() -> Result<(), String> {
    let opts = options()?;
    let bin = bench_binary()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let db = opts.db.clone().unwrap_or_else(|| dir.path().join("queue.db").display().to_string());
    println!("database: {}", if opts.db.is_some() { "PostgreSQL" } else { "SQLite" });
    // An untimed first run makes the database and warms the caches.
    {
        let _w = workers(&bin, &db, dir.path(), 1)?;
        round_trips(&bin, &db, dir.path(), 5)?;
    }
    for n in [1, 2] {
        let _w = workers(&bin, &db, dir.path(), n)?;
        let trips = round_trips(&bin, &db, dir.path(), opts.nodes)?;
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "{n} worker(s): round trip p50 {:.2} ms, p99 {:.2} ms ({} nodes)",
            ms(percentile(&trips, 0.5)),
            ms(percentile(&trips, 0.99)),
            trips.len()
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match bench() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
