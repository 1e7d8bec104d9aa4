//! Workers: processes that run the attempts waiting in one queue of the store.
//!
//! A node of a task on a named queue (`#[task(queue = "gpu")]`) is not started by its run's
//! orchestrator: the run core puts its attempt, with its input, into the store's durable queue.
//! A worker (`<bin> worker --queue gpu`: any process of a binary that has the task, wherever
//! the store is reachable) claims it, runs the body in its own process the way the inline
//! executor does, renews the claim while the body runs, and records the output or the error;
//! the run's orchestrator takes the result from there, and its retry policy applies as for any
//! attempt. A worker that dies stops renewing: its claim expires and another worker takes the
//! attempt over.
//!
//! A body run by a worker is a leaf: spawning children, adding edges or promises, awaiting
//! nodes and waiting for signals all need the run's orchestrator, so trying fails the attempt
//! with an error that says so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};

use crate::context::{Context, Host, JournalKind, Mutation, SignalWait};
use crate::error::{Error, ErrorKind, Result, StoreError};
use crate::model::{LogRecord, NodeId, RunId, now_ms};
use crate::protocol::panic_error;
use crate::registry::{DEFAULT_QUEUE, Registry};
use crate::store::{self, Claim, Store, Write};

/// How often an idle worker looks for ready attempts.
const CLAIM_POLL: Duration = Duration::from_millis(200);

/// How often an idle worker that is told of new entries ([`Store::watch_queue`]) looks anyway,
/// for entries whose claim expired (nobody announces those).
const WATCHED_POLL: Duration = Duration::from_secs(2);

/// The most log lines kept per attempt, as for attempts run by an orchestrator.
const MAX_LOG_LINES: usize = 10_000;

/// The shortest claim a worker takes: it renews every third of it.
pub(crate) const MIN_CLAIM_TTL: Duration = Duration::from_millis(300);

/// What a worker takes and how.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The queue it takes attempts from.
    pub(crate) queue: String,
    /// How many attempts it runs at once.
    pub(crate) slots: usize,
    /// Run what is ready now, then exit.
    pub(crate) once: bool,
    /// How long a claim lasts unless renewed.
    pub(crate) claim_ttl: Duration,
}

/// What a worker did, for its last words.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Summary {
    /// Who it was (`host:pid:random`), as recorded with its claims.
    pub(crate) owner: String,
    /// Its queue.
    pub(crate) queue: String,
    /// Attempts whose output it recorded.
    pub(crate) succeeded: usize,
    /// Attempts whose error it recorded.
    pub(crate) failed: usize,
    /// Attempts whose claim it lost before it could record them (the attempt was cancelled or
    /// timed out by its run, or its claim expired), or that it gave back when stopped.
    pub(crate) lost: usize,
}

/// Where a worker says what it does (the CLI prints it to stderr).
pub(crate) type Report = Arc<dyn Fn(String) + Send + Sync>;

/// A claim being run, by the id of its queue entry.
struct Held {
    claim: Claim,
    abort: Option<AbortHandle>,
}

type HeldClaims = Arc<Mutex<HashMap<i64, Held>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one attempt ended on this worker.
enum Ended {
    Succeeded,
    Failed,
    Lost,
}

