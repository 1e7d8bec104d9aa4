//! Errors of other crates as task errors: `anyhow::Error`, boxed errors and strings, with `?`
//! both ways and the chain of sources kept; in a real run of the `interop` binary, and directly.

use std::process::{Command, Output};

use anyhow::Context as _;
use serde_json::{Value, json};

const INTEROP: &str = env!("CARGO_BIN_EXE_interop");

/// Runs `interop` on the database in `dir`.
fn interop(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(INTEROP).args(args).env("SALT_DB", dir.join("salt.db")).output().expect("run interop")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts a run of `limit` on a file holding `content` (none: no file); returns its exit code.
fn run_limit(dir: &std::path::Path, name: &str, content: Option<&str>) -> Option<i32> {
    let path = dir.join(name);
    if let Some(content) = content {
        std::fs::write(&path, content).unwrap();
    }
    let input = json!({"path": path}).to_string();
    interop(dir, &["run", "--input", &input]).status.code()
}

fn show(dir: &std::path::Path, run: &str) -> Value {
    let out = interop(dir, &["show", run, "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn show_and_logs_give_the_chain_of_an_anyhow_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_limit(dir.path(), "missing", None), Some(1));
    let path = dir.path().join("missing").display().to_string();
    let chain = format!("loading the limit from {path}: No such file or directory (os error 2)");

    let node = show(dir.path(), "1")["nodes"][1].clone();
    assert_eq!(node["task"], "load");
    assert_eq!(node["error"], json!({"kind": "task", "message": chain}));

    let text = stdout(&interop(dir.path(), &["show", "1", "1"]));
    assert!(text.contains(&format!("error     {chain}\n")), "{text}");
    let logs = stdout(&interop(dir.path(), &["logs", "1", "1"]));
    assert!(logs.contains(&format!("failed: {chain}")), "{logs}");
}

#[test]
fn string_boxed_and_anyhow_errors_fail_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run_limit(dir.path(), "big", Some("300")), Some(1));
    assert_eq!(run_limit(dir.path(), "odd", Some("7")), Some(1));
    assert_eq!(run_limit(dir.path(), "bad", Some("x")), Some(1));
    assert_eq!(run_limit(dir.path(), "good", Some("8")), Some(0));
    let error = |run: &str, node: usize| show(dir.path(), run)["nodes"][node]["error"].clone();

    // A `String` error; the workflow awaited it through an anyhow function with context, and
    // its error kept the kind of an awaited child's failure.
    assert_eq!(error("1", 2), json!({"kind": "task", "message": "the limit 300 is above 100"}));
    assert_eq!(
        error("1", 0),
        json!({"kind": "child", "message": "checking the limit: node 2 (`check`) failed: the limit 300 is above 100"})
    );
    // A boxed error.
    assert_eq!(error("2", 3), json!({"kind": "task", "message": "7 is odd"}));
    // anyhow's context over a parse error.
    let path = dir.path().join("bad").display().to_string();
    assert_eq!(
        error("3", 1),
        json!({"kind": "task", "message": format!("parsing the limit in {path}: invalid digit found in string")})
    );
    assert_eq!(show(dir.path(), "4")["run"]["output"], 4);
}

/// Not found, for good.
#[derive(Debug, salt::Fatal)]
struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gone")
    }
}

impl std::error::Error for Gone {}

/// Fails with `?` on the error type `kind` names.
#[salt::task]
async fn fails_with(kind: String) -> salt::Result<u64> {
    match kind.as_str() {
        "string" => Err(String::from("a string"))?,
        "str" => Err("a str")?,
        "boxed" => Err(Box::<dyn std::error::Error + Send + Sync>::from("a boxed error"))?,
        "anyhow" => Err(anyhow::anyhow!("the root cause")).context("the outer context")?,
        "fatal" => Err(Gone).context("fetching the customer")?,
        _ => Ok(0),
    }
}

/// A task whose own error type is anyhow's.
#[salt::task]
async fn returns_anyhow(fail: bool) -> anyhow::Result<u64> {
    if fail { Err(anyhow::anyhow!("the cause")).context("the context") } else { Ok(1) }
}

#[tokio::test]
async fn question_mark_takes_strings_boxed_errors_and_anyhow() {
    let error = |kind: &'static str| async move { fails_with(kind.to_string()).await.unwrap_err() };
    assert_eq!(error("string").await.to_string(), "a string");
    assert_eq!(error("str").await.to_string(), "a str");
    assert_eq!(error("boxed").await.to_string(), "a boxed error");
    let anyhow = error("anyhow").await;
    assert_eq!(
        (anyhow.kind(), anyhow.to_string()),
        (salt::ErrorKind::Task, "the outer context: the root cause".into())
    );
    // A fatal error under anyhow's context is still fatal.
    let fatal = error("fatal").await;
    assert_eq!((fatal.kind(), fatal.to_string()), (salt::ErrorKind::Fatal, "fetching the customer: gone".into()));

    let error = returns_anyhow(true).await.unwrap_err();
    assert_eq!((error.kind(), error.to_string()), (salt::ErrorKind::Task, "the context: the cause".into()));
    assert_eq!(returns_anyhow(false).await.unwrap(), 1);
}

#[tokio::test]
async fn a_task_error_goes_through_anyhow_and_boxed_errors() {
    async fn with_anyhow() -> anyhow::Result<u64> {
        Ok(fails_with(String::from("str")).await?)
    }
    let error = with_anyhow().await.unwrap_err();
    assert_eq!(error.to_string(), "a str");
    assert_eq!(error.downcast_ref::<salt::Error>().map(salt::Error::kind), Some(salt::ErrorKind::Task));

    async fn with_box() -> Result<u64, Box<dyn std::error::Error>> {
        Ok(fails_with(String::from("string")).await?)
    }
    assert_eq!(with_box().await.unwrap_err().to_string(), "a string");
}
