//! No way around a promise: task calls from `tokio::spawn` are nodes like any other, and a body
//! that broke a promise does no more work.

use serde_json::json;

use crate::support::{EXECUTORS, Env, stderr, text};

#[test]
fn a_task_called_inside_tokio_spawn_is_a_node_of_its_caller() {
    for executor in EXECUTORS {
        let env = Env::new();
        let input = json!({"dir": env.dir(), "promise": false}).to_string();
        let out = env.run(&["run", "spawned_call", "--input", &input, "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{executor}");
        let graph = env.json(&["graph", "1", "--format", "json"]);
        let nodes: Vec<(u64, &str, Option<u64>)> = graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_u64().unwrap(), n["task"].as_str().unwrap(), n["parent"].as_u64()))
            .collect();
        assert_eq!(nodes, [(0, "spawned_call", None), (1, "step", Some(0))], "{executor}: {graph}");
        assert_eq!(graph["nodes"][1]["state"], "succeeded", "{executor}");
        assert_eq!((env.count("spawned"), env.count("after")), (1, 1), "{executor}");
    }
}

#[test]
fn a_promise_is_kept_through_tokio_spawn() {
    for executor in EXECUTORS {
        let env = Env::new();
        let input = json!({"dir": env.dir(), "promise": true}).to_string();
        let out = env.run(&["run", "spawned_call", "--input", &input, "--executor", executor]);
        assert_eq!(out.status.code(), Some(1), "{executor}: {}", text(&out));
        let show = env.show(1);
        assert_eq!(show["run"]["state"], "terminated", "{executor}: {show}");
        let message = show["run"]["error"]["message"].as_str().unwrap();
        assert!(message.contains("broken promise `no new nodes`"), "{executor}: {message}");
        assert!(message.contains("spawning `step` from node 0 (`spawned_call`)"), "{executor}: {message}");
        assert_eq!(show["nodes"].as_array().unwrap().len(), 1, "{executor}: {show}");
        assert_eq!((env.count("spawned"), env.count("after")), (0, 0), "{executor}");
    }
}

#[test]
fn a_body_that_broke_a_promise_does_no_more_work() {
    for executor in EXECUTORS {
        let env = Env::new();
        let input = json!({"dir": env.dir()}).to_string();
        let out = env.run(&["run", "breaks_then_works", "--input", &input, "--executor", executor]);
        assert_eq!(out.status.code(), Some(1), "{executor}: {}", text(&out));
        assert!(stderr(&out).contains("broken promise `no new nodes`"), "{executor}: {}", text(&out));
        let show = env.show(1);
        assert_eq!(show["run"]["state"], "terminated", "{executor}: {show}");
        assert_eq!(show["nodes"][0]["state"], "failed", "{executor}: {show}");
        // Stopped at its first `.await` after the spawn: the work after it never happened.
        assert_eq!((env.count("forbidden"), env.count("after_break")), (0, 0), "{executor}");
    }
}

#[test]
fn a_task_call_no_body_can_be_told_to_make_fails_clearly() {
    let env = Env::new();
    let input = json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "crowded_spawned_call", "--input", &input, "--executor", "inline"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("cannot be told which node calls it"), "{}", text(&out));
    // It did not run outside the graph.
    assert_eq!(env.count("spawned"), 0);
    let show = env.show(1);
    let tasks: Vec<&str> = show["nodes"].as_array().unwrap().iter().map(|n| n["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["crowded_spawned_call", "step"], "{show}");
}

#[test]
fn a_plan_that_its_run_would_refuse_says_so() {
    let env = Env::new();
    for (kind, promise, mutation) in [
        ("no new nodes", "no new nodes", "spawning `two`"),
        ("no new edges", "no new edges", "spawning `two`"),
        ("only tasks", "only tasks one, two", "spawning `three`"),
        ("only edges between", "only edges between one, two", "spawning `three`"),
        ("no edges out of", "no edges out of one", "adding edge 1 (`one`) -> 2 (`two`)"),
        ("no edges into", "no edges into two", "spawning `two`"),
        ("shape", "one -> two* -> three", "spawning `one`"),
    ] {
        let kept = json!({"kind": kind, "keep": true}).to_string();
        let plan = env.json(&["graph", "promised", "--plan", "--input", &kept, "--format", "json"]);
        assert_eq!(plan["promises"][0]["promise"], promise, "{kind}: {plan}");

        let broken = json!({"kind": kind, "keep": false}).to_string();
        let out = env.run(&["graph", "promised", "--plan", "--input", &broken]);
        assert_eq!(out.status.code(), Some(1), "{kind}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{kind}: nothing is drawn: {}", text(&out));
        let says = format!("the plan of `promised` is refused: broken promise `{promise}` (declared by node 0");
        assert!(stderr(&out).contains(&says), "{kind}: {}", text(&out));
        assert!(stderr(&out).contains(mutation), "{kind}: {}", text(&out));
    }

    let cycle = json!({"case": "cycle", "dir": env.dir()}).to_string();
    let out = env.run(&["graph", "edges", "--plan", "--input", &cycle, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out)
            .contains("the plan of `edges` is refused: cannot add edge 2 (`two`) -> 1 (`one`): it would close a cycle"),
        "{}",
        text(&out)
    );
    let order = json!({"case": "order", "dir": env.dir()}).to_string();
    let plan = env.json(&["graph", "edges", "--plan", "--input", &order, "--format", "json"]);
    assert_eq!(plan["edges"], json!([{"from": 1, "to": 2, "kind": "control", "label": null, "arg": null}]), "{plan}");

    let out = env.run(&["graph", "short_shape", "--plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("finishing while the shape still needs `two`"), "{}", text(&out));
}
