//! The orchestrator: one event loop per run that owns the live graph.
//!
//! Running bodies send [`Event`]s (spawn, await, journal, log, finished). The loop applies a
//! batch of them to the in-memory graph, collecting [`Write`]s and actions; commits the writes
//! in one transaction; and only then acts (replies to awaits, starts and stops attempts). So
//! every transition is durable before anything depends on it, and a fan-out of thousands of
//! nodes costs a handful of transactions, not one per node per state.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::context::{Annotation, JournalKind, Mutation, PromiseScope, SignalWait, SpawnRequest, WireArg};
use crate::error::{Error, ErrorKind, ErrorWire, Result};
use crate::executor::{self, Event, Launch, Running};
use crate::model::{
    EdgeKind, EdgeRecord, LogRecord, NodeId, NodeRecord, NodeState, PromiseRecord, RunId, RunSnapshot, RunState,
    StoredArg, WaitRecord, now_ms,
};
use crate::progress::{Observer, Summary};
use crate::promise::{Promise, Shape, Target};
use crate::registry::{Registry, TaskDescriptor};
use crate::runner::{Executor, RunOutcome};
use crate::store::{Lease, Store, Write};

/// The most log lines kept per attempt; the rest is counted, not stored.
const MAX_LOG_LINES: u32 = 10_000;
/// The most events applied in one batch (one transaction).
const MAX_BATCH: usize = 8_192;

type Reply = oneshot::Sender<std::result::Result<Value, ErrorWire>>;

struct Awaiter {
    node: NodeId,
    attempt: u32,
    reply: Reply,
}

struct Live {
    attempt: u32,
    /// Filled in when the attempt is started, right after its start is committed.
    running: Option<Running>,
}

struct Node {
    id: NodeId,
    parent: Option<NodeId>,
    task: &'static TaskDescriptor,
    state: NodeState,
    args: Vec<(String, StoredArg)>,
    input_hash: String,
    output: Option<Value>,
    error: Option<ErrorWire>,
    attempts: u32,
    /// Nodes this one runs after (data and control edges).
    deps: Vec<NodeId>,
    /// Nodes that run after this one.
    dependents: Vec<NodeId>,
    /// Nodes this one's body spawned.
    children: Vec<NodeId>,
    /// Deps not yet succeeded.
    unmet: usize,
    awaiters: Vec<Awaiter>,
    /// Awaits of this node's body not yet answered.
    waiting_on: usize,
    live: Option<Live>,
    logged: u32,
    /// When (in the orchestrator's event count) the node last ended, or its attempt started.
    ended_at: u64,
    started_at: u64,
    /// Failed attempts so far (parked attempts are not failures).
    failures: u32,
    /// The signal a parked node waits for: (seq, name).
    parked: Option<(u32, String)>,
    /// Re-running for `rerun --from`: a replayed spawn may change a child's arguments.
    rerun: bool,
    /// The attempt that was parked while it awaited children; the first of them to end
    /// replays the node.
    parked_on_children: Option<u32>,
}

/// How a run is driven.
pub(crate) struct Options {
    pub(crate) executor: Executor,
    pub(crate) parallelism: usize,
    pub(crate) handle_ctrl_c: bool,
    pub(crate) exe: PathBuf,
    /// With the process executor, a node that has awaited children this long gives up its
    /// process; it is replayed when one of them ends.
    pub(crate) park_after: Duration,
    /// The run's lease: every batch is committed only while it still holds the run.
    pub(crate) lease: Lease,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry { node: NodeId, attempt: u32 },
    Timeout { node: NodeId, attempt: u32 },
    Signal { node: NodeId, seq: u32 },
    Park { node: NodeId, attempt: u32 },
}

enum Action {
    Reply(Reply, std::result::Result<Value, ErrorWire>),
    ReplyJournal(oneshot::Sender<Value>, Value),
    Start(Launch),
    Stop(Running),
}

