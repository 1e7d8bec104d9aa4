//! The stdio protocol between the orchestrator and a node process: JSON Lines, versioned by a
//! first `hello`.
//!
//! A node process is the workflow binary re-executed as `<bin> __salt exec`. It first moves its
//! own stdout aside (user `println!` goes to stderr, which is the attempt's log), then speaks
//! the protocol on the original stdout. One session serves any number of attempts, one after
//! the other or at once: every message after `hello` names its attempt (`attempt_id`, chosen
//! by the orchestrator, unique in the session).
//!
//! ```text
//! node → orchestrator: {"type":"hello","protocol":2,"pid":4242}
//! orchestrator → node: {"type":"start","attempt_id":1,"run":7,"node":3,"task":"extract","attempt":1,"input":{…}}
//! node → orchestrator: {"type":"mutate","attempt_id":1,"mutations":[{"op":"spawn","seq":0,"task":"parse","args":[["text",{"value":"…"}]]}]}
//! node → orchestrator: {"type":"await","attempt_id":1,"id":1,"seq":0}
//! orchestrator → node: {"type":"resolved","attempt_id":1,"id":1,"result":{"ok":{…}}}     (or {"err":{"kind":…,"message":…}})
//! node → orchestrator: {"type":"journal","attempt_id":1,"id":2,"seq":1,"kind":"random","value":123}
//! orchestrator → node: {"type":"value","attempt_id":1,"id":2,"value":123}
//! node → orchestrator: {"type":"log","attempt_id":1,"line":"…"}
//! node → orchestrator: {"type":"done","attempt_id":1,"output":{…}}          (or "failed" with "error")
//! orchestrator → node: {"type":"cancel","attempt_id":1}                      (stop one attempt)
//! ```
//!
//! Values whose JSON is over [`SPILL_BYTES`](crate::blob::SPILL_BYTES) do not travel in messages: they are written once
//! to the blob directory beside the database (see [`crate::blob`]) and passed by reference,
//! `{"$salt_blob":"<sha256>","bytes":N}`, always in a place that says it is one:
//!
//! ```text
//! orchestrator → node: {"type":"start",…,"input":{"n":3},"input_blobs":{"rows":{"$salt_blob":"…","bytes":73400320}},"blobs":"/x/.salt/salt.db.blobs"}
//! orchestrator → node: {"type":"resolved","attempt_id":1,"id":1,"result":{"blob":{"$salt_blob":"…","bytes":73400320}}}
//! node → orchestrator: {"type":"mutate",…,"args":[["rows",{"blob":{"$salt_blob":"…","bytes":73400320}}]]}
//! node → orchestrator: {"type":"done","attempt_id":1,"blob":{"$salt_blob":"…","bytes":73400320}}
//! ```
//!
//! `start` says where the blobs are (`blobs`); without it, a node sends every value inline.
//!
//! After an attempt's `done` or `failed`, the node process writes a marker line on stderr
//! (`END_MARKER` and the attempt id), so the orchestrator knows that every log line the
//! attempt wrote before it has arrived. End of input ends the process.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;

use crate::blob::{BlobRef, Blobs};
use crate::context::{Context, Gather, Host, JournalKind, Mutation, SignalWait, WireArg};
use crate::error::{Error, ErrorKind};
use crate::model::{NodeId, RunId};
use crate::registry::Registry;

/// The version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The longest line either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The start of the stderr line a node process writes after each attempt's last message.
pub const END_MARKER: &str = "\u{1}salt-attempt-end ";

/// The outcome of an awaited node, exactly as JSON: `{"ok": value}`, `{"blob": reference}` (an
/// output over [`SPILL_BYTES`](crate::blob::SPILL_BYTES), in the blob directory) or `{"err": error}`; a `null` output is
/// `{"ok": null}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// The node's output.
    Ok(Value),
    /// The node's output, stored as a blob.
    Blob(BlobRef),
    /// Why it failed.
    Err(Error),
}

impl From<Result<Value, Error>> for Outcome {
    fn from(r: Result<Value, Error>) -> Self {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(e),
        }
    }
}

