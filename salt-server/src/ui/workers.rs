//! The workers and queues page: the workers connected now (their queues, slots, attempts
//! running, whether they drain), and every queue known (its settings, the attempts waiting in
//! it, the workers serving it), followed live.

use std::collections::BTreeSet;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Response};

use super::{UiResult, blocking, esc, html_page, live, when};
use crate::db;
use crate::state::AppState;

/// The query of a live stream.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Since {
    /// The fingerprint of the parts the page shows.
    since: Option<String>,
}

fn render(state: &AppState) -> UiResult<live::Parts> {
    let workers = state.dispatcher.workers();
    let waiting = state.dispatcher.waiting();
    let (settings, taken) = {
        let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
        (db::queues(&conn).unwrap_or_default(), db::places_taken(&conn).unwrap_or_default())
    };

    let mut w = format!(
        r#"<table class="workers"><caption>{} connected</caption><thead><tr><th>Worker</th><th>Queues</th><th>Slots</th><th>Running</th><th>State</th><th>Connected</th><th>Cores</th><th>Memory</th></tr></thead><tbody>"#,
        workers.len()
    );
    for x in &workers {
        w.push_str(&format!(
            r#"<tr data-worker="{name}"><td>{name} <small>#{id}</small></td><td>{queues}</td><td>{slots}</td><td class="busy">{busy}</td><td>{state}</td><td>{at}</td><td class="cores">{cores}</td><td class="memory">{memory}</td></tr>"#,
            name = esc(&x.name),
            id = x.id,
            queues = esc(&x.queues.join(", ")),
            slots = x.slots,
            busy = x.busy,
            state = if x.draining { "draining" } else { "serving" },
            at = when(x.connected_at),
            cores = x.cores.map_or("not counted".into(), |n| format!("{} of {n} in use", x.cores_used)),
            memory = x.memory_mb.map_or("not counted".into(), |n| format!("{} of {n} MiB in use", x.memory_used_mb)),
        ));
    }
    if workers.is_empty() {
        w.push_str(r#"<tr><td colspan="8" class="empty">No worker is connected.</td></tr>"#);
    }
    w.push_str("</tbody></table>");

    let mut names: BTreeSet<String> = settings.iter().map(|q| q.name.clone()).collect();
    names.extend(waiting.keys().cloned());
    names.extend(workers.iter().flat_map(|x| x.queues.iter().cloned()));
    let mut q = String::from(
        r#"<table class="queues"><thead><tr><th>Queue</th><th>State</th><th>Private to</th><th>Limit</th><th>Waiting</th><th>Workers</th><th>Free slots</th></tr></thead><tbody>"#,
    );
    for name in &names {
        let set = settings.iter().find(|s| &s.name == name);
        let serving: Vec<_> = workers.iter().filter(|x| !x.draining && x.queues.iter().any(|n| n == name)).collect();
        let free: usize = serving.iter().map(|x| x.slots.saturating_sub(x.busy)).sum();
        q.push_str(&format!(
            r#"<tr data-queue="{name}"><td>{name}</td><td>{state}</td><td>{private}</td><td class="limit">{limit}</td><td class="waiting">{waiting}</td><td>{workers}</td><td>{free}</td></tr>"#,
            name = esc(name),
            state = if set.is_none_or(|s| s.active) { "active" } else { "paused" },
            private = esc(&set.map(|s| s.private_to.join(", ")).filter(|p| !p.is_empty()).unwrap_or_else(|| "anyone".into())),
            limit = match set.and_then(|s| s.concurrency) {
                Some(n) => format!("{} of {n} running", taken.iter().find(|t| &t.0 == name).map_or(0, |t| t.1)),
                None => "none".into(),
            },
            waiting = waiting.get(name).copied().unwrap_or(0),
            workers = serving.len(),
        ));
    }
    if names.is_empty() {
        q.push_str(r#"<tr><td colspan="7" class="empty">No queue yet.</td></tr>"#);
    }
    q.push_str("</tbody></table>");
    Ok(live::Parts { parts: vec![("workers".into(), w), ("queues".into(), q)], done: false })
}

/// `GET /workers`.
pub(super) async fn page(State(state): State<AppState>) -> UiResult<Html<String>> {
    let p = blocking(move || render(&state)).await?;
    let find = |id: &str| p.parts.iter().find(|(i, _)| i == id).map(|(_, h)| h.as_str()).unwrap_or("");
    let body = format!(
        r#"<h1>Workers</h1>
<div data-live="/workers/events?since={since}"><section id="workers">{workers}</section>
<h2>Queues</h2><p class="note">Attempts wait in a queue until a worker serving it has a free slot. An admin pauses a queue, makes it private to some worker tokens or limits how many of its attempts run at once across every worker and server with <code>PUT /api/v1/queues/NAME</code>.</p>
<section id="queues">{queues}</section></div>"#,
        since = live::fingerprint(&p.parts),
        workers = find("workers"),
        queues = find("queues"),
    );
    Ok(html_page("Workers", &body))
}

/// `GET /workers/events`: the workers and queues, as they change.
pub(super) async fn events(State(state): State<AppState>, Query(q): Query<Since>) -> Response {
    live::stream(q.since, live::POLL_LIST, move || render(&state).ok()).into_response()
}