pub(crate) struct Orchestrator {
    run: RunId,
    workflow: String,
    store: Box<dyn Store>,
    registry: &'static Registry,
    opts: Options,
    nodes: Vec<Node>,
    keys: HashMap<(NodeId, u32), NodeId>,
    journal: HashMap<(NodeId, u32), (JournalKind, Value)>,
    ready: BinaryHeap<(i32, Reverse<NodeId>)>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    live_slots: usize,
    active: usize,
    writes: Vec<Write>,
    actions: Vec<Action>,
    events: executor::Events,
    cancel_reason: Option<String>,
    observer: Box<dyn Observer>,
    /// Node transitions to show, once they are committed.
    notes: Vec<(NodeId, &'static str, NodeState, u32, Option<ErrorWire>)>,
    started: Instant,
    /// Counts starts and ends, to order them.
    clock: u64,
    promises: Vec<Active>,
    terminated: Option<ErrorWire>,
    paused: bool,
    /// Signals sent but not consumed: (id, name, value).
    signals: Vec<(i64, String, Value)>,
    seen_signals: std::collections::HashSet<i64>,
    /// Deadlines of waits recorded before this orchestrator started.
    deadlines: HashMap<(NodeId, u32), (i64, Option<Value>)>,
}

/// A promise in force, with the state of its shape.
struct Active {
    record: PromiseRecord,
    promise: Promise,
    /// For a shape: what may still follow the scope node's children so far.
    shape: Option<Shape>,
}

fn hash_args(task: &str, args: &[(String, StoredArg)]) -> String {
    // FNV-1a over the task name and the canonical JSON of the arguments: stable across builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = serde_json::to_string(args).unwrap_or_default();
    for b in task.bytes().chain([0]).chain(text.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn describe_call(task: &str, args: &[(String, StoredArg)]) -> String {
    let mut text = serde_json::to_string(args).unwrap_or_default();
    if text.len() > 120 {
        text.truncate(117);
        text.push_str("...");
    }
    format!("spawn `{task}` with {text}")
}

impl Orchestrator {
    /// An orchestrator for a run whose graph is `snapshot` (a new run has only its root).
    pub(crate) fn new(
        snapshot: RunSnapshot,
        store: Box<dyn Store>,
        registry: &'static Registry,
        opts: Options,
        observer: Box<dyn Observer>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>)> {
        let (events, rx) = mpsc::unbounded_channel();
        let mut nodes = Vec::with_capacity(snapshot.nodes.len());
        let mut keys = HashMap::new();
        for (i, rec) in snapshot.nodes.into_iter().enumerate() {
            if rec.id != i as NodeId {
                return Err(Error::new(
                    ErrorKind::Store,
                    format!("run {} has a gap in its node ids at {i}", snapshot.run.id),
                ));
            }
            let task = registry.get(&rec.task).ok_or_else(|| {
                Error::new(
                    ErrorKind::Usage,
                    format!(
                        "run {} has a node of task `{}`, which this binary does not have",
                        snapshot.run.id, rec.task
                    ),
                )
            })?;
            if let (Some(p), Some(s)) = (rec.parent, rec.seq) {
                keys.insert((p, s), rec.id);
            }
            nodes.push(Node {
                id: rec.id,
                parent: rec.parent,
                task,
                state: rec.state,
                args: rec.args,
                input_hash: rec.input_hash,
                output: rec.output,
                error: rec.error,
                attempts: rec.attempts,
                deps: Vec::new(),
                dependents: Vec::new(),
                children: Vec::new(),
                unmet: 0,
                awaiters: Vec::new(),
                waiting_on: 0,
                live: None,
                logged: 0,
                ended_at: 0,
                started_at: 0,
                failures: 0,
                parked: None,
                rerun: false,
                parked_on_children: None,
            });
        }
        for a in &snapshot.attempts {
            if a.state == NodeState::Failed
                && let Some(n) = nodes.get_mut(a.node as usize)
            {
                n.failures += 1;
            }
        }
        for e in &snapshot.edges {
            let (from, to) = (e.from as usize, e.to as usize);
            if from < nodes.len() && to < nodes.len() {
                nodes[to].deps.push(e.from);
                nodes[from].dependents.push(e.to);
            }
        }
        for i in 0..nodes.len() {
            if let Some(p) = nodes[i].parent {
                nodes[p as usize].children.push(i as NodeId);
            }
        }
        let journal = snapshot.journal.into_iter().map(|j| ((j.node, j.seq), (j.kind, j.value))).collect();
        let mut orch = Self {
            run: snapshot.run.id,
            workflow: snapshot.run.workflow,
            store,
            registry,
            opts,
            nodes,
            keys,
            journal,
            ready: BinaryHeap::new(),
            timers: BinaryHeap::new(),
            live_slots: 0,
            active: 0,
            writes: Vec::new(),
            actions: Vec::new(),
            events,
            cancel_reason: None,
            observer,
            notes: Vec::new(),
            started: Instant::now(),
            clock: 0,
            promises: Vec::new(),
            terminated: None,
            paused: false,
            signals: Vec::new(),
            seen_signals: Default::default(),
            deadlines: snapshot
                .waits
                .iter()
                .filter_map(|w| w.deadline.map(|d| ((w.node, w.seq), (d, w.default.clone()))))
                .collect(),
        };
        for record in snapshot.promises {
            let promise: Promise = record.text.parse().map_err(|e| {
                Error::new(ErrorKind::Store, format!("run {} has a promise that does not parse: {e}", orch.run))
            })?;
            let shape = match &promise {
                Promise::Shape(shape) => {
                    let children: Vec<&str> = orch.nodes[record.scope as usize]
                        .children
                        .iter()
                        .map(|c| orch.nodes[*c as usize].task.name)
                        .collect();
                    shape.after(children)
                }
                _ => None,
            };
            orch.promises.push(Active { record, promise, shape });
        }
        for i in 0..orch.nodes.len() {
            orch.declare_registered(i as NodeId);
        }
        // Attempts that were running when the previous orchestrator stopped ended with it.
        for a in snapshot.attempts.iter().filter(|a| a.state == NodeState::Running) {
            orch.writes.push(Write::AttemptFinished {
                run: orch.run,
                node: a.node,
                attempt: a.attempt,
                state: NodeState::Cancelled,
                error: Some(ErrorWire::new(ErrorKind::Cancelled, "interrupted: the orchestrator stopped while it ran")),
                at: now_ms(),
            });
        }
        for i in 0..orch.nodes.len() {
            let unmet =
                orch.nodes[i].deps.iter().filter(|d| orch.nodes[**d as usize].state != NodeState::Succeeded).count();
            orch.nodes[i].unmet = unmet;
            if !orch.nodes[i].state.is_terminal() {
                orch.active += 1;
            }
        }
        Ok((orch, rx))
    }

    /// Resets these nodes to pending (their outputs forgotten), to be run again.
    pub(crate) fn reset(&mut self, ids: &[NodeId]) {
        for &id in ids {
            let n = &mut self.nodes[id as usize];
            if n.state.is_terminal() {
                self.active += 1;
            }
            n.state = NodeState::Pending;
            n.output = None;
            n.error = None;
            n.parked = None;
            n.parked_on_children = None;
            n.failures = 0;
            self.writes.push(Write::NodeReset { run: self.run, node: id });
        }
        for i in 0..self.nodes.len() {
            let unmet =
                self.nodes[i].deps.iter().filter(|d| self.nodes[**d as usize].state != NodeState::Succeeded).count();
            self.nodes[i].unmet = unmet;
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
                    p = self.nodes[pid as usize].parent;
                }
            }
        }
        for a in ancestors {
            seen[a as usize] = true;
        }
        seen.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i as NodeId).collect()
    }

