//! The SQLite store: one file, WAL, so other processes read while a run writes.
//!
//! Every write is an `IMMEDIATE` transaction (it takes the write lock first, so a check and the
//! write that depends on it cannot interleave with another process); readers read in `DEFERRED`
//! transactions and, in WAL mode, never wait for writers.
//!
//! Values whose JSON is over [`SPILL_BYTES`] (outputs, arguments, a run's input, journaled
//! values) are written to blobs beside the file (see [`crate::blob`]) before the transaction
//! that refers to them, and read back by `load`: rows hold small references, readers see values.
//!
//! A worker waiting for entries of its queue, and an orchestrator waiting for its workers'
//! results, are told by a thread that looks at `PRAGMA data_version` every few milliseconds
//! ([`WATCH_POLL`]; read from the WAL index in shared memory: no disk read) and, after each
//! commit of another connection, reads whether there is something for them ([`Store::watch_queue`],
//! [`Store::watch_results`]).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde_json::Value;

use super::{
    Claim, Durability, Lease, NewRun, QueueResult, QueueWatch, Queued, ResultWatch, Store, Write, effective_state,
    live_expiry,
};
use crate::blob::{BlobRef, Blobs, SPILL_BYTES};
use crate::error::{Error, StoreError};
use crate::model::{
    AttemptRecord, EdgeKind, EdgeRecord, JournalRecord, LogRecord, NodeId, NodeRecord, NodeState, PromiseRecord,
    RunControl, RunId, RunRecord, RunSnapshot, RunState, RunSummary, StoredArg, WaitRecord, now_ms,
};

/// The schema, one migration per file, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_gradient.sql"),
    include_str!("../../migrations/0003_leases_queue.sql"),
    include_str!("../../migrations/0004_remote_workers.sql"),
    include_str!("../../migrations/0005_blobs.sql"),
    include_str!("../../migrations/0006_superseded.sql"),
    include_str!("../../migrations/0007_handled_failures.sql"),
    include_str!("../../migrations/0008_edge_labels.sql"),
    include_str!("../../migrations/0009_node_cancels.sql"),
    include_str!("../../migrations/0010_node_policy.sql"),
    include_str!("../../migrations/0011_unrecorded_results.sql"),
];

/// How often a watch looks whether another connection committed (see the module's docs): every
/// millisecond after a commit, a millisecond less often after each look that found none, down
/// to every [`WATCH_POLL_IDLE`].
const WATCH_POLL: Duration = Duration::from_millis(1);

/// How often a watch looks once nothing was committed for a while (a fifth of a second): an idle
/// worker's watch costs next to nothing.
const WATCH_POLL_IDLE: Duration = Duration::from_millis(20);

/// `PRAGMA application_id` of every salt database: `SALT` in ASCII.
pub(crate) const APPLICATION_ID: i32 = 0x5341_4C54;

/// The schema versions written before salt set its application id, and the tables they have: a
/// file without an application id is taken for an older salt database only if it matches.
const UNMARKED_VERSIONS: std::ops::RangeInclusive<i64> = 1..=2;
const UNMARKED_TABLES: &[&str] =
    &["runs", "nodes", "edges", "attempts", "journal", "logs", "promises", "waits", "signals"];

/// How long a statement waits for another connection's lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    read_only: bool,
    /// Where values over [`SPILL_BYTES`] are: `<path>.blobs`.
    blobs: Blobs,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).field("read_only", &self.read_only).finish()
    }
}

/// What a database file is, judged without writing to it.
enum Identity {
    /// A new, empty database.
    Empty,
    /// A salt database of this schema version.
    Salt(i64),
}

