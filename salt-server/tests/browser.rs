//! The web UI in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`)
//! drives the pages served by the UI's router over a real SQLite store, in which the `approval`
//! example binary runs for real. The screenshots it takes go into the book.

#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use salt_runtime::model::{NodeId, RunId, RunState};
use salt_runtime::store::Store;
use salt_server::engine::{Engine, WorkflowRef};
use salt_server::state::AppState;
use salt_server::ui::{StaticCatalog, WorkflowEntry, WorkflowVersion};

use webdriver::Browser;

/// The `approval` example binary, built when missing.
fn approval_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/browser-HASH → target/debug/examples/approval
    let profile = exe.parent().and_then(Path::parent).expect("a target directory");
    let binary = profile.join("examples").join("approval");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "salt-examples", "--example", "approval"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build the approval example");
        assert!(status.success(), "building the approval example failed");
    }
    assert!(binary.exists(), "no {}", binary.display());
    binary
}

/// An engine that drives runs with the workflow binary's own command line, as separate
/// processes on the same database.
struct BinaryEngine {
    binary: PathBuf,
    db: String,
    store: Arc<dyn Store>,
    children: Mutex<Vec<Child>>,
}

impl BinaryEngine {
    fn spawn(&self, args: &[&str]) {
        let child = Command::new(&self.binary)
            .args(args)
            .args(["--db", &self.db])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the workflow binary");
        self.children.lock().unwrap().push(child);
    }

    fn latest(&self) -> i64 {
        self.store.runs(1).unwrap().first().map_or(0, |r| r.id.get())
    }
}

