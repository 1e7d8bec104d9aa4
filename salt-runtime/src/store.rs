//! The store: the durable journal of runs, behind one trait.
//!
//! The orchestrator keeps the live graph in memory and sends the store batches of [`Write`]s,
//! one transaction per batch; every transition is committed before it is acted on. Readers
//! (`runs`, `show`, `graph` from another terminal) load snapshots.

mod sqlite;

use serde_json::Value;

pub use self::sqlite::SqliteStore;
use crate::context::JournalKind;
use crate::error::{ErrorWire, StoreError};
use crate::model::{
    EdgeRecord, LogRecord, NodeId, NodeRecord, NodeState, PromiseRecord, RunControl, RunId, RunSnapshot, RunState,
    RunSummary, WaitRecord,
};

/// One change to the journal.
#[derive(Debug, Clone)]
pub enum Write {
    /// The run is taken by an orchestrator in process `pid`.
    RunStarted {
        /// The run.
        run: RunId,
        /// The orchestrator's process.
        pid: u32,
        /// The executor it runs nodes on.
        executor: &'static str,
        /// Its parallelism limit.
        parallelism: u32,
        /// When.
        at: i64,
    },
    /// The run reached a state; terminal states carry the output or the error.
    RunState {
        /// The run.
        run: RunId,
        /// Its new state.
        state: RunState,
        /// The workflow's output.
        output: Option<Value>,
        /// Why it failed.
        error: Option<ErrorWire>,
        /// When.
        at: i64,
    },
    /// The orchestrator is alive.
    Heartbeat {
        /// The run.
        run: RunId,
        /// When.
        at: i64,
    },
    /// A node was spawned.
    InsertNode {
        /// The run.
        run: RunId,
        /// The node.
        node: Box<NodeRecord>,
    },
    /// An edge was added.
    InsertEdge {
        /// The run.
        run: RunId,
        /// The edge.
        edge: EdgeRecord,
    },
    /// A node changed state without finishing (pending, ready, waiting).
    NodeState {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
    },
    /// A re-running parent gave a node new arguments (`rerun --from`).
    NodeArgs {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// Its new arguments.
        args: Vec<(String, crate::model::StoredArg)>,
        /// Their hash.
        input_hash: String,
    },
    /// A node was reset to pending, forgetting its output (rerun, recover).
    NodeReset {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
    },
    /// An attempt of a node started.
    AttemptStarted {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The attempt number.
        attempt: u32,
        /// The executor running it.
        executor: &'static str,
        /// When.
        at: i64,
    },
    /// An attempt ended.
    AttemptFinished {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The attempt number.
        attempt: u32,
        /// succeeded, failed or cancelled.
        state: NodeState,
        /// Why it failed.
        error: Option<ErrorWire>,
        /// When.
        at: i64,
    },
    /// A node ended: succeeded with an output, or failed, cancelled, skipped.
    NodeFinished {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// Its terminal state.
        state: NodeState,
        /// Its output.
        output: Option<Value>,
        /// Why it failed.
        error: Option<ErrorWire>,
        /// When.
        at: i64,
    },
    /// A journaled value.
    Journal {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The call's sequence number.
        seq: u32,
        /// What was called.
        kind: JournalKind,
        /// The value.
        value: Value,
    },
    /// Cosmetic attributes of a node.
    Annotate {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// What to set (unset fields stay).
        annotation: crate::context::Annotation,
    },
    /// A promise was declared.
    Promise {
        /// The run.
        run: RunId,
        /// The promise.
        record: PromiseRecord,
    },
    /// A node parked, waiting for a signal.
    WaitStarted {
        /// The run.
        run: RunId,
        /// The wait.
        record: WaitRecord,
    },
    /// A parked node got its signal (or gave up).
    WaitEnded {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The `wait_for` call.
        seq: u32,
    },
    /// A signal was consumed by the node that waited for it.
    SignalConsumed {
        /// The signal's id.
        id: i64,
    },
    /// A log line of an attempt.
    Log {
        /// The run.
        run: RunId,
        /// The line.
        record: LogRecord,
    },
}

/// A new run to create.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The workflow.
    pub workflow: &'a str,
    /// Its input.
    pub input: &'a Value,
    /// The executor.
    pub executor: &'a str,
    /// The parallelism limit.
    pub parallelism: u32,
}

/// The durable journal of runs.
pub trait Store: Send {
    /// Creates a run in state `queued` and returns its id.
    fn create_run(&mut self, run: NewRun<'_>) -> Result<RunId, StoreError>;
    /// Applies a batch of writes in one transaction.
    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError>;
    /// Everything stored about a run. A run whose orchestrator is gone reads as `interrupted`.
    fn load(&self, run: RunId) -> Result<RunSnapshot, StoreError>;
    /// The latest runs, newest first, without their inputs and outputs.
    fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError>;
    /// The log lines of a run, or of one of its nodes.
    fn logs(&self, run: RunId, node: Option<NodeId>) -> Result<Vec<LogRecord>, StoreError>;
    /// Asks the orchestrator of a run to cancel it.
    fn request_cancel(&mut self, run: RunId) -> Result<(), StoreError>;
    /// What other processes asked of the run: cancel, pause, signals.
    fn control(&self, run: RunId) -> Result<RunControl, StoreError>;
    /// Pauses (no new node starts) or resumes a run.
    fn set_paused(&mut self, run: RunId, paused: bool) -> Result<(), StoreError>;
    /// Sends a signal to a run.
    fn send_signal(&mut self, run: RunId, name: &str, value: &Value) -> Result<(), StoreError>;
}
