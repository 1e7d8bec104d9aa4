//! Durability: a killed orchestrator, `recover`, `rerun --from` and `run-one`.

use std::time::{Duration, Instant};

use crate::support::{Env, pipeline_input, stderr, text};

const STEPS: [&str; 5] = ["a", "b", "c1", "c2", "c3"];

/// Starts a slow pipeline, SIGKILLs the orchestrator once `b` has started, and recovers.
fn kill_and_recover(executor: &str) {
    kill_and_recover_in(&Env::new(), executor);
}

/// [`kill_and_recover`] on the database of `env`.
pub(crate) fn kill_and_recover_in(env: &Env, executor: &str) {
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
    // `echo` is called with another value: a new node replaces the old one, kept as superseded.
    let show = env.show(1);
    assert_eq!(show["nodes"][2]["state"], "superseded", "{show}");
    assert_eq!(show["nodes"][2]["args"][2][1]["value"], 1, "the old node keeps its arguments: {show}");
    assert_eq!(show["nodes"][3]["state"], "succeeded", "{show}");
    assert_eq!(show["nodes"][3]["args"][2][1]["value"], 2, "the new argument is stored: {show}");
}

/// A node as (id, task, state).
type Node = (u64, String, String);
/// An edge as (from, to, kind).
type Edge = (u64, u64, String);

/// The current graph of run 1 (`graph 1 --json`): its nodes as (id, task, state), and its data
/// and control edges as (from, to, kind). Every edge it draws joins two of its nodes.
fn current_graph(env: &Env, all: bool) -> (Vec<Node>, Vec<Edge>) {
    let graph = if all { env.json(&["graph", "1", "--all"]) } else { env.json(&["graph", "1"]) };
    let nodes: Vec<Node> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["task"].as_str().unwrap().into(), n["state"].as_str().unwrap().into()))
        .collect();
    let mut edges = Vec::new();
    for e in graph["edges"].as_array().unwrap() {
        let (from, to) = (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap());
        assert!(
            nodes.iter().any(|n| n.0 == from) && nodes.iter().any(|n| n.0 == to),
            "{e} joins hidden nodes: {graph}"
        );
        let kind = e["kind"].as_str().unwrap().to_string();
        if kind == "data" || kind == "control" {
            edges.push((from, to, kind));
        }
    }
    edges.sort();
    (nodes, edges)
}

fn node(id: u64, task: &str, state: &str) -> Node {
    (id, task.into(), state.into())
}

/// After a rerun, the run has nothing left for `recover` to do, and reads the same.
fn nothing_to_recover(env: &Env) {
    let before = current_graph(env, true);
    let out = env.run(&["recover", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("nothing to recover"), "{}", text(&out));
    assert_eq!(current_graph(env, true), before);
}

#[test]
fn a_rerun_that_flips_a_branch_takes_the_other_branch() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let side = |s: &str| std::fs::write(env.work.join("side"), s).unwrap();
    side("left");
    let out = env.run(&["run", "flip", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""left tail""#);
    let ok = "succeeded";
    let first = vec![node(0, "flip", ok), node(1, "which_side", ok), node(2, "left", ok), node(3, "tail", ok)];
    assert_eq!(current_graph(&env, false), (first, vec![(2, 3, "data".into())]));

    // The branch now goes the other way: `left` and `tail` are superseded, `right` is new.
    side("right");
    let out = env.run(&["rerun", "1", "--from", "which_side"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""right""#);
    assert_eq!(
        current_graph(&env, false),
        (vec![node(0, "flip", ok), node(1, "which_side", ok), node(4, "right", ok)], vec![])
    );
    let (all, edges) = current_graph(&env, true);
    assert_eq!(all[2], node(2, "left", "superseded"));
    assert_eq!(all[3], node(3, "tail", "superseded"));
    assert_eq!(edges, [(2, 3, "data".into())], "`--all` draws the old edges too");
    let dot = String::from_utf8_lossy(&env.run(&["graph", "1", "--all"]).stdout).into_owned();
    let drawn = r##"n2 [label="2: left\nsuperseded", fillcolor="#f7f7f7", tooltip="superseded", style="rounded,filled,dashed""##;
    assert!(dot.contains(drawn), "{dot}");
    let shown = String::from_utf8_lossy(&env.run(&["show", "1"]).stdout).into_owned();
    let tasks: Vec<&str> = shown.lines().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert!(!tasks.contains(&"tail") && tasks.contains(&"right"), "{shown}");
    assert!(shown.contains("2 superseded nodes not shown"), "{shown}");
    assert!(String::from_utf8_lossy(&env.run(&["show", "1", "--all"]).stdout).contains("superseded"));
    let stored = env.show(1);
    assert_eq!(stored["nodes"][2]["state"], "superseded", "`show --json` lists them: {stored}");
    assert_eq!(stored["run"]["state"], "succeeded");
    nothing_to_recover(&env);
    let out = env.run(&["rerun", "1", "--from", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("node 2 (`left`) of run 1 is superseded"), "{}", text(&out));

    // And back: new nodes again, with their own edge.
    side("left");
    let out = env.run(&["rerun", "1", "--from", "which_side"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""left tail""#);
    let again = vec![node(0, "flip", ok), node(1, "which_side", ok), node(5, "left", ok), node(6, "tail", ok)];
    assert_eq!(current_graph(&env, false), (again, vec![(5, 6, "data".into())]));
    assert_eq!((env.count("left"), env.count("right"), env.count("tail")), (2, 1, 2));
    nothing_to_recover(&env);
}

#[test]
fn a_rerun_that_shrinks_a_map_leaves_exactly_the_new_shape() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    std::fs::write(env.work.join("width.txt"), "3").unwrap();
    let out = env.run(&["run", "resize", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8", "0 + 1 + 4, and 3");
    let ok = "succeeded";
    let (nodes, edges) = current_graph(&env, false);
    assert_eq!(nodes.len(), 6);
    let control = |pairs: &[(u64, u64)]| pairs.iter().map(|(f, t)| (*f, *t, "control".to_string())).collect::<Vec<_>>();
    assert_eq!(edges, control(&[(2, 5), (3, 5), (4, 5)]));

    // One item now: two squares and the old count are superseded; the promised shape holds.
    std::fs::write(env.work.join("width.txt"), "1").unwrap();
    let out = env.run(&["rerun", "1", "--from", "width"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "0, and 1");
    assert_eq!(
        current_graph(&env, false),
        (
            vec![node(0, "resize", ok), node(1, "width", ok), node(2, "square", ok), node(6, "count", ok)],
            control(&[(2, 6)])
        )
    );
    let (all, _) = current_graph(&env, true);
    let gone: Vec<u64> = all.iter().filter(|n| n.2 == "superseded").map(|n| n.0).collect();
    assert_eq!(gone, [3, 4, 5]);
    let shown = String::from_utf8_lossy(&env.run(&["show", "1"]).stdout).into_owned();
    assert!(shown.contains("3 superseded nodes not shown"), "{shown}");
    assert_eq!(env.count("count"), 2);
    nothing_to_recover(&env);
}
