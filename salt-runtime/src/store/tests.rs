//! One test suite for every store backend: each test takes a [`Backend`] and runs against
//! SQLite and against PostgreSQL (`salt_testkit::postgres`; those are ignored unless asked for
//! with `--ignored`, as `.ci/run` does).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Claim, Lease, NewRun, QueueResult, Store, Write};
use crate::error::{Error, StoreError};
use crate::model::{NodeId, NodeRecord, NodeState, PromiseRecord, RunId, RunState, StoredArg, now_ms};

/// A fresh database of one backend.
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    url: String,
    /// Keeps a SQLite database's directory until the test ends.
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl Backend {
    /// A new SQLite file in a temporary directory.
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("nested/salt.db").display());
        Self { url, _dir: Some(Arc::new(dir)) }
    }

    /// A new PostgreSQL database on the test server; panics, saying why, where there is none.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(hint: &str) -> Self {
        Self { url: salt_testkit::postgres::database(hint), _dir: None }
    }

    /// Its URL.
    #[cfg(feature = "postgres")]
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A new connection that reads and writes.
    pub(crate) fn open(&self) -> Box<dyn Store> {
        super::open(&self.url).unwrap()
    }

    /// A new connection that only reads.
    pub(crate) fn read_only(&self) -> Box<dyn Store> {
        super::open_read_only(&self.url).unwrap()
    }
}

/// Runs each named test (a `fn(&Backend)`) once per backend: `sqlite::NAME` and `postgres::NAME`,
/// the latter ignored unless asked for (it needs a PostgreSQL server).
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Backend::sqlite());
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
                fn $name() {
                    super::$name(&super::Backend::postgres(stringify!($name)));
                }
            )*
        }
    };
}

on_every_backend!(
    a_run_round_trips_through_the_database,
    a_run_whose_lease_expired_or_was_released_reads_as_interrupted,
    a_live_lease_refuses_another_owner_and_an_expired_one_is_taken_over,
    racing_acquirers_get_one_lease,
    a_stale_owner_cannot_write_over_the_new_one,
    a_heartbeat_keeps_the_lease_and_stopping_it_releases_the_lease,
    a_superseded_node_gives_its_key_to_the_call_that_replaced_it,
    what_a_call_changed_of_its_policy_is_stored_with_the_node,
    a_delivered_failure_is_stored_until_the_node_is_reset,
    a_user_value_that_looks_like_a_reference_is_kept_as_it_is,
    claims_come_highest_priority_first_from_their_queue,
    an_expired_claim_is_claimable_again_and_its_old_holder_cannot_settle_it,
    a_claim_carries_the_task_and_its_input,
    results_of_queued_attempts_wait_until_the_orchestrator_records_them,
    a_queued_attempt_that_ended_is_neither_started_nor_reported_late,
    racing_claimers_never_get_the_same_entry,
    readers_and_a_writer_make_progress_together,
    a_reader_following_the_logs_misses_no_line_of_writers_logging_at_once,
    signals_cancels_and_pauses_reach_the_orchestrator_until_consumed,
    a_waiting_worker_and_orchestrator_are_told_of_entries_and_results,
);

/// The root node of a test run of workflow `wf` with `args`.
pub(super) fn root_with(args: Vec<(String, StoredArg)>) -> NodeRecord {
    NodeRecord {
        id: NodeId::ROOT,
        parent: None,
        seq: None,
        task: "wf".into(),
        state: NodeState::Pending,
        args,
        input_hash: "h".into(),
        output: None,
        error: None,
        attempts: 0,
        label: None,
        color: None,
        shape: None,
        created_at: 1,
        started_at: None,
        finished_at: None,
        policy: None,
    }
}

fn root() -> NodeRecord {
    root_with(vec![("n".into(), StoredArg::Value(3.into()))])
}

