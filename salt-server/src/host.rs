//! The run host: drives the runs of registered binaries with salt's run core and gives their
//! attempts to the connected workers (`/api/v1/workers/connect`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;

use salt_runtime::model::{NodeId, NodeState, RunId};
use salt_runtime::progress::Transition;
use salt_runtime::protocol::MAX_MESSAGE_BYTES;
use salt_runtime::remote::{self, Dispatcher, FromWorker, ToWorker, WorkerHello};
use salt_runtime::{Error, ErrorKind, Registry, Runner};

use crate::auth::Caller;
use crate::db;
use crate::engine::{Engine, WorkflowRef};
use crate::state::AppState;

/// How often the server pings a worker.
const PING_EVERY: Duration = Duration::from_secs(5);
/// A worker silent this long (no message, no pong) is dropped: its attempts run elsewhere.
const SILENT_FOR: Duration = Duration::from_secs(15);
/// How long a worker has to say hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);
/// How many nodes of one run may run at once on a server: the workers' slots are the real
/// bound.
const RUN_PARALLELISM: usize = 4096;

/// What the host needs to know of the registry.
pub trait Binaries: Send + Sync {
    /// The manifest of the binary with this sha256 (as `<bin> manifest --json` printed it).
    fn manifest(&self, binary: &str) -> salt_runtime::Result<Value>;
    /// The binary a run was started from (its sha256), if the run is this server's.
    fn binary_of(&self, run: RunId) -> salt_runtime::Result<Option<String>>;
    /// Records that `run` is a run of `workflow`.
    fn record_run(&self, run: RunId, workflow: &WorkflowRef) -> salt_runtime::Result<()>;
}

/// Drives runs on remote workers: the server's [`Engine`].
pub struct RunHost {
    db: String,
    dispatcher: Dispatcher,
    binaries: Arc<dyn Binaries>,
    /// One runner per binary (clones share the store).
    runners: Mutex<HashMap<String, Runner>>,
    /// Told when a run it drives ends.
    on_end: Option<OnEnd>,
    /// Told when a node of a run it drives waits for a signal.
    on_waiting: Option<OnWaiting>,
    /// The runs this host drives now.
    driving: Arc<Mutex<HashSet<RunId>>>,
}

/// A node of a run that waits for a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalWait {
    /// The run.
    pub run: RunId,
    /// Its workflow.
    pub workflow: String,
    /// The node.
    pub node: NodeId,
    /// The node's task.
    pub task: String,
    /// The signal it waits for.
    pub signal: String,
    /// The sequence number of the wait within the node's body.
    pub seq: u32,
}

/// What a host calls when a node of a run it drives starts to wait for a signal: once per
/// wait (a node replayed up to the same wait is not told again by the same host).
pub type OnWaiting = Arc<dyn Fn(&SignalWait) + Send + Sync>;

/// What a host calls when a run it drives ends: the run, its workflow and how it ended.
pub type OnEnd = Arc<dyn Fn(RunId, &str, &salt_runtime::RunOutcome) + Send + Sync>;

impl RunHost {
    /// A host of the runs stored at `db`, whose attempts go to `dispatcher`'s workers.
    pub fn new(db: impl Into<String>, dispatcher: Dispatcher, binaries: Arc<dyn Binaries>) -> Self {
        Self {
            db: db.into(),
            dispatcher,
            binaries,
            runners: Mutex::default(),
            on_end: None,
            on_waiting: None,
            driving: Arc::default(),
        }
    }

    /// Calls `on_waiting` whenever a node of a run this host drives starts to wait for a signal
    /// (webhooks). It is called from a task of its own: it never holds up a run.
    pub fn on_waiting(mut self, on_waiting: OnWaiting) -> Self {
        self.on_waiting = Some(on_waiting);
        self
    }

    /// Calls `on_end` whenever a run this host drives ends (webhooks).
    pub fn on_end(mut self, on_end: OnEnd) -> Self {
        self.on_end = Some(on_end);
        self
    }

