//! What the server's interfaces (REST API, web UI, scheduler) ask of the part that drives runs.

use serde_json::Value;

use salt_runtime::model::{NodeId, RunId};

/// A registered version of a workflow, as the engine needs it to start a run.
#[derive(Debug, Clone)]
pub struct WorkflowRef {
    /// The workflow's name.
    pub workflow: String,
    /// Its version number (1, 2, …), per workflow.
    pub version: i64,
    /// The sha256 of the binary (lowercase hex), which names it in the registry.
    pub binary: String,
}

/// Starts and restarts runs. Every method records what it did before it returns: a run id
/// returned is a run stored.
pub trait Engine: Send + Sync {
    /// Starts a run of `workflow` with `input` (already validated against its input schema).
    fn start(&self, workflow: &WorkflowRef, input: Value) -> salt_runtime::Result<RunId>;
    /// Resumes an interrupted run: what finished is kept, what was in flight runs again.
    fn recover(&self, run: RunId) -> salt_runtime::Result<()>;
    /// Runs `from` and everything downstream of it again.
    fn rerun_from(&self, run: RunId, from: NodeId) -> salt_runtime::Result<()>;
    /// Runs one node again, alone.
    fn run_one(&self, run: RunId, node: NodeId) -> salt_runtime::Result<()>;
}