/// A new run of `wf` with input `{"n": 3}`, under `lease` if given.
pub(super) fn new_run(store: &dyn Store, lease: Option<(&str, Duration)>) -> RunId {
    let input = serde_json::json!({"n": 3});
    store
        .create_run(NewRun { workflow: "wf", input: &input, executor: "inline", parallelism: 2, root: &root(), lease })
        .unwrap()
}

fn started(run: RunId) -> Write {
    Write::RunStarted { run, executor: "inline", parallelism: 2, at: now_ms() }
}

const TTL: Duration = Duration::from_secs(30);

fn a_run_round_trips_through_the_database(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, Some(("me", TTL)));
    let lease = Lease { run, owner: "me".into() };
    // The run and its root are written together.
    assert_eq!(store.load(run).unwrap().nodes.len(), 1);
    store
        .commit(
            Some(&lease),
            &[
                started(run),
                Write::AttemptStarted { run, node: NodeId::ROOT, attempt: 1, executor: "inline".into(), at: 6 },
                Write::NodeFinished {
                    run,
                    node: NodeId::ROOT,
                    state: NodeState::Succeeded,
                    output: Some(7.into()),
                    error: None,
                    at: 7,
                },
            ],
        )
        .unwrap();
    // A second connection sees it, as another terminal would.
    let reader = b.read_only();
    let snap = reader.load(run).unwrap();
    assert_eq!(snap.run.workflow, "wf");
    assert_eq!(snap.run.state, RunState::Running);
    assert_eq!(snap.run.owner.as_deref(), Some("me"));
    assert_eq!(snap.nodes[0].state, NodeState::Succeeded);
    assert_eq!(snap.nodes[0].output, Some(7.into()));
    assert_eq!(snap.nodes[0].attempts, 1);
    let listed = reader.runs(10).unwrap();
    assert_eq!((listed[0].id, listed[0].state, listed[0].owner.as_deref()), (run, RunState::Running, Some("me")));
    assert!(matches!(reader.load(RunId::new(run.get() + 1)), Err(StoreError::NoRun(_))));
}

fn a_run_whose_lease_expired_or_was_released_reads_as_interrupted(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, Some(("gone", Duration::from_millis(400))));
    store.commit(Some(&Lease { run, owner: "gone".into() }), &[started(run)]).unwrap();
    assert_eq!(store.load(run).unwrap().run.state, RunState::Running);
    std::thread::sleep(Duration::from_millis(450));
    let snap = store.load(run).unwrap();
    assert_eq!((snap.run.state, snap.run.owner), (RunState::Interrupted, None));
    assert_eq!(store.runs(1).unwrap()[0].state, RunState::Interrupted);

    let lease = store.acquire_run_lease(run, "next", TTL).unwrap();
    assert_eq!(store.load(run).unwrap().run.state, RunState::Running);
    store.release_run_lease(&lease).unwrap();
    assert_eq!(store.load(run).unwrap().run.state, RunState::Interrupted);
}

fn a_live_lease_refuses_another_owner_and_an_expired_one_is_taken_over(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let first = store.acquire_run_lease(run, "host:1:aaaa", Duration::from_millis(300)).unwrap();
    let refused = store.acquire_run_lease(run, "host:2:bbbb", TTL).unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("run {run} is being driven by host:1:aaaa (lease renewed 0 s ago); wait for it or cancel it")
    );
    // Its holder may take it again (renewing it).
    store.acquire_run_lease(run, "host:1:aaaa", Duration::from_millis(50)).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    let second = store.acquire_run_lease(run, "host:2:bbbb", TTL).unwrap();
    assert!(matches!(store.renew_run_lease(&first, TTL), Err(StoreError::LeaseLost { .. })));
    // Releasing a lease one no longer holds does not release the new owner's.
    store.release_run_lease(&first).unwrap();
    assert_eq!(store.load(run).unwrap().run.owner.as_deref(), Some("host:2:bbbb"));
    store.renew_run_lease(&second, TTL).unwrap();
    assert!(matches!(store.acquire_run_lease(RunId::new(run.get() + 1), "x", TTL), Err(StoreError::NoRun(_))));
}

