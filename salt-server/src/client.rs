//! The client commands of `salt` (`runs`, `show`, `graph`, `logs`, `cancel`, `run`, …): each
//! calls the REST API of a server and prints what the workflow binary's command of the same
//! name prints (`--json`: the same JSON).

use std::io::Read as _;
use std::time::Duration;

use serde_json::{Value, json};

/// The server the client commands talk to when neither `--server` nor `SALT_SERVER` names one.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request (a 4xx): the exit code is 2.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// The server's error code (`not_found`, `invalid_input`, …).
        error: String,
        /// The server's details of the error (`null` when none).
        details: Value,
    },
    /// The server failed, or could not be reached: the exit code is 1.
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    /// The exit code of a command that failed so.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { .. } => 2,
            ClientError::Failed(_) => 1,
        }
    }

    /// The error as the API's error body `{error, message, details}`: what `--json` commands
    /// print.
    pub fn to_json(&self) -> Value {
        match self {
            ClientError::Refused { message, error, details, .. } => {
                serde_json::json!({"error": error, "message": message, "details": details})
            }
            ClientError::Failed(message) => serde_json::json!({"error": "failed", "message": message, "details": null}),
        }
    }
}

/// A server's answer.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_str(&self.body)
            .map_err(|e| ClientError::Failed(format!("the server's answer is not JSON: {e}")))
    }
}

/// A blocking client of one server's REST API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// The most a client reads of one answer: 1 GiB.
const MAX_REPLY: u64 = 1 << 30;

