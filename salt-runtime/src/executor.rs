//! Executors start attempts and carry what their bodies ask back to the run core.
//!
//! Three implementations sit behind one [`Executor`] trait:
//!
//! - `inline` runs the body on this process's async runtime: the fastest, no isolation;
//! - `process` starts a fresh process of this binary (`<bin> __salt exec`) per attempt;
//! - `pool` keeps long-lived processes of this binary, each serving many attempts one after
//!   the other over one protocol session: the isolation of `process` at a fraction of its cost.
//!
//! All three report with the same [`Event`]s, addressed by [`AttemptId`], and are answered with
//! [`Answer`]s addressed the same way: nothing that crosses this boundary is an in-process
//! channel, so a socket or a remote worker is one more implementation.

mod inline;
mod pool;
mod session;

use serde_json::Value;
use tokio::sync::mpsc;

pub(crate) use self::inline::Inline;
pub(crate) use self::pool::{Pool, PoolMode};
use crate::context::{JournalKind, Mutation, SignalWait};
use crate::error::{Error, ErrorKind};
use crate::model::{NodeId, RunId};
use crate::registry::TaskDescriptor;

/// One attempt of one node of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AttemptId {
    pub(crate) run: RunId,
    pub(crate) node: NodeId,
    pub(crate) attempt: u32,
}

/// What a running body tells the run core. Events of an attempt that is no longer current are
/// ignored by the core.
#[derive(Debug)]
pub(crate) enum Event {
    /// Graph changes, in order.
    Mutate { at: AttemptId, mutations: Vec<Mutation> },
    /// The body awaits the child it spawned at `seq`; answered with [`Answer::Resolved`].
    Await { at: AttemptId, call: u64, seq: u32 },
    /// A journaled value; answered with [`Answer::Value`].
    Journal { at: AttemptId, call: u64, seq: u32, kind: JournalKind, value: Value },
    /// A signal wait; answered with [`Answer::Value`] (or the attempt is parked).
    Wait { at: AttemptId, call: u64, wait: SignalWait },
    /// A line of the attempt's log.
    Log { at: AttemptId, line: String },
    /// The attempt ended.
    Finished { at: AttemptId, result: Result<Value, Error> },
}

/// The core's answer to one call of a body.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// The awaited child's output or error.
    Resolved(Result<Value, Error>),
    /// A journaled or signalled value.
    Value(Value),
}

/// Where executors send events.
pub(crate) type Events = mpsc::UnboundedSender<Event>;

/// One attempt to start.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) at: AttemptId,
    pub(crate) task: &'static TaskDescriptor,
    pub(crate) input: Value,
    /// The node's policy: its task's, with what its call chose over it
    /// (`salt::command(…).queue("gpu").cores(2)`).
    pub(crate) policy: crate::registry::Policy,
}

/// Starts, answers and stops attempts. Calls never block: the work happens on tasks the
/// executor spawns, which report through the [`Events`] channel it was made with.
pub(crate) trait Executor: Send {
    /// Starts an attempt.
    fn start(&mut self, launch: Launch);
    /// Answers call `call` of a running attempt (dropped if the attempt is gone).
    fn answer(&mut self, at: AttemptId, call: u64, answer: Answer);
    /// Stops an attempt: the body is cancelled, its processes killed. A `Finished` event may
    /// still arrive for it; the core ignores it.
    fn stop(&mut self, at: AttemptId);
    /// The attempt reported `Finished`: forget it.
    fn ended(&mut self, at: AttemptId);
    /// Stops everything (at the end of a run).
    fn shutdown(&mut self) {}
}

/// The error of an attempt that ran past its timeout.
pub(crate) fn timeout_error(timeout: std::time::Duration) -> Error {
    Error::new(ErrorKind::Timeout, format!("attempt timed out after {timeout:?} and was killed"))
}