fn racing_acquirers_get_one_lease(b: &Backend) {
    let run = new_run(&*b.open(), None);
    let barrier = Arc::new(Barrier::new(6));
    let won: usize = (0..6)
        .map(|i| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = b.open();
                barrier.wait();
                match store.acquire_run_lease(run, &format!("owner{i}"), TTL) {
                    Ok(_) => 1,
                    Err(StoreError::Leased { .. }) => 0,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .sum();
    assert_eq!(won, 1);
}

fn a_stale_owner_cannot_write_over_the_new_one(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, Some(("old", Duration::from_millis(500))));
    let old = Lease { run, owner: "old".into() };
    store.commit(Some(&old), &[started(run)]).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let new = store.acquire_run_lease(run, "new", TTL).unwrap();
    let late = Write::NodeFinished {
        run,
        node: NodeId::ROOT,
        state: NodeState::Failed,
        output: None,
        error: None,
        at: now_ms(),
    };
    let e = store.commit(Some(&old), &[Write::NodeState { run, node: NodeId::ROOT, state: NodeState::Ready }, late]);
    let e = e.unwrap_err();
    assert!(matches!(&e, StoreError::LeaseLost { current: Some(c), .. } if c == "new"), "{e:?}");
    assert!(e.to_string().contains("new took the run over"), "{e}");
    // Nothing of the refused batch was written.
    assert_eq!(store.load(run).unwrap().nodes[0].state, NodeState::Pending);
    store.commit(Some(&new), &[Write::NodeState { run, node: NodeId::ROOT, state: NodeState::Ready }]).unwrap();
    assert_eq!(store.load(run).unwrap().nodes[0].state, NodeState::Ready);
}

fn a_heartbeat_keeps_the_lease_and_stopping_it_releases_the_lease(b: &Backend) {
    let store = b.open();
    let ttl = Duration::from_millis(150);
    let run = new_run(&*store, Some(("me", ttl)));
    let lease = Lease { run, owner: "me".into() };
    store.commit(Some(&lease), &[started(run)]).unwrap();
    let heartbeat = super::Heartbeat::start(store.reopen().unwrap().into(), lease.clone(), ttl).unwrap();
    std::thread::sleep(ttl * 4);
    assert_eq!(store.load(run).unwrap().run.state, RunState::Running);
    assert!(matches!(store.acquire_run_lease(run, "other", TTL), Err(StoreError::Leased { .. })));
    heartbeat.stop();
    assert_eq!(store.load(run).unwrap().run.state, RunState::Interrupted);
}

fn a_superseded_node_gives_its_key_to_the_call_that_replaced_it(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let child = |id: u64, task: &str| NodeRecord {
        id: NodeId::new(id),
        parent: Some(NodeId::ROOT),
        seq: Some(0),
        task: task.into(),
        ..root()
    };
    let journal = |seq: u32| Write::Journal {
        run,
        node: NodeId::ROOT,
        seq,
        kind: crate::context::JournalKind::Random,
        value: Value::from(seq),
    };
    store.commit(None, &[Write::InsertNode { run, node: Box::new(child(1, "a")) }, journal(1), journal(2)]).unwrap();
    // The same key twice, while both are current, is refused.
    assert!(store.commit(None, &[Write::InsertNode { run, node: Box::new(child(2, "b")) }]).is_err());
    let promise = PromiseRecord { id: 0, scope: NodeId::ROOT, declared_by: NodeId::ROOT, seq: 3, text: "x".into() };
    store.commit(None, &[Write::Promise { run, record: promise }]).unwrap();
    store
        .commit(
            None,
            &[
                Write::NodeState { run, node: NodeId::new(1), state: NodeState::Superseded },
                Write::ForgetCalls { run, node: NodeId::ROOT, from_seq: 2 },
                Write::DropPromise { run, id: 0 },
                Write::InsertNode { run, node: Box::new(child(2, "b")) },
            ],
        )
        .unwrap();
    let snap = store.load(run).unwrap();
    let nodes: Vec<_> = snap.nodes.iter().map(|n| (n.id.get(), n.task.as_str(), n.state)).collect();
    assert_eq!(nodes, [(0, "wf", NodeState::Pending), (1, "a", NodeState::Superseded), (2, "b", NodeState::Pending)]);
    assert_eq!(snap.journal.iter().map(|j| j.seq).collect::<Vec<_>>(), [1]);
    assert!(snap.promises.is_empty());
}

fn what_a_call_changed_of_its_policy_is_stored_with_the_node(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let policy = crate::registry::PolicyOverride {
        retries: Some(2),
        timeout_ms: Some(1500),
        queue: Some("gpu".into()),
        ..Default::default()
    };
    let child = NodeRecord {
        id: NodeId::new(1),
        parent: Some(NodeId::ROOT),
        seq: Some(0),
        policy: Some(policy.clone()),
        ..root()
    };
    store.commit(None, &[Write::InsertNode { run, node: Box::new(child) }]).unwrap();
    let nodes = store.load(run).unwrap().nodes;
    assert_eq!(nodes[0].policy, None);
    assert_eq!(nodes[1].policy, Some(policy));
}

fn a_delivered_failure_is_stored_until_the_node_is_reset(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let child = NodeRecord { id: NodeId::new(1), parent: Some(NodeId::ROOT), seq: Some(0), ..root() };
    let delivered = Write::Delivered { run, node: NodeId::new(1), attempt: 2 };
    store.commit(None, &[Write::InsertNode { run, node: Box::new(child) }, delivered]).unwrap();
    assert_eq!(store.load(run).unwrap().delivered, [(NodeId::new(1), 2)]);
    store.commit(None, &[Write::NodeReset { run, node: NodeId::new(1) }]).unwrap();
    assert!(store.load(run).unwrap().delivered.is_empty());
}

fn a_user_value_that_looks_like_a_reference_is_kept_as_it_is(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let missing = format!("{:064x}", 1);
    let lookalike = serde_json::json!({"$salt_blob": missing, "bytes": 3});
    let node = NodeRecord {
        id: NodeId::new(1),
        parent: Some(NodeId::ROOT),
        seq: Some(0),
        args: vec![("x".into(), StoredArg::Value(serde_json::json!({"blob": lookalike.clone()})))],
        ..root()
    };
    let output = Some(lookalike.clone());
    store
        .commit(
            None,
            &[
                Write::InsertNode { run, node: Box::new(node) },
                Write::NodeFinished {
                    run,
                    node: NodeId::new(1),
                    state: NodeState::Succeeded,
                    output,
                    error: None,
                    at: 1,
                },
            ],
        )
        .unwrap();
    let snap = store.load(run).unwrap();
    assert_eq!(snap.nodes[1].output, Some(lookalike.clone()));
    assert_eq!(snap.nodes[1].args[0].1, StoredArg::Value(serde_json::json!({"blob": lookalike})));
}

fn enqueue(store: &dyn Store, run: RunId, node: NodeId, queue: &str, priority: i32) {
    let (task, input) = ("t".to_string(), serde_json::json!({"n": node}));
    store
        .commit(None, &[Write::Enqueue { run, node, attempt: 1, queue: queue.into(), priority, task, input }])
        .unwrap();
}

fn claims_come_highest_priority_first_from_their_queue(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    for (node, priority) in [(1, 0), (2, 5), (3, -1), (4, 5)] {
        enqueue(&*store, run, NodeId::new(node), "default", priority);
    }
    enqueue(&*store, run, NodeId::new(5), "gpu", 100);
    // Enqueuing twice is idempotent.
    enqueue(&*store, run, NodeId::new(1), "default", 0);
    let nodes = |claims: Vec<Claim>| claims.into_iter().map(|c| c.node).collect::<Vec<_>>();
    assert_eq!(nodes(store.claim("default", 3, "w", TTL).unwrap()), [2, 4, 1]);
    assert_eq!(nodes(store.claim("default", 3, "w", TTL).unwrap()), [3]);
    assert!(store.claim("default", 3, "w", TTL).unwrap().is_empty());
    assert_eq!(nodes(store.claim("gpu", 0, "w", TTL).unwrap()), Vec::<NodeId>::new());
    assert_eq!(nodes(store.claim("gpu", 9, "w", TTL).unwrap()), [5]);
}

fn an_expired_claim_is_claimable_again_and_its_old_holder_cannot_settle_it(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    enqueue(&*store, run, NodeId::new(1), "q", 0);
    // Long enough to check that it holds, on a loaded machine too.
    let first = store.claim("q", 1, "w1", Duration::from_secs(1)).unwrap().remove(0);
    assert!(store.claim("q", 1, "w2", TTL).unwrap().is_empty(), "a live claim is not claimable");
    std::thread::sleep(Duration::from_millis(1200));
    let second = store.claim("q", 1, "w2", TTL).unwrap().remove(0);
    assert_eq!((second.id, second.node), (first.id, NodeId::new(1)));
    for lost in [
        store.complete(&first, &1.into()),
        store.fail(&first, &Error::new(crate::error::ErrorKind::Task, "x")),
        store.release(&first),
        store.renew_claim(&first, TTL).map(|_| ()),
    ] {
        assert!(matches!(lost, Err(StoreError::ClaimLost { .. })), "{lost:?}");
    }
    let second = store.renew_claim(&second, TTL).unwrap();
    store.release(&second).unwrap();
    let third = store.claim("q", 1, "w3", TTL).unwrap().remove(0);
    store.complete(&third, &serde_json::json!({"ok": true})).unwrap();
    assert!(store.claim("q", 1, "w4", TTL).unwrap().is_empty(), "a completed entry is not claimed again");
    assert!(matches!(store.complete(&third, &1.into()), Err(StoreError::ClaimLost { .. })));
}

fn a_claim_carries_the_task_and_its_input(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    enqueue(&*store, run, NodeId::new(7), "gpu", 0);
    let claim = store.claim("gpu", 1, "w", TTL).unwrap().remove(0);
    assert_eq!((claim.task.as_str(), claim.input.clone()), ("t", serde_json::json!({"n": 7})));
}

/// An attempt started on `queue`, as the run core writes it.
fn start_queued(store: &dyn Store, run: RunId, node: NodeId, attempt: u32) {
    let queue = "q".to_string();
    store
        .commit(
            None,
            &[
                Write::AttemptStarted { run, node, attempt, executor: "queue:q".into(), at: now_ms() },
                Write::Enqueue { run, node, attempt, queue, priority: 0, task: "t".into(), input: Value::Null },
            ],
        )
        .unwrap();
}

fn attempt_finished(run: RunId, node: NodeId, attempt: u32, state: NodeState) -> Write {
    Write::AttemptFinished { run, node, attempt, state, error: None, at: now_ms() }
}

fn results_of_queued_attempts_wait_until_the_orchestrator_records_them(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    for node in [1, 2, 3] {
        start_queued(&*store, run, NodeId::new(node), 1);
    }
    assert!(store.queue_results(run).unwrap().is_empty(), "nothing has run yet");
    let claims = store.claim("q", 3, "w", TTL).unwrap();
    store.complete(&claims[0], &serde_json::json!({"out": 1})).unwrap();
    let error = Error::new(crate::error::ErrorKind::Task, "it broke");
    store.fail(&claims[1], &error).unwrap();
    let results = store.queue_results(run).unwrap();
    assert_eq!(
        results,
        [
            QueueResult { node: NodeId::new(1), attempt: 1, result: Ok(serde_json::json!({"out": 1})) },
            QueueResult { node: NodeId::new(2), attempt: 1, result: Err(error) },
        ]
    );
    // Read again until recorded: an orchestrator that stopped before recording loses nothing.
    assert_eq!(store.queue_results(run).unwrap().len(), 2);
    store
        .commit(
            None,
            &[
                attempt_finished(run, NodeId::new(1), 1, NodeState::Succeeded),
                attempt_finished(run, NodeId::new(2), 1, NodeState::Failed),
            ],
        )
        .unwrap();
    assert!(store.queue_results(run).unwrap().is_empty());
    assert!(store.queue_results(RunId::new(run.get() + 1)).unwrap().is_empty());
}

fn a_queued_attempt_that_ended_is_neither_started_nor_reported_late(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    start_queued(&*store, run, NodeId::new(1), 1);
    start_queued(&*store, run, NodeId::new(2), 1);
    let claimed = store.claim("q", 1, "w", TTL).unwrap().remove(0);
    assert_eq!(claimed.node, 1);
    // The orchestrator timed node 1 out while a worker ran it, and cancelled node 2 before
    // any worker took it.
    store
        .commit(
            None,
            &[
                attempt_finished(run, NodeId::new(1), 1, NodeState::Failed),
                attempt_finished(run, NodeId::new(2), 1, NodeState::Cancelled),
            ],
        )
        .unwrap();
    assert!(store.claim("q", 9, "w2", TTL).unwrap().is_empty(), "an ended attempt is not claimable");
    for late in [store.complete(&claimed, &1.into()), store.renew_claim(&claimed, TTL).map(|_| ())] {
        assert!(matches!(late, Err(StoreError::ClaimLost { .. })), "{late:?}");
    }
    assert!(store.queue_results(run).unwrap().is_empty());
    // Its retry is a new attempt, claimable as any other.
    start_queued(&*store, run, NodeId::new(1), 2);
    let retry = store.claim("q", 9, "w2", TTL).unwrap();
    assert_eq!(retry.iter().map(|c| (c.node, c.attempt)).collect::<Vec<_>>(), [(NodeId::new(1), 2)]);
}

fn a_waiting_worker_and_orchestrator_are_told_of_entries_and_results(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let queue = store.watch_queue("q").unwrap().expect("the store tells of entries");
    let results = store.watch_results().unwrap().expect("the store tells of results");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    type Told<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + 'a>>;
    let within = |ms: u64, f: Told<'_>| {
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(ms), f).await.unwrap_or(false) })
    };
    let entry = || Box::pin(queue.notified()) as Told<'_>;
    // A result of this run: PostgreSQL names the run, SQLite says there is one.
    let result = || {
        Box::pin(async {
            match results.reported().await {
                Ok(Some(of)) => of == run,
                Ok(None) => true,
                Err(()) => false,
            }
        }) as Told<'_>
    };
    assert!(!within(200, entry()), "nothing enqueued yet");
    start_queued(&*store, run, NodeId::new(1), 1);
    start_queued(&*store, run, NodeId::new(2), 1);
    assert!(within(5_000, entry()), "an enqueue is told");
    let claims = store.claim("q", 2, "w", TTL).unwrap();
    assert!(!within(200, result()), "nothing reported yet");
    store.complete(&claims[0], &serde_json::json!(7)).unwrap();
    assert!(within(5_000, result()), "a success is told");
    store.commit(None, &[attempt_finished(run, NodeId::new(1), 1, NodeState::Succeeded)]).unwrap();
    store.fail(&claims[1], &Error::new(crate::error::ErrorKind::Task, "no")).unwrap();
    assert!(within(5_000, result()), "a failure is told");
    store.commit(None, &[attempt_finished(run, NodeId::new(2), 1, NodeState::Failed)]).unwrap();
    // A result of a claim lost is refused, and not told.
    assert!(store.complete(&claims[0], &serde_json::json!(8)).is_err());
    assert!(!within(300, result()), "nothing more");
}

