use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::*;

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

fn load(name: &str, params: &[(String, ParamValue)]) -> Plan {
    Plan::load(&example(name), params).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.steps().iter().map(|s| s.name.as_str()).collect()
}

fn edges(plan: &Plan) -> BTreeSet<(String, String)> {
    plan.edges().into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn edge_set(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// The error messages of a spec that must not load.
fn errors(text: &str) -> Vec<String> {
    match Plan::from_json(text, &[]) {
        Ok(plan) => panic!("expected errors, got a plan: {:?}", names(&plan)),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn param(arg: &str) -> (String, ParamValue) {
    parse_param(arg).unwrap()
}

#[test]
fn pipeline_example_is_the_readme_graph() {
    let plan = load("pipeline.json", &[]);
    assert_eq!(
        names(&plan),
        [
            "Pull_A",
            "Pull_B",
            "Pull_C",
            "Transform_A",
            "Transform_B",
            "Transform_C",
            "Derive_Data_AB",
            "Derive_Data_ABC",
            "Report"
        ]
    );
    assert_eq!(
        edges(&plan),
        edge_set(&[
            ("Pull_A", "Transform_A"),
            ("Pull_B", "Transform_B"),
            ("Pull_C", "Transform_C"),
            ("Transform_A", "Derive_Data_AB"),
            ("Transform_B", "Derive_Data_AB"),
            ("Derive_Data_AB", "Derive_Data_ABC"),
            ("Transform_C", "Derive_Data_ABC"),
            ("Derive_Data_ABC", "Report"),
        ])
    );
    let pull = plan.step("Pull_A").unwrap();
    // commandString is split like a shell splits words, quotes removed, nothing expanded.
    assert_eq!(pull.argv, ["sh", "-c", "mkdir -p \"$DATA_DIR\" && echo a > \"$DATA_DIR/a.raw\""]);
    // jobDefaults' environment reaches every task.
    assert_eq!(pull.env, BTreeMap::from([("DATA_DIR".to_string(), "/tmp/salt-dag-pipeline".to_string())]));
    let derive = plan.step("Derive_Data_ABC").unwrap();
    assert_eq!((derive.max_retries, derive.retry_interval), (2, Duration::from_secs(5)));
    assert_eq!(derive.parents, ["Transform_C", "Derive_Data_AB"]);
    assert_eq!(plan.step("Report").unwrap().max_retries, 0);
}

#[test]
fn pipeline_example_runs_in_plan_order() {
    let dir = std::env::temp_dir().join(format!("salt-dag-test-{}", std::process::id()));
    let plan = load("pipeline.json", &[]);
    let mut report = String::new();
    for step in plan.steps() {
        let mut env = step.env.clone();
        env.insert("DATA_DIR".into(), dir.display().to_string());
        let out = std::process::Command::new(&step.argv[0]).args(&step.argv[1..]).envs(&env).output().unwrap();
        assert!(out.status.success(), "{}: {}", step.name, String::from_utf8_lossy(&out.stderr));
        report = String::from_utf8(out.stdout).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(report, "ABC\n");
}

#[test]
fn parameters_expand_into_the_cartesian_product() {
    let plan = load("parameters.json", &[]);
    assert_eq!(names(&plan), ["populate_inputs", "calc_date_1", "calc_date_2", "calc_date_3", "generate_report"]);
    assert_eq!(
        edges(&plan),
        edge_set(&[
            ("populate_inputs", "calc_date_1"),
            ("populate_inputs", "calc_date_2"),
            ("populate_inputs", "calc_date_3"),
            ("calc_date_1", "generate_report"),
            ("calc_date_2", "generate_report"),
            ("calc_date_3", "generate_report"),
        ])
    );
    let calc = plan.step("calc_date_2").unwrap();
    assert_eq!(calc.task, "calc_date");
    assert_eq!(calc.argv, ["sh", "-c", "echo \"$1\" >> \"$0\"", "/tmp/salt-dag-parameters/inputs", "date 2021-02-01"]);
    // The task's own environment replaces jobDefaults' (daggy merges job keys, not variables).
    assert_eq!(calc.env, BTreeMap::from([("REPORT_DATE".to_string(), "2021-02-01".to_string())]));
    assert_eq!(
        calc.bindings,
        BTreeMap::from([
            ("DATE".to_string(), "2021-02-01".to_string()),
            ("DIRECTORY".to_string(), "/tmp/salt-dag-parameters".to_string()),
            ("FILE".to_string(), "inputs".to_string()),
        ])
    );
    assert_eq!((calc.max_retries, calc.retry_interval), (3, Duration::from_secs(30)));
    assert_eq!(plan.step("generate_report").unwrap().argv, ["sort", "/tmp/salt-dag-parameters/inputs"]);
    assert_eq!(plan.step("generate_report").unwrap().env["LC_ALL"], "C");
    assert_eq!(plan.expansions("calc_date").unwrap(), ["calc_date_1", "calc_date_2", "calc_date_3"]);
}

#[test]
fn two_list_parameters_multiply() {
    let plan = Plan::from_json(
        r#"{
          "parameters": {"A": ["1", "2"], "B": ["x", "y"]},
          "tasks": {"t": {"job": {"command": ["echo", "{{B}}-{{A}}", "{{A}}"]}}, "after": {"job": {"command": ["true"]}, "parents": ["t"]}}
        }"#,
        &[],
    )
    .unwrap();
    let argv: Vec<(&str, &str)> = plan.steps()[..4].iter().map(|s| (s.name.as_str(), s.argv[1].as_str())).collect();
    // Parameters multiply in order of first use (B, then A), the last varying fastest.
    assert_eq!(argv, [("t_1", "x-1"), ("t_2", "x-2"), ("t_3", "y-1"), ("t_4", "y-2")]);
    assert_eq!(plan.step("t_3").unwrap().argv[2], "1");
    assert_eq!(plan.step("after").unwrap().parents, ["t_1", "t_2", "t_3", "t_4"]);
}

#[test]
fn param_overrides_replace_and_expand() {
    let one = load("parameters.json", &[param("DATE=2022-06-30")]);
    assert_eq!(names(&one), ["populate_inputs", "calc_date", "generate_report"]);
    assert_eq!(one.step("calc_date").unwrap().argv[4], "date 2022-06-30");

    let two = load("parameters.json", &[param(r#"DATE=["a", "b"]"#), param("FILE=other")]);
    assert_eq!(names(&two), ["populate_inputs", "calc_date_1", "calc_date_2", "generate_report"]);
    assert_eq!(two.step("calc_date_2").unwrap().argv[3..], ["/tmp/salt-dag-parameters/other", "date b"]);

    assert_eq!(parse_param("DATE").unwrap_err(), "--param `DATE`: expected NAME=VALUE");
    assert!(
        parse_param("DATE=[1, 2]").unwrap_err().starts_with("--param `DATE=[1, 2]`: `[1, 2]` starts like a JSON list")
    );
}

#[test]
fn generator_output_adds_expanded_children() {
    let mut plan = load("generator.json", &[]);
    assert_eq!(names(&plan), ["discover", "report"]);
    assert_eq!(edges(&plan), edge_set(&[("discover", "report")]));
    let discover = plan.step("discover").unwrap().clone();
    assert!(discover.is_generator);
    // Run the generator for real: it prints its tasks on stdout.
    let out = std::process::Command::new(&discover.argv[0]).args(&discover.argv[1..]).output().unwrap();
    let output = String::from_utf8(out.stdout).unwrap();
    assert_eq!(output, r#"{"load": {"job": {"command": ["echo", "load {{REGION}}"]}, "children": ["report"]}}"#);

    let done = BTreeSet::from(["discover".to_string()]);
    let added = plan.add_generated("discover", &output, &done).unwrap();
    let new: Vec<(&str, &[String])> = added.steps.iter().map(|s| (s.name.as_str(), s.argv.as_slice())).collect();
    assert_eq!(
        new,
        [
            ("load_1", &["echo".to_string(), "load east".to_string()][..]),
            ("load_2", &["echo".into(), "load west".into()][..])
        ]
    );
    assert_eq!(added.steps[0].generated_by.as_deref(), Some("discover"));
    assert_eq!(
        added.edges,
        [
            ("discover".to_string(), "load_1".to_string()),
            ("discover".to_string(), "load_2".to_string()),
            ("load_1".to_string(), "report".to_string()),
            ("load_2".to_string(), "report".to_string()),
        ]
    );
    // The plan now holds them, report still last.
    assert_eq!(names(&plan), ["discover", "load_1", "load_2", "report"]);
    assert_eq!(plan.step("report").unwrap().parents, ["discover", "load_1", "load_2"]);
    // A second output naming `load` again clashes.
    let again = plan.add_generated("discover", r#"{"load": {"job": {"command": ["true"]}}}"#, &done).unwrap_err();
    assert_eq!(
        again.to_string(),
        "generator `discover`: generated task `load` is named `load`, which is already a step of this DAG"
    );
}

#[test]
fn generator_child_onto_a_finished_task_is_refused() {
    let mut plan = load("generator.json", &[]);
    let before = names(&plan).join(",");
    let output = r#"{"tasks": {"load": {"job": {"command": ["echo", "{{REGION}}"]}, "children": ["report"]}}}"#;
    let done = BTreeSet::from(["discover".to_string(), "report".to_string()]);
    let err = plan.add_generated("discover", output, &done).unwrap_err();
    assert_eq!(
        err.to_string(),
        "generator `discover`: task `load` names `report` as a child, but `report` has already run; \
         a generated task cannot add a dependency to a task that has completed"
    );
    assert_eq!(names(&plan).join(","), before, "nothing is added");
    // A parent that already finished is fine: the new task just need not wait.
    let ok = plan.add_generated(
        "discover",
        r#"[{"name": "late", "job": {"command": ["true"]}, "parents": ["report"]}]"#,
        &done,
    );
    assert_eq!(
        ok.unwrap().edges,
        [("discover".to_string(), "late".to_string()), ("report".to_string(), "late".to_string())]
    );
}

#[test]
fn malformed_generator_output_quotes_the_text() {
    let mut plan = load("generator.json", &[]);
    let err = plan.add_generated("discover", "found 3 files\n", &BTreeSet::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "generator `discover` printed malformed tasks: expected ident at line 1 column 2\n--- its output ---\nfound 3 files\n"
    );
    let err = plan.add_generated("discover", r#"{"x": {"job": {"command": "echo"}}}"#, &BTreeSet::new()).unwrap_err();
    assert!(
        err.to_string().starts_with("generator `discover` printed malformed tasks: at tasks.x.job.command: invalid type: string \"echo\", expected a sequence"),
        "{err}"
    );
    let err = plan.add_generated("report", "{}", &BTreeSet::new()).unwrap_err();
    assert_eq!(err.to_string(), "`report` is not a generator step of this plan");
}

#[test]
fn unknown_dependencies_name_the_task_and_key() {
    let e = errors(
        r#"{"tasks": {
            "a": {"job": {"command": ["true"]}, "parents": ["nope"]},
            "b": {"job": {"command": ["true"]}, "children": ["gone"]}
        }}"#,
    );
    assert_eq!(
        e,
        [
            "task `a`: parents names `nope`, which is not a task of this DAG",
            "task `b`: children names `gone`, which is not a task of this DAG"
        ]
    );
}

#[test]
fn a_cycle_is_named() {
    let e = errors(
        r#"{"parameters": {"D": ["1", "2"]}, "tasks": {
            "start": {"job": {"command": ["true"]}, "children": ["a"]},
            "a": {"job": {"command": ["echo", "{{D}}"]}, "children": ["b"]},
            "b": {"job": {"command": ["true"]}, "children": ["c"]},
            "c": {"job": {"command": ["true"]}, "children": ["a"]}
        }}"#,
    );
    assert_eq!(e, ["the dependencies form a cycle: a -> b -> c -> a"]);
    let e = errors(r#"{"tasks": {"me": {"job": {"command": ["true"]}, "parents": ["me"]}}}"#);
    assert_eq!(e, ["the dependencies form a cycle: me -> me"]);
    // A task downstream of the cycle, written first, is not part of it.
    let e = errors(
        r#"{"tasks": {
            "after": {"job": {"command": ["true"]}, "parents": ["c"]},
            "a": {"job": {"command": ["true"]}, "parents": ["c"]},
            "b": {"job": {"command": ["true"]}, "parents": ["a"]},
            "c": {"job": {"command": ["true"]}, "parents": ["b"]}
        }}"#,
    );
    assert_eq!(e, ["the dependencies form a cycle: a -> b -> c -> a"]);
}

#[test]
fn a_generated_cycle_is_refused() {
    let mut plan = load("generator.json", &[]);
    let output = r#"{"late": {"job": {"command": ["true"]}, "parents": ["report"], "children": ["report"]}}"#;
    let err = plan.add_generated("discover", output, &BTreeSet::new()).unwrap_err();
    assert_eq!(err.to_string(), "the dependencies form a cycle: report -> late -> report");
    assert_eq!(names(&plan), ["discover", "report"]);
}

#[test]
fn duplicate_names_after_expansion() {
    let e = errors(
        r#"{"parameters": {"D": ["1", "2"]}, "tasks": {
            "calc": {"job": {"command": ["echo", "{{D}}"]}},
            "calc_2": {"job": {"command": ["true"]}}
        }}"#,
    );
    assert_eq!(e, ["two tasks are named `calc_2` after expansion: from `calc` and from `calc_2`"]);
    let e = errors(
        r#"{"tasks": [{"name": "x", "job": {"command": ["true"]}}, {"name": "x", "job": {"command": ["true"]}}]}"#,
    );
    assert_eq!(e, ["task `x` is defined twice"]);
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors(
        r#"{"parameters": {"D": ["1", "2"]}, "tasks": {
            "a": {"job": {"command": ["echo", "{{DAY}}"]}, "children": ["z"]},
            "b": {"job": {"commandString": "echo {{D}}"}, "parents": ["a", "y"]}
        }}"#,
    );
    assert_eq!(
        e,
        [
            "task `a` uses `{{DAY}}`, but there is no parameter `DAY`",
            "task `a`: children names `z`, which is not a task of this DAG",
            "task `b`: parents names `y`, which is not a task of this DAG"
        ]
    );
}

#[test]
fn unknown_and_empty_parameters() {
    let e = errors(
        r#"{"parameters": {"DATE": [], "X": "1"}, "tasks": {
            "a": {"job": {"command": ["echo", "{{DAET}}", "{{X}}"]}},
            "b": {"job": {"command": ["echo"], "environment": {"WHEN": "{{DATE}}"}}}
        }}"#,
    );
    assert_eq!(
        e,
        [
            "task `a` uses `{{DAET}}`, but there is no parameter `DAET`",
            "task `b` uses parameter `DATE`, whose list of values is empty"
        ]
    );
}