/// A message from the orchestrator to a node process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToNode {
    /// Run this attempt.
    Start {
        /// The attempt's id in this session.
        attempt_id: u64,
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The task to run.
        task: String,
        /// The attempt number.
        attempt: u32,
        /// The input object, without the arguments passed by reference.
        input: Value,
        /// The arguments passed by reference (their JSON is over [`SPILL_BYTES`](crate::blob::SPILL_BYTES)): the node
        /// reads them from their blobs into `input` before it runs the body.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        input_blobs: std::collections::BTreeMap<String, BlobRef>,
        /// The blob directory, where the node reads values passed by reference and writes
        /// values over [`SPILL_BYTES`](crate::blob::SPILL_BYTES) it passes back; none: every value travels inline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blobs: Option<String>,
    },
    /// The answer to an `await`.
    Resolved {
        /// The attempt.
        attempt_id: u64,
        /// The id of the `await`.
        id: u64,
        /// The awaited node's output or error.
        result: Outcome,
    },
    /// The answer to a `journal` or `wait` call.
    Value {
        /// The attempt.
        attempt_id: u64,
        /// The id of the call.
        id: u64,
        /// The recorded value.
        value: Value,
    },
    /// Stop an attempt: its body is dropped, and the node answers `failed` (cancelled).
    Cancel {
        /// The attempt.
        attempt_id: u64,
    },
}

/// A message from a node process to the orchestrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FromNode {
    /// The first message: which protocol the process speaks.
    Hello {
        /// The protocol version.
        protocol: u32,
        /// The process id.
        pid: u32,
    },
    /// Changes to the graph: spawns, edges, promises, annotations.
    Mutate {
        /// The attempt.
        attempt_id: u64,
        /// The changes, in order.
        mutations: Vec<Mutation>,
    },
    /// Wait for the output of the child spawned at `seq`.
    Await {
        /// The attempt.
        attempt_id: u64,
        /// An id the answer will carry.
        id: u64,
        /// The child's sequence number.
        seq: u32,
    },
    /// Record (or replay) a journaled value.
    Journal {
        /// The attempt.
        attempt_id: u64,
        /// An id the answer will carry.
        id: u64,
        /// The call's sequence number.
        seq: u32,
        /// What was called.
        kind: JournalKind,
        /// The value proposed on first run.
        value: Value,
    },
    /// Wait for a signal; answered with a `value` when it arrives (the attempt may be stopped
    /// meanwhile and the node replayed instead).
    Wait {
        /// The attempt.
        attempt_id: u64,
        /// An id the answer will carry.
        id: u64,
        /// What to wait for.
        wait: SignalWait,
    },
    /// A line for the attempt's log.
    Log {
        /// The attempt.
        attempt_id: u64,
        /// The line.
        line: String,
    },
    /// The body returned an output.
    Done {
        /// The attempt.
        attempt_id: u64,
        /// The output (absent when it is in `blob`).
        #[serde(default)]
        output: Value,
        /// The output, when its JSON is over [`SPILL_BYTES`](crate::blob::SPILL_BYTES): stored by the node as a blob.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        blob: Option<BlobRef>,
    },
    /// The body failed.
    Failed {
        /// The attempt.
        attempt_id: u64,
        /// Why.
        error: Error,
    },
}

impl FromNode {
    /// The attempt a message belongs to (none for `hello`).
    pub fn attempt_id(&self) -> Option<u64> {
        match self {
            FromNode::Hello { .. } => None,
            FromNode::Mutate { attempt_id, .. }
            | FromNode::Await { attempt_id, .. }
            | FromNode::Journal { attempt_id, .. }
            | FromNode::Wait { attempt_id, .. }
            | FromNode::Log { attempt_id, .. }
            | FromNode::Done { attempt_id, .. }
            | FromNode::Failed { attempt_id, .. } => Some(*attempt_id),
        }
    }
}

/// The protocol descriptor of a node process, shared by its attempts.
struct Wire {
    out: Mutex<std::fs::File>,
}

impl Wire {
    fn send(&self, msg: &FromNode) {
        self.send_all(std::slice::from_ref(msg));
    }

    /// Sends messages in one write.
    fn send_all(&self, msgs: &[FromNode]) {
        let mut line = Vec::new();
        for msg in msgs {
            if serde_json::to_writer(&mut line, msg).is_ok() {
                line.push(b'\n');
            }
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            // The orchestrator is gone: nobody can use what this process does any more.
            die(3);
        }
    }
}

