//! Fan-in by handle: a list (or an option) of handles passed as one argument.

use serde_json::{Value, json};

use crate::support::{EXECUTORS, Env, edge_set, stderr, text};

/// The input `show RUN NODE --input` prints for the node of task `task` of run 1.
fn input_of(env: &Env, task: &str) -> Value {
    let out = env.run(&["show", "1", task, "--input"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("the input as JSON")
}

fn tasks(graph: &Value) -> Vec<String> {
    graph["nodes"].as_array().unwrap().iter().map(|n| n["task"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_list_of_handles_is_a_data_edge_from_each_and_one_list_input() {
    for executor in EXECUTORS {
        for n in [0u64, 1, 4] {
            let env = Env::new();
            let input = json!({"n": n, "fail_at": null}).to_string();
            let out = env.run(&["run", "fan_in", "--input", &input, "--executor", executor]);
            assert!(out.status.success(), "{executor} n={n}: {}", text(&out));
            let squares: Vec<String> = (0..n).map(|i| (i * i).to_string()).collect();
            let expected = format!("{} = {}", squares.join(" + "), (0..n).map(|i| i * i).sum::<u64>());
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), json!(expected).to_string(), "{executor} n={n}");

            let graph = env.json(&["graph", "1", "--format", "json"]);
            let mut expected_tasks = vec!["fan_in".to_string()];
            expected_tasks.extend((0..n).map(|_| "part".to_string()));
            expected_tasks.push("sum_parts".to_string());
            assert_eq!(tasks(&graph), expected_tasks, "{executor} n={n}");
            let edges: Vec<_> = (1..=n).map(|i| (i, n + 1, "data".to_string())).collect();
            assert_eq!(edge_set(&graph), edges, "{executor} n={n}: {graph}");

            // `show` of the node gives the list of values it took, in order.
            let xs: Vec<u64> = (0..n).map(|i| i * i).collect();
            assert_eq!(input_of(&env, "sum_parts"), json!({"xs": xs}), "{executor} n={n}");
        }
    }
}

#[test]
fn a_failed_member_of_a_list_skips_the_node_that_takes_it() {
    for executor in EXECUTORS {
        let env = Env::new();
        let input = json!({"n": 3, "fail_at": 1}).to_string();
        let out = env.run(&["run", "fan_in", "--input", &input, "--executor", executor]);
        assert_eq!(out.status.code(), Some(1), "{executor}: {}", text(&out));
        assert!(stderr(&out).contains("part 1 failed"), "{executor}: {}", text(&out));
        let show = env.show(1);
        let states: Vec<&str> =
            show["nodes"].as_array().unwrap().iter().map(|n| n["state"].as_str().unwrap()).collect();
        // The other parts may be cancelled when the run ends, before they finish.
        assert_eq!([states[0], states[2], states[4]], ["failed", "failed", "skipped"], "{executor}: {show}");
        assert_eq!(show["nodes"][4]["error"]["kind"], "upstream", "{executor}: {show}");
        assert_eq!(show["nodes"][4]["attempts"], 0, "{executor}: `sum_parts` never ran");
        assert_eq!(show["nodes"][4]["error"]["message"], "upstream node 2 (`part`) did not succeed", "{executor}");
        let graph = env.json(&["graph", "1", "--format", "json"]);
        let edges = vec![(1, 4, "data".to_string()), (2, 4, "data".to_string()), (3, 4, "data".to_string())];
        assert_eq!(edge_set(&graph), edges, "{executor}: {graph}");
    }
}

#[test]
fn an_optional_handle_is_an_edge_and_none_is_null() {
    for executor in EXECUTORS {
        let env = Env::new();
        let out = env.run(&["run", "fan_in_option", "--input", r#"{"some": true}"#, "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""10""#, "{executor}");
        let graph = env.json(&["graph", "1", "--format", "json"]);
        assert_eq!(tasks(&graph), ["fan_in_option", "part", "plus_one"], "{executor}");
        assert_eq!(edge_set(&graph), [(1, 2, "data".to_string())], "{executor}: {graph}");

        let env = Env::new();
        let out = env.run(&["run", "fan_in_option", "--input", r#"{"some": false}"#, "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""nothing""#, "{executor}");
        let graph = env.json(&["graph", "1", "--format", "json"]);
        assert_eq!(tasks(&graph), ["fan_in_option", "plus_one"], "{executor}");
        assert!(edge_set(&graph).is_empty(), "{executor}: {graph}");
        assert_eq!(input_of(&env, "plus_one"), json!({"x": null}), "{executor}");
    }
}

#[test]
fn the_plan_draws_an_edge_from_each_handle_of_a_list() {
    let env = Env::new();
    let plan = env.json(&["graph", "fan_in", "--input", r#"{"n": 3, "fail_at": null}"#, "--format", "json"]);
    assert_eq!(tasks(&plan), ["fan_in", "part", "part", "part", "sum_parts"]);
    let edges = vec![(1, 4, "data".to_string()), (2, 4, "data".to_string()), (3, 4, "data".to_string())];
    assert_eq!(edge_set(&plan), edges, "{plan}");
    let plan = env.json(&["graph", "fan_in_option", "--input", r#"{"some": true}"#, "--format", "json"]);
    assert_eq!(edge_set(&plan), [(1, 2, "data".to_string())], "{plan}");
}

#[test]
fn a_rerun_binds_a_list_argument_to_the_same_nodes_and_follows_its_edges() {
    let env = Env::new();
    let input = json!({"n": 3, "fail_at": null}).to_string();
    let out = env.run(&["run", "fan_in", "--input", &input, "--executor", "process"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = edge_set(&env.json(&["graph", "1", "--format", "json"]));
    // The root runs again from the store, and so does everything below it: its calls, the list
    // included, bind to the nodes they made (which run again), and add none.
    let out = env.run(&["rerun", "1", "--from", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""0 + 1 + 4 = 5""#);
    let graph = env.json(&["graph", "1", "--format", "json"]);
    assert_eq!(tasks(&graph), ["fan_in", "part", "part", "part", "sum_parts"], "no node added: {graph}");
    assert_eq!(edge_set(&graph), before);
    // Rerunning one part runs `sum_parts` again, downstream of it by a data edge, and no other part.
    let out = env.run(&["rerun", "1", "--from", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let show = env.show(1);
    let attempts = |node: u64| show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == node).count();
    assert_eq!((attempts(1), attempts(2), attempts(3), attempts(4)), (2, 3, 2, 3), "{show}");
    assert_eq!(edge_set(&env.json(&["graph", "1", "--format", "json"])), before);
}
