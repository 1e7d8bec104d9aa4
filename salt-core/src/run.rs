//! The run core: one run's live graph and every rule of how it changes, free of IO.
//!
//! The core takes inputs — an [`Event`] from a running body, the time passing, what other
//! processes asked of the run ([`RunControl`]) — and answers with [`Effects`]: the
//! [`Write`]s that make the change durable and the [`Action`]s to perform once they are
//! committed (start or stop an attempt, answer a body's call). It reads no clock: each input
//! comes with its [`Time`] (the monotonic clock for timers, the wall clock for what it
//! records). It touches no store, no process and no channel, holds no static, and learns of
//! the tasks a run may use and of the machine's capacity from its inputs ([`Catalog`],
//! [`Config`]), so it is tested by feeding it events and reading back effects; the driver (in
//! `salt-runtime`) does the IO.
//!
//! Its parts, one module each: the graph and its `(parent, seq)` index (`graph`), replay and
//! the journal (`replay`), retries, backoff and timers (`timers`), the ready queue (`queue`),
//! promise enforcement (`promises`), signals, sleeps and parking (`signals`), the surgery of
//! `recover`, `rerun --from` and `run-one` (`surgery`), and who owns a failure and how the run
//! ends (`outcome`).

mod graph;
mod outcome;
mod promises;
mod queue;
mod replay;
mod signals;
mod surgery;
#[cfg(test)]
mod tests;
mod timers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use self::graph::Node;
use self::promises::Active;
use self::timers::Timer;
use crate::attempt::{Answer, AttemptId, Event};
use crate::call::JournalKind;
use crate::error::{Error, ErrorKind, Result};
use crate::journal::Write;
use crate::model::{NodeId, NodeRecord, NodeState, RunControl, RunId, RunSnapshot, RunState, StoredArg};
use crate::policy::Policy;
use crate::promise::Promise;

/// The most log lines kept per attempt; the rest is counted, not stored.
const MAX_LOG_LINES: u32 = 10_000;

/// The time of an input: the monotonic clock, for timers and durations, and the wall clock, for
/// what the core records. The driver reads both once per input; tests make them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    /// The monotonic clock.
    pub instant: Instant,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

/// What the run core knows of a task: its name, its policy, how it is drawn, its promises and
/// whether its body may spawn. The runtime's registry gives one per registered task.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpec {
    /// The task's unique name.
    pub name: &'static str,
    /// Retries, backoff, timeout, queue, priority, resources.
    pub policy: Policy,
    /// A label to draw instead of the name.
    pub label: Option<&'static str>,
    /// A color to draw its nodes with.
    pub color: Option<&'static str>,
    /// Promises over the subtree of every node of the task.
    pub promises: &'static [&'static str],
    /// Whether its body may spawn nodes (workflows, and tasks marked `spawns`).
    pub may_spawn: bool,
}

/// The tasks a run may use, by name: the registry of the binary that drives it.
pub trait Catalog: Send + Sync {
    /// The task of this name, if there is one.
    fn spec(&self, name: &str) -> Option<&'static TaskSpec>;
}

/// Where the attempts of a run run, as far as the ready queue is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On this machine (inline, node processes, a pool): the node's cores and memory are held
    /// here, and a node of a named queue goes to the store's work queue for that queue's
    /// workers.
    Local,
    /// Everything on remote workers, whatever the queue: the executor dispatches each attempt
    /// to a worker that serves its queue, and nothing is held here.
    Remote,
}

/// Where the cores and memory held by the attempts of several runs are counted together (the
/// runs a process drives share its machine). The driver supplies it; the core takes and gives
/// back through it.
pub trait SharedCapacity: Send + Sync + std::fmt::Debug {
    /// Takes `ask` if it fits within `cap` beside what is held: whether it did.
    fn try_take(&self, ask: Capacity, cap: Capacity) -> bool;
    /// Takes `ask` whatever is held (a body that waited for its children goes on).
    fn take(&self, ask: Capacity);
    /// Gives `ask` back.
    fn free(&self, ask: Capacity);
}

