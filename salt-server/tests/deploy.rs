//! The deployed shape, all real processes on loopback: a `salt server`, `salt worker`s and the
//! `salt` client commands, with the `relay` example registered. Workers and the server are
//! killed with SIGKILL mid-run; what had finished never runs again.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{SALT, example, free_port, kill9, text, wait_healthy};

struct Deployment {
    dir: tempfile::TempDir,
    url: String,
    port: u16,
    server: Option<Child>,
    workers: Vec<Child>,
    /// The token the client commands and requests send, if the server has tokens.
    token: Option<String>,
}

impl Deployment {
    fn new() -> Self {
        Self::with_tokens(&[]).0
    }

    /// A deployment whose server has the tokens `(name, role)`, created on its database before
    /// it starts; the client commands send the first one. The tokens, by name.
    fn with_tokens(tokens: &[(&str, &str)]) -> (Self, HashMap<String, String>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let mut made = HashMap::new();
        for (name, role) in tokens {
            let out = Command::new(SALT)
                .args(["token", "create", name, "--role", role, "--db"])
                .arg(dir.path().join("server.db"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out));
            made.insert(name.to_string(), String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        let token = tokens.first().map(|(name, _)| made[*name].clone());
        let port = free_port();
        let mut d =
            Self { url: format!("http://127.0.0.1:{port}"), port, dir, server: None, workers: Vec::new(), token };
        d.start_server();
        (d, made)
    }

    fn work(&self) -> String {
        self.dir.path().join("work").display().to_string()
    }

    fn start_server(&mut self) {
        let db = self.dir.path().join("server.db");
        let data = self.dir.path().join("data");
        let child = Command::new(SALT)
            .args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--db")
            .arg(&db)
            .arg("--data")
            .arg(&data)
            .env("SALT_LEASE_TTL_MS", "1500")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salt server");
        self.server = Some(child);
        assert!(wait_healthy(&self.url), "the server never answered");
    }

    fn worker(&mut self, name: &str) {
        self.worker_with(name, &["--slots", "2"]);
    }

    /// Starts a worker named `name` with `args`.
    fn worker_with(&mut self, name: &str, args: &[&str]) {
        let child = Command::new(SALT)
            .args(["worker", "--server", &self.url, "--name", name])
            .args(args)
            .arg("--cache")
            .arg(self.dir.path().join(format!("cache-{name}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salt worker");
        self.workers.push(child);
    }

    fn salt(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(SALT);
        cmd.args(args).args(["--server", &self.url]).env_remove("SALT_TOKEN").stdin(Stdio::null());
        if let Some(token) = &self.token {
            cmd.args(["--token", token]);
        }
        cmd.output().unwrap()
    }

    fn request(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut request = ureq::get(&format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.call()
    }

    fn get(&self, path: &str) -> Value {
        let mut r = self.request(path).unwrap();
        r.body_mut().read_json().unwrap()
    }

    fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get("/api/v1/workers")["workers"].as_array().map_or(0, Vec::len) < n {
            assert!(Instant::now() < deadline, "workers never connected");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, marker: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("work").join(marker)).map(|s| s.lines().count()).unwrap_or(0)
    }

    fn wait_marker(&self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count(marker) == 0 {
            assert!(Instant::now() < deadline, "`{marker}` never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_run(&self, run: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(mut r) = self.request(&format!("/api/v1/runs/{run}")) {
                let v: Value = r.body_mut().read_json().unwrap();
                if matches!(v["run"]["state"].as_str(), Some("succeeded" | "failed" | "cancelled" | "terminated")) {
                    return v;
                }
            }
            assert!(Instant::now() < deadline, "run {run} never ended");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The index of the worker that runs something now.
    fn busy_worker(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let workers = self.get("/api/v1/workers");
            let busy = workers["workers"].as_array().unwrap().iter().find(|w| w["busy"].as_u64() > Some(0)).cloned();
            if let Some(w) = busy {
                let name = w["name"].as_str().unwrap();
                return name.trim_start_matches('w').parse::<usize>().unwrap();
            }
            assert!(Instant::now() < deadline, "no worker is busy: {workers}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain(self.server.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn register_run_and_survive_a_killed_worker_and_a_killed_server() {
    let mut d = Deployment::new();
    let out = d.salt(&["register", example("salt-server", "relay").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = d.salt(&["workflows", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed["workflows"].as_array().unwrap().iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["chain", "fan", "gate", "hog_once", "nap_once", "queued_command"], "{listed}");
    d.worker("w0");
    d.worker("w1");
    d.wait_workers(2);

    // A run through the client, to the end.
    let input = json!({"dir": d.work(), "slow_ms": 0}).to_string();
    let out = d.salt(&["run", "chain", "--input", &input, "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4", "{}", text(&out));
    assert_eq!((d.count("a"), d.count("b"), d.count("c")), (1, 1, 1));

    // A worker killed in the middle of a step: the other one runs it again.
    let input = json!({"dir": d.work(), "slow_ms": 2000}).to_string();
    let out = d.salt(&["run", "chain", "--input", &input, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = serde_json::from_slice::<Value>(&out.stdout).unwrap()["run"].as_u64().unwrap();
    d.wait_marker("b");
    while d.count("b") < 2 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = d.busy_worker();
    kill9(&mut d.workers[busy]);
    let shown = d.wait_run(run);
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}");
    assert_eq!((d.count("a"), d.count("b"), d.count("c")), (2, 3, 2), "only the lost step ran again");
    d.worker("w2");

    // The server killed in the middle of a step, then started again: the run completes and
    // nothing that had finished runs again.
    let input = json!({"dir": d.work(), "slow_ms": 1500}).to_string();
    let out = d.salt(&["run", "chain", "--input", &input, "--json"]);
    let run = serde_json::from_slice::<Value>(&out.stdout).unwrap()["run"].as_u64().unwrap();
    while d.count("b") < 4 {
        std::thread::sleep(Duration::from_millis(20));
    }
    kill9(d.server.as_mut().unwrap());
    d.start_server();
    let shown = d.wait_run(run);
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}");
    assert_eq!(d.count("a"), 3, "the first step had finished: it did not run again");
    assert_eq!(d.count("c"), 3);
    assert_eq!(d.count("b"), 5, "the step in flight when the server died ran again, once");
}

#[test]
fn a_schedule_every_second_fires_and_a_paused_one_does_not() {
    let d = Deployment::new();
    let config = d.dir.path().join("salt.toml");
    std::fs::write(
        &config,
        format!(
            "[workflows.fan]\nschedule = \"* * * * * *\"\ninput = {{ n = 3, gpu = false }}\n\n\
             [workflows.chain]\nschedule = \"* * * * * *\"\npaused = true\ninput = {{ dir = \"{}\", slow_ms = 0 }}\n",
            d.work()
        ),
    )
    .unwrap();
    let out =
        d.salt(&["register", example("salt-server", "relay").to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let mut d = d;
    d.worker("w0");
    d.wait_workers(1);
    // Every second: two runs within a few seconds, however loaded the machine is.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let runs = d.get("/api/v1/runs?workflow=fan");
        if runs["runs"].as_array().unwrap().len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "a schedule every second did not fire twice in 15 s: {runs}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let chain = d.get("/api/v1/runs?workflow=chain");
    assert_eq!(chain["runs"].as_array().unwrap().len(), 0, "the paused schedule fired: {chain}");
    assert_eq!(d.count("a"), 0);
    let out = d.salt(&["workflows"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    let chain = listed.lines().find(|l| l.starts_with("chain")).unwrap_or_default();
    assert!(chain.contains("* * * * * * (UTC)") && chain.contains(" yes "), "{listed}");
    let out = d.salt(&["schedule", "ls"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("fan") && listed.contains("UTC"), "{listed}");

    // A bad salt.toml is refused naming the key, and nothing changes.
    std::fs::write(&config, "[workflows.fan]\ntimezone = \"Mars/Olympus\"\n").unwrap();
    let out =
        d.salt(&["register", example("salt-server", "relay").to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workflows.fan.timezone"), "{}", text(&out));
}

#[test]
fn a_dag_file_posted_to_the_server_runs_on_its_workers() {
    let mut d = Deployment::new();
    d.worker("w0");
    d.wait_workers(1);
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../salt-dag/examples/generator.json"))
            .unwrap(),
    )
    .unwrap();
    let mut r = ureq::post(&format!("{}/api/v1/dags", d.url)).send_json(json!({"spec": spec})).unwrap();
    assert_eq!(r.status(), 201);
    let started: Value = r.body_mut().read_json().unwrap();
    let run = started["run"].as_u64().unwrap();
    let shown = d.wait_run(run);
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}");
    let steps: Vec<&str> = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["task"] == "command")
        .filter_map(|n| n["label"].as_str())
        .collect();
    assert_eq!(steps, ["discover", "load_1", "load_2", "report"], "{shown}");

    // A file that does not check is refused, naming the problem, and starts nothing.
    let bad = json!({"spec": {"tasks": {"a": {"job": {"command": ["true"]}, "parents": ["nope"]}}}});
    let err = ureq::post(&format!("{}/api/v1/dags", d.url)).send_json(bad).unwrap_err();
    assert!(matches!(err, ureq::Error::StatusCode(400)), "{err}");
    let runs = d.get("/api/v1/runs");
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
}

/// What a webhook endpoint was told: each request's `X-Salt-Event` header and JSON body.
type Told = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// A webhook endpoint on loopback: answers 204 to every request and keeps what it was told.
fn hook_endpoint() -> (String, Told) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut event) = (0, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if let Some(v) = lower.strip_prefix("x-salt-event:") {
                    event = v.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            keep.lock().unwrap().push((event, serde_json::from_slice(&body).unwrap_or(Value::Null)));
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, seen)
}

#[test]
fn a_signal_wait_is_told_to_the_webhook_once_and_logs_follow_the_run_to_its_end() {
    let mut d = Deployment::new();
    let (hook, told) = hook_endpoint();
    let config = d.dir.path().join("salt.toml");
    std::fs::write(
        &config,
        format!("[workflows.gate]\nwebhooks = [{{ url = \"{hook}\", on = [\"waiting\", \"succeeded\"] }}]\n"),
    )
    .unwrap();
    let out =
        d.salt(&["register", example("salt-server", "relay").to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    d.worker("w0");
    d.wait_workers(1);

    let input = json!({"dir": d.work()}).to_string();
    let out = d.salt(&["run", "gate", "--input", &input, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = serde_json::from_slice::<Value>(&out.stdout).unwrap()["run"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the wait was never told");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (event, body) = told.lock().unwrap()[0].clone();
    assert_eq!(event, "waiting");
    assert!(body["at"].is_string(), "{body}");
    assert_eq!(
        json!({"event": body["event"], "run": body["run"], "workflow": body["workflow"], "state": body["state"], "node": body["node"]}),
        json!({"event": "waiting", "run": run, "workflow": "gate", "state": "running",
               "node": {"id": 0, "task": "gate", "signal": "go"}})
    );

    // `logs --follow` started while the run waits prints the lines written after, and ends
    // with the run.
    let follow = Command::new(SALT)
        .args(["logs", &run.to_string(), "--follow", "--server", &d.url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = d.salt(&["signal", &run.to_string(), "go", "41"]);
    assert!(out.status.success(), "{}", text(&out));
    let followed = follow.wait_with_output().unwrap();
    assert!(followed.status.success(), "{}", text(&followed));
    assert_eq!(String::from_utf8_lossy(&followed.stdout), "── node 1 step · attempt 1\nstep gated got 41\n");
    let shown = d.wait_run(run);
    assert_eq!((shown["run"]["state"].as_str(), &shown["run"]["output"]), (Some("succeeded"), &json!(42)), "{shown}");

    // After the end, `--follow --json` prints every line and returns at once.
    let out = d.salt(&["logs", &run.to_string(), "step", "--follow", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (&lines[0]["node"], &lines[0]["attempt"], &lines[0]["line"]),
        (&json!(1), &json!(1), &json!("step gated got 41"))
    );

    // The wait was told once, then the success.
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the success was never told: {:?}", told.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let events: Vec<String> = told.lock().unwrap().iter().map(|(e, _)| e.clone()).collect();
    assert_eq!(events, ["waiting", "succeeded"]);
}

#[test]
fn a_worker_runs_no_more_than_its_cores_at_once() {
    let mut d = Deployment::new();
    let out = d.salt(&["register", example("salt-examples", "commands").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Eight slots, four cores: three steps of two cores each run two at a time.
    d.worker_with("w0", &["--slots", "8", "--cores", "4", "--memory-mb", "1000"]);
    d.wait_workers(1);
    let worker = &d.get("/api/v1/workers")["workers"][0];
    assert_eq!((worker["cores"].clone(), worker["memory_mb"].clone()), (json!(4), json!(1000)), "{worker}");
    let steps = d.dir.path().join("steps");
    std::fs::create_dir_all(&steps).unwrap();
    let input = json!({"dir": steps.display().to_string(), "steps": 3, "cores": 2, "memory_mb": 0}).to_string();
    let out = d.salt(&["run", "crowd", "--input", &input, "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "{}", text(&out));
    let spans = salt_testkit::step_intervals(&steps, 3);
    assert_eq!(salt_testkit::most_at_once(&spans), 2, "three 2-core steps on a 4-core worker: {spans:?}");
    let worker = &d.get("/api/v1/workers")["workers"][0];
    assert_eq!((worker["cores_used"].clone(), worker["busy"].clone()), (json!(0), json!(0)), "{worker}");
}

/// Waits (up to `secs`) for `child` to exit; its status and stderr (written to `log`).
fn exit_within(child: &mut Child, secs: u64, log: &Path) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            kill9(child);
            panic!("it did not exit within {secs} s: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `salt worker` against `server` with `args`, its stderr in `log`.
fn worker_logged(server: &str, args: &[&str], log: &Path, cache: &Path) -> Child {
    Command::new(SALT)
        .args(["worker", "--server", server])
        .args(args)
        .arg("--cache")
        .arg(cache)
        .env_remove("SALT_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start salt worker")
}

#[test]
fn a_queue_made_private_after_a_worker_connected_gives_that_worker_nothing_more() {
    let (mut d, tokens) = Deployment::with_tokens(&[("admin", "admin"), ("w1", "worker"), ("w2", "worker")]);
    let out = d.salt(&["register", example("salt-server", "relay").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    d.worker_with("w0", &["--token", &tokens["w1"], "--queue", "default", "--queue", "gpu", "--slots", "2"]);
    d.wait_workers(1);
    // Private to another token now that `w0` (token `w1`) is connected.
    let out = d.salt(&["queue", "set", "gpu", "--private-to", "w2"]);
    assert!(out.status.success(), "{}", text(&out));
    let input = json!({"dir": d.work(), "queue": "gpu"}).to_string();
    let out = d.salt(&["run", "queued_command", "--input", &input, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let run = serde_json::from_slice::<Value>(&out.stdout).unwrap()["run"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.count("command"), 0, "a worker the private queue does not name ran its attempt");
    let shown = d.get(&format!("/api/v1/runs/{run}"));
    assert_eq!(shown["run"]["state"], "running", "{shown}");
    // Open to its token again: the waiting attempt goes to it.
    let out = d.salt(&["queue", "set", "gpu", "--private-to", "w1"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = d.wait_run(run);
    assert_eq!(shown["run"]["state"], "succeeded", "{shown}");
    assert_eq!(d.count("command"), 1);
}

#[test]
fn a_refused_worker_or_register_says_why_and_an_unreachable_server_is_tried_less_and_less_often() {
    let (d, tokens) = Deployment::with_tokens(&[("admin", "admin"), ("w1", "worker"), ("w2", "worker")]);
    let logs = d.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let cache = d.dir.path().join("cache");

    // No token, a wrong token: the worker stops at once, saying how to pass one.
    for (i, token) in [None, Some("salt_0000")].into_iter().enumerate() {
        let log = logs.join(format!("token-{i}"));
        let mut args = vec!["--name", "bad"];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let mut w = worker_logged(&d.url, &args, &log, &cache);
        let (status, err) = exit_within(&mut w, 10, &log);
        assert!(!status.success(), "{err}");
        assert!(err.contains("needs a valid token") && err.contains("--token"), "{err}");
        assert!(!err.contains("connected to"), "{err}");
    }
    // A queue private to another token: refused for good, never said to be connected.
    let out = d.salt(&["queue", "set", "gpu", "--private-to", "w2"]);
    assert!(out.status.success(), "{}", text(&out));
    let log = logs.join("private");
    let mut w = worker_logged(&d.url, &["--token", &tokens["w1"], "--queue", "gpu"], &log, &cache);
    let (status, err) = exit_within(&mut w, 10, &log);
    assert!(!status.success(), "{err}");
    assert!(err.contains("queue `gpu` is private to other tokens"), "{err}");
    assert!(!err.contains("connected to"), "{err}");

    // Registering without the right token: said before the upload, with how to pass one.
    let relay = example("salt-server", "relay");
    for token in [None, Some("salt_0000")] {
        let mut cmd = Command::new(SALT);
        cmd.args(["register", relay.to_str().unwrap(), "--server", &d.url]).env_remove("SALT_TOKEN");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(err.contains("the server needs a valid token") && err.contains("--token"), "{err}");
        assert!(!err.contains("Broken pipe") && !err.contains("cannot reach"), "{err}");
    }
    let out = Command::new(SALT)
        .args(["register", relay.to_str().unwrap(), "--server", &d.url, "--token", &tokens["w1"]])
        .env_remove("SALT_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not register binaries"), "{}", text(&out));

    // Nothing listens: the worker tries again after 0.5 s, 1 s, 2 s…, not ten times a second.
    let log = logs.join("unreachable");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut w = worker_logged(&nowhere, &["--name", "far"], &log, &cache);
    std::thread::sleep(Duration::from_secs(4));
    kill9(&mut w);
    let err = std::fs::read_to_string(&log).unwrap();
    let tries = err.matches("cannot connect").count();
    assert!((2..=4).contains(&tries), "{tries} tries in 4 s: {err}");
}

#[test]
fn a_tampered_cached_binary_is_fetched_again_and_a_tampered_stored_one_is_named_so() {
    let mut d = Deployment::new();
    let relay = example("salt-server", "relay");
    let out = d.salt(&["register", relay.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let sha = serde_json::from_slice::<Value>(&out.stdout).unwrap()["sha256"].as_str().unwrap().to_string();
    d.worker("w0");
    d.wait_workers(1);
    let input = json!({"dir": d.work(), "slow_ms": 0}).to_string();
    let out = d.salt(&["run", "chain", "--input", &input, "--wait"]);
    assert!(out.status.success(), "{}", text(&out));

    // The cached binary replaced with a wrapper while the worker was down.
    kill9(&mut d.workers[0]);
    let cached = d.dir.path().join("cache-w0").join(&sha);
    assert!(cached.exists());
    let wrapped = d.dir.path().join("work").join("wrapper");
    std::fs::remove_file(&cached).unwrap();
    let script = format!("#!/bin/sh\necho ran >> {}\nexec {} \"$@\"\n", wrapped.display(), relay.display());
    std::fs::write(&cached, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&cached, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.worker("w0");
    let out = d.salt(&["run", "chain", "--input", &input, "--wait"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!wrapped.exists(), "the wrapper in the cache ran");
    use sha2::Digest as _;
    let now: String =
        sha2::Sha256::digest(std::fs::read(&cached).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(now, sha, "the cache holds the binary again");

    // The server's own copy changed after it was registered: said so, not "missing".
    let stored = d.dir.path().join("data").join("binaries").join(&sha);
    let mut f = std::fs::OpenOptions::new().append(true).open(&stored).unwrap();
    std::io::Write::write_all(&mut f, b"tampered").unwrap();
    drop(f);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(&format!("{}/api/v1/binaries/{sha}", d.url)).call().unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("does not match its hash"), "{body}");
}
