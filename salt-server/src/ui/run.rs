//! The run page: header, controls, the live as-of-now graph, the nodes (filtered by state and
//! name pattern), and the actions its controls post.

use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use salt_runtime::model::{NodeState, RunId, RunSnapshot, RunState};
use salt_runtime::ops;
use salt_runtime::render::{GraphView, state_color};
use salt_runtime::store::Queued;

use super::{
    CSRF, Catalog, UiError, UiResult, badge, blocking, enc, esc, form, html_page, live, parse_run, pattern, see_other,
    shown, took, when,
};
use crate::layout::{self, BoxKind, Collapse};
use crate::state::AppState;

/// Nodes listed per page under the graph.
const NODES_PER_PAGE: usize = 50;

/// What a run page shows: which group is expanded, how its node list is filtered.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct View {
    /// The expanded group's key.
    expand: Option<String>,
    /// The page of the expanded group.
    page: Option<usize>,
    /// The node list's state filter.
    nstate: Option<String>,
    /// The node list's name pattern.
    nname: Option<String>,
    /// The node list's page.
    npage: Option<usize>,
    /// A message to show once (after an action).
    notice: Option<String>,
    /// The fingerprint of the parts the page shows (for its live stream).
    since: Option<String>,
    /// Draw superseded nodes too.
    all: Option<bool>,
}

impl View {
    fn query(&self) -> String {
        let mut q = Vec::new();
        if let Some(e) = &self.expand {
            q.push(format!("expand={}", enc(e)));
            q.push(format!("page={}", self.page.unwrap_or(0)));
        }
        for (k, v) in [("nstate", &self.nstate), ("nname", &self.nname)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.push(format!("{k}={}", enc(v)));
            }
        }
        if let Some(p) = self.npage.filter(|p| *p > 0) {
            q.push(format!("npage={p}"));
        }
        if self.all == Some(true) {
            q.push("all=true".into());
        }
        q.join("&")
    }
}

/// The graph of a run as it is now, with wildcards where the catalog says a task may spawn;
/// with its superseded nodes when `all`.
pub(super) fn graph_view(catalog: &Catalog, snapshot: &RunSnapshot, all: bool) -> GraphView {
    let root = snapshot.nodes.first().map(|n| n.task.clone()).unwrap_or_default();
    let workflow = snapshot.run.workflow.clone();
    let may_spawn = |task: &str| task == root || catalog.0.may_spawn(&workflow, task);
    if all { GraphView::of_run_all(snapshot, &may_spawn) } else { GraphView::of_run(snapshot, &may_spawn) }
}

fn graph_svg_of(graph: &GraphView, run: RunId, view: &View) -> (String, layout::Scene) {
    let collapse = Collapse { expand: view.expand.clone(), page: view.page.unwrap_or(0) };
    let links = move |kind: &BoxKind| match kind {
        BoxKind::Node { id, .. } => Some(format!("/runs/{run}/nodes/{id}")),
        BoxKind::Group { key, others, next_page, .. } => {
            let page = if *others { *next_page } else { 0 };
            Some(format!("/runs/{run}?expand={}&page={page}#graph", enc(key)))
        }
        _ => None,
    };
    layout::svg(graph, &collapse, &links)
}

