//! The SQLite store: one file, WAL, so other processes read while a run writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::{NewRun, Store, Write};
use crate::error::{ErrorWire, StoreError};
use crate::model::{
    AttemptRecord, EdgeKind, EdgeRecord, JournalRecord, LogRecord, NodeId, NodeRecord, NodeState, PromiseRecord,
    RunControl, RunId, RunRecord, RunSnapshot, RunState, RunSummary, StoredArg, WaitRecord, now_ms,
};

/// The schema, one migration per file, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] =
    &[include_str!("../../migrations/0001_init.sql"), include_str!("../../migrations/0002_gradient.sql")];

/// A run whose orchestrator has not written a heartbeat for this long is interrupted.
const STALE_AFTER_MS: i64 = 30_000;

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
        }
        // While another process creates the file or switches it to WAL, SQLite may answer
        // "database is locked" at once, without waiting: try again for a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Self::try_open(path) {
                Err(StoreError::Sqlite { source, .. }) if is_busy(&source) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let err = |source| StoreError::Sqlite { path: shown.clone(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // WAL is a property of the file: set it once, when the file is new.
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let mut store = Self { conn, path: path.to_path_buf() };
        store.migrate()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.display().to_string(), source }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| self.sql(e))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew { path: self.path.display().to_string(), found: version, supported });
        }
        if version == supported {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        // Another process may have migrated while we waited for the lock.
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(sql).map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        }
        tx.pragma_update(None, "user_version", supported)
            .map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        tx.commit().map_err(|source| StoreError::Sqlite { path, source })
    }

    fn apply(tx: &rusqlite::Transaction<'_>, w: &Write) -> rusqlite::Result<()> {
        match w {
            Write::RunStarted { run, pid, executor, parallelism, at } => {
                tx.prepare_cached(
                    "UPDATE runs SET state = 'running', owner_pid = ?2, heartbeat_at = ?3,
                     started_at = COALESCE(started_at, ?3), finished_at = NULL, cancel_requested = 0,
                     executor = ?4, parallelism = ?5
                     WHERE id = ?1",
                )?
                .execute(params![run, pid, at, executor, parallelism])?;
            }
            Write::RunState { run, state, output, error, at } => {
                let finished = state.is_terminal().then_some(*at);
                tx.prepare_cached(
                    "UPDATE runs SET state = ?2, output = ?3, error = ?4, finished_at = ?5,
                     owner_pid = CASE WHEN ?6 THEN NULL ELSE owner_pid END WHERE id = ?1",
                )?
                .execute(params![
                    run,
                    state.as_str(),
                    output.as_ref().map(Value::to_string),
                    error.as_ref().map(json),
                    finished,
                    state.is_terminal(),
                ])?;
            }
            Write::Heartbeat { run, at } => {
                tx.prepare_cached("UPDATE runs SET heartbeat_at = ?2 WHERE id = ?1")?.execute(params![run, at])?;
            }
            Write::InsertNode { run, node } => {
                tx.prepare_cached(
                    "INSERT INTO nodes (run_id, id, parent, seq, task, state, args, input_hash, label, created_at, color, shape)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    run,
                    node.id,
                    node.parent,
                    node.seq,
                    node.task,
                    node.state.as_str(),
                    json(&node.args),
                    node.input_hash,
                    node.label,
                    node.created_at,
                    node.color,
                    node.shape,
                ])?;
            }
            Write::InsertEdge { run, edge } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO edges (run_id, from_node, to_node, kind) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![run, edge.from, edge.to, edge.kind.as_str()])?;
            }
            Write::NodeState { run, node, state } => {
                tx.prepare_cached("UPDATE nodes SET state = ?3 WHERE run_id = ?1 AND id = ?2")?.execute(params![
                    run,
                    node,
                    state.as_str()
                ])?;
            }
            Write::NodeArgs { run, node, args, input_hash } => {
                tx.prepare_cached("UPDATE nodes SET args = ?3, input_hash = ?4 WHERE run_id = ?1 AND id = ?2")?
                    .execute(params![run, node, json(args), input_hash])?;
            }
            Write::NodeReset { run, node } => {
                tx.prepare_cached(
                    "UPDATE nodes SET state = 'pending', output = NULL, error = NULL, finished_at = NULL
                     WHERE run_id = ?1 AND id = ?2",
                )?
                .execute(params![run, node])?;
            }
            Write::AttemptStarted { run, node, attempt, executor, at } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO attempts (run_id, node_id, attempt, state, executor, started_at)
                     VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                )?
                .execute(params![run, node, attempt, executor, at])?;
                tx.prepare_cached(
                    "UPDATE nodes SET state = 'running', attempts = ?3, started_at = ?4 WHERE run_id = ?1 AND id = ?2",
                )?
                .execute(params![run, node, attempt, at])?;
            }
            Write::AttemptFinished { run, node, attempt, state, error, at } => {
                tx.prepare_cached(
                    "UPDATE attempts SET state = ?4, error = ?5, finished_at = ?6
                     WHERE run_id = ?1 AND node_id = ?2 AND attempt = ?3",
                )?
                .execute(params![run, node, attempt, state.as_str(), error.as_ref().map(json), at])?;
            }
            Write::NodeFinished { run, node, state, output, error, at } => {
                tx.prepare_cached(
                    "UPDATE nodes SET state = ?3, output = ?4, error = ?5, finished_at = ?6
                     WHERE run_id = ?1 AND id = ?2",
                )?
                .execute(params![
                    run,
                    node,
                    state.as_str(),
                    output.as_ref().map(Value::to_string),
                    error.as_ref().map(json),
                    at
                ])?;
            }
            Write::Journal { run, node, seq, kind, value } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO journal (run_id, node_id, seq, kind, value) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![run, node, seq, json(kind).trim_matches('"'), value.to_string()])?;
            }
            Write::Annotate { run, node, annotation } => {
                tx.prepare_cached(
                    "UPDATE nodes SET label = COALESCE(?3, label), color = COALESCE(?4, color), shape = COALESCE(?5, shape)
                     WHERE run_id = ?1 AND id = ?2",
                )?
                .execute(params![run, node, annotation.label, annotation.color, annotation.shape])?;
            }
            Write::Promise { run, record } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO promises (run_id, id, scope_node, declared_by, seq, text, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    run,
                    record.id,
                    record.scope,
                    record.declared_by,
                    record.seq,
                    record.text,
                    now_ms()
                ])?;
            }
            Write::WaitStarted { run, record } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO waits (run_id, node_id, seq, name, schema, deadline, default_value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    run,
                    record.node,
                    record.seq,
                    record.name,
                    record.schema.to_string(),
                    record.deadline,
                    record.default.as_ref().map(Value::to_string),
                ])?;
            }
            Write::WaitEnded { run, node, seq } => {
                tx.prepare_cached("DELETE FROM waits WHERE run_id = ?1 AND node_id = ?2 AND seq = ?3")?
                    .execute(params![run, node, seq])?;
            }
            Write::SignalConsumed { id } => {
                tx.prepare_cached("UPDATE signals SET consumed = 1 WHERE id = ?1")?.execute([id])?;
            }
            Write::Log { run, record } => {
                tx.prepare_cached("INSERT INTO logs (run_id, node_id, attempt, ts, line) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![run, record.node, record.attempt, record.ts, record.line])?;
            }
        }
        Ok(())
    }

    /// A run's state; one whose orchestrator is gone reads as `interrupted`.
    fn state_from_row(row: &Row<'_>, owner_pid: Option<u32>) -> rusqlite::Result<RunState> {
        let state: String = row.get("state")?;
        let state = RunState::parse(&state).unwrap_or(RunState::Failed);
        let heartbeat: Option<i64> = row.get("heartbeat_at")?;
        if matches!(state, RunState::Running | RunState::Paused) && !owner_alive(owner_pid, heartbeat) {
            return Ok(RunState::Interrupted);
        }
        Ok(state)
    }

    fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
        let owner_pid: Option<u32> = row.get("owner_pid")?;
        let state = Self::state_from_row(row, owner_pid)?;
        Ok(RunRecord {
            id: row.get("id")?,
            workflow: row.get("workflow")?,
            state,
            input: parse_json(row.get::<_, String>("input")?),
            output: row.get::<_, Option<String>>("output")?.map(parse_json),
            error: row.get::<_, Option<String>>("error")?.and_then(|s| serde_json::from_str(&s).ok()),
            created_at: row.get("created_at")?,
            started_at: row.get("started_at")?,
            finished_at: row.get("finished_at")?,
            executor: row.get("executor")?,
            parallelism: row.get("parallelism")?,
            owner_pid,
        })
    }
}

