//! The REST API and the `salt` client commands against a server on loopback.
//!
//! The server runs in this test process on a real TCP port; the engine is a stand-in defined
//! here (the run host is not part of these tests) that records what it is asked and stores a
//! queued run for each start. The client commands run as real `salt` processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use salt_runtime::model::{NodeId, NodeRecord, NodeState, RunId, RunState, now_ms};
use salt_runtime::store::{NewRun, Store, Write};
use salt_server::engine::{Engine, WorkflowRef};
use salt_server::state::AppState;
use salt_server::{auth, db, registry, server};

#[path = "api/forgery.rs"]
mod forgery;

/// Records each call; `start` stores a queued run with a root node and a child node.
struct TestEngine {
    store: Mutex<Option<Arc<dyn Store>>>,
    calls: Mutex<Vec<String>>,
}

impl TestEngine {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Engine for TestEngine {
    fn start(&self, workflow: &WorkflowRef, input: Value) -> salt_runtime::Result<RunId> {
        self.calls.lock().unwrap().push(format!("start {} v{} {input}", workflow.workflow, workflow.version));
        let store = self.store.lock().unwrap().clone().unwrap();
        let root = NodeRecord { task: workflow.workflow.clone(), state: NodeState::Waiting, ..Default::default() };
        let run = store
            .create_run(NewRun {
                workflow: &workflow.workflow,
                input: &input,
                executor: "remote",
                parallelism: 1,
                root: &root,
                lease: None,
            })
            .map_err(|e| salt_runtime::Error::new(salt_runtime::ErrorKind::Store, e))?;
        let child = NodeRecord {
            id: NodeId::new(1),
            parent: Some(NodeId::ROOT),
            task: "load".into(),
            state: NodeState::Pending,
            ..Default::default()
        };
        store
            .commit(None, &[Write::InsertNode { run, node: Box::new(child) }])
            .map_err(|e| salt_runtime::Error::new(salt_runtime::ErrorKind::Store, e))?;
        Ok(run)
    }

    fn recover(&self, run: RunId) -> salt_runtime::Result<()> {
        self.calls.lock().unwrap().push(format!("recover {run}"));
        Ok(())
    }

    fn rerun_from(&self, run: RunId, from: NodeId) -> salt_runtime::Result<()> {
        self.calls.lock().unwrap().push(format!("rerun {run} {from}"));
        Ok(())
    }

    fn run_one(&self, run: RunId, node: NodeId) -> salt_runtime::Result<()> {
        self.calls.lock().unwrap().push(format!("run_one {run} {node}"));
        Ok(())
    }
}

/// A script that answers `manifest --json` like a workflow binary with the workflow `etl`
/// (input `{n: integer, width: u32}`, `n` required) documented `doc`; the schema of `width` is
/// what schemars writes for a `u32`, with no `maximum`.
fn fake_binary(dir: &Path, name: &str, doc: &str) -> PathBuf {
    let manifest = json!({
        "binary": name, "salt_version": "0.1.0",
        "tasks": [{"name": "load", "may_spawn": false}],
        "workflows": [{
            "name": "etl", "doc": doc, "may_spawn": true,
            "input_schema": {"type": "object", "properties": {
                "n": {"type": "integer"},
                "width": {"type": "integer", "format": "uint32", "minimum": 0}
            }, "required": ["n"]},
            "default_input": null, "schedule": null
        }]
    });
    let path = dir.join(name);
    let script = format!("#!/bin/sh\nif [ \"$1\" = manifest ]; then cat <<'EOF'\n{manifest}\nEOF\nelse exit 2; fi\n");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

struct Server {
    dir: tempfile::TempDir,
    url: String,
    state: AppState,
    engine: Arc<TestEngine>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Server {
    /// A server on a free loopback port, with `etl` v1 registered.
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(TestEngine { store: Mutex::new(None), calls: Mutex::new(Vec::new()) });
        let db = dir.path().join("server.db").display().to_string();
        let state =
            server::open_state(&db, &dir.path().join("data"), engine.clone(), salt_runtime::remote::Dispatcher::new())
                .unwrap();
        *engine.store.lock().unwrap() = Some(state.store.clone());
        let bin = fake_binary(dir.path(), "etl", "v1");
        registry::register_file(&state.conn.lock().unwrap(), &state.data, &bin, None).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let serving = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                server::serve_on(listener, serving, async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        Server { dir, url: format!("http://{addr}"), state, engine, stop: Some(tx), thread: Some(thread) }
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> (u16, Value, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("{}{path}", self.url);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req = req.header("Content-Type", "application/json");
        let response = match body {
            Some(b) => agent.run(req.body(b.to_vec()).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, json, text)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.request("GET", path, None, None);
        (s, v)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (s, v, _) = self.request("POST", path, None, Some(body.to_string().as_bytes()));
        (s, v)
    }

    fn run_count(&self) -> i64 {
        self.state.conn.lock().unwrap().query_row("SELECT COUNT(*) FROM runs", (), |r| r.get(0)).unwrap()
    }

    fn set_run_state(&self, run: i64, state: RunState) {
        self.state
            .store
            .commit(None, &[Write::RunState { run: RunId::new(run), state, output: None, error: None, at: now_ms() }])
            .unwrap();
    }

    fn salt(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_salt"))
            .args(args)
            .env("SALT_SERVER", &self.url)
            .env_remove("SALT_TOKEN")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn a_bad_input_is_refused_naming_the_field_and_nothing_is_stored() {
    let server = Server::start();
    let (status, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": "three"}}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_input");
    assert_eq!(body["details"]["field"], "input");
    assert_eq!(body["details"]["errors"][0]["path"], "/n");
    assert!(body["message"].as_str().unwrap().contains("at `/n`"), "{body}");

    let (status, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "input": {}}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"]["errors"][0]["path"], "/n");

    let (status, body) = server.post("/api/v1/runs", json!({"workflow": "nope", "input": {"n": 1}}));
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    assert_eq!(body["message"], "no workflow `nope` is registered");
    let (status, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}, "version": 9}));
    assert_eq!((status, body["message"].as_str()), (404, Some("workflow `etl` has no version 9")));

    let (status, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "inptu": {"n": 1}}));
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("unknown field `inptu`"), "{body}");

    // Over the limit (asked of the router itself: over TCP the server may close the connection
    // before the client has sent the whole body).
    let big = format!(r#"{{"workflow": "etl", "input": {{"n": 1, "pad": "{}"}}}}"#, "x".repeat(2 << 20));
    let request = axum::http::Request::post("/api/v1/runs")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(big))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, body) = rt.block_on(async {
        use tower::ServiceExt as _;
        let response = server::router(server.state.clone(), 0).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap())
    });
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");

    assert_eq!(server.run_count(), 0);
    assert!(server.engine.calls().is_empty(), "{:?}", server.engine.calls());
}

