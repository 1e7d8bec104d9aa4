use std::collections::HashMap;

use serde_json::json;

use super::*;
use crate::config::{SaltToml, WorkflowSettings};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fires(expr: &str, zone: &str, after: &str, n: usize) -> Vec<(String, String)> {
    let spec = ScheduleSpec::parse(expr, zone).unwrap();
    next_fires_after(&spec, ts(after), n)
        .into_iter()
        .map(|(z, t)| (z.strftime("%Y-%m-%d %H:%M %Z").to_string(), t.to_string()))
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn a_local_time_skipped_by_the_spring_change_fires_once_after_the_gap() {
    // Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist that day.
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2024-03-29T12:00:00Z", 3),
        pairs(&[
            ("2024-03-30 02:30 CET", "2024-03-30T01:30:00Z"),
            ("2024-03-31 03:00 CEST", "2024-03-31T01:00:00Z"),
            ("2024-04-01 02:30 CEST", "2024-04-01T00:30:00Z"),
        ])
    );
    // New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT.
    assert_eq!(
        fires("30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z", 3),
        pairs(&[
            ("2024-03-10 03:00 EDT", "2024-03-10T07:00:00Z"),
            ("2024-03-11 02:30 EDT", "2024-03-11T06:30:00Z"),
            ("2024-03-12 02:30 EDT", "2024-03-12T06:30:00Z"),
        ])
    );
}

#[test]
fn a_local_time_repeated_by_the_autumn_change_fires_once() {
    // Berlin, 2024-10-27: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00Z", 3),
        pairs(&[
            ("2024-10-27 02:30 CEST", "2024-10-27T00:30:00Z"),
            ("2024-10-28 02:30 CET", "2024-10-28T01:30:00Z"),
            ("2024-10-29 02:30 CET", "2024-10-29T01:30:00Z"),
        ])
    );
    // Asked from inside the repeated hour (after the first 02:30), it does not fire again.
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2024-10-27T01:00:00Z", 1),
        pairs(&[("2024-10-28 02:30 CET", "2024-10-28T01:30:00Z")])
    );
    // New York, 2024-11-03: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice. Searched
    // from inside the repeated hour, the second 01:30 is not an occurrence either.
    let spec = ScheduleSpec::parse("30 1 * * *", "America/New_York").unwrap();
    assert_eq!(spec.next_after(ts("2024-11-03T05:00:00Z")), Some(ts("2024-11-03T05:30:00Z")));
    assert_eq!(spec.next_after(ts("2024-11-03T06:00:00Z")), Some(ts("2024-11-04T06:30:00Z")));
    assert_eq!(
        spec.latest_in(ts("2024-11-03T05:00:00Z"), ts("2024-11-03T07:00:00Z")),
        Some(ts("2024-11-03T05:30:00Z"))
    );
    assert_eq!(spec.latest_in(ts("2024-11-03T05:30:00Z"), ts("2024-11-04T06:00:00Z")), None);
}

#[test]
fn an_hourly_schedule_follows_real_time_through_both_changes() {
    assert_eq!(
        fires("0 * * * *", "Europe/Berlin", "2024-10-26T23:30:00Z", 4)
            .into_iter()
            .map(|(local, _)| local)
            .collect::<Vec<_>>(),
        ["2024-10-27 02:00 CEST", "2024-10-27 02:00 CET", "2024-10-27 03:00 CET", "2024-10-27 04:00 CET"]
    );
}

#[test]
fn bad_specs_are_errors() {
    assert!(
        ScheduleSpec::parse("61 * * * *", "UTC")
            .unwrap_err()
            .to_string()
            .starts_with("invalid cron expression `61 * * * *`")
    );
    assert!(ScheduleSpec::parse("* * *", "UTC").is_err());
    assert_eq!(ScheduleSpec::parse("* * * * *", "Mars/Base").unwrap_err(), SpecError::Zone("Mars/Base".into()));
    assert!(ScheduleSpec::parse("*/10 * * * * *", "UTC").is_ok());
    assert!(ScheduleSpec::parse("@daily", "UTC").is_ok());
}

