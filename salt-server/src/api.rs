//! The REST API under `/api/v1`, its OpenAPI document at `/api/v1/openapi.json`, `/healthz`
//! and `/metrics`.
//!
//! Every error is a JSON body `{error, message, details}`: `error` a stable code, `message`
//! for people, `details` what names the problem (the fields of an input that does not match
//! its schema). An unknown workflow, run or node is 404; an action a run's state does not
//! allow (resume a finished run) is 409. Nothing is stored for a request that is refused.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use salt_runtime::ErrorKind;
use salt_runtime::model::{NodeId, RunId, RunSnapshot, RunState};
use salt_runtime::ops;

use crate::db;
use crate::engine::WorkflowRef;
use crate::registry;
use crate::state::AppState;

/// The largest JSON body accepted (an input, a signal's value): 1 MiB. Larger is refused with 413.
pub const MAX_JSON_BYTES: usize = 1 << 20;
/// The largest binary `POST /api/v1/binaries` accepts: 1 GiB.
pub const MAX_BINARY_BYTES: usize = 1 << 30;
/// The most runs one page of `GET /api/v1/runs` lists.
pub const MAX_PAGE: usize = 1000;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `not_found`, `invalid_input`, `conflict`, `unauthorized`, `forbidden`, …
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// What names the problem (for an input: each field with its problem); `null` when nothing
    /// more is known.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with `status`, code `error` and `message`, and no details.
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { error: error.into(), message: message.into(), details: Value::Null } }
    }

    /// This error with `details`.
    pub fn details(mut self, details: Value) -> Self {
        self.body.details = details;
        self
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the state of the run does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 500, for a failure of the server itself.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }

    /// An error of the run core or the operations layer: a bad input is 400, a refused action
    /// (a run that ended, a node that is not ready) 409, anything else 500.
    pub fn of(e: salt_runtime::Error) -> Self {
        match e.kind() {
            ErrorKind::Input => Self::bad_request(e.message().to_string()),
            ErrorKind::Usage | ErrorKind::Graph | ErrorKind::Promise => Self::conflict(e.message().to_string()),
            _ => Self::internal(e.message()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<crate::sql::Error> for ApiError {
    fn from(e: crate::sql::Error) -> Self {
        Self::internal(format!("database: {e}"))
    }
}

/// A JSON request body whose rejections (not JSON, wrong shape, too large) are JSON errors.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "invalid_input" };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// axum's `Query`, whose rejection (a parameter that does not parse) is a JSON error (400,
/// `details.field` = `query`).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError::new(rejection.status(), "invalid_input", rejection.body_text())
                .details(json!({"field": "query"}))),
        }
    }
}

/// axum's `Path`, whose rejection (a segment that does not decode) is a JSON error.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status.is_client_error() { "invalid_input" } else { "internal" };
                Err(ApiError::new(status, code, rejection.body_text()).details(json!({"field": "path"})))
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn conn(state: &AppState) -> std::sync::MutexGuard<'_, crate::sql::Conn> {
    state.conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// The run `text` names, which must exist.
fn existing_run(state: &AppState, text: &str) -> ApiResult<RunId> {
    let id: i64 = text.parse().map_err(|_| ApiError::not_found(format!("no run `{text}`: a run id is a number")))?;
    let run = RunId::new(id);
    if !db::run_exists(&conn(state), run)? {
        return Err(ApiError::not_found(format!("no run {id}")));
    }
    Ok(run)
}

/// The node `text` (an id, or a task name that names one node) of `run`, which must exist.
fn existing_node(state: &AppState, run: RunId, text: &str) -> ApiResult<(RunSnapshot, NodeId)> {
    let snapshot = ops::show(state.store.as_ref(), run).map_err(ApiError::of)?;
    let node = ops::resolve_node(&snapshot, text).map_err(|e| ApiError::not_found(e.message().to_string()))?;
    Ok((snapshot, node))
}

/// A run as `show RUN --json` gives it, with the attempts of the runs this server drives that
/// wait in its dispatcher for a worker: `queued` too.
pub(crate) fn run_view(state: &AppState, run: RunId) -> salt_runtime::Result<ops::RunView> {
    let mut view = ops::show_run(state.store.as_ref(), run)?;
    if !view.snapshot.run.state.is_terminal() {
        view.queued.extend(state.dispatcher.queued(run));
    }
    Ok(view)
}

/// A node as `show RUN NODE --json` gives it, `queued` too while it waits in this server's
/// dispatcher for a worker.
pub(crate) fn node_view(state: &AppState, run: RunId, node: &str) -> salt_runtime::Result<ops::NodeView> {
    let mut view = ops::show_node(state.store.as_ref(), run, node)?;
    if view.queued.is_none() && view.node.state == salt_runtime::model::NodeState::Running {
        view.queued = state.dispatcher.queued(run).into_iter().find(|q| q.node == view.node.id);
    }
    Ok(view)
}

// ---- workflows ----

/// The registered workflows.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    /// Each workflow with its latest version, by name.
    pub workflows: Vec<registry::WorkflowSummary>,
}

/// A workflow with its versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowDetail {
    /// Its name.
    pub name: String,
    /// Its latest version.
    pub latest: i64,
    /// The JSON Schema of its input (of its latest version).
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// Its default input (of its latest version), `null` when it has none.
    #[schema(value_type = Object)]
    pub default_input: Value,
    /// Every version, newest first, each with its manifest entry.
    pub versions: Vec<db::WorkflowVersion>,
}

