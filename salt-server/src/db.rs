//! The server's own tables, kept in the same SQLite file as the run store: the registry of
//! binaries and workflow versions, which version each run started with, tokens and queues.
//!
//! A plain rusqlite layer: every function takes a connection and returns `rusqlite::Result`.
//! The tables are versioned by their own migrations table, `salt_server_migrations`, so that
//! they never touch the run store's schema version.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use salt_runtime::model::{RunId, RunState, now_ms};

/// The server's schema, one migration per entry, applied in order.
const MIGRATIONS: &[&str] = &["CREATE TABLE salt_server_binaries (
        sha256        TEXT PRIMARY KEY,
        size          INTEGER NOT NULL,
        path          TEXT    NOT NULL,
        manifest      TEXT    NOT NULL,
        registered_at INTEGER NOT NULL
    );
    CREATE TABLE salt_server_workflow_versions (
        workflow      TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        binary        TEXT    NOT NULL REFERENCES salt_server_binaries(sha256),
        manifest      TEXT    NOT NULL,
        registered_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, version)
    );
    CREATE TABLE salt_server_run_versions (
        run_id   INTEGER PRIMARY KEY,
        workflow TEXT    NOT NULL,
        version  INTEGER NOT NULL
    );
    CREATE TABLE salt_server_tokens (
        name       TEXT PRIMARY KEY,
        role       TEXT    NOT NULL,
        hash       TEXT    NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE salt_server_queues (
        name       TEXT PRIMARY KEY,
        active     INTEGER NOT NULL DEFAULT 1,
        private_to TEXT    NOT NULL DEFAULT '[]'
    );
    CREATE TABLE salt_server_node_cancels (
        run_id       INTEGER NOT NULL,
        node_id      INTEGER NOT NULL,
        requested_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, node_id)
    );"];

/// Opens the database file at `path` (which the run store has already created and migrated)
/// and brings the server's tables up to date.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // As the run store by default: a commit survives the process being killed (WAL), without
    // waiting for the disk at each one.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&conn)?;
    crate::schedule::migrate(&conn)?;
    crate::notify::migrate(&conn)?;
    Ok(conn)
}

/// Applies the server's migrations that `conn` has not had yet, in one transaction.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS salt_server_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let done: i64 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM salt_server_migrations", [], |r| r.get(0))?;
    if done as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        // Another process may have migrated while we waited for the lock.
        let done: i64 =
            conn.query_row("SELECT COALESCE(MAX(version), 0) FROM salt_server_migrations", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
            conn.execute_batch(sql)?;
            conn.execute(
                "INSERT INTO salt_server_migrations (version, applied_at) VALUES (?1, ?2)",
                params![i as i64 + 1, now_ms()],
            )?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// A binary in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Binary {
    /// Its sha256, lowercase hex: its name in the registry.
    pub sha256: String,
    /// Its size in bytes.
    pub size: i64,
    /// Where it is stored.
    pub path: String,
    /// When it was registered (ms since the epoch).
    pub registered_at: i64,
}

/// Records a binary with its whole manifest (`manifest --json`); a binary already recorded is
/// left as it is. Returns whether it is new.
pub fn insert_binary(conn: &Connection, binary: &Binary, manifest: &Value) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO salt_server_binaries (sha256, size, path, manifest, registered_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![binary.sha256, binary.size, binary.path, manifest.to_string(), binary.registered_at],
    )?;
    Ok(n == 1)
}

/// The binary of sha256 `sha`, if registered.
pub fn binary(conn: &Connection, sha: &str) -> rusqlite::Result<Option<Binary>> {
    conn.query_row("SELECT sha256, size, path, registered_at FROM salt_server_binaries WHERE sha256 = ?1", [sha], |r| {
        Ok(Binary { sha256: r.get(0)?, size: r.get(1)?, path: r.get(2)?, registered_at: r.get(3)? })
    })
    .optional()
}

