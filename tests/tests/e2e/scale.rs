//! Large runs: reading a run of many nodes, and recovering one killed half-way.
//!
//! The runs here have 20 000 nodes, which a debug build builds in a few seconds; with a release
//! build the same commands handle 100 000 (`FAN` only sets the size of the test).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Env, text};

/// How many tasks the workflow `fan` spawns in these tests.
const FAN: u64 = 20_000;

/// The sum of `0..n`: what `fan` returns.
fn sum_below(n: u64) -> u64 {
    n * (n - 1) / 2
}

/// Executions of `tiny`: one byte each.
fn executions(env: &Env) -> u64 {
    std::fs::metadata(env.work.join("tiny")).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn show_graph_and_runs_read_a_run_of_many_nodes() {
    let env = Env::new();
    let input = json!({"dir": env.dir(), "n": FAN}).to_string();
    let out = env.run(&["run", "fan", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sum_below(FAN).to_string());
    assert_eq!(executions(&env), FAN);

    let show = env.show(1);
    let nodes = show["nodes"].as_array().unwrap();
    assert_eq!(nodes.len() as u64, FAN + 1);
    assert!(nodes.iter().all(|n| n["state"] == "succeeded"));
    assert_eq!(show["attempts"].as_array().unwrap().len() as u64, FAN + 1);

    let out = env.run(&["show", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("run 1  workflow fan  SUCCEEDED"), "{}", &shown[..200.min(shown.len())]);

    let graph = env.json(&["graph", "1", "--format", "json"]);
    assert_eq!(graph["nodes"].as_array().unwrap().len() as u64, FAN + 1);
    assert_eq!(graph["run"]["state"], "succeeded");

    let runs = env.json(&["runs"]);
    assert_eq!(runs["runs"][0]["id"], 1);
    assert_eq!(runs["runs"][0]["state"], "succeeded");
}

#[test]
fn a_large_run_killed_half_way_is_recovered_without_running_anything_twice() {
    let env = Env::new();
    let input = json!({"dir": env.dir(), "n": FAN}).to_string();
    let parallelism = 8;
    // Its progress lines are not read: they must not fill a pipe and stall it.
    let mut child = env
        .cmd(&["run", "fan", "--input", &input, "--parallelism", &parallelism.to_string()])
        // Slow enough to be stopped half-way, whatever the machine.
        .env("FLOWS_TINY_US", "1000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while executions(&env) < 3_000 {
        assert!(Instant::now() < deadline, "the fan-out never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = executions(&env);
    assert!(before < FAN, "the run finished before it was killed");

    let killed = env.wait_for_state(1, "interrupted");
    let done_before = killed["nodes"].as_array().unwrap().iter().filter(|n| n["state"] == "succeeded").count();
    assert!(done_before > 0, "nothing was recorded before the kill");

    let out = env.run(&["recover", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sum_below(FAN).to_string());

    let show = env.show(1);
    let nodes = show["nodes"].as_array().unwrap();
    assert_eq!(nodes.len() as u64, FAN + 1, "the replay spawned nodes again");
    assert!(nodes.iter().all(|n| n["state"] == "succeeded"));
    // Every node succeeded exactly once.
    let mut succeeded = vec![0u32; nodes.len()];
    let mut attempts = vec![0u32; nodes.len()];
    for a in show["attempts"].as_array().unwrap() {
        let node = a["node"].as_u64().unwrap() as usize;
        attempts[node] += 1;
        if a["state"] == "succeeded" {
            succeeded[node] += 1;
        }
    }
    assert!(succeeded.iter().all(|&n| n == 1), "a node succeeded twice or never");
    // Only the tasks in flight at the kill ran again: at most one slot's worth each.
    let again: Vec<usize> = (1..nodes.len()).filter(|&i| attempts[i] > 1).collect();
    assert!(again.len() <= parallelism, "{} tasks ran again: {again:?}", again.len());
    let total = executions(&env);
    assert!(
        total >= FAN && total <= FAN + again.len() as u64,
        "{total} executions of {FAN} tasks, {} retried",
        again.len()
    );
}