/// Lists the registered workflows.
#[utoipa::path(get, path = "/workflows", tag = "workflows",
    responses((status = 200, body = WorkflowList)))]
async fn list_workflows(State(state): State<AppState>) -> ApiResult<Json<WorkflowList>> {
    Ok(Json(WorkflowList { workflows: registry::workflows(&conn(&state))? }))
}

/// A workflow: its versions and input schema.
#[utoipa::path(get, path = "/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, body = WorkflowDetail), (status = 404, body = ErrorBody)))]
async fn get_workflow(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<WorkflowDetail>> {
    let versions = db::versions(&conn(&state), &name)?;
    let Some(latest) = versions.first() else {
        return Err(ApiError::not_found(format!("no workflow `{name}` is registered")));
    };
    Ok(Json(WorkflowDetail {
        name: name.clone(),
        latest: latest.version,
        input_schema: registry::input_schema(latest).clone(),
        default_input: registry::default_input(latest).cloned().unwrap_or(Value::Null),
        versions,
    }))
}

// ---- runs ----

/// Which runs `GET /runs` lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunQuery {
    /// Only runs in these states, separated by commas (`failed,cancelled`).
    pub state: Option<String>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs created at or after this time: RFC 3339, or ms since the epoch.
    pub since: Option<String>,
    /// Only runs created before this time: RFC 3339, or ms since the epoch.
    pub until: Option<String>,
    /// Only runs with an id below this one: the `next` of the previous page.
    pub before: Option<i64>,
    /// How many, 1 to 1000 (default 50).
    pub limit: Option<usize>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunPage {
    /// The runs: never their inputs, outputs or logs.
    pub runs: Vec<db::RunRow>,
    /// The `before` of the next page; `null` on the last page.
    pub next: Option<i64>,
}

fn parse_time(field: &str, text: &str) -> ApiResult<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    text.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).map_err(|e| {
        ApiError::bad_request(format!("`{field}` is not a time (RFC 3339, or ms since the epoch): {e}"))
            .details(json!({"field": field}))
    })
}

/// Lists runs, newest first, filtered by state, workflow and creation time, a page at a time.
#[utoipa::path(get, path = "/runs", tag = "runs", params(RunQuery),
    responses((status = 200, body = RunPage), (status = 400, body = ErrorBody)))]
async fn list_runs(State(state): State<AppState>, Query(q): Query<RunQuery>) -> ApiResult<Json<RunPage>> {
    let mut states = Vec::new();
    for name in q.state.iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        let parsed = RunState::parse(name).ok_or_else(|| {
            ApiError::bad_request(format!("`{name}` is not a run state")).details(json!({"field": "state"}))
        })?;
        states.push(parsed);
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(
            ApiError::bad_request(format!("`limit` must be 1 to {MAX_PAGE}")).details(json!({"field": "limit"}))
        );
    }
    let filter = db::RunFilter {
        states,
        workflow: q.workflow,
        since: q.since.as_deref().map(|t| parse_time("since", t)).transpose()?,
        until: q.until.as_deref().map(|t| parse_time("until", t)).transpose()?,
        before: q.before,
        limit: limit + 1,
    };
    let mut runs = db::list_runs(&conn(&state), &filter)?;
    let next = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RunPage { runs, next }))
}

/// `POST /runs`: which workflow to run, with what.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The workflow.
    pub workflow: String,
    /// Its input, which must match its input schema (default: its default input).
    #[schema(value_type = Object)]
    pub input: Option<Value>,
    /// The version to run (default: the latest).
    pub version: Option<i64>,
}

/// A run started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StartedRun {
    /// The run.
    pub run: i64,
    /// Its workflow.
    pub workflow: String,
    /// The version it is pinned to.
    pub version: i64,
}

/// Checks `input` (default: the workflow's default input, else `{}`) against the input schema
/// of `workflow` (version `version`, default the latest), starts a run with the engine and
/// records the version it is pinned to. Refused, with nothing stored: an unknown workflow or
/// version (404) and an input that does not match (400, each problem in `details`). What the
/// REST API, the scheduler and event triggers call to start a run.
pub fn start_run(
    state: &AppState,
    workflow: &str,
    version: Option<i64>,
    input: Option<Value>,
) -> ApiResult<StartedRun> {
    let found = {
        let conn = conn(state);
        match version {
            Some(n) => db::version(&conn, workflow, n)?,
            None => db::latest_version(&conn, workflow)?,
        }
    };
    let Some(found) = found else {
        return Err(match version {
            Some(n) if db::latest_version(&conn(state), workflow)?.is_some() => {
                ApiError::not_found(format!("workflow `{workflow}` has no version {n}"))
            }
            _ => ApiError::not_found(format!("no workflow `{workflow}` is registered")),
        });
    };
    let input = input.or_else(|| registry::default_input(&found).cloned()).unwrap_or_else(|| json!({}));
    let problems = input_problems(&found, &input)
        .map_err(|e| ApiError::internal(format!("the input schema of `{workflow}` is not valid: {e}")))?;
    if !problems.is_empty() {
        let summary: Vec<String> = problems.iter().map(|(at, m)| format!("{m} at `{at}`")).collect();
        return Err(ApiError::bad_request(format!(
            "the input does not match the input schema of workflow `{workflow}`: {}",
            summary.join("; ")
        ))
        .details(json!({
            "field": "input",
            "errors": problems.iter().map(|(at, m)| json!({"path": at, "message": m})).collect::<Vec<_>>(),
        })));
    }
    let reference = WorkflowRef { workflow: found.workflow.clone(), version: found.version, binary: found.binary };
    let run = state.engine.start(&reference, input).map_err(ApiError::of)?;
    db::set_run_version(&conn(state), run, &found.workflow, found.version)?;
    Ok(StartedRun { run: run.get(), workflow: found.workflow, version: found.version })
}

