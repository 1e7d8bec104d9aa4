//! Who drives a run: one orchestrator at a time, by lease; and which files salt opens, how.

use std::process::Command;

use crate::support::{Env, FLOWS, pipeline_input, stderr, take_over_from, text};

const STEPS: [&str; 5] = ["a", "b", "c1", "c2", "c3"];

/// Starts a slow pipeline and waits until `b` has started.
fn start_slow(env: &Env) -> std::process::Child {
    let child = env.spawn(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 600, false)]);
    env.wait_for_marker("b");
    child
}

#[test]
fn recover_while_the_orchestrator_runs_is_refused_naming_it() {
    let env = Env::new();
    let child = start_slow(&env);
    let owner = env.show(1)["run"]["owner"].as_str().expect("a running run shows its owner").to_string();
    assert!(owner.contains(&format!(":{}:", child.id())), "the owner names the process: {owner}");
    let runs = env.json(&["runs"]);
    assert_eq!(runs["runs"][0]["owner"], owner.as_str());
    assert!(runs["runs"][0].get("input").is_none(), "`runs` lists no payloads: {runs}");
    let shown = String::from_utf8(env.run(&["show", "1"]).stdout).unwrap();
    assert!(shown.contains(&format!("driven by {owner}")), "{shown}");

    for command in [&["recover", "1"][..], &["rerun", "1", "--from", "0"], &["run-one", "1", "1"]] {
        let out = env.run(command);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("run 1 is being driven by {owner} (lease renewed ")), "{err}");
        assert!(err.contains("s ago); wait for it or cancel it"), "{err}");
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for step in STEPS {
        assert_eq!(env.count(step), 1, "{step}");
    }
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "succeeded");
    assert!(show["run"]["owner"].is_null(), "the lease is released when the run ends: {show}");
}

#[test]
fn two_recovers_at_once_drive_an_interrupted_run_once() {
    two_recovers_at_once_in(&Env::new());
}

/// Kills a run's orchestrator and starts two `recover`s of the run at once, on `env`'s database.
pub(crate) fn two_recovers_at_once_in(env: &Env) {
    let mut child = start_slow(env);
    child.kill().unwrap();
    child.wait().unwrap();
    let before = env.wait_for_state(1, "interrupted");
    let succeeded: Vec<String> = before["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "succeeded")
        .map(|n| n["args"][1][1]["value"].as_str().unwrap_or("").to_string())
        .collect();

    let first = env.spawn(&["recover", "1"]);
    let second = env.spawn(&["recover", "1"]);
    let outs = [first.wait_with_output().unwrap(), second.wait_with_output().unwrap()];
    let drove: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(drove.len(), 1, "exactly one recover drives the run:\n{}\n{}", text(&outs[0]), text(&outs[1]));
    assert_eq!(String::from_utf8_lossy(&drove[0].stdout).trim(), "90");
    let refused = outs.iter().find(|o| !o.status.success()).unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", text(refused));
    let err = stderr(refused);
    // Refused while the other drives it, or, if it came late, because the run has ended.
    assert!(err.contains("is being driven by") || err.contains("run 1 is succeeded"), "{err}");

    for step in STEPS {
        let n = env.count(step);
        if succeeded.iter().any(|s| s == step) {
            assert_eq!(n, 1, "`{step}` had succeeded before the kill but ran {n} times");
        } else {
            // Once before the kill at most (cut by it), once by the one recover.
            assert!((1..=2).contains(&n), "`{step}` ran {n} times");
        }
    }
    assert_eq!(env.count("total"), 1);
    assert_eq!(env.count("maybe_fail"), 1);
    assert_eq!(env.show(1)["run"]["state"], "succeeded");
}

#[test]
fn an_orchestrator_that_lost_its_lease_stops_without_writing() {
    lost_lease_in(&Env::new());
}

/// Freezes a run's orchestrator until another takes the run over, then lets it go on, on
/// `env`'s database.
pub(crate) fn lost_lease_in(env: &Env) {
    let stale = start_slow(env);
    let (out, recover) = take_over_from(env, stale);
    assert!(stderr(&out).contains("lost the lease of run 1"), "{}", text(&out));

    let out = recover.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");
    assert_eq!(env.count("total"), 1, "only the new owner got as far as `total`");
    let show = env.show(1);
    let attempts = show["attempts"].as_array().unwrap();
    assert!(attempts.iter().all(|a| a["state"] != "running"), "{show}");
}

/// A SQLite file of another program.
fn foreign_db(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('ann');").unwrap();
}

#[test]
fn a_foreign_sqlite_file_is_refused_and_left_byte_identical() {
    let env = Env::new();
    foreign_db(&env.db);
    let before = std::fs::read(&env.db).unwrap();
    for args in [&["run", "talk"][..], &["runs"], &["show", "1"], &["cancel", "1"], &["recover", "1"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = stderr(&out);
        assert!(err.contains("is not a salt database (it has tables salt does not use: customers)"), "{err}");
        assert!(err.contains("left untouched"), "{err}");
    }
    assert_eq!(std::fs::read(&env.db).unwrap(), before, "the file was changed");
}

#[test]
fn a_postgres_server_that_does_not_answer_is_named_without_its_password() {
    let env = Env::new();
    for args in [&["runs"][..], &["run", "talk"]] {
        let mut all = vec!["--db", "postgres://salt:secret@127.0.0.1:1/salt"];
        all.extend_from_slice(args);
        let out = env.run(&all);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        let err = stderr(&out);
        assert!(
            err.contains("database postgres://salt:***@127.0.0.1:1/salt: error connecting to server"),
            "{}",
            text(&out)
        );
        assert!(!err.contains("secret"), "{err}");
    }
    assert!(!env.db.exists(), "nothing was written instead");
    let out = env.run(&["--db", &format!("sqlite://{}", env.db.display()), "run", "talk"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.json(&["runs"])["runs"][0]["state"], "succeeded");
}

#[test]
fn the_default_database_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(FLOWS).args(["run", "talk"]).env_remove("SALT_DB").current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join(".salt")), 0o700);
    assert_eq!(mode(&dir.path().join(".salt/salt.db")), 0o600);
}

