//! The run core alone: events in, effects out; no process, no database.
//!
//! Each test builds a registry of test tasks, a new run (its root node only) and a [`Core`],
//! then plays the bodies itself: it reads the `Start` actions the core emits and answers them
//! with the events a body would send (spawn, await, journal, wait, finish), and moves time by
//! firing timers at a `now` it chooses. It asserts the writes and actions the user-visible
//! behaviour depends on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Action, Catalog, Config, Core, Effects, Launch, Placement, SharedCapacity, TaskSpec, Time};
use crate::attempt::{Answer, AttemptId, Event};
use crate::call::{JournalKind, Mutation, PromiseScope, SignalWait, SpawnRequest, WireArg};
use crate::error::{Error, ErrorKind};
use crate::journal::Write;
use crate::model::{
    EdgeKind, NodeId, NodeRecord, NodeState, RunControl, RunId, RunRecord, RunSnapshot, RunState, StoredArg,
};
use crate::policy::{Backoff, Policy};

const RUN: RunId = RunId::new(42);

// ---------------------------------------------------------------------------------------------
// Test tasks
// ---------------------------------------------------------------------------------------------

/// What the core reads of a task; the tests build them as they need.
type TaskDescriptor = TaskSpec;

/// A plain task with the default policy.
fn task(name: &'static str) -> TaskSpec {
    TaskSpec { name, policy: Policy::DEFAULT, label: None, color: None, promises: &[], may_spawn: false }
}

/// A workflow: a task that may spawn.
fn workflow(name: &'static str) -> TaskSpec {
    TaskSpec { may_spawn: true, ..task(name) }
}

/// A task with `retries` and `backoff`.
fn retrying(d: TaskSpec, retries: u32, backoff: Backoff) -> TaskSpec {
    TaskSpec { policy: Policy { retries, backoff, ..d.policy }, ..d }
}

/// The tasks of a test, by name.
struct Tasks(std::collections::BTreeMap<&'static str, &'static TaskSpec>);

impl Catalog for Tasks {
    fn spec(&self, name: &str) -> Option<&'static TaskSpec> {
        self.0.get(name).copied()
    }
}

/// A catalog of these tasks, for the life of the test binary.
fn registry(tasks: Vec<TaskSpec>) -> &'static dyn Catalog {
    let mut all = std::collections::BTreeMap::new();
    for t in tasks {
        assert!(all.insert(t.name, &*Box::leak(Box::new(t))).is_none(), "test task names are unique");
    }
    Box::leak(Box::new(Tasks(all)))
}

/// The wall clock of the tests' runs when they begin (ms since the Unix epoch).
const WALL: i64 = 1_700_000_000_000;

/// An instant of the tests' clock, with the wall clock at [`WALL`].
fn at(instant: Instant) -> Time {
    Time { instant, unix_ms: WALL }
}

/// Cores and memory counted across the runs that share one, as a process's machine does.
#[derive(Debug, Default)]
struct Machine(std::sync::Mutex<crate::run::Capacity>, std::sync::atomic::AtomicU64);

impl Machine {
    fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::default()
    }

    /// How many times something was given back.
    fn frees(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl SharedCapacity for Machine {
    fn try_take(&self, ask: crate::run::Capacity, cap: crate::run::Capacity) -> bool {
        let mut used = self.0.lock().unwrap();
        let fits = ask.fits(*used, cap);
        if fits {
            *used = used.plus(ask);
        }
        fits
    }

    fn take(&self, ask: crate::run::Capacity) {
        let mut used = self.0.lock().unwrap();
        *used = used.plus(ask);
    }

    fn free(&self, ask: crate::run::Capacity) {
        let mut used = self.0.lock().unwrap();
        *used = used.minus(ask);
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The root node of a new run of `workflow`.
fn root_record(workflow: &str, input: &Value) -> NodeRecord {
    let args = input
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), StoredArg::Value(v.clone()))).collect())
        .unwrap_or_default();
    NodeRecord {
        id: NodeId::ROOT,
        parent: None,
        seq: None,
        task: workflow.to_string(),
        state: NodeState::Pending,
        args,
        ..Default::default()
    }
}

/// The snapshot of a run with these nodes and nothing else.
fn snapshot(workflow: &str, nodes: Vec<NodeRecord>) -> RunSnapshot {
    RunSnapshot {
        run: RunRecord {
            id: RUN,
            workflow: workflow.to_string(),
            state: RunState::Queued,
            input: json!({}),
            output: None,
            error: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            executor: "inline".into(),
            parallelism: 4,
            owner: None,
        },
        nodes,
        edges: Vec::new(),
        attempts: Vec::new(),
        journal: Vec::new(),
        promises: Vec::new(),
        waits: Vec::new(),
        delivered: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations and arguments
// ---------------------------------------------------------------------------------------------

fn v(value: Value) -> WireArg {
    WireArg::Value(value)
}

/// The output of the sibling spawned at `seq`.
fn out(seq: u32) -> WireArg {
    WireArg::Handle(seq)
}

fn spawn(seq: u32, task: &str, args: &[(&str, WireArg)]) -> Mutation {
    let args = args.iter().map(|(n, a)| (n.to_string(), a.clone())).collect();
    Mutation::Spawn(SpawnRequest { seq, task: task.into(), args, after: Vec::new(), policy: None })
}

/// A spawn made after the body observed the results of its children `after` (by seq).
fn spawn_after(seq: u32, task: &str, args: &[(&str, WireArg)], after: &[u32]) -> Mutation {
    let args = args.iter().map(|(n, a)| (n.to_string(), a.clone())).collect();
    Mutation::Spawn(SpawnRequest { seq, task: task.into(), args, after: after.to_vec(), policy: None })
}

fn edge(from: u32, to: u32) -> Mutation {
    Mutation::Edge { from, to }
}

fn promise(seq: u32, text: &str) -> Mutation {
    Mutation::Promise { seq, text: text.into(), scope: PromiseScope::Subtree }
}

fn wait(seq: u32, name: &str, timeout_ms: Option<u64>, default: Option<Value>) -> SignalWait {
    SignalWait { seq, name: name.into(), schema: json!({}), timeout_ms, default }
}

fn signals(list: &[(i64, &str, Value)]) -> RunControl {
    RunControl {
        signals: list.iter().map(|(id, n, v)| (*id, n.to_string(), v.clone())).collect(),
        ..Default::default()
    }
}

fn task_error(message: &str) -> Error {
    Error::new(ErrorKind::Task, message)
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// A run core and the time it is at.
struct Harness {
    core: Core,
    now: Instant,
    /// The wall clock, which moves with `now`.
    wall: i64,
}

impl Harness {
    /// A new run of the first task (the workflow), with the others registered beside it.
    fn new(tasks: Vec<TaskDescriptor>) -> Self {
        Self::with(tasks, 4, None)
    }

    fn with(tasks: Vec<TaskDescriptor>, parallelism: usize, park_after: Option<Duration>) -> Self {
        Self::sized(tasks, parallelism, park_after, crate::run::Capacity::UNLIMITED)
    }

    fn sized(
        tasks: Vec<TaskDescriptor>,
        parallelism: usize,
        park_after: Option<Duration>,
        capacity: crate::run::Capacity,
    ) -> Self {
        Self::on(tasks, parallelism, park_after, capacity, None)
    }

    fn on(
        tasks: Vec<TaskDescriptor>,
        parallelism: usize,
        park_after: Option<Duration>,
        capacity: crate::run::Capacity,
        machine: Option<std::sync::Arc<Machine>>,
    ) -> Self {
        let root = tasks[0].name;
        let registry = registry(tasks);
        let now = Instant::now();
        let machine = machine.map(|m| m as std::sync::Arc<dyn SharedCapacity>);
        let config =
            Config { executor: "inline", placement: Placement::Local, parallelism, park_after, capacity, machine };
        let core = Core::new(snapshot(root, vec![root_record(root, &json!({}))]), registry, config, at(now))
            .expect("a new run loads");
        Self { core, now, wall: WALL }
    }

    /// The time the harness is at, on both clocks.
    fn time(&self) -> Time {
        Time { instant: self.now, unix_ms: self.wall }
    }

    /// What the core asks after an input, once it started what it can (as the driver does).
    fn effects(&mut self) -> Effects {
        self.core.start_ready(self.time());
        self.core.take_effects()
    }

    /// Begins the run and returns the root's first attempt.
    fn start_root(&mut self) -> AttemptId {
        self.core.begin(self.time());
        let fx = self.effects();
        let root = started(&fx, NodeId::ROOT);
        assert_eq!(root, AttemptId { run: RUN, node: NodeId::ROOT, attempt: 1 });
        root
    }

    fn send(&mut self, event: Event) -> Effects {
        self.core.handle(self.time(), event);
        self.effects()
    }

    fn mutate(&mut self, at: AttemptId, mutations: Vec<Mutation>) -> Effects {
        self.send(Event::Mutate { at, mutations })
    }

    fn spawn(&mut self, at: AttemptId, seq: u32, task: &str, args: &[(&str, WireArg)]) -> Effects {
        self.mutate(at, vec![spawn(seq, task, args)])
    }

    fn await_(&mut self, at: AttemptId, call: u64, seq: u32) -> Effects {
        self.send(Event::Await { at, call, seq })
    }

    fn journal(&mut self, at: AttemptId, call: u64, seq: u32, kind: JournalKind, value: Value) -> Effects {
        self.send(Event::Journal { at, call, seq, kind, value })
    }

    fn wait(&mut self, at: AttemptId, call: u64, wait: SignalWait) -> Effects {
        self.send(Event::Wait { at, call, wait })
    }

    fn finish(&mut self, at: AttemptId, result: Result<Value, Error>) -> Effects {
        self.send(Event::Finished { at, result })
    }

    fn succeed(&mut self, at: AttemptId, output: Value) -> Effects {
        self.finish(at, Ok(output))
    }

    fn control(&mut self, control: RunControl) -> Effects {
        self.core.control(self.time(), control);
        self.effects()
    }

    /// Moves time on by `d` and fires the timers that are due.
    fn advance(&mut self, d: Duration) -> Effects {
        self.now += d;
        self.wall += i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.core.fire_timers(self.time());
        self.effects()
    }

    fn state(&self, node: NodeId) -> NodeState {
        self.core.nodes[node.index()].state
    }

    /// Every node is in a final state and the core counts none as active.
    fn assert_all_final(&self) {
        for n in &self.core.nodes {
            assert!(n.state.is_terminal(), "node {} (`{}`) is left {:?}", n.id, n.task.name, n.state);
        }
        assert_eq!(self.core.active(), 0);
    }

    /// Succeeds every attempt started in `fx` and every one those unblock (children first,
    /// each with a `null` output), then the root `root` with `output`; the run must succeed.
    fn complete(&mut self, fx: Effects, root: AttemptId, output: Value) {
        let mut queue = starts(&fx);
        while let Some(at) = queue.pop() {
            let fx = self.succeed(at, Value::Null);
            queue.extend(starts(&fx));
        }
        self.succeed(root, output.clone());
        self.assert_all_final();
        let outcome = self.core.finish();
        assert_eq!(outcome.state, RunState::Succeeded, "{:?}", outcome.error);
        assert_eq!(outcome.output, Some(output));
    }

    /// The run was terminated by the broken promise `text`.
    fn assert_terminated(&mut self, text: &str) -> Error {
        self.assert_all_final();
        let outcome = self.core.finish();
        assert_eq!(outcome.state, RunState::Terminated);
        let error = outcome.error.expect("a terminated run says why");
        assert_eq!(error.kind(), ErrorKind::Promise);
        assert!(error.message().contains(&format!("broken promise `{text}`")), "{}", error.message());
        error
    }
}

// ---------------------------------------------------------------------------------------------
// Reading effects
// ---------------------------------------------------------------------------------------------

fn launches(fx: &Effects) -> Vec<&Launch> {
    fx.actions.iter().filter_map(|a| if let Action::Start(l) = a { Some(l) } else { None }).collect()
}

fn starts(fx: &Effects) -> Vec<AttemptId> {
    launches(fx).iter().map(|l| l.at).collect()
}

/// The launch of `node` in `fx`.
fn launch(fx: &Effects, node: NodeId) -> &Launch {
    launches(fx)
        .into_iter()
        .find(|l| l.at.node == node)
        .unwrap_or_else(|| panic!("node {node} was not started; actions: {:?}", fx.actions))
}

/// The attempt of `node` started in `fx`.
fn started(fx: &Effects, node: NodeId) -> AttemptId {
    launch(fx, node).at
}

fn stops(fx: &Effects) -> Vec<AttemptId> {
    fx.actions.iter().filter_map(|a| if let Action::Stop(at) = a { Some(*at) } else { None }).collect()
}

fn answers(fx: &Effects) -> Vec<(AttemptId, u64, &Answer)> {
    fx.actions
        .iter()
        .filter_map(|a| if let Action::Answer { at, call, answer } = a { Some((*at, *call, answer)) } else { None })
        .collect()
}

/// What call `call` of attempt `at` was answered with.
fn answer(fx: &Effects, at: AttemptId, call: u64) -> &Answer {
    answers(fx)
        .into_iter()
        .find(|(a, c, _)| *a == at && *c == call)
        .map(|(_, _, answer)| answer)
        .unwrap_or_else(|| panic!("call {call} of {at:?} was not answered; actions: {:?}", fx.actions))
}

/// The awaited result call `call` of attempt `at` was answered with.
fn resolved(fx: &Effects, at: AttemptId, call: u64) -> Result<Value, Error> {
    match answer(fx, at, call) {
        Answer::Resolved(r) => r.clone(),
        other => panic!("expected an awaited result, got {other:?}"),
    }
}

/// The value call `call` of attempt `at` was answered with.
fn value(fx: &Effects, at: AttemptId, call: u64) -> Value {
    match answer(fx, at, call) {
        Answer::Value(v) => v.clone(),
        other => panic!("expected a value, got {other:?}"),
    }
}

/// The nodes inserted: (id, task).
fn inserted(fx: &Effects) -> Vec<(NodeId, String)> {
    fx.writes
        .iter()
        .filter_map(|w| if let Write::InsertNode { node, .. } = w { Some((node.id, node.task.clone())) } else { None })
        .collect()
}

fn edges(fx: &Effects) -> Vec<(NodeId, NodeId, EdgeKind)> {
    fx.writes
        .iter()
        .filter_map(
            |w| if let Write::InsertEdge { edge, .. } = w { Some((edge.from, edge.to, edge.kind)) } else { None },
        )
        .collect()
}

/// How `node` ended in `fx`: (state, output, error).
fn node_finished(fx: &Effects, node: NodeId) -> Option<(NodeState, Option<Value>, Option<Error>)> {
    fx.writes.iter().find_map(|w| match w {
        Write::NodeFinished { node: n, state, output, error, .. } if *n == node => {
            Some((*state, output.clone(), error.clone()))
        }
        _ => None,
    })
}

/// How attempt `attempt` of `node` ended in `fx`: (state, error).
fn attempt_ended(fx: &Effects, node: NodeId, attempt: u32) -> Option<(NodeState, Option<Error>)> {
    fx.writes.iter().find_map(|w| match w {
        Write::AttemptFinished { node: n, attempt: a, state, error, .. } if *n == node && *a == attempt => {
            Some((*state, error.clone()))
        }
        _ => None,
    })
}

/// The error attempt `attempt` of `node` failed with in `fx`.
fn attempt_error(fx: &Effects, node: NodeId, attempt: u32) -> Error {
    match attempt_ended(fx, node, attempt) {
        Some((NodeState::Failed, Some(e))) => e,
        other => panic!("attempt {attempt} of node {node} did not fail: {other:?}; writes: {:?}", fx.writes),
    }
}

/// The states `node` was moved to (without finishing) in `fx`.
fn node_states(fx: &Effects, node: NodeId) -> Vec<NodeState> {
    fx.writes
        .iter()
        .filter_map(|w| match w {
            Write::NodeState { node: n, state, .. } if *n == node => Some(*state),
            _ => None,
        })
        .collect()
}

/// The journal writes in `fx`: (node, seq, kind, value).
fn journaled(fx: &Effects) -> Vec<(NodeId, u32, JournalKind, Value)> {
    fx.writes
        .iter()
        .filter_map(|w| match w {
            Write::Journal { node, seq, kind, value, .. } => Some((*node, *seq, *kind, value.clone())),
            _ => None,
        })
        .collect()
}

fn consumed(fx: &Effects) -> Vec<i64> {
    fx.writes.iter().filter_map(|w| if let Write::SignalConsumed { id } = w { Some(*id) } else { None }).collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

// ---------------------------------------------------------------------------------------------
// Spawn, await, finish
// ---------------------------------------------------------------------------------------------

#[test]
fn a_child_output_resolves_the_await_of_its_parent() {
    let mut h = Harness::new(vec![workflow("flow"), task("extract"), task("load")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "extract", &[("x", v(json!(1)))]), spawn(1, "load", &[("rows", out(0))])]);
    assert_eq!(inserted(&fx), [(NodeId::new(1), "extract".into()), (NodeId::new(2), "load".into())]);
    assert_eq!(edges(&fx), [(NodeId::new(1), NodeId::new(2), EdgeKind::Data)]);
    assert_eq!(starts(&fx), [AttemptId { run: RUN, node: NodeId::new(1), attempt: 1 }], "`load` waits for `extract`");
    assert_eq!(launch(&fx, NodeId::new(1)).input, json!({"x": 1}));
    assert_eq!(h.state(NodeId::new(2)), NodeState::Pending);

    let fx = h.await_(root, 7, 1);
    assert!(answers(&fx).is_empty(), "nothing to answer yet");
    assert_eq!(node_states(&fx, NodeId::ROOT), [NodeState::Waiting]);

    let fx = h.succeed(AttemptId { run: RUN, node: NodeId::new(1), attempt: 1 }, json!([1, 2]));
    assert_eq!(node_finished(&fx, NodeId::new(1)), Some((NodeState::Succeeded, Some(json!([1, 2])), None)));
    assert_eq!(
        launch(&fx, NodeId::new(2)).input,
        json!({"rows": [1, 2]}),
        "a handle argument takes the upstream output"
    );

    let fx = h.succeed(started(&fx, NodeId::new(2)), json!(3));
    assert_eq!(node_finished(&fx, NodeId::new(2)).map(|f| f.0), Some(NodeState::Succeeded));
    assert_eq!(resolved(&fx, root, 7), Ok(json!(3)));
    assert_eq!(node_states(&fx, NodeId::ROOT), [NodeState::Running]);

    let fx = h.succeed(root, json!({"loaded": 3}));
    assert_eq!(node_finished(&fx, NodeId::ROOT), Some((NodeState::Succeeded, Some(json!({"loaded": 3})), None)));
    h.assert_all_final();
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Succeeded);
    assert_eq!(outcome.output, Some(json!({"loaded": 3})));
    let fx = h.core.take_effects();
    assert!(fx.writes.iter().any(|w| matches!(w, Write::RunState { state: RunState::Succeeded, .. })));
}

#[test]
fn a_failed_child_fails_the_await_and_skips_what_runs_after_it() {
    let mut h = Harness::new(vec![workflow("flow"), task("extract"), task("load")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "extract", &[]), spawn(1, "load", &[("rows", out(0))])]);
    let extract = started(&fx, NodeId::new(1));
    h.await_(root, 1, 0);
    let fx = h.finish(extract, Err(task_error("disk full")));
    let (state, _, error) = node_finished(&fx, NodeId::new(2)).expect("`load` ends");
    assert_eq!(state, NodeState::Skipped);
    assert_eq!(error.map(|e| e.kind()), Some(ErrorKind::Upstream));
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    assert_eq!(e.kind(), ErrorKind::Child);
    assert!(e.message().contains("disk full"), "{}", e.message());
}

#[test]
fn higher_priority_starts_first_within_the_parallelism() {
    let mut high = task("high");
    high.policy.priority = 5;
    let mut h = Harness::with(vec![workflow("flow"), task("low"), high], 2, None);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "low", &[]), spawn(1, "high", &[])]);
    assert_eq!(
        starts(&fx),
        [AttemptId { run: RUN, node: NodeId::new(2), attempt: 1 }],
        "one slot is left; `high` takes it"
    );
    // Awaiting frees the root's slot.
    let fx = h.await_(root, 1, 1);
    assert_eq!(starts(&fx), [AttemptId { run: RUN, node: NodeId::new(1), attempt: 1 }]);
}

