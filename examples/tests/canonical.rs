//! The canonical workflows of the static–dynamic gradient, run as their real binaries: plans
//! before they run, final graphs after, promises kept and broken, a signal from a person.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The compiled example `name` (cargo builds examples next to the test binaries).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join("examples").join(name);
    assert!(path.exists(), "{} is missing: build the examples first (`cargo test` does)", path.display());
    path
}

struct Example {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Example {
    fn new(name: &str) -> Self {
        Self { bin: example(name), dir: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("SALT_DB", self.dir.path().join("salt.db"))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let child = self.cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        watchdog(child.id());
        child.wait_with_output().unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn plan(&self, workflow: &str) -> Value {
        self.json(&["graph", workflow, "--plan", "--format", "json"])
    }

    fn graph(&self, run: usize) -> Value {
        self.json(&["graph", &run.to_string(), "--format", "json"])
    }
}

/// Kills a process still running after two minutes: a hang fails its test, not the suite.
fn watchdog(pid: u32) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(120));
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The tasks of the root's children, in creation order.
fn children(graph: &Value) -> Vec<String> {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["parent"] == 0)
        .map(|n| n["task"].as_str().unwrap().to_string())
        .collect()
}

/// The edges of a graph as (from task, to task, kind), sorted.
fn task_edges(graph: &Value) -> Vec<(String, String, String)> {
    let task = |id: &Value| graph["nodes"][id.as_u64().unwrap() as usize]["task"].as_str().unwrap().to_string();
    let mut edges: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (task(&e["from"]), task(&e["to"]), e["kind"].as_str().unwrap().to_string()))
        .collect();
    edges.sort();
    edges
}

/// Nodes (id, task) and edges, without states: what a plan and a final graph share.
fn structure(graph: &Value) -> (Vec<(u64, String)>, Value) {
    let nodes = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["task"].as_str().unwrap().to_string()))
        .collect();
    (nodes, graph["edges"].clone())
}

/// Compares a plan's dot with its reviewed snapshot (`SNAPSHOTS=overwrite` rewrites them).
fn snapshot(name: &str, dot: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(format!("{name}.dot"));
    if std::env::var("SNAPSHOTS").as_deref() == Ok("overwrite") || !path.exists() {
        std::fs::write(&path, dot).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(dot, expected, "the plan of {name} changed; review it and run with SNAPSHOTS=overwrite");
}

#[test]
fn static_pipeline_plan_equals_its_final_graph() {
    let ex = Example::new("static_pipeline");
    let plan = ex.plan("static_pipeline");
    assert_eq!(plan["wildcards"], json!([]), "{plan}");
    assert_eq!(plan["ghosts"], json!([]));
    snapshot("static_pipeline", &String::from_utf8(ex.run(&["graph", "static_pipeline", "--plan"]).stdout).unwrap());
    for run in 1..=3 {
        let out = ex.run(&["run"]);
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "385");
        let graph = ex.graph(run);
        assert_eq!(structure(&graph), structure(&plan), "run {run}");
        assert_eq!(graph["wildcards"], json!([]));
    }
}

