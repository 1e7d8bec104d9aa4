//! Schedules and event triggers: cron expressions read in a time zone, the occurrences they
//! fire (each recorded under (workflow, scheduled time) before its run starts, so a restart
//! never fires one twice), overlap and catch-up policies, `trigger`, `backfill`, and the runs
//! an event starts.
//!
//! Each registered workflow has one row in `schedules` (written by [`register_workflow`]):
//! the version its schedule and events start, its input schema, its settings from the
//! manifest and `salt.toml`, whether it is paused, and its cursor (every occurrence at or
//! before it has been dealt with). `schedule_occurrences` records every occurrence dealt with.

pub mod api;
pub mod cli;
pub mod decide;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::sql::{Conn, OptionalExtension, params};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use serde::Serialize;
use serde_json::Value;

use salt_runtime::model::{RunId, RunState};

use crate::config::{Catchup, Overlap, WebhookConfig, WorkflowSettings};
use crate::engine::{Engine, WorkflowRef};
use crate::state::AppState;
use decide::{Action, Kind, TickInput};

/// At most this many runs are started by one backfill.
pub const MAX_BACKFILL: usize = 1000;

/// A cron expression read in a time zone.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    expr: String,
    cron: Cron,
    zone: TimeZone,
    zone_name: String,
}

/// A cron expression or time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The cron expression does not parse.
    #[error(
        "invalid cron expression `{expr}`: {message}; expected 5 fields (minute hour day month weekday) or 6 (with seconds first), like \"0 3 * * *\""
    )]
    Cron {
        /// The expression.
        expr: String,
        /// Why.
        message: String,
    },
    /// The time zone is not an IANA name known to the time zone database.
    #[error("unknown time zone `{0}`")]
    Zone(String),
}

impl ScheduleSpec {
    /// Reads `expr` (5 fields, or 6 with seconds first; names such as `MON` and `JAN`, and
    /// `@daily`-style nicknames are accepted) in the IANA time zone `zone`.
    pub fn parse(expr: &str, zone: &str) -> Result<Self, SpecError> {
        let tz = TimeZone::get(zone).map_err(|_| SpecError::Zone(zone.to_string()))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr.trim())
            .map_err(|e| SpecError::Cron { expr: expr.to_string(), message: e.to_string() })?;
        Ok(Self { expr: expr.trim().to_string(), cron, zone: tz, zone_name: zone.to_string() })
    }

    /// The cron expression.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone's name.
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first occurrence strictly after `t`.
    ///
    /// Daylight saving: a local time that does not exist (skipped when clocks go forward)
    /// fires once, at the first instant after the gap; a local time that happens twice (when
    /// clocks go back) fires once, the first time. Expressions that fire every minute or
    /// second of an hour go on firing in real time through both changes.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let fixed = matches!(self.cron.determine_job_type(), croner::JobType::FixedTime);
        let mut z = t.to_zoned(self.zone.clone());
        loop {
            let next = self.cron.find_next_occurrence(&z, false).ok()?;
            // Searched from inside a repeated hour, the cron crate may offer the second of two
            // instants with the same local time; the first one was the occurrence.
            if fixed && self.is_second_of_repeated(&next) {
                z = next;
                continue;
            }
            return Some(next.timestamp());
        }
    }

    fn is_second_of_repeated(&self, z: &Zoned) -> bool {
        let ambiguous = self.zone.to_ambiguous_zoned(z.datetime());
        match ambiguous.offset() {
            jiff::tz::AmbiguousOffset::Fold { before, .. } => z.offset() != before,
            _ => false,
        }
    }

    /// The latest occurrence in `(after, upto]`, found without walking every occurrence in
    /// between (a year of every-second ticks costs a few lookups).
    pub fn latest_in(&self, after: Timestamp, upto: Timestamp) -> Option<Timestamp> {
        if upto <= after {
            return None;
        }
        let windows = [60_i64, 3_600, 86_400, 31 * 86_400, 366 * 86_400, 5 * 366 * 86_400];
        let starts = windows
            .iter()
            .map(|w| upto.checked_sub(SignedDuration::from_secs(*w)).unwrap_or(Timestamp::MIN))
            .chain(std::iter::once(after));
        for probe in starts {
            let probe = probe.max(after);
            let mut latest = None;
            let mut t = probe;
            while let Some(next) = self.next_after(t).filter(|n| *n <= upto) {
                latest = Some(next);
                t = next;
            }
            if latest.is_some() || probe == after {
                return latest;
            }
        }
        None
    }

    /// Every occurrence in `[from, to]`, at most `limit` (then `None`).
    pub fn between(&self, from: Timestamp, to: Timestamp, limit: usize) -> Option<Vec<Timestamp>> {
        let mut out = Vec::new();
        let mut t = from.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(from);
        while let Some(next) = self.next_after(t).filter(|n| *n <= to) {
            if out.len() == limit {
                return None;
            }
            out.push(next);
            t = next;
        }
        Some(out)
    }
}