/// An `inline` run of `parallelism` with no limit on cores or memory.
fn inline_config(parallelism: usize) -> Config {
    Config {
        executor: "inline",
        placement: Placement::Local,
        parallelism,
        park_after: None,
        capacity: crate::run::Capacity::UNLIMITED,
        machine: None,
    }
}

/// `d` asking for `cores` and `memory_mb`.
fn sized(d: TaskDescriptor, cores: u32, memory_mb: u64) -> TaskDescriptor {
    TaskDescriptor { policy: Policy { cores, memory_mb, ..d.policy }, ..d }
}

/// A harness whose run shares `cores` and `memory_mb` among its sized nodes.
fn on_machine(tasks: Vec<TaskDescriptor>, cores: u32, memory_mb: u64) -> Harness {
    Harness::sized(tasks, 16, None, crate::run::Capacity { cores, memory_mb })
}

/// The nodes started in `fx`, in order.
fn started_nodes(fx: &Effects) -> Vec<usize> {
    starts(fx).iter().map(|at| at.node.index()).collect()
}

fn attempt(node: usize) -> AttemptId {
    AttemptId { run: RUN, node: NodeId::at(node), attempt: 1 }
}

#[test]
fn sized_nodes_start_only_when_their_cores_are_free() {
    let mut h = on_machine(vec![workflow("flow"), sized(task("two"), 2, 0)], 4, 1024);
    let root = h.start_root();
    let fx = h.mutate(root, (0..3).map(|i| spawn(i, "two", &[])).collect());
    assert_eq!(started_nodes(&fx), [1, 2], "4 cores: two of the 2-core nodes run, the third waits");
    assert_eq!(h.state(NodeId::at(3)), NodeState::Ready);
    let fx = h.succeed(attempt(2), json!(null));
    assert_eq!(started_nodes(&fx), [3]);
    let fx = h.succeed(attempt(1), json!(null));
    assert_eq!(started_nodes(&fx), Vec::<usize>::new());
}

#[test]
fn runs_that_share_a_machine_never_hold_more_than_it_offers_between_them() {
    let machine = Machine::new();
    let cap = crate::run::Capacity { cores: 3, memory_mb: 1024 };
    let run = || Harness::on(vec![workflow("flow"), sized(task("two"), 2, 0)], 16, None, cap, Some(machine.clone()));
    let (mut a, mut b) = (run(), run());
    let (root_a, root_b) = (a.start_root(), b.start_root());
    assert_eq!(started_nodes(&a.mutate(root_a, vec![spawn(0, "two", &[])])), [1]);
    let fx = b.mutate(root_b, vec![spawn(0, "two", &[])]);
    assert_eq!(started_nodes(&fx), Vec::<usize>::new(), "one of the 3 cores is left: b's node waits");
    assert!(b.core.waits_for_room());
    let freed = machine.frees();
    a.succeed(attempt(1), json!(null));
    assert!(machine.frees() > freed, "what a's node held is given back to the machine");
    assert_eq!(started_nodes(&b.effects()), [1], "b's node starts in the cores a's gave back");
    let fx = a.mutate(root_a, vec![spawn(1, "two", &[])]);
    assert_eq!(started_nodes(&fx), Vec::<usize>::new(), "b holds 2 of the 3 cores now");
    // A run whose orchestrator stops with attempts running gives their cores back.
    drop(b);
    assert_eq!(started_nodes(&a.effects()), [2]);
}

#[test]
fn memory_is_shared_like_cores() {
    let mut h = on_machine(vec![workflow("flow"), sized(task("big"), 0, 600)], 64, 1000);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "big", &[]), spawn(1, "big", &[])]);
    assert_eq!(started_nodes(&fx), [1], "1000 MiB hold one 600 MiB node at a time");
    let fx = h.succeed(attempt(1), json!(null));
    assert_eq!(started_nodes(&fx), [2]);
}

#[test]
fn sized_nodes_start_by_priority_and_the_first_that_does_not_fit_holds_back_the_rest() {
    let mut urgent = sized(task("urgent"), 3, 0);
    urgent.policy.priority = 5;
    let tasks = vec![workflow("flow"), sized(task("two"), 2, 0), urgent, sized(task("one"), 1, 0), task("plain")];
    let mut h = on_machine(tasks, 4, 1024);
    let root = h.start_root();
    // Spawned together, the higher priority starts first: `urgent` (3 cores) runs, the
    // 2-core node waits.
    let fx = h.mutate(root, vec![spawn(0, "two", &[]), spawn(1, "urgent", &[])]);
    assert_eq!(started_nodes(&fx), [2]);
    let fx = h.succeed(attempt(2), json!(null));
    assert_eq!(started_nodes(&fx), [1]);
    // Node 1 (2 cores) runs; a second `urgent` (3 cores) does not fit in the 2 cores left.
    let fx = h.spawn(root, 2, "urgent", &[]);
    assert_eq!(started_nodes(&fx), Vec::<usize>::new());
    // A 1-core node would fit, but the 3 cores `urgent` waits for are reserved for it: it is
    // not passed. A node that asks for nothing is not held back.
    let fx = h.mutate(root, vec![spawn(3, "one", &[]), spawn(4, "plain", &[])]);
    assert_eq!(started_nodes(&fx), [5]);
    assert_eq!(h.state(NodeId::at(4)), NodeState::Ready);
    // The 2-core node ends: `urgent` starts first, then the 1-core node fits beside it.
    let fx = h.succeed(attempt(1), json!(null));
    assert_eq!(started_nodes(&fx), [3, 4]);
}

#[test]
fn a_body_awaiting_its_children_holds_no_cores() {
    let parent = TaskDescriptor { may_spawn: true, ..sized(task("parent"), 2, 0) };
    let mut h = on_machine(vec![workflow("flow"), parent, sized(task("two"), 2, 0)], 2, 1024);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "parent", &[]);
    assert_eq!(started_nodes(&fx), [1]);
    let fx = h.spawn(attempt(1), 0, "two", &[]);
    assert_eq!(started_nodes(&fx), Vec::<usize>::new(), "the parent holds both cores");
    let fx = h.await_(attempt(1), 1, 0);
    assert_eq!(started_nodes(&fx), [2], "awaiting, it holds none");
    // The child ends: the parent's body goes on, holding its cores again.
    let fx = h.succeed(attempt(2), json!(7));
    assert_eq!(resolved(&fx, attempt(1), 1), Ok(json!(7)));
    assert_eq!(h.state(NodeId::at(1)), NodeState::Running);
    let fx = h.spawn(attempt(1), 1, "two", &[]);
    assert_eq!(started_nodes(&fx), Vec::<usize>::new());
}

#[test]
fn a_node_asking_for_more_than_the_machine_offers_fails_for_good_without_starting() {
    let tasks = vec![workflow("flow"), sized(task("wide"), 8, 0), sized(task("fat"), 1, 4096), task("plain")];
    let mut h = on_machine(tasks, 4, 2048);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "wide", &[]), spawn(1, "fat", &[]), spawn(2, "plain", &[])]);
    assert_eq!(started_nodes(&fx), [3]);
    let (state, _, error) = node_finished(&fx, NodeId::at(1)).expect("`wide` ended");
    let error = error.expect("with an error");
    assert_eq!((state, error.kind()), (NodeState::Failed, ErrorKind::Fatal));
    assert_eq!(error.message(), "node 1 (`wide`) asks for 8 cores; this machine offers 4 (see --cores)");
    let (state, _, error) = node_finished(&fx, NodeId::at(2)).expect("`fat` ended");
    assert_eq!(state, NodeState::Failed);
    assert_eq!(
        error.expect("with an error").message(),
        "node 2 (`fat`) asks for 4096 MiB of memory; this machine offers 2048 MiB (see --memory-mb)"
    );
    assert!(attempt_ended(&fx, NodeId::at(1), 1).is_none(), "no attempt was started");
}

#[test]
fn a_node_of_a_named_queue_holds_no_local_cores() {
    let mut gpu = sized(task("gpu"), 8, 0);
    gpu.policy.queue = "gpu";
    let mut h = on_machine(vec![workflow("flow"), gpu, sized(task("two"), 2, 0)], 2, 1024);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "gpu", &[]), spawn(1, "two", &[])]);
    // The gpu node goes to its queue's workers (not started here, not refused); the local
    // 2-core node runs beside it.
    assert_eq!(started_nodes(&fx), [2]);
    assert_eq!(h.state(NodeId::at(1)), NodeState::Running);
}