#[test]
fn bad_types_and_keys_name_their_path() {
    assert_eq!(
        errors(r#"{"tasks": {"calc": {"job": {"command": ["true"]}, "maxRetries": "3"}}}"#),
        ["at tasks.calc.maxRetries: invalid type: string \"3\", expected u32 at line 1 column 67"]
    );
    assert_eq!(
        errors(r#"{"tasks": {"calc": {"job": {"command": ["true"]}, "parent": ["x"]}}}"#)[0]
            .split(", expected")
            .next()
            .unwrap(),
        "at tasks.calc.parent: unknown field `parent`"
    );
    assert_eq!(
        errors(r#"{"tasks": {"calc": {"job": {"command": [1]}}}}"#),
        ["at tasks.calc.job.command[0]: invalid type: integer `1`, expected a string"]
    );
    assert_eq!(
        errors(r#"{"tasks": {"calc": {"job": {"command": ["true"], "environment": ["NOEQUALS"]}}}}"#),
        ["at tasks.calc.job.environment: environment entry `NOEQUALS` is not NAME=VALUE"]
    );
    assert_eq!(errors("{\"tasks\": {}"), ["EOF while parsing an object at line 1 column 12"]);
}

#[test]
fn parameters_must_be_strings_and_not_explode() {
    assert_eq!(
        errors(r#"{"parameters": {"N": 5}, "tasks": {}}"#),
        ["at parameters.N: expected a string or a list of strings at line 1 column 23"]
    );
    let values: Vec<String> = (0..101).map(|i| format!("\"{i}\"")).collect();
    let values = values.join(",");
    let text = format!(
        r#"{{"parameters": {{"A": [{values}], "B": [{values}]}}, "tasks": {{"t": {{"job": {{"command": ["echo", "{{{{A}}}}{{{{B}}}}"]}}}}}}}}"#
    );
    assert_eq!(errors(&text), ["task `t` would expand into more than 10000 steps"]);
}

#[test]
fn commands_must_be_present_and_well_formed() {
    let e = errors(
        r#"{"tasks": {
            "none": {"job": {}},
            "blank": {"job": {"command": []}},
            "both": {"job": {"command": ["a"], "commandString": "a"}},
            "quote": {"job": {"commandString": "echo 'unclosed"}}
        }}"#,
    );
    assert_eq!(
        e,
        [
            "task `none` has an empty command: set `job.command` (a list) or `job.commandString`",
            "task `blank` has an empty command: set `job.command` (a list) or `job.commandString`",
            "task `both` sets both `job.command` and `job.commandString`; keep one",
            "task `quote`: cannot split job.commandString: missing closing quote"
        ]
    );
}

#[test]
fn job_defaults_fill_what_a_task_leaves_out() {
    let plan = Plan::from_json(
        r#"{"jobDefaults": {"commandString": "echo default", "environment": {"A": "1"}},
            "tasks": {"d": {}, "own": {"job": {"command": ["echo", "own"]}}}}"#,
        &[],
    )
    .unwrap();
    assert_eq!(plan.step("d").unwrap().argv, ["echo", "default"]);
    assert_eq!(plan.step("own").unwrap().argv, ["echo", "own"]);
    assert_eq!(plan.step("own").unwrap().env["A"], "1");
}

#[test]
fn an_image_is_expanded_with_the_parameters_and_a_default() {
    let plan = Plan::from_json(
        r#"{"parameters": {"TAG": ["1", "2"]}, "jobDefaults": {"image": "localhost/base"},
            "tasks": {"a": {"job": {"command": ["true"], "image": "localhost/tool:{{TAG}}"}},
                      "b": {"job": {"command": ["true"]}}, "c": {"job": {"command": ["true"], "image": "{{NOPE}}"}}}}"#,
        &[],
    );
    let errors = plan.unwrap_err().to_string();
    assert!(errors.contains("task `c` uses `{{NOPE}}`, but there is no parameter `NOPE`"), "{errors}");
    let plan = Plan::from_json(
        r#"{"parameters": {"TAG": ["1", "2"]}, "jobDefaults": {"image": "localhost/base"},
            "tasks": {"a": {"job": {"command": ["true"], "image": "localhost/tool:{{TAG}}"}},
                      "b": {"job": {"command": ["true"]}}}}"#,
        &[],
    )
    .unwrap();
    let images: Vec<(&str, Option<&str>)> =
        plan.steps().iter().map(|s| (s.name.as_str(), s.image.as_deref())).collect();
    assert_eq!(
        images,
        [("a_1", Some("localhost/tool:1")), ("a_2", Some("localhost/tool:2")), ("b", Some("localhost/base"))]
    );
}

