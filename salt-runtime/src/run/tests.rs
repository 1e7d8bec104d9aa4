//! The run core alone: events in, effects out; no process, no database.
//!
//! Each test builds a registry of test tasks, a new run (its root node only) and a [`Core`],
//! then plays the bodies itself: it reads the `Start` actions the core emits and answers them
//! with the events a body would send (spawn, await, journal, wait, finish), and moves time by
//! firing timers at a `now` it chooses. It asserts the writes and actions the user-visible
//! behaviour depends on.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Action, Config, Core, Effects};
use crate::context::{Context, JournalKind, Mutation, PromiseScope, SignalWait, SpawnRequest, WireArg};
use crate::error::{Error, ErrorKind};
use crate::executor::{Answer, AttemptId, Event, Launch};
use crate::model::{
    EdgeKind, NodeId, NodeRecord, NodeState, RunControl, RunId, RunRecord, RunSnapshot, RunState, StoredArg,
};
use crate::registry::{Backoff, BodyFuture, Kind, Policy, Registry, TaskDescriptor};
use crate::store::Write;

const RUN: RunId = RunId::new(42);

// ---------------------------------------------------------------------------------------------
// Test tasks
// ---------------------------------------------------------------------------------------------

/// The core never runs a body: it asks the driver to, and the test plays the body instead.
fn never_run(_: Value, _: Context) -> BodyFuture {
    Box::pin(async { Err(Error::new(ErrorKind::Fatal, "the run core never runs a body itself")) })
}

/// A plain task with the default policy.
fn task(name: &'static str) -> TaskDescriptor {
    TaskDescriptor {
        name,
        kind: Kind::Task,
        module: "salt_runtime::run::tests",
        doc: "",
        input_schema: || json!({"type": "object"}),
        output_schema: || json!({}),
        run: never_run,
        check_input: |_| Ok(()),
        policy: Policy::DEFAULT,
        label: None,
        color: None,
        default_input: None,
        schedule: None,
        promises: &[],
        may_spawn: false,
    }
}

/// A workflow: a task that may spawn.
fn workflow(name: &'static str) -> TaskDescriptor {
    TaskDescriptor { kind: Kind::Workflow, may_spawn: true, ..task(name) }
}

/// A task with `retries` and `backoff`.
fn retrying(d: TaskDescriptor, retries: u32, backoff: Backoff) -> TaskDescriptor {
    TaskDescriptor { policy: Policy { retries, backoff, ..d.policy }, ..d }
}

/// A registry of these tasks, for the life of the test binary.
fn registry(tasks: Vec<TaskDescriptor>) -> &'static Registry {
    let tasks = tasks.into_iter().map(|t| &*Box::leak(Box::new(t)));
    Box::leak(Box::new(Registry::build(tasks).expect("test task names are unique")))
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
        input_hash: String::new(),
        output: None,
        error: None,
        attempts: 0,
        label: None,
        color: None,
        shape: None,
        created_at: 0,
        started_at: None,
        finished_at: None,
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
    Mutation::Spawn(SpawnRequest { seq, task: task.into(), args })
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
}

impl Harness {
    /// A new run of the first task (the workflow), with the others registered beside it.
    fn new(tasks: Vec<TaskDescriptor>) -> Self {
        Self::with(tasks, 4, None)
    }

    fn with(tasks: Vec<TaskDescriptor>, parallelism: usize, park_after: Option<Duration>) -> Self {
        let root = tasks[0].name;
        let registry = registry(tasks);
        let now = Instant::now();
        let config = Config { executor: "inline", parallelism, park_after };
        let core = Core::new(snapshot(root, vec![root_record(root, &json!({}))]), registry, config, now)
            .expect("a new run loads");
        Self { core, now }
    }

    /// What the core asks after an input, once it started what it can (as the driver does).
    fn effects(&mut self) -> Effects {
        self.core.start_ready(self.now);
        self.core.take_effects()
    }

    /// Begins the run and returns the root's first attempt.
    fn start_root(&mut self) -> AttemptId {
        self.core.begin(self.now);
        let fx = self.effects();
        let root = started(&fx, NodeId::ROOT);
        assert_eq!(root, AttemptId { run: RUN, node: NodeId::ROOT, attempt: 1 });
        root
    }

    fn send(&mut self, event: Event) -> Effects {
        self.core.handle(self.now, event);
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
        self.core.control(self.now, control);
        self.effects()
    }

