//! Promise enforcement: every mutation is checked against every promise in force before it is
//! applied; one that breaks a promise terminates the run, naming the promise, the mutation and
//! the node that sent it.

use super::Core;
use crate::attempt::AttemptId;
use crate::call::PromiseScope;
use crate::error::{Error, ErrorKind};
use crate::journal::Write;
use crate::model::{NodeId, NodeState, PromiseRecord};
use crate::promise::{Promise, ScopeDag, Shape, Target, scope_dag};

/// Whether a promise was registered with its declaring node's task (those count down from
/// `u32::MAX`; a body's own calls count up from 0).
pub(super) fn registered(p: &PromiseRecord) -> bool {
    p.seq > u32::MAX / 2
}

/// A promise in force, with the state of its shape.
pub(super) struct Active {
    pub(super) record: PromiseRecord,
    pub(super) promise: Promise,
    /// For a shape: what may still follow the scope node's children so far.
    pub(super) shape: Option<Shape>,
}

impl Core {
    /// The shape a scope's graph so far leaves of a shape promise.
    fn shape_after(&self, promise: &Promise, scope: NodeId) -> Option<Option<Shape>> {
        match promise {
            Promise::Shape(shape) => Some(self.shape_state(shape, &self.scope_dag(scope, None))),
            _ => None,
        }
    }

    /// Recomputes what the shape promises allow still, from the children their scopes have
    /// now (after some were superseded).
    pub(super) fn refresh_shapes(&mut self) {
        for i in 0..self.promises.len() {
            let shape = self.shape_after(&self.promises[i].promise, self.promises[i].record.scope).flatten();
            self.promises[i].shape = shape;
        }
    }

    /// Drops the promises `gone` picks (their declaring node or call was superseded), and
    /// checks those that remain against the graph as it is now.
    pub(super) fn drop_promises(&mut self, gone: impl Fn(&PromiseRecord) -> bool) {
        let run = self.run;
        let mut writes = Vec::new();
        self.promises.retain(|p| {
            let drop = gone(&p.record);
            if drop {
                writes.push(Write::DropPromise { run, id: p.record.id });
            }
            !drop
        });
        self.fx.writes.extend(writes);
        self.refresh_shapes();
    }

