//! The ready queue: nodes whose upstream succeeded wait here, highest priority first, for a
//! free slot.
//!
//! A node of a task on a named queue (`#[task(queue = "gpu")]`) is not started by the run's
//! executor: its attempt goes into the store's durable queue, with its input, for a worker of
//! that queue (`<bin> worker --queue gpu`) to claim. It is `running` meanwhile, holds a slot,
//! and its timeout applies; the driver feeds the worker's result back as the attempt's end.

use std::cmp::Reverse;

use super::timers::Timer;
use super::{Action, Core};
use crate::executor::Launch;
use crate::model::{NodeId, NodeState, now_ms};
use crate::registry::DEFAULT_QUEUE;
use crate::store::Write;

impl Core {
    /// A pending node whose deps all succeeded becomes ready (and is queued).
    pub(super) fn promote(&mut self, id: NodeId) {
        let n = &self.nodes[id as usize];
        if n.state == NodeState::Pending && n.unmet == 0 && n.live.is_none() {
            let prio = n.task.policy.priority;
            self.set_state(id, NodeState::Ready);
            self.ready.push((prio, Reverse(id)));
        } else if n.state == NodeState::Ready {
            let prio = n.task.policy.priority;
            self.ready.push((prio, Reverse(id)));
        }
    }

    pub(super) fn start_queued(&mut self) {
        while self.cancel_reason.is_none()
            && self.terminated.is_none()
            && !self.paused
            && self.live_slots < self.config.parallelism
        {
            let Some((_, Reverse(id))) = self.ready.pop() else { break };
            if self.nodes[id as usize].state != NodeState::Ready {
                continue;
            }
            self.start(id);
        }
    }

    fn start(&mut self, id: NodeId) {
        let input = self.input_of(id);
        let at = now_ms();
        let n = &mut self.nodes[id as usize];
        n.attempts += 1;
        n.state = NodeState::Running;
        n.waiting_on = 0;
        self.clock += 1;
        n.started_at = self.clock;
        let attempt = n.attempts;
        let task = n.task;
        n.live = Some(attempt);
        self.live_slots += 1;
        let queue = task.policy.queue;
        let remote = queue != DEFAULT_QUEUE;
        let executor = if remote { format!("queue:{queue}").into() } else { self.config.executor.into() };
        self.fx.writes.push(Write::AttemptStarted { run: self.run, node: id, attempt, executor, at });
        if let Some(timeout) = task.policy.timeout {
            self.set_timer(timeout, Timer::Timeout { node: id, attempt });
        }
        self.note(id, task.name, NodeState::Running, attempt, None);
        if remote {
            let priority = task.policy.priority;
            let (queue, task) = (queue.to_string(), task.name.to_string());
            self.fx.writes.push(Write::Enqueue { run: self.run, node: id, attempt, queue, priority, task, input });
        } else {
            let at = self.attempt_id(id, attempt);
            self.fx.actions.push(Action::Start(Launch { at, task, input }));
        }
    }
}
