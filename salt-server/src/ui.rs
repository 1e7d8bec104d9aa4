//! The web UI: server-rendered HTML pages with a little JavaScript, served from assets embedded
//! in the binary (no Node toolchain, nothing fetched from elsewhere).
//!
//! Pages: the runs (filters by state and by a name pattern, pagination, live state counts), a
//! run (its live graph, its nodes, its controls), a node (attempts, timings, logs, input,
//! output), the workflows (versions, schedules, a "start a run" form generated from the input
//! JSON Schema), the workers and queues, and a sign-in page that keeps a token in a cookie.
//! Live parts follow the store over server-sent events. Every text shown is escaped. When
//! tokens exist, a viewer's pages show no action controls (and the server refuses its posts).
//! Every form that posts carries the session's CSRF token, and no page holds an inline script
//! or style: [`crate::csrf`] checks the one and forbids the other.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;

use crate::auth::{Caller, Role};
use crate::engine::WorkflowRef;
use crate::state::AppState;

pub use crate::layout::esc;

/// The hidden field that carries the session's CSRF token: the first thing in every form that
/// posts (the token is filled in on the way out, see [`crate::csrf`]).
const CSRF: &str = crate::csrf::FORM_FIELD;

mod form;
mod live;
mod login;
mod node;
mod run;
mod runs;
mod workers;
mod workflows;

/// A registered version of a workflow, as the workflows page shows it.
#[derive(Debug, Clone)]
pub struct WorkflowVersion {
    /// What starts a run of it.
    pub reference: WorkflowRef,
    /// When it was registered (ms since the epoch).
    pub registered_at: i64,
    /// The name of the token that registered it, if any.
    pub registered_by: Option<String>,
}

/// A workflow's cron schedule, as the workflows page shows it.
#[derive(Debug, Clone)]
pub struct ScheduleInfo {
    /// The cron expression.
    pub cron: String,
    /// Its IANA time zone.
    pub timezone: String,
    /// The next fire times: (in its zone, in UTC), already formatted.
    pub next: Vec<(String, String)>,
}

/// A workflow of the registry, with what the UI shows and needs to start a run of it.
#[derive(Debug, Clone)]
pub struct WorkflowEntry {
    /// Its name.
    pub name: String,
    /// Its doc comment.
    pub doc: String,
    /// Its versions, oldest first; a run starts the last one unless another is chosen.
    pub versions: Vec<WorkflowVersion>,
    /// The JSON Schema of its input (of its latest version).
    pub input_schema: Value,
    /// Its default input (`null` when it has none).
    pub default_input: Value,
    /// Its schedule, if it has one.
    pub schedule: Option<ScheduleInfo>,
    /// Whether its schedule (and event triggers) are paused.
    pub paused: bool,
}

/// What the UI needs of the registry of workflows.
pub trait WorkflowCatalog: Send + Sync {
    /// Every workflow, sorted by name.
    fn workflows(&self) -> Vec<WorkflowEntry>;

    /// The workflow `name`.
    fn workflow(&self, name: &str) -> Option<WorkflowEntry> {
        self.workflows().into_iter().find(|w| w.name == name)
    }

    /// Whether nodes of `task`, in runs of `workflow`, may spawn (the manifest's `may_spawn`):
    /// where the as-of-now graph draws wildcards. A run's root (the workflow itself) always
    /// may.
    fn may_spawn(&self, workflow: &str, task: &str) -> bool {
        let _ = (workflow, task);
        false
    }

    /// Pauses or resumes the schedule and triggers of `workflow`.
    fn set_paused(&self, workflow: &str, paused: bool) -> Result<(), String> {
        let _ = paused;
        Err(format!("workflow `{workflow}` cannot be paused here"))
    }
}

/// A fixed list of workflows: a catalog for tests and for a server without a registry.
#[derive(Debug, Clone, Default)]
pub struct StaticCatalog {
    /// The workflows.
    pub workflows: Vec<WorkflowEntry>,
    /// The tasks that may spawn, by name (any workflow).
    pub spawning: Vec<String>,
}

impl WorkflowCatalog for StaticCatalog {
    fn workflows(&self) -> Vec<WorkflowEntry> {
        self.workflows.clone()
    }

    fn may_spawn(&self, _workflow: &str, task: &str) -> bool {
        self.spawning.iter().any(|t| t == task)
    }
}

/// The UI's routes, to merge into the server's router (the REST API lives under `/api/v1`; the
/// UI takes `/`, `/runs/…`, `/workflows/…` and `/ui/…` for its assets). `catalog` lists the
/// registry's workflows.
pub fn routes(catalog: Arc<dyn WorkflowCatalog>) -> Router<AppState> {
    Router::new()
        .route("/", get(runs::page))
        .route("/runs", get(runs::page))
        .route("/runs/events", get(runs::events))
        .route("/runs/{run}", get(run::page))
        .route("/runs/{run}/events", get(run::events))
        .route("/runs/{run}/graph.svg", get(run::graph_svg))
        .route("/runs/{run}/cancel", post(run::cancel))
        .route("/runs/{run}/pause", post(run::pause))
        .route("/runs/{run}/resume", post(run::resume))
        .route("/runs/{run}/recover", post(run::recover))
        .route("/runs/{run}/rerun", post(run::rerun))
        .route("/runs/{run}/run-one", post(run::run_one))
        .route("/runs/{run}/signal/{name}", post(run::signal))
        .route("/runs/{run}/nodes/{node}", get(node::page))
        .route("/runs/{run}/nodes/{node}/events", get(node::events))
        .route("/runs/{run}/nodes/{node}/cancel", post(node::cancel))
        .route("/runs/{run}/nodes/{node}/{part}", get(node::value))
        .route("/workflows", get(workflows::list))
        .route("/workflows/{name}", get(workflows::page))
        .route("/workflows/{name}/start", post(workflows::start))
        .route("/workflows/{name}/pause", post(workflows::pause))
        .route("/workflows/{name}/resume", post(workflows::resume))
        .route("/workers", get(workers::page))
        .route("/workers/events", get(workers::events))
        .route("/login", get(login::page).post(login::sign_in))
        .route("/logout", post(login::sign_out))
        .route("/ui/style.css", get(style))
        .route("/ui/app.js", get(script))
        .layer(axum::Extension(Catalog(catalog)))
}