#[test]
fn a_number_out_of_the_range_of_its_integer_type_is_refused_saying_the_range() {
    let server = Server::start();
    let (status, body) =
        server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1, "width": 4294967296u64}}));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_input")), "{body}");
    assert_eq!(
        body["details"]["errors"],
        json!([{"path": "/width", "message": "4294967296 is out of range: allowed 0 to 4294967295 (uint32)"}])
    );
    let (code, _, err) = server.salt(&["run", "etl", "--input", r#"{"n": 1, "width": -1}"#]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-1 is out of range: allowed 0 to 4294967295 (uint32) at `/width`"), "{err}");
    assert_eq!(server.run_count(), 0);
    let (status, body) =
        server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1, "width": 4294967295u64}}));
    assert_eq!(status, 201, "{body}");
}

/// Sends `method path` with `body` (no content type when `content_type` is `None`) to the
/// server's router itself; the status, the content type and the JSON body.
fn raw(server: &Server, method: &str, path: &str, content_type: Option<&str>, body: &str) -> (u16, String, Value) {
    let mut request = axum::http::Request::builder().method(method).uri(path);
    if let Some(t) = content_type {
        request = request.header("content-type", t);
    }
    let request = request.body(axum::body::Body::from(body.to_string())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use tower::ServiceExt as _;
        let response = server::router(server.state.clone(), 0).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let kind = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, kind, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
    })
}