    /// `from`, what runs after it (by edges) and what those spawned, transitively.
    fn below(&self, from: NodeId) -> Vec<bool> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack = vec![from];
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut seen[id as usize], true) {
                continue;
            }
            let n = &self.nodes[id as usize];
            stack.extend(n.dependents.iter().copied());
            stack.extend(n.children.iter().copied());
        }
        seen
    }

    /// Marks nodes as re-running (`rerun --from`): when their bodies replay, a child whose
    /// arguments changed (its upstream ran again) takes the new arguments and runs again,
    /// instead of failing the replay as non-deterministic.
    pub(crate) fn mark_rerun(&mut self, ids: &[NodeId]) {
        for &id in ids {
            self.nodes[id as usize].rerun = true;
        }
    }

    /// The upstream nodes of `id` that have not succeeded.
    pub(crate) fn unmet_upstream(&self, id: NodeId) -> Vec<(NodeId, &'static str, NodeState)> {
        self.nodes[id as usize]
            .deps
            .iter()
            .map(|d| &self.nodes[*d as usize])
            .filter(|d| d.state != NodeState::Succeeded)
            .map(|d| (d.id, d.task.name, d.state))
            .collect()
    }

    /// Runs until every node is done, the run is cancelled, or the store fails.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) -> Result<RunOutcome> {
        self.writes.push(Write::RunStarted {
            run: self.run,
            executor: self.opts.executor.as_str(),
            parallelism: self.opts.parallelism as u32,
            at: now_ms(),
        });
        for i in 0..self.nodes.len() {
            self.promote(i as NodeId);
        }
        // A run taken over while paused stays paused; signals sent meanwhile are picked up.
        self.poll_control();
        // Listen for Ctrl-C before anything starts, so that it can never kill the process
        // instead of cancelling the run.
        let mut interrupt = if self.opts.handle_ctrl_c {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
        } else {
            None
        };
        let mut ctrl_c = std::pin::pin!(async move {
            match interrupt.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        });
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.start_ready();
            self.flush()?;
            if self.active == 0 {
                return self.finish();
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                Some(ev) = rx.recv() => {
                    self.handle(ev);
                    let mut n = 1;
                    while n < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(ev) => { self.handle(ev); n += 1; }
                            Err(_) => break,
                        }
                    }
                }
                () = async { tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)).await }, if next_timer.is_some() => {
                    self.fire_timers();
                }
                () = &mut ctrl_c, if self.cancel_reason.is_none() => {
                    self.cancel("interrupted (Ctrl-C)".into());
                }
                _ = tick.tick() => {
                    self.poll_control();
                    self.observer.tick(&self.summary());
                }
            }
        }
    }

    fn summary(&self) -> Summary {
        let mut counts = [0usize; NodeState::ALL.len()];
        let mut running = Vec::new();
        for n in &self.nodes {
            let i = NodeState::ALL.iter().position(|s| *s == n.state).unwrap_or(0);
            counts[i] += 1;
            if n.state == NodeState::Running && running.len() < 4 {
                running.push(n.task.name);
            }
        }
        Summary { run: self.run, counts, running, elapsed: self.started.elapsed() }
    }

    /// Commits the pending writes, then acts on them.
    fn flush(&mut self) -> Result<()> {
        if !self.writes.is_empty() {
            self.store.commit(Some(&self.opts.lease), &self.writes).map_err(|e| e.into_error())?;
            self.writes.clear();
        }
        for (id, task, state, attempt, error) in std::mem::take(&mut self.notes) {
            self.observer.node(id, task, state, attempt, error.as_ref());
        }
        for action in std::mem::take(&mut self.actions) {
            match action {
                Action::Reply(tx, result) => {
                    let _ = tx.send(result);
                }
                Action::ReplyJournal(tx, value) => {
                    let _ = tx.send(value);
                }
                Action::Start(launch) => {
                    let (id, attempt) = (launch.node, launch.attempt);
                    let running = match self.opts.executor {
                        Executor::Inline => executor::start_inline(launch, self.events.clone()),
                        Executor::Process => {
                            executor::start_process(launch, self.opts.exe.clone(), self.events.clone())
                        }
                    };
                    let n = &mut self.nodes[id as usize];
                    match &mut n.live {
                        Some(live) if live.attempt == attempt => live.running = Some(running),
                        // Stopped (timeout, cancel) before it was even started.
                        _ => running.stop(),
                    }
                }
                Action::Stop(running) => running.stop(),
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<RunOutcome> {
        let root = &self.nodes[0];
        let (state, output, error) = if let Some(error) = &self.terminated {
            (RunState::Terminated, None, Some(error.clone()))
        } else if let Some(reason) = &self.cancel_reason {
            (RunState::Cancelled, None, Some(ErrorWire::new(ErrorKind::Cancelled, reason)))
        } else if self.nodes.iter().all(|n| n.state == NodeState::Succeeded) {
            (RunState::Succeeded, root.output.clone(), None)
        } else {
            let error = if root.state == NodeState::Failed {
                root.error.clone()
            } else {
                self.nodes.iter().find(|n| n.state == NodeState::Failed).map(|n| {
                    ErrorWire::new(
                        ErrorKind::Child,
                        format!(
                            "node {} (`{}`) failed: {}",
                            n.id,
                            n.task.name,
                            n.error.as_ref().map(|e| e.message.as_str()).unwrap_or("")
                        ),
                    )
                })
            };
            (RunState::Failed, root.output.clone(), error)
        };
        self.writes.push(Write::RunState {
            run: self.run,
            state,
            output: output.clone(),
            error: error.clone(),
            at: now_ms(),
        });
        self.flush()?;
        self.observer.done(&self.summary());
        Ok(RunOutcome { run: self.run, workflow: self.workflow, state, output, error })
    }

    /// Shows a node's transition once the batch it belongs to is committed.
    fn note(&mut self, id: NodeId, task: &'static str, state: NodeState, attempt: u32, error: Option<&ErrorWire>) {
        self.notes.push((id, task, state, attempt, error.cloned()));
    }

    fn set_state(&mut self, id: NodeId, state: NodeState) {
        let n = &mut self.nodes[id as usize];
        if n.state != state {
            n.state = state;
            self.writes.push(Write::NodeState { run: self.run, node: id, state });
        }
    }

    /// A pending node whose deps all succeeded becomes ready.
    fn promote(&mut self, id: NodeId) {
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

    fn start_ready(&mut self) {
        while self.cancel_reason.is_none()
            && self.terminated.is_none()
            && !self.paused
            && self.live_slots < self.opts.parallelism
        {
            let Some((_, Reverse(id))) = self.ready.pop() else { break };
            if self.nodes[id as usize].state != NodeState::Ready {
                continue;
            }
            self.start(id);
        }
    }

    fn input_of(&self, id: NodeId) -> Value {
        let mut input = Map::new();
        for (name, arg) in &self.nodes[id as usize].args {
            let v = match arg {
                StoredArg::Value(v) => v.clone(),
                StoredArg::Node(dep) => self.nodes[*dep as usize].output.clone().unwrap_or(Value::Null),
            };
            input.insert(name.clone(), v);
        }
        Value::Object(input)
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
        self.live_slots += 1;
        self.writes.push(Write::AttemptStarted {
            run: self.run,
            node: id,
            attempt,
            executor: self.opts.executor.as_str(),
            at,
        });
        n.live = Some(Live { attempt, running: None });
        if let Some(timeout) = task.policy.timeout {
            self.timers.push(Reverse((Instant::now() + timeout, Timer::Timeout { node: id, attempt })));
        }
        self.note(id, task.name, NodeState::Running, attempt, None);
        self.actions.push(Action::Start(Launch { run: self.run, node: id, attempt, task, input }));
    }

    fn is_current(&self, id: NodeId, attempt: u32) -> bool {
        self.nodes.get(id as usize).and_then(|n| n.live.as_ref()).is_some_and(|l| l.attempt == attempt)
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Mutate { node, attempt, mutations } => {
                for m in mutations {
                    if !self.is_current(node, attempt) || self.terminated.is_some() {
                        break;
                    }
                    match m {
                        Mutation::Spawn(request) => self.spawn(node, attempt, request),
                        Mutation::Edge { from, to } => self.control_edge(node, attempt, from, to),
                        Mutation::Promise { seq, text, scope } => self.declare(node, attempt, seq, &text, scope),
                        Mutation::Annotate { child, annotation } => self.annotate(node, child, annotation),
                    }
                }
            }
            Event::Wait { node, attempt, wait, reply } => {
                if self.is_current(node, attempt) {
                    self.wait_signal(node, attempt, wait, reply);
                }
            }
            Event::Await { node, attempt, seq, reply } => {
                if self.is_current(node, attempt) {
                    self.await_child(node, attempt, seq, reply);
                }
            }
            Event::Journal { node, attempt, seq, kind, value, reply } => {
                if self.is_current(node, attempt) {
                    self.journal_call(node, attempt, seq, kind, value, reply);
                }
            }
            Event::Log { node, attempt, line } => {
                let Some(n) = self.nodes.get_mut(node as usize) else { return };
                n.logged += 1;
                if n.logged <= MAX_LOG_LINES {
                    let record = LogRecord { node, attempt, ts: now_ms(), line };
                    self.writes.push(Write::Log { run: self.run, record });
                } else if n.logged == MAX_LOG_LINES + 1 {
                    let line = format!("[salt] log limit of {MAX_LOG_LINES} lines reached; further lines are dropped");
                    self.writes
                        .push(Write::Log { run: self.run, record: LogRecord { node, attempt, ts: now_ms(), line } });
                }
            }
            Event::Finished { node, attempt, result } => {
                if self.is_current(node, attempt) {
                    self.attempt_finished(node, attempt, result);
                }
            }
        }
    }

    /// Fails the current attempt of `id` at once (its body is stopped).
    fn fail_attempt(&mut self, id: NodeId, attempt: u32, error: ErrorWire) {
        if let Some(running) = self.nodes[id as usize].live.as_mut().and_then(|l| l.running.take()) {
            self.actions.push(Action::Stop(running));
        }
        self.attempt_finished(id, attempt, Err(error));
    }

    fn spawn(&mut self, parent: NodeId, attempt: u32, req: SpawnRequest) {
        let SpawnRequest { seq, task, args } = req;
        let Some(descriptor) = self.registry.get(&task) else {
            let e = ErrorWire::new(ErrorKind::Protocol, format!("spawn of unknown task `{task}`"));
            return self.fail_attempt(parent, attempt, e);
        };
        let mut stored = Vec::with_capacity(args.len());
        for (name, arg) in args {
            let a = match arg {
                WireArg::Value(v) => StoredArg::Value(v),
                WireArg::Handle(s) => match self.keys.get(&(parent, s)) {
                    Some(dep) => StoredArg::Node(*dep),
                    None => {
                        let e = ErrorWire::new(
                            ErrorKind::Protocol,
                            format!("argument `{name}` refers to call {s}, which spawned no node"),
                        );
                        return self.fail_attempt(parent, attempt, e);
                    }
                },
            };
            stored.push((name, a));
        }
        let input_hash = hash_args(descriptor.name, &stored);
        if let Some((kind, _)) = self.journal.get(&(parent, seq)) {
            let e = self.nondeterministic(
                parent,
                seq,
                format!("`{}()`", journal_name(*kind)),
                describe_call(descriptor.name, &stored),
            );
            return self.fail_attempt(parent, attempt, e);
        }
        if let Some(&existing) = self.keys.get(&(parent, seq)) {
            let n = &self.nodes[existing as usize];
            if n.task.name != descriptor.name || n.input_hash != input_hash {
                let same_deps = n.deps.iter().all(|d| stored.iter().any(|(_, a)| *a == StoredArg::Node(*d)));
                if self.nodes[parent as usize].rerun && n.task.name == descriptor.name && same_deps {
                    return self.replace_args(existing, stored, input_hash);
                }
                let expected = describe_call(n.task.name, &n.args);
                let e = self.nondeterministic(parent, seq, expected, describe_call(descriptor.name, &stored));
                return self.fail_attempt(parent, attempt, e);
            }
            // A child that failed before this attempt of its parent began runs again; one that
            // failed during it is this attempt's result.
            let stale = n.ended_at < self.nodes[parent as usize].started_at;
            if stale && matches!(n.state, NodeState::Failed | NodeState::Cancelled | NodeState::Skipped) {
                self.revive(existing);
            }
            return;
        }

        if !self.nodes[parent as usize].task.may_spawn {
            let e = ErrorWire::new(
                ErrorKind::Graph,
                format!(
                    "task `{}` called task `{}`, but only workflows and tasks marked `spawns` may spawn nodes; write `#[task(spawns)]` on `{}`",
                    self.nodes[parent as usize].task.name, descriptor.name, self.nodes[parent as usize].task.name
                ),
            );
            return self.fail_attempt(parent, attempt, e);
        }
        let id = self.nodes.len() as NodeId;
        let deps: Vec<NodeId> = {
            let mut d: Vec<NodeId> =
                stored.iter().filter_map(|(_, a)| if let StoredArg::Node(n) = a { Some(*n) } else { None }).collect();
            d.sort_unstable();
            d.dedup();
            d
        };
        let what =
            format!("spawning `{}` from node {parent} (`{}`)", descriptor.name, self.nodes[parent as usize].task.name);
        match self.check_spawn(parent, descriptor.name, &deps) {
            Ok(shapes) => {
                for (i, shape) in shapes {
                    self.promises[i].shape = Some(shape);
                }
            }
            Err(promise) => return self.terminate(promise, &what, Some(parent)),
        }
        let unmet = deps.iter().filter(|d| self.nodes[**d as usize].state != NodeState::Succeeded).count();
        let doomed = deps
            .iter()
            .find(|d| {
                matches!(self.nodes[**d as usize].state, NodeState::Failed | NodeState::Skipped | NodeState::Cancelled)
            })
            .copied();
        let record = NodeRecord {
            id,
            parent: Some(parent),
            seq: Some(seq),
            task: descriptor.name.to_string(),
            state: NodeState::Pending,
            args: stored.clone(),
            input_hash: input_hash.clone(),
            output: None,
            error: None,
            attempts: 0,
            label: descriptor.label.map(str::to_string),
            color: descriptor.color.map(str::to_string),
            shape: None,
            created_at: now_ms(),
            started_at: None,
            finished_at: None,
        };
        self.writes.push(Write::InsertNode { run: self.run, node: Box::new(record) });
        for d in &deps {
            self.writes
                .push(Write::InsertEdge { run: self.run, edge: EdgeRecord { from: *d, to: id, kind: EdgeKind::Data } });
            self.nodes[*d as usize].dependents.push(id);
        }
        self.nodes.push(Node {
            id,
            parent: Some(parent),
            task: descriptor,
            state: NodeState::Pending,
            args: stored,
            input_hash,
            output: None,
            error: None,
            attempts: 0,
            deps,
            dependents: Vec::new(),
            children: Vec::new(),
            unmet,
            awaiters: Vec::new(),
            waiting_on: 0,
            live: None,
            logged: 0,
            ended_at: 0,
            started_at: 0,
            failures: 0,
            parked: None,
            rerun: false,
            parked_on_children: None,
        });
        self.nodes[parent as usize].children.push(id);
        self.keys.insert((parent, seq), id);
        self.active += 1;
        self.declare_registered(id);
        if let Some(dep) = doomed {
            let e = self.upstream_error(dep);
            self.end_node(id, NodeState::Skipped, None, Some(e));
        } else {
            self.promote(id);
        }
    }

    /// A re-running parent called child `id` with new arguments: take them, and run the child
    /// and everything below it again.
    fn replace_args(&mut self, id: NodeId, args: Vec<(String, StoredArg)>, input_hash: String) {
        self.writes.push(Write::NodeArgs {
            run: self.run,
            node: id,
            args: args.clone(),
            input_hash: input_hash.clone(),
        });
        let n = &mut self.nodes[id as usize];
        n.args = args;
        n.input_hash = input_hash;
        let below: Vec<NodeId> =
            self.below(id).iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i as NodeId).collect();
        self.mark_rerun(&below);
        self.reset(&below);
    }

    /// A replayed spawn bound to a child that did not succeed: run it (and what it blocked) again.
    fn revive(&mut self, id: NodeId) {
        let mut stack = vec![id];
        let mut revived = Vec::new();
        while let Some(i) = stack.pop() {
            let n = &self.nodes[i as usize];
            if !matches!(n.state, NodeState::Failed | NodeState::Cancelled | NodeState::Skipped) {
                continue;
            }
            stack.extend(n.dependents.iter().copied().filter(|d| self.nodes[*d as usize].state == NodeState::Skipped));
            revived.push(i);
        }
        self.reset(&revived);
    }

    fn nondeterministic(&self, node: NodeId, seq: u32, expected: String, found: String) -> ErrorWire {
        ErrorWire::new(
            ErrorKind::NonDeterministic,
            format!(
                "non-deterministic replay of node {node} (`{}`) at call {seq}: the journal has {expected}, the body now made {found}; task bodies must make the same calls in the same order on every run",
                self.nodes[node as usize].task.name
            ),
        )
    }

    fn upstream_error(&self, dep: NodeId) -> ErrorWire {
        let d = &self.nodes[dep as usize];
        ErrorWire::new(ErrorKind::Upstream, format!("upstream node {} (`{}`) did not succeed", d.id, d.task.name))
    }

    fn await_child(&mut self, node: NodeId, attempt: u32, seq: u32, reply: Reply) {
        let Some(&child) = self.keys.get(&(node, seq)) else {
            let e = ErrorWire::new(ErrorKind::Protocol, format!("await of call {seq}, which spawned no node"));
            return self.fail_attempt(node, attempt, e);
        };
        let c = &self.nodes[child as usize];
        if c.state.is_terminal() {
            let result = self.result_of(child);
            self.actions.push(Action::Reply(reply, result));
            return;
        }
        self.nodes[child as usize].awaiters.push(Awaiter { node, attempt, reply });
        let p = &mut self.nodes[node as usize];
        p.waiting_on += 1;
        if p.waiting_on == 1 && p.state == NodeState::Running {
            self.live_slots -= 1;
            self.set_state(node, NodeState::Waiting);
            if self.opts.executor == Executor::Process {
                let at = Instant::now() + self.opts.park_after;
                self.timers.push(Reverse((at, Timer::Park { node, attempt })));
            }
        }
    }

    fn result_of(&self, id: NodeId) -> std::result::Result<Value, ErrorWire> {
        let n = &self.nodes[id as usize];
        match n.state {
            NodeState::Succeeded => Ok(n.output.clone().unwrap_or(Value::Null)),
            NodeState::Cancelled => {
                Err(ErrorWire::new(ErrorKind::Cancelled, format!("node {} (`{}`) was cancelled", n.id, n.task.name)))
            }
            // A child that failed for good (a fatal error, a broken rule) makes its awaiting
            // parent fail for good too: retrying the parent would not help.
            _ => Err(ErrorWire::new(
                match &n.error {
                    Some(e) if !e.kind.is_retryable() && e.kind != ErrorKind::Upstream => ErrorKind::Fatal,
                    _ => ErrorKind::Child,
                },
                format!(
                    "node {} (`{}`) failed: {}",
                    n.id,
                    n.task.name,
                    n.error.as_ref().map(|e| e.message.as_str()).unwrap_or("unknown error")
                ),
            )),
        }
    }

    /// What the journal holds for call `seq` of `node`'s body, which now makes `call` of `kind`:
    /// `Ok(Some(value))` on a replay, `Ok(None)` the first time; a different recorded call (a
    /// spawn, or another journaled kind) fails the attempt as non-deterministic (`Err`).
    fn replayed(
        &mut self,
        node: NodeId,
        attempt: u32,
        seq: u32,
        kind: JournalKind,
        call: String,
    ) -> Result<Option<Value>, ()> {
        let expected = if let Some(&child) = self.keys.get(&(node, seq)) {
            let c = &self.nodes[child as usize];
            describe_call(c.task.name, &c.args)
        } else {
            match self.journal.get(&(node, seq)) {
                Some((k, v)) if *k == kind => return Ok(Some(v.clone())),
                Some((k, _)) => format!("`{}()`", journal_name(*k)),
                None => return Ok(None),
            }
        };
        let e = self.nondeterministic(node, seq, expected, call);
        self.fail_attempt(node, attempt, e);
        Err(())
    }

    /// Records a journaled value (first run) for call `seq` of `node`'s body.
    fn record(&mut self, node: NodeId, seq: u32, kind: JournalKind, value: Value) {
        self.journal.insert((node, seq), (kind, value.clone()));
        self.writes.push(Write::Journal { run: self.run, node, seq, kind, value });
    }

    fn journal_call(
        &mut self,
        node: NodeId,
        attempt: u32,
        seq: u32,
        kind: JournalKind,
        value: Value,
        reply: oneshot::Sender<Value>,
    ) {
        let value = match self.replayed(node, attempt, seq, kind, format!("`{}()`", journal_name(kind))) {
            Err(()) => return,
            Ok(Some(recorded)) => recorded,
            Ok(None) => {
                self.record(node, seq, kind, value.clone());
                value
            }
        };
        self.actions.push(Action::ReplyJournal(reply, value));
    }

    fn attempt_finished(&mut self, id: NodeId, attempt: u32, result: std::result::Result<Value, ErrorWire>) {
        let at = now_ms();
        let n = &mut self.nodes[id as usize];
        n.live = None;
        if n.state == NodeState::Running {
            self.live_slots -= 1;
        }
        n.waiting_on = 0;
        let task = n.task;
        match result {
            Ok(output) => {
                self.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state: NodeState::Succeeded,
                    error: None,
                    at,
                });
                // A body that returned can spawn no more: its promised shapes must be complete.
                let unfinished = self
                    .promises
                    .iter()
                    .find(|p| p.record.scope == id && p.shape.as_ref().is_some_and(|s| !s.is_complete()));
                if let Some(p) = unfinished {
                    let still = p.shape.as_ref().map(|s| s.label()).unwrap_or_default();
                    let what = format!("node {id} (`{}`) finishing while the shape still needs `{still}`", task.name);
                    let text = p.record.text.clone();
                    let by = p.record.declared_by;
                    self.end_node(id, NodeState::Succeeded, Some(output), None);
                    return self.terminate_with(&text, by, &what, None);
                }
                self.end_node(id, NodeState::Succeeded, Some(output), None);
            }
            Err(error) => {
                let cancelled = error.kind == ErrorKind::Cancelled;
                let state = if cancelled { NodeState::Cancelled } else { NodeState::Failed };
                self.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state,
                    error: Some(error.clone()),
                    at,
                });
                self.nodes[id as usize].failures += 1;
                let failures = self.nodes[id as usize].failures;
                let retry = error.kind.is_retryable()
                    && failures <= task.policy.retries
                    && self.cancel_reason.is_none()
                    && self.terminated.is_none();
                if retry {
                    let delay = task.policy.backoff.delay(attempt);
                    self.nodes[id as usize].state = NodeState::Pending;
                    self.writes.push(Write::NodeState { run: self.run, node: id, state: NodeState::Pending });
                    self.timers.push(Reverse((Instant::now() + delay, Timer::Retry { node: id, attempt })));
                    self.note(id, task.name, NodeState::Pending, attempt, Some(&error));
                } else {
                    self.end_node(id, state, None, Some(error));
                }
            }
        }
    }

    /// A node reached a terminal state: record it, answer its awaiters, and move its
    /// dependents on (ready when all their deps succeeded, skipped when one did not).
    fn end_node(&mut self, id: NodeId, state: NodeState, output: Option<Value>, error: Option<ErrorWire>) {
        let mut stack = vec![(id, state, output, error)];
        while let Some((id, state, output, error)) = stack.pop() {
            let n = &mut self.nodes[id as usize];
            if n.state.is_terminal() {
                continue;
            }
            if let Some(live) = n.live.take() {
                if n.state == NodeState::Running {
                    self.live_slots -= 1;
                }
                if let Some(running) = live.running {
                    self.actions.push(Action::Stop(running));
                }
                self.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt: live.attempt,
                    state: if state == NodeState::Failed { NodeState::Failed } else { NodeState::Cancelled },
                    error: error.clone(),
                    at: now_ms(),
                });
            }
            n.state = state;
            n.output = output.clone();
            n.error = error.clone();
            self.clock += 1;
            n.ended_at = self.clock;
            let task = n.task.name;
            self.active -= 1;
            self.writes.push(Write::NodeFinished {
                run: self.run,
                node: id,
                state,
                output,
                error: error.clone(),
                at: now_ms(),
            });
            self.note(id, task, state, self.nodes[id as usize].attempts, error.as_ref());

            let result = self.result_of(id);
            for w in std::mem::take(&mut self.nodes[id as usize].awaiters) {
                let p = &mut self.nodes[w.node as usize];
                if p.parked_on_children == Some(w.attempt) {
                    // Parked while it awaited: replay it now that a child has ended.
                    self.unpark(w.node);
                    continue;
                }
                if p.live.as_ref().is_some_and(|l| l.attempt == w.attempt) {
                    p.waiting_on = p.waiting_on.saturating_sub(1);
                    if p.waiting_on == 0 && p.state == NodeState::Waiting {
                        self.live_slots += 1;
                        self.set_state(w.node, NodeState::Running);
                    }
                }
                self.actions.push(Action::Reply(w.reply, result.clone()));
            }

            let dependents = self.nodes[id as usize].dependents.clone();
            if state == NodeState::Succeeded {
                for d in dependents {
                    let dn = &mut self.nodes[d as usize];
                    dn.unmet = dn.unmet.saturating_sub(1);
                    self.promote(d);
                }
            } else {
                let up = self.upstream_error(id);
                for d in dependents {
                    if !self.nodes[d as usize].state.is_terminal() && self.nodes[d as usize].live.is_none() {
                        stack.push((d, NodeState::Skipped, None, Some(up.clone())));
                    }
                }
                // Nobody will await what a failed body spawned: stop it.
                let cancel = ErrorWire::new(ErrorKind::Cancelled, format!("its parent node {id} (`{task}`) ended"));
                for c in self.nodes[id as usize].children.clone() {
                    if !self.nodes[c as usize].state.is_terminal() {
                        stack.push((c, NodeState::Cancelled, None, Some(cancel.clone())));
                    }
                }
                if id == 0 {
                    for i in 1..self.nodes.len() {
                        if !self.nodes[i].state.is_terminal() {
                            stack.push((i as NodeId, NodeState::Cancelled, None, Some(cancel.clone())));
                        }
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else { break };
            match timer {
                Timer::Retry { node, attempt } => {
                    let n = &self.nodes[node as usize];
                    if n.state == NodeState::Pending && n.attempts == attempt && self.cancel_reason.is_none() {
                        self.promote(node);
                    }
                }
                Timer::Signal { node, seq } => {
                    let parked = self.nodes[node as usize].parked.as_ref().is_some_and(|(s, _)| *s == seq);
                    // A deadline comes with a default; a `null` one may arrive as none.
                    if parked && let Some((_, default)) = self.deadlines.get(&(node, seq)).cloned() {
                        self.deliver(node, seq, default.unwrap_or(Value::Null));
                    }
                }
                Timer::Park { node, attempt } => {
                    let n = &self.nodes[node as usize];
                    if self.is_current(node, attempt) && n.state == NodeState::Waiting && n.waiting_on > 0 {
                        self.park_on_children(node, attempt);
                    }
                }
                Timer::Timeout { node, attempt } => {
                    if self.is_current(node, attempt) {
                        let timeout = self.nodes[node as usize].task.policy.timeout.unwrap_or_default();
                        self.fail_attempt(node, attempt, executor::timeout_error(timeout));
                    }
                }
            }
        }
    }

    fn cancel(&mut self, reason: String) {
        self.cancel_reason = Some(reason.clone());
        let e = ErrorWire::new(ErrorKind::Cancelled, reason);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].state.is_terminal() {
                self.end_node(i as NodeId, NodeState::Cancelled, None, Some(e.clone()));
            }
        }
    }
}