/// The catalog, as the handlers receive it.
#[derive(Clone)]
struct Catalog(Arc<dyn WorkflowCatalog>);

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/app.js");

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], STYLE).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], SCRIPT)
        .into_response()
}

/// A whole page: the navigation, `title`, `body` (already escaped HTML).
fn html_page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} · salt</title>{meta}<link rel="stylesheet" href="/ui/style.css"><script src="/ui/app.js" defer></script></head>
<body><header class="top"><a class="brand" href="/">salt</a><nav><a href="/runs">Runs</a><a href="/workflows">Workflows</a><a href="/workers">Workers</a><a class="sign-in" href="/login">Sign in</a></nav></header>
<main>{body}</main></body></html>"#,
        t = esc(title),
        meta = crate::csrf::META
    ))
}

/// Whether the caller may act through the UI (start, cancel, kill, pause, resume, recover,
/// rerun, run one, signal): anyone while no token exists (no caller), else an operator or an
/// admin. A viewer's pages show no action controls.
fn may_act(caller: Option<&axum::Extension<Caller>>) -> bool {
    caller.is_none_or(|c| matches!(c.role, Role::Operator | Role::Admin))
}

/// An error shown as a page, with its status.
#[derive(Debug)]
struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl From<salt_runtime::Error> for UiError {
    fn from(e: salt_runtime::Error) -> Self {
        use salt_runtime::ErrorKind;
        let message = e.message().to_string();
        let status = match e.kind() {
            ErrorKind::Usage | ErrorKind::Input => {
                if message.contains("has no") || message.contains("no run") || message.contains("not found") {
                    StatusCode::NOT_FOUND
                } else if [
                    "already ended",
                    "is being driven",
                    "is not waiting",
                    "nothing to recover",
                    "no orchestrator drives it",
                ]
                .iter()
                .any(|m| message.contains(m))
                {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::BAD_REQUEST
                }
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self { status, message }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("error");
        let body = format!(
            r#"<h1>{}</h1><p class="error" role="alert">{}</p><p><a href="/" data-back>Back</a></p>"#,
            esc(title),
            esc(&self.message)
        );
        (self.status, html_page(title, &body)).into_response()
    }
}

type UiResult<T> = Result<T, UiError>;

/// Runs blocking store or engine work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> UiResult<T> + Send + 'static) -> UiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(UiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error: {e}"))))
}

/// A time (ms since the epoch) as `YYYY-MM-DD HH:MM:SS` UTC.
fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// How long from `start` to `end` (or to now).
fn took(start: Option<i64>, end: Option<i64>) -> String {
    match start {
        Some(s) => {
            let e = end.unwrap_or_else(salt_runtime::model::now_ms);
            salt_runtime::render::human_ms((e - s).max(0))
        }
        None => String::new(),
    }
}

/// A state as a coloured badge.
fn badge(state: &str) -> String {
    format!(r#"<span class="badge s-{0}" data-state="{0}">{0}</span>"#, esc(state))
}

/// A JSON value for display, cut at `max` characters.
fn shown(value: &Value, max: usize) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.chars().count() <= max {
        esc(&text)
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{}\n… ({} characters in all)", esc(&cut), text.chars().count())
    }
}

/// Percent-encodes `s` for a query string.
pub fn encode_query(s: &str) -> String {
    enc(s)
}

/// The page a browser gets when its token's role may not do what it asked (403): says so
/// plainly, with a way to sign in with another token.
pub fn forbidden(caller: &Caller, method: &axum::http::Method, path: &str) -> Response {
    let body = format!(
        r#"<h1>Forbidden</h1><p class="error" role="alert">Token <b>{}</b> ({}) may not {} {}.</p><p><a href="/login">Sign in with another token</a> · <a href="/" data-back>Back</a></p>"#,
        esc(&caller.name),
        caller.role.as_str(),
        esc(method.as_str()),
        esc(path)
    );
    (StatusCode::FORBIDDEN, html_page("Forbidden", &body)).into_response()
}

/// The page a browser gets when the server refuses a request that may have been forged (403):
/// says why, and how to go on.
pub fn refused(why: &str) -> Response {
    let body = format!(
        r#"<h1>Forbidden</h1><p class="error" role="alert">Refused: {}.</p><p><a href="/" data-back>Back</a></p>"#,
        esc(why)
    );
    (StatusCode::FORBIDDEN, html_page("Forbidden", &body)).into_response()
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A name pattern from a filter: `None` when empty; an error message when not a valid regular
/// expression.
fn pattern(text: Option<&str>) -> Result<Option<regex::Regex>, String> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => regex::RegexBuilder::new(t)
            .size_limit(1 << 20)
            .build()
            .map(Some)
            .map_err(|e| format!("the name pattern is not a valid regular expression: {e}")),
    }
}

/// A run id from a path.
fn parse_run(text: &str) -> UiResult<salt_runtime::model::RunId> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(salt_runtime::model::RunId::new)
        .ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("no run `{text}`")))
}

/// A 303 to `to`.
fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

#[cfg(test)]
mod tests;
