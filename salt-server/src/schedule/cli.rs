//! `salt schedule ls|trigger|backfill`: client commands talking to a server's REST API.

use std::process::ExitCode;

use clap::Subcommand;
use jiff::{Timestamp, Zoned};
use serde_json::Value;

use super::api::{BackfillRequest, ScheduleView};

/// `salt schedule …`.
#[derive(Debug, Clone, Subcommand)]
pub enum ScheduleCommand {
    /// Lists the schedules with their next 3 fire times, in their zone and in UTC.
    Ls {
        /// Prints the server's JSON (`salt --json`).
        #[arg(skip)]
        json: bool,
    },
    /// Starts a run of WORKFLOW now, whatever its schedule says.
    Trigger {
        /// The workflow.
        workflow: String,
        /// Prints the server's JSON (`salt --json`).
        #[arg(skip)]
        json: bool,
    },
    /// Starts one run for each occurrence of WORKFLOW's schedule in [FROM, TO] not run yet.
    Backfill {
        /// The workflow.
        workflow: String,
        /// The first time: RFC 3339 (2024-05-01T00:00:00Z), or local to the schedule's zone
        /// (2024-05-01T00:00 or 2024-05-01).
        #[arg(long)]
        from: String,
        /// The last time (included), in the same forms.
        #[arg(long)]
        to: String,
        /// Prints the server's JSON (`salt --json`).
        #[arg(skip)]
        json: bool,
    },
}

impl ScheduleCommand {
    /// The command, printing JSON when `json` (the global `--json`) is set.
    pub fn with_json(mut self, on: bool) -> Self {
        match &mut self {
            ScheduleCommand::Ls { json }
            | ScheduleCommand::Trigger { json, .. }
            | ScheduleCommand::Backfill { json, .. } => *json = on,
        }
        self
    }
}

/// Where the server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Its base URL, like `http://127.0.0.1:7878`.
    pub server: String,
    /// A token, sent as `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

/// A failed request: what to print and the exit code (2 for a request the server refused as
/// invalid, 1 otherwise).
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
    /// The server's error body, when it answered one.
    body: Option<Value>,
}

fn fail(message: String, code: u8) -> Failure {
    Failure { message, code, body: None }
}

impl Failure {
    fn answered(mut self, body: Value) -> Self {
        self.body = body.is_object().then_some(body);
        self
    }

    /// The error as the API's error body, as `--json` prints it.
    fn to_json(&self) -> Value {
        self.body.clone().unwrap_or_else(|| {
            let error = if self.code == 2 { "usage" } else { "failed" };
            serde_json::json!({"error": error, "message": self.message, "details": null})
        })
    }
}

fn request(remote: &Remote, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}{path}", remote.server.trim_end_matches('/'));
    let auth = remote.token.as_ref().map(|t| format!("Bearer {t}"));
    let result = match method {
        "GET" => {
            let mut req = agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.call()
        }
        _ => {
            let mut req = agent.post(&url).header("content-type", "application/json");
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            req.send(body.map(Value::to_string).unwrap_or_default())
        }
    };
    let mut resp = result.map_err(|e| fail(format!("cannot reach the server at {}: {e}", remote.server), 1))?;
    let status = resp.status();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(value);
    }
    let message =
        value["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("the server answered {status}"));
    let code = if matches!(status.as_u16(), 400 | 422) { 2 } else { 1 };
    Err(fail(message, code).answered(value))
}

/// Runs a `salt schedule` command against `remote`; prints its result and returns the exit
/// code (0, 1 for a failure, 2 for a request refused as invalid).
pub fn run(command: &ScheduleCommand, remote: &Remote) -> ExitCode {
    ExitCode::from(code(command, remote))
}