/// Makes a directory and its files read-only until dropped: `chattr +i` where it works (it
/// binds root too), and permission bits.
struct ReadOnlyDir(std::path::PathBuf);

impl ReadOnlyDir {
    fn new(dir: &std::path::Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let files: Vec<_> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        for f in &files {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        for p in files.iter().chain([&dir.to_path_buf()]) {
            let _ = Command::new("chattr").arg("+i").arg(p).output();
        }
        Self(dir.to_path_buf())
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = Command::new("chattr").arg("-i").arg(&self.0).output();
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        for f in std::fs::read_dir(&self.0).into_iter().flatten().flatten().filter(|f| f.path().is_file()) {
            let _ = Command::new("chattr").arg("-i").arg(f.path()).output();
            let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644));
        }
    }
}

#[test]
fn read_commands_work_on_a_read_only_database() {
    let env = Env::new();
    let out = env.run(&["run", "talk", "--executor", "process"]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = env.db.parent().unwrap().to_path_buf();
    let before = std::fs::read(&env.db).unwrap();
    let _read_only = ReadOnlyDir::new(&dir);

    let runs = env.json(&["runs"]);
    assert_eq!(runs["runs"][0]["state"], "succeeded");
    assert_eq!(env.show(1)["run"]["workflow"], "talk");
    let logs = env.run(&["logs", "1", "chatty"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("hello from stdout"), "{}", text(&logs));
    let graph = env.run(&["graph", "1"]);
    assert!(graph.status.success() && String::from_utf8_lossy(&graph.stdout).starts_with("digraph"));
    assert_eq!(std::fs::read(&env.db).unwrap(), before, "a read command changed the database");
}

/// Checks that this process may make pid namespaces (`unshare --pid`, which needs root or a user
/// namespace with the capability); panics, saying so, when it may not.
fn assert_can_unshare() {
    let ok =
        Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).status().is_ok_and(|s| s.success());
    assert!(ok, "this test needs `unshare --pid --fork --mount-proc` (root, or CAP_SYS_ADMIN), which fails here");
}

#[test]
#[ignore = "needs unshare --pid, as root (run with --include-ignored; .ci/run does)"]
fn an_orchestrator_in_another_pid_namespace_with_the_same_host_name_keeps_its_run() {
    assert_can_unshare();
    let env = Env::new();
    // The orchestrator runs in a pid namespace of its own, as in a container that shares the
    // host's name but not its pids, with a pid that no process of this namespace has.
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let free =
        (max / 2..max - 16).rev().find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()).expect("a free pid");
    let script = format!(
        "echo {} > /proc/sys/kernel/ns_last_pid; {FLOWS} run pipeline --input '{}'",
        free - 1,
        pipeline_input(&env.dir(), 3_000, false)
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .env("SALT_DB", &env.db)
        .env("SALT_LEASE_TTL_MS", "60000")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    env.wait_for_marker("b");
    let owner = env.show(1)["run"]["owner"].as_str().expect("the run has an owner").to_string();
    assert!(owner.contains(&format!(":{free}:")), "the orchestrator has the pid chosen for it: {owner}");

    // Seen from here, its pid names no process: its run must not read as interrupted, nor
    // be taken over.
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "running", "{show}");
    let out = env.run(&["recover", "1"]);
    assert_eq!(out.status.code(), Some(2), "recover took over a live run: {}", text(&out));
    assert!(stderr(&out).contains(&format!("run 1 is being driven by {owner}")), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for step in STEPS {
        assert_eq!(env.count(step), 1, "{step} ran once");
    }
}