#[test]
fn every_error_of_the_api_is_the_json_error_body() {
    let server = Server::start();
    // Method, path, content type, body; the status and code answered.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, u16, &'a str);
    let cases: [Case<'_>; 6] = [
        ("DELETE", "/api/v1/runs", None, "", 405, "method_not_allowed"),
        ("PATCH", "/api/v1/queues/gpu", Some("application/json"), "{}", 405, "method_not_allowed"),
        ("GET", "/api/v1/runs?limit=ten", None, "", 400, "invalid_input"),
        ("GET", "/api/v1/runs/1/logs?after=x", None, "", 400, "invalid_input"),
        ("POST", "/api/v1/dags", Some("application/json"), r#"{"spce": {}}"#, 422, "invalid_input"),
        ("POST", "/api/v1/runs", None, r#"{"workflow": "etl", "input": {"n": 1}}"#, 415, "invalid_input"),
    ];
    for (method, path, kind, body, status, code) in cases {
        let (got, content_type, answer) = raw(&server, method, path, kind, body);
        assert_eq!((got, answer["error"].as_str()), (status, Some(code)), "{method} {path}: {answer}");
        assert_eq!(content_type, "application/json", "{method} {path}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{method} {path}: {answer}");
    }
    let (_, _, answer) = raw(&server, "GET", "/api/v1/runs?limit=ten", None, "");
    assert_eq!(answer["details"], json!({"field": "query"}));
    let (_, _, answer) = raw(&server, "POST", "/api/v1/dags", Some("application/json"), "{oops");
    assert_eq!(answer["error"], "invalid_input", "{answer}");
    assert_eq!(server.run_count(), 0);

    // `--json` commands print their errors as that body too.
    let (code, out, err) = server.salt(&["show", "7", "--json"]);
    assert_eq!((code, out.as_str()), (2, ""));
    let printed: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(printed, json!({"error": "not_found", "message": "no run 7", "details": null}));
    let (code, _, err) = server.salt(&["runs", "--json", "--server", "http://127.0.0.1:9"]);
    assert_eq!(code, 1);
    let printed: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(printed["error"], "failed");
    assert!(printed["message"].as_str().unwrap().starts_with("cannot reach the server"), "{printed}");
    let (code, _, err) = server.salt(&["schedule", "trigger", "nope", "--json"]);
    assert_ne!(code, 0);
    let printed: Value = serde_json::from_str(&err).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(printed["error"], "not_found", "{printed}");
}

#[test]
fn queue_names_follow_one_pattern_and_length() {
    let server = Server::start();
    let long = "q".repeat(12 * 1024);
    for name in ["..%2F..%2Fx", "a%20b", ".hidden", long.as_str()] {
        let (status, body, _) =
            server.request("PUT", &format!("/api/v1/queues/{name}"), None, Some(br#"{"active": true}"#));
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_input")), "{name}: {body}");
        assert!(body["message"].as_str().unwrap().contains("is not a queue name: use 1 to 128 letters"), "{body}");
    }
    assert!(db::queues(&server.state.conn.lock().unwrap()).unwrap().is_empty());
    let (code, _, err) = server.salt(&["queue", "set", "../../x", "--pause"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`../../x` is not a queue name"), "{err}");
    let (status, body, _) =
        server.request("PUT", &format!("/api/v1/queues/{}", "q".repeat(128)), None, Some(br#"{"active": true}"#));
    assert_eq!(status, 200, "{body}");
}

/// Sends a request to the server's router itself (over TCP the server may close the connection
/// before the client has sent a body over the limit) and returns the status and JSON body.
fn oneshot(server: &Server, path: &str, body: String) -> (u16, Value) {
    let request = axum::http::Request::post(path)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use tower::ServiceExt as _;
        let response = server::router(server.state.clone(), 0).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
    })
}

#[test]
fn an_input_a_signal_or_a_payload_over_one_mib_is_refused_with_413() {
    let server = Server::start();
    let limit = salt_server::api::MAX_JSON_BYTES;
    assert_eq!(limit, 1 << 20);
    let pad = |n: usize| "x".repeat(n);
    let input = |n: usize| format!(r#"{{"workflow": "etl", "input": {{"n": 1, "pad": "{}"}}}}"#, pad(n));
    // Just under the limit: accepted.
    let (status, body) = oneshot(&server, "/api/v1/runs", input(limit - 100));
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.run_count(), 1);
    // Just over: refused with the error body, nothing stored.
    let (status, body) = oneshot(&server, "/api/v1/runs", input(limit));
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(server.run_count(), 1);

    // The run's root waits for the signal `decision`, a string.
    let wait = salt_runtime::model::WaitRecord {
        node: NodeId::ROOT,
        seq: 0,
        name: "decision".into(),
        schema: json!({"type": "string"}),
        deadline: None,
        default: None,
    };
    server.state.store.commit(None, &[Write::WaitStarted { run: RunId::new(1), record: wait }]).unwrap();
    let signals = || -> i64 {
        server.state.conn.lock().unwrap().query_row("SELECT COUNT(*) FROM signals", (), |r| r.get(0)).unwrap()
    };
    let signal = |n: usize| format!(r#"{{"name": "decision", "value": "{}"}}"#, pad(n));
    let (status, body) = oneshot(&server, "/api/v1/runs/1/signal", signal(limit - 100));
    assert_eq!(status, 200, "{body}");
    assert_eq!(signals(), 1);
    let (status, body) = oneshot(&server, "/api/v1/runs/1/signal", signal(limit));
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");
    assert_eq!(signals(), 1);

    // An event's payload is an input too.
    let (status, body) = oneshot(&server, "/api/v1/events/go", format!(r#"{{"pad": "{}"}}"#, pad(limit)));
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")), "{body}");
    assert_eq!(server.run_count(), 1);
}

#[test]
fn a_run_pins_the_version_it_started_with() {
    let server = Server::start();
    let (status, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}}));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, json!({"run": 1, "workflow": "etl", "version": 1}));

    // A new binary with a changed workflow: a new version; the first run stays on version 1.
    // (Registered on the database directly: the server runs only uploads that are salt
    // binaries, and this one is a script.)
    let two = fake_binary(server.dir.path(), "etl2", "v2");
    let registered =
        registry::register_file(&server.state.conn.lock().unwrap(), &server.state.data, &two, None).unwrap();
    assert_eq!(
        serde_json::to_value(&registered.workflows).unwrap(),
        json!([{"workflow": "etl", "version": 2, "new_version": true}])
    );
    let (_, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 2}}));
    assert_eq!(body, json!({"run": 2, "workflow": "etl", "version": 2}));
    let (_, body) = server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 3}, "version": 1}));
    assert_eq!(body["version"], 1);
    assert_eq!(
        server.engine.calls(),
        [r#"start etl v1 {"n":1}"#, r#"start etl v2 {"n":2}"#, r#"start etl v1 {"n":3}"#]
    );

    let (status, page) = server.get("/api/v1/runs?limit=2");
    assert_eq!(status, 200);
    let listed: Vec<(i64, i64)> = page["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_i64().unwrap(), r["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(listed, [(3, 1), (2, 2)]);
    assert_eq!(page["next"], 2);
    assert!(page["runs"][0].get("input").is_none(), "a list never carries inputs: {page}");
    let (_, page) = server.get("/api/v1/runs?limit=2&before=2");
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], Value::Null);
    let (_, page) = server.get("/api/v1/runs?state=queued&workflow=etl");
    assert_eq!(page["runs"].as_array().unwrap().len(), 3);
    let (_, page) = server.get("/api/v1/runs?state=failed");
    assert_eq!(page["runs"], json!([]));
    let (status, body) = server.get("/api/v1/runs?state=sleeping");
    assert_eq!((status, body["details"]["field"].as_str()), (400, Some("state")));
    let (_, page) = server.get("/api/v1/runs?since=2100-01-01T00:00:00Z");
    assert_eq!(page["runs"], json!([]));

    let (status, workflow) = server.get("/api/v1/workflows/etl");
    assert_eq!(status, 200);
    assert_eq!(workflow["latest"], 2);
    assert_eq!(workflow["input_schema"]["required"], json!(["n"]));
    assert_eq!(workflow["versions"].as_array().unwrap().len(), 2);
    assert_eq!(server.get("/api/v1/workflows/nope").0, 404);

    // The binary is served by its hash, byte for byte.
    let sha = registered.sha256.as_str();
    let (status, _, bytes) = server.request("GET", &format!("/api/v1/binaries/{sha}"), None, None);
    assert_eq!(status, 200);
    assert_eq!(registry::sha256_hex(bytes.as_bytes()), sha);
    assert_eq!(server.get(&format!("/api/v1/binaries/{}", "0".repeat(64))).0, 404);
    assert_eq!(server.get("/api/v1/binaries/..%2Fserver.db").0, 404);
}

