//! The ready queue: nodes whose upstream succeeded wait here, highest priority first, for a
//! free slot and, when they ask for them, free cores and memory.
//!
//! A node of a task on a named queue (`#[task(queue = "gpu")]`) is not started by the run's
//! executor: its attempt goes into the store's durable queue, with its input, for a worker of
//! that queue (`<bin> worker --queue gpu`) to claim. It is `running` meanwhile, holds a slot,
//! and its timeout applies; the driver feeds the worker's result back as the attempt's end.
//!
//! Resources. A node that asks for cores or memory (`#[task(cores = 2, memory_mb = 512)]`,
//! `salt::command(…).cores(2)`) and runs on the run's own executor starts only when the
//! run's [`Capacity`](super::Capacity) has that much free beside what running attempts hold
//! (of every run of the process that shares its machine, [`SharedCapacity`](super::SharedCapacity)); it holds it until its attempt
//! ends or waits on its children (a body awaiting children holds neither a slot nor cores). Such nodes start in priority order, first come first
//! served among equals, and the first one that does not fit holds back every sized node
//! behind it until it does: what it waits for is reserved for it, so a large node is never
//! starved by a stream of small ones. Nodes that ask for nothing (the default) are not held
//! back by it; the parallelism alone limits them. A node that asks for more than the capacity
//! could ever give fails for good when it would start, saying what it asked and what there is.
//! Within one run the reservation is exact; between runs that share a machine, a run's waiting
//! node starts when its driver is told that another run gave something back.

use std::cmp::Reverse;
use std::sync::Arc;

use super::Launch;
use super::timers::Timer;
use super::{Action, Capacity, Core, Placement};
use crate::error::Error;
use crate::journal::Write;
use crate::model::{NodeId, NodeState};
use crate::policy::{DEFAULT_QUEUE, Policy};

/// What the running attempts of a run hold: slots (what the parallelism limits), cores and
/// memory. A node awaiting its children holds none of them. The cores and memory are held on
/// the run's [`SharedCapacity`](super::SharedCapacity) too, when it has one; what a run still holds when its core is dropped
/// (its orchestrator stopped with attempts running) is given back then.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) slots: usize,
    /// The cores and memory.
    room: Capacity,
    machine: Option<Arc<dyn super::SharedCapacity>>,
}

impl Held {
    /// Nothing held yet, of `machine` if the run shares one.
    pub(super) fn on(machine: Option<Arc<dyn super::SharedCapacity>>) -> Self {
        Self { machine, ..Self::default() }
    }

    /// An attempt asking `ask` runs (again), whatever is free.
    pub(super) fn take(&mut self, ask: Capacity) {
        if let Some(m) = &self.machine {
            m.take(ask);
        }
        self.add(ask);
    }

    /// An attempt asking `ask` starts if `ask` fits within `cap` beside what is held (by this
    /// run, or by every run of its machine): whether it did.
    fn try_take(&mut self, ask: Capacity, cap: Capacity) -> bool {
        let fits = match &self.machine {
            Some(m) => m.try_take(ask, cap),
            None => ask.fits(self.room, cap),
        };
        if fits {
            self.add(ask);
        }
        fits
    }

    fn add(&mut self, ask: Capacity) {
        self.slots += 1;
        self.room = self.room.plus(ask);
    }

    /// An attempt asking `ask` stopped running: it ended, or it waits.
    pub(super) fn free(&mut self, ask: Capacity) {
        self.slots = self.slots.saturating_sub(1);
        let left = self.room.minus(ask);
        let given = self.room.minus(left);
        self.room = left;
        if let Some(m) = &self.machine {
            m.free(given);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(m) = &self.machine {
            m.free(self.room);
        }
    }
}

/// The cores and memory an attempt of a node with `policy` holds on a run whose attempts run at
/// `placement`: none when it runs elsewhere (a named queue's worker, a remote worker).
pub(super) fn ask_of(policy: &Policy, placement: Placement) -> Capacity {
    if policy.queue != DEFAULT_QUEUE || placement == Placement::Remote {
        return Capacity::NONE;
    }
    Capacity { cores: policy.cores, memory_mb: policy.memory_mb }
}

impl Core {
    /// A pending node whose deps all succeeded becomes ready (and is queued).
    pub(super) fn promote(&mut self, id: NodeId) {
        let n = &self.nodes[id.index()];
        if n.state == NodeState::Pending && n.unmet == 0 && n.live.is_none() && !n.unbound {
            self.set_state(id, NodeState::Ready);
            self.push_ready(id);
        } else if n.state == NodeState::Ready {
            self.push_ready(id);
        }
    }

    fn push_ready(&mut self, id: NodeId) {
        let prio = self.nodes[id.index()].policy.priority;
        let ask = self.ask(id);
        if ask.cores == 0 && ask.memory_mb == 0 {
            self.ready.push((prio, Reverse(id)));
        } else {
            self.ready_sized.push((prio, Reverse(id)));
        }
    }

    /// The cores and memory an attempt of `id` holds here.
    pub(super) fn ask(&self, id: NodeId) -> Capacity {
        ask_of(&self.nodes[id.index()].policy, self.config.placement)
    }

    /// The first entry of a ready heap that is still ready (stale entries are dropped).
    fn head(
        heap: &mut std::collections::BinaryHeap<(i32, Reverse<NodeId>)>,
        nodes: &[super::graph::Node],
    ) -> Option<(i32, Reverse<NodeId>)> {
        while let Some(&top) = heap.peek() {
            if nodes[top.1.0.index()].state == NodeState::Ready {
                return Some(top);
            }
            heap.pop();
        }
        None
    }

