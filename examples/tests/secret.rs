//! The `secret` example end to end: the token reaches the task's body on every executor, and its
//! text is nowhere in the database files nor in what `show`, `logs` and `graph` print.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// The token the runs are given: a text that cannot occur in the store by chance.
const TOKEN: &str = "tok-7Qx9-zebra-plover-4411";

/// The compiled `secret` example, in `target/<profile>/examples/`.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this test binary");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lives in target/<profile>/deps/");
    let path = profile_dir.join("examples").join(format!("secret{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the `secret` example is not built at {}: run `cargo test -p salt-examples`",
        path.display()
    );
    path
}

/// Runs the example in `dir` with `args`, with `DEPLOY_TOKEN` set to `token` or unset.
fn secret(dir: &Path, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(example());
    cmd.args(args).current_dir(dir).env_remove("DEPLOY_TOKEN").env_remove("SALT_DB").stdin(Stdio::null());
    if let Some(token) = token {
        cmd.env("DEPLOY_TOKEN", token);
    }
    cmd.output().expect("the example starts")
}

/// Stdout and stderr of a command, for assertions and their messages.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The 64-bit FNV-1a hash of `bytes`, as the example computes it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Every byte of the database and its -wal and -shm files.
fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.join(".salt")).expect("the .salt directory") {
        let path = entry.unwrap().path();
        bytes.extend(std::fs::read(&path).unwrap());
    }
    bytes
}

#[test]
fn secret_reaches_the_body_and_is_never_stored_or_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let receipt = json!({
        "service": "billing",
        "token_len": TOKEN.len(),
        "token_fnv1a": format!("{:016x}", fnv1a(TOKEN.as_bytes())),
    });
    for (run, executor) in ["inline", "process", "pool"].iter().enumerate() {
        let out = secret(dir, Some(TOKEN), &["run", "--executor", executor]);
        assert!(out.status.success(), "run on {executor}:\n{}", text(&out));
        let output: Value = serde_json::from_slice(&out.stdout).expect("the run prints its output");
        assert_eq!(output, receipt, "the body had the token ({executor})");
        assert!(!text(&out).contains(TOKEN), "`run` printed the token:\n{}", text(&out));

        let id = (run + 1).to_string();
        let shown = secret(dir, None, &["show", &id, "--json"]);
        let shown: Value = serde_json::from_slice(&shown.stdout).expect("show --json");
        assert_eq!(shown["run"]["input"], json!({"service": "billing", "token": {"$secret": "DEPLOY_TOKEN"}}));
        let node = secret(dir, None, &["show", &id, "1", "--json"]);
        assert!(
            text(&node).contains(r#""$secret": "DEPLOY_TOKEN""#),
            "the node's input holds the reference:\n{}",
            text(&node)
        );
    }
    // On node processes, the body's println! is in the attempt's log, with the secret masked.
    let logs = secret(dir, None, &["logs", "3", "1"]);
    assert!(text(&logs).contains("deploying billing with token Secret(***)"), "{}", text(&logs));

    for args in [
        &["show", "1"][..],
        &["show", "3", "1"],
        &["show", "3", "--json"],
        &["show", "3", "1", "--json"],
        &["show", "3", "1", "--output"],
        &["logs", "2"],
        &["logs", "3"],
        &["logs", "3", "--json"],
        &["graph", "3"],
        &["graph", "3", "--format", "json"],
        &["graph", "deploy", "--plan"],
        &["runs"],
    ] {
        // The variable is set: the commands could read it, and still do not show it.
        let out = secret(dir, Some(TOKEN), args);
        assert!(out.status.success(), "`{}`:\n{}", args.join(" "), text(&out));
        assert!(!text(&out).contains(TOKEN), "`{}` shows the token:\n{}", args.join(" "), text(&out));
    }
    let bytes = store_bytes(dir);
    assert!(!bytes.is_empty());
    assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()), "the token is in the database files");
}

#[test]
fn a_missing_variable_is_named_and_nothing_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let out = secret(tmp.path(), None, &["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: input of `deploy` does not match its type: the environment variable `DEPLOY_TOKEN` is not set: \
         it holds a secret input ({\"$secret\": \"DEPLOY_TOKEN\"}); set it in the environment of the salt command \
         (`DEPLOY_TOKEN=… ./app run …`)"
    );
    assert!(!tmp.path().join(".salt/secret.db").exists(), "nothing was stored");

    // A run that needs the token again (here: run-one of the task) fails with the same
    // explanation when the variable is gone, and is not retried.
    assert!(secret(tmp.path(), Some(TOKEN), &["run"]).status.success());
    let again = secret(tmp.path(), None, &["run-one", "1", "1"]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let node = secret(tmp.path(), None, &["show", "1", "1", "--json"]);
    let node: Value = serde_json::from_slice(&node.stdout).expect("show --json");
    let error = node.to_string();
    assert!(error.contains("the environment variable `DEPLOY_TOKEN` is not set"), "{error}");
}

#[test]
fn a_value_in_place_of_the_reference_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = secret(tmp.path(), Some(TOKEN), &["run", "--input", r#"{"service": "billing", "token": "inline"}"#]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(
            "error: input of `deploy` does not match its input schema: \"inline\" is not of type \"object\" at `/token`"
        ),
        "{}",
        text(&out)
    );
    assert!(!tmp.path().join(".salt/secret.db").exists(), "nothing was stored");
}
