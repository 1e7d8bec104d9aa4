//! Attempts run as Slurm jobs, for real: a one-node Slurm cluster on this machine
//! (`.ci/slurm-up`), a `salt server` and a `salt worker --slurm` as processes, the `etl` example
//! and the `relay` binary registered. The tests are ignored unless asked for with `--ignored`
//! (`.ci/run` does); where no cluster can be started then (not root, no `slurm-wlm`), they fail
//! saying why.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{SALT, example, free_port, text, wait_healthy};

/// Starts the cluster; panics, saying why, when it cannot be.
fn cluster() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/slurm-up");
    let out = Command::new(&script).stdin(Stdio::null()).output();
    let why = match out {
        Ok(out) if out.status.success() => return,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("cannot run {}: {e}", script.display()),
    };
    panic!(
        "these tests need a one-node Slurm cluster, and .ci/slurm-up could not start one here: {why}; \
         run them as root with Debian's `slurm-wlm` and `munge` installed"
    );
}

/// A `salt server` and its workers, killed when dropped.
struct Deployment {
    dir: tempfile::TempDir,
    url: String,
    children: Vec<Child>,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let server = Command::new(SALT)
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(dir.path().join("server.db"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salt server");
        let d = Self { dir, url, children: vec![server] };
        assert!(wait_healthy(&d.url), "the server never answered");
        d
    }

    fn salt(&self, args: &[&str]) -> Output {
        Command::new(SALT).args(args).args(["--server", &self.url]).stdin(Stdio::null()).output().unwrap()
    }

    fn register(&self, binary: &Path) {
        let out = self.salt(&["register", binary.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
    }

    /// Starts a worker serving `queue`, with `extra` arguments (`--slurm`, …); its stderr goes to
    /// `worker-NAME.log`.
    fn worker(&mut self, name: &str, queue: &str, extra: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("worker-{name}.log"))).unwrap();
        let child = Command::new(SALT)
            .args(["worker", "--server", &self.url, "--name", name, "--slots", "6", "--queue", queue])
            .arg("--cache")
            .arg(self.dir.path().join(format!("cache-{name}")))
            .args(extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start salt worker");
        self.children.push(child);
    }

    fn get(&self, path: &str) -> Value {
        let mut r = ureq::get(&format!("{}{path}", self.url)).call().unwrap();
        r.body_mut().read_json().unwrap()
    }

    fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/api/v1/workers")["workers"].as_array().map_or(0, Vec::len) < n {
            assert!(Instant::now() < deadline, "workers never connected");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start(&self, workflow: &str, input: Value) -> u64 {
        let out = self.salt(&["run", workflow, "--input", &input.to_string(), "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["run"].as_u64().unwrap()
    }

    fn wait_run(&self, run: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.get(&format!("/api/v1/runs/{run}"));
            if matches!(v["run"]["state"].as_str(), Some("succeeded" | "failed" | "cancelled" | "terminated")) {
                return v;
            }
            assert!(Instant::now() < deadline, "run {run} never ended: {v}\n{}", self.worker_logs());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every log line of a run.
    fn log_lines(&self, run: u64) -> Vec<String> {
        let logs = self.get(&format!("/api/v1/runs/{run}/logs"));
        let mut lines = Vec::new();
        collect_lines(&logs, &mut lines);
        lines
    }

    /// The Slurm jobs a run's attempts were submitted as, from their logs.
    fn jobs(&self, run: u64) -> Vec<u64> {
        self.log_lines(run)
            .iter()
            .filter_map(|l| l.strip_prefix("slurm: job ")?.split_once(" submitted (sbatch")?.0.parse().ok())
            .collect()
    }

    /// The job of a run's first Slurm attempt, once its body runs.
    fn running_job(&self, run: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(job) = self.jobs(run).first().copied()
                && job_state(job) == "RUNNING"
                && self.log_lines(run).iter().any(|l| l.starts_with("napping"))
            {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "the nap never started: {:?}\n{}",
                self.log_lines(run),
                self.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn worker_logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("worker-") {
                all += &format!("--- {name}\n{}\n", std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `line` strings anywhere in a logs document.
fn collect_lines(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("line", Value::String(s)) => out.push(s.clone()),
                    _ => collect_lines(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_lines(i, out)),
        _ => {}
    }
}

/// What `scontrol show job -o` says of a job.
fn scontrol(id: u64) -> String {
    let out = Command::new("scontrol").args(["show", "job", "-o", &id.to_string()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A job's `JobState`.
fn job_state(id: u64) -> String {
    scontrol(id).split_whitespace().find_map(|w| w.strip_prefix("JobState=")).unwrap_or("unknown").to_string()
}

/// Checks that Slurm ran every job to its end, but those of the workflow's attempts that salt
/// stopped while the body waited for its children (parked, to run again when they are done).
fn all_completed(jobs: &[u64], workflow: &str) {
    let root = format!("JobName=salt-{workflow} ");
    let last_root = jobs.iter().rev().find(|j| scontrol(**j).contains(&root));
    for job in jobs {
        let state = job_state(*job);
        let parked = state == "CANCELLED" && scontrol(*job).contains(&root) && Some(job) != last_root;
        assert!(state == "COMPLETED" || parked, "job {job}: {}", scontrol(*job));
    }
}

/// The nodes of a run shown by the API, as (task, state, error kind, error message).
fn nodes(shown: &Value) -> Vec<(String, String, String, String)> {
    shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&n["task"]), s(&n["state"]), s(&n["error"]["kind"]), s(&n["error"]["message"]))
        })
        .collect()
}

#[test]
#[ignore = "needs a Slurm cluster, .ci/slurm-up as root (run with --include-ignored; .ci/run does)"]
fn the_etl_example_and_a_fan_out_run_as_slurm_jobs() {
    cluster();
    let mut d = Deployment::new();
    d.register(&example("salt-examples", "etl"));
    d.register(&example("salt-server", "relay"));
    d.worker("hpc", "default", &["--slurm", "--slurm-address", "127.0.0.1", "--slurm-listen", "127.0.0.1:0"]);
    d.wait_workers(1);

    let out_dir = d.dir.path().join("reports");
    let etl = d.start("etl", json!({"data_dir": null, "out_dir": out_dir.display().to_string()}));
    let fan = d.start("fan", json!({"n": 5, "gpu": false}));

    let shown = d.wait_run(fan, Duration::from_secs(180));
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}\n{}", d.worker_logs());
    assert_eq!(shown["nodes"][0]["output"], json!(30), "0 + 1 + 4 + 9 + 16");
    // The workflow and its five squares: each attempt a job of its own, which Slurm ran.
    let jobs = d.jobs(fan);
    let mut distinct = jobs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(jobs.len() >= 6 && distinct.len() == jobs.len(), "{jobs:?}");
    all_completed(&jobs, "fan");

    let shown = d.wait_run(etl, Duration::from_secs(300));
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}\n{}", d.worker_logs());
    let nodes = nodes(&shown);
    let report = std::fs::read_dir(&out_dir).unwrap().flatten().next().expect("a report").path();
    let report = std::fs::read_to_string(report).unwrap();
    assert!(report.contains("rejected"), "{report}");
    // `fetch_rates` failed its first attempt on purpose: two attempts, two jobs.
    let attempts: u64 = shown["nodes"].as_array().unwrap().iter().map(|n| n["attempts"].as_u64().unwrap()).sum();
    let jobs = d.jobs(etl);
    assert_eq!(jobs.len() as u64, attempts, "one job per attempt: {nodes:?}");
    all_completed(&jobs, "etl");
    // The extracts' 30 s timeout asked Slurm for a one-minute limit.
    let lines = d.log_lines(etl);
    let extract = lines.iter().find(|l| l.ends_with(" submitted (sbatch --time=1)")).expect("an extract's job");
    let job: u64 = extract["slurm: job ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(scontrol(job).contains(" TimeLimit=00:01:00 "), "{}", scontrol(job));
    // A step's own log lines came back from its job.
    assert!(lines.iter().any(|l| l.starts_with("slurm: job ") && l.ends_with(" started")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("rejected")), "{lines:?}");
}

#[test]
#[ignore = "needs a Slurm cluster, .ci/slurm-up as root (run with --include-ignored; .ci/run does)"]
fn a_job_over_its_memory_fails_with_that_reason() {
    cluster();
    let mut d = Deployment::new();
    d.register(&example("salt-server", "relay"));
    d.worker("local", "default", &[]);
    d.worker(
        "hpc",
        "batch",
        &["--slurm", "--slurm-address", "127.0.0.1", "--slurm-listen", "127.0.0.1:0", "--sbatch-arg=--mem=100"],
    );
    d.wait_workers(2);
    let small = d.start("hog_once", json!({"mb": 1, "secs": 0}));
    let big = d.start("hog_once", json!({"mb": 400, "secs": 20}));
    let shown = d.wait_run(small, Duration::from_secs(60));
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}");
    assert_eq!(shown["nodes"][0]["output"], json!(1 << 20));
    let shown = d.wait_run(big, Duration::from_secs(60));
    assert_eq!(shown["run"]["state"], "failed", "{shown}");
    let job = d.jobs(big)[0];
    let hog = nodes(&shown).into_iter().find(|n| n.0 == "hog").unwrap();
    assert_eq!((hog.1.as_str(), hog.2.as_str()), ("failed", "fatal"), "{hog:?}");
    assert!(
        hog.3.starts_with(&format!("Slurm job {job} was killed for using more memory than its --mem (")),
        "{hog:?}"
    );
    let lines = d.log_lines(big);
    assert!(lines.iter().any(|l| l.contains("exceeded memory limit")), "slurmstepd's notice is in the log: {lines:?}");
}

#[test]
#[ignore = "needs a Slurm cluster, .ci/slurm-up as root (run with --include-ignored; .ci/run does)"]
fn a_job_over_its_time_limit_fails_one_cancelled_outside_is_reported_and_a_cancelled_run_cancels_its_job() {
    cluster();
    let mut d = Deployment::new();
    d.register(&example("salt-server", "relay"));
    // Workflows run on an ordinary worker; the `batch` queue is bound to Slurm, with a time limit
    // of one minute for every job.
    d.worker("local", "default", &[]);
    d.worker(
        "hpc",
        "batch",
        &["--slurm", "--slurm-address", "127.0.0.1", "--slurm-listen", "127.0.0.1:0", "--sbatch-arg=--time=1"],
    );
    d.wait_workers(2);
    let timed = d.start("nap_once", json!({"secs": 600}));
    let cancelled = d.start("nap_once", json!({"secs": 600}));
    let stopped = d.start("nap_once", json!({"secs": 600}));

    // The run cancelled in salt: its job is cancelled in Slurm.
    let job = d.running_job(stopped);
    let out = d.salt(&["cancel", &stopped.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = d.wait_run(stopped, Duration::from_secs(30));
    assert_eq!(shown["run"]["state"], "cancelled", "{shown}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while job_state(job) != "CANCELLED" {
        assert!(Instant::now() < deadline, "job {job} goes on: {}", scontrol(job));
        std::thread::sleep(Duration::from_millis(200));
    }

    // A job cancelled from outside salt.
    let job = d.running_job(cancelled);
    let out = Command::new("scancel").arg(job.to_string()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = d.wait_run(cancelled, Duration::from_secs(60));
    assert_eq!(shown["run"]["state"], "failed", "{shown}");
    let nap = nodes(&shown).into_iter().find(|n| n.0 == "nap").unwrap();
    assert_eq!((nap.1.as_str(), nap.2.as_str()), ("failed", "task"), "{nap:?}");
    assert!(nap.3.starts_with(&format!("Slurm job {job} was cancelled outside salt")), "{nap:?}");

    // The other one runs into its limit: Slurm kills it, and says why.
    let shown = d.wait_run(timed, Duration::from_secs(180));
    assert_eq!(shown["run"]["state"], "failed", "{shown}");
    let job = d.jobs(timed)[0];
    assert_eq!(job_state(job), "TIMEOUT");
    let nap = nodes(&shown).into_iter().find(|n| n.0 == "nap").unwrap();
    assert_eq!((nap.1.as_str(), nap.2.as_str()), ("failed", "timeout"), "{nap:?}");
    assert!(nap.3.starts_with(&format!("Slurm job {job} was killed at its time limit (00:01:00;")), "{nap:?}");
    let lines = d.log_lines(timed);
    assert!(lines.iter().any(|l| l.contains("DUE TO TIME LIMIT")), "slurmstepd's notice is in the log: {lines:?}");
}