    /// Follows a run this host drives until it ends. A run whose driving stopped without an
    /// outcome (its batch could not be written: the database went away) is driven again by
    /// this host once the database answers, under the lease it still holds; unless another
    /// orchestrator holds the run by then, or it has ended.
    fn watch(
        &self,
        run: RunId,
        runner: Runner,
        join: tokio::task::JoinHandle<salt_runtime::Result<salt_runtime::RunOutcome>>,
    ) {
        let on_end = self.on_end.clone();
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).insert(run);
        let driving = self.driving.clone();
        tokio::spawn(async move {
            let mut join = join;
            loop {
                let why = match join.await {
                    Ok(Ok(outcome)) => {
                        tracing::info!(
                            run = run.get(),
                            state = outcome.state.as_str(),
                            "run {run} ended {}",
                            outcome.state.as_str()
                        );
                        if let Some(f) = &on_end {
                            f(run, &outcome.workflow, &outcome);
                        }
                        break;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(
                    run = run.get(),
                    error = %why,
                    "run {run} stopped: {why}; it is driven again once the database answers"
                );
                match redrive(&runner, run).await {
                    Some(again) => join = again,
                    None => break,
                }
            }
            driving.lock().unwrap_or_else(|p| p.into_inner()).remove(&run);
        });
    }

    /// Whether this host drives `run` now.
    pub fn drives(&self, run: RunId) -> bool {
        self.driving.lock().unwrap_or_else(|p| p.into_inner()).contains(&run)
    }

    /// The dispatcher workers connect to.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    fn runner(&self, binary: &str) -> salt_runtime::Result<Runner> {
        let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = runners.get(binary) {
            return Ok(r.clone());
        }
        let manifest = self.binaries.manifest(binary)?;
        let registry = Registry::from_manifest(&manifest)?;
        let runner = Runner::new(&self.db)
            .registry(registry)
            .remote(self.dispatcher.clone(), binary)
            .parallelism(RUN_PARALLELISM);
        if let Some(f) = &self.on_waiting {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(watch_waits(runner.subscribe(), self.db.clone(), f.clone()));
                }
                Err(_) => tracing::warn!("no runtime to watch the signal waits of binary {binary}"),
            }
        }
        runners.insert(binary.to_string(), runner.clone());
        Ok(runner)
    }

    fn runner_of(&self, run: RunId) -> salt_runtime::Result<Runner> {
        match self.binaries.binary_of(run)? {
            Some(binary) => self.runner(&binary),
            None => Err(Error::new(ErrorKind::Usage, format!("run {run} was not started by this server"))),
        }
    }

    /// Resumes the runs among `runs` that no orchestrator drives: this server's own after it
    /// was stopped or killed while they ran, or another's whose lease ran out (that server is
    /// gone). What finished is kept, what was in flight runs again; a run another server took
    /// first is left to it (its lease is refused). Returns the runs resumed.
    pub fn resume(&self, runs: &[RunId]) -> Vec<RunId> {
        let mut resumed = Vec::new();
        for &run in runs {
            if self.drives(run) {
                continue;
            }
            match self.runner_of(run).and_then(|r| Ok((r.spawn_recover(run)?, r))) {
                Ok((join, runner)) => {
                    self.watch(run, runner, join);
                    resumed.push(run);
                }
                // Mostly: another server took it first.
                Err(e) => tracing::info!(run = run.get(), "run {run} not resumed: {e}"),
            }
        }
        resumed
    }
}

impl Engine for RunHost {
    fn start(&self, workflow: &WorkflowRef, input: Value) -> salt_runtime::Result<RunId> {
        let runner = self.runner(&workflow.binary)?;
        let (run, join) = runner.spawn_run(&workflow.workflow, input)?;
        self.binaries.record_run(run, workflow)?;
        self.watch(run, runner, join);
        Ok(run)
    }

    fn recover(&self, run: RunId) -> salt_runtime::Result<()> {
        let runner = self.runner_of(run)?;
        self.watch(run, runner.clone(), runner.spawn_recover(run)?);
        Ok(())
    }

    fn rerun_from(&self, run: RunId, from: NodeId) -> salt_runtime::Result<()> {
        let runner = self.runner_of(run)?;
        self.watch(run, runner.clone(), runner.spawn_rerun_from(run, from)?);
        Ok(())
    }

    fn run_one(&self, run: RunId, node: NodeId) -> salt_runtime::Result<()> {
        let runner = self.runner_of(run)?;
        self.watch(run, runner.clone(), runner.spawn_run_one(run, node)?);
        Ok(())
    }
}

/// Takes `run` up again after its driving stopped without an outcome: every second until the
/// database answers. `None` when there is nothing to take up: another orchestrator holds the
/// run, or it has ended.
async fn redrive(
    runner: &Runner,
    run: RunId,
) -> Option<tokio::task::JoinHandle<salt_runtime::Result<salt_runtime::RunOutcome>>> {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match runner.spawn_recover(run) {
            Ok(join) => return Some(join),
            Err(e) if e.kind() == ErrorKind::Store => {
                tracing::debug!(run = run.get(), "run {run} not driven again yet: {e}")
            }
            Err(e) => {
                tracing::warn!(run = run.get(), error = %e, "run {run} is not driven again here: {e}");
                return None;
            }
        }
    }
}