/// How a run is driven, as far as the core is concerned.
#[derive(Debug, Clone)]
pub struct Config {
    /// The executor's name, recorded with each attempt.
    pub executor: &'static str,
    /// Where attempts run.
    pub placement: Placement,
    /// How many attempts may run at once.
    pub parallelism: usize,
    /// A node that has awaited its children this long gives up its process (executors whose
    /// attempts hold one); none to keep it.
    pub park_after: Option<Duration>,
    /// The cores and memory the run's local attempts share.
    pub capacity: Capacity,
    /// Where what they hold is counted with what the other runs of this process hold: none
    /// to count this run's alone.
    pub machine: Option<Arc<dyn SharedCapacity>>,
}

/// The cores and memory a run's attempts share on this machine: the ready queue starts an
/// attempt only when what its node asks for (`cores`, `memory_mb`) is free. An input of the
/// core, like the time: the runner reads it from the machine or from the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    /// CPU cores.
    pub cores: u32,
    /// Memory, in MiB.
    pub memory_mb: u64,
}

impl Capacity {
    /// Nothing: what a node that asks for no cores or memory holds.
    pub const NONE: Capacity = Capacity { cores: 0, memory_mb: 0 };

    /// Whether `self` (an ask) fits within `cap` beside `used`.
    pub fn fits(self, used: Capacity, cap: Capacity) -> bool {
        self.cores <= cap.cores.saturating_sub(used.cores)
            && self.memory_mb <= cap.memory_mb.saturating_sub(used.memory_mb)
    }

    /// `self` with `other` added.
    pub fn plus(self, other: Capacity) -> Capacity {
        Capacity {
            cores: self.cores.saturating_add(other.cores),
            memory_mb: self.memory_mb.saturating_add(other.memory_mb),
        }
    }

    /// `self` with `other` taken away (none below nothing).
    pub fn minus(self, other: Capacity) -> Capacity {
        Capacity {
            cores: self.cores.saturating_sub(other.cores),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
        }
    }

    /// No limit: only the parallelism counts (plans, tests).
    pub const UNLIMITED: Capacity = Capacity { cores: u32::MAX, memory_mb: u64::MAX };
}

/// One attempt to start.
#[derive(Debug)]
pub struct Launch {
    /// The attempt.
    pub at: AttemptId,
    /// Its task.
    pub task: &'static TaskSpec,
    /// Its input object.
    pub input: Value,
    /// The node's policy: its task's, with what its call chose over it
    /// (`salt::command(…).queue("gpu").cores(2)`).
    pub policy: Policy,
}

/// What the driver does once the writes before it are committed.
#[derive(Debug)]
pub enum Action {
    /// Start an attempt.
    Start(Launch),
    /// Stop an attempt.
    Stop(AttemptId),
    /// Answer a body's call.
    Answer {
        /// The attempt.
        at: AttemptId,
        /// The call.
        call: u64,
        /// The answer.
        answer: Answer,
    },
}

/// A node transition to show once it is committed.
#[derive(Debug, Clone)]
pub struct Note {
    /// The node.
    pub node: NodeId,
    /// Its task.
    pub task: &'static str,
    /// Its new state.
    pub state: NodeState,
    /// Its attempt.
    pub attempt: u32,
    /// Why it failed, if it did.
    pub error: Option<Error>,
}

/// What the core asks of the world: first the writes, in one transaction; then the actions.
#[derive(Debug, Default)]
pub struct Effects {
    /// What to commit, in one transaction.
    pub writes: Vec<Write>,
    /// What to do once it is committed.
    pub actions: Vec<Action>,
    /// What to show once it is committed.
    pub notes: Vec<Note>,
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// The run.
    pub run: RunId,
    /// Its workflow.
    pub workflow: String,
    /// Its final state.
    pub state: RunState,
    /// The workflow's output, when it succeeded.
    pub output: Option<Value>,
    /// Why it did not succeed.
    pub error: Option<Error>,
}

/// Counts of a run's nodes by state, what runs now, and the time so far.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The run.
    pub run: RunId,
    /// Indexed like [`NodeState::ALL`].
    pub counts: [usize; NodeState::ALL.len()],
    /// The tasks of up to four running nodes.
    pub running: Vec<&'static str>,
    /// The time since the core was made.
    pub elapsed: Duration,
    /// Whether the run is paused (the change is committed with the next batch).
    pub paused: bool,
}

