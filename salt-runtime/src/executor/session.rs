//! The orchestrator's side of one protocol session with a node process, over any byte streams
//! (a child's pipes today; a socket is the same code).
//!
//! The session translates the node's messages into [`Event`]s addressed by [`AttemptId`], and
//! the core's answers into messages. Anything wrong with what the node sends (not JSON, an
//! unknown message, a line over the limit, a wrong protocol version, an early end) ends the
//! session with a [`ProtocolError`], which fails every attempt the session was running.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use super::{AttemptId, Event, Events};
use crate::blob::{BlobRef, Blobs};
use crate::context::{Mutation, WireArg};
use crate::error::ProtocolError;
use crate::protocol::{END_MARKER, FromNode, MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ToNode, short};

/// How long an ended attempt's last log lines may take to arrive.
const LOG_GRACE: Duration = Duration::from_secs(2);

/// The attempts a session runs, by their id in the session.
#[derive(Default)]
pub(super) struct Attempts {
    map: Mutex<HashMap<u64, AttemptId>>,
}

impl Attempts {
    pub(super) fn insert(&self, id: u64, at: AttemptId) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, at);
    }

    pub(super) fn get(&self, id: u64) -> Option<AttemptId> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
    }

    pub(super) fn remove(&self, id: u64) -> Option<AttemptId> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(&id)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// The only attempt, when there is exactly one: where unattributed log lines go.
    fn only(&self) -> Option<AttemptId> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() == 1 { map.values().next().copied() } else { None }
    }

    fn drain(&self) -> Vec<AttemptId> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, at)| at).collect()
    }
}

/// Writes messages to the node until the channel closes (then closes the node's input).
pub(super) async fn write_loop<W: AsyncWrite + Unpin>(mut input: W, mut outbox: mpsc::UnboundedReceiver<ToNode>) {
    let mut buf = Vec::new();
    while let Some(msg) = outbox.recv().await {
        buf.clear();
        if serde_json::to_writer(&mut buf, &msg).is_err() {
            continue;
        }
        buf.push(b'\n');
        // Write what else is queued in the same syscall.
        while let Ok(more) = outbox.try_recv() {
            if serde_json::to_writer(&mut buf, &more).is_ok() {
                buf.push(b'\n');
            }
        }
        if input.write_all(&buf).await.is_err() || input.flush().await.is_err() {
            break;
        }
    }
    let _ = input.shutdown().await;
}

/// Reads the node's log stream: each line goes to the attempt that wrote it (the only one
/// running), and each attempt's end marker is published on `ended`.
pub(super) async fn log_loop<R: AsyncRead + Unpin>(
    log: R,
    attempts: Arc<Attempts>,
    events: Events,
    ended: watch::Sender<u64>,
) {
    let mut lines = tokio::io::BufReader::new(log).lines();
    let mut last: Option<AttemptId> = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(id) = line.strip_prefix(END_MARKER) {
            if let Ok(id) = id.trim().parse::<u64>() {
                let _ = ended.send(id);
            }
            continue;
        }
        let at = attempts.only().or(last);
        if let Some(at) = at {
            last = Some(at);
            let _ = events.send(Event::Log { at, line });
        }
    }
}

/// What ended a session.
pub(super) enum End {
    /// The node's output ended after it had finished all its attempts.
    Closed,
    /// The node broke the protocol or died mid-attempt.
    Broken(ProtocolError),
}

