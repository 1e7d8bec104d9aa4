//! The runs page: newest first, filtered by state, by a workflow name pattern and by when they
//! were created, paginated by cursor, with live counts by state.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use salt_runtime::model::{RunState, RunSummary};

use super::{UiResult, badge, blocking, enc, esc, html_page, live, pattern, took, when};
use crate::state::AppState;

/// How many of the latest runs the page counts and filters; past that counts read `N+`.
pub(super) const SCAN: usize = 10_000;
/// Rows per page.
pub(super) const PER_PAGE: usize = 50;

const STATES: [RunState; 8] = [
    RunState::Queued,
    RunState::Running,
    RunState::Paused,
    RunState::Interrupted,
    RunState::Succeeded,
    RunState::Failed,
    RunState::Cancelled,
    RunState::Terminated,
];

/// The filters of the runs page.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Filter {
    /// A run state.
    state: Option<String>,
    /// A regular expression over the workflow's name.
    name: Option<String>,
    /// Only runs created at or after this time (UTC, `YYYY-MM-DDTHH:MM` or a date).
    from: Option<String>,
    /// Only runs created before this time (UTC, `YYYY-MM-DDTHH:MM` or a date).
    to: Option<String>,
    /// Only runs older than this one (the cursor).
    before: Option<i64>,
    /// The fingerprint of the parts the page shows (for its live stream).
    since: Option<String>,
}

impl Filter {
    fn query(&self, before: Option<i64>) -> String {
        let mut q = Vec::new();
        if let Some(s) = self.state.as_deref().filter(|s| !s.is_empty()) {
            q.push(format!("state={}", enc(s)));
        }
        for (k, v) in [("name", &self.name), ("from", &self.from), ("to", &self.to)] {
            if let Some(v) = v.as_deref().filter(|s| !s.is_empty()) {
                q.push(format!("{k}={}", enc(v)));
            }
        }
        if let Some(b) = before {
            q.push(format!("before={b}"));
        }
        q.join("&")
    }
}

/// A time of the filter (UTC) as ms since the epoch: `None` when empty, an error message when
/// it is not a time.
fn instant(text: Option<&str>, what: &str) -> Result<Option<i64>, String> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let civil = t
        .parse::<jiff::civil::DateTime>()
        .or_else(|_| t.parse::<jiff::civil::Date>().map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .map_err(|_| format!("`{t}` is not a time for `{what}`: use YYYY-MM-DDTHH:MM (UTC) or a date"))?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map(|z| Some(z.timestamp().as_millisecond()))
        .map_err(|e| format!("`{t}` is not a time for `{what}`: {e}"))
}