fn racing_claimers_never_get_the_same_entry(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let writes: Vec<Write> = (0..400)
        .map(|node| Write::Enqueue {
            run,
            node: NodeId::new(node),
            attempt: 1,
            queue: "q".into(),
            priority: (node % 7) as i32,
            task: "t".into(),
            input: Value::Null,
        })
        .collect();
    store.commit(None, &writes).unwrap();
    let barrier = Arc::new(Barrier::new(8));
    let claimed: Vec<Vec<i64>> = (0..8)
        .map(|i| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                let store = b.open();
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let claims = store.claim("q", 3, &format!("w{i}"), TTL).unwrap();
                    if claims.is_empty() {
                        return mine;
                    }
                    mine.extend(claims.iter().map(|c| c.id));
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let mut all: Vec<i64> = claimed.concat();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((total, all.len()), (400, 400), "an entry was claimed twice or never");
}

fn readers_and_a_writer_make_progress_together(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, Some(("w", TTL)));
    let lease = Lease { run, owner: "w".into() };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reading = Arc::new(Barrier::new(2));
    let reader = {
        let (b, done, reading) = (b.clone(), done.clone(), reading.clone());
        std::thread::spawn(move || {
            let reader = b.read_only();
            let (mut reads, mut seen) = (0, Vec::new());
            reading.wait();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let snap = reader.load(run).unwrap();
                // Each snapshot is consistent: whole batches of nodes, never part of one.
                assert_eq!((snap.nodes.len() - 1) % 50, 0, "a batch was seen half written");
                seen.push(snap.nodes.len());
                assert_eq!(reader.runs(5).unwrap().len(), 1);
                reads += 1;
            }
            (reads, seen)
        })
    };
    reading.wait();
    let started = Instant::now();
    let mut next: NodeId = NodeId::new(1);
    for _ in 0..200 {
        let batch: Vec<Write> = (0..50)
            .map(|_| {
                let node = NodeRecord { id: next, parent: Some(NodeId::ROOT), seq: Some(next.get() as u32), ..root() };
                next = NodeId::new(next.get() + 1);
                Write::InsertNode { run, node: Box::new(node) }
            })
            .collect();
        store.commit(Some(&lease), &batch).unwrap();
    }
    let writing = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (reads, seen) = reader.join().unwrap();
    assert!(reads >= 5, "the reader made {reads} reads in {writing:?}");
    // The reader saw the run grow while it was written, not only before or after.
    assert!(seen.iter().any(|n| *n > 1 && *n < 10_001), "{seen:?}");
    assert_eq!(store.load(run).unwrap().nodes.len(), 10_001);
}