fn run(cmd: DagCommand) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = match cmd.execute(&mut out, &mut err) {
        Outcome::Exit(code) => code,
        Outcome::Run { .. } => 255,
    };
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn cli(args: &[&str]) -> DagCommand {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        dag: DagCommand,
    }
    let mut argv = vec!["dag"];
    argv.extend(args);
    Cli::try_parse_from(argv).unwrap().dag
}

#[test]
fn check_prints_a_summary_or_the_errors() {
    let spec = example("parameters.json");
    let spec = spec.to_str().unwrap();
    let (code, out, err) = run(cli(&["check", spec]));
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        format!(
            "{spec}: ok, 3 tasks expanded into 5 steps, 6 edges\n\
             parameters: DATE (3 values), DIRECTORY=/tmp/salt-dag-parameters, FILE=inputs\n\
             order: populate_inputs, calc_date_1, calc_date_2, calc_date_3, generate_report\n"
        )
    );
    let (code, out, _) = run(cli(&["check", spec, "--param", "DATE=[\"x\",\"y\"]"]));
    assert_eq!(code, 0);
    assert!(out.contains("into 4 steps"), "{out}");

    let bad = std::env::temp_dir().join(format!("salt-dag-bad-{}.json", std::process::id()));
    std::fs::write(&bad, r#"{"tasks": {"a": {"job": {"command": ["x", "{{P}}"]}, "parents": ["b"]}}}"#).unwrap();
    let (code, out, err) = run(cli(&["check", bad.to_str().unwrap()]));
    let _ = std::fs::remove_file(&bad);
    assert_eq!((code, out.as_str()), (2, ""));
    let bad = bad.display();
    assert_eq!(
        err,
        format!(
            "error: {bad}: task `a` uses `{{{{P}}}}`, but there is no parameter `P`\n\
             error: {bad}: task `a`: parents names `b`, which is not a task of this DAG\n"
        )
    );

    let (code, _, err) = run(cli(&["check", "/nonexistent/spec.json"]));
    assert_eq!(code, 2);
    assert!(err.starts_with("error: /nonexistent/spec.json: cannot read /nonexistent/spec.json: "), "{err}");
}