#[test]
fn a_task_not_marked_spawns_cannot_spawn() {
    let mut h = Harness::new(vec![workflow("flow"), task("plain"), task("leaf")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "plain", &[]);
    let plain = started(&fx, NodeId::new(1));
    let fx = h.spawn(plain, 0, "leaf", &[]);
    assert!(inserted(&fx).is_empty());
    let e = attempt_error(&fx, NodeId::new(1), 1);
    assert_eq!(e.kind(), ErrorKind::Graph);
    assert!(e.message().contains("#[task(spawns)]"), "{}", e.message());
}

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

/// A workflow whose root (one retry after 1s) spawned `leaf(x=1)`, got its output 5 and then
/// failed; returns the harness and the root's second attempt.
fn replaying_root() -> (Harness, AttemptId) {
    let mut h = Harness::new(vec![retrying(workflow("flow"), 1, Backoff::Fixed(secs(1))), task("leaf"), task("other")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "leaf", &[("x", v(json!(1)))]);
    let leaf = started(&fx, NodeId::new(1));
    h.await_(root, 1, 0);
    let fx = h.succeed(leaf, json!(5));
    assert_eq!(resolved(&fx, root, 1), Ok(json!(5)));
    let fx = h.finish(root, Err(task_error("boom")));
    assert_eq!(attempt_ended(&fx, NodeId::ROOT, 1).map(|a| a.0), Some(NodeState::Failed));
    assert!(starts(&fx).is_empty());
    let fx = h.advance(secs(1));
    let again = started(&fx, NodeId::ROOT);
    assert_eq!(again.attempt, 2);
    (h, again)
}

#[test]
fn a_replayed_spawn_binds_to_the_recorded_child_and_its_output() {
    let (mut h, root) = replaying_root();
    let fx = h.spawn(root, 0, "leaf", &[("x", v(json!(1)))]);
    assert!(inserted(&fx).is_empty(), "no new node: {:?}", fx.writes);
    assert!(starts(&fx).is_empty(), "the recorded child does not run again");
    let fx = h.await_(root, 1, 0);
    assert_eq!(resolved(&fx, root, 1), Ok(json!(5)), "answered at once from the record");
    assert_eq!(h.state(NodeId::ROOT), NodeState::Running);
    let fx = h.succeed(root, json!(5));
    assert_eq!(node_finished(&fx, NodeId::ROOT).map(|f| f.0), Some(NodeState::Succeeded));
    assert_eq!(h.core.nodes[1].attempts, 1);
    assert_eq!(h.core.finish().state, RunState::Succeeded);
}

#[test]
fn a_replay_that_spawns_another_task_is_non_deterministic() {
    let (mut h, root) = replaying_root();
    let fx = h.spawn(root, 0, "other", &[("x", v(json!(1)))]);
    assert!(inserted(&fx).is_empty());
    assert_eq!(stops(&fx), [root], "the body is stopped");
    let e = attempt_error(&fx, NodeId::ROOT, 2);
    assert_eq!(e.kind(), ErrorKind::NonDeterministic);
    assert!(e.message().contains("at call 0"), "{}", e.message());
    assert!(e.message().contains("spawn `leaf` with"), "{}", e.message());
    assert!(e.message().contains("spawn `other` with"), "{}", e.message());
    // Not retryable: the run fails with it.
    assert_eq!(node_finished(&fx, NodeId::ROOT).map(|f| f.0), Some(NodeState::Failed));
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Failed);
    assert_eq!(outcome.error.map(|e| e.kind()), Some(ErrorKind::NonDeterministic));
}

#[test]
fn a_replay_that_spawns_with_other_arguments_is_non_deterministic() {
    let (mut h, root) = replaying_root();
    let fx = h.spawn(root, 0, "leaf", &[("x", v(json!(2)))]);
    let e = attempt_error(&fx, NodeId::ROOT, 2);
    assert_eq!(e.kind(), ErrorKind::NonDeterministic);
    assert!(e.message().contains(r#"spawn `leaf` with [["x",{"value":1}]]"#), "{}", e.message());
    assert!(e.message().contains(r#"spawn `leaf` with [["x",{"value":2}]]"#), "{}", e.message());
}

#[test]
fn a_journaled_value_is_recorded_once_and_replayed() {
    let mut h = Harness::new(vec![retrying(workflow("flow"), 2, Backoff::Fixed(secs(1)))]);
    let root = h.start_root();
    let fx = h.journal(root, 1, 0, JournalKind::Random, json!(0.25));
    assert_eq!(value(&fx, root, 1), json!(0.25));
    assert_eq!(journaled(&fx), [(NodeId::ROOT, 0, JournalKind::Random, json!(0.25))]);
    h.finish(root, Err(task_error("flaky")));
    let root = started(&h.advance(secs(1)), NodeId::ROOT);

    let fx = h.journal(root, 1, 0, JournalKind::Random, json!(0.9));
    assert_eq!(value(&fx, root, 1), json!(0.25), "the recorded value, not the new one");
    assert!(journaled(&fx).is_empty(), "recorded once");

    // Another kind of call at the same place is a different body.
    let fx = h.journal(root, 2, 0, JournalKind::Now, json!(1_700_000_000_000_i64));
    let e = attempt_error(&fx, NodeId::ROOT, 2);
    assert_eq!(e.kind(), ErrorKind::NonDeterministic);
    assert!(e.message().contains("`random()`") && e.message().contains("`now()`"), "{}", e.message());
}

#[test]
fn a_spawn_where_the_journal_has_a_value_is_non_deterministic() {
    let mut h = Harness::new(vec![retrying(workflow("flow"), 1, Backoff::Fixed(secs(1))), task("leaf")]);
    let root = h.start_root();
    h.journal(root, 1, 0, JournalKind::Now, json!(1));
    h.finish(root, Err(task_error("flaky")));
    let root = started(&h.advance(secs(1)), NodeId::ROOT);
    let fx = h.spawn(root, 0, "leaf", &[]);
    assert!(inserted(&fx).is_empty());
    let e = attempt_error(&fx, NodeId::ROOT, 2);
    assert_eq!(e.kind(), ErrorKind::NonDeterministic);
    assert!(e.message().contains("`now()`") && e.message().contains("spawn `leaf`"), "{}", e.message());
}

// ---------------------------------------------------------------------------------------------
// Retries, backoff, timeouts, stale events
// ---------------------------------------------------------------------------------------------

#[test]
fn a_failed_attempt_is_retried_after_an_exponential_backoff() {
    let backoff = Backoff::Exponential { base: secs(1), cap: secs(60) };
    let mut h = Harness::new(vec![workflow("flow"), retrying(task("flaky"), 2, backoff)]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "flaky", &[]);
    let first = started(&fx, NodeId::new(1));
    h.await_(root, 1, 0);

    let fx = h.finish(first, Err(task_error("try again")));
    assert_eq!(attempt_ended(&fx, NodeId::new(1), 1).map(|a| a.0), Some(NodeState::Failed));
    assert_eq!(node_states(&fx, NodeId::new(1)), [NodeState::Pending]);
    assert!(node_finished(&fx, NodeId::new(1)).is_none() && answers(&fx).is_empty(), "the node is not done");
    assert_eq!(h.core.next_timer(), Some(h.now + secs(1)));
    assert!(starts(&h.advance(ms(999))).is_empty(), "not before the backoff");
    let second = started(&h.advance(ms(1)), NodeId::new(1));
    assert_eq!(second.attempt, 2);

    h.finish(second, Err(task_error("try again")));
    assert!(starts(&h.advance(ms(1999))).is_empty(), "the second backoff is twice the first");
    let third = started(&h.advance(ms(1)), NodeId::new(1));
    assert_eq!(third.attempt, 3);

    let fx = h.finish(third, Err(task_error("still broken")));
    let (state, _, error) = node_finished(&fx, NodeId::new(1)).expect("out of retries");
    assert_eq!(state, NodeState::Failed);
    assert_eq!(error.map(|e| e.message().to_string()), Some("still broken".into()));
    assert!(resolved(&fx, root, 1).is_err());
    assert_eq!(h.core.next_timer(), None);
}

#[test]
fn a_fatal_error_is_not_retried() {
    let mut h = Harness::new(vec![retrying(workflow("flow"), 3, Backoff::Fixed(secs(1)))]);
    let root = h.start_root();
    let fx = h.finish(root, Err(Error::new(ErrorKind::Fatal, "bad input")));
    assert_eq!(node_finished(&fx, NodeId::ROOT).map(|f| f.0), Some(NodeState::Failed));
    assert_eq!(h.core.finish().state, RunState::Failed);
}

#[test]
fn an_attempt_past_its_timeout_is_stopped_and_failed() {
    let mut slow = task("slow");
    slow.policy.timeout = Some(secs(5));
    let mut h = Harness::new(vec![workflow("flow"), slow]);
    let root = h.start_root();
    let slow = started(&h.spawn(root, 0, "slow", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    assert_eq!(h.core.next_timer(), Some(h.now + secs(5)));
    assert!(stops(&h.advance(ms(4999))).is_empty());

    let fx = h.advance(ms(1));
    assert_eq!(stops(&fx), [slow]);
    let e = attempt_error(&fx, NodeId::new(1), 1);
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.message().contains("timed out after 5s"), "{}", e.message());
    assert_eq!(node_finished(&fx, NodeId::new(1)).map(|f| f.0), Some(NodeState::Failed));
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    assert_eq!(e.kind(), ErrorKind::Timeout, "the parent sees a timeout, not a generic child failure");
    assert!(e.message().contains("node 1 (`slow`) failed: attempt timed out after 5s"), "{}", e.message());

    // The body's own end, arriving late, changes nothing.
    let fx = h.succeed(slow, json!("too late"));
    assert!(fx.writes.is_empty() && fx.actions.is_empty(), "{fx:?}");
    assert_eq!(h.state(NodeId::new(1)), NodeState::Failed);
}

#[test]
fn a_call_that_changes_its_policy_is_retried_and_timed_out_by_it() {
    // The task itself has no retries and no timeout; this call asks for both.
    let mut h = Harness::new(vec![workflow("flow"), task("step")]);
    let root = h.start_root();
    let policy = crate::policy::PolicyOverride {
        retries: Some(1),
        backoff_ms: Some(200),
        timeout_ms: Some(3000),
        priority: Some(5),
        ..Default::default()
    };
    let call =
        SpawnRequest { seq: 0, task: "step".into(), args: Vec::new(), after: Vec::new(), policy: Some(policy.clone()) };
    let fx = h.mutate(root, vec![Mutation::Spawn(call)]);
    let stored = fx.writes.iter().find_map(|w| match w {
        Write::InsertNode { node, .. } => Some(node.policy.clone()),
        _ => None,
    });
    assert_eq!(stored, Some(Some(policy)), "the change is stored with the node");
    let first = started(&fx, NodeId::new(1));
    h.await_(root, 1, 0);
    assert_eq!(h.core.next_timer(), Some(h.now + secs(3)));

    let fx = h.advance(secs(3));
    assert_eq!(stops(&fx), [first]);
    assert_eq!(attempt_error(&fx, NodeId::new(1), 1).kind(), ErrorKind::Timeout);
    assert_eq!(node_states(&fx, NodeId::new(1)), [NodeState::Pending], "one retry is left");
    assert!(starts(&h.advance(ms(199))).is_empty(), "not before the call's backoff");
    let second = started(&h.advance(ms(1)), NodeId::new(1));
    assert_eq!(second.attempt, 2);
    let fx = h.finish(second, Err(task_error("broken")));
    assert_eq!(node_finished(&fx, NodeId::new(1)).map(|f| f.0), Some(NodeState::Failed));
}

#[test]
fn events_of_an_attempt_that_is_no_longer_current_are_ignored() {
    let (mut h, root) = replaying_root();
    let old = AttemptId { attempt: 1, ..root };
    for event in [
        Event::Mutate { at: old, mutations: vec![spawn(3, "leaf", &[])] },
        Event::Await { at: old, call: 9, seq: 0 },
        Event::Journal { at: old, call: 9, seq: 4, kind: JournalKind::Random, value: json!(1) },
        Event::Wait { at: old, call: 9, wait: wait(5, "go", None, None) },
        Event::Finished { at: old, result: Ok(json!("stale")) },
        // Another run's attempt with the same node and number.
        Event::Finished { at: AttemptId { run: RunId::new(RUN.get() + 1), ..root }, result: Ok(json!("not mine")) },
    ] {
        let fx = h.send(event);
        assert!(fx.writes.is_empty() && fx.actions.is_empty(), "{fx:?}");
    }
    assert_eq!(h.state(NodeId::ROOT), NodeState::Running);
    let fx = h.succeed(root, json!("current"));
    assert_eq!(node_finished(&fx, NodeId::ROOT).and_then(|f| f.1), Some(json!("current")));
}

// ---------------------------------------------------------------------------------------------
// Cancellation
// ---------------------------------------------------------------------------------------------

#[test]
fn cancelling_ends_every_node_and_stops_every_attempt() {
    let mut h = Harness::with(vec![workflow("flow"), task("a"), task("b")], 2, None);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[]), spawn(2, "b", &[("x", out(0))])]);
    let a = started(&fx, NodeId::new(1));
    assert_eq!(h.state(NodeId::new(2)), NodeState::Ready, "no slot left for it");
    assert_eq!(h.state(NodeId::new(3)), NodeState::Pending);

    h.core.cancel("cancelled with `cancel`".into());
    let fx = h.effects();
    let mut stopped = stops(&fx);
    stopped.sort();
    assert_eq!(stopped, [root, a]);
    for node in 0..4 {
        assert_eq!(node_finished(&fx, NodeId::new(node)).map(|f| f.0), Some(NodeState::Cancelled), "node {node}");
    }
    assert!(starts(&fx).is_empty(), "nothing starts in a cancelled run");
    h.assert_all_final();
    assert!(h.core.is_cancelled());
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Cancelled);
    assert_eq!(outcome.error.map(|e| e.kind()), Some(ErrorKind::Cancelled));
}

#[test]
fn a_cancel_request_from_control_cancels_the_run() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    let fx = h.control(RunControl { cancel_requested: true, ..Default::default() });
    assert_eq!(stops(&fx), [root]);
    h.assert_all_final();
    assert_eq!(h.core.finish().state, RunState::Cancelled);
}

#[test]
fn cancelling_one_node_stops_its_attempt_without_retry_and_its_parent_sees_it() {
    let a = retrying(task("a"), 3, Backoff::Fixed(Duration::from_millis(10)));
    let mut h = Harness::new(vec![workflow("flow"), a, task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[])]);
    let a = started(&fx, NodeId::new(1));
    started(&fx, NodeId::new(2));
    h.await_(root, 1, 0);
    let fx = h.control(RunControl { cancel_nodes: vec![(7, NodeId::new(1))], ..Default::default() });
    assert_eq!(stops(&fx), [a], "only its attempt stops");
    assert!(fx.writes.iter().any(|w| matches!(w, Write::NodeCancelConsumed { id: 7 })));
    assert_eq!(node_finished(&fx, NodeId::new(1)).map(|f| f.0), Some(NodeState::Cancelled));
    assert!(starts(&fx).is_empty(), "a cancelled node is not retried");
    assert_eq!(h.state(NodeId::new(2)), NodeState::Running, "the rest of the run goes on");
    let answered = fx.actions.iter().any(|x| {
        matches!(x, Action::Answer { at, answer: Answer::Resolved(Err(e)), .. } if *at == root && e.kind() == ErrorKind::Killed)
    });
    assert!(answered, "the awaiting parent sees a killed node: {:?}", fx.actions);
    // The request is taken once: a repeat does nothing.
    let fx = h.control(RunControl { cancel_nodes: vec![(7, NodeId::new(1))], ..Default::default() });
    assert!(stops(&fx).is_empty());
}

#[test]
fn a_lost_attempt_runs_again_at_once_without_using_a_retry() {
    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "a", &[]);
    let mut at = started(&fx, NodeId::new(1));
    // Lost five times in a row: each time it starts again at once (no retries are declared).
    for n in 2..=6 {
        let fx = h.finish(at, Err(Error::new(ErrorKind::Lost, "worker `w` was lost")));
        let fx = if starts(&fx).is_empty() { h.advance(Duration::ZERO) } else { fx };
        at = started(&fx, NodeId::new(1));
        assert_eq!(at.attempt, n);
    }
    // The sixth loss in a row fails the node: a body that takes its worker down does not loop.
    let fx = h.finish(at, Err(Error::new(ErrorKind::Lost, "worker `w` was lost")));
    let fx = if starts(&fx).is_empty() { h.advance(Duration::ZERO) } else { fx };
    assert!(starts(&fx).is_empty());
    assert_eq!(h.state(NodeId::new(1)), NodeState::Failed);
}

#[test]
fn a_paused_run_starts_nothing_until_resumed() {
    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let fx = h.control(RunControl { paused: true, ..Default::default() });
    assert!(fx.writes.iter().any(|w| matches!(w, Write::RunState { state: RunState::Paused, .. })));
    let fx = h.spawn(root, 0, "a", &[]);
    assert!(starts(&fx).is_empty());
    assert_eq!(h.state(NodeId::new(1)), NodeState::Ready);
    let fx = h.control(RunControl::default());
    assert!(fx.writes.iter().any(|w| matches!(w, Write::RunState { state: RunState::Running, .. })));
    started(&fx, NodeId::new(1));
}