#[test]
fn runs_nodes_and_actions_answer_404_and_409_as_their_state_requires() {
    let server = Server::start();
    server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}}));
    assert_eq!(server.get("/api/v1/runs/9").0, 404);
    assert_eq!(server.get("/api/v1/runs/x").0, 404);
    assert_eq!(server.get("/api/v1/runs/1/nodes/7").0, 404);
    assert_eq!(server.get("/api/v1/runs/1/nodes/nope").0, 404);
    let (status, node) = server.get("/api/v1/runs/1/nodes/load");
    assert_eq!(status, 200);
    assert_eq!(node["node"]["id"], 1);
    let (status, snapshot) = server.get("/api/v1/runs/1");
    assert_eq!((status, snapshot["run"]["state"].as_str()), (200, Some("queued")));
    assert_eq!(server.get("/api/v1/runs/1/logs").0, 200);
    let (status, graph) = server.get("/api/v1/runs/1/graph");
    assert_eq!(status, 200);
    assert_eq!(graph["nodes"].as_array().map(Vec::len), Some(2), "{graph}");
    let (status, _, dot) = server.request("GET", "/api/v1/runs/1/graph?format=dot", None, None);
    assert_eq!(status, 200);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert_eq!(server.get("/api/v1/runs/1/graph?format=png").0, 400);

    assert_eq!(server.post("/api/v1/runs/9/cancel", json!({})).0, 404);
    assert_eq!(server.post("/api/v1/runs/1/rerun", json!({"from": "nope"})).0, 404);
    let (status, body) = server.post("/api/v1/runs/1/rerun", json!({"from": "load"}));
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "a queued run is being driven: {body}");
    let (status, body) = server.post("/api/v1/runs/1/nodes/load/cancel", json!({}));
    assert_eq!((status, body["node"].as_u64()), (202, Some(1)));
    let control = server.state.store.control(RunId::new(1)).unwrap();
    assert_eq!(
        control.cancel_nodes.iter().map(|(_, n)| n.get()).collect::<Vec<_>>(),
        [1],
        "asked of the run's orchestrator"
    );

    server.set_run_state(1, RunState::Succeeded);
    for action in ["cancel", "pause", "resume", "recover"] {
        let (status, body) = server.post(&format!("/api/v1/runs/1/{action}"), json!({}));
        assert_eq!(status, 409, "{action}: {body}");
    }
    let (status, body) = server.post("/api/v1/runs/1/signal", json!({"name": "go", "value": 1}));
    assert_eq!(status, 409, "{body}");
    assert_eq!(server.post("/api/v1/runs/1/nodes/1/cancel", json!({})).0, 409);
    let (status, body) = server.post("/api/v1/runs/1/rerun", json!({"from": "load"}));
    assert_eq!((status, body), (202, json!({"run": 1, "action": "rerun", "node": 1})));
    let (status, _) = server.post("/api/v1/runs/1/run_one", json!({"node": "1"}));
    assert_eq!(status, 202);
    server.set_run_state(1, RunState::Failed);
    assert_eq!(server.post("/api/v1/runs/1/recover", json!({})).0, 202);
    assert_eq!(server.engine.calls()[1..], ["rerun 1 1", "run_one 1 1", "recover 1"]);

    let (status, _, metrics) = server.request("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    assert!(metrics.contains("salt_runs{state=\"failed\"} 1\n"), "{metrics}");
    assert!(metrics.contains("salt_runs{state=\"running\"} 0\n"), "{metrics}");
    assert!(metrics.contains("salt_workflows 1\n"), "{metrics}");
    assert_eq!(server.get("/healthz"), (200, json!({"status": "ok"})));
    let (status, body) = server.get("/api/v1/nothing");
    assert_eq!((status, body["error"].as_str()), (404, Some("no_route")));
}