impl SqliteStore {
    /// Opens the database at `path` to read and write it, creating it (and its directory) if
    /// needed: the directory is made `0700`, the file `0600`. Migrates it to this salt's schema.
    /// A file that is not a salt database is refused and left untouched.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io { path: dir.display().to_string(), source })?;
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Io { path: path.display().to_string(), source }),
        }
        // While another process creates the file or switches it to WAL, SQLite may answer
        // "database is locked" at once, without waiting: try again for a while.
        let deadline = Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::try_open(path) {
                Err(StoreError::Backend { source, .. })
                    if source.downcast_ref::<rusqlite::Error>().is_some_and(is_busy) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_open(path: &Path) -> Result<Self, StoreError> {
        let err = |e| backend(path, e);
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // Judge the file before changing anything in it.
        identify(&conn, path)?;
        // WAL is a property of the file: set it once, when the file is new.
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        let store =
            Self { conn: Mutex::new(conn), path: path.to_path_buf(), read_only: false, blobs: Blobs::beside(path) };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the database at `path` only to read it: it is never created, migrated or
    /// reconfigured, and may be on a read-only file system. A missing file is
    /// [`StoreError::Missing`].
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path: path.display().to_string() });
            }
            Err(source) => return Err(StoreError::Io { path: path.display().to_string(), source }),
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let open = |query: &str| -> Result<(Connection, Identity), StoreError> {
            let err = |e| backend(path, e);
            let conn = Connection::open_with_flags(format!("file:{}?{query}", uri_path(path)), flags).map_err(err)?;
            conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
            let identity = identify(&conn, path)?;
            Ok((conn, identity))
        };
        // A WAL database needs its shared-memory file beside it; where it cannot be created (a
        // read-only directory) and nobody can be writing, read the file as immutable.
        let (conn, identity) = match open("mode=ro") {
            Err(StoreError::Backend { .. }) => open("mode=ro&immutable=1")?,
            other => other?,
        };
        let supported = MIGRATIONS.len() as i64;
        let shown = path.display().to_string();
        match identity {
            Identity::Empty => Err(StoreError::Missing { path: shown }),
            Identity::Salt(v) if v > supported => Err(StoreError::TooNew { path: shown, found: v, supported }),
            Identity::Salt(v) if v < supported => Err(StoreError::TooOld { path: shown, found: v, supported }),
            Identity::Salt(_) => Ok(Self {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                read_only: true,
                blobs: Blobs::beside(path),
            }),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        backend(&self.path, source)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        let supported = MIGRATIONS.len() as i64;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql)?;
        let marked: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(sql)?;
        if version > supported {
            return Err(StoreError::TooNew { path: self.path.display().to_string(), found: version, supported });
        }
        if version == supported && marked == APPLICATION_ID {
            return Ok(());
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        // Another process may have migrated while we waited for the lock.
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql)?;
        for sql_text in MIGRATIONS.iter().skip(version.max(0) as usize) {
            tx.execute_batch(sql_text).map_err(sql)?;
        }
        tx.pragma_update(None, "user_version", supported).map_err(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// A thread with a read-only connection of its own that looks every few milliseconds
    /// ([`WATCH_POLL`]) whether another connection committed and, after each commit, reads `check` (one row,
    /// one boolean; `param` its parameter, if any): the receiver gets a message when it says
    /// yes. Messages do not pile up: one waits at most. The thread ends with the receiver.
    fn watch_commits(
        &self,
        check: &'static str,
        param: Option<String>,
    ) -> Result<tokio::sync::mpsc::Receiver<()>, StoreError> {
        let conn =
            Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| self.sql(e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| self.sql(e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let path = self.path.clone();
        let look = move || -> rusqlite::Result<()> {
            let mut last = None;
            let mut every = WATCH_POLL;
            while !tx.is_closed() {
                std::thread::sleep(every);
                let version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
                if last == Some(version) {
                    every = (every + WATCH_POLL).min(WATCH_POLL_IDLE);
                    continue;
                }
                last = Some(version);
                every = WATCH_POLL;
                let found: bool = match &param {
                    Some(p) => conn.query_row(check, [p], |r| r.get(0))?,
                    None => conn.query_row(check, [], |r| r.get(0))?,
                };
                if found {
                    let _ = tx.try_send(());
                }
            }
            Ok(())
        };
        std::thread::Builder::new()
            .name("salt-watch".into())
            .spawn(move || {
                // The receiver sees the channel closed and polls instead.
                if let Err(e) = look() {
                    tracing::warn!("stopped watching {}: {e}", path.display());
                }
            })
            .map_err(|e| StoreError::Io { path: self.path.display().to_string(), source: e })?;
        Ok(rx)
    }

    fn write_tx<'c>(&self, conn: &'c mut Connection) -> Result<Transaction<'c>, StoreError> {
        conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| self.sql(e))
    }

    /// What the values of `w` become in its rows: values over [`SPILL_BYTES`] are written to
    /// their blobs now, before the transaction, so that no write lock is held while they are.
    fn prepare(&self, w: &Write) -> Result<Prepared, StoreError> {
        Ok(match w {
            Write::RunState { output: Some(v), .. }
            | Write::NodeFinished { output: Some(v), .. }
            | Write::Journal { value: v, .. } => Prepared::Cell(self.cell(v)?),
            Write::InsertNode { node, .. } => Prepared::Args(self.args_text(&node.args)?),
            _ => Prepared::Nothing,
        })
    }

    /// A value as its column holds it: its JSON, or a reference to the blob that holds it.
    fn cell(&self, value: &Value) -> Result<Cell, StoreError> {
        let text = serde_json::to_vec(value).unwrap_or_default();
        if text.len() > SPILL_BYTES {
            return Ok(Cell { text: self.blobs.put(&text)?.to_json(), blob: true });
        }
        Ok(Cell { text: String::from_utf8(text).unwrap_or_default(), blob: false })
    }

    /// A node's arguments as stored: each literal over [`SPILL_BYTES`] is a tagged reference.
    fn args_text(&self, args: &[(String, StoredArg)]) -> Result<String, StoreError> {
        let mut stored = Vec::with_capacity(args.len());
        for (name, arg) in args {
            let arg = match arg {
                StoredArg::Value(v) => match self.blobs.spill(v)? {
                    Some(r) => ArgOut::Blob(r),
                    None => ArgOut::Value(v),
                },
                StoredArg::Node(n) => ArgOut::Node(*n),
                // A list holds handles: kept inline, values and all.
                StoredArg::List(items) => ArgOut::List(items),
            };
            stored.push((name, arg));
        }
        Ok(json(&stored))
    }

    /// A value read from a column: `text` is its JSON, or (`blob`) a reference to its blob.
    fn value_of(&self, table: &'static str, text: String, blob: bool) -> Result<Value, StoreError> {
        if !blob {
            return Ok(parse_json(text));
        }
        let r: BlobRef =
            serde_json::from_str(&text).map_err(|e| corrupt(table, format!("a blob reference `{text}`: {e}")))?;
        Ok(self.blobs.get_value(&r)?)
    }

    /// A node's arguments read from its row, with spilled ones read back from their blobs.
    fn args_of(&self, node: NodeId, text: &str) -> Result<Vec<(String, StoredArg)>, StoreError> {
        let stored: Vec<(String, ArgIn)> =
            serde_json::from_str(text).map_err(|e| corrupt("nodes", format!("args of node {node}: {e}")))?;
        let mut args = Vec::with_capacity(stored.len());
        for (name, arg) in stored {
            let arg = match arg {
                ArgIn::Value(v) => StoredArg::Value(v),
                ArgIn::Node(n) => StoredArg::Node(n),
                ArgIn::List(items) => StoredArg::List(items),
                ArgIn::Blob(r) => StoredArg::Value(self.blobs.get_value(&r)?),
            };
            args.push((name, arg));
        }
        Ok(args)
    }

    /// Reads back the values a run's row keeps in blobs.
    fn resolve_run(&self, (mut record, input, output): RunRow) -> Result<RunRecord, StoreError> {
        if let Some(text) = input {
            record.input = self.value_of("runs", text, true)?;
        }
        if let Some(text) = output {
            record.output = Some(self.value_of("runs", text, true)?);
        }
        Ok(record)
    }

    fn apply(tx: &rusqlite::Transaction<'_>, w: &Write, prepared: Prepared) -> rusqlite::Result<()> {
        let (cell, args) = match prepared {
            Prepared::Cell(c) => (Some(c), None),
            Prepared::Args(a) => (None, Some(a)),
            Prepared::Nothing => (None, None),
        };
        let blob = cell.as_ref().is_some_and(|c| c.blob);
        let cell = cell.map(|c| c.text);
        match w {
            Write::RunStarted { run, executor, parallelism, at } => {
                tx.prepare_cached(
                    "UPDATE runs SET state = 'running',
                     started_at = COALESCE(started_at, ?2), finished_at = NULL, cancel_requested = 0,
                     executor = ?3, parallelism = ?4
                     WHERE id = ?1",
                )?
                .execute(params![run, at, executor, parallelism])?;
            }
            Write::RunState { run, state, output: _, error, at } => {
                let finished = state.is_terminal().then_some(*at);
                tx.prepare_cached(
                    "UPDATE runs SET state = ?2, output = ?3, output_blob = ?6, error = ?4, finished_at = ?5
                     WHERE id = ?1",
                )?
                .execute(params![
                    run,
                    state.as_str(),
                    cell,
                    error.as_ref().map(json),
                    finished,
                    blob
                ])?;
            }
            Write::InsertNode { run, node } => {
                tx.prepare_cached(
                    "INSERT INTO nodes (run_id, id, parent, seq, task, state, args, input_hash, label, created_at, color, shape, policy)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?
                .execute(params![
                    run,
                    node.id,
                    node.parent,
                    node.seq,
                    node.task,
                    node.state.as_str(),
                    args,
                    node.input_hash,
                    node.label,
                    node.created_at,
                    node.color,
                    node.shape,
                    node.policy.as_ref().map(json),
                ])?;
            }
            Write::InsertEdge { run, edge } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO edges (run_id, from_node, to_node, kind, label) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![run, edge.from, edge.to, edge.kind.as_str(), edge.label])?;
            }
            Write::EdgeLabel { run, from, to, label } => {
                tx.prepare_cached("UPDATE edges SET label = ?4 WHERE run_id = ?1 AND from_node = ?2 AND to_node = ?3")?
                    .execute(params![run, from, to, label])?;
            }
            Write::NodeState { run, node, state } => {
                tx.prepare_cached("UPDATE nodes SET state = ?3 WHERE run_id = ?1 AND id = ?2")?.execute(params![
                    run,
                    node,
                    state.as_str()
                ])?;
            }
            Write::ForgetCalls { run, node, from_seq } => {
                tx.prepare_cached("DELETE FROM journal WHERE run_id = ?1 AND node_id = ?2 AND seq >= ?3")?
                    .execute(params![run, node, from_seq])?;
                tx.prepare_cached("DELETE FROM waits WHERE run_id = ?1 AND node_id = ?2 AND seq >= ?3")?
                    .execute(params![run, node, from_seq])?;
            }
            Write::DropPromise { run, id } => {
                tx.prepare_cached("DELETE FROM promises WHERE run_id = ?1 AND id = ?2")?.execute(params![run, id])?;
            }
            Write::NodeReset { run, node } => {
                tx.prepare_cached(
                    "UPDATE nodes SET state = 'pending', output = NULL, output_blob = 0, error = NULL, finished_at = NULL,
                            delivered_to = NULL
                     WHERE run_id = ?1 AND id = ?2",
                )?
                .execute(params![run, node])?;
            }
            Write::Delivered { run, node, attempt } => {
                tx.prepare_cached("UPDATE nodes SET delivered_to = ?3 WHERE run_id = ?1 AND id = ?2")?
                    .execute(params![run, node, attempt])?;
            }
            Write::AttemptStarted { run, node, attempt, executor, at } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO attempts (run_id, node_id, attempt, state, executor, started_at)
                     VALUES (?1, ?2, ?3, 'running', ?4, ?5)",
                )?
                .execute(params![run, node, attempt, executor.as_ref(), at])?;
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
                // The attempt is over: no worker may start it now, nor report it late.
                tx.prepare_cached(
                    "UPDATE ready_queue
                     SET taken_at = ?4, state = CASE WHEN state IN ('ready', 'claimed') THEN 'cancelled' ELSE state END
                     WHERE run_id = ?1 AND node_id = ?2 AND attempt = ?3 AND taken_at IS NULL",
                )?
                .execute(params![run, node, attempt, at])?;
            }
            Write::NodeFinished { run, node, state, output: _, error, at } => {
                tx.prepare_cached(
                    "UPDATE nodes SET state = ?3, output = ?4, output_blob = ?7, error = ?5, finished_at = ?6
                     WHERE run_id = ?1 AND id = ?2",
                )?
                .execute(params![
                    run,
                    node,
                    state.as_str(),
                    cell,
                    error.as_ref().map(json),
                    at,
                    blob
                ])?;
            }
            Write::Journal { run, node, seq, kind, value: _ } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO journal (run_id, node_id, seq, kind, value, value_blob)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![run, node, seq, json(kind).trim_matches('"'), cell, blob])?;
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
            Write::NodeCancelConsumed { id } => {
                tx.prepare_cached("UPDATE node_cancels SET consumed = 1 WHERE id = ?1")?.execute([id])?;
            }
            Write::Log { run, record } => {
                tx.prepare_cached("INSERT INTO logs (run_id, node_id, attempt, ts, line) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![run, record.node, record.attempt, record.ts, record.line])?;
            }
            Write::Enqueue { run, node, attempt, queue, priority, task, input } => {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO ready_queue
                     (run_id, node_id, attempt, queue, priority, state, enqueued_at, task, input)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'ready', ?6, ?7, ?8)",
                )?
                .execute(params![
                    run,
                    node,
                    attempt,
                    queue,
                    priority,
                    now_ms(),
                    task,
                    input.to_string()
                ])?;
            }
        }
        Ok(())
    }

    /// A run's row; the input and output it keeps in blobs are read back by `resolve_run`.
    fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunRow> {
        let state: String = row.get("state")?;
        let owner: Option<String> = row.get("lease_owner")?;
        let expires = live_expiry(owner.as_deref(), row.get("lease_expires_at")?);
        let now = now_ms();
        let state = effective_state(RunState::parse(&state).unwrap_or(RunState::Failed), expires, now);
        let input: String = row.get("input")?;
        let output: Option<String> = row.get("output")?;
        let (input, input_ref) =
            if row.get("input_blob")? { (Value::Null, Some(input)) } else { (parse_json(input), None) };
        let (output, output_ref) =
            if row.get("output_blob")? { (None, output) } else { (output.map(parse_json), None) };
        let record = RunRecord {
            id: row.get("id")?,
            workflow: row.get("workflow")?,
            state,
            input,
            output,
            error: row.get::<_, Option<String>>("error")?.and_then(|s| serde_json::from_str(&s).ok()),
            created_at: row.get("created_at")?,
            started_at: row.get("started_at")?,
            finished_at: row.get("finished_at")?,
            executor: row.get("executor")?,
            parallelism: row.get("parallelism")?,
            owner: row.get::<_, Option<String>>("lease_owner")?.filter(|_| expires.is_some_and(|e| e > now)),
        };
        Ok((record, input_ref, output_ref))
    }

    /// Updates a claimed entry with `set` if `claim` still holds it.
    fn settle(&self, claim: &Claim, set: &str, value: &dyn rusqlite::ToSql) -> Result<(), StoreError> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(&format!("UPDATE ready_queue SET {set} WHERE id = ?1 AND owner = ?2 AND state = 'claimed'"))
            .and_then(|mut s| s.execute(params![claim.id, claim.owner, value]))
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            Err(StoreError::ClaimLost { id: claim.id, run: claim.run, node: claim.node, owner: claim.owner.clone() })
        } else {
            Ok(())
        }
    }
}