/// Each problem of `value` against `schema`: where (a JSON pointer into the input; for a
/// missing property, the property) and what.
fn input_problems(version: &db::WorkflowVersion, value: &Value) -> Result<Vec<(String, String)>, String> {
    // A workflow's schema in a binary (named by its sha256) never changes: its validator is
    // compiled once.
    type Validators =
        std::sync::Mutex<std::collections::HashMap<(String, String), Arc<salt_runtime::registry::InputSchema>>>;
    static VALIDATORS: std::sync::OnceLock<Validators> = std::sync::OnceLock::new();
    let key = (version.binary.clone(), version.workflow.clone());
    let cached = VALIDATORS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
    let validator = match cached {
        Some(v) => v,
        None => {
            let v = Arc::new(salt_runtime::registry::InputSchema::new(registry::input_schema(version))?);
            VALIDATORS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner()).insert(key, v.clone());
            v
        }
    };
    Ok(validator.problems(value).into_iter().map(|p| (p.field, p.message)).collect())
}

/// Starts a run of a workflow, its input checked against the workflow's input schema first.
#[utoipa::path(post, path = "/runs", tag = "runs", request_body = StartRun,
    responses((status = 201, body = StartedRun), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_run(
    State(state): State<AppState>,
    Body(body): Body<StartRun>,
) -> ApiResult<(StatusCode, Json<StartedRun>)> {
    let started = tokio::task::spawn_blocking(move || start_run(&state, &body.workflow, body.version, body.input))
        .await
        .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(started)))
}

/// How to show a run or a node.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// `json` (default), or `text`: what the workflow binary's `show` prints.
    pub format: Option<String>,
    /// With `text`: list superseded nodes too.
    pub all: Option<bool>,
}

fn wants_text(format: Option<&str>) -> ApiResult<bool> {
    match format {
        None | Some("json") => Ok(false),
        Some("text") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("unknown format `{other}`; expected `json` or `text`"))
            .details(json!({"field": "format"}))),
    }
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// A run: its state, input, output, nodes, edges, attempts and what it waits for (what
/// `show RUN --json` prints).
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "The run"), ShowQuery),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    let as_text = wants_text(q.format.as_deref())?;
    let view = run_view(&state, run).map_err(ApiError::of)?;
    if as_text {
        return Ok(text(salt_runtime::render::show_text(&view, q.all.unwrap_or(false), &[])));
    }
    Ok(Json(view).into_response())
}

/// One node of a run, with its input and attempts (what `show RUN NODE --json` prints).
#[utoipa::path(get, path = "/runs/{id}/nodes/{node}", tag = "runs",
    params(("id" = i64, Path, description = "The run"),
           ("node" = String, Path, description = "A node id, or a task name that names one node"), ShowQuery),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody)))]
async fn get_node(
    State(state): State<AppState>,
    Path((id, node)): Path<(String, String)>,
    Query(q): Query<ShowQuery>,
) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    let as_text = wants_text(q.format.as_deref())?;
    let (_, node) = existing_node(&state, run, &node)?;
    let view = node_view(&state, run, &node.to_string()).map_err(ApiError::of)?;
    if as_text {
        return Ok(text(salt_runtime::render::node_text(&view)));
    }
    Ok(Json(view).into_response())
}

/// Which logs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only the logs of this node (an id, or a task name that names one node).
    pub node: Option<String>,
    /// Follow the logs: only the lines after the line with this number (0: from the first),
    /// answered as a [`LogLines`] page, waiting up to `wait` ms for one.
    pub after: Option<i64>,
    /// With `after`: how long to wait, in ms, for a new line while the run goes on (default
    /// 10 000, at most 30 000; 0 answers at once).
    pub wait: Option<u64>,
}

/// The log lines written after a line (`GET /runs/{id}/logs?after=N`): what `salt logs
/// --follow` polls.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLines {
    /// The run's state now: when it is final (or `interrupted`), no more lines come.
    #[schema(value_type = String)]
    pub state: RunState,
    /// The lines, in order.
    pub lines: Vec<LogLine>,
    /// The `after` of the next request: the number of the last line (the `after` asked when
    /// there is none).
    pub next: i64,
}

/// One log line with its number.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// Its number in the store: increasing, not contiguous.
    pub id: i64,
    /// The node that wrote it.
    pub node: u64,
    /// The node's task.
    pub task: String,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// When it was written (ms since the epoch).
    pub ts: i64,
    /// The line.
    pub line: String,
}

