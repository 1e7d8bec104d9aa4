//! Running the `flows` test binary against a database in a temporary directory.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub(crate) const FLOWS: &str = env!("CARGO_BIN_EXE_flows");
pub(crate) const DUPES: &str = env!("CARGO_BIN_EXE_dupes");

/// Every executor, for the tests that hold on each.
pub(crate) const EXECUTORS: [&str; 3] = ["inline", "process", "pool"];

/// The lease of a run in these tests: short, so that a killed orchestrator's run reads as
/// `interrupted` soon.
pub(crate) const LEASE_TTL_MS: u64 = 1500;

/// A temporary directory with a database and a folder for marker files.
pub(crate) struct Env {
    _dir: tempfile::TempDir,
    /// What `SALT_DB` says: a SQLite file in the directory, or a `postgres://` URL.
    pub(crate) db: PathBuf,
    pub(crate) work: PathBuf,
}

impl Env {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("salt.db");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Self { _dir: dir, db, work }
    }

    /// An environment whose database is a fresh PostgreSQL database; panics, saying why, where
    /// there is no PostgreSQL server.
    pub(crate) fn postgres(hint: &str) -> Self {
        Self { db: PathBuf::from(salt_testkit::postgres::database(hint)), ..Self::new() }
    }

    /// The marker folder, as the `dir` input of the flows.
    pub(crate) fn dir(&self) -> String {
        self.work.display().to_string()
    }

    /// A `flows` command on this database.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(FLOWS);
        cmd.args(args)
            .env("SALT_DB", &self.db)
            .env("FLOWS_DIR", &self.work)
            .env("SALT_LEASE_TTL_MS", LEASE_TTL_MS.to_string())
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `args` in the background, its output captured.
    pub(crate) fn spawn(&self, args: &[&str]) -> std::process::Child {
        let child = self.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start flows");
        watchdog(child.id());
        child
    }

    /// Waits until the task that marks `name` has started (its marker exists).
    pub(crate) fn wait_for_marker(&self, name: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.count(name) == 0 {
            assert!(std::time::Instant::now() < deadline, "`{name}` never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.spawn(args).wait_with_output().expect("run flows")
    }

    /// Runs `args` with `--json`, expects success, and parses stdout.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?} failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out)))
    }

    /// How many times the task that marks `name` ran.
    pub(crate) fn count(&self, name: &str) -> usize {
        std::fs::read_to_string(self.work.join(name)).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// The stored run.
    pub(crate) fn show(&self, run: i64) -> Value {
        self.json(&["show", &run.to_string()])
    }

    /// Waits until `check` holds for the stored run (`show RUN --json`), at most a minute.
    pub(crate) fn wait_until(&self, run: i64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = self.run(&["show", &run.to_string(), "--json"]);
            if out.status.success() {
                let show: Value = serde_json::from_slice(&out.stdout).expect("show prints JSON");
                if check(&show) {
                    return show;
                }
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {}", text(&out));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Waits until the run reads as `state` (a killed orchestrator's run reads as `interrupted`
    /// once its lease expires).
    pub(crate) fn wait_for_state(&self, run: i64, state: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LEASE_TTL_MS * 10);
        loop {
            let show = self.show(run);
            if show["run"]["state"] == state {
                return show;
            }
            assert!(std::time::Instant::now() < deadline, "run {run} never became {state}: {show}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Kills a test's process if it is still running after two minutes: a hang fails its test
/// instead of stalling the whole suite.
fn watchdog(pid: u32) {
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(120));
        if alive(pid as i32) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
}

/// stdout and stderr, for assertion messages.
pub(crate) use salt_testkit::text;

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The input object of the `pipeline` flow.
pub(crate) fn pipeline_input(dir: &str, slow_ms: u64, fail: bool) -> String {
    serde_json::json!({"dir": dir, "slow_ms": slow_ms, "fail": fail}).to_string()
}

/// Whether a process exists (and is not a zombie).
pub(crate) fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The edges of a graph JSON, sorted: (from, to, kind).
pub(crate) fn edge_set(graph: &Value) -> Vec<(u64, u64, String)> {
    let mut edges: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_string()))
        .collect();
    edges.sort();
    edges
}

/// Sends `sig` (`-STOP`, `-CONT`, …) to process `pid`.
pub(crate) fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// Freezes `stale`, the orchestrator of run 1 (heartbeat thread included), until its lease
/// expires and a `recover` has taken the run over, then lets it go on: it finds its lease lost
/// and exits 1. Returns its output and the running `recover`.
pub(crate) fn take_over_from(env: &Env, stale: std::process::Child) -> (Output, std::process::Child) {
    signal(stale.id(), "-STOP");
    env.wait_for_state(1, "interrupted");
    let recover = env.spawn(&["recover", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.show(1)["run"]["state"] != "running" {
        assert!(std::time::Instant::now() < deadline, "recover never took the run");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal(stale.id(), "-CONT");
    let out = stale.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    (out, recover)
}
