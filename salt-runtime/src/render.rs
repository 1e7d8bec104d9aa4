//! Drawing a run's graph (dot, mermaid, json) and showing it as text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::model::{EdgeKind, NodeId, NodeState, RunId, RunSnapshot, RunState, WaitRecord};
use crate::promise::{self, Promise, ScopeDag};

/// One node as drawn.
#[derive(Debug, Clone)]
pub struct ViewNode {
    /// Its id.
    pub id: NodeId,
    /// Its task.
    pub task: String,
    /// Its state; none for a node of a plan, which has not run.
    pub state: Option<NodeState>,
    /// Its label (the task name when none is set).
    pub label: Option<String>,
    /// Its fill color, when annotated.
    pub color: Option<String>,
    /// Its Graphviz shape, when annotated.
    pub shape: Option<String>,
    /// The node that spawned it.
    pub parent: Option<NodeId>,
    /// How many attempts it has had.
    pub attempts: u32,
}

impl ViewNode {
    fn state_name(&self) -> &'static str {
        self.state.map(NodeState::as_str).unwrap_or("planned")
    }

    fn unfinished(&self) -> bool {
        !self.state.is_some_and(NodeState::is_terminal)
    }

    fn superseded(&self) -> bool {
        self.state == Some(NodeState::Superseded)
    }
}

/// What may still be added after a node: drawn as a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard {
    /// The node it is drawn after.
    pub after: NodeId,
    /// The node whose body may add it.
    pub owner: NodeId,
    /// What the promises in force still allow: `*`, `M* -> B`, `B | C`, `(A | B)*`.
    pub may_add: String,
    /// The guaranteed nodes that end `may_add` (of the shape promise that labels it): drawn
    /// dashed, once, not in the wildcard's label.
    pub ends_with: Vec<String>,
}

/// What the promises in force allow a node's body to add still (see [`GraphView::may_add`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MayAdd {
    /// The wildcard's label: `*`, `M* -> B`, `B | C`, `(A | B)*`, or `nothing`.
    pub label: String,
    /// The guaranteed nodes that end it (of the shape promise that gives it).
    pub ends_with: Vec<String>,
    /// The guaranteed nodes this node owns: those of a shape promise over its own subtree.
    pub guaranteed: Vec<String>,
}

/// A node a shape promise guarantees but that does not exist yet: drawn dashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ghost {
    /// Its task.
    pub task: String,
    /// The node whose body must still spawn it.
    pub owner: NodeId,
}

/// A promise as drawn and listed.
#[derive(Debug, Clone)]
pub struct ViewPromise {
    /// The node whose subtree it covers (0: the whole run).
    pub scope: NodeId,
    /// The node that declared it.
    pub declared_by: NodeId,
    /// The promise.
    pub promise: Promise,
}

/// A graph to draw: the as-of-now graph of a run, or the plan of a workflow.
#[derive(Debug, Clone)]
pub struct GraphView {
    /// The run, as JSON (`id`, `workflow`, `state`); for a plan, `{"plan": workflow}`.
    pub run: Value,
    /// The title.
    pub title: String,
    /// Its nodes.
    pub nodes: Vec<ViewNode>,
    /// Its edges: data, control and runs-after.
    pub edges: Vec<(NodeId, NodeId, EdgeKind)>,
    /// The labels bodies gave edges (`ctx.edge_label`), by (from, to).
    pub edge_labels: BTreeMap<(NodeId, NodeId), String>,
    /// The parameter a data edge's value is passed as, by (from, to).
    pub edge_args: BTreeMap<(NodeId, NodeId), String>,
    /// Whether dot and Mermaid draw a data edge with no label of its own labelled by its
    /// parameter (`graph --edge-labels`).
    pub arg_labels: bool,
    /// The promises in force.
    pub promises: Vec<ViewPromise>,
    /// What may still come, after which node.
    pub wildcards: Vec<Wildcard>,
    /// What shape promises guarantee will still come.
    pub ghosts: Vec<Ghost>,
}

impl GraphView {
    /// The graph of a stored run as it is now, with wildcards after every unfinished node that
    /// may still grow it. `may_spawn` says which tasks can spawn (workflows, and tasks marked
    /// `spawns`). Superseded nodes (replaced by a rerun) and their edges are left out.
    pub fn of_run(s: &RunSnapshot, may_spawn: &dyn Fn(&str) -> bool) -> Self {
        let mut view = Self::of_run_all(s, may_spawn);
        view.hide_superseded();
        view
    }

    /// The graph of a stored run with its superseded nodes too (state `superseded`), as
    /// `graph --all` draws it.
    pub fn of_run_all(s: &RunSnapshot, may_spawn: &dyn Fn(&str) -> bool) -> Self {
        let mut view = Self {
            run: json!({"id": s.run.id, "workflow": s.run.workflow, "state": s.run.state}),
            title: format!("run {} ({}) {}", s.run.id, s.run.workflow, s.run.state.as_str()),
            nodes: s
                .nodes
                .iter()
                .map(|n| ViewNode {
                    id: n.id,
                    task: n.task.clone(),
                    state: Some(n.state),
                    label: n.label.clone(),
                    color: n.color.clone(),
                    shape: n.shape.clone(),
                    parent: n.parent,
                    attempts: n.attempts,
                })
                .collect(),
            edges: s.edges.iter().map(|e| (e.from, e.to, e.kind)).collect(),
            edge_labels: s.edges.iter().filter_map(|e| Some(((e.from, e.to), e.label.clone()?))).collect(),
            edge_args: s
                .nodes
                .iter()
                .flat_map(|n| {
                    n.args.iter().flat_map(move |(name, arg)| {
                        arg.nodes().into_iter().map(move |from| ((from, n.id), name.clone()))
                    })
                })
                .collect(),
            arg_labels: false,
            promises: s
                .promises
                .iter()
                .filter_map(|p| {
                    Some(ViewPromise { scope: p.scope, declared_by: p.declared_by, promise: p.text.parse().ok()? })
                })
                .collect(),
            wildcards: Vec::new(),
            ghosts: Vec::new(),
        };
        if !s.run.state.is_terminal() {
            // A body that waits for its children goes on once they end: its wildcard hangs after
            // the children it may be waiting for, as a plan draws it: those not ended that no
            // other such child runs after (waiting for `b` in `a -> b` is waiting for both). One
            // that runs, or waits for a signal, may add more at any time: after itself.
            let anchors = |id: NodeId| {
                let waits_for_children = s.nodes.get(id.index()).is_some_and(|n| n.state == NodeState::Waiting)
                    && !s.waits.iter().any(|w| w.node == id);
                let open: Vec<NodeId> = if waits_for_children {
                    s.nodes.iter().filter(|c| c.parent == Some(id) && !c.state.is_terminal()).map(|c| c.id).collect()
                } else {
                    Vec::new()
                };
                let last: Vec<NodeId> = open
                    .iter()
                    .copied()
                    .filter(|c| !s.edges.iter().any(|e| e.from == *c && open.contains(&e.to)))
                    .collect();
                if last.is_empty() { vec![id] } else { last }
            };
            view.add_gradient(may_spawn, &anchors);
        }
        view
    }

