//! Drawing a plan: text, Graphviz dot, Mermaid and JSON, in the style of `salt graph`'s
//! drawing of a workflow's plan (nodes that have not run are white, a generator is followed
//! by a dashed `*` for the tasks it may add).

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::plan::{Plan, Step};

/// A format `salt dag graph` draws in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DagFormat {
    /// One line per step in plan order, with its parents and command.
    Text,
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// The plan as JSON: `parameters`, `steps` (name, task, argv, env, maxRetries,
    /// retryIntervalSeconds, parents, isGenerator, bindings) and `edges` (`[parent, child]`).
    Json,
}

/// Draws `plan` in `format`, titled `title` (the file's name, say).
pub fn draw(plan: &Plan, format: DagFormat, title: &str) -> String {
    match format {
        DagFormat::Text => text(plan, title),
        DagFormat::Dot => dot(plan, title),
        DagFormat::Mermaid => mermaid(plan),
        DagFormat::Json => {
            let mut s = serde_json::to_string_pretty(&to_json(plan, title)).unwrap_or_default();
            s.push('\n');
            s
        }
    }
}

fn text(plan: &Plan, title: &str) -> String {
    let mut out = format!("plan of {title}: {} steps\n", plan.steps().len());
    let width = plan.steps().iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in plan.steps() {
        let after = if s.parents.is_empty() { String::new() } else { format!("  after {}", s.parents.join(", ")) };
        let generator = if s.is_generator { "  (generator)" } else { "" };
        let _ = writeln!(out, "{:width$}  $ {}{after}{generator}", s.name, shell_words::join(&s.argv));
    }
    out
}

fn dot_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

fn label(s: &Step) -> String {
    if s.is_generator { format!("{}\n(generator)", s.name) } else { s.name.clone() }
}

fn dot(plan: &Plan, title: &str) -> String {
    let mut out = String::from("digraph salt {\n");
    let _ = writeln!(out, "  graph [label={}, labelloc=t, fontname=\"Helvetica\", rankdir=TB];", dot_quote(title));
    out.push_str("  node [shape=box, style=\"rounded\", fontname=\"Helvetica\"];\n");
    let id = |name: &str| plan.steps().iter().position(|s| s.name == name).unwrap_or(0);
    for (i, s) in plan.steps().iter().enumerate() {
        let _ = writeln!(
            out,
            "  n{i} [label={}, tooltip={}];",
            dot_quote(&label(s)),
            dot_quote(&shell_words::join(&s.argv))
        );
    }
    for (from, to) in plan.edges() {
        let _ = writeln!(out, "  n{} -> n{};", id(from), id(to));
    }
    for (i, _) in plan.steps().iter().enumerate().filter(|(_, s)| s.is_generator) {
        let _ = writeln!(
            out,
            "  w{i} [label=\"*\", shape=ellipse, style=dashed, color=gray40, fontcolor=gray30];\n  n{i} -> w{i} [style=dashed, color=gray40];"
        );
    }
    out.push_str("}\n");
    out
}

fn mermaid(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    let id = |name: &str| plan.steps().iter().position(|s| s.name == name).unwrap_or(0);
    for (i, s) in plan.steps().iter().enumerate() {
        let _ = writeln!(out, "  n{i}[\"{}\"]:::planned", label(s).replace('"', "'").replace('\n', "<br/>"));
    }
    for (from, to) in plan.edges() {
        let _ = writeln!(out, "  n{} --> n{}", id(from), id(to));
    }
    let mut wildcards = false;
    for (i, _) in plan.steps().iter().enumerate().filter(|(_, s)| s.is_generator) {
        let _ = writeln!(out, "  w{i}([\"*\"]):::wildcard\n  n{i} -.-> w{i}");
        wildcards = true;
    }
    out.push_str("  classDef planned fill:#ffffff,stroke:#555\n");
    if wildcards {
        out.push_str("  classDef wildcard fill:#ffffff,stroke:#777,stroke-dasharray:4 3\n");
    }
    out
}

/// The JSON form of a plan (what `salt dag graph --format json` prints).
pub(crate) fn to_json(plan: &Plan, title: &str) -> Value {
    let steps: Vec<Value> = plan
        .steps()
        .iter()
        .map(|s| {
            let mut v = json!({
                "name": s.name,
                "task": s.task,
                "argv": s.argv,
                "env": s.env,
                "maxRetries": s.max_retries,
                "retryIntervalSeconds": s.retry_interval.as_secs(),
                "parents": s.parents,
                "isGenerator": s.is_generator,
                "bindings": s.bindings,
            });
            if let Some(g) = &s.generated_by {
                v["generatedBy"] = json!(g);
            }
            if let Some(image) = &s.image {
                v["image"] = json!(image);
            }
            v
        })
        .collect();
    json!({
        "title": title,
        "parameters": plan.parameters(),
        "steps": steps,
        "edges": plan.edges(),
    })
}
