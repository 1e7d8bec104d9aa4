//! The workflows page (versions, schedules, paused switch) and a workflow's page with its
//! "start a run" form, generated from its input JSON Schema with its default input filled in.

use axum::Extension;
use axum::Form;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{Html, Response};

use super::{CSRF, Catalog, UiError, UiResult, WorkflowEntry, blocking, enc, esc, form, html_page, see_other, when};

fn schedule_cell(w: &WorkflowEntry) -> String {
    match &w.schedule {
        None => "—".into(),
        Some(s) => {
            let next: String = s
                .next
                .iter()
                .map(|(local, utc)| format!("<li>{} <small>({} UTC)</small></li>", esc(local), esc(utc)))
                .collect();
            format!(r#"<code>{}</code> <small>{}</small><ul class="fires">{next}</ul>"#, esc(&s.cron), esc(&s.timezone))
        }
    }
}

fn pause_button(w: &WorkflowEntry) -> String {
    let (action, label) = if w.paused { ("resume", "Resume") } else { ("pause", "Pause") };
    format!(
        r#"<form method="post" action="/workflows/{}/{action}">{CSRF}<button name="go" value="1">{label}</button></form>"#,
        esc(&enc(&w.name))
    )
}

/// `GET /workflows`.
pub(super) async fn list(
    Extension(catalog): Extension<Catalog>,
    caller: Option<Extension<crate::auth::Caller>>,
) -> UiResult<Html<String>> {
    let act = super::may_act(caller.as_ref());
    let all = blocking(move || Ok(catalog.0.workflows())).await?;
    let mut t = String::from(
        r#"<h1>Workflows</h1><table class="workflows"><thead><tr><th>Workflow</th><th>Versions</th><th>Latest</th><th>Schedule (next fire times)</th><th>State</th><th></th></tr></thead><tbody>"#,
    );
    for w in &all {
        let latest = w
            .versions
            .last()
            .map(|v| {
                format!(
                    "v{} · {} · <code>{}</code>",
                    v.reference.version,
                    when(v.registered_at),
                    esc(short(&v.reference.binary))
                )
            })
            .unwrap_or_default();
        t.push_str(&format!(
            r#"<tr data-workflow="{name}"><td><a href="/workflows/{name_q}">{name}</a><br><small>{doc}</small></td><td>{versions}</td><td>{latest}</td><td>{schedule}</td><td>{state}{pause}</td><td>{start}</td></tr>"#,
            name = esc(&w.name),
            name_q = esc(&enc(&w.name)),
            doc = esc(w.doc.lines().next().unwrap_or("")),
            versions = w.versions.len(),
            schedule = schedule_cell(w),
            state = if w.paused { "paused" } else { "active" },
            pause = if act { pause_button(w) } else { String::new() },
            start = if act {
                format!(r#"<a class="button primary" href="/workflows/{}#start">Start a run</a>"#, esc(&enc(&w.name)))
            } else {
                String::new()
            },
        ));
    }
    if all.is_empty() {
        t.push_str(r#"<tr><td colspan="6" class="empty">No workflow is registered: <code>salt register BINARY</code> adds one.</td></tr>"#);
    }
    t.push_str("</tbody></table>");
    Ok(html_page("Workflows", &t))
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

fn workflow_page(w: &WorkflowEntry, input: Option<&serde_json::Value>, error: Option<&str>, act: bool) -> Html<String> {
    let name = esc(&w.name);
    let mut versions = String::from(
        "<table><thead><tr><th>Version</th><th>Binary (sha256)</th><th>Registered</th><th>By</th></tr></thead><tbody>",
    );
    for v in w.versions.iter().rev() {
        versions.push_str(&format!(
            "<tr><td>v{}</td><td><code title=\"{hash}\">{}</code></td><td>{}</td><td>{}</td></tr>",
            v.reference.version,
            esc(short(&v.reference.binary)),
            when(v.registered_at),
            esc(v.registered_by.as_deref().unwrap_or("—")),
            hash = esc(&v.reference.binary),
        ));
    }
    versions.push_str("</tbody></table>");
    let options: String =
        w.versions.iter().rev().map(|v| format!(r#"<option value="{0}">v{0}</option>"#, v.reference.version)).collect();
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e))).unwrap_or_default();
    let default = if w.default_input.is_null() { None } else { Some(&w.default_input) };
    let start = if act {
        format!(
            r#"<h2 id="start">Start a run</h2>{error}
<form class="start" method="post" action="/workflows/{name_q}/start">{CSRF}<label class="field"><span>Version</span><select name="version">{options}</select></label>{fields}<button class="primary">Start</button></form>"#,
            name_q = esc(&enc(&w.name)),
            fields = form::fields(&w.input_schema, input.or(default)),
        )
    } else {
        r#"<p class="note">Your token may only look: sign in as an operator to start a run.</p>"#.to_string()
    };
    let body = format!(
        r#"<p class="crumbs"><a href="/workflows">Workflows</a> / {name}</p><h1>{name}</h1><p>{doc}</p>
<p>Schedule: {schedule} · {state} {pause}</p>
<h2>Versions</h2>{versions}
{start}"#,
        doc = esc(&w.doc),
        schedule = schedule_cell(w),
        state = if w.paused { "paused" } else { "active" },
        pause = if act { pause_button(w) } else { String::new() },
    );
    html_page(&w.name, &body)
}

fn find(catalog: &Catalog, name: &str) -> UiResult<WorkflowEntry> {
    catalog.0.workflow(name).ok_or_else(|| UiError::new(StatusCode::NOT_FOUND, format!("no workflow `{name}`")))
}

/// `GET /workflows/{name}`.
pub(super) async fn page_of(catalog: Catalog, name: String, act: bool) -> UiResult<Html<String>> {
    let w = blocking(move || find(&catalog, &name)).await?;
    Ok(workflow_page(&w, None, None, act))
}

/// `GET /workflows/{name}`.
pub(super) async fn page(
    Extension(catalog): Extension<Catalog>,
    caller: Option<Extension<crate::auth::Caller>>,
    Path(name): Path<String>,
) -> UiResult<Html<String>> {
    page_of(catalog, name, super::may_act(caller.as_ref())).await
}

/// `POST /workflows/{name}/start`: reads the form with the input schema, checks the input
/// against it (the form comes back with the problems when it does not match), and starts a
/// run of the chosen version.
pub(super) async fn start(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    Extension(catalog): Extension<Catalog>,
    Path(name): Path<String>,
    Form(posted): Form<Vec<(String, String)>>,
) -> UiResult<Response> {
    let outcome = blocking(move || {
        let w = find(&catalog, &name)?;
        let version = posted.iter().find(|(k, _)| k == "version").and_then(|(_, v)| v.parse::<i64>().ok());
        let reference = match version {
            Some(v) => w.versions.iter().find(|x| x.reference.version == v),
            None => w.versions.last(),
        }
        .map(|v| v.reference.clone())
        .ok_or_else(|| UiError::new(StatusCode::BAD_REQUEST, format!("workflow `{name}` has no such version")))?;
        let input = match form::read(&w.input_schema, &posted) {
            Ok(input) => input,
            Err(e) => return Ok(Err(workflow_page(&w, None, Some(&e), true))),
        };
        let problems = salt_runtime::registry::schema_problems(&w.input_schema, &input)
            .map_err(|e| UiError::new(StatusCode::BAD_REQUEST, format!("the input schema is not valid: {e}")))?;
        if !problems.is_empty() {
            let message = format!("the input does not match the schema: {}", problems.join("; "));
            return Ok(Err(workflow_page(&w, Some(&input), Some(&message), true)));
        }
        let run = state.engine.start(&reference, input)?;
        Ok(Ok(run))
    })
    .await?;
    match outcome {
        Ok(run) => Ok(see_other(&format!("/runs/{run}?notice={}", enc(&format!("started run {run}"))))),
        Err(page) => Ok(axum::response::IntoResponse::into_response((StatusCode::UNPROCESSABLE_ENTITY, page))),
    }
}

async fn set_paused(catalog: Catalog, name: String, paused: bool) -> UiResult<Response> {
    let n = name.clone();
    blocking(move || catalog.0.set_paused(&n, paused).map_err(|e| UiError::new(StatusCode::CONFLICT, e))).await?;
    Ok(see_other("/workflows"))
}

/// `POST /workflows/{name}/pause`.
pub(super) async fn pause(Extension(catalog): Extension<Catalog>, Path(name): Path<String>) -> UiResult<Response> {
    set_paused(catalog, name, true).await
}

/// `POST /workflows/{name}/resume`.
pub(super) async fn resume(Extension(catalog): Extension<Catalog>, Path(name): Path<String>) -> UiResult<Response> {
    set_paused(catalog, name, false).await
}
