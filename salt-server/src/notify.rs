//! Webhooks: an HTTP POST with a JSON body to the URLs a workflow's `salt.toml` names when one
//! of its runs fails or succeeds, or a node of it waits for a signal.
//!
//! The part that drives runs calls [`Notifier::notify`], which only puts the notification on
//! a channel and never blocks. A background task looks up the workflow's webhooks, records a
//! delivery per URL in `webhook_deliveries` and posts, retrying with exponential backoff.
//!
//! The body: `{"event": "failed", "run": 12, "workflow": "etl", "state": "failed",
//! "node": {"id": 3, "task": "approve", "signal": "approval"}, "at": "2024-05-01T03:00:00Z"}`
//! (`node` only for `waiting`), with the headers `X-Salt-Event` and `X-Salt-Delivery` (the
//! delivery's id, the same across its retries).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sql::{Conn, params};
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;

use salt_runtime::model::{RunId, RunState};

use crate::config::{WebhookConfig, WebhookEvent};

/// Creates the `webhook_deliveries` table (idempotent; [`crate::schedule::migrate`] calls it).
pub fn migrate(conn: &Conn) -> crate::sql::Result<()> {
    if conn.is_postgres() {
        // Part of the server's versioned migrations there (`db::migrate`).
        return Ok(());
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS webhook_deliveries (
            id INTEGER PRIMARY KEY,
            workflow TEXT NOT NULL,
            run INTEGER NOT NULL,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            response INTEGER,
            error TEXT,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS webhook_deliveries_run ON webhook_deliveries (run);",
    )
}

/// What happened, to be told to the workflow's webhooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// `failed`, `succeeded` or `waiting`.
    pub event: WebhookEvent,
    /// The run.
    pub run: i64,
    /// Its workflow's name.
    pub workflow: String,
    /// The run's state.
    pub state: RunState,
    /// The node waiting for a signal (`waiting` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<WaitingNode>,
    /// When it happened.
    pub at: Timestamp,
}

/// The node a `waiting` notification is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaitingNode {
    /// Its id within the run.
    pub id: i64,
    /// Its task's name.
    pub task: String,
    /// The signal it waits for.
    pub signal: String,
}

impl Notification {
    /// A run ended: `failed` for a failed or terminated run, `succeeded` for a succeeded one;
    /// `None` for other states (a cancelled run is not told).
    pub fn run_ended(run: RunId, workflow: &str, state: RunState) -> Option<Self> {
        let event = match state {
            RunState::Succeeded => WebhookEvent::Succeeded,
            RunState::Failed | RunState::Terminated => WebhookEvent::Failed,
            _ => return None,
        };
        Some(Self { event, run: run.get(), workflow: workflow.into(), state, node: None, at: Timestamp::now() })
    }

    /// A node of a run waits for a signal.
    pub fn waiting(run: RunId, workflow: &str, node: WaitingNode) -> Self {
        Self {
            event: WebhookEvent::Waiting,
            run: run.get(),
            workflow: workflow.into(),
            state: RunState::Running,
            node: Some(node),
            at: Timestamp::now(),
        }
    }
}

/// How deliveries are tried.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; it doubles before each further one.
    pub backoff: Duration,
    /// The time one attempt may take.
    pub timeout: Duration,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        Self { attempts: 5, backoff: Duration::from_secs(2), timeout: Duration::from_secs(10) }
    }
}

/// Sends notifications to webhooks in the background. Cloning it is cheap; all clones feed the
/// same task, which ends when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Notification>,
}

impl Notifier {
    /// Starts the background task on the current tokio runtime. `conn` holds the server's
    /// tables: the workflows' webhooks (in `schedules`) and `webhook_deliveries`.
    pub fn spawn(conn: Arc<Mutex<Conn>>, options: NotifyOptions) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(dispatch(conn, options, rx));
        (Self { tx }, task)
    }

    /// Queues `n` for the workflow's webhooks and returns at once.
    pub fn notify(&self, n: Notification) {
        if self.tx.send(n).is_err() {
            tracing::warn!("webhook notifier is gone; a notification was dropped");
        }
    }
}

fn lock(conn: &Mutex<Conn>) -> std::sync::MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

async fn dispatch(conn: Arc<Mutex<Conn>>, options: NotifyOptions, mut rx: mpsc::UnboundedReceiver<Notification>) {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(options.timeout)).http_status_as_error(false).build().into();
    let mut deliveries = tokio::task::JoinSet::new();
    while let Some(n) = rx.recv().await {
        let of = Arc::new(Of { run: n.run, workflow: n.workflow.clone(), event: n.event.as_str() });
        let conn2 = conn.clone();
        let planned = tokio::task::spawn_blocking(move || plan(&conn2, &n)).await;
        let planned = match planned {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::error!(run = of.run, workflow = %of.workflow, "could not record webhook deliveries: {e}");
                continue;
            }
            Err(_) => continue,
        };
        for (id, url, body) in planned {
            deliveries.spawn(deliver(conn.clone(), agent.clone(), options.clone(), of.clone(), id, url, body));
        }
        while deliveries.try_join_next().is_some() {}
    }
    // The sender is gone: finish what is under way.
    while deliveries.join_next().await.is_some() {}
}