    /// Moves time on by `d` and fires the timers that are due.
    fn advance(&mut self, d: Duration) -> Effects {
        self.now += d;
        self.core.fire_timers(self.now);
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
        assert_eq!(error.kind, ErrorKind::Promise);
        assert!(error.message.contains(&format!("broken promise `{text}`")), "{}", error.message);
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
    assert_eq!(error.map(|e| e.kind), Some(ErrorKind::Upstream));
    let e = resolved(&fx, root, 1).expect_err("the await fails");
    assert_eq!(e.kind, ErrorKind::Child);
    assert!(e.message.contains("disk full"), "{}", e.message);
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

#[test]
fn a_task_not_marked_spawns_cannot_spawn() {
    let mut h = Harness::new(vec![workflow("flow"), task("plain"), task("leaf")]);
    let root = h.start_root();
    let fx = h.spawn(root, 0, "plain", &[]);
    let plain = started(&fx, NodeId::new(1));
    let fx = h.spawn(plain, 0, "leaf", &[]);
    assert!(inserted(&fx).is_empty());
    let e = attempt_error(&fx, NodeId::new(1), 1);
    assert_eq!(e.kind, ErrorKind::Graph);
    assert!(e.message.contains("#[task(spawns)]"), "{}", e.message);
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
    assert_eq!(e.kind, ErrorKind::NonDeterministic);
    assert!(e.message.contains("at call 0"), "{}", e.message);
    assert!(e.message.contains("spawn `leaf` with"), "{}", e.message);
    assert!(e.message.contains("spawn `other` with"), "{}", e.message);
    // Not retryable: the run fails with it.
    assert_eq!(node_finished(&fx, NodeId::ROOT).map(|f| f.0), Some(NodeState::Failed));
    let outcome = h.core.finish();
    assert_eq!(outcome.state, RunState::Failed);
    assert_eq!(outcome.error.map(|e| e.kind), Some(ErrorKind::NonDeterministic));
}

#[test]
fn a_replay_that_spawns_with_other_arguments_is_non_deterministic() {
    let (mut h, root) = replaying_root();
    let fx = h.spawn(root, 0, "leaf", &[("x", v(json!(2)))]);
    let e = attempt_error(&fx, NodeId::ROOT, 2);
    assert_eq!(e.kind, ErrorKind::NonDeterministic);
    assert!(e.message.contains(r#"spawn `leaf` with [["x",{"value":1}]]"#), "{}", e.message);
    assert!(e.message.contains(r#"spawn `leaf` with [["x",{"value":2}]]"#), "{}", e.message);
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
    assert_eq!(e.kind, ErrorKind::NonDeterministic);
    assert!(e.message.contains("`random()`") && e.message.contains("`now()`"), "{}", e.message);
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
    assert_eq!(e.kind, ErrorKind::NonDeterministic);
    assert!(e.message.contains("`now()`") && e.message.contains("spawn `leaf`"), "{}", e.message);
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
    assert_eq!(error.map(|e| e.message), Some("still broken".into()));
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
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("timed out after 5s"), "{}", e.message);
    assert_eq!(node_finished(&fx, NodeId::new(1)).map(|f| f.0), Some(NodeState::Failed));
    assert_eq!(resolved(&fx, root, 1).map_err(|e| e.kind), Err(ErrorKind::Child));

    // The body's own end, arriving late, changes nothing.
    let fx = h.succeed(slow, json!("too late"));
    assert!(fx.writes.is_empty() && fx.actions.is_empty(), "{fx:?}");
    assert_eq!(h.state(NodeId::new(1)), NodeState::Failed);
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
    assert_eq!(outcome.error.map(|e| e.kind), Some(ErrorKind::Cancelled));
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
            assert_eq!(e.kind, ErrorKind::Promise);
            assert!(stops(&fx).contains(&root));
            let error = h.assert_terminated(text);
            assert!(error.message.contains(what), "`{text}`: {}", error.message);
            assert!(error.message.contains("declared by node 0"), "{}", error.message);
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
fn a_shape() {
    let text = "a -> m* -> b";
    let s = |seq, t| spawn(seq, t, &[]);
    check_promise(text, vec![promise(0, text), s(1, "a"), s(2, "m"), s(3, "m"), s(4, "b")], None);
    check_promise(text, vec![promise(0, text), s(1, "a"), s(2, "b")], None);
    check_promise(text, vec![promise(0, text), s(1, "m")], Some("spawning `m`"));
    check_promise(text, vec![promise(0, text), s(1, "a"), s(2, "b"), s(3, "m")], Some("spawning `m`"));
    check_promise(text, vec![s(0, "m"), promise(1, text)], Some("the children node 0 already has"));
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
    assert!(error.message.contains("still needs `"), "{}", error.message);
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
    assert_eq!(attempt_error(&fx, NodeId::new(2), 1).kind, ErrorKind::Promise);
    let error = h.assert_terminated("no new nodes");
    assert!(error.message.contains("declared by node 2, `gen`"), "{}", error.message);
    assert!(error.message.contains("spawning `a` from node 2 (`gen`)"), "{}", error.message);

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
    assert!(error.message.contains("declared by node 1, `gen`"), "{}", error.message);
}

#[test]
fn a_promise_that_does_not_parse_fails_the_attempt() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![promise(0, "no new friends")]);
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind, ErrorKind::Usage);
    assert!(e.message.contains("no new friends"), "{}", e.message);
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
            assert_eq!(e.kind, ErrorKind::Usage);
            messages.push(e.message);
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

#[test]
fn an_edge_into_a_started_node_is_refused() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[])]);
    assert_eq!(starts(&fx).len(), 2);
    let fx = h.mutate(root, vec![edge(0, 1)]);
    assert!(edges(&fx).is_empty());
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind, ErrorKind::Graph);
    assert_eq!(e.message, "cannot add edge 1 (`a`) -> 2 (`b`): node 2 has already started");
}