    /// Leaves out the superseded nodes and every edge that touches one.
    pub fn hide_superseded(&mut self) {
        let gone: std::collections::HashSet<NodeId> =
            self.nodes.iter().filter(|n| n.superseded()).map(|n| n.id).collect();
        if gone.is_empty() {
            return;
        }
        self.nodes.retain(|n| !gone.contains(&n.id));
        self.edges.retain(|(f, t, _)| !gone.contains(f) && !gone.contains(t));
        self.edge_labels.retain(|(f, t), _| !gone.contains(f) && !gone.contains(t));
        self.edge_args.retain(|(f, t), _| !gone.contains(f) && !gone.contains(t));
    }

    /// The node with this id (nodes are in id order, with gaps where some are hidden).
    fn node(&self, id: NodeId) -> Option<&ViewNode> {
        match self.nodes.get(id.index()) {
            Some(n) if n.id == id => Some(n),
            _ => self.nodes.binary_search_by_key(&id, |n| n.id).ok().map(|i| &self.nodes[i]),
        }
    }

    /// The DAG a promise over `scope`'s subtree constrains, as the run core reads it (see
    /// [`promise::scope_dag`]): the current descendants of `scope`, with the edges between them.
    pub fn scope_dag(&self, scope: NodeId) -> ScopeDag<'_> {
        let mut children: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for n in self.nodes.iter().filter(|n| !n.superseded()) {
            if let Some(p) = n.parent {
                children.entry(p).or_default().push(n.id);
            }
        }
        let current = |id: NodeId| self.node(id).is_some_and(|n| !n.superseded());
        let mut upstream: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (f, t, _) in self.edges.iter().filter(|(f, t, _)| current(*f) && current(*t)) {
            upstream.entry(*t).or_default().push(*f);
        }
        promise::scope_dag(
            scope,
            |n| children.get(&n).cloned().unwrap_or_default(),
            |n| upstream.get(&n).cloned().unwrap_or_default(),
            |n| self.node(n).and_then(|v| v.parent),
            |n| self.node(n).map(|v| v.task.as_str()).unwrap_or_default(),
        )
    }

    /// What the promises in force allow node `id`'s body to add still: the wildcard's label,
    /// the guaranteed nodes that end it (of the shape that labels it), and those `id` owns (drawn
    /// dashed: those of a shape promise over `id`'s own subtree). A shape promise is read over
    /// the DAG of its scope exactly as the run core checks it: over `id`'s own subtree, it
    /// gives the label and the guaranteed nodes; over an ancestor's, it bounds what `id` may add
    /// (its nodes join that DAG) and its guaranteed nodes are the ancestor's.
    pub fn may_add(&self, id: NodeId) -> MayAdd {
        let nothing = MayAdd { label: "nothing".into(), ends_with: Vec::new(), guaranteed: Vec::new() };
        let mut best = MayAdd { label: "*".into(), ends_with: Vec::new(), guaranteed: Vec::new() };
        let mut rank = 0;
        let parent = |n: NodeId| self.node(n).and_then(|v| v.parent);
        for p in self.promises.iter().filter(|p| promise::in_scope(id, p.scope, parent)) {
            match &p.promise {
                Promise::NoNewNodes => return nothing,
                Promise::Shape(shape) => match self.scope_dag(p.scope).shape_after(shape) {
                    Some(rest) if !rest.is_done() => {
                        let own = p.scope == id;
                        let r = if own { 3 } else { 2 };
                        if rank < r {
                            let guaranteed = rest.guaranteed();
                            best = MayAdd {
                                label: rest.label(),
                                guaranteed: if own { guaranteed.clone() } else { Vec::new() },
                                ends_with: guaranteed,
                            };
                            rank = r;
                        }
                    }
                    _ => return nothing,
                },
                Promise::OnlyTasks(tasks) if rank < 1 => {
                    best.label =
                        if tasks.len() == 1 { format!("{}*", tasks[0]) } else { format!("({})*", tasks.join(" | ")) };
                    rank = 1;
                }
                _ => {}
            }
        }
        best
    }

    /// Adds a wildcard after every unfinished node that may still spawn (unless the promises
    /// allow nothing more), and the nodes shape promises guarantee. `anchors` says which nodes a
    /// node's wildcard is drawn after (itself, or the nodes a planned body stopped on).
    pub fn add_gradient(&mut self, may_spawn: &dyn Fn(&str) -> bool, anchors: &dyn Fn(NodeId) -> Vec<NodeId>) {
        let owners: Vec<NodeId> =
            self.nodes.iter().filter(|n| n.unfinished() && may_spawn(&n.task)).map(|n| n.id).collect();
        for owner in owners {
            let MayAdd { label, ends_with, guaranteed } = self.may_add(owner);
            if label == "nothing" {
                continue;
            }
            for after in anchors(owner) {
                self.wildcards.push(Wildcard { after, owner, may_add: label.clone(), ends_with: ends_with.clone() });
            }
            self.ghosts.extend(guaranteed.into_iter().map(|task| Ghost { task, owner }));
        }
    }

    /// The label an edge is drawn with: the one its body gave it, or, with
    /// [`GraphView::arg_labels`], the parameter a data edge passes its value as.
    pub fn edge_label(&self, from: NodeId, to: NodeId, kind: EdgeKind) -> Option<&str> {
        self.edge_labels.get(&(from, to)).map(String::as_str).or_else(|| {
            if self.arg_labels && kind == EdgeKind::Data {
                self.edge_args.get(&(from, to)).map(String::as_str)
            } else {
                None
            }
        })
    }

    /// The documented JSON form: `{"run", "nodes": [{"id", "task", "state", "label", "parent",
    /// "attempts"}], "edges": [{"from", "to", "kind", "label", "arg"}], "promises": [{"scope", "declared_by",
    /// "promise"}], "wildcards": [{"after", "owner", "may_add"}], "ghosts": [{"task", "owner"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "run": self.run,
            "nodes": self.nodes.iter().map(|n| json!({
                "id": n.id,
                "task": n.task,
                "state": n.state_name(),
                "label": n.label.clone().unwrap_or_else(|| n.task.clone()),
                "parent": n.parent,
                "attempts": n.attempts,
                "color": n.color,
                "shape": n.shape,
            })).collect::<Vec<_>>(),
            "edges": self.edges.iter().map(|(f, t, k)| json!({
                "from": f,
                "to": t,
                "kind": k,
                "label": self.edge_labels.get(&(*f, *t)),
                "arg": self.edge_args.get(&(*f, *t)).filter(|_| *k == EdgeKind::Data),
            })).collect::<Vec<_>>(),
            "promises": self.promises.iter().map(|p| json!({
                "scope": p.scope, "declared_by": p.declared_by, "promise": p.promise.to_string(),
            })).collect::<Vec<_>>(),
            "wildcards": self.wildcards.iter().map(|w| json!({
                "after": w.after, "owner": w.owner, "may_add": w.may_add,
            })).collect::<Vec<_>>(),
            "ghosts": self.ghosts.iter().map(|g| json!({"task": g.task, "owner": g.owner})).collect::<Vec<_>>(),
        })
    }

    /// How a wildcard is drawn, so that no node is drawn twice (once in a wildcard's label,
    /// once dashed): its label without the guaranteed nodes that end it (`M* -> B` with `B`
    /// guaranteed draws `M*`, then `B` dashed), or not at all when they are all it may add;
    /// `None` then. When they cannot be cut off its label, it says it all, and they are not
    /// drawn dashed (see [`GraphView::ghosts_drawn`]).
    pub fn drawn_label(w: &Wildcard) -> Option<String> {
        if w.ends_with.is_empty() {
            return Some(w.may_add.clone());
        }
        let tail = w.ends_with.join(" -> ");
        if w.may_add == tail {
            None
        } else if let Some(head) = w.may_add.strip_suffix(&format!(" -> {tail}")) {
            Some(head.to_string())
        } else {
            Some(w.may_add.clone())
        }
    }

    /// Whether an owner's guaranteed nodes are drawn dashed: when they end its wildcard's label
    /// (and are cut off it).
    pub fn ghosts_drawn(&self, owner: NodeId) -> bool {
        match self.wildcards.iter().find(|w| w.owner == owner) {
            Some(w) => {
                let tail = w.ends_with.join(" -> ");
                !w.ends_with.is_empty() && (w.may_add == tail || w.may_add.ends_with(&format!(" -> {tail}")))
            }
            None => true,
        }
    }

    /// Guaranteed nodes are drawn after each of their owner's wildcards (what may come first),
    /// or where it would be when it is not drawn, or after the owner itself.
    fn ghost_anchors(&self, owner: NodeId) -> Vec<String> {
        let mut anchors: Vec<String> = self
            .wildcards
            .iter()
            .enumerate()
            .filter(|(_, w)| w.owner == owner)
            .map(|(i, w)| if Self::drawn_label(w).is_some() { format!("w{i}") } else { format!("n{}", w.after) })
            .collect();
        anchors.dedup();
        if anchors.is_empty() {
            anchors.push(format!("n{owner}"));
        }
        anchors
    }

    fn ghost_chains(&self) -> Vec<(NodeId, Vec<(usize, &Ghost)>)> {
        let mut chains: Vec<(NodeId, Vec<(usize, &Ghost)>)> = Vec::new();
        for (i, g) in self.ghosts.iter().enumerate().filter(|(_, g)| self.ghosts_drawn(g.owner)) {
            match chains.iter_mut().find(|(o, _)| *o == g.owner) {
                Some((_, chain)) => chain.push((i, g)),
                None => chains.push((g.owner, vec![(i, g)])),
            }
        }
        chains
    }

    /// Graphviz dot: nodes filled by state (an annotated color fills the node instead, and the
    /// state colors its thick border), data and runs-after edges solid, control edges dashed,
    /// spawns dotted; wildcards as dashed ellipses labelled by what may still come; guaranteed
    /// nodes dashed.
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "digraph salt {{");
        let _ =
            writeln!(out, "  graph [label={}, labelloc=t, fontname=\"Helvetica\", rankdir=TB];", quote(&self.title));
        let _ = writeln!(out, "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];");
        for n in &self.nodes {
            let fill = n.color.clone().unwrap_or_else(|| view_color(n.state).to_string());
            // An annotated color does not hide the state: it draws the border.
            let border = match (&n.color, n.state) {
                (Some(_), Some(state)) => format!(", color={}, penwidth=3", quote(state_color(state))),
                _ => String::new(),
            };
            let shape = n.shape.as_ref().map(|s| format!(", shape={}", quote(s))).unwrap_or_default();
            let style = if n.state.is_none() {
                ", style=\"rounded\""
            } else if n.superseded() {
                ", style=\"rounded,filled,dashed\", color=gray60, fontcolor=gray50"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  n{} [label={}, fillcolor={}, tooltip={}{border}{shape}{style}];",
                n.id,
                quote(&node_label(n)),
                quote(&fill),
                quote(n.state_name())
            );
        }
        for n in &self.nodes {
            if let Some(p) = n.parent {
                let _ = writeln!(out, "  n{p} -> n{} [style=dotted, color=gray50, arrowhead=none];", n.id);
            }
        }
        let superseded = |id: &NodeId| self.node(*id).is_some_and(ViewNode::superseded);
        for (f, t, k) in &self.edges {
            let mut attrs = Vec::new();
            if superseded(f) || superseded(t) {
                attrs.push("style=dashed, color=gray70".to_string());
            } else if *k == EdgeKind::Control {
                attrs.push("style=dashed".to_string());
            }
            if let Some(label) = self.edge_label(*f, *t, *k) {
                attrs.push(format!("label={}, fontsize=10, fontcolor=gray30", quote(label)));
            }
            let attrs = if attrs.is_empty() { String::new() } else { format!(" [{}]", attrs.join(", ")) };
            let _ = writeln!(out, "  n{f} -> n{t}{attrs};");
        }
        for (i, w) in self.wildcards.iter().enumerate() {
            let Some(label) = Self::drawn_label(w) else { continue };
            let _ = writeln!(
                out,
                "  w{i} [label={}, shape=ellipse, style=dashed, color=gray40, fontcolor=gray30];\n  n{} -> w{i} [style=dashed, color=gray40];",
                quote(&label),
                w.after
            );
        }
        for (owner, chain) in self.ghost_chains() {
            let mut prev = self.ghost_anchors(owner);
            for (i, g) in chain {
                let _ = writeln!(out, "  g{i} [label={}, style=\"rounded,dashed\", color=gray40];", quote(&g.task));
                for p in &prev {
                    let _ = writeln!(out, "  {p} -> g{i} [style=dashed, color=gray40];");
                }
                prev = vec![format!("g{i}")];
            }
        }
        out.push_str("}\n");
        out
    }

    /// A Mermaid flowchart, one class per state; wildcards and guaranteed nodes dashed.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for n in &self.nodes {
            let label = node_label(n).replace('"', "'").replace('\n', "<br/>");
            let _ = writeln!(out, "  n{}[\"{label}\"]:::{}", n.id, n.state_name());
            if let (Some(color), Some(state)) = (&n.color, n.state) {
                let _ = writeln!(out, "  style n{} fill:{color},stroke:{},stroke-width:3px", n.id, state_color(state));
            }
        }
        for n in &self.nodes {
            if let Some(p) = n.parent {
                let _ = writeln!(out, "  n{p} -.- n{}", n.id);
            }
        }
        for (f, t, k) in &self.edges {
            let arrow = if *k == EdgeKind::Control { "-.->" } else { "-->" };
            let label =
                self.edge_label(*f, *t, *k).map(|l| format!("|\"{}\"|", l.replace('"', "'"))).unwrap_or_default();
            let _ = writeln!(out, "  n{f} {arrow}{label} n{t}");
        }
        for (i, w) in self.wildcards.iter().enumerate() {
            let Some(label) = Self::drawn_label(w) else { continue };
            let _ = writeln!(out, "  w{i}([\"{}\"]):::wildcard", label.replace('"', "'"));
            let _ = writeln!(out, "  n{} -.-> w{i}", w.after);
        }
        for (owner, chain) in self.ghost_chains() {
            let mut prev = self.ghost_anchors(owner);
            for (i, g) in chain {
                let _ = writeln!(out, "  g{i}[\"{}\"]:::ghost", g.task);
                for p in &prev {
                    let _ = writeln!(out, "  {p} -.-> g{i}");
                }
                prev = vec![format!("g{i}")];
            }
        }
        for s in NodeState::ALL.into_iter().filter(|s| *s != NodeState::Superseded) {
            let _ = writeln!(out, "  classDef {} fill:{}", s.as_str(), state_color(s));
        }
        out.push_str("  classDef planned fill:#ffffff,stroke:#555\n");
        if self.nodes.iter().any(ViewNode::superseded) {
            out.push_str("  classDef superseded fill:#f7f7f7,stroke:#aaa,stroke-dasharray:4 3,color:#999\n");
        }
        out.push_str("  classDef wildcard fill:#ffffff,stroke:#777,stroke-dasharray:4 3\n");
        out.push_str("  classDef ghost fill:#ffffff,stroke:#777,stroke-dasharray:4 3\n");
        out
    }

    /// The task-level view: one node per task with its count, edges between tasks (data,
    /// control, and `spawns`). A loop, a task that spawns its own next iteration, is a cycle.
    pub fn collapse(&self) -> TaskGraph {
        let mut tasks: Vec<(String, usize)> = Vec::new();
        let index = |task: &str, tasks: &mut Vec<(String, usize)>| match tasks.iter().position(|(t, _)| t == task) {
            Some(i) => i,
            None => {
                tasks.push((task.to_string(), 0));
                tasks.len() - 1
            }
        };
        for n in &self.nodes {
            let i = index(&n.task, &mut tasks);
            tasks[i].1 += 1;
        }
        let mut edges: Vec<(usize, usize, &'static str, usize)> = Vec::new();
        let mut add = |f: usize, t: usize, kind: &'static str| match edges
            .iter_mut()
            .find(|e| e.0 == f && e.1 == t && e.2 == kind)
        {
            Some(e) => e.3 += 1,
            None => edges.push((f, t, kind, 1)),
        };
        let task_index = |id: NodeId, tasks: &Vec<(String, usize)>| {
            let task = self.node(id).map(|n| n.task.as_str()).unwrap_or_default();
            tasks.iter().position(|(t, _)| t == task).unwrap_or(0)
        };
        for n in &self.nodes {
            if let Some(p) = n.parent {
                add(task_index(p, &tasks), task_index(n.id, &tasks), "spawns");
            }
        }
        for (f, t, k) in &self.edges {
            add(task_index(*f, &tasks), task_index(*t, &tasks), k.as_str());
        }
        TaskGraph { title: self.title.clone(), tasks, edges }
    }
}