/// The longest a request for new log lines waits.
pub const MAX_LOG_WAIT_MS: u64 = 30_000;
/// How often a waiting request for new log lines looks for some.
const LOG_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The log lines of `run` (of `node`) after `after`, waiting up to `wait` for one while the
/// run goes on.
async fn log_lines(
    state: &AppState,
    run: RunId,
    node: Option<NodeId>,
    after: i64,
    wait: std::time::Duration,
) -> ApiResult<LogLines> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let store = state.store.clone();
        let (run_state, lines) =
            blocking(move || ops::logs_after(store.as_ref(), run, node, after).map_err(ApiError::of)).await?;
        let done = run_state.is_terminal() || run_state == RunState::Interrupted;
        if !lines.is_empty() || done || tokio::time::Instant::now() >= deadline {
            let tasks: Vec<String> = if lines.is_empty() {
                Vec::new()
            } else {
                let store = state.store.clone();
                blocking(move || ops::show(store.as_ref(), run).map_err(ApiError::of))
                    .await?
                    .nodes
                    .into_iter()
                    .map(|n| n.task)
                    .collect()
            };
            let next = lines.last().map_or(after, |(id, _)| *id);
            let lines = lines
                .into_iter()
                .map(|(id, l)| LogLine {
                    id,
                    node: l.node.get(),
                    task: tasks.get(l.node.index()).cloned().unwrap_or_default(),
                    attempt: l.attempt,
                    ts: l.ts,
                    line: l.line,
                })
                .collect();
            return Ok(LogLines { state: run_state, lines, next });
        }
        tokio::time::sleep(LOG_POLL.min(deadline - tokio::time::Instant::now())).await;
    }
}

/// The logs of a run or of one of its nodes, with its attempts (what `logs RUN --json` prints).
/// With `after`, only the lines after that line, as a [`LogLines`] page; the request waits up
/// to `wait` ms for a new line while the run goes on (a long poll, what `logs --follow` uses).
#[utoipa::path(get, path = "/runs/{id}/logs", tag = "runs",
    params(("id" = i64, Path, description = "The run"), LogsQuery),
    responses((status = 200, description = "The logs; with `after`, a `LogLines` page", body = Object),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    let node = match &q.node {
        Some(n) => Some(existing_node(&state, run, n)?.1),
        None => None,
    };
    if let Some(after) = q.after {
        let wait = q.wait.unwrap_or(10_000);
        if wait > MAX_LOG_WAIT_MS {
            return Err(ApiError::bad_request(format!("`wait` must be at most {MAX_LOG_WAIT_MS} ms"))
                .details(json!({"field": "wait"})));
        }
        let page = log_lines(&state, run, node, after, std::time::Duration::from_millis(wait)).await?;
        return Ok(Json(page).into_response());
    } else if q.wait.is_some() {
        return Err(ApiError::bad_request("`wait` goes with `after`").details(json!({"field": "wait"})));
    }
    let node = node.map(|n| n.to_string());
    let logs = ops::logs(state.store.as_ref(), run, node.as_deref()).map_err(ApiError::of)?;
    let tasks: Value = ops::show(state.store.as_ref(), run)
        .map(|s| s.nodes.iter().map(|n| (n.id.to_string(), Value::from(n.task.clone()))).collect())
        .unwrap_or_default();
    let mut body = serde_json::to_value(&logs).map_err(ApiError::internal)?;
    body["tasks"] = tasks;
    Ok(Json(body).into_response())
}

/// How to draw a run's graph.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GraphQuery {
    /// `json` (default), `dot`, `mermaid` or `svg` (drawn by Graphviz `dot` on the server).
    pub format: Option<String>,
    /// Draw the task-level view: one node per task.
    pub collapse: Option<bool>,
    /// Draw superseded nodes too.
    pub all: Option<bool>,
    /// Label each data edge with the parameter its value is passed as.
    pub edge_labels: Option<bool>,
}

/// The graph of a run as it is now (what `graph RUN` draws).
#[utoipa::path(get, path = "/runs/{id}/graph", tag = "runs",
    params(("id" = i64, Path, description = "The run"), GraphQuery),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_graph(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    let format: ops::GraphFormat =
        q.format.as_deref().unwrap_or("json").parse().map_err(|e: salt_runtime::Error| {
            ApiError::bad_request(e.message().to_string()).details(json!({"field": "format"}))
        })?;
    let snapshot = ops::show(state.store.as_ref(), run).map_err(ApiError::of)?;
    let spawning = may_spawn(&state, run)?;
    let may_spawn = |task: &str| spawning.iter().any(|t| t == task);
    let mut view = if q.all.unwrap_or(false) {
        salt_runtime::render::GraphView::of_run_all(&snapshot, &may_spawn)
    } else {
        salt_runtime::render::GraphView::of_run(&snapshot, &may_spawn)
    };
    view.arg_labels = q.edge_labels.unwrap_or(false);
    let content_type = match format {
        ops::GraphFormat::Svg => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    };
    match ops::draw(&view, format, q.collapse.unwrap_or(false)).map_err(ApiError::of)? {
        ops::Drawing::Json(value) => Ok(Json(value).into_response()),
        ops::Drawing::Text(body) => Ok(([(header::CONTENT_TYPE, content_type)], body).into_response()),
    }
}

/// The tasks of a run's binary whose bodies may spawn nodes (drawn with wildcards while the
/// run goes on): from the manifest of the version the run is pinned to.
fn may_spawn(state: &AppState, run: RunId) -> ApiResult<Vec<String>> {
    let conn = conn(state);
    let Some(version) = db::run_version(&conn, run)? else { return Ok(Vec::new()) };
    let manifest = db::binary_manifest(&conn, &version.binary)?.unwrap_or(Value::Null);
    let entries =
        ["tasks", "workflows"].into_iter().filter_map(|k| manifest.get(k).and_then(Value::as_array)).flatten();
    Ok(entries
        .filter(|t| t.get("may_spawn").and_then(Value::as_bool) == Some(true))
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
        .collect())
}

