//! The cost of running through a server and its workers, on loopback: the `salt server`
//! router (REST API, run host, dispatcher) in this process, with the `bench` binary registered,
//! and real `salt worker` processes connected over WebSockets, running the `bench` binary's
//! workflows from their binary caches. Runs are started with `POST /api/v1/runs`.
//!
//! - dispatch: from `POST /api/v1/runs` to the workflow's body starting on a worker (p50, p99);
//! - W2 (fan-out of 1 000) end to end with 1, 2 and 4 workers, per node, beside the local
//!   `pool` executor on the same machine;
//! - claim-to-start: from a node's spawn to its body starting on a worker, nothing else
//!   running (p50, p99 of 200 nodes in a row), with 1, 2 and 4 workers;
//! - 1 000 runs of a three-node workflow started at once: runs per second.
//!
//! `cargo build --release -p salt-server -p bench && cargo run --release -p bench --bin server`
//! (it needs the `salt` and `bench` binaries next to it). On a fresh SQLite file by default;
//! `-- --db postgres://USER@HOST/DB` runs the same on that (empty) PostgreSQL database, and
//! `-- --db postgres` on a throwaway PostgreSQL server started for the measurement.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use salt_runtime::model::{RunId, RunState};
use salt_runtime::ops;
use salt_runtime::remote::Dispatcher;

fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = exe.parent().map(|d| d.join(name)).ok_or("no directory")?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} is missing: `cargo build --release -p salt-server -p bench` first", path.display()))
    }
}

struct Bench {
    dir: tempfile::TempDir,
    db: String,
    url: String,
    state: salt_server::state::AppState,
    /// One HTTP client, its connections kept alive, as a real client would.
    http: ureq::Agent,
    workers: Vec<Child>,
}

