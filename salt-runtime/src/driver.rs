//! The driver: the IO around run cores. It hosts any number of runs at once: it feeds each
//! run's core the events of its attempts (every event names its run), the time and what other
//! processes asked (through the store), commits the writes the core returns, and performs its
//! actions through the executors the runs use.
//!
//! Commits are pipelined, per run: one runs on a blocking thread while the core goes on, and
//! the writes that pile up meanwhile form the next one, so a commit carries as many transitions
//! as arrived while the previous one was written (group commit, without a timer). What depends
//! on a transition being durable — answering a body's await or journaled call, showing
//! progress — waits for the commit that holds it. Starting an attempt does not: an attempt that
//! started and was lost in a crash is simply run again by `recover`, so attempts start at once
//! (unless the lease was not renewed lately, when they too wait for the fenced commit).
//!
//! Attempts a core put on a named queue run in workers, elsewhere: while any is outstanding,
//! the driver feeds the workers' results to the core as the attempts' ends. It reads them when
//! the store tells it a worker reported one ([`Store::watch_results`]: PostgreSQL's `NOTIFY`,
//! or a SQLite file's commits), and every [`WATCHED_QUEUE_POLL`] anyway; without a watch (it
//! could not be set up, or broke), every [`QUEUE_POLL`].
//!
//! The runs of one process share its cores and memory ([`crate::run::Machine`]): while one of
//! them waits for room, the driver wakes when another run gives some back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result, StoreError};
use crate::executor::{AttemptId, Event, Events, Executor};
use crate::model::{NodeId, RunId, now_ms};
use crate::progress::Observer;
use crate::run::{Action, Core, Effects, Note};
use crate::runner::RunOutcome;
use crate::store::{Lease, LeaseWatch, ResultWatch, Store, Write};

/// The most events applied between two looks at the rest of the world.
const MAX_BATCH: usize = 8_192;

/// How often the driver reads what other processes asked and shows progress.
const TICK: Duration = Duration::from_millis(250);

/// How often the driver reads the results of its queued attempts while it has some.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// How often the driver reads the results of its queued attempts while it has some and the
/// store tells it of new ones: a result announced while the watch was (re)connecting is read
/// this late.
const WATCHED_QUEUE_POLL: Duration = Duration::from_secs(1);

/// Makes the executor a run asks for, given where executors send their events.
pub(crate) type MakeExecutor = Box<dyn FnOnce(Events) -> Box<dyn Executor> + Send>;

