//! Runs-after edges: a child spawned after its parent observed other children's results runs
//! after them, and the graph says so.

use serde_json::json;

use crate::support::{EXECUTORS, Env, edge_set, pipeline_input, text};

fn e(from: u64, to: u64, kind: &str) -> (u64, u64, String) {
    (from, to, kind.to_string())
}

#[test]
fn a_flow_written_with_awaited_values_draws_exactly_its_edges() {
    for executor in EXECUTORS {
        let env = Env::new();
        let out = env.run(&["run", "synergy", "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "28", "{executor}");
        let graph = env.json(&["graph", "1", "--format", "json"]);
        // Nodes in spawn order: s1 s2 s3 s4 s6 s7 s8 s5.
        let steps: Vec<&str> = graph["nodes"].as_array().unwrap().iter().map(|n| n["task"].as_str().unwrap()).collect();
        assert_eq!(steps, ["synergy", "syn", "syn", "syn", "syn", "syn", "one", "two", "syn"], "{executor}");
        let expected = vec![
            e(1, 2, "after"), // s1 -> s2
            e(2, 3, "after"), // s2 -> s3
            e(2, 4, "after"), // s2 -> s4
            e(2, 5, "after"), // s2 -> s6
            e(3, 8, "after"), // s3 -> s5
            e(4, 8, "after"), // s4 -> s5
            e(5, 6, "data"),  // s6 -> s7
            e(6, 7, "data"),  // s7 -> s8
        ];
        assert_eq!(edge_set(&graph), expected, "{executor}: {graph}");

        // Drawn solid like data edges, in every format.
        let dot = String::from_utf8(env.run(&["graph", "1", "--format", "dot"]).stdout).unwrap();
        assert!(dot.contains("  n1 -> n2;\n") && dot.contains("  n3 -> n8;\n"), "{dot}");
        assert!(!dot.contains("n1 -> n2 [style=dashed]"), "{dot}");
        let mermaid = String::from_utf8(env.run(&["graph", "1", "--format", "mermaid"]).stdout).unwrap();
        assert!(mermaid.contains("  n1 --> n2\n") && mermaid.contains("  n5 --> n6\n"), "{mermaid}");
        let tasks = env.json(&["graph", "1", "--format", "json", "--collapse"]);
        assert!(
            tasks["edges"]
                .as_array()
                .unwrap()
                .contains(&json!({"from": "syn", "to": "syn", "kind": "after", "count": 6})),
            "{tasks}"
        );
    }
}

#[test]
fn a_recovered_run_keeps_its_after_edges() {
    let env = Env::new();
    let out = env.run(&["run", "synergy"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = edge_set(&env.json(&["graph", "1", "--format", "json"]));
    // Rerunning the root replays every call: bound to the same nodes, no edge is added twice.
    let out = env.run(&["rerun", "1", "--from", "0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "28");
    assert_eq!(edge_set(&env.json(&["graph", "1", "--format", "json"])), before);
}

#[test]
fn rerun_from_a_node_follows_after_edges_downstream() {
    let env = Env::new();
    assert!(env.run(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 0, false)]).status.success());
    // a -(data)-> b; the body awaits b, then spawns c1..c3 (after b), awaits them and passes
    // their values to `total` (after c1..c3), whose handle goes to `maybe_fail`.
    let graph = env.json(&["graph", "1", "--format", "json"]);
    assert_eq!(
        edge_set(&graph),
        [
            e(1, 2, "data"),
            e(2, 3, "after"),
            e(2, 4, "after"),
            e(2, 5, "after"),
            e(3, 6, "after"),
            e(4, 6, "after"),
            e(5, 6, "after"),
            e(6, 7, "data")
        ]
    );
    // From `b` (node 2): `b` gives the same value again, yet what runs after it runs again.
    let out = env.run(&["rerun", "1", "--from", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.count("a"), 1, "upstream of `b`");
    for step in ["b", "c1", "c2", "c3", "total", "maybe_fail"] {
        assert_eq!(env.count(step), 2, "{step} is downstream of `b`");
    }
}

#[test]
fn a_labelled_edge_is_stored_and_drawn_in_every_format() {
    let env = Env::new();
    let out = env.run(&["run", "labelled"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8");
    let graph = env.json(&["graph", "1", "--format", "json"]);
    assert_eq!(
        graph["edges"],
        json!([
            {"from": 1, "to": 2, "kind": "data", "label": "plus one", "arg": "x"},
            {"from": 2, "to": 3, "kind": "control", "label": "then", "arg": null},
            {"from": 3, "to": 4, "kind": "data", "label": null, "arg": "x"},
        ]),
        "{graph}"
    );
    let dot = env.run(&["graph", "1"]);
    let dot = String::from_utf8_lossy(&dot.stdout).to_string();
    assert!(dot.contains("  n1 -> n2 [label=\"plus one\", fontsize=10, fontcolor=gray30];\n"), "{dot}");
    assert!(dot.contains("  n2 -> n3 [style=dashed, label=\"then\", fontsize=10, fontcolor=gray30];\n"), "{dot}");
    assert!(dot.contains("  n3 -> n4;\n"), "{dot}");
    // `--edge-labels`: a data edge with no label of its own shows its parameter.
    let dot = env.run(&["graph", "1", "--edge-labels"]);
    let dot = String::from_utf8_lossy(&dot.stdout).to_string();
    assert!(dot.contains("  n3 -> n4 [label=\"x\", fontsize=10, fontcolor=gray30];\n"), "{dot}");
    assert!(dot.contains("  n1 -> n2 [label=\"plus one\""), "{dot}");
    let mermaid = env.run(&["graph", "1", "--format", "mermaid"]);
    let mermaid = String::from_utf8_lossy(&mermaid.stdout).to_string();
    assert!(
        mermaid.contains("  n1 -->|\"plus one\"| n2\n") && mermaid.contains("  n2 -.->|\"then\"| n3\n"),
        "{mermaid}"
    );

    // The plan draws the same labels.
    let plan = env.json(&["graph", "labelled", "--format", "json"]);
    assert_eq!(plan["edges"], graph["edges"], "{plan}");
}