/// Reads the node's messages and forwards them as events until the stream ends or breaks.
/// `on_finished` runs after each attempt's end (the pool frees the process). Values the node
/// passes by reference are read from `blobs` here, so the run core only sees values.
pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    output: R,
    attempts: Arc<Attempts>,
    blobs: Option<Blobs>,
    events: Events,
    mut ended: watch::Receiver<u64>,
    mut on_finished: impl FnMut(),
) -> End {
    let mut frames = FramedRead::new(output, LinesCodec::new_with_max_length(MAX_MESSAGE_BYTES));
    let mut said_hello = false;
    loop {
        let line = match frames.next().await {
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                return End::Broken(ProtocolError::Oversized { limit: MAX_MESSAGE_BYTES });
            }
            Some(Err(LinesCodecError::Io(e))) => return End::Broken(ProtocolError::Io(e.to_string())),
            None if attempts.is_empty() => return End::Closed,
            None => return End::Broken(ProtocolError::EarlyExit { status: String::new() }),
        };
        let msg = match serde_json::from_str::<FromNode>(&line) {
            Ok(msg) => msg,
            Err(e) => {
                return End::Broken(ProtocolError::Malformed { line: short(&line), reason: short(&e.to_string()) });
            }
        };
        if !said_hello {
            match msg {
                FromNode::Hello { protocol: PROTOCOL_VERSION, .. } => {
                    said_hello = true;
                    continue;
                }
                FromNode::Hello { protocol, .. } => {
                    return End::Broken(ProtocolError::Version {
                        found: protocol.to_string(),
                        expected: PROTOCOL_VERSION,
                    });
                }
                other => {
                    return End::Broken(ProtocolError::Version {
                        found: short(&format!("{other:?}")),
                        expected: PROTOCOL_VERSION,
                    });
                }
            }
        }
        let Some(id) = msg.attempt_id() else {
            return End::Broken(ProtocolError::Unexpected("a second hello".into()));
        };
        let Some(at) = attempts.get(id) else {
            // A late message of an attempt that was stopped: nobody listens any more, but its
            // end frees the process.
            if matches!(msg, FromNode::Done { .. } | FromNode::Failed { .. }) {
                on_finished();
            }
            continue;
        };
        let event = match msg {
            FromNode::Hello { .. } => continue,
            FromNode::Mutate { mut mutations, .. } => {
                if let Err(e) = read_args(&blobs, &mut mutations).await {
                    return End::Broken(e);
                }
                Event::Mutate { at, mutations }
            }
            FromNode::Await { id, seq, .. } => Event::Await { at, call: id, seq },
            FromNode::Journal { id, seq, kind, value, .. } => Event::Journal { at, call: id, seq, kind, value },
            FromNode::Wait { id, wait, .. } => Event::Wait { at, call: id, wait },
            FromNode::Log { line, .. } => Event::Log { at, line },
            FromNode::Done { output, blob, .. } => {
                let result = match blob {
                    None => Ok(output),
                    Some(r) => read(&blobs, r).await.map_err(ProtocolError::into_error),
                };
                wait_for_logs(&mut ended, id).await;
                attempts.remove(id);
                let _ = events.send(Event::Finished { at, result });
                on_finished();
                continue;
            }
            FromNode::Failed { error, .. } => {
                wait_for_logs(&mut ended, id).await;
                attempts.remove(id);
                let _ = events.send(Event::Finished { at, result: Err(error) });
                on_finished();
                continue;
            }
        };
        let _ = events.send(event);
    }
}

/// Reads a value the node passed by reference, off the async threads.
async fn read(blobs: &Option<Blobs>, r: BlobRef) -> Result<serde_json::Value, ProtocolError> {
    let Some(blobs) = blobs.clone() else {
        return Err(ProtocolError::Blob("it was given no blob directory".into()));
    };
    match tokio::task::spawn_blocking(move || blobs.get_value(&r)).await {
        Ok(read) => read.map_err(|e| ProtocolError::Blob(e.to_string())),
        Err(e) => Err(ProtocolError::Blob(e.to_string())),
    }
}

/// Reads the spawn arguments a node passed by reference back into values.
async fn read_args(blobs: &Option<Blobs>, mutations: &mut [Mutation]) -> Result<(), ProtocolError> {
    for m in mutations {
        let Mutation::Spawn(spawn) = m else { continue };
        for (_, arg) in &mut spawn.args {
            if let WireArg::Blob(r) = arg {
                *arg = WireArg::Value(read(blobs, r.clone()).await?);
            }
        }
    }
    Ok(())
}

/// Waits (a little) for the end marker of attempt `id` on the log stream.
async fn wait_for_logs(ended: &mut watch::Receiver<u64>, id: u64) {
    let _ = tokio::time::timeout(LOG_GRACE, ended.wait_for(|last| *last >= id)).await;
}

/// Fails every attempt still in the session with `error`.
pub(super) fn fail_all(attempts: &Attempts, events: &Events, error: &ProtocolError) {
    for at in attempts.drain() {
        let _ = events.send(Event::Finished { at, result: Err(error.clone().into_error()) });
    }
}