/// The next `n` fire times of `spec` after now, in its zone and in UTC (`salt schedule ls`).
pub fn next_fires(spec: &ScheduleSpec, n: usize) -> Vec<(Zoned, Timestamp)> {
    next_fires_after(spec, Timestamp::now(), n)
}

/// The next `n` fire times of `spec` after `after`, in its zone and in UTC.
pub fn next_fires_after(spec: &ScheduleSpec, after: Timestamp, n: usize) -> Vec<(Zoned, Timestamp)> {
    let mut out = Vec::with_capacity(n);
    let mut t = after;
    while out.len() < n {
        let Some(next) = spec.next_after(t) else { break };
        out.push((next.to_zoned(spec.zone.clone()), next));
        t = next;
    }
    out
}

/// What went wrong in a schedule operation.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No workflow of that name is registered.
    #[error("no workflow `{0}` is registered")]
    UnknownWorkflow(String),
    /// The workflow has no cron schedule.
    #[error("workflow `{0}` has no schedule")]
    NoSchedule(String),
    /// No workflow is triggered by that event.
    #[error("no workflow is triggered by event `{0}`")]
    UnknownEvent(String),
    /// An argument is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// Why.
        message: String,
        /// More detail (for inputs: the schema errors, by workflow).
        details: Value,
    },
    /// The server's tables.
    #[error("database: {0}")]
    Db(#[from] crate::sql::Error),
    /// Starting a run failed.
    #[error("could not start a run of `{workflow}`: {message}")]
    Start {
        /// The workflow.
        workflow: String,
        /// Why.
        message: String,
    },
}

/// Creates the tables of schedules, occurrences and webhook deliveries (idempotent).
pub fn migrate(conn: &Conn) -> crate::sql::Result<()> {
    if conn.is_postgres() {
        // Part of the server's versioned migrations there (`db::migrate`).
        return Ok(());
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schedules (
            workflow TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            binary TEXT NOT NULL,
            input_schema TEXT NOT NULL,
            cron TEXT,
            timezone TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            queue TEXT,
            input TEXT NOT NULL,
            overlap TEXT NOT NULL,
            catchup TEXT NOT NULL,
            events TEXT NOT NULL,
            webhooks TEXT NOT NULL,
            cursor_ms INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE TABLE IF NOT EXISTS schedule_occurrences (
            id INTEGER PRIMARY KEY,
            workflow TEXT NOT NULL,
            scheduled_at INTEGER NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            run INTEGER,
            version INTEGER NOT NULL,
            detail TEXT,
            created_at INTEGER NOT NULL,
            UNIQUE (workflow, scheduled_at)
        );
        CREATE INDEX IF NOT EXISTS schedule_occurrences_status ON schedule_occurrences (workflow, status);",
    )?;
    crate::notify::migrate(conn)
}

/// A registered workflow as its schedule and events see it.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The version its schedule and events start (the latest registered).
    pub target: WorkflowRef,
    /// The JSON Schema of its input.
    pub input_schema: Value,
    /// Its cron expression, if it is scheduled.
    pub cron: Option<String>,
    /// The IANA time zone of the schedule.
    pub timezone: String,
    /// Whether the schedule is paused.
    pub paused: bool,
    /// The queue its runs go to, if not the default.
    pub queue: Option<String>,
    /// The input its scheduled and event-started runs get (`null`: none).
    pub input: Value,
    /// The overlap policy.
    pub overlap: Overlap,
    /// The catch-up policy.
    pub catchup: Catchup,
    /// The events that start it.
    pub events: Vec<String>,
    /// The webhooks told about its runs.
    pub webhooks: Vec<WebhookConfig>,
    /// Every occurrence at or before this time has been dealt with.
    pub cursor: Timestamp,
}

