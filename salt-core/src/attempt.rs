//! Attempts as the run core sees them: the [`Event`]s a running body sends, addressed by
//! [`AttemptId`], and the [`Answer`]s it gets back. Executors (inline, node processes, remote
//! workers) carry them; nothing that crosses this boundary is an in-process channel.

use serde_json::Value;

use crate::call::{JournalKind, Mutation, SignalWait};
use crate::error::{Error, ErrorKind};
use crate::model::{NodeId, RunId};

/// One attempt of one node of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    /// The run.
    pub run: RunId,
    /// The node.
    pub node: NodeId,
    /// The attempt's number, from 1.
    pub attempt: u32,
}

/// What a running body tells the run core. Events of an attempt that is no longer current are
/// ignored by the core.
#[derive(Debug)]
pub enum Event {
    /// Graph changes, in order.
    Mutate {
        /// The attempt.
        at: AttemptId,
        /// The changes.
        mutations: Vec<Mutation>,
    },
    /// The body awaits the child it spawned at `seq`; answered with [`Answer::Resolved`].
    Await {
        /// The attempt.
        at: AttemptId,
        /// The call, to address the answer.
        call: u64,
        /// The child's sequence number.
        seq: u32,
    },
    /// A journaled value; answered with [`Answer::Value`].
    Journal {
        /// The attempt.
        at: AttemptId,
        /// The call, to address the answer.
        call: u64,
        /// The call's sequence number.
        seq: u32,
        /// What it journals.
        kind: JournalKind,
        /// The value of this attempt (the journal's, if there is one, wins).
        value: Value,
    },
    /// A signal wait; answered with [`Answer::Value`] (or the attempt is parked).
    Wait {
        /// The attempt.
        at: AttemptId,
        /// The call, to address the answer.
        call: u64,
        /// What it waits for.
        wait: SignalWait,
    },
    /// A line of the attempt's log.
    Log {
        /// The attempt.
        at: AttemptId,
        /// The line.
        line: String,
    },
    /// The attempt ended.
    Finished {
        /// The attempt.
        at: AttemptId,
        /// Its output or its error.
        result: Result<Value, Error>,
    },
}

/// The core's answer to one call of a body.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The awaited child's output or error.
    Resolved(Result<Value, Error>),
    /// A journaled or signalled value.
    Value(Value),
}

/// The error of an attempt that ran past its timeout.
pub fn timeout_error(timeout: std::time::Duration) -> Error {
    Error::new(ErrorKind::Timeout, format!("attempt timed out after {timeout:?} and was killed"))
}