/// An engine that records the runs it is asked to start; runs stay `Running` until finished.
#[derive(Default)]
struct FakeEngine {
    started: Mutex<Vec<(WorkflowRef, Value)>>,
    states: Mutex<HashMap<i64, RunState>>,
}

impl FakeEngine {
    fn starts(&self) -> Vec<(String, i64, Value)> {
        self.started.lock().unwrap().iter().map(|(w, i)| (w.workflow.clone(), w.version, i.clone())).collect()
    }

    fn finish_all(&self) {
        for s in self.states.lock().unwrap().values_mut() {
            *s = RunState::Succeeded;
        }
    }

    fn state(&self, run: RunId) -> Option<RunState> {
        self.states.lock().unwrap().get(&run.get()).copied()
    }
}

impl Engine for FakeEngine {
    fn start(&self, workflow: &WorkflowRef, input: Value) -> salt_runtime::Result<RunId> {
        let mut started = self.started.lock().unwrap();
        started.push((workflow.clone(), input));
        let id = started.len() as i64;
        self.states.lock().unwrap().insert(id, RunState::Running);
        Ok(RunId::new(id))
    }
    fn recover(&self, _: RunId) -> salt_runtime::Result<()> {
        Ok(())
    }
    fn rerun_from(&self, _: RunId, _: salt_runtime::model::NodeId) -> salt_runtime::Result<()> {
        Ok(())
    }
    fn run_one(&self, _: RunId, _: salt_runtime::model::NodeId) -> salt_runtime::Result<()> {
        Ok(())
    }
}

fn db() -> Mutex<Conn> {
    let conn = Conn::memory().unwrap();
    migrate(&conn).unwrap();
    migrate(&conn).unwrap();
    Mutex::new(conn)
}

fn register(conn: &Mutex<Conn>, version: i64, toml: &str, at: &str) {
    let cfg = SaltToml::parse(toml).unwrap();
    let settings = WorkflowSettings::resolve(None, &json!({"n": 1}), cfg.workflows.get("etl"));
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    check_settings(&schema, &settings).unwrap();
    let target = WorkflowRef { workflow: "etl".into(), version, binary: format!("b{version}") };
    register_workflow(&lock(conn), &target, &schema, &settings, ts(at)).unwrap();
}

struct Clock<'a> {
    conn: &'a Mutex<Conn>,
    engine: &'a FakeEngine,
    scheduler: Scheduler,
}

impl Clock<'_> {
    fn tick(&self, at: &str) -> Vec<(String, Option<i64>)> {
        self.scheduler
            .tick(self.conn, self.engine, &|r| self.engine.state(r), ts(at))
            .unwrap()
            .into_iter()
            .map(|f| (f.scheduled_at.to_string(), f.run))
            .collect()
    }

    fn statuses(&self) -> Vec<(String, String, String)> {
        let mut o = occurrences(&lock(self.conn), "etl", 100).unwrap();
        o.reverse();
        o.into_iter().map(|o| (o.scheduled_at.to_string(), o.kind, o.status)).collect()
    }
}

fn fired(at: &str, run: i64) -> (String, Option<i64>) {
    (at.to_string(), Some(run))
}

fn occ(at: &str, kind: &str, status: &str) -> (String, String, String) {
    (at.into(), kind.into(), status.into())
}

const EVERY_SECOND: &str = "[workflows.etl]\nschedule = \"* * * * * *\"\noverlap = \"allow\"\n";

#[test]
fn an_every_second_schedule_fires_each_second_once() {
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, EVERY_SECOND, "2024-05-01T00:00:00.200Z");
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T00:00:00.900Z"), []);
    assert_eq!(clock.tick("2024-05-01T00:00:01.005Z"), [fired("2024-05-01T00:00:01Z", 1)]);
    assert_eq!(clock.tick("2024-05-01T00:00:01.500Z"), []);
    assert_eq!(clock.tick("2024-05-01T00:00:02.005Z"), [fired("2024-05-01T00:00:02Z", 2)]);
    assert_eq!(engine.starts(), [("etl".into(), 1, json!({"n": 1})), ("etl".into(), 1, json!({"n": 1}))]);
}