    /// The DAG in the scope of a promise over `scope`'s subtree (see [`scope_dag`]); `edge`
    /// adds an edge about to be added.
    pub(super) fn scope_dag(&self, scope: NodeId, edge: Option<(NodeId, NodeId)>) -> ScopeDag<'static> {
        let node = |n: NodeId| &self.nodes[n.index()];
        let mut dag = scope_dag(
            scope,
            |n| node(n).children.iter().copied(),
            |n| node(n).deps.iter().copied(),
            |n| node(n).parent,
            |n| node(n).task.name,
        );
        if let Some((from, to)) = edge
            && let (Some(f), Some(t)) = (dag.index(from), dag.index(to))
        {
            dag.edges.push((f, t));
        }
        dag
    }

    /// What may still follow in a shape after its scope's DAG so far, read in topological order
    /// (the order of creation among nodes that do not run after one another); `None` if that
    /// cannot be completed (or the DAG has a cycle).
    fn shape_state(&self, shape: &Shape, dag: &ScopeDag<'static>) -> Option<Shape> {
        dag.shape_after(shape)
    }

    /// A promise read back from the store.
    pub(super) fn restore_promise(&mut self, record: PromiseRecord, promise: Promise) {
        let shape = self.shape_after(&promise, record.scope).flatten();
        self.promises.push(Active { record, promise, shape });
    }

    /// Declares the promises a node's task was registered with (scope: the node's subtree).
    pub(super) fn declare_registered(&mut self, id: NodeId) {
        let task = self.nodes[id.index()].task;
        for (i, text) in task.promises.iter().enumerate() {
            let seq = u32::MAX - i as u32;
            if self.promises.iter().any(|p| p.record.declared_by == id && p.record.seq == seq) {
                continue;
            }
            match text.parse::<Promise>() {
                Ok(promise) => self.add_promise(id, id, seq, promise),
                Err(e) => {
                    let error = Error::new(ErrorKind::Usage, format!("task `{}` has a bad promise: {e}", task.name));
                    self.terminated.get_or_insert(error);
                }
            }
        }
    }

    /// A promise declared at run time by a body.
    pub(super) fn declare(&mut self, at: AttemptId, seq: u32, text: &str, scope: PromiseScope) {
        let by = at.node;
        if self.promises.iter().any(|p| p.record.declared_by == by && p.record.seq == seq) {
            return; // declared before this replay
        }
        match text.parse::<Promise>() {
            Ok(promise) => {
                let scope = if scope == PromiseScope::Run { NodeId::ROOT } else { by };
                self.add_promise(scope, by, seq, promise);
            }
            Err(e) => {
                let e = Error::new(ErrorKind::Usage, format!("bad promise: {e}"));
                self.fail_attempt(at, e);
            }
        }
    }

    fn add_promise(&mut self, scope: NodeId, by: NodeId, seq: u32, promise: Promise) {
        // Numbers are never reused, also when promises were dropped.
        let id = self.promises.iter().map(|p| p.record.id + 1).max().unwrap_or(0);
        let record = PromiseRecord { id, scope, declared_by: by, seq, text: promise.to_string() };
        let shape = match self.shape_after(&promise, scope) {
            None => None,
            Some(Some(s)) => Some(s),
            Some(None) => {
                let text = record.text.clone();
                self.fx.writes.push(Write::Promise { run: self.run, record: record.clone() });
                self.promises.push(Active { record, promise, shape: None });
                let what = format!("the children node {scope} already has");
                return self.terminate_with(&text, by, &what, Some(by));
            }
        };
        self.fx.writes.push(Write::Promise { run: self.run, record: record.clone() });
        self.promises.push(Active { record, promise, shape });
    }

    /// Whether `node` is `scope` or one of its descendants.
    fn in_subtree(&self, node: NodeId, scope: NodeId) -> bool {
        salt_promise::in_scope(node, scope, |n| self.nodes.get(n.index()).and_then(|n| n.parent))
    }

    fn matches(&self, target: &Target, node: NodeId) -> bool {
        self.nodes.get(node.index()).is_some_and(|n| target.matches(node.get(), n.task.name))
    }

    /// A shape promise on `scope` that its graph does not keep now that its body returned:
    /// (its text, who declared it, what is wrong). The shape must be complete, and the DAG in
    /// its scope a DAG of the shape's form.
    pub(super) fn unfinished_shape(&self, scope: NodeId) -> Option<(String, NodeId, String)> {
        self.promises.iter().filter(|p| p.record.scope == scope).find_map(|p| {
            let Promise::Shape(shape) = &p.promise else { return None };
            let what = match &p.shape {
                Some(s) if !s.is_complete() => format!("while the shape still needs `{}`", s.label()),
                _ => {
                    if self.scope_dag(scope, None).fits(shape) {
                        return None;
                    }
                    "with a graph that is not of the shape's form".to_string()
                }
            };
            Some((p.record.text.clone(), p.record.declared_by, what))
        })
    }

    /// Checks a spawn against every promise in force; on success, the new shape states.
    /// `deps` are the nodes the new one takes by handle: edge promises are about them (not about
    /// the nodes it runs after because the parent observed them); a shape steps by the new task.
    pub(super) fn check_spawn(
        &self,
        parent: NodeId,
        task: &'static str,
        deps: &[NodeId],
    ) -> Result<Vec<(usize, Shape)>, usize> {
        let mut shapes = Vec::new();
        for (i, p) in self.promises.iter().enumerate() {
            let scope = p.record.scope;
            if !self.in_subtree(parent, scope) {
                continue;
            }
            let task_of = |n: &NodeId| self.nodes[n.index()].task.name;
            let ok = match &p.promise {
                Promise::NoNewNodes => false,
                Promise::NoNewEdges => deps.is_empty(),
                Promise::OnlyTasks(tasks) => tasks.iter().any(|t| t == task),
                Promise::OnlyEdgesBetween(tasks) => {
                    deps.is_empty()
                        || (tasks.iter().any(|t| t == task)
                            && deps.iter().all(|d| tasks.iter().any(|t| t == task_of(d))))
                }
                Promise::NoEdgesOut(target) => !deps.iter().any(|d| self.matches(target, *d)),
                // The new node gets the next id: a data edge into it is an edge into `#N` too.
                Promise::NoEdgesInto(target) => {
                    deps.is_empty()
                        || !match target {
                            Target::Task(name) => name == task,
                            Target::Node(id) => *id == self.nodes.len() as u64,
                        }
                }
                // The new node has the highest id and nothing runs after it yet, so it comes
                // last in the scope's topological order (ties go to the lower id): the state
                // after it is one step from the state before, without reading the DAG again.
                Promise::Shape(_) => match p.shape.as_ref().and_then(|s| s.step(task)) {
                    Some(next) => {
                        shapes.push((i, next));
                        true
                    }
                    None => false,
                },
            };
            if !ok {
                return Err(i);
            }
        }
        Ok(shapes)
    }

    /// Checks a control edge against every promise in force; on success, the new shape states.
    pub(super) fn check_edge(&self, from: NodeId, to: NodeId) -> Result<Vec<(usize, Shape)>, usize> {
        let mut shapes = Vec::new();
        for (i, p) in self.promises.iter().enumerate() {
            if !self.in_subtree(to, p.record.scope) {
                continue;
            }
            let task_of = |n: NodeId| self.nodes[n.index()].task.name;
            let ok = match &p.promise {
                Promise::NoNewEdges => false,
                Promise::OnlyEdgesBetween(tasks) => {
                    tasks.iter().any(|t| t == task_of(from)) && tasks.iter().any(|t| t == task_of(to))
                }
                Promise::NoEdgesOut(target) => !self.matches(target, from),
                Promise::NoEdgesInto(target) => !self.matches(target, to),
                Promise::Shape(shape) => {
                    match self.shape_state(shape, &self.scope_dag(p.record.scope, Some((from, to)))) {
                        Some(next) => {
                            shapes.push((i, next));
                            true
                        }
                        None => false,
                    }
                }
                _ => true,
            };
            if !ok {
                return Err(i);
            }
        }
        Ok(shapes)
    }

    pub(super) fn terminate(&mut self, promise: usize, what: &str, culprit: Option<NodeId>) {
        let text = self.promises[promise].record.text.clone();
        let by = self.promises[promise].record.declared_by;
        self.terminate_with(&text, by, what, culprit);
    }

    /// A mutation broke a promise: the node that sent it fails with the promise's error,
    /// everything else stops, and the run ends `terminated`.
    pub(super) fn terminate_with(&mut self, promise: &str, declared_by: NodeId, what: &str, culprit: Option<NodeId>) {
        if self.terminated.is_some() {
            return;
        }
        let error = Error::new(
            ErrorKind::Promise,
            format!(
                "broken promise `{promise}` (declared by node {declared_by}, `{}`): {what} is not allowed",
                self.nodes[declared_by.index()].task.name
            ),
        );
        self.terminated = Some(error.clone());
        if let Some(culprit) = culprit {
            self.end_node(culprit, NodeState::Failed, None, Some(error.clone()));
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].state.is_terminal() {
                self.end_node(NodeId::at(i), NodeState::Cancelled, None, Some(error.clone()));
            }
        }
    }
}