/// Takes attempts of `options.queue` from the store at `db` and runs them, until stopped (the
/// first `stop` drains: no new claim, running attempts finish; the second gives the running
/// ones back to the queue) or, with `once`, until what was ready at the start has run.
pub(crate) async fn work(
    db: &str,
    registry: &'static Registry,
    options: Options,
    report: Report,
    mut stop: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) -> Result<Summary> {
    if options.queue == DEFAULT_QUEUE {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "queue `{DEFAULT_QUEUE}` is run by each run's own executor, not by workers; \
                 give tasks another queue (`#[task(queue = \"gpu\")]`) and run a worker of it"
            ),
        ));
    }
    if options.claim_ttl < MIN_CLAIM_TTL {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("a claim must last at least {MIN_CLAIM_TTL:?}, not {:?}", options.claim_ttl),
        ));
    }
    let store: Arc<dyn Store> = store::open(db).map_err(StoreError::into_error)?.into();
    let owner = store::new_owner();
    let mut summary = Summary { owner: owner.clone(), queue: options.queue.clone(), ..Summary::default() };
    let held = HeldClaims::default();
    // This process runs bodies until the worker stops.
    let _hosting = crate::context::live::Hosting::new();
    let renewer = Renewer::start(
        store.reopen().map_err(StoreError::into_error)?,
        held.clone(),
        options.claim_ttl,
        report.clone(),
    )?;
    report(format!("worker {owner} takes attempts of queue `{}` ({} at once)", options.queue, options.slots));
    // Told of new entries, where the store can tell: no tight polling.
    let mut watch = match store.watch_queue(&options.queue) {
        Ok(watch) => watch,
        Err(e) => {
            tracing::warn!("cannot watch queue `{}`, polling it: {e}", options.queue);
            None
        }
    };

    let mut running: JoinSet<Ended> = JoinSet::new();
    let mut draining = false;
    let mut claimed_once = false;
    loop {
        if !draining && running.len() < options.slots {
            let free = options.slots - running.len();
            match store.claim(&options.queue, free, &owner, options.claim_ttl) {
                Ok(claims) => {
                    for claim in claims {
                        start(claim, registry, &store, &held, &mut running, &options.queue, &report);
                    }
                }
                Err(e) if options.once => return Err(e.into_error()),
                // A busy database: try again at the next poll.
                Err(e) => tracing::warn!("cannot claim from queue `{}`: {e}", options.queue),
            }
            if options.once && !claimed_once {
                claimed_once = true;
                draining = true;
                if running.is_empty() {
                    report(format!("nothing ready on queue `{}`", options.queue));
                }
            }
        }
        if draining && running.is_empty() {
            break;
        }
        tokio::select! {
            Some(ended) = running.join_next(), if !running.is_empty() => {
                match ended {
                    Ok(Ended::Succeeded) => summary.succeeded += 1,
                    Ok(Ended::Failed) => summary.failed += 1,
                    // Aborted: its claim was lost.
                    Ok(Ended::Lost) | Err(_) => summary.lost += 1,
                }
            }
            () = tokio::time::sleep(if watch.is_some() { WATCHED_POLL } else { CLAIM_POLL }), if !draining => {}
            told = async { watch.as_ref().expect("watched").notified().await }, if !draining && watch.is_some() => {
                if !told {
                    tracing::warn!("the watch of queue `{}` broke: polling it", options.queue);
                    watch = None;
                }
            }
            Some(why) = stop.recv() => {
                if draining {
                    report(format!("{why} again: giving the running attempts back to queue `{}`", options.queue));
                    summary.lost += give_back(&store, &held, &mut running).await;
                    break;
                }
                draining = true;
                if !running.is_empty() {
                    report(format!(
                        "{why}: finishing the {} running attempt(s), taking no new one (again to give them back)",
                        running.len()
                    ));
                }
            }
        }
    }
    renewer.stop();
    Ok(summary)
}

/// Aborts the running bodies and releases their claims, so another worker takes them at once.
async fn give_back(store: &Arc<dyn Store>, held: &HeldClaims, running: &mut JoinSet<Ended>) -> usize {
    running.abort_all();
    while running.join_next().await.is_some() {}
    crate::protocol::kill_descendants();
    let claims: Vec<Held> = lock(held).drain().map(|(_, h)| h).collect();
    for h in &claims {
        if let Err(e) = store.release(&h.claim) {
            tracing::warn!(
                run = h.claim.run.get(),
                node = h.claim.node.get(),
                "cannot give back node {} of run {}: {e}",
                h.claim.node,
                h.claim.run
            );
        }
    }
    claims.len()
}