/// A run to host.
pub(crate) struct Admit {
    pub(crate) core: Core,
    /// The run's lease: every batch is committed only while the driver still holds the run.
    pub(crate) lease: Lease,
    /// When the lease was last renewed; none when nobody renews it.
    pub(crate) lease_watch: Option<LeaseWatch>,
    pub(crate) observer: Box<dyn Observer>,
    /// The executor's name (recorded with the run), and how to make it if the driver has none
    /// of that name yet.
    pub(crate) executor: (&'static str, MakeExecutor),
    pub(crate) parallelism: u32,
    /// Where the outcome goes.
    pub(crate) done: oneshot::Sender<Result<RunOutcome>>,
}

/// Hands runs to a driver.
#[derive(Clone)]
pub(crate) struct Admission {
    tx: mpsc::UnboundedSender<Admit>,
}

impl Admission {
    /// Hosts a run; its outcome arrives on the `done` channel of `admit`. An error when the
    /// driver has stopped.
    pub(crate) fn admit(&self, admit: Admit) -> Result<()> {
        self.tx.send(admit).map_err(|_| Error::new(ErrorKind::Store, "the orchestrator stopped before the run began"))
    }
}

/// What waits for a commit.
enum Deferred {
    Note(Note),
    Action(Action),
    /// A node's attempt went onto the work queue: (node, task, queue).
    Queued(NodeId, &'static str, String),
}

/// The end of one run's commit.
type Committed = (RunId, std::result::Result<(), StoreError>);

/// Writes of one run on their way to the store, and what waits for them.
#[derive(Default)]
struct Pipeline {
    /// Writes not yet handed to a commit.
    queued: Vec<Write>,
    /// What waits for the queued writes (and the commit in flight).
    after_queued: Vec<Deferred>,
    /// What waits for the commit in flight, if one is.
    inflight: Option<Vec<Deferred>>,
}

impl Pipeline {
    fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_none()
    }
}

/// A run the driver hosts.
struct Hosted {
    core: Core,
    lease: Lease,
    lease_watch: Option<LeaseWatch>,
    observer: Box<dyn Observer>,
    executor: &'static str,
    pipe: Pipeline,
    /// Attempts waiting in the durable queue or running in a worker, not yet ended.
    queued: HashSet<AttemptId>,
    /// Its takeover is committed and its control read: it may start attempts.
    open: bool,
    /// Its outcome, once decided; sent when its last commit is durable.
    outcome: Option<RunOutcome>,
    done: Option<oneshot::Sender<Result<RunOutcome>>>,
}

/// Drives the runs it is given, each to its end.
pub(crate) struct Driver {
    store: Arc<dyn Store>,
    events_tx: Events,
    events: mpsc::UnboundedReceiver<Event>,
    admissions: mpsc::UnboundedReceiver<Admit>,
    executors: HashMap<&'static str, Box<dyn Executor>>,
    runs: HashMap<RunId, Hosted>,
    commits: FuturesUnordered<BoxFuture<'static, Committed>>,
    /// Stop every run (cancelled) on Ctrl-C and SIGTERM.
    handle_signals: bool,
}

impl Driver {
    /// A driver on `store`, and what hands it runs. It runs (see [`Driver::run`]) until every
    /// run it was given has ended and every [`Admission`] is dropped.
    pub(crate) fn new(store: Arc<dyn Store>, handle_signals: bool) -> (Self, Admission) {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (tx, admissions) = mpsc::unbounded_channel();
        let driver = Self {
            store,
            events_tx,
            events,
            admissions,
            executors: HashMap::new(),
            runs: HashMap::new(),
            commits: FuturesUnordered::new(),
            handle_signals,
        };
        (driver, Admission { tx })
    }