// ---------------------------------------------------------------------------------------------
// Promises
// ---------------------------------------------------------------------------------------------

/// Runs the root's `mutations` (one batch) and, when `broken` is none, completes the run; else
/// checks the run was terminated by `text` and the error names `broken`.
fn check_promise(text: &str, mutations: Vec<Mutation>, broken: Option<&str>) {
    let tasks = vec![workflow("flow"), task("a"), task("b"), task("c"), task("m")];
    let mut h = Harness::with(tasks, 16, None);
    let root = h.start_root();
    let fx = h.mutate(root, mutations);
    match broken {
        None => {
            assert!(fx.writes.iter().any(|w| matches!(w, Write::Promise { record, .. } if record.text == text)));
            h.complete(fx, root, json!("kept"));
        }
        Some(what) => {
            let e = attempt_error(&fx, NodeId::ROOT, 1);
            assert_eq!(e.kind(), ErrorKind::Promise);
            assert!(stops(&fx).contains(&root));
            let error = h.assert_terminated(text);
            assert!(error.message().contains(what), "`{text}`: {}", error.message());
            assert!(error.message().contains("declared by node 0"), "{}", error.message());
        }
    }
}

#[test]
fn no_new_nodes() {
    let text = "no new nodes";
    check_promise(text, vec![spawn(0, "a", &[]), promise(1, text)], None);
    check_promise(text, vec![promise(0, text), spawn(1, "a", &[])], Some("spawning `a` from node 0 (`flow`)"));
}

#[test]
fn no_new_edges() {
    let text = "no new edges";
    check_promise(text, vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[])], None);
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])];
    check_promise(text, broken, Some("spawning `b`"));
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), edge(1, 2)];
    check_promise(text, broken, Some("adding edge 1 (`a`) -> 2 (`b`) from node 0"));
}

#[test]
fn only_tasks() {
    let text = "only tasks a, b";
    check_promise(text, vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])], None);
    check_promise(text, vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "c", &[])], Some("spawning `c`"));
}

#[test]
fn only_edges_between() {
    let text = "only edges between a, b";
    let kept = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))]), spawn(3, "c", &[])];
    check_promise(text, kept, None);
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "c", &[("x", out(1))])];
    check_promise(text, broken, Some("spawning `c`"));
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "c", &[]), edge(1, 2)];
    check_promise(text, broken, Some("adding edge 1 (`a`) -> 2 (`c`)"));
}

#[test]
fn no_edges_out_of() {
    let text = "no edges out of a";
    let kept = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), spawn(3, "c", &[("x", out(2))])];
    check_promise(text, kept, None);
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])];
    check_promise(text, broken, Some("spawning `b`"));
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), edge(1, 2)];
    check_promise(text, broken, Some("adding edge 1 (`a`) -> 2 (`b`)"));
}

#[test]
fn no_edges_into() {
    let text = "no edges into b";
    let kept =
        vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "c", &[("x", out(1))]), spawn(3, "b", &[]), edge(3, 2)];
    check_promise(text, kept, None);
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])];
    check_promise(text, broken, Some("spawning `b`"));
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), edge(1, 2)];
    check_promise(text, broken, Some("adding edge 1 (`a`) -> 2 (`b`)"));
}

#[test]
fn edge_promises_on_a_node_cover_data_edges_too() {
    // Node 2 is the second child: a handle passed to it is an edge into `#2`.
    let text = "no edges into #2";
    let kept = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), spawn(3, "c", &[("x", out(1))])];
    check_promise(text, kept, None);
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])];
    check_promise(text, broken, Some("spawning `b` from node 0 (`flow`)"));
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), edge(1, 2)];
    check_promise(text, broken, Some("adding edge 1 (`a`) -> 2 (`b`)"));

    let text = "no edges out of #1";
    let kept = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), spawn(3, "c", &[("x", out(2))])];
    check_promise(text, kept, None);
    let broken = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])];
    check_promise(text, broken, Some("spawning `b`"));
}

#[test]
fn a_shape() {
    let text = "a -> m* -> b";
    let s = |seq, t| spawn(seq, t, &[]);
    // Kept by the right DAG: a -> {m, m} -> b, and a -> b.
    let after_a = |seq, t| spawn(seq, t, &[("x", out(1))]);
    let b = spawn(4, "b", &[("x", out(2)), ("y", out(3))]);
    check_promise(text, vec![promise(0, text), s(1, "a"), after_a(2, "m"), after_a(3, "m"), b], None);
    check_promise(text, vec![promise(0, text), s(1, "a"), after_a(2, "b")], None);
    check_promise(text, vec![promise(0, text), s(1, "m")], Some("spawning `m`"));
    check_promise(text, vec![promise(0, text), s(1, "a"), s(2, "b"), s(3, "m")], Some("spawning `m`"));
    check_promise(text, vec![s(0, "m"), promise(1, text)], Some("the children node 0 already has"));
}

#[test]
fn a_shape_constrains_the_dag_not_the_order_of_creation() {
    // The right tasks in the right order, but nothing runs after anything: broken when the
    // body returns.
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![promise(0, "a -> b"), spawn(1, "a", &[]), spawn(2, "b", &[])]);
    for at in starts(&fx) {
        h.succeed(at, Value::Null);
    }
    h.succeed(root, json!(1));
    let e = h.assert_terminated("a -> b");
    assert!(
        e.message().contains("node 0 (`flow`) finishing with a graph that is not of the shape's form"),
        "{}",
        e.message()
    );

    // A control edge that makes `b` run before `a`: broken by the edge.
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![promise(0, "a -> b"), spawn(1, "a", &[]), spawn(2, "b", &[]), edge(2, 1)]);
    assert!(edges(&fx).is_empty(), "the edge was not applied");
    let e = h.assert_terminated("a -> b");
    assert!(e.message().contains("adding edge 2 (`b`) -> 1 (`a`) from node 0"), "{}", e.message());

    // `b` alone, runs after nothing: no prefix of `a -> b`.
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    h.mutate(root, vec![promise(0, "a -> b"), spawn(1, "b", &[])]);
    let e = h.assert_terminated("a -> b");
    assert!(e.message().contains("spawning `b` from node 0"), "{}", e.message());

    // A spawn that runs after nothing it should: `b` before `a` exists.
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b"), task("m")]);
    let root = h.start_root();
    h.mutate(root, vec![promise(0, "a -> m* -> b"), spawn(1, "a", &[]), spawn(2, "b", &[("x", out(1))])]);
    let fx = h.mutate(root, vec![spawn(3, "m", &[("x", out(2))])]);
    assert!(inserted(&fx).is_empty());
    let e = h.assert_terminated("a -> m* -> b");
    assert!(e.message().contains("spawning `m` from node 0"), "{}", e.message());

    // A child that grows the subtree: its children are in the scope too.
    let spawner = TaskDescriptor { may_spawn: true, ..task("a") };
    let mut h = Harness::new(vec![workflow("flow"), spawner, task("b"), task("c")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![promise(0, "a -> b"), spawn(1, "a", &[])]);
    let a = started(&fx, NodeId::new(1));
    h.spawn(a, 0, "c", &[]);
    let e = h.assert_terminated("a -> b");
    assert!(e.message().contains("spawning `c` from node 1 (`a`)"), "{}", e.message());
}

#[test]
fn a_body_that_returns_before_its_shape_is_complete_breaks_it() {
    let text = "a -> m* -> b";
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("m"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "m", &[])]);
    for at in starts(&fx) {
        h.succeed(at, Value::Null);
    }
    h.succeed(root, json!("early"));
    let error = h.assert_terminated(text);
    assert!(error.message().contains("still needs `"), "{}", error.message());
}

#[test]
fn a_promise_registered_with_a_task_covers_its_subtree() {
    let flow = TaskDescriptor { promises: &["only tasks a, gen"], ..workflow("flow") };
    let gen_ = TaskDescriptor { may_spawn: true, promises: &["no new nodes"], ..task("gen") };
    let mut h = Harness::new(vec![flow, gen_, task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "gen", &[])]);
    assert_eq!(inserted(&fx).len(), 2, "the root's spawns are outside `gen`'s subtree");
    let gen_ = started(&fx, NodeId::new(2));
    let fx = h.spawn(gen_, 0, "a", &[]);
    assert_eq!(attempt_error(&fx, NodeId::new(2), 1).kind(), ErrorKind::Promise);
    let error = h.assert_terminated("no new nodes");
    assert!(error.message().contains("declared by node 2, `gen`"), "{}", error.message());
    assert!(error.message().contains("spawning `a` from node 2 (`gen`)"), "{}", error.message());

    let flow = TaskDescriptor { promises: &["only tasks a, gen"], ..workflow("flow") };
    let mut h = Harness::new(vec![flow, task("a"), task("b")]);
    let root = h.start_root();
    h.spawn(root, 0, "b", &[]);
    h.assert_terminated("only tasks a, gen");
}

#[test]
fn a_run_wide_promise_of_a_child_binds_the_root() {
    let mut h = Harness::new(vec![workflow("flow"), TaskDescriptor { may_spawn: true, ..task("gen") }, task("a")]);
    let root = h.start_root();
    let gen_ = started(&h.spawn(root, 0, "gen", &[]), NodeId::new(1));
    let run_wide = Mutation::Promise { seq: 0, text: "no new nodes".into(), scope: PromiseScope::Run };
    h.mutate(gen_, vec![run_wide]);
    let fx = h.spawn(root, 1, "a", &[]);
    assert!(inserted(&fx).is_empty());
    let error = h.assert_terminated("no new nodes");
    assert!(error.message().contains("declared by node 1, `gen`"), "{}", error.message());
}

#[test]
fn a_promise_that_does_not_parse_fails_the_attempt() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![promise(0, "no new friends")]);
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind(), ErrorKind::Usage);
    assert!(e.message().contains("no new friends"), "{}", e.message());
}

#[test]
fn a_promise_past_the_limits_fails_the_attempt_on_a_small_stack() {
    let worker = std::thread::Builder::new().stack_size(256 * 1024).spawn(|| {
        let deep = format!("{}a{}", "(".repeat(2841), ")".repeat(2841));
        let chain = format!("a{}", "{2}".repeat(2842));
        let mut messages = Vec::new();
        for text in [deep.as_str(), chain.as_str(), "a{100000000}", &"a | ".repeat(100_000)] {
            let mut h = Harness::new(vec![workflow("flow")]);
            let root = h.start_root();
            let fx = h.mutate(root, vec![promise(0, text)]);
            let e = attempt_error(&fx, NodeId::ROOT, 1);
            assert_eq!(e.kind(), ErrorKind::Usage);
            messages.push(e.message().to_string());
        }
        messages
    });
    let messages = worker.expect("thread").join().expect("no stack overflow");
    assert!(messages[0].contains("nests more than 32 levels deep at offset 32"), "{}", messages[0]);
    assert!(messages[1].contains("nests more than 32 levels deep"), "{}", messages[1]);
    assert!(messages[2].contains("the count `100000000` is too large (at most 100000)"), "{}", messages[2]);
    assert!(messages[3].contains("more than 4096 items"), "{}", messages[3]);
    assert!(messages.iter().all(|m| m.len() < 400), "messages quote long texts by their start");
}

#[test]
fn long_shapes_are_checked_and_one_too_complex_terminates_the_run() {
    // A thousand `m*` are one `m*`: a thousand children keep it.
    let text = vec!["m*"; 1000].join(" -> ");
    let mut mutations = vec![promise(0, &text)];
    mutations.extend((1..=1000).map(|i| spawn(i, "m", &[])));
    let tasks = vec![workflow("flow"), task("m")];
    let mut h = Harness::with(tasks, 1001, None);
    let root = h.start_root();
    let fx = h.mutate(root, mutations);
    assert!(fx.writes.iter().any(|w| matches!(w, Write::Promise { record, .. } if record.text == "m*")));
    h.complete(fx, root, json!("kept"));

    // Optional sequences with a common first item: the step gives up, the spawn is refused.
    let text = vec!["(a -> c)? -> (a -> m)?"; 500].join(" -> ");
    check_promise(&text, vec![promise(0, &text), spawn(1, "a", &[])], Some("spawning `a` from node 0 (`flow`)"));
}

// ---------------------------------------------------------------------------------------------
// Control edges
// ---------------------------------------------------------------------------------------------

#[test]
fn a_control_edge_orders_two_children() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[]), edge(0, 1)]);
    assert_eq!(edges(&fx), [(NodeId::new(1), NodeId::new(2), EdgeKind::Control)]);
    assert_eq!(starts(&fx).iter().map(|a| a.node).collect::<Vec<_>>(), [1], "`b` runs after `a`");
    assert_eq!(h.state(NodeId::new(2)), NodeState::Pending);
    let fx = h.succeed(started(&fx, NodeId::new(1)), Value::Null);
    started(&fx, NodeId::new(2));
}

fn edge_labels(fx: &Effects) -> Vec<(NodeId, NodeId, String)> {
    fx.writes
        .iter()
        .filter_map(|w| match w {
            Write::EdgeLabel { from, to, label, .. } => Some((*from, *to, label.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_edge_label_is_written_for_an_edge_of_any_kind_and_nothing_else() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b"), task("c")]);
    let root = h.start_root();
    let label = |from, to, text: &str| Mutation::EdgeLabel { from, to, label: text.into() };
    let fx = h.mutate(
        root,
        vec![
            spawn(0, "a", &[]),
            spawn(1, "b", &[("rows", out(0))]),
            spawn(2, "c", &[]),
            edge(1, 2),
            label(0, 1, "rows"),
            label(1, 2, "then"),
            // No edge `a -> c`, none the other way, no such call: nothing.
            label(0, 2, "none"),
            label(1, 0, "backwards"),
            label(0, 9, "unknown"),
        ],
    );
    let (n1, n2, n3) = (NodeId::new(1), NodeId::new(2), NodeId::new(3));
    assert_eq!(edges(&fx), [(n1, n2, EdgeKind::Data), (n2, n3, EdgeKind::Control)]);
    assert_eq!(edge_labels(&fx), [(n1, n2, "rows".to_string()), (n2, n3, "then".to_string())]);
    assert!(stops(&fx).is_empty() && h.state(NodeId::ROOT) == NodeState::Running, "a label fails nothing");
    // A runs-after edge can be labelled too, once it exists.
    h.succeed(started(&fx, n1), json!(1));
    let fx = h.mutate(root, vec![spawn_after(3, "c", &[], &[0]), label(0, 3, "after a")]);
    let n4 = NodeId::new(4);
    assert_eq!(edges(&fx), [(n1, n4, EdgeKind::After)]);
    assert_eq!(edge_labels(&fx), [(n1, n4, "after a".to_string())]);
}

#[test]
fn an_edge_into_a_started_node_is_refused() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[])]);
    assert_eq!(starts(&fx).len(), 2);
    let fx = h.mutate(root, vec![edge(0, 1)]);
    assert!(edges(&fx).is_empty());
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind(), ErrorKind::Graph);
    assert_eq!(e.message(), "cannot add edge 1 (`a`) -> 2 (`b`): node 2 has already started");
}

#[test]
fn an_edge_that_closes_a_cycle_is_refused() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[("x", out(0))]), edge(1, 0)]);
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind(), ErrorKind::Graph);
    assert_eq!(e.message(), "cannot add edge 2 (`b`) -> 1 (`a`): it would close a cycle");
    assert_eq!(edges(&fx), [(NodeId::new(1), NodeId::new(2), EdgeKind::Data)], "only the data edge");
    h.assert_all_final();
}