impl Schedule {
    /// The workflow's name.
    pub fn workflow(&self) -> &str {
        &self.target.workflow
    }

    /// Its schedule, if it has a valid one.
    pub fn spec(&self) -> Option<ScheduleSpec> {
        ScheduleSpec::parse(self.cron.as_deref()?, &self.timezone).ok()
    }
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn from_ms(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks `settings` of a workflow whose input has the JSON Schema `input_schema`: its
/// schedule and time zone, and its default input against the schema. Call it before storing
/// anything of a registration.
pub fn check_settings(input_schema: &Value, settings: &WorkflowSettings) -> Result<(), ScheduleError> {
    let invalid =
        |field: &str, message: String| ScheduleError::Invalid { field: field.into(), message, details: Value::Null };
    if let Some(cron) = &settings.schedule {
        ScheduleSpec::parse(cron, &settings.timezone).map_err(|e| invalid("schedule", e.to_string()))?;
    } else if TimeZone::get(&settings.timezone).is_err() {
        return Err(invalid("timezone", format!("unknown time zone `{}`", settings.timezone)));
    }
    if !settings.input.is_null() {
        let errors = schema_errors(input_schema, &settings.input);
        if !errors.is_empty() {
            return Err(ScheduleError::Invalid {
                field: "input".into(),
                message: format!("the default input does not match the input schema: {}", errors.join("; ")),
                details: Value::from(errors),
            });
        }
    }
    Ok(())
}

/// The ways `value` breaks `schema`, each as `path: message` (none when it is valid or the
/// schema cannot be compiled, which the registry has reported already).
pub fn schema_errors(schema: &Value, value: &Value) -> Vec<String> {
    let Ok(validator) = salt_runtime::registry::InputSchema::new(schema) else { return Vec::new() };
    validator
        .problems(value)
        .into_iter()
        .map(|p| if p.at == "/" { p.message } else { format!("{}: {}", p.at, p.message) })
        .collect()
}

/// Records that `target` is the version the workflow's schedule and events start from now on,
/// with `settings` (resolved by [`WorkflowSettings::resolve`] from the manifest and
/// `salt.toml`). Call it for each workflow of a registered binary, after [`check_settings`].
///
/// A new version keeps the schedule's cursor and paused state, unless `salt.toml` says
/// `paused`; a changed cron expression or time zone, or a resume, moves the cursor to `now`, so
/// no occurrence before the registration fires.
pub fn register_workflow(
    conn: &Conn,
    target: &WorkflowRef,
    input_schema: &Value,
    settings: &WorkflowSettings,
    now: Timestamp,
) -> Result<(), ScheduleError> {
    let old: Option<(Option<String>, String, bool, i64)> = conn
        .query_row(
            "SELECT cron, timezone, paused, cursor_ms FROM schedules WHERE workflow = ?1",
            [&target.workflow],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let paused = settings.paused.unwrap_or(old.as_ref().is_some_and(|o| o.2));
    let cursor = match &old {
        Some((cron, tz, was_paused, cursor))
            if *cron == settings.schedule && *tz == settings.timezone && (paused || !*was_paused) =>
        {
            *cursor
        }
        _ => ms(now),
    };
    conn.execute(
        "INSERT INTO schedules (workflow, version, \"binary\", input_schema, cron, timezone, paused, queue, input,
                                overlap, catchup, events, webhooks, cursor_ms, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (workflow) DO UPDATE SET version = excluded.version, \"binary\" = excluded.\"binary\",
            input_schema = excluded.input_schema, cron = excluded.cron, timezone = excluded.timezone,
            paused = excluded.paused, queue = excluded.queue, input = excluded.input, overlap = excluded.overlap,
            catchup = excluded.catchup, events = excluded.events, webhooks = excluded.webhooks,
            cursor_ms = excluded.cursor_ms, updated_at = excluded.updated_at",
        params![
            target.workflow,
            target.version,
            target.binary,
            input_schema.to_string(),
            settings.schedule,
            settings.timezone,
            paused,
            settings.queue,
            settings.input.to_string(),
            settings.overlap.as_str(),
            settings.catchup.as_str(),
            serde_json::to_string(&settings.events).unwrap_or_default(),
            serde_json::to_string(&settings.webhooks).unwrap_or_default(),
            cursor,
            ms(now),
        ],
    )?;
    Ok(())
}

const COLUMNS: &str = "workflow, version, \"binary\", input_schema, cron, timezone, paused, queue, input, overlap, catchup, \
                       events, webhooks, cursor_ms";

fn row_to_schedule(r: &crate::sql::Row) -> crate::sql::Result<Schedule> {
    let json = |i: usize| -> crate::sql::Result<Value> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    Ok(Schedule {
        target: WorkflowRef { workflow: r.get(0)?, version: r.get(1)?, binary: r.get(2)? },
        input_schema: json(3)?,
        cron: r.get(4)?,
        timezone: r.get(5)?,
        paused: r.get(6)?,
        queue: r.get(7)?,
        input: json(8)?,
        overlap: Overlap::parse(&r.get::<String>(9)?).unwrap_or_default(),
        catchup: Catchup::parse(&r.get::<String>(10)?).unwrap_or_default(),
        events: serde_json::from_value(json(11)?).unwrap_or_default(),
        webhooks: serde_json::from_value(json(12)?).unwrap_or_default(),
        cursor: from_ms(r.get(13)?),
    })
}

/// Every registered workflow's schedule row, by name.
pub fn list(conn: &Conn) -> crate::sql::Result<Vec<Schedule>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM schedules ORDER BY workflow"))?;
    stmt.query_map((), row_to_schedule)?.collect()
}

/// One workflow's schedule row.
pub fn get(conn: &Conn, workflow: &str) -> crate::sql::Result<Option<Schedule>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM schedules WHERE workflow = ?1"), [workflow], row_to_schedule)
        .optional()
}

fn get_scheduled(conn: &Conn, workflow: &str) -> Result<(Schedule, ScheduleSpec), ScheduleError> {
    let s = get(conn, workflow)?.ok_or_else(|| ScheduleError::UnknownWorkflow(workflow.into()))?;
    let spec = s.spec().ok_or_else(|| ScheduleError::NoSchedule(workflow.into()))?;
    Ok((s, spec))
}

/// Pauses or resumes a workflow's schedule. Resuming moves its cursor to `now`: the
/// occurrences that fell while it was paused never fire. Returns the schedule as it is now.
pub fn set_paused(conn: &Conn, workflow: &str, paused: bool, now: Timestamp) -> Result<Schedule, ScheduleError> {
    let (s, _) = get_scheduled(conn, workflow)?;
    if s.paused != paused {
        conn.execute(
            "UPDATE schedules SET paused = ?2, cursor_ms = CASE WHEN ?2 <> 0 THEN cursor_ms ELSE ?3 END WHERE workflow = ?1",
            params![workflow, paused, ms(now)],
        )?;
    }
    Ok(get(conn, workflow)?.expect("the row was just read"))
}

/// One occurrence of a schedule as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Occurrence {
    /// The workflow.
    pub workflow: String,
    /// When it was due.
    #[schema(value_type = String)]
    pub scheduled_at: Timestamp,
    /// `cron`, `catchup`, `trigger` or `backfill`.
    pub kind: String,
    /// `starting` (recorded, run not started yet), `started`, `finished` (its run ended),
    /// `buffered`, `skipped` (overlap), `missed` (server down) or `error` (the run could not
    /// start; see `detail`).
    pub status: String,
    /// The run it started.
    pub run: Option<i64>,
    /// The workflow version it started (or would have).
    pub version: i64,
    /// Why it could not start.
    pub detail: Option<String>,
}