impl Engine for BinaryEngine {
    fn start(&self, workflow: &WorkflowRef, input: Value) -> salt_runtime::Result<RunId> {
        let before = self.latest();
        self.spawn(&["run", &workflow.workflow, "--input", &input.to_string()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.latest();
            if now > before {
                return Ok(RunId::new(now));
            }
            assert!(Instant::now() < deadline, "the run did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn recover(&self, run: RunId) -> salt_runtime::Result<()> {
        self.spawn(&["recover", &run.to_string()]);
        Ok(())
    }

    fn rerun_from(&self, run: RunId, from: NodeId) -> salt_runtime::Result<()> {
        self.spawn(&["rerun", &run.to_string(), "--from", &from.to_string()]);
        Ok(())
    }

    fn run_one(&self, run: RunId, node: NodeId) -> salt_runtime::Result<()> {
        self.spawn(&["run-one", &run.to_string(), &node.to_string()]);
        Ok(())
    }
}

impl Drop for BinaryEngine {
    fn drop(&mut self) {
        for mut c in self.children.lock().unwrap().drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The catalog of the binary's workflows, from its manifest.
fn catalog_of(binary: &Path) -> StaticCatalog {
    let out = Command::new(binary).args(["manifest", "--json"]).output().expect("manifest");
    assert!(out.status.success(), "manifest failed");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let workflows = m["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| WorkflowEntry {
            name: w["name"].as_str().unwrap().to_string(),
            doc: w["doc"].as_str().unwrap_or_default().to_string(),
            versions: vec![WorkflowVersion {
                reference: WorkflowRef {
                    workflow: w["name"].as_str().unwrap().to_string(),
                    version: 1,
                    binary: "0f3a9c4e5d6b7a8190a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f607".into(),
                },
                registered_at: 1_764_547_200_000,
                registered_by: Some("admin".into()),
            }],
            input_schema: w["input_schema"].clone(),
            default_input: w["default_input"].clone(),
            schedule: None,
            paused: false,
        })
        .collect();
    let spawning = m["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["may_spawn"] == true)
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    StaticCatalog { workflows, spawning }
}

fn wait_for(store: &dyn Store, run: RunId, what: &str, ok: impl Fn(&salt_runtime::model::RunSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(s) = store.load(run)
            && ok(&s)
        {
            return;
        }
        assert!(Instant::now() < deadline, "run {run} never got to {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn images() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src/images");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The state a run's page shows in its header.
const RUN_STATE: &str = "var b = document.querySelector('#run-header h1 .badge'); return b ? b.dataset.state : null;";

#[test]
fn the_ui_shows_a_live_run_and_answers_its_signal_in_a_browser() {
    let binary = approval_binary();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("salt.db").display().to_string();

    // A real run, parked on its signal.
    let mut first = Command::new(&binary)
        .args(["run", "--input", r#"{"amount": 1200}"#, "--db", &db])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = RunId::new(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Only read until the binary has made the database.
    while !salt_runtime::ops::open_read_only(&db)
        .and_then(|s| salt_runtime::ops::show(s.as_ref(), run))
        .is_ok_and(|s| s.waits.iter().any(|w| w.name == "decision"))
    {
        assert!(Instant::now() < deadline, "the approval run never waited for its decision");
        std::thread::sleep(Duration::from_millis(50));
    }
    let store: Arc<dyn Store> = Arc::from(salt_runtime::ops::open(&db).unwrap());

    let engine = Arc::new(BinaryEngine {
        binary: binary.clone(),
        db: db.clone(),
        store: store.clone(),
        children: Mutex::default(),
    });
    let state = AppState {
        db: db.clone(),
        store: store.clone(),
        conn: Arc::new(Mutex::new(rusqlite::Connection::open_in_memory().unwrap())),
        engine: engine.clone(),
        data: dir.path().to_path_buf(),
        dispatcher: salt_runtime::remote::Dispatcher::new(),
    };
    let app = salt_server::ui::routes(Arc::new(catalog_of(&binary))).with_state(state);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start();
    let images = images();

    // The runs page lists the run with its state, and counts it.
    browser.goto(&format!("{base}/runs"));
    let row = browser.js(
        "var r = document.querySelector('tr[data-run=\"1\"]'); return r ? [r.cells[1].textContent, r.querySelector('.badge').dataset.state] : null;",
        json!([]),
    );
    assert_eq!(row, json!(["approval", "running"]));
    let running = browser.js("return document.querySelector('[data-count=\"running\"] b').textContent;", json!([]));
    assert_eq!(running, "1");

    // The run page draws the graph as of now: the workflow waiting, `quote` done.
    browser.goto(&format!("{base}/runs/1"));
    let nodes = browser.js(
        "return Array.from(document.querySelectorAll('svg.salt-graph g.node')).map(function (g) { return [g.dataset.node, g.dataset.state, g.querySelector('tspan').textContent]; });",
        json!([]),
    );
    assert_eq!(nodes, json!([["0", "waiting", "0: approval"], ["1", "succeeded", "1: quote"]]));
    assert_eq!(browser.js(RUN_STATE, json!([])), "running");
    // The signal's form is generated from the type it waits for.
    let fields = browser.js(
        "return Array.from(document.querySelectorAll('form[data-signal=\"decision\"] [name]')).map(function (e) { return e.name; });",
        json!([]),
    );
    assert_eq!(fields, json!(["v/approved", "v/by", "v/comment"]));
    browser.screenshot(&images.join("ui-run-waiting.png"));

    // Answer it through the form: the run goes on and the page follows it live to the end.
    browser.click(r#"form[data-signal="decision"] select[name="v/approved"] option[value="true"]"#);
    browser.type_into(r#"form[data-signal="decision"] input[name="v/by"]"#, "ada");
    browser.click(r#"form[data-signal="decision"] button"#);
    browser.wait_until(
        "return !!document.querySelector('.notice') && document.querySelector('.notice').textContent.indexOf('sent') >= 0;",
        10,
        "the signal is sent",
    );
    assert_eq!(
        browser.js("return document.querySelector('.notice').textContent;", json!([])),
        "sent `decision` to node 0"
    );
    browser.wait_until(
        "return document.querySelector('#run-header h1 .badge').dataset.state === 'succeeded';",
        60,
        "the run page shows the run succeeded",
    );
    let nodes = browser.js(
        "return Array.from(document.querySelectorAll('svg.salt-graph g.node')).map(function (g) { return [g.dataset.node, g.dataset.state]; });",
        json!([]),
    );
    assert_eq!(nodes, json!([["0", "succeeded"], ["1", "succeeded"], ["2", "succeeded"]]));
    let output = browser.js("return document.querySelector('#run-output').textContent;", json!([]));
    assert_eq!(output, json!("\"paid 1212, approved by ada\""));
    assert!(first.wait().unwrap().success(), "the run's own process ends well");
    browser.screenshot(&images.join("ui-run-succeeded.png"));

    // The node page: attempts, input, output.
    browser.goto(&format!("{base}/runs/1/nodes/2"));
    assert_eq!(
        browser.js("return document.querySelector('#node-output').textContent;", json!([])),
        "\"paid 1212, approved by ada\""
    );
    let input: Value = serde_json::from_str(
        browser.js("return document.querySelector('#node-input').textContent;", json!([])).as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(input, json!({"approver": "ada", "total": 1212}));

    // Rerun from `pay`: it runs again, the run succeeds again.
    browser.goto(&format!("{base}/runs/1"));
    browser.type_into(r#"form[action="/runs/1/rerun"] input[name="node"]"#, "pay");
    browser.click(r#"form[action="/runs/1/rerun"] button"#);
    browser.wait_until("return !!document.querySelector('.notice');", 10, "the rerun is started");
    assert_eq!(browser.js("return document.querySelector('.notice').textContent;", json!([])), "rerunning from node 2");
    wait_for(store.as_ref(), run, "two attempts of `pay`", |s| {
        s.run.state == RunState::Succeeded && s.attempts.iter().filter(|a| a.node == NodeId::new(2)).count() == 2
    });

    // Start a run from the workflow's form, its default input filled in.
    browser.goto(&format!("{base}/workflows/approval"));
    assert_eq!(browser.js("return document.querySelector('input[name=\"v/amount\"]').value;", json!([])), "1200");
    browser.type_into(r#"input[name="v/amount"]"#, "50");
    browser.screenshot(&images.join("ui-start.png"));
    browser.click("form.start button");
    browser.wait_until("return location.pathname === '/runs/2';", 30, "the new run's page opens");
    wait_for(store.as_ref(), RunId::new(2), "its wait", |s| !s.waits.is_empty());
    assert_eq!(store.load(RunId::new(2)).unwrap().run.input, json!({"amount": 50}));
    browser.wait_until(
        "return !!document.querySelector('form[data-signal=\"decision\"]');",
        30,
        "the new run's page shows its signal form",
    );
    // And cancel it from its page.
    browser.click(r#"form[action="/runs/2/cancel"] button"#);
    browser.wait_until(
        "return document.querySelector('#run-header h1 .badge').dataset.state === 'cancelled';",
        40,
        "the new run is cancelled",
    );

    // The runs page follows the store live: a run started elsewhere appears, and its end.
    browser.goto(&format!("{base}/runs"));
    assert_eq!(row_states(&browser), json!([["2", "cancelled"], ["1", "succeeded"]]));
    engine.spawn(&["run", "--input", r#"{"amount": 7}"#]);
    browser.wait_until(
        "return !!document.querySelector('tr[data-run=\"3\"]');",
        30,
        "run 3 appears on the open runs page",
    );
    wait_for(store.as_ref(), RunId::new(3), "its wait", |s| !s.waits.is_empty());
    rt.block_on(salt_runtime::ops::cancel(store.as_ref(), RunId::new(3))).unwrap();
    browser.wait_until(
        "return document.querySelector('tr[data-run=\"3\"] .badge').dataset.state === 'cancelled';",
        30,
        "run 3 shows cancelled",
    );
    assert_eq!(
        browser.js("return document.querySelector('[data-count=\"cancelled\"] b').textContent;", json!([])),
        "2"
    );
    assert_eq!(browser.js("return document.body.hasAttribute('data-updated');", json!([])), true, "updated in place");

    // A run of 10 000 nodes opens quickly, its fan-out one group with counts by state.
    let big = fan_out_run(store.as_ref(), 10_000);
    let started = Instant::now();
    browser.goto(&format!("{base}/runs/{big}"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the page of a 10 000-node run took {took:?}");
    let boxes = browser.js("return document.querySelectorAll('svg.salt-graph g').length;", json!([]));
    assert_eq!(boxes, 3, "root, one group, `report`");
    let group = browser.js(
        "return Array.from(document.querySelectorAll('svg.salt-graph g.group tspan')).map(function (t) { return t.textContent; });",
        json!([]),
    );
    assert_eq!(group, json!(["shard × 10000", "9990 succeeded, 10 failed"]));
    browser.screenshot(&images.join("ui-large-run.png"));
    // Expanded, one page of its members is drawn.
    browser.click("svg.salt-graph a:has(g.group)");
    browser.wait_until("return location.search.indexOf('expand=') >= 0;", 10, "the group expands");
    let nodes = browser.js("return document.querySelectorAll('svg.salt-graph g.node').length;", json!([]));
    assert_eq!(nodes, 2 + 100);
    eprintln!("the page of a 10 000-node run loaded in {took:?}");
    browser.goto(&format!("{base}/runs"));
    browser.screenshot(&images.join("ui-runs.png"));
    drop(browser);
    drop(engine);
}

fn row_states(browser: &Browser) -> Value {
    browser.js(
        "return Array.from(document.querySelectorAll('tr[data-run]')).map(function (r) { return [r.dataset.run, r.querySelector('.badge').dataset.state]; });",
        json!([]),
    )
}

/// A failed run of `fan_out` whose root spawned `n` nodes of `shard` feeding one `report`,
/// written record by record.
fn fan_out_run(store: &dyn Store, n: u64) -> RunId {
    use salt_runtime::model::{EdgeKind, EdgeRecord, NodeRecord, NodeState};
    use salt_runtime::store::{NewRun, Write};
    let at = salt_runtime::model::now_ms();
    let node = |id: u64, task: &str, parent: Option<u64>, state: NodeState| NodeRecord {
        id: NodeId::new(id),
        parent: parent.map(NodeId::new),
        task: task.into(),
        state,
        attempts: 1,
        created_at: at,
        started_at: Some(at),
        finished_at: Some(at + 40),
        ..Default::default()
    };
    let input = json!({"shards": n});
    let root = node(0, "fan_out", None, NodeState::Failed);
    let run = store
        .create_run(NewRun {
            workflow: "fan_out",
            input: &input,
            executor: "pool",
            parallelism: 2,
            root: &root,
            lease: None,
        })
        .unwrap();
    let mut writes = vec![Write::RunStarted { run, executor: "pool", parallelism: 2, at }];
    for i in 1..=n {
        let state = if i % 1000 == 0 { NodeState::Failed } else { NodeState::Succeeded };
        writes.push(Write::InsertNode { run, node: Box::new(node(i, "shard", Some(0), state)) });
        writes.push(Write::InsertEdge {
            run,
            edge: EdgeRecord { from: NodeId::new(i), to: NodeId::new(n + 1), kind: EdgeKind::Data, label: None },
        });
    }
    writes.push(Write::InsertNode { run, node: Box::new(node(n + 1, "report", Some(0), NodeState::Skipped)) });
    let error = salt_runtime::Error::new(salt_runtime::ErrorKind::Task, "10 shards failed");
    writes.push(Write::RunState { run, state: RunState::Failed, output: None, error: Some(error), at: at + 50 });
    store.commit(None, &writes).unwrap();
    run
}