/// What a notification is about: the run and the event, sent with each delivery.
struct Of {
    run: i64,
    workflow: String,
    event: &'static str,
}

/// Records one pending delivery per webhook of the workflow that listens to the event.
fn plan(conn: &Mutex<Conn>, n: &Notification) -> crate::sql::Result<Vec<(i64, String, String)>> {
    let c = lock(conn);
    let hooks: Option<String> = crate::sql::OptionalExtension::optional(c.query_row(
        "SELECT webhooks FROM schedules WHERE workflow = ?1",
        [&n.workflow],
        |r| r.get(0),
    ))?;
    let hooks: Vec<WebhookConfig> = hooks.and_then(|h| serde_json::from_str(&h).ok()).unwrap_or_default();
    let body = serde_json::to_string(n).unwrap_or_default();
    let now = Timestamp::now().as_millisecond();
    let mut out = Vec::new();
    for hook in hooks.iter().filter(|h| h.on.contains(&n.event)) {
        let id: i64 = c.query_row(
            "INSERT INTO webhook_deliveries (workflow, run, event, url, body, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6) RETURNING id",
            params![n.workflow, n.run, n.event.as_str(), hook.url, body, now],
            |r| r.get(0),
        )?;
        out.push((id, hook.url.clone(), body.clone()));
    }
    Ok(out)
}

async fn deliver(
    conn: Arc<Mutex<Conn>>,
    agent: ureq::Agent,
    options: NotifyOptions,
    of: Arc<Of>,
    id: i64,
    url: String,
    body: String,
) {
    let event = of.event;
    let mut wait = options.backoff;
    for attempt in 1..=options.attempts.max(1) {
        let (agent, url2, body2) = (agent.clone(), url.clone(), body.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            match agent
                .post(&url2)
                .header("content-type", "application/json")
                .header("x-salt-event", event)
                .header("x-salt-delivery", id.to_string())
                .send(body2)
            {
                Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None),
                Ok(resp) => (Some(resp.status().as_u16()), Some(format!("HTTP {}", resp.status()))),
                Err(e) => (None, Some(e.to_string())),
            }
        })
        .await
        .unwrap_or((None, Some("the delivery panicked".into())));
        let (code, error) = outcome;
        let last = attempt == options.attempts.max(1);
        let status = match (&error, last) {
            (None, _) => "delivered",
            (Some(_), true) => "failed",
            (Some(_), false) => "pending",
        };
        let now = Timestamp::now().as_millisecond();
        let conn2 = conn.clone();
        let error2 = error.clone();
        let _ = tokio::task::spawn_blocking(move || {
            lock(&conn2).execute(
                "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, response = ?4, error = ?5, updated_at = ?6
                 WHERE id = ?1",
                params![id, status, attempt, code, error2, now],
            )
        })
        .await;
        match error {
            None => return,
            Some(e) if last => {
                tracing::warn!(
                    run = of.run,
                    workflow = %of.workflow,
                    event,
                    delivery = id,
                    url,
                    attempts = attempt,
                    "webhook delivery failed: {e}"
                );
                return;
            }
            Some(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
    }
}

/// A delivery as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Its id (the `X-Salt-Delivery` header).
    pub id: i64,
    /// The workflow.
    pub workflow: String,
    /// The run.
    pub run: i64,
    /// `failed`, `succeeded` or `waiting`.
    pub event: String,
    /// Where it goes.
    pub url: String,
    /// `pending` (being tried), `delivered` or `failed` (every attempt failed).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The HTTP status of the last response.
    pub response: Option<u16>,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// The deliveries of a run's notifications, oldest first.