/// The whole manifest of the binary of sha256 `sha` (`manifest --json`: its tasks and
/// workflows), if registered.
pub fn binary_manifest(conn: &Connection, sha: &str) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = conn
        .query_row("SELECT manifest FROM salt_server_binaries WHERE sha256 = ?1", [sha], |r| r.get(0))
        .optional()?;
    Ok(text.map(|t| serde_json::from_str(&t).unwrap_or(Value::Null)))
}

/// A registered version of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowVersion {
    /// The workflow's name.
    pub workflow: String,
    /// Its version number: 1 for the first registered, then 2, …
    pub version: i64,
    /// The sha256 of the binary that holds it.
    pub binary: String,
    /// Its entry in the binary's manifest (`manifest --json`, one element of `workflows`):
    /// doc, input and output schemas, policy, default input, schedule, plan.
    #[schema(value_type = Object)]
    pub manifest: Value,
    /// When it was registered (ms since the epoch).
    pub registered_at: i64,
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorkflowVersion> {
    let manifest: String = r.get(3)?;
    Ok(WorkflowVersion {
        workflow: r.get(0)?,
        version: r.get(1)?,
        binary: r.get(2)?,
        manifest: serde_json::from_str(&manifest).unwrap_or(Value::Null),
        registered_at: r.get(4)?,
    })
}

const VERSION_COLUMNS: &str = "workflow, version, binary, manifest, registered_at";

/// Records a new version of `workflow` (the next number) held by the binary `binary`, with its
/// manifest entry; returns its number.
pub fn add_version(conn: &Connection, workflow: &str, binary: &str, manifest: &Value) -> rusqlite::Result<i64> {
    conn.query_row(
        "INSERT INTO salt_server_workflow_versions (workflow, version, binary, manifest, registered_at)
         SELECT ?1, COALESCE(MAX(version), 0) + 1, ?2, ?3, ?4 FROM salt_server_workflow_versions WHERE workflow = ?1
         RETURNING version",
        params![workflow, binary, manifest.to_string(), now_ms()],
        |r| r.get(0),
    )
}

/// The latest version of `workflow`, if it has been registered.
pub fn latest_version(conn: &Connection, workflow: &str) -> rusqlite::Result<Option<WorkflowVersion>> {
    conn.query_row(
        &format!(
            "SELECT {VERSION_COLUMNS} FROM salt_server_workflow_versions WHERE workflow = ?1 ORDER BY version DESC LIMIT 1"
        ),
        [workflow],
        version_row,
    )
    .optional()
}

/// Version `version` of `workflow`.
pub fn version(conn: &Connection, workflow: &str, version: i64) -> rusqlite::Result<Option<WorkflowVersion>> {
    conn.query_row(
        &format!("SELECT {VERSION_COLUMNS} FROM salt_server_workflow_versions WHERE workflow = ?1 AND version = ?2"),
        params![workflow, version],
        version_row,
    )
    .optional()
}

/// Every version of `workflow`, newest first.
pub fn versions(conn: &Connection, workflow: &str) -> rusqlite::Result<Vec<WorkflowVersion>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VERSION_COLUMNS} FROM salt_server_workflow_versions WHERE workflow = ?1 ORDER BY version DESC"
    ))?;
    stmt.query_map([workflow], version_row)?.collect()
}

/// The latest version of every registered workflow, by name.
pub fn latest_versions(conn: &Connection) -> rusqlite::Result<Vec<WorkflowVersion>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {VERSION_COLUMNS} FROM salt_server_workflow_versions v
         WHERE version = (SELECT MAX(version) FROM salt_server_workflow_versions w WHERE w.workflow = v.workflow)
         ORDER BY workflow"
    ))?;
    stmt.query_map([], version_row)?.collect()
}

