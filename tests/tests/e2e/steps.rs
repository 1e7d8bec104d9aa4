//! Step actions (`#[task(pre, post, on_failure)]`) under every executor: their lines in the
//! attempt's log, a failing `pre` skipping the body, a failing `post` failing the attempt.

use crate::support::{EXECUTORS, Env, text};

/// Runs `guarded_flow` with `fail` under `executor`; returns whether it succeeded and the log
/// of the `guarded` node, each step's timing replaced by `_`.
fn run(env: &Env, executor: &str, fail: &str) -> (bool, Vec<String>) {
    run_flow(env, "guarded", executor, fail)
}

/// Runs `{task}_flow` with `fail` under `executor`; returns whether it succeeded and the log of
/// the `task` node, each step's timing replaced by `_`.
fn run_flow(env: &Env, task: &str, executor: &str, fail: &str) -> (bool, Vec<String>) {
    let input = serde_json::json!({"dir": env.dir(), "fail": fail}).to_string();
    let out = env.run(&["run", &format!("{task}_flow"), "--executor", executor, "--input", &input]);
    let logs = env.run(&["logs", "1", task]);
    assert!(logs.status.success(), "{}", text(&logs));
    let lines = String::from_utf8(logs.stdout)
        .unwrap()
        .lines()
        .map(|line| match line.split_once(" in ") {
            Some((head, tail)) if tail.split_once("ms").is_some_and(|(n, _)| n.parse::<u64>().is_ok()) => {
                let rest = tail.split_once("ms").unwrap().1;
                format!("{head} in _ms{rest}")
            }
            _ => line.to_owned(),
        })
        .collect();
    (out.status.success(), lines)
}

#[test]
fn each_step_is_a_line_of_the_attempt_log() {
    for executor in EXECUTORS {
        let env = Env::new();
        let (ok, log) = run(&env, executor, "none");
        assert!(ok, "{executor}: {log:?}");
        assert_eq!(
            log,
            [
                format!("── node 1 guarded · attempt 1 · {executor} · succeeded"),
                "pre: ok in _ms".to_owned(),
                "body: ok in _ms".to_owned(),
                "post: ok in _ms".to_owned(),
            ],
            "{executor}"
        );
        assert_eq!((env.count("guard_pre"), env.count("guarded"), env.count("guard_post")), (1, 1, 1), "{executor}");
        assert_eq!(env.count("guard_on_failure"), 0, "{executor}");
    }
}

#[test]
fn a_failing_pre_skips_the_body() {
    for executor in EXECUTORS {
        let env = Env::new();
        let (ok, log) = run(&env, executor, "pre");
        assert!(!ok, "{executor}: {log:?}");
        let attempt = |n: u32| {
            [
                format!("── node 1 guarded · attempt {n} · {executor} · failed: the source is not ready"),
                "pre: failed in _ms: the source is not ready".to_owned(),
                "on_failure: ok in _ms".to_owned(),
            ]
        };
        assert_eq!(log, [attempt(1), attempt(2)].concat(), "{executor}");
        assert_eq!(env.count("guarded"), 0, "{executor}: the body ran");
        assert_eq!((env.count("guard_pre"), env.count("guard_on_failure")), (2, 2), "{executor}");
        assert_eq!(env.count("guard_post"), 0, "{executor}");
    }
}

#[test]
fn a_failing_post_fails_the_attempt_and_is_retried() {
    for executor in EXECUTORS {
        let env = Env::new();
        let (ok, log) = run(&env, executor, "post");
        assert!(!ok, "{executor}: {log:?}");
        let attempt = |n: u32| {
            [
                format!("── node 1 guarded · attempt {n} · {executor} · failed: output 7 is out of range"),
                "pre: ok in _ms".to_owned(),
                "body: ok in _ms".to_owned(),
                "post: failed in _ms: output 7 is out of range".to_owned(),
                "on_failure: ok in _ms".to_owned(),
            ]
        };
        assert_eq!(log, [attempt(1), attempt(2)].concat(), "{executor}");
        assert_eq!((env.count("guarded"), env.count("guard_post")), (2, 2), "{executor}");
        let show = env.show(1);
        let node = show["nodes"].as_array().unwrap().iter().find(|n| n["task"] == "guarded").unwrap().clone();
        assert_eq!(node["state"], "failed", "{executor}: {node}");
    }
}

