//! salt's benchmarks: the cost of orchestration on the workloads the peer benchmarks
//! (`../shared/bench-peers`, Prefect 3 and Dagster) run too.
//!
//! | workload | what |
//! | --- | --- |
//! | W0 | a workflow with one trivial task; the whole process, from start to exit |
//! | W1 | a chain of 100 tasks, each taking the previous output (int → int + 1) |
//! | W2 | a fan-out of 1 000 tasks (int → int + 1), then one task that sums them |
//! | W3 | the same with 10 000 |
//! | W4 | the same with 100 000 (inline and pool only) |
//!
//! Each runs on the `inline`, `pool` and `process` executors, on a SQLite file made for the
//! measurement in a temporary directory (W0 makes its own: it times a whole first run, cold),
//! with the durability asked for (`normal` by default, `--durability full`).
//! `cargo run --release -p bench -- --help` lists the options; `bench/peers.sh` runs these and
//! the peers' benchmarks (`../shared/bench-peers`) on one machine and prints the ratios.
//!
//! The binary is also a salt workflow binary: `bench run chain`, `bench runs`, … go to
//! `salt::main()`, and so does `bench __salt exec`, which is how the process executor runs a
//! node. W0 uses that: it times `bench run w0` as a child process.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use salt::prelude::*;
use salt::{Durability, Executor, RunState, Runner};
use serde_json::{Value, json};

/// Adds one.
#[task]
async fn inc(x: u64) -> u64 {
    x + 1
}

/// Sums its inputs.
#[task]
async fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

/// W0: one trivial task.
#[workflow(input = "{}")]
async fn w0() -> salt::Result<u64> {
    inc(0).await
}

/// W1: a chain of `n` tasks, each taking the previous one's output; nothing is awaited before
/// the last one.
#[workflow(input = r#"{"n": 100}"#)]
async fn chain(n: u64) -> salt::Result<u64> {
    let mut x = inc(0);
    for _ in 1..n {
        x = inc(x);
    }
    x.await
}

/// W2 and W3: `n` independent tasks, then one task that sums their outputs.
#[workflow(input = r#"{"n": 1000}"#)]
async fn fanout(n: u64) -> salt::Result<u64> {
    let hs: Vec<_> = (0..n).map(inc).collect();
    let xs = salt::join_all(hs).await?;
    total(xs).await
}

/// Microseconds since the Unix epoch: when a body started, for the server benchmark.
fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// When its body started (µs since the epoch): the server benchmark's dispatch latency.
#[workflow(input = "{}")]
async fn stamp() -> salt::Result<u64> {
    Ok(now_us())
}

/// How long after `t0` (µs since the epoch) its body started.
#[task]
async fn since(t0: u64) -> u64 {
    now_us().saturating_sub(t0)
}

/// `n` nodes one after the other, each spawned once the previous one has ended, with nothing
/// else running: for each, the time from its spawn to its body starting on a worker (µs), the
/// server benchmark's claim-to-start latency.
#[workflow(input = r#"{"n": 200}"#)]
async fn latency(n: u64) -> salt::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(since(now_us()).await?);
    }
    Ok(out)
}

/// Adds one, on the queue `q`: run by a worker of the database (`bench worker --queue q`).
#[task(queue = "q")]
async fn qinc(x: u64) -> u64 {
    x + 1
}

/// `n` nodes on the queue `q`, one after the other: for each, the time from its spawn to its
/// result reaching the body (µs), the queue benchmark's round trip.
#[workflow(input = r#"{"n": 100}"#)]
async fn qchain(n: u64) -> salt::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n as usize);
    let mut x = 0;
    for _ in 0..n {
        let t0 = now_us();
        x = qinc(x).await?;
        out.push(now_us().saturating_sub(t0));
    }
    Ok(out)
}

/// A run of three nodes: the workflow and a chain of two tasks.
#[workflow(input = "{}")]
async fn three() -> salt::Result<u64> {
    let a = inc(0);
    inc(a).await
}

/// The salt subcommands (and the process executor's `__salt`) this binary hands to
/// `salt::main()` when one is its first argument.
const SALT_COMMANDS: &[&str] = &[
    "__salt",
    "run",
    "runs",
    "show",
    "logs",
    "graph",
    "signal",
    "pause",
    "resume",
    "manifest",
    "recover",
    "rerun",
    "run-one",
    "cancel",
    "worker",
    "help",
    "--db",
    "--version",
    "-V",
];

/// Set in the environment of W0's child: it then prints its peak RSS on stderr when it exits.
const REPORT_RSS_ENV: &str = "SALT_BENCH_REPORT_RSS";

