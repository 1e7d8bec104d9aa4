//! The command line: runs, inputs, JSON contracts, logs, graphs, the manifest.

use serde_json::Value;

use crate::support::{DUPES, EXECUTORS, Env, pipeline_input, stderr, text};

#[test]
fn a_pipeline_runs_and_is_stored_with_its_graph() {
    let env = Env::new();
    let out = env.run(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 0, false)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "90");

    let runs = env.json(&["runs"]);
    let run = &runs["runs"][0];
    assert_eq!(run["workflow"], "pipeline");
    assert_eq!(run["state"], "succeeded");
    assert!(run["started_at"].is_i64());
    let id = run["id"].as_i64().unwrap();

    let graph = env.json(&["graph", &id.to_string(), "--format", "json"]);
    assert_eq!(graph["run"]["state"], "succeeded");
    let nodes = graph["nodes"].as_array().unwrap();
    let tasks: Vec<&str> = nodes.iter().map(|n| n["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["pipeline", "step", "step", "step", "step", "step", "total", "maybe_fail"]);
    assert!(nodes.iter().all(|n| n["state"] == "succeeded" && n["label"].is_string() && n["id"].is_u64()));
    // Handles passed without awaiting make data edges: a -> b, total -> maybe_fail. The c's
    // were spawned after `b` was awaited, and were awaited before `total` took their values:
    // `after` edges b -> c's -> total.
    let edges: Vec<(u64, u64, &str)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        edges,
        [
            (1, 2, "data"),
            (2, 3, "after"),
            (2, 4, "after"),
            (2, 5, "after"),
            (3, 6, "after"),
            (4, 6, "after"),
            (5, 6, "after"),
            (6, 7, "data")
        ]
    );

    let dot = String::from_utf8(env.run(&["graph", &id.to_string(), "--format", "dot"]).stdout).unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("n6 -> n7"), "{dot}");
    let mermaid = String::from_utf8(env.run(&["graph", &id.to_string(), "--format", "mermaid"]).stdout).unwrap();
    assert!(mermaid.starts_with("flowchart") && mermaid.contains("n6 --> n7"), "{mermaid}");
}

