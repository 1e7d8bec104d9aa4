//! Two `salt server`s and three `salt worker`s on one PostgreSQL database, all real processes,
//! running wide runs of the `spread` example whose nodes each append to their own marker file.
//! In the middle a worker is killed (SIGKILL), then a server, then PostgreSQL is restarted. At
//! the end every run has succeeded, none is lost, and no node that had succeeded before a
//! failure ran again.
//!
//! The same cluster shows that a queue's concurrency limit holds across servers and workers,
//! and that servers whose clocks are minutes apart share runs on PostgreSQL's clock.
//!
//! `SALT_CHAOS_NODES` sets the number of nodes (default 300: 3 runs of 100; e.g. 10000 gives
//! 20 runs of 500). `SALT_CHAOS_DB=sqlite` runs the same on a shared SQLite file (no database
//! restart then).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{SALT, example, free_port, kill9, wait_healthy};

/// The tests of this file one at a time: the chaos test restarts the PostgreSQL server they
/// share.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Cluster {
    dir: tempfile::TempDir,
    db: String,
    /// The servers' run lease, in ms (`SALT_LEASE_TTL_MS`).
    lease_ms: u64,
    /// How wrong each server's clock is, in ms (`SALT_TEST_CLOCK_SKEW_MS`).
    skews_ms: Vec<i64>,
    urls: Vec<String>,
    servers: Vec<Option<Child>>,
    workers: Vec<Option<Child>>,
}

impl Cluster {
    /// `servers` servers on `db` whose runs' leases last `lease_ms`.
    fn new(db: String, servers: usize, lease_ms: u64) -> Self {
        Self::skewed(db, lease_ms, &vec![0; servers])
    }

