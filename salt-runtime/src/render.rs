//! Drawing a run's graph (dot, mermaid, json) and showing it as text.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::model::{EdgeKind, NodeId, NodeState, RunSnapshot, RunState};

/// One node as drawn.
#[derive(Debug, Clone)]
pub struct ViewNode {
    /// Its id.
    pub id: NodeId,
    /// Its task.
    pub task: String,
    /// Its state.
    pub state: NodeState,
    /// Its label (the task name when none is set).
    pub label: Option<String>,
    /// The node that spawned it.
    pub parent: Option<NodeId>,
    /// How many attempts it has had.
    pub attempts: u32,
}

/// A graph to draw: the as-of-now graph of a run.
#[derive(Debug, Clone)]
pub struct GraphView {
    /// The run, as JSON (`id`, `workflow`, `state`).
    pub run: Value,
    /// The title.
    pub title: String,
    /// Its nodes.
    pub nodes: Vec<ViewNode>,
    /// Its edges: data and control.
    pub edges: Vec<(NodeId, NodeId, EdgeKind)>,
}

impl GraphView {
    /// The graph of a stored run.
    pub fn of_run(s: &RunSnapshot) -> Self {
        Self {
            run: json!({"id": s.run.id, "workflow": s.run.workflow, "state": s.run.state}),
            title: format!("run {} ({}) {}", s.run.id, s.run.workflow, s.run.state.as_str()),
            nodes: s
                .nodes
                .iter()
                .map(|n| ViewNode {
                    id: n.id,
                    task: n.task.clone(),
                    state: n.state,
                    label: n.label.clone(),
                    parent: n.parent,
                    attempts: n.attempts,
                })
                .collect(),
            edges: s.edges.iter().map(|e| (e.from, e.to, e.kind)).collect(),
        }
    }

    /// The documented JSON form: `{"run", "nodes": [{"id", "task", "state", "label", "parent",
    /// "attempts"}], "edges": [{"from", "to", "kind"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "run": self.run,
            "nodes": self.nodes.iter().map(|n| json!({
                "id": n.id,
                "task": n.task,
                "state": n.state,
                "label": n.label.clone().unwrap_or_else(|| n.task.clone()),
                "parent": n.parent,
                "attempts": n.attempts,
            })).collect::<Vec<_>>(),
            "edges": self.edges.iter().map(|(f, t, k)| json!({"from": f, "to": t, "kind": k})).collect::<Vec<_>>(),
        })
    }

    /// Graphviz dot: nodes filled by state, data edges solid, control edges dashed, spawns dotted.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph salt {{");
        let _ = writeln!(out, "  graph [label={}, labelloc=t, fontname=\"Helvetica\", rankdir=TB];", quote(&self.title));
        let _ = writeln!(out, "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];");
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "  n{} [label={}, fillcolor={}, tooltip={}];",
                n.id,
                quote(&node_label(n)),
                quote(state_color(n.state)),
                quote(n.state.as_str())
            );
        }
        for n in &self.nodes {
            if let Some(p) = n.parent {
                let _ = writeln!(out, "  n{p} -> n{} [style=dotted, color=gray50, arrowhead=none];", n.id);
            }
        }
        for (f, t, k) in &self.edges {
            let style = if *k == EdgeKind::Control { " [style=dashed]" } else { "" };
            let _ = writeln!(out, "  n{f} -> n{t}{style};");
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart, one class per state.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for n in &self.nodes {
            let label = node_label(n).replace('"', "'").replace('\n', "<br/>");
            let _ = writeln!(out, "  n{}[\"{label}\"]:::{}", n.id, n.state.as_str());
        }
        for n in &self.nodes {
            if let Some(p) = n.parent {
                let _ = writeln!(out, "  n{p} -.- n{}", n.id);
            }
        }
        for (f, t, k) in &self.edges {
            let arrow = if *k == EdgeKind::Control { "-.->" } else { "-->" };
            let _ = writeln!(out, "  n{f} {arrow} n{t}");
        }
        for s in NodeState::ALL {
            let _ = writeln!(out, "  classDef {} fill:{}", s.as_str(), state_color(s));
        }
        out
    }
}

fn node_label(n: &ViewNode) -> String {
    let name = n.label.as_deref().unwrap_or(&n.task);
    let mut label = format!("{}: {name}\n{}", n.id, n.state.as_str());
    if n.attempts > 1 {
        let _ = write!(label, " ({} attempts)", n.attempts);
    }
    label
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// The fill color of a node in this state.
pub fn state_color(state: NodeState) -> &'static str {
    match state {
        NodeState::Pending => "#eeeeee",
        NodeState::Ready => "#dde8ff",
        NodeState::Running => "#8fb8ff",
        NodeState::Waiting => "#c9b8ff",
        NodeState::Succeeded => "#9fe0a8",
        NodeState::Failed => "#ff9c9c",
        NodeState::Cancelled => "#ffd59c",
        NodeState::Skipped => "#dddddd",
    }
}

/// A duration in ms as a short human string.
pub fn human_ms(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `show RUN` as text: the run, then one line per node.
pub fn show_text(s: &RunSnapshot) -> String {
    let r = &s.run;
    let mut out = String::new();
    let _ = writeln!(out, "run {}  workflow {}  {}", r.id, r.workflow, r.state.as_str().to_uppercase());
    let _ = writeln!(out, "input     {}", r.input);
    if let (Some(a), Some(b)) = (r.started_at, r.finished_at) {
        let _ = writeln!(out, "duration  {}", human_ms(b - a));
    }
    let _ = writeln!(out, "executor  {} (parallelism {})", r.executor, r.parallelism);
    if let Some(o) = &r.output {
        let _ = writeln!(out, "output    {}", truncate(&o.to_string(), 200));
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error     {}", e.message);
    }
    if r.state == RunState::Interrupted {
        let _ = writeln!(out, "hint      its orchestrator is gone; `recover {}` resumes it", r.id);
    }
    let _ = writeln!(out, "\n{:>5}  {:<24} {:<10} {:>8} {:>9}  detail", "node", "task", "state", "attempts", "time");
    for n in &s.nodes {
        let time = match (n.started_at, n.finished_at) {
            (Some(a), Some(b)) => human_ms(b - a),
            _ => String::new(),
        };
        let detail = match (&n.error, &n.output) {
            (Some(e), _) => truncate(&e.message, 100),
            (None, Some(o)) => truncate(&o.to_string(), 60),
            _ => String::new(),
        };
        let task = match n.parent {
            Some(p) if p != 0 => format!("{} (in {p})", n.task),
            _ => n.task.clone(),
        };
        let _ = writeln!(out, "{:>5}  {:<24} {:<10} {:>8} {:>9}  {detail}", n.id, task, n.state.as_str(), n.attempts, time);
    }
    out
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
