//! Runs driven by a run host whose attempts run on real `salt worker` processes, connected over
//! a real WebSocket on loopback, each running a cached copy of the workflow binary.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use salt_runtime::model::{RunId, RunState};
use salt_runtime::ops;
use salt_runtime::remote::Dispatcher;
use salt_server::engine::{Engine, WorkflowRef};
use salt_server::host::{Binaries, RunHost};

use common::{SALT, example};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A registry of one binary, in a directory.
struct OneBinary {
    dir: PathBuf,
    sha: String,
    manifest: Value,
    runs: Mutex<HashMap<RunId, String>>,
}

impl Binaries for OneBinary {
    fn manifest(&self, binary: &str) -> salt_runtime::Result<Value> {
        assert_eq!(binary, self.sha);
        Ok(self.manifest.clone())
    }
    fn binary_of(&self, run: RunId) -> salt_runtime::Result<Option<String>> {
        Ok(self.runs.lock().unwrap().get(&run).cloned())
    }
    fn record_run(&self, run: RunId, workflow: &WorkflowRef) -> salt_runtime::Result<()> {
        self.runs.lock().unwrap().insert(run, workflow.binary.clone());
        Ok(())
    }
}

async fn serve_binary(State(b): State<Arc<OneBinary>>, UrlPath(sha): UrlPath<String>) -> Result<Vec<u8>, StatusCode> {
    if sha != b.sha {
        return Err(StatusCode::NOT_FOUND);
    }
    std::fs::read(b.dir.join(&sha)).map_err(|_| StatusCode::NOT_FOUND)
}

struct Server {
    _dir: tempfile::TempDir,
    db: String,
    work: PathBuf,
    url: String,
    host: Arc<RunHost>,
    binary: Arc<OneBinary>,
    workers: Vec<(String, Child)>,
}