// ---- actions ----

fn live_state(state: &AppState, run: RunId) -> ApiResult<RunState> {
    Ok(ops::show(state.store.as_ref(), run).map_err(ApiError::of)?.run.state)
}

fn ended(run: RunId, s: RunState) -> ApiError {
    ApiError::conflict(format!("run {run} already ended: {}", s.as_str()))
}

/// Cancels a run: no new node starts, running attempts are stopped (what `cancel RUN` does).
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "actions",
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    let s = live_state(&state, run)?;
    if s.is_terminal() {
        return Err(ended(run, s));
    }
    let outcome = ops::cancel(state.store.as_ref(), run).await.map_err(ApiError::of)?;
    Ok(Json(outcome).into_response())
}

/// Pauses a run: no new node starts; running ones finish.
#[utoipa::path(post, path = "/runs/{id}/pause", tag = "actions",
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn pause_run(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    Ok(Json(ops::pause(state.store.as_ref(), run).map_err(ApiError::of)?).into_response())
}

/// Resumes a paused run.
#[utoipa::path(post, path = "/runs/{id}/resume", tag = "actions",
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume_run(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    Ok(Json(ops::resume(state.store.as_ref(), run).map_err(ApiError::of)?).into_response())
}

/// An action accepted: the engine has recorded it and drives the run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The run.
    pub run: i64,
    /// What was done: `recover`, `rerun`, `run_one`, `cancel_node`.
    pub action: String,
    /// The node it concerns, if any.
    pub node: Option<u64>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> ApiResult<T> + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

/// Resumes a failed, cancelled or interrupted run; no succeeded node runs again.
#[utoipa::path(post, path = "/runs/{id}/recover", tag = "actions",
    params(("id" = i64, Path, description = "The run")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn recover_run(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let run = existing_run(&state, &id)?;
    match live_state(&state, run)? {
        RunState::Succeeded => {
            return Err(ApiError::conflict(format!(
                "run {run} succeeded: there is nothing to recover; rerun it from a node instead"
            )));
        }
        s @ (RunState::Running | RunState::Paused | RunState::Queued) => {
            return Err(ApiError::conflict(format!("run {run} is {}: it is being driven", s.as_str())));
        }
        _ => {}
    }
    let engine = state.engine.clone();
    blocking(move || engine.recover(run).map_err(ApiError::of)).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { run: run.get(), action: "recover".into(), node: None })))
}

/// `rerun`: the node to start from.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    /// A node id, or a task name that names one node.
    pub from: String,
}

/// Runs a node and everything downstream of it again; nothing upstream runs again.
#[utoipa::path(post, path = "/runs/{id}/rerun", tag = "actions", request_body = RerunBody,
    params(("id" = i64, Path, description = "The run")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rerun_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<RerunBody>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let run = existing_run(&state, &id)?;
    let (_, node) = existing_node(&state, run, &body.from)?;
    not_driven(&state, run)?;
    let engine = state.engine.clone();
    blocking(move || engine.rerun_from(run, node).map_err(ApiError::of)).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { run: run.get(), action: "rerun".into(), node: Some(node.get()) })))
}

fn not_driven(state: &AppState, run: RunId) -> ApiResult<()> {
    match live_state(state, run)? {
        s @ (RunState::Running | RunState::Paused | RunState::Queued) => {
            Err(ApiError::conflict(format!("run {run} is {}: wait for it to end, or cancel it", s.as_str())))
        }
        _ => Ok(()),
    }
}

/// `run_one`: the node to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOneBody {
    /// A node id, or a task name that names one node.
    pub node: String,
}

/// Runs exactly one node again (its upstream must have succeeded).
#[utoipa::path(post, path = "/runs/{id}/run_one", tag = "actions", request_body = RunOneBody,
    params(("id" = i64, Path, description = "The run")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn run_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<RunOneBody>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let run = existing_run(&state, &id)?;
    let (_, node) = existing_node(&state, run, &body.node)?;
    not_driven(&state, run)?;
    let engine = state.engine.clone();
    blocking(move || engine.run_one(run, node).map_err(ApiError::of)).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { run: run.get(), action: "run_one".into(), node: Some(node.get()) })))
}

/// `signal`: its name and value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// The signal's name.
    pub name: String,
    /// Its value, matching the type the node waits for.
    #[schema(value_type = Object)]
    pub value: Value,
}

/// Sends a signal to a run whose node waits for it.
#[utoipa::path(post, path = "/runs/{id}/signal", tag = "actions", request_body = SignalBody,
    params(("id" = i64, Path, description = "The run")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn signal_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<SignalBody>,
) -> ApiResult<Response> {
    let run = existing_run(&state, &id)?;
    let sent = ops::signal(state.store.as_ref(), run, &body.name, &body.value).map_err(|e| match e.kind() {
        ErrorKind::Input => ApiError::bad_request(e.message().to_string()).details(json!({"field": "value"})),
        _ => ApiError::of(e),
    })?;
    Ok(Json(json!({"run": sent.run, "signal": sent.signal, "node": sent.node, "needs_recover": sent.needs_recover}))
        .into_response())
}

