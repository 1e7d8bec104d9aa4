//! Runs changing hands: signals queued between waits, commands right after `cancel`, a run
//! whose orchestrator ended with an inline task.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::{Env, pipeline_input, text};

fn waits_open(show: &Value) -> bool {
    !show["waits"].as_array().unwrap().is_empty()
}

#[test]
fn signals_sent_between_two_waits_of_one_node_are_all_delivered_in_order() {
    for executor in ["inline", "process"] {
        let env = Env::new();
        let child = env.spawn(&["run", "collect", "--input", r#"{"n": 3}"#, "--executor", executor]);
        env.wait_until(1, "the first wait", waits_open);
        // Paused, the node that gets the first signal cannot start again to open its next
        // wait: the next signals come while no wait is open.
        assert!(env.run(&["pause", "1"]).status.success());
        let out = env.run(&["signal", "1", "number", "1"]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        env.wait_until(1, "the first signal to be taken", |s| !waits_open(s));
        for n in ["2", "3"] {
            let out = env.run(&["signal", "1", "number", n, "--json"]);
            assert!(out.status.success(), "{executor}: signal {n} was refused: {}", text(&out));
            let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(sent, json!({"run": 1, "signal": "number", "node": null}), "{executor}");
        }
        assert!(env.run(&["resume", "1"]).status.success());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(env.show(1)["run"]["output"], json!([1, 2, 3]), "{executor}");
    }
}

#[test]
fn signals_sent_in_a_quick_burst_are_all_delivered_in_order() {
    for executor in ["inline", "process"] {
        let env = Env::new();
        let child = env.spawn(&["run", "collect", "--input", r#"{"n": 5}"#, "--executor", executor]);
        env.wait_until(1, "the first wait", waits_open);
        for n in 1..=5 {
            let out = env.run(&["signal", "1", "number", &n.to_string()]);
            assert!(out.status.success(), "{executor}: signal {n}: {}", text(&out));
            std::thread::sleep(std::time::Duration::from_millis(40));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(env.show(1)["run"]["output"], json!([1, 2, 3, 4, 5]), "{executor}");
    }
}

#[test]
fn a_name_the_run_never_waited_for_is_still_refused() {
    let env = Env::new();
    let child = env.spawn(&["run", "collect", "--input", r#"{"n": 1}"#]);
    env.wait_until(1, "the wait", waits_open);
    let out = env.run(&["signal", "1", "numbr", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it waits for: number"), "{}", text(&out));
    assert!(env.run(&["signal", "1", "number", "1"]).status.success());
    assert!(child.wait_with_output().unwrap().status.success());
}

/// Starts a slow pipeline and cancels it once `b` has started.
fn cancelled_pipeline(env: &Env) {
    let child = env.spawn(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 300, false)]);
    env.wait_for_marker("b");
    let out = env.run(&["cancel", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(env.show(1)["run"]["state"], "cancelled");
}

#[test]
fn commands_that_take_over_a_cancelled_run_are_not_cancelled_again() {
    let env = Env::new();
    cancelled_pipeline(&env);
    let out = env.run(&["recover", "1"]);
    assert!(out.status.success(), "recover: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");
    assert_eq!(env.show(1)["run"]["state"], "succeeded");

    let env = Env::new();
    cancelled_pipeline(&env);
    let out = env.run(&["rerun", "1", "--from", "1"]);
    assert!(out.status.success(), "rerun: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");

    let env = Env::new();
    cancelled_pipeline(&env);
    let out = env.run(&["run-one", "1", "1"]);
    assert!(out.status.success(), "run-one: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert_eq!(env.show(1)["nodes"][1]["state"], "succeeded");
}

#[test]
fn cancelling_a_run_whose_root_is_parked_ends_every_node() {
    let env = Env::new();
    let input = json!({"dir": env.dir()}).to_string();
    let child = env
        .cmd(&["run", "parked", "--input", &input, "--executor", "process"])
        .env("SALT_PARK_AFTER_MS", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for_marker("long");
    // The root gave up its process while its long child runs.
    env.wait_until(1, "the root to park", |s| {
        s["attempts"].as_array().unwrap().iter().any(|a| a["node"] == 0 && a["state"] == "waiting")
    });
    let out = env.run(&["cancel", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "cancelled");
    for node in show["nodes"].as_array().unwrap() {
        let state = node["state"].as_str().unwrap();
        assert!(["succeeded", "failed", "cancelled", "skipped"].contains(&state), "a node is left {state}: {show}");
    }
    assert_eq!(show["nodes"][0]["state"], "cancelled", "{show}");
    assert_eq!(show["nodes"][2]["state"], "cancelled", "{show}");
}

#[test]
fn a_run_whose_inline_task_ended_the_process_reads_as_interrupted_with_a_way_out() {
    let env = Env::new();
    let out = env.run(&["run", "quits"]);
    // The task's `exit(0)` ended the orchestrator with it: nothing was printed.
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    // Once the lease of the orchestrator that is gone expires, the run reads as interrupted.
    let show = env.wait_for_state(1, "interrupted");
    assert_eq!(show["run"]["owner"], Value::Null, "{show}");
    let shown = String::from_utf8_lossy(&env.run(&["show", "1"]).stdout).into_owned();
    assert!(shown.contains("INTERRUPTED"), "{shown}");
    assert!(shown.contains("`recover 1` resumes it"), "{shown}");
    let runs = String::from_utf8_lossy(&env.run(&["runs"]).stdout).into_owned();
    assert!(runs.contains("interrupted"), "{runs}");
    assert!(runs.contains("run 1 was interrupted"), "{runs}");
    assert!(runs.contains("`recover 1` resumes it"), "{runs}");
}