fn header(s: &RunSnapshot) -> String {
    let r = &s.run;
    let mut h = format!(
        r#"<h1>Run {id} <small>{wf}</small> {badge}</h1><dl class="facts"><dt>Created</dt><dd>{created}</dd><dt>Started</dt><dd>{started}</dd><dt>Finished</dt><dd>{finished}</dd><dt>Duration</dt><dd>{dur}</dd><dt>Executor</dt><dd>{exec}</dd><dt>Nodes</dt><dd>{nodes}</dd></dl>"#,
        id = r.id,
        wf = esc(&r.workflow),
        badge = badge(r.state.as_str()),
        created = when(r.created_at),
        started = r.started_at.map(when).unwrap_or_default(),
        finished = r.finished_at.map(when).unwrap_or_default(),
        dur = took(r.started_at, r.finished_at),
        exec = esc(&r.executor),
        nodes = s.nodes.iter().filter(|n| n.state != NodeState::Superseded).count(),
    );
    h.push_str(&format!(r#"<details><summary>Input</summary><pre>{}</pre></details>"#, shown(&r.input, 2000)));
    if let Some(out) = &r.output {
        h.push_str(&format!(
            r#"<details open><summary>Output</summary><pre id="run-output">{}</pre></details>"#,
            shown(out, 2000)
        ));
    }
    if let Some(e) = &r.error {
        h.push_str(&format!(
            r#"<p class="error" role="alert"><b>{}</b>: {}</p>"#,
            esc(e.kind().as_str()),
            esc(e.message())
        ));
    }
    h
}

fn controls(state: &AppState, s: &RunSnapshot, act: bool) -> String {
    let r = &s.run;
    if !act {
        return r#"<p class="note">Your token may only look: sign in as an operator to act on this run.</p>"#.into();
    }
    let id = r.id;
    let paused = r.state == RunState::Paused || state.store.control(id).map(|c| c.paused).unwrap_or(false);
    let mut c = String::from(r#"<div class="buttons">"#);
    let button = |action: &str, label: &str, class: &str| {
        format!(
            r#"<form method="post" action="/runs/{id}/{action}">{CSRF}<button class="{class}" name="go" value="1">{label}</button></form>"#
        )
    };
    if !r.state.is_terminal() {
        c.push_str(&button("cancel", "Cancel run", "danger"));
        if paused {
            c.push_str(&button("resume", "Resume", ""));
        } else {
            c.push_str(&button("pause", "Pause", ""));
        }
    }
    if matches!(r.state, RunState::Failed | RunState::Cancelled | RunState::Interrupted | RunState::Terminated) {
        c.push_str(&button("recover", "Recover", ""));
    }
    c.push_str("</div>");
    if r.state.is_terminal() || r.state == RunState::Interrupted {
        c.push_str(&format!(
            r#"<div class="buttons"><form method="post" action="/runs/{id}/rerun">{CSRF}<label>Rerun from node <input name="node" size="10" placeholder="id or task" required></label><button>Rerun</button></form><form method="post" action="/runs/{id}/run-one">{CSRF}<label>Run one node <input name="node" size="10" placeholder="id or task" required></label><button>Run</button></form></div>"#
        ));
    }
    for w in s.waits.iter().filter(|w| w.name != salt_runtime::context::SLEEP_SIGNAL) {
        let deadline = w.deadline.map(|d| format!(" (until {} UTC)", when(d))).unwrap_or_default();
        c.push_str(&format!(
            r#"<form class="signal" method="post" action="/runs/{id}/signal/{name_q}" data-signal="{name}">{CSRF}<h3>Node {node} waits for signal <code>{name}</code>{deadline}</h3>{fields}<button class="primary">Send <code>{name}</code></button></form>"#,
            name_q = esc(&enc(&w.name)),
            name = esc(&w.name),
            node = w.node,
            deadline = esc(&deadline),
            fields = form::fields(&w.schema, None),
        ));
    }
    c
}

fn legend() -> String {
    let mut l = String::from(r#"<ul class="legend">"#);
    for s in NodeState::ALL.iter().filter(|s| **s != NodeState::Superseded) {
        // A swatch drawn, not styled: the page's policy allows no inline style.
        l.push_str(&format!(
            r##"<li><svg class="swatch" width="12" height="12" aria-hidden="true"><rect x="0.5" y="0.5" width="11" height="11" rx="3" fill="{}" stroke="#555"/></svg>{}</li>"##,
            state_color(*s),
            s.as_str()
        ));
    }
    l.push_str(r#"<li><i class="dashed"></i>wildcard / guaranteed</li></ul>"#);
    l
}

fn graph_part(catalog: &Catalog, s: &RunSnapshot, view: &View) -> String {
    let run = s.run.id;
    let graph = graph_view(catalog, s, view.all == Some(true));
    let (svg, scene) = graph_svg_of(&graph, run, view);
    let mut g = legend();
    if scene.grouped > 0 || view.expand.is_some() {
        g.push_str(&format!(
            r#"<p class="note">{} nodes are drawn in groups; click a group to expand it page by page. {}</p>"#,
            scene.grouped,
            if view.expand.is_some() {
                format!(r#"<a href="/runs/{run}#graph">Collapse all</a>"#)
            } else {
                String::new()
            }
        ));
    }
    if s.nodes.iter().any(|n| n.state == NodeState::Superseded) {
        let (all, label) = if view.all == Some(true) {
            (None, "Hide superseded nodes")
        } else {
            (Some(true), "Show superseded nodes")
        };
        let v = View { all, notice: None, since: None, ..view.clone() };
        g.push_str(&format!(r#"<p class="note"><a href="/runs/{run}?{}#graph">{label}</a></p>"#, esc(&v.query())));
    }
    g.push_str(&format!(r#"<div class="graph" data-boxes="{}">{svg}</div>"#, scene.boxes.len()));
    if !graph.promises.is_empty() {
        g.push_str(
            "<h3>Promises</h3><table><thead><tr><th>Promise</th><th>Scope</th><th>Declared by</th></tr></thead><tbody>",
        );
        for p in &graph.promises {
            g.push_str(&format!(
                "<tr><td><code>{}</code></td><td>node {}</td><td>node {}</td></tr>",
                esc(&p.promise.to_string()),
                p.scope,
                p.declared_by
            ));
        }
        g.push_str("</tbody></table>");
    }
    g
}

fn nodes_part(s: &RunSnapshot, queued: &[Queued], view: &View, act: bool) -> String {
    let run = s.run.id;
    let re = pattern(view.nname.as_deref());
    let wanted = view.nstate.as_deref().and_then(NodeState::parse);
    let mut out = String::new();
    let re = match re {
        Ok(re) => re,
        Err(e) => {
            out.push_str(&format!(r#"<p class="error" role="alert">{}</p>"#, esc(&e)));
            None
        }
    };
    let matching: Vec<_> = s
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Superseded || wanted == Some(NodeState::Superseded))
        .filter(|n| wanted.is_none_or(|w| n.state == w))
        .filter(|n| {
            re.as_ref().is_none_or(|re| re.is_match(&n.task) || n.label.as_deref().is_some_and(|l| re.is_match(l)))
        })
        .collect();
    let pages = matching.len().div_ceil(NODES_PER_PAGE).max(1);
    let p = view.npage.unwrap_or(0).min(pages - 1);
    out.push_str(&format!(
        r#"<table class="nodes"><caption>{} nodes{}</caption><thead><tr><th>Node</th><th>Task</th><th>State</th><th>Attempts</th><th>Started</th><th>Duration</th><th>Error</th><th></th></tr></thead><tbody>"#,
        matching.len(),
        if pages > 1 { format!(", page {} of {pages}", p + 1) } else { String::new() }
    ));
    for n in matching.iter().skip(p * NODES_PER_PAGE).take(NODES_PER_PAGE) {
        let queued = queued.iter().find(|q| q.node == n.id);
        let error: String = match (&n.error, queued) {
            (Some(e), _) => e.message().chars().take(120).collect(),
            (None, Some(q)) => salt_runtime::render::queued_text(q),
            (None, None) => String::new(),
        };
        let shown_state = if queued.is_some() { "queued" } else { n.state.as_str() };
        let kill = if act && n.state == NodeState::Running && !s.run.state.is_terminal() {
            super::node::kill_button(run, n.id)
        } else {
            String::new()
        };
        out.push_str(&format!(
            r#"<tr data-node="{id}"><td><a href="/runs/{run}/nodes/{id}">{id}</a></td><td>{task}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="err">{}</td><td>{kill}</td></tr>"#,
            badge(shown_state),
            n.attempts,
            n.started_at.map(when).unwrap_or_default(),
            took(n.started_at, n.finished_at),
            esc(&error),
            id = n.id,
            task = esc(n.label.as_deref().unwrap_or(&n.task)),
        ));
    }
    out.push_str("</tbody></table>");
    if pages > 1 {
        out.push_str(r#"<p class="pager">"#);
        for (label, to) in [("Previous", p.checked_sub(1)), ("Next", Some(p + 1).filter(|n| *n < pages))] {
            if let Some(to) = to {
                let v = View { npage: Some(to), notice: None, since: None, all: view.all, ..view.clone() };
                out.push_str(&format!(r#"<a href="/runs/{run}?{}#nodes">{label}</a> "#, esc(&v.query())));
            }
        }
        out.push_str("</p>");
    }
    out
}

fn parts(
    state: &AppState,
    catalog: &Catalog,
    run: RunId,
    view: &View,
    act: bool,
) -> UiResult<(live::Parts, RunSnapshot)> {
    let ops::RunView { snapshot: s, queued } = crate::api::run_view(state, run)?;
    let parts = vec![
        ("run-header".to_string(), header(&s)),
        ("run-controls".to_string(), controls(state, &s, act)),
        ("run-graph".to_string(), graph_part(catalog, &s, view)),
        ("run-nodes".to_string(), nodes_part(&s, &queued, view, act)),
    ];
    Ok((live::Parts { parts, done: s.run.state.is_terminal() }, s))
}

/// `GET /runs/{run}`.
pub(super) async fn page_handler(
    state: AppState,
    catalog: Catalog,
    run: String,
    view: View,
    act: bool,
) -> UiResult<Html<String>> {
    let run = parse_run(&run)?;
    let v = view.clone();
    let (p, s) = blocking(move || parts(&state, &catalog, run, &v, act)).await?;
    let find = |id: &str| p.parts.iter().find(|(i, _)| i == id).map(|(_, h)| h.as_str()).unwrap_or("");
    let notice = view
        .notice
        .as_deref()
        .map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n)))
        .unwrap_or_default();
    let states: String = std::iter::once("")
        .chain(NodeState::ALL.iter().map(|s| s.as_str()))
        .map(|st| {
            let sel = if view.nstate.as_deref() == Some(st) { " selected" } else { "" };
            format!(r#"<option value="{st}"{sel}>{}</option>"#, if st.is_empty() { "any state" } else { st })
        })
        .collect();
    let live_attr = if s.run.state.is_terminal() {
        String::new()
    } else {
        format!(r#" data-live="/runs/{run}/events?{}&amp;since={}""#, esc(&view.query()), live::fingerprint(&p.parts))
    };
    let expand_fields = view
        .expand
        .as_deref()
        .map(|e| {
            format!(
                r#"<input type="hidden" name="expand" value="{}"><input type="hidden" name="page" value="{}">"#,
                esc(e),
                view.page.unwrap_or(0)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<p class="crumbs"><a href="/runs">Runs</a> / run {run} · <a href="/runs/{run}/graph.svg">graph.svg</a></p>{notice}
<div{live_attr}>
<section id="run-header">{h}</section>
<section id="run-controls" class="controls">{c}</section>
<h2 id="graph">Graph</h2><section id="run-graph">{g}</section>
<h2 id="nodes">Nodes</h2>
<form class="filters" method="get" action="/runs/{run}#nodes">{expand_fields}<label>State <select name="nstate">{states}</select></label><label>Task name (regular expression) <input name="nname" value="{nname}"></label><button>Filter</button></form>
<section id="run-nodes">{n}</section>
</div>"#,
        h = find("run-header"),
        c = find("run-controls"),
        g = find("run-graph"),
        n = find("run-nodes"),
        nname = esc(view.nname.as_deref().unwrap_or("")),
    );
    Ok(html_page(&format!("Run {run}"), &body))
}

/// `GET /runs/{run}`.
pub(super) async fn page(
    State(state): State<AppState>,
    Extension(catalog): Extension<Catalog>,
    caller: Option<Extension<crate::auth::Caller>>,
    Path(run): Path<String>,
    Query(view): Query<View>,
) -> UiResult<Html<String>> {
    page_handler(state, catalog, run, view, super::may_act(caller.as_ref())).await
}

/// `GET /runs/{run}/events`: the parts of the run page, as they change, until the run ends.
pub(super) async fn events(
    State(state): State<AppState>,
    Extension(catalog): Extension<Catalog>,
    caller: Option<Extension<crate::auth::Caller>>,
    Path(run): Path<String>,
    Query(view): Query<View>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let since = view.since.clone();
    let act = super::may_act(caller.as_ref());
    Ok(live::stream(since, live::POLL, move || parts(&state, &catalog, run, &view, act).ok().map(|(p, _)| p))
        .into_response())
}

/// `GET /runs/{run}/graph.svg`: the graph alone, as drawn on the page.
pub(super) async fn graph_svg(
    State(state): State<AppState>,
    Extension(catalog): Extension<Catalog>,
    Path(run): Path<String>,
    Query(view): Query<View>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let svg = blocking(move || {
        let s = ops::show(state.store.as_ref(), run)?;
        Ok(graph_svg_of(&graph_view(&catalog, &s, view.all == Some(true)), run, &view).0)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

fn done(run: RunId, notice: &str) -> Response {
    see_other(&format!("/runs/{run}?notice={}", enc(notice)))
}

/// `POST /runs/{run}/cancel`.
pub(super) async fn cancel(State(state): State<AppState>, Path(run): Path<String>) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let outcome = ops::cancel(state.store.as_ref(), run).await?;
    Ok(done(run, &format!("run {run} is {}", outcome.state.as_str())))
}

/// `POST /runs/{run}/pause`.
pub(super) async fn pause(State(state): State<AppState>, Path(run): Path<String>) -> UiResult<Response> {
    let run = parse_run(&run)?;
    blocking(move || Ok(ops::pause(state.store.as_ref(), run)?)).await?;
    Ok(done(run, "paused: no new node starts; running ones finish"))
}

/// `POST /runs/{run}/resume`.
pub(super) async fn resume(State(state): State<AppState>, Path(run): Path<String>) -> UiResult<Response> {
    let run = parse_run(&run)?;
    blocking(move || Ok(ops::resume(state.store.as_ref(), run)?)).await?;
    Ok(done(run, "resumed"))
}

/// `POST /runs/{run}/recover`.
pub(super) async fn recover(State(state): State<AppState>, Path(run): Path<String>) -> UiResult<Response> {
    let run = parse_run(&run)?;
    blocking(move || {
        let s = ops::show(state.store.as_ref(), run)?;
        if s.run.state == RunState::Succeeded {
            return Err(UiError::new(
                StatusCode::CONFLICT,
                format!("run {run} succeeded: there is nothing to recover"),
            ));
        }
        Ok(state.engine.recover(run)?)
    })
    .await?;
    Ok(done(run, "recovering"))
}

/// The node a control form names.
#[derive(Debug, Deserialize)]
pub(super) struct NodeForm {
    node: String,
}

/// `POST /runs/{run}/rerun`.
pub(super) async fn rerun(
    State(state): State<AppState>,
    Path(run): Path<String>,
    Form(f): Form<NodeForm>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let node = blocking(move || {
        let node = ops::resolve_node(&ops::show(state.store.as_ref(), run)?, f.node.trim())?;
        state.engine.rerun_from(run, node)?;
        Ok(node)
    })
    .await?;
    Ok(done(run, &format!("rerunning from node {node}")))
}

/// `POST /runs/{run}/run-one`.
pub(super) async fn run_one(
    State(state): State<AppState>,
    Path(run): Path<String>,
    Form(f): Form<NodeForm>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let node = blocking(move || {
        let node = ops::resolve_node(&ops::show(state.store.as_ref(), run)?, f.node.trim())?;
        state.engine.run_one(run, node)?;
        Ok(node)
    })
    .await?;
    Ok(done(run, &format!("running node {node} alone")))
}

/// `POST /runs/{run}/signal/{name}`: the form's fields, read with the schema the node waits
/// with, sent as the signal's value.
pub(super) async fn signal(
    State(state): State<AppState>,
    Path((run, name)): Path<(String, String)>,
    Form(posted): Form<Vec<(String, String)>>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let outcome = blocking(move || {
        let s = ops::show(state.store.as_ref(), run)?;
        let schema =
            s.waits.iter().find(|w| w.name == name).map(|w| w.schema.clone()).unwrap_or_else(|| serde_json::json!({}));
        let value = form::read(&schema, &posted).map_err(|e| UiError::new(StatusCode::BAD_REQUEST, e))?;
        Ok(ops::signal(state.store.as_ref(), run, &name, &value)?)
    })
    .await?;
    let to = outcome.node.map(|n| format!(" to node {n}")).unwrap_or_default();
    Ok(done(run, &format!("sent `{}`{to}", outcome.signal)))
}