    /// One server on `db` for each of `skews_ms`, whose clock is that many ms wrong.
    fn skewed(db: String, lease_ms: u64, skews_ms: &[i64]) -> Self {
        let servers = skews_ms.len();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let urls = (0..servers).map(|_| format!("http://127.0.0.1:{}", free_port())).collect();
        let skews_ms = skews_ms.to_vec();
        let mut c = Cluster { dir, db, lease_ms, skews_ms, urls, servers: Vec::new(), workers: Vec::new() };
        for i in 0..servers {
            let child = c.start_server(i);
            c.servers.push(Some(child));
        }
        for url in &c.urls {
            assert!(wait_healthy(url), "{url} never answered\n{}", c.logs());
        }
        c
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(format!("{name}.log"))).unwrap()
    }

    fn start_server(&self, i: usize) -> Child {
        let listen = self.urls[i].trim_start_matches("http://").to_string();
        Command::new(SALT)
            .args(["server", "--listen", &listen, "--db", &self.db])
            // Each server its own data directory: binaries come from the database.
            .arg("--data")
            .arg(self.dir.path().join(format!("data-{i}")))
            .env("SALT_LEASE_TTL_MS", self.lease_ms.to_string())
            .env("SALT_TEST_CLOCK_SKEW_MS", self.skews_ms[i].to_string())
            .env("SALT_TAKEOVER_MS", "1000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(self.log(&format!("server-{i}")))
            .stderr(self.log(&format!("server-{i}")))
            .spawn()
            .expect("start salt server")
    }

    fn start_worker(&mut self) {
        self.start_worker_of(&["default"]);
    }

    /// A worker with 4 slots serving `queues`.
    fn start_worker_of(&mut self, queues: &[&str]) {
        let name = format!("w{}", self.workers.len());
        let child = Command::new(SALT)
            .args(["worker", "--server", &self.urls.join(","), "--name", &name, "--slots", "4"])
            .args(queues.iter().flat_map(|q| ["--queue", q]))
            .arg("--cache")
            .arg(self.dir.path().join(format!("cache-{name}")))
            .stdin(Stdio::null())
            .stdout(self.log(&name))
            .stderr(self.log(&name))
            .spawn()
            .expect("start salt worker");
        self.workers.push(Some(child));
    }

    fn salt(&self, server: usize, args: &[&str]) -> Value {
        let out = Command::new(SALT).args(args).args(["--server", &self.urls[server]]).output().unwrap();
        assert!(
            out.status.success(),
            "salt {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Run `run` as server `server` shows it, once it answers.
    fn show(&self, server: usize, run: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = ureq::get(&format!("{}/api/v1/runs/{run}", self.urls[server]))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok());
            if let Some(v) = got {
                return v;
            }
            assert!(Instant::now() < deadline, "server {server} did not show run {run}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many distinct nodes have written their marker.
    fn started(&self) -> usize {
        std::fs::read_dir(self.work()).map(|d| d.count()).unwrap_or(0)
    }

    /// Waits (up to `secs`) until `n` distinct nodes have written their marker.
    fn wait_started(&self, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.started() < n {
            assert!(Instant::now() < deadline, "only {} of {n} nodes started\n{}", self.started(), self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The lines of each marker file, by name.
    fn markers(&self) -> BTreeMap<String, usize> {
        std::fs::read_dir(self.work())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| {
                let lines = std::fs::read_to_string(e.path()).unwrap_or_default().lines().count();
                (e.file_name().to_string_lossy().into_owned(), lines)
            })
            .collect()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path()).unwrap().filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("--- {stem} (last lines)\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain(self.servers.iter_mut()).flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The marker files of the nodes of `shown` (a run as the API shows it) that have succeeded.
fn succeeded_markers(tag: &str, shown: &Value) -> BTreeSet<String> {
    shown["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| n["task"] == "touch" && n["state"] == "succeeded")
                // The root spawns `touch` i as node i + 1.
                .filter_map(|n| n["id"].as_u64())
                .map(|id| format!("{tag}-{}", id - 1))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[ignore = "needs PostgreSQL, or SALT_CHAOS_DB=sqlite (run with --include-ignored; .ci/run does)"]
fn two_servers_three_workers_a_killed_worker_a_killed_server_and_a_database_restart() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let sqlite = std::env::var("SALT_CHAOS_DB").is_ok_and(|v| v == "sqlite");
    let nodes: usize = std::env::var("SALT_CHAOS_NODES").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
    let per_run = if nodes >= 2000 { 500 } else { 100 }.min(nodes.max(1));
    let runs = nodes.div_ceil(per_run);
    let keep = tempfile::tempdir().unwrap();
    let (db, pg) = if sqlite {
        (keep.path().join("salt.db").display().to_string(), None)
    } else {
        (salt_testkit::postgres::database("chaos"), Some(salt_testkit::postgres::server()))
    };
    let mut c = Cluster::new(db, 2, 3000);
    let registered = c.salt(0, &["register", example("salt-server", "spread").to_str().unwrap(), "--json"]);
    assert!(registered["sha256"].is_string(), "{registered}");
    for _ in 0..3 {
        c.start_worker();
    }

    // The runs, posted to either server.
    let work = c.work().display().to_string();
    let started_at = Instant::now();
    let mut ids: Vec<(u64, String)> = Vec::new();
    for r in 0..runs {
        let tag = format!("r{r}");
        let input = json!({"dir": work, "tag": tag, "n": per_run, "slow_ms": 30}).to_string();
        let out = c.salt(r % 2, &["run", "spread", "--input", &input, "--json"]);
        ids.push((out["run"].as_u64().unwrap_or_else(|| panic!("no run id: {out}")), tag));
    }
    let total = runs * per_run;

    let wait_started = |c: &Cluster, fraction: f64| {
        let deadline = Instant::now() + Duration::from_secs(600);
        while (c.started() as f64) < fraction * total as f64 {
            assert!(Instant::now() < deadline, "stuck at {} of {total} nodes\n{}", c.started(), c.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // What had succeeded before each failure must never run again: each such node's marker
    // keeps the lines it had then (a node in flight at an earlier failure may have two).
    let mut done_before: BTreeMap<String, usize> = BTreeMap::new();
    let snapshot = |c: &Cluster, server: usize, into: &mut BTreeMap<String, usize>| {
        let mut succeeded = BTreeSet::new();
        for (run, tag) in &ids {
            succeeded.extend(succeeded_markers(tag, &c.show(server, *run)));
        }
        let markers = c.markers();
        for m in succeeded {
            let lines = markers.get(&m).copied().unwrap_or(0);
            into.entry(m).or_insert(lines);
        }
    };

    wait_started(&c, 0.2);
    snapshot(&c, 1, &mut done_before);
    kill9(c.workers[0].as_mut().unwrap());
    c.workers[0] = None;
    eprintln!("killed worker w0 at {} of {total} nodes started", c.started());
    c.start_worker();

    wait_started(&c, 0.4);
    snapshot(&c, 1, &mut done_before);
    kill9(c.servers[0].as_mut().unwrap());
    c.servers[0] = None;
    eprintln!("killed server 0 at {} of {total} nodes started", c.started());

    if let Some(pg) = pg {
        wait_started(&c, 0.6);
        snapshot(&c, 1, &mut done_before);
        pg.restart(Duration::from_millis(500)).expect("restart PostgreSQL");
        eprintln!("restarted PostgreSQL at {} of {total} nodes started", c.started());
    }

    // Every run ends, succeeded, as the surviving server shows it.
    let deadline = Instant::now() + Duration::from_secs(if total > 1000 { 3600 } else { 240 });
    for (run, tag) in &ids {
        loop {
            let shown = c.show(1, *run);
            match shown["run"]["state"].as_str() {
                Some("succeeded") => {
                    assert_eq!(shown["run"]["output"], json!(per_run), "run {run} ({tag})");
                    break;
                }
                Some("failed" | "cancelled" | "terminated") => {
                    panic!("run {run} ({tag}) ended {}: {}\n{}", shown["run"]["state"], shown["run"]["error"], c.logs())
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "run {run} ({tag}) never ended: {}\n{}",
                shown["run"]["state"],
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let elapsed = started_at.elapsed();
    let listed = ureq::get(&format!("{}/api/v1/runs?limit=1000", c.urls[1]))
        .call()
        .unwrap()
        .body_mut()
        .read_json::<Value>()
        .unwrap();
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(runs), "no run lost, none added: {listed}");

    let markers = c.markers();
    let missing: Vec<String> = ids
        .iter()
        .flat_map(|(_, tag)| (0..per_run).map(move |i| format!("{tag}-{i}")))
        .filter(|m| !markers.contains_key(m))
        .collect();
    assert!(missing.is_empty(), "nodes that never ran: {missing:?}");
    let again: Vec<(&String, usize, usize)> = done_before
        .iter()
        .map(|(m, then)| (m, *then, markers.get(m).copied().unwrap_or(0)))
        .filter(|(_, then, now)| then != now || *then == 0)
        .collect();
    assert!(
        again.is_empty(),
        "nodes that had succeeded before a failure ran again (marker, lines then, now): {again:?}"
    );
    assert!(done_before.len() > total / 10, "the failures came after some nodes had succeeded: {}", done_before.len());
    let rerun = markers.values().filter(|n| **n > 1).count();
    eprintln!(
        "{total} nodes in {runs} runs in {:.1} s ({:.0} nodes/s with the failures); {} had succeeded before a \
         failure and none ran again; {rerun} in flight at a failure ran again",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        done_before.len()
    );
}

#[test]
#[ignore = "needs PostgreSQL, or SALT_CHAOS_DB=sqlite (run with --include-ignored; .ci/run does)"]
fn a_queue_limit_holds_across_two_servers_and_their_workers_and_a_killed_server() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let keep = tempfile::tempdir().unwrap();
    let db = if std::env::var("SALT_CHAOS_DB").is_ok_and(|v| v == "sqlite") {
        keep.path().join("salt.db").display().to_string()
    } else {
        salt_testkit::postgres::database("limits")
    };
    let mut c = Cluster::new(db, 2, 10_000);
    c.salt(0, &["register", example("salt-server", "spread").to_str().unwrap(), "--json"]);
    // Through one server; the other reads it from the database.
    let set = c.salt(0, &["queue", "set", "limited", "--concurrency", "3", "--json"]);
    assert_eq!(set["concurrency"], 3, "{set}");
    // 3 workers x 4 slots: 12 attempts could run at once without the limit.
    for _ in 0..3 {
        c.start_worker_of(&["default", "limited"]);
    }
    let work = c.work().display().to_string();
    let runs: Vec<u64> = (0..4)
        .map(|r| {
            let input = json!({"dir": work, "tag": format!("r{r}"), "n": 6, "slow_ms": 300}).to_string();
            c.salt(r % 2, &["run", "limited", "--input", &input, "--json"])["run"].as_u64().expect("run id")
        })
        .collect();
    // Server 0 dies with places taken: they hold until they expire, its runs are taken over
    // by server 1, and the limit still holds.
    c.wait_started(6, 60);
    kill9(c.servers[0].as_mut().unwrap());
    c.servers[0] = None;
    for run in &runs {
        wait_succeeded(&c, 1, *run, 180);
        assert_eq!(c.show(1, *run)["run"]["output"], 6, "run {run}");
    }
    let spans: Vec<(u128, u128)> = std::fs::read_dir(c.work())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| {
                    let (s, e) = l.split_once(' ')?;
                    Some((s.parse().ok()?, e.parse().ok()?))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Every hold node ran (an attempt in flight when a run changes servers may run twice).
    assert_eq!(std::fs::read_dir(c.work()).unwrap().count(), 24, "{spans:?}");
    let most = salt_testkit::most_at_once(&spans);
    eprintln!("at most {most} attempts of the limited queue ran at once");
    assert!(most <= 3, "{most} attempts of the limited queue ran at once: {spans:?}");
    // Not a limit of 1 in disguise: the places were used.
    assert!(most >= 2, "the limited queue never ran two at once: {spans:?}");
    // The queue as the other server lists it, with nothing left running.
    let listed = c.salt(1, &["queue", "ls", "--json"]);
    let q = listed["queues"].as_array().and_then(|qs| qs.iter().find(|q| q["name"] == "limited")).cloned();
    let q = q.unwrap_or_else(|| panic!("no queue `limited` in {listed}"));
    assert_eq!((q["concurrency"].clone(), q["running"].clone()), (json!(3), json!(0)), "{q}");
}

/// Waits (up to `secs`) until run `run` succeeds as server `server` shows it.
fn wait_succeeded(c: &Cluster, server: usize, run: u64, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let shown = c.show(server, run);
        match shown["run"]["state"].as_str() {
            Some("succeeded") => return,
            Some("failed" | "cancelled" | "terminated") => panic!("run {run} ended: {shown}\n{}", c.logs()),
            _ => {}
        }
        assert!(Instant::now() < deadline, "run {run} did not succeed within {secs} s: {shown}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn servers_whose_clocks_are_minutes_apart_agree_on_leases() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let db = salt_testkit::postgres::database("clocks");
    // Server 0's clock is two minutes behind, server 1's two minutes ahead; leases last 3 s.
    let mut c = Cluster::skewed(db, 3000, &[-120_000, 120_000]);
    c.salt(0, &["register", example("salt-server", "spread").to_str().unwrap(), "--json"]);
    c.start_worker();
    let work = c.work().display().to_string();

    // A run of the server that is behind: on their own clocks, the other would find its lease
    // long expired and take the run from a server that is alive.
    let input = json!({"dir": work, "tag": "behind", "n": 4, "slow_ms": 4000}).to_string();
    let run = c.salt(0, &["run", "spread", "--input", &input, "--json"])["run"].as_u64().unwrap();
    wait_succeeded(&c, 0, run, 60);
    let logs = c.logs();
    assert!(!logs.contains("took over"), "a live server's run was taken over:\n{logs}");
    for i in 0..4 {
        let lines = std::fs::read_to_string(c.work().join(format!("behind-{i}"))).unwrap();
        assert_eq!(lines.lines().count(), 1, "node {i} ran more than once:\n{logs}");
    }

    // A run of the server that is ahead, which is then killed: on their own clocks, its lease
    // would look live to the other for four minutes; it is taken over within seconds.
    let input = json!({"dir": work, "tag": "ahead", "n": 4, "slow_ms": 3000}).to_string();
    let run = c.salt(1, &["run", "spread", "--input", &input, "--json"])["run"].as_u64().unwrap();
    c.wait_started(5, 30);
    kill9(c.servers[1].as_mut().unwrap());
    c.servers[1] = None;
    let killed = Instant::now();
    wait_succeeded(&c, 0, run, 60);
    assert!(killed.elapsed() < Duration::from_secs(30), "taken over after {:?}", killed.elapsed());
    assert!(c.logs().contains("took over"), "{}", c.logs());
}
