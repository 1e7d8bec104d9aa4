//! Graph surgery for `recover`, `rerun --from` and `run-one`: which nodes run again, and
//! resetting them.

use super::{Action, Core};
use crate::attempt::AttemptId;
use crate::error::{Error, ErrorKind};
use crate::journal::Write;
use crate::model::{NodeId, NodeState};

impl Core {
    /// Resets these nodes to pending (their outputs forgotten), to be run again.
    pub fn reset(&mut self, ids: &[NodeId]) {
        for &id in ids {
            let n = &mut self.nodes[id.index()];
            if n.state.is_terminal() {
                self.active += 1;
            }
            // An attempt still running was given the old inputs: it no longer counts.
            if let Some(attempt) = n.live.take() {
                if n.state == NodeState::Running {
                    self.held.free(super::queue::ask_of(&n.policy, self.config.placement));
                }
                n.waiting_on = 0;
                self.fx.actions.push(Action::Stop(AttemptId { run: self.run, node: id, attempt }));
                self.fx.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state: NodeState::Cancelled,
                    error: Some(Error::new(ErrorKind::Cancelled, "reset to run again with new inputs")),
                    at: self.wall,
                });
            }
            n.state = NodeState::Pending;
            n.output = None;
            n.error = None;
            n.parked = None;
            n.parked_on_children = None;
            n.failures = 0;
            self.delivered.remove(&id);
            self.fx.writes.push(Write::NodeReset { run: self.run, node: id });
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].unmet = self.unmet_of(NodeId::at(i));
        }
        for &id in ids {
            self.promote(id);
        }
    }

    /// The node, everything downstream of it (by edges) and everything those spawned; plus the
    /// ancestors of all of them, which replay to pick up the new outputs.
    pub fn downstream_of(&self, from: NodeId) -> Vec<NodeId> {
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

    /// Marks nodes as re-running (`rerun --from`, `run-one`): their bodies run again and may
    /// decide differently. A child is bound again only where its parent's body makes the same
    /// call (same task, same input, same place); from the first call that differs, the old
    /// children are superseded and the new calls spawn new nodes. Those of `ids` whose parent
    /// is among them wait, without starting, until their parent's body binds them.
    pub fn mark_rerun(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.nodes[id.index()].rerun = true;
        }
        for &id in ids {
            if let Some(p) = self.nodes[id.index()].parent
                && self.nodes[p.index()].rerun
                && ids.contains(&p)
            {
                self.nodes[id.index()].unbound = true;
            }
        }
    }

    /// Prepares `rerun --from`: `from`, everything downstream of it and their ancestors re-run
    /// (what did not succeed runs again too). Refused for a superseded node.
    pub fn rerun_from(&mut self, from: NodeId) -> Result<(), Error> {
        self.check_current(from)?;
        let mut reset = self.downstream_of(from);
        self.mark_rerun(&reset);
        reset.extend(self.unfinished());
        reset.sort_unstable();
        reset.dedup();
        // What did not succeed, below a re-running parent, waits to be called again too.
        for &id in &reset {
            if self.nodes[id.index()].parent.is_some_and(|p| self.nodes[p.index()].rerun) {
                self.nodes[id.index()].unbound = true;
            }
        }
        self.reset(&reset);
        Ok(())
    }

    /// Refuses a superseded node: it is no longer part of the run.
    pub fn check_current(&self, id: NodeId) -> Result<(), Error> {
        let n = &self.nodes[id.index()];
        if n.state == NodeState::Superseded {
            return Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "node {id} (`{}`) of run {} is superseded: a rerun of its parent replaced it; see `show {} --all`",
                    n.task.name, self.run, self.run
                ),
            ));
        }
        Ok(())
    }

    /// The body of `node`'s running attempt made call `seq`.
    pub(super) fn called(&mut self, node: NodeId, seq: u32) {
        let n = &mut self.nodes[node.index()];
        n.calls = n.calls.max(seq.saturating_add(1));
    }

    /// A re-running body made a different call at `from_seq` than before (or returned before
    /// it): the children it made there and after, with their subtrees, are superseded — kept
    /// in the history, no longer part of the run — and what its journal, waits and promises
    /// held from that call on is forgotten. The promises in force are then checked against the
    /// graph that remains.
    pub(super) fn supersede_from(&mut self, parent: NodeId, from_seq: u32) {
        let mut stack: Vec<NodeId> = self.nodes[parent.index()]
            .children
            .iter()
            .copied()
            .filter(|c| self.nodes[c.index()].seq.is_some_and(|s| s >= from_seq))
            .collect();
        let mut gone = Vec::new();
        while let Some(id) = stack.pop() {
            if self.nodes[id.index()].state == NodeState::Superseded {
                continue;
            }
            stack.extend(self.nodes[id.index()].children.iter().copied());
            self.retire(id);
            gone.push(id);
        }
        // The nodes that remain forget the superseded ones: keys, children, edges.
        let mut touched = Vec::new();
        for &id in &gone {
            let n = &self.nodes[id.index()];
            if let (Some(p), Some(s)) = (n.parent, n.seq)
                && self.keys.get(&(p, s)) == Some(&id)
            {
                self.keys.remove(&(p, s));
            }
            let (p, deps, dependents) = (n.parent, n.deps.clone(), n.dependents.clone());
            if let Some(p) = p {
                self.nodes[p.index()].children.retain(|c| *c != id);
            }
            for d in deps {
                self.nodes[d.index()].dependents.retain(|x| *x != id);
            }
            for d in dependents {
                self.nodes[d.index()].deps.retain(|x| *x != id);
                touched.push(d);
            }
        }
        for d in touched {
            if self.nodes[d.index()].state != NodeState::Superseded {
                self.nodes[d.index()].unmet = self.unmet_of(d);
                self.promote(d);
            }
        }
        let (journal, deadlines) = (self.journal.len(), self.deadlines.len());
        self.journal.retain(|(n, s), _| *n != parent || *s < from_seq);
        self.deadlines.retain(|(n, s), _| *n != parent || *s < from_seq);
        if !gone.is_empty() || journal != self.journal.len() || deadlines != self.deadlines.len() {
            self.fx.writes.push(Write::ForgetCalls { run: self.run, node: parent, from_seq });
        }
        self.drop_promises(|p| {
            gone.contains(&p.declared_by)
                || (p.declared_by == parent && p.seq >= from_seq && !super::promises::registered(p))
        });
    }

    /// Marks one node superseded, stopping its attempt if one runs.
    fn retire(&mut self, id: NodeId) {
        let n = &mut self.nodes[id.index()];
        if !n.state.is_terminal() {
            self.active -= 1;
        }
        if let Some(attempt) = n.live.take() {
            if n.state == NodeState::Running {
                self.held.free(super::queue::ask_of(&n.policy, self.config.placement));
            }
            self.fx.actions.push(Action::Stop(AttemptId { run: self.run, node: id, attempt }));
            self.fx.writes.push(Write::AttemptFinished {
                run: self.run,
                node: id,
                attempt,
                state: NodeState::Cancelled,
                error: Some(Error::new(ErrorKind::Cancelled, "superseded: its parent ran again and called otherwise")),
                at: self.wall,
            });
        }
        n.state = NodeState::Superseded;
        n.awaiters.clear();
        n.waiting_on = 0;
        n.parked = None;
        n.parked_on_children = None;
        n.unbound = false;
        n.rerun = false;
        self.fx.writes.push(Write::NodeState { run: self.run, node: id, state: NodeState::Superseded });
    }

    /// The upstream nodes of `id` that have not succeeded.
    pub fn unmet_upstream(&self, id: NodeId) -> Vec<(NodeId, &'static str, NodeState)> {
        self.nodes[id.index()]
            .deps
            .iter()
            .map(|d| &self.nodes[d.index()])
            .filter(|d| d.state != NodeState::Succeeded)
            .map(|d| (d.id, d.task.name, d.state))
            .collect()
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