fn a_reader_following_the_logs_misses_no_line_of_writers_logging_at_once(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, None);
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let b = b.clone();
            std::thread::spawn(move || {
                let store = b.open();
                for batch in 0..40 {
                    let lines: Vec<Write> = (0..5)
                        .map(|i| Write::Log {
                            run,
                            record: crate::model::LogRecord {
                                node: NodeId::new(w),
                                attempt: 1,
                                ts: now_ms(),
                                line: format!("{w}-{batch}-{i}"),
                            },
                        })
                        .collect();
                    store.commit(None, &lines).unwrap();
                }
            })
        })
        .collect();
    let reader = b.read_only();
    let (mut seen, mut after) = (Vec::new(), 0);
    loop {
        // Once the writers are done, one more read sees the rest.
        let done = writers.iter().all(|w| w.is_finished());
        let (_, lines) = reader.logs_after(run, None, after).unwrap();
        if let Some((last, _)) = lines.last() {
            after = *last;
        }
        seen.extend(lines.into_iter().map(|(_, l)| l.line));
        if done {
            break;
        }
    }
    for w in writers {
        w.join().unwrap();
    }
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((total, seen.len()), (600, 600), "lines were missed or seen twice");
    // One node's lines, in the order they were written.
    let node: Vec<String> = reader.logs(run, Some(NodeId::new(1))).unwrap().into_iter().map(|l| l.line).collect();
    let expected: Vec<String> = (0..40).flat_map(|b| (0..5).map(move |i| format!("1-{b}-{i}"))).collect();
    assert_eq!(node, expected);
}