/// Kills one running node: its attempt is stopped and recorded as cancelled; the retry policy
/// does not apply. The request is recorded for the part that drives the run.
#[utoipa::path(post, path = "/runs/{id}/nodes/{node}/cancel", tag = "actions",
    params(("id" = i64, Path, description = "The run"),
           ("node" = String, Path, description = "A node id, or a task name that names one node")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_node(
    State(state): State<AppState>,
    Path((id, node)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let run = existing_run(&state, &id)?;
    let (snapshot, node) = existing_node(&state, run, &node)?;
    if snapshot.run.state.is_terminal() {
        return Err(ended(run, snapshot.run.state));
    }
    let record = &snapshot.nodes[node.index()];
    if record.state.is_terminal() {
        return Err(ApiError::conflict(format!("node {node} of run {run} already ended: {}", record.state.as_str())));
    }
    state.store.request_node_cancel(run, node).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { run: run.get(), action: "cancel_node".into(), node: Some(node.get()) })))
}

// ---- binaries and queues ----

/// Registers a workflow binary (the body is its bytes): stored by its sha256, its manifest
/// read, a new version recorded for each workflow that changed. With `check=true` and an empty
/// body, only answers whether the caller may register (204), before a large upload.
#[utoipa::path(post, path = "/binaries", tag = "registry",
    params(RegisterQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = registry::Registered),
              (status = 204, description = "With `check=true`: the caller may register binaries"),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn post_binary(
    State(state): State<AppState>,
    Query(query): Query<RegisterQuery>,
    bytes: Bytes,
) -> ApiResult<Response> {
    if query.check {
        // The token was checked on the way in: whoever gets here may register.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let config = match &query.config {
        Some(text) => Some(crate::config::SaltToml::parse(text).map_err(|e| {
            ApiError::bad_request(format!("salt.toml: {e}")).details(json!({"field": "config", "key": e.key}))
        })?),
        None => None,
    };
    let registered = blocking(move || {
        let unprocessable = |e: registry::RegisterError| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_registered", e.to_string())
        };
        // An uploaded file runs (to print its manifest) only if it looks like a salt binary.
        registry::check_binary(&bytes).map_err(unprocessable)?;
        let staged = registry::stage(&state.data, &bytes).map_err(unprocessable)?;
        registry::record(&conn(&state), &staged, config.as_ref()).map_err(unprocessable)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(registered)).into_response())
}

/// What `POST /binaries` takes beside the binary.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// A salt.toml (its text) with per-workflow settings that override the binary's.
    pub config: Option<String>,
    /// Only check that the caller may register (the body is empty): 204, or 401/403.
    #[serde(default)]
    pub check: bool,
}

/// The bytes of a registered binary (workers fetch it once and check its sha256).
#[utoipa::path(get, path = "/binaries/{sha256}", tag = "registry",
    params(("sha256" = String, Path, description = "The binary's sha256, lowercase hex")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = ErrorBody)))]
async fn get_binary(State(state): State<AppState>, Path(sha): Path<String>) -> ApiResult<Response> {
    if !registry::is_sha256(&sha) {
        return Err(ApiError::not_found(format!("no binary `{sha}`: a binary is named by its sha256")));
    }
    let Some(binary) = db::binary(&conn(&state), &sha)? else {
        return Err(ApiError::not_found(format!("no binary {sha}")));
    };
    let path = binary.path.clone();
    let local = blocking(move || Ok(std::fs::read(&path).ok())).await?;
    // Whether the file is there but changed since it was registered.
    let tampered = local.as_ref().is_some_and(|b| registry::sha256_hex(b) != sha);
    // A binary registered through another server on the same PostgreSQL database is read from
    // the database; either way, what is served is checked against its name first.
    let bytes = match local.filter(|b| registry::sha256_hex(b) == sha) {
        Some(bytes) => bytes,
        None => match db::binary_contents(&conn(&state), &sha)? {
            Some(bytes) if registry::sha256_hex(&bytes) == sha => bytes,
            Some(_) => return Err(ApiError::internal(format!("the stored binary {sha} does not match its hash"))),
            None if tampered => {
                return Err(ApiError::internal(format!(
                    "the stored binary {} does not match its hash {sha}: it changed after it was registered; \
                     register the binary again",
                    binary.path
                )));
            }
            None => return Err(ApiError::internal(format!("{}: the binary is missing", binary.path))),
        },
    };
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), ("x-salt-sha256".parse().unwrap(), sha)],
        bytes,
    )
        .into_response())
}

/// The queues with settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// Each queue, by name, with how many attempts wait in it.
    pub queues: Vec<QueueInfo>,
}

/// A queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueInfo {
    /// Its settings.
    #[serde(flatten)]
    pub queue: db::Queue,
    /// How many attempts are ready in it.
    pub ready: i64,
    /// How many of its places are taken (its attempts running, when it has a concurrency limit).
    pub running: i64,
}

/// Lists the queues: those with settings and those with attempts waiting.
#[utoipa::path(get, path = "/queues", tag = "queues", responses((status = 200, body = QueueList)))]
async fn list_queues(State(state): State<AppState>) -> ApiResult<Json<QueueList>> {
    let conn = conn(&state);
    let mut depths = db::queue_depths(&conn)?;
    // Attempts of the runs this server drives wait in its dispatcher.
    for (name, waiting) in state.dispatcher.waiting() {
        match depths.iter_mut().find(|(n, _)| *n == name) {
            Some(d) => d.1 += waiting as i64,
            None => depths.push((name, waiting as i64)),
        }
    }
    let taken = db::places_taken(&conn)?;
    let running = |name: &str| taken.iter().find(|(n, _)| n == name).map_or(0, |t| t.1);
    let mut queues: Vec<QueueInfo> = db::queues(&conn)?
        .into_iter()
        .map(|q| QueueInfo {
            ready: depths.iter().find(|(n, _)| *n == q.name).map_or(0, |d| d.1),
            running: running(&q.name),
            queue: q,
        })
        .collect();
    for (name, ready) in depths {
        if !queues.iter().any(|q| q.queue.name == name) {
            queues.push(QueueInfo { queue: db::queue(&conn, &name)?, ready, running: running(&name) });
        }
    }
    queues.sort_by(|a, b| a.queue.name.cmp(&b.queue.name));
    Ok(Json(QueueList { queues }))
}

