//! The model: runs, nodes, edges, attempts, and their states.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// The id of a run: a positive number, unique in its database.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(i64);

impl RunId {
    /// The run with this number.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// Its number.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// The id of a node within its run; the workflow's root node is [`NodeId::ROOT`], the nodes it
/// spawns count up from 1 in the order they were spawned.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(u64);

impl NodeId {
    /// The workflow's root node, 0.
    pub const ROOT: NodeId = NodeId(0);

    /// The node with this number.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Its position in a run's list of nodes ([`RunSnapshot::nodes`] is in id order).
    pub fn index(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// The node at `index` in the list of a run's nodes.
    pub fn at(index: usize) -> Self {
        Self(index as u64)
    }
}

macro_rules! id_traits {
    ($id:ident, $int:ty) => {
        impl From<$int> for $id {
            fn from(id: $int) -> Self {
                Self(id)
            }
        }

        impl From<$id> for $int {
            fn from(id: $id) -> Self {
                id.0
            }
        }

        impl std::fmt::Display for $id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }

        /// The number alone, as it is shown everywhere.
        impl std::fmt::Debug for $id {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl std::str::FromStr for $id {
            type Err = std::num::ParseIntError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl PartialEq<$int> for $id {
            fn eq(&self, other: &$int) -> bool {
                self.0 == *other
            }
        }
    };
}

id_traits!(RunId, i64);
id_traits!(NodeId, u64);

/// How deeply arrays and objects may nest in a value salt stores: a run's input, a signal, a
/// node's output or argument. Deeper values are refused before anything is stored (JSON
/// readers stop at a fixed depth, and a stored value must always read back).
pub const MAX_DEPTH: usize = 100;

/// Whether arrays and objects nest in `value` more than [`MAX_DEPTH`] levels deep (a scalar
/// is 0 levels, `[1]` one, `[[1]]` two). Uses no recursion, so any value can be checked.
pub fn too_deep(value: &Value) -> bool {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth + 1 > MAX_DEPTH {
            return true;
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    false
}

/// The error for a value that nests deeper than [`MAX_DEPTH`]: `what` names the value.
pub fn depth_message(what: impl std::fmt::Display) -> String {
    format!("{what} nests arrays and objects more than {MAX_DEPTH} levels deep, the most salt stores")
}

/// The state of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Waiting on its upstream nodes, or on the backoff before a retry.
    #[default]
    Pending,
    /// Its upstream succeeded: it starts when a slot is free.
    Ready,
    /// An attempt is running.
    Running,
    /// Its body is parked on children it awaits.
    Waiting,
    /// Done, with an output.
    Succeeded,
    /// Its last attempt failed.
    Failed,
    /// Stopped before it finished.
    Cancelled,
    /// Never ran: a node it depends on failed.
    Skipped,
    /// No longer part of the run: its parent ran again (`rerun --from`) and made a different
    /// call at its place, or no call at all. Kept in the history, never counted as current.
    Superseded,
}

impl NodeState {
    /// Whether the node is done, one way or another.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Skipped | Self::Superseded)
    }

    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::Superseded => "superseded",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "ready" => Self::Ready,
            "running" => Self::Running,
            "waiting" => Self::Waiting,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "skipped" => Self::Skipped,
            "superseded" => Self::Superseded,
            _ => return None,
        })
    }

    /// Every state, in display order.
    pub const ALL: [NodeState; 9] = [
        Self::Pending,
        Self::Ready,
        Self::Running,
        Self::Waiting,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::Skipped,
        Self::Superseded,
    ];
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, not started.
    Queued,
    /// An orchestrator is running it.
    Running,
    /// No new node starts until it is resumed.
    Paused,
    /// Every node succeeded.
    Succeeded,
    /// A node failed.
    Failed,
    /// Stopped by a user.
    Cancelled,
    /// A promise was broken.
    Terminated,
    /// Marked running, but its orchestrator is gone: `recover` resumes it.
    Interrupted,
}

impl RunState {
    /// Whether the run is over.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled | Self::Terminated)
    }

    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Terminated => "terminated",
            Self::Interrupted => "interrupted",
        }
    }

    /// Parses a stored state name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "terminated" => Self::Terminated,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }
}