/// Whether the orchestrator that owns a run is still alive.
fn owner_alive(pid: Option<u32>, heartbeat: Option<i64>) -> bool {
    let Some(pid) = pid else { return false };
    if heartbeat.is_some_and(|h| now_ms() - h > STALE_AFTER_MS) {
        return false;
    }
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid as u32 == std::process::id() {
        return true;
    }
    // Signal 0 checks that the process exists. A zombie (killed, not yet reaped by its parent)
    // still exists, so look at its state too.
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether SQLite said the database is busy or locked.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn parse_json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

impl Store for SqliteStore {
    fn create_run(&mut self, run: NewRun<'_>) -> Result<RunId, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO runs (workflow, state, input, created_at, executor, parallelism)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![run.workflow, run.input.to_string(), now_ms(), run.executor, run.parallelism])
            })
            .map_err(|e| self.sql(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    fn commit(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let path = self.path.display().to_string();
        let err = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(err)?;
        for w in writes {
            Self::apply(&tx, w).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn load(&self, run: RunId) -> Result<RunSnapshot, StoreError> {
        let sql = |e| self.sql(e);
        let record = self
            .conn
            .query_row("SELECT * FROM runs WHERE id = ?1", [run], Self::run_from_row)
            .optional()
            .map_err(sql)?
            .ok_or(StoreError::NoRun(run))?;

        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, parent, seq, task, state, args, input_hash, output, error, attempts, label,
                        created_at, started_at, finished_at, color, shape
                 FROM nodes WHERE run_id = ?1 ORDER BY id",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([run], |r| {
                Ok((
                    r.get::<_, NodeId>(0)?,
                    r.get::<_, Option<NodeId>>(1)?,
                    r.get::<_, Option<u32>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, u32>(9)?,
                    r.get::<_, Option<String>>(10)?,
                    r.get::<_, i64>(11)?,
                    r.get::<_, Option<i64>>(12)?,
                    r.get::<_, Option<i64>>(13)?,
                    r.get::<_, Option<String>>(14)?,
                    r.get::<_, Option<String>>(15)?,
                ))
            })
            .map_err(sql)?;
        let mut nodes = Vec::new();
        for row in rows {
            let (
                id,
                parent,
                seq,
                task,
                state,
                args,
                input_hash,
                output,
                error,
                attempts,
                label,
                created_at,
                started_at,
                finished_at,
                color,
                shape,
            ) = row.map_err(sql)?;
            let state = NodeState::parse(&state).ok_or_else(|| corrupt("nodes", format!("state `{state}`")))?;
            let args: Vec<(String, StoredArg)> =
                serde_json::from_str(&args).map_err(|e| corrupt("nodes", format!("args of node {id}: {e}")))?;
            nodes.push(NodeRecord {
                id,
                parent,
                seq,
                task,
                state,
                args,
                input_hash,
                output: output.map(parse_json),
                error: error.and_then(|s| serde_json::from_str::<ErrorWire>(&s).ok()),
                attempts,
                label,
                color,
                shape,
                created_at,
                started_at,
                finished_at,
            });
        }

        let mut stmt = self
            .conn
            .prepare_cached("SELECT from_node, to_node, kind FROM edges WHERE run_id = ?1 ORDER BY to_node, from_node")
            .map_err(sql)?;
        let edges = stmt
            .query_map([run], |r| {
                let kind: String = r.get(2)?;
                Ok(EdgeRecord {
                    from: r.get(0)?,
                    to: r.get(1)?,
                    kind: if kind == "control" { EdgeKind::Control } else { EdgeKind::Data },
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;

        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT node_id, attempt, state, executor, started_at, finished_at, error
                 FROM attempts WHERE run_id = ?1 ORDER BY node_id, attempt",
            )
            .map_err(sql)?;
        let attempts = stmt
            .query_map([run], |r| {
                let state: String = r.get(2)?;
                Ok(AttemptRecord {
                    node: r.get(0)?,
                    attempt: r.get(1)?,
                    state: NodeState::parse(&state).unwrap_or(NodeState::Failed),
                    executor: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    error: r.get::<_, Option<String>>(6)?.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;

        let mut stmt = self
            .conn
            .prepare_cached("SELECT node_id, seq, kind, value FROM journal WHERE run_id = ?1 ORDER BY node_id, seq")
            .map_err(sql)?;
        let journal = stmt
            .query_map([run], |r| {
                let kind: String = r.get(2)?;
                Ok((r.get::<_, NodeId>(0)?, r.get::<_, u32>(1)?, kind, r.get::<_, String>(3)?))
            })
            .map_err(sql)?
            .map(|row| {
                let (node, seq, kind, value) = row.map_err(sql)?;
                let kind = serde_json::from_value(Value::String(kind.clone()))
                    .map_err(|_| corrupt("journal", format!("kind `{kind}`")))?;
                Ok(JournalRecord { node, seq, kind, value: parse_json(value) })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, scope_node, declared_by, seq, text FROM promises WHERE run_id = ?1 ORDER BY id")
            .map_err(sql)?;
        let promises = stmt
            .query_map([run], |r| {
                Ok(PromiseRecord {
                    id: r.get(0)?,
                    scope: r.get(1)?,
                    declared_by: r.get(2)?,
                    seq: r.get(3)?,
                    text: r.get(4)?,
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;

        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT node_id, seq, name, schema, deadline, default_value FROM waits WHERE run_id = ?1 ORDER BY node_id, seq",
            )
            .map_err(sql)?;
        let waits = stmt
            .query_map([run], |r| {
                Ok(WaitRecord {
                    node: r.get(0)?,
                    seq: r.get(1)?,
                    name: r.get(2)?,
                    schema: parse_json(r.get(3)?),
                    deadline: r.get(4)?,
                    default: r.get::<_, Option<String>>(5)?.map(parse_json),
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;

        Ok(RunSnapshot { run: record, nodes, edges, attempts, journal, promises, waits })
    }

    fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, workflow, state, error, created_at, started_at, finished_at, executor, parallelism,
                        owner_pid, heartbeat_at
                 FROM runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                let owner_pid: Option<u32> = row.get("owner_pid")?;
                Ok(RunSummary {
                    id: row.get("id")?,
                    workflow: row.get("workflow")?,
                    state: Self::state_from_row(row, owner_pid)?,
                    error: row.get::<_, Option<String>>("error")?.and_then(|s| serde_json::from_str(&s).ok()),
                    created_at: row.get("created_at")?,
                    started_at: row.get("started_at")?,
                    finished_at: row.get("finished_at")?,
                    executor: row.get("executor")?,
                    parallelism: row.get("parallelism")?,
                    owner_pid,
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows.map_err(|e| self.sql(e))
    }

    fn logs(&self, run: RunId, node: Option<NodeId>) -> Result<Vec<LogRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT node_id, attempt, ts, line FROM logs
                 WHERE run_id = ?1 AND (?2 IS NULL OR node_id = ?2) ORDER BY rowid",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![run, node], |r| {
                Ok(LogRecord { node: r.get(0)?, attempt: r.get(1)?, ts: r.get(2)?, line: r.get(3)? })
            })
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows.map_err(|e| self.sql(e))
    }

    fn request_cancel(&mut self, run: RunId) -> Result<(), StoreError> {
        let n =
            self.conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [run]).map_err(|e| self.sql(e))?;
        if n == 0 { Err(StoreError::NoRun(run)) } else { Ok(()) }
    }

    fn control(&self, run: RunId) -> Result<RunControl, StoreError> {
        let (cancel_requested, paused) = self
            .conn
            .query_row("SELECT cancel_requested, paused FROM runs WHERE id = ?1", [run], |r| {
                Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?))
            })
            .optional()
            .map_err(|e| self.sql(e))?
            .ok_or(StoreError::NoRun(run))?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, value FROM signals WHERE run_id = ?1 AND consumed = 0 ORDER BY id")
            .map_err(|e| self.sql(e))?;
        let signals = stmt
            .query_map([run], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, parse_json(r.get(2)?))))
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.sql(e))?;
        Ok(RunControl { cancel_requested, paused, signals })
    }

    fn set_paused(&mut self, run: RunId, paused: bool) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute("UPDATE runs SET paused = ?2 WHERE id = ?1", params![run, paused])
            .map_err(|e| self.sql(e))?;
        if n == 0 { Err(StoreError::NoRun(run)) } else { Ok(()) }
    }

    fn send_signal(&mut self, run: RunId, name: &str, value: &Value) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO signals (run_id, name, value, at) VALUES (?1, ?2, ?3, ?4)",
                params![run, name, value.to_string(), now_ms()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/salt.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let input = serde_json::json!({"n": 3});
        let run =
            store.create_run(NewRun { workflow: "wf", input: &input, executor: "inline", parallelism: 2 }).unwrap();
        let node = NodeRecord {
            id: 0,
            parent: None,
            seq: None,
            task: "wf".into(),
            state: NodeState::Ready,
            args: vec![("n".into(), StoredArg::Value(3.into()))],
            input_hash: "h".into(),
            output: None,
            error: None,
            attempts: 0,
            label: None,
            color: None,
            shape: None,
            created_at: 1,
            started_at: None,
            finished_at: None,
        };
        store
            .commit(&[
                Write::RunStarted { run, pid: std::process::id(), executor: "inline", parallelism: 2, at: 5 },
                Write::InsertNode { run, node: Box::new(node) },
                Write::AttemptStarted { run, node: 0, attempt: 1, executor: "inline", at: 6 },
                Write::NodeFinished {
                    run,
                    node: 0,
                    state: NodeState::Succeeded,
                    output: Some(7.into()),
                    error: None,
                    at: 7,
                },
            ])
            .unwrap();
        // A second connection sees it, as another terminal would.
        let reader = SqliteStore::open(&path).unwrap();
        let snap = reader.load(run).unwrap();
        assert_eq!(snap.run.workflow, "wf");
        assert_eq!(snap.nodes[0].state, NodeState::Succeeded);
        assert_eq!(snap.nodes[0].output, Some(7.into()));
        assert_eq!(snap.nodes[0].attempts, 1);
        assert_eq!(reader.runs(10).unwrap()[0].id, run);
        assert!(matches!(reader.load(run + 1), Err(StoreError::NoRun(_))));
    }

    #[test]
    fn many_connections_may_open_a_new_file_at_once() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("salt.db");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
            let opened: Vec<_> = (0..8)
                .map(|_| {
                    let (path, barrier) = (path.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteStore::open(&path).map(|_| ())
                    })
                })
                .collect();
            for t in opened {
                t.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn a_run_whose_owner_is_gone_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("salt.db")).unwrap();
        let input = serde_json::json!({});
        let run =
            store.create_run(NewRun { workflow: "wf", input: &input, executor: "inline", parallelism: 1 }).unwrap();
        // pid 0x7fff_fff0 does not exist.
        store
            .commit(&[Write::RunStarted { run, pid: 0x7fff_fff0, executor: "inline", parallelism: 1, at: now_ms() }])
            .unwrap();
        assert_eq!(store.load(run).unwrap().run.state, RunState::Interrupted);
    }
}