/// `PUT /queues/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Whether workers get attempts from it.
    pub active: bool,
    /// The names of the tokens that may take its attempts; anyone when empty.
    #[serde(default)]
    pub private_to: Vec<String>,
    /// At most this many of its attempts run at once, across every worker and server (at least
    /// 1); no limit when absent or null.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// Sets a queue's settings: active or not, private to named tokens or not, how many of its
/// attempts may run at once. Every server on the database applies them within a second.
#[utoipa::path(put, path = "/queues/{name}", tag = "queues", request_body = QueueSettings,
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, body = db::Queue), (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_queue(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(body): Body<QueueSettings>,
) -> ApiResult<Json<db::Queue>> {
    if let Err(message) = crate::config::check_name("queue", &name) {
        return Err(ApiError::bad_request(message).details(json!({"field": "name"})));
    }
    if body.concurrency == Some(0) {
        return Err(ApiError::bad_request(
            "`concurrency` must be at least 1 (to stop a queue, make it inactive: \"active\": false)",
        ));
    }
    let queue = db::Queue { name, active: body.active, private_to: body.private_to, concurrency: body.concurrency };
    db::put_queue(&conn(&state), &queue)?;
    state.dispatcher.set_active(&queue.name, queue.active);
    state.dispatcher.set_private(&queue.name, queue.private_to.clone());
    Ok(Json(queue))
}

// ---- health, metrics, the document ----

/// The workers connected to this server.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    /// Each worker: its name, queues, slots, attempts running, whether it drains.
    #[schema(value_type = Vec<Object>)]
    pub workers: Vec<salt_runtime::remote::WorkerInfo>,
}

/// The workers connected now, with their queues and how busy they are.
#[utoipa::path(get, path = "/workers", tag = "workers", responses((status = 200, body = WorkerList)))]
async fn list_workers(State(state): State<AppState>) -> Json<WorkerList> {
    Json(WorkerList { workers: state.dispatcher.workers() })
}

/// Whether the server is up and its database answers: `{"status": "ok"}`. Needs no token.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object), (status = 500, body = ErrorBody)))]
async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    conn(&state).query_row("SELECT 1", (), |r| r.get::<i64>(0))?;
    Ok(Json(json!({"status": "ok"})))
}

/// Prometheus text metrics: runs by state, attempts waiting by queue, registered workflows.
pub fn metrics_text(conn: &crate::sql::Conn) -> crate::sql::Result<String> {
    let mut out = String::new();
    out.push_str("# HELP salt_runs Runs by state.\n# TYPE salt_runs gauge\n");
    let counts = db::runs_by_state(conn)?;
    const STATES: [RunState; 8] = [
        RunState::Queued,
        RunState::Running,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
        RunState::Terminated,
        RunState::Interrupted,
    ];
    for s in STATES {
        let n = counts.iter().find(|(name, _)| name == s.as_str()).map_or(0, |c| c.1);
        out.push_str(&format!("salt_runs{{state=\"{}\"}} {n}\n", s.as_str()));
    }
    out.push_str("# HELP salt_queue_depth Attempts ready to run, by queue.\n# TYPE salt_queue_depth gauge\n");
    for (queue, n) in db::queue_depths(conn)? {
        out.push_str(&format!("salt_queue_depth{{queue=\"{}\"}} {n}\n", queue.replace(['"', '\\', '\n'], "_")));
    }
    let workflows = db::latest_versions(conn)?.len();
    out.push_str("# HELP salt_workflows Registered workflows.\n# TYPE salt_workflows gauge\n");
    out.push_str(&format!("salt_workflows {workflows}\n"));
    Ok(out)
}

/// Prometheus text of what the dispatcher did: the claim latency (from an attempt being queued
/// to its being given to a worker) as a histogram, and the attempts finished as a counter (its
/// rate is the attempts per second).
pub fn dispatch_metrics(stats: &salt_runtime::remote::DispatchStats) -> String {
    let mut out = String::from(
        "# HELP salt_claim_latency_seconds Time from an attempt being queued to its being given to a worker.\n\
         # TYPE salt_claim_latency_seconds histogram\n",
    );
    for (bound, n) in &stats.claim_buckets {
        out.push_str(&format!("salt_claim_latency_seconds_bucket{{le=\"{bound}\"}} {n}\n"));
    }
    out.push_str(&format!("salt_claim_latency_seconds_bucket{{le=\"+Inf\"}} {}\n", stats.claimed));
    out.push_str(&format!("salt_claim_latency_seconds_sum {}\n", stats.claim_seconds));
    out.push_str(&format!("salt_claim_latency_seconds_count {}\n", stats.claimed));
    out.push_str(
        "# HELP salt_attempts_finished_total Attempts that ended on a worker (done, failed, stopped or lost).\n\
         # TYPE salt_attempts_finished_total counter\n",
    );
    out.push_str(&format!("salt_attempts_finished_total {}\n", stats.finished));
    out
}