/// The task-level view of a graph (`graph --collapse`).
#[derive(Debug, Clone)]
pub struct TaskGraph {
    title: String,
    /// Each task with how many nodes run it.
    pub tasks: Vec<(String, usize)>,
    /// (from task, to task, kind, how many node edges).
    pub edges: Vec<(usize, usize, &'static str, usize)>,
}

impl TaskGraph {
    /// As JSON: `{"tasks": [{"task", "nodes"}], "edges": [{"from", "to", "kind", "count"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "tasks": self.tasks.iter().map(|(t, c)| json!({"task": t, "nodes": c})).collect::<Vec<_>>(),
            "edges": self.edges.iter().map(|(f, t, k, c)| json!({
                "from": self.tasks[*f].0, "to": self.tasks[*t].0, "kind": k, "count": c,
            })).collect::<Vec<_>>(),
        })
    }

    /// As dot: a self-loop marks a loop, labelled with its iteration count.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph tasks {{\n  graph [label={}, labelloc=t, fontname=\"Helvetica\"];\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n",
            quote(&self.title)
        );
        for (i, (t, c)) in self.tasks.iter().enumerate() {
            let label = if *c > 1 { format!("{t} ×{c}") } else { t.clone() };
            let _ = writeln!(out, "  t{i} [label={}];", quote(&label));
        }
        for (f, t, k, c) in &self.edges {
            let label = if f == t {
                format!("loop ×{c}")
            } else if *c > 1 {
                format!("×{c}")
            } else {
                String::new()
            };
            let style = match *k {
                "spawns" => "dotted",
                "control" => "dashed",
                _ => "solid",
            };
            let _ = writeln!(out, "  t{f} -> t{t} [style={style}, label={}];", quote(&label));
        }
        out.push_str("}\n");
        out
    }

    /// As a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (i, (t, c)) in self.tasks.iter().enumerate() {
            let _ = writeln!(out, "  t{i}[\"{t} ×{c}\"]");
        }
        for (f, t, k, c) in &self.edges {
            let arrow = if matches!(*k, "data" | "after") { "-->" } else { "-.->" };
            let label = if f == t { format!("loop ×{c}") } else { format!("{k} ×{c}") };
            let _ = writeln!(out, "  t{f} {arrow}|{label}| t{t}");
        }
        out
    }
}