    /// Hosts runs until none is left and no more can come.
    pub(crate) async fn run(mut self) {
        // Listen for Ctrl-C and SIGTERM before anything starts, so that neither can kill the
        // process instead of stopping the runs.
        let mut stop = self.handle_signals.then(stop_signals);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue_poll = tokio::time::interval(QUEUE_POLL);
        queue_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watched_poll = tokio::time::interval(WATCHED_QUEUE_POLL);
        watched_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Told of workers' results, once some attempt is queued and where the store can tell.
        let mut results: Option<ResultWatch> = None;
        let mut results_tried = false;
        // Cores or memory given back by another run of this process: a run waiting for them
        // may start its next sized node.
        let mut freed = crate::run::Machine::process().watch_freed();
        let mut admitting = true;
        loop {
            self.step();
            if self.runs.is_empty() && !admitting {
                break;
            }
            let next_timer = self.runs.values().filter_map(|h| h.core.next_timer()).min().map(Instant::from_std);
            let queued = self.runs.values().any(|h| !h.queued.is_empty());
            if queued && !results_tried {
                results_tried = true;
                results = self.store.watch_results().unwrap_or_else(|e| {
                    tracing::warn!("cannot watch the workers' results, polling them: {e}");
                    None
                });
            }
            let watched = results.is_some();
            let waiting_for_room = self.runs.values().any(|h| h.core.waits_for_room());
            tokio::select! {
                biased;
                Some((run, done)) = self.commits.next(), if !self.commits.is_empty() => {
                    self.committed(run, done);
                }
                admit = self.admissions.recv(), if admitting => match admit {
                    Some(admit) => self.host(admit),
                    None => admitting = false,
                },
                Some(ev) = self.events.recv() => {
                    let now = crate::run::now();
                    self.apply(now, ev);
                    let mut n = 1;
                    while n < MAX_BATCH {
                        match self.events.try_recv() {
                            Ok(ev) => { self.apply(now, ev); n += 1; }
                            Err(_) => break,
                        }
                    }
                }
                () = async { tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)).await }, if next_timer.is_some() => {
                    let now = crate::run::now();
                    for h in self.runs.values_mut() {
                        h.core.fire_timers(now);
                    }
                }
                Some(why) = async { match stop.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    for h in self.runs.values_mut().filter(|h| !h.core.is_cancelled()) {
                        h.core.cancel(why.into());
                    }
                }
                _ = tick.tick() => {
                    let now = crate::run::now();
                    self.poll_control(now);
                    for h in self.runs.values_mut() {
                        h.observer.tick(&h.core.summary(now.instant));
                    }
                }
                Ok(()) = freed.changed(), if waiting_for_room => {}
                _ = queue_poll.tick(), if queued && !watched => {
                    self.poll_queue(None, crate::run::now());
                }
                _ = watched_poll.tick(), if queued && watched => {
                    self.poll_queue(None, crate::run::now());
                }
                reported = async { results.as_ref().expect("watched").reported().await }, if watched => match reported {
                    Ok(run) => self.poll_queue(run, crate::run::now()),
                    Err(()) => {
                        tracing::warn!("the watch of the workers' results broke: polling them");
                        results = None;
                    }
                },
            }
        }
        for (_, mut e) in self.executors.drain() {
            e.shutdown();
        }
        // Commits still in flight belong to runs that failed: let them land.
        while self.commits.next().await.is_some() {}
    }

    /// Takes a new run: its takeover is committed before it starts anything.
    fn host(&mut self, admit: Admit) {
        let Admit { mut core, lease, lease_watch, observer, executor: (name, make), parallelism, done } = admit;
        let run = core.run_id();
        if !self.executors.contains_key(name) {
            let e = make(self.events_tx.clone());
            self.executors.insert(name, e);
        }
        let now = crate::run::now();
        core.begin(now);
        let mut first = core.take_effects();
        first.writes.insert(0, Write::RunStarted { run, executor: name, parallelism, at: now_ms() });
        let hosted = Hosted {
            core,
            lease,
            lease_watch,
            observer,
            executor: name,
            pipe: Pipeline::default(),
            queued: HashSet::new(),
            open: false,
            outcome: None,
            done: Some(done),
        };
        self.runs.insert(run, hosted);
        self.absorb(run, first);
        self.launch(run);
    }

    /// After anything happened: every open run starts what it may, commits what it wrote, and
    /// ends when nothing is left to do.
    fn step(&mut self) {
        let now = crate::run::now();
        let ids: Vec<RunId> = self.runs.keys().copied().collect();
        for run in ids {
            let Some(h) = self.runs.get_mut(&run) else { continue };
            if h.open && h.outcome.is_none() {
                h.core.start_ready(now);
                if h.core.active() == 0 {
                    let outcome = h.core.finish();
                    h.outcome = Some(outcome);
                }
            }
            let fx = h.core.take_effects();
            self.absorb(run, fx);
            let Some(h) = self.runs.get_mut(&run) else { continue };
            if h.pipe.inflight.is_none() {
                self.launch(run);
            }
            self.end_if_done(run);
        }
    }

    /// A run whose outcome is decided and durable ends: its outcome is sent.
    fn end_if_done(&mut self, run: RunId) {
        let Some(h) = self.runs.get(&run) else { return };
        if h.outcome.is_none() || !h.pipe.is_idle() || !h.pipe.after_queued.is_empty() {
            return;
        }
        let Some(mut h) = self.runs.remove(&run) else { return };
        h.observer.done(&h.core.summary(Instant::now().into_std()));
        if let (Some(done), Some(outcome)) = (h.done.take(), h.outcome.take()) {
            let _ = done.send(Ok(outcome));
        }
    }

    /// A run failed (its store or lease): its attempts stop and the error is its outcome.
    fn fail(&mut self, run: RunId, error: Error) {
        let Some(mut h) = self.runs.remove(&run) else { return };
        if let Some(executor) = self.executors.get_mut(h.executor) {
            for at in h.core.live_attempts() {
                executor.stop(at);
            }
        }
        if let Some(done) = h.done.take() {
            let _ = done.send(Err(error));
        }
    }

    fn apply(&mut self, now: crate::run::Time, ev: Event) {
        let at = match &ev {
            Event::Mutate { at, .. }
            | Event::Await { at, .. }
            | Event::Journal { at, .. }
            | Event::Wait { at, .. }
            | Event::Log { at, .. }
            | Event::Finished { at, .. } => *at,
        };
        let Some(h) = self.runs.get_mut(&at.run) else { return };
        if matches!(ev, Event::Finished { .. })
            && let Some(executor) = self.executors.get_mut(h.executor)
        {
            executor.ended(at);
        }
        h.core.handle(now, ev);
    }

    /// Reads what other processes asked of the open runs, all at once: cancel, pause or
    /// resume, signals, node cancels.
    fn poll_control(&mut self, now: crate::run::Time) {
        let open: Vec<RunId> = self.runs.iter().filter(|(_, h)| h.open).map(|(run, _)| *run).collect();
        if open.is_empty() {
            return;
        }
        let Ok(controls) = self.store.controls(&open) else { return };
        for (run, control) in controls {
            if let Some(h) = self.runs.get_mut(&run) {
                h.core.control(now, control);
            }
        }
    }

    /// Feeds the cores what workers reported for their queued attempts: of run `only`, or of
    /// every run.
    fn poll_queue(&mut self, only: Option<RunId>, now: crate::run::Time) {
        let polled = |run: &RunId, h: &Hosted| !h.queued.is_empty() && only.is_none_or(|o| o == *run);
        for (&run, h) in self.runs.iter_mut().filter(|(run, h)| polled(run, h)) {
            match self.store.queue_results(run) {
                Ok(results) => {
                    for r in results {
                        let at = AttemptId { run, node: r.node, attempt: r.attempt };
                        h.core.handle(now, Event::Finished { at, result: r.result });
                    }
                }
                // A busy database: read them at the next poll.
                Err(e) => tracing::warn!(run = run.get(), "cannot read the queued results of run {run}: {e}"),
            }
        }
    }

    /// Takes a core's effects: writes are queued for the run's next commit; what depends on
    /// them waits for it; the rest is done now.
    fn absorb(&mut self, run: RunId, fx: Effects) {
        let Some(h) = self.runs.get_mut(&run) else { return };
        let Effects { writes, actions, notes } = fx;
        track_queued(&mut h.queued, &writes);
        let enqueued: Vec<(NodeId, u32, String)> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Enqueue { node, attempt, queue, .. } => Some((*node, *attempt, queue.clone())),
                _ => None,
            })
            .collect();
        h.pipe.queued.extend(writes);
        let durable = h.pipe.is_idle();
        let lease_fresh = h.lease_watch.as_ref().is_none_or(LeaseWatch::is_fresh);
        let mut now = Vec::new();
        for action in actions {
            let go = match &action {
                Action::Answer { .. } => durable,
                Action::Start(_) => durable || lease_fresh,
                Action::Stop(_) => true,
            };
            if go {
                now.push(action);
            } else {
                h.pipe.after_queued.push(Deferred::Action(action));
            }
        }
        for note in notes {
            let queued = enqueued
                .iter()
                .find(|(node, attempt, _)| *node == note.node && *attempt == note.attempt)
                .map(|(_, _, queue)| Deferred::Queued(note.node, note.task, queue.clone()));
            if durable {
                h.observer.node(note.node, note.task, note.state, note.attempt, note.error.as_ref());
                if let Some(Deferred::Queued(node, task, queue)) = queued {
                    h.observer.queued(node, task, &queue);
                }
            } else {
                h.pipe.after_queued.push(Deferred::Note(note));
                h.pipe.after_queued.extend(queued);
            }
        }
        let executor = h.executor;
        self.perform(executor, now);
    }

    /// Hands a run's queued writes to a commit on a blocking thread.
    fn launch(&mut self, run: RunId) {
        let Some(h) = self.runs.get_mut(&run) else { return };
        if h.pipe.queued.is_empty() {
            // Nothing to write: what waited for earlier writes may go on.
            let waiting = std::mem::take(&mut h.pipe.after_queued);
            return self.release(run, waiting);
        }
        let writes = std::mem::take(&mut h.pipe.queued);
        h.pipe.inflight = Some(std::mem::take(&mut h.pipe.after_queued));
        let (store, lease) = (self.store.clone(), h.lease.clone());
        let commit = tokio::task::spawn_blocking(move || store.commit(Some(&lease), &writes));
        self.commits.push(Box::pin(async move {
            let result = match commit.await {
                Ok(r) => r,
                Err(e) => Err(StoreError::Io {
                    path: "a commit".into(),
                    source: std::io::Error::other(format!("the commit did not finish: {e}")),
                }),
            };
            (run, result)
        }));
    }

    /// A run's commit ended: what waited for it goes on, and its next commit starts.
    fn committed(&mut self, run: RunId, done: std::result::Result<(), StoreError>) {
        if let Err(e) = done {
            match &e {
                StoreError::LeaseLost { owner, .. } => tracing::error!(run = run.get(), %owner, "lease lost: {e}"),
                _ => tracing::error!(run = run.get(), "cannot commit, the run stops: {e}"),
            }
            return self.fail(run, e.into_error());
        }
        let Some(h) = self.runs.get_mut(&run) else { return };
        let waiting = h.pipe.inflight.take().unwrap_or_default();
        let first = !h.open;
        h.open = true;
        self.release(run, waiting);
        if first {
            // The takeover is durable: a run taken over while paused stays paused, and
            // signals sent meanwhile are picked up.
            if let Ok(control) = self.store.control(run)
                && let Some(h) = self.runs.get_mut(&run)
            {
                h.core.control(crate::run::now(), control);
            }
            if let Some(h) = self.runs.get_mut(&run) {
                let fx = h.core.take_effects();
                self.absorb(run, fx);
            }
        }
        self.launch(run);
        self.end_if_done(run);
    }

    fn release(&mut self, run: RunId, waiting: Vec<Deferred>) {
        let Some(h) = self.runs.get_mut(&run) else { return };
        let mut actions = Vec::new();
        for d in waiting {
            match d {
                Deferred::Note(n) => h.observer.node(n.node, n.task, n.state, n.attempt, n.error.as_ref()),
                Deferred::Queued(node, task, queue) => h.observer.queued(node, task, &queue),
                Deferred::Action(a) => actions.push(a),
            }
        }
        let executor = h.executor;
        self.perform(executor, actions);
    }

    fn perform(&mut self, executor: &'static str, actions: Vec<Action>) {
        let Some(executor) = self.executors.get_mut(executor) else { return };
        for action in actions {
            match action {
                Action::Answer { at, call, answer } => executor.answer(at, call, answer),
                Action::Start(launch) => executor.start(launch),
                Action::Stop(at) => executor.stop(at),
            }
        }
    }
}