impl Orchestrator {
    /// Declares the promises a node's task was registered with (scope: the node's subtree).
    fn declare_registered(&mut self, id: NodeId) {
        let task = self.nodes[id as usize].task;
        for (i, text) in task.promises.iter().enumerate() {
            let seq = u32::MAX - i as u32;
            if self.promises.iter().any(|p| p.record.declared_by == id && p.record.seq == seq) {
                continue;
            }
            match text.parse::<Promise>() {
                Ok(promise) => self.add_promise(id, id, seq, promise),
                Err(e) => {
                    let error =
                        ErrorWire::new(ErrorKind::Usage, format!("task `{}` has a bad promise: {e}", task.name));
                    self.terminated.get_or_insert(error);
                }
            }
        }
    }

    /// A promise declared at run time by node `by`.
    fn declare(&mut self, by: NodeId, attempt: u32, seq: u32, text: &str, scope: PromiseScope) {
        if self.promises.iter().any(|p| p.record.declared_by == by && p.record.seq == seq) {
            return; // declared before this replay
        }
        match text.parse::<Promise>() {
            Ok(promise) => {
                let scope = if scope == PromiseScope::Run { 0 } else { by };
                self.add_promise(scope, by, seq, promise);
            }
            Err(e) => {
                let e = ErrorWire::new(ErrorKind::Usage, format!("bad promise `{text}`: {e}"));
                self.fail_attempt(by, attempt, e);
            }
        }
    }