/// A call of a body waiting for its answer.
enum Waiting {
    /// Alone.
    One(oneshot::Sender<ToNode>),
    /// Await number `.1` of a `join_all`.
    Part(Arc<Gather<Outcome>>, usize),
}

/// Calls of one attempt waiting for their answers.
type Calls = Arc<Mutex<HashMap<u64, Waiting>>>;

/// One attempt as its body sees the protocol.
struct ProtocolHost {
    wire: Arc<Wire>,
    blobs: Option<Blobs>,
    attempt_id: u64,
    next_id: AtomicU64,
    calls: Calls,
    /// The attempts of this process, to end this one early.
    running: Arc<Mutex<HashMap<u64, Running>>>,
    /// Set once the attempt has been reported failed early: it sends nothing more.
    ended: AtomicBool,
}

impl ProtocolHost {
    /// Reports the attempt failed before its body returned, and stops the body.
    fn fail_early(&self, error: Error) {
        if self.ended.swap(true, Ordering::SeqCst) {
            return;
        }
        let attempt_id = self.attempt_id;
        let (gone, alone) = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            (running.remove(&attempt_id), running.is_empty())
        };
        if alone {
            kill_descendants();
        }
        self.wire.send(&FromNode::Failed { attempt_id, error });
        end_marker(attempt_id);
        if let Some(r) = gone {
            r.abort.abort();
        }
    }

    fn call(&self, make: impl FnOnce(u64) -> FromNode) -> oneshot::Receiver<ToNode> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.ended.load(Ordering::SeqCst) {
            return rx;
        }
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Waiting::One(tx));
        self.wire.send(&make(id));
        rx
    }
}

/// A value answer; an attempt whose answer never comes is being stopped: wait for that.
async fn value_of(rx: oneshot::Receiver<ToNode>) -> Value {
    match rx.await {
        Ok(ToNode::Value { value, .. }) => value,
        _ => futures::future::pending().await,
    }
}

impl Host for ProtocolHost {
    fn mutate(&self, mut mutations: Vec<Mutation>) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        // An argument deeper than the orchestrator reads fails the attempt with the error the
        // orchestrator gives in-process, not with an unreadable message.
        for m in &mutations {
            let Mutation::Spawn(req) = m else { continue };
            for (name, arg) in &req.args {
                if let WireArg::Value(v) = arg
                    && crate::model::too_deep(v)
                {
                    let what = format!("argument `{name}` of a call to task `{}`", req.task);
                    return self.fail_early(Error::new(ErrorKind::Input, crate::model::depth_message(what)));
                }
            }
        }
        // Arguments too large for a message go by reference.
        if let Some(blobs) = &self.blobs {
            for m in &mut mutations {
                let Mutation::Spawn(spawn) = m else { continue };
                for (name, arg) in &mut spawn.args {
                    let WireArg::Value(v) = arg else { continue };
                    match blobs.spill(v) {
                        Ok(Some(r)) => *arg = WireArg::Blob(r),
                        Ok(None) => {}
                        Err(e) => self.log(format!("[salt] argument `{name}` is sent inline: {e}")),
                    }
                }
            }
        }
        self.wire.send(&FromNode::Mutate { attempt_id: self.attempt_id, mutations });
    }

    fn await_node(&self, seq: u32) -> BoxFuture<'static, Result<Value, Error>> {
        let attempt_id = self.attempt_id;
        let rx = self.call(|id| FromNode::Await { attempt_id, id, seq });
        let blobs = self.blobs.clone();
        async move {
            match rx.await {
                Ok(ToNode::Resolved { result: Outcome::Ok(v), .. }) => Ok(v),
                Ok(ToNode::Resolved { result: Outcome::Err(e), .. }) => Err(e),
                Ok(ToNode::Resolved { result: Outcome::Blob(r), .. }) => read_blob(blobs, r).await,
                Ok(other) => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("the orchestrator answered an await with {}", short(&format!("{other:?}"))),
                )),
                Err(_) => futures::future::pending().await,
            }
        }
        .boxed()
    }

    fn await_nodes(&self, seqs: Vec<u32>) -> BoxFuture<'static, Vec<Result<Value, Error>>> {
        if self.ended.load(Ordering::SeqCst) {
            // The attempt failed already: nothing will answer.
            return futures::future::pending().boxed();
        }
        let (gather, all_in) = Gather::new(seqs.len());
        let attempt_id = self.attempt_id;
        let mut messages = Vec::with_capacity(seqs.len());
        {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            for (i, seq) in seqs.into_iter().enumerate() {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                calls.insert(id, Waiting::Part(gather.clone(), i));
                messages.push(FromNode::Await { attempt_id, id, seq });
            }
        }
        self.wire.send_all(&messages);
        let blobs = self.blobs.clone();
        async move {
            if all_in.await.is_err() {
                futures::future::pending::<()>().await;
            }
            let mut answers = Vec::new();
            for outcome in gather.take() {
                answers.push(match outcome {
                    Some(Outcome::Ok(v)) => Ok(v),
                    Some(Outcome::Err(e)) => Err(e),
                    Some(Outcome::Blob(r)) => read_blob(blobs.clone(), r).await,
                    None => Err(crate::context::unanswered()),
                });
            }
            answers
        }
        .boxed()
    }

    fn journal(&self, seq: u32, kind: JournalKind, proposed: Value) -> BoxFuture<'static, Value> {
        let attempt_id = self.attempt_id;
        value_of(self.call(|id| FromNode::Journal { attempt_id, id, seq, kind, value: proposed })).boxed()
    }

    fn wait_signal(&self, wait: SignalWait) -> BoxFuture<'static, Value> {
        let attempt_id = self.attempt_id;
        value_of(self.call(|id| FromNode::Wait { attempt_id, id, wait })).boxed()
    }

    fn log(&self, line: String) {
        if self.ended.load(Ordering::SeqCst) {
            return;
        }
        self.wire.send(&FromNode::Log { attempt_id: self.attempt_id, line });
    }
}

