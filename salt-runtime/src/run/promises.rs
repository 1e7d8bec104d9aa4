//! Promise enforcement: every mutation is checked against every promise in force before it is
//! applied; one that breaks a promise terminates the run, naming the promise, the mutation and
//! the node that sent it.

use super::Core;
use crate::context::PromiseScope;
use crate::error::{Error, ErrorKind};
use crate::executor::AttemptId;
use crate::model::{NodeId, NodeState, PromiseRecord};
use crate::promise::{Promise, Shape, Target};
use crate::store::Write;

/// A promise in force, with the state of its shape.
pub(super) struct Active {
    pub(super) record: PromiseRecord,
    pub(super) promise: Promise,
    /// For a shape: what may still follow the scope node's children so far.
    pub(super) shape: Option<Shape>,
}

impl Core {
    /// The shape a scope's children so far leave of a shape promise.
    fn shape_after(&self, promise: &Promise, scope: NodeId) -> Option<Option<Shape>> {
        match promise {
            Promise::Shape(shape) => {
                let children = self.nodes[scope.index()].children.iter().map(|c| self.nodes[c.index()].task.name);
                Some(shape.after(children))
            }
            _ => None,
        }
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
        let record =
            PromiseRecord { id: self.promises.len() as u32, scope, declared_by: by, seq, text: promise.to_string() };
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
        let mut n = Some(node);
        while let Some(id) = n {
            if id == scope {
                return true;
            }
            n = self.nodes[id.index()].parent;
        }
        false
    }

    fn matches(&self, target: &Target, node: NodeId) -> bool {
        match target {
            Target::Node(id) => *id == node.get(),
            Target::Task(name) => self.nodes.get(node.index()).is_some_and(|n| n.task.name == name),
        }
    }

    /// A shape promise on `scope` whose shape is not complete: (its text, who declared it,
    /// what it still needs).
    pub(super) fn unfinished_shape(&self, scope: NodeId) -> Option<(String, NodeId, String)> {
        self.promises
            .iter()
            .find(|p| p.record.scope == scope && p.shape.as_ref().is_some_and(|s| !s.is_complete()))
            .map(|p| {
                (p.record.text.clone(), p.record.declared_by, p.shape.as_ref().map(|s| s.label()).unwrap_or_default())
            })
    }

    /// Checks a spawn against every promise in force; on success, the new shape states.
    pub(super) fn check_spawn(
        &self,
        parent: NodeId,
        task: &str,
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
                Promise::NoEdgesInto(target) => {
                    deps.is_empty() || !matches!(target, Target::Task(name) if name == task)
                }
                Promise::Shape(_) => {
                    if parent != scope {
                        true
                    } else {
                        match p.shape.as_ref().and_then(|s| s.step(task)) {
                            Some(next) => {
                                shapes.push((i, next));
                                true
                            }
                            None => false,
                        }
                    }
                }
            };
            if !ok {
                return Err(i);
            }
        }
        Ok(shapes)
    }

    /// Checks a control edge against every promise in force.
    pub(super) fn check_edge(&self, from: NodeId, to: NodeId) -> Result<(), usize> {
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
                _ => true,
            };
            if !ok {
                return Err(i);
            }
        }
        Ok(())
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