#[test]
fn a_restart_never_fires_an_occurrence_twice() {
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, "[workflows.etl]\nschedule = \"0 3 * * *\"\n", "2024-05-01T00:00:00Z");
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T03:00:00.010Z"), [fired("2024-05-01T03:00:00Z", 1)]);
    // A second scheduler (the server started again) with a clock a little behind.
    let again = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(again.tick("2024-05-01T03:00:00.005Z"), []);
    assert_eq!(again.tick("2024-05-01T03:00:02Z"), []);
    // Even with the cursor lost (the row recorded but the cursor not), the UNIQUE key holds.
    lock(&conn).execute("UPDATE schedules SET cursor_ms = 0", ()).unwrap();
    assert_eq!(again.tick("2024-05-01T03:00:03Z"), []);
    assert_eq!(engine.starts().len(), 1);
    // A run recorded as starting whose server died before it started is not started again.
    lock(&conn).execute("UPDATE schedule_occurrences SET status = 'starting', run = NULL", ()).unwrap();
    lock(&conn).execute("UPDATE schedules SET cursor_ms = 0", ()).unwrap();
    assert_eq!(again.tick("2024-05-01T03:00:04Z"), []);
    assert_eq!(engine.starts().len(), 1);
}

#[test]
fn a_paused_schedule_does_not_fire_and_resuming_fires_no_old_tick() {
    let (conn, engine) = (db(), FakeEngine::default());
    register(
        &conn,
        1,
        "[workflows.etl]\nschedule = \"0 * * * *\"\ncatchup = \"run_once\"\npaused = true\n",
        "2024-05-01T00:00:00Z",
    );
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T01:00:01Z"), []);
    assert_eq!(clock.tick("2024-05-01T05:00:01Z"), []);
    set_paused(&lock(&conn), "etl", false, ts("2024-05-01T05:30:00Z")).unwrap();
    assert_eq!(clock.tick("2024-05-01T05:30:01Z"), [], "run_once does not catch up on paused time");
    assert_eq!(clock.tick("2024-05-01T06:00:01Z"), [fired("2024-05-01T06:00:00Z", 1)]);
    assert_eq!(clock.statuses(), [occ("2024-05-01T06:00:00Z", "cron", "started")]);
    // Re-registering keeps the paused state unless salt.toml says otherwise.
    set_paused(&lock(&conn), "etl", true, ts("2024-05-01T06:10:00Z")).unwrap();
    register(&conn, 2, "[workflows.etl]\nschedule = \"0 * * * *\"\n", "2024-05-01T06:20:00Z");
    assert!(get(&lock(&conn), "etl").unwrap().unwrap().paused);
}

#[test]
fn catchup_policies_after_downtime() {
    for (policy, expected) in [("skip", vec![]), ("run_once", vec![fired("2024-05-01T05:00:00Z", 1)])] {
        let (conn, engine) = (db(), FakeEngine::default());
        let toml = format!("[workflows.etl]\nschedule = \"0 * * * *\"\ncatchup = \"{policy}\"\n");
        register(&conn, 1, &toml, "2024-05-01T00:30:00Z");
        let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
        // The server was down from 00:30 to 05:20.
        assert_eq!(clock.tick("2024-05-01T05:20:00Z"), expected, "{policy}");
        let kind = if policy == "skip" { ("cron", "missed") } else { ("catchup", "started") };
        assert_eq!(clock.statuses(), [occ("2024-05-01T05:00:00Z", kind.0, kind.1)], "{policy}");
        engine.finish_all();
        assert_eq!(clock.tick("2024-05-01T06:00:01Z"), [fired("2024-05-01T06:00:00Z", expected.len() as i64 + 1)]);
    }
}