/// The latest `limit` occurrences of a workflow's schedule, newest first.
pub fn occurrences(conn: &Conn, workflow: &str, limit: usize) -> crate::sql::Result<Vec<Occurrence>> {
    let mut stmt = conn.prepare(
        "SELECT workflow, scheduled_at, kind, status, run, version, detail FROM schedule_occurrences
         WHERE workflow = ?1 ORDER BY scheduled_at DESC LIMIT ?2",
    )?;
    stmt.query_map(params![workflow, limit as i64], |r| {
        Ok(Occurrence {
            workflow: r.get(0)?,
            scheduled_at: from_ms(r.get(1)?),
            kind: r.get(2)?,
            status: r.get(3)?,
            run: r.get(4)?,
            version: r.get(5)?,
            detail: r.get(6)?,
        })
    })?
    .collect()
}

/// A run started by a schedule (or the reason it did not start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Fired {
    /// The workflow.
    pub workflow: String,
    /// The version started.
    pub version: i64,
    /// The occurrence's time.
    #[schema(value_type = String)]
    pub scheduled_at: Timestamp,
    /// Why it started: `cron`, `catchup`, `trigger` or `backfill`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The run, if it started.
    pub run: Option<i64>,
    /// Why it did not start.
    pub error: Option<String>,
}

