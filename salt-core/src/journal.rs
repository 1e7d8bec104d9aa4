//! The journal: every change to a run, written before it is acted on.

use serde_json::Value;

use crate::call::JournalKind;
use crate::error::Error;
use crate::model::*;

/// One change to the journal.
#[derive(Debug, Clone)]
pub enum Write {
    /// The run is driven by the orchestrator that commits this (and holds its lease).
    RunStarted {
        /// The run.
        run: RunId,
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
        error: Option<Error>,
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
    /// A re-running node's body made a different call at `from_seq` than the journal holds
    /// (`rerun --from`): the journaled values and waits of its calls from there on are forgotten.
    ForgetCalls {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The first call forgotten.
        from_seq: u32,
    },
    /// A promise no longer holds: the node or the call that declared it was superseded.
    DropPromise {
        /// The run.
        run: RunId,
        /// The promise's number in the run.
        id: u32,
    },
    /// A node was reset to pending, forgetting its output (rerun, recover).
    NodeReset {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
    },
    /// A node's failure was given to its parent's body, which awaited it: the parent owns it.
    Delivered {
        /// The run.
        run: RunId,
        /// The node that did not succeed.
        node: NodeId,
        /// The parent's attempt that received the error.
        attempt: u32,
    },
    /// An attempt of a node started.
    AttemptStarted {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The attempt number.
        attempt: u32,
        /// What runs it: an executor (`inline`, `process`, `pool`) or a queue (`queue:NAME`).
        executor: std::borrow::Cow<'static, str>,
        /// When.
        at: i64,
    },
    /// An attempt ended. Its queue entry, if it has one, is closed in the same transaction: an
    /// entry still ready or claimed is cancelled (no worker starts it, a late result is
    /// refused), and a reported result counts as taken.
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
        error: Option<Error>,
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
        error: Option<Error>,
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
        annotation: crate::call::Annotation,
    },
    /// The label of an edge (cosmetic; nothing if there is no such edge).
    EdgeLabel {
        /// The run.
        run: RunId,
        /// The upstream node.
        from: NodeId,
        /// The downstream node.
        to: NodeId,
        /// The label.
        label: String,
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
    /// A request to cancel one node was taken.
    NodeCancelConsumed {
        /// The request's id.
        id: i64,
    },
    /// A log line of an attempt.
    Log {
        /// The run.
        run: RunId,
        /// The line.
        record: LogRecord,
    },
    /// An attempt of a node is ready to be claimed from the durable queue by any worker.
    Enqueue {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The attempt.
        attempt: u32,
        /// The queue.
        queue: String,
        /// Higher is claimed first.
        priority: i32,
        /// The task whose body runs.
        task: String,
        /// The body's input.
        input: Value,
    },
}
