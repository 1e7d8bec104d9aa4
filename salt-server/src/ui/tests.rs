//! The UI's pages and actions through its router, over a SQLite store holding runs written
//! record by record.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use salt_runtime::model::{
    EdgeKind, EdgeRecord, LogRecord, NodeId, NodeRecord, NodeState, RunId, RunState, WaitRecord,
};
use salt_runtime::store::{NewRun, Store, Write};

use super::{StaticCatalog, WorkflowEntry, WorkflowVersion, routes};
use crate::engine::{Engine, WorkflowRef};
use crate::state::AppState;

#[derive(Default)]
struct FakeEngine {
    calls: Mutex<Vec<String>>,
}

impl Engine for FakeEngine {
    fn start(&self, workflow: &WorkflowRef, input: Value) -> salt_runtime::Result<RunId> {
        self.calls.lock().unwrap().push(format!("start {} v{} {input}", workflow.workflow, workflow.version));
        Ok(RunId::new(99))
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
        self.calls.lock().unwrap().push(format!("run-one {run} {node}"));
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    engine: Arc<FakeEngine>,
    app: axum::Router,
}

fn node(id: u64, task: &str, parent: Option<u64>, state: NodeState) -> NodeRecord {
    NodeRecord {
        id: NodeId::new(id),
        parent: parent.map(NodeId::new),
        task: task.into(),
        state,
        attempts: 1,
        created_at: 1_764_547_200_000,
        ..Default::default()
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("salt.db").display().to_string();
    let store: Arc<dyn Store> = Arc::from(salt_runtime::ops::open(&db).unwrap());
    let engine = Arc::new(FakeEngine::default());
    let catalog = StaticCatalog {
        workflows: vec![WorkflowEntry {
            name: "pay".into(),
            doc: "Pays <bills>.".into(),
            versions: vec![WorkflowVersion {
                reference: WorkflowRef { workflow: "pay".into(), version: 3, binary: "ab".repeat(32) },
                registered_at: 1_764_547_200_000,
                registered_by: None,
            }],
            input_schema: json!({"type": "object", "properties": {"amount": {"type": "integer", "minimum": 1}}, "required": ["amount"]}),
            default_input: json!({"amount": 10}),
            schedule: None,
            paused: false,
        }],
        spawning: Vec::new(),
    };
    let state = AppState {
        db,
        store: store.clone(),
        conn: Arc::new(Mutex::new(crate::sql::Conn::memory().unwrap())),
        engine: engine.clone(),
        data: dir.path().to_path_buf(),
        dispatcher: salt_runtime::remote::Dispatcher::new(),
    };
    let app = routes(Arc::new(catalog)).with_state(state);
    Fixture { _dir: dir, store, engine, app }
}

/// A run of `workflow` whose root spawned `fan` nodes of `m`, feeding one `b`.
fn fan_run(store: &dyn Store, workflow: &str, fan: u64, state: RunState) -> RunId {
    let input = json!({"n": fan});
    let root = node(0, workflow, None, NodeState::Waiting);
    let run = store
        .create_run(NewRun { workflow, input: &input, executor: "inline", parallelism: 1, root: &root, lease: None })
        .unwrap();
    let mut writes = Vec::new();
    for i in 1..=fan {
        let s = if i % 4 == 0 { NodeState::Running } else { NodeState::Succeeded };
        writes.push(Write::InsertNode { run, node: Box::new(node(i, "m", Some(0), s)) });
        writes.push(Write::InsertEdge {
            run,
            edge: EdgeRecord { from: NodeId::new(i), to: NodeId::new(fan + 1), kind: EdgeKind::Data, label: None },
        });
    }
    writes.push(Write::InsertNode { run, node: Box::new(node(fan + 1, "b", Some(0), NodeState::Pending)) });
    if state != RunState::Queued {
        writes.push(Write::RunState { run, state, output: None, error: None, at: 1_764_547_200_000 });
    }
    store.commit(None, &writes).unwrap();
    run
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, String) {
    let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post(app: &axum::Router, uri: &str, form: &str) -> (StatusCode, String, String) {
    let request = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, location, String::from_utf8_lossy(&body).into_owned())
}

fn rows(html: &str) -> Vec<String> {
    html.split(r#"<tr data-run=""#).skip(1).map(|r| r[..r.find('"').unwrap()].to_string()).collect()
}

#[tokio::test]
async fn the_runs_page_filters_by_state_and_name_pattern_and_counts_states() {
    let f = fixture();
    fan_run(f.store.as_ref(), "etl", 1, RunState::Succeeded);
    fan_run(f.store.as_ref(), "etl_daily", 1, RunState::Failed);
    fan_run(f.store.as_ref(), "<script>alert(1)</script>", 1, RunState::Running);
    let (status, html) = get(&f.app, "/runs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&html), ["3", "2", "1"]);
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script>alert"));
    assert!(html.contains(r#"data-count="failed">"#));
    let (_, html) = get(&f.app, "/runs?name=%5Eetl").await;
    assert_eq!(rows(&html), ["2", "1"]);
    assert!(html.contains(r#"data-count="all">all <b>2</b>"#), "{html}");
    let (_, html) = get(&f.app, "/runs?name=%5Eetl&state=failed").await;
    assert_eq!(rows(&html), ["2"]);
    let (_, html) = get(&f.app, "/runs?before=3").await;
    assert_eq!(rows(&html), ["2", "1"]);
    let (status, html) = get(&f.app, "/runs?name=(").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("not a valid regular expression"));
    assert_eq!(rows(&html), ["3", "2", "1"]);
}

#[tokio::test]
async fn a_ten_thousand_node_run_opens_with_its_fan_out_as_one_group() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "big", 10_000, RunState::Running);
    let started = std::time::Instant::now();
    let (status, html) = get(&f.app, &format!("/runs/{run}")).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    assert!(html.contains(r#"<div class="graph" data-boxes="4">"#), "root, group, b, the root's wildcard");
    assert!(html.contains("m × 10000"));
    assert!(html.contains("2500 running, 7500 succeeded"));
    assert_eq!(html.matches(r#"<tr data-node=""#).count(), 50, "one page of nodes");
    // Expanded, the group draws one page of its members, the others as one group.
    let (_, html) = get(&f.app, &format!("/runs/{run}?expand=0%2Fm&page=3")).await;
    let svg = &html[html.find("data-boxes").unwrap()..];
    let boxes: Vec<&str> = svg.split("<g class=\"").skip(1).map(|g| &g[..g.find('"').unwrap()]).collect();
    assert!(html.contains(r#"data-boxes="104""#), "{boxes:?}");
    assert!(html.contains(r#"data-node="301""#));
    assert!(html.contains("m × 9900 more"));
    // Nodes filtered by state and a name pattern.
    let (_, html) = get(&f.app, &format!("/runs/{run}?nstate=pending&nname=%5Eb%24")).await;
    assert_eq!(html.matches(r#"<tr data-node=""#).count(), 1);
    assert!(html.contains(r#"<tr data-node="10001">"#));
}

#[tokio::test]
async fn the_node_page_shows_attempts_logs_input_and_output() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "w", 1, RunState::Running);
    f.store
        .commit(
            None,
            &[
                Write::NodeFinished {
                    run,
                    node: NodeId::new(1),
                    state: NodeState::Succeeded,
                    output: Some(json!({"rows": "<b>3</b>"})),
                    error: None,
                    at: 1_764_547_201_000,
                },
                Write::Log {
                    run,
                    record: LogRecord {
                        node: NodeId::new(1),
                        attempt: 1,
                        ts: 1_764_547_200_500,
                        line: "read 3 rows <ok>".into(),
                    },
                },
            ],
        )
        .unwrap();
    let (status, html) = get(&f.app, &format!("/runs/{run}/nodes/1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("read 3 rows &lt;ok&gt;"), "{html}");
    assert!(html.contains("&lt;b&gt;3&lt;/b&gt;"));
    let (status, json) = get(&f.app, &format!("/runs/{run}/nodes/1/output.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"rows": "<b>3</b>"}));
    let (status, _) = get(&f.app, &format!("/runs/{run}/nodes/7")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&f.app, "/runs/12345").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn controls_answer_a_signal_and_call_the_engine() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "w", 1, RunState::Running);
    let schema = json!({"type": "object", "properties": {"approved": {"type": "boolean"}, "by": {"type": "string"}}, "required": ["approved", "by"]});
    f.store
        .commit(
            None,
            &[Write::WaitStarted {
                run,
                record: WaitRecord {
                    node: NodeId::ROOT,
                    seq: 1,
                    name: "decision".into(),
                    schema,
                    deadline: None,
                    default: None,
                },
            }],
        )
        .unwrap();
    let (_, html) = get(&f.app, &format!("/runs/{run}")).await;
    assert!(
        html.contains(r#"<form class="signal" method="post" action="/runs/1/signal/decision" data-signal="decision">"#)
    );
    // A value that does not match the schema is refused, and nothing is sent.
    let (status, _, html) = post(&f.app, &format!("/runs/{run}/signal/decision"), "v%2Fapproved=&v%2Fby=ada").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("does not match"), "{html}");
    assert!(f.store.control(run).unwrap().signals.is_empty());
    let (status, location, _) =
        post(&f.app, &format!("/runs/{run}/signal/decision"), "v%2Fapproved=true&v%2Fby=ada").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/runs/1?notice=sent%20%60decision%60%20to%20node%200");
    let signals = f.store.control(run).unwrap().signals;
    assert_eq!(signals.len(), 1);
    assert_eq!(signals[0].2, json!({"approved": true, "by": "ada"}));
    // Pause and resume.
    post(&f.app, &format!("/runs/{run}/pause"), "").await;
    assert!(f.store.control(run).unwrap().paused);
    post(&f.app, &format!("/runs/{run}/resume"), "").await;
    assert!(!f.store.control(run).unwrap().paused);
    // Rerun and run-one resolve a node by id or task name.
    post(&f.app, &format!("/runs/{run}/rerun"), "node=b").await;
    post(&f.app, &format!("/runs/{run}/run-one"), "node=1").await;
    post(&f.app, &format!("/runs/{run}/recover"), "").await;
    let (status, _, html) = post(&f.app, &format!("/runs/{run}/rerun"), "node=nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("has no node of task `nope`"));
    assert_eq!(*f.engine.calls.lock().unwrap(), ["rerun 1 2", "run-one 1 1", "recover 1"]);
}

#[tokio::test]
async fn a_run_starts_from_the_workflow_form_once_its_input_matches_the_schema() {
    let f = fixture();
    let (_, html) = get(&f.app, "/workflows").await;
    assert!(html.contains("Pays &lt;bills&gt;."));
    let (_, html) = get(&f.app, "/workflows/pay").await;
    assert!(html.contains(r#"name="v/amount" value="10""#), "the default input is filled in");
    let (status, _, html) = post(&f.app, "/workflows/pay/start", "version=3&v%2Famount=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("the input does not match the schema"), "{html}");
    assert!(html.contains(r#"name="v/amount" value="0""#), "the form keeps what was typed");
    let (status, _, html) = post(&f.app, "/workflows/pay/start", "version=3&v%2Famount=x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("amount: `x` is not an integer"));
    assert!(f.engine.calls.lock().unwrap().is_empty());
    let (status, location, _) = post(&f.app, "/workflows/pay/start", "version=3&v%2Famount=25").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/runs/99?notice=started%20run%2099");
    assert_eq!(*f.engine.calls.lock().unwrap(), [r#"start pay v3 {"amount":25}"#]);
    let (status, _) = get(&f.app, "/workflows/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn superseded_nodes_are_hidden_unless_asked_for() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "w", 2, RunState::Succeeded);
    f.store.commit(None, &[Write::NodeState { run, node: NodeId::new(2), state: NodeState::Superseded }]).unwrap();
    let (_, html) = get(&f.app, &format!("/runs/{run}")).await;
    assert!(html.contains(r#"data-node="1" data-state="succeeded""#));
    assert!(!html.contains(r#"data-node="2""#), "hidden by default");
    assert!(html.contains(r#"<a href="/runs/1?all=true#graph">Show superseded nodes</a>"#), "{html}");
    let (_, html) = get(&f.app, &format!("/runs/{run}?all=true")).await;
    assert!(html.contains(r#"<g class="node" data-node="2" data-state="superseded">"#));
    assert!(html.contains(r##"stroke="#999999" stroke-width="1" stroke-dasharray="5 3""##), "drawn dashed");
    assert!(html.contains("Hide superseded nodes"));
    // An ended run cannot be cancelled or paused: 409, with why.
    let (status, _, html) = post(&f.app, &format!("/runs/{run}/cancel"), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(html.contains("run 1 already ended: succeeded"), "{html}");
    let (status, _, _) = post(&f.app, &format!("/runs/{run}/pause"), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_live_stream_of_an_ended_run_sends_what_the_page_lacks_and_ends() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "w", 2, RunState::Succeeded);
    let (status, body) = get(&f.app, &format!("/runs/{run}/events")).await;
    assert_eq!(status, StatusCode::OK);
    let data: Value = serde_json::from_str(body.strip_prefix("event: end\ndata: ").unwrap().trim()).unwrap();
    let mut ids: Vec<&String> = data["parts"].as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["run-controls", "run-graph", "run-header", "run-nodes"]);
    // A page rendered with the same parts gets none of them again.
    let (_, page) = get(&f.app, &format!("/runs/{run}")).await;
    assert!(!page.contains("data-live"), "an ended run's page is not live");
    let parts = data["parts"].as_object().unwrap();
    let shown: Vec<(String, String)> = ["run-header", "run-controls", "run-graph", "run-nodes"]
        .iter()
        .map(|id| (id.to_string(), parts[*id].as_str().unwrap().to_string()))
        .collect();
    let since = super::live::fingerprint(&shown);
    let (_, body) = get(&f.app, &format!("/runs/{run}/events?since={since}")).await;
    assert_eq!(
        body.trim(),
        r#"event: end
data: {"parts":{}}"#
    );
}

#[tokio::test]
async fn the_runs_page_filters_by_time_created() {
    let f = fixture();
    fan_run(f.store.as_ref(), "etl", 1, RunState::Succeeded);
    fan_run(f.store.as_ref(), "etl", 1, RunState::Failed);
    let (_, html) = get(&f.app, "/runs?from=2001-01-01T00%3A00&to=2001-02-01").await;
    assert_eq!(rows(&html), Vec::<String>::new());
    assert!(html.contains(r#"data-count="all">all <b>0</b>"#), "{html}");
    let (_, html) = get(&f.app, "/runs?from=2001-01-01").await;
    assert_eq!(rows(&html), ["2", "1"]);
    let (_, html) = get(&f.app, "/runs?to=2001-01-01T00%3A00").await;
    assert_eq!(rows(&html), Vec::<String>::new());
    let (status, html) = get(&f.app, "/runs?from=yesterday").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("`yesterday` is not a time for `from`"), "{html}");
    assert_eq!(rows(&html), ["2", "1"]);
}

#[tokio::test]
async fn running_nodes_have_a_kill_button_and_ended_ones_are_refused() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "w", 4, RunState::Running);
    let (_, html) = get(&f.app, &format!("/runs/{run}")).await;
    let kills: Vec<&str> = html
        .split(r#"<form class="kill" method="post" action=""#)
        .skip(1)
        .map(|r| &r[..r.find('"').unwrap()])
        .collect();
    assert_eq!(kills, [format!("/runs/{run}/nodes/4/cancel")], "node 4 is the only running one");
    let (_, html) = get(&f.app, &format!("/runs/{run}/nodes/4")).await;
    assert!(html.contains(&format!(r#"action="/runs/{run}/nodes/4/cancel""#)));
    let (_, html) = get(&f.app, &format!("/runs/{run}/nodes/1")).await;
    assert!(!html.contains("/cancel\""), "a succeeded node has no Kill button");
    // Nothing drives this run (it is written record by record): refused, nothing changes.
    let (status, _, html) = post(&f.app, &format!("/runs/{run}/nodes/4/cancel"), "go=1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("no orchestrator drives it to cancel a node"), "{html}");
    let ended = fan_run(f.store.as_ref(), "w", 4, RunState::Failed);
    let (status, _, html) = post(&f.app, &format!("/runs/{ended}/nodes/4/cancel"), "go=1").await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("run 2 already ended: failed"), "{html}");
    let (_, html) = get(&f.app, &format!("/runs/{ended}")).await;
    assert!(!html.contains(r#"class="kill""#), "an ended run has nothing to kill");
}

#[tokio::test]
async fn a_viewer_sees_no_action_controls() {
    let f = fixture();
    let run = fan_run(f.store.as_ref(), "pay", 4, RunState::Running);
    let viewer = crate::auth::Caller { name: "vic".into(), role: crate::auth::Role::Viewer };
    let app = f.app.clone().layer(axum::Extension(viewer));
    for page in [format!("/runs/{run}"), format!("/runs/{run}/nodes/4"), "/workflows".into(), "/workflows/pay".into()] {
        let (status, html) = get(&app, &page).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(!html.contains(r#"method="post""#), "{page} shows an action: {html}");
    }
    let operator = crate::auth::Caller { name: "ada".into(), role: crate::auth::Role::Operator };
    let app = f.app.clone().layer(axum::Extension(operator));
    let (_, html) = get(&app, &format!("/runs/{run}")).await;
    assert!(html.contains(&format!(r#"action="/runs/{run}/cancel""#)));
    let (_, html) = get(&app, "/workflows/pay").await;
    assert!(html.contains(r#"<form class="start" method="post""#));
}

#[tokio::test]
async fn the_workers_page_lists_workers_and_queues() {
    let f = fixture();
    let (status, html) = get(&f.app, "/workers").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No worker is connected."), "{html}");
    assert!(html.contains("No queue yet."), "{html}");
    assert!(html.contains(r#"data-live="/workers/events?since="#));
}