#[test]
fn an_edge_that_closes_a_cycle_is_refused() {
    let mut h = Harness::new(vec![workflow("flow"), task("a"), task("b")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "a", &[]), spawn(1, "b", &[("x", out(0))]), edge(1, 0)]);
    let e = attempt_error(&fx, NodeId::ROOT, 1);
    assert_eq!(e.kind, ErrorKind::Graph);
    assert_eq!(e.message, "cannot add edge 2 (`b`) -> 1 (`a`): it would close a cycle");
    assert_eq!(edges(&fx), [(NodeId::new(1), NodeId::new(2), EdgeKind::Data)], "only the data edge");
    h.assert_all_final();
}

// ---------------------------------------------------------------------------------------------
// Surgery: rerun --from, recover, run-one
// ---------------------------------------------------------------------------------------------

#[test]
fn rerun_from_a_node_replays_its_parent_and_reruns_a_child_whose_arguments_changed() {
    let mut h = Harness::new(vec![workflow("flow"), task("fetch"), task("sum"), task("other")]);
    let root = h.start_root();
    // fetch (1), then sum (2) of fetch's value (awaited and passed on), and an unrelated node (3).
    let fetch = started(&h.spawn(root, 0, "fetch", &[]), NodeId::new(1));
    h.await_(root, 1, 0);
    let fx = h.succeed(fetch, json!(1));
    assert_eq!(resolved(&fx, root, 1), Ok(json!(1)));
    let fx = h.mutate(root, vec![spawn(1, "sum", &[("v", v(json!(1)))]), spawn(2, "other", &[])]);
    for at in starts(&fx) {
        h.succeed(at, json!(10));
    }
    h.succeed(root, json!(10));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
    h.core.take_effects();

    // `rerun --from 1`, as the runner prepares it.
    let mut reset = h.core.downstream_of(NodeId::new(1));
    assert_eq!(reset, [0, 1], "the node and its parent (which replays); not its siblings");
    h.core.mark_rerun(&reset);
    reset.extend(h.core.unfinished());
    h.core.reset(&reset);
    assert!(
        h.core.take_effects().writes.iter().all(|w| matches!(w, Write::NodeReset { .. } | Write::NodeState { .. }))
    );
    assert_eq!(h.core.unfinished(), [0, 1]);

    h.core.begin(h.now);
    let fx = h.effects();
    let (root, fetch) = (started(&fx, NodeId::ROOT), started(&fx, NodeId::new(1)));
    assert_eq!((root.attempt, fetch.attempt), (2, 2));
    let fx = h.spawn(root, 0, "fetch", &[]);
    assert!(inserted(&fx).is_empty() && starts(&fx).is_empty());
    h.await_(root, 1, 0);
    let fx = h.succeed(fetch, json!(2));
    assert_eq!(resolved(&fx, root, 1), Ok(json!(2)), "the new output");

    let fx = h.mutate(root, vec![spawn(1, "sum", &[("v", v(json!(2)))]), spawn(2, "other", &[])]);
    assert!(inserted(&fx).is_empty());
    assert!(fx.writes.iter().any(|w| matches!(w, Write::NodeArgs { node, .. } if *node == 2)), "{:?}", fx.writes);
    assert_eq!(starts(&fx).len(), 1, "only `sum` runs again");
    let sum = launch(&fx, NodeId::new(2));
    assert_eq!((sum.at.attempt, &sum.input), (2, &json!({"v": 2})));
    let sum = sum.at;
    h.await_(root, 2, 1);
    let fx = h.succeed(sum, json!(20));
    assert_eq!(resolved(&fx, root, 2), Ok(json!(20)));
    h.succeed(root, json!(20));
    h.assert_all_final();
    let outcome = h.core.finish();
    assert_eq!((outcome.state, outcome.output), (RunState::Succeeded, Some(json!(20))));
    assert_eq!(h.core.nodes[3].attempts, 1, "the unrelated node did not run again");
}