    fn add_promise(&mut self, scope: NodeId, by: NodeId, seq: u32, promise: Promise) {
        let record =
            PromiseRecord { id: self.promises.len() as u32, scope, declared_by: by, seq, text: promise.to_string() };
        let shape = match &promise {
            Promise::Shape(shape) => {
                let children: Vec<&str> =
                    self.nodes[scope as usize].children.iter().map(|c| self.nodes[*c as usize].task.name).collect();
                match shape.after(children) {
                    Some(s) => Some(s),
                    None => {
                        let text = record.text.clone();
                        self.writes.push(Write::Promise { run: self.run, record: record.clone() });
                        self.promises.push(Active { record, promise, shape: None });
                        let what = format!("the children node {scope} already has");
                        return self.terminate_with(&text, by, &what, Some(by));
                    }
                }
            }
            _ => None,
        };
        self.writes.push(Write::Promise { run: self.run, record: record.clone() });
        self.promises.push(Active { record, promise, shape });
    }

    /// Whether `node` is `scope` or one of its descendants.
    fn in_subtree(&self, node: NodeId, scope: NodeId) -> bool {
        let mut n = Some(node);
        while let Some(id) = n {
            if id == scope {
                return true;
            }
            n = self.nodes[id as usize].parent;
        }
        false
    }