#[test]
fn graph_draws_every_format() {
    let spec = example("generator.json");
    let spec = spec.to_str().unwrap();
    let (code, text, _) = run(cli(&["graph", spec]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("plan of {spec}: 2 steps"));
    assert!(lines[1].starts_with("discover  $ printf "), "{text}");
    assert!(lines[1].ends_with("(generator)"), "{text}");
    assert_eq!(lines[2], "report    $ echo report  after discover");

    let (_, dot, _) = run(cli(&["graph", spec, "--format", "dot"]));
    assert!(dot.starts_with("digraph salt {\n"), "{dot}");
    assert!(dot.contains("  n0 [label=\"discover\\n(generator)\", tooltip="), "{dot}");
    assert!(dot.contains("  n1 [label=\"report\", tooltip=\"echo report\"];\n  n0 -> n1;\n"), "{dot}");
    assert!(dot.contains("  n0 -> w0 [style=dashed, color=gray40];\n}\n"), "{dot}");

    let (_, mermaid, _) = run(cli(&["graph", spec, "--format", "mermaid"]));
    assert_eq!(
        mermaid,
        "flowchart TD\n  n0[\"discover<br/>(generator)\"]:::planned\n  n1[\"report\"]:::planned\n  n0 --> n1\n  \
         w0([\"*\"]):::wildcard\n  n0 -.-> w0\n  classDef planned fill:#ffffff,stroke:#555\n  \
         classDef wildcard fill:#ffffff,stroke:#777,stroke-dasharray:4 3\n"
    );

    let spec = example("parameters.json");
    let (_, json, _) =
        run(cli(&["graph", spec.to_str().unwrap(), "--format", "json", "--param", "DATE=[\"d1\",\"d2\"]"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["parameters"]["DATE"], serde_json::json!(["d1", "d2"]));
    assert_eq!(v["steps"][1]["name"], "calc_date_1");
    assert_eq!(v["steps"][1]["task"], "calc_date");
    assert_eq!(v["steps"][1]["env"], serde_json::json!({"REPORT_DATE": "d1"}));
    assert_eq!(v["steps"][1]["maxRetries"], 3);
    assert_eq!(v["steps"][1]["retryIntervalSeconds"], 30);
    assert_eq!(
        v["edges"],
        serde_json::json!([
            ["populate_inputs", "calc_date_1"],
            ["populate_inputs", "calc_date_2"],
            ["calc_date_1", "generate_report"],
            ["calc_date_2", "generate_report"]
        ])
    );
}

#[test]
fn run_hands_the_plan_back() {
    let spec = example("parameters.json");
    let cmd = cli(&["run", spec.to_str().unwrap(), "--param", "DATE=one"]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    match cmd.execute(&mut out, &mut err) {
        Outcome::Run { plan, args } => {
            assert_eq!(names(&plan), ["populate_inputs", "calc_date", "generate_report"]);
            assert_eq!(args.spec, spec);
        }
        Outcome::Exit(code) => panic!("exit {code}: {}", String::from_utf8_lossy(&err)),
    }
    assert!(out.is_empty() && err.is_empty());
}

#[test]
fn expanded_dependencies_may_not_make_too_many_edges() {
    let values: Vec<String> = (0..100).map(|i| format!("\"{i}\"")).collect();
    let values = values.join(",");
    // 10 000 steps on each end of one dependency: 10^8 edges, refused before any is made.
    let text = format!(
        r#"{{"parameters": {{"A": [{values}], "B": [{values}]}}, "tasks": {{
            "x": {{"job": {{"command": ["echo", "{{{{A}}}}{{{{B}}}}"]}}}},
            "y": {{"job": {{"command": ["echo", "{{{{B}}}}{{{{A}}}}"]}}, "parents": ["x"]}}}}}}"#
    );
    let started = std::time::Instant::now();
    assert_eq!(
        errors(&text),
        [
            "the dependency of task `y` on task `x` would link 100000000 pairs of steps, bringing the plan past 100000 edges; expand fewer steps on one side"
        ]
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn a_plan_may_not_have_too_many_steps() {
    let values: Vec<String> = (0..100).map(|i| format!("\"{i}\"")).collect();
    let values = values.join(",");
    let tasks: Vec<String> =
        (0..11).map(|i| format!(r#""t{i:02}": {{"job": {{"command": ["echo", "{{{{A}}}}{{{{B}}}}"]}}}}"#)).collect();
    let text = format!(r#"{{"parameters": {{"A": [{values}], "B": [{values}]}}, "tasks": {{{}}}}}"#, tasks.join(","));
    assert_eq!(errors(&text), ["the plan would have more than 100000 steps: task `t10` brings it past the limit"]);
}

#[test]
fn a_generator_may_not_add_too_many_edges() {
    let values: Vec<String> = (0..1000).map(|i| format!("\"{i}\"")).collect();
    let text = format!(
        r#"{{"parameters": {{"A": [{}]}}, "tasks": {{
            "wide": {{"job": {{"command": ["echo", "{{{{A}}}}"]}}}},
            "discover": {{"job": {{"command": ["true"]}}, "isGenerator": true}}}}}}"#,
        values.join(",")
    );
    let mut plan = Plan::from_json(&text, &[]).unwrap();
    let before = names(&plan).len();
    let output = r#"{"more": {"job": {"command": ["echo", "{{A}}"]}, "parents": ["wide"]}}"#;
    let done = BTreeSet::from(["discover".to_string()]);
    let err = plan.add_generated("discover", output, &done).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the dependency of task `more` on task `wide` would link 1000000 pairs of steps, bringing the plan past 100000 edges; expand fewer steps on one side"
    );
    assert_eq!(names(&plan).len(), before);
}
