//! Waiting without a process: signals, sleeps and long awaits park a node (its attempt is
//! stopped, its slot freed) and the node is replayed when what it waits for arrives.
//!
//! Signals sent to a run form a durable mailbox: each is delivered once, in the order sent,
//! to the next wait for its name.

use std::time::Duration;

use serde_json::Value;

use super::Core;
use super::timers::Timer;
use crate::attempt::{Answer, AttemptId};
use crate::call::{JournalKind, SignalWait};
use crate::journal::Write;
use crate::model::{NodeId, NodeState, WaitRecord};

impl Core {
    pub(super) fn wait_signal(&mut self, at: AttemptId, call: u64, wait: SignalWait) {
        let (node, seq) = (at.node, wait.seq);
        let name = format!("`wait_for(\"{}\")`", wait.name);
        let value = match self.replayed(at, seq, JournalKind::Signal, name) {
            Err(()) => return,
            Ok(Some(recorded)) => recorded,
            Ok(None) => match self.signals.iter().position(|(_, name, _)| *name == wait.name) {
                // Sent before the node asked for it: the oldest one.
                Some(pos) => {
                    let (id, _, value) = self.signals.remove(pos);
                    self.fx.writes.push(Write::SignalConsumed { id });
                    self.record(node, seq, JournalKind::Signal, value.clone());
                    value
                }
                None => return self.park(at, wait),
            },
        };
        self.fx.writes.push(Write::WaitEnded { run: self.run, node, seq });
        self.answer(at, call, Answer::Value(value));
    }

    /// Stops a node's attempt while it waits for a signal: it holds no process and no slot,
    /// and is replayed up to the wait when the signal arrives.
    fn park(&mut self, at: AttemptId, wait: SignalWait) {
        let node = at.node;
        self.stop_waiting_attempt(node, at.attempt);
        self.nodes[node.index()].parked = Some((wait.seq, wait.name.clone()));
        let task = self.nodes[node.index()].task.name;
        let (deadline, default) = match self.deadlines.get(&(node, wait.seq)) {
            Some((d, v)) => (Some(*d), v.clone()),
            None => {
                let deadline =
                    wait.timeout_ms.and_then(|t| i64::try_from(t).ok()).and_then(|t| self.wall.checked_add(t));
                (deadline, wait.default.clone())
            }
        };
        if let Some(deadline) = deadline {
            self.deadlines.insert((node, wait.seq), (deadline, default.clone()));
            let left = Duration::from_millis(u64::try_from(deadline.saturating_sub(self.wall)).unwrap_or(0));
            self.set_timer(left, Timer::Signal { node, seq: wait.seq });
        }
        let record = WaitRecord { node, seq: wait.seq, name: wait.name, schema: wait.schema, deadline, default };
        self.fx.writes.push(Write::WaitStarted { run: self.run, record });
        self.note(node, task, NodeState::Waiting, at.attempt, None);
        // A signal may be waiting already (sent while this node was being replayed).
        self.deliver_signals();
    }

    /// Stops the process of a node that has awaited children for a while; the first of them
    /// to end replays it. Waiting on a long child holds no process.
    pub(super) fn park_on_children(&mut self, node: NodeId, attempt: u32) {
        self.stop_waiting_attempt(node, attempt);
        self.nodes[node.index()].parked_on_children = Some(attempt);
    }

    /// Ends a node's attempt because it waits (parked): its process or body is stopped, its
    /// slot freed, and the attempt recorded as `waiting`.
    fn stop_waiting_attempt(&mut self, node: NodeId, attempt: u32) {
        let n = &mut self.nodes[node.index()];
        if n.live.take().is_some() {
            self.fx.actions.push(super::Action::Stop(AttemptId { run: self.run, node, attempt }));
        }
        if n.state == NodeState::Running {
            self.held.free(super::queue::ask_of(&n.policy, self.config.placement));
        }
        n.waiting_on = 0;
        self.set_state(node, NodeState::Waiting);
        self.fx.writes.push(Write::AttemptFinished {
            run: self.run,
            node,
            attempt,
            state: NodeState::Waiting,
            error: None,
            at: self.wall,
        });
    }

    /// A parked node may go on: it becomes pending and is replayed when a slot is free.
    pub(super) fn unpark(&mut self, node: NodeId) {
        let n = &mut self.nodes[node.index()];
        if n.state.is_terminal() {
            return;
        }
        n.parked = None;
        n.parked_on_children = None;
        self.set_state(node, NodeState::Pending);
        self.promote(node);
    }

    /// Gives a parked node its signal's value and runs it again from the start (a replay).
    pub(super) fn deliver(&mut self, node: NodeId, seq: u32, value: Value) {
        self.record(node, seq, JournalKind::Signal, value);
        self.fx.writes.push(Write::WaitEnded { run: self.run, node, seq });
        self.unpark(node);
    }

    /// Delivers pending signals to the nodes parked on their names, oldest signal first.
    pub(super) fn deliver_signals(&mut self) {
        let mut i = 0;
        while i < self.signals.len() {
            let name = &self.signals[i].1;
            let waiting = self.nodes.iter().find(|n| n.parked.as_ref().is_some_and(|(_, w)| w == name)).map(|n| n.id);
            match waiting {
                Some(node) => {
                    let (id, _, value) = self.signals.remove(i);
                    let seq = self.nodes[node.index()].parked.as_ref().map(|(s, _)| *s).unwrap_or_default();
                    self.fx.writes.push(Write::SignalConsumed { id });
                    self.deliver(node, seq, value);
                }
                None => i += 1,
            }
        }
    }
}