fn node_label(n: &ViewNode) -> String {
    let name = n.label.as_deref().unwrap_or(&n.task);
    let mut label = format!("{}: {name}\n{}", n.id, n.state_name());
    if n.attempts > 1 {
        let _ = write!(label, " ({} attempts)", n.attempts);
    }
    label
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

fn view_color(state: Option<NodeState>) -> &'static str {
    state.map(state_color).unwrap_or("#ffffff")
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
        NodeState::Superseded => "#f7f7f7",
    }
}

/// A duration in ms as a short human string.
pub fn human_ms(ms: i64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else if ms < 86_400_000 {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    } else {
        format!("{}d{:02}h", ms / 86_400_000, (ms % 86_400_000) / 3_600_000)
    }
}

/// Deadlines further away than this (a hundred years) are shown as "forever".
pub const FOREVER_MS: i64 = 100 * 365 * 86_400_000;

/// How long until `deadline` (ms since the epoch), seen at `now`: "forever" when it is
/// absurdly far (a wait with a huge timeout), "now" when it has passed.
pub fn time_left(deadline: i64, now: i64) -> String {
    let left = deadline.saturating_sub(now);
    if left > FOREVER_MS {
        "forever".into()
    } else if left <= 0 {
        "now".into()
    } else {
        human_ms(left)
    }
}

