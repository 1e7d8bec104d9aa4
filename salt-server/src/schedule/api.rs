//! The REST routes of schedules and events:
//!
//! - `GET /api/v1/schedules`: every scheduled workflow with its next 3 fire times;
//! - `POST /api/v1/schedules/{workflow}/trigger`: starts a run now;
//! - `POST /api/v1/schedules/{workflow}/pause`, `…/resume`;
//! - `POST /api/v1/schedules/{workflow}/backfill` with `{"from": T, "to": T}`;
//! - `POST /api/v1/events/{name}` with a JSON payload: starts every workflow triggered by the
//!   event, the payload validated against each one's input schema first.
//!
//! They are part of the REST API's OpenAPI document. Errors are the API's [`ErrorBody`]
//! `{error, message, details}`: 400 (bad JSON or time), 404 (unknown workflow or event), 409
//! (the workflow has no schedule), 413 (a body over the JSON body limit), 422 (an input that
//! does not match its schema) or 500.

use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::{Json, Router};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Backfill, EventRun, Fired, Occurrence, Schedule, ScheduleError};
use crate::api::{ApiError, ErrorBody, Path};
use crate::state::AppState;

/// The routes of schedules and events with their OpenAPI description, paths relative to
/// `/api/v1` (the REST API nests them there, under its body limit).
pub fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_event))
        .routes(routes!(list_schedules))
        .routes(routes!(trigger))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(backfill))
}

/// The routes of schedules and events alone, under `/api/v1`, without the rest of the API.
pub fn routes() -> Router<AppState> {
    OpenApiRouter::new().nest("/api/v1", v1_routes()).split_for_parts().0
}

/// One fire time, in the schedule's zone (RFC 9557, `2024-05-02T03:00:00+02:00[Europe/Berlin]`)
/// and in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FireTime {
    /// In the schedule's zone.
    pub local: String,
    /// In UTC.
    pub utc: String,
}

/// A schedule as `GET /api/v1/schedules` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    /// The workflow.
    pub workflow: String,
    /// The version it starts.
    pub version: i64,
    /// The cron expression.
    pub schedule: String,
    /// The IANA time zone.
    pub timezone: String,
    /// Whether it is paused.
    pub paused: bool,
    /// `skip`, `buffer_one` or `allow`.
    pub overlap: String,
    /// `skip` or `run_once`.
    pub catchup: String,
    /// The queue its runs go to, if not the default.
    pub queue: Option<String>,
    /// The events that also start it.
    pub events: Vec<String>,
    /// Its next 3 fire times.
    pub next: Vec<FireTime>,
    /// Its latest occurrence.
    #[schema(value_type = Option<super::Occurrence>)]
    pub last: Option<Occurrence>,
}

impl ScheduleView {
    /// The view of `s`, with fire times after `now`; `None` if it has no schedule.
    pub fn of(s: &Schedule, last: Option<Occurrence>, now: Timestamp) -> Option<Self> {
        let spec = s.spec()?;
        let next = super::next_fires_after(&spec, now, 3)
            .into_iter()
            .map(|(z, t)| FireTime { local: z.to_string(), utc: t.to_string() })
            .collect();
        Some(Self {
            workflow: s.workflow().into(),
            version: s.target.version,
            schedule: spec.expr().into(),
            timezone: spec.zone_name().into(),
            paused: s.paused,
            overlap: s.overlap.as_str().into(),
            catchup: s.catchup.as_str().into(),
            queue: s.queue.clone(),
            events: s.events.clone(),
            next,
            last,
        })
    }
}

/// The body of `POST /api/v1/schedules/{workflow}/backfill`: RFC 3339 times with an offset
/// (`2024-05-01T00:00:00Z`), or civil times (`2024-05-01T00:00`, `2024-05-01`) read in the
/// schedule's zone. Both ends are included.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// The first time of the range.
    pub from: String,
    /// The last time of the range.
    pub to: String,
}

/// The answer to a started event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventResponse {
    /// The event.
    pub event: String,
    /// The runs it started, one per workflow triggered by it.
    pub runs: Vec<EventRunView>,
}

/// A run an event started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventRunView {
    /// The workflow.
    pub workflow: String,
    /// Its version.
    pub version: i64,
    /// The run.
    pub run: i64,
}

impl From<EventRun> for EventRunView {
    fn from(r: EventRun) -> Self {
        Self { workflow: r.workflow, version: r.version, run: r.run }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let message = e.to_string();
        let (status, error, details) = match e {
            ScheduleError::UnknownWorkflow(w) => (StatusCode::NOT_FOUND, "not_found", json!({ "workflow": w })),
            ScheduleError::UnknownEvent(ev) => (StatusCode::NOT_FOUND, "not_found", json!({ "event": ev })),
            ScheduleError::NoSchedule(w) => (StatusCode::CONFLICT, "conflict", json!({ "workflow": w })),
            ScheduleError::Invalid { field, details, .. } => {
                let status =
                    if field == "payload" { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::BAD_REQUEST };
                (status, "invalid_input", json!({ "field": field, "errors": details }))
            }
            ScheduleError::Db(_) | ScheduleError::Start { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", Value::Null)
            }
        };
        ApiError::new(status, error, message).details(details)
    }
}

fn bad_request(field: &str, message: String) -> ApiError {
    ApiError::bad_request(message).details(json!({ "field": field }))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ScheduleError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("the request handler failed: {e}"))),
    }
}