#[test]
fn a_rerun_child_still_running_with_old_arguments_is_stopped_when_they_change() {
    // fetch (1) -> stage (2), a task that spawns `sum` (3) with a value from its input. A rerun
    // from `fetch` resets `sum` too, which may start (with its old arguments) before `stage`
    // replays and gives it new ones: that attempt must not count.
    let stage = TaskDescriptor { may_spawn: true, ..task("stage") };
    let mut h = Harness::new(vec![workflow("flow"), task("fetch"), stage, task("sum")]);
    let root = h.start_root();
    let fx = h.mutate(root, vec![spawn(0, "fetch", &[]), spawn(1, "stage", &[("v", out(0))])]);
    let fx = h.succeed(started(&fx, NodeId::new(1)), json!(1));
    let stage = started(&fx, NodeId::new(2));
    let fx = h.spawn(stage, 0, "sum", &[("v", v(json!(1)))]);
    h.succeed(started(&fx, NodeId::new(3)), json!(10));
    h.succeed(stage, json!(10));
    h.succeed(root, json!(10));
    assert_eq!(h.core.finish().state, RunState::Succeeded);
    h.core.take_effects();

    let mut reset = h.core.downstream_of(NodeId::new(1));
    assert_eq!(reset, [0, 1, 2, 3]);
    h.core.mark_rerun(&reset);
    reset.extend(h.core.unfinished());
    h.core.reset(&reset);
    h.core.begin(h.now);
    let fx = h.effects();
    let old_sum = started(&fx, NodeId::new(3));
    assert_eq!(launch(&fx, NodeId::new(3)).input, json!({"v": 1}));
    let fx = h.succeed(started(&fx, NodeId::new(1)), json!(2));
    let stage = started(&fx, NodeId::new(2));
    assert_eq!(launch(&fx, NodeId::new(2)).input, json!({"v": 2}));

    let fx = h.spawn(stage, 0, "sum", &[("v", v(json!(2)))]);
    assert!(stops(&fx).contains(&old_sum), "the attempt with the old arguments is stopped: {:?}", fx.actions);
    let new_sum = launch(&fx, NodeId::new(3));
    assert_eq!((new_sum.at.attempt, &new_sum.input), (3, &json!({"v": 2})));
    let new_sum = new_sum.at;

    // The old attempt's result, if it still arrives, is not taken.
    let fx = h.succeed(old_sum, json!(10));
    assert!(node_finished(&fx, NodeId::new(3)).is_none());
    h.await_(stage, 1, 0);
    let fx = h.succeed(new_sum, json!(20));
    assert_eq!(resolved(&fx, stage, 1), Ok(json!(20)));
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
    h.core.begin(h.now);
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
    let config = Config { executor: "inline", parallelism: 1, park_after: None };
    Core::new(snapshot("flow", nodes), registry, config, Instant::now())
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
        deadline: Some(crate::model::now_ms() - 1_000),
        default: Some(json!("timed out")),
    });
    let registry = registry(vec![workflow("flow")]);
    let config = Config { executor: "inline", parallelism: 1, park_after: None };
    let now = Instant::now();
    let mut h = Harness { core: Core::new(snap, registry, config, now).expect("loads"), now };
    let unfinished = h.core.unfinished();
    h.core.reset(&unfinished);
    h.core.begin(h.now);
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
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("argument `x` refers to call 5"), "{}", e.message);

    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let e = attempt_error(&h.await_(root, 1, 3), NodeId::ROOT, 1);
    assert_eq!(e.kind, ErrorKind::Protocol);

    let mut h = Harness::new(vec![workflow("flow"), task("a")]);
    let root = h.start_root();
    let e = attempt_error(&h.spawn(root, 0, "missing", &[]), NodeId::ROOT, 1);
    assert!(e.message.contains("unknown task `missing`"), "{}", e.message);
}

#[test]
fn an_attempt_log_is_capped() {
    let mut h = Harness::new(vec![workflow("flow")]);
    let root = h.start_root();
    for i in 0..super::MAX_LOG_LINES + 5 {
        h.core.handle(h.now, Event::Log { at: root, line: format!("line {i}") });
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
