//! Limits: values nested too deep, waits too long to have a deadline, a node's huge first line.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{EXECUTORS, Env, stderr, text};

/// A value `depth` arrays deep around a number.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |v, _| json!([v]))
}

#[test]
fn an_input_or_a_signal_nested_too_deep_is_refused_before_it_is_stored() {
    let env = Env::new();
    // 125 levels: still JSON that parses, but deeper than salt stores.
    let input = json!({ "value": nested(124) }).to_string();
    let out = env.run(&["run", "anything", "--input", &input]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("more than 100 levels deep"), "{}", text(&out));

    // 100 levels in all is fine, and reads back.
    let input = json!({ "value": nested(99) }).to_string();
    let out = env.run(&["run", "anything", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "99");
    assert_eq!(env.show(1)["run"]["input"], json!({ "value": nested(99) }));
    // The refused input stored nothing: this is the first run.
    assert_eq!(env.json(&["runs"])["runs"].as_array().unwrap().len(), 1);

    // A signal value, too.
    let child = env
        .cmd(&["run", "waits", "--input", r#"{"timeout_ms": 0}"#])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_until(2, "the node to park", |s| !s["waits"].as_array().unwrap().is_empty());
    let out = env.run(&["signal", "2", "number", &nested(101).to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("the value of signal `number` nests"), "{}", text(&out));
    assert!(stderr(&out).contains("more than 100 levels deep"), "{}", text(&out));
    assert!(env.run(&["signal", "2", "number", "40"]).status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[test]
fn a_value_made_at_run_time_nested_too_deep_fails_its_attempt_on_every_executor() {
    for executor in EXECUTORS {
        let env = Env::new();
        let run = |depth: usize, via: &str| {
            let input = json!({ "depth": depth, "via": via }).to_string();
            env.run(&["run", "deep", "--input", &input, "--executor", executor])
        };
        let out = run(99, "output");
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "99", "{executor}");
        let out = run(99, "argument");
        assert!(out.status.success(), "{executor}: {}", text(&out));

        // Runs 3 to 6: just over the limit, and far over (deeper than JSON readers go).
        for (run_id, depth, via, says) in [
            (3, 101, "output", "the output of task `deep_value` nests"),
            (4, 150, "output", "the output of task `deep_value` nests"),
            (5, 101, "argument", "argument `value` of a call to task `measure` nests"),
            (6, 150, "argument", "argument `value` of a call to task `measure` nests"),
        ] {
            let out = run(depth, via);
            assert_eq!(out.status.code(), Some(1), "{executor} {depth} {via}: {}", text(&out));
            assert!(stderr(&out).contains(says), "{executor} {depth} {via}: {}", text(&out));
            assert!(stderr(&out).contains("more than 100 levels deep"), "{executor} {depth} {via}: {}", text(&out));
            // The run reads back, failed.
            let show = env.show(run_id);
            assert_eq!(show["run"]["state"], "failed", "{executor} {depth} {via}: {show}");
            let failed = if via == "output" { &show["nodes"][1] } else { &show["nodes"][0] };
            assert_eq!(failed["state"], "failed", "{executor} {depth} {via}: {show}");
            assert_eq!(failed["error"]["kind"], "input", "{executor} {depth} {via}: {show}");
        }
    }
}

#[test]
fn a_wait_of_duration_max_lasts_until_it_is_cancelled() {
    for executor in ["inline", "process"] {
        // `Duration::MAX`, and a duration whose milliseconds wrap around 64 bits to 50.
        for wrap in [false, true] {
            let env = Env::new();
            let input = json!({ "wrap": wrap }).to_string();
            let child = env.spawn(&["run", "forever", "--input", &input, "--executor", executor]);
            env.wait_until(1, "the sleep to park", |s| !s["waits"].as_array().unwrap().is_empty());
            std::thread::sleep(Duration::from_millis(1500));
            let show = env.show(1);
            assert_eq!(show["run"]["state"], "running", "{executor} wrap={wrap}: the sleep ended: {show}");
            assert_eq!(show["nodes"][0]["state"], "waiting", "{executor} wrap={wrap}: {show}");
            let out = env.run(&["show", "1"]);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("waiting   node 0 sleeps forever"),
                "{executor} wrap={wrap}: {}",
                text(&out)
            );
            let out = env.run(&["cancel", "1"]);
            assert!(out.status.success(), "{executor} wrap={wrap}: {}", text(&out));
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{executor} wrap={wrap}: {}", text(&out));
            assert_eq!(env.show(1)["run"]["state"], "cancelled");
        }

        // A `wait_for_or` with `Duration::MAX` waits for its signal.
        let env = Env::new();
        let child = env.spawn(&["run", "patient", "--executor", executor]);
        env.wait_until(1, "the wait to park", |s| !s["waits"].as_array().unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(env.show(1)["run"]["state"], "running", "{executor}: the wait gave up");
        assert!(env.run(&["signal", "1", "number", "5"]).status.success());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "7", "{executor}: the default was taken");
    }
}

#[test]
fn a_huge_first_line_that_is_not_a_hello_is_quoted_short() {
    for kind in ["huge_first", "huge_log_first"] {
        let env = Env::new();
        let input = json!({"dir": env.dir()}).to_string();
        let out = env
            .cmd(&["run", "sturdy", "--input", &input, "--executor", "process"])
            .env("FLOWS_FAKE_NODE", kind)
            .output()
            .unwrap();
        assert!(out.status.success(), "{kind}: {}", text(&out));
        assert!(out.stderr.len() < 64 << 10, "{kind}: {} bytes of stderr", out.stderr.len());
        let show = env.show(1);
        let failed: Vec<&Value> =
            show["attempts"].as_array().unwrap().iter().filter(|a| a["state"] == "failed").collect();
        assert_eq!(failed.len(), 1, "{kind}: {show}");
        let message = failed[0]["error"]["message"].as_str().unwrap();
        assert_eq!(failed[0]["error"]["kind"], "protocol", "{kind}: {message}");
        assert!(message.len() < 1024, "{kind}: an error of {} bytes", message.len());
        assert!(message.contains("bytes)"), "{kind}: the cut is not said: {message}");
    }
}
