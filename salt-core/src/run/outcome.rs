//! Who owns a failure, and how the run ends.
//!
//! A node that did not succeed fails the run unless its failure belongs to someone: when its
//! parent's body awaited it and received the error, the parent owns the failure. The parent
//! may propagate it (with `?`, and then it fails itself) or handle it and return normally; a
//! handled failure leaves the node `failed` but does not fail the run, and `recover` leaves it
//! alone. The nodes below a failed node (cancelled when it ended) go with it.
//!
//! A delivery is recorded with the parent's attempt that received it
//! ([`Write::Delivered`]). It stops counting when that attempt itself fails (a retry or a
//! `recover` runs the child again, as the parent's new attempt asks for it) and when the child
//! is reset; on load, a delivery to an attempt that failed is dropped the same way.

use std::collections::HashMap;

use super::Core;
use crate::error::{Error, ErrorKind};
use crate::journal::Write;
use crate::model::{AttemptRecord, NodeId, NodeState, RunState};

/// The deliveries of a loaded run that still count: those to a parent attempt that did not fail.
pub(super) fn loaded_deliveries(
    delivered: &[(NodeId, u32)],
    parents: &[Option<NodeId>],
    attempts: &[AttemptRecord],
) -> HashMap<NodeId, u32> {
    delivered
        .iter()
        .filter(|(node, attempt)| {
            let Some(Some(parent)) = parents.get(node.index()) else { return false };
            !attempts.iter().any(|a| a.node == *parent && a.attempt == *attempt && a.state == NodeState::Failed)
        })
        .copied()
        .collect()
}

/// Whether a node has nothing left to give the run: it succeeded, or a rerun replaced it.
fn settled(state: NodeState) -> bool {
    matches!(state, NodeState::Succeeded | NodeState::Superseded)
}

impl Core {
    /// The parent's attempt `attempt` received the failure of `child`. A cancelled child is
    /// not a failure to own: it was stopped from outside (the run was cancelled or
    /// terminated), and `recover` runs it again. A killed one is: the kill is final.
    pub(super) fn delivered(&mut self, child: NodeId, attempt: u32) {
        let c = &self.nodes[child.index()];
        if !matches!(c.state, NodeState::Failed | NodeState::Skipped) && !c.killed() {
            return;
        }
        if self.delivered.insert(child, attempt) != Some(attempt) {
            self.fx.writes.push(Write::Delivered { run: self.run, node: child, attempt });
        }
    }

    /// Attempt `attempt` of `parent` failed: the failures it received are no longer handled.
    pub(super) fn attempt_failed(&mut self, parent: NodeId, attempt: u32) {
        for c in &self.nodes[parent.index()].children {
            if self.delivered.get(c) == Some(&attempt) {
                self.delivered.remove(c);
            }
        }
    }

    /// Whether a failed child bound again by a replay of its parent keeps its failure: its
    /// parent's body received it in an attempt that did not fail (it returned, parked or was
    /// interrupted), so the replay gets the same error instead of running the child again.
    pub(super) fn keeps_failure(&self, child: NodeId) -> bool {
        self.delivered.contains_key(&child)
    }

    /// Whether the failure of `id` (a node that did not succeed) belongs to someone: its
    /// parent's body received it, or it went down with an ancestor whose failure belongs to
    /// someone.
    pub(super) fn owned(&self, id: NodeId) -> bool {
        let mut id = id;
        loop {
            if self.delivered.contains_key(&id) {
                return true;
            }
            match self.nodes[id.index()].parent {
                Some(p) if self.nodes[p.index()].state != NodeState::Succeeded => id = p,
                _ => return false,
            }
        }
    }

    /// Every node that did not succeed and whose failure nobody owns: what `recover` runs
    /// again. A failure a parent received is the parent's result and is not run again.
    pub fn unfinished(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|n| !settled(n.state) && !self.owned(n.id)).map(|n| n.id).collect()
    }

    /// How a run that was neither terminated nor cancelled ended: it succeeded when its root
    /// did and every failure in it belongs to a node that received it; else it failed, with
    /// the root's error or one naming the first failure nobody received.
    pub(super) fn settled(&self) -> (RunState, Option<Error>) {
        let root = &self.nodes[0];
        if root.state == NodeState::Failed {
            return (RunState::Failed, root.error.clone());
        }
        let unowned = |n: &&super::graph::Node| !settled(n.state) && !self.owned(n.id);
        let first = self
            .nodes
            .iter()
            .filter(unowned)
            .find(|n| n.state == NodeState::Failed)
            .or_else(|| self.nodes.iter().find(unowned));
        match first {
            None if root.state == NodeState::Succeeded => (RunState::Succeeded, None),
            None => (RunState::Failed, root.error.clone()),
            Some(n) => {
                let message = n.error.as_ref().map(|e| e.message()).unwrap_or("");
                let error = Error::new(
                    ErrorKind::Child,
                    format!("node {} (`{}`) {}: {message}", n.id, n.task.name, n.state.as_str()),
                );
                (RunState::Failed, Some(error))
            }
        }
    }
}
