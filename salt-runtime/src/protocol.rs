//! The stdio protocol between the orchestrator and a node process: JSON Lines, versioned by a
//! first `hello`.
//!
//! A node process is the workflow binary re-executed as `<bin> __salt exec`. It first moves its
//! own stdout aside (user `println!` goes to stderr, which is the attempt's log), then speaks
//! the protocol on the original stdout:
//!
//! ```text
//! node → orchestrator: {"type":"hello","protocol":1,"pid":4242}
//! orchestrator → node: {"type":"start","protocol":1,"run":7,"node":3,"task":"extract","attempt":1,"input":{…}}
//! node → orchestrator: {"type":"mutate","mutations":[{"op":"spawn","seq":0,"task":"parse","args":[["text",{"value":"…"}]]}]}
//! node → orchestrator: {"type":"await","id":1,"seq":0}
//! orchestrator → node: {"type":"resolved","id":1,"ok":{…}}           (or "err":{"kind":…,"message":…})
//! node → orchestrator: {"type":"journal","id":2,"seq":1,"kind":"random","value":123}
//! orchestrator → node: {"type":"value","id":2,"value":123}
//! node → orchestrator: {"type":"log","line":"…"}
//! node → orchestrator: {"type":"done","output":{…}}                 (or "failed" with "error")
//! ```

use std::collections::HashMap;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;

use crate::context::{Context, Host, JournalKind, Mutation, SignalWait};
use crate::error::{ErrorKind, ErrorWire};
use crate::model::{NodeId, RunId};
use crate::registry::Registry;

/// The version of the protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line either side accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A message from the orchestrator to a node process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToNode {
    /// Run this attempt.
    Start {
        /// The protocol version.
        protocol: u32,
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The task to run.
        task: String,
        /// The attempt number.
        attempt: u32,
        /// The input object.
        input: Value,
    },
    /// The answer to an `await`.
    Resolved {
        /// The id of the `await`.
        id: u64,
        /// The awaited node's output.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ok: Option<Value>,
        /// Why the awaited node failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        err: Option<ErrorWire>,
    },
    /// The answer to a `journal` call.
    Value {
        /// The id of the call.
        id: u64,
        /// The recorded value.
        value: Value,
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
        /// The changes, in order.
        mutations: Vec<Mutation>,
    },
    /// Wait for the output of the child spawned at `seq`.
    Await {
        /// An id the answer will carry.
        id: u64,
        /// The child's sequence number.
        seq: u32,
    },
    /// Record (or replay) a journaled value.
    Journal {
        /// An id the answer will carry.
        id: u64,
        /// The call's sequence number.
        seq: u32,
        /// What was called.
        kind: JournalKind,
        /// The value proposed on first run.
        value: Value,
    },
    /// Wait for a signal; answered with a `value` when it arrives (the process may be stopped
    /// meanwhile and the node replayed instead).
    Wait {
        /// An id the answer will carry.
        id: u64,
        /// What to wait for.
        wait: SignalWait,
    },
    /// A line for the attempt's log.
    Log {
        /// The line.
        line: String,
    },
    /// The body returned an output.
    Done {
        /// The output.
        output: Value,
    },
    /// The body failed.
    Failed {
        /// Why.
        error: ErrorWire,
    },
}

/// The protocol as a node process speaks it: writes go to the moved-aside stdout.
struct ProtocolHost {
    out: Mutex<std::fs::File>,
    next_id: AtomicU64,
    awaiting: Mutex<HashMap<u64, oneshot::Sender<ToNode>>>,
}

impl ProtocolHost {
    fn send(&self, msg: &FromNode) {
        let mut line = serde_json::to_vec(msg).unwrap_or_default();
        line.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            // The orchestrator is gone: nobody can use what this attempt does any more.
            std::process::exit(3);
        }
    }

    fn call(&self, make: impl FnOnce(u64) -> FromNode) -> oneshot::Receiver<ToNode> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.awaiting.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        self.send(&make(id));
        rx
    }

    fn dispatch(&self, msg: ToNode) {
        let id = match &msg {
            ToNode::Resolved { id, .. } | ToNode::Value { id, .. } => *id,
            ToNode::Start { .. } => return,
        };
        if let Some(tx) = self.awaiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
            let _ = tx.send(msg);
        }
    }
}

impl Host for ProtocolHost {
    fn mutate(&self, mutations: Vec<Mutation>) {
        self.send(&FromNode::Mutate { mutations });
    }