/// A request body read whole; one larger than the JSON body limit is refused (413) with the
/// JSON error body.
pub struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state).await.map(RawBody).map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "too_large" } else { "invalid_input" };
            ApiError::new(status, code, rejection.body_text())
        })
    }
}

/// Lists every scheduled workflow with its next 3 fire times, in its zone and in UTC.
#[utoipa::path(get, path = "/schedules", tag = "schedules",
    responses((status = 200, body = Vec<ScheduleView>), (status = 500, body = ErrorBody)))]
async fn list_schedules(State(state): State<AppState>) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    let views = blocking(move || {
        let conn = super::lock(&state.conn);
        let now = Timestamp::now();
        let mut out = Vec::new();
        for s in super::list(&conn)? {
            let last = super::occurrences(&conn, s.workflow(), 1)?.pop();
            out.extend(ScheduleView::of(&s, last, now));
        }
        Ok(out)
    })
    .await?;
    Ok(Json(views))
}

/// Starts a run of a scheduled workflow now, recorded as a `trigger` occurrence.
#[utoipa::path(post, path = "/schedules/{workflow}/trigger", tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow")),
    responses((status = 201, body = super::Fired), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn trigger(
    State(state): State<AppState>,
    Path(workflow): Path<String>,
) -> Result<(StatusCode, Json<Fired>), ApiError> {
    let fired =
        blocking(move || super::trigger(&state.conn, state.engine.as_ref(), &workflow, Timestamp::now())).await?;
    Ok((StatusCode::CREATED, Json(fired)))
}

async fn set_paused(state: AppState, workflow: String, paused: bool) -> Result<Json<ScheduleView>, ApiError> {
    let view = blocking(move || {
        let conn = super::lock(&state.conn);
        let s = super::set_paused(&conn, &workflow, paused, Timestamp::now())?;
        let last = super::occurrences(&conn, &workflow, 1)?.pop();
        ScheduleView::of(&s, last, Timestamp::now()).ok_or(ScheduleError::NoSchedule(workflow))
    })
    .await?;
    Ok(Json(view))
}

/// Pauses a workflow's schedule: it fires nothing until resumed.
#[utoipa::path(post, path = "/schedules/{workflow}/pause", tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn pause(State(state): State<AppState>, Path(workflow): Path<String>) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(state, workflow, true).await
}

/// Resumes a workflow's schedule; the ticks missed while paused are not fired.
#[utoipa::path(post, path = "/schedules/{workflow}/resume", tag = "schedules",
    params(("workflow" = String, Path, description = "The workflow")),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume(State(state): State<AppState>, Path(workflow): Path<String>) -> Result<Json<ScheduleView>, ApiError> {
    set_paused(state, workflow, false).await
}

/// Reads a time: RFC 3339 with an offset, or a civil date-time or date in `zone`.
pub fn parse_time(text: &str, zone: &str) -> Result<Timestamp, String> {
    if let Ok(t) = Timestamp::from_str(text) {
        return Ok(t);
    }
    let tz = TimeZone::get(zone).map_err(|e| e.to_string())?;
    let civil = DateTime::from_str(text)
        .or_else(|_| jiff::civil::Date::from_str(text).map(|d| d.to_datetime(jiff::civil::Time::midnight())))
        .map_err(|_| {
            format!("`{text}` is not a time; use RFC 3339 (2024-05-01T00:00:00Z) or a local 2024-05-01T00:00")
        })?;
    civil.to_zoned(tz).map(|z| z.timestamp()).map_err(|e| e.to_string())
}

/// Starts one run for each occurrence of a workflow's schedule in a past range not dealt with
/// yet.
#[utoipa::path(post, path = "/schedules/{workflow}/backfill", tag = "schedules", request_body = BackfillRequest,
    params(("workflow" = String, Path, description = "The workflow")),
    responses((status = 201, body = super::Backfill), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn backfill(
    State(state): State<AppState>,
    Path(workflow): Path<String>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Backfill>), ApiError> {
    let req: BackfillRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request("body", format!("expected {{\"from\": T, \"to\": T}}: {e}")))?;
    let done = blocking(move || {
        let zone = super::get(&super::lock(&state.conn), &workflow)?
            .ok_or_else(|| ScheduleError::UnknownWorkflow(workflow.clone()))?
            .timezone;
        let time = |field: &str, text: &str| {
            parse_time(text, &zone).map_err(|message| ScheduleError::Invalid {
                field: field.into(),
                message,
                details: Value::Null,
            })
        };
        let (from, to) = (time("from", &req.from)?, time("to", &req.to)?);
        super::backfill(&state.conn, state.engine.as_ref(), &workflow, from, to, Timestamp::now())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Starts every workflow triggered by an event, with the JSON payload (empty: each one's
/// default input) as its input; if the payload does not match every one's input schema,
/// nothing starts (422).
#[utoipa::path(post, path = "/events/{name}", tag = "events",
    request_body(content = Object, description = "The payload; may be empty"),
    params(("name" = String, Path, description = "The event")),
    responses((status = 202, body = EventResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn post_event(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<EventResponse>), ApiError> {
    if !crate::config::valid_event_name(&name) {
        return Err(bad_request("name", format!("`{name}` is not an event name")));
    }
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| bad_request("payload", format!("the payload is not JSON: {e}")))?
    };
    let event = name.clone();
    let runs = blocking(move || super::start_event(&state.conn, state.engine.as_ref(), &name, payload)).await?;
    Ok((StatusCode::ACCEPTED, Json(EventResponse { event, runs: runs.into_iter().map(Into::into).collect() })))
}
