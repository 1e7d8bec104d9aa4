//! The growing graph: promises kept and broken, control edges, loops, signals, pause.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{EXECUTORS, Env, stderr, text};

fn run_promised(kind: &str, keep: bool) -> (Env, std::process::Output) {
    let env = Env::new();
    let input = json!({"kind": kind, "keep": keep}).to_string();
    let out = env.run(&["run", "promised", "--input", &input]);
    (env, out)
}

#[test]
fn every_promise_kind_is_kept_or_breaks_the_run() {
    for (kind, promise, mutation) in [
        ("no new nodes", "no new nodes", "spawning `two`"),
        ("no new edges", "no new edges", "spawning `two`"),
        ("only tasks", "only tasks one, two", "spawning `three`"),
        ("only edges between", "only edges between one, two", "spawning `three`"),
        ("no edges out of", "no edges out of one", "adding edge 1 (`one`) -> 2 (`two`)"),
        ("no edges into", "no edges into two", "spawning `two`"),
        ("shape", "one -> two* -> three", "spawning `one`"),
        ("unfinished shape", "one -> two", "finishing while the shape still needs `two`"),
    ] {
        let (env, out) = run_promised(kind, true);
        assert!(out.status.success(), "{kind} kept: {}", text(&out));
        assert_eq!(env.show(1)["run"]["state"], "succeeded", "{kind}");

        let (env, out) = run_promised(kind, false);
        assert_eq!(out.status.code(), Some(1), "{kind} broken: {}", text(&out));
        let show = env.show(1);
        assert_eq!(show["run"]["state"], "terminated", "{kind}");
        let message = show["run"]["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("broken promise `{promise}`")), "{kind}: {message}");
        assert!(message.contains(mutation), "{kind}: {message}");
        assert!(message.contains("declared by node 0"), "{kind}: {message}");
        assert!(stderr(&out).contains("terminated"), "{kind}: {}", text(&out));
        // The breaking mutation was not applied, and nothing is left running.
        let nodes = show["nodes"].as_array().unwrap();
        assert!(nodes.iter().all(|n| n["state"] != "running" && n["state"] != "pending"), "{kind}: {show}");
        if kind != "unfinished shape" && kind != "no edges out of" {
            assert!(
                !nodes
                    .iter()
                    .any(|n| n["task"] == mutation.trim_start_matches("spawning `").trim_end_matches('`')
                        && n["id"] != 1),
                "{kind}: the breaking spawn was applied: {show}"
            );
        }
        // The promise is listed with the run.
        assert_eq!(show["promises"][0]["text"], promise, "{kind}");
    }
}

#[test]
fn a_promise_that_does_not_parse_fails_the_node_clearly() {
    let env = Env::new();
    let out = env.run(&["run", "promised", "--input", r#"{"kind": "nope", "keep": true}"#]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown promise kind"), "{}", text(&out));
}

#[test]
fn control_edges_order_nodes_and_bad_ones_are_refused() {
    let env = Env::new();
    let input = json!({"case": "order", "dir": env.dir()}).to_string();
    let out = env.run(&["run", "edges", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));
    let graph = env.json(&["graph", "1", "--format", "json"]);
    let control: Vec<&Value> = graph["edges"].as_array().unwrap().iter().filter(|e| e["kind"] == "control").collect();
    assert_eq!(control.len(), 1, "{graph}");
    assert_eq!((control[0]["from"].as_u64(), control[0]["to"].as_u64()), (Some(1), Some(2)));
    let show = env.show(1);
    let slow_done = show["nodes"][1]["finished_at"].as_i64().unwrap();
    let fast_start = show["nodes"][2]["started_at"].as_i64().unwrap();
    assert!(fast_start >= slow_done, "the control edge did not hold: {show}");

    for (case, says) in [
        ("started", "cannot add edge 2 (`two`) -> 1 (`one`): node 1 has already succeeded"),
        ("cycle", "cannot add edge 2 (`two`) -> 1 (`one`): it would close a cycle"),
    ] {
        let env = Env::new();
        let input = json!({"case": case, "dir": env.dir()}).to_string();
        let out = env.run(&["run", "edges", "--input", &input]);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
        let show = env.show(1);
        let root_error = show["attempts"].as_array().unwrap().iter().find(|a| a["node"] == 0).unwrap()["error"].clone();
        assert_eq!(root_error["kind"], "graph", "{case}: {show}");
        assert!(root_error["message"].as_str().unwrap().contains(says), "{case}: {root_error}");
    }
}

#[test]
fn a_task_not_marked_spawns_cannot_grow_the_graph() {
    let env = Env::new();
    let out = env.run(&["run", "sneaks"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("write `#[task(spawns)]` on `sneaky`"), "{}", text(&out));
}

#[test]
fn a_loop_is_a_chain_of_iterations_and_a_cycle_when_collapsed() {
    let env = Env::new();
    let out = env.run(&["run", "countdown", "--input", r#"{"n": 4}"#]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
    let graph = env.json(&["graph", "1", "--format", "json"]);
    let labels: Vec<&str> = graph["nodes"].as_array().unwrap().iter().map(|n| n["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["countdown", "tick 4", "tick 3", "tick 2", "tick 1", "tick 0"]);
    let collapsed = env.json(&["graph", "1", "--collapse"]);
    let tasks = collapsed["tasks"].as_array().unwrap();
    assert!(tasks.contains(&json!({"task": "tick", "nodes": 5})), "{collapsed}");
    let edges = collapsed["edges"].as_array().unwrap();
    assert!(edges.contains(&json!({"from": "tick", "to": "tick", "kind": "spawns", "count": 4})), "{collapsed}");
    let dot = String::from_utf8(env.run(&["graph", "1", "--collapse"]).stdout).unwrap();
    assert!(dot.contains("loop ×4"), "{dot}");
}

fn wait_until(env: &Env, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.run(&["show", "1", "--json"]);
        if out.status.success() {
            let show: Value = serde_json::from_slice(&out.stdout).unwrap();
            if check(&show) {
                return show;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the run reads: {}",
            String::from_utf8_lossy(&env.run(&["show", "1"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_signal_wakes_a_parked_node_and_bad_values_are_refused() {
    for executor in EXECUTORS {
        let env = Env::new();
        let child = env
            .cmd(&["run", "waits", "--input", r#"{"timeout_ms": 0}"#, "--executor", executor])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let show = wait_until(&env, "the node to park", |s| !s["waits"].as_array().unwrap().is_empty());
        assert_eq!(show["nodes"][0]["state"], "waiting", "{show}");
        assert_eq!(show["waits"][0]["name"], "number");

        let out = env.run(&["signal", "1", "number", r#""forty""#]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr(&out).contains("does not match the type"), "{}", text(&out));
        let out = env.run(&["signal", "1", "other", "1"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr(&out).contains("waits for: number"), "{}", text(&out));

        let out = env.run(&["signal", "1", "number", "40"]);
        assert!(out.status.success(), "{}", text(&out));
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
        let show = env.show(1);
        // The parked attempt, then the replay that got the signal.
        let root: Vec<&Value> = show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == 0).collect();
        assert_eq!(root.len(), 2, "{show}");
        assert_eq!(root[0]["state"], "waiting");
        assert_eq!(root[1]["state"], "succeeded");
        // `one` ran once: the replay bound to it.
        assert_eq!(show["nodes"].as_array().unwrap().len(), 3);
    }
}

#[test]
fn a_wait_with_a_timeout_takes_its_default() {
    let env = Env::new();
    let out = env.run(&["run", "waits", "--input", r#"{"timeout_ms": 200}"#]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "9");
}

#[test]
fn pause_holds_new_nodes_and_resume_lets_them_run() {
    let env = Env::new();
    // `a` takes two seconds: the pause is seen while it runs.
    let input = crate::support::pipeline_input(&env.dir(), 2000, false);
    let child = env.spawn(&["run", "pipeline", "--input", &input]);
    env.wait_for_marker("a");
    let out = env.run(&["pause", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_until(&env, "the run to pause", |s| s["run"]["state"] == "paused");
    // `a` finishes while the run is paused, but `b` does not start.
    wait_until(&env, "`a` to finish", |s| s["nodes"][1]["state"] == "succeeded");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(env.count("b"), 0);
    assert_eq!(env.show(1)["nodes"][2]["state"], "ready");
    let out = env.run(&["resume", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.count("b"), 1);
}

#[test]
fn the_graph_of_a_running_run_has_wildcards_after_nodes_that_may_still_grow_it() {
    let env = Env::new();
    let input = crate::support::pipeline_input(&env.dir(), 400, false);
    let child = env.spawn(&["run", "pipeline", "--input", &input]);
    env.wait_for_marker("a");
    env.wait_until(1, "the root to wait for `b`", |s| s["nodes"][0]["state"] == "waiting");
    // Read from another process while the run writes: the root may still spawn anything once
    // `b` (node 2, after `a`) ends, so its wildcard hangs after `b`, as in the plan; the steps,
    // which are not marked `spawns`, cannot.
    let graph = env.json(&["graph", "1", "--format", "json"]);
    assert_eq!(graph["run"]["state"], "running");
    assert_eq!(graph["wildcards"], json!([{"after": 2, "owner": 0, "may_add": "*"}]), "{graph}");
    let plan = env.json(&["graph", "pipeline", "--plan", "--input", &input, "--format", "json"]);
    assert_eq!(plan["wildcards"], graph["wildcards"], "{plan}");
    let dot = String::from_utf8(env.run(&["graph", "1"]).stdout).unwrap();
    assert!(dot.contains("w0 [label=\"*\"") && dot.contains("n2 -> w0"), "{dot}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.json(&["graph", "1", "--format", "json"])["wildcards"], json!([]));
}

#[test]
#[ignore = "needs Graphviz's `dot` (run with --include-ignored; .ci/run does)"]
fn graphs_render_as_svg_with_graphviz() {
    let env = Env::new();
    let out = env.run(&["run", "countdown", "--input", r#"{"n": 2}"#]);
    assert!(out.status.success(), "{}", text(&out));
    let out = env.run(&["graph", "1", "--format", "svg"]);
    assert!(out.status.success(), "graphviz `dot` must be installed (.ci/run installs it): {}", text(&out));
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.contains("<svg") && svg.contains("tick 2"), "{svg}");
}

#[test]
fn show_lists_promises_and_what_a_parked_node_waits_for() {
    let env = Env::new();
    let (env2, _) = run_promised("shape", true);
    let show = String::from_utf8(env2.run(&["show", "1"]).stdout).unwrap();
    assert!(show.contains("promise   `one -> two* -> three` over node 0"), "{show}");
    let child = env.spawn(&["run", "waits", "--input", r#"{"timeout_ms": 0}"#]);
    wait_until(&env, "the node to park", |s| !s["waits"].as_array().unwrap().is_empty());
    let show = String::from_utf8(env.run(&["show", "1"]).stdout).unwrap();
    assert!(show.contains("waiting   node 0 waits for signal `number`"), "{show}");
    assert!(env.run(&["signal", "1", "number", "1"]).status.success());
    assert!(child.wait_with_output().unwrap().status.success());
}

#[test]
fn a_signal_sent_while_the_orchestrator_is_gone_is_kept_for_recover() {
    let env = Env::new();
    let mut child = env.spawn(&["run", "waits", "--input", r#"{"timeout_ms": 0}"#, "--executor", "process"]);
    wait_until(&env, "the node to park", |s| !s["waits"].as_array().unwrap().is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    env.wait_for_state(1, "interrupted");
    let out = env.run(&["signal", "1", "number", "40"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("`recover 1` resumes it"), "{}", text(&out));
    let out = env.run(&["recover", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // `one` ran before the kill and was not run again.
    let show = env.show(1);
    let one: Vec<&Value> = show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == 1).collect();
    assert_eq!(one.len(), 1, "{show}");
}

#[test]
fn a_durable_sleep_parks_the_node_and_survives_a_killed_orchestrator() {
    let env = Env::new();
    let started = Instant::now();
    let out = env.run(&["run", "naps", "--input", r#"{"ms": 300}"#, "--executor", "process"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let show = env.show(1);
    let root: Vec<&Value> = show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == 0).collect();
    assert_eq!(root.len(), 2, "parked, then replayed: {show}");
    assert_eq!(root[0]["state"], "waiting");

    // Killed while it sleeps: `recover` keeps the original wake-up time.
    let env = Env::new();
    let mut child = env.spawn(&["run", "naps", "--input", r#"{"ms": 1500}"#]);
    wait_until(&env, "the node to sleep", |s| !s["waits"].as_array().unwrap().is_empty());
    let shown = String::from_utf8(env.run(&["show", "1"]).stdout).unwrap();
    assert!(shown.contains("waiting   node 0 sleeps for another"), "{shown}");
    let out = env.run(&["signal", "1", "salt.sleep", "null"]);
    assert_eq!(out.status.code(), Some(2), "a sleep is not a signal: {}", text(&out));
    child.kill().unwrap();
    child.wait().unwrap();
    env.wait_for_state(1, "interrupted");
    let out = env.run(&["recover", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    assert!(started.elapsed() >= Duration::from_millis(1800));
}

#[test]
fn a_node_awaiting_a_long_child_gives_up_its_process_and_is_replayed() {
    let env = Env::new();
    let input = crate::support::pipeline_input(&env.dir(), 500, false);
    let out = env
        .cmd(&["run", "pipeline", "--input", &input, "--executor", "process"])
        .env("SALT_PARK_AFTER_MS", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");
    // Every step ran once: the replays bound to the nodes already spawned.
    for step in ["a", "b", "c1", "c2", "c3", "total", "maybe_fail"] {
        assert_eq!(env.count(step), 1, "{step}");
    }
    let show = env.show(1);
    let root: Vec<&Value> = show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == 0).collect();
    assert!(root.len() >= 2, "the root was parked at least once: {show}");
    assert!(root[..root.len() - 1].iter().all(|a| a["state"] == "waiting"), "{show}");
    assert_eq!(root.last().unwrap()["state"], "succeeded");
}