#[test]
fn random_branch_always_ends_as_a_or_b_and_its_plan_shows_both() {
    let ex = Example::new("random_branch");
    let plan = ex.plan("random_branch");
    assert_eq!(plan["wildcards"], json!([{"after": 0, "owner": 0, "may_add": "A | B"}]), "{plan}");
    snapshot("random_branch", &String::from_utf8(ex.run(&["graph", "random_branch", "--plan"]).stdout).unwrap());
    let mut seen = std::collections::BTreeSet::new();
    for (run, seed) in (1..).zip(0..12u64) {
        let input = if seed < 8 { json!({"seed": seed}) } else { json!({"seed": null}) };
        let out = ex.run(&["run", "--input", &input.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        let graph = ex.graph(run);
        let kids = children(&graph);
        assert!(kids == ["A"] || kids == ["B"], "run {run}: {kids:?}");
        assert_eq!(graph["edges"], json!([]), "run {run}: one node, no edge");
        seen.insert(kids[0].clone());
    }
    assert_eq!(seen.len(), 2, "both branches occur");
}

#[test]
fn random_map_is_always_a_then_ms_then_b_and_its_plan_shows_m_star() {
    let ex = Example::new("random_map");
    let plan = ex.plan("random_map");
    assert_eq!(plan["wildcards"], json!([{"after": 1, "owner": 0, "may_add": "M* -> B"}]), "{plan}");
    assert_eq!(plan["ghosts"], json!([{"task": "B", "owner": 0}]));
    snapshot("random_map", &String::from_utf8(ex.run(&["graph", "random_map", "--plan"]).stdout).unwrap());
    let mut widths = std::collections::BTreeSet::new();
    for (run, seed) in (1..).zip(0..9u64) {
        let input = if seed < 6 { json!({"seed": seed}) } else { json!({"seed": null}) };
        let out = ex.run(&["run", "--input", &input.to_string()]);
        assert!(out.status.success(), "{}", text(&out));
        let graph = ex.graph(run);
        let kids = children(&graph);
        let width = kids.len() - 2;
        assert_eq!(kids.first().map(String::as_str), Some("A"), "run {run}: {kids:?}");
        assert_eq!(kids.last().map(String::as_str), Some("B"), "run {run}: {kids:?}");
        assert!(kids[1..kids.len() - 1].iter().all(|k| k == "M"), "run {run}: {kids:?}");
        // Exactly `A -> M* -> B`: each `M` after `A` and before `B`; `A -> B` when there is none.
        let edge = |f: &str, t: &str| (f.to_string(), t.to_string(), "after".to_string());
        let mut expected: Vec<_> = if width == 0 {
            vec![edge("A", "B")]
        } else {
            (0..width).flat_map(|_| [edge("A", "M"), edge("M", "B")]).collect()
        };
        expected.sort();
        assert_eq!(task_edges(&graph), expected, "run {run}: {graph}");
        let (a, b) = (1, kids.len() as u64);
        let ids: Vec<(u64, u64)> = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
            .collect();
        for m in 2..b {
            assert!(ids.contains(&(a, m)) && ids.contains(&(m, b)), "run {run}: M {m}: {ids:?}");
        }
        // 10 + 11 + … : the output matches the width.
        let expected: u64 = (0..width as u64).map(|i| 10 + i).sum();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected.to_string());
        widths.insert(width);
    }
    assert!(widths.contains(&0) && widths.len() >= 4, "{widths:?}");
}

#[test]
fn broken_promise_is_terminated_with_a_clear_error() {
    let ex = Example::new("broken_promise");
    // The plan already breaks the promise: it says so and draws nothing.
    let plan = ex.run(&["graph", "broken_promise", "--plan"]);
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    assert!(plan.stdout.is_empty(), "{}", text(&plan));
    assert!(
        String::from_utf8_lossy(&plan.stderr).contains(
            "the plan of `broken_promise` is refused: broken promise `extract -> load` (declared by node 0, `broken_promise`): spawning `audit` from node 0 (`broken_promise`) is not allowed"
        ),
        "{}",
        text(&plan)
    );
    let out = ex.run(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("terminated"), "{err}");
    assert!(
        err.contains("broken promise `extract -> load` (declared by node 0, `broken_promise`): spawning `audit` from node 0 (`broken_promise`) is not allowed"),
        "{err}"
    );
    assert!(err.contains("a terminated run is final"), "{err}");
    let graph = ex.graph(1);
    assert_eq!(graph["run"]["state"], "terminated");
    assert_eq!(children(&graph), ["extract"], "the audit was never added");
}

#[test]
fn approval_waits_for_a_typed_decision() {
    let ex = Example::new("approval");
    let child = ex.cmd(&["run"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    watchdog(child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let show = ex.run(&["show", "1", "--json"]);
        if show.status.success() {
            let show: Value = serde_json::from_slice(&show.stdout).unwrap();
            if show["waits"].as_array().is_some_and(|w| !w.is_empty()) {
                assert_eq!(show["waits"][0]["name"], "decision");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the approval never parked");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = ex.run(&["signal", "1", "decision", r#"{"approved": "yes"}"#]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not match"), "{}", text(&out));
    let out = ex.run(&["signal", "1", "decision", r#"{"approved": true, "by": "ada"}"#]);
    assert!(out.status.success(), "{}", text(&out));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "\"paid 1212, approved by ada\"");
}

#[test]
fn each_example_keeps_its_own_database_so_each_has_its_own_run_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| {
        let child = Command::new(example(name))
            .args(args)
            .current_dir(dir.path())
            .env_remove("SALT_DB")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        watchdog(child.id());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name} {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    run("static_pipeline", &[]);
    assert_eq!(run("hello", &["run"]).trim(), r#""Hello, world!""#);
    let shown = run("hello", &["show", "1"]);
    assert!(shown.starts_with("run 1  workflow hello  SUCCEEDED\n"), "{shown}");
    let shown = run("static_pipeline", &["show", "1"]);
    assert!(shown.starts_with("run 1  workflow static_pipeline  SUCCEEDED\n"), "{shown}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join(".salt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".db"))
        .collect();
    files.sort();
    assert_eq!(files, ["hello.db", "static_pipeline.db"]);
    let help = run("hello", &["--help"]);
    assert!(help.contains("[default: .salt/hello.db]"), "{help}");
    // `SALT_DB` still wins.
    let out = Command::new(example("hello"))
        .arg("run")
        .current_dir(dir.path())
        .env("SALT_DB", dir.path().join("mine.db"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("mine.db").exists());
    assert_eq!(shown_run_count(&run("hello", &["runs"])), 1, "the run with SALT_DB went to mine.db");
}

/// How many runs a `runs` table lists.
fn shown_run_count(table: &str) -> usize {
    table.lines().skip(1).filter(|l| !l.trim().is_empty()).count()
}