/// Starts the body of a claimed attempt.
fn start(
    claim: Claim,
    registry: &'static Registry,
    store: &Arc<dyn Store>,
    held: &HeldClaims,
    running: &mut JoinSet<Ended>,
    queue: &str,
    report: &Report,
) {
    let id = claim.id;
    let (run, node, attempt) = (claim.run, claim.node, claim.attempt);
    let what = format!("node {node} (`{}`) of run {run}, attempt {attempt}", claim.task);
    let task = registry.get(&claim.task);
    let task_name = claim.task.clone();
    let input = claim.input.clone();
    let host = Arc::new(WorkerHost::new(run, node, queue));
    host.log(format!("[salt] run by worker {} of queue `{queue}`", claim.owner));
    lock(held).insert(id, Held { claim, abort: None });
    let (store, mine, report) = (store.clone(), held.clone(), report.clone());
    let abort = running.spawn(async move {
        let result = match task {
            Some(task) => {
                let ctx = Context::new(host.clone(), run, node, attempt);
                let body = ctx.clone().scope(task.body(input, ctx.clone()));
                let body = async {
                    match std::panic::AssertUnwindSafe(body).catch_unwind().await {
                        Ok(Ok(output)) => Ok(output),
                        Ok(Err(e)) => Err(e),
                        Err(panic) => Err(panic_error(panic)),
                    }
                };
                let timed = async {
                    match task.policy.timeout {
                        Some(t) => tokio::time::timeout(t, body)
                            .await
                            .unwrap_or_else(|_| Err(crate::executor::timeout_error(t))),
                        None => body.await,
                    }
                };
                let result = tokio::select! {
                    biased;
                    refusal = host.refused() => Err(refusal),
                    result = timed => result,
                };
                // What the body buffered and never sent (a spawn it did not await) counts too.
                ctx.flush();
                match host.refusal() {
                    Some(refusal) => Err(refusal),
                    None => result,
                }
            }
            None => Err(Error::new(
                ErrorKind::Usage,
                format!(
                    "this worker's binary has no task `{task_name}`; run a worker of the binary the run belongs to"
                ),
            )),
        };
        // Still ours? The renewer drops a claim it lost (and aborts its body).
        let Some(Held { claim, .. }) = lock(&mine).remove(&id) else { return Ended::Lost };
        let logs: Vec<Write> = host
            .take_logs()
            .into_iter()
            .map(|line| Write::Log { run, record: LogRecord { node, attempt, ts: now_ms(), line } })
            .collect();
        if let Err(e) = store.commit(None, &logs) {
            tracing::warn!("cannot record the logs of {what}: {e}");
        }
        let (recorded, ended, how) = match &result {
            Ok(output) => (store.complete(&claim, output), Ended::Succeeded, "succeeded".to_string()),
            Err(e) => (store.fail(&claim, e), Ended::Failed, format!("failed: {}", e.message())),
        };
        match recorded {
            Ok(()) => {
                report(format!("{what} {how}"));
                ended
            }
            Err(e @ StoreError::ClaimLost { .. }) => {
                report(format!(
                    "{what} ended, but its result is not taken: {e} (the run cancelled it or timed it out)"
                ));
                Ended::Lost
            }
            Err(e) => {
                report(format!("cannot record the end of {what}: {e}; it runs again once its claim expires"));
                Ended::Lost
            }
        }
    });
    if let Some(h) = lock(held).get_mut(&id) {
        h.abort = Some(abort);
    }
}