/// [`run`], with the exit code as a number.
pub fn code(command: &ScheduleCommand, remote: &Remote) -> u8 {
    match execute(command, remote) {
        Ok(out) => {
            print!("{out}");
            0
        }
        Err(failure) => {
            let (ScheduleCommand::Ls { json }
            | ScheduleCommand::Trigger { json, .. }
            | ScheduleCommand::Backfill { json, .. }) = command;
            if *json {
                eprintln!("{}", failure.to_json());
            } else {
                eprintln!("error: {}", failure.message);
            }
            failure.code
        }
    }
}

fn execute(command: &ScheduleCommand, remote: &Remote) -> Result<String, Failure> {
    let path = |w: &str, action: &str| format!("/api/v1/schedules/{}/{action}", encode(w));
    let pretty = |v: &Value| format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default());
    match command {
        ScheduleCommand::Ls { json } => {
            let v = request(remote, "GET", "/api/v1/schedules", None)?;
            if *json {
                return Ok(pretty(&v));
            }
            let views: Vec<ScheduleView> =
                serde_json::from_value(v).map_err(|e| fail(format!("unexpected answer from the server: {e}"), 1))?;
            Ok(render_ls(&views))
        }
        ScheduleCommand::Trigger { workflow, json } => {
            let v = request(remote, "POST", &path(workflow, "trigger"), None)?;
            if *json {
                return Ok(pretty(&v));
            }
            Ok(format!("started run {} of {} (version {})\n", v["run"], workflow, v["version"]))
        }
        ScheduleCommand::Backfill { workflow, from, to, json } => {
            let body = serde_json::to_value(BackfillRequest { from: from.clone(), to: to.clone() }).unwrap_or_default();
            let v = request(remote, "POST", &path(workflow, "backfill"), Some(&body))?;
            if *json {
                return Ok(pretty(&v));
            }
            Ok(render_backfill(workflow, &v))
        }
    }
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn local(text: &str) -> String {
    text.parse::<Zoned>().map(|z| z.strftime("%Y-%m-%d %H:%M:%S %Z").to_string()).unwrap_or_else(|_| text.to_string())
}

