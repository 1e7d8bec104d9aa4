//! Durability: a killed orchestrator, `recover`, `rerun --from` and `run-one`.

use std::time::{Duration, Instant};

use crate::support::{Env, pipeline_input, stderr, text};

const STEPS: [&str; 5] = ["a", "b", "c1", "c2", "c3"];

/// Starts a slow pipeline, SIGKILLs the orchestrator once `b` has started, and recovers.
fn kill_and_recover(executor: &str) {
    let env = Env::new();
    let input = pipeline_input(&env.dir(), 400, false);
    let mut child = env.cmd(&["run", "pipeline", "--input", &input, "--executor", executor]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.count("b") == 0 {
        assert!(Instant::now() < deadline, "b never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Another process reads the run while it is written.
    let during = env.show(1);
    assert_eq!(during["run"]["state"], "running");
    child.kill().unwrap();
    child.wait().unwrap();

    // Once the killed orchestrator's lease expires, its run reads as interrupted.
    let after_kill = env.wait_for_state(1, "interrupted");
    let succeeded: Vec<String> = after_kill["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "succeeded")
        .map(|n| n["args"][1][1]["value"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(succeeded.contains(&"a".to_string()), "{after_kill}");

    // The run keeps its executor: `recover` is given none.
    let out = env.run(&["recover", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");
    let show = env.show(1);
    assert_eq!(show["run"]["executor"], executor);
    let attempts = show["attempts"].as_array().unwrap();
    assert!(attempts.iter().all(|a| a["state"] != "running"), "attempts cut by the kill are closed: {show}");
    assert!(attempts.iter().all(|a| a["executor"] == executor), "{show}");
    for step in STEPS {
        let n = env.count(step);
        if succeeded.iter().any(|s| s == step) {
            assert_eq!(n, 1, "{executor}: `{step}` had succeeded before the kill but ran {n} times");
        } else {
            assert!((1..=2).contains(&n), "{executor}: `{step}` ran {n} times");
        }
    }
    assert_eq!(env.count("total"), 1);
    assert_eq!(env.show(1)["run"]["state"], "succeeded");
}

#[test]
fn a_killed_inline_run_recovers_without_redoing_finished_work() {
    kill_and_recover("inline");
}

#[test]
fn a_killed_process_run_recovers_without_redoing_finished_work() {
    kill_and_recover("process");
}

#[test]
fn a_killed_pool_run_recovers_without_redoing_finished_work() {
    kill_and_recover("pool");
}

#[test]
fn recover_runs_only_what_did_not_succeed() {
    let env = Env::new();
    let out = env.run(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 0, true)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("asked to fail"), "{}", text(&out));
    let out = env.run(&["recover", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for step in STEPS {
        assert_eq!(env.count(step), 1, "{step}");
    }
    assert_eq!(env.count("total"), 1);
    assert_eq!(env.count("maybe_fail"), 2);
}

#[test]
fn a_parent_is_not_retried_for_a_child_that_failed_for_good() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "doomed", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(env.count("maybe_fail"), 1);
    let show = env.show(1);
    let root: Vec<_> = show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == 0).collect();
    assert_eq!(root.len(), 1, "{show}");
    assert_eq!(root[0]["error"]["kind"], "fatal");
}

#[test]
fn rerun_from_a_node_runs_it_and_its_downstream_only() {
    let env = Env::new();
    assert!(env.run(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 0, false)]).status.success());
    let out = env.run(&["rerun", "1", "--from", "total"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");
    for step in STEPS {
        assert_eq!(env.count(step), 1, "{step} is upstream of total and must not run again");
    }
    assert_eq!(env.count("total"), 2);
    assert_eq!(env.count("maybe_fail"), 2);

    // From `a` (node 1): b depends on it by a data edge, so both run again.
    let out = env.run(&["rerun", "1", "--from", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.count("a"), 2);
    assert_eq!(env.count("b"), 2);
}

#[test]
fn run_one_runs_exactly_one_node() {
    let env = Env::new();
    assert!(env.run(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 0, false)]).status.success());
    let out = env.run(&["run-one", "1", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.count("b"), 2);
    for step in ["a", "c1", "c2", "c3", "total", "maybe_fail"] {
        assert_eq!(env.count(step), 1, "{step}");
    }
}

#[test]
fn run_one_refuses_a_node_whose_upstream_did_not_succeed() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "broken_chain", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = env.run(&["run-one", "1", "step"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("upstream has not succeeded"), "{}", text(&out));
    assert_eq!(env.count("after"), 0);
    assert_eq!(env.show(1)["run"]["state"], "failed");

    let out = env.run(&["run-one", "1", "99"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn rerun_from_a_node_whose_value_a_parent_passed_on_runs_the_receiver_again() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "by_value", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    // `runs_so_far` gives 2 when it runs again; the root passes it on by value to `echo`.
    let out = env.run(&["rerun", "1", "--from", "runs_so_far"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert_eq!(env.count("echo"), 2);
    let show = env.show(1);
    assert_eq!(show["nodes"][2]["args"][2][1]["value"], 2, "the new argument is stored: {show}");
}