/// Renews the claims being run, from a thread of its own (with its own connection), so a body
/// that blocks the async runtime cannot let them expire. A claim it cannot renew is lost: its
/// body is stopped.
struct Renewer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Renewer {
    fn start(store: Box<dyn Store>, held: HeldClaims, ttl: Duration, report: Report) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = ttl / 3;
        let thread = std::thread::Builder::new()
            .name("salt-claims".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let claims: Vec<Claim> = lock(&held).values().map(|h| h.claim.clone()).collect();
                    for claim in claims {
                        match store.renew_claim(&claim, ttl) {
                            Ok(renewed) => {
                                if let Some(h) = lock(&held).get_mut(&claim.id) {
                                    h.claim = renewed;
                                }
                            }
                            Err(e @ StoreError::ClaimLost { .. }) => {
                                let Some(h) = lock(&held).remove(&claim.id) else { continue };
                                if let Some(abort) = h.abort {
                                    abort.abort();
                                }
                                if lock(&held).is_empty() {
                                    // Processes the stopped body started stop with it (told apart
                                    // only when no other body runs, as for the inline executor).
                                    crate::protocol::kill_descendants();
                                }
                                report(format!(
                                    "stopped node {} (`{}`) of run {}, attempt {}: {e} (the run cancelled it or timed it out)",
                                    claim.node, claim.task, claim.run, claim.attempt
                                ));
                            }
                            // A busy database: try again at the next beat.
                            Err(e) => tracing::warn!(
                                run = claim.run.get(),
                                node = claim.node.get(),
                                "cannot renew the claim on node {} of run {}: {e}",
                                claim.node,
                                claim.run
                            ),
                        }
                    }
                }
            })
            .map_err(|e| Error::new(ErrorKind::Store, format!("cannot start the claim renewer thread: {e}")))?;
        Ok(Self { stop: Some(stop), thread: Some(thread) })
    }

    fn stop(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The orchestrator as a body run by a worker sees it: nobody is there to apply graph changes,
/// answer awaits or deliver signals, so those are refused; logs are kept for the attempt.
struct WorkerHost {
    run: RunId,
    node: NodeId,
    queue: String,
    refusal: Mutex<Option<Error>>,
    refused: Notify,
    logs: Mutex<Vec<String>>,
}

impl WorkerHost {
    fn new(run: RunId, node: NodeId, queue: &str) -> Self {
        Self {
            run,
            node,
            queue: queue.to_string(),
            refusal: Mutex::new(None),
            refused: Notify::new(),
            logs: Mutex::new(Vec::new()),
        }
    }

    /// Fails the attempt: the body asked for what only the run's orchestrator can do.
    fn refuse(&self, what: &str) {
        let mut refusal = lock(&self.refusal);
        if refusal.is_none() {
            *refusal = Some(Error::new(
                ErrorKind::Usage,
                format!(
                    "node {} of run {} ran on a worker of queue `{}`, where a body cannot {what}: that \
                     needs the run's orchestrator. Leave the task that does it on the default queue",
                    self.node, self.run, self.queue
                ),
            ));
        }
        self.refused.notify_one();
    }

    fn refusal(&self) -> Option<Error> {
        lock(&self.refusal).clone()
    }

    /// Resolves once the body has asked for something refused.
    async fn refused(&self) -> Error {
        loop {
            if let Some(refusal) = self.refusal() {
                return refusal;
            }
            self.refused.notified().await;
        }
    }

    fn take_logs(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.logs))
    }
}

impl Host for WorkerHost {
    fn mutate(&self, mutations: Vec<Mutation>) {
        for m in mutations {
            match m {
                Mutation::Spawn(request) => self.refuse(&format!("spawn child nodes (it spawned `{}`)", request.task)),
                Mutation::Edge { .. } => self.refuse("add edges"),
                Mutation::Promise { text, .. } => self.refuse(&format!("declare promises (`{text}`)")),
                Mutation::Annotate { .. } => {
                    self.log("[salt] annotations of a body run by a worker are not recorded".into());
                }
                // It spawned nothing: there is no edge between its children to label.
                Mutation::EdgeLabel { .. } => {}
            }
        }
    }

    fn await_node(&self, seq: u32) -> BoxFuture<'static, std::result::Result<Value, Error>> {
        self.refuse(&format!("await nodes (it awaited its call #{seq})"));
        futures::future::pending().boxed()
    }

    /// Nothing to journal: an attempt run by a worker is never replayed.
    fn journal(&self, _seq: u32, _kind: JournalKind, proposed: Value) -> BoxFuture<'static, Value> {
        futures::future::ready(proposed).boxed()
    }

    fn wait_signal(&self, wait: SignalWait) -> BoxFuture<'static, Value> {
        if wait.name == crate::context::SLEEP_SIGNAL {
            self.refuse("sleep durably (`ctx.sleep`; `tokio::time::sleep` works)");
        } else {
            self.refuse(&format!("wait for signals (it waited for `{}`)", wait.name));
        }
        futures::future::pending().boxed()
    }

    fn log(&self, line: String) {
        let mut logs = lock(&self.logs);
        match logs.len() {
            n if n < MAX_LOG_LINES => logs.push(line),
            n if n == MAX_LOG_LINES => {
                logs.push(format!("[salt] log limit of {MAX_LOG_LINES} lines reached; further lines are dropped"));
            }
            _ => {}
        }
    }
}