    /// Whether a node waits for cores or memory (another run of the machine may give them).
    pub fn waits_for_room(&self) -> bool {
        !self.ready_sized.is_empty()
    }

    pub(super) fn start_queued(&mut self) {
        while self.cancel_reason.is_none()
            && self.terminated.is_none()
            && !self.paused
            && self.held.slots < self.config.parallelism
        {
            let plain = Self::head(&mut self.ready, &self.nodes);
            let sized = Self::head(&mut self.ready_sized, &self.nodes);
            if let Some((_, Reverse(id))) = sized {
                let ask = self.ask(id);
                let cap = self.config.capacity;
                if ask.cores > cap.cores || ask.memory_mb > cap.memory_mb {
                    self.ready_sized.pop();
                    self.too_big(id, ask);
                    continue;
                }
            }
            // The sized head goes first unless a plain node outranks it; when it does not fit,
            // it waits, and so does every sized node behind it.
            if let Some((_, Reverse(id))) = sized.filter(|s| plain.is_none_or(|p| p <= *s))
                && self.held.try_take(self.ask(id), self.config.capacity)
            {
                self.ready_sized.pop();
                self.start(id);
                continue;
            }
            let Some((_, Reverse(id))) = plain else { break };
            self.ready.pop();
            self.held.take(Capacity::NONE);
            self.start(id);
        }
    }

    /// A node that asks for more than the capacity could ever give fails for good.
    fn too_big(&mut self, id: NodeId, ask: Capacity) {
        let cap = self.config.capacity;
        let n = &self.nodes[id.index()];
        let what = if ask.cores > cap.cores {
            format!("{} cores; this machine offers {} (see --cores)", ask.cores, cap.cores)
        } else {
            format!("{} MiB of memory; this machine offers {} MiB (see --memory-mb)", ask.memory_mb, cap.memory_mb)
        };
        let e = Error::fatal(format!("node {id} (`{}`) asks for {what}", n.task.name));
        self.end_node(id, NodeState::Failed, None, Some(e));
    }

    fn start(&mut self, id: NodeId) {
        let input = self.input_of(id);
        let at = self.wall;
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
        let queue = policy.queue;
        // Remote placement dispatches every queue to the workers that serve it itself.
        let remote = queue != DEFAULT_QUEUE && self.config.placement == Placement::Local;
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
            self.fx.actions.push(Action::Start(Launch { at, task, input, policy }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::super::{Action, Capacity, Catalog, Config, Core, Placement, TaskSpec, Time};
    use crate::attempt::{AttemptId, Event};
    use crate::error::{Error, ErrorKind};
    use crate::journal::Write;
    use crate::model::{NodeId, NodeRecord, NodeState, RunId, RunRecord, RunSnapshot, RunState, StoredArg};
    use crate::policy::Policy;

    /// A workflow whose root node is on the `gpu` queue, with a timeout and one retry.
    static ON_GPU: TaskSpec = TaskSpec {
        name: "on_gpu",
        policy: Policy {
            queue: "gpu",
            priority: 3,
            timeout: Some(Duration::from_secs(5)),
            retries: 1,
            ..Policy::DEFAULT
        },
        label: None,
        color: None,
        promises: &[],
        may_spawn: true,
    };

    struct OnGpu;

    impl Catalog for OnGpu {
        fn spec(&self, name: &str) -> Option<&'static TaskSpec> {
            (name == ON_GPU.name).then_some(&ON_GPU)
        }
    }

    fn at(instant: Instant) -> Time {
        Time { instant, unix_ms: 1_700_000_000_000 }
    }

    fn core(now: Instant) -> Core {
        let registry: &'static dyn Catalog = &OnGpu;
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
        let config = Config {
            executor: "inline",
            placement: Placement::Local,
            parallelism: 4,
            park_after: None,
            capacity: Capacity::UNLIMITED,
            machine: None,
        };
        let mut core = Core::new(snapshot, registry, config, at(now)).unwrap();
        core.begin(at(now));
        core.start_ready(at(now));
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
        let id = AttemptId { run: RunId::new(1), node: NodeId::ROOT, attempt: 1 };
        core.handle(at(now), Event::Finished { at: id, result: Ok(json!(200)) });
        assert_eq!(core.active(), 0);
        assert_eq!(core.finish().output, Some(json!(200)));
    }

    #[test]
    fn a_queued_attempt_times_out_and_its_retry_is_enqueued_again() {
        let now = Instant::now();
        let mut core = core(now);
        assert_eq!(enqueued(&core.take_effects().writes), [(1, "gpu".to_string())]);
        core.fire_timers(at(now + Duration::from_secs(6)));
        let fx = core.take_effects();
        let ended = fx.writes.iter().any(|w| {
            matches!(w, Write::AttemptFinished { attempt: 1, state: NodeState::Failed, error: Some(e), .. }
                if e.kind() == ErrorKind::Timeout)
        });
        assert!(ended, "{:?}", fx.writes);
        // After its backoff, attempt 2 goes into the queue; attempt 1's late result is ignored.
        let later = now + Duration::from_secs(8);
        core.fire_timers(at(later));
        core.start_ready(at(later));
        assert_eq!(enqueued(&core.take_effects().writes), [(2, "gpu".to_string())]);
        let late = AttemptId { run: RunId::new(1), node: NodeId::ROOT, attempt: 1 };
        core.handle(at(later), Event::Finished { at: late, result: Err(Error::new(ErrorKind::Task, "late")) });
        assert!(core.take_effects().writes.is_empty());
        assert_eq!(core.active(), 1);
    }
}