#[test]
fn runs_are_listed_newest_first_and_the_db_option_goes_anywhere() {
    let env = Env::new();
    let db = env.db.display().to_string();
    for _ in 0..2 {
        let out =
            std::process::Command::new(crate::support::FLOWS).args(["--db", &db, "run", "talk"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = std::process::Command::new(crate::support::FLOWS).args(["runs", "--json", "--db", &db]).output().unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<i64> = runs["runs"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [2, 1]);
}

#[test]
fn bad_input_is_a_usage_error_and_stores_nothing() {
    let env = Env::new();
    for (input, says) in [
        ("{not json", "not JSON"),
        (r#"{"dir": "x", "slow_ms": "fast", "fail": false}"#, r#""fast" is not of type "integer" at `/slow_ms`"#),
        (r#"{"dir": "x"}"#, r#""slow_ms" is a required property at `/`"#),
    ] {
        let out = env.run(&["run", "pipeline", "--input", input]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr(&out).contains(says), "{input}: {}", text(&out));
    }
    let out = env.run(&["run", "pipeline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("needs an input"), "{}", text(&out));

    let out = env.run(&["run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no workflow `nope`") && stderr(&out).contains("pipeline"), "{}", text(&out));

    let out = env.run(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("name one"), "{}", text(&out));

    let out = env.run(&["run", "pipeline", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));

    assert!(!env.db.exists(), "a refused run created the database");
    // Reading commands never create one either.
    for args in [&["runs"][..], &["show", "1"], &["logs", "1"], &["graph", "1"]] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(stderr(&out).contains("no salt database at"), "{}", text(&out));
    }
    assert!(!env.db.exists(), "a reading command created the database");
}

#[test]
fn run_input_errors_name_the_field_and_what_was_expected_and_store_no_run() {
    let env = Env::new();
    // One run, so that the database exists and `runs` can tell that no refused run was added.
    let out = env.run(&["run", "talk"]);
    assert!(out.status.success(), "{}", text(&out));
    let schema = r#"expected schema: {"$schema":"https://json-schema.org/draft/2020-12/schema","additionalProperties":false,"properties":{"dir":{"type":"string"},"fail":{"type":"boolean"},"slow_ms":{"format":"uint64","maximum":18446744073709551615,"minimum":0,"type":"integer"}},"required":["dir","slow_ms","fail"],"title":"pipeline_input","type":"object"}"#;
    let cases: [(&str, &str, &[&str]); 6] = [
        ("pipeline", r#"["x", 0, false]"#, &[r#"["x",0,false] is not of type "object" at `/`"#]),
        ("pipeline", r#""x""#, &[r#""x" is not of type "object" at `/`"#]),
        (
            "pipeline",
            r#"{"dir": ["x"], "slow_ms": -1, "fail": "no"}"#,
            &[
                r#"["x"] is not of type "string" at `/dir`"#,
                r#""no" is not of type "boolean" at `/fail`"#,
                "-1 is out of range: allowed 0 to 18446744073709551615 (uint64) at `/slow_ms`",
            ],
        ),
        ("pipeline", r#"{"dir": "x", "fail": false}"#, &[r#""slow_ms" is a required property at `/`"#]),
        ("countdown", r#"{"n": "three"}"#, &[r#""three" is not of type "integer" at `/n`"#]),
        ("pipeline", r#"{"dir": "x", "#, &["--input is not JSON: EOF while parsing a value at line 1 column 13"]),
    ];
    for (workflow, input, says) in cases {
        let out = env.run(&["run", workflow, "--input", input]);
        assert_eq!(out.status.code(), Some(2), "{input}: {}", text(&out));
        let err = stderr(&out);
        for said in says {
            assert!(err.contains(said), "{input}: `{said}` not in {}", text(&out));
        }
        assert!(!err.contains("__SaltInput"), "{input}: {}", text(&out));
        if workflow == "pipeline" && !input.ends_with(", ") {
            assert!(err.starts_with("error: input of `pipeline` does not match its input schema: "), "{}", text(&out));
            assert!(err.trim_end().ends_with(schema), "{input}: {}", text(&out));
        }
    }
    let runs = env.json(&["runs"]);
    let ids: Vec<i64> = runs["runs"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1], "a refused input stored a run");
}

#[test]
fn input_can_come_from_a_file() {
    let env = Env::new();
    let file = env.work.join("input.json");
    std::fs::write(&file, pipeline_input(&env.dir(), 0, false)).unwrap();
    let out = env.run(&["run", "pipeline", "--input", &format!("@{}", file.display())]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_manifest_describes_tasks_and_workflows() {
    let env = Env::new();
    let m = env.json(&["manifest"]);
    let flaky = m["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "flaky").expect("flaky");
    assert_eq!(flaky["policy"]["retries"], 2);
    assert_eq!(flaky["policy"]["backoff"]["delay_ms"], 50);
    assert_eq!(flaky["doc"], "Fails on its first attempt, succeeds on the second.");
    assert_eq!(flaky["input_schema"]["properties"]["dir"]["type"], "string");
    assert!(flaky["input_schema"]["properties"].get("ctx").is_none());
    assert_eq!(flaky["output_schema"]["type"], "integer");
    let hang = m["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "hang").unwrap();
    assert_eq!(hang["policy"]["timeout_ms"], 300);
    let pipeline = m["workflows"].as_array().unwrap().iter().find(|t| t["name"] == "pipeline").unwrap();
    assert_eq!(pipeline["input_schema"]["required"], serde_json::json!(["dir", "slow_ms", "fail"]));
    assert!(m["tasks"].as_array().unwrap().iter().all(|t| t["name"] != "pipeline"));
}

#[test]
fn inline_task_output_never_mixes_with_the_run_output() {
    let env = Env::new();
    let out = env.run(&["run", "talk", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let outcome: Value = serde_json::from_slice(&out.stdout).expect("stdout is only the outcome");
    assert_eq!(outcome["output"], "spoke");
    assert!(stderr(&out).contains("hello from stdout"), "{}", text(&out));
}

#[test]
fn user_output_goes_to_the_attempt_log_not_the_protocol() {
    let env = Env::new();
    let out = env.run(&["run", "talk", "--executor", "process"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"spoke\"");
    let logs = String::from_utf8(env.run(&["logs", "1", "chatty"]).stdout).unwrap();
    assert!(logs.contains("hello from stdout"), "{logs}");
    assert!(logs.contains("hello from stderr"), "{logs}");
    assert!(logs.contains("attempt 1 · process · succeeded"), "{logs}");
}

#[test]
fn tracing_events_of_a_task_go_to_its_log_with_time_and_level() {
    for executor in EXECUTORS {
        let env = Env::new();
        let out = env.run(&["run", "tracing_flow", "--executor", executor]);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        let logs = String::from_utf8(env.run(&["logs", "1", "traced"]).stdout).unwrap();
        let lines: Vec<&str> = logs.lines().collect();
        assert_eq!(lines.len(), 3, "{executor}: {logs}");
        assert_eq!(lines[0], format!("── node 1 traced · attempt 1 · {executor} · succeeded"));
        // `2026-12-01T17:59:09.123Z  INFO fetched the records records=3`
        let (time, info) = lines[1].split_once(' ').unwrap();
        assert_eq!(time.len(), 24, "{executor}: {logs}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{executor}: {logs}");
        assert_eq!(info, " INFO fetched the records records=3", "{executor}: {logs}");
        assert!(lines[2].ends_with("  WARN one record had no date"), "{executor}: {logs}");
    }
}

#[test]
fn rust_log_takes_filter_directives_for_task_logs() {
    // The levels of `traced`'s three lines (INFO, WARN, DEBUG) its log keeps under each filter.
    let cases: [(&str, &[&str]); 5] = [
        ("debug", &["INFO", "WARN", "DEBUG"]),
        ("error,flows=debug", &["INFO", "WARN", "DEBUG"]),
        ("flows=warn", &["WARN"]),
        ("info,flows::nothing_here=trace", &["INFO", "WARN"]),
        // A span directive alone: no event is in a span `traced`, and nothing else is enabled.
        ("[traced]=debug", &[]),
    ];
    for executor in ["inline", "process"] {
        for (filter, levels) in cases {
            let env = Env::new();
            let out =
                env.cmd(&["run", "tracing_flow", "--executor", executor]).env("RUST_LOG", filter).output().unwrap();
            assert!(out.status.success(), "{executor} {filter}: {}", text(&out));
            assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{executor} {filter}: {}", text(&out));
            let logs = String::from_utf8(env.run(&["logs", "1", "traced"]).stdout).unwrap();
            let kept: Vec<&str> = logs.lines().skip(1).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
            assert_eq!(kept, levels, "{executor} {filter}: {logs}");
        }
    }
    // Not a filter: said once, and the default (INFO) holds.
    let env = Env::new();
    let out =
        env.cmd(&["run", "tracing_flow", "--executor", "process"]).env("RUST_LOG", "flows=loud").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("warning: RUST_LOG: `flows=loud` is not a log filter").count(), 1, "{stderr}");
    assert!(stderr.contains("task logs keep the events up to INFO"), "{stderr}");
    let logs = String::from_utf8(env.run(&["logs", "1", "traced"]).stdout).unwrap();
    assert_eq!(logs.lines().count(), 3, "{logs}");
}

#[test]
fn logs_follow_streams_a_live_run_and_ends_with_it() {
    use std::io::BufRead as _;
    for executor in ["inline", "process"] {
        let env = Env::new();
        let mut run = env.spawn(&["run", "dripping", "--input", r#"{"n": 6, "ms": 400}"#, "--executor", executor]);
        env.wait_until(1, "drip to start", |s| s["nodes"][1]["state"] == "running");
        let mut follow = env.spawn(&["logs", "1", "--follow"]);
        let mut lines = Vec::new();
        // The state of the run when the first line came: printed as it was written, not all
        // at the end (the last drop is 2 s after the first).
        let mut state_at_first = None;
        for line in std::io::BufReader::new(follow.stdout.take().unwrap()).lines() {
            lines.push(line.unwrap());
            if lines.len() == 2 {
                state_at_first = Some(env.show(1)["run"]["state"].clone());
            }
        }
        let status = follow.wait().unwrap();
        assert!(status.success(), "{executor}: {lines:?}");
        assert!(run.wait().unwrap().success(), "{executor}");
        assert_eq!(env.show(1)["run"]["state"], "succeeded", "{executor}");

        assert_eq!(lines[0], "── node 1 drip · attempt 1", "{executor}: {lines:?}");
        assert_eq!(lines.len(), 7, "{executor}: {lines:?}");
        for (i, line) in lines[1..].iter().enumerate() {
            assert!(line.ends_with(&format!("  INFO drop {}", i + 1)), "{executor}: {lines:?}");
        }
        assert_eq!(state_at_first, Some(Value::from("running")), "{executor}: {lines:?}");

        // Of an ended run: what it wrote, at once; with `--json`, one object a line.
        let out = env.run(&["logs", "1", "drip", "--follow", "--json"]);
        assert!(out.status.success(), "{}", text(&out));
        let records: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.len(), 6, "{}", text(&out));
        assert_eq!((&records[5]["node"], &records[5]["attempt"]), (&Value::from(1), &Value::from(1)));
        assert!(records[5]["line"].as_str().unwrap().ends_with("  INFO drop 6"), "{}", text(&out));
    }
}

#[test]
fn two_tasks_with_one_name_are_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        std::process::Command::new(DUPES).args(["run"]).env("SALT_DB", dir.path().join("salt.db")).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = stderr(&out);
    assert!(err.contains("two tasks are named `send`"), "{err}");
    assert!(err.contains("dupes::billing") && err.contains("dupes::mail"), "{err}");
}
