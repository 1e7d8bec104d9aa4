//! Graph surgery for `recover`, `rerun --from` and `run-one`: which nodes run again, and
//! resetting them.

use super::{Action, Core};
use crate::error::{Error, ErrorKind};
use crate::executor::AttemptId;
use crate::model::{NodeId, NodeState, StoredArg, now_ms};
use crate::store::Write;

impl Core {
    /// Resets these nodes to pending (their outputs forgotten), to be run again.
    pub(crate) fn reset(&mut self, ids: &[NodeId]) {
        for &id in ids {
            let n = &mut self.nodes[id.index()];
            if n.state.is_terminal() {
                self.active += 1;
            }
            // An attempt still running was given the old inputs: it no longer counts.
            if let Some(attempt) = n.live.take() {
                if n.state == NodeState::Running {
                    self.live_slots -= 1;
                }
                n.waiting_on = 0;
                self.fx.actions.push(Action::Stop(AttemptId { run: self.run, node: id, attempt }));
                self.fx.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state: NodeState::Cancelled,
                    error: Some(Error::new(ErrorKind::Cancelled, "reset to run again with new inputs")),
                    at: now_ms(),
                });
            }
            n.state = NodeState::Pending;
            n.output = None;
            n.error = None;
            n.parked = None;
            n.parked_on_children = None;
            n.failures = 0;
            self.fx.writes.push(Write::NodeReset { run: self.run, node: id });
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].unmet = self.unmet_of(NodeId::at(i));
        }
        for &id in ids {
            self.promote(id);
        }
    }

    /// Every node that is not succeeded: what `recover` runs again.
    pub(crate) fn unfinished(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|n| n.state != NodeState::Succeeded).map(|n| n.id).collect()
    }

    /// The node, everything downstream of it (by edges) and everything those spawned; plus the
    /// ancestors of all of them, which replay to pick up the new outputs.
    pub(crate) fn downstream_of(&self, from: NodeId) -> Vec<NodeId> {
        let mut seen = self.below(from);
        let mut ancestors = Vec::new();
        for (id, s) in seen.iter().enumerate() {
            if *s {
                let mut p = self.nodes[id].parent;
                while let Some(pid) = p {
                    ancestors.push(pid);
                    p = self.nodes[pid.index()].parent;
                }
            }
        }
        for a in ancestors {
            seen[a.index()] = true;
        }
        seen.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| NodeId::at(i)).collect()
    }

    /// `from`, what runs after it (by edges) and what those spawned, transitively.
    fn below(&self, from: NodeId) -> Vec<bool> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![from];
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id.index()], true) {
                continue;
            }
            let n = &self.nodes[id.index()];
            stack.extend(n.dependents.iter().copied());
            stack.extend(n.children.iter().copied());
        }
        seen
    }

    /// Marks nodes as re-running (`rerun --from`): when their bodies replay, a child whose
    /// arguments changed (its upstream ran again) takes the new arguments and runs again,
    /// instead of failing the replay as non-deterministic.
    /// A node that runs after values its parent observed is held until the parent's replay
    /// binds it again: its arguments may change.
    pub(crate) fn mark_rerun(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.nodes[id.index()].rerun = true;
        }
        for &id in ids {
            let n = &self.nodes[id.index()];
            if !n.after.is_empty() && n.parent.is_some_and(|p| ids.contains(&p)) {
                self.nodes[id.index()].held = true;
            }
        }
    }

    /// The upstream nodes of `id` that have not succeeded.
    pub(crate) fn unmet_upstream(&self, id: NodeId) -> Vec<(NodeId, &'static str, NodeState)> {
        self.nodes[id.index()]
            .deps
            .iter()
            .map(|d| &self.nodes[d.index()])
            .filter(|d| d.state != NodeState::Succeeded)
            .map(|d| (d.id, d.task.name, d.state))
            .collect()
    }

    /// A re-running parent called child `id` with new arguments: take them, and run the child
    /// and everything below it again.
    pub(super) fn replace_args(&mut self, id: NodeId, args: Vec<(String, StoredArg)>, input_hash: String) {
        self.fx.writes.push(Write::NodeArgs {
            run: self.run,
            node: id,
            args: args.clone(),
            input_hash: input_hash.clone(),
        });
        let n = &mut self.nodes[id.index()];
        n.args = args;
        n.input_hash = input_hash;
        let below: Vec<NodeId> =
            self.below(id).iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| NodeId::at(i)).collect();
        self.mark_rerun(&below);
        self.reset(&below);
    }

    /// A replayed spawn bound to a child that did not succeed: run it (and what it blocked)
    /// again.
    pub(super) fn revive(&mut self, id: NodeId) {
        let mut stack = vec![id];
        let mut revived = Vec::new();
        while let Some(i) = stack.pop() {
            let n = &self.nodes[i.index()];
            if !matches!(n.state, NodeState::Failed | NodeState::Cancelled | NodeState::Skipped) {
                continue;
            }
            stack.extend(n.dependents.iter().copied().filter(|d| self.nodes[d.index()].state == NodeState::Skipped));
            revived.push(i);
        }
        self.reset(&revived);
    }
}