/// Why one node runs after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// The downstream node takes the upstream node's output as an argument.
    Data,
    /// Added explicitly: order only.
    Control,
    /// The parent spawned the downstream node after it had observed (awaited) the upstream
    /// node's result: order only, added by the runtime.
    After,
}

impl EdgeKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Control => "control",
            Self::After => "after",
        }
    }
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Its id.
    pub id: RunId,
    /// The workflow it runs.
    pub workflow: String,
    /// Its state.
    pub state: RunState,
    /// The workflow's input.
    pub input: Value,
    /// The workflow's output, once it succeeded.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<Error>,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
    /// When it started (ms since the epoch).
    pub started_at: Option<i64>,
    /// When it ended (ms since the epoch).
    pub finished_at: Option<i64>,
    /// The executor it runs on.
    pub executor: String,
    /// Its parallelism limit.
    pub parallelism: u32,
    /// The orchestrator driving it (`host:pid:random`), while its lease is live.
    pub owner: Option<String>,
}

/// A run as listed: what [`RunRecord`] says without its payloads (input, output, error).
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Its id.
    pub id: RunId,
    /// The workflow it runs.
    pub workflow: String,
    /// Its state.
    pub state: RunState,
    /// Why it failed.
    pub error: Option<Error>,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
    /// When it started (ms since the epoch).
    pub started_at: Option<i64>,
    /// When it ended (ms since the epoch).
    pub finished_at: Option<i64>,
    /// The executor it runs on.
    pub executor: String,
    /// Its parallelism limit.
    pub parallelism: u32,
    /// The orchestrator driving it (`host:pid:random`), while its lease is live.
    pub owner: Option<String>,
}

/// A node as stored. Its default is a pending root node of no task, for building records field
/// by field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeRecord {
    /// Its id in the run.
    pub id: NodeId,
    /// The node whose body spawned it (none for the root).
    pub parent: Option<NodeId>,
    /// Its sequence number in the parent's body.
    pub seq: Option<u32>,
    /// The task it runs.
    pub task: String,
    /// Its state.
    pub state: NodeState,
    /// Its literal arguments and the nodes its other arguments come from.
    pub args: Vec<(String, StoredArg)>,
    /// A hash of its task and arguments, to detect a replay that differs.
    pub input_hash: String,
    /// Its output, once it succeeded.
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<Error>,
    /// How many attempts it has had.
    pub attempts: u32,
    /// A label to draw.
    pub label: Option<String>,
    /// A color to draw it with.
    pub color: Option<String>,
    /// A Graphviz shape to draw it as.
    pub shape: Option<String>,
    /// When it was created.
    pub created_at: i64,
    /// When its last attempt started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// What its call changed of its task's policy (retries, timeout, queue, …), if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyOverride>,
}

/// An argument of a node as stored: a value, or the node whose output it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredArg {
    /// A literal value.
    Value(Value),
    /// The output of this node.
    Node(NodeId),
    /// A list of these (each a value or a node), in order: the node takes a JSON array.
    List(Vec<StoredArg>),
}

impl StoredArg {
    /// The nodes this argument takes the outputs of, in order (with repeats).
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            StoredArg::Value(_) => Vec::new(),
            StoredArg::Node(n) => vec![*n],
            StoredArg::List(items) => items.iter().flat_map(StoredArg::nodes).collect(),
        }
    }

    /// The value the node takes for this argument, given the outputs of other nodes (`null`
    /// for a node without one).
    pub fn resolve(&self, output: &dyn Fn(NodeId) -> Option<Value>) -> Value {
        match self {
            StoredArg::Value(v) => v.clone(),
            StoredArg::Node(n) => output(*n).unwrap_or(Value::Null),
            StoredArg::List(items) => Value::Array(items.iter().map(|a| a.resolve(output)).collect()),
        }
    }
}

/// An edge as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRecord {
    /// The upstream node.
    pub from: NodeId,
    /// The downstream node.
    pub to: NodeId,
    /// Data or control.
    pub kind: EdgeKind,
    /// The label a body gave it (`Context::edge_label`), if any: cosmetic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// One attempt of a node.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    /// The node.
    pub node: NodeId,
    /// Its number, from 1.
    pub attempt: u32,
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub state: NodeState,
    /// The executor that ran it.
    pub executor: String,
    /// When it started.
    pub started_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Why it failed.
    pub error: Option<Error>,
}