/// What W0's child prints before its peak RSS in KiB.
const RSS_MARKER: &str = "salt-bench-peak-rss-kib=";

/// The usage text.
const USAGE: &str = "\
salt's benchmarks: W0 (one task, whole process), W1 (chain of 100), W2 (fan-out of 1 000),
W3 (fan-out of 10 000), W4 (fan-out of 100 000), on the inline, pool and process executors.

usage: bench [--only W0,W1,W2,W3,W4] [--executor inline|pool|process] [--reps N]
             [--parallelism N] [--durability normal|full] [--store URL] [--json]

  --only W          run only these workloads (comma-separated, or repeat the option)
                    [default: W0 to W3; W4 only when asked for]
  --executor E      run only on this executor
  --reps N          repetitions per measurement [default: 5; W3: 3, 1 on process; W4: 1]
  --parallelism N   nodes that run at once [default: salt's, the number of cores]
  --durability D    normal (survives a killed process) or full (survives a power cut)
  --store URL       keep the runs in this database (a path, sqlite://PATH or postgres://…)
                    [default: a new SQLite file per measurement]
  --json            one JSON object per line instead of text

Any salt subcommand (run, runs, show, graph, ...) goes to salt's own command line.";

/// One workload: a workflow, its size and its expected result.
#[derive(Debug, Clone, Copy)]
struct Workload {
    /// W0 to W3.
    id: &'static str,
    /// The workflow it runs.
    workflow: &'static str,
    /// The workflow's `n`.
    n: u64,
    /// The number of task nodes a run has (the workflow's own root node not counted).
    nodes: u64,
    /// The workflow's output when all went well.
    expected: u64,
}

/// The workloads, in the order they run.
const WORKLOADS: [Workload; 5] = [
    Workload { id: "W0", workflow: "w0", n: 1, nodes: 1, expected: 1 },
    Workload { id: "W1", workflow: "chain", n: 100, nodes: 100, expected: 100 },
    Workload { id: "W2", workflow: "fanout", n: 1_000, nodes: 1_001, expected: 500_500 },
    Workload { id: "W3", workflow: "fanout", n: 10_000, nodes: 10_001, expected: 50_005_000 },
    Workload { id: "W4", workflow: "fanout", n: 100_000, nodes: 100_001, expected: 5_000_050_000 },
];

/// The command-line options of the harness.
#[derive(Debug, Default)]
struct Options {
    /// Only these workloads (all when empty).
    only: Vec<String>,
    /// Only this executor (both when `None`).
    executor: Option<Executor>,
    /// Repetitions per measurement (the defaults when `None`).
    reps: Option<usize>,
    /// Nodes that run at once (salt's default when `None`).
    parallelism: Option<usize>,
    /// How hard commits are made to last.
    durability: Durability,
    /// The database of every measurement (a new SQLite file per measurement when `None`).
    store: Option<String>,
    /// One JSON object per line.
    json: bool,
}

/// Parses the harness's arguments; `Err` carries the message to print.
fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (name, inline_value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline_value.clone().or_else(|| args.next()).ok_or_else(|| format!("{name} needs a value"));
        match name.as_str() {
            "--only" => {
                for w in value()?.split(',').filter(|w| !w.is_empty()) {
                    let w = w.to_uppercase();
                    if !WORKLOADS.iter().any(|k| k.id == w) {
                        return Err(format!("unknown workload `{w}`; there are W0, W1, W2, W3, W4"));
                    }
                    opts.only.push(w);
                }
            }
            "--executor" => {
                opts.executor = Some(match value()?.as_str() {
                    "inline" => Executor::Inline,
                    "process" => Executor::Process,
                    "pool" => Executor::Pool,
                    other => {
                        return Err(format!("unknown executor `{other}`; there are inline, pool, process"));
                    }
                });
            }
            "--reps" => {
                let v = value()?;
                opts.reps = Some(v.parse().ok().filter(|r| *r > 0).ok_or_else(|| format!("--reps {v}: not a count"))?);
            }
            "--parallelism" => {
                let v = value()?;
                opts.parallelism =
                    Some(v.parse().ok().filter(|p| *p > 0).ok_or_else(|| format!("--parallelism {v}: not a count"))?);
            }
            "--durability" => {
                opts.durability = match value()?.as_str() {
                    "normal" => Durability::Normal,
                    "full" => Durability::Full,
                    other => return Err(format!("unknown durability `{other}`; there are normal, full")),
                };
            }
            "--store" => opts.store = Some(value()?),
            "--json" => opts.json = true,
            _ => return Err(format!("unknown argument `{arg}`")),
        }
    }
    Ok(opts)
}

/// How many times a measurement is repeated by default.
fn default_reps(w: &Workload, executor: Executor) -> usize {
    match (w.id, executor) {
        ("W4", _) | ("W3", Executor::Process) => 1,
        ("W3", _) => 3,
        _ => 5,
    }
}

/// One repetition of a measurement.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// From the start of the run (or of the process, for W0) to its end.
    wall: Duration,
    /// The peak resident set size of the orchestrating process, in KiB, if known.
    peak_rss_kib: Option<u64>,
}

