//! Executors start attempts: `inline` runs the body on this process's runtime, `process`
//! re-executes the binary as `<bin> __salt exec` and speaks the stdio protocol with it.
//!
//! Both report to the orchestrator with the same [`Event`]s, so the orchestrator does not know
//! which one ran a node.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::context::{Context, Host, JournalKind, Mutation, SignalWait};
use crate::error::{ErrorKind, ErrorWire, ProtocolError};
use crate::model::{NodeId, RunId};
use crate::protocol::{FromNode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ToNode, panic_error};
use crate::registry::TaskDescriptor;

/// What running bodies tell the orchestrator. `(node, attempt)` names the attempt; events of an
/// attempt that is no longer current are ignored.
pub(crate) enum Event {
    Mutate { node: NodeId, attempt: u32, mutations: Vec<Mutation> },
    Wait { node: NodeId, attempt: u32, wait: SignalWait, reply: oneshot::Sender<Value> },
    Await { node: NodeId, attempt: u32, seq: u32, reply: oneshot::Sender<Result<Value, ErrorWire>> },
    Journal { node: NodeId, attempt: u32, seq: u32, kind: JournalKind, value: Value, reply: oneshot::Sender<Value> },
    Log { node: NodeId, attempt: u32, line: String },
    Finished { node: NodeId, attempt: u32, result: Result<Value, ErrorWire> },
}

pub(crate) type Events = mpsc::UnboundedSender<Event>;

/// One attempt to start.
pub(crate) struct Launch {
    pub(crate) run: RunId,
    pub(crate) node: NodeId,
    pub(crate) attempt: u32,
    pub(crate) task: &'static TaskDescriptor,
    pub(crate) input: Value,
}

/// A running attempt, to stop it.
pub(crate) enum Running {
    Inline(tokio::task::AbortHandle),
    Process { pid: Option<u32>, bridge: tokio::task::AbortHandle },
}

impl Running {
    /// Stops the attempt: aborts the inline body, or kills the node process and its group.
    pub(crate) fn stop(&self) {
        match self {
            Running::Inline(h) => h.abort(),
            Running::Process { pid, bridge } => {
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                bridge.abort();
            }
        }
    }
}

struct InlineHost {
    events: Events,
    node: NodeId,
    attempt: u32,
}

impl Host for InlineHost {
    fn mutate(&self, mutations: Vec<Mutation>) {
        let _ = self.events.send(Event::Mutate { node: self.node, attempt: self.attempt, mutations });
    }

    fn wait_signal(&self, wait: SignalWait) -> BoxFuture<'static, Value> {
        let (reply, rx) = oneshot::channel();
        let _ = self.events.send(Event::Wait { node: self.node, attempt: self.attempt, wait, reply });
        answer(rx).boxed()
    }

    fn await_node(&self, seq: u32) -> BoxFuture<'static, Result<Value, ErrorWire>> {
        let (reply, rx) = oneshot::channel();
        let _ = self.events.send(Event::Await { node: self.node, attempt: self.attempt, seq, reply });
        answer(rx).boxed()
    }

    fn journal(&self, seq: u32, kind: JournalKind, value: Value) -> BoxFuture<'static, Value> {
        let (reply, rx) = oneshot::channel();
        let _ = self.events.send(Event::Journal { node: self.node, attempt: self.attempt, seq, kind, value, reply });
        answer(rx).boxed()
    }

    fn log(&self, line: String) {
        let _ = self.events.send(Event::Log { node: self.node, attempt: self.attempt, line });
    }
}

/// The orchestrator's answer. If it drops the request instead, this attempt is being stopped
/// (cancelled, timed out, parked): wait for that.
async fn answer<T>(rx: oneshot::Receiver<T>) -> T {
    match rx.await {
        Ok(v) => v,
        Err(_) => futures::future::pending().await,
    }
}

/// Runs the body on this process's runtime.
pub(crate) fn start_inline(launch: Launch, events: Events) -> Running {
    let Launch { run, node, attempt, task, input } = launch;
    let host = Arc::new(InlineHost { events: events.clone(), node, attempt });
    let ctx = Context::new(host, run, node, attempt);
    let body = ctx.clone().scope((task.run)(input, ctx.clone()));
    let handle = tokio::spawn(async move {
        let result = std::panic::AssertUnwindSafe(body).catch_unwind().await;
        ctx.flush();
        let result = match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(e)) => Err(e.to_wire()),
            Err(panic) => Err(panic_error(panic)),
        };
        let _ = events.send(Event::Finished { node, attempt, result });
    });
    Running::Inline(handle.abort_handle())
}