/// Prometheus text metrics: runs by state, attempts by queue, workflows, workers and how
/// fast attempts are claimed.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String), (status = 500, body = ErrorBody)))]
async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let mut body = metrics_text(&conn(&state))?;
    let workers = state.dispatcher.workers();
    body.push_str("# HELP salt_workers Workers connected.\n# TYPE salt_workers gauge\n");
    body.push_str(&format!("salt_workers {}\n", workers.len()));
    body.push_str(
        "# HELP salt_worker_slots_busy Attempts running on connected workers.\n# TYPE salt_worker_slots_busy gauge\n",
    );
    body.push_str(&format!("salt_worker_slots_busy {}\n", workers.iter().map(|w| w.busy).sum::<usize>()));
    body.push_str(
        "# HELP salt_attempts_waiting Attempts waiting for a worker, by queue.\n# TYPE salt_attempts_waiting gauge\n",
    );
    for (queue, n) in state.dispatcher.waiting() {
        body.push_str(&format!("salt_attempts_waiting{{queue=\"{}\"}} {n}\n", queue.replace(['"', '\\', '\n'], "_")));
    }
    body.push_str(&dispatch_metrics(&state.dispatcher.stats()));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

async fn no_route(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", format!("no route for {} {}", req.method(), req.uri().path()))
}

async fn wrong_method(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "salt", description = "The REST API of `salt server`: workflows, runs and their actions, binaries, queues, workers, schedules and events."),
    components(schemas(ErrorBody, LogLines, LogLine)),
    tags(
        (name = "workflows", description = "Registered workflows and their versions"),
        (name = "runs", description = "Runs, their nodes, logs and graphs"),
        (name = "actions", description = "What can be done to a run"),
        (name = "registry", description = "Workflow binaries"),
        (name = "queues", description = "Queues of ready attempts"),
        (name = "workers", description = "Workers and their connections"),
        (name = "schedules", description = "Cron schedules of workflows"),
        (name = "events", description = "Events that start workflows"),
        (name = "health", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

/// The routes of `/api/v1` with their OpenAPI description (paths relative to `/api/v1`).
fn v1() -> OpenApiRouter<AppState> {
    let binaries = OpenApiRouter::new().routes(routes!(post_binary)).layer(DefaultBodyLimit::max(MAX_BINARY_BYTES));
    OpenApiRouter::new()
        .routes(routes!(list_workflows))
        .routes(routes!(get_workflow))
        .routes(routes!(list_runs, post_run))
        .routes(routes!(get_run))
        .routes(routes!(get_node))
        .routes(routes!(get_logs))
        .routes(routes!(get_graph))
        .routes(routes!(cancel_run))
        .routes(routes!(pause_run))
        .routes(routes!(resume_run))
        .routes(routes!(recover_run))
        .routes(routes!(rerun_run))
        .routes(routes!(run_one))
        .routes(routes!(signal_run))
        .routes(routes!(cancel_node))
        .routes(routes!(get_binary))
        .routes(routes!(list_queues))
        .routes(routes!(put_queue))
        .routes(routes!(list_workers))
        .merge(crate::host::worker_routes())
        .merge(crate::schedule::api::v1_routes())
        .merge(crate::dag::v1_routes())
        .merge(binaries)
}

/// This document, OpenAPI 3.1.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(openapi).clone())
}

/// Every route with its description: `/api/v1`, `/healthz`, `/metrics` and the document.
fn described() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1())
        .routes(routes!(openapi_json))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// The REST API's routes, with `/healthz`, `/metrics` and `/api/v1/openapi.json`, not yet
/// given a state nor guarded by tokens ([`crate::server::router`] does both).
pub fn routes() -> axum::Router<AppState> {
    described().split_for_parts().0.layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
}

/// The OpenAPI document of the REST API (what `/api/v1/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    described().split_for_parts().1
}

/// The fallbacks of the whole server: a JSON 404 naming the route, and a JSON 405 for a method
/// a route does not answer. Call it once every route is in `router`.
pub fn fallback(router: Router<AppState>) -> Router<AppState> {
    router.fallback(no_route).method_not_allowed_fallback(wrong_method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_latency_is_a_histogram_and_finished_attempts_a_counter() {
        let stats = salt_runtime::remote::DispatchStats {
            claim_buckets: vec![(0.001, 2), (0.5, 3)],
            claimed: 4,
            claim_seconds: 1.25,
            finished: 3,
        };
        assert_eq!(
            dispatch_metrics(&stats),
            "# HELP salt_claim_latency_seconds Time from an attempt being queued to its being given to a worker.\n\
             # TYPE salt_claim_latency_seconds histogram\n\
             salt_claim_latency_seconds_bucket{le=\"0.001\"} 2\n\
             salt_claim_latency_seconds_bucket{le=\"0.5\"} 3\n\
             salt_claim_latency_seconds_bucket{le=\"+Inf\"} 4\n\
             salt_claim_latency_seconds_sum 1.25\n\
             salt_claim_latency_seconds_count 4\n\
             # HELP salt_attempts_finished_total Attempts that ended on a worker (done, failed, stopped or lost).\n\
             # TYPE salt_attempts_finished_total counter\n\
             salt_attempts_finished_total 3\n"
        );
    }
}