#[test]
fn a_failing_on_failure_is_logged_and_the_error_stays_the_attempts() {
    for executor in EXECUTORS {
        let env = Env::new();
        let (ok, log) = run(&env, executor, "cleanup");
        assert!(!ok, "{executor}: {log:?}");
        let attempt = |n: u32| {
            [
                format!("── node 1 guarded · attempt {n} · {executor} · failed: the body failed"),
                "pre: ok in _ms".to_owned(),
                "body: failed in _ms: the body failed".to_owned(),
                "on_failure: failed in _ms: the scratch space is gone".to_owned(),
            ]
        };
        assert_eq!(log, [attempt(1), attempt(2)].concat(), "{executor}");
        // `on_failure` saw the attempt's error.
        let seen = std::fs::read_to_string(env.work.join("guard_error")).unwrap();
        assert_eq!(seen, "the body failed", "{executor}");
        assert_eq!(env.count("guard_post"), 0, "{executor}");
    }
}

#[test]
fn command_steps_run_in_the_attempt_and_write_to_its_log() {
    for executor in EXECUTORS {
        let env = Env::new();
        let (ok, log) = run_flow(&env, "shelled", executor, "none");
        assert!(ok, "{executor}: {log:?}");
        let args = serde_json::json!({"dir": env.dir(), "fail": "none"}).to_string();
        assert_eq!(
            log,
            [
                format!("── node 1 shelled · attempt 1 · {executor} · succeeded"),
                r#"[salt] $ sh -c 'echo "pre args: $(cat "$SALT_ARGS")"; [ "$FAIL" != pre ] || { echo '\''not ready'\''; exit 3; }'"#.to_owned(),
                format!("pre args: {args}"),
                "pre: ok in _ms".to_owned(),
                "body: ok in _ms".to_owned(),
                r#"[salt] $ sh -c 'echo "post sees $(cat "$SALT_OUTPUT") in $SALT_STEP"'"#.to_owned(),
                "post sees 7 in post".to_owned(),
                "post: ok in _ms".to_owned(),
            ],
            "{executor}"
        );
        // One node: the step actions are not nodes of their own.
        assert_eq!(env.show(1)["nodes"].as_array().unwrap().len(), 2, "{executor}");
    }
}

#[test]
fn a_failing_pre_command_skips_the_body_and_on_failure_sees_the_error() {
    for executor in EXECUTORS {
        let env = Env::new();
        let (ok, log) = run_flow(&env, "shelled", executor, "pre");
        assert!(!ok, "{executor}: {log:?}");
        let args = serde_json::json!({"dir": env.dir(), "fail": "pre"}).to_string();
        let attempt = |n: u32| {
            [
                format!(
                    "── node 1 shelled · attempt {n} · {executor} · failed: `sh` exited with code 3; the last lines of \
                     its log:"
                ),
                format!("pre args: {args}"),
                "not ready".to_owned(),
                r#"[salt] $ sh -c 'echo "pre args: $(cat "$SALT_ARGS")"; [ "$FAIL" != pre ] || { echo '\''not ready'\''; exit 3; }'"#.to_owned(),
                format!("pre args: {args}"),
                "not ready".to_owned(),
                "pre: failed in _ms: `sh` exited with code 3; the last lines of its log:".to_owned(),
                format!("pre args: {args}"),
                "not ready".to_owned(),
                r#"[salt] $ sh -c 'echo "on_failure saw: $SALT_ERROR" | head -n 1'"#.to_owned(),
                "on_failure saw: `sh` exited with code 3; the last lines of its log:".to_owned(),
                "on_failure: ok in _ms".to_owned(),
            ]
        };
        assert_eq!(log, [attempt(1), attempt(2)].concat(), "{executor}");
        assert_eq!(env.count("shelled"), 0, "{executor}: the body ran");
    }
}