#[test]
fn without_the_right_token_nothing_changes() {
    let server = Server::start();
    server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}}));
    let (viewer, operator, worker) = {
        let conn = server.state.conn.lock().unwrap();
        (
            auth::create_token(&conn, "view", auth::Role::Viewer).unwrap(),
            auth::create_token(&conn, "ops", auth::Role::Operator).unwrap(),
            auth::create_token(&conn, "w1", auth::Role::Worker).unwrap(),
        )
    };
    let start = json!({"workflow": "etl", "input": {"n": 2}}).to_string();
    let cases: [(&str, &str, Option<&str>, u16); 8] = [
        ("POST", "/api/v1/runs/1/cancel", None, 401),
        ("POST", "/api/v1/runs/1/cancel", Some("salt_0000"), 401),
        ("POST", "/api/v1/runs/1/cancel", Some(&viewer), 403),
        ("POST", "/api/v1/runs/1/pause", Some(&worker), 403),
        ("GET", "/api/v1/runs", None, 401),
        ("GET", "/api/v1/runs", Some(&worker), 403),
        ("POST", "/api/v1/binaries", Some(&operator), 403),
        ("GET", "/metrics", None, 401),
    ];
    for (method, path, token, expected) in cases {
        let (status, body, _) = server.request(method, path, token, Some(b"{}"));
        assert_eq!(status, expected, "{method} {path} with {token:?}: {body}");
    }
    let (status, _, _) = server.request("POST", "/api/v1/runs", Some(&viewer), Some(start.as_bytes()));
    assert_eq!(status, 403);
    let (_, snapshot, _) = server.request("GET", "/api/v1/runs/1", Some(&viewer), None);
    assert_eq!(snapshot["run"]["state"], "queued", "nothing changed");
    assert_eq!(server.run_count(), 1);
    assert_eq!(server.engine.calls().len(), 1);

    assert_eq!(server.get("/healthz").0, 200, "health needs no token");
    let sha = db::latest_version(&server.state.conn.lock().unwrap(), "etl").unwrap().unwrap().binary;
    let (status, _, _) = server.request("GET", &format!("/api/v1/binaries/{sha}"), Some(&worker), None);
    assert_eq!(status, 200);
    let (status, body, _) = server.request("POST", "/api/v1/runs/1/cancel", Some(&operator), Some(b"{}"));
    assert_eq!((status, body["state"].as_str()), (200, Some("cancelled")), "{body}");
}

