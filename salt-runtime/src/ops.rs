//! Operations on runs and on this binary's workflows, as typed functions.
//!
//! Each function takes the store (or a [`Runner`]) and returns a typed, serializable value; none
//! prints, none decides an exit code. The CLI parses its arguments, calls one of these and
//! prints what it returns; a REST API serves the same values as JSON.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    AttemptRecord, LogRecord, NodeId, NodeRecord, NodeState, RunId, RunRecord, RunSnapshot, RunState, RunSummary,
    WaitRecord, now_ms,
};
#[doc(inline)]
pub use crate::registry::{Backoff, Policy};
use crate::registry::{Kind, Registry, TaskDescriptor};
use crate::render::GraphView;
use crate::runner::{Executor, RunOutcome, Runner, default_parallelism};
use crate::store::{self, Durability, Queued, Store};

/// How long [`cancel`] waits for a live orchestrator to stop its run.
pub const CANCEL_WAIT: Duration = Duration::from_secs(30);

fn usage(message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// Opens (and creates, when missing) the SQLite store at `db`.
pub fn open(db: &str) -> Result<Box<dyn Store>> {
    store::open(db).map_err(|e| e.into_error())
}

/// The store at `db` (a path or URL), only to read: never created, migrated or changed.
pub fn open_read_only(db: &str) -> Result<Box<dyn Store>> {
    store::open_read_only(db).map_err(|e| e.into_error())
}

/// The latest `limit` runs, newest first, without their inputs and outputs.
pub fn list_runs(store: &dyn Store, limit: usize) -> Result<Vec<RunSummary>> {
    store.runs(limit).map_err(|e| e.into_error())
}

/// Everything stored about a run: the run, its nodes, edges, attempts, journal, promises and
/// the signals its parked nodes wait for.
pub fn show(store: &dyn Store, run: RunId) -> Result<RunSnapshot> {
    store.load(run).map_err(|e| e.into_error())
}

/// A run as `show RUN --json` and `GET /runs/{id}` give it: everything stored about it, and its
/// attempts that wait on the work queue for a worker (their nodes are stored `running`, and
/// shown `queued`).
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// Everything stored about the run.
    #[serde(flatten)]
    pub snapshot: RunSnapshot,
    /// Its attempts enqueued on a named queue that no worker has taken yet.
    pub queued: Vec<Queued>,
}

/// [`show`], with the attempts that wait on the work queue for a worker.
pub fn show_run(store: &dyn Store, run: RunId) -> Result<RunView> {
    let snapshot = show(store, run)?;
    let queued = queued(store, &snapshot)?;
    Ok(RunView { snapshot, queued })
}

/// The attempts of a run that wait on the work queue for a worker: none once the run has
/// ended or when no one drives it (nothing would take their result).
fn queued(store: &dyn Store, snapshot: &RunSnapshot) -> Result<Vec<Queued>> {
    if !matches!(snapshot.run.state, RunState::Running | RunState::Paused) {
        return Ok(Vec::new());
    }
    let mut queued = store.queued(snapshot.run.id).map_err(|e| e.into_error())?;
    queued.retain(|q| {
        snapshot.nodes.get(q.node.index()).is_some_and(|n| n.state == NodeState::Running && n.attempts == q.attempt)
    });
    Ok(queued)
}

