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

/// Executions of `tiny`: one line each, its index.
fn executions(env: &Env) -> u64 {
    std::fs::read_to_string(env.work.join("tiny")).map(|s| s.lines().count() as u64).unwrap_or(0)
}

/// How many times `tiny(i)` ran, for each `i`.
fn executions_of_each(env: &Env) -> Vec<u32> {
    let mut counts = vec![0u32; FAN as usize];
    for line in std::fs::read_to_string(env.work.join("tiny")).unwrap().lines() {
        counts[line.parse::<usize>().unwrap()] += 1;
    }
    counts
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
fn a_large_run_killed_half_way_is_recovered_without_running_finished_work_again() {
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
    for a in show["attempts"].as_array().unwrap() {
        let node = a["node"].as_u64().unwrap() as usize;
        if a["state"] == "succeeded" {
            succeeded[node] += 1;
        }
    }
    assert!(succeeded.iter().all(|&n| n == 1), "a node succeeded twice or never");
    // What was recorded as finished before the kill never ran again: `tiny(i)` is node i + 1.
    let counts = executions_of_each(&env);
    let finished: Vec<usize> = killed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "succeeded" && n["id"].as_u64() != Some(0))
        .map(|n| n["id"].as_u64().unwrap() as usize - 1)
        .collect();
    let redone: Vec<usize> = finished.iter().copied().filter(|&i| counts[i] != 1).collect();
    assert!(redone.is_empty(), "finished before the kill, yet ran again: {redone:?}");
    assert!(counts.iter().all(|&c| c >= 1), "a task never ran");
    // Only what was in flight or not yet committed at the kill ran again: a handful, not a
    // share of the run.
    let again = counts.iter().filter(|&&c| c > 1).count();
    assert!(again < 200, "{again} tasks ran again ({} executions of {FAN})", executions(&env));
}