impl Summary {
    /// The counts as text: `3 succeeded, 1 running`.
    pub fn counts_line(&self) -> String {
        NodeState::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, c)| *c > 0)
            .map(|(s, c)| format!("{c} {}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The root node of a new run of `workflow` with `input` (an object of arguments by name),
/// created at `at` (ms since the Unix epoch): what a run starts with, written in the same
/// transaction as the run.
pub fn root_node(workflow: &TaskSpec, input: &Value, at: i64) -> NodeRecord {
    let args: Vec<(String, StoredArg)> = match input {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), StoredArg::Value(v.clone()))).collect(),
        _ => Vec::new(),
    };
    new_node(NodeId::ROOT, None, workflow, args, String::new(), None, at)
}

/// The record of a new node `id` of `task`: spawned by the node and at the call `spawned_by`
/// gives (none for a run's root), with its arguments, their hash, and what its call changed of
/// the task's policy.
fn new_node(
    id: NodeId,
    spawned_by: Option<(NodeId, u32)>,
    task: &TaskSpec,
    args: Vec<(String, StoredArg)>,
    input_hash: String,
    policy: Option<crate::policy::PolicyOverride>,
    at: i64,
) -> NodeRecord {
    NodeRecord {
        id,
        parent: spawned_by.map(|(p, _)| p),
        seq: spawned_by.map(|(_, s)| s),
        task: task.name.to_string(),
        state: NodeState::Pending,
        args,
        input_hash,
        output: None,
        error: None,
        attempts: 0,
        label: task.label.map(str::to_string),
        color: task.color.map(str::to_string),
        shape: None,
        created_at: at,
        started_at: None,
        finished_at: None,
        policy,
    }
}

/// What cancelling a run that no orchestrator drives (one that is `queued` or `interrupted`)
/// writes, at `at`: every unfinished node, then the run, `cancelled`. The caller holds the
/// run's lease while it commits them.
pub fn cancel_orphan(snapshot: &RunSnapshot, at: i64) -> Vec<Write> {
    let run = snapshot.run.id;
    let mut writes: Vec<Write> = snapshot
        .nodes
        .iter()
        .filter(|n| !n.state.is_terminal())
        .map(|n| Write::NodeFinished { run, node: n.id, state: NodeState::Cancelled, output: None, error: None, at })
        .collect();
    let error = Error::new(ErrorKind::Cancelled, "cancelled with `cancel`");
    writes.push(Write::RunState { run, state: RunState::Cancelled, output: None, error: Some(error), at });
    writes
}

/// One run's live graph and its rules.
pub struct Core {
    run: RunId,
    workflow: String,
    registry: &'static dyn Catalog,
    config: Config,
    nodes: Vec<Node>,
    keys: HashMap<(NodeId, u32), NodeId>,
    journal: HashMap<(NodeId, u32), (JournalKind, Value)>,
    /// Ready nodes that ask for no cores and no memory, by priority.
    ready: BinaryHeap<(i32, Reverse<NodeId>)>,
    /// Ready nodes that ask for cores or memory, by priority (see `queue`).
    ready_sized: BinaryHeap<(i32, Reverse<NodeId>)>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// What attempts running (not waiting on children) hold: slots, cores, memory.
    held: queue::Held,
    /// Nodes not in a final state.
    active: usize,
    fx: Effects,
    cancel_reason: Option<String>,
    /// Counts starts and ends, to order them.
    clock: u64,
    promises: Vec<Active>,
    terminated: Option<Error>,
    paused: bool,
    /// Signals sent but not consumed, in the order they were sent: (id, name, value).
    signals: Vec<(i64, String, Value)>,
    seen_signals: HashSet<i64>,
    /// Deadlines of waits (ms since the epoch) and their defaults.
    deadlines: HashMap<(NodeId, u32), (i64, Option<Value>)>,
    /// Nodes whose failure their parent's body received, and the attempt that received it.
    delivered: HashMap<NodeId, u32>,
    /// The time of the input being applied.
    now: Instant,
    /// The same, on the wall clock (ms since the Unix epoch).
    wall: i64,
    started: Instant,
}