// ---------------------------------------------------------------------------------------------
// Runs-after edges
// ---------------------------------------------------------------------------------------------

/// Every edge the core has written so far, sorted: (from, to, kind).
fn all_edges(fxs: &[&Effects]) -> Vec<(u64, u64, EdgeKind)> {
    let mut all: Vec<_> = fxs.iter().flat_map(|fx| edges(fx)).map(|(f, t, k)| (f.get(), t.get(), k)).collect();
    all.sort();
    all
}

/// Plays `A`, then `width` `M`s spawned after `A`'s result, then `B` after theirs; returns the
/// edges written and the harness.
fn map_of_width(width: u32) -> (Harness, Vec<(u64, u64, EdgeKind)>) {
    let mut h = Harness::new(vec![workflow("flow"), task("A"), task("M"), task("B")]);
    let root = h.start_root();
    let mut fxs = vec![h.spawn(root, 0, "A", &[])];
    h.await_(root, 1, 0);
    fxs.push(h.succeed(started(&fxs[0], NodeId::new(1)), json!(10)));
    let ms: Vec<Mutation> =
        (1..=width).map(|i| spawn_after(i, "M", &[("i", v(json!(i)))], if i == 1 { &[0] } else { &[] })).collect();
    fxs.push(h.mutate(root, ms));
    let mut queue = starts(fxs.last().unwrap());
    for (call, seq) in (2..).zip(1..=width) {
        queue.extend(starts(&h.await_(root, call, seq)));
    }
    while let Some(at) = queue.pop() {
        let fx = h.succeed(at, json!(1));
        queue.extend(starts(&fx));
        fxs.push(fx);
    }
    let observed: Vec<u32> = if width == 0 { vec![0] } else { (1..=width).collect() };
    fxs.push(h.mutate(root, vec![spawn_after(width + 1, "B", &[], &observed)]));
    let b = started(fxs.last().unwrap(), NodeId::at(width as usize + 2));
    fxs.push(h.succeed(b, json!(0)));
    fxs.push(h.succeed(root, json!(0)));
    h.assert_all_final();
    (h, all_edges(&fxs.iter().collect::<Vec<_>>()))
}

#[test]
fn a_map_over_awaited_values_is_a_then_ms_then_b() {
    use EdgeKind::After;
    let (_, e) = map_of_width(0);
    assert_eq!(e, [(1, 2, After)], "no M: `A -> B`");
    for width in 1..=5u64 {
        let (_, e) = map_of_width(width as u32);
        let b = width + 2;
        let mut expected: Vec<_> = (2..b).map(|m| (1, m, After)).chain((2..b).map(|m| (m, b, After))).collect();
        expected.sort();
        assert_eq!(e, expected, "width {width}");
    }
}

#[test]
fn an_after_edge_implied_by_other_edges_is_not_added() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("c"), task("d"), task("e")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "a", &[]);
    h.await_(root, 1, 0);
    let f1 = h.succeed(started(&fx, NodeId::new(1)), json!(1));
    // `c` after `a`; `d` takes `c`'s handle (so runs after `a` already); `e` takes `a`'s value
    // by handle too: no `after` edge duplicates a data edge.
    let f2 = h.mutate(
        root,
        vec![spawn_after(1, "c", &[], &[0]), spawn(2, "d", &[("x", out(1))]), spawn(3, "e", &[("x", out(0))])],
    );
    assert_eq!(all_edges(&[&f1, &f2]), [(1, 2, EdgeKind::After), (1, 4, EdgeKind::Data), (2, 3, EdgeKind::Data)],);
    // Observing `d` (which runs after `a` and `c`) leaves only `d` to run after.
    let f3 = h.succeed(started(&f2, NodeId::new(2)), json!(2));
    h.await_(root, 2, 2);
    let f4 = h.succeed(started(&f3, NodeId::new(3)), json!(3));
    assert_eq!(resolved(&f4, root, 2), Ok(json!(3)));
    let f5 = h.mutate(root, vec![spawn_after(4, "e", &[], &[0, 1, 2])]);
    assert_eq!(all_edges(&[&f5]), [(3, 5, EdgeKind::After)]);
}

#[test]
fn a_child_whose_failure_was_handled_is_not_run_after() {
    let mut h = Harness::new(vec![workflow("flow"), task("risky"), task("fallback")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "risky", &[]);
    h.await_(root, 1, 0);
    let fx = h.finish(started(&fx, NodeId::new(1)), Err(Error::fatal("no")));
    assert!(resolved(&fx, root, 1).is_err());
    // A body reports only successful results as observed; one that claims a failed child is
    // not believed either.
    let fx = h.mutate(root, vec![spawn_after(1, "fallback", &[], &[0])]);
    assert!(edges(&fx).is_empty(), "{:?}", fx.writes);
    started(&fx, NodeId::new(2));
}

#[test]
fn an_observed_call_that_spawned_nothing_fails_the_attempt() {
    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn_after(0, "a", &[], &[7])]);
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(inserted(&fx).is_empty());
}

#[test]
fn after_edges_are_loaded_back_and_a_rerun_follows_them_downstream() {
    let (h, written) = map_of_width(2);
    // Load the run again from what was written, as `recover` or `rerun` do.
    let mut snap = snapshot("flow", Vec::new());
    snap.nodes = h
        .core
        .nodes
        .iter()
        .map(|n| NodeRecord {
            id: n.id,
            parent: n.parent,
            seq: h.core.keys.iter().find(|(_, v)| **v == n.id).map(|(k, _)| k.1),
            task: n.task.name.to_string(),
            state: n.state,
            args: n.args.clone(),
            input_hash: n.input_hash.clone(),
            output: n.output.clone(),
            ..root_record("flow", &json!({}))
        })
        .collect();
    snap.edges = written
        .iter()
        .map(|(f, t, k)| crate::model::EdgeRecord { from: NodeId::new(*f), to: NodeId::new(*t), kind: *k, label: None })
        .collect();
    let reg = h.core.registry;
    let config = inline_config(4);
    let core = Core::new(snap, reg, config, h.time()).expect("the run loads");
    assert_eq!(core.downstream_of(NodeId::new(2)), [0, 2, 4], "one `M`, `B` and the root");
    let reset = core.downstream_of(NodeId::new(1));
    assert_eq!(reset, [0, 1, 2, 3, 4], "`A`, the `M`s, `B` and the root");

    // `rerun --from A`: `A`, the `M`s and `B` wait for the root's replay to bind them.
    let mut h = Harness { core, now: h.now, wall: h.wall };
    h.core.mark_rerun(&reset);
    h.core.reset(&reset);
    h.core.begin(h.time());
    let fx = h.effects();
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [0], "the root only");
    let root = started(&fx, NodeId::ROOT);
    let fx = h.spawn(root, 0, "A", &[]);
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [1], "bound again: `A` runs");
    let a = started(&fx, NodeId::new(1));
    h.await_(root, 1, 0);
    let fx = h.succeed(a, json!(20));
    assert_eq!(resolved(&fx, root, 1), Ok(json!(20)));
    let fx = h.mutate(
        root,
        vec![spawn_after(1, "M", &[("i", v(json!(1)))], &[0]), spawn_after(2, "M", &[("i", v(json!(2)))], &[])],
    );
    assert!(inserted(&fx).is_empty() && edges(&fx).is_empty(), "bound again, nothing new: {:?}", fx.writes);
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [2, 3], "bound: the `M`s run");
    assert_eq!(h.state(NodeId::new(4)), NodeState::Pending, "`B` still waits for its spawn");
}

// ---------------------------------------------------------------------------------------------
// Surgery: rerun --from, recover, run-one
// ---------------------------------------------------------------------------------------------

/// The node ids and states of the core's graph, superseded ones aside.
fn current(h: &Harness) -> Vec<(u64, &'static str, NodeState)> {
    h.core
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Superseded)
        .map(|n| (n.id.get(), n.task.name, n.state))
        .collect()
}

/// The nodes marked superseded in `fx`.
fn superseded(fx: &Effects) -> Vec<u64> {
    let mut ids: Vec<u64> = fx
        .writes
        .iter()
        .filter_map(|w| match w {
            Write::NodeState { node, state: NodeState::Superseded, .. } => Some(node.get()),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// Runs `flow` once: `fetch` (1), awaited, then the root's `rest` calls with its output
/// (values, not handles), every node succeeding with `null` and the root with `"done"`. Then
/// prepares `rerun --from 1` and begins it: only the root starts (its children wait to be
/// called again). Returns the harness and the root's new attempt.
fn ran_then_rerun_from_fetch(
    tasks: Vec<TaskDescriptor>,
    first: Value,
    rest: impl Fn(&Value) -> Vec<Mutation>,
) -> (Harness, AttemptId) {
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let fetch = started(&h.spawn(root, 0, "fetch", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    h.succeed(fetch, first.clone());
    let mut queue = starts(&h.mutate(root, rest(&first)));
    while let Some(at) = queue.pop() {
        queue.extend(starts(&h.succeed(at, Value::Null)));
    }
    h.succeed(root, json!("done"));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).expect("a current node");
    h.core.begin(h.time());
    let fx = h.effects();
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [0], "only the root: {fx:?}");
    (h, started(&fx, NodeId::ROOT))
}

/// The root's replay of `fetch` binds it, which runs again and returns `output`.
fn replay_fetch(h: &mut Harness, root: AttemptId, output: Value) {
    let fx = h.spawn(root, 0, "fetch", &[]);
    assert!(inserted(&fx).is_empty(), "bound again: {:?}", fx.writes);
    let fetch = started(&fx, NodeId::new(1));
    assert_eq!(fetch.attempt, 2);
    h.await_(root, 1, 0);
    let fx = h.succeed(fetch, output.clone());
    assert_eq!(resolved(&fx, root, 1), Ok(output));
}

#[test]
fn a_rerun_binds_the_same_calls_and_supersedes_from_the_first_that_differs() {
    let tasks = vec![workflow("flow"), task("fetch"), task("sum"), task("other")];
    let rest = |x: &Value| vec![spawn(1, "sum", &[("v", v(x.clone()))]), spawn(2, "other", &[])];
    let (mut h, root) = ran_then_rerun_from_fetch(tasks, json!(1), rest);
    replay_fetch(&mut h, root, json!(2));

    // `sum` is called with another value: it and every later call are new nodes.
    let fx = h.mutate(root, rest(&json!(2)));
    assert_eq!(superseded(&fx), [2, 3]);
    assert_eq!(inserted(&fx), [(NodeId::new(4), "sum".to_string()), (NodeId::new(5), "other".to_string())]);
    assert_eq!(launch(&fx, NodeId::new(4)).input, json!({"v": 2}));
    assert_eq!(h.core.keys.get(&(NodeId::ROOT, 1)), Some(&NodeId::new(4)), "the key is the new node's");
    h.complete(fx, root, json!("again"));
    assert_eq!(
        current(&h),
        [
            (0, "flow", NodeState::Succeeded),
            (1, "fetch", NodeState::Succeeded),
            (4, "sum", NodeState::Succeeded),
            (5, "other", NodeState::Succeeded)
        ]
    );
    assert_eq!((h.core.nodes[2].attempts, h.core.nodes[3].attempts), (1, 1), "the old nodes did not run again");
    assert!(h.core.unfinished().is_empty(), "nothing for `recover` to do");
}

#[test]
fn a_rerun_that_flips_a_branch_supersedes_the_old_branch_and_its_subtree() {
    // `fetch` says which branch; branch `a` spawns a `leaf` of its own.
    let a = TaskDescriptor { may_spawn: true, ..task("a") };
    let tasks = vec![workflow("flow"), task("fetch"), a, task("b"), task("leaf")];
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let fetch = started(&h.spawn(root, 0, "fetch", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    h.succeed(fetch, json!("a"));
    let a = started(&h.spawn(root, 1, "a", &[]), NodeId::new(2));
    let leaf = started(&h.spawn(a, 0, "leaf", &[]), NodeId::new(3));
    h.succeed(leaf, json!(1));
    h.succeed(a, json!(1));
    h.succeed(root, json!("a"));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).unwrap();
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    replay_fetch(&mut h, root, json!("b"));
    let fx = h.spawn(root, 1, "b", &[]);
    assert_eq!(superseded(&fx), [2, 3], "the old branch and what it spawned");
    assert_eq!(inserted(&fx), [(NodeId::new(4), "b".to_string())]);
    h.complete(fx, root, json!("b"));
    assert_eq!(
        current(&h),
        [(0, "flow", NodeState::Succeeded), (1, "fetch", NodeState::Succeeded), (4, "b", NodeState::Succeeded)]
    );
    assert!(h.core.unfinished().is_empty());
    assert_eq!(h.core.summary(h.now).counts.iter().sum::<usize>(), 3, "superseded nodes are not counted");
}

#[test]
fn a_rerun_that_shrinks_a_map_supersedes_the_calls_it_no_longer_makes() {
    // fetch -> m per item -> sink (of all m, by handle).
    let tasks = vec![workflow("flow"), task("fetch"), task("m"), task("sink")];
    let map = |items: &Value| {
        let items = items.as_array().unwrap();
        let mut calls: Vec<Mutation> =
            items.iter().enumerate().map(|(i, x)| spawn(1 + i as u32, "m", &[("x", v(x.clone()))])).collect();
        let handles: Vec<(String, WireArg)> = (0..items.len()).map(|i| (format!("m{i}"), out(1 + i as u32))).collect();
        let args: Vec<(&str, WireArg)> = handles.iter().map(|(n, a)| (n.as_str(), a.clone())).collect();
        calls.push(spawn(1 + items.len() as u32, "sink", &args));
        calls
    };
    let (mut h, root) = ran_then_rerun_from_fetch(tasks, json!(["x", "y", "z"]), map);
    assert_eq!(h.core.nodes.len(), 6);
    replay_fetch(&mut h, root, json!(["x"]));
    let fx = h.mutate(root, map(&json!(["x"])));
    assert_eq!(superseded(&fx), [3, 4, 5], "m(y), m(z) and the old sink");
    assert_eq!(inserted(&fx), [(NodeId::new(6), "sink".to_string())]);
    assert_eq!(edges(&fx), [(NodeId::new(2), NodeId::new(6), EdgeKind::Data)]);
    h.complete(fx, root, json!("one"));
    assert_eq!(
        current(&h),
        [
            (0, "flow", NodeState::Succeeded),
            (1, "fetch", NodeState::Succeeded),
            (2, "m", NodeState::Succeeded),
            (6, "sink", NodeState::Succeeded)
        ]
    );
    assert_eq!(h.core.nodes[2].deps, [] as [NodeId; 0]);
    assert_eq!(h.core.nodes[2].dependents, [NodeId::new(6)], "the old sink is no longer downstream");
}

#[test]
fn a_rerun_body_that_returns_before_its_old_calls_supersedes_them() {
    let tasks = vec![workflow("flow"), task("fetch"), task("m")];
    let map = |items: &Value| -> Vec<Mutation> {
        let items = items.as_array().unwrap();
        items.iter().enumerate().map(|(i, x)| spawn(1 + i as u32, "m", &[("x", v(x.clone()))])).collect()
    };
    let (mut h, root) = ran_then_rerun_from_fetch(tasks, json!(["x", "y"]), map);
    replay_fetch(&mut h, root, json!(["x"]));
    let fx = h.mutate(root, map(&json!(["x"])));
    assert!(superseded(&fx).is_empty() && inserted(&fx).is_empty(), "m(x) is the same call");
    let fx = h.succeed(root, json!("one"));
    assert_eq!(superseded(&fx), [3], "m(y) was not called again");
    h.assert_all_final();
    assert_eq!(h.core.finish().state, RunState::Succeeded);
    assert_eq!(current(&h).len(), 3);
}

#[test]
fn a_rerun_that_passes_a_new_handle_adds_the_edge_and_waits_for_its_upstream() {
    // First run: `use` takes a value. The rerun passes it `fetch`'s handle instead.
    let tasks = vec![workflow("flow"), task("fetch"), task("use")];
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "fetch", &[]), spawn(1, "use", &[("x", v(json!(0)))])]);
    for at in starts(&fx) {
        h.succeed(at, json!(1));
    }
    h.succeed(root, json!(1));
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).unwrap();
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    let fx = h.mutate(root, vec![spawn(0, "fetch", &[]), spawn(1, "use", &[("x", out(0))])]);
    let fetch = started(&fx, NodeId::new(1));
    assert_eq!(superseded(&fx), [2]);
    assert_eq!(inserted(&fx), [(NodeId::new(3), "use".to_string())]);
    assert_eq!(edges(&fx), [(NodeId::new(1), NodeId::new(3), EdgeKind::Data)]);
    assert_eq!(starts(&fx).len(), 1, "`use` waits for `fetch`: {:?}", fx.actions);
    let fx = h.succeed(fetch, json!(7));
    assert_eq!(launch(&fx, NodeId::new(3)).input, json!({"x": 7}), "not a null input");
    h.complete(fx, root, json!(7));
}

