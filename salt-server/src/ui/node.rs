//! The node page: the node's state, timings, attempts, logs (followed while it runs), input
//! and output, each cut at a size with a link to the whole value; and the control that kills
//! the node while it runs.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use salt_runtime::model::{NodeId, NodeState, RunId};
use salt_runtime::ops::{self, Part};

use super::{
    CSRF, UiError, UiResult, badge, blocking, enc, esc, html_page, live, parse_run, see_other, shown, took, when,
};
use crate::auth::Caller;
use crate::state::AppState;

/// How many characters of an input or output the page shows.
const VALUE_MAX: usize = 20_000;
/// How many of the last log lines the page shows.
const LOG_LINES: usize = 1_000;

/// The form that kills node `node` of `run` while it runs.
pub(super) fn kill_button(run: RunId, node: NodeId) -> String {
    format!(
        r#"<form class="kill" method="post" action="/runs/{run}/nodes/{node}/cancel">{CSRF}<button class="danger" name="go" value="1" title="Stop its attempt now; it is recorded cancelled and not retried">Kill</button></form>"#
    )
}

fn parts(state: &AppState, run: RunId, node: &str, act: bool) -> UiResult<live::Parts> {
    let v = crate::api::node_view(state, run, node)?;
    let n = &v.node;
    let id = n.id;
    let run_state = ops::show(state.store.as_ref(), run)?.run.state;
    let mut main = format!(
        r#"<h1>Node {id} <small>{task}</small> {badge}</h1><dl class="facts"><dt>Run</dt><dd><a href="/runs/{run}">{run}</a></dd><dt>Parent</dt><dd>{parent}</dd><dt>Created</dt><dd>{created}</dd><dt>Started</dt><dd>{started}</dd><dt>Finished</dt><dd>{finished}</dd><dt>Duration</dt><dd>{dur}</dd><dt>Attempts</dt><dd>{attempts}</dd></dl>"#,
        task = esc(n.label.as_deref().unwrap_or(&n.task)),
        badge = badge(if v.queued.is_some() { "queued" } else { n.state.as_str() }),
        parent = n.parent.map(|p| format!(r#"<a href="/runs/{run}/nodes/{p}">{p}</a>"#)).unwrap_or_else(|| "—".into()),
        created = when(n.created_at),
        started = n.started_at.map(when).unwrap_or_default(),
        finished = n.finished_at.map(when).unwrap_or_default(),
        dur = took(n.started_at, n.finished_at),
        attempts = n.attempts,
    );
    if let Some(e) = &n.error {
        main.push_str(&format!(
            r#"<p class="error" role="alert"><b>{}</b>: {}</p>"#,
            esc(e.kind().as_str()),
            esc(e.message())
        ));
    }
    if let Some(q) = &v.queued {
        main.push_str(&format!(
            r#"<p class="notice" role="status">Queued: {}. Start one with <code>salt worker --queue {}</code> (for a run started by a workflow binary, <code>BIN worker --queue {}</code>).</p>"#,
            esc(&salt_runtime::render::queued_text(q)),
            esc(&q.queue),
            esc(&q.queue),
        ));
    }
    if act && !n.state.is_terminal() && !run_state.is_terminal() {
        main.push_str(r#"<div class="buttons">"#);
        if n.state == NodeState::Running {
            main.push_str(&kill_button(run, id));
        }
        main.push_str("</div>");
    }
    main.push_str(
        "<h2>Attempts</h2><table class=\"attempts\"><thead><tr><th>#</th><th>State</th><th>Executor</th><th>Started</th><th>Finished</th><th>Duration</th><th>Error</th></tr></thead><tbody>",
    );
    for a in &v.attempts {
        main.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            a.attempt,
            badge(a.state.as_str()),
            esc(&a.executor),
            when(a.started_at),
            a.finished_at.map(when).unwrap_or_default(),
            took(Some(a.started_at), a.finished_at),
            esc(a.error.as_ref().map(|e| e.message()).unwrap_or(""))
        ));
    }
    if v.attempts.is_empty() {
        main.push_str(r#"<tr><td colspan="7" class="empty">No attempt yet.</td></tr>"#);
    }
    main.push_str("</tbody></table>");
    for w in v.waits.iter().filter(|w| w.name != salt_runtime::context::SLEEP_SIGNAL) {
        main.push_str(&format!(
            r#"<p class="notice">Waits for signal <code>{}</code>: <a href="/runs/{run}#run-controls">answer it on the run page</a>.</p>"#,
            esc(&w.name)
        ));
    }
    main.push_str(&format!(
        r#"<h2>Input</h2><pre id="node-input">{}</pre><p><a href="/runs/{run}/nodes/{id}/input.json">input.json</a></p>"#,
        shown(&v.input, VALUE_MAX)
    ));
    match &n.output {
        Some(out) => main.push_str(&format!(
            r#"<h2>Output</h2><pre id="node-output">{}</pre><p><a href="/runs/{run}/nodes/{id}/output.json">output.json</a></p>"#,
            shown(out, VALUE_MAX)
        )),
        None => main.push_str(r#"<h2>Output</h2><p class="empty">None yet.</p>"#),
    }
    let logs = ops::logs(state.store.as_ref(), run, Some(&id.to_string()))?;
    let skip = logs.logs.len().saturating_sub(LOG_LINES);
    let mut l = String::new();
    if skip > 0 {
        l.push_str(&format!(r#"<p class="note">{skip} earlier lines not shown.</p>"#));
    }
    l.push_str(r#"<pre class="logs">"#);
    for line in logs.logs.iter().skip(skip) {
        l.push_str(&format!(r#"<span class="ts">{} #{}</span> {}"#, when(line.ts), line.attempt, esc(&line.line)));
        l.push('\n');
    }
    if logs.logs.is_empty() {
        l.push_str("(no log lines)");
    }
    l.push_str("</pre>");
    Ok(live::Parts {
        parts: vec![("node-main".into(), main), ("node-logs".into(), l)],
        done: run_state.is_terminal() && n.state.is_terminal(),
    })
}

/// The query of a node page: a message to show once (after an action).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Notice {
    notice: Option<String>,
}

/// `GET /runs/{run}/nodes/{node}`.
pub(super) async fn page(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path((run, node)): Path<(String, String)>,
    Query(q): Query<Notice>,
) -> UiResult<Html<String>> {
    let run = parse_run(&run)?;
    let n = node.clone();
    let act = super::may_act(caller.as_ref());
    let p = blocking(move || parts(&state, run, &n, act)).await?;
    let find = |id: &str| p.parts.iter().find(|(i, _)| i == id).map(|(_, h)| h.as_str()).unwrap_or("");
    let live_attr = if p.done {
        String::new()
    } else {
        format!(
            r#" data-live="/runs/{run}/nodes/{}/events?since={}""#,
            esc(&super::enc(&node)),
            live::fingerprint(&p.parts)
        )
    };
    let node_e = esc(&node);
    let notice =
        q.notice.as_deref().map(|n| format!(r#"<p class="notice" role="status">{}</p>"#, esc(n))).unwrap_or_default();
    let buttons = if act {
        format!(
            r#"<div class="buttons"><form method="post" action="/runs/{run}/rerun">{CSRF}<input type="hidden" name="node" value="{node_e}"><button>Rerun from this node</button></form>
<form method="post" action="/runs/{run}/run-one">{CSRF}<input type="hidden" name="node" value="{node_e}"><button>Run this node alone</button></form></div>"#
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<p class="crumbs"><a href="/runs">Runs</a> / <a href="/runs/{run}">run {run}</a> / node {node_e}</p>{notice}
<div{live_attr}><section id="node-main">{main}</section>
{buttons}
<h2>Logs</h2><section id="node-logs">{logs}</section></div>"#,
        main = find("node-main"),
        logs = find("node-logs"),
    );
    Ok(html_page(&format!("Run {run} node {node}"), &body))
}

/// The query of a live stream.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Since {
    /// The fingerprint of the parts the page shows.
    since: Option<String>,
}

/// `GET /runs/{run}/nodes/{node}/events`: the node page's parts as they change.
pub(super) async fn events(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path((run, node)): Path<(String, String)>,
    Query(q): Query<Since>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let act = super::may_act(caller.as_ref());
    Ok(live::stream(q.since, live::POLL, move || parts(&state, run, &node, act).ok()).into_response())
}

/// `POST /runs/{run}/nodes/{node}/cancel`: kills the node: its attempt is stopped and recorded
/// as cancelled, and the retry policy does not apply. Waits (a while) for the part that drives
/// the run to do it, then shows the node.
pub(super) async fn cancel(
    State(state): State<AppState>,
    Path((run, node)): Path<(String, String)>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let outcome = ops::cancel_node(state.store.as_ref(), run, &node).await?;
    let to = format!(
        "/runs/{run}/nodes/{}?notice={}",
        outcome.node,
        enc(&format!("node {} is {}", outcome.node, outcome.state.as_str()))
    );
    Ok(see_other(&to))
}

/// `GET /runs/{run}/nodes/{node}/input.json` (or `output.json`): the whole value.
pub(super) async fn value(
    State(state): State<AppState>,
    Path((run, node, part)): Path<(String, String, String)>,
) -> UiResult<Response> {
    let run = parse_run(&run)?;
    let part = match part.as_str() {
        "input.json" => Part::Input,
        "output.json" => Part::Output,
        _ => return Err(UiError::new(StatusCode::NOT_FOUND, format!("no `{part}`: input.json or output.json"))),
    };
    let value = blocking(move || Ok(ops::value(state.store.as_ref(), run, Some(&node), part)?)).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], serde_json::to_string_pretty(&value).unwrap_or_default())
        .into_response())
}