impl Core {
    /// The core of a run whose graph is `snapshot` (a new run has only its root).
    pub fn new(snapshot: RunSnapshot, registry: &'static dyn Catalog, config: Config, now: Time) -> Result<Self> {
        let run = snapshot.run.id;
        let store_error = |m: String| Error::new(ErrorKind::Store, m);
        if snapshot.nodes.is_empty() {
            return Err(store_error(format!(
                "run {run} has no root node (it was cut short while it was created); start a new run"
            )));
        }
        let mut nodes = Vec::with_capacity(snapshot.nodes.len());
        let mut keys = HashMap::new();
        for (i, rec) in snapshot.nodes.into_iter().enumerate() {
            if rec.id != NodeId::at(i) {
                return Err(store_error(format!("run {run} has a gap in its node ids at {i}")));
            }
            let task = registry.spec(&rec.task).ok_or_else(|| {
                Error::new(
                    ErrorKind::Usage,
                    format!("run {run} has a node of task `{}`, which this binary does not have", rec.task),
                )
            })?;
            if let Some(p) = rec.parent
                && p >= rec.id
            {
                return Err(store_error(format!("run {run}: node {} has parent {p}, which is not older", rec.id)));
            }
            // A superseded node keeps its place in the history only: the key is its successor's.
            if let (Some(p), Some(s)) = (rec.parent, rec.seq)
                && rec.state != NodeState::Superseded
            {
                keys.insert((p, s), rec.id);
            }
            nodes.push(Node::from_record(rec, task));
        }
        for a in &snapshot.attempts {
            let lost = a.error.as_ref().is_some_and(|e| e.kind() == ErrorKind::Lost);
            if a.state == NodeState::Failed
                && !lost
                && let Some(n) = nodes.get_mut(a.node.index())
            {
                n.failures += 1;
            }
        }
        let current = |n: &Node| n.state != NodeState::Superseded;
        for e in &snapshot.edges {
            let (from, to) = (e.from.index(), e.to.index());
            if from < nodes.len() && to < nodes.len() && current(&nodes[from]) && current(&nodes[to]) {
                if e.kind == crate::model::EdgeKind::After {
                    nodes[to].after.push(e.from);
                }
                nodes[to].deps.push(e.from);
                nodes[from].dependents.push(e.to);
            }
        }
        for i in 0..nodes.len() {
            if let Some(p) = nodes[i].parent
                && current(&nodes[i])
            {
                nodes[p.index()].children.push(NodeId::at(i));
            }
        }
        let parents: Vec<Option<NodeId>> = nodes.iter().map(|n| n.parent).collect();
        let delivered = outcome::loaded_deliveries(&snapshot.delivered, &parents, &snapshot.attempts);
        let journal = snapshot.journal.into_iter().map(|j| ((j.node, j.seq), (j.kind, j.value))).collect();
        let deadlines = snapshot
            .waits
            .iter()
            .filter_map(|w| w.deadline.map(|d| ((w.node, w.seq), (d, w.default.clone()))))
            .collect();
        let held = queue::Held::on(config.machine.clone());
        let mut core = Self {
            run,
            workflow: snapshot.run.workflow,
            registry,
            config,
            nodes,
            keys,
            journal,
            ready: BinaryHeap::new(),
            ready_sized: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            held,
            active: 0,
            fx: Effects::default(),
            cancel_reason: None,
            clock: 0,
            promises: Vec::new(),
            terminated: None,
            paused: false,
            signals: Vec::new(),
            seen_signals: HashSet::new(),
            deadlines,
            delivered,
            now: now.instant,
            wall: now.unix_ms,
            started: now.instant,
        };
        for record in snapshot.promises {
            let promise: Promise = record.text.parse().map_err(|e| {
                Error::new(ErrorKind::Store, format!("run {} has a promise that does not parse: {e}", core.run))
            })?;
            if record.scope.index() >= core.nodes.len() {
                return Err(store_error(format!("run {run} has a promise on node {}, which it lacks", record.scope)));
            }
            core.restore_promise(record, promise);
        }
        for i in 0..core.nodes.len() {
            if core.nodes[i].state != NodeState::Superseded {
                core.declare_registered(NodeId::at(i));
            }
        }
        // Attempts that were running when the previous orchestrator stopped ended with it.
        for a in snapshot.attempts.iter().filter(|a| a.state == NodeState::Running) {
            core.fx.writes.push(Write::AttemptFinished {
                run,
                node: a.node,
                attempt: a.attempt,
                state: NodeState::Cancelled,
                error: Some(Error::new(ErrorKind::Cancelled, "interrupted: the orchestrator stopped while it ran")),
                at: core.wall,
            });
        }
        for i in 0..core.nodes.len() {
            core.nodes[i].unmet = core.unmet_of(NodeId::at(i));
            if !core.nodes[i].state.is_terminal() {
                core.active += 1;
            }
        }
        Ok(core)
    }

