//! `salt dag run`: DAG files run as command nodes of one run, on a real SQLite file, through
//! the real `salt` binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use salt_runtime::model::{EdgeKind, RunId};
use salt_runtime::ops;
use serde_json::Value;

use common::{SALT, text};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../salt-dag/examples").join(name).display().to_string()
}

fn salt(dir: &Path, args: &[&str]) -> Output {
    Command::new(SALT).args(args).current_dir(dir).output().unwrap()
}

/// The run's edges between command nodes, by their labels (step names).
fn step_edges(db: &Path) -> Vec<(String, String)> {
    let store = ops::open_read_only(&db.display().to_string()).unwrap();
    let view = ops::run_graph(&*store, RunId::new(1)).unwrap();
    let label = |id: salt_runtime::model::NodeId| {
        let n = view.nodes.iter().find(|n| n.id == id).unwrap();
        n.label.clone().unwrap_or_else(|| n.task.clone())
    };
    let mut edges: Vec<(String, String)> = view
        .edges
        .iter()
        .filter(|(from, _, kind)| *kind == EdgeKind::Data && from.get() != 0)
        .map(|(from, to, _)| (label(*from), label(*to)))
        .collect();
    edges.sort();
    edges
}

#[test]
fn a_dag_file_runs_with_its_dependencies_as_the_graph_edges() {
    let dir = tempfile::tempdir().unwrap();
    // The example of the repository's examples/, daggy's README pipeline with small commands.
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dags/pipeline.json").display().to_string();
    let out = salt(dir.path(), &["dag", "run", &pipeline]);
    assert!(out.status.success(), "{}", text(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["steps"].as_array().unwrap().len(), 9, "{result}");
    let edges = step_edges(&dir.path().join(".salt/dag.db"));
    for (from, to) in [("Pull_A", "Transform_A"), ("Transform_A", "Derive_Data_AB"), ("Transform_B", "Derive_Data_AB")]
    {
        assert!(edges.contains(&(from.to_string(), to.to_string())), "{from} -> {to} missing: {edges:?}");
    }
    assert!(!edges.contains(&("Pull_A".into(), "Transform_B".into())), "{edges:?}");
}

#[test]
fn a_generator_adds_steps_that_run_before_the_step_waiting_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = salt(dir.path(), &["dag", "run", &example("generator.json")]);
    assert!(out.status.success(), "{}", text(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<&str> = result["steps"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(steps, ["discover", "load_1", "load_2", "report"], "{result}");
    assert_eq!(result["stdout_tails"]["load_2"][0], "load west", "{result}");
    let edges = step_edges(&dir.path().join(".salt/dag.db"));
    assert!(edges.contains(&("load_1".into(), "report".into())), "{edges:?}");
}

#[test]
fn a_failing_step_fails_the_run_and_what_depends_on_it_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("fail.json");
    let marker = dir.path().join("after.ran");
    std::fs::write(
        &spec,
        serde_json::json!({"tasks": {
            "first": {"job": {"command": ["sh", "-c", "echo broken >&2; exit 3"]}, "children": ["after"]},
            "after": {"job": {"command": ["touch", marker.display().to_string()]}}
        }})
        .to_string(),
    )
    .unwrap();
    let out = salt(dir.path(), &["dag", "run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit"), "{}", text(&out));
    assert!(!marker.exists(), "a step after a failed one ran");
    std::fs::remove_dir_all(dir.path().join(".salt")).unwrap();

    // Independent steps run to their end whatever the order of the file (or of the names).
    for (failing, independent) in [("a_first", "z_last"), ("z_last", "a_first")] {
        let done = dir.path().join(format!("{independent}.done"));
        let tasks = serde_json::json!({
            failing: {"job": {"command": ["sh", "-c", "exit 3"]}, "children": ["after"]},
            independent: {"job": {"command": ["sh", "-c", format!("sleep 1; touch {}", done.display())]}},
            "after": {"job": {"command": ["touch", marker.display().to_string()]}}
        });
        std::fs::write(&spec, serde_json::json!({"tasks": tasks}).to_string()).unwrap();
        let out = salt(dir.path(), &["dag", "run", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(done.exists(), "`{independent}` was cancelled by the failure of `{failing}`: {}", text(&out));
        assert!(!marker.exists(), "a step after a failed one ran");
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("`{failing}`")), "{}", text(&out));
        std::fs::remove_dir_all(dir.path().join(".salt")).unwrap();
    }
    // A file that does not check is refused before anything runs.
    std::fs::write(&spec, r#"{"tasks": {"a": {"job": {"command": ["true"]}, "parents": ["nope"]}}}"#).unwrap();
    let out = salt(dir.path(), &["dag", "run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"), "{}", text(&out));
}

#[test]
fn a_generator_output_is_read_whole_however_many_lines_it_spans() {
    let dir = tempfile::tempdir().unwrap();
    // daggy's README generator example, laid out over many lines.
    let tasks = serde_json::json!({
        "pull_a": {"job": {"command": ["echo", "pull", "a"]}, "children": ["report"]},
        "pull_b": {"job": {"command": ["echo", "pull", "b"]}, "children": ["report"]},
        "pull_c": {"job": {"command": ["echo", "pull", "c"]}, "children": ["report"]}
    });
    let printed = serde_json::to_string_pretty(&tasks).unwrap();
    assert!(printed.lines().count() > 26, "{printed}");
    let tasks_file = dir.path().join("tasks.json");
    std::fs::write(&tasks_file, &printed).unwrap();
    let spec = dir.path().join("gen.json");
    std::fs::write(
        &spec,
        serde_json::json!({"tasks": {
            "discover": {"job": {"command": ["cat", tasks_file.display().to_string()]}, "isGenerator": true, "children": ["report"]},
            "report": {"job": {"command": ["echo", "report"]}}
        }})
        .to_string(),
    )
    .unwrap();
    let out = salt(dir.path(), &["dag", "run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps: Vec<&str> = result["steps"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(steps, ["discover", "pull_a", "pull_b", "pull_c", "report"], "{result}");
    std::fs::remove_dir_all(dir.path().join(".salt")).unwrap();

    // Past 1 MiB the generator fails, saying why, and adds nothing.
    std::fs::write(
        &spec,
        serde_json::json!({"tasks": {
            "discover": {"job": {"command": ["sh", "-c", "head -c 1100000 /dev/zero | tr '\\0' ' '; echo '{}'"]}, "isGenerator": true}
        }})
        .to_string(),
    )
    .unwrap();
    let out = salt(dir.path(), &["dag", "run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("printed more than 1 MiB on its stdout"), "{}", text(&out));
}

#[test]
fn a_dag_file_whose_dependencies_would_make_too_many_edges_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    let spec = dir.path().join("wide.json");
    std::fs::write(
        &spec,
        serde_json::json!({"parameters": {"A": values, "B": values}, "tasks": {
            "x": {"job": {"command": ["echo", "{{A}}{{B}}"]}},
            "y": {"job": {"command": ["echo", "{{B}}{{A}}"]}, "parents": ["x"]}
        }})
        .to_string(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = salt(dir.path(), &["dag", "check", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the dependency of task `y` on task `x` would link 100000000 pairs"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}