    fn await_node(&self, seq: u32) -> BoxFuture<'static, Result<Value, ErrorWire>> {
        let rx = self.call(|id| FromNode::Await { id, seq });
        async move {
            match rx.await {
                Ok(ToNode::Resolved { ok: Some(v), .. }) => Ok(v),
                Ok(ToNode::Resolved { err: Some(e), .. }) => Err(e),
                _ => Err(ErrorWire::new(ErrorKind::Protocol, "the orchestrator sent no answer to an await")),
            }
        }
        .boxed()
    }

    fn journal(&self, seq: u32, kind: JournalKind, proposed: Value) -> BoxFuture<'static, Value> {
        let rx = self.call(|id| FromNode::Journal { id, seq, kind, value: proposed.clone() });
        async move {
            match rx.await {
                Ok(ToNode::Value { value, .. }) => value,
                _ => futures::future::pending().await,
            }
        }
        .boxed()
    }

    fn wait_signal(&self, wait: SignalWait) -> BoxFuture<'static, Value> {
        let rx = self.call(|id| FromNode::Wait { id, wait });
        async move {
            match rx.await {
                Ok(ToNode::Value { value, .. }) => value,
                _ => futures::future::pending().await,
            }
        }
        .boxed()
    }

    fn log(&self, line: String) {
        self.send(&FromNode::Log { line });
    }
}

/// The entry point of a node process (`<bin> __salt exec`): runs one attempt and exits.
pub fn exec_main() -> ExitCode {
    // Keep the real stdout for the protocol and point fd 1 at stderr, so that user code that
    // prints cannot corrupt the protocol: its output lands in the attempt's log.
    // A close-on-exec copy: processes the task starts must not inherit the protocol.
    let proto = match std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            eprintln!("salt: cannot set up the protocol descriptor: {e}");
            return ExitCode::from(3);
        }
    };
    if let Err(e) = nix::unistd::dup2_stdout(std::io::stderr()) {
        eprintln!("salt: cannot redirect stdout: {e}");
        return ExitCode::from(3);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salt: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    rt.block_on(exec(proto))
}

async fn exec(proto: std::fs::File) -> ExitCode {
    let host = Arc::new(ProtocolHost {
        out: Mutex::new(proto),
        next_id: AtomicU64::new(1),
        awaiting: Mutex::new(HashMap::new()),
    });
    host.send(&FromNode::Hello { protocol: PROTOCOL_VERSION, pid: std::process::id() });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let start = match lines.next_line().await {
        Ok(Some(line)) => serde_json::from_str::<ToNode>(&line),
        _ => return ExitCode::from(3),
    };
    let (run, node, task, attempt, input) = match start {
        Ok(ToNode::Start { protocol: PROTOCOL_VERSION, run, node, task, attempt, input }) => {
            (run, node, task, attempt, input)
        }
        other => {
            host.send(&FromNode::Failed {
                error: ErrorWire::new(ErrorKind::Protocol, format!("expected a start message, got {other:?}")),
            });
            return ExitCode::from(3);
        }
    };

    // Answers arrive on stdin; end of input means the orchestrator is gone.
    let reader_host = host.clone();
    tokio::spawn(async move {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match serde_json::from_str::<ToNode>(&line) {
                    Ok(msg) => reader_host.dispatch(msg),
                    Err(e) => {
                        eprintln!("salt: orchestrator sent a bad message: {e}");
                        std::process::exit(3);
                    }
                },
                _ => std::process::exit(3),
            }
        }
    });

    let descriptor = match Registry::global().and_then(|r| r.task(&task)) {
        Ok(d) => d,
        Err(e) => {
            host.send(&FromNode::Failed { error: e.to_wire() });
            return ExitCode::SUCCESS;
        }
    };
    let ctx = Context::new(host.clone(), run, node, attempt);
    let body = ctx.clone().scope((descriptor.run)(input, ctx.clone()));
    let result = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    ctx.flush();
    match result {
        Ok(Ok(output)) => host.send(&FromNode::Done { output }),
        Ok(Err(e)) => host.send(&FromNode::Failed { error: e.to_wire() }),
        Err(panic) => host.send(&FromNode::Failed { error: panic_error(panic) }),
    }
    ExitCode::SUCCESS
}

/// The error of a panicked body, with the panic's message.
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> ErrorWire {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic payload".to_string());
    ErrorWire::new(ErrorKind::Panic, format!("task panicked: {msg}"))
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
        };
        let msg = FromNode::Mutate { mutations: vec![Mutation::Spawn(spawn), Mutation::Edge { from: 0, to: 2 }] };
        let line = serde_json::to_string(&msg).unwrap();
        assert_eq!(
            line,
            r#"{"type":"mutate","mutations":[{"op":"spawn","seq":2,"task":"extract","args":[["source",{"value":"a.csv"}],["rows",{"handle":1}]]},{"op":"edge","from":0,"to":2}]}"#
        );
        assert!(matches!(serde_json::from_str::<FromNode>(&line).unwrap(), FromNode::Mutate { .. }));
    }

    #[test]
    fn unknown_messages_and_fields_are_rejected() {
        assert!(serde_json::from_str::<FromNode>(r#"{"type":"explode"}"#).is_err());
        assert!(serde_json::from_str::<FromNode>(r#"{"type":"log","line":"x","extra":1}"#).is_err());
        assert!(serde_json::from_str::<FromNode>("not json").is_err());
    }
}