impl Client {
    /// A client of the server at `base` (`http://host:port`), sending `token` when given.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self { base: base.trim_end_matches('/').to_string(), token: token.filter(|t| !t.is_empty()), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, ClientError> {
        let mut response =
            result.map_err(|e| ClientError::Failed(format!("cannot reach the server at {}: {e}", self.base)))?;
        let status = response.status().as_u16();
        let mut body = String::new();
        response
            .body_mut()
            .with_config()
            .limit(MAX_REPLY)
            .reader()
            .read_to_string(&mut body)
            .map_err(|e| ClientError::Failed(format!("reading the server's answer: {e}")))?;
        if status >= 400 {
            let answer = serde_json::from_str::<Value>(&body).ok();
            let message = answer
                .as_ref()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                .unwrap_or_else(|| format!("the server answered {status}: {body}"));
            return Err(if status < 500 {
                let error = answer
                    .as_ref()
                    .and_then(|v| v.get("error").and_then(Value::as_str))
                    .unwrap_or("refused")
                    .to_string();
                let details = answer.and_then(|mut v| v.get_mut("details").map(Value::take)).unwrap_or(Value::Null);
                ClientError::Refused { status, message, error, details }
            } else {
                ClientError::Failed(message)
            });
        }
        Ok(Reply { status, body })
    }

    /// `GET /api/v1{path}`.
    pub fn get(&self, path: &str) -> Result<Reply, ClientError> {
        let mut request = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(request.call())
    }

    /// `POST /api/v1{path}` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        let mut request = self.agent.post(self.url(path)).header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(request.send(body.to_string().as_bytes()))
    }

    /// `PUT /api/v1{path}` with a JSON body.
    pub fn put_json(&self, path: &str, body: &Value) -> Result<Reply, ClientError> {
        let mut request = self.agent.put(self.url(path)).header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(request.send(body.to_string().as_bytes()))
    }

    /// `POST /api/v1{path}` with `bytes`.
    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> Result<Reply, ClientError> {
        let mut request = self.agent.post(self.url(path)).header("Content-Type", "application/octet-stream");
        if let Some(t) = &self.token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        self.finish(request.send(bytes))
    }

    /// Waits until run `run` ends (or is interrupted), polling its state; returns its snapshot.
    pub fn wait(&self, run: i64) -> Result<Value, ClientError> {
        loop {
            let snapshot = self.get(&format!("/runs/{run}"))?.json()?;
            let state = snapshot["run"]["state"].as_str().unwrap_or_default();
            if matches!(state, "succeeded" | "failed" | "cancelled" | "terminated" | "interrupted") {
                return Ok(snapshot);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Pretty JSON with a newline, as the workflow binary prints `--json`.
pub fn pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Percent-encodes a query value.
pub fn query_escape(text: &str) -> String {
    segment(text)
}

/// Percent-encodes a path segment (a node given by task name, a workflow name).
pub fn segment(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `runs` as text: the table the workflow binary prints.
pub fn runs_text(runs: &[Value]) -> String {
    if runs.is_empty() {
        return "no runs yet; start one with `salt run WORKFLOW`\n".into();
    }
    let mut text = format!("{:>5}  {:<24} {:<12} {:<20} {:>9}\n", "run", "workflow", "state", "started", "duration");
    let now = salt_runtime::model::now_ms();
    for r in runs {
        let state = r["state"].as_str().unwrap_or_default();
        let started_at = r["started_at"].as_i64();
        let started = started_at.map(format_time).unwrap_or_default();
        let duration = match (started_at, r["finished_at"].as_i64()) {
            (Some(a), Some(b)) => salt_runtime::render::human_ms(b - a),
            (Some(a), None) if matches!(state, "running" | "paused") => salt_runtime::render::human_ms(now - a),
            _ => String::new(),
        };
        text.push_str(&format!(
            "{:>5}  {:<24} {:<12} {:<20} {:>9}\n",
            r["id"].as_i64().unwrap_or_default(),
            r["workflow"].as_str().unwrap_or_default(),
            state,
            started,
            duration
        ));
    }
    for r in runs.iter().filter(|r| r["state"] == "interrupted") {
        text.push_str(&format!(
            "run {} was interrupted: its orchestrator stopped before the run ended; `salt recover {}` resumes it\n",
            r["id"], r["id"]
        ));
    }
    text
}

/// `logs` as text: each attempt under a header, as the workflow binary prints it.
pub fn logs_text(logs: &Value) -> String {
    let mut text = String::new();
    let empty = Vec::new();
    let lines = logs["logs"].as_array().unwrap_or(&empty);
    for a in logs["attempts"].as_array().unwrap_or(&empty) {
        let state = a["state"].as_str().unwrap_or_default();
        let how = match a["error"]["message"].as_str() {
            Some(m) => format!("{state}: {m}"),
            None => state.to_string(),
        };
        let node = &a["node"];
        let task = logs["tasks"][node.to_string()].as_str().unwrap_or("?");
        text.push_str(&format!(
            "── node {node} {task} · attempt {} · {} · {how}\n",
            a["attempt"],
            a["executor"].as_str().unwrap_or_default()
        ));
        for l in lines.iter().filter(|l| l["node"] == *node && l["attempt"] == a["attempt"]) {
            text.push_str(l["line"].as_str().unwrap_or_default());
            text.push('\n');
        }
    }
    if text.is_empty() {
        text.push_str("no attempts yet\n");
    }
    text
}

/// How a run ended, as the workflow binary reports it: the output on stdout (text), the state
/// on stderr; `--json`: the run's outcome. Returns the exit code: 0 when it succeeded.
pub fn report(snapshot: &Value, json: bool) -> (String, String, u8) {
    let run = &snapshot["run"];
    let state = run["state"].as_str().unwrap_or_default();
    let code = if state == "succeeded" { 0 } else { 1 };
    if json {
        let outcome = json!({
            "run": run["id"], "workflow": run["workflow"], "state": state,
            "output": run["output"], "error": run["error"],
        });
        return (pretty(&outcome), String::new(), code);
    }
    let (id, workflow) = (&run["id"], run["workflow"].as_str().unwrap_or_default());
    if state == "succeeded" {
        let out = if run["output"].is_null() { String::new() } else { pretty(&run["output"]) };
        (out, format!("run {id} of `{workflow}` succeeded\n"), code)
    } else {
        let why = run["error"]["message"].as_str().unwrap_or_default();
        (
            String::new(),
            format!("run {id} of `{workflow}` {state}: {why}\nsee `salt show {id}` and `salt logs {id}`\n"),
            code,
        )
    }
}

fn format_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%F %T").to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("load_rows"), "load_rows");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn runs_print_as_the_binary_prints_them() {
        let runs = [json!({"id": 3, "workflow": "etl", "state": "succeeded", "started_at": 0, "finished_at": 1500})];
        assert_eq!(
            runs_text(&runs),
            format!(
                "{:>5}  {:<24} {:<12} {:<20} {:>9}\n{:>5}  {:<24} {:<12} {:<20} {:>9}\n",
                "run",
                "workflow",
                "state",
                "started",
                "duration",
                3,
                "etl",
                "succeeded",
                "1970-01-01 00:00:00",
                salt_runtime::render::human_ms(1500)
            )
        );
        assert_eq!(runs_text(&[]), "no runs yet; start one with `salt run WORKFLOW`\n");
    }
}