/// Notes which attempts are now queued, and which queued ones have ended.
fn track_queued(queued: &mut HashSet<AttemptId>, writes: &[Write]) {
    for w in writes {
        match *w {
            Write::Enqueue { run, node, attempt, .. } => {
                queued.insert(AttemptId { run, node, attempt });
            }
            Write::AttemptFinished { run, node, attempt, .. } if !queued.is_empty() => {
                queued.remove(&AttemptId { run, node, attempt });
            }
            _ => {}
        }
    }
}

/// Runs one run on a driver of its own, on the runtime's workers, and returns its outcome.
/// `admit` is given the channel its outcome goes to.
pub(crate) async fn drive_one(
    store: Arc<dyn Store>,
    handle_signals: bool,
    admit: impl FnOnce(oneshot::Sender<Result<RunOutcome>>) -> Admit,
) -> Result<RunOutcome> {
    let (driver, admission) = Driver::new(store, handle_signals);
    let (done, outcome) = oneshot::channel();
    admission.admit(admit(done))?;
    drop(admission);
    // On the runtime's workers, next to the bodies it drives: an event and the answer to it
    // then pass between tasks of one thread instead of waking another.
    let driving = tokio::spawn(driver.run());
    let outcome = match outcome.await {
        Ok(outcome) => outcome,
        Err(_) => Err(Error::new(ErrorKind::Store, "the orchestrator stopped before the run ended")),
    };
    let _ = driving.await;
    outcome
}

