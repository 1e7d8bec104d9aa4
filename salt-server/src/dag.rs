//! `salt dag run`: the steps of a JSON DAG file as command nodes of one salt run, on an
//! embedded SQLite store — the same durability, retries, logs and graph as any run.
//!
//! The run's workflow, `dag`, is built into the `salt` binary. Its body spawns a command node
//! per step, each taking the outputs of its parents as its input, so the graph's edges are the
//! file's dependencies. A step downstream of a generator waits in the body until that generator
//! has finished: its output (a JSON object of new tasks) is then added to the plan
//! ([`Plan::add_generated`]), and the new steps and the waiting ones are spawned.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use salt::prelude::*;
use salt::{CommandOutput, Handle};
use salt_dag::{Plan, Step};
use serde_json::{Value, json};

use crate::api::{ApiError, Body, StartedRun};
use crate::registry;
use crate::state::AppState;

/// What a DAG run gives: how many steps ran, and the last stdout lines of each.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DagRun {
    /// The steps that ran, in the order they were spawned.
    pub steps: Vec<String>,
    /// The last lines each step printed, by step.
    pub stdout_tails: BTreeMap<String, Vec<String>>,
}

fn fatal(e: impl std::fmt::Display) -> salt::Error {
    salt::Error::fatal(e.to_string())
}

/// Runs the DAG file `spec` (its JSON text) with the `--param NAME=VALUE` overrides `params`.
#[workflow]
async fn dag(spec: String, params: Vec<String>) -> salt::Result<DagRun> {
    let overrides = params.iter().map(|p| salt_dag::parse_param(p)).collect::<Result<Vec<_>, _>>().map_err(fatal)?;
    let mut plan = Plan::from_json(&spec, &overrides).map_err(fatal)?;
    let mut handles: BTreeMap<String, Handle<CommandOutput>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut generators_done: BTreeSet<String> = BTreeSet::new();
    loop {
        // Spawn every step whose parents are spawned and that no unfinished generator is
        // upstream of (it may still gain parents).
        let mut progressed = true;
        while progressed {
            progressed = false;
            let steps: Vec<Step> = plan.steps().to_vec();
            for step in &steps {
                if handles.contains_key(&step.name) || !spawnable(&plan, step, &handles, &generators_done) {
                    continue;
                }
                let parents: Vec<Handle<CommandOutput>> = step.parents.iter().map(|p| handles[p].clone()).collect();
                handles.insert(step.name.clone(), command_of(step, parents).spawn());
                order.push(step.name.clone());
                progressed = true;
            }
        }
        // Then wait for the first generator that has not finished, and grow the plan.
        let next = order
            .iter()
            .find(|n| plan.step(n).is_some_and(|s| s.is_generator) && !generators_done.contains(*n))
            .cloned();
        let Some(generator) = next else { break };
        // A failed generator adds nothing: the steps waiting for it are spawned below it and
        // skipped, and the independent ones go on.
        if let Ok(output) = handles[&generator].clone().await {
            let text = output.stdout.unwrap_or_else(|| output.stdout_tail.join("\n"));
            let started: BTreeSet<String> = handles.keys().cloned().collect();
            plan.add_generated(&generator, &text, &started).map_err(fatal)?;
        }
        generators_done.insert(generator);
    }
    // Every step is awaited, whatever failed: a failure (or a killed step) skips what depends
    // on it, and the steps independent of it run to their end.
    let mut stdout_tails = BTreeMap::new();
    let mut failed = Vec::new();
    for name in &order {
        match handles[name].clone().await {
            Ok(output) => {
                stdout_tails.insert(name.clone(), output.stdout_tail);
            }
            Err(e) => failed.push(format!("`{name}` ({})", e.message())),
        }
    }
    if !failed.is_empty() {
        return Err(salt::Error::fatal(format!(
            "{} of {} steps did not succeed: {}",
            failed.len(),
            order.len(),
            failed.join("; ")
        )));
    }
    Ok(DagRun { steps: order, stdout_tails })
}

/// Whether `step` can be spawned now: its parents are, and every generator upstream of it has
/// finished (so that its parents are all known).
fn spawnable(
    plan: &Plan,
    step: &Step,
    handles: &BTreeMap<String, Handle<CommandOutput>>,
    generators_done: &BTreeSet<String>,
) -> bool {
    if !step.parents.iter().all(|p| handles.contains_key(p)) {
        return false;
    }
    let mut stack: Vec<&str> = step.parents.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        let Some(s) = plan.step(name) else { continue };
        if s.is_generator && !generators_done.contains(name) {
            return false;
        }
        stack.extend(s.parents.iter().map(String::as_str));
    }
    true
}