/// A journaled value.
#[derive(Debug, Clone, Serialize)]
pub struct JournalRecord {
    /// The node whose body made the call.
    pub node: NodeId,
    /// The call's sequence number.
    pub seq: u32,
    /// `random` or `now`.
    pub kind: crate::call::JournalKind,
    /// The recorded value.
    pub value: Value,
}

/// A log line of an attempt.
#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// The node.
    pub node: NodeId,
    /// The attempt.
    pub attempt: u32,
    /// When it was written.
    pub ts: i64,
    /// The line.
    pub line: String,
}

/// Everything stored about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunSnapshot {
    /// The run.
    pub run: RunRecord,
    /// Its nodes, by id.
    pub nodes: Vec<NodeRecord>,
    /// Its edges.
    pub edges: Vec<EdgeRecord>,
    /// Every attempt of every node.
    pub attempts: Vec<AttemptRecord>,
    /// Journaled values.
    pub journal: Vec<JournalRecord>,
    /// The promises declared so far, in order.
    pub promises: Vec<PromiseRecord>,
    /// The signals parked nodes wait for.
    pub waits: Vec<WaitRecord>,
    /// Nodes that did not succeed and whose error their parent's body received (it awaited
    /// them), with the parent's attempt that received it: failures the parent handles or
    /// propagates, not failures of the run.
    pub delivered: Vec<(NodeId, u32)>,
}

/// A promise as stored.
#[derive(Debug, Clone, Serialize)]
pub struct PromiseRecord {
    /// Its number in the run, from 0.
    pub id: u32,
    /// The node whose subtree it covers (0, the root, for the whole run).
    pub scope: NodeId,
    /// The node that declared it.
    pub declared_by: NodeId,
    /// The declaring call's sequence number (registration promises count down from `u32::MAX`).
    pub seq: u32,
    /// Its canonical text.
    pub text: String,
}

/// A parked node's wait for a signal.
#[derive(Debug, Clone, Serialize)]
pub struct WaitRecord {
    /// The node.
    pub node: NodeId,
    /// The `wait_for` call's sequence number.
    pub seq: u32,
    /// The signal's name.
    pub name: String,
    /// The JSON Schema its value must match.
    pub schema: Value,
    /// When it gives up (ms since the epoch).
    pub deadline: Option<i64>,
    /// What it takes then.
    pub default: Option<Value>,
}

/// What other processes asked of a running run.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// `cancel RUN` was called.
    pub cancel_requested: bool,
    /// `pause RUN` was called (and not `resume RUN` since).
    pub paused: bool,
    /// Signals not yet consumed: (id, name, value).
    pub signals: Vec<(i64, String, Value)>,
    /// Requests to cancel one node, not yet taken: (id, node).
    pub cancel_nodes: Vec<(i64, NodeId)>,
}

/// Node ids are stored as SQLite integers (at most `i64::MAX`).
#[cfg(feature = "rusqlite")]
impl rusqlite::ToSql for NodeId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        let id = i64::try_from(self.get()).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(id.into())
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::FromSql for NodeId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        u64::column_result(value).map(NodeId::new)
    }
}

/// Run ids are SQLite row ids.
#[cfg(feature = "rusqlite")]
impl rusqlite::ToSql for RunId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.get().into())
    }
}

#[cfg(feature = "rusqlite")]
impl rusqlite::types::FromSql for RunId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(value).map(RunId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::from(1), |v, _| Value::Array(vec![v]))
    }

    #[test]
    fn depth_counts_arrays_and_objects() {
        assert!(!too_deep(&Value::from(1)));
        assert!(!too_deep(&nested(MAX_DEPTH)));
        assert!(too_deep(&nested(MAX_DEPTH + 1)));
        let mut object = nested(MAX_DEPTH - 1);
        object = serde_json::json!({"wide": [1, 2, 3], "deep": object});
        assert!(!too_deep(&object));
        assert!(too_deep(&serde_json::json!({"a": 1, "b": nested(MAX_DEPTH)})));
    }
}