fn render(state: &AppState, filter: &Filter) -> UiResult<(String, String)> {
    let runs = salt_runtime::ops::list_runs(state.store.as_ref(), SCAN)?;
    let capped = runs.len() >= SCAN;
    let mut problems = Vec::new();
    let re = pattern(filter.name.as_deref()).unwrap_or_else(|e| {
        problems.push(e);
        None
    });
    let mut bound = |text: Option<&str>, what: &str| {
        instant(text, what).unwrap_or_else(|e| {
            problems.push(e);
            None
        })
    };
    let from = bound(filter.from.as_deref(), "from");
    let to = bound(filter.to.as_deref(), "to");
    let named: Vec<&RunSummary> = runs
        .iter()
        .filter(|r| re.as_ref().is_none_or(|re| re.is_match(&r.workflow)))
        .filter(|r| from.is_none_or(|f| r.created_at >= f) && to.is_none_or(|t| r.created_at < t))
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &named {
        *counts.entry(r.state.as_str()).or_default() += 1;
    }
    let wanted = filter.state.as_deref().filter(|s| !s.is_empty()).and_then(RunState::parse);
    let matching: Vec<&&RunSummary> = named.iter().filter(|r| wanted.is_none_or(|s| r.state == s)).collect();
    let plus = if capped { "+" } else { "" };
    let mut c = String::from(r#"<ul class="counts">"#);
    let all_filter = Filter { state: None, ..filter.clone() };
    c.push_str(&format!(
        r#"<li><a href="/runs?{}" data-count="all">all <b>{}{plus}</b></a></li>"#,
        esc(&all_filter.query(None)),
        named.len()
    ));
    for s in STATES {
        let n = counts.get(s.as_str()).copied().unwrap_or(0);
        let f = Filter { state: Some(s.as_str().to_string()), ..filter.clone() };
        let current = if wanted == Some(s) { r#" class="current""# } else { "" };
        c.push_str(&format!(
            r#"<li{current}><a href="/runs?{}" data-count="{s}">{} <b>{n}{plus}</b></a></li>"#,
            esc(&f.query(None)),
            badge(s.as_str()),
            s = s.as_str()
        ));
    }
    c.push_str("</ul>");
    for p in problems {
        c.push_str(&format!(r#"<p class="error" role="alert">{}</p>"#, esc(&p)));
    }

    let rows: Vec<&&RunSummary> =
        matching.iter().filter(|r| filter.before.is_none_or(|b| r.id.get() < b)).take(PER_PAGE + 1).copied().collect();
    let more = rows.len() > PER_PAGE;
    let mut t = String::from(
        r#"<table class="runs"><thead><tr><th>Run</th><th>Workflow</th><th>State</th><th>Created</th><th>Started</th><th>Duration</th><th>Error</th></tr></thead><tbody>"#,
    );
    for r in rows.iter().take(PER_PAGE) {
        let error = r.error.as_ref().map(|e| e.message().to_string()).unwrap_or_default();
        let error: String = error.chars().take(120).collect();
        t.push_str(&format!(
            r#"<tr data-run="{id}"><td><a href="/runs/{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="err">{}</td></tr>"#,
            esc(&r.workflow),
            badge(r.state.as_str()),
            when(r.created_at),
            r.started_at.map(when).unwrap_or_default(),
            took(r.started_at, r.finished_at),
            esc(&error),
            id = r.id
        ));
    }
    if rows.is_empty() {
        t.push_str(r#"<tr><td colspan="7" class="empty">No runs.</td></tr>"#);
    }
    t.push_str("</tbody></table><p class=\"pager\">");
    if filter.before.is_some() {
        t.push_str(&format!(r#"<a href="/runs?{}">Newest</a> "#, esc(&filter.query(None))));
    }
    if more && let Some(last) = rows.get(PER_PAGE - 1) {
        t.push_str(&format!(r#"<a href="/runs?{}" rel="next">Older</a>"#, esc(&filter.query(Some(last.id.get())))));
    }
    t.push_str("</p>");
    Ok((c, t))
}

/// `GET /runs`.
pub(super) async fn page(State(state): State<AppState>, Query(filter): Query<Filter>) -> UiResult<Html<String>> {
    let f = filter.clone();
    let (counts, table) = blocking(move || render(&state, &f)).await?;
    let parts = [("counts".to_string(), counts.clone()), ("table".to_string(), table.clone())];
    let options: String = std::iter::once(String::new())
        .chain(STATES.iter().map(|s| s.as_str().to_string()))
        .map(|s| {
            let selected = if filter.state.as_deref() == Some(s.as_str()) { " selected" } else { "" };
            let label = if s.is_empty() { "any state".to_string() } else { s.clone() };
            format!(r#"<option value="{}"{selected}>{}</option>"#, esc(&s), esc(&label))
        })
        .collect();
    let body = format!(
        r#"<h1>Runs</h1>
<form class="filters" method="get" action="/runs"><label>State <select name="state">{options}</select></label>
<label>Workflow name (regular expression) <input name="name" value="{name}" placeholder="e.g. ^etl"></label>
<label>Created from <input type="datetime-local" name="from" value="{from}"></label><label>to <input type="datetime-local" name="to" value="{to}"></label> <small>(UTC)</small>
<button>Filter</button></form>
<div data-live="/runs/events?{q}&amp;since={since}"><section id="counts">{counts}</section><section id="table">{table}</section></div>"#,
        name = esc(filter.name.as_deref().unwrap_or("")),
        from = esc(filter.from.as_deref().unwrap_or("")),
        to = esc(filter.to.as_deref().unwrap_or("")),
        q = esc(&filter.query(filter.before)),
        since = live::fingerprint(&parts),
    );
    Ok(html_page("Runs", &body))
}

/// `GET /runs/events`: the counts and the table, as they change.
pub(super) async fn events(State(state): State<AppState>, Query(filter): Query<Filter>) -> Response {
    live::stream(filter.since.clone(), live::POLL_LIST, move || {
        let (counts, table) = render(&state, &filter).ok()?;
        Some(live::Parts { parts: vec![("counts".into(), counts), ("table".into(), table)], done: false })
    })
    .into_response()
}
