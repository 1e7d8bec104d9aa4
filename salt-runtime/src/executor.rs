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

use tokio::sync::mpsc;

pub(crate) use self::inline::Inline;
pub(crate) use self::pool::{Pool, PoolMode};

pub(crate) use salt_core::attempt::{Answer, AttemptId, Event, timeout_error};
pub(crate) use salt_core::run::Launch;

/// Where executors send events.
pub(crate) type Events = mpsc::UnboundedSender<Event>;

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