impl Server {
    /// A run host on a fresh database with the relay binary registered, listening on loopback.
    async fn start(corrupt: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("salt.db").display().to_string();
        let work = dir.path().join("work");
        let bins = dir.path().join("binaries");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&bins).unwrap();
        let mut bytes = std::fs::read(example("salt-server", "relay")).unwrap();
        let sha = hex(&Sha256::digest(&bytes));
        if corrupt {
            // What the server serves no longer matches the hash it names the binary by.
            bytes.extend_from_slice(b"tampered");
        }
        std::fs::write(bins.join(&sha), &bytes).unwrap();
        let out = Command::new(example("salt-server", "relay")).args(["manifest", "--json"]).output().unwrap();
        assert!(out.status.success());
        let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
        let binary = Arc::new(OneBinary { dir: bins, sha, manifest, runs: Mutex::default() });
        let dispatcher = Dispatcher::new();
        let host = Arc::new(RunHost::new(db.clone(), dispatcher.clone(), binary.clone()));
        let app: Router = Router::new()
            .route("/api/v1/binaries/{sha}", get(serve_binary))
            .with_state(binary.clone())
            .merge(salt_server::host::dispatcher_routes(dispatcher));
        use axum::serve::ListenerExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { _dir: dir, db, work, url, host, binary, workers: Vec::new() }
    }

    /// Starts a `salt worker` process named `name`.
    fn worker(&mut self, name: &str, queues: &[&str], slots: usize) {
        let mut cmd = Command::new(SALT);
        cmd.args(["worker", "--server", &self.url, "--name", name, "--slots", &slots.to_string()])
            .arg("--cache")
            .arg(self._dir.path().join(format!("cache-{name}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for q in queues {
            cmd.args(["--queue", q]);
        }
        let child = cmd.spawn().expect("start salt worker");
        self.workers.push((name.to_string(), child));
    }

    /// Waits until `n` workers are connected.
    async fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.host.dispatcher().workers().len() < n {
            assert!(Instant::now() < deadline, "workers never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_run(&self, workflow: &str, input: Value) -> RunId {
        let w = WorkflowRef { workflow: workflow.into(), version: 1, binary: self.binary.sha.clone() };
        self.host.start(&w, input).expect("run starts")
    }

    /// Waits for the run to end and returns its snapshot's state and output.
    async fn wait(&self, run: RunId) -> (RunState, Option<Value>, Option<String>) {
        let store = ops::open_read_only(&self.db).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let snap = ops::show(&*store, run).unwrap();
            if matches!(snap.run.state, RunState::Succeeded | RunState::Failed | RunState::Cancelled) {
                let root = &snap.nodes[0];
                return (snap.run.state, root.output.clone(), root.error.as_ref().map(|e| e.to_string()));
            }
            assert!(Instant::now() < deadline, "run {run} never ended: {:?}", snap.run.state);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn count(&self, marker: &str) -> usize {
        std::fs::read_to_string(self.work.join(marker)).map(|s| s.lines().count()).unwrap_or(0)
    }

    async fn wait_marker(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(marker) == 0 {
            assert!(Instant::now() < deadline, "`{marker}` never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for (_, w) in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_two_workers_succeeds_and_its_logs_come_back() {
    let mut s = Server::start(false).await;
    s.worker("w1", &["default"], 2);
    s.worker("w2", &["default"], 2);
    s.wait_workers(2).await;
    let run = s.start_run("chain", json!({"dir": s.work.display().to_string(), "slow_ms": 0}));
    let (state, output, error) = s.wait(run).await;
    assert_eq!(state, RunState::Succeeded, "{error:?}");
    assert_eq!(output, Some(json!(4)));
    for m in ["a", "b", "c"] {
        assert_eq!(s.count(m), 1, "step {m}");
    }
    // The body's stdout reached the attempt's log through the worker.
    let store = ops::open_read_only(&s.db).unwrap();
    let logs = ops::logs(&*store, run, None).unwrap();
    let text = serde_json::to_string(&logs.logs).unwrap();
    assert!(text.contains("step b got 2"), "{text}");
    // The workflow and its 3 steps were each given to a worker (the workflow again if it was
    // parked while waiting), and all ended.
    let stats = s.host.dispatcher().stats();
    assert!(stats.claimed >= 4 && stats.finished == stats.claimed, "{stats:?}");
    assert_eq!(stats.claim_buckets.last().map(|b| b.1), Some(stats.claimed), "{stats:?}");
    assert!(stats.claim_seconds > 0.0 && stats.claim_seconds < 30.0, "{stats:?}");
    let fan = s.start_run("fan", json!({"n": 50, "gpu": false}));
    let (state, output, _) = s.wait(fan).await;
    assert_eq!((state, output), (RunState::Succeeded, Some(json!((0..50u64).map(|x| x * x).sum::<u64>()))));
    let stats = s.host.dispatcher().stats();
    assert!(stats.claimed >= 55 && stats.finished == stats.claimed, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_only_on_a_worker_of_its_queue() {
    let mut s = Server::start(false).await;
    s.worker("cpu", &["default"], 4);
    s.wait_workers(1).await;
    let run = s.start_run("fan", json!({"n": 3, "gpu": true}));
    // Nobody serves `gpu`: its nodes wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.host.dispatcher().waiting().get("gpu").copied().unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "gpu nodes never queued: {:?}", s.host.dispatcher().waiting());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.worker("gpu", &["gpu"], 1);
    let (state, output, error) = s.wait(run).await;
    assert_eq!((state, output), (RunState::Succeeded, Some(json!(5))), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_step_goes_to_the_queue_its_call_names() {
    let mut s = Server::start(false).await;
    s.worker("cpu", &["default"], 4);
    s.wait_workers(1).await;
    let run = s.start_run("queued_command", json!({"dir": s.work.display().to_string(), "queue": "gpu"}));
    // The step's task (`command`) is on the default queue, but its call chose `gpu`: the
    // default worker runs the workflow and does not take the step.
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.host.dispatcher().waiting().get("gpu").copied().unwrap_or(0) < 1 {
        assert!(Instant::now() < deadline, "the step never queued on gpu: {:?}", s.host.dispatcher().waiting());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.count("command"), 0, "a worker of the default queue ran the step");
    assert_eq!(s.host.dispatcher().waiting().get("gpu"), Some(&1));
    s.worker("gpu", &["gpu"], 1);
    let (state, output, error) = s.wait(run).await;
    assert_eq!((state, output), (RunState::Succeeded, Some(json!(0))), "{error:?}");
    assert_eq!(s.count("command"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_its_attempt_and_another_worker_runs_it() {
    let mut s = Server::start(false).await;
    s.worker("w1", &["default"], 2);
    s.wait_workers(1).await;
    let run = s.start_run("chain", json!({"dir": s.work.display().to_string(), "slow_ms": 3000}));
    s.wait_marker("b").await;
    // The second worker comes up only now, so the slow step is on the first one.
    s.worker("w2", &["default"], 2);
    s.wait_workers(2).await;
    let (_, w1) = &mut s.workers[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(w1.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = w1.wait();
    let (state, output, error) = s.wait(run).await;
    assert_eq!(state, RunState::Succeeded, "{error:?}");
    assert_eq!(output, Some(json!(4)));
    // What had succeeded did not run again; the lost step ran again, once.
    assert_eq!((s.count("a"), s.count("b"), s.count("c")), (1, 2, 1));
    let store = ops::open_read_only(&s.db).unwrap();
    let snap = ops::show(&*store, run).unwrap();
    let lost: Vec<_> = snap
        .attempts
        .iter()
        .filter(|a| a.error.as_ref().is_some_and(|e| e.kind() == salt_runtime::ErrorKind::Lost))
        .collect();
    assert!(!lost.is_empty(), "no attempt recorded as lost: {:?}", snap.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_that_does_not_match_its_hash_is_refused() {
    let mut s = Server::start(true).await;
    s.worker("w1", &["default"], 1);
    s.wait_workers(1).await;
    let run = s.start_run("chain", json!({"dir": s.work.display().to_string(), "slow_ms": 0}));
    let (state, _, error) = s.wait(run).await;
    assert_eq!(state, RunState::Failed);
    let error = error.unwrap_or_default();
    assert!(error.contains("does not match its hash"), "{error}");
    assert_eq!(s.count("a"), 0, "nothing of the tampered binary ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_worker_finishes_its_attempt_takes_nothing_new_and_exits() {
    let mut s = Server::start(false).await;
    s.worker("w1", &["default"], 2);
    s.wait_workers(1).await;
    let run = s.start_run("chain", json!({"dir": s.work.display().to_string(), "slow_ms": 1500}));
    s.wait_marker("b").await;
    let (_, w1) = &mut s.workers[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(w1.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    // It exits once its step is done, without taking the next one (the workflow's body, which
    // only waits for its children, goes elsewhere at once rather than holding the worker).
    let deadline = Instant::now() + Duration::from_secs(4);
    let status = loop {
        if let Some(status) = w1.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the drained worker never exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(s.count("c"), 0, "a draining worker takes nothing new");
    s.worker("w2", &["default"], 2);
    let (state, output, error) = s.wait(run).await;
    assert_eq!((state, output), (RunState::Succeeded, Some(json!(4))), "{error:?}");
    assert_eq!((s.count("a"), s.count("b"), s.count("c")), (1, 1, 1), "the drained step was not run again");
}
