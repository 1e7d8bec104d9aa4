//! The calls a running body makes to its run: spawns with their arguments, edges, promises,
//! annotations, signal waits and journaled values, as they travel to the run core.

use serde::Serialize;
use serde_json::Value;

/// One argument of a spawn as it is sent to the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireArg {
    /// A literal value.
    Value(Value),
    /// The output of the sibling node spawned at this sequence number.
    Handle(u32),
    /// A literal value too large for a message (over [`crate::blob::SPILL_BYTES`] of JSON),
    /// stored as a blob by the node process; the orchestrator reads it back into a `Value`.
    Blob(crate::blob::BlobRef),
    /// A list gathered from several arguments, in order: the node takes a JSON array of their
    /// values (a `Vec`, an array or a tuple). Each member is a [`WireArg::Value`] or a
    /// [`WireArg::Handle`]; a list nested in a list, or a blob in a list, is a protocol error.
    List(Vec<WireArg>),
}

/// A spawn request: `(parent, seq)` is the durable key of the child.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SpawnRequest {
    /// The sequence number of this call in the parent's body.
    pub seq: u32,
    /// The task to run.
    pub task: String,
    /// The arguments, by parameter name, in declaration order.
    pub args: Vec<(String, WireArg)>,
    /// The children of this body (by sequence number) whose results the body observed (awaited
    /// successfully) since its previous spawn: the new child runs after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<u32>,
    /// What this call changes of the task's policy (a command step's `.retries(2)`, say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyOverride>,
}

/// Where a promise applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromiseScope {
    /// The node that declares it and everything it spawns, transitively.
    Subtree,
    /// The whole run.
    Run,
}

/// Cosmetic attributes of a node, for drawing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Annotation {
    /// A label drawn instead of the task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A fill color (any Graphviz or CSS color, e.g. `"#ffcc00"` or `"gold"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// A Graphviz node shape (`box`, `ellipse`, `diamond`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
}

impl Annotation {
    /// An annotation that sets the label.
    pub fn label(label: impl Into<String>) -> Self {
        Self { label: Some(label.into()), ..Self::default() }
    }

    /// Sets the color.
    pub fn color(mut self, color: impl Into<String>) -> Self {
        self.color = Some(color.into());
        self
    }

    /// Sets the shape.
    pub fn shape(mut self, shape: impl Into<String>) -> Self {
        self.shape = Some(shape.into());
        self
    }
}

/// A change a running body makes to its run's graph. Mutations are buffered by the body's
/// [`Context`] and sent together when the body next yields (an `.await` that does not complete
/// at once) or returns, so the mutations made between two yields apply as one.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Mutation {
    /// Spawn a child node.
    Spawn(SpawnRequest),
    /// A control edge between two children of this node (by their sequence numbers).
    Edge {
        /// The upstream child.
        from: u32,
        /// The downstream child, which must not have started.
        to: u32,
    },
    /// A promise over this node's subtree or the whole run.
    Promise {
        /// The call's sequence number.
        seq: u32,
        /// The promise's text.
        text: String,
        /// Where it applies.
        scope: PromiseScope,
    },
    /// Cosmetic attributes of this node (`child: None`) or of a child.
    Annotate {
        /// The child's sequence number, or none for this node.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<u32>,
        /// What to set.
        annotation: Annotation,
    },
    /// A label for the edge between two children of this node (by their sequence numbers).
    EdgeLabel {
        /// The upstream child.
        from: u32,
        /// The downstream child.
        to: u32,
        /// The label.
        label: String,
    },
}

/// The reserved signal name of [`Context::sleep`]: nobody can send it, the timeout ends it.
pub const SLEEP_SIGNAL: &str = "salt.sleep";

/// What a node waits for with [`Context::wait_for`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SignalWait {
    /// The call's sequence number.
    pub seq: u32,
    /// The signal's name.
    pub name: String,
    /// The JSON Schema a value must match.
    pub schema: Value,
    /// Give up after this many milliseconds...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// ...and take this value instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
}

/// A journaled call whose value is recorded on first run and replayed afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// `ctx.random()`.
    Random,
    /// `ctx.now()`.
    Now,
    /// `ctx.wait_for()`.
    Signal,
}
