//! Failing attempts: retries, timeouts, panics, and node processes that break the protocol.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{EXECUTORS, Env, alive, stderr, text};

fn attempts_of(show: &Value, task: &str) -> Vec<Value> {
    let node = show["nodes"].as_array().unwrap().iter().find(|n| n["task"] == task).unwrap()["id"].clone();
    show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == node).cloned().collect()
}

#[test]
fn a_failed_attempt_is_retried_and_both_attempts_are_recorded() {
    for executor in EXECUTORS {
        let env = Env::new();
        let input = serde_json::json!({"dir": env.dir()}).to_string();
        let out = env.run(&["run", "retry_once", "--input", &input, "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
        assert_eq!(env.count("flaky"), 2);
        let attempts = attempts_of(&env.show(1), "flaky");
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_eq!(attempts[0]["state"], "failed");
        assert_eq!(attempts[0]["error"]["message"], "first attempt fails on purpose");
        assert_eq!(attempts[1]["state"], "succeeded");
        assert_eq!(attempts[1]["executor"], executor);
    }
}

#[test]
fn a_timeout_kills_the_attempt_and_its_process_group() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let started = Instant::now();
    let out = env.run(&["run", "timeout", "--input", &input, "--executor", "process"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(stderr(&out).contains("timed out after 300ms"), "{}", text(&out));
    let pid: i32 = std::fs::read_to_string(env.work.join("grandchild.pid")).unwrap().trim().parse().unwrap();
    // The task's own child process was in the killed group.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the attempt's child process {pid} survived the timeout");
    let attempts = attempts_of(&env.show(1), "hang");
    assert_eq!(attempts[0]["error"]["kind"], "timeout");
}

#[test]
fn an_inline_timeout_stops_the_body() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let started = Instant::now();
    let out = env.run(&["run", "timeout", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    let _ = std::fs::read_to_string(env.work.join("grandchild.pid")).map(|p| {
        let _ = std::process::Command::new("kill").arg(p.trim()).status();
    });
}

#[test]
fn a_panicking_task_fails_its_attempt_not_the_orchestrator() {
    for executor in EXECUTORS {
        let env = Env::new();
        let out = env.run(&["run", "panics", "--executor", executor]);
        assert_eq!(out.status.code(), Some(1), "{executor}: {}", text(&out));
        assert!(stderr(&out).contains("boom on purpose"), "{executor}: {}", text(&out));
        let show = env.show(1);
        assert_eq!(show["run"]["state"], "failed");
        assert_eq!(attempts_of(&show, "explode")[0]["error"]["kind"], "panic");
    }
}

#[test]
fn a_node_process_that_exits_early_is_a_protocol_error() {
    let env = Env::new();
    let out = env.run(&["run", "exits", "--executor", "process"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let attempts = attempts_of(&env.show(1), "vanish");
    assert_eq!(attempts[0]["error"]["kind"], "protocol");
    let message = attempts[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited before reporting a result") && message.contains('7'), "{message}");
}

#[test]
fn a_misbehaving_node_process_fails_one_attempt_and_the_retry_succeeds() {
    for (kind, says) in [
        ("garbage", "not a protocol message"),
        ("unknown", "not a protocol message"),
        ("oversized", "over the"),
        ("early_exit", "exited before reporting a result"),
        ("bad_hello", "expected hello with protocol 2"),
    ] {
        let env = Env::new();
        let input = serde_json::json!({"dir": env.dir()}).to_string();
        let out = env
            .cmd(&["run", "sturdy", "--input", &input, "--executor", "process"])
            .env("FLOWS_FAKE_NODE", kind)
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{kind}");
        let attempts = attempts_of(&env.show(1), "sturdy");
        assert_eq!(attempts.len(), 2, "{kind}: {attempts:?}");
        assert_eq!(attempts[0]["error"]["kind"], "protocol", "{kind}");
        let message = attempts[0]["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{kind}: {message}");
        assert_eq!(attempts[1]["state"], "succeeded");
    }
}

#[test]
fn cancel_stops_a_run_from_another_process() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let mut child = env.cmd(&["run", "sleepy", "--input", &input, "--executor", "process"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.count("sleepy") == 0 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = env.run(&["cancel", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "run 1 cancelled");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "cancelled");
    assert!(show["nodes"].as_array().unwrap().iter().all(|n| n["state"] == "cancelled"), "{show}");
}

#[test]
fn ctrl_c_cancels_the_run() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let child = env.cmd(&["run", "sleepy", "--input", &input]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.count("sleepy") == 0 {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "cancelled");
    assert!(show["run"]["error"]["message"].as_str().unwrap().contains("Ctrl-C"));
}

#[test]
fn a_pool_process_that_dies_fails_only_its_attempt() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "crowd", "--input", &input, "--executor", "pool", "--parallelism", "8"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "121");
    // The six steps beside it ran once each: the crash took nothing else down.
    for i in 0..6 {
        assert_eq!(env.count(&format!("crowd{i}")), 1, "crowd{i}");
    }
    let attempts = attempts_of(&env.show(1), "vanish_once");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["error"]["kind"], "protocol");
    let message = attempts[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited before reporting a result") && message.contains('7'), "{message}");
    assert_eq!(attempts[1]["state"], "succeeded");
    assert_eq!(attempts[1]["executor"], "pool");
}

#[test]
fn a_pool_survives_a_process_that_speaks_garbage() {
    for kind in ["garbage", "unknown", "oversized", "early_exit", "bad_hello"] {
        let env = Env::new();
        let input = serde_json::json!({"dir": env.dir()}).to_string();
        let out = env
            .cmd(&["run", "sturdy", "--input", &input, "--executor", "pool", "--pool-size", "1"])
            .env("FLOWS_FAKE_NODE", kind)
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{kind}");
        let attempts = attempts_of(&env.show(1), "sturdy");
        // The broken process either took the first attempt with it or died before it had one.
        for failed in attempts.iter().filter(|a| a["state"] == "failed") {
            assert_eq!(failed["error"]["kind"], "protocol", "{kind}: {attempts:?}");
        }
        assert_eq!(attempts.last().unwrap()["state"], "succeeded", "{kind}");
    }
}

#[test]
fn a_timed_out_attempt_is_stopped_on_every_process_executor() {
    // `timeout` awaits (it stops when asked); `blocked` blocks its thread (its process is
    // killed). Either way the attempt ends and the process it started is gone.
    for (executor, workflow) in [("process", "blocked"), ("pool", "timeout"), ("pool", "blocked")] {
        let env = Env::new();
        let input = serde_json::json!({"dir": env.dir()}).to_string();
        let started = Instant::now();
        let out = env.run(&["run", workflow, "--input", &input, "--executor", executor]);
        assert_eq!(out.status.code(), Some(1), "{executor} {workflow}: {}", text(&out));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(stderr(&out).contains("timed out after 300ms"), "{}", text(&out));
        let pid: i32 = std::fs::read_to_string(env.work.join("grandchild.pid")).unwrap().trim().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "{executor} {workflow}: the attempt's child process {pid} survived the timeout");
    }
}

#[test]
fn null_outputs_cross_every_executor_exactly() {
    for executor in EXECUTORS {
        let env = Env::new();
        let out = env.run(&["run", "nulls", "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            r#""() None 60 {\"a\":null,\"b\":[null,{\"c\":null}]}""#,
            "{executor}"
        );
    }
}

/// Stops the orchestrator with `signal` while a task's shell runs; the shell must not
/// finish its side effect, and `recover` runs the task once more.
fn stop_mid_side_effect(executor: &str, signal: &str) {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let child = env.spawn(&["run", "effects", "--input", &input, "--executor", executor]);
    env.wait_for_marker("side_started");
    std::thread::sleep(Duration::from_millis(200));
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    // The shell would have written its marker 1.5 s after it started.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !env.work.join("side_effect").exists(),
        "{executor} {signal}: a process the task started outlived the orchestrator: {}",
        text(&out)
    );
    let state = env.show(1)["run"]["state"].clone();
    assert!(state == "interrupted" || state == "cancelled", "{executor} {signal}: {state}");
    let out = env.run(&["recover", "1"]);
    assert!(out.status.success(), "{executor} {signal}: {}", text(&out));
    assert_eq!(std::fs::read_to_string(env.work.join("side_effect")).unwrap().lines().count(), 1);
}

#[test]
fn a_killed_orchestrator_takes_the_processes_of_its_tasks_with_it() {
    for executor in ["process", "pool"] {
        stop_mid_side_effect(executor, "-KILL");
    }
}

#[test]
fn sigterm_stops_a_run_like_ctrl_c() {
    for executor in EXECUTORS {
        stop_mid_side_effect(executor, "-TERM");
    }
}