/// How many characters of an input, output or error `show` prints; past that it says how to
/// get the whole value.
pub const SHOW_MAX: usize = 300;

/// A value for `show`: its JSON, cut at [`SHOW_MAX`] characters with a note naming the command
/// that prints it whole.
fn shown(value: &Value, whole: &str) -> String {
    let text = value.to_string();
    if text.chars().count() <= SHOW_MAX {
        return text;
    }
    format!("{}  ({}; `{whole}` prints it whole)", truncate(&text, SHOW_MAX), human_bytes(text.len()))
}

/// A size as people read it: `812 bytes`, `12.3 KiB`, `4.0 MiB`.
pub fn human_bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    match n as f64 {
        b if b < KIB => format!("{n} bytes"),
        b if b < KIB * KIB => format!("{:.1} KiB", b / KIB),
        b if b < KIB * KIB * KIB => format!("{:.1} MiB", b / (KIB * KIB)),
        b => format!("{:.1} GiB", b / (KIB * KIB * KIB)),
    }
}

fn wait_line(out: &mut String, run: RunId, w: &WaitRecord, now: i64) {
    if w.name == crate::context::SLEEP_SIGNAL {
        let until = match w.deadline.map(|d| time_left(d, now)) {
            Some(left) if left == "forever" => " forever".to_string(),
            Some(left) => format!(" for another {left}"),
            // A sleep too long to have a deadline never ends by itself.
            None => " forever".to_string(),
        };
        let _ = writeln!(out, "waiting   node {} sleeps{until}", w.node);
    } else {
        let until = match w.deadline.map(|d| time_left(d, now)) {
            Some(left) if left == "forever" => String::new(),
            Some(left) => format!(" (gives up in {left})"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "waiting   node {} waits for signal `{}`; send it with `signal {run} {} JSON`{until}",
            w.node, w.name, w.name
        );
    }
}

/// What a node whose attempt waits on the work queue is said to wait for.
pub fn queued_text(q: &crate::store::Queued) -> String {
    format!("waits for a worker of queue `{}`", q.queue)
}

fn queued_line(out: &mut String, q: &crate::store::Queued, node: Option<NodeId>) {
    let who = node.map(|n| format!("node {n} ")).unwrap_or_default();
    let _ = writeln!(out, "queued    {who}{}; start one with `worker --queue {}`", queued_text(q), q.queue);
}

/// `show RUN` as text: the run, then one line per node; superseded nodes only with `all`
/// (`show RUN --all`), otherwise counted in a last line. With `states` not empty, only the
/// nodes in one of those states are listed (`show RUN --state failed`), and a last line says
/// how many of how many. A node whose attempt waits on the work queue for a worker
/// (`view.queued`) is shown `queued`, with its queue.
pub fn show_text(view: &crate::ops::RunView, all: bool, states: &[NodeState]) -> String {
    let s = &view.snapshot;
    let r = &s.run;
    let now = crate::model::now_ms();
    let mut out = String::new();
    let _ = writeln!(out, "run {}  workflow {}  {}", r.id, r.workflow, r.state.as_str().to_uppercase());
    let _ = writeln!(out, "input     {}", shown(&r.input, &format!("show {} --input", r.id)));
    if let (Some(a), Some(b)) = (r.started_at, r.finished_at) {
        let _ = writeln!(out, "duration  {}", human_ms(b - a));
    }
    let _ = writeln!(out, "executor  {} (parallelism {})", r.executor, r.parallelism);
    if let Some(owner) = &r.owner {
        let _ = writeln!(out, "driven by {owner}");
    }
    if let Some(o) = &r.output {
        let _ = writeln!(out, "output    {}", shown(o, &format!("show {} --output", r.id)));
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "error     {}", truncate(e.message(), SHOW_MAX));
    }
    for p in &s.promises {
        let _ = writeln!(out, "promise   `{}` over node {} (declared by node {})", p.text, p.scope, p.declared_by);
    }
    for w in &s.waits {
        wait_line(&mut out, r.id, w, now);
    }
    for q in &view.queued {
        queued_line(&mut out, q, Some(q.node));
    }
    if r.state == RunState::Interrupted {
        let _ = writeln!(
            out,
            "hint      interrupted: its orchestrator stopped before the run ended (it was killed, or an \
             inline task ended its process); `recover {}` resumes it",
            r.id
        );
    }
    let _ = writeln!(out, "\n{:>5}  {:<24} {:<10} {:>8} {:>9}  detail", "node", "task", "state", "attempts", "time");
    let mut cut = false;
    let listed = |n: &&crate::model::NodeRecord| {
        if states.is_empty() { all || n.state != NodeState::Superseded } else { states.contains(&n.state) }
    };
    let hidden =
        if all || !states.is_empty() { 0 } else { s.nodes.iter().filter(|n| n.state == NodeState::Superseded).count() };
    let mut shown_nodes = 0;
    for n in s.nodes.iter().filter(listed) {
        shown_nodes += 1;
        let time = match (n.started_at, n.finished_at) {
            (Some(a), Some(b)) => human_ms(b - a),
            _ => String::new(),
        };
        let queued = view.queued.iter().find(|q| q.node == n.id);
        let detail = match (&n.error, &n.output, queued) {
            (Some(e), _, _) => truncate(e.message(), 100),
            (None, Some(o), _) => truncate(&o.to_string(), 60),
            (None, None, Some(q)) => queued_text(q),
            _ => String::new(),
        };
        let state = if queued.is_some() { "queued" } else { n.state.as_str() };
        cut |= detail.ends_with('…');
        let task = match n.parent {
            Some(p) if p != 0 => format!("{} (in {p})", n.task),
            _ => n.task.clone(),
        };
        let _ = writeln!(out, "{:>5}  {:<24} {:<10} {:>8} {:>9}  {detail}", n.id, task, state, n.attempts, time);
    }
    if !states.is_empty() {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let current = s.nodes.iter().filter(|n| n.state != NodeState::Superseded).count();
        let _ = writeln!(
            out,
            "\n({shown_nodes} of {current} nodes shown: those {}; `show {}` lists them all)",
            names.join(", "),
            r.id
        );
    }
    if hidden > 0 {
        let nodes = if hidden == 1 { "node" } else { "nodes" };
        let _ = writeln!(
            out,
            "\n({hidden} superseded {nodes} not shown: a rerun replaced them; `show {} --all` lists them)",
            r.id
        );
    }
    if cut {
        let _ = writeln!(
            out,
            "\n(details cut short: `show {} NODE` shows a node, `--output` prints its output whole)",
            r.id
        );
    }
    out
}

