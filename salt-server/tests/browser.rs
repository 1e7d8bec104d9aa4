//! The web UI in a real browser against the deployed shape: a `salt server` process on a
//! temporary database, one `salt worker` process, the `approval` example and the server's
//! `relay` example registered with `salt register`, tokens in use. Headless Chromium (Debian's
//! `chromium` and `chromium-driver`) signs in, starts runs from the workflows' forms, follows
//! them in the live graph, answers a signal, reruns from a node, kills a running node, and
//! checks what a viewer may do. The screenshots it takes go into the book.

mod common;

#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use salt_runtime::model::{NodeId, RunId, RunSnapshot, RunState};
use salt_runtime::store::Store;

use webdriver::Browser;

use common::{SALT, example, free_port, text};

/// A server and its worker as processes, killed when dropped.
struct Deployment {
    dir: tempfile::TempDir,
    url: String,
    children: Vec<Child>,
}

impl Deployment {
    fn db(&self) -> String {
        self.dir.path().join("server.db").display().to_string()
    }

    fn work(&self) -> String {
        self.dir.path().join("work").display().to_string()
    }

    fn salt(&self, args: &[&str], token: &str) -> Output {
        Command::new(SALT)
            .args(args)
            .args(["--server", &self.url, "--token", token])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Creates a token on the server's database and returns it.
    fn token(&self, name: &str, role: &str) -> String {
        let out =
            Command::new(SALT).args(["token", "create", name, "--role", role, "--db", &self.db()]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn spawn(&mut self, args: &[&str]) {
        let child = Command::new(SALT)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salt");
        self.children.push(child);
    }

    /// How many times the relay step `marker` ran.
    fn count(&self, marker: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("work").join(marker)).map(|s| s.lines().count()).unwrap_or(0)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(db: &str, run: RunId, what: &str, ok: impl Fn(&RunSnapshot) -> bool) -> RunSnapshot {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(store) = salt_runtime::ops::open_read_only(db)
            && let Ok(s) = store.load(run)
            && ok(&s)
        {
            return s;
        }
        assert!(Instant::now() < deadline, "run {run} never got to {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the screenshots go: the book's images with `SALT_SCREENSHOTS=1` (to retake them),
/// else a scratch directory, so that running the tests leaves the tree as it was.
fn images(scratch: &Path) -> PathBuf {
    let dir = if std::env::var_os("SALT_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../book/src/images")
    } else {
        scratch.join("screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The state a run's page shows in its header.
const RUN_STATE: &str = "var b = document.querySelector('#run-header h1 .badge'); return b ? b.dataset.state : null;";

fn graph_nodes(browser: &Browser) -> Value {
    browser.js(
        "return Array.from(document.querySelectorAll('svg.salt-graph g.node')).map(function (g) { return [g.dataset.node, g.dataset.state]; });",
        json!([]),
    )
}

/// Serves, on another loopback port, a page that posts `form` (urlencoded) to `action` as soon
/// as it loads, as a hostile page would; returns its URL.
fn forging_page(action: &str, form: &str) -> String {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let mut inputs = String::new();
    for pair in form.split('&') {
        let (name, value) = pair.split_once('=').unwrap();
        let decode = |s: &str| s.replace("%2F", "/");
        inputs.push_str(&format!(r#"<input type="hidden" name="{}" value="{}">"#, decode(name), decode(value)));
    }
    let page = format!(
        r#"<!doctype html><title>forger</title><form method="post" action="{action}">{inputs}</form><script>document.forms[0].submit();</script>"#
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    url
}

fn texts(browser: &Browser, css: &str) -> Value {
    browser.js(
        "return Array.from(document.querySelectorAll(arguments[0])).map(function (e) { return e.textContent.trim(); });",
        json!([css]),
    )
}

#[test]
#[ignore = "needs Chromium and chromedriver (run with --include-ignored; .ci/run does)"]
fn a_served_workflow_runs_from_the_browser_to_the_end() {
    let approval = example("salt-examples", "approval");
    let relay = example("salt-server", "relay");
    let port = free_port();
    let mut d =
        Deployment { dir: tempfile::tempdir().unwrap(), url: format!("http://127.0.0.1:{port}"), children: Vec::new() };
    std::fs::create_dir_all(d.dir.path().join("work")).unwrap();
    let db = d.db();
    let admin = d.token("admin", "admin");
    let worker = d.token("w0", "worker");
    let operator = d.token("ada", "operator");
    let viewer = d.token("vic", "viewer");
    let data = d.dir.path().join("data").display().to_string();
    d.spawn(&["server", "--listen", &format!("127.0.0.1:{port}"), "--db", &db, "--data", &data]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{}/healthz", d.url)).call().is_err() {
        assert!(Instant::now() < deadline, "the server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    for binary in [&approval, &relay] {
        let out = d.salt(&["register", binary.to_str().unwrap()], &admin);
        assert!(out.status.success(), "{}", text(&out));
    }
    let cache = d.dir.path().join("cache").display().to_string();
    let url = d.url.clone();
    d.spawn(&["worker", "--server", &url, "--token", &worker, "--name", "w0", "--slots", "2", "--cache", &cache]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = ureq::get(&format!("{}/api/v1/workers", d.url))
            .header("Authorization", &format!("Bearer {admin}"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<Value>().ok());
        if listed.as_ref().is_some_and(|l| l["workers"].as_array().is_some_and(|w| w.len() == 1)) {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never connected: {listed:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let browser = Browser::start();
    let images = images(d.dir.path());
    let base = d.url.clone();

    // Tokens exist: a page sends the browser to sign in, a wrong token is refused, a right one
    // is kept in a cookie the page's scripts cannot read.
    browser.goto(&format!("{base}/runs"));
    browser.wait_until("return location.pathname === '/login';", 10, "the sign-in page");
    assert_eq!(browser.js("return location.search;", json!([])), "?next=%2Fruns");
    browser.type_into(r#"form.login input[name="token"]"#, "salt_0000");
    browser.click("form.login button");
    browser.wait_until("return !!document.querySelector('.error');", 10, "the refusal");
    assert_eq!(texts(&browser, ".error"), json!(["That token is not valid here."]));
    browser.type_into(r#"form.login input[name="token"]"#, &operator);
    browser.click("form.login button");
    browser.wait_until("return location.pathname === '/runs';", 10, "the runs page after signing in");
    assert_eq!(browser.js("return document.cookie;", json!([])), "", "the cookie is HttpOnly");
    let cookie = browser.cookie(&format!("salt_token_{port}"));
    assert_eq!(
        (&cookie["value"], &cookie["httpOnly"], &cookie["sameSite"], &cookie["path"]),
        (&json!(operator), &json!(true), &json!("Strict"), &json!("/")),
        "{cookie}"
    );

    // A page of another port on the same host (the same site: the browser sends the cookie)
    // posts the start form: refused, and nothing is started (the run below is run 1).
    let forger = forging_page(&format!("{base}/workflows/approval/start"), "version=1&v%2Famount=5");
    browser.goto(&forger);
    browser.wait_until("return document.title.indexOf('Forbidden') === 0;", 10, "the forged start refused");
    let refusal = texts(&browser, ".error");
    assert!(
        refusal[0].as_str().unwrap().starts_with("Refused: this request comes from a page of another site or port"),
        "{refusal}"
    );

    // Start a run of `approval` from its form, generated from the input schema with the
    // default input filled in.
    browser.goto(&format!("{base}/workflows/approval"));
    assert_eq!(browser.js("return document.querySelector('input[name=\"v/amount\"]').value;", json!([])), "1200");
    browser.screenshot(&images.join("ui-start.png"));
    browser.click("form.start button");
    browser.wait_until("return location.pathname === '/runs/1';", 30, "the new run's page opens");

    // The live graph follows it to its signal wait: the workflow waiting, `quote` done.
    browser.wait_until(
        "return !!document.querySelector('form[data-signal=\"decision\"]');",
        60,
        "the run page shows the signal form",
    );
    browser.wait_until(
        "return document.querySelectorAll('svg.salt-graph g.node[data-state=\"succeeded\"]').length === 1;",
        30,
        "`quote` succeeded in the graph",
    );
    assert_eq!(graph_nodes(&browser), json!([["0", "waiting"], ["1", "succeeded"]]));
    assert_eq!(browser.js(RUN_STATE, json!([])), "running");
    let fields = browser.js(
        "return Array.from(document.querySelectorAll('form[data-signal=\"decision\"] [name]')).map(function (e) { return e.name; });",
        json!([]),
    );
    assert_eq!(fields, json!(["csrf", "v/approved", "v/by", "v/comment"]));
    // The form came with a live part: its token was filled in all the same.
    let token = "return document.querySelector('form[data-signal=\"decision\"] input[name=csrf]').value;";
    assert_eq!(browser.js(token, json!([])).as_str().map(str::len), Some(64));
    browser.screenshot(&images.join("ui-run-waiting.png"));

    // Answer it through the form: the run goes on and the page follows it live to the end.
    browser.click(r#"form[data-signal="decision"] select[name="v/approved"] option[value="true"]"#);
    browser.type_into(r#"form[data-signal="decision"] input[name="v/by"]"#, "ada");
    browser.click(r#"form[data-signal="decision"] button"#);
    // (The page still shows "started run 1" until the form's answer replaces it.)
    browser.wait_until(
        "var n = document.querySelector('.notice'); return !!n && n.textContent.indexOf('sent') === 0;",
        10,
        "the signal is sent",
    );
    assert_eq!(texts(&browser, ".notice"), json!(["sent `decision` to node 0"]));
    browser.wait_until(
        "return document.querySelector('#run-header h1 .badge').dataset.state === 'succeeded';",
        60,
        "the run page shows the run succeeded",
    );
    assert_eq!(graph_nodes(&browser), json!([["0", "succeeded"], ["1", "succeeded"], ["2", "succeeded"]]));
    assert_eq!(texts(&browser, "#run-output"), json!(["\"paid 1212, approved by ada\""]));
    browser.screenshot(&images.join("ui-run-succeeded.png"));

    // The node page: one attempt, on the worker; input and output.
    browser.goto(&format!("{base}/runs/1/nodes/2"));
    assert_eq!(texts(&browser, "#node-output"), json!(["\"paid 1212, approved by ada\""]));
    let input: Value = serde_json::from_str(texts(&browser, "#node-input")[0].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({"approver": "ada", "total": 1212}));
    assert_eq!(texts(&browser, "table.attempts tbody tr td:nth-child(2)"), json!(["succeeded"]));

    // Rerun from `pay`: it runs again and the run succeeds again.
    browser.goto(&format!("{base}/runs/1"));
    browser.type_into(r#"form[action="/runs/1/rerun"] input[name="node"]"#, "pay");
    browser.click(r#"form[action="/runs/1/rerun"] button"#);
    browser.wait_until("return !!document.querySelector('.notice');", 10, "the rerun is started");
    assert_eq!(texts(&browser, ".notice"), json!(["rerunning from node 2"]));
    wait_for(&db, RunId::new(1), "two attempts of `pay`", |s| {
        s.run.state == RunState::Succeeded && s.attempts.iter().filter(|a| a.node == NodeId::new(2)).count() == 2
    });
    browser.goto(&format!("{base}/runs/1"));
    assert_eq!(browser.js(RUN_STATE, json!([])), "succeeded");
    assert_eq!(graph_nodes(&browser), json!([["0", "succeeded"], ["1", "succeeded"], ["2", "succeeded"]]));

    // Kill a running node: a relay `chain` whose middle step takes a minute.
    browser.goto(&format!("{base}/workflows/chain"));
    browser.type_into(r#"form.start input[name="v/dir"]"#, &d.work());
    browser.js("document.querySelector('form.start input[name=\"v/slow_ms\"]').value = '';", json!([]));
    browser.type_into(r#"form.start input[name="v/slow_ms"]"#, "60000");
    browser.click("form.start button");
    browser.wait_until("return location.pathname === '/runs/2';", 30, "the chain run's page opens");
    browser.wait_until(
        "return !!document.querySelector('#run-nodes tr[data-node=\"2\"] form.kill');",
        60,
        "step b runs, with a Kill button",
    );
    browser.goto(&format!("{base}/runs/2/nodes/2"));
    browser.click("form.kill button");
    browser.wait_until("return !!document.querySelector('.notice');", 40, "the node is killed");
    assert_eq!(texts(&browser, ".notice"), json!(["node 2 is cancelled"]));
    assert_eq!(texts(&browser, "table.attempts tbody tr td:nth-child(2)"), json!(["cancelled"]));
    let s = wait_for(&db, RunId::new(2), "its end", |s| s.run.state.is_terminal());
    assert_eq!(s.nodes[2].state.as_str(), "cancelled");
    assert_eq!(s.attempts.iter().filter(|a| a.node == NodeId::new(2)).count(), 1, "no retry");
    assert_eq!((d.count("a"), d.count("b"), d.count("c")), (1, 1, 0));
    assert_eq!(s.run.state, RunState::Failed, "the workflow got the killed step's error");

    // The runs page follows the server live: a run started elsewhere appears; its page cancels
    // it.
    browser.goto(&format!("{base}/runs"));
    let input = json!({"dir": d.work(), "slow_ms": 60_000}).to_string();
    let out = d.salt(&["run", "chain", "--input", &input], &operator);
    assert!(out.status.success(), "{}", text(&out));
    browser.wait_until(
        "return !!document.querySelector('tr[data-run=\"3\"]');",
        30,
        "run 3 appears on the open runs page",
    );
    browser.click(r#"tr[data-run="3"] a"#);
    browser.wait_until("return location.pathname === '/runs/3';", 10, "run 3's page");
    browser.wait_until(
        "return !!document.querySelector('#run-nodes tr[data-node=\"2\"] form.kill');",
        60,
        "run 3's step b runs",
    );
    browser.click(r#"form[action="/runs/3/cancel"] button"#);
    browser.wait_until(
        "return document.querySelector('#run-header h1 .badge').dataset.state === 'cancelled';",
        40,
        "run 3 is cancelled",
    );
    assert_eq!(texts(&browser, ".notice"), json!(["run 3 is cancelled"]));

    // Workers and queues.
    browser.goto(&format!("{base}/workers"));
    browser.wait_until(
        "var c = document.querySelector('tr[data-worker=\"w0\"] td.busy'); return !!c && c.textContent === '0';",
        30,
        "the worker runs nothing any more",
    );
    let row = texts(&browser, r#"tr[data-worker="w0"] td"#);
    assert_eq!(row[1], "default", "{row}");
    assert_eq!(row[2], "2");
    assert_eq!(row[4], "serving");
    assert_eq!(
        texts(&browser, r#"tr[data-queue="default"] td"#),
        json!(["default", "active", "anyone", "none", "0", "1", "2"])
    );
    browser.screenshot(&images.join("ui-workers.png"));

    // The runs page: both runs, and a time range that holds none.
    browser.goto(&format!("{base}/runs"));
    assert_eq!(texts(&browser, "tr[data-run] td:first-child"), json!(["3", "2", "1"]));
    assert_eq!(texts(&browser, r#"[data-count="cancelled"] b"#), json!(["1"]));
    assert_eq!(texts(&browser, r#"[data-count="succeeded"] b"#), json!(["1"]));
    browser.goto(&format!("{base}/runs?from=2001-01-01T00%3A00&to=2001-02-01T00%3A00"));
    assert_eq!(texts(&browser, "tr[data-run]"), json!([]));

    // A run of 10 000 nodes opens quickly, its fan-out one group with counts by state.
    let store: Box<dyn Store> = salt_runtime::ops::open(&db).unwrap();
    let big = fan_out_run(store.as_ref(), 10_000);
    let started = Instant::now();
    browser.goto(&format!("{base}/runs/{big}"));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the page of a 10 000-node run took {took:?}");
    let boxes = browser.js("return document.querySelectorAll('svg.salt-graph g').length;", json!([]));
    assert_eq!(boxes, 3, "root, one group, `report`");
    assert_eq!(texts(&browser, "svg.salt-graph g.group tspan"), json!(["shard × 10000", "9990 succeeded, 10 failed"]));
    browser.screenshot(&images.join("ui-large-run.png"));
    browser.click("svg.salt-graph a:has(g.group)");
    browser.wait_until("return location.search.indexOf('expand=') >= 0;", 10, "the group expands");
    let nodes = browser.js("return document.querySelectorAll('svg.salt-graph g.node').length;", json!([]));
    assert_eq!(nodes, 2 + 100);
    eprintln!("the page of a 10 000-node run loaded in {took:?}");
    browser.goto(&format!("{base}/runs"));
    browser.screenshot(&images.join("ui-runs.png"));

    // A viewer sees no action controls, and a post it makes anyway is refused, plainly.
    browser.goto(&format!("{base}/login"));
    assert_eq!(texts(&browser, "#signed-in"), json!(["Signed in as ada (operator)."]));
    browser.click(r#"form[action="/logout"] button"#);
    browser.wait_until(
        "return location.pathname === '/login' && !document.querySelector('#signed-in');",
        10,
        "signed out",
    );
    browser.goto(&format!("{base}/runs/1"));
    browser.wait_until("return location.pathname === '/login';", 10, "signed out, sent to sign in");
    browser.type_into(r#"form.login input[name="token"]"#, &viewer);
    browser.click("form.login button");
    browser.wait_until("return location.pathname === '/runs/1';", 10, "the run page as a viewer");
    assert_eq!(browser.js("return document.querySelectorAll('main form[method=\"post\"]').length;", json!([])), 0);
    browser.goto(&format!("{base}/workflows/approval"));
    assert_eq!(browser.js("return document.querySelectorAll('form.start').length;", json!([])), 0);
    browser.js(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/runs/1/rerun'; var i = document.createElement('input'); i.name = 'node'; i.value = 'pay'; f.appendChild(i); document.body.appendChild(f); f.submit();",
        json!([]),
    );
    browser.wait_until("return document.title.indexOf('Forbidden') === 0;", 10, "the refusal without a token");
    assert_eq!(
        texts(&browser, ".error"),
        json!([
            "Refused: the form's security token is missing or out of date (the page may be older than your sign-in, or come from elsewhere); reload the page and try again."
        ])
    );
    browser.goto(&format!("{base}/workflows/approval"));
    browser.js(
        "var f = document.createElement('form'); f.method = 'post'; f.action = '/runs/1/rerun'; [['node', 'pay'], ['csrf', document.querySelector('meta[name=csrf-token]').content]].forEach(function (p) { var i = document.createElement('input'); i.name = p[0]; i.value = p[1]; f.appendChild(i); }); document.body.appendChild(f); f.submit();",
        json!([]),
    );
    browser.wait_until("return document.title.indexOf('Forbidden') === 0;", 10, "the refusal");
    assert_eq!(texts(&browser, ".error"), json!(["Token vic (viewer) may not POST /runs/1/rerun."]));
    std::thread::sleep(Duration::from_millis(500));
    let s = wait_for(&db, RunId::new(1), "its state", |_| true);
    assert_eq!(s.run.state, RunState::Succeeded, "nothing changed");
    assert_eq!(s.attempts.iter().filter(|a| a.node == NodeId::new(2)).count(), 2, "nothing changed");
    drop(browser);
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