/// Reads a value passed by reference, off the async threads.
async fn read_blob(blobs: Option<Blobs>, r: BlobRef) -> Result<Value, Error> {
    let Some(blobs) = blobs else {
        return Err(Error::new(
            ErrorKind::Protocol,
            "the orchestrator passed a value by reference but named no blob directory",
        ));
    };
    match tokio::task::spawn_blocking(move || blobs.get_value(&r)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::new(ErrorKind::Store, e)),
        Err(e) => Err(Error::new(ErrorKind::Store, format!("reading a blob failed: {e}"))),
    }
}

/// The input object of an attempt, with its arguments passed by reference read back in.
async fn full_input(
    mut input: Value,
    by_ref: std::collections::BTreeMap<String, BlobRef>,
    blobs: Option<Blobs>,
) -> Result<Value, Error> {
    for (name, r) in by_ref {
        let v = read_blob(blobs.clone(), r).await?;
        match &mut input {
            Value::Object(map) => {
                map.insert(name, v);
            }
            _ => return Err(Error::new(ErrorKind::Protocol, "an input passed by reference into a non-object")),
        }
    }
    Ok(input)
}

/// The `done` message of an output: by reference when it is over [`SPILL_BYTES`](crate::blob::SPILL_BYTES) and there is a
/// blob directory to put it in.
async fn done(attempt_id: u64, output: Value, blobs: Option<Blobs>) -> FromNode {
    let Some(blobs) = blobs else {
        return FromNode::Done { attempt_id, output, blob: None };
    };
    match tokio::task::spawn_blocking(move || blobs.spill(&output).map(|r| (r, output))).await {
        Ok(Ok((None, output))) => FromNode::Done { attempt_id, output, blob: None },
        Ok(Ok((Some(r), _))) => FromNode::Done { attempt_id, output: Value::Null, blob: Some(r) },
        Ok(Err(e)) => FromNode::Failed { attempt_id, error: Error::new(ErrorKind::Store, e) },
        Err(e) => {
            FromNode::Failed { attempt_id, error: Error::new(ErrorKind::Store, format!("storing the output: {e}")) }
        }
    }
}

pub(crate) use salt_core::text::short;