    /// Takes the time of an input.
    fn at(&mut self, now: Time) {
        self.now = now.instant;
        self.wall = now.unix_ms;
    }

    /// The run.
    pub fn run_id(&self) -> RunId {
        self.run
    }

    /// Makes every node whose upstream is done ready, and takes the run's control state.
    pub fn begin(&mut self, now: Time) {
        self.at(now);
        for i in 0..self.nodes.len() {
            self.promote(NodeId::at(i));
        }
    }

    /// Applies an event of a running body.
    pub fn handle(&mut self, now: Time, event: Event) {
        self.at(now);
        match event {
            Event::Mutate { at, mutations } => {
                for m in mutations {
                    if !self.is_current(at) || self.terminated.is_some() {
                        break;
                    }
                    match &m {
                        crate::call::Mutation::Spawn(req) => self.called(at.node, req.seq),
                        crate::call::Mutation::Promise { seq, .. } => self.called(at.node, *seq),
                        _ => {}
                    }
                    self.mutate(at, m);
                }
            }
            Event::Wait { at, call, wait } => {
                if self.is_current(at) {
                    self.called(at.node, wait.seq);
                    self.wait_signal(at, call, wait);
                }
            }
            Event::Await { at, call, seq } => {
                if self.is_current(at) {
                    self.await_child(at, call, seq);
                }
            }
            Event::Journal { at, call, seq, kind, value } => {
                if self.is_current(at) {
                    self.called(at.node, seq);
                    self.journal_call(at, call, seq, kind, value);
                }
            }
            Event::Log { at, line } => self.log(at, line),
            Event::Finished { at, result } => {
                if self.is_current(at) {
                    self.attempt_finished(at.node, at.attempt, result);
                }
            }
        }
    }

    fn log(&mut self, at: AttemptId, line: String) {
        let Some(n) = self.nodes.get_mut(at.node.index()) else { return };
        n.logged += 1;
        let record = if n.logged <= MAX_LOG_LINES {
            crate::model::LogRecord { node: at.node, attempt: at.attempt, ts: self.wall, line }
        } else if n.logged == MAX_LOG_LINES + 1 {
            let line = format!("[salt] log limit of {MAX_LOG_LINES} lines reached; further lines are dropped");
            crate::model::LogRecord { node: at.node, attempt: at.attempt, ts: self.wall, line }
        } else {
            return;
        };
        self.fx.writes.push(Write::Log { run: self.run, record });
    }

    /// Takes what other processes asked: cancel, pause or resume, signals.
    pub fn control(&mut self, now: Time, control: RunControl) {
        self.at(now);
        if control.cancel_requested && self.cancel_reason.is_none() {
            self.cancel("cancelled with `cancel`".into());
        }
        if control.paused != self.paused && self.cancel_reason.is_none() && self.terminated.is_none() {
            self.paused = control.paused;
            let state = if control.paused { RunState::Paused } else { RunState::Running };
            self.fx.writes.push(Write::RunState { run: self.run, state, output: None, error: None, at: self.wall });
        }
        for (id, node) in control.cancel_nodes {
            self.fx.writes.push(Write::NodeCancelConsumed { id });
            let Some(n) = self.nodes.get(node.index()) else { continue };
            if n.state.is_terminal() || self.cancel_reason.is_some() || self.terminated.is_some() {
                continue;
            }
            self.kill(node);
        }
        for (id, name, value) in control.signals {
            if self.seen_signals.insert(id) {
                self.signals.push((id, name, value));
            }
        }
        self.deliver_signals();
    }