fn record(
    conn: &Conn,
    s: &Schedule,
    at: Timestamp,
    kind: Kind,
    status: &str,
    now: Timestamp,
) -> crate::sql::Result<bool> {
    let n = conn.execute(
        "INSERT INTO schedule_occurrences (workflow, scheduled_at, kind, status, version, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (workflow, scheduled_at) DO NOTHING",
        params![s.workflow(), ms(at), kind.as_str(), status, s.target.version, ms(now)],
    )?;
    Ok(n == 1)
}

/// Starts the run of an occurrence already recorded as `starting`, then records the outcome.
/// The connection is not held while the engine starts the run.
fn start_recorded(conn: &Mutex<Conn>, engine: &dyn Engine, s: &Schedule, at: Timestamp, kind: Kind) -> Fired {
    let result = engine.start(&s.target, s.input.clone());
    let (status, run, error) = match &result {
        Ok(run) => ("started", Some(run.get()), None),
        Err(e) => ("error", None, Some(e.to_string())),
    };
    if let Err(e) = lock(conn).execute(
        "UPDATE schedule_occurrences SET status = ?3, run = ?4, detail = ?5 WHERE workflow = ?1 AND scheduled_at = ?2",
        params![s.workflow(), ms(at), status, run, error],
    ) {
        tracing::error!(workflow = s.workflow(), "could not record the run of an occurrence: {e}");
    }
    if let Some(e) = &error {
        tracing::warn!(workflow = s.workflow(), "a scheduled run did not start: {e}");
    }
    Fired {
        workflow: s.workflow().into(),
        version: s.target.version,
        scheduled_at: at,
        kind: kind.as_str(),
        run,
        error,
    }
}