/// What the file at `path` is, judged by reading only. Refuses a file of another application.
fn identify(conn: &Connection, path: &Path) -> Result<Identity, StoreError> {
    // One read transaction, so that another process's migration is seen whole or not at all.
    let tx = conn.unchecked_transaction().map_err(|e| backend(path, e))?;
    identify_in(&tx, path)
}

fn identify_in(conn: &Connection, path: &Path) -> Result<Identity, StoreError> {
    let foreign = |detail: String| StoreError::Foreign { path: path.display().to_string(), detail };
    let app_id: i32 = match conn.query_row("PRAGMA application_id", [], |r| r.get(0)) {
        Ok(id) => id,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            return Err(foreign("it is not a SQLite database".into()));
        }
        Err(e) => return Err(backend(path, e)),
    };
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| backend(path, e))?;
    if app_id == APPLICATION_ID {
        return Ok(Identity::Salt(version));
    }
    if app_id != 0 {
        return Err(foreign(format!("it belongs to another application: its application_id is {app_id:#010x}")));
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| backend(path, e))?;
    if tables.is_empty() && version == 0 {
        return Ok(Identity::Empty);
    }
    let unknown: Vec<&str> = tables.iter().map(String::as_str).filter(|t| !UNMARKED_TABLES.contains(t)).collect();
    if !unknown.is_empty() {
        return Err(foreign(format!("it has tables salt does not use: {}", unknown.join(", "))));
    }
    if !UNMARKED_VERSIONS.contains(&version) || !tables.iter().any(|t| t == "runs") {
        return Err(foreign(format!("it has no salt application_id and schema version {version}")));
    }
    Ok(Identity::Salt(version))
}