    /// Kills one node on request: its attempt stops and it ends `cancelled` with an error of
    /// kind [`ErrorKind::Killed`]. Unlike a node cancelled with something above it, a killed
    /// node is final whatever the moment: no retry, and a replay of its parent (after it
    /// parked, or on `recover`) binds to it without running it again. What depends on it is
    /// skipped; a parent awaiting it receives the kill as a failure.
    fn kill(&mut self, node: NodeId) {
        let task = self.nodes[node.index()].task.name;
        let e = Error::new(ErrorKind::Killed, format!("node {node} (`{task}`) was killed with `cancel --node`"));
        self.end_node(node, NodeState::Cancelled, None, Some(e));
    }

    /// Starts as many ready nodes as the parallelism and the capacity allow, highest priority
    /// first.
    pub fn start_ready(&mut self, now: Time) {
        self.at(now);
        self.start_queued();
    }

    /// What to write and do.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// Nodes not yet in a final state; the run ends when there are none.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The attempts running now (to stop them when the run cannot go on).
    pub fn live_attempts(&self) -> Vec<AttemptId> {
        self.nodes.iter().filter_map(|n| n.live.map(|attempt| self.attempt_id(n.id, attempt))).collect()
    }

    /// The state of one node of the run.
    pub fn state_of(&self, id: NodeId) -> NodeState {
        self.nodes[id.index()].state
    }

    /// Whether the run has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel_reason.is_some()
    }

    /// Ends the run: records its final state and says how it ended.
    pub fn finish(&mut self) -> RunOutcome {
        let root = &self.nodes[0];
        let (state, output, error) = if let Some(error) = &self.terminated {
            (RunState::Terminated, None, Some(error.clone()))
        } else if let Some(reason) = &self.cancel_reason {
            (RunState::Cancelled, None, Some(Error::new(ErrorKind::Cancelled, reason)))
        } else {
            let (state, error) = self.settled();
            (state, root.output.clone(), error)
        };
        self.fx.writes.push(Write::RunState {
            run: self.run,
            state,
            output: output.clone(),
            error: error.clone(),
            at: self.wall,
        });
        RunOutcome { run: self.run, workflow: self.workflow.clone(), state, output, error }
    }

    /// Counts of nodes by state, for progress display.
    pub fn summary(&self, now: Instant) -> Summary {
        let mut counts = [0usize; NodeState::ALL.len()];
        let mut running = Vec::new();
        for n in self.nodes.iter().filter(|n| n.state != NodeState::Superseded) {
            let i = NodeState::ALL.iter().position(|s| *s == n.state).unwrap_or(0);
            counts[i] += 1;
            if n.state == NodeState::Running && running.len() < 4 {
                running.push(n.task.name);
            }
        }
        let elapsed = now.saturating_duration_since(self.started);
        Summary { run: self.run, counts, running, elapsed, paused: self.paused }
    }

    /// Shows a node's transition once the batch it belongs to is committed.
    fn note(&mut self, node: NodeId, task: &'static str, state: NodeState, attempt: u32, error: Option<&Error>) {
        self.fx.notes.push(Note { node, task, state, attempt, error: error.cloned() });
    }

    fn is_current(&self, at: AttemptId) -> bool {
        at.run == self.run
            && self.nodes.get(at.node.index()).and_then(|n| n.live).is_some_and(|attempt| attempt == at.attempt)
    }

    fn attempt_id(&self, node: NodeId, attempt: u32) -> AttemptId {
        AttemptId { run: self.run, node, attempt }
    }

    fn answer(&mut self, at: AttemptId, call: u64, answer: Answer) {
        self.fx.actions.push(Action::Answer { at, call, answer });
    }
}