/// Decides and starts the occurrences of every schedule at one tick of the clock.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// How late an occurrence may be noticed and still count as on time; older ones were
    /// missed (the server was down) and follow the catch-up policy.
    pub grace: SignedDuration,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self { grace: SignedDuration::from_secs(15) }
    }
}

impl Scheduler {
    /// Runs one tick at `now`: for every scheduled workflow, decides (see [`decide::decide`])
    /// and acts. Each occurrence is recorded, together with the moved cursor, before its run
    /// starts; a second tick, or a restarted server, finds it recorded and leaves it.
    /// `run_state` tells the state of a run (`None`: unknown, taken as ended).
    pub fn tick(
        &self,
        conn: &Mutex<Conn>,
        engine: &dyn Engine,
        run_state: &dyn Fn(RunId) -> Option<RunState>,
        now: Timestamp,
    ) -> Result<Vec<Fired>, ScheduleError> {
        let schedules = list(&lock(conn))?;
        let mut fired = Vec::new();
        for s in schedules {
            let Some(spec) = s.spec() else { continue };
            fired.extend(self.tick_one(conn, engine, run_state, &s, &spec, now)?);
        }
        Ok(fired)
    }

    fn tick_one(
        &self,
        conn: &Mutex<Conn>,
        engine: &dyn Engine,
        run_state: &dyn Fn(RunId) -> Option<RunState>,
        s: &Schedule,
        spec: &ScheduleSpec,
        now: Timestamp,
    ) -> Result<Vec<Fired>, ScheduleError> {
        let buffered: Option<i64> = lock(conn)
            .query_row(
                "SELECT scheduled_at FROM schedule_occurrences WHERE workflow = ?1 AND status = 'buffered'
                 ORDER BY scheduled_at LIMIT 1",
                [s.workflow()],
                |r| r.get(0),
            )
            .optional()?;
        let input = TickInput {
            spec,
            now,
            cursor: s.cursor,
            paused: s.paused,
            overlap: s.overlap,
            catchup: s.catchup,
            buffered: buffered.map(from_ms),
            grace: self.grace,
        };
        let mut failure = None;
        let decision = decide::decide(&input, &mut || match previous_running(conn, s.workflow(), run_state) {
            Ok(running) => running,
            Err(e) => {
                failure = Some(e);
                true
            }
        });
        if let Some(e) = failure {
            return Err(e.into());
        }
        // Record every decision and the cursor at once, then start the runs.
        let mut to_start = Vec::new();
        {
            let guard = lock(conn);
            guard.transaction(|tx| -> crate::sql::Result<()> {
            for action in &decision.actions {
                match *action {
                    Action::Start(at, kind) => {
                        if record(tx, s, at, kind, "starting", now)? {
                            to_start.push((at, kind));
                        }
                    }
                    Action::StartBuffered(at) => {
                        let n = tx.execute(
                            "UPDATE schedule_occurrences SET status = 'starting', version = ?3
                             WHERE workflow = ?1 AND scheduled_at = ?2 AND status = 'buffered'",
                            params![s.workflow(), ms(at), s.target.version],
                        )?;
                        if n == 1 {
                            to_start.push((at, Kind::Cron));
                        }
                    }
                    Action::Buffer(at) => {
                        record(tx, s, at, Kind::Cron, "buffered", now)?;
                    }
                    Action::SkipOverlap(at) => {
                        record(tx, s, at, Kind::Cron, "skipped", now)?;
                    }
                    Action::Missed(at) => {
                        record(tx, s, at, Kind::Cron, "missed", now)?;
                    }
                }
            }
            if let Some(cursor) = decision.cursor {
                tx.execute(
                    "UPDATE schedules SET cursor_ms = CASE WHEN cursor_ms > ?2 THEN cursor_ms ELSE ?2 END WHERE workflow = ?1",
                    params![s.workflow(), ms(cursor)],
                )?;
            }
            Ok(())
            })?;
        }
        Ok(to_start.into_iter().map(|(at, kind)| start_recorded(conn, engine, s, at, kind)).collect())
    }
}

