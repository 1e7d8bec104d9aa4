//! The engine's own log lines: on stderr, apart from the command's answers, as text or JSON
//! (`--log-format`, `SALT_LOG_FORMAT`), filtered by `RUST_LOG`.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{Env, pipeline_input, stderr, take_over_from, text};

/// A `flows run` whose orchestrator is frozen until another takes its run over, then let go:
/// it finds its lease lost. `setup` adds options and environment to the stale orchestrator.
fn stale_orchestrator(env: &Env, setup: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = env.cmd(&["run", "pipeline", "--input", &pipeline_input(&env.dir(), 600, false)]);
    setup(&mut cmd);
    let stale = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start flows");
    env.wait_for_marker("b");
    let (out, mut recover) = take_over_from(env, stale);
    assert!(recover.wait().unwrap().success());
    out
}

/// The lines of stderr that are JSON objects.
fn json_lines(out: &Output) -> Vec<Value> {
    stderr(out).lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(Value::is_object).collect()
}

#[test]
fn a_lost_lease_is_an_engine_event_in_json_with_the_run() {
    let env = Env::new();
    let out = stale_orchestrator(&env, |cmd| {
        cmd.args(["--log-format", "json"]).env_remove("RUST_LOG");
    });
    let events = json_lines(&out);
    let lost = events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with("lease lost:")))
        .unwrap_or_else(|| panic!("no `lease lost` event: {}", text(&out)));
    assert_eq!(lost["level"], "ERROR", "{lost}");
    assert_eq!(lost["run"], 1, "{lost}");
    assert!(lost["target"].as_str().unwrap().starts_with("salt_runtime::"), "{lost}");
    assert!(lost["timestamp"].is_string(), "{lost}");
    assert!(lost["message"].as_str().unwrap().contains("lost the lease of run 1"), "{lost}");
    // The command's own answer stays text.
    let answer = stderr(&out).lines().find(|l| l.starts_with("error: ")).map(str::to_string);
    assert!(answer.is_some_and(|l| l.contains("lost the lease of run 1")), "{}", text(&out));
}

#[test]
fn rust_log_off_silences_the_engine_but_not_the_commands_answer() {
    let env = Env::new();
    let out = stale_orchestrator(&env, |cmd| {
        cmd.env("SALT_LOG_FORMAT", "json").env("RUST_LOG", "off");
    });
    assert_eq!(json_lines(&out), Vec::<Value>::new(), "{}", text(&out));
    assert!(!stderr(&out).contains("lease lost:"), "{}", text(&out));
    assert!(stderr(&out).contains("error: ") && stderr(&out).contains("lost the lease of run 1"), "{}", text(&out));
}

#[test]
fn a_bad_log_format_is_a_usage_error() {
    let env = Env::new();
    let out = env.cmd(&["runs", "--log-format", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("--log-format"), "{}", text(&out));
}