#[test]
fn a_new_call_of_a_rerun_is_checked_against_the_promises() {
    // The root promised no edges; its rerun passes a handle where it passed a value.
    let tasks = vec![workflow("flow"), task("fetch"), task("use")];
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let calls = |x: WireArg| vec![promise(0, "no new edges"), spawn(1, "fetch", &[]), spawn(2, "use", &[("x", x)])];
    let fx = h.mutate(root, calls(v(json!(0))));
    h.complete(fx, root, json!(1));
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).unwrap();
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    let fx = h.mutate(root, calls(out(1)));
    assert_eq!(attempt_error(&fx, NodeId::ROOT, 2).kind(), ErrorKind::Promise);
    h.assert_terminated("no new edges");
}

#[test]
fn a_shape_promise_is_checked_against_the_graph_a_rerun_leaves() {
    // `fetch -> m* -> sink`: after the map shrinks, the new `sink` runs after the remaining `m`.
    let tasks = vec![workflow("flow"), task("fetch"), task("m"), task("sink")];
    let mut h = Harness::new(tasks);
    // Succeeds every attempt `fx` started, and what those start.
    let settle = |h: &mut Harness, fx: Effects| {
        let mut queue = starts(&fx);
        while let Some(at) = queue.pop() {
            let fx = h.succeed(at, Value::Null);
            queue.extend(starts(&fx));
        }
    };
    // The body: `fetch`, awaited; `n` `m`s, awaited; `sink`.
    let body = |h: &mut Harness, root: AttemptId, n: u32| -> Effects {
        let fx = h.mutate(root, vec![promise(0, "fetch -> m* -> sink"), spawn(1, "fetch", &[])]);
        settle(h, fx);
        let ms = (0..n).map(|i| spawn_after(2 + i, "m", &[("i", v(json!(i)))], if i == 0 { &[1] } else { &[] }));
        let fx = h.mutate(root, ms.collect());
        settle(h, fx);
        let observed: Vec<u32> = if n == 0 { vec![1] } else { (2..2 + n).collect() };
        h.mutate(root, vec![spawn_after(2 + n, "sink", &[("n", v(json!(n)))], &observed)])
    };
    let root = h.start_root();
    let fx = body(&mut h, root, 3);
    h.complete(fx, root, json!(3));
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).unwrap();
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    let fx = body(&mut h, root, 1);
    assert_eq!(superseded(&fx), [3, 4, 5]);
    assert_eq!(inserted(&fx), [(NodeId::new(6), "sink".to_string())]);
    assert_eq!(edges(&fx), [(NodeId::new(2), NodeId::new(6), EdgeKind::After)]);
    assert!(!fx.writes.iter().any(|w| matches!(w, Write::DropPromise { .. })), "the promise was called again");
    h.complete(fx, root, json!(1));
}

#[test]
fn a_rerun_forgets_the_journal_and_promises_of_the_calls_it_supersedes() {
    let tasks = vec![workflow("flow"), task("fetch"), task("a"), task("b")];
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let fetch = started(&h.spawn(root, 0, "fetch", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    h.succeed(fetch, json!("a"));
    let fx = h.mutate(root, vec![spawn(1, "a", &[]), promise(2, "no new nodes")]);
    h.journal(root, 2, 3, JournalKind::Random, json!(0.5));
    h.complete(fx, root, json!("a"));
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).unwrap();
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    replay_fetch(&mut h, root, json!("b"));
    // `b` now, then more nodes: the old `no new nodes` (declared after `a`) no longer holds.
    let fx = h.mutate(root, vec![spawn(1, "b", &[]), spawn(2, "b", &[])]);
    assert_eq!(superseded(&fx), [2]);
    assert!(fx.writes.iter().any(|w| matches!(w, Write::DropPromise { id: 0, .. })), "{:?}", fx.writes);
    assert!(fx.writes.iter().any(|w| matches!(w, Write::ForgetCalls { from_seq: 1, .. })));
    // The old random value at call 3 is gone: a new one is drawn and recorded.
    let drawn = h.journal(root, 3, 3, JournalKind::Random, json!(0.9));
    assert_eq!(value(&drawn, root, 3), json!(0.9));
    assert_eq!(journaled(&drawn), [(NodeId::ROOT, 3, JournalKind::Random, json!(0.9))]);
    h.complete(fx, root, json!("b"));
    assert!(h.core.promises.is_empty());
}

#[test]
fn a_rerun_starts_no_child_before_its_parent_calls_it_again() {
    // `b` failed; a rerun from `a` resets it too, but it waits for the root to call it.
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[])]);
    h.succeed(started(&fx, NodeId::new(1)), json!(1));
    h.finish(started(&fx, NodeId::new(2)), Err(Error::new(ErrorKind::Fatal, "no")));
    h.finish(root, Err(Error::new(ErrorKind::Fatal, "child failed")));
    assert_eq!(h.core.finish().state, RunState::Failed);
    h.core.take_effects();

    h.core.rerun_from(NodeId::new(1)).unwrap();
    h.core.begin(h.time());
    let fx = h.effects();
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [0]);
    let fx = h.spawn(started(&fx, NodeId::ROOT), 0, "a", &[]);
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [1], "bound, so it runs");
    let root = AttemptId { run: RUN, node: NodeId::ROOT, attempt: 2 };
    let fx = h.spawn(root, 1, "b", &[]);
    assert_eq!(starts(&fx).iter().map(|a| a.node.get()).collect::<Vec<_>>(), [2]);
    assert!(superseded(&fx).is_empty() && inserted(&fx).is_empty());
}

#[test]
fn a_differing_replay_outside_a_rerun_is_still_non_deterministic() {
    // `recover` replays the root after the rerun ended: its calls are bound, nothing differs
    // quietly any more.
    let tasks = vec![retrying(workflow("flow"), 1, Backoff::Fixed(secs(1))), task("fetch"), task("b")];
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "fetch", &[]), spawn(1, "b", &[("x", v(json!(1)))])]);
    for at in starts(&fx) {
        h.succeed(at, Value::Null);
    }
    h.finish(root, Err(task_error("flaky")));
    let root = started(&h.advance(secs(1)), NodeId::ROOT);
    let fx = h.mutate(root, vec![spawn(0, "fetch", &[]), spawn(1, "b", &[("x", v(json!(2)))])]);
    assert_eq!(attempt_error(&fx, NodeId::ROOT, 2).kind(), ErrorKind::NonDeterministic);
    assert!(superseded(&fx).is_empty());
}

#[test]
fn run_one_of_a_body_that_calls_otherwise_supersedes_what_it_no_longer_calls() {
    let tasks = vec![workflow("flow"), task("a"), task("b")];
    let mut h = Harness::new(tasks);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[])]);
    h.complete(fx, root, json!(1));
    h.core.take_effects();

    h.core.check_current(NodeId::ROOT).unwrap();
    h.core.reset(&[NodeId::ROOT]);
    h.core.mark_rerun(&[NodeId::ROOT]);
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    let fx = h.mutate(root, vec![spawn(0, "b", &[])]);
    assert_eq!(superseded(&fx), [1]);
    h.complete(fx, root, json!(2));
    let e = h.core.check_current(NodeId::new(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Usage);
    assert!(e.message().contains("node 1 (`a`) of run 42 is superseded"), "{}", e.message());
}

#[test]
fn a_superseded_node_stays_out_of_the_run_when_it_is_loaded_again() {
    let node = |id: u64, task: &str, state: NodeState| {
        let mut n = root_record(task, &json!({}));
        (n.id, n.parent, n.seq, n.state) = (NodeId::new(id), Some(NodeId::ROOT), Some(0), state);
        n
    };
    let mut root = root_record("flow", &json!({}));
    root.state = NodeState::Succeeded;
    let nodes = vec![root, node(1, "a", NodeState::Superseded), node(2, "a", NodeState::Succeeded)];
    let registry = registry(vec![workflow("flow"), task("a")]);
    let config = inline_config(1);
    let mut snap = snapshot("flow", nodes);
    snap.edges.push(crate::model::EdgeRecord {
        from: NodeId::new(1),
        to: NodeId::new(2),
        kind: EdgeKind::Data,
        label: None,
    });
    let mut core = Core::new(snap, registry, config, at(Instant::now())).unwrap();
    assert_eq!(core.keys.get(&(NodeId::ROOT, 0)), Some(&NodeId::new(2)));
    assert_eq!(core.nodes[0].children, [NodeId::new(2)]);
    assert!(core.nodes[2].deps.is_empty(), "an edge from a superseded node does not hold");
    assert!(core.unfinished().is_empty());
    assert_eq!(core.active(), 0);
    assert_eq!(core.downstream_of(NodeId::ROOT), [0, 2]);
    assert_eq!(core.finish().state, RunState::Succeeded);
}

#[test]
fn recover_runs_only_what_did_not_succeed() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[])]);
    h.succeed(started(&fx, NodeId::new(1)), json!("a"));
    h.await_(root, 1, 1);
    let fx = h.finish(started(&fx, NodeId::new(2)), Err(Error::new(ErrorKind::Fatal, "no")));
    assert!(resolved(&fx, root, 1).is_err());
    h.finish(root, Err(Error::new(ErrorKind::Fatal, "child failed")));
    assert_eq!(h.core.finish().state, RunState::Failed);

    let unfinished = h.core.unfinished();
    assert_eq!(unfinished, [0, 2]);
    h.core.reset(&unfinished);
    h.core.begin(h.time());
    let fx = h.effects();
    assert_eq!(
        starts(&fx).iter().map(|a| (a.node, a.attempt)).collect::<Vec<_>>(),
        [(NodeId::ROOT, 2), (NodeId::new(2), 2)]
    );
}

#[test]
fn run_one_lists_the_upstream_that_has_not_succeeded() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[("x", out(0))])]);
    h.finish(started(&fx, NodeId::new(1)), Err(Error::new(ErrorKind::Fatal, "no")));
    assert_eq!(h.core.unmet_upstream(NodeId::new(2)), [(NodeId::new(1), "a", NodeState::Failed)]);
    assert!(h.core.unmet_upstream(NodeId::new(1)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Handled failures
// ---------------------------------------------------------------------------------------------

/// The deliveries written in `fx`: (node, parent attempt).
fn deliveries(fx: &Effects) -> Vec<(NodeId, u32)> {
    fx.writes
        .iter()
        .filter_map(|w| if let Write::Delivered { node, attempt, .. } = w { Some((*node, *attempt)) } else { None })
        .collect()
}

#[test]
fn a_failure_the_parent_awaited_and_handled_leaves_the_child_failed_and_the_run_succeeded() {
    let mut h = Harness::new(vec![workflow("flow"), task("rates")]);
    let root = h.start_root();
    let rates = started(&h.spawn(root, 0, "rates", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    let fx = h.finish(rates, Err(task_error("service down")));
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    assert_eq!(e.kind(), ErrorKind::Child);
    assert_eq!(deliveries(&fx), [(NodeId::new(1), 1)]);

    // The body matches on the error and returns a fallback.
    h.succeed(root, json!({"rates": "fallback"}));
    h.assert_all_final();
    assert_eq!(h.state(NodeId::new(1)), NodeState::Failed, "the child stays failed");
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Succeeded, "{:?}", outcome.error);
    assert_eq!(outcome.output, Some(json!({"rates": "fallback"})));
    assert_eq!(outcome.error, None);
    assert!(h.core.unfinished().is_empty(), "recover has nothing to run again");
}

#[test]
fn a_failure_awaited_after_it_happened_is_handled_too() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[("x", out(0))])]);
    h.finish(started(&fx, NodeId::new(1)), Err(Error::fatal("bad row")));
    // `b` never ran (skipped); awaiting it gives its failure to the root, which handles it.
    let fx = h.await_(root, 1, 1);
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    assert_eq!(e.kind(), ErrorKind::Child);
    assert_eq!(deliveries(&fx), [(NodeId::new(2), 1)]);
    h.succeed(root, json!(0));
    // `a` failed and nobody awaited it: the run fails, naming it.
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Failed);
    let e = outcome.error.expect("a failed run says why");
    assert_eq!(e.message(), "node 1 (`a`) failed: bad row");
    assert_eq!(h.core.unfinished(), [1], "recover runs only the failure nobody received");
}

#[test]
fn a_failure_nobody_awaited_fails_the_run() {
    let mut h = Harness::new(vec![workflow("flow"), task("side")]);
    let root = h.start_root();
    let side = started(&h.spawn(root, 0, "side", &[]), NodeId::new(1));
    let fx = h.finish(side, Err(task_error("disk full")));
    assert!(deliveries(&fx).is_empty());
    h.succeed(root, json!("done"));
    h.assert_all_final();
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Failed);
    assert_eq!(
        outcome.error.map(|e| (e.kind(), e.message().to_string())),
        Some((ErrorKind::Child, "node 1 (`side`) failed: disk full".into()))
    );
    assert_eq!(h.core.unfinished(), [1]);
}

#[test]
fn a_handled_failure_takes_the_nodes_below_it_along() {
    let mut h = Harness::new(vec![workflow("flow"), workflow("sub"), task("leaf")]);
    let root = h.start_root();
    let sub = started(&h.spawn(root, 0, "sub", &[]), NodeId::new(1));
    h.spawn(sub, 0, "leaf", &[]);
    h.await_(root, 1, 0);
    let fx = h.finish(sub, Err(Error::fatal("no")));
    assert_eq!(node_finished(&fx, NodeId::new(2)).map(|f| f.0), Some(NodeState::Cancelled));
    assert_eq!(resolved(&fx, root, 1).map_err(|e| e.kind()), Err(ErrorKind::Fatal));
    h.succeed(root, json!("fallback"));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
    assert!(h.core.unfinished().is_empty());
}

