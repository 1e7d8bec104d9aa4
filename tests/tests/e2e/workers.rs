//! Nodes on a named queue: they wait in the database until a worker of that queue (another
//! process of the binary, `flows worker --queue gpu`) claims and runs them.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Env, stderr, text};

/// `before` (node 1) -> `on_gpu` (node 2, queue `gpu`) -> `after` (node 3).
const GPU_NODE: &str = "2";

/// Starts the `remote` flow on the inline executor and waits until its `gpu` node is running,
/// which for a queued node means: waiting for a worker.
fn start_remote(env: &Env, slow_ms: u64, fail_first: u32) -> Child {
    let input = json!({"dir": env.dir(), "slow_ms": slow_ms, "fail_first": fail_first}).to_string();
    let child = env.spawn(&["run", "remote", "--executor", "inline", "--input", &input]);
    wait_for_node(env, "1", GPU_NODE, |n| n["node"]["state"] == "running");
    child
}

/// Waits until node `node` of run `run` satisfies `ready`, and returns it (`show RUN NODE`).
fn wait_for_node(env: &Env, run: &str, node: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = env.run(&["show", run, node, "--json"]);
        if out.status.success() {
            let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
            if ready(&shown) {
                return shown;
            }
        }
        assert!(Instant::now() < deadline, "node {node} never got there: {}", text(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A worker of `queue` that runs what is ready now, then exits.
fn worker_once(env: &Env, queue: &str) -> Output {
    let out = env.run(&["worker", "--queue", queue, "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// The run's result: its stdout and how it exited.
fn finish(child: Child) -> Output {
    child.wait_with_output().expect("the run ends")
}

/// Ctrl-C.
fn interrupt(child: &Child) {
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
}

#[test]
fn a_node_on_a_queue_waits_for_a_worker_of_that_queue_and_runs_there_once() {
    let env = Env::new();
    let run = start_remote(&env, 0, 0);

    // Nothing runs it: the node stays running, its body never starts.
    std::thread::sleep(Duration::from_millis(800));
    let node = wait_for_node(&env, "1", GPU_NODE, |_| true);
    assert_eq!(node["node"]["state"], "running", "{node}");
    assert_eq!(node["attempts"][0]["executor"], "queue:gpu", "{node}");
    assert_eq!(env.count("on_gpu"), 0);
    assert_eq!(env.count("after"), 0);

    // A worker of another queue does not take it.
    let other = worker_once(&env, "cpu");
    assert!(stderr(&other).contains("nothing ready on queue `cpu`"), "{}", text(&other));
    assert_eq!(env.count("on_gpu"), 0);

    // A worker of its queue runs it, in its own process.
    let worker = worker_once(&env, "gpu");
    let said = stderr(&worker);
    assert!(said.contains("node 2 (`on_gpu`) of run 1, attempt 1 succeeded"), "{}", text(&worker));
    assert!(said.contains("1 succeeded, 0 failed"), "{}", text(&worker));

    let out = finish(run);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "201", "{}", text(&out));
    assert_eq!((env.count("before"), env.count("on_gpu"), env.count("after")), (1, 1, 1));
    let node = env.json(&["show", "1", GPU_NODE]);
    assert_eq!(node["node"]["output"], 200);
    assert_eq!(node["attempts"].as_array().unwrap().len(), 1, "{node}");
    assert_eq!(node["attempts"][0]["state"], "succeeded", "{node}");

    // Its log was recorded by the worker.
    let logs = String::from_utf8(env.run(&["logs", "1", GPU_NODE]).stdout).unwrap();
    assert!(logs.contains("attempt 1 · queue:gpu · succeeded"), "{logs}");
    assert!(logs.contains("[salt] run by worker "), "{logs}");
    assert!(logs.contains("on the gpu queue with x = 2"), "{logs}");

    // Nothing is left to take.
    let again = worker_once(&env, "gpu");
    assert!(stderr(&again).contains("nothing ready on queue `gpu`"), "{}", text(&again));
    assert_eq!(env.count("on_gpu"), 1);
}

#[test]
fn a_killed_worker_loses_its_claim_and_another_worker_runs_the_attempt() {
    let env = Env::new();
    let run = start_remote(&env, 60_000, 0);
    let mut first = env
        .cmd(&["worker", "--queue", "gpu", "--claim-ttl", "2s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for_marker("on_gpu");
    first.kill().unwrap(); // SIGKILL: no goodbye, its claim just stops being renewed
    first.wait().unwrap();

    // While its claim lasts, no one else takes the attempt.
    let early = worker_once(&env, "gpu");
    assert!(stderr(&early).contains("nothing ready on queue `gpu`"), "{}", text(&early));

    // Once it has expired, a second worker takes the same attempt over.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let second = worker_once(&env, "gpu");
        if stderr(&second).contains("node 2 (`on_gpu`) of run 1, attempt 1 succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "no worker took the attempt over: {}", text(&second));
    }

    let out = finish(run);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "201");
    assert_eq!(env.count("on_gpu"), 2, "the killed worker's run and the second one");
    let node = env.json(&["show", "1", GPU_NODE]);
    assert_eq!(node["attempts"].as_array().unwrap().len(), 1, "one attempt, run by two workers: {node}");
}

#[test]
fn a_task_failing_on_a_worker_is_retried_by_its_policy_and_ctrl_c_stops_the_worker() {
    let env = Env::new();
    let run = start_remote(&env, 0, 1);
    let worker = env.spawn(&["worker", "--queue", "gpu", "--slots", "2"]);

    let out = finish(run);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "201");
    let node = env.json(&["show", "1", GPU_NODE]);
    let attempts = node["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{node}");
    assert_eq!(attempts[0]["state"], "failed");
    assert_eq!(attempts[0]["error"]["message"], "attempt 1 fails on purpose");
    assert_eq!(attempts[1]["state"], "succeeded");
    assert_eq!(env.count("on_gpu"), 2);

    interrupt(&worker);
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = stderr(&out);
    assert!(said.contains("attempt 1 failed: attempt 1 fails on purpose"), "{said}");
    assert!(said.contains("1 succeeded, 1 failed, 0 given up"), "{said}");
}

#[test]
fn ctrl_c_lets_a_worker_finish_the_attempt_it_runs() {
    let env = Env::new();
    let run = start_remote(&env, 1_500, 0);
    let worker = env.spawn(&["worker", "--queue", "gpu"]);
    env.wait_for_marker("on_gpu");
    interrupt(&worker);
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = stderr(&out);
    assert!(said.contains("finishing the 1 running attempt(s), taking no new one"), "{said}");
    assert!(said.contains("attempt 1 succeeded"), "{said}");

    let out = finish(run);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "201");
    assert_eq!(env.count("on_gpu"), 1);
}

#[test]
fn a_cancelled_run_takes_its_queued_attempt_back() {
    let env = Env::new();
    let run = start_remote(&env, 0, 0);
    let cancelled = env.run(&["cancel", "1"]);
    assert!(cancelled.status.success(), "{}", text(&cancelled));
    let out = finish(run);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(env.show(1)["run"]["state"], "cancelled");

    let worker = worker_once(&env, "gpu");
    assert!(stderr(&worker).contains("nothing ready on queue `gpu`"), "{}", text(&worker));
    assert_eq!(env.count("on_gpu"), 0);
}

#[test]
fn the_timeout_of_a_queued_attempt_runs_whether_a_worker_took_it_or_not() {
    let env = Env::new();
    let input = json!({"dir": env.dir()}).to_string();
    // No worker: the attempt times out in the queue, and is taken out of it.
    let out = env.run(&["run", "remote_timeout", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("attempt timed out after 300ms"), "{}", text(&out));
    let worker = worker_once(&env, "gpu");
    assert!(stderr(&worker).contains("nothing ready on queue `gpu`"), "{}", text(&worker));
    assert_eq!(env.count("gpu_slow"), 0);

    // A worker: the body is stopped after its timeout, and the run fails the same way.
    let run = env.spawn(&["run", "remote_timeout", "--input", &input]);
    // (It may time out before the worker comes: then the worker finds nothing.)
    wait_for_node(&env, "2", "1", |n| !n["attempts"].as_array().is_none_or(Vec::is_empty));
    let started = Instant::now();
    let worker = worker_once(&env, "gpu");
    assert!(started.elapsed() < Duration::from_secs(5), "the worker waited for the body: {}", text(&worker));
    let out = finish(run);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("attempt timed out after 300ms"), "{}", text(&out));
}

#[test]
fn a_body_on_a_worker_cannot_spawn_and_says_why() {
    let env = Env::new();
    let input = json!({"dir": env.dir()}).to_string();
    let run = env.spawn(&["run", "remote_spawner", "--input", &input]);
    wait_for_node(&env, "1", "1", |n| n["node"]["state"] == "running");
    worker_once(&env, "gpu");

    let out = finish(run);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "node 1 of run 1 ran on a worker of queue `gpu`, where a body cannot spawn child nodes (it spawned `one`)"
        ),
        "{err}"
    );
    assert_eq!(env.count("gpu_spawner"), 1, "a refused body is not retried");
    let node = env.json(&["show", "1", "1"]);
    assert_eq!(node["node"]["state"], "failed", "{node}");
}

#[test]
fn a_worker_of_the_default_queue_is_refused() {
    let env = Env::new();
    let out = env.run(&["worker", "--queue", "default", "--once"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("queue `default` is run by each run's own executor"), "{}", text(&out));
}