impl Bench {
    /// A `salt server` (its router, run host and dispatcher, in this process) on a fresh
    /// database, listening on loopback, with the bench binary registered.
    async fn new(db: Option<String>) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let db = db.unwrap_or_else(|| dir.path().join("server.db").display().to_string());
        let data = dir.path().join("data");
        salt_runtime::ops::open(&db).map_err(|e| e.to_string())?;
        let dispatcher = Dispatcher::new();
        let host = salt_server::server::run_host(&db, dispatcher.clone(), None).map_err(|e| e.to_string())?;
        let state = salt_server::server::open_state(&db, &data, host, dispatcher).map_err(|e| e.to_string())?;
        salt_server::registry::register_file(
            &state.conn.lock().unwrap_or_else(|p| p.into_inner()),
            &data,
            &sibling("bench")?,
            None,
        )
        .map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
        let serving = state.clone();
        tokio::spawn(async move { salt_server::server::serve_on(listener, serving, std::future::pending()).await });
        Ok(Self { dir, db, url, state, http: ureq::Agent::new_with_defaults(), workers: Vec::new() })
    }

    /// Runs `n` workers with `slots` slots each, and waits until they are connected.
    async fn workers(&mut self, n: usize, slots: usize) -> Result<(), String> {
        for w in self.workers.drain(..) {
            stop(w);
        }
        while !self.state.dispatcher.workers().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let salt = sibling("salt")?;
        for i in 0..n {
            let child = Command::new(&salt)
                .args(["worker", "--server", &self.url, "--slots", &slots.to_string(), "--name", &format!("w{i}")])
                .arg("--cache")
                .arg(self.dir.path().join("cache"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            self.workers.push(child);
        }
        while self.state.dispatcher.workers().len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Starts a run with `POST /api/v1/runs`, as a client would.
    async fn start(&self, workflow: &str, input: Value) -> Result<RunId, String> {
        let url = format!("{}/api/v1/runs", self.url);
        let body = json!({"workflow": workflow, "input": input});
        let http = self.http.clone();
        let reply = tokio::task::spawn_blocking(move || -> Result<Value, String> {
            let mut r = http.post(&url).send_json(&body).map_err(|e| e.to_string())?;
            r.body_mut().read_json::<Value>().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        reply["run"].as_i64().map(RunId::new).ok_or_else(|| format!("no run in {reply}"))
    }

    /// Waits for the runs to end; all must succeed. Returns their outputs.
    async fn wait(&self, runs: &[RunId]) -> Result<Vec<Value>, String> {
        let store = ops::open_read_only(&self.db).map_err(|e| e.to_string())?;
        let mut outputs = Vec::with_capacity(runs.len());
        for &run in runs {
            loop {
                let snap = ops::show(&*store, run).map_err(|e| e.to_string())?;
                match snap.run.state {
                    RunState::Succeeded => {
                        outputs.push(snap.nodes[0].output.clone().unwrap_or(Value::Null));
                        break;
                    }
                    s if s.is_terminal() => {
                        let why = snap.nodes.iter().filter_map(|n| n.error.as_ref()).map(|e| e.to_string()).next();
                        return Err(format!("run {run} ended {}: {}", s.as_str(), why.unwrap_or_default()));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
        Ok(outputs)
    }
}

fn stop(mut w: Child) {
    let _ = w.kill();
    let _ = w.wait();
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The database `--db` names: none (a fresh SQLite file), `postgres` (a throwaway server) or
/// a URL.
fn database() -> Result<Option<String>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let db = match args.as_slice() {
        [] => return Ok(None),
        [flag, db] if flag == "--db" => db.clone(),
        _ => return Err("usage: server [--db postgres|postgres://USER@HOST/DB]".into()),
    };
    if db == "postgres" {
        return Ok(Some(salt_testkit::postgres::database("bench")));
    }
    Ok(Some(db))
}

async fn bench() -> Result<(), String> {
    let db = database()?;
    println!("database: {}", if db.is_some() { "PostgreSQL" } else { "SQLite" });
    let mut b = Bench::new(db).await?;
    b.workers(2, 4).await?;
    // Warm the workers' caches and processes.
    let mut warm = Vec::new();
    for _ in 0..8 {
        warm.push(b.start("stamp", json!({})).await?);
    }
    b.wait(&warm).await?;

    // Dispatch: one run at a time, from start to its body starting on a worker.
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let t0 = now_us();
        let run = b.start("stamp", json!({})).await?;
        let out = b.wait(&[run]).await?;
        let started = out[0].as_u64().ok_or("stamp returned no time")?;
        latencies.push(started.saturating_sub(t0) as f64 / 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "dispatch (POST /api/v1/runs -> its body starts on a worker), 2 workers, 200 runs: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    // W2 through the server, with 1, 2 and 4 workers of 2 slots.
    for n in [1, 2, 4] {
        b.workers(n, 2).await?;
        let warm = b.start("fanout", json!({"n": 20})).await?;
        b.wait(&[warm]).await?;
        let mut walls = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let run = b.start("fanout", json!({"n": 1000})).await?;
            let out = b.wait(&[run]).await?;
            if out[0] != json!(500_500) {
                return Err(format!("W2 gave {}", out[0]));
            }
            walls.push(t.elapsed().as_secs_f64());
        }
        walls.sort_by(f64::total_cmp);
        let median = walls[1];
        println!(
            "W2 (fan-out of 1 000) through the server, {n} worker(s) x 2 slots: {:.2} s, {:.0} µs per node, {:.0} nodes/s",
            median,
            median / 1001.0 * 1e6,
            1001.0 / median
        );
    }

    // Claim-to-start: a node's spawn to its body starting, one node at a time.
    for n in [1, 2, 4] {
        b.workers(n, 2).await?;
        let warm = b.start("latency", json!({"n": 20})).await?;
        b.wait(&[warm]).await?;
        let run = b.start("latency", json!({"n": 200})).await?;
        let out = b.wait(&[run]).await?;
        let mut lat: Vec<f64> = out[0]
            .as_array()
            .ok_or("latency returned no list")?
            .iter()
            .filter_map(Value::as_f64)
            .map(|us| us / 1000.0)
            .collect();
        lat.sort_by(f64::total_cmp);
        println!(
            "claim-to-start (a node's spawn -> its body starts on a worker), {n} worker(s) x 2 slots, 200 nodes: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }

    // Many runs at once.
    b.workers(2, 4).await?;
    let t = Instant::now();
    // Eight client threads of their own, as eight clients would (not the server's runtime).
    let (url, http) = (format!("{}/api/v1/runs", b.url), b.http.clone());
    let runs: Vec<RunId> = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let clients: Vec<_> = (0..8)
                .map(|_| {
                    let (url, http) = (&url, &http);
                    scope.spawn(move || -> Result<Vec<RunId>, String> {
                        (0..125)
                            .map(|_| {
                                let mut r = http
                                    .post(url)
                                    .send_json(json!({"workflow": "three", "input": {}}))
                                    .map_err(|e| e.to_string())?;
                                let v: Value = r.body_mut().read_json().map_err(|e| e.to_string())?;
                                v["run"].as_i64().map(RunId::new).ok_or_else(|| format!("no run in {v}"))
                            })
                            .collect()
                    })
                })
                .collect();
            let mut all = Vec::new();
            for c in clients {
                all.extend(c.join().map_err(|_| "a client thread panicked".to_string())??);
            }
            Ok::<_, String>(all)
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    let submitted = t.elapsed().as_secs_f64();
    b.wait(&runs).await?;
    let all = t.elapsed().as_secs_f64();
    println!(
        "1 000 runs of a 3-node workflow started by 8 clients at once, 2 workers x 4 slots: started in {:.2} s, all done in {:.2} s: {:.0} runs/s",
        submitted,
        all,
        1000.0 / all
    );
    for w in b.workers.drain(..) {
        stop(w);
    }

    // The local pool executor on the same workload, for comparison.
    let bench = sibling("bench")?;
    let out = Command::new(bench)
        .args(["--only", "W2", "--executor", "pool", "--reps", "3", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    if let Ok(line) = serde_json::from_slice::<Value>(&out.stdout) {
        println!(
            "W2 on the local pool executor (for comparison): {:.2} s, {:.0} µs per node",
            line["median_s"].as_f64().unwrap_or(0.0),
            line["per_node_us"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