#[test]
fn a_failure_the_parent_propagated_runs_again_with_the_parent() {
    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let a = started(&h.spawn(root, 0, "a", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    let fx = h.finish(a, Err(Error::fatal("no")));
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    h.finish(root, Err(e));
    assert_eq!(h.core.finish().state, RunState::Failed);
    assert_eq!(h.core.unfinished(), [0, 1], "the parent's attempt failed with it: both run again");
}

#[test]
fn a_parent_parked_on_a_child_that_fails_replays_and_receives_the_failure() {
    let mut h = Harness::with(vec![workflow("flow"), task("slow")], 4, Some(secs(1)));
    let root = h.start_root();
    let slow = started(&h.spawn(root, 0, "slow", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    assert_eq!(stops(&h.advance(secs(1))), [root]);
    let fx = h.finish(slow, Err(task_error("broke")));
    let root = started(&fx, NodeId::ROOT);
    assert_eq!(root.attempt, 2);
    // The replay binds the failed child; it does not run it again.
    let fx = h.spawn(root, 0, "slow", &[]);
    assert!(starts(&fx).is_empty(), "{:?}", fx.actions);
    let fx = h.await_(root, 1, 0);
    assert_eq!(resolved(&fx, root, 1).map_err(|e| e.kind()), Err(ErrorKind::Child));
    h.succeed(root, json!("fallback"));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
}

#[test]
fn a_node_killed_while_its_parent_is_parked_is_not_run_again_by_the_replay() {
    let slow = retrying(task("slow"), 2, Backoff::Fixed(Duration::from_millis(10)));
    let mut h = Harness::with(vec![workflow("flow"), slow, task("after"), task("other")], 4, Some(secs(1)));
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "slow", &[]), spawn(1, "other", &[])]);
    let slow = started(&fx, NodeId::new(1));
    let other = started(&fx, NodeId::new(2));
    let fx = h.spawn(root, 2, "after", &[("x", WireArg::Handle(0))]);
    assert!(starts(&fx).is_empty(), "`after` waits for `slow`");
    h.await_(root, 1, 0);
    assert_eq!(stops(&h.advance(secs(1))), [root], "the root parks");

    // Killed 6 s into its attempt, with the root parked.
    h.advance(secs(5));
    let fx = h.control(RunControl { cancel_nodes: vec![(1, NodeId::new(1))], ..Default::default() });
    assert_eq!(stops(&fx), [slow]);
    assert_eq!(h.state(NodeId::new(3)), NodeState::Skipped, "what depends on it is skipped");
    let root = started(&fx, NodeId::ROOT);
    assert_eq!(root.attempt, 2, "the parked root replays");

    // The replay binds to the killed node: no new attempt, now or after its backoff.
    let fx = h.mutate(
        root,
        vec![spawn(0, "slow", &[]), spawn(1, "other", &[]), spawn(2, "after", &[("x", WireArg::Handle(0))])],
    );
    assert!(starts(&fx).is_empty(), "{:?}", fx.actions);
    assert!(starts(&h.advance(secs(60))).is_empty());
    assert_eq!(h.state(NodeId::new(1)), NodeState::Cancelled);
    let fx = h.await_(root, 1, 0);
    assert_eq!(resolved(&fx, root, 1).map_err(|e| e.kind()), Err(ErrorKind::Killed));

    // The independent branch goes on; the root propagates the kill and the run fails.
    h.succeed(other, json!("fine"));
    assert_eq!(h.state(NodeId::new(2)), NodeState::Succeeded);
    h.finish(root, Err(Error::new(ErrorKind::Killed, "node 1 (`slow`) was killed")));
    assert_eq!(h.state(NodeId::ROOT), NodeState::Failed);
    h.assert_all_final();
    assert_eq!(h.core.finish().state, RunState::Failed);
}

#[test]
fn a_node_killed_before_its_parent_awaited_it_stays_killed_across_replays() {
    let mut h = Harness::with(vec![workflow("flow"), task("slow"), task("gate")], 4, Some(secs(1)));
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "slow", &[]), spawn(1, "gate", &[])]);
    started(&fx, NodeId::new(1));
    let gate = started(&fx, NodeId::new(2));
    // The root awaits `gate` only, and parks.
    h.await_(root, 1, 1);
    assert_eq!(stops(&h.advance(secs(1))), [root]);
    h.control(RunControl { cancel_nodes: vec![(1, NodeId::new(1))], ..Default::default() });
    // `gate` ends: the root replays, and binds to the killed `slow` without running it.
    let root = started(&h.succeed(gate, json!(1)), NodeId::ROOT);
    let fx = h.mutate(root, vec![spawn(0, "slow", &[]), spawn(1, "gate", &[])]);
    assert!(starts(&fx).is_empty(), "{:?}", fx.actions);
    assert_eq!(resolved(&h.await_(root, 1, 1), root, 1), Ok(json!(1)));
    // The root returns without awaiting the killed node: nobody received the kill, the run fails.
    h.succeed(root, json!("done"));
    h.assert_all_final();
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Failed);
    assert!(outcome.error.is_some_and(|e| e.message().contains("slow")));
}

#[test]
fn a_handled_failure_survives_a_reload() {
    let nodes = |root_state| {
        let mut root = root_record("flow", &json!({}));
        (root.state, root.attempts) = (root_state, 1);
        let mut child = root_record("a", &json!({}));
        (child.id, child.parent, child.seq, child.state, child.attempts) =
            (NodeId::new(1), Some(NodeId::ROOT), Some(0), NodeState::Failed, 1);
        child.input_hash = super::replay::hash_args("a", &[]);
        vec![root, child]
    };
    let attempt = |node: NodeId, state| crate::model::AttemptRecord {
        node,
        attempt: 1,
        state,
        executor: "inline".into(),
        started_at: 0,
        finished_at: Some(1),
        error: None,
    };
    let registry = registry(vec![workflow("flow"), task("a")]);
    let config = inline_config(1);
    let load = |root_state, root_attempt| {
        let mut snap = snapshot("flow", nodes(root_state));
        snap.attempts = vec![attempt(NodeId::ROOT, root_attempt), attempt(NodeId::new(1), NodeState::Failed)];
        snap.delivered = vec![(NodeId::new(1), 1)];
        Core::new(snap, registry, config.clone(), at(Instant::now())).expect("loads")
    };

    // The root received the failure and succeeded.
    let mut core = load(NodeState::Succeeded, NodeState::Succeeded);
    assert!(core.unfinished().is_empty());
    assert_eq!(core.finish().state, RunState::Succeeded);

    // The orchestrator stopped while the root handled it: recover replays the root alone, and
    // the replay receives the same failure.
    let core = load(NodeState::Running, NodeState::Running);
    let mut h = Harness { core, now: Instant::now(), wall: WALL };
    assert_eq!(h.core.unfinished(), [0]);
    h.core.reset(&[NodeId::ROOT]);
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    assert!(starts(&h.spawn(root, 0, "a", &[])).is_empty());
    assert!(resolved(&h.await_(root, 1, 0), root, 1).is_err());
    h.succeed(root, json!("fallback"));
    assert_eq!(h.core.finish().state, RunState::Succeeded);

    // The root's attempt failed with it: the child's failure is the root's no longer.
    let core = load(NodeState::Failed, NodeState::Failed);
    assert_eq!(core.unfinished(), [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// Signals and parking
// ---------------------------------------------------------------------------------------------

#[test]
fn a_wait_with_no_signal_parks_the_node_and_a_signal_replays_it() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    let fx = h.wait(root, 1, wait(0, "approve", None, None));
    assert_eq!(stops(&fx), [root], "a parked node holds no process");
    assert_eq!(attempt_ended(&fx, NodeId::ROOT, 1), Some((NodeState::Waiting, None)));
    assert_eq!(node_states(&fx, NodeId::ROOT), [NodeState::Waiting]);
    assert!(fx.writes.iter().any(|w| matches!(w, Write::WaitStarted { record, .. } if record.name == "approve")));
    assert!(answers(&fx).is_empty());
    assert_eq!(h.core.next_timer(), None);

    // A signal of another name does not wake it.
    let fx = h.control(signals(&[(1, "other", json!(0))]));
    assert!(starts(&fx).is_empty() && consumed(&fx).is_empty());

    let fx = h.control(signals(&[(1, "other", json!(0)), (2, "approve", json!({"ok": true}))]));
    assert_eq!(consumed(&fx), [2]);
    assert_eq!(journaled(&fx), [(NodeId::ROOT, 0, JournalKind::Signal, json!({"ok": true}))]);
    let root = started(&fx, NodeId::ROOT);
    assert_eq!(root.attempt, 2);

    let fx = h.wait(root, 1, wait(0, "approve", None, None));
    assert_eq!(value(&fx, root, 1), json!({"ok": true}), "the replay gets the signal at once");
    assert!(stops(&fx).is_empty());
    // The other signal stays for a later wait of its name.
    let fx = h.wait(root, 2, wait(1, "other", None, None));
    assert_eq!(value(&fx, root, 2), json!(0));
    assert_eq!(consumed(&fx), [1]);
}

#[test]
fn a_wait_past_its_deadline_takes_its_default() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    let fx = h.wait(root, 1, wait(0, "approve", Some(5_000), Some(json!("no"))));
    assert_eq!(stops(&fx), [root]);
    let deadline = h.core.next_timer().expect("a timer for the deadline");
    assert!(deadline > h.now + secs(4) && deadline <= h.now + secs(5), "{:?}", deadline - h.now);

    assert!(starts(&h.advance(secs(4))).is_empty(), "not before the deadline");
    let fx = h.advance(secs(1));
    assert_eq!(journaled(&fx), [(NodeId::ROOT, 0, JournalKind::Signal, json!("no"))]);
    assert!(fx.writes.iter().any(|w| matches!(w, Write::WaitEnded { node: NodeId::ROOT, seq: 0, .. })));
    let root = started(&fx, NodeId::ROOT);
    let fx = h.wait(root, 1, wait(0, "approve", Some(5_000), Some(json!("no"))));
    assert_eq!(value(&fx, root, 1), json!("no"));

    // A signal sent after the deadline is left for a later wait.
    let fx = h.control(signals(&[(1, "approve", json!("yes"))]));
    assert!(consumed(&fx).is_empty());
}

#[test]
fn a_signal_before_the_deadline_wins_and_the_deadline_then_does_nothing() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    h.wait(root, 1, wait(0, "approve", Some(5_000), Some(json!("no"))));
    let fx = h.control(signals(&[(1, "approve", json!("yes"))]));
    let root = started(&fx, NodeId::ROOT);
    let fx = h.advance(secs(10));
    assert!(fx.writes.is_empty() && fx.actions.is_empty(), "{fx:?}");
    let fx = h.wait(root, 1, wait(0, "approve", Some(5_000), Some(json!("no"))));
    assert_eq!(value(&fx, root, 1), json!("yes"));
}

#[test]
fn a_wait_with_an_absurd_timeout_never_fires() {
    for timeout in [u64::MAX, i64::MAX as u64, u64::MAX / 2, 1 << 62] {
        let mut h = Harness::new(vec![workflow("flow")]);
        let root = h.start_root();
        let fx = h.wait(root, 1, wait(0, "approve", Some(timeout), Some(json!("no"))));
        assert_eq!(stops(&fx), [root], "timeout {timeout}");
        let fx = h.advance(Duration::from_secs(100 * 365 * 24 * 3600));
        assert!(starts(&fx).is_empty() && journaled(&fx).is_empty(), "timeout {timeout}: {fx:?}");
        assert_eq!(h.state(NodeId::ROOT), NodeState::Waiting);
        let fx = h.control(signals(&[(1, "approve", json!("yes"))]));
        assert_eq!(started(&fx, NodeId::ROOT).attempt, 2, "a signal still wakes it");
    }
}

#[test]
fn signals_sent_before_the_waits_are_delivered_in_the_order_sent() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    let fx = h.control(signals(&[(7, "step", json!("first")), (9, "step", json!("second"))]));
    assert!(fx.writes.is_empty());
    let fx = h.wait(root, 1, wait(0, "step", None, None));
    assert_eq!(value(&fx, root, 1), json!("first"));
    assert_eq!(consumed(&fx), [7]);
    let fx = h.wait(root, 2, wait(1, "step", None, None));
    assert_eq!(value(&fx, root, 2), json!("second"));
    assert_eq!(consumed(&fx), [9]);
    // Reading the same control again delivers nothing twice.
    let fx = h.control(signals(&[(7, "step", json!("first")), (9, "step", json!("second"))]));
    assert!(fx.writes.is_empty());
    let fx = h.wait(root, 3, wait(2, "step", None, None));
    assert_eq!(stops(&fx), [root]);
}

#[test]
fn signals_that_arrive_while_parked_are_delivered_in_the_order_sent() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    h.wait(root, 1, wait(0, "step", None, None));
    let fx = h.control(signals(&[(1, "step", json!(1)), (2, "step", json!(2))]));
    assert_eq!(consumed(&fx), [1]);
    let root = started(&fx, NodeId::ROOT);
    assert_eq!(value(&h.wait(root, 1, wait(0, "step", None, None)), root, 1), json!(1));
    let fx = h.wait(root, 2, wait(1, "step", None, None));
    assert_eq!(value(&fx, root, 2), json!(2));
    assert_eq!(consumed(&fx), [2]);
}