fn utc(text: &str) -> String {
    text.parse::<Timestamp>()
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// The table `salt schedule ls` prints: one row per schedule, its next fire times under it.
pub fn render_ls(views: &[ScheduleView]) -> String {
    if views.is_empty() {
        return "no schedules\n".into();
    }
    let mut rows =
        vec![["WORKFLOW", "VERSION", "SCHEDULE", "TIMEZONE", "STATE", "NEXT (LOCAL)", "NEXT (UTC)"].map(String::from)];
    for v in views {
        let state = if v.paused { "paused" } else { "active" };
        let mut first = true;
        for fire in &v.next {
            let lead = if first {
                [v.workflow.clone(), v.version.to_string(), v.schedule.clone(), v.timezone.clone(), state.into()]
            } else {
                Default::default()
            };
            first = false;
            let [a, b, c, d, e] = lead;
            rows.push([a, b, c, d, e, local(&fire.local), utc(&fire.utc)]);
        }
        if first {
            rows.push([
                v.workflow.clone(),
                v.version.to_string(),
                v.schedule.clone(),
                v.timezone.clone(),
                state.into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn render_backfill(workflow: &str, v: &Value) -> String {
    let mut out = String::new();
    let started = v["started"].as_array().cloned().unwrap_or_default();
    for f in &started {
        let at = utc(f["scheduled_at"].as_str().unwrap_or(""));
        match f["run"].as_i64() {
            Some(run) => out.push_str(&format!("{at}  run {run}\n")),
            None => out.push_str(&format!("{at}  not started: {}\n", f["error"].as_str().unwrap_or("?"))),
        }
    }
    let already = v["already"].as_array().map_or(0, Vec::len);
    out.push_str(&format!(
        "{workflow}: {} run(s) started, {already} occurrence(s) already dealt with\n",
        started.iter().filter(|f| f["run"].is_i64()).count()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::super::api::FireTime;
    use super::*;

    #[test]
    fn ls_shows_each_fire_time_in_its_zone_and_in_utc() {
        let fire = |local: &str, utc: &str| FireTime { local: local.into(), utc: utc.into() };
        let views = vec![
            ScheduleView {
                workflow: "etl".into(),
                version: 3,
                schedule: "30 2 * * *".into(),
                timezone: "Europe/Berlin".into(),
                paused: false,
                overlap: "skip".into(),
                catchup: "skip".into(),
                queue: None,
                events: vec![],
                next: vec![
                    fire("2024-03-30T02:30:00+01:00[Europe/Berlin]", "2024-03-30T01:30:00Z"),
                    fire("2024-03-31T03:00:00+02:00[Europe/Berlin]", "2024-03-31T01:00:00Z"),
                    fire("2024-04-01T02:30:00+02:00[Europe/Berlin]", "2024-04-01T00:30:00Z"),
                ],
                last: None,
            },
            ScheduleView {
                workflow: "report".into(),
                version: 1,
                schedule: "0 * * * *".into(),
                timezone: "UTC".into(),
                paused: true,
                overlap: "allow".into(),
                catchup: "run_once".into(),
                queue: None,
                events: vec![],
                next: vec![fire("2024-03-30T02:00:00+00:00[UTC]", "2024-03-30T02:00:00Z")],
                last: None,
            },
        ];
        assert_eq!(
            render_ls(&views),
            "\
WORKFLOW  VERSION  SCHEDULE    TIMEZONE       STATE   NEXT (LOCAL)              NEXT (UTC)
etl       3        30 2 * * *  Europe/Berlin  active  2024-03-30 02:30:00 CET   2024-03-30 01:30:00 UTC
                                                      2024-03-31 03:00:00 CEST  2024-03-31 01:00:00 UTC
                                                      2024-04-01 02:30:00 CEST  2024-04-01 00:30:00 UTC
report    1        0 * * * *   UTC            paused  2024-03-30 02:00:00 UTC   2024-03-30 02:00:00 UTC
"
        );
        assert_eq!(render_ls(&[]), "no schedules\n");
    }

    /// Starts every run it is asked to and counts them.
    #[derive(Default)]
    struct Counting(std::sync::Mutex<i64>);

    impl crate::engine::Engine for Counting {
        fn start(&self, _: &crate::engine::WorkflowRef, _: Value) -> salt_runtime::Result<salt_runtime::model::RunId> {
            let mut n = self.0.lock().unwrap();
            *n += 1;
            Ok(salt_runtime::model::RunId::new(*n))
        }
        fn recover(&self, _: salt_runtime::model::RunId) -> salt_runtime::Result<()> {
            Ok(())
        }
        fn rerun_from(
            &self,
            _: salt_runtime::model::RunId,
            _: salt_runtime::model::NodeId,
        ) -> salt_runtime::Result<()> {
            Ok(())
        }
        fn run_one(&self, _: salt_runtime::model::RunId, _: salt_runtime::model::NodeId) -> salt_runtime::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_commands_and_routes_against_a_real_server() {
        use std::sync::{Arc, Mutex};

        use serde_json::json;

        use crate::config::{SaltToml, WorkflowSettings};
        use crate::engine::WorkflowRef;
        use crate::state::AppState;

        let dir = tempfile::tempdir().unwrap();
        let store = salt_runtime::ops::open(dir.path().join("runs.db").to_str().unwrap()).unwrap();
        let conn = crate::sql::Conn::open(&dir.path().join("server.db").display().to_string()).unwrap();
        crate::schedule::migrate(&conn).unwrap();
        let cfg = SaltToml::parse(
            "[workflows.etl]\nschedule = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nevents = [\"go\"]\n",
        )
        .unwrap();
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        for (name, config) in [("etl", cfg.workflows.get("etl")), ("adhoc", None)] {
            let settings = WorkflowSettings::resolve(None, &json!({"n": 1}), config);
            let target = WorkflowRef { workflow: name.into(), version: 1, binary: "b".into() };
            crate::schedule::register_workflow(&conn, &target, &schema, &settings, Timestamp::now()).unwrap();
        }
        let state = AppState {
            db: String::new(),
            store: Arc::from(store),
            conn: Arc::new(Mutex::new(conn)),
            engine: Arc::new(Counting::default()),
            data: dir.path().to_path_buf(),
            dispatcher: salt_runtime::remote::Dispatcher::new(),
        };
        let app = crate::schedule::api::routes().with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let remote = Remote { server: format!("http://{}", listener.local_addr().unwrap()), token: None };
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let out = tokio::task::spawn_blocking(move || {
            let run = |c: ScheduleCommand| execute(&c, &remote).map_err(|f| (f.message, f.code));
            let ls = run(ScheduleCommand::Ls { json: false }).unwrap();
            let trigger = run(ScheduleCommand::Trigger { workflow: "etl".into(), json: false }).unwrap();
            let backfill = run(ScheduleCommand::Backfill {
                workflow: "etl".into(),
                from: "2024-03-30".into(),
                to: "2024-03-31T23:00".into(),
                json: false,
            })
            .unwrap();
            let unknown = run(ScheduleCommand::Trigger { workflow: "nope".into(), json: false }).unwrap_err();
            let unscheduled = run(ScheduleCommand::Backfill {
                workflow: "adhoc".into(),
                from: "2024-03-30".into(),
                to: "2024-03-31".into(),
                json: false,
            })
            .unwrap_err();
            let bad_time = run(ScheduleCommand::Backfill {
                workflow: "etl".into(),
                from: "yesterday".into(),
                to: "2024-03-31".into(),
                json: false,
            })
            .unwrap_err();
            let post = |path: &str, body: &str| {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut r = agent.post(&format!("{}{path}", remote.server)).send(body.to_string()).unwrap();
                (r.status().as_u16(), serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap()).unwrap())
            };
            let event_ok = post("/api/v1/events/go", r#"{"n": 5}"#);
            let event_bad = post("/api/v1/events/go", r#"{"n": "five"}"#);
            let event_none = post("/api/v1/events/nobody", "{}");
            let paused = post("/api/v1/schedules/etl/pause", "");
            (ls, trigger, backfill, unknown, unscheduled, bad_time, event_ok, event_bad, event_none, paused)
        })
        .await
        .unwrap();
        let (ls, trigger, backfill, unknown, unscheduled, bad_time, event_ok, event_bad, event_none, paused) = out;
        let lines: Vec<&str> = ls.lines().collect();
        assert_eq!(lines.len(), 4, "{ls}");
        assert!(lines[1].starts_with("etl       1        30 2 * * *  Europe/Berlin  active  "), "{ls}");
        assert_eq!(trigger, "started run 1 of etl (version 1)\n");
        assert_eq!(
            backfill,
            "2024-03-30 01:30:00 UTC  run 2\n2024-03-31 01:00:00 UTC  run 3\netl: 2 run(s) started, 0 occurrence(s) already dealt with\n"
        );
        assert_eq!(unknown, ("no workflow `nope` is registered".to_string(), 1));
        assert_eq!(unscheduled, ("workflow `adhoc` has no schedule".to_string(), 1));
        assert_eq!(bad_time.1, 2);
        assert!(bad_time.0.starts_with("from: `yesterday` is not a time"), "{}", bad_time.0);
        assert_eq!(event_ok, (202, json!({"event": "go", "runs": [{"workflow": "etl", "version": 1, "run": 4}]})));
        assert_eq!(event_bad.0, 422);
        assert_eq!(event_bad.1["details"]["errors"]["etl"][0], "/n: \"five\" is not of type \"integer\"");
        assert_eq!(event_none.0, 404);
        assert_eq!((paused.0, &paused.1["paused"]), (200, &json!(true)));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("etl daily/x"), "etl%20daily%2Fx");
    }
}