/// A node given by id, or by a task name that names exactly one node of the run (superseded
/// nodes aside).
pub fn resolve_node(snapshot: &RunSnapshot, text: &str) -> Result<NodeId> {
    if let Ok(id) = text.parse::<NodeId>() {
        if id.index() < snapshot.nodes.len() {
            return Ok(id);
        }
        return Err(usage(format!("run {} has no node {id}", snapshot.run.id)));
    }
    let matches: Vec<_> =
        snapshot.nodes.iter().filter(|n| n.task == text && n.state != NodeState::Superseded).collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(usage(format!("run {} has no node of task `{text}`", snapshot.run.id))),
        many => Err(usage(format!(
            "run {} has {} nodes of task `{text}` ({}); give a node id",
            snapshot.run.id,
            many.len(),
            many.iter().map(|n| n.id.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// One node of a run, with what it was given and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The run.
    pub run: RunId,
    /// The node as stored.
    pub node: NodeRecord,
    /// Its input object: its arguments by name, an argument taken from another node's output
    /// being that output (`null` while that node has none).
    pub input: Value,
    /// Its attempts, first to last.
    pub attempts: Vec<AttemptRecord>,
    /// The signals (and sleeps) it is parked on.
    pub waits: Vec<WaitRecord>,
    /// Its attempt waiting on the work queue for a worker, if it is `queued`.
    pub queued: Option<Queued>,
}

/// A node of a run (an id, or a task name that names one node) with its input and attempts.
pub fn show_node(store: &dyn Store, run: RunId, node: &str) -> Result<NodeView> {
    let snapshot = show(store, run)?;
    let id = resolve_node(&snapshot, node)?;
    let queued = queued(store, &snapshot)?.into_iter().find(|q| q.node == id);
    let input = node_input(&snapshot, id);
    let attempts = snapshot.attempts.iter().filter(|a| a.node == id).cloned().collect();
    let waits = snapshot.waits.iter().filter(|w| w.node == id).cloned().collect();
    let node =
        snapshot.nodes.into_iter().nth(id.index()).ok_or_else(|| usage(format!("run {run} has no node {id}")))?;
    Ok(NodeView { run, node, input, attempts, waits, queued })
}

fn node_input(snapshot: &RunSnapshot, id: NodeId) -> Value {
    let Some(node) = snapshot.nodes.get(id.index()) else { return Value::Null };
    let args = node.args.iter().map(|(name, arg)| {
        let value = arg.resolve(&|from| snapshot.nodes.get(from.index()).and_then(|n| n.output.clone()));
        (name.clone(), value)
    });
    Value::Object(args.collect())
}

/// Which value of a run or node: what it was given, or what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The input.
    Input,
    /// The output.
    Output,
}

/// The whole input or output of a run (`node` = `None`) or of one of its nodes, however large.
pub fn value(store: &dyn Store, run: RunId, node: Option<&str>, part: Part) -> Result<Value> {
    let snapshot = show(store, run)?;
    let Some(node) = node else {
        return match part {
            Part::Input => Ok(snapshot.run.input),
            Part::Output => snapshot
                .run
                .output
                .ok_or_else(|| usage(format!("run {run} has no output: it is {}", snapshot.run.state.as_str()))),
        };
    };
    let id = resolve_node(&snapshot, node)?;
    match part {
        Part::Input => Ok(node_input(&snapshot, id)),
        Part::Output => {
            let n = &snapshot.nodes[id.index()];
            n.output
                .clone()
                .ok_or_else(|| usage(format!("node {id} of run {run} has no output: it is {}", n.state.as_str())))
        }
    }
}

/// The log lines of a run or of one node, with the attempts they belong to.
#[derive(Debug, Clone, Serialize)]
pub struct Logs {
    /// The run.
    pub run: RunId,
    /// Every log line, in order.
    pub logs: Vec<LogRecord>,
    /// The attempts of the run (or of the node), first to last.
    pub attempts: Vec<AttemptRecord>,
    /// The node, when the logs are of one node.
    #[serde(skip)]
    pub node: Option<NodeId>,
    #[serde(skip)]
    tasks: Vec<String>,
}

impl Logs {
    /// The task of a node of the run.
    pub fn task(&self, node: NodeId) -> &str {
        self.tasks.get(node.index()).map_or("?", String::as_str)
    }
}

/// The logs of a run, or of one of its nodes (an id, or a task name that names one node).
pub fn logs(store: &dyn Store, run: RunId, node: Option<&str>) -> Result<Logs> {
    let snapshot = show(store, run)?;
    let node = node.map(|n| resolve_node(&snapshot, n)).transpose()?;
    let logs = store.logs(run, node).map_err(|e| e.into_error())?;
    let attempts = snapshot.attempts.into_iter().filter(|a| node.is_none_or(|n| a.node == n)).collect();
    let tasks = snapshot.nodes.into_iter().map(|n| n.task).collect();
    Ok(Logs { run, logs, attempts, node, tasks })
}

/// The state of a run and its log lines (of `node`, if given) stored after line number `after`
/// (0: from the first), each with its number: what `logs --follow` polls.
pub fn logs_after(
    store: &dyn Store,
    run: RunId,
    node: Option<NodeId>,
    after: i64,
) -> Result<(RunState, Vec<(i64, LogRecord)>)> {
    store.logs_after(run, node, after).map_err(|e| e.into_error())
}

/// The graph of a run as it is now: also while it runs, with wildcards where it may grow.
pub fn run_graph(store: &dyn Store, run: RunId) -> Result<GraphView> {
    let registry = Registry::global()?;
    Ok(GraphView::of_run(&show(store, run)?, &crate::plan::may_spawn(registry)))
}

/// The plan of a workflow for `input` (default: its default input).
pub async fn plan(workflow: &str, input: Option<Value>) -> Result<GraphView> {
    let workflow = Runner::workflow(workflow)?;
    let input = Runner::input_for(workflow, input)?;
    crate::plan::plan(workflow, input).await
}

/// `graph TARGET`: the graph of the run `target` names, or the plan of the workflow it names
/// (always a plan with `plan`). Only a run's graph reads the store at `db`.
pub async fn graph(db: &str, target: &str, plan_it: bool, input: Option<Value>) -> Result<GraphView> {
    graph_with(db, target, plan_it, input, false).await
}

/// [`graph`], with the superseded nodes of a run too when `all` (`graph RUN --all`).
pub async fn graph_with(db: &str, target: &str, plan_it: bool, input: Option<Value>, all: bool) -> Result<GraphView> {
    match target.parse::<RunId>() {
        Ok(run) if !plan_it => {
            if input.is_some() {
                return Err(usage("`--input` is for plans: `graph WORKFLOW --plan --input JSON`"));
            }
            let store = open_read_only(db)?;
            if all {
                let registry = Registry::global()?;
                Ok(GraphView::of_run_all(&show(store.as_ref(), run)?, &crate::plan::may_spawn(registry)))
            } else {
                run_graph(store.as_ref(), run)
            }
        }
        _ if all => Err(usage("`--all` is for runs: a plan has no superseded nodes")),
        _ => plan(target, input).await,
    }
}

/// A format to draw a graph in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// The documented JSON form.
    Json,
    /// SVG, drawn by Graphviz `dot` (which must be on the PATH).
    Svg,
}

impl GraphFormat {
    /// Every format, in the order the command line lists them.
    pub const ALL: [GraphFormat; 4] = [GraphFormat::Dot, GraphFormat::Mermaid, GraphFormat::Json, GraphFormat::Svg];

    /// The lowercase name, as the command line takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphFormat::Dot => "dot",
            GraphFormat::Mermaid => "mermaid",
            GraphFormat::Json => "json",
            GraphFormat::Svg => "svg",
        }
    }
}

