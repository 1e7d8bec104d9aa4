//! Running the `flows` test binary against a database in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const FLOWS: &str = env!("CARGO_BIN_EXE_flows");
pub const DUPES: &str = env!("CARGO_BIN_EXE_dupes");

/// A temporary directory with a database and a folder for marker files.
pub struct Env {
    _dir: tempfile::TempDir,
    pub db: PathBuf,
    pub work: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("salt.db");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        Self { _dir: dir, db, work }
    }

    /// The marker folder, as the `dir` input of the flows.
    pub fn dir(&self) -> String {
        self.work.display().to_string()
    }

    /// A `flows` command on this database.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(FLOWS);
        cmd.args(args).env("SALT_DB", &self.db).env("FLOWS_DIR", &self.work).stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run flows")
    }

    /// Runs `args` with `--json`, expects success, and parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?} failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", text(&out)))
    }

    /// How many times the task that marks `name` ran.
    pub fn count(&self, name: &str) -> usize {
        std::fs::read_to_string(self.work.join(name)).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// The stored run.
    pub fn show(&self, run: i64) -> Value {
        self.json(&["show", &run.to_string()])
    }

    /// The state of every node of a run, by task name (the last node of each task wins).
    pub fn node_states(&self, run: i64) -> Vec<(String, String)> {
        let show = self.show(run);
        show["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["task"].as_str().unwrap().to_string(), n["state"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The input object of the `pipeline` flow.
pub fn pipeline_input(dir: &str, slow_ms: u64, fail: bool) -> String {
    serde_json::json!({"dir": dir, "slow_ms": slow_ms, "fail": fail}).to_string()
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