/// Records that `run` runs version `version` of `workflow` (the version it is pinned to).
pub fn set_run_version(conn: &Connection, run: RunId, workflow: &str, version: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO salt_server_run_versions (run_id, workflow, version) VALUES (?1, ?2, ?3)",
        params![run.get(), workflow, version],
    )?;
    Ok(())
}

/// The workflow version `run` is pinned to, if it was started through the server.
pub fn run_version(conn: &Connection, run: RunId) -> rusqlite::Result<Option<WorkflowVersion>> {
    conn.query_row(
        "SELECT v.workflow, v.version, v.binary, v.manifest, v.registered_at
         FROM salt_server_run_versions r JOIN salt_server_workflow_versions v
           ON v.workflow = r.workflow AND v.version = r.version
         WHERE r.run_id = ?1",
        [run.get()],
        version_row,
    )
    .optional()
}

/// The runs started through this server that have not ended (running, paused, queued or
/// interrupted): those a server that starts drives again.
pub fn unfinished_runs(conn: &Connection) -> rusqlite::Result<Vec<RunId>> {
    let mut stmt = conn.prepare(
        "SELECT r.run_id FROM salt_server_run_versions r JOIN runs ON runs.id = r.run_id
         WHERE runs.state IN ('running', 'paused', 'queued', 'interrupted') ORDER BY r.run_id",
    )?;
    stmt.query_map([], |r| Ok(RunId::new(r.get(0)?)))?.collect()
}

/// Whether the run store holds run `run`.
pub fn run_exists(conn: &Connection, run: RunId) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?1)", [run.get()], |r| r.get(0))
}

/// Which runs a list shows.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in these states (as the run reads now: a running run whose orchestrator is
    /// gone reads `interrupted`); all when empty.
    pub states: Vec<RunState>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs created at or after this time (ms since the epoch).
    pub since: Option<i64>,
    /// Only runs created before this time (ms since the epoch).
    pub until: Option<i64>,
    /// Only runs with an id below this one (the cursor of the next page).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// A run in a list: no input, output or logs.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunRow {
    /// Its id.
    pub id: i64,
    /// Its workflow.
    pub workflow: String,
    /// The workflow version it is pinned to (none for a run not started through the server).
    pub version: Option<i64>,
    /// Its state as it reads now.
    pub state: String,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
    /// When it started.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The message of the error it ended with, if any.
    pub error: Option<String>,
}

/// The state a run reads as now, in SQL over `runs r LEFT JOIN run_leases l` (`?now` = now): a
/// running or paused run whose lease has run out reads `interrupted`.
const EFFECTIVE_STATE: &str =
    "CASE WHEN r.state IN ('running', 'paused') AND (l.expires_at IS NULL OR l.expires_at <= :now)
     THEN 'interrupted' ELSE r.state END";

/// The runs `filter` selects, newest first.
pub fn list_runs(conn: &Connection, filter: &RunFilter) -> rusqlite::Result<Vec<RunRow>> {
    let mut sql = format!(
        "SELECT r.id, r.workflow, v.version, {EFFECTIVE_STATE} AS eff, r.created_at, r.started_at, r.finished_at, r.error
         FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id LEFT JOIN salt_server_run_versions v ON v.run_id = r.id
         WHERE (:workflow IS NULL OR r.workflow = :workflow) AND (:since IS NULL OR r.created_at >= :since)
           AND (:until IS NULL OR r.created_at < :until) AND (:before IS NULL OR r.id < :before)"
    );
    let states: Vec<String> = filter.states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    if !states.is_empty() {
        // The names come from `RunState::as_str`, never from the request.
        sql.push_str(&format!(" AND eff IN ({})", states.join(", ")));
    }
    sql.push_str(" ORDER BY r.id DESC LIMIT :limit");
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        rusqlite::named_params! {
            ":now": now_ms(),
            ":workflow": filter.workflow,
            ":since": filter.since,
            ":until": filter.until,
            ":before": filter.before,
            ":limit": i64::try_from(filter.limit).unwrap_or(i64::MAX),
        },
        |r| {
            let error: Option<String> = r.get(7)?;
            Ok(RunRow {
                id: r.get(0)?,
                workflow: r.get(1)?,
                version: r.get(2)?,
                state: r.get(3)?,
                created_at: r.get(4)?,
                started_at: r.get(5)?,
                finished_at: r.get(6)?,
                error: error.map(|e| {
                    serde_json::from_str::<Value>(&e)
                        .ok()
                        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or(e)
                }),
            })
        },
    )?;
    rows.collect()
}