impl std::fmt::Display for GraphFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for GraphFormat {
    type Err = Error;

    /// Parses `dot`, `mermaid`, `json` or `svg` (any case).
    fn from_str(s: &str) -> Result<Self> {
        GraphFormat::ALL.into_iter().find(|f| f.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                format!("unknown graph format `{s}`; expected one of `dot`, `mermaid`, `json`, `svg`"),
            )
        })
    }
}

/// A drawn graph.
#[derive(Debug, Clone)]
pub enum Drawing {
    /// Dot, Mermaid or SVG text.
    Text(String),
    /// The JSON form.
    Json(Value),
}

/// Draws a graph in `format`; `collapse` draws the task-level view (one node per task).
pub fn draw(view: &GraphView, format: GraphFormat, collapse: bool) -> Result<Drawing> {
    if collapse {
        let tasks = view.collapse();
        return Ok(match format {
            GraphFormat::Dot => Drawing::Text(tasks.to_dot()),
            GraphFormat::Mermaid => Drawing::Text(tasks.to_mermaid()),
            GraphFormat::Json => Drawing::Json(tasks.to_json()),
            GraphFormat::Svg => Drawing::Text(svg(&tasks.to_dot())?),
        });
    }
    Ok(match format {
        GraphFormat::Dot => Drawing::Text(view.to_dot()),
        GraphFormat::Mermaid => Drawing::Text(view.to_mermaid()),
        GraphFormat::Json => Drawing::Json(view.to_json()),
        GraphFormat::Svg => Drawing::Text(svg(&view.to_dot())?),
    })
}

