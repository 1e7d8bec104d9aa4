//! A child's failure that its parent awaited belongs to the parent: handled, it fails nothing.

use serde_json::{Value, json};

use crate::support::{Env, stderr, text};

fn node<'a>(show: &'a Value, task: &str) -> &'a Value {
    show["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["task"] == task)
        .unwrap_or_else(|| panic!("no `{task}`: {show}"))
}

#[test]
fn a_failure_the_parent_handles_leaves_the_child_failed_and_the_run_succeeded() {
    for executor in ["inline", "process"] {
        let env = Env::new();
        let input = json!({"dir": env.dir(), "fail": true, "hang": false}).to_string();
        let out = env.run(&["run", "fallback", "--input", &input, "--executor", executor]);
        assert_eq!(out.status.code(), Some(0), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""fallback""#, "{executor}");
        assert!(stderr(&out).contains("run 1 of `fallback` succeeded"), "{}", text(&out));

        let show = env.show(1);
        assert_eq!(show["run"]["state"], "succeeded");
        assert_eq!(show["run"]["output"], "fallback");
        let rate = node(&show, "rate");
        assert_eq!(rate["state"], "failed", "the child stays failed");
        assert_eq!(rate["error"]["message"], "rate service down");
        let graph = env.json(&["graph", "1", "--format", "json"]);
        let drawn: Vec<(String, String)> = graph["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["task"].as_str().unwrap().to_string(), n["state"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(drawn, [("fallback".into(), "succeeded".into()), ("rate".into(), "failed".into())]);

        // Nothing is left to recover, and nothing ran again.
        let out = env.run(&["recover", "1"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr(&out).contains("run 1 succeeded: there is nothing to recover"), "{}", text(&out));
        assert_eq!(env.count("rate"), 1);
    }
}

#[test]
fn a_failure_nobody_awaited_still_fails_the_run() {
    let env = Env::new();
    let input = json!({"dir": env.dir()}).to_string();
    let out = env.run(&["run", "unawaited", "--input", &input]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    assert!(
        stderr(&out).contains("run 1 of `unawaited` failed: node 1 (`rate`) failed: rate service down"),
        "{}",
        text(&out)
    );
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "failed");
    assert_eq!(node(&show, "unawaited")["state"], "succeeded");

    // `recover` runs the failure again (it fails again: the input has not changed).
    let out = env.run(&["recover", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(env.count("rate"), 2);
}

#[test]
fn a_timed_out_child_reaches_its_parent_as_a_timeout() {
    let env = Env::new();
    let input = json!({"dir": env.dir(), "fail": false, "hang": true}).to_string();
    let out = env.run(&["run", "fallback", "--input", &input]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#""fallback after a timeout (node 1 (`rate`) failed: attempt timed out after 300ms and was killed)""#
    );
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "succeeded");
    assert_eq!(node(&show, "rate")["error"]["kind"], "timeout");
}

#[test]
fn a_user_error_type_says_which_of_its_values_are_not_retried() {
    for (id, kind, runs, message) in [(0, "fatal", 1, "no customer 0"), (1, "task", 3, "the directory is busy")] {
        let env = Env::new();
        let input = json!({"dir": env.dir(), "id": id}).to_string();
        let out = env.run(&["run", "look_up", "--input", &input]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert_eq!(env.count("lookup"), runs, "id {id}");
        let show = env.show(1);
        let lookup = node(&show, "lookup");
        assert_eq!(lookup["error"]["kind"], kind, "id {id}");
        assert_eq!(lookup["error"]["message"], message);
    }
}