/// The peak resident set size of this process so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets this process's peak RSS to its current RSS (Linux; ignored elsewhere), so that a
/// measurement's peak is its own and not an earlier, bigger one's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Checks a run's output against the expected result.
fn check(w: &Workload, state: RunState, output: Option<&Value>, detail: &str) -> Result<(), String> {
    match output.and_then(Value::as_u64) {
        Some(got) if state == RunState::Succeeded && got == w.expected => Ok(()),
        _ => Err(format!(
            "{} `{}` n={}: expected {} (succeeded), got {:?} ({}){detail}",
            w.id,
            w.workflow,
            w.n,
            w.expected,
            output,
            state.as_str()
        )),
    }
}

/// Runs W1–W4 `reps` times with [`Runner`] in this process, on one database made for this
/// measurement: a first, untimed run creates it (what a deployment pays once), then each
/// timed run is a new run in it, from `Runner::run` to its outcome.
fn run_in_process(
    rt: &tokio::runtime::Runtime,
    w: &Workload,
    executor: Executor,
    reps: usize,
    parallelism: Option<usize>,
    durability: Durability,
    store: Option<&str>,
) -> Result<Vec<Sample>, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let db = store.map_or_else(|| dir.path().join("salt.db").into_os_string(), Into::into);
    let mut runner = Runner::new(db).executor(executor).durability(durability);
    if let Some(p) = parallelism {
        runner = runner.parallelism(p);
    }
    let once = |input: Value| rt.block_on(runner.run(w.workflow, input)).map_err(|e| format!("{} failed: {e}", w.id));
    once(json!({ "n": 1 }))?;
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        reset_peak_rss();
        let start = Instant::now();
        let outcome = once(json!({ "n": w.n }))?;
        let wall = start.elapsed();
        let why = outcome.error.as_ref().map(|e| format!(": {}", e.message())).unwrap_or_default();
        check(w, outcome.state, outcome.output.as_ref(), &why)?;
        samples.push(Sample { wall, peak_rss_kib: peak_rss_kib() });
    }
    Ok(samples)
}

/// Runs W0 once: `bench run w0` in a child process, from spawn to exit, on a fresh database.
fn run_whole_process(
    w: &Workload,
    executor: Executor,
    parallelism: Option<usize>,
    durability: Durability,
    store: Option<&str>,
) -> Result<Sample, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let db = store.map_or_else(|| dir.path().join("salt.db").into_os_string(), Into::into);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["run", w.workflow, "--executor", executor.as_str(), "--durability", durability.as_str(), "--db"])
        .arg(db)
        .env(REPORT_RSS_ENV, "1")
        .stdin(Stdio::null());
    if let Some(p) = parallelism {
        cmd.args(["--parallelism", &p.to_string()]);
    }
    let start = Instant::now();
    let out = cmd.output().map_err(|e| format!("cannot start `bench run {}`: {e}", w.workflow))?;
    let wall = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let state = if out.status.success() { RunState::Succeeded } else { RunState::Failed };
    let output = serde_json::from_str::<Value>(stdout.trim()).ok();
    check(w, state, output.as_ref(), &format!("; exit {}, stderr:\n{stderr}", out.status))?;
    let peak_rss_kib = stderr.lines().find_map(|l| l.strip_prefix(RSS_MARKER)).and_then(|v| v.trim().parse().ok());
    Ok(Sample { wall, peak_rss_kib })
}

