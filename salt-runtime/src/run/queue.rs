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
        let n = &self.nodes[id.index()];
        if n.state == NodeState::Pending && n.unmet == 0 && n.live.is_none() && !n.unbound {
            let prio = n.policy.priority;
            self.set_state(id, NodeState::Ready);
            self.ready.push((prio, Reverse(id)));
        } else if n.state == NodeState::Ready {
            let prio = n.policy.priority;
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
            if self.nodes[id.index()].state != NodeState::Ready {
                continue;
            }
            self.start(id);
        }
    }

    fn start(&mut self, id: NodeId) {
        let input = self.input_of(id);
        let at = now_ms();
        let n = &mut self.nodes[id.index()];
        n.attempts += 1;
        n.state = NodeState::Running;
        n.waiting_on = 0;
        n.calls = 0;
        self.clock += 1;
        n.started_at = self.clock;
        let attempt = n.attempts;
        let task = n.task;
        let policy = n.policy;
        n.live = Some(attempt);
        self.live_slots += 1;
        let queue = policy.queue;
        // The remote executor dispatches every queue to the workers that serve it itself.
        let remote = queue != DEFAULT_QUEUE && self.config.executor != crate::remote::EXECUTOR;
        let executor = if remote { format!("queue:{queue}").into() } else { self.config.executor.into() };
        self.fx.writes.push(Write::AttemptStarted { run: self.run, node: id, attempt, executor, at });
        if let Some(timeout) = policy.timeout {
            self.set_timer(timeout, Timer::Timeout { node: id, attempt });
        }
        self.note(id, task.name, NodeState::Running, attempt, None);
        if remote {
            let priority = policy.priority;
            let (queue, task) = (queue.to_string(), task.name.to_string());
            self.fx.writes.push(Write::Enqueue { run: self.run, node: id, attempt, queue, priority, task, input });
        } else {
            let at = self.attempt_id(id, attempt);
            self.fx.actions.push(Action::Start(Launch { at, task, input }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::super::{Action, Config, Core};
    use crate::context::Context;
    use crate::error::{Error, ErrorKind};
    use crate::executor::{AttemptId, Event};
    use crate::model::{NodeId, NodeRecord, NodeState, RunId, RunRecord, RunSnapshot, RunState, StoredArg};
    use crate::registry::{Kind, Policy, Registry, TaskDescriptor};
    use crate::store::Write;

    fn body(_: Value, _: Context) -> crate::registry::BodyFuture {
        Box::pin(async { Ok(Value::Null) })
    }

    /// A workflow whose root node is on the `gpu` queue, with a timeout and one retry.
    static ON_GPU: TaskDescriptor = TaskDescriptor {
        name: "on_gpu",
        kind: Kind::Workflow,
        module: "tests",
        doc: "",
        input_schema: || json!({}),
        output_schema: || json!({}),
        run: body,
        check_input: |_| Ok(()),
        policy: Policy {
            queue: "gpu",
            priority: 3,
            timeout: Some(Duration::from_secs(5)),
            retries: 1,
            ..Policy::DEFAULT
        },
        label: None,
        color: None,
        default_input: None,
        schedule: None,
        promises: &[],
        may_spawn: true,
    };

    fn core(now: Instant) -> Core {
        let registry: &'static Registry = Box::leak(Box::new(Registry::build([&ON_GPU].into_iter()).unwrap()));
        let snapshot = RunSnapshot {
            run: RunRecord {
                id: RunId::new(1),
                workflow: "on_gpu".into(),
                state: RunState::Queued,
                input: json!({"x": 2}),
                output: None,
                error: None,
                created_at: 0,
                started_at: None,
                finished_at: None,
                executor: "inline".into(),
                parallelism: 4,
                owner: None,
            },
            nodes: vec![NodeRecord {
                id: NodeId::ROOT,
                parent: None,
                seq: None,
                task: "on_gpu".into(),
                state: NodeState::Pending,
                args: vec![("x".into(), StoredArg::Value(json!(2)))],
                ..Default::default()
            }],
            edges: Vec::new(),
            attempts: Vec::new(),
            journal: Vec::new(),
            promises: Vec::new(),
            waits: Vec::new(),
            delivered: Vec::new(),
        };
        let config = Config { executor: "inline", parallelism: 4, park_after: None };
        let mut core = Core::new(snapshot, registry, config, now).unwrap();
        core.begin(now);
        core.start_ready(now);
        core
    }

    fn enqueued(writes: &[Write]) -> Vec<(u32, String)> {
        writes
            .iter()
            .filter_map(|w| match w {
                Write::Enqueue { attempt, queue, .. } => Some((*attempt, queue.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_node_of_a_named_queue_is_enqueued_with_its_input_not_started() {
        let now = Instant::now();
        let mut core = core(now);
        let fx = core.take_effects();
        assert!(!fx.actions.iter().any(|a| matches!(a, Action::Start(_))), "{:?}", fx.actions);
        let started = fx.writes.iter().find_map(|w| match w {
            Write::AttemptStarted { attempt: 1, executor, .. } => Some(executor.to_string()),
            _ => None,
        });
        assert_eq!(started.as_deref(), Some("queue:gpu"));
        let entry = fx.writes.iter().find_map(|w| match w {
            Write::Enqueue { node: NodeId::ROOT, attempt: 1, queue, priority, task, input, .. } => {
                Some((queue.as_str(), *priority, task.as_str(), input.clone()))
            }
            _ => None,
        });
        assert_eq!(entry, Some(("gpu", 3, "on_gpu", json!({"x": 2}))));
        assert_eq!(core.active(), 1, "it is running, remotely");

        // The worker's result ends the attempt like any executor's.
        let at = AttemptId { run: RunId::new(1), node: NodeId::ROOT, attempt: 1 };
        core.handle(now, Event::Finished { at, result: Ok(json!(200)) });
        assert_eq!(core.active(), 0);
        assert_eq!(core.finish().output, Some(json!(200)));
    }

    #[test]
    fn a_queued_attempt_times_out_and_its_retry_is_enqueued_again() {
        let now = Instant::now();
        let mut core = core(now);
        assert_eq!(enqueued(&core.take_effects().writes), [(1, "gpu".to_string())]);
        core.fire_timers(now + Duration::from_secs(6));
        let fx = core.take_effects();
        let ended = fx.writes.iter().any(|w| {
            matches!(w, Write::AttemptFinished { attempt: 1, state: NodeState::Failed, error: Some(e), .. }
                if e.kind == ErrorKind::Timeout)
        });
        assert!(ended, "{:?}", fx.writes);
        // After its backoff, attempt 2 goes into the queue; attempt 1's late result is ignored.
        let later = now + Duration::from_secs(8);
        core.fire_timers(later);
        core.start_ready(later);
        assert_eq!(enqueued(&core.take_effects().writes), [(2, "gpu".to_string())]);
        let late = AttemptId { run: RunId::new(1), node: NodeId::ROOT, attempt: 1 };
        core.handle(later, Event::Finished { at: late, result: Err(Error::new(ErrorKind::Task, "late")) });
        assert!(core.take_effects().writes.is_empty());
        assert_eq!(core.active(), 1);
    }
}