fn signals_cancels_and_pauses_reach_the_orchestrator_until_consumed(b: &Backend) {
    let store = b.open();
    let run = new_run(&*store, Some(("me", TTL)));
    let lease = Lease { run, owner: "me".into() };
    let quiet = store.control(run).unwrap();
    assert!(!quiet.cancel_requested && !quiet.paused && quiet.signals.is_empty() && quiet.cancel_nodes.is_empty());

    let other = b.open();
    other.send_signal(run, "approve", &serde_json::json!({"by": "ann", "note": "it's \"fine\""})).unwrap();
    other.send_signal(run, "approve", &serde_json::json!(null)).unwrap();
    other.request_node_cancel(run, NodeId::new(4)).unwrap();
    other.set_paused(run, true).unwrap();
    let asked = store.control(run).unwrap();
    assert!(asked.paused && !asked.cancel_requested);
    let signals: Vec<(&str, &Value)> = asked.signals.iter().map(|(_, n, v)| (n.as_str(), v)).collect();
    assert_eq!(
        signals,
        [("approve", &serde_json::json!({"by": "ann", "note": "it's \"fine\""})), ("approve", &Value::Null)]
    );
    assert!(asked.signals[0].0 < asked.signals[1].0, "in the order sent");
    assert_eq!(asked.cancel_nodes.iter().map(|(_, n)| *n).collect::<Vec<_>>(), [NodeId::new(4)]);

    // Consumed, they are no longer asked.
    let consumed =
        [Write::SignalConsumed { id: asked.signals[0].0 }, Write::NodeCancelConsumed { id: asked.cancel_nodes[0].0 }];
    store.commit(Some(&lease), &consumed).unwrap();
    other.request_cancel(run).unwrap();
    let left = store.control(run).unwrap();
    assert!(left.cancel_requested);
    assert_eq!(left.signals.len(), 1);
    assert_eq!(left.signals[0].2, Value::Null);
    assert!(left.cancel_nodes.is_empty());
    assert!(matches!(store.control(RunId::new(999)), Err(StoreError::NoRun(_))));

    // Several runs at once, as an orchestrator asks each tick; a run that does not exist is
    // left out.
    let quiet_run = new_run(&*store, None);
    other.send_signal(quiet_run, "go", &serde_json::json!(1)).unwrap();
    let all = store.controls(&[run, RunId::new(999), quiet_run]).unwrap();
    let seen: Vec<(RunId, bool, usize)> = all.iter().map(|(r, c)| (*r, c.cancel_requested, c.signals.len())).collect();
    assert_eq!(seen, [(run, true, 1), (quiet_run, false, 1)]);
    assert_eq!(all[1].1.signals[0].1, "go");
    assert!(store.controls(&[]).unwrap().is_empty());
}

/// A binary built without the `postgres` feature refuses a `postgres://` URL, says why, and does
/// not repeat the URL's password.
#[cfg(not(feature = "postgres"))]
#[test]
fn without_the_postgres_feature_a_postgres_url_is_refused() {
    for open in [super::open, super::open_read_only] {
        let e = open("postgres://ann:hunter2@db.example/runs").map(|_| ()).unwrap_err();
        assert!(matches!(e, StoreError::Unsupported { .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.contains("built without the `postgres` feature of `salt`"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