/// A path as the path part of a `file:` URI.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn backend(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::backend(format!("database {}", path.display()), source)
}

/// Whether SQLite said the database is busy or locked.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

pub(super) fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(super) fn parse_json(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

/// A run's record, with the references of the input and output it keeps in blobs.
type RunRow = (RunRecord, Option<String>, Option<String>);

/// A value as its column holds it.
struct Cell {
    /// Its JSON, or the reference to the blob that holds it.
    text: String,
    /// Whether `text` is a reference.
    blob: bool,
}

/// What a write's values become in its row.
enum Prepared {
    Nothing,
    /// The value column (an output, a journaled value).
    Cell(Cell),
    /// The arguments column.
    Args(String),
}

/// An argument as `nodes.args` holds it: a [`StoredArg`], or a literal kept in a blob. Tagged
/// like `StoredArg` (`{"value": …}`, `{"node": 3}`), so rows written before blobs read the same.
#[derive(serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ArgOut<'a> {
    Value(&'a Value),
    Node(NodeId),
    Blob(BlobRef),
    List(&'a [StoredArg]),
}

/// An argument read from `nodes.args`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ArgIn {
    Value(Value),
    Node(NodeId),
    Blob(BlobRef),
    List(Vec<StoredArg>),
}

pub(super) fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Checks, inside a write transaction, that `lease` still holds its run.
fn check_lease(tx: &Connection, lease: &Lease) -> rusqlite::Result<Option<StoreError>> {
    let current: Option<String> = tx
        .prepare_cached("SELECT owner FROM run_leases WHERE run_id = ?1")?
        .query_row([lease.run], |r| r.get(0))
        .optional()?;
    Ok((current.as_deref() != Some(lease.owner.as_str())).then(|| StoreError::LeaseLost {
        run: lease.run,
        owner: lease.owner.clone(),
        current,
    }))
}

const RUN_COLUMNS: &str = "SELECT runs.*, l.owner AS lease_owner, l.expires_at AS lease_expires_at
     FROM runs LEFT JOIN run_leases l ON l.run_id = runs.id";

impl Store for SqliteStore {
    fn set_durability(&self, durability: Durability) -> Result<(), StoreError> {
        let level = match durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        };
        self.conn().pragma_update(None, "synchronous", level).map_err(|e| self.sql(e))
    }

    fn blobs(&self) -> Option<Blobs> {
        Some(self.blobs.clone())
    }

    fn reopen(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(if self.read_only { Self::open_read_only(&self.path)? } else { Self::open(&self.path)? }))
    }

    fn create_run(&self, run: NewRun<'_>) -> Result<RunId, StoreError> {
        let sql = |e| self.sql(e);
        let input = self.cell(run.input)?;
        let root_args = Prepared::Args(self.args_text(&run.root.args)?);
        let mut conn = self.conn();
        let tx = self.write_tx(&mut conn)?;
        let now = now_ms();
        tx.prepare_cached(
            "INSERT INTO runs (workflow, state, input, input_blob, created_at, executor, parallelism)
             VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| s.execute(params![run.workflow, input.text, input.blob, now, run.executor, run.parallelism]))
        .map_err(sql)?;
        let id = RunId::new(tx.last_insert_rowid());
        Self::apply(&tx, &Write::InsertNode { run: id, node: Box::new(run.root.clone()) }, root_args).map_err(sql)?;
        if let Some((owner, ttl)) = run.lease {
            tx.prepare_cached(
                "INSERT INTO run_leases (run_id, owner, acquired_at, renewed_at, expires_at) VALUES (?1, ?2, ?3, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![id, owner, now, now.saturating_add(millis(ttl))]))
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        Ok(id)
    }

    fn commit(&self, lease: Option<&Lease>, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let sql = |e| self.sql(e);
        let prepared = writes.iter().map(|w| self.prepare(w)).collect::<Result<Vec<_>, _>>()?;
        let mut conn = self.conn();
        let tx = self.write_tx(&mut conn)?;
        if let Some(lease) = lease
            && let Some(lost) = check_lease(&tx, lease).map_err(sql)?
        {
            return Err(lost);
        }
        for (w, prepared) in writes.iter().zip(prepared) {
            Self::apply(&tx, w, prepared).map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    fn load(&self, run: RunId) -> Result<RunSnapshot, StoreError> {
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        // One read transaction: a consistent snapshot, even while a run writes.
        let tx = conn.transaction().map_err(sql)?;
        let record = tx
            .query_row(&format!("{RUN_COLUMNS} WHERE runs.id = ?1"), [run], Self::run_from_row)
            .optional()
            .map_err(sql)?
            .ok_or(StoreError::NoRun(run))?;
        let record = self.resolve_run(record)?;

        let mut stmt = tx
            .prepare_cached(
                "SELECT id, parent, seq, task, state, args, input_hash, output, error, attempts, label,
                        created_at, started_at, finished_at, color, shape, output_blob, delivered_to, policy
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
                    r.get::<_, bool>(16)?,
                    r.get::<_, Option<u32>>(17)?,
                    r.get::<_, Option<String>>(18)?,
                ))
            })
            .map_err(sql)?;
        let mut nodes = Vec::new();
        let mut delivered = Vec::new();
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
                output_blob,
                delivered_to,
                policy,
            ) = row.map_err(sql)?;
            if let Some(attempt) = delivered_to {
                delivered.push((id, attempt));
            }
            let state = NodeState::parse(&state).ok_or_else(|| corrupt("nodes", format!("state `{state}`")))?;
            let args = self.args_of(id, &args)?;
            let output = output.map(|text| self.value_of("nodes", text, output_blob)).transpose()?;
            nodes.push(NodeRecord {
                id,
                parent,
                seq,
                task,
                state,
                args,
                input_hash,
                output,
                error: error.and_then(|s| serde_json::from_str::<Error>(&s).ok()),
                attempts,
                label,
                color,
                shape,
                created_at,
                started_at,
                finished_at,
                policy: policy
                    .map(|p| serde_json::from_str(&p).map_err(|e| corrupt("nodes", format!("policy `{p}`: {e}"))))
                    .transpose()?,
            });
        }

        let mut stmt = tx
            .prepare_cached(
                "SELECT from_node, to_node, kind, label FROM edges WHERE run_id = ?1 ORDER BY to_node, from_node",
            )
            .map_err(sql)?;
        let edges = stmt
            .query_map([run], |r| {
                let kind: String = r.get(2)?;
                Ok(EdgeRecord {
                    from: r.get(0)?,
                    to: r.get(1)?,
                    kind: match kind.as_str() {
                        "control" => EdgeKind::Control,
                        "after" => EdgeKind::After,
                        _ => EdgeKind::Data,
                    },
                    label: r.get(3)?,
                })
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;

        let mut stmt = tx
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

        let mut stmt = tx
            .prepare_cached(
                "SELECT node_id, seq, kind, value, value_blob FROM journal WHERE run_id = ?1 ORDER BY node_id, seq",
            )
            .map_err(sql)?;
        let journal = stmt
            .query_map([run], |r| {
                let kind: String = r.get(2)?;
                Ok((r.get::<_, NodeId>(0)?, r.get::<_, u32>(1)?, kind, r.get::<_, String>(3)?, r.get::<_, bool>(4)?))
            })
            .map_err(sql)?
            .map(|row| {
                let (node, seq, kind, value, blob) = row.map_err(sql)?;
                let kind = serde_json::from_value(Value::String(kind.clone()))
                    .map_err(|_| corrupt("journal", format!("kind `{kind}`")))?;
                Ok(JournalRecord { node, seq, kind, value: self.value_of("journal", value, blob)? })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        let mut stmt = tx
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

        let mut stmt = tx
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

        Ok(RunSnapshot { run: record, nodes, edges, attempts, journal, promises, waits, delivered })
    }

    fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT r.id, r.workflow, r.state, r.created_at, r.started_at, r.finished_at, r.executor,
                        r.parallelism, l.owner, l.expires_at, r.error
                 FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id ORDER BY r.id DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        let now = now_ms();
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                let state: String = r.get(2)?;
                let owner: Option<String> = r.get(8)?;
                let expires = live_expiry(owner.as_deref(), r.get(9)?);
                Ok(RunSummary {
                    id: r.get(0)?,
                    workflow: r.get(1)?,
                    state: effective_state(RunState::parse(&state).unwrap_or(RunState::Failed), expires, now),
                    error: r.get::<_, Option<String>>(10)?.and_then(|s| serde_json::from_str(&s).ok()),
                    created_at: r.get(3)?,
                    started_at: r.get(4)?,
                    finished_at: r.get(5)?,
                    executor: r.get(6)?,
                    parallelism: r.get(7)?,
                    owner: r.get::<_, Option<String>>(8)?.filter(|_| expires.is_some_and(|e| e > now)),
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows.map_err(|e| self.sql(e))
    }

    fn logs(&self, run: RunId, node: Option<NodeId>) -> Result<Vec<LogRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
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

    fn logs_after(
        &self,
        run: RunId,
        node: Option<NodeId>,
        after: i64,
    ) -> Result<(RunState, Vec<(i64, LogRecord)>), StoreError> {
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql)?;
        let (state, expires) = tx
            .query_row(
                "SELECT runs.state, l.expires_at, l.owner FROM runs LEFT JOIN run_leases l ON l.run_id = runs.id
                 WHERE runs.id = ?1",
                [run],
                |r| Ok((r.get::<_, String>(0)?, live_expiry(r.get::<_, Option<String>>(2)?.as_deref(), r.get(1)?))),
            )
            .optional()
            .map_err(sql)?
            .ok_or(StoreError::NoRun(run))?;
        let state = effective_state(RunState::parse(&state).unwrap_or(RunState::Failed), expires, now_ms());
        let mut stmt = tx
            .prepare_cached(
                "SELECT rowid, node_id, attempt, ts, line FROM logs
                 WHERE run_id = ?1 AND (?2 IS NULL OR node_id = ?2) AND rowid > ?3 ORDER BY rowid",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![run, node, after], |r| {
                Ok((r.get(0)?, LogRecord { node: r.get(1)?, attempt: r.get(2)?, ts: r.get(3)?, line: r.get(4)? }))
            })
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;
        Ok((state, rows))
    }

    fn request_cancel(&self, run: RunId) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [run])
            .map_err(|e| self.sql(e))?;
        if n == 0 { Err(StoreError::NoRun(run)) } else { Ok(()) }
    }

    fn control(&self, run: RunId) -> Result<RunControl, StoreError> {
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(sql)?;
        let (cancel_requested, paused) = tx
            .query_row("SELECT cancel_requested, paused FROM runs WHERE id = ?1", [run], |r| {
                Ok((r.get::<_, bool>(0)?, r.get::<_, bool>(1)?))
            })
            .optional()
            .map_err(sql)?
            .ok_or(StoreError::NoRun(run))?;
        let mut stmt = tx
            .prepare_cached("SELECT id, name, value FROM signals WHERE run_id = ?1 AND consumed = 0 ORDER BY id")
            .map_err(sql)?;
        let signals = stmt
            .query_map([run], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, parse_json(r.get(2)?))))
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;
        let mut stmt = tx
            .prepare_cached("SELECT id, node_id FROM node_cancels WHERE run_id = ?1 AND consumed = 0 ORDER BY id")
            .map_err(sql)?;
        let cancel_nodes = stmt
            .query_map([run], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, NodeId>(1)?)))
            .map_err(sql)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sql)?;
        Ok(RunControl { cancel_requested, paused, signals, cancel_nodes })
    }

    fn request_node_cancel(&self, run: RunId, node: NodeId) -> Result<(), StoreError> {
        self.conn()
            .execute("INSERT INTO node_cancels (run_id, node_id) VALUES (?1, ?2)", params![run, node])
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    fn set_paused(&self, run: RunId, paused: bool) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute("UPDATE runs SET paused = ?2 WHERE id = ?1", params![run, paused])
            .map_err(|e| self.sql(e))?;
        if n == 0 { Err(StoreError::NoRun(run)) } else { Ok(()) }
    }

    fn send_signal(&self, run: RunId, name: &str, value: &Value) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO signals (run_id, name, value, at) VALUES (?1, ?2, ?3, ?4)",
                params![run, name, value.to_string(), now_ms()],
            )
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    fn has_signal(&self, run: RunId, name: &str) -> Result<bool, StoreError> {
        self.conn()
            .query_row("SELECT 1 FROM signals WHERE run_id = ?1 AND name = ?2 LIMIT 1", params![run, name], |_| Ok(()))
            .optional()
            .map(|found| found.is_some())
            .map_err(|e| self.sql(e))
    }

    fn acquire_run_lease(&self, run: RunId, owner: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        let tx = self.write_tx(&mut conn)?;
        let exists = tx.query_row("SELECT 1 FROM runs WHERE id = ?1", [run], |_| Ok(())).optional().map_err(sql)?;
        if exists.is_none() {
            return Err(StoreError::NoRun(run));
        }
        let now = now_ms();
        let current: Option<(String, i64, i64)> = tx
            .query_row("SELECT owner, renewed_at, expires_at FROM run_leases WHERE run_id = ?1", [run], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(sql)?;
        if let Some((holder, renewed_at, expires_at)) = current
            && holder != owner
            && live_expiry(Some(&holder), Some(expires_at)).is_some_and(|e| e > now)
        {
            return Err(StoreError::Leased { run, owner: holder, renewed_ms_ago: (now - renewed_at).max(0) });
        }
        tx.execute(
            "INSERT OR REPLACE INTO run_leases (run_id, owner, acquired_at, renewed_at, expires_at)
             VALUES (?1, ?2, ?3, ?3, ?4)",
            params![run, owner, now, now.saturating_add(millis(ttl))],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(Lease { run, owner: owner.to_string() })
    }

    fn renew_run_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        let tx = self.write_tx(&mut conn)?;
        let now = now_ms();
        let n = tx
            .execute(
                "UPDATE run_leases SET renewed_at = ?3, expires_at = ?4 WHERE run_id = ?1 AND owner = ?2",
                params![lease.run, lease.owner, now, now.saturating_add(millis(ttl))],
            )
            .map_err(sql)?;
        if n == 0 {
            let current = tx
                .query_row("SELECT owner FROM run_leases WHERE run_id = ?1", [lease.run], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            return Err(StoreError::LeaseLost { run: lease.run, owner: lease.owner.clone(), current });
        }
        tx.commit().map_err(sql)
    }

    fn renew_owner_leases(&self, owner: &str, ttl: Duration) -> Result<usize, StoreError> {
        let now = now_ms();
        self.conn()
            .execute(
                "UPDATE run_leases SET renewed_at = ?2, expires_at = ?3 WHERE owner = ?1",
                params![owner, now, now.saturating_add(millis(ttl))],
            )
            .map_err(|e| self.sql(e))
    }

    fn release_run_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM run_leases WHERE run_id = ?1 AND owner = ?2", params![lease.run, lease.owner])
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    fn claim(&self, queue: &str, n: usize, owner: &str, ttl: Duration) -> Result<Vec<Claim>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let sql = |e| self.sql(e);
        let mut conn = self.conn();
        let tx = self.write_tx(&mut conn)?;
        let now = now_ms();
        let expires_at = now.saturating_add(millis(ttl));
        type Picked = (i64, RunId, NodeId, u32, i32, String, String);
        let picked: Vec<Picked> = tx
            .prepare_cached(
                "SELECT id, run_id, node_id, attempt, priority, task, input FROM ready_queue
                 WHERE queue = ?1 AND (state = 'ready' OR (state = 'claimed' AND expires_at <= ?2))
                 ORDER BY priority DESC, id LIMIT ?3",
            )
            .and_then(|mut s| {
                s.query_map(params![queue, now, i64::try_from(n).unwrap_or(i64::MAX)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })?
                .collect()
            })
            .map_err(sql)?;
        let mut claims = Vec::with_capacity(picked.len());
        for (id, run, node, attempt, priority, task, input) in picked {
            tx.prepare_cached(
                "UPDATE ready_queue SET state = 'claimed', owner = ?2, expires_at = ?3, claims = claims + 1
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, owner, expires_at]))
            .map_err(sql)?;
            claims.push(Claim {
                id,
                run,
                node,
                attempt,
                task,
                input: parse_json(input),
                queue: queue.to_string(),
                priority,
                owner: owner.to_string(),
                expires_at,
            });
        }
        tx.commit().map_err(sql)?;
        Ok(claims)
    }

    fn renew_claim(&self, claim: &Claim, ttl: Duration) -> Result<Claim, StoreError> {
        let expires_at = now_ms().saturating_add(millis(ttl));
        self.settle(claim, "expires_at = ?3", &expires_at)?;
        Ok(Claim { expires_at, ..claim.clone() })
    }

    fn complete(&self, claim: &Claim, output: &Value) -> Result<(), StoreError> {
        self.settle(claim, "state = 'succeeded', result = ?3, expires_at = NULL", &output.to_string())
    }

    fn fail(&self, claim: &Claim, error: &Error) -> Result<(), StoreError> {
        self.settle(claim, "state = 'failed', error = ?3, expires_at = NULL", &json(error))
    }

    fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        self.settle(claim, "state = 'ready', owner = NULL, expires_at = NULL, result = ?3", &rusqlite::types::Null)
    }

    fn watch_queue(&self, queue: &str) -> Result<Option<QueueWatch>, StoreError> {
        let ready = "SELECT EXISTS (SELECT 1 FROM ready_queue WHERE queue = ?1 AND state = 'ready')";
        Ok(Some(QueueWatch::local(queue, self.watch_commits(ready, Some(queue.to_string()))?)))
    }

    fn watch_results(&self) -> Result<Option<ResultWatch>, StoreError> {
        let unrecorded = "SELECT EXISTS (SELECT 1 FROM ready_queue
                          WHERE taken_at IS NULL AND state IN ('succeeded', 'failed'))";
        Ok(Some(ResultWatch::local(self.watch_commits(unrecorded, None)?)))
    }

    fn queued(&self, run: RunId) -> Result<Vec<Queued>, StoreError> {
        let sql = |e| self.sql(e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT q.node_id, q.attempt, q.queue, q.enqueued_at FROM ready_queue q
                 JOIN attempts a ON a.run_id = q.run_id AND a.node_id = q.node_id AND a.attempt = q.attempt
                 WHERE q.run_id = ?1 AND q.taken_at IS NULL AND a.state = 'running'
                   AND (q.state = 'ready' OR (q.state = 'claimed' AND q.expires_at <= ?2))
                 ORDER BY q.id",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map(params![run, now_ms()], |r| {
                Ok(Queued { node: r.get(0)?, attempt: r.get(1)?, queue: r.get(2)?, since: r.get(3)? })
            })
            .map_err(sql)?;
        rows.collect::<Result<_, _>>().map_err(sql)
    }

    fn queue_results(&self, run: RunId) -> Result<Vec<QueueResult>, StoreError> {
        let sql = |e| self.sql(e);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT q.node_id, q.attempt, q.state, q.result, q.error FROM ready_queue q
                 JOIN attempts a ON a.run_id = q.run_id AND a.node_id = q.node_id AND a.attempt = q.attempt
                 WHERE q.run_id = ?1 AND q.state IN ('succeeded', 'failed') AND q.taken_at IS NULL
                   AND a.state = 'running'
                 ORDER BY q.id",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([run], |r| {
                Ok((
                    r.get::<_, NodeId>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            })
            .map_err(sql)?;
        let mut results = Vec::new();
        for row in rows {
            let (node, attempt, state, output, error) = row.map_err(sql)?;
            let result = if state == "succeeded" {
                Ok(output.map_or(Value::Null, parse_json))
            } else {
                let error = error.as_deref().and_then(|e| serde_json::from_str::<Error>(e).ok());
                Err(error
                    .ok_or_else(|| corrupt("ready_queue", format!("entry of node {node} failed with no error")))?)
            };
            results.push(QueueResult { node, attempt, result });
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;

    use crate::store::tests::new_run;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn the_directory_and_the_file_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".salt/salt.db");
        let store = SqliteStore::open(&path).unwrap();
        new_run(&store, Some(("me", TTL)));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(".salt")), 0o700);
        assert_eq!(mode(&path), 0o600);
        // SQLite's write-ahead log and shared-memory index, while the store is open, hold the
        // same data and are as private.
        for suffix in ["-wal", "-shm"] {
            assert_eq!(mode(&dir.path().join(format!(".salt/salt.db{suffix}"))), 0o600, "salt.db{suffix}");
        }
    }

    #[test]
    fn many_connections_may_open_a_new_file_at_once() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("salt.db");
            let barrier = Arc::new(Barrier::new(8));
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

    /// Files that are not salt's, each with what the refusal must say.
    fn foreign_files(dir: &Path) -> Vec<(PathBuf, &'static str)> {
        let other_app = dir.join("other_app.db");
        let conn = Connection::open(&other_app).unwrap();
        conn.execute_batch("PRAGMA application_id = 1234; CREATE TABLE runs (x); INSERT INTO runs VALUES (1);")
            .unwrap();
        drop(conn);
        let other_tables = dir.join("other_tables.db");
        let conn = Connection::open(&other_tables).unwrap();
        conn.execute_batch("CREATE TABLE customers (name TEXT); INSERT INTO customers VALUES ('ann');").unwrap();
        drop(conn);
        let text = dir.join("notes.txt");
        std::fs::write(&text, "not a database at all, just some text that is long enough to have a header").unwrap();
        vec![
            (other_app, "another application"),
            (other_tables, "tables salt does not use: customers"),
            (text, "not a SQLite database"),
        ]
    }

    #[test]
    fn a_file_of_another_application_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        for (path, says) in foreign_files(dir.path()) {
            let before = std::fs::read(&path).unwrap();
            for result in [SqliteStore::open(&path).map(|_| ()), SqliteStore::open_read_only(&path).map(|_| ())] {
                let e = result.unwrap_err();
                assert!(matches!(e, StoreError::Foreign { .. }), "{}: {e:?}", path.display());
                assert!(e.to_string().contains(says) && e.to_string().contains("left untouched"), "{e}");
            }
            assert_eq!(std::fs::read(&path).unwrap(), before, "{} was changed", path.display());
        }
    }

    #[test]
    fn an_older_salt_database_without_the_mark_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 2;
             INSERT INTO runs (workflow, state, input, created_at, executor, parallelism, owner_pid)
             VALUES ('wf', 'running', '{}', 1, 'inline', 1, 99);",
        )
        .unwrap();
        drop(conn);
        // A reader may not upgrade it.
        assert!(matches!(SqliteStore::open_read_only(&path), Err(StoreError::TooOld { found: 2, .. })));
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.load(RunId::new(1)).unwrap().run.state, RunState::Interrupted);
        let id: i32 = store.conn().query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
        assert_eq!(id, APPLICATION_ID);
    }

    #[test]
    fn reading_never_creates_or_changes_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt.db");
        let e = SqliteStore::open_read_only(&path).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("nothing has run here yet"), "{e}");
        assert!(!path.exists(), "a reader created the database");

        let store = SqliteStore::open(&path).unwrap();
        let run = new_run(&store, None);
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        let reader = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(reader.runs(10).unwrap().len(), 1);
        assert_eq!(reader.load(run).unwrap().nodes.len(), 1);
        assert!(reader.commit(None, &[Write::SignalConsumed { id: 1 }]).is_err(), "a reader wrote");
        drop(reader);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        let mode: String = Connection::open(&path).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    /// Makes a directory and its files read-only until dropped: `chattr +i` where it works
    /// (it binds root too), else permission bits.
    pub(crate) struct ReadOnlyDir {
        dir: PathBuf,
        immutable: bool,
    }

    impl ReadOnlyDir {
        pub(crate) fn new(dir: &Path) -> Self {
            use std::os::unix::fs::PermissionsExt;
            let chattr = |flag: &str, p: &Path| {
                std::process::Command::new("chattr").arg(flag).arg(p).output().is_ok_and(|o| o.status.success())
            };
            let files: Vec<PathBuf> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
            for f in &files {
                std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o444)).unwrap();
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
            let immutable = files.iter().all(|f| chattr("+i", f)) && chattr("+i", dir);
            Self { dir: dir.to_path_buf(), immutable }
        }

        /// Whether writing is really impossible (for root, only `chattr` makes it so).
        pub(crate) fn enforced(&self) -> bool {
            let probe = self.dir.join(".probe");
            let writable = std::fs::write(&probe, "x").is_ok();
            let _ = std::fs::remove_file(&probe);
            !writable
        }
    }

    impl Drop for ReadOnlyDir {
        fn drop(&mut self) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::process::Command::new("chattr").arg("-i").arg(&self.dir).output();
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
            for f in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let _ = std::process::Command::new("chattr").arg("-i").arg(f.path()).output();
                let _ = std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o644));
            }
        }
    }

    #[test]
    fn a_database_on_a_read_only_file_system_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt.db");
        let store = SqliteStore::open(&path).unwrap();
        let run = new_run(&store, None);
        drop(store);
        let read_only = ReadOnlyDir::new(dir.path());
        assert!(read_only.enforced() || !read_only.immutable, "chattr +i did not make it read-only");
        let reader = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(reader.runs(10).unwrap()[0].id, run);
        assert_eq!(reader.load(run).unwrap().nodes.len(), 1);
        // A writer cannot open it, and says why.
        if read_only.enforced() {
            assert!(SqliteStore::open(&path).is_err());
        }
    }

    #[test]
    fn large_values_are_stored_once_beside_the_database_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("salt.db");
        let store = SqliteStore::open(&path).unwrap();
        let big = serde_json::json!({"rows": vec!["x".repeat(1000); 2000]});
        let root = NodeRecord {
            args: vec![("rows".into(), StoredArg::Value(big["rows"].clone()))],
            ..crate::store::tests::root_with(Vec::new())
        };
        let input = serde_json::json!({"rows": big["rows"].clone()});
        let run = store
            .create_run(NewRun {
                workflow: "wf",
                input: &input,
                executor: "inline",
                parallelism: 1,
                root: &root,
                lease: None,
            })
            .unwrap();
        let child = NodeRecord {
            id: NodeId::new(1),
            parent: Some(NodeId::ROOT),
            seq: Some(0),
            args: vec![("a".into(), StoredArg::Value(big.clone())), ("b".into(), StoredArg::Node(NodeId::ROOT))],
            ..root.clone()
        };
        let finished = |node, output: &Value| Write::NodeFinished {
            run,
            node,
            state: NodeState::Succeeded,
            output: Some(output.clone()),
            error: None,
            at: 2,
        };
        store
            .commit(
                None,
                &[
                    Write::InsertNode { run, node: Box::new(child) },
                    finished(NodeId::ROOT, &big["rows"]),
                    finished(NodeId::new(1), &big),
                    Write::Journal {
                        run,
                        node: NodeId::new(1),
                        seq: 1,
                        kind: crate::context::JournalKind::Signal,
                        value: big.clone(),
                    },
                    Write::RunState { run, state: RunState::Succeeded, output: Some(big.clone()), error: None, at: 3 },
                ],
            )
            .unwrap();
        let snap = store.load(run).unwrap();
        assert_eq!(snap.run.input, input);
        assert_eq!(snap.run.output.as_ref(), Some(&big));
        assert_eq!(snap.nodes[0].args, root.args);
        assert_eq!(snap.nodes[0].output.as_ref(), Some(&big["rows"]));
        assert_eq!(snap.nodes[1].args[0].1, StoredArg::Value(big.clone()));
        assert_eq!(snap.nodes[1].args[1].1, StoredArg::Node(NodeId::ROOT));
        assert_eq!(snap.nodes[1].output.as_ref(), Some(&big));
        assert_eq!(snap.journal[0].value, big);
        // Two distinct values, two blobs, however many rows hold them; the rows stay small.
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("salt.db.blobs")).unwrap().collect();
        assert_eq!(blobs.len(), 2, "{blobs:?}");
        let raw: String = store.conn().query_row("SELECT output FROM nodes WHERE id = 1", [], |r| r.get(0)).unwrap();
        assert!(raw.starts_with(r#"{"$salt_blob":""#) && raw.len() < 120, "{raw}");
        // A reader reads them too; a reset forgets the reference.
        assert_eq!(SqliteStore::open_read_only(&path).unwrap().load(run).unwrap().nodes[1].output, Some(big));
        store.commit(None, &[Write::NodeReset { run, node: NodeId::new(1) }]).unwrap();
        store.commit(None, &[finished(NodeId::new(1), &Value::from(7))]).unwrap();
        assert_eq!(store.load(run).unwrap().nodes[1].output, Some(Value::from(7)));
    }

    #[test]
    fn a_database_moved_without_its_blobs_says_so_and_still_lists_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("salt.db")).unwrap();
        let run = new_run(&store, None);
        let big = Value::String("y".repeat(SPILL_BYTES + 1));
        let output = Some(big);
        let done =
            Write::NodeFinished { run, node: NodeId::ROOT, state: NodeState::Succeeded, output, error: None, at: 1 };
        store.commit(None, &[done]).unwrap();
        std::fs::remove_dir_all(dir.path().join("salt.db.blobs")).unwrap();
        let e = store.load(run).unwrap_err();
        assert!(matches!(e, StoreError::Blob(crate::blob::BlobError::Missing { .. })), "{e:?}");
        assert_eq!(store.runs(10).unwrap().len(), 1);
    }
}