/// Ctrl-C and SIGTERM (what `timeout`, systemd, Docker and Kubernetes send), as reasons.
pub(crate) fn stop_signals() -> mpsc::UnboundedReceiver<&'static str> {
    let (tx, rx) = mpsc::unbounded_channel();
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, why) in
        [(SignalKind::interrupt(), "interrupted (Ctrl-C)"), (SignalKind::terminate(), "stopped by SIGTERM")]
    {
        if let Ok(mut s) = signal(kind) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(why).is_err() {
                        break;
                    }
                }
            });
        }
    }
    rx
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::context::Context;
    use crate::executor::Inline;
    use crate::model::{NodeRecord, NodeState, RunState, StoredArg};
    use crate::progress::{Progress, observer};
    use crate::registry::{BodyFuture, Kind, Policy, Registry, TaskDescriptor};
    use crate::run::Config;
    use crate::store::{self, NewRun};

    /// Doubles its `x`.
    fn double(input: Value, _: Context) -> BodyFuture {
        Box::pin(async move { Ok(json!(input["x"].as_u64().unwrap_or(0) * 2)) })
    }

    fn registry() -> &'static Registry {
        let d: &'static TaskDescriptor = Box::leak(Box::new(TaskDescriptor {
            name: "double",
            kind: Kind::Workflow,
            module: "salt_runtime::driver::tests",
            doc: "",
            input_schema: || json!({"type": "object"}),
            output_schema: || json!({}),
            run: double,
            check_input: |_| Ok(()),
            policy: Policy::DEFAULT,
            label: None,
            color: None,
            default_input: None,
            schedule: None,
            promises: &[],
            may_spawn: true,
        }));
        Box::leak(Box::new(Registry::build([d].into_iter()).expect("one task")))
    }

    /// Creates a run of `double` with its lease and gives it to the driver.
    fn admit(store: &Arc<dyn Store>, admission: &Admission, x: u64) -> oneshot::Receiver<Result<RunOutcome>> {
        let input = json!({ "x": x });
        let root = NodeRecord {
            id: crate::model::NodeId::ROOT,
            parent: None,
            seq: None,
            task: "double".into(),
            state: NodeState::Pending,
            args: vec![("x".into(), StoredArg::Value(json!(x)))],
            ..Default::default()
        };
        let owner = store::new_owner();
        let new = NewRun {
            workflow: "double",
            input: &input,
            executor: "inline",
            parallelism: 2,
            root: &root,
            lease: Some((&owner, Duration::from_secs(30))),
        };
        let run = store.create_run(new).unwrap();
        let config = Config {
            executor: "inline",
            placement: crate::run::Placement::Local,
            parallelism: 2,
            park_after: None,
            capacity: crate::run::Capacity::UNLIMITED,
            machine: None,
        };
        let core = Core::new(store.load(run).unwrap(), registry(), config, crate::run::now()).unwrap();
        let (done, outcome) = oneshot::channel();
        let make: MakeExecutor = Box::new(|events| Box::new(Inline::new(events, registry())));
        admission
            .admit(Admit {
                core,
                lease: Lease { run, owner },
                lease_watch: None,
                observer: observer(Progress::Quiet),
                executor: ("inline", make),
                parallelism: 2,
                done,
            })
            .unwrap();
        outcome
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_driver_hosts_many_runs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::from(store::open(&dir.path().join("salt.db").display().to_string()).unwrap());
        let (driver, admission) = Driver::new(store.clone(), false);
        let driving = tokio::spawn(driver.run());
        // Some runs are given before it starts, some while it drives the first ones.
        let mut outcomes: Vec<_> = (0..3).map(|x| (x, admit(&store, &admission, x))).collect();
        tokio::task::yield_now().await;
        outcomes.extend((3..6).map(|x| (x, admit(&store, &admission, x))));
        drop(admission);
        for (x, outcome) in outcomes {
            let outcome = outcome.await.unwrap().unwrap();
            assert_eq!(outcome.state, RunState::Succeeded, "{outcome:?}");
            assert_eq!(outcome.output, Some(json!(x * 2)));
            let stored = store.load(outcome.run).unwrap();
            assert_eq!(stored.run.state, RunState::Succeeded);
            assert_eq!(stored.run.output, Some(json!(x * 2)));
        }
        // With every run ended and no way to give it more, the driver stops.
        tokio::time::timeout(Duration::from_secs(10), driving).await.unwrap().unwrap();
    }
}