/// Runs the body in a fresh process of this binary, in its own process group.
pub(crate) fn start_process(launch: Launch, exe: PathBuf, events: Events) -> Running {
    let (node, attempt) = (launch.node, launch.attempt);
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(["__salt", "exec"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn();
    let pid = child.as_ref().ok().and_then(|c| c.id());
    let bridge_events = events.clone();
    let bridge = tokio::spawn(async move {
        let result = match child {
            Ok(child) => bridge(launch, child, bridge_events.clone()).await,
            Err(e) => Err(ProtocolError::Io(format!("cannot start {}: {e}", exe.display()))),
        };
        if let Err(e) = result {
            let _ = bridge_events.send(Event::Finished { node, attempt, result: Err(e.into()) });
        }
    });
    Running::Process { pid, bridge: bridge.abort_handle() }
}

/// Speaks the protocol with one node process until it reports a result. An `Ok` means the
/// process reported and the bridge already sent `Finished`.
async fn bridge(launch: Launch, mut child: tokio::process::Child, events: Events) -> Result<(), ProtocolError> {
    let Launch { run, node, attempt, task, input } = launch;
    let io = |e: std::io::Error| ProtocolError::Io(e.to_string());
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(ProtocolError::Io("node process has no stdio pipes".into()));
    };

    // stderr (and the user's stdout, moved onto it) is the attempt's log.
    let log_events = events.clone();
    let logs = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = log_events.send(Event::Log { node, attempt, line });
        }
    });

    let (to_node, mut outbox) = mpsc::unbounded_channel::<ToNode>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = outbox.recv().await {
            let mut line = serde_json::to_vec(&msg).unwrap_or_default();
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });

    let mut frames = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_MESSAGE_BYTES));
    let mut said_hello = false;
    let outcome = loop {
        let line = match frames.next().await {
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                break Err(ProtocolError::Oversized { limit: MAX_MESSAGE_BYTES });
            }
            Some(Err(LinesCodecError::Io(e))) => break Err(io(e)),
            None => {
                let status = child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                break Err(ProtocolError::EarlyExit { status });
            }
        };
        let msg = match serde_json::from_str::<FromNode>(&line) {
            Ok(msg) => msg,
            Err(e) => {
                let shown: String = line.chars().take(200).collect();
                break Err(ProtocolError::Malformed { line: shown, reason: e.to_string() });
            }
        };
        if !said_hello {
            match msg {
                FromNode::Hello { protocol: PROTOCOL_VERSION, .. } => {
                    said_hello = true;
                    let start = ToNode::Start {
                        protocol: PROTOCOL_VERSION,
                        run,
                        node,
                        task: task.name.to_string(),
                        attempt,
                        input: input.clone(),
                    };
                    let _ = to_node.send(start);
                    continue;
                }
                FromNode::Hello { protocol, .. } => {
                    break Err(ProtocolError::Version { found: protocol.to_string(), expected: PROTOCOL_VERSION });
                }
                other => break Err(ProtocolError::Version { found: format!("{other:?}"), expected: PROTOCOL_VERSION }),
            }
        }
        match msg {
            FromNode::Hello { .. } => break Err(ProtocolError::Unexpected("a second hello".into())),
            FromNode::Mutate { mutations } => {
                let _ = events.send(Event::Mutate { node, attempt, mutations });
            }
            FromNode::Wait { id, wait } => {
                let (reply, rx) = oneshot::channel();
                let _ = events.send(Event::Wait { node, attempt, wait, reply });
                let to_node = to_node.clone();
                tokio::spawn(async move {
                    if let Ok(value) = rx.await {
                        let _ = to_node.send(ToNode::Value { id, value });
                    }
                });
            }
            FromNode::Await { id, seq } => {
                let (reply, rx) = oneshot::channel();
                let _ = events.send(Event::Await { node, attempt, seq, reply });
                let to_node = to_node.clone();
                tokio::spawn(async move {
                    if let Ok(result) = rx.await {
                        let (ok, err) = match result {
                            Ok(v) => (Some(v), None),
                            Err(e) => (None, Some(e)),
                        };
                        let _ = to_node.send(ToNode::Resolved { id, ok, err });
                    }
                });
            }
            FromNode::Journal { id, seq, kind, value } => {
                let (reply, rx) = oneshot::channel();
                let _ = events.send(Event::Journal { node, attempt, seq, kind, value, reply });
                let to_node = to_node.clone();
                tokio::spawn(async move {
                    if let Ok(value) = rx.await {
                        let _ = to_node.send(ToNode::Value { id, value });
                    }
                });
            }
            FromNode::Log { line } => {
                let _ = events.send(Event::Log { node, attempt, line });
            }
            FromNode::Done { output } => break Ok(Ok(output)),
            FromNode::Failed { error } => break Ok(Err(error)),
        }
    };
    drop(to_node);
    match outcome {
        Ok(result) => {
            // Let the process exit and its last log lines arrive before reporting.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
            let _ = logs.await;
            let _ = events.send(Event::Finished { node, attempt, result });
            writer.abort();
            Ok(())
        }
        Err(e) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), logs).await;
            writer.abort();
            Err(e)
        }
    }
}

/// The error of an attempt that ran past its timeout.
pub(crate) fn timeout_error(timeout: std::time::Duration) -> ErrorWire {
    ErrorWire::new(ErrorKind::Timeout, format!("attempt timed out after {timeout:?} and was killed"))
}