/// Follows the transitions of one runner's runs and calls `on_waiting` for each node that
/// starts to wait for a signal (a node parks with the `waiting` state only then), reading which
/// signal from the store.
async fn watch_waits(mut rx: tokio::sync::broadcast::Receiver<Transition>, db: String, on_waiting: OnWaiting) {
    use tokio::sync::broadcast::error::RecvError;
    let mut store: Option<Arc<dyn salt_runtime::store::Store>> = None;
    let mut told: HashSet<(RunId, NodeId, u32)> = HashSet::new();
    loop {
        let (run, node) = match rx.recv().await {
            Ok(Transition::Node { run, node, state: NodeState::Waiting, .. }) => (run, node),
            Ok(t @ Transition::Run { .. }) if t.is_final() => {
                told.retain(|(r, _, _)| *r != t.run());
                continue;
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("{n} run transitions were missed: a signal wait may not be notified");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let opened = store.clone();
        let db2 = db.clone();
        let read = tokio::task::spawn_blocking(move || -> salt_runtime::Result<_> {
            let store = match opened {
                Some(s) => s,
                None => Arc::from(salt_runtime::ops::open(&db2)?),
            };
            let snapshot = salt_runtime::ops::show(store.as_ref(), run)?;
            let wait = snapshot.waits.iter().filter(|w| w.node == node).max_by_key(|w| w.seq).map(|w| SignalWait {
                run,
                workflow: snapshot.run.workflow.clone(),
                node,
                task: snapshot.nodes.get(node.index()).map(|n| n.task.clone()).unwrap_or_default(),
                signal: w.name.clone(),
                seq: w.seq,
            });
            Ok((store, wait))
        })
        .await;
        match read {
            Ok(Ok((opened, wait))) => {
                store = Some(opened);
                // No wait: the signal had come already and the node goes on.
                if let Some(w) = wait
                    && told.insert((w.run, w.node, w.seq))
                {
                    on_waiting(&w);
                }
            }
            Ok(Err(e)) => tracing::warn!(run = run.get(), "run {run}: cannot read what node {node} waits for: {e}"),
            Err(e) => tracing::warn!(run = run.get(), "run {run}: cannot read what node {node} waits for: {e}"),
        }
    }
}

/// The route workers connect to, `GET /workers/connect` (a WebSocket; the REST API nests it
/// under `/api/v1`), for `salt server`: a worker serves only the queues its token may take
/// attempts from.
pub fn worker_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(connect_checked))
}

/// The same route on `dispatcher` alone, every queue open to every worker: for embedding a run
/// host without the rest of the server.
pub fn dispatcher_routes<S>(dispatcher: Dispatcher) -> Router<S> {
    Router::new().route("/api/v1/workers/connect", get(connect)).with_state(dispatcher)
}

async fn connect(ws: WebSocketUpgrade, State(dispatcher): State<Dispatcher>) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES + 4096).on_upgrade(move |socket| serve_worker(socket, dispatcher, None, None))
}

/// A worker's connection: an HTTP GET upgraded to a WebSocket (`Upgrade: websocket`), over which
/// the worker says hello (its name, queues and slots), then is given attempts and reports their
/// messages, one JSON object per text message.
#[utoipa::path(get, path = "/workers/connect", tag = "workers",
    responses((status = 101, description = "Switching to the WebSocket protocol"),
              (status = 400, description = "Not a WebSocket upgrade request")))]