/// The entry point of a node process (`<bin> __salt exec`): serves attempts until its input
/// ends.
pub fn exec_main() -> ExitCode {
    // Keep the real stdout for the protocol and point fd 1 at stderr, so that user code that
    // prints cannot corrupt the protocol: its output lands in the attempt's log.
    // A close-on-exec copy: processes the task starts must not inherit the protocol.
    let proto = match std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            tracing::error!("cannot set up the protocol descriptor: {e}");
            return ExitCode::from(3);
        }
    };
    if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
        tracing::error!("cannot redirect stdout: {e}");
        return ExitCode::from(3);
    }
    // When the orchestrator dies, so does this process (and, through the handler below, the
    // processes its tasks started).
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    rt.block_on(exec(proto))
}

/// An attempt running in this node process.
struct Running {
    calls: Calls,
    abort: tokio::task::AbortHandle,
}

async fn exec(proto: std::fs::File) -> ExitCode {
    let wire = Arc::new(Wire { out: Mutex::new(proto) });
    wire.send(&FromNode::Hello { protocol: PROTOCOL_VERSION, pid: std::process::id() });

    // SIGTERM (the orchestrator died, or stops this process): take the processes the tasks
    // started down too.
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::spawn(async move {
            term.recv().await;
            die(3);
        });
    }

    let registry = Registry::global();
    // This process runs bodies until it ends.
    let _hosting = crate::context::live::Hosting::new();
    let running: Arc<Mutex<HashMap<u64, Running>>> = Arc::default();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            // End of input: the orchestrator is done with this process, or gone.
            _ => die(0),
        };
        let msg = match serde_json::from_str::<ToNode>(&line) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::error!(line = %short(&line), "the orchestrator sent a bad message: {e}");
                die(3);
            }
        };
        match msg {
            ToNode::Start { attempt_id, run, node, task, attempt, input, input_blobs, blobs } => {
                let blobs = blobs.map(Blobs::at);
                let descriptor = match registry.as_ref().map_err(|e| e.clone()).and_then(|r| r.task(&task)) {
                    Ok(d) => d,
                    Err(error) => {
                        wire.send(&FromNode::Failed { attempt_id, error });
                        end_marker(attempt_id);
                        continue;
                    }
                };
                let calls = Calls::default();
                let host = Arc::new(ProtocolHost {
                    wire: wire.clone(),
                    blobs: blobs.clone(),
                    attempt_id,
                    next_id: AtomicU64::new(1),
                    calls: calls.clone(),
                    running: running.clone(),
                    ended: AtomicBool::new(false),
                });
                let host2 = host.clone();
                let ctx = Context::new(host, run, node, attempt);
                let (wire2, running2) = (wire.clone(), running.clone());
                let handle = tokio::spawn(async move {
                    let result = match full_input(input, input_blobs, blobs.clone()).await {
                        Ok(input) => {
                            let body = ctx.clone().scope(descriptor.body(input, ctx.clone()));
                            std::panic::AssertUnwindSafe(body).catch_unwind().await
                        }
                        Err(error) => Ok(Err(error)),
                    };
                    ctx.flush();
                    if host2.ended.load(Ordering::SeqCst) {
                        // Already reported failed.
                        running2.lock().unwrap_or_else(|p| p.into_inner()).remove(&attempt_id);
                        return;
                    }
                    let alone = {
                        let mut running = running2.lock().unwrap_or_else(|p| p.into_inner());
                        running.remove(&attempt_id);
                        running.is_empty()
                    };
                    if alone {
                        // What the attempt started and left behind ends with it.
                        kill_descendants();
                    }
                    match result {
                        // Deeper than the orchestrator reads: the same error as in-process.
                        Ok(Ok(output)) if crate::model::too_deep(&output) => {
                            let what = format!("the output of task `{}`", descriptor.name);
                            let error = Error::new(ErrorKind::Input, crate::model::depth_message(what));
                            wire2.send(&FromNode::Failed { attempt_id, error })
                        }
                        Ok(Ok(output)) => wire2.send(&done(attempt_id, output, blobs).await),
                        Ok(Err(e)) => wire2.send(&FromNode::Failed { attempt_id, error: e }),
                        Err(panic) => wire2.send(&FromNode::Failed { attempt_id, error: panic_error(panic) }),
                    }
                    end_marker(attempt_id);
                });
                running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(attempt_id, Running { calls, abort: handle.abort_handle() });
            }
            ToNode::Resolved { attempt_id, id, .. } | ToNode::Value { attempt_id, id, .. } => {
                let waiting = running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&attempt_id)
                    .and_then(|r| r.calls.lock().unwrap_or_else(|p| p.into_inner()).remove(&id));
                match (waiting, msg) {
                    (Some(Waiting::One(tx)), msg) => {
                        let _ = tx.send(msg);
                    }
                    (Some(Waiting::Part(gather, i)), ToNode::Resolved { result, .. }) => gather.put(i, result),
                    (Some(Waiting::Part(gather, i)), ToNode::Value { value, .. }) => gather.put(i, Outcome::Ok(value)),
                    _ => {}
                }
            }
            ToNode::Cancel { attempt_id } => {
                let (gone, alone) = {
                    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
                    (running.remove(&attempt_id), running.is_empty())
                };
                if let Some(r) = gone {
                    r.abort.abort();
                    if alone {
                        kill_descendants();
                    }
                    let error = Error::new(ErrorKind::Cancelled, "the attempt was stopped");
                    wire.send(&FromNode::Failed { attempt_id, error });
                    end_marker(attempt_id);
                }
            }
        }
    }
}