    fn matches(&self, target: &Target, node: NodeId) -> bool {
        match target {
            Target::Node(id) => *id == node,
            Target::Task(name) => self.nodes.get(node as usize).is_some_and(|n| n.task.name == name),
        }
    }

    /// Checks a spawn against every promise in force; on success, the new shape states.
    fn check_spawn(
        &self,
        parent: NodeId,
        task: &str,
        deps: &[NodeId],
    ) -> std::result::Result<Vec<(usize, Shape)>, usize> {
        let mut shapes = Vec::new();
        for (i, p) in self.promises.iter().enumerate() {
            let scope = p.record.scope;
            if !self.in_subtree(parent, scope) {
                continue;
            }
            let task_of = |n: &NodeId| self.nodes[*n as usize].task.name;
            let ok = match &p.promise {
                Promise::NoNewNodes => false,
                Promise::NoNewEdges => deps.is_empty(),
                Promise::OnlyTasks(tasks) => tasks.iter().any(|t| t == task),
                Promise::OnlyEdgesBetween(tasks) => {
                    deps.is_empty()
                        || (tasks.iter().any(|t| t == task)
                            && deps.iter().all(|d| tasks.iter().any(|t| t == task_of(d))))
                }
                Promise::NoEdgesOut(target) => !deps.iter().any(|d| self.matches(target, *d)),
                Promise::NoEdgesInto(target) => {
                    deps.is_empty() || !matches!(target, Target::Task(name) if name == task)
                }
                Promise::Shape(_) => {
                    if parent != scope {
                        true
                    } else {
                        match p.shape.as_ref().and_then(|s| s.step(task)) {
                            Some(next) => {
                                shapes.push((i, next));
                                true
                            }
                            None => false,
                        }
                    }
                }
            };
            if !ok {
                return Err(i);
            }
        }
        Ok(shapes)
    }