/// How many runs are in each state (as they read now), by state name.
pub fn runs_by_state(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {EFFECTIVE_STATE} AS eff, COUNT(*) FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id
         GROUP BY eff ORDER BY eff"
    ))?;
    stmt.query_map(rusqlite::named_params! {":now": now_ms()}, |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// How many attempts wait in each queue of the ready queue, by queue name.
pub fn queue_depths(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt =
        conn.prepare("SELECT queue, COUNT(*) FROM ready_queue WHERE state = 'ready' GROUP BY queue ORDER BY queue")?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
}

/// A token as stored: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Its name.
    pub name: String,
    /// Its role (`viewer`, `operator`, `admin`, `worker`).
    pub role: String,
    /// The sha256 of the token, lowercase hex.
    pub hash: String,
    /// When it was created (ms since the epoch).
    pub created_at: i64,
}

/// Records a token. Fails (a constraint error) when a token of that name exists.
pub fn insert_token(conn: &Connection, name: &str, role: &str, hash: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO salt_server_tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, role, hash, now_ms()],
    )?;
    Ok(())
}

/// Every token, by name.
pub fn tokens(conn: &Connection) -> rusqlite::Result<Vec<TokenRow>> {
    let mut stmt = conn.prepare("SELECT name, role, hash, created_at FROM salt_server_tokens ORDER BY name")?;
    stmt.query_map([], |r| Ok(TokenRow { name: r.get(0)?, role: r.get(1)?, hash: r.get(2)?, created_at: r.get(3)? }))?
        .collect()
}

/// Whether any token exists (then every request needs one).
pub fn any_token(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM salt_server_tokens)", [], |r| r.get(0))
}

/// Deletes the token `name`; returns whether there was one.
pub fn delete_token(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM salt_server_tokens WHERE name = ?1", [name])? == 1)
}

/// A queue's settings. A queue with no row is active and open to every worker token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// Whether workers get attempts from it.
    pub active: bool,
    /// The names of the tokens that may take its attempts; anyone when empty.
    pub private_to: Vec<String>,
}

/// Records (or replaces) a queue's settings.
pub fn put_queue(conn: &Connection, queue: &Queue) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO salt_server_queues (name, active, private_to) VALUES (?1, ?2, ?3)",
        params![queue.name, queue.active, serde_json::to_string(&queue.private_to).unwrap_or_else(|_| "[]".into())],
    )?;
    Ok(())
}

fn queue_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Queue> {
    let private: String = r.get(2)?;
    Ok(Queue { name: r.get(0)?, active: r.get(1)?, private_to: serde_json::from_str(&private).unwrap_or_default() })
}

/// The settings of queue `name`: those recorded, or active and open when none are.
pub fn queue(conn: &Connection, name: &str) -> rusqlite::Result<Queue> {
    let found = conn
        .query_row("SELECT name, active, private_to FROM salt_server_queues WHERE name = ?1", [name], queue_row)
        .optional()?;
    Ok(found.unwrap_or_else(|| Queue { name: name.to_string(), active: true, private_to: Vec::new() }))
}

/// Every queue with recorded settings, by name.
pub fn queues(conn: &Connection) -> rusqlite::Result<Vec<Queue>> {
    let mut stmt = conn.prepare("SELECT name, active, private_to FROM salt_server_queues ORDER BY name")?;
    stmt.query_map([], queue_row)?.collect()
}