/// Whether the run of the latest started occurrence of `workflow` is still going. A run seen
/// ended is marked `finished`, so it is not asked about again.
fn previous_running(
    conn: &Mutex<Conn>,
    workflow: &str,
    run_state: &dyn Fn(RunId) -> Option<RunState>,
) -> crate::sql::Result<bool> {
    let runs: Vec<(i64, Option<i64>)> = {
        let c = lock(conn);
        let mut stmt = c.prepare(
            "SELECT id, run FROM schedule_occurrences WHERE workflow = ?1 AND status IN ('started', 'starting')",
        )?;
        stmt.query_map([workflow], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<crate::sql::Result<_>>()?
    };
    let mut running = false;
    for (id, run) in runs {
        // `starting` without a run: being started right now (or lost in a crash, then never).
        let Some(run) = run else { continue };
        match run_state(RunId::new(run)) {
            Some(state) if !state.is_terminal() => running = true,
            _ => {
                lock(conn).execute("UPDATE schedule_occurrences SET status = 'finished' WHERE id = ?1", [id])?;
            }
        }
    }
    Ok(running)
}

/// Starts a run of `workflow` now (`salt schedule trigger`), whatever its schedule, paused
/// state or overlap policy; recorded as an occurrence of kind `trigger` at `now`.
pub fn trigger(
    conn: &Mutex<Conn>,
    engine: &dyn Engine,
    workflow: &str,
    now: Timestamp,
) -> Result<Fired, ScheduleError> {
    let (s, at) = {
        let c = lock(conn);
        let s = get(&c, workflow)?.ok_or_else(|| ScheduleError::UnknownWorkflow(workflow.into()))?;
        let mut at = now;
        while !record(&c, &s, at, Kind::Trigger, "starting", now)? {
            at += SignedDuration::from_millis(1);
        }
        (s, at)
    };
    let fired = start_recorded(conn, engine, &s, at, Kind::Trigger);
    match &fired.error {
        Some(e) => Err(ScheduleError::Start { workflow: workflow.into(), message: e.clone() }),
        None => Ok(fired),
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Backfill {
    /// The occurrences it started (or failed to).
    pub started: Vec<Fired>,
    /// The occurrences in the range already dealt with before, left alone.
    #[schema(value_type = Vec<String>)]
    pub already: Vec<Timestamp>,
}

/// Starts one run for each occurrence of `workflow`'s schedule in `[from, to]` that has not
/// been dealt with yet (`salt schedule backfill`); at most [`MAX_BACKFILL`]. Neither the
/// paused state nor the overlap policy applies: the runs all start now.
pub fn backfill(
    conn: &Mutex<Conn>,
    engine: &dyn Engine,
    workflow: &str,
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
) -> Result<Backfill, ScheduleError> {
    let invalid = |message: String| ScheduleError::Invalid { field: "to".into(), message, details: Value::Null };
    if to < from {
        return Err(invalid(format!("`to` ({to}) is before `from` ({from})")));
    }
    if to > now {
        return Err(invalid(format!("`to` ({to}) is in the future; the schedule fires those itself")));
    }
    let (s, mut todo, mut already) = {
        let c = lock(conn);
        let (s, spec) = get_scheduled(&c, workflow)?;
        let times = spec
            .between(from, to, MAX_BACKFILL)
            .ok_or_else(|| invalid(format!("the range holds more than {MAX_BACKFILL} occurrences")))?;
        let (mut todo, mut already) = (Vec::new(), Vec::new());
        c.transaction(|tx| -> crate::sql::Result<()> {
            for at in times {
                if record(tx, &s, at, Kind::Backfill, "starting", now)? { todo.push(at) } else { already.push(at) }
            }
            Ok(())
        })?;
        (s, todo, already)
    };
    todo.sort();
    already.sort();
    let started = todo.into_iter().map(|at| start_recorded(conn, engine, &s, at, Kind::Backfill)).collect();
    Ok(Backfill { started, already })
}

/// A run started by an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRun {
    /// The workflow.
    pub workflow: String,
    /// The version started.
    pub version: i64,
    /// The run.
    pub run: i64,
}

/// The input an event's `payload` gives a workflow whose default input is `default`: an
/// object payload over an object default keeps the default's other fields; a `null` payload
/// is the default; anything else is the payload.
pub fn event_input(default: &Value, payload: Value) -> Value {
    match (default, payload) {
        (Value::Object(d), Value::Object(p)) => {
            let mut merged = d.clone();
            merged.extend(p);
            Value::Object(merged)
        }
        (d, Value::Null) => d.clone(),
        (_, p) => p,
    }
}

/// Starts every workflow triggered by event `name` with `payload`: each input is validated
/// against its workflow's input schema first, and if any does not match nothing starts.
pub fn start_event(
    conn: &Mutex<Conn>,
    engine: &dyn Engine,
    name: &str,
    payload: Value,
) -> Result<Vec<EventRun>, ScheduleError> {
    let targets: Vec<Schedule> =
        list(&lock(conn))?.into_iter().filter(|s| s.events.iter().any(|e| e == name)).collect();
    if targets.is_empty() {
        return Err(ScheduleError::UnknownEvent(name.into()));
    }
    let mut inputs = Vec::new();
    let mut bad = serde_json::Map::new();
    for s in &targets {
        let input = event_input(&s.input, payload.clone());
        let errors = schema_errors(&s.input_schema, &input);
        if errors.is_empty() {
            inputs.push(input);
        } else {
            bad.insert(s.workflow().into(), Value::from(errors));
        }
    }
    if !bad.is_empty() {
        let names: Vec<&String> = bad.keys().collect();
        let message = format!(
            "the payload does not match the input schema of {}",
            names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        );
        return Err(ScheduleError::Invalid { field: "payload".into(), message, details: Value::Object(bad) });
    }
    let mut runs = Vec::new();
    for (s, input) in targets.iter().zip(inputs) {
        let run = engine
            .start(&s.target, input)
            .map_err(|e| ScheduleError::Start { workflow: s.workflow().into(), message: e.to_string() })?;
        runs.push(EventRun { workflow: s.workflow().into(), version: s.target.version, run: run.get() });
    }
    Ok(runs)
}

/// The scheduler's loop: ticks at the start of every second until `shutdown` resolves. Each
/// tick runs on a blocking thread (the engine's `start` may block).
pub async fn run_scheduler(state: AppState, shutdown: impl std::future::Future<Output = ()>) {
    let scheduler = Arc::new(Scheduler::default());
    tokio::pin!(shutdown);
    loop {
        let now = Timestamp::now();
        let into_second = now.subsec_nanosecond().max(0) as u64;
        let wait = Duration::from_nanos(1_000_000_000 - into_second) + Duration::from_millis(5);
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
        let (state, scheduler) = (state.clone(), scheduler.clone());
        let tick = tokio::task::spawn_blocking(move || {
            let store = state.store.clone();
            let run_state = move |run: RunId| store.load(run).ok().map(|s| s.run.state);
            scheduler.tick(&state.conn, state.engine.as_ref(), &run_state, Timestamp::now())
        });
        match tick.await {
            Ok(Ok(fired)) => {
                for f in fired {
                    tracing::info!(workflow = %f.workflow, scheduled_at = %f.scheduled_at, run = ?f.run, "schedule fired");
                }
            }
            Ok(Err(e)) => tracing::error!("scheduler tick failed: {e}"),
            Err(e) => tracing::error!("scheduler tick panicked: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
