//! Time: retries with backoff, attempt timeouts, signal deadlines and parking, all as timers
//! on the `now` the driver gives; and what an attempt's end means for its node.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Core;
use crate::error::{Error, ErrorKind};
use crate::journal::Write;
use crate::model::{NodeId, NodeState};

/// How many times in a row an attempt may be lost with its worker before its node fails.
const MAX_LOSSES: u32 = 5;

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Retry { node: NodeId, attempt: u32 },
    Timeout { node: NodeId, attempt: u32 },
    Signal { node: NodeId, seq: u32 },
    Park { node: NodeId, attempt: u32 },
}

impl Core {
    /// Sets a timer `after` from now; one too far away to represent never fires.
    pub(super) fn set_timer(&mut self, after: Duration, timer: Timer) {
        if let Some(at) = self.now.checked_add(after) {
            self.timers.push(Reverse((at, timer)));
        }
    }

    /// When the next timer fires.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Fires the timers that are due.
    pub fn fire_timers(&mut self, now: super::Time) {
        self.at(now);
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now.instant {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else { break };
            match timer {
                Timer::Retry { node, attempt } => {
                    let n = &self.nodes[node.index()];
                    if n.state == NodeState::Pending && n.attempts == attempt && self.cancel_reason.is_none() {
                        self.promote(node);
                    }
                }
                Timer::Signal { node, seq } => {
                    let parked = self.nodes[node.index()].parked.as_ref().is_some_and(|(s, _)| *s == seq);
                    // A deadline comes with a default; a `null` one may arrive as none.
                    if parked && let Some((_, default)) = self.deadlines.get(&(node, seq)).cloned() {
                        self.deliver(node, seq, default.unwrap_or(Value::Null));
                    }
                }
                Timer::Park { node, attempt } => {
                    let at = self.attempt_id(node, attempt);
                    let n = &self.nodes[node.index()];
                    if self.is_current(at) && n.state == NodeState::Waiting && n.waiting_on > 0 {
                        self.park_on_children(node, attempt);
                    }
                }
                Timer::Timeout { node, attempt } => {
                    let at = self.attempt_id(node, attempt);
                    if self.is_current(at) {
                        let timeout = self.nodes[node.index()].policy.timeout.unwrap_or_default();
                        self.fail_attempt(at, crate::attempt::timeout_error(timeout));
                    }
                }
            }
        }
    }

    /// An attempt ended with a result: the node succeeds, retries after its backoff, or fails.
    pub(super) fn attempt_finished(&mut self, id: NodeId, attempt: u32, result: Result<Value, Error>) {
        let at = self.wall;
        let n = &mut self.nodes[id.index()];
        n.live = None;
        if n.state == NodeState::Running {
            self.held.free(super::queue::ask_of(&n.policy, self.config.placement));
        }
        n.waiting_on = 0;
        // Its awaits will never be answered now.
        let task = n.task;
        let policy = n.policy;
        let result = match result {
            Ok(output) if crate::model::too_deep(&output) => Err(Error::new(
                ErrorKind::Input,
                crate::model::depth_message(format!("the output of task `{}`", task.name)),
            )),
            other => other,
        };
        match result {
            Ok(output) => {
                self.fx.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state: NodeState::Succeeded,
                    error: None,
                    at,
                });
                // A re-running body that returned made all its calls: the old children it did
                // not call again are superseded.
                if self.nodes[id.index()].rerun {
                    let calls = self.nodes[id.index()].calls;
                    self.supersede_from(id, calls);
                    self.nodes[id.index()].rerun = false;
                }
                // A body that returned can spawn no more: its promised shapes must be complete.
                if let Some((text, by, how)) = self.unfinished_shape(id) {
                    let what = format!("node {id} (`{}`) finishing {how}", task.name);
                    self.end_node(id, NodeState::Succeeded, Some(output), None);
                    return self.terminate_with(&text, by, &what, None);
                }
                self.end_node(id, NodeState::Succeeded, Some(output), None);
            }
            Err(error) => {
                let cancelled = error.kind() == ErrorKind::Cancelled;
                let state = if cancelled { NodeState::Cancelled } else { NodeState::Failed };
                self.fx.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state,
                    error: Some(error.clone()),
                    at,
                });
                // A lost attempt did not fail: it runs again at once, as many times as it is
                // lost in a row up to a bound (a body that takes its worker down each time
                // must not loop for ever).
                let lost = error.kind() == ErrorKind::Lost;
                let n = &mut self.nodes[id.index()];
                if lost {
                    n.losses += 1;
                } else {
                    n.failures += 1;
                    n.losses = 0;
                }
                if !cancelled {
                    self.attempt_failed(id, attempt);
                }
                let (failures, losses) = (self.nodes[id.index()].failures, self.nodes[id.index()].losses);
                let retry = error.kind().is_retryable()
                    && (if lost { losses <= MAX_LOSSES } else { failures <= policy.retries })
                    && self.cancel_reason.is_none()
                    && self.terminated.is_none();
                if retry {
                    let delay = if lost { Duration::ZERO } else { policy.backoff.delay(attempt) };
                    self.set_state(id, NodeState::Pending);
                    self.set_timer(delay, Timer::Retry { node: id, attempt });
                    self.note(id, task.name, NodeState::Pending, attempt, Some(&error));
                } else {
                    self.end_node(id, state, None, Some(error));
                }
            }
        }
    }
}