/// Whether the worker token `token` may take attempts from `queue`: the queue is active and
/// open, or private to that token.
pub fn queue_serves(queue: &Queue, token: Option<&str>) -> bool {
    queue.active && (queue.private_to.is_empty() || token.is_some_and(|t| queue.private_to.iter().any(|n| n == t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        salt_runtime::ops::open(&path.display().to_string()).unwrap();
        let conn = open(&path).unwrap();
        (dir, conn)
    }

    #[test]
    fn migrations_apply_once_and_the_run_store_still_opens() {
        let (dir, conn) = fresh();
        migrate(&conn).unwrap();
        let applied: i64 = conn.query_row("SELECT COUNT(*) FROM salt_server_migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
        drop(conn);
        let path = dir.path().join("server.db").display().to_string();
        salt_runtime::ops::open(&path).unwrap();
        salt_runtime::ops::open_read_only(&path).unwrap();
        open(Path::new(&path)).unwrap();
    }

    #[test]
    fn versions_count_per_workflow() {
        let (_dir, conn) = fresh();
        let bin = |sha: &str| Binary { sha256: sha.into(), size: 3, path: format!("/b/{sha}"), registered_at: 1 };
        let manifest = serde_json::json!({"tasks": []});
        assert!(insert_binary(&conn, &bin("aa"), &manifest).unwrap());
        assert!(!insert_binary(&conn, &bin("aa"), &manifest).unwrap());
        insert_binary(&conn, &bin("bb"), &manifest).unwrap();
        assert_eq!(binary_manifest(&conn, "bb").unwrap(), Some(manifest));
        assert_eq!(add_version(&conn, "etl", "aa", &serde_json::json!({"n": 1})).unwrap(), 1);
        assert_eq!(add_version(&conn, "report", "aa", &serde_json::json!({})).unwrap(), 1);
        assert_eq!(add_version(&conn, "etl", "bb", &serde_json::json!({"n": 2})).unwrap(), 2);
        let latest = latest_version(&conn, "etl").unwrap().unwrap();
        assert_eq!((latest.version, latest.binary.as_str(), &latest.manifest), (2, "bb", &serde_json::json!({"n": 2})));
        let all: Vec<(String, i64)> =
            latest_versions(&conn).unwrap().into_iter().map(|v| (v.workflow, v.version)).collect();
        assert_eq!(all, [("etl".to_string(), 2), ("report".to_string(), 1)]);
        assert_eq!(versions(&conn, "etl").unwrap().iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(version(&conn, "etl", 1).unwrap().unwrap().binary, "aa");
        assert!(version(&conn, "etl", 3).unwrap().is_none());
        assert_eq!(binary(&conn, "bb").unwrap().unwrap().path, "/b/bb");
        set_run_version(&conn, RunId::new(7), "etl", 1).unwrap();
        assert_eq!(run_version(&conn, RunId::new(7)).unwrap().unwrap().binary, "aa");
        assert!(run_version(&conn, RunId::new(8)).unwrap().is_none());
    }

    #[test]
    fn queues_default_to_active_and_open() {
        let (_dir, conn) = fresh();
        let open_queue = queue(&conn, "gpu").unwrap();
        assert!(queue_serves(&open_queue, None));
        put_queue(&conn, &Queue { name: "gpu".into(), active: true, private_to: vec!["ann".into()] }).unwrap();
        let private = queue(&conn, "gpu").unwrap();
        assert!(queue_serves(&private, Some("ann")));
        assert!(!queue_serves(&private, Some("bob")));
        put_queue(&conn, &Queue { name: "gpu".into(), active: false, private_to: vec![] }).unwrap();
        assert!(!queue_serves(&queue(&conn, "gpu").unwrap(), Some("ann")));
        assert_eq!(queues(&conn).unwrap().len(), 1);
    }
}
