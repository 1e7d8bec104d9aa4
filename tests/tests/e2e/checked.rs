//! Outputs checked against their schema and `validate` function, inputs with defaults, and
//! `clone`.

use serde_json::{Value, json};

use crate::support::{EXECUTORS, Env, stderr, text};

fn input(env: &Env, score: i64, grade: &str, tags: Option<&[&str]>) -> String {
    let mut input = json!({"dir": env.dir(), "score": score, "grade": grade, "settings": {}});
    if let Some(tags) = tags {
        input["tags"] = json!(tags);
    }
    input.to_string()
}

fn grade_attempts(show: &Value) -> Vec<Value> {
    let node = show["nodes"].as_array().unwrap().iter().find(|n| n["task"] == "grade").unwrap()["id"].clone();
    show["attempts"].as_array().unwrap().iter().filter(|a| a["node"] == node).cloned().collect()
}

#[test]
fn an_output_that_breaks_its_schema_or_validate_fails_the_attempt_without_retry() {
    let cases: [(i64, &str, Option<&[&str]>, &str); 5] = [
        (
            150,
            "A",
            None,
            "output of `grade` does not match its output schema: 150 is greater than the maximum of 100 at `/score`",
        ),
        (
            -1,
            "A",
            None,
            "output of `grade` does not match its output schema: -1 is less than the minimum of 0 at `/score`",
        ),
        (
            50,
            "G",
            None,
            r#"output of `grade` does not match its output schema: "G" does not match "^[A-F]$" at `/grade`"#,
        ),
        (50, "B", Some(&[]), "output of `grade` does not match its output schema: [] has less than 1 item at `/tags`"),
        (70, "F", None, "output of `grade` is refused by its `validate` function: grade F for a score of 70"),
    ];
    for executor in EXECUTORS {
        for (score, grade, tags, says) in cases {
            let env = Env::new();
            let out = env.run(&["run", "graded", "--input", &input(&env, score, grade, tags), "--executor", executor]);
            assert_eq!(out.status.code(), Some(1), "{executor} {score} {grade}: {}", text(&out));
            assert!(stderr(&out).contains(says), "{executor}: `{says}` not in {}", text(&out));
            let show = env.show(1);
            assert_eq!(show["run"]["state"], "failed");
            let attempts = grade_attempts(&show);
            assert_eq!(attempts.len(), 1, "{executor}: a refused output was retried: {attempts:?}");
            assert_eq!(attempts[0]["error"]["kind"], "output", "{executor}");
            assert_eq!(env.count("grade"), 1, "{executor}");
        }
    }
}

#[test]
fn a_valid_output_passes_and_omitted_arguments_take_their_defaults() {
    for executor in EXECUTORS {
        let env = Env::new();
        let out = env.json(&["run", "graded", "--input", &input(&env, 100, "A", None), "--executor", executor]);
        assert_eq!(out["state"], "succeeded", "{executor}: {out}");
        assert_eq!(
            out["output"],
            json!({
                "graded": {"score": 100, "grade": "A", "tags": ["plain"]},
                "settings": {"rounds": 3, "verbose": false},
                "note": ""
            }),
            "{executor}"
        );
    }
}

#[test]
fn the_manifest_shows_defaults_and_which_arguments_may_be_omitted() {
    let env = Env::new();
    let m = env.json(&["manifest"]);
    let graded = m["workflows"].as_array().unwrap().iter().find(|t| t["name"] == "graded").expect("graded");
    // `Option` parameters may be omitted (`"default": null`), like the fields of `Settings`
    // that have serde defaults.
    assert_eq!(
        graded["input_schema"],
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "graded_input",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "dir": {"type": "string"},
                "score": {
                    "type": "integer",
                    "format": "int64",
                    "minimum": i64::MIN,
                    "maximum": i64::MAX
                },
                "grade": {"type": "string"},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}, "default": null},
                "note": {"type": ["string", "null"], "default": null},
                "settings": {"$ref": "#/$defs/Settings"}
            },
            "required": ["dir", "score", "grade", "settings"],
            "$defs": {
                "Settings": {
                    "description": "How a grading is done; every field has a default.",
                    "type": "object",
                    "properties": {
                        "rounds": {
                            "description": "How many rounds.",
                            "type": "integer",
                            "format": "uint32",
                            "minimum": 0,
                            "maximum": u32::MAX,
                            "default": 3
                        },
                        "verbose": {"description": "Whether to say more.", "type": "boolean", "default": false}
                    }
                }
            }
        })
    );
    let grade = m["tasks"].as_array().unwrap().iter().find(|t| t["name"] == "grade").expect("grade");
    assert_eq!(grade["output_schema"]["properties"]["score"]["maximum"], 100);
    assert_eq!(grade["output_schema"]["properties"]["grade"]["pattern"], "^[A-F]$");
    assert_eq!(grade["output_schema"]["properties"]["tags"]["minItems"], 1);
}

#[test]
fn clone_runs_the_same_workflow_with_the_same_or_a_patched_input() {
    let env = Env::new();
    let first = env.json(&["run", "graded", "--input", &input(&env, 80, "B", Some(&["x", "y"]))]);
    assert_eq!(first["output"]["graded"], json!({"score": 80, "grade": "B", "tags": ["x", "y"]}));

    let same = env.json(&["clone", "1"]);
    assert_eq!((same["run"].as_i64(), same["workflow"].as_str()), (Some(2), Some("graded")), "{same}");
    assert_eq!(same["output"], first["output"]);
    assert_eq!(env.show(2)["run"]["input"], env.show(1)["run"]["input"]);

    // A merge patch: members replace the input's, `null` removes one, objects merge.
    let patch = r#"{"score": 90, "tags": null, "settings": {"rounds": 5}, "note": "patched"}"#;
    let patched = env.json(&["clone", "1", "--input", patch]);
    assert_eq!(patched["run"], 3);
    assert_eq!(
        patched["output"],
        json!({
            "graded": {"score": 90, "grade": "B", "tags": ["plain"]},
            "settings": {"rounds": 5, "verbose": false},
            "note": "patched"
        })
    );
    let stored = env.show(3)["run"]["input"].clone();
    assert_eq!(
        stored,
        json!({"dir": env.dir(), "score": 90, "grade": "B", "settings": {"rounds": 5}, "note": "patched"})
    );

    // Printed like `run`.
    let out = env.run(&["clone", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).ends_with("\nrun 4 of `graded` succeeded\n"), "{}", text(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, patched["output"]);

    // A patch that breaks the input schema is refused, and nothing is stored.
    for (patch, says) in [
        (r#"{"score": "high"}"#, r#""high" is not of type "integer" at `/score`"#),
        (r#"{"grade": null}"#, r#""grade" is a required property at `/`"#),
        (r#"{"extra": 1}"#, "Additional properties are not allowed ('extra' was unexpected)"),
        ("[1]", r#"[1] is not of type "object" at `/`"#),
        ("{oops", "--input is not JSON"),
    ] {
        let out = env.run(&["clone", "1", "--input", patch]);
        assert_eq!(out.status.code(), Some(2), "{patch}: {}", text(&out));
        assert!(stderr(&out).contains(says), "{patch}: `{says}` not in {}", text(&out));
    }
    let out = env.run(&["clone", "99"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let runs = env.json(&["runs"]);
    let ids: Vec<i64> = runs["runs"].as_array().unwrap().iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [4, 3, 2, 1], "a refused clone stored a run");
}