pub fn deliveries(conn: &Conn, run: RunId) -> crate::sql::Result<Vec<Delivery>> {
    let mut stmt = conn.prepare(
        "SELECT id, workflow, run, event, url, status, attempts, response, error FROM webhook_deliveries
         WHERE run = ?1 ORDER BY id",
    )?;
    stmt.query_map([run.get()], |r| {
        Ok(Delivery {
            id: r.get(0)?,
            workflow: r.get(1)?,
            run: r.get(2)?,
            event: r.get(3)?,
            url: r.get(4)?,
            status: r.get(5)?,
            attempts: r.get(6)?,
            response: r.get(7)?,
            error: r.get(8)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use serde_json::{Value, json};

    use super::*;
    use crate::config::WorkflowSettings;
    use crate::engine::WorkflowRef;

    #[derive(Clone, Default)]
    struct Hook {
        calls: Arc<AtomicUsize>,
        bodies: Arc<Mutex<Vec<(Value, String)>>>,
    }

    /// A local endpoint; `/flaky` fails twice, then succeeds; `/down` always fails.
    async fn endpoint(hook: Hook) -> String {
        let record = |fail_until: usize| {
            let hook = hook.clone();
            move |headers: HeaderMap, body: String| {
                let hook = hook.clone();
                async move {
                    let n = hook.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let delivery =
                        headers.get("x-salt-delivery").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    hook.bodies.lock().unwrap().push((serde_json::from_str(&body).unwrap(), delivery));
                    if n < fail_until { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::NO_CONTENT }
                }
            }
        };
        let app = Router::new()
            .route("/ok", post(record(0)))
            .route("/flaky", post(record(3)))
            .route("/down", post(record(usize::MAX)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn setup(webhooks: Value) -> Arc<Mutex<Conn>> {
        let conn = Conn::memory().unwrap();
        crate::schedule::migrate(&conn).unwrap();
        let mut settings = WorkflowSettings::resolve(None, &Value::Null, None);
        settings.webhooks = serde_json::from_value(webhooks).unwrap();
        let target = WorkflowRef { workflow: "etl".into(), version: 1, binary: "ab".into() };
        crate::schedule::register_workflow(&conn, &target, &json!({}), &settings, Timestamp::now()).unwrap();
        Arc::new(Mutex::new(conn))
    }

    fn quick() -> NotifyOptions {
        NotifyOptions { attempts: 4, backoff: Duration::from_millis(20), timeout: Duration::from_secs(5) }
    }

    async fn settle(conn: &Arc<Mutex<Conn>>, run: i64) -> Vec<Delivery> {
        for _ in 0..200 {
            let d = deliveries(&lock(conn), RunId::new(run)).unwrap();
            if !d.is_empty() && d.iter().all(|d| d.status != "pending") {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("deliveries did not settle: {:?}", deliveries(&lock(conn), RunId::new(run)).unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_endpoint_gets_the_delivery_on_the_third_attempt() {
        let hook = Hook::default();
        let base = endpoint(hook.clone()).await;
        let conn = setup(json!([{"url": format!("{base}/flaky"), "on": ["failed"]}]));
        let (notifier, _task) = Notifier::spawn(conn.clone(), quick());
        let n = Notification::run_ended(RunId::new(7), "etl", RunState::Failed).unwrap();
        let at = n.at;
        notifier.notify(n);
        let d = settle(&conn, 7).await;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].status.as_str(), d[0].attempts, d[0].response), ("delivered", 3, Some(204)));
        assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
        let bodies = hook.bodies.lock().unwrap().clone();
        let expected = json!({"event": "failed", "run": 7, "workflow": "etl", "state": "failed", "at": at.to_string()});
        assert!(bodies.iter().all(|(b, id)| *b == expected && *id == d[0].id.to_string()), "{bodies:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_matching_webhooks_are_told_and_a_dead_endpoint_ends_failed() {
        let hook = Hook::default();
        let base = endpoint(hook.clone()).await;
        let conn = setup(json!([
            {"url": format!("{base}/ok"), "on": ["waiting"]},
            {"url": format!("{base}/down")},
            {"url": format!("{base}/ok"), "on": ["succeeded"]},
        ]));
        let (notifier, _task) = Notifier::spawn(conn.clone(), quick());
        let node = WaitingNode { id: 3, task: "approve".into(), signal: "approval".into() };
        notifier.notify(Notification::waiting(RunId::new(9), "etl", node));
        let d = settle(&conn, 9).await;
        let summary: Vec<_> =
            d.iter().map(|d| (d.url.rsplit('/').next().unwrap(), d.status.as_str(), d.attempts)).collect();
        assert_eq!(summary, [("ok", "delivered", 1), ("down", "failed", 4)]);
        assert_eq!(d[1].error.as_deref(), Some("HTTP 503 Service Unavailable"));
        let bodies = hook.bodies.lock().unwrap().clone();
        assert_eq!(bodies[0].0["node"], json!({"id": 3, "task": "approve", "signal": "approval"}));
        assert_eq!(bodies[0].0["event"], "waiting");
        // Another workflow, or a cancelled run, tells nobody.
        notifier.notify(Notification::run_ended(RunId::new(10), "other", RunState::Failed).unwrap());
        assert_eq!(Notification::run_ended(RunId::new(11), "etl", RunState::Cancelled), None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(deliveries(&lock(&conn), RunId::new(10)).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn notify_returns_at_once_while_an_endpoint_hangs() {
        // A listener that accepts and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let conn = setup(json!([{"url": format!("http://{addr}/hang")}]));
        let options =
            NotifyOptions { attempts: 1, backoff: Duration::from_millis(1), timeout: Duration::from_millis(300) };
        let (notifier, _task) = Notifier::spawn(conn.clone(), options);
        let started = std::time::Instant::now();
        for run in 0..100 {
            notifier.notify(Notification::run_ended(RunId::new(run), "etl", RunState::Succeeded).unwrap());
        }
        assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
        let d = settle(&conn, 99).await;
        assert_eq!(d[0].status, "failed");
        assert!(d[0].error.as_deref().unwrap_or("").contains("timeout"), "{:?}", d[0].error);
    }
}