/// Ends this node process and every process its attempts started.
fn die(code: i32) -> ! {
    kill_descendants();
    std::process::exit(code)
}

/// Kills every process this one started, and theirs (the processes an attempt left
/// behind). Linux lists a process's children in `/proc`; elsewhere this does nothing, and the
/// process group is killed when the process ends.
pub(crate) fn kill_descendants() {
    kill_trees(children_of(std::process::id(), None));
}

/// Kills the processes thread `tid` of this process started, and theirs: what a body blocked on
/// that thread (waiting for a child process with a blocking call) runs, while other bodies run
/// on other threads.
pub(crate) fn kill_started_by_thread(tid: i32) {
    kill_trees(children_of(std::process::id(), Some(tid)));
}

/// The children of process `pid`: of all its threads, or of thread `tid` only.
fn children_of(pid: u32, tid: Option<i32>) -> Vec<i32> {
    let read = |path: std::path::PathBuf| -> Vec<i32> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.split_whitespace().filter_map(|c| c.parse::<i32>().ok()).collect()
    };
    match tid {
        Some(tid) => read(format!("/proc/{pid}/task/{tid}/children").into()),
        None => std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|tasks| tasks.flatten().flat_map(|t| read(t.path().join("children"))).collect())
            .unwrap_or_default(),
    }
}