#[test]
fn overlap_policies_against_a_running_run() {
    let every_5s = |overlap: &str| format!("[workflows.etl]\nschedule = \"*/5 * * * * *\"\noverlap = \"{overlap}\"\n");
    // skip
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, &every_5s("skip"), "2024-05-01T00:00:00Z");
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T00:00:05Z"), [fired("2024-05-01T00:00:05Z", 1)]);
    assert_eq!(clock.tick("2024-05-01T00:00:10Z"), []);
    engine.finish_all();
    assert_eq!(clock.tick("2024-05-01T00:00:15Z"), [fired("2024-05-01T00:00:15Z", 2)]);
    assert_eq!(
        clock.statuses(),
        [
            occ("2024-05-01T00:00:05Z", "cron", "finished"),
            occ("2024-05-01T00:00:10Z", "cron", "skipped"),
            occ("2024-05-01T00:00:15Z", "cron", "started"),
        ]
    );
    // buffer_one
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, &every_5s("buffer_one"), "2024-05-01T00:00:00Z");
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T00:00:05Z"), [fired("2024-05-01T00:00:05Z", 1)]);
    assert_eq!(clock.tick("2024-05-01T00:00:10Z"), []);
    assert_eq!(clock.tick("2024-05-01T00:00:15Z"), []);
    engine.finish_all();
    assert_eq!(clock.tick("2024-05-01T00:00:17Z"), [fired("2024-05-01T00:00:10Z", 2)]);
    assert_eq!(
        clock.statuses(),
        [
            occ("2024-05-01T00:00:05Z", "cron", "finished"),
            occ("2024-05-01T00:00:10Z", "cron", "started"),
            occ("2024-05-01T00:00:15Z", "cron", "skipped"),
        ]
    );
    // allow
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, &every_5s("allow"), "2024-05-01T00:00:00Z");
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T00:00:05Z"), [fired("2024-05-01T00:00:05Z", 1)]);
    assert_eq!(clock.tick("2024-05-01T00:00:10Z"), [fired("2024-05-01T00:00:10Z", 2)]);
}

#[test]
fn a_new_version_is_what_the_schedule_starts_and_a_changed_cron_does_not_fire_the_past() {
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, "[workflows.etl]\nschedule = \"0 3 * * *\"\n", "2024-05-01T00:00:00Z");
    register(&conn, 2, "[workflows.etl]\nschedule = \"0 2 * * *\"\ncatchup = \"run_once\"\n", "2024-05-01T02:30:00Z");
    let clock = Clock { conn: &conn, engine: &engine, scheduler: Scheduler::default() };
    assert_eq!(clock.tick("2024-05-01T02:30:01Z"), [], "02:00 was before the registration");
    assert_eq!(clock.tick("2024-05-02T02:00:00Z"), [fired("2024-05-02T02:00:00Z", 1)]);
    assert_eq!(engine.starts()[0].1, 2);
}

#[test]
fn trigger_and_backfill() {
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, "[workflows.etl]\nschedule = \"0 3 * * *\"\npaused = true\n", "2024-05-01T00:00:00Z");
    let f = trigger(&conn, &engine, "etl", ts("2024-05-01T00:00:00.500Z")).unwrap();
    assert_eq!((f.kind, f.run), ("trigger", Some(1)));
    let f = trigger(&conn, &engine, "etl", ts("2024-05-01T00:00:00.500Z")).unwrap();
    assert_eq!(f.scheduled_at, ts("2024-05-01T00:00:00.501Z"), "two triggers at one instant are two occurrences");
    assert!(matches!(trigger(&conn, &engine, "nope", Timestamp::now()), Err(ScheduleError::UnknownWorkflow(_))));

    let now = ts("2024-05-10T00:00:00Z");
    let b = backfill(&conn, &engine, "etl", ts("2024-05-02T03:00:00Z"), ts("2024-05-04T12:00:00Z"), now).unwrap();
    let times: Vec<String> = b.started.iter().map(|f| f.scheduled_at.to_string()).collect();
    assert_eq!(times, ["2024-05-02T03:00:00Z", "2024-05-03T03:00:00Z", "2024-05-04T03:00:00Z"]);
    let b = backfill(&conn, &engine, "etl", ts("2024-05-01T00:00:00Z"), ts("2024-05-03T12:00:00Z"), now).unwrap();
    let times: Vec<String> = b.started.iter().map(|f| f.scheduled_at.to_string()).collect();
    assert_eq!(times, ["2024-05-01T03:00:00Z"]);
    assert_eq!(b.already, [ts("2024-05-02T03:00:00Z"), ts("2024-05-03T03:00:00Z")]);
    assert_eq!(engine.starts().len(), 6);
    let err = backfill(&conn, &engine, "etl", ts("2020-01-01T00:00:00Z"), ts("2024-01-01T00:00:00Z"), now).unwrap_err();
    assert_eq!(err.to_string(), "to: the range holds more than 1000 occurrences");
    let err = backfill(&conn, &engine, "etl", ts("2024-05-03T00:00:00Z"), ts("2024-05-02T00:00:00Z"), now).unwrap_err();
    assert!(err.to_string().contains("is before"), "{err}");
    assert_eq!(engine.starts().len(), 6);
}