#[test]
fn a_node_awaiting_a_child_longer_than_park_after_gives_up_its_process() {
    let mut h = Harness::with(vec![workflow("flow"), task("slow")], 4, Some(secs(10)));
    let root = h.start_root();
    let slow = started(&h.spawn(root, 0, "slow", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    assert!(stops(&h.advance(ms(9_999))).is_empty());
    let fx = h.advance(ms(1));
    assert_eq!(stops(&fx), [root]);
    assert_eq!(attempt_ended(&fx, NodeId::ROOT, 1), Some((NodeState::Waiting, None)));
    assert_eq!(h.state(NodeId::ROOT), NodeState::Waiting);

    let fx = h.succeed(slow, json!("done"));
    assert!(answers(&fx).is_empty(), "the parked attempt is gone: {:?}", fx.actions);
    let root = started(&fx, NodeId::ROOT);
    assert_eq!(root.attempt, 2, "replayed when the child ended");
    let fx = h.spawn(root, 0, "slow", &[]);
    assert!(inserted(&fx).is_empty() && starts(&fx).is_empty());
    assert_eq!(resolved(&h.await_(root, 1, 0), root, 1), Ok(json!("done")));
    h.succeed(root, json!("done"));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
}

#[test]
fn a_node_answered_before_park_after_keeps_its_process() {
    let mut h = Harness::with(vec![workflow("flow"), task("quick")], 4, Some(secs(10)));
    let root = h.start_root();
    let quick = started(&h.spawn(root, 0, "quick", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    h.advance(secs(5));
    h.succeed(quick, Value::Null);
    let fx = h.advance(secs(10));
    assert!(stops(&fx).is_empty());
    assert_eq!(h.state(NodeId::ROOT), NodeState::Running);
}

#[test]
fn cancelling_a_run_whose_root_is_parked_on_children_ends_every_node() {
    let mut h = Harness::with(vec![workflow("flow"), task("slow")], 4, Some(secs(1)));
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "slow", &[]), spawn(1, "slow", &[("x", out(0))])]);
    let slow = started(&fx, NodeId::new(1));
    h.await_(root, 1, 1);
    let fx = h.advance(secs(1));
    assert_eq!(stops(&fx), [root]);

    h.core.cancel("interrupted (Ctrl-C)".into());
    let fx = h.effects();
    assert_eq!(stops(&fx), [slow]);
    h.assert_all_final();
    assert_eq!(h.core.finish().state, RunState::Cancelled);
    h.core.take_effects();
    // The stopped child's late end changes nothing.
    let fx = h.finish(slow, Err(Error::new(ErrorKind::Cancelled, "stopped")));
    assert!(fx.writes.is_empty() && fx.actions.is_empty(), "{fx:?}");
}

#[test]
fn cancelling_a_run_whose_root_is_parked_on_a_signal_ends_every_node() {
    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    h.spawn(root, 0, "a", &[]);
    h.wait(root, 1, wait(1, "go", Some(1_000), None));
    h.core.cancel("cancelled with `cancel`".into());
    h.effects();
    h.assert_all_final();
    let fx = h.advance(secs(2));
    assert!(starts(&fx).is_empty() && journaled(&fx).is_empty(), "{fx:?}");
    let fx = h.control(signals(&[(1, "go", json!(1))]));
    assert!(starts(&fx).is_empty() && consumed(&fx).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Loading a run
// ---------------------------------------------------------------------------------------------

fn load(nodes: Vec<NodeRecord>) -> crate::error::Result<Core> {
    let registry = registry(vec![workflow("flow"), task("a")]);
    let config = inline_config(1);
    Core::new(snapshot("flow", nodes), registry, config, at(Instant::now()))
}

#[test]
fn a_run_with_no_nodes_is_an_error_not_a_panic() {
    let e = load(Vec::new()).err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::Store);
    assert!(e.message().contains("has no root node"), "{}", e.message());
}

#[test]
fn a_run_with_a_node_this_binary_lacks_is_an_error() {
    let mut stranger = root_record("gone", &json!({}));
    stranger.id = NodeId::new(1);
    stranger.parent = Some(NodeId::ROOT);
    stranger.seq = Some(0);
    let e = load(vec![root_record("flow", &json!({})), stranger]).err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::Usage);
    assert!(e.message().contains("`gone`"), "{}", e.message());
}

#[test]
fn a_run_with_a_gap_in_its_node_ids_is_an_error() {
    let mut a = root_record("a", &json!({}));
    (a.id, a.parent, a.seq) = (NodeId::new(2), Some(NodeId::ROOT), Some(0));
    let e = load(vec![root_record("flow", &json!({})), a]).err().expect("refused");
    assert!(e.message().contains("gap"), "{}", e.message());
}

#[test]
fn a_parked_wait_keeps_its_deadline_when_the_run_is_recovered() {
    // A run stopped while its root was parked on a signal whose deadline has passed.
    let mut root = root_record("flow", &json!({}));
    (root.state, root.attempts) = (NodeState::Waiting, 1);
    let mut snap = snapshot("flow", vec![root]);
    snap.waits.push(crate::model::WaitRecord {
        node: NodeId::ROOT,
        seq: 0,
        name: "approve".into(),
        schema: json!({}),
        deadline: Some(WALL - 1_000),
        default: Some(json!("timed out")),
    });
    let registry = registry(vec![workflow("flow")]);
    let config = inline_config(1);
    let now = Instant::now();
    let mut h = Harness { core: Core::new(snap, registry, config, at(now)).expect("loads"), now, wall: WALL };
    let unfinished = h.core.unfinished();
    h.core.reset(&unfinished);
    h.core.begin(h.time());
    let root = started(&h.effects(), NodeId::ROOT);
    assert_eq!(root.attempt, 2);
    // The replayed wait parks again, with the recorded deadline (not a new one), already due.
    h.wait(root, 1, wait(0, "approve", Some(60_000), Some(json!("new default"))));
    let fx = h.advance(Duration::ZERO);
    assert_eq!(journaled(&fx), [(NodeId::ROOT, 0, JournalKind::Signal, json!("timed out"))]);
    let root = started(&fx, NodeId::ROOT);
    assert_eq!(value(&h.wait(root, 1, wait(0, "approve", None, None)), root, 1), json!("timed out"));
}

#[test]
fn a_child_that_failed_before_its_parent_retried_runs_again() {
    let flow = retrying(workflow("flow"), 1, Backoff::Fixed(secs(1)));
    let mut h = Harness::new(vec![flow, task("leaf"), task("next")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "leaf", &[]), spawn(1, "next", &[("x", out(0))])]);
    h.await_(root, 1, 1);
    let fx = h.finish(started(&fx, NodeId::new(1)), Err(task_error("flaky")));
    assert_eq!(node_finished(&fx, NodeId::new(2)).map(|f| f.0), Some(NodeState::Skipped));
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    h.finish(root, Err(e));
    let root = started(&h.advance(secs(1)), NodeId::ROOT);

    let fx = h.mutate(root, vec![spawn(0, "leaf", &[]), spawn(1, "next", &[("x", out(0))])]);
    assert!(inserted(&fx).is_empty());
    let leaf = started(&fx, NodeId::new(1));
    assert_eq!(leaf.attempt, 2, "the failed child runs again");
    assert_eq!(h.state(NodeId::new(2)), NodeState::Pending, "and what it blocked waits for it again");
    h.await_(root, 1, 1);
    let fx = h.succeed(leaf, json!(1));
    let fx = h.succeed(started(&fx, NodeId::new(2)), json!(2));
    assert_eq!(resolved(&fx, root, 1), Ok(json!(2)));
}

#[test]
fn a_call_about_a_seq_that_spawned_nothing_fails_the_attempt() {
    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "a", &[("x", out(5))]);
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(e.message().contains("argument `x` refers to call 5"), "{}", e.message());

    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let e = attempt_error(&h.await_(root, 1, 3), NodeId::ROOT, 1);
    assert_eq!(e.kind(), ErrorKind::Protocol);

    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let e = attempt_error(&h.spawn(root, 0, "missing", &[]), NodeId::ROOT, 1);
    assert!(e.message().contains("unknown task `missing`"), "{}", e.message());
}

#[test]
fn an_attempt_log_is_capped() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    for i in 0..super::MAX_LOG_LINES + 5 {
        h.core.handle(h.time(), Event::Log { at: root, line: format!("line {i}") });
    }
    let lines: Vec<String> = h
        .core
        .take_effects()
        .writes
        .into_iter()
        .filter_map(|w| if let Write::Log { record, .. } = w { Some(record.line) } else { None })
        .collect();
    assert_eq!(lines.len() as u32, super::MAX_LOG_LINES + 1);
    assert!(lines.last().is_some_and(|l| l.contains("log limit")), "{:?}", lines.last());
}

// ---------------------------------------------------------------------------------------------
// Fan-in: a list of handles as one argument
// ---------------------------------------------------------------------------------------------

fn list(items: &[WireArg]) -> WireArg {
    WireArg::List(items.to_vec())
}

/// `item` × 3 spawned by the root, then `sum(xs = [item0, item1, item2])`.
fn fan_in() -> (Harness, AttemptId, Effects) {
    let mut h = Harness::new(vec![workflow("flow"), task("item"), task("sum")]);
    let root = h.start_root();
    let fx = h.mutate(
        root,
        vec![
            spawn(0, "item", &[("i", v(json!(0)))]),
            spawn(1, "item", &[("i", v(json!(1)))]),
            spawn(2, "item", &[("i", v(json!(2)))]),
            spawn(3, "sum", &[("xs", list(&[out(0), out(1), out(2)]))]),
        ],
    );
    (h, root, fx)
}

#[test]
fn a_list_of_handles_is_a_data_edge_from_each_and_waits_for_all() {
    let (mut h, root, fx) = fan_in();
    let sum = NodeId::new(4);
    assert_eq!(
        edges(&fx),
        [
            (NodeId::new(1), sum, EdgeKind::Data),
            (NodeId::new(2), sum, EdgeKind::Data),
            (NodeId::new(3), sum, EdgeKind::Data)
        ]
    );
    assert_eq!(starts(&fx).len(), 3, "the three items start, `sum` waits");
    let items: Vec<AttemptId> = (1..=3).map(|n| started(&fx, NodeId::new(n))).collect();
    // They end in another order than the list's; `sum` starts only after the last.
    assert!(launches(&h.succeed(items[2], json!(30))).is_empty());
    assert!(launches(&h.succeed(items[0], json!(10))).is_empty());
    assert_eq!(h.state(sum), NodeState::Pending);
    let fx = h.succeed(items[1], json!(20));
    assert_eq!(launch(&fx, sum).input, json!({"xs": [10, 20, 30]}), "the outputs in the list's order");
    h.await_(root, 1, 3);
    let fx = h.succeed(started(&fx, sum), json!(60));
    assert_eq!(resolved(&fx, root, 1), Ok(json!(60)));
    h.complete(fx, root, json!(60));
}

#[test]
fn a_list_may_repeat_a_handle_and_hold_values() {
    let mut h = Harness::new(vec![workflow("flow"), task("item"), task("sum")]);
    let root = h.start_root();
    let fx = h.mutate(
        root,
        vec![
            spawn(0, "item", &[]),
            spawn(1, "sum", &[("xs", list(&[out(0), v(json!(5)), out(0)])), ("k", v(json!(1)))]),
        ],
    );
    assert_eq!(edges(&fx), [(NodeId::new(1), NodeId::new(2), EdgeKind::Data)], "one edge per upstream node");
    let fx = h.succeed(started(&fx, NodeId::new(1)), json!(7));
    assert_eq!(launch(&fx, NodeId::new(2)).input, json!({"xs": [7, 5, 7], "k": 1}));
    let empty = h.mutate(root, vec![spawn(2, "sum", &[("xs", list(&[]))])]);
    assert!(edges(&empty).is_empty());
    assert_eq!(launch(&empty, NodeId::new(3)).input, json!({"xs": []}), "an empty list starts at once");
}

#[test]
fn a_failed_member_of_a_list_skips_the_node() {
    let (mut h, root, fx) = fan_in();
    let sum = NodeId::new(4);
    h.succeed(started(&fx, NodeId::new(1)), json!(1));
    h.await_(root, 1, 3);
    let fx = h.finish(started(&fx, NodeId::new(2)), Err(task_error("disk full")));
    let (state, _, error) = node_finished(&fx, sum).expect("`sum` ends");
    assert_eq!(state, NodeState::Skipped);
    let error = error.expect("a skipped node says why");
    assert_eq!(error.kind(), ErrorKind::Upstream);
    assert!(error.message().contains("upstream node 2 (`item`) did not succeed"), "{}", error.message());
    assert_eq!(resolved(&fx, root, 1).map_err(|e| e.kind()), Err(ErrorKind::Child));

    // A list that takes a node which failed already is skipped when spawned.
    let fx = h.mutate(root, vec![spawn(4, "sum", &[("xs", list(&[out(0), out(1)]))])]);
    assert_eq!(node_finished(&fx, NodeId::new(5)).map(|f| f.0), Some(NodeState::Skipped));
    assert!(launches(&fx).iter().all(|l| l.at.node != NodeId::new(5)));
}

#[test]
fn a_replayed_list_argument_binds_to_the_recorded_node() {
    let tasks = || vec![retrying(workflow("flow"), 1, Backoff::Fixed(secs(1))), task("item"), task("sum")];
    let calls = |xs: WireArg| vec![spawn(0, "item", &[]), spawn(1, "item", &[]), spawn(2, "sum", &[("xs", xs)])];
    let first = |h: &mut Harness| {
        let root = h.start_root();
        let fx = h.mutate(root, calls(list(&[out(0), out(1)])));
        for n in 1..=2 {
            h.succeed(started(&fx, NodeId::new(n)), json!(n));
        }
        h.await_(root, 1, 2);
        let fx = h.succeed(AttemptId { run: RUN, node: NodeId::new(3), attempt: 1 }, json!(3));
        assert_eq!(resolved(&fx, root, 1), Ok(json!(3)));
        h.finish(root, Err(task_error("boom")));
        started(&h.advance(secs(1)), NodeId::ROOT)
    };

    let mut h = Harness::new(tasks());
    let root = first(&mut h);
    let fx = h.mutate(root, calls(list(&[out(0), out(1)])));
    assert!(inserted(&fx).is_empty(), "the same call binds to the recorded nodes");
    assert!(starts(&fx).is_empty());
    assert_eq!(resolved(&h.await_(root, 1, 2), root, 1), Ok(json!(3)));

    // The same handles in another order are another call.
    let mut h = Harness::new(tasks());
    let root = first(&mut h);
    let e = attempt_error(&h.mutate(root, calls(list(&[out(1), out(0)]))), NodeId::ROOT, 2);
    assert_eq!(e.kind(), ErrorKind::NonDeterministic);
    assert!(e.message().contains(r#"[["xs",{"list":[{"node":1},{"node":2}]}]]"#), "{}", e.message());
    assert!(e.message().contains(r#"[["xs",{"list":[{"node":2},{"node":1}]}]]"#), "{}", e.message());
}

#[test]
fn the_hash_of_a_call_is_stable() {
    use super::replay::hash_args;
    // Stored runs keep these: a change would make every recorded call differ on replay.
    assert_eq!(hash_args("leaf", &[("x".into(), StoredArg::Value(json!(1)))]), "5997c33b02a1575d");
    assert_eq!(hash_args("leaf", &[("x".into(), StoredArg::Node(NodeId::new(2)))]), "916ada142fe91ebf");
    let list = StoredArg::List(vec![StoredArg::Node(NodeId::new(1)), StoredArg::Value(json!(2))]);
    assert_eq!(hash_args("sum", &[("xs".into(), list)]), "75d86d99ac880a6b");
}

#[test]
fn edge_promises_see_every_member_of_a_list() {
    let text = "no edges into #3";
    let kept = vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), spawn(3, "c", &[("xs", list(&[]))])];
    check_promise(text, kept, None);
    let broken =
        vec![promise(0, text), spawn(1, "a", &[]), spawn(2, "b", &[]), spawn(3, "c", &[("xs", list(&[out(2)]))])];
    check_promise(text, broken, Some("spawning `c` from node 0 (`flow`)"));
    let text = "no edges out of b";
    let broken = vec![
        promise(0, text),
        spawn(1, "a", &[]),
        spawn(2, "b", &[]),
        spawn(3, "c", &[("xs", list(&[out(1), out(2)]))]),
    ];
    check_promise(text, broken, Some("spawning `c`"));
}

#[test]
fn a_malformed_list_fails_the_attempt_as_a_protocol_error() {
    let cases: [(WireArg, &str); 3] = [
        (list(&[list(&[out(0)])]), "argument `xs` nests a list in a list"),
        (list(&[out(0), out(9)]), "argument `xs` refers to call 9, which spawned no node"),
        (
            list(&[WireArg::Blob(serde_json::from_value(json!({"$salt_blob": "0".repeat(64), "bytes": 1})).unwrap())]),
            "argument `xs` arrived unread from its blob",
        ),
    ];
    for (xs, message) in cases {
        let mut h = Harness::new(vec![workflow("flow"), task("item"), task("sum")]);
        let root = h.start_root();
        let fx = h.mutate(root, vec![spawn(0, "item", &[]), spawn(1, "sum", &[("xs", xs)])]);
        assert_eq!(inserted(&fx), [(NodeId::new(1), "item".into())], "no `sum` node");
        let e = attempt_error(&fx, NodeId::ROOT, 1);
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.message().contains(message), "{}", e.message());
    }
}
