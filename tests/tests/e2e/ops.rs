//! Limits and edges of the command line: option ranges, large values, odd inputs, far
//! deadlines, `run-one` and `recover` on runs that are done.

use serde_json::{Value, json};

use crate::support::{Env, pipeline_input, stderr, text};

#[test]
fn parallelism_out_of_range_is_a_usage_error() {
    let env = Env::new();
    for n in ["0", "4294967296", "65537", "-1"] {
        let out = env.run(&["run", "talk", &format!("--parallelism={n}")]);
        assert_eq!(out.status.code(), Some(2), "--parallelism {n}: {}", text(&out));
        assert!(stderr(&out).contains("--parallelism"), "{}", text(&out));
    }
    assert!(!env.db.exists(), "nothing was stored");
    let out = env.run(&["run", "talk", "--parallelism", "65536"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(env.show(1)["run"]["parallelism"], 65536);
}

#[test]
fn runs_lists_no_payloads_and_show_cuts_large_values_short() {
    let env = Env::new();
    let note = "n".repeat(5_000);
    let input = json!({"note": note, "n": 10_000}).to_string();
    let out = env.run(&["run", "bulky", "--input", &input]);
    assert!(out.status.success(), "{}", text(&out));

    let runs = env.json(&["runs"]);
    let run = &runs["runs"][0];
    assert_eq!(run["state"], "succeeded");
    assert!(run.get("input").is_none() && run.get("output").is_none(), "{run}");

    let shown = env.run(&["show", "1"]);
    assert!(shown.status.success(), "{}", text(&shown));
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.len() < 3_000, "show printed {} bytes:\n{shown}", shown.len());
    assert!(shown.contains("nnnn…  (4.9 KiB; `show 1 --input` prints it whole)"), "{shown}");
    assert!(shown.contains("(19.5 KiB; `show 1 --output` prints it whole)"), "{shown}");
    assert!(shown.lines().all(|l| l.chars().count() < 400), "{shown}");
    assert!(shown.contains("`show 1 NODE`"), "{shown}");

    let whole: Value = serde_json::from_slice(&env.run(&["show", "1", "--output"]).stdout).unwrap();
    assert_eq!(whole.as_str().unwrap().len(), 4 + 20_000);
    let whole: Value = serde_json::from_slice(&env.run(&["show", "1", "--input"]).stdout).unwrap();
    assert_eq!(whole["note"].as_str().unwrap().len(), 5_000);

    let node = String::from_utf8(env.run(&["show", "1", "repeat"]).stdout).unwrap();
    assert!(node.contains("node 1  task repeat  of run 1  SUCCEEDED"), "{node}");
    assert!(node.contains(r#"input     {"n":10000,"text":"ab"}"#), "{node}");
    assert!(node.contains("(19.5 KiB; `show 1 1 --output` prints it whole)"), "{node}");
    assert!(node.contains("attempt   1 · inline · succeeded"), "{node}");
    let whole: Value = serde_json::from_slice(&env.run(&["show", "1", "1", "--output"]).stdout).unwrap();
    assert_eq!(whole.as_str().unwrap().len(), 20_000);
    let view = env.json(&["show", "1", "repeat"]);
    assert_eq!(view["node"]["task"], "repeat");
    assert_eq!(view["input"], json!({"text": "ab", "n": 10_000}));

    let out = env.run(&["show", "1", "--input", "--output"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = env.run(&["show", "1", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("run 1 has no node 7"), "{}", text(&out));
}

#[test]
fn show_state_lists_only_the_nodes_in_those_states() {
    let env = Env::new();
    let out = env.run(&["run", "fan_in", "--input", r#"{"n": 6, "fail_at": 2}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let table = |args: &[&str]| -> Vec<(String, String, String)> {
        let out = env.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let shown = String::from_utf8(out.stdout).unwrap();
        let rows = shown.split("\n\n").nth(1).unwrap_or_else(|| panic!("no table: {shown}"));
        rows.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_string(), f[1].to_string(), f[2].to_string())
            })
            .collect()
    };
    let row = |id: &str, task: &str, state: &str| (id.to_string(), task.to_string(), state.to_string());
    let failed_and_skipped =
        vec![row("0", "fan_in", "failed"), row("3", "part", "failed"), row("7", "sum_parts", "skipped")];
    assert_eq!(table(&["show", "1", "--state", "failed,skipped"]), failed_and_skipped);
    assert_eq!(table(&["show", "1", "--state", "skipped", "--state", "failed"]), failed_and_skipped);
    assert_eq!(table(&["show", "1", "--state", "failed"]), [row("0", "fan_in", "failed"), row("3", "part", "failed")]);
    assert_eq!(table(&["show", "1"]).len(), 8);

    let out = env.run(&["show", "1", "--state", "failed,skipped"]);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.ends_with("\n(3 of 8 nodes shown: those failed, skipped; `show 1` lists them all)\n"), "{shown}");
    assert!(shown.contains("error     node 7 (`sum_parts`) failed"), "{shown}");

    // The parts after the failing one may have been cancelled with the root, or have succeeded
    // first: `--state succeeded` lists exactly those the whole view says succeeded.
    let ids_in = |view: &Value, state: Option<&str>| -> Vec<i64> {
        let nodes = view["nodes"].as_array().unwrap().iter();
        nodes.filter(|n| state.is_none_or(|s| n["state"] == s)).map(|n| n["id"].as_i64().unwrap()).collect()
    };
    let succeeded = ids_in(&env.show(1), Some("succeeded"));
    assert!(!succeeded.contains(&3), "{succeeded:?}");
    let view = env.json(&["show", "1", "--state", "succeeded"]);
    assert_eq!(ids_in(&view, None), succeeded);
    assert_eq!(view["run"]["state"], "failed");

    for args in [
        &["show", "1", "--state", "done"][..],
        &["show", "1", "3", "--state", "failed"],
        &["show", "1", "--output", "--state", "failed"],
    ] {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = env.run(&["show", "1", "--state", "done"]);
    assert!(stderr(&out).contains("`done` is not a node state; one of: pending, ready, running"), "{}", text(&out));
}

#[test]
fn an_input_that_is_not_an_object_is_refused_before_anything_is_stored() {
    let env = Env::new();
    let dir = env.dir();
    for (input, says) in [
        (json!([dir, 0, false]).to_string(), "is not of type \"object\" at `/`"),
        ("\"text\"".to_string(), "does not match"),
    ] {
        let out = env.run(&["run", "pipeline", "--input", &input]);
        assert_eq!(out.status.code(), Some(2), "{input}: {}", text(&out));
        assert!(stderr(&out).contains(says), "{input}: {}", text(&out));
    }
    assert!(!env.db.exists(), "nothing was stored");
}

#[test]
fn a_deadline_absurdly_far_away_shows_as_forever() {
    let env = Env::new();
    // A thousand years.
    let ms = 1_000u64 * 365 * 86_400_000;
    let mut child = env.spawn(&["run", "naps", "--input", &json!({"ms": ms}).to_string()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let shown = loop {
        let out = env.run(&["show", "1"]);
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        if shown.contains("sleeps") {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "the node never slept: {shown}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(shown.contains("waiting   node 0 sleeps forever"), "{shown}");
}

#[test]
fn run_one_exits_with_the_state_of_its_node_and_says_the_state_of_the_run() {
    let env = Env::new();
    let out = env.run(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 0, true)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = env.run(&["run-one", "1", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    assert!(stderr(&out).contains("node 1 (`step`) of run 1 succeeded"), "{}", text(&out));
    assert!(stderr(&out).contains("run 1 of `pipeline` is failed"), "{}", text(&out));
    let one = env.json(&["run-one", "1", "1"]);
    assert_eq!(one["node_state"], "succeeded");
    assert_eq!(one["state"], "failed");

    let out = env.run(&["run-one", "1", "maybe_fail"]);
    assert_eq!(out.status.code(), Some(1), "the node failed again: {}", text(&out));
}

#[test]
fn recover_of_a_succeeded_run_points_to_rerun() {
    let env = Env::new();
    assert!(env.run(&["run", "talk"]).status.success());
    let out = env.run(&["recover", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("`rerun 1 --from NODE`"), "{}", text(&out));
}

#[test]
fn cancel_node_stops_one_node_without_retry_and_the_run_goes_on_without_it() {
    let env = Env::new();
    let child =
        env.spawn(&["run", "pipeline", "--executor", "process", "--input", &pipeline_input(&env.dir(), 20_000, false)]);
    env.wait_for_marker("a");
    let out = env.run(&["cancel", "1", "--node", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "run 1 node 1 cancelled\n");
    let out = child.wait_with_output().unwrap();
    // `b` depends on the cancelled `a`: it is skipped, and the workflow awaiting it fails.
    assert!(!out.status.success(), "{}", text(&out));
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "failed", "{show}");
    let node = &show["nodes"][1];
    assert_eq!((node["state"].as_str(), node["attempts"].as_u64()), (Some("cancelled"), Some(1)), "{show}");
    assert_eq!(env.count("a"), 1, "a cancelled node is not retried");
    assert_eq!(env.count("b"), 0);
    // A node that has ended cannot be cancelled.
    let out = env.run(&["cancel", "1", "--node", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("already ended"), "{}", text(&out));
}

/// Kills `sleeper` of a `kill_target` run once it has run for `after`, on `executor`, with the
/// root parking on its children after 300 ms: the kill is final whatever the moment.
fn a_killed_node_stays_killed(executor: &str, after: std::time::Duration) {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir(), "slow_ms": 60_000}).to_string();
    let mut cmd = env.cmd(&["run", "kill_target", "--executor", executor, "--input", &input]);
    let child = cmd
        .env("SALT_PARK_AFTER_MS", "300")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for_marker("sleeper");
    std::thread::sleep(after);
    let started = std::time::Instant::now();
    let out = env.run(&["cancel", "1", "--node", "sleeper"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the run ended soon after the kill");
    assert!(!out.status.success(), "{}", text(&out));
    let show = env.show(1);
    assert_eq!(show["run"]["state"], "failed", "{show}");
    let node = show["nodes"].as_array().unwrap().iter().find(|n| n["task"] == "sleeper").unwrap();
    assert_eq!((node["state"].as_str(), node["attempts"].as_u64()), (Some("cancelled"), Some(1)), "{show}");
    assert_eq!(env.count("sleeper"), 1, "a killed node gets no new attempt: {show}");
    assert_eq!(env.count("after"), 0, "what depends on it is skipped");
    assert_eq!(env.count("other"), 1, "the independent step ran");
}

#[test]
fn a_node_killed_after_its_parent_parked_is_final_on_process() {
    a_killed_node_stays_killed("process", std::time::Duration::from_secs(6));
}

#[test]
fn a_node_killed_after_its_parent_parked_is_final_on_pool() {
    a_killed_node_stays_killed("pool", std::time::Duration::from_secs(2));
}

#[test]
fn a_node_killed_early_is_final_on_inline() {
    a_killed_node_stays_killed("inline", std::time::Duration::from_secs(1));
}

#[test]
fn killing_an_inline_node_stops_the_process_its_body_waits_for() {
    let env = Env::new();
    let input = serde_json::json!({"dir": env.dir()}).to_string();
    let child = env.spawn(&["run", "kill_shell", "--executor", "inline", "--input", &input]);
    env.wait_for_marker("shells_out");
    env.wait_for_marker("other");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    let out = env.run(&["cancel", "1", "--node", "shells_out"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the orchestrator waited for the killed body's child: {:?}",
        started.elapsed()
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(env.show(1)["run"]["state"], "failed");
    let sleeping = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&format!("touch {}/side_effect", env.dir())));
    assert!(!sleeping, "the killed body's `sh -c \"sleep 60; touch …\"` still runs");
    assert!(!env.work.join("side_effect").exists());
}