async fn connect_checked(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Response {
    let token = caller.map(|Extension(c)| c.name);
    let dispatcher = state.dispatcher.clone();
    let named = token.clone();
    let check: QueueCheck = Box::new(move |queues: &[String]| {
        let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut allowed = Vec::new();
        for q in queues {
            let queue = db::queue(&conn, q).map_err(|e| Refusal::later(format!("cannot read queue `{q}`: {e}")))?;
            if !queue.private_to.is_empty() && !db::queue_serves(&queue, named.as_deref()) {
                return Err(Refusal::lasting(format!("queue `{q}` is private to other tokens")));
            }
            allowed.push(q.clone());
        }
        Ok(allowed)
    });
    ws.max_message_size(MAX_MESSAGE_BYTES + 4096)
        .on_upgrade(move |socket| serve_worker(socket, dispatcher, Some(check), token))
}

/// Which of the queues a worker asks for it may serve; why not, when it may not.
type QueueCheck = Box<dyn FnOnce(&[String]) -> Result<Vec<String>, Refusal> + Send>;

/// Why a worker is refused, and whether trying again can help.
struct Refusal {
    why: String,
    /// The refusal holds until the worker's token, queues or version change: close code 1008
    /// (the worker stops). Otherwise 1013, try again later.
    lasting: bool,
}

impl Refusal {
    fn lasting(why: impl Into<String>) -> Self {
        Self { why: why.into(), lasting: true }
    }

    fn later(why: impl Into<String>) -> Self {
        Self { why: why.into(), lasting: false }
    }
}

/// Serves one worker's connection (made with the token named `token`, if any) until it ends;
/// then its attempts are lost.
async fn serve_worker(socket: WebSocket, dispatcher: Dispatcher, check: Option<QueueCheck>, token: Option<String>) {
    let (mut sink, mut stream) = socket.split();
    let hello = match tokio::time::timeout(HELLO_WITHIN, stream.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str::<FromWorker>(&text) {
            Ok(FromWorker::Hello(hello)) => hello,
            Ok(_) => return refuse(&mut sink, Refusal::lasting("the first message must be a hello")).await,
            Err(e) => return refuse(&mut sink, Refusal::lasting(format!("not a worker message: {e}"))).await,
        },
        _ => return refuse(&mut sink, Refusal::later("no hello")).await,
    };
    let mut hello = hello;
    if let Err(why) = remote::check_hello(&hello) {
        return refuse(&mut sink, Refusal::lasting(why)).await;
    }
    if let Some(check) = check {
        let checked = tokio::task::spawn_blocking(move || check(&hello.queues).map(|queues| (hello, queues))).await;
        match checked {
            Ok(Ok((checked, queues))) => hello = WorkerHello { queues, ..checked },
            Ok(Err(refusal)) => return refuse(&mut sink, refusal).await,
            Err(e) => return refuse(&mut sink, Refusal::later(e.to_string())).await,
        }
    }
    let accepted = ToWorker::Accepted { queues: hello.queues.clone() };
    match serde_json::to_string(&accepted) {
        Ok(text) => {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        Err(e) => return refuse(&mut sink, Refusal::later(e.to_string())).await,
    }
    let name = hello.name.clone();
    tracing::info!(
        worker = %name,
        queues = ?hello.queues,
        slots = hello.slots,
        "worker `{name}` connected (queues {:?}, {} slots)",
        hello.queues,
        hello.slots
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn = dispatcher.connect_as(hello, token, tx);
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut last_heard = tokio::time::Instant::now();
    // Whether the worker said goodbye (it drained, or the server stops) rather than dropped.
    let mut clean = false;
    let why = loop {
        tokio::select! {
            msg = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        let parsed = serde_json::from_str::<FromWorker>(&text).map_err(|e| format!("not a worker message: {e}"));
                        if let Err(why) = parsed.and_then(|m| conn.receive(m)) {
                            let _ = sink.send(Message::Close(Some(close_frame(&why)))).await;
                            break why;
                        }
                    }
                    Some(Ok(Message::Close(_))) => {
                        clean = true;
                        break "it closed the connection".to_string();
                    }
                    None => break "the connection ended".to_string(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                }
            }
            out = rx.recv() => {
                let Some(out) = out else {
                    clean = true;
                    break "the server stops".to_string();
                };
                let text = match serde_json::to_string(&out) {
                    Ok(text) => text,
                    Err(e) => break e.to_string(),
                };
                if let Err(e) = sink.send(Message::Text(text.into())).await {
                    break e.to_string();
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENT_FOR {
                    break format!("silent for {SILENT_FOR:?}");
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break "the connection broke".to_string();
                }
            }
        }
    };
    drop(conn);
    if clean {
        tracing::info!(worker = %name, reason = %why, "worker `{name}` disconnected: {why}");
    } else {
        tracing::warn!(worker = %name, reason = %why, "worker `{name}` dropped: {why}");
    }
}

fn close_frame(why: &str) -> axum::extract::ws::CloseFrame {
    close_frame_with(why, 1008)
}

/// A close frame of `code` (1008: refused for good; 1013: try again later) saying `why`.
fn close_frame_with(why: &str, code: u16) -> axum::extract::ws::CloseFrame {
    // A close frame's reason is at most 123 bytes.
    let mut reason = String::new();
    for c in why.chars() {
        if reason.len() + c.len_utf8() > 120 {
            break;
        }
        reason.push(c);
    }
    axum::extract::ws::CloseFrame { code, reason: reason.into() }
}

async fn refuse(sink: &mut futures::stream::SplitSink<WebSocket, Message>, refusal: Refusal) {
    let why = &refusal.why;
    tracing::warn!("a worker was refused: {why}");
    let code = if refusal.lasting { 1008 } else { 1013 };
    let _ = sink.send(Message::Close(Some(close_frame_with(why, code)))).await;
}