/// The paths the server's router serves, read from its debug form (axum lists every route's
/// path there), so that a route added without a description cannot go unnoticed.
fn served_paths(state: &AppState) -> Vec<String> {
    let debug = format!("{:?}", server::router(state.clone(), 0));
    let route = regex::Regex::new(r#"RouteId\(\d+\): "([^"]+)""#).unwrap();
    let mut paths: Vec<String> = route.captures_iter(&debug).map(|c| c[1].to_string()).collect();
    paths.sort();
    paths.dedup();
    paths
}

/// `path` with each of its parameters replaced by a value the test server knows.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{node}", "0")
        .replace("{name}", "etl")
        .replace("{workflow}", "etl")
        .replace("{sha256}", &"0".repeat(64))
}

#[test]
fn the_openapi_document_describes_exactly_the_routes_served() {
    let server = Server::start();
    server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}}));
    let (status, doc) = server.get("/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let mut described = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    described.sort();
    assert_eq!(
        described,
        [
            "GET /api/v1/binaries/{sha256}",
            "GET /api/v1/openapi.json",
            "GET /api/v1/queues",
            "GET /api/v1/runs",
            "GET /api/v1/runs/{id}",
            "GET /api/v1/runs/{id}/graph",
            "GET /api/v1/runs/{id}/logs",
            "GET /api/v1/runs/{id}/nodes/{node}",
            "GET /api/v1/schedules",
            "GET /api/v1/workers",
            "GET /api/v1/workers/connect",
            "GET /api/v1/workflows",
            "GET /api/v1/workflows/{name}",
            "GET /healthz",
            "GET /metrics",
            "POST /api/v1/binaries",
            "POST /api/v1/dags",
            "POST /api/v1/events/{name}",
            "POST /api/v1/runs",
            "POST /api/v1/runs/{id}/cancel",
            "POST /api/v1/runs/{id}/nodes/{node}/cancel",
            "POST /api/v1/runs/{id}/pause",
            "POST /api/v1/runs/{id}/recover",
            "POST /api/v1/runs/{id}/rerun",
            "POST /api/v1/runs/{id}/resume",
            "POST /api/v1/runs/{id}/run_one",
            "POST /api/v1/runs/{id}/signal",
            "POST /api/v1/schedules/{workflow}/backfill",
            "POST /api/v1/schedules/{workflow}/pause",
            "POST /api/v1/schedules/{workflow}/resume",
            "POST /api/v1/schedules/{workflow}/trigger",
            "PUT /api/v1/queues/{name}",
        ]
    );
    // Every route the router serves under /api/v1, and /healthz and /metrics, with every method
    // it answers (anything but 405 and `no_route`), is described, and nothing else is.
    let paths = served_paths(&server.state);
    assert!(paths.iter().any(|p| p == "/api/v1/runs/{id}/signal"), "the router's paths were not found: {paths:?}");
    let mut served = Vec::new();
    for path in paths.iter().filter(|p| p.starts_with("/api/v1/") || ["/healthz", "/metrics"].contains(&p.as_str())) {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let (status, body, _) = server.request(method, &concrete(path), None, Some(b"{}"));
            if status != 405 && body["error"] != "no_route" {
                served.push(format!("{method} {path}"));
            }
        }
    }
    served.sort();
    assert_eq!(served, described);
    // And a route that is not described is not served.
    let (status, body) = server.post("/api/v1/runs/1/explode", json!({}));
    assert_eq!((status, body["error"].as_str()), (404, Some("no_route")));
    // The schedule and event routes answer with the API's error body.
    let (status, body) = server.post("/api/v1/schedules/nope/trigger", json!({}));
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(body["message"], "no workflow `nope` is registered");
    let (status, body, _) = server.request("POST", "/api/v1/events/go", None, Some(b"{not json"));
    assert_eq!(
        (status, body["error"].as_str(), &body["details"]),
        (400, Some("invalid_input"), &json!({"field": "payload"}))
    );
}