/// `show RUN NODE` as text: the node, its input and output, its attempts, what it waits for.
pub fn node_text(v: &crate::ops::NodeView) -> String {
    let n = &v.node;
    let now = crate::model::now_ms();
    let mut out = String::new();
    let state = if v.queued.is_some() { "queued" } else { n.state.as_str() };
    let _ = writeln!(out, "node {}  task {}  of run {}  {}", n.id, n.task, v.run, state.to_uppercase());
    if let Some(p) = n.parent {
        let _ = writeln!(out, "parent    node {p}");
    }
    if let Some(label) = &n.label {
        let _ = writeln!(out, "label     {label}");
    }
    let _ = writeln!(out, "input     {}", shown(&v.input, &format!("show {} {} --input", v.run, n.id)));
    if let Some(o) = &n.output {
        let _ = writeln!(out, "output    {}", shown(o, &format!("show {} {} --output", v.run, n.id)));
    }
    if let Some(e) = &n.error {
        let _ = writeln!(out, "error     {}", truncate(e.message(), SHOW_MAX));
    }
    for w in &v.waits {
        wait_line(&mut out, v.run, w, now);
    }
    if let Some(q) = &v.queued {
        queued_line(&mut out, q, None);
    }
    for a in &v.attempts {
        let time = a.finished_at.map(|f| format!(" · {}", human_ms(f - a.started_at))).unwrap_or_default();
        let how = match &a.error {
            Some(e) => format!("{}: {}", a.state.as_str(), truncate(e.message(), 100)),
            None => a.state.as_str().to_string(),
        };
        let _ = writeln!(out, "attempt   {} · {} · {how}{time}", a.attempt, a.executor);
    }
    if v.attempts.is_empty() {
        let _ = writeln!(out, "attempt   none yet");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EdgeRecord, NodeRecord, RunRecord, StoredArg};

    fn node(id: usize, task: &str, state: NodeState, parent: Option<usize>) -> NodeRecord {
        NodeRecord {
            id: NodeId::at(id),
            parent: parent.map(NodeId::at),
            seq: parent.map(|_| id as u32),
            task: task.into(),
            state,
            args: Vec::new(),
            ..Default::default()
        }
    }

    /// A running run of `flow` with these nodes and edges.
    fn running(nodes: Vec<NodeRecord>, edges: &[(usize, usize)], waits: Vec<WaitRecord>) -> RunSnapshot {
        RunSnapshot {
            run: RunRecord {
                id: RunId::new(1),
                workflow: "flow".into(),
                state: RunState::Running,
                input: json!({}),
                output: None,
                error: None,
                created_at: 0,
                started_at: None,
                finished_at: None,
                executor: "inline".into(),
                parallelism: 4,
                owner: None,
            },
            nodes,
            edges: edges
                .iter()
                .map(|(f, t)| EdgeRecord {
                    from: NodeId::at(*f),
                    to: NodeId::at(*t),
                    kind: EdgeKind::Data,
                    label: None,
                })
                .collect(),
            attempts: Vec::new(),
            journal: Vec::new(),
            promises: Vec::new(),
            waits,
            delivered: Vec::new(),
        }
    }

    fn only_the_root_spawns(task: &str) -> bool {
        task == "flow"
    }

    fn wildcards(view: &GraphView) -> Vec<(u64, u64, &str)> {
        view.wildcards.iter().map(|w| (w.after.get(), w.owner.get(), w.may_add.as_str())).collect()
    }

    #[test]
    fn a_live_wildcard_hangs_after_what_its_body_waits_for() {
        use NodeState::*;
        // The root awaits `b`, which runs after `a`: its wildcard hangs after `b`, as in a plan.
        let nodes =
            vec![node(0, "flow", Waiting, None), node(1, "a", Running, Some(0)), node(2, "b", Pending, Some(0))];
        let view = GraphView::of_run(&running(nodes, &[(1, 2)], Vec::new()), &only_the_root_spawns);
        assert_eq!(wildcards(&view), [(2, 0, "*")]);
        let dot = view.to_dot();
        assert!(dot.contains("  n2 -> w0 [style=dashed, color=gray40];"), "{dot}");
        assert!(!dot.contains("n0 -> w0"), "{dot}");
        assert!(view.to_mermaid().contains("  n2 -.-> w0\n"));

        // Awaiting several at once (a fan-out): after each of them; ended children do not count.
        let nodes = vec![
            node(0, "flow", Waiting, None),
            node(1, "a", Succeeded, Some(0)),
            node(2, "m", Running, Some(0)),
            node(3, "m", Ready, Some(0)),
        ];
        let view = GraphView::of_run(&running(nodes, &[(1, 2), (1, 3)], Vec::new()), &only_the_root_spawns);
        assert_eq!(wildcards(&view), [(2, 0, "*"), (3, 0, "*")]);

        // A body that runs, or waits for a signal, may add more at any time: after itself.
        let nodes = vec![node(0, "flow", Running, None), node(1, "a", Running, Some(0))];
        let view = GraphView::of_run(&running(nodes, &[], Vec::new()), &only_the_root_spawns);
        assert_eq!(wildcards(&view), [(0, 0, "*")]);
        let nodes = vec![node(0, "flow", Waiting, None), node(1, "a", Running, Some(0))];
        let wait = WaitRecord {
            node: NodeId::ROOT,
            seq: 1,
            name: "go".into(),
            schema: json!({}),
            deadline: None,
            default: None,
        };
        let view = GraphView::of_run(&running(nodes, &[], vec![wait]), &only_the_root_spawns);
        assert_eq!(wildcards(&view), [(0, 0, "*")]);
    }

    /// `s` with a shape promise over node `scope`'s subtree.
    fn promised(mut s: RunSnapshot, scope: usize, text: &str) -> RunSnapshot {
        let scope = NodeId::at(scope);
        s.promises.push(crate::model::PromiseRecord { id: 0, scope, declared_by: scope, seq: 0, text: text.into() });
        s
    }

    fn ghosts(view: &GraphView) -> Vec<(&str, u64)> {
        view.ghosts.iter().map(|g| (g.task.as_str(), g.owner.get())).collect()
    }

    #[test]
    fn a_map_in_flight_draws_what_may_come_after_its_dag_and_b_dashed_after_the_ms() {
        use NodeState::*;
        // `A -> M* -> B`: A done, two Ms running after it, the root waiting for them.
        let nodes = vec![
            node(0, "flow", Waiting, None),
            node(1, "A", Succeeded, Some(0)),
            node(2, "M", Running, Some(0)),
            node(3, "M", Running, Some(0)),
        ];
        let snap = promised(running(nodes, &[(1, 2), (1, 3)], Vec::new()), 0, "A -> M* -> B");
        let view = GraphView::of_run(&snap, &only_the_root_spawns);
        assert_eq!(wildcards(&view), [(2, 0, "M* -> B"), (3, 0, "M* -> B")]);
        assert_eq!(ghosts(&view), [("B", 0)]);
        let dot = view.to_dot();
        for line in [
            "  w0 [label=\"M*\", shape=ellipse, style=dashed, color=gray40, fontcolor=gray30];",
            "  n2 -> w0 [style=dashed, color=gray40];",
            "  w1 [label=\"M*\", shape=ellipse, style=dashed, color=gray40, fontcolor=gray30];",
            "  n3 -> w1 [style=dashed, color=gray40];",
            "  g0 [label=\"B\", style=\"rounded,dashed\", color=gray40];",
            "  w0 -> g0 [style=dashed, color=gray40];",
            "  w1 -> g0 [style=dashed, color=gray40];",
        ] {
            assert!(dot.contains(line), "{line}\n{dot}");
        }
        assert_eq!(dot.matches("label=\"B\"").count(), 1, "{dot}");
        let mermaid = view.to_mermaid();
        assert!(mermaid.contains("  g0[\"B\"]:::ghost\n  w0 -.-> g0\n  w1 -.-> g0\n"), "{mermaid}");
    }

    #[test]
    fn the_picture_reads_the_dag_in_topological_order_not_in_creation_order() {
        use NodeState::*;
        // `A -> B -> C`: the body spawned `B` first, then `A` with an edge `A -> B`. In order of
        // creation that is `B, A` (broken); over the DAG it is `A -> B`, and `C` must come.
        let nodes =
            vec![node(0, "flow", Running, None), node(1, "B", Pending, Some(0)), node(2, "A", Running, Some(0))];
        let snap = promised(running(nodes, &[(2, 1)], Vec::new()), 0, "A -> B -> C");
        let view = GraphView::of_run(&snap, &only_the_root_spawns);
        assert_eq!(wildcards(&view), [(0, 0, "C")]);
        assert_eq!(ghosts(&view), [("C", 0)]);
        let dot = view.to_dot();
        // Only `C` may come and it is guaranteed: drawn dashed where the wildcard would be, once.
        assert!(dot.contains("  n0 -> g0 [style=dashed, color=gray40];"), "{dot}");
        assert!(!dot.contains("w0"), "{dot}");
        assert_eq!(dot.matches("\"C\"").count(), 1, "{dot}");
    }

    #[test]
    fn a_grandchild_counts_in_its_grandparents_shape() {
        use NodeState::*;
        // `P -> Q -> R` over the root; `P` (a task that spawns) spawned `Q` itself. The DAG is
        // `P -> Q`: only `R` is still guaranteed (the root's children alone would say `Q -> R`).
        let nodes =
            vec![node(0, "flow", Waiting, None), node(1, "P", Waiting, Some(0)), node(2, "Q", Running, Some(1))];
        let snap = promised(running(nodes, &[], Vec::new()), 0, "P -> Q -> R");
        let view = GraphView::of_run(&snap, &|t: &str| t == "flow" || t == "P");
        // The root waits for `P`, which waits for `Q`; `P`'s own nodes are bound by the shape too.
        assert_eq!(wildcards(&view), [(1, 0, "R"), (2, 1, "R")]);
        assert_eq!(ghosts(&view), [("R", 0)]);
        let dot = view.to_dot();
        assert!(dot.contains("  g0 [label=\"R\", style=\"rounded,dashed\", color=gray40];"), "{dot}");
        assert!(dot.contains("  n1 -> g0 [style=dashed, color=gray40];"), "{dot}");
        assert!(!dot.contains("w0") && !dot.contains("w1") && !dot.contains("g1"), "{dot}");

        // Once `R` exists (spawned by `P`, deeper still), the shape is complete: no more wildcards.
        let nodes = vec![
            node(0, "flow", Waiting, None),
            node(1, "P", Waiting, Some(0)),
            node(2, "Q", Succeeded, Some(1)),
            node(3, "R", Running, Some(1)),
        ];
        let snap = promised(running(nodes, &[(2, 3)], Vec::new()), 0, "P -> Q -> R");
        let view = GraphView::of_run(&snap, &|t: &str| t == "flow" || t == "P");
        assert!(view.wildcards.is_empty() && view.ghosts.is_empty(), "{:?} {:?}", view.wildcards, view.ghosts);
    }

    fn planned(may_add: &str, ghosts: &[&str]) -> GraphView {
        let n = |id: usize, task: &str| ViewNode {
            id: NodeId::at(id),
            task: task.into(),
            state: None,
            label: None,
            color: None,
            shape: None,
            parent: (id > 0).then_some(NodeId::ROOT),
            attempts: 0,
        };
        GraphView {
            run: json!({"plan": "flow"}),
            title: "plan of flow".into(),
            nodes: vec![n(0, "flow"), n(1, "A")],
            edges: Vec::new(),
            edge_labels: BTreeMap::new(),
            edge_args: BTreeMap::new(),
            arg_labels: false,
            promises: Vec::new(),
            wildcards: vec![Wildcard {
                after: NodeId::at(1),
                owner: NodeId::ROOT,
                may_add: may_add.into(),
                ends_with: ghosts.iter().map(|t| t.to_string()).collect(),
            }],
            ghosts: ghosts.iter().map(|t| Ghost { task: t.to_string(), owner: NodeId::ROOT }).collect(),
        }
    }

    #[test]
    fn a_node_is_never_drawn_both_in_a_wildcard_and_dashed() {
        // What may come before the guaranteed node, then the guaranteed node.
        let view = planned("M* -> B", &["B"]);
        let dot = view.to_dot();
        assert!(dot.contains("  w0 [label=\"M*\", shape=ellipse"), "{dot}");
        assert!(dot.contains("  n1 -> w0 [style=dashed, color=gray40];"), "{dot}");
        assert!(dot.contains("  g0 [label=\"B\", style=\"rounded,dashed\", color=gray40];"), "{dot}");
        assert!(dot.contains("  w0 -> g0 [style=dashed, color=gray40];"), "{dot}");
        assert_eq!(dot.matches("B\"").count(), 1, "{dot}");
        let mermaid = view.to_mermaid();
        assert!(mermaid.contains("  w0([\"M*\"]):::wildcard\n  n1 -.-> w0\n"), "{mermaid}");
        assert!(mermaid.contains("  g0[\"B\"]:::ghost\n  w0 -.-> g0\n"), "{mermaid}");
        // The JSON keeps the whole of what may come.
        assert_eq!(view.to_json()["wildcards"], json!([{"after": 1, "owner": 0, "may_add": "M* -> B"}]));

        // Only guaranteed nodes may come: no wildcard, the dashed nodes where it would be.
        let dot = planned("B -> C", &["B", "C"]).to_dot();
        assert!(!dot.contains("w0"), "{dot}");
        assert!(dot.contains("  n1 -> g0 [style=dashed") && dot.contains("  g0 -> g1 [style=dashed"), "{dot}");

        // Guaranteed nodes that do not end the label: the wildcard says it all.
        let dot = planned("(X -> B) | (Y -> B -> Z)", &["B"]).to_dot();
        assert!(dot.contains("  w0 [label=\"(X -> B) | (Y -> B -> Z)\""), "{dot}");
        assert!(!dot.contains("g0"), "{dot}");
    }

    #[test]
    fn edge_labels_are_drawn_in_every_format() {
        use NodeState::*;
        // `load` takes `extract`'s output as `rows` (labelled "rows of 2024" by the body);
        // `report` takes it as `table` (not labelled), and runs after `load` by a control edge
        // labelled "then".
        let mut nodes = vec![
            node(0, "flow", Succeeded, None),
            node(1, "extract", Succeeded, Some(0)),
            node(2, "load", Succeeded, Some(0)),
            node(3, "report", Succeeded, Some(0)),
        ];
        nodes[2].args = vec![("rows".into(), StoredArg::Node(NodeId::at(1)))];
        nodes[3].args =
            vec![("table".into(), StoredArg::Node(NodeId::at(1))), ("n".into(), StoredArg::Value(json!(1)))];
        let mut snap = running(nodes, &[(1, 2), (1, 3)], Vec::new());
        snap.run.state = RunState::Succeeded;
        snap.edges[0].label = Some("rows of \"2024\"".into());
        snap.edges.push(EdgeRecord {
            from: NodeId::at(2),
            to: NodeId::at(3),
            kind: EdgeKind::Control,
            label: Some("then".into()),
        });
        let mut view = GraphView::of_run(&snap, &only_the_root_spawns);

        let dot = view.to_dot();
        assert!(dot.contains("  n1 -> n2 [label=\"rows of \\\"2024\\\"\", fontsize=10, fontcolor=gray30];\n"), "{dot}");
        assert!(dot.contains("  n1 -> n3;\n"), "{dot}");
        assert!(dot.contains("  n2 -> n3 [style=dashed, label=\"then\", fontsize=10, fontcolor=gray30];\n"), "{dot}");
        let mermaid = view.to_mermaid();
        assert!(mermaid.contains("  n1 -->|\"rows of '2024'\"| n2\n"), "{mermaid}");
        assert!(mermaid.contains("  n1 --> n3\n"), "{mermaid}");
        assert!(mermaid.contains("  n2 -.->|\"then\"| n3\n"), "{mermaid}");
        assert_eq!(
            view.to_json()["edges"],
            json!([
                {"from": 1, "to": 2, "kind": "data", "label": "rows of \"2024\"", "arg": "rows"},
                {"from": 1, "to": 3, "kind": "data", "label": null, "arg": "table"},
                {"from": 2, "to": 3, "kind": "control", "label": "then", "arg": null},
            ])
        );

        // `graph --edge-labels`: data edges with no label of their own show their parameter.
        view.arg_labels = true;
        let dot = view.to_dot();
        assert!(dot.contains("  n1 -> n3 [label=\"table\", fontsize=10, fontcolor=gray30];\n"), "{dot}");
        assert!(dot.contains("  n1 -> n2 [label=\"rows of"), "{dot}");
        assert!(view.to_mermaid().contains("  n1 -->|\"table\"| n3\n"));
        // The JSON is the same either way.
        assert_eq!(
            view.to_json()["edges"][1],
            json!({"from": 1, "to": 3, "kind": "data", "label": null, "arg": "table"})
        );
    }

    #[test]
    fn an_annotated_color_does_not_hide_the_state() {
        let mut nodes = vec![node(0, "flow", NodeState::Running, None), node(1, "a", NodeState::Failed, Some(0))];
        nodes[1].color = Some("gold".into());
        let view = GraphView::of_run(&running(nodes, &[], Vec::new()), &|_| false);
        let dot = view.to_dot();
        assert!(
            dot.contains(
                "  n1 [label=\"1: a\\nfailed\", fillcolor=\"gold\", tooltip=\"failed\", color=\"#ff9c9c\", penwidth=3];"
            ),
            "{dot}"
        );
        assert!(
            dot.contains("  n0 [label=\"0: flow\\nrunning\", fillcolor=\"#8fb8ff\", tooltip=\"running\"];"),
            "{dot}"
        );
        let mermaid = view.to_mermaid();
        assert!(
            mermaid
                .contains("  n1[\"1: a<br/>failed\"]:::failed\n  style n1 fill:gold,stroke:#ff9c9c,stroke-width:3px\n"),
            "{mermaid}"
        );
        let json = view.to_json();
        assert_eq!(
            (json["nodes"][1]["color"].as_str(), json["nodes"][1]["state"].as_str()),
            (Some("gold"), Some("failed"))
        );
    }

    #[test]
    fn deadlines_absurdly_far_away_are_forever_and_none_overflows() {
        let now = 1_795_000_000_000;
        assert_eq!(time_left(now + 1_500, now), "1.50s");
        assert_eq!(time_left(now + 2 * 3_600_000 + 60_000, now), "2h01m");
        assert_eq!(time_left(now + 3 * 86_400_000, now), "3d00h");
        assert_eq!(time_left(now - 5, now), "now");
        assert_eq!(time_left(now + FOREVER_MS + 1, now), "forever");
        assert_eq!(time_left(i64::MAX, now), "forever");
        assert_eq!(time_left(i64::MIN, now), "now");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(12_595), "12.3 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 100), "5.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
