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
//! (of every run of the process that shares its [`Machine`]); it holds it until its attempt
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

use super::timers::Timer;
use super::{Action, Capacity, Core};
use crate::error::Error;
use crate::executor::Launch;
use crate::model::{NodeId, NodeState, now_ms};
use crate::registry::{DEFAULT_QUEUE, Policy};
use crate::store::Write;

/// What the running attempts of all the runs of this process hold of its cores and memory,
/// together: a run's ready queue starts a sized attempt only when it fits beside them, so two
/// runs driven by one process never start more than the machine offers between them.
#[derive(Debug)]
pub(crate) struct Machine {
    used: std::sync::Mutex<Capacity>,
    /// Counts what was given back: a driver whose runs wait for cores or memory watches it.
    freed: tokio::sync::watch::Sender<u64>,
}

impl Machine {
    /// A machine on which nothing is held.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self { used: std::sync::Mutex::new(Capacity::NONE), freed: tokio::sync::watch::Sender::new(0) })
    }

    /// This process's machine, shared by every run it drives.
    pub(crate) fn process() -> Arc<Self> {
        static MACHINE: std::sync::OnceLock<Arc<Machine>> = std::sync::OnceLock::new();
        MACHINE.get_or_init(Machine::new).clone()
    }

    fn used(&self) -> std::sync::MutexGuard<'_, Capacity> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `ask` if it fits within `cap` beside what is held: whether it did.
    fn try_take(&self, ask: Capacity, cap: Capacity) -> bool {
        let mut used = self.used();
        let fits = ask.fits(*used, cap);
        if fits {
            *used = used.plus(ask);
        }
        fits
    }

    /// Takes `ask` whatever is held (a body that waited for its children goes on).
    fn take(&self, ask: Capacity) {
        let mut used = self.used();
        *used = used.plus(ask);
    }

    /// Gives `ask` back, and tells the drivers that watch.
    fn free(&self, ask: Capacity) {
        if ask == Capacity::NONE {
            return;
        }
        {
            let mut used = self.used();
            *used = used.minus(ask);
        }
        self.freed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees a change each time cores or memory are given back.
    pub(crate) fn watch_freed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.freed.subscribe()
    }
}

/// What the running attempts of a run hold: slots (what the parallelism limits), cores and
/// memory. A node awaiting its children holds none of them. The cores and memory are held on
/// the run's [`Machine`] too, when it has one; what a run still holds when its core is dropped
/// (its orchestrator stopped with attempts running) is given back then.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) slots: usize,
    /// The cores and memory.
    room: Capacity,
    machine: Option<Arc<Machine>>,
}

impl Held {
    /// Nothing held yet, of `machine` if the run shares one.
    pub(super) fn on(machine: Option<Arc<Machine>>) -> Self {
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

/// The cores and memory an attempt of a node with `policy` holds on a run driven by
/// `executor`: none when it runs elsewhere (a named queue's worker, the remote executor's).
pub(super) fn ask_of(policy: &Policy, executor: &str) -> Capacity {
    if policy.queue != DEFAULT_QUEUE || executor == crate::remote::EXECUTOR {
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
        ask_of(&self.nodes[id.index()].policy, self.config.executor)
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
    pub(crate) fn waits_for_room(&self) -> bool {
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
            self.fx.actions.push(Action::Start(Launch { at, task, input, policy }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::super::{Action, Capacity, Config, Core};
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
        let config = Config {
            executor: "inline",
            parallelism: 4,
            park_after: None,
            capacity: Capacity::UNLIMITED,
            machine: None,
        };
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
                if e.kind() == ErrorKind::Timeout)
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