#[test]
fn the_client_commands_talk_to_the_server() {
    let server = Server::start();
    let (code, out, err) = server.salt(&["run", "etl", "--input", r#"{"n": 4}"#]);
    assert_eq!((code, out.as_str()), (0, "run 1 of `etl` started (version 1)\n"), "{err}");
    let (code, out, err) = server.salt(&["run", "etl", "--input", r#"{"n": "x"}"#]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.starts_with("error: the input does not match the input schema of workflow `etl`"), "{err}");
    assert!(err.contains("at `/n`"), "{err}");

    let (code, out, _) = server.salt(&["runs", "--json"]);
    assert_eq!(code, 0);
    let runs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);
    assert_eq!(runs["runs"][0]["state"], "queued");
    let (code, out, _) = server.salt(&["runs"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].starts_with("    1  etl                      queued"), "{out}");

    let (code, out, _) = server.salt(&["show", "1", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["run"]["input"], json!({"n": 4}));
    let (code, out, _) = server.salt(&["show", "1"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().next(), Some("run 1  workflow etl  QUEUED"), "{out}");
    let (code, _, err) = server.salt(&["show", "7"]);
    assert_eq!((code, err.as_str()), (2, "error: no run 7\n"));

    let (code, out, _) = server.salt(&["pause", "1"]);
    assert_eq!((code, out.as_str()), (0, "pausing run 1: no new node starts; running ones finish\n"));
    let (code, out, _) = server.salt(&["cancel", "1"]);
    assert_eq!((code, out.as_str()), (0, "run 1 cancelled\n"));
    let (code, _, err) = server.salt(&["resume", "1"]);
    assert_eq!((code, err.as_str()), (2, "error: run 1 already ended: cancelled\n"));
    let (code, out, _) = server.salt(&["logs", "1"]);
    assert_eq!((code, out.as_str()), (0, "no attempts yet\n"));

    let (code, out, err) = server.salt(&["workflows"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("etl                           v1"), "{out}");

    // Registering through the server: a file that is not a salt binary is refused, and is not
    // run to find out (this script would leave a file behind).
    let two = fake_binary(server.dir.path(), "etl-two", "v2");
    let ran = server.dir.path().join("the-script-ran");
    let script = std::fs::read_to_string(&two).unwrap().replacen('\n', &format!("\ntouch {}\n", ran.display()), 1);
    std::fs::write(&two, script).unwrap();
    let (code, _, err) = server.salt(&["register", two.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("error: not a salt workflow binary: it is not an ELF executable"), "{err}");
    assert!(!ran.exists(), "the server ran the uploaded script");
    // The same on the database directly (the operator's own file, run on their machine).
    let db = server.dir.path().join("server.db");
    let data = server.dir.path().join("data");
    let (code, out, err) = server.salt(&[
        "register",
        "--db",
        db.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        two.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("  etl v2 (new version)\n"), "{out}");
    let notes = server.dir.path().join("notes.txt");
    std::fs::write(&notes, "just text").unwrap();
    let (code, _, err) = server.salt(&["register", notes.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: not a salt workflow binary"), "{err}");
    // Nor is an executable that salt did not build.
    let (code, _, err) = server.salt(&["register", "/bin/sh"]);
    assert_eq!(code, 2);
    assert!(err.contains("not one built with salt"), "{err}");
    assert_eq!(db::latest_version(&server.state.conn.lock().unwrap(), "etl").unwrap().unwrap().version, 2);

    let (code, _, err) = server.salt(&["--server", "http://127.0.0.1:9", "runs"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: cannot reach the server at http://127.0.0.1:9"), "{err}");
}

#[test]
fn tokens_are_created_on_the_database_and_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db").display().to_string();
    let salt =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_salt")).args(args).args(["--db", &db]).output().unwrap();
    let out = salt(&["token", "create", "ci", "--role", "operator"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(token.starts_with("salt_") && token.ends_with('\n'), "{token}");
    let out = salt(&["token", "ls"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "ci                       operator\n");
    let out = salt(&["token", "create", "ci", "--role", "admin"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "error: a token named `ci` exists already\n");
    let conn = server::open_conn(&db).unwrap();
    assert_eq!(auth::authenticate(&conn, token.trim()).unwrap().unwrap().role, auth::Role::Operator);
}

#[test]
fn the_server_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_salt"))
        .args(["server", "--listen", "0.0.0.0:0", "--db", &db])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: refusing to listen on 0.0.0.0:0 with no token"), "{err}");
}

#[test]
fn register_and_workflows_work_on_the_database_directly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db").display().to_string();
    let data = dir.path().join("data").display().to_string();
    let salt = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_salt")).args(args).current_dir(dir.path()).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    let bin = fake_binary(dir.path(), "etl", "v1");
    let sha = registry::sha256_hex(&std::fs::read(&bin).unwrap());
    let (code, out, err) = salt(&["register", bin.to_str().unwrap(), "--db", &db, "--data", &data]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("binary {sha} ({} bytes)\n  etl v1 (new version)\n", std::fs::metadata(&bin).unwrap().len())
    );
    let (code, out, _) = salt(&["register", bin.to_str().unwrap(), "--db", &db, "--data", &data]);
    assert_eq!(code, 0);
    assert!(out.ends_with(", already registered\n  etl v1 (unchanged)\n"), "{out}");
    assert!(dir.path().join("data/binaries").join(&sha).exists());
    let (code, out, _) = salt(&["workflows", "--db", &db, "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["workflows"][0]["name"], "etl");
    assert_eq!(list["workflows"][0]["versions"], json!([1]));
}

#[test]
fn run_wait_prints_the_output_as_a_workflow_binary_does() {
    let server = Server::start();
    let child = Command::new(env!("CARGO_BIN_EXE_salt"))
        .args(["run", "etl", "--input", r#"{"n": 1}"#, "--wait"])
        .env("SALT_SERVER", &server.url)
        .env_remove("SALT_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while server.run_count() == 0 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = json!({"rows": 3});
    server
        .state
        .store
        .commit(
            None,
            &[Write::RunState {
                run: RunId::new(1),
                state: RunState::Succeeded,
                output: Some(output),
                error: None,
                at: now_ms(),
            }],
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\n  \"rows\": 3\n}\n");
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "run 1 of `etl` succeeded\n");
}

#[test]
fn queue_settings_are_set_kept_and_listed_and_a_zero_limit_is_refused() {
    let server = Server::start();
    let (code, out, err) = server.salt(&["queue", "set", "gpu", "--concurrency", "2", "--pause"]);
    assert_eq!((code, out.as_str()), (0, "queue `gpu`: paused, at most 2 at once\n"), "{err}");
    // What is not given stays as it was.
    let (code, out, err) = server.salt(&["queue", "set", "gpu", "--resume"]);
    assert_eq!((code, out.as_str()), (0, "queue `gpu`: active, at most 2 at once\n"), "{err}");
    let (code, out, _) = server.salt(&["queue", "ls"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["gpu", "active", "2", "0", "0", "anyone"], "{out}");
    let (code, out, _) = server.salt(&["queue", "ls", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        listed["queues"][0],
        json!({"name": "gpu", "active": true, "private_to": [], "concurrency": 2, "ready": 0, "running": 0})
    );

    // A limit of zero is refused, by the command and by the API, and nothing changes.
    let (code, _, err) = server.salt(&["queue", "set", "gpu", "--concurrency", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--concurrency"), "{err}");
    let (status, body, _) =
        server.request("PUT", "/api/v1/queues/gpu", None, Some(br#"{"active": true, "concurrency": 0}"#));
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_input")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("at least 1"), "{body}");
    let kept = db::queue(&server.state.conn.lock().unwrap(), "gpu").unwrap();
    assert_eq!(kept.concurrency, Some(2));

    let (code, out, err) = server.salt(&["queue", "set", "gpu", "--no-limit"]);
    assert_eq!((code, out.as_str()), (0, "queue `gpu`: active, no limit\n"), "{err}");
}

#[test]
fn a_node_whose_attempt_waits_for_a_worker_reads_queued_with_its_queue() {
    let server = Server::start();
    server.post("/api/v1/runs", json!({"workflow": "etl", "input": {"n": 1}}));
    let store = server.state.store.clone();
    let run = RunId::new(1);
    let lease =
        store.acquire_run_lease(run, &salt_runtime::store::new_owner(), std::time::Duration::from_secs(600)).unwrap();
    let node = NodeId::new(1);
    let at = now_ms();
    store
        .commit(
            Some(&lease),
            &[
                Write::RunStarted { run, executor: "inline", parallelism: 1, at },
                Write::NodeState { run, node, state: NodeState::Running },
                Write::AttemptStarted { run, node, attempt: 1, executor: "queue:gpu".into(), at },
                Write::Enqueue {
                    run,
                    node,
                    attempt: 1,
                    queue: "gpu".into(),
                    priority: 0,
                    task: "load".into(),
                    input: json!({}),
                },
            ],
        )
        .unwrap();

    let (status, shown) = server.get("/api/v1/runs/1");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(
        shown["queued"],
        json!([{"node": 1, "attempt": 1, "queue": "gpu", "since": shown["queued"][0]["since"]}])
    );
    assert_eq!(shown["nodes"][1]["state"], "running", "the stored state stays: {shown}");
    let (status, node_view) = server.get("/api/v1/runs/1/nodes/load");
    assert_eq!(status, 200);
    assert_eq!(node_view["queued"]["queue"], "gpu", "{node_view}");
    let (_, _, text) = server.request("GET", "/api/v1/runs/1/nodes/load?format=text", None, None);
    assert!(text.contains("QUEUED") && text.contains("waits for a worker of queue `gpu`"), "{text}");

    // Once a worker has claimed it, it runs: no longer queued.
    let claims = store.claim("gpu", 1, "worker", std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(claims.len(), 1);
    let (_, shown) = server.get("/api/v1/runs/1");
    assert_eq!(shown["queued"], json!([]), "{shown}");
    let (_, node_view) = server.get("/api/v1/runs/1/nodes/load");
    assert_eq!(node_view["queued"], Value::Null, "{node_view}");
}