#[test]
fn events_start_every_workflow_they_trigger_with_a_validated_payload() {
    let (conn, engine) = (db(), FakeEngine::default());
    register(&conn, 1, "[workflows.etl]\nevents = [\"uploaded\"]\n", "2024-05-01T00:00:00Z");
    let other = WorkflowRef { workflow: "report".into(), version: 4, binary: "r".into() };
    let mut settings = WorkflowSettings::resolve(None, &Value::Null, None);
    settings.events = vec!["uploaded".into(), "nightly".into()];
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}, "who": {"type": "string"}}});
    register_workflow(&lock(&conn), &other, &schema, &settings, ts("2024-05-01T00:00:00Z")).unwrap();

    let runs = start_event(&conn, &engine, "uploaded", json!({"who": "ann"})).unwrap();
    let summary: Vec<(String, i64, i64)> = runs.into_iter().map(|r| (r.workflow, r.version, r.run)).collect();
    assert_eq!(summary, [("etl".into(), 1, 1), ("report".into(), 4, 2)]);
    assert_eq!(engine.starts()[0].2, json!({"n": 1, "who": "ann"}), "the default input fills what the payload lacks");
    assert_eq!(engine.starts()[1].2, json!({"who": "ann"}));

    let err = start_event(&conn, &engine, "uploaded", json!({"n": "three"})).unwrap_err();
    let ScheduleError::Invalid { field, message, details } = err else { panic!() };
    assert_eq!(field, "payload");
    assert_eq!(message, "the payload does not match the input schema of `etl`, `report`");
    assert_eq!(details["etl"][0], "/n: \"three\" is not of type \"integer\"");
    assert_eq!(engine.starts().len(), 2, "nothing started");
    assert!(matches!(start_event(&conn, &engine, "none", json!({})), Err(ScheduleError::UnknownEvent(_))));
}

#[test]
fn a_default_input_that_breaks_the_schema_is_refused_at_registration() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
    let settings = WorkflowSettings::resolve(Some("0 3 * * *"), &json!({"n": "x"}), None);
    let err = check_settings(&schema, &settings).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input: the default input does not match the input schema: /n: \"x\" is not of type \"integer\""
    );
}

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn two_servers_on_one_postgres_database_start_each_occurrence_once() {
    let url = salt_testkit::postgres::database("schedules");
    let (a, b) = (Mutex::new(crate::db::open(&url).unwrap()), Mutex::new(crate::db::open(&url).unwrap()));
    register(&a, 1, EVERY_SECOND, "2024-05-01T00:00:00.200Z");
    let engine = FakeEngine::default();
    // Both servers tick every second at once, each with its own scheduler and connection.
    std::thread::scope(|s| {
        for conn in [&a, &b] {
            let engine = &engine;
            s.spawn(move || {
                let clock = Clock { conn, engine, scheduler: Scheduler::default() };
                for sec in 1..=20 {
                    clock.tick(&format!("2024-05-01T00:00:{sec:02}.005Z"));
                }
            });
        }
    });
    assert_eq!(engine.starts().len(), 20);
    let clock = Clock { conn: &b, engine: &engine, scheduler: Scheduler::default() };
    let statuses = clock.statuses();
    let expected: Vec<_> = (1..=20).map(|sec| occ(&format!("2024-05-01T00:00:{sec:02}Z"), "cron", "started")).collect();
    assert_eq!(statuses, expected);
}