fn svg(dot: &str) -> Result<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child =
        Command::new("dot").arg("-Tsvg").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| {
            usage(format!("`--format svg` needs Graphviz `dot` on the PATH ({e}); use `--format dot` instead"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(dot.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| usage(format!("graphviz failed: {e}")))?;
    if !output.status.success() {
        return Err(usage(format!("graphviz failed: {}", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// How a `cancel` ended.
#[derive(Debug, Clone, Serialize)]
pub struct CancelOutcome {
    /// The run.
    pub run: RunId,
    /// Its state after the cancel: `cancelled`, or whatever it ended as meanwhile.
    pub state: RunState,
}

/// Cancels a run. A live orchestrator is asked (it checks a few times a second) and waited for,
/// at most [`CANCEL_WAIT`]; a run with no orchestrator (`interrupted`, `queued`) is cancelled
/// here: its unfinished nodes, then the run, are recorded `cancelled`. Refused for a run that
/// has ended.
pub async fn cancel(store: &dyn Store, run: RunId) -> Result<CancelOutcome> {
    let snapshot = show(store, run)?;
    let state = snapshot.run.state;
    if state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", state.as_str())));
    }
    if matches!(state, RunState::Interrupted | RunState::Queued) {
        // Hold the run's lease while writing, so that no orchestrator takes it over meanwhile.
        let lease =
            store.acquire_run_lease(run, &store::new_owner(), Duration::from_secs(30)).map_err(|e| e.into_error())?;
        let committed = store.commit(Some(&lease), &salt_core::run::cancel_orphan(&snapshot, now_ms()));
        let _ = store.release_run_lease(&lease);
        committed.map_err(|e| e.into_error())?;
    } else {
        store.request_cancel(run).map_err(|e| e.into_error())?;
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        loop {
            let state = show(store, run)?.run.state;
            if state.is_terminal() || state == RunState::Interrupted {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(usage(format!(
                    "run {run} did not stop within {}s; it is still {}",
                    CANCEL_WAIT.as_secs(),
                    state.as_str()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(CancelOutcome { run, state: show(store, run)?.run.state })
}

/// How a `cancel --node` ended.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCancelOutcome {
    /// The run.
    pub run: RunId,
    /// The node.
    pub node: NodeId,
    /// The node's state after the cancel: `cancelled`, or whatever it ended as meanwhile.
    pub state: NodeState,
}

/// Cancels one node of a running run (`node` is an id or a task name naming one node): its
/// attempt is stopped and recorded `cancelled`, its retry policy does not apply, and whatever
/// depends on it or awaits it sees a cancelled node. The run's orchestrator is asked and waited
/// for, at most [`CANCEL_WAIT`]. Refused for a node that has ended and for a run no
/// orchestrator drives.
pub async fn cancel_node(store: &dyn Store, run: RunId, node: &str) -> Result<NodeCancelOutcome> {
    let snapshot = show(store, run)?;
    let id = resolve_node(&snapshot, node)?;
    let state = snapshot.run.state;
    if state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", state.as_str())));
    }
    if !matches!(state, RunState::Running | RunState::Paused) {
        return Err(usage(format!("run {run} is {}: no orchestrator drives it to cancel a node", state.as_str())));
    }
    let node_state = snapshot.nodes[id.index()].state;
    if node_state.is_terminal() {
        return Err(usage(format!("node {id} of run {run} already ended: {}", node_state.as_str())));
    }
    store.request_node_cancel(run, id).map_err(|e| e.into_error())?;
    let deadline = std::time::Instant::now() + CANCEL_WAIT;
    loop {
        let snapshot = show(store, run)?;
        let node_state = snapshot.nodes[id.index()].state;
        if node_state.is_terminal() || snapshot.run.state.is_terminal() {
            return Ok(NodeCancelOutcome { run, node: id, state: node_state });
        }
        if std::time::Instant::now() > deadline {
            return Err(usage(format!(
                "node {id} of run {run} did not stop within {}s; it is still {}",
                CANCEL_WAIT.as_secs(),
                node_state.as_str()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How a `pause` or `resume` ended.
#[derive(Debug, Clone, Serialize)]
pub struct PauseOutcome {
    /// The run.
    pub run: RunId,
    /// Whether it is now paused.
    pub paused: bool,
}

/// Pauses a run: no new node starts; running ones finish. Refused for a run that has ended.
pub fn pause(store: &dyn Store, run: RunId) -> Result<PauseOutcome> {
    set_paused(store, run, true)
}

/// Resumes a paused run. Refused for a run that has ended.
pub fn resume(store: &dyn Store, run: RunId) -> Result<PauseOutcome> {
    set_paused(store, run, false)
}

fn set_paused(store: &dyn Store, run: RunId, paused: bool) -> Result<PauseOutcome> {
    let state = show(store, run)?.run.state;
    if state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", state.as_str())));
    }
    store.set_paused(run, paused).map_err(|e| e.into_error())?;
    Ok(PauseOutcome { run, paused })
}

/// How a `signal` ended.
#[derive(Debug, Clone, Serialize)]
pub struct SignalOutcome {
    /// The run.
    pub run: RunId,
    /// The signal's name.
    pub signal: String,
    /// The node that waits for it now; `None` when no node waits for it at this moment and it
    /// is kept for the next `wait_for` of its name.
    pub node: Option<NodeId>,
    /// Whether the run's orchestrator is gone, so that the signal waits for `recover` (not
    /// serialized).
    #[serde(skip)]
    pub needs_recover: bool,
}

/// Sends the signal `name` to a run. Signals form a mailbox: each is delivered once, in the
/// order sent, to the next `wait_for` of its name. Accepted while a node of the run waits for
/// `name` (and `value` matches the JSON Schema of the type it waits for; the error names the
/// path of each problem and the expected schema), or when the run has been sent a signal of
/// that name before: a node that waits for it again later, even one replaying right now, gets
/// it. Refused for a run that has ended, a value nested deeper than
/// [`MAX_DEPTH`](crate::model::MAX_DEPTH), and a name the run never waited for.
pub fn signal(store: &dyn Store, run: RunId, name: &str, value: &Value) -> Result<SignalOutcome> {
    if crate::model::too_deep(value) {
        return Err(usage(crate::model::depth_message(format!("the value of signal `{name}`"))));
    }
    let snapshot = show(store, run)?;
    if snapshot.run.state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", snapshot.run.state.as_str())));
    }
    let needs_recover = snapshot.run.state == RunState::Interrupted;
    let waits = snapshot.waits.iter().filter(|w| w.name != crate::context::SLEEP_SIGNAL);
    let Some(wait) = waits.clone().find(|w| w.name == name) else {
        // No wait open now: a name the run was sent before is waited for again (its node may
        // be replaying up to its next wait); keep the signal for it.
        if name != crate::context::SLEEP_SIGNAL && store.has_signal(run, name).map_err(|e| e.into_error())? {
            store.send_signal(run, name, value).map_err(|e| e.into_error())?;
            return Ok(SignalOutcome { run, signal: name.to_string(), node: None, needs_recover });
        }
        let names: Vec<&str> = waits.map(|w| w.name.as_str()).collect();
        return Err(usage(if names.is_empty() {
            format!("run {run} is not waiting for any signal")
        } else {
            format!("run {run} is not waiting for signal `{name}`; it waits for: {}", names.join(", "))
        }));
    };
    let problems = crate::registry::schema_problems(&wait.schema, value)
        .map_err(|e| usage(format!("the schema of signal `{name}` is not valid: {e}")))?;
    if !problems.is_empty() {
        return Err(Error::new(
            ErrorKind::Input,
            format!(
                "signal `{name}` of run {run} does not match the type node {} waits for: {}\nexpected schema: {}",
                wait.node,
                problems.join("; "),
                serde_json::to_string(&wait.schema).unwrap_or_default()
            ),
        ));
    }
    store.send_signal(run, name, value).map_err(|e| e.into_error())?;
    Ok(SignalOutcome { run, signal: name.to_string(), node: Some(wait.node), needs_recover })
}

/// Bytes every salt workflow binary holds (its `manifest` command refers to them): a server
/// looks for them before it runs an uploaded file to read its manifest, so that a file that is
/// not a salt binary is refused without being run. A cheap check against mistakes, not a proof:
/// whoever may register binaries runs code on the server and its workers.
pub const MANIFEST_MARKER: &str = "salt-workflow-binary:manifest-v1";

/// What `manifest` prints: this binary's tasks and workflows.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The binary's file name.
    pub binary: Option<String>,
    /// The version of salt it was built with.
    pub salt_version: String,
    /// Its tasks (not workflows), sorted by name.
    pub tasks: Vec<TaskInfo>,
    /// Its workflows, sorted by name.
    pub workflows: Vec<WorkflowInfo>,
}

/// A task as the manifest describes it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// Its unique name.
    pub name: String,
    /// The module it is defined in.
    pub module: String,
    /// Its doc comment.
    pub doc: String,
    /// The JSON Schema of its input object.
    pub input_schema: Value,
    /// The JSON Schema of its output.
    pub output_schema: Value,
    /// Retries, backoff, timeout, queue, priority.
    pub policy: Policy,
    /// The label it is drawn with, if not its name.
    pub label: Option<String>,
    /// The color it is drawn with.
    pub color: Option<String>,
    /// Promises over the subtree of each of its nodes.
    pub promises: Vec<String>,
    /// Whether its body may spawn nodes.
    pub may_spawn: bool,
}

/// A workflow as the manifest describes it: a task with a default input, a schedule and a plan.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowInfo {
    /// What it has of a task.
    #[serde(flatten)]
    pub task: TaskInfo,
    /// Its default input (`null` when it has none).
    pub default_input: Value,
    /// Its cron schedule.
    pub schedule: Option<String>,
    /// Its plan for its default input; `None` when it has no default input.
    pub plan: Option<ManifestPlan>,
}

/// A workflow's plan in the manifest.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ManifestPlan {
    /// The plan, in the JSON form of `graph`.
    Graph(Value),
    /// Planning failed.
    Failed {
        /// Why.
        error: String,
    },
}

impl TaskInfo {
    fn of(d: &TaskDescriptor) -> Self {
        Self {
            name: d.name.to_string(),
            module: d.module.to_string(),
            doc: d.doc.to_string(),
            input_schema: (d.input_schema)(),
            output_schema: (d.output_schema)(),
            policy: d.policy,
            label: d.label.map(str::to_string),
            color: d.color.map(str::to_string),
            promises: d.promises.iter().map(|p| p.to_string()).collect(),
            may_spawn: d.may_spawn,
        }
    }
}

/// Describes the binary: every task and workflow with its doc, schemas, policy and promises;
/// each workflow with its plan for its default input (planning runs each workflow body in plan
/// mode).
pub async fn manifest(registry: &Registry) -> Manifest {
    let mut workflows = Vec::new();
    for d in registry.workflows() {
        let plan = match Runner::input_for(d, None) {
            Ok(input) => Some(match crate::plan::plan(d, input).await {
                Ok(view) => ManifestPlan::Graph(view.to_json()),
                Err(e) => ManifestPlan::Failed { error: e.message().to_string() },
            }),
            Err(_) => None,
        };
        workflows.push(WorkflowInfo {
            task: TaskInfo::of(d),
            default_input: d.default_input.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null),
            schedule: d.schedule.map(str::to_string),
            plan,
        });
    }
    Manifest {
        binary: std::env::current_exe().ok().and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned())),
        salt_version: env!("CARGO_PKG_VERSION").to_string(),
        tasks: registry.all().filter(|d| d.kind == Kind::Task).map(TaskInfo::of).collect(),
        workflows,
    }
}

/// The workflow `name`, or the binary's only workflow when no name is given.
pub(crate) fn workflow(registry: &Registry, name: Option<&str>) -> Result<&'static TaskDescriptor> {
    if let Some(name) = name {
        return Runner::workflow(name);
    }
    let all: Vec<_> = registry.workflows().collect();
    match all.as_slice() {
        [one] => Ok(one),
        [] => Err(usage("this binary has no `#[workflow]`")),
        many => Err(usage(format!(
            "this binary has {} workflows; name one: {}",
            many.len(),
            many.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Where and how wide a command drives a run; what is not given is, for a run taken over, what
/// it had, and otherwise the defaults (inline, one node per core).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSettings {
    /// Where attempts run.
    pub executor: Option<Executor>,
    /// How many nodes run at once.
    pub parallelism: Option<usize>,
    /// How many processes the `pool` executor keeps warm.
    pub pool_size: Option<usize>,
    /// How many CPU cores the nodes that ask for some share (default: the machine's).
    pub cores: Option<u32>,
    /// How much memory, in MiB, the nodes that ask for some share (default: the machine's).
    pub memory_mb: Option<u64>,
    /// How hard each commit is made to last.
    pub durability: Durability,
}

impl RunSettings {
    /// A runner on `db` with these settings, filled in from `stored` (a run taken over).
    pub fn runner(&self, db: &str, stored: Option<&RunRecord>) -> Runner {
        let executor =
            self.executor.or_else(|| stored.and_then(|r| r.executor.parse().ok())).unwrap_or(Executor::Inline);
        let parallelism =
            self.parallelism.or_else(|| stored.map(|r| r.parallelism as usize)).unwrap_or_else(default_parallelism);
        let mut runner = Runner::new(db).executor(executor).parallelism(parallelism).durability(self.durability);
        if let Some(n) = self.pool_size {
            runner = runner.pool_size(n);
        }
        if let Some(cores) = self.cores {
            runner = runner.cores(cores);
        }
        if let Some(memory_mb) = self.memory_mb {
            runner = runner.memory_mb(memory_mb);
        }
        runner
    }
}

/// Starts a run of `workflow` (the only one when `None`) with `input` (default: its default
/// input) and drives it to the end. A bad input stores nothing.
pub async fn run(runner: &Runner, workflow: Option<&str>, input: Option<Value>) -> Result<RunOutcome> {
    let workflow = self::workflow(Registry::global()?, workflow)?;
    let input = Runner::input_for(workflow, input)?;
    runner.run(workflow.name, input).await
}

/// Starts a new run of the workflow `run` ran, with the input it had, or with that input
/// patched by `patch`, a JSON merge patch (RFC 7396: an object's members replace the input's,
/// `null` removes one, anything else replaces the whole input), and drives it to the end. The
/// new input is checked like `run`'s: a bad one stores nothing.
pub async fn clone_run(runner: &Runner, run: RunId, patch: Option<&Value>) -> Result<RunOutcome> {
    let stored = show(open_read_only(runner.db())?.as_ref(), run)?.run;
    let mut input = stored.input;
    if let Some(patch) = patch {
        merge_patch(&mut input, patch);
    }
    self::run(runner, Some(&stored.workflow), Some(input)).await
}

/// Applies the JSON merge patch `patch` to `target` (RFC 7396).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(object) = target {
        for (name, value) in members {
            if value.is_null() {
                object.remove(name);
            } else {
                merge_patch(object.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Resumes a failed, cancelled or interrupted run; no succeeded node runs again. A run that
/// succeeded is refused with a pointer to `rerun --from`.
pub async fn recover(runner: &Runner, run: RunId) -> Result<RunOutcome> {
    let snapshot = show(open(runner.db())?.as_ref(), run)?;
    if snapshot.run.state == RunState::Succeeded {
        return Err(usage(format!(
            "run {run} succeeded: there is nothing to recover; `rerun {run} --from NODE` runs a node and \
             everything downstream of it again"
        )));
    }
    runner.recover(run).await
}

/// Runs the node `from` (an id, or a task name that names one node) and everything downstream
/// of it again; nothing upstream runs again.
pub async fn rerun_from(runner: &Runner, run: RunId, from: &str) -> Result<RunOutcome> {
    let node = resolve_node(&show(open(runner.db())?.as_ref(), run)?, from)?;
    runner.rerun_from(run, node).await
}

/// How a `run-one` ended: the node's own end, and the run's state after it.
#[derive(Debug, Clone, Serialize)]
pub struct RunOneOutcome {
    /// The run, as after any command that drives it.
    #[serde(flatten)]
    pub outcome: RunOutcome,
    /// The node that ran.
    pub node: NodeId,
    /// Its task.
    pub task: String,
    /// Its state: `succeeded` or `failed` (or `cancelled`).
    pub node_state: NodeState,
    /// Its output, when it succeeded.
    pub node_output: Option<Value>,
    /// Why it did not succeed.
    pub node_error: Option<Error>,
}

/// Runs exactly one node again (an id, or a task name that names one node). Refused, with
/// nothing run, when a node it depends on has not succeeded.
pub async fn run_one(runner: &Runner, run: RunId, node: &str) -> Result<RunOneOutcome> {
    let store = open(runner.db())?;
    let node = resolve_node(&show(store.as_ref(), run)?, node)?;
    let outcome = runner.run_one(run, node).await?;
    let after = show(store.as_ref(), run)?;
    let record =
        after.nodes.into_iter().nth(node.index()).ok_or_else(|| usage(format!("run {run} has no node {node}")))?;
    Ok(RunOneOutcome {
        outcome,
        node,
        task: record.task,
        node_state: record.state,
        node_output: record.output,
        node_error: record.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        use serde_json::json;
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!([1, 2]), json!({"a": "b", "c": null}), json!({"a": "b"})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (target, patch, expected) in cases {
            let mut patched = target.clone();
            merge_patch(&mut patched, &patch);
            assert_eq!(patched, expected, "{target} patched with {patch}");
        }
    }

    #[test]
    fn cancelling_a_run_no_orchestrator_drives_records_it_here() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("salt.db").display().to_string()).unwrap();
        let input = serde_json::json!({});
        let node = |id: NodeId, state: NodeState| NodeRecord {
            id,
            parent: id.get().checked_sub(1).map(NodeId::new),
            seq: None,
            task: "t".into(),
            state,
            args: Vec::new(),
            ..Default::default()
        };
        let root = node(NodeId::ROOT, NodeState::Waiting);
        let run = store
            .create_run(crate::store::NewRun {
                workflow: "w",
                input: &input,
                executor: "inline",
                parallelism: 1,
                root: &root,
                lease: None,
            })
            .unwrap();
        store
            .commit(
                None,
                &[crate::store::Write::InsertNode { run, node: Box::new(node(NodeId::new(1), NodeState::Succeeded)) }],
            )
            .unwrap();
        let outcome = futures::executor::block_on(cancel(store.as_ref(), run)).unwrap();
        assert_eq!(outcome.state, RunState::Cancelled);
        let snapshot = show(store.as_ref(), run).unwrap();
        let states: Vec<NodeState> = snapshot.nodes.iter().map(|n| n.state).collect();
        assert_eq!(states, [NodeState::Cancelled, NodeState::Succeeded]);
        assert_eq!(snapshot.run.error.unwrap().message(), "cancelled with `cancel`");
        let again = futures::executor::block_on(cancel(store.as_ref(), run)).unwrap_err();
        assert_eq!(again.to_string(), format!("run {run} already ended: cancelled"));
    }
}