/// The command node of one step: its argv, environment and retry policy, its parents' outputs
/// as its input.
fn command_of(step: &Step, parents: Vec<Handle<CommandOutput>>) -> salt::Command {
    let mut argv = step.argv.iter();
    let program = argv.next().cloned().unwrap_or_default();
    let mut cmd = salt::command(program).args(argv.cloned()).envs(step.env.clone()).label(step.name.clone());
    if let Some(image) = &step.image {
        cmd = cmd.image(image.clone());
    }
    if step.max_retries > 0 {
        cmd = cmd.retries(step.max_retries).backoff(step.retry_interval);
    }
    if step.is_generator {
        // Its output is read whole, however many lines it spans.
        cmd = cmd.keep_stdout();
    }
    if !parents.is_empty() {
        cmd = cmd.input::<Vec<CommandOutput>>(parents);
    }
    cmd
}

/// The parameters of `salt dag run` as `NAME=VALUE` text, as the `dag` workflow takes them.
pub fn param_args(params: &[(String, salt_dag::ParamValue)]) -> Vec<String> {
    params
        .iter()
        .map(|(name, value)| match value {
            salt_dag::ParamValue::One(v) => format!("{name}={v}"),
            salt_dag::ParamValue::List(vs) => format!("{name}={}", Value::from(vs.clone())),
        })
        .collect()
}

/// What `POST /api/v1/dags` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostDag {
    /// The DAG file: its JSON, as an object or as text.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// Parameter overrides: a string, or a list of strings to expand over.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: BTreeMap<String, Value>,
}

/// `POST /dags` (under `/api/v1`): runs a DAG file on the server's workers.
pub fn v1_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(post_dag))
}

/// The `salt` binary's own registration (sha256, version of its `dag` workflow), made once.
static SELF_REGISTERED: OnceLock<(String, i64)> = OnceLock::new();

/// Registers this `salt` binary (the `dag` workflow is in it) unless it already is.
fn register_self(state: &AppState) -> Result<i64, ApiError> {
    if let Some((_, version)) = SELF_REGISTERED.get() {
        return Ok(*version);
    }
    let exe = std::env::current_exe().map_err(ApiError::internal)?;
    let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
    let registered = registry::register_file(&conn, &state.data, &exe, None).map_err(ApiError::internal)?;
    let version = registered
        .workflows
        .iter()
        .find(|w| w.workflow == "dag")
        .map(|w| w.version)
        .ok_or_else(|| ApiError::internal("the salt binary has no `dag` workflow"))?;
    let _ = SELF_REGISTERED.set((registered.sha256, version));
    Ok(version)
}

/// Checks a DAG file and starts a run of it on the workers (each step a command node); 400
/// naming every problem, nothing started, when it does not check. Needs an admin token: a DAG
/// file runs any command it names.
#[utoipa::path(post, path = "/dags", tag = "runs", request_body = PostDag,
    responses((status = 201, body = StartedRun), (status = 400, body = crate::api::ErrorBody),
              (status = 413, body = crate::api::ErrorBody), (status = 415, body = crate::api::ErrorBody),
              (status = 422, body = crate::api::ErrorBody)))]
async fn post_dag(
    State(state): State<AppState>,
    Body(body): Body<PostDag>,
) -> Result<(StatusCode, Json<StartedRun>), ApiError> {
    let spec = match body.spec {
        Value::String(text) => text,
        other => other.to_string(),
    };
    let mut params = Vec::new();
    for (name, value) in &body.params {
        let text = match value {
            Value::String(v) => v.clone(),
            Value::Array(_) => value.to_string(),
            _ => {
                return Err(ApiError::bad_request(format!("parameter `{name}`: a string or a list of strings"))
                    .details(json!({"field": format!("params.{name}")})));
            }
        };
        params.push(format!("{name}={text}"));
    }
    let overrides = params
        .iter()
        .map(|p| salt_dag::parse_param(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e).details(json!({"field": "params"})))?;
    if let Err(errors) = Plan::from_json(&spec, &overrides) {
        let list: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
        return Err(ApiError::bad_request(errors.to_string()).details(json!({"field": "spec", "errors": list})));
    }
    let started = tokio::task::spawn_blocking(move || {
        let version = register_self(&state)?;
        crate::api::start_run(&state, "dag", Some(version), Some(json!({"spec": spec, "params": params})))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((StatusCode::CREATED, Json(started)))
}