/// A duration for people: µs, ms or s with three significant digits or so.
fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Prints one measurement: its statistics over the repetitions.
fn report(
    w: &Workload,
    executor: Executor,
    durability: Durability,
    store: Option<&str>,
    samples: &[Sample],
    json: bool,
) {
    let store = if store.is_some_and(|s| s.starts_with("postgres")) { "postgres" } else { "sqlite" };
    let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    walls.sort_unstable();
    let median = if walls.len() % 2 == 1 {
        walls[walls.len() / 2]
    } else {
        (walls[walls.len() / 2 - 1] + walls[walls.len() / 2]) / 2
    };
    let (min, max) = (walls[0], walls[walls.len() - 1]);
    let per_node = median / w.nodes as u32;
    let rss = samples.iter().filter_map(|s| s.peak_rss_kib).max();
    if json {
        let line = json!({
            "workload": w.id,
            "workflow": w.workflow,
            "n": w.n,
            "nodes": w.nodes,
            "executor": executor.as_str(),
            "durability": durability.as_str(),
            "store": store,
            "reps": samples.len(),
            "median_s": median.as_secs_f64(),
            "min_s": min.as_secs_f64(),
            "max_s": max.as_secs_f64(),
            "per_node_us": per_node.as_secs_f64() * 1e6,
            "peak_rss_kib": rss,
            "result": w.expected,
            "ok": true,
        });
        println!("{line}");
    } else {
        let rss = rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0)).unwrap_or_else(|| "?".into());
        println!(
            "{:<3}{:<7} n={:<7}{:<8}{:<7}{:<9} reps={:<2} median {:>9}  min {:>9}  max {:>9}  per node {:>9}  peak RSS {:>9}  result {} ok",
            w.id,
            w.workflow,
            w.n,
            executor.as_str(),
            durability.as_str(),
            store,
            samples.len(),
            human(median),
            human(min),
            human(max),
            human(per_node),
            rss,
            w.expected,
        );
    }
}

/// Runs the selected measurements and prints them; stops at the first wrong result.
fn harness(opts: &Options) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    if !opts.json {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let parallelism =
            opts.parallelism.map_or_else(|| "salt's default (one per core)".to_string(), |p| p.to_string());
        let store = match &opts.store {
            Some(url) => format!("the database {}", salt_runtime::pg::redact(url)),
            None => "one SQLite file per measurement".to_string(),
        };
        println!(
            "salt bench: {cores} cores, parallelism {parallelism}, {store}, made by an untimed first run (W0: a fresh one each time)"
        );
        println!("per node = median wall / task nodes; peak RSS = the orchestrating process's VmHWM");
    }
    let executors: Vec<Executor> = match opts.executor {
        Some(e) => vec![e],
        None => vec![Executor::Inline, Executor::Pool, Executor::Process],
    };
    let chosen = |w: &&Workload| {
        if opts.only.is_empty() { w.id != "W4" } else { opts.only.iter().any(|o| o == w.id) }
    };
    for w in WORKLOADS.iter().filter(chosen) {
        for &executor in &executors {
            if w.id == "W4" && executor == Executor::Process {
                continue; // 100 000 processes: minutes, and nothing the other rows do not show
            }
            let reps = opts.reps.unwrap_or_else(|| default_reps(w, executor));
            let samples = if w.id == "W0" {
                (0..reps)
                    .map(|_| run_whole_process(w, executor, opts.parallelism, opts.durability, opts.store.as_deref()))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                run_in_process(&rt, w, executor, reps, opts.parallelism, opts.durability, opts.store.as_deref())?
            };
            report(w, executor, opts.durability, opts.store.as_deref(), &samples, opts.json);
        }
    }
    Ok(())
}

/// Hands salt's subcommands to `salt::main()`; runs the benchmark harness otherwise.
fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if let Some(cmd) = first.as_deref().filter(|a| SALT_COMMANDS.contains(a)) {
        let code = salt::main();
        let report_rss = cmd == "run" && std::env::var_os(REPORT_RSS_ENV).is_some();
        if let Some(kib) = report_rss.then(peak_rss_kib).flatten() {
            eprintln!("{RSS_MARKER}{kib}");
        }
        return code;
    }
    if matches!(first.as_deref(), Some("-h" | "--help")) {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse_options(first.into_iter().chain(args)) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match harness(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options parse in both spellings, and bad ones are refused.
    #[test]
    fn options() {
        let args = ["--only", "w2,W3", "--executor=inline", "--reps", "2", "--json"].map(String::from);
        let o = parse_options(args.into_iter()).unwrap();
        assert_eq!(o.only, ["W2", "W3"]);
        assert_eq!(o.executor, Some(Executor::Inline));
        assert_eq!(o.reps, Some(2));
        assert!(o.json);
        assert!(parse_options(["--only", "W9"].map(String::from).into_iter()).is_err());
        assert!(parse_options(["--reps", "0"].map(String::from).into_iter()).is_err());
    }

    /// The workflows give the expected results when their bodies run directly.
    #[tokio::test]
    async fn workflows_compute_the_expected_results() {
        assert_eq!(chain(100).await.unwrap(), 100);
        assert_eq!(fanout(1_000).await.unwrap(), 500_500);
    }
}