    /// Checks a control edge against every promise in force.
    fn check_edge(&self, from: NodeId, to: NodeId) -> std::result::Result<(), usize> {
        for (i, p) in self.promises.iter().enumerate() {
            if !self.in_subtree(to, p.record.scope) {
                continue;
            }
            let task_of = |n: NodeId| self.nodes[n as usize].task.name;
            let ok = match &p.promise {
                Promise::NoNewEdges => false,
                Promise::OnlyEdgesBetween(tasks) => {
                    tasks.iter().any(|t| t == task_of(from)) && tasks.iter().any(|t| t == task_of(to))
                }
                Promise::NoEdgesOut(target) => !self.matches(target, from),
                Promise::NoEdgesInto(target) => !self.matches(target, to),
                _ => true,
            };
            if !ok {
                return Err(i);
            }
        }
        Ok(())
    }

    fn terminate(&mut self, promise: usize, what: &str, culprit: Option<NodeId>) {
        let text = self.promises[promise].record.text.clone();
        let by = self.promises[promise].record.declared_by;
        self.terminate_with(&text, by, what, culprit);
    }

    /// A mutation broke a promise: the node that sent it fails with the promise's error,
    /// everything else stops, and the run ends `terminated`.
    fn terminate_with(&mut self, promise: &str, declared_by: NodeId, what: &str, culprit: Option<NodeId>) {
        if self.terminated.is_some() {
            return;
        }
        let error = ErrorWire::new(
            ErrorKind::Promise,
            format!(
                "broken promise `{promise}` (declared by node {declared_by}, `{}`): {what} is not allowed",
                self.nodes[declared_by as usize].task.name
            ),
        );
        self.terminated = Some(error.clone());
        if let Some(culprit) = culprit {
            self.end_node(culprit, NodeState::Failed, None, Some(error.clone()));
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].state.is_terminal() {
                self.end_node(i as NodeId, NodeState::Cancelled, None, Some(error.clone()));
            }
        }
    }

    /// A control edge between two children of `node`.
    fn control_edge(&mut self, node: NodeId, attempt: u32, from_seq: u32, to_seq: u32) {
        let (Some(&from), Some(&to)) = (self.keys.get(&(node, from_seq)), self.keys.get(&(node, to_seq))) else {
            let e = ErrorWire::new(ErrorKind::Protocol, "edge between handles that spawned no node");
            return self.fail_attempt(node, attempt, e);
        };
        if self.nodes[to as usize].deps.contains(&from) {
            return; // already there (a replay, or a data edge)
        }
        let name = |id: NodeId| format!("{id} (`{}`)", self.nodes[id as usize].task.name);
        let graph_error = |msg: String| ErrorWire::new(ErrorKind::Graph, msg);
        let t = &self.nodes[to as usize];
        if t.attempts > 0 || !matches!(t.state, NodeState::Pending | NodeState::Ready) {
            let e = graph_error(format!(
                "cannot add edge {} -> {}: node {} has already {}",
                name(from),
                name(to),
                to,
                if t.state.is_terminal() { t.state.as_str() } else { "started" }
            ));
            return self.fail_attempt(node, attempt, e);
        }
        // A cycle: `from` is downstream of `to`.
        let mut stack = vec![to];
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if n == from {
                let e = graph_error(format!("cannot add edge {} -> {}: it would close a cycle", name(from), name(to)));
                return self.fail_attempt(node, attempt, e);
            }
            if seen.insert(n) {
                stack.extend(self.nodes[n as usize].dependents.iter().copied());
            }
        }
        if let Err(p) = self.check_edge(from, to) {
            let what = format!("adding edge {} -> {} from node {}", name(from), name(to), name(node));
            return self.terminate(p, &what, Some(node));
        }
        self.writes.push(Write::InsertEdge { run: self.run, edge: EdgeRecord { from, to, kind: EdgeKind::Control } });
        self.nodes[from as usize].dependents.push(to);
        let from_state = self.nodes[from as usize].state;
        let t = &mut self.nodes[to as usize];
        t.deps.push(from);
        if from_state != NodeState::Succeeded {
            t.unmet += 1;
            if t.state == NodeState::Ready {
                self.set_state(to, NodeState::Pending);
            }
        }
        if matches!(from_state, NodeState::Failed | NodeState::Skipped | NodeState::Cancelled) {
            let e = self.upstream_error(from);
            self.end_node(to, NodeState::Skipped, None, Some(e));
        }
    }

    fn annotate(&mut self, node: NodeId, child: Option<u32>, annotation: Annotation) {
        let target = match child {
            None => Some(node),
            Some(seq) => self.keys.get(&(node, seq)).copied(),
        };
        if let Some(target) = target {
            self.writes.push(Write::Annotate { run: self.run, node: target, annotation });
        }
    }

    fn wait_signal(&mut self, node: NodeId, attempt: u32, wait: SignalWait, reply: oneshot::Sender<Value>) {
        let seq = wait.seq;
        let call = format!("`wait_for(\"{}\")`", wait.name);
        let value = match self.replayed(node, attempt, seq, JournalKind::Signal, call) {
            Err(()) => return,
            Ok(Some(recorded)) => recorded,
            Ok(None) => match self.signals.iter().position(|(_, name, _)| *name == wait.name) {
                // Sent before the node asked for it.
                Some(pos) => {
                    let (id, _, value) = self.signals.remove(pos);
                    self.writes.push(Write::SignalConsumed { id });
                    self.record(node, seq, JournalKind::Signal, value.clone());
                    value
                }
                None => return self.park(node, attempt, wait),
            },
        };
        self.writes.push(Write::WaitEnded { run: self.run, node, seq });
        self.actions.push(Action::ReplyJournal(reply, value));
    }

    /// Stops a node's attempt while it waits for a signal: it holds no process and no slot, and
    /// is replayed up to the wait when the signal arrives.
    fn park(&mut self, node: NodeId, attempt: u32, wait: SignalWait) {
        self.stop_waiting_attempt(node, attempt);
        self.nodes[node as usize].parked = Some((wait.seq, wait.name.clone()));
        let task = self.nodes[node as usize].task.name;
        let (deadline, default) = match self.deadlines.get(&(node, wait.seq)) {
            Some((d, v)) => (Some(*d), v.clone()),
            None => (wait.timeout_ms.map(|t| now_ms() + t as i64), wait.default.clone()),
        };
        if let Some(deadline) = deadline {
            self.deadlines.insert((node, wait.seq), (deadline, default.clone()));
            let left = Duration::from_millis((deadline - now_ms()).max(0) as u64);
            self.timers.push(Reverse((Instant::now() + left, Timer::Signal { node, seq: wait.seq })));
        }
        let record = WaitRecord { node, seq: wait.seq, name: wait.name, schema: wait.schema, deadline, default };
        self.writes.push(Write::WaitStarted { run: self.run, record });
        self.note(node, task, NodeState::Waiting, attempt, None);
    }

    /// Stops the process of a node that has awaited children for a while; the first of them
    /// to end replays it. Waiting on a long child holds no process.
    fn park_on_children(&mut self, node: NodeId, attempt: u32) {
        self.stop_waiting_attempt(node, attempt);
        self.nodes[node as usize].parked_on_children = Some(attempt);
    }

    /// Ends a node's attempt because it waits (parked): its process or body is stopped, its
    /// slot freed, and the attempt recorded as `waiting`.
    fn stop_waiting_attempt(&mut self, node: NodeId, attempt: u32) {
        let n = &mut self.nodes[node as usize];
        if let Some(running) = n.live.take().and_then(|l| l.running) {
            self.actions.push(Action::Stop(running));
        }
        if n.state == NodeState::Running {
            self.live_slots -= 1;
        }
        n.waiting_on = 0;
        self.set_state(node, NodeState::Waiting);
        self.writes.push(Write::AttemptFinished {
            run: self.run,
            node,
            attempt,
            state: NodeState::Waiting,
            error: None,
            at: now_ms(),
        });
    }

    /// A parked node may go on: it becomes pending and is replayed when a slot is free.
    fn unpark(&mut self, node: NodeId) {
        let n = &mut self.nodes[node as usize];
        n.parked = None;
        n.parked_on_children = None;
        n.state = NodeState::Pending;
        self.writes.push(Write::NodeState { run: self.run, node, state: NodeState::Pending });
        self.promote(node);
    }

    /// Gives a parked node its signal's value and runs it again from the start (a replay).
    fn deliver(&mut self, node: NodeId, seq: u32, value: Value) {
        self.record(node, seq, JournalKind::Signal, value);
        self.writes.push(Write::WaitEnded { run: self.run, node, seq });
        self.unpark(node);
    }

    /// Reads what other processes asked: cancel, pause or resume, signals.
    fn poll_control(&mut self) {
        let Ok(control) = self.store.control(self.run) else { return };
        if control.cancel_requested && self.cancel_reason.is_none() {
            self.cancel("cancelled with `cancel`".into());
        }
        if control.paused != self.paused && self.cancel_reason.is_none() {
            self.paused = control.paused;
            let state = if control.paused { RunState::Paused } else { RunState::Running };
            self.writes.push(Write::RunState { run: self.run, state, output: None, error: None, at: now_ms() });
        }
        for (id, name, value) in control.signals {
            if self.seen_signals.insert(id) {
                self.signals.push((id, name, value));
            }
        }
        let mut i = 0;
        while i < self.signals.len() {
            let name = &self.signals[i].1;
            let waiting = self.nodes.iter().find(|n| n.parked.as_ref().is_some_and(|(_, w)| w == name)).map(|n| n.id);
            match waiting {
                Some(node) => {
                    let (id, _, value) = self.signals.remove(i);
                    let seq = self.nodes[node as usize].parked.as_ref().map(|(s, _)| *s).unwrap_or_default();
                    self.writes.push(Write::SignalConsumed { id });
                    self.deliver(node, seq, value);
                }
                None => i += 1,
            }
        }
    }
}

fn journal_name(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Random => "random",
        JournalKind::Now => "now",
        JournalKind::Signal => "wait_for",
    }
}