/// Kills `roots` and every process below them (a container's remover excepted, which removes the
/// container once its guard dies).
fn kill_trees(roots: Vec<i32>) {
    let mut stack: Vec<i32> = roots.into_iter().filter(|&c| !crate::container::is_remover(c)).collect();
    let mut found = Vec::new();
    while let Some(pid) = stack.pop() {
        found.push(pid);
        let below = children_of(pid as u32, None);
        stack.extend(below.into_iter().filter(|&c| !crate::container::is_remover(c)));
    }
    // The removals start before the guards die: killed first, this process could die too
    // before it started them, and no one would remove the containers.
    for (engine, name) in crate::container::guarded(&found) {
        crate::container::remove_detached(&engine, &name);
    }
    for pid in found {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Kills (SIGKILL) the process groups of the processes below `pid` other than `pid`'s own and
/// this process's: the groups command steps run in (see [`crate::command`]), which a kill of the
/// node process's group does not reach.
pub(crate) fn kill_groups_below(pid: i32) {
    use nix::unistd::{Pid, getpgid};
    let mut stack = vec![pid as u32];
    let mut groups = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    while let Some(p) = stack.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else { continue };
            for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                if crate::container::is_remover(child) {
                    continue;
                }
                if let Ok(group) = getpgid(Some(Pid::from_raw(child))) {
                    groups.insert(group.as_raw());
                }
                found.push(child);
                stack.push(child as u32);
            }
        }
    }
    let own = getpgid(None).map(|g| g.as_raw()).unwrap_or(0);
    // The containers of command steps, which outlive their engine's client: removed too.
    for (engine, name) in crate::container::guarded(&found) {
        crate::container::remove_detached(&engine, &name);
    }
    for group in groups.into_iter().filter(|g| *g != pid && *g != own && *g > 1) {
        let _ = nix::sys::signal::killpg(Pid::from_raw(group), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Tells the orchestrator, on the log stream, that an attempt's log is complete.
fn end_marker(attempt_id: u64) {
    let _ = std::io::stdout().flush();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{END_MARKER}{attempt_id}");
    let _ = err.flush();
}

/// The error of a panicked body, with the panic's message.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string());
    Error::new(ErrorKind::Panic, format!("task panicked: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::WireArg;

    #[test]
    fn messages_are_one_json_object_per_line() {
        let spawn = crate::context::SpawnRequest {
            seq: 2,
            task: "extract".into(),
            args: vec![("source".into(), WireArg::Value("a.csv".into())), ("rows".into(), WireArg::Handle(1))],
            after: Vec::new(),
            policy: None,
        };
        let msg = FromNode::Mutate {
            attempt_id: 4,
            mutations: vec![Mutation::Spawn(spawn), Mutation::Edge { from: 0, to: 2 }],
        };
        let line = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            line,
            r#"{"type":"mutate","attempt_id":4,"mutations":[{"op":"spawn","seq":2,"task":"extract","args":[["source",{"value":"a.csv"}],["rows",{"handle":1}]]},{"op":"edge","from":0,"to":2}]}"#
        );
        assert!(matches!(serde_json::from_str::<FromNode>(&line).unwrap(), FromNode::Mutate { .. }));
    }

    #[test]
    fn unknown_messages_and_fields_are_rejected() {
        assert!(serde_json::from_str::<FromNode>(r#"{"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<FromNode>(r#"{"type":"log","attempt_id":1,"line":"x","extra":1}"#).is_err());
        assert!(serde_json::from_str::<FromNode>("not json").is_err());
    }

    #[test]
    fn a_list_argument_crosses_and_a_malformed_one_is_rejected() {
        let line = r#"{"type":"mutate","attempt_id":1,"mutations":[{"op":"spawn","seq":3,"task":"sum","args":[["xs",{"list":[{"handle":0},{"value":5}]}]]}]}"#;
        let FromNode::Mutate { mutations, .. } = serde_json::from_str::<FromNode>(line).unwrap() else { panic!() };
        let [Mutation::Spawn(spawn)] = &mutations[..] else { panic!("{mutations:?}") };
        assert_eq!(spawn.args, [("xs".to_string(), WireArg::List(vec![WireArg::Handle(0), WireArg::Value(5.into())]))]);
        assert_eq!(serde_json::to_string(&spawn.args).unwrap(), r#"[["xs",{"list":[{"handle":0},{"value":5}]}]]"#);
        for bad in [r#"{"list":5}"#, r#"{"list":[{"handle":-1}]}"#, r#"{"list":[{"nothing":1}]}"#, r#"{"list":[1]}"#] {
            let line = format!(
                r#"{{"type":"mutate","attempt_id":1,"mutations":[{{"op":"spawn","seq":3,"task":"sum","args":[["xs",{bad}]]}}]}}"#
            );
            assert!(serde_json::from_str::<FromNode>(&line).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_json_value_crosses_exactly() {
        for v in [
            serde_json::json!(null),
            serde_json::json!({"a": null, "b": [null, {"c": null}]}),
            serde_json::json!([[[[[[[[[[1]]]]]]]]]]),
            serde_json::json!(""),
        ] {
            let msg = ToNode::Resolved { attempt_id: 1, id: 2, result: Outcome::Ok(v.clone()) };
            let back: ToNode = serde_json::from_str(&serde_json::to_string(&msg).unwrap()).unwrap();
            match back {
                ToNode::Resolved { result: Outcome::Ok(got), .. } => assert_eq!(got, v),
                other => panic!("{other:?}"),
            }
        }
        let line = serde_json::to_string(&ToNode::Resolved { attempt_id: 1, id: 2, result: Outcome::Ok(Value::Null) });
        assert_eq!(line.unwrap(), r#"{"type":"resolved","attempt_id":1,"id":2,"result":{"ok":null}}"#);
    }
}
