//! The PostgreSQL store: one database shared by every host that runs, drives or reads runs.
//!
//! The tables are those of the SQLite store (see `migrations/postgres`), versioned in the table
//! `salt_migrations` and migrated under an advisory lock, so processes opening a new database at
//! once never race. A batch of writes is one transaction whose statements are sent together
//! (pipelined: one round trip for the batch, not one per write). A batch committed under a
//! lease first locks the run's lease row (`FOR SHARE`) and checks its owner, so an orchestrator
//! that lost the run can never write over its new owner: taking a lease over waits for that
//! batch, and that batch sees the lease as it is.
//!
//! The ready queue is claimed with `SELECT … FOR UPDATE SKIP LOCKED` (claimers never wait for
//! each other, nor get the same entry), many entries per claim; a transaction that enqueues sends
//! `NOTIFY salt_ready, '<queue>'` at its commit, so idle workers wait on `LISTEN` instead of
//! polling ([`Store::watch_queue`]). A worker's result sends `NOTIFY salt_done, '<run>'`, so
//! the orchestrator of the run reads it at once ([`Store::watch_results`]).
//!
//! Values whose JSON is over [`SPILL_BYTES`] are kept once each in the table `blobs`, named by
//! their sha256, in the transaction that first refers to them, so every host that reads the
//! database reads them too; a blob is checked against its hash before it is used.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, Statement, Transaction};

use super::sqlite::{ArgIn, ArgOut, corrupt, json, millis, parse_json};
use super::{
    Claim, Durability, Lease, NewRun, QueueResult, QueueWatch, Queued, ResultWatch, Store, Write, effective_state,
    live_expiry,
};
use crate::blob::{BlobRef, SPILL_BYTES};
use crate::error::{Error, StoreError};
use crate::model::{
    AttemptRecord, EdgeKind, EdgeRecord, JournalRecord, LogRecord, NodeId, NodeRecord, NodeState, PromiseRecord,
    RunControl, RunId, RunRecord, RunSnapshot, RunState, RunSummary, StoredArg, WaitRecord,
};
// Leases, claims and their expiries are read and written on the database's clock.
use crate::pg::{Pg, Session, Statements, now_ms, redact};

/// The store's schema, one migration per file, applied in order.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_init.sql")];

/// The store's name in `salt_migrations`.
const COMPONENT: &str = "store";

/// Tables the store creates: one of them in a database without salt's migrations means the
/// database is another application's.
const TABLES: &[&str] = &["runs", "nodes", "ready_queue"];

/// The channel a transaction that enqueues notifies, with the queue's name as the payload.
pub const READY_CHANNEL: &str = "salt_ready";

/// The channel a worker's result is announced on, with its run's id as the payload.
const DONE_CHANNEL: &str = "salt_done";

/// The advisory lock migrations are applied under (`SALT` in ASCII).
const MIGRATION_LOCK: i64 = 0x5341_4C54;

/// The first key of the advisory locks of runs' logs (the second is the run).
const LOGS_LOCK: i32 = 0x4C4F_4753;

/// How many connections a store keeps.
const CONNECTIONS: usize = 4;

/// A statement parameter, owned (a batch is sent from the client's own thread).
type Param = Box<dyn ToSql + Send + Sync>;

/// One statement of a batch.
struct Stmt {
    sql: &'static str,
    params: Vec<Param>,
}

macro_rules! stmt {
    ($sql:expr $(, $p:expr)* $(,)?) => {
        Stmt { sql: $sql, params: vec![$(Box::new($p) as Param),*] }
    };
}

/// Why a call failed: the database, or the store's own checks.
enum Fail {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// The PostgreSQL implementation of [`Store`].
pub struct PgStore {
    pg: Arc<Pg>,
    /// The URL as given (with the read-only option added for a reader).
    url: String,
    read_only: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("url", &redact(&self.url)).field("read_only", &self.read_only).finish()
    }
}

/// A backend error on the database at `url` (its password hidden), saying what the server
/// said.
fn backend(url: &str, source: tokio_postgres::Error) -> StoreError {
    let url = url.split_once("?options=-c%20default_transaction_read_only").map_or(url, |(url, _)| url);
    StoreError::backend(format!("database {}", redact(url)), PgError::from(source))
}

/// A client error with the server's message in its text (`tokio_postgres` shows `db error`).
#[derive(Debug)]
struct PgError {
    message: String,
    source: tokio_postgres::Error,
}

impl From<tokio_postgres::Error> for PgError {
    fn from(source: tokio_postgres::Error) -> Self {
        let message = match source.as_db_error() {
            Some(db) => {
                let mut m = format!("{}: {}", db.severity(), db.message());
                if let Some(detail) = db.detail() {
                    m.push_str(&format!(" ({detail})"));
                }
                m
            }
            None => {
                let mut m = source.to_string();
                let mut cause = std::error::Error::source(&source);
                while let Some(c) = cause {
                    m.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                m
            }
        };
        Self { message, source }
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// `url` with every transaction of its connections read-only.
fn read_only_url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?options=-c%20default_transaction_read_only%3Don&{query}"),
        None => format!("{url}?options=-c%20default_transaction_read_only%3Don"),
    }
}

/// Applies `migrations` of `component` that the database at `pg` does not have yet, in one
/// transaction under an advisory lock (processes opening a new database at once wait for the
/// first one). Each component (the store, a server's own tables) keeps its versions in
/// `salt_migrations`. A database newer than `migrations` is refused; one that has one of
/// `tables` but no version of `component` is another application's, refused and left untouched.
pub fn migrate(
    pg: &Pg,
    component: &'static str,
    migrations: &'static [&'static str],
    tables: &'static [&'static str],
) -> Result<(), StoreError> {
    let url = pg.url().to_string();
    let shown = redact(&url);
    let result = pg.with(move |c: &mut Session| -> BoxFuture<'_, Result<(), Fail>> {
        Box::pin(async move {
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS salt_migrations (
                     component  TEXT   NOT NULL,
                     version    BIGINT NOT NULL,
                     applied_at BIGINT NOT NULL,
                     PRIMARY KEY (component, version))",
            )
            .await?;
            let version: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0)::BIGINT FROM salt_migrations WHERE component = $1",
                    &[&component],
                )
                .await?
                .get(0);
            let supported = migrations.len() as i64;
            if version > supported {
                return Err(StoreError::TooNew { path: shown, found: version, supported }.into());
            }
            if version == 0 {
                for table in tables {
                    let found: bool = tx.query_one("SELECT to_regclass($1::TEXT) IS NOT NULL", &[table]).await?.get(0);
                    if found {
                        let detail = format!("it has a table `{table}` but no salt schema version");
                        return Err(StoreError::Foreign { path: shown, detail }.into());
                    }
                }
            }
            for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO salt_migrations (component, version, applied_at) VALUES ($1, $2, $3)",
                    &[&component, &(i as i64 + 1), &now_ms()],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    });
    result.map_err(|e| match e {
        Fail::Pg(e) => backend(&url, e),
        Fail::Store(e) => e,
    })
}

/// The schema version of `component` in the database, without changing anything: `None` when
/// salt never migrated it.
fn schema_version(pg: &Pg, component: &'static str) -> Result<Option<i64>, tokio_postgres::Error> {
    pg.with(move |c| {
        Box::pin(async move {
            let known: bool = c.query_one("SELECT to_regclass('salt_migrations') IS NOT NULL", &[]).await?.get(0);
            if !known {
                return Ok(None);
            }
            let row = c
                .query_one("SELECT MAX(version)::BIGINT FROM salt_migrations WHERE component = $1", &[&component])
                .await?;
            Ok(row.get::<_, Option<i64>>(0))
        })
    })
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`) to read and
    /// write it, and migrates it to this salt's schema. The database must exist; a database of
    /// another application is refused and left untouched.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let pg = Pg::connect(url, CONNECTIONS).map_err(|e| backend(url, e))?;
        migrate(&pg, COMPONENT, MIGRATIONS, TABLES)?;
        Ok(Self { pg: Arc::new(pg), url: url.to_string(), read_only: false })
    }

    /// Connects to the database at `url` only to read it: every transaction is read-only, and
    /// nothing is created or migrated. A database salt never wrote to is
    /// [`StoreError::Missing`].
    pub fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let ro = read_only_url(url);
        let pg = Pg::connect(&ro, CONNECTIONS).map_err(|e| backend(url, e))?;
        let supported = MIGRATIONS.len() as i64;
        let path = redact(url);
        match schema_version(&pg, COMPONENT).map_err(|e| backend(url, e))? {
            None => Err(StoreError::Missing { path }),
            Some(v) if v > supported => Err(StoreError::TooNew { path, found: v, supported }),
            Some(v) if v < supported => Err(StoreError::TooOld { path, found: v, supported }),
            Some(_) => Ok(Self { pg: Arc::new(pg), url: ro, read_only: true }),
        }
    }

    /// The client, for what the store's trait does not cover (a server's own tables).
    pub fn pg(&self) -> &Arc<Pg> {
        &self.pg
    }

    /// Runs `f` on a connection of the pool.
    fn run<R>(
        &self,
        f: impl for<'c> FnOnce(&'c mut Session) -> BoxFuture<'c, Result<R, Fail>>,
    ) -> Result<R, StoreError> {
        self.pg.with(f).map_err(|e| match e {
            Fail::Pg(e) => backend(&self.url, e),
            Fail::Store(e) => e,
        })
    }

    /// Reads the values rows refer to from `blobs`, each checked against its hash.
    fn fetch_blobs(&self, refs: Vec<BlobRef>) -> Result<HashMap<String, Value>, StoreError> {
        if refs.is_empty() {
            return Ok(HashMap::new());
        }
        let hashes: Vec<String> = refs.iter().map(|r| r.sha256().to_string()).collect();
        let rows = self.run(move |c| {
            Box::pin(
                async move { Ok(c.query("SELECT sha256, data FROM blobs WHERE sha256 = ANY($1)", &[&hashes]).await?) },
            )
        })?;
        let mut found: HashMap<String, Vec<u8>> =
            rows.into_iter().map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1))).collect();
        let mut values = HashMap::with_capacity(refs.len());
        for r in refs {
            if values.contains_key(r.sha256()) {
                continue;
            }
            let data = found
                .remove(r.sha256())
                .ok_or_else(|| corrupt("blobs", format!("value {} is referred to but missing", r.sha256())))?;
            if BlobRef::of(&data) != r {
                return Err(corrupt("blobs", format!("value {} does not match its hash and length", r.sha256())));
            }
            let value = serde_json::from_slice(&data)
                .map_err(|e| corrupt("blobs", format!("value {} is not JSON: {e}", r.sha256())))?;
            values.insert(r.sha256().to_string(), value);
        }
        Ok(values)
    }
}

/// A value as its column holds it: its JSON, or (`true`) the reference of the blob that holds
/// it, whose insert is added to `blobs`.
fn cell(value: &Value, blobs: &mut Vec<Stmt>) -> (String, bool) {
    let text = serde_json::to_vec(value).unwrap_or_default();
    if text.len() > SPILL_BYTES {
        return (blob(text, blobs).to_json(), true);
    }
    (String::from_utf8(text).unwrap_or_default(), false)
}

/// Adds the insert of a blob to `blobs`; returns its reference.
fn blob(json: Vec<u8>, blobs: &mut Vec<Stmt>) -> BlobRef {
    let r = BlobRef::of(&json);
    blobs.push(stmt!(
        "INSERT INTO blobs (sha256, bytes, data) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
        r.sha256().to_string(),
        r.bytes() as i64,
        json
    ));
    r
}

/// A node's arguments as stored: each literal over [`SPILL_BYTES`] is a tagged reference.
fn args_text(args: &[(String, StoredArg)], blobs: &mut Vec<Stmt>) -> String {
    let stored: Vec<(&String, ArgOut<'_>)> = args
        .iter()
        .map(|(name, arg)| {
            let arg = match arg {
                StoredArg::Value(v) => {
                    let text = serde_json::to_vec(v).unwrap_or_default();
                    if text.len() > SPILL_BYTES { ArgOut::Blob(blob(text, blobs)) } else { ArgOut::Value(v) }
                }
                StoredArg::Node(n) => ArgOut::Node(*n),
                StoredArg::List(items) => ArgOut::List(items),
            };
            (name, arg)
        })
        .collect();
    json(&stored)
}

/// Free text as a `TEXT` column holds it: PostgreSQL refuses NUL characters.
fn text(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s.to_string() }
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

fn id(node: NodeId) -> i64 {
    i64::try_from(node.get()).unwrap_or(i64::MAX)
}

fn node_of(v: i64) -> NodeId {
    NodeId::new(v.max(0) as u64)
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The statements of one write, after the inserts of the blobs it needs (added to `out`).
fn statements(w: &Write, out: &mut Vec<Stmt>) {
    match w {
        Write::RunStarted { run, executor, parallelism, at } => out.push(stmt!(
            "UPDATE runs SET state = 'running', started_at = COALESCE(started_at, $2), finished_at = NULL,
                 cancel_requested = FALSE, executor = $3, parallelism = $4
             WHERE id = $1",
            run.get(),
            *at,
            executor.to_string(),
            i64::from(*parallelism)
        )),
        Write::RunState { run, state, output, error, at } => {
            let (output, blob) = match output {
                Some(v) => {
                    let (t, b) = cell(v, out);
                    (Some(t), b)
                }
                None => (None, false),
            };
            let finished = state.is_terminal().then_some(*at);
            out.push(stmt!(
                "UPDATE runs SET state = $2, output = $3, output_blob = $6, error = $4, finished_at = $5 WHERE id = $1",
                run.get(),
                state.as_str().to_string(),
                output,
                error.as_ref().map(json),
                finished,
                blob
            ));
        }
        Write::InsertNode { run, node } => {
            let args = args_text(&node.args, out);
            out.push(stmt!(
                "INSERT INTO nodes (run_id, id, parent, seq, task, state, args, input_hash, label, created_at, color,
                     shape, policy)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                run.get(),
                id(node.id),
                node.parent.map(id),
                node.seq.map(i64::from),
                node.task.clone(),
                node.state.as_str().to_string(),
                args,
                node.input_hash.clone(),
                opt_text(&node.label),
                node.created_at,
                opt_text(&node.color),
                opt_text(&node.shape),
                node.policy.as_ref().map(json)
            ));
        }
        Write::InsertEdge { run, edge } => out.push(stmt!(
            "INSERT INTO edges (run_id, from_node, to_node, kind, label) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            run.get(),
            id(edge.from),
            id(edge.to),
            edge.kind.as_str().to_string(),
            opt_text(&edge.label)
        )),
        Write::EdgeLabel { run, from, to, label } => out.push(stmt!(
            "UPDATE edges SET label = $4 WHERE run_id = $1 AND from_node = $2 AND to_node = $3",
            run.get(),
            id(*from),
            id(*to),
            text(label)
        )),
        Write::NodeState { run, node, state } => out.push(stmt!(
            "UPDATE nodes SET state = $3 WHERE run_id = $1 AND id = $2",
            run.get(),
            id(*node),
            state.as_str().to_string()
        )),
        Write::ForgetCalls { run, node, from_seq } => {
            out.push(stmt!(
                "DELETE FROM journal WHERE run_id = $1 AND node_id = $2 AND seq >= $3",
                run.get(),
                id(*node),
                i64::from(*from_seq)
            ));
            out.push(stmt!(
                "DELETE FROM waits WHERE run_id = $1 AND node_id = $2 AND seq >= $3",
                run.get(),
                id(*node),
                i64::from(*from_seq)
            ));
        }
        Write::DropPromise { run, id } => {
            out.push(stmt!("DELETE FROM promises WHERE run_id = $1 AND id = $2", run.get(), i64::from(*id)))
        }
        Write::NodeReset { run, node } => out.push(stmt!(
            "UPDATE nodes SET state = 'pending', output = NULL, output_blob = FALSE, error = NULL, finished_at = NULL,
                 delivered_to = NULL
             WHERE run_id = $1 AND id = $2",
            run.get(),
            id(*node)
        )),
        Write::Delivered { run, node, attempt } => out.push(stmt!(
            "UPDATE nodes SET delivered_to = $3 WHERE run_id = $1 AND id = $2",
            run.get(),
            id(*node),
            i64::from(*attempt)
        )),
        Write::AttemptStarted { run, node, attempt, executor, at } => {
            out.push(stmt!(
                "INSERT INTO attempts (run_id, node_id, attempt, state, executor, started_at)
                 VALUES ($1, $2, $3, 'running', $4, $5)
                 ON CONFLICT (run_id, node_id, attempt) DO UPDATE SET state = 'running', executor = EXCLUDED.executor,
                     started_at = EXCLUDED.started_at, finished_at = NULL, error = NULL",
                run.get(),
                id(*node),
                i64::from(*attempt),
                executor.to_string(),
                *at
            ));
            out.push(stmt!(
                "UPDATE nodes SET state = 'running', attempts = $3, started_at = $4 WHERE run_id = $1 AND id = $2",
                run.get(),
                id(*node),
                i64::from(*attempt),
                *at
            ));
        }
        Write::AttemptFinished { run, node, attempt, state, error, at } => {
            out.push(stmt!(
                "UPDATE attempts SET state = $4, error = $5, finished_at = $6
                 WHERE run_id = $1 AND node_id = $2 AND attempt = $3",
                run.get(),
                id(*node),
                i64::from(*attempt),
                state.as_str().to_string(),
                error.as_ref().map(json),
                *at
            ));
            // The attempt is over: no worker may start it now, nor report it late.
            out.push(stmt!(
                "UPDATE ready_queue
                 SET taken_at = $4, state = CASE WHEN state IN ('ready', 'claimed') THEN 'cancelled' ELSE state END
                 WHERE run_id = $1 AND node_id = $2 AND attempt = $3 AND taken_at IS NULL",
                run.get(),
                id(*node),
                i64::from(*attempt),
                *at
            ));
        }
        Write::NodeFinished { run, node, state, output, error, at } => {
            let (output, blob) = match output {
                Some(v) => {
                    let (t, b) = cell(v, out);
                    (Some(t), b)
                }
                None => (None, false),
            };
            out.push(stmt!(
                "UPDATE nodes SET state = $3, output = $4, output_blob = $7, error = $5, finished_at = $6
                 WHERE run_id = $1 AND id = $2",
                run.get(),
                id(*node),
                state.as_str().to_string(),
                output,
                error.as_ref().map(json),
                *at,
                blob
            ));
        }
        Write::Journal { run, node, seq, kind, value } => {
            let (value, blob) = cell(value, out);
            out.push(stmt!(
                "INSERT INTO journal (run_id, node_id, seq, kind, value, value_blob) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (run_id, node_id, seq) DO UPDATE
                 SET kind = EXCLUDED.kind, value = EXCLUDED.value, value_blob = EXCLUDED.value_blob",
                run.get(),
                id(*node),
                i64::from(*seq),
                json(kind).trim_matches('"').to_string(),
                value,
                blob
            ));
        }
        Write::Annotate { run, node, annotation } => out.push(stmt!(
            "UPDATE nodes SET label = COALESCE($3, label), color = COALESCE($4, color), shape = COALESCE($5, shape)
             WHERE run_id = $1 AND id = $2",
            run.get(),
            id(*node),
            opt_text(&annotation.label),
            opt_text(&annotation.color),
            opt_text(&annotation.shape)
        )),
        Write::Promise { run, record } => out.push(stmt!(
            "INSERT INTO promises (run_id, id, scope_node, declared_by, seq, text, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            run.get(),
            i64::from(record.id),
            id(record.scope),
            id(record.declared_by),
            i64::from(record.seq),
            text(&record.text),
            now_ms()
        )),
        Write::WaitStarted { run, record } => out.push(stmt!(
            "INSERT INTO waits (run_id, node_id, seq, name, schema, deadline, default_value)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (run_id, node_id, seq) DO UPDATE SET name = EXCLUDED.name, schema = EXCLUDED.schema,
                 deadline = EXCLUDED.deadline, default_value = EXCLUDED.default_value",
            run.get(),
            id(record.node),
            i64::from(record.seq),
            text(&record.name),
            record.schema.to_string(),
            record.deadline,
            record.default.as_ref().map(Value::to_string)
        )),
        Write::WaitEnded { run, node, seq } => out.push(stmt!(
            "DELETE FROM waits WHERE run_id = $1 AND node_id = $2 AND seq = $3",
            run.get(),
            id(*node),
            i64::from(*seq)
        )),
        Write::SignalConsumed { id } => out.push(stmt!("UPDATE signals SET consumed = TRUE WHERE id = $1", *id)),
        Write::NodeCancelConsumed { id } => {
            out.push(stmt!("UPDATE node_cancels SET consumed = TRUE WHERE id = $1", *id))
        }
        Write::Log { run, record } => out.push(stmt!(
            "INSERT INTO logs (run_id, node_id, attempt, ts, line) VALUES ($1, $2, $3, $4, $5)",
            run.get(),
            id(record.node),
            i64::from(record.attempt),
            record.ts,
            text(&record.line)
        )),
        Write::Enqueue { run, node, attempt, queue, priority, task, input } => out.push(stmt!(
            "INSERT INTO ready_queue (run_id, node_id, attempt, queue, priority, state, enqueued_at, task, input)
             VALUES ($1, $2, $3, $4, $5, 'ready', $6, $7, $8)
             ON CONFLICT (run_id, node_id, attempt) DO NOTHING",
            run.get(),
            id(*node),
            i64::from(*attempt),
            queue.clone(),
            i64::from(*priority),
            now_ms(),
            task.clone(),
            input.to_string()
        )),
    }
}

/// A future of a batch, boxed.
type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls `futures` once each, in their order, then until all are done: each sends its
/// statement at its first poll, so the statements reach the server in this order, together.
/// The first error (in that order) is the result.
async fn in_order<T, E>(mut futures: Vec<Pending<'_, Result<T, E>>>) -> Result<Vec<T>, E> {
    let mut first: Vec<Option<Result<T, E>>> = Vec::with_capacity(futures.len());
    futures::future::poll_fn(|cx| {
        first.extend(futures.iter_mut().map(|f| match f.as_mut().poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }));
        Poll::Ready(())
    })
    .await;
    // The rest as their answers come: only a future that is woken is polled again.
    let results = futures::future::join_all(futures.into_iter().zip(first).map(|(f, done)| async move {
        match done {
            Some(v) => v,
            None => f.await,
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Executes `stmts` in `tx`, pipelined: each distinct statement is prepared once, then all are
/// sent together. Returns the rows each changed.
async fn execute_all(
    tx: &Transaction<'_>,
    statements: &Statements,
    stmts: &[Stmt],
) -> Result<Vec<u64>, tokio_postgres::Error> {
    let mut distinct: Vec<&'static str> = Vec::new();
    for s in stmts {
        if !distinct.contains(&s.sql) {
            distinct.push(s.sql);
        }
    }
    let prepared = futures::future::try_join_all(distinct.iter().map(|sql| statements.get(tx, sql))).await?;
    let by_sql: HashMap<&'static str, Statement> = distinct.into_iter().zip(prepared).collect();
    let by_sql = &by_sql;
    let futures: Vec<Pending<'_, Result<u64, tokio_postgres::Error>>> = stmts
        .iter()
        .map(|s| {
            Box::pin(async move {
                let params: Vec<&(dyn ToSql + Sync)> = s.params.iter().map(|p| p.as_ref() as _).collect();
                tx.execute(&by_sql[s.sql], &params).await
            }) as Pending<'_, _>
        })
        .collect();
    in_order(futures).await
}

/// The columns of a run and its lease.
const RUN_COLUMNS: &str = "SELECT runs.id, runs.workflow, runs.state, runs.input, runs.input_blob, runs.output,
        runs.output_blob, runs.error, runs.created_at, runs.started_at, runs.finished_at, runs.executor,
        runs.parallelism, l.owner AS lease_owner, l.expires_at AS lease_expires_at
     FROM runs LEFT JOIN run_leases l ON l.run_id = runs.id";

fn state_of(state: &str, owner: Option<&str>, expires_at: Option<i64>, now: i64) -> (RunState, Option<i64>) {
    let expires = live_expiry(owner, expires_at);
    (effective_state(RunState::parse(state).unwrap_or(RunState::Failed), expires, now), expires)
}

fn error_of(text: Option<String>) -> Option<Error> {
    text.and_then(|s| serde_json::from_str(&s).ok())
}

/// A blob reference read from a column.
fn blob_ref(table: &'static str, text: &str) -> Result<BlobRef, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(table, format!("a blob reference `{text}`: {e}")))
}

/// A value read from a column, or the blob reference it holds (`blob`), noted in `refs`.
enum Cell {
    Value(Value),
    Blob(BlobRef),
}

impl Cell {
    fn read(table: &'static str, text: String, blob: bool, refs: &mut Vec<BlobRef>) -> Result<Self, StoreError> {
        if !blob {
            return Ok(Cell::Value(parse_json(text)));
        }
        let r = blob_ref(table, &text)?;
        refs.push(r.clone());
        Ok(Cell::Blob(r))
    }

    fn resolve(self, blobs: &HashMap<String, Value>) -> Value {
        match self {
            Cell::Value(v) => v,
            // Every reference was fetched (or the fetch failed) before this.
            Cell::Blob(r) => blobs.get(r.sha256()).cloned().unwrap_or(Value::Null),
        }
    }
}

fn millis_ttl(ttl: Duration) -> i64 {
    millis(ttl)
}

/// A read-only transaction that sees one snapshot of every table, even while runs write.
async fn snapshot(c: &mut tokio_postgres::Client) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await
}

impl Store for PgStore {
    /// PostgreSQL commits are as durable as the server is configured to make them
    /// (`synchronous_commit`); this changes nothing.
    fn set_durability(&self, _durability: Durability) -> Result<(), StoreError> {
        Ok(())
    }

    fn reopen(&self) -> Result<Box<dyn Store>, StoreError> {
        // Already migrated (or checked): a new client only.
        let pg = Pg::connect(&self.url, 2).map_err(|e| backend(&self.url, e))?;
        Ok(Box::new(Self { pg: Arc::new(pg), url: self.url.clone(), read_only: self.read_only }))
    }

    fn create_run(&self, run: NewRun<'_>) -> Result<RunId, StoreError> {
        let mut blobs = Vec::new();
        let (input, input_blob) = cell(run.input, &mut blobs);
        let mut root = Vec::new();
        statements(&Write::InsertNode { run: RunId::new(0), node: Box::new(run.root.clone()) }, &mut root);
        let workflow = run.workflow.to_string();
        let executor = run.executor.to_string();
        let parallelism = i64::from(run.parallelism);
        let lease = run.lease.map(|(owner, ttl)| (owner.to_string(), millis_ttl(ttl)));
        self.run(move |c| {
            Box::pin(async move {
                let statements = c.statements();
                let tx = c.transaction().await?;
                execute_all(&tx, &statements, &blobs).await?;
                let now = now_ms();
                let insert = statements
                    .get(
                        &tx,
                        "INSERT INTO runs (workflow, state, input, input_blob, created_at, executor, parallelism)
                         VALUES ($1, 'queued', $2, $3, $4, $5, $6) RETURNING id",
                    )
                    .await?;
                let id: i64 = tx
                    .query_one(&insert, &[&workflow, &input, &input_blob, &now, &executor, &parallelism])
                    .await?
                    .get(0);
                // The root's statements, for this run: the run id is their first parameter.
                for s in &mut root {
                    if s.sql.starts_with("INSERT INTO nodes") {
                        s.params[0] = Box::new(id);
                    }
                }
                execute_all(&tx, &statements, &root).await?;
                if let Some((owner, ttl)) = lease {
                    let insert = statements
                        .get(
                            &tx,
                            "INSERT INTO run_leases (run_id, owner, acquired_at, renewed_at, expires_at)
                             VALUES ($1, $2, $3, $3, $4)",
                        )
                        .await?;
                    tx.execute(&insert, &[&id, &owner, &now, &now.saturating_add(ttl)]).await?;
                }
                tx.commit().await?;
                Ok(RunId::new(id))
            })
        })
    }

    fn commit(&self, lease: Option<&Lease>, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let mut stmts = Vec::with_capacity(writes.len() + 1);
        let mut queues: Vec<&str> = Vec::new();
        let mut logged: Vec<i64> = Vec::new();
        for w in writes {
            statements(w, &mut stmts);
            match w {
                Write::Enqueue { queue, .. } if !queues.contains(&queue.as_str()) => queues.push(queue),
                Write::Log { run, .. } if !logged.contains(&run.get()) => logged.push(run.get()),
                _ => {}
            }
        }
        // A run's log lines are numbered in the order they are committed, also when an
        // orchestrator and workers write them at once, so that a reader following the lines
        // after the last one it saw misses none: the numbers are taken under a lock of the run's
        // logs, held until the commit.
        logged.sort_unstable();
        let locks = logged
            .into_iter()
            .map(|run| stmt!("SELECT pg_advisory_xact_lock($1, ($2::BIGINT % 2147483647)::INTEGER)", LOGS_LOCK, run));
        stmts.splice(0..0, locks);
        // Delivered at the commit, to the workers waiting on these queues.
        for queue in queues {
            stmts.push(stmt!("SELECT pg_notify($1, $2)", READY_CHANNEL.to_string(), queue.to_string()));
        }
        let fenced = lease.cloned();
        let committed = self.run(move |c| {
            Box::pin(async move {
                let statements = c.statements();
                let tx = c.transaction().await?;
                if let Some(lease) = fenced {
                    // Taking the lease over waits for this transaction, and this one sees it as is.
                    let fence = statements.get(&tx, "SELECT owner FROM run_leases WHERE run_id = $1 FOR SHARE").await?;
                    let current: Option<String> = tx.query_opt(&fence, &[&lease.run.get()]).await?.map(|r| r.get(0));
                    if current.as_deref() != Some(lease.owner.as_str()) {
                        return Err(StoreError::LeaseLost { run: lease.run, owner: lease.owner, current }.into());
                    }
                    #[cfg(test)]
                    tests::pause_in_commit(&lease.owner);
                }
                execute_all(&tx, &statements, &stmts).await?;
                tx.commit().await?;
                Ok(())
            })
        });
        match (committed, lease) {
            // The database failed the batch, or the connection broke under it (e.g. the
            // server ended a transaction left idle by a process that was stopped): when the
            // run has another owner by now, that is what the orchestrator must hear.
            (Err(e @ StoreError::Backend { .. }), Some(lease)) => match self.owner_of(lease.run) {
                Ok(current) if current.as_deref() != Some(lease.owner.as_str()) => {
                    Err(StoreError::LeaseLost { run: lease.run, owner: lease.owner.clone(), current })
                }
                _ => Err(e),
            },
            (committed, _) => committed,
        }
    }

    fn load(&self, run: RunId) -> Result<RunSnapshot, StoreError> {
        let rows = self.run(move |c| {
            Box::pin(async move {
                // One snapshot for every table, even while a run writes.
                let statements = c.statements();
                let tx = snapshot(c).await?;
                let r = &[&run.get() as &(dyn ToSql + Sync)];
                let by_id = statements.get(&tx, &format!("{RUN_COLUMNS} WHERE runs.id = $1")).await?;
                let Some(record) = tx.query_opt(&by_id, r).await? else {
                    return Err(StoreError::NoRun(run).into());
                };
                let queries = [
                    "SELECT id, parent, seq, task, state, args, input_hash, output, error, attempts, label, created_at,
                            started_at, finished_at, color, shape, output_blob, delivered_to, policy
                     FROM nodes WHERE run_id = $1 ORDER BY id",
                    "SELECT from_node, to_node, kind, label FROM edges WHERE run_id = $1 ORDER BY to_node, from_node",
                    "SELECT node_id, attempt, state, executor, started_at, finished_at, error
                     FROM attempts WHERE run_id = $1 ORDER BY node_id, attempt",
                    "SELECT node_id, seq, kind, value, value_blob FROM journal WHERE run_id = $1 ORDER BY node_id, seq",
                    "SELECT id, scope_node, declared_by, seq, text FROM promises WHERE run_id = $1 ORDER BY id",
                    "SELECT node_id, seq, name, schema, deadline, default_value FROM waits WHERE run_id = $1
                     ORDER BY node_id, seq",
                ];
                let (tx, statements) = (&tx, &statements);
                let tables: Vec<Vec<tokio_postgres::Row>> = in_order(
                    queries
                        .iter()
                        .map(|q| {
                            Box::pin(async move { tx.query(&statements.get(tx, q).await?, r).await }) as Pending<'_, _>
                        })
                        .collect(),
                )
                .await?;
                Ok((record, tables))
            })
        })?;
        let (record, mut tables) = rows;
        let mut refs = Vec::new();
        let now = now_ms();
        let owner: Option<String> = record.get("lease_owner");
        let (state, expires) = state_of(record.get("state"), owner.as_deref(), record.get("lease_expires_at"), now);
        let input = Cell::read("runs", record.get("input"), record.get("input_blob"), &mut refs)?;
        let output = record
            .get::<_, Option<String>>("output")
            .map(|t| Cell::read("runs", t, record.get("output_blob"), &mut refs))
            .transpose()?;
        let waits = tables.pop().unwrap_or_default();
        let promises = tables.pop().unwrap_or_default();
        let journal = tables.pop().unwrap_or_default();
        let attempts = tables.pop().unwrap_or_default();
        let edges = tables.pop().unwrap_or_default();
        let nodes = tables.pop().unwrap_or_default();

        // Nodes, with their outputs and spilled arguments as cells until the blobs are read.
        type NodeCells = (NodeRecord, Option<Cell>, Vec<(String, ArgCell)>);
        let mut node_cells: Vec<NodeCells> = Vec::with_capacity(nodes.len());
        let mut delivered = Vec::new();
        for r in &nodes {
            let node = node_of(r.get(0));
            let state: String = r.get(4);
            let state = NodeState::parse(&state).ok_or_else(|| corrupt("nodes", format!("state `{state}`")))?;
            let args_text: String = r.get(5);
            let stored: Vec<(String, ArgIn)> =
                serde_json::from_str(&args_text).map_err(|e| corrupt("nodes", format!("args of node {node}: {e}")))?;
            let args = stored
                .into_iter()
                .map(|(name, arg)| {
                    let arg = match arg {
                        ArgIn::Value(v) => ArgCell::Arg(StoredArg::Value(v)),
                        ArgIn::Node(n) => ArgCell::Arg(StoredArg::Node(n)),
                        ArgIn::List(items) => ArgCell::Arg(StoredArg::List(items)),
                        ArgIn::Blob(b) => {
                            refs.push(b.clone());
                            ArgCell::Blob(b)
                        }
                    };
                    (name, arg)
                })
                .collect();
            let output =
                r.get::<_, Option<String>>(7).map(|t| Cell::read("nodes", t, r.get(16), &mut refs)).transpose()?;
            if let Some(attempt) = r.get::<_, Option<i64>>(17) {
                delivered.push((node, u32_of(attempt)));
            }
            let policy: Option<String> = r.get(18);
            let record = NodeRecord {
                id: node,
                parent: r.get::<_, Option<i64>>(1).map(node_of),
                seq: r.get::<_, Option<i64>>(2).map(u32_of),
                task: r.get(3),
                state,
                args: Vec::new(),
                input_hash: r.get(6),
                output: None,
                error: error_of(r.get(8)),
                attempts: u32_of(r.get(9)),
                label: r.get(10),
                color: r.get(14),
                shape: r.get(15),
                created_at: r.get(11),
                started_at: r.get(12),
                finished_at: r.get(13),
                policy: policy
                    .map(|p| serde_json::from_str(&p).map_err(|e| corrupt("nodes", format!("policy `{p}`: {e}"))))
                    .transpose()?,
            };
            node_cells.push((record, output, args));
        }
        let mut journal_cells = Vec::with_capacity(journal.len());
        for r in &journal {
            let kind: String = r.get(2);
            let kind = serde_json::from_value(Value::String(kind.clone()))
                .map_err(|_| corrupt("journal", format!("kind `{kind}`")))?;
            let value = Cell::read("journal", r.get(3), r.get(4), &mut refs)?;
            journal_cells.push((node_of(r.get(0)), u32_of(r.get(1)), kind, value));
        }

        let blobs = self.fetch_blobs(refs)?;
        let record = RunRecord {
            id: RunId::new(record.get("id")),
            workflow: record.get("workflow"),
            state,
            input: input.resolve(&blobs),
            output: output.map(|c| c.resolve(&blobs)),
            error: error_of(record.get("error")),
            created_at: record.get("created_at"),
            started_at: record.get("started_at"),
            finished_at: record.get("finished_at"),
            executor: record.get("executor"),
            parallelism: u32_of(record.get("parallelism")),
            owner: owner.filter(|_| expires.is_some_and(|e| e > now)),
        };
        let nodes = node_cells
            .into_iter()
            .map(|(mut node, output, args)| {
                node.output = output.map(|c| c.resolve(&blobs));
                node.args = args
                    .into_iter()
                    .map(|(name, arg)| {
                        let arg = match arg {
                            ArgCell::Arg(a) => a,
                            ArgCell::Blob(b) => StoredArg::Value(Cell::Blob(b).resolve(&blobs)),
                        };
                        (name, arg)
                    })
                    .collect();
                node
            })
            .collect();
        let edges = edges
            .iter()
            .map(|r| EdgeRecord {
                from: node_of(r.get(0)),
                to: node_of(r.get(1)),
                kind: match r.get::<_, &str>(2) {
                    "control" => EdgeKind::Control,
                    "after" => EdgeKind::After,
                    _ => EdgeKind::Data,
                },
                label: r.get(3),
            })
            .collect();
        let attempts = attempts
            .iter()
            .map(|r| AttemptRecord {
                node: node_of(r.get(0)),
                attempt: u32_of(r.get(1)),
                state: NodeState::parse(r.get(2)).unwrap_or(NodeState::Failed),
                executor: r.get(3),
                started_at: r.get(4),
                finished_at: r.get(5),
                error: error_of(r.get(6)),
            })
            .collect();
        let journal = journal_cells
            .into_iter()
            .map(|(node, seq, kind, value)| JournalRecord { node, seq, kind, value: value.resolve(&blobs) })
            .collect();
        let promises = promises
            .iter()
            .map(|r| PromiseRecord {
                id: u32_of(r.get(0)),
                scope: node_of(r.get(1)),
                declared_by: node_of(r.get(2)),
                seq: u32_of(r.get(3)),
                text: r.get(4),
            })
            .collect();
        let waits = waits
            .iter()
            .map(|r| WaitRecord {
                node: node_of(r.get(0)),
                seq: u32_of(r.get(1)),
                name: r.get(2),
                schema: parse_json(r.get(3)),
                deadline: r.get(4),
                default: r.get::<_, Option<String>>(5).map(parse_json),
            })
            .collect();
        Ok(RunSnapshot { run: record, nodes, edges, attempts, journal, promises, waits, delivered })
    }

    fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.run(move |c| {
            Box::pin(async move {
                Ok(c.query(
                    "SELECT r.id, r.workflow, r.state, r.created_at, r.started_at, r.finished_at, r.executor,
                            r.parallelism, l.owner, l.expires_at, r.error
                     FROM runs r LEFT JOIN run_leases l ON l.run_id = r.id ORDER BY r.id DESC LIMIT $1",
                    &[&limit],
                )
                .await?)
            })
        })?;
        let now = now_ms();
        Ok(rows
            .iter()
            .map(|r| {
                let owner: Option<String> = r.get(8);
                let (state, expires) = state_of(r.get(2), owner.as_deref(), r.get(9), now);
                RunSummary {
                    id: RunId::new(r.get(0)),
                    workflow: r.get(1),
                    state,
                    error: error_of(r.get(10)),
                    created_at: r.get(3),
                    started_at: r.get(4),
                    finished_at: r.get(5),
                    executor: r.get(6),
                    parallelism: u32_of(r.get(7)),
                    owner: owner.filter(|_| expires.is_some_and(|e| e > now)),
                }
            })
            .collect())
    }

    fn logs(&self, run: RunId, node: Option<NodeId>) -> Result<Vec<LogRecord>, StoreError> {
        self.logs_after(run, node, 0).map(|(_, lines)| lines.into_iter().map(|(_, l)| l).collect())
    }

    fn logs_after(
        &self,
        run: RunId,
        node: Option<NodeId>,
        after: i64,
    ) -> Result<(RunState, Vec<(i64, LogRecord)>), StoreError> {
        let node = node.map(id);
        let (record, rows) = self.run(move |c| {
            Box::pin(async move {
                let tx = snapshot(c).await?;
                let Some(record) = tx
                    .query_opt(
                        "SELECT runs.state, l.expires_at, l.owner FROM runs
                         LEFT JOIN run_leases l ON l.run_id = runs.id WHERE runs.id = $1",
                        &[&run.get()],
                    )
                    .await?
                else {
                    return Err(StoreError::NoRun(run).into());
                };
                let rows = tx
                    .query(
                        "SELECT id, node_id, attempt, ts, line FROM logs
                         WHERE run_id = $1 AND ($2::BIGINT IS NULL OR node_id = $2) AND id > $3 ORDER BY id",
                        &[&run.get(), &node, &after],
                    )
                    .await?;
                tx.commit().await?;
                Ok((record, rows))
            })
        })?;
        let (state, _) = state_of(record.get(0), record.get::<_, Option<&str>>(2), record.get(1), now_ms());
        let lines = rows
            .iter()
            .map(|r| {
                let line =
                    LogRecord { node: node_of(r.get(1)), attempt: u32_of(r.get(2)), ts: r.get(3), line: r.get(4) };
                (r.get(0), line)
            })
            .collect();
        Ok((state, lines))
    }

    fn request_cancel(&self, run: RunId) -> Result<(), StoreError> {
        let n = self.run(move |c| {
            Box::pin(async move {
                Ok(c.execute("UPDATE runs SET cancel_requested = TRUE WHERE id = $1", &[&run.get()]).await?)
            })
        })?;
        if n == 0 { Err(StoreError::NoRun(run)) } else { Ok(()) }
    }

    fn request_node_cancel(&self, run: RunId, node: NodeId) -> Result<(), StoreError> {
        let node = id(node);
        self.run(move |c| {
            Box::pin(async move {
                c.execute("INSERT INTO node_cancels (run_id, node_id) VALUES ($1, $2)", &[&run.get(), &node]).await?;
                Ok(())
            })
        })
    }

    fn control(&self, run: RunId) -> Result<RunControl, StoreError> {
        self.controls(&[run])?.pop().map(|(_, c)| c).ok_or(StoreError::NoRun(run))
    }

    fn controls(&self, runs: &[RunId]) -> Result<Vec<(RunId, RunControl)>, StoreError> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = runs.iter().map(|r| r.get()).collect();
        // One statement (one snapshot, no transaction): an orchestrator asks this of all its
        // runs several times a second.
        let rows = self.run(move |c| {
            Box::pin(async move {
                let control = c
                    .prepared(
                        "SELECT r.id, r.cancel_requested, r.paused,
                            (SELECT COALESCE(json_agg(json_build_array(s.id, s.name, s.value) ORDER BY s.id), '[]')::text
                             FROM signals s WHERE s.run_id = r.id AND NOT s.consumed),
                            (SELECT COALESCE(json_agg(json_build_array(n.id, n.node_id) ORDER BY n.id), '[]')::text
                             FROM node_cancels n WHERE n.run_id = r.id AND NOT n.consumed)
                         FROM runs r WHERE r.id = ANY($1) ORDER BY r.id",
                    )
                    .await?;
                Ok(c.query(&control, &[&ids]).await?)
            })
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let run = RunId::new(row.get(0));
            let listed = |column: usize| -> Result<Vec<Value>, StoreError> {
                serde_json::from_str(row.get(column)).map_err(|e| {
                    StoreError::backend(
                        format!("database {}: the signals or node cancels of run {run}", redact(&self.url)),
                        e,
                    )
                })
            };
            let signals = listed(3)?
                .into_iter()
                .map(|s| {
                    let value = parse_json(s[2].as_str().unwrap_or("null").to_string());
                    (s[0].as_i64().unwrap_or(0), s[1].as_str().unwrap_or_default().to_string(), value)
                })
                .collect();
            let cancel_nodes = listed(4)?
                .into_iter()
                .map(|n| (n[0].as_i64().unwrap_or(0), node_of(n[1].as_i64().unwrap_or(0))))
                .collect();
            out.push((run, RunControl { cancel_requested: row.get(1), paused: row.get(2), signals, cancel_nodes }));
        }
        Ok(out)
    }

    fn set_paused(&self, run: RunId, paused: bool) -> Result<(), StoreError> {
        let n = self.run(move |c| {
            Box::pin(async move {
                Ok(c.execute("UPDATE runs SET paused = $2 WHERE id = $1", &[&run.get(), &paused]).await?)
            })
        })?;
        if n == 0 { Err(StoreError::NoRun(run)) } else { Ok(()) }
    }

    fn send_signal(&self, run: RunId, name: &str, value: &Value) -> Result<(), StoreError> {
        let (name, value) = (text(name), value.to_string());
        self.run(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO signals (run_id, name, value, at) VALUES ($1, $2, $3, $4)",
                    &[&run.get(), &name, &value, &now_ms()],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn has_signal(&self, run: RunId, name: &str) -> Result<bool, StoreError> {
        let name = text(name);
        self.run(move |c| {
            Box::pin(async move {
                let row = c
                    .query_opt("SELECT 1 FROM signals WHERE run_id = $1 AND name = $2 LIMIT 1", &[&run.get(), &name])
                    .await?;
                Ok(row.is_some())
            })
        })
    }

    fn acquire_run_lease(&self, run: RunId, owner: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let (me, ttl) = (owner.to_string(), millis_ttl(ttl));
        self.run(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if tx.query_opt("SELECT 1 FROM runs WHERE id = $1", &[&run.get()]).await?.is_none() {
                    return Err(StoreError::NoRun(run).into());
                }
                // Twice at most: a lease inserted by another acquirer meanwhile is seen the second time.
                for _ in 0..2 {
                    let now = now_ms();
                    let current = tx
                        .query_opt(
                            "SELECT owner, renewed_at, expires_at FROM run_leases WHERE run_id = $1 FOR UPDATE",
                            &[&run.get()],
                        )
                        .await?;
                    let taken = match current {
                        Some(row) => {
                            let (holder, renewed_at, expires_at): (String, i64, i64) =
                                (row.get(0), row.get(1), row.get(2));
                            if holder != me && live_expiry(Some(&holder), Some(expires_at)).is_some_and(|e| e > now) {
                                let renewed_ms_ago = (now - renewed_at).max(0);
                                return Err(StoreError::Leased { run, owner: holder, renewed_ms_ago }.into());
                            }
                            tx.execute(
                                "UPDATE run_leases SET owner = $2, acquired_at = $3, renewed_at = $3, expires_at = $4
                                 WHERE run_id = $1",
                                &[&run.get(), &me, &now, &now.saturating_add(ttl)],
                            )
                            .await?
                        }
                        None => {
                            tx.execute(
                                "INSERT INTO run_leases (run_id, owner, acquired_at, renewed_at, expires_at)
                                 VALUES ($1, $2, $3, $3, $4) ON CONFLICT (run_id) DO NOTHING",
                                &[&run.get(), &me, &now, &now.saturating_add(ttl)],
                            )
                            .await?
                        }
                    };
                    if taken == 1 {
                        tx.commit().await?;
                        return Ok(Lease { run, owner: me });
                    }
                }
                Err(StoreError::LeaseLost { run, owner: me, current: None }.into())
            })
        })
    }

    fn renew_run_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError> {
        let (lease, ttl) = (lease.clone(), millis_ttl(ttl));
        self.run(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let n = c
                    .execute(
                        "UPDATE run_leases SET renewed_at = $3, expires_at = $4 WHERE run_id = $1 AND owner = $2",
                        &[&lease.run.get(), &lease.owner, &now, &now.saturating_add(ttl)],
                    )
                    .await?;
                if n == 0 {
                    let current = c
                        .query_opt("SELECT owner FROM run_leases WHERE run_id = $1", &[&lease.run.get()])
                        .await?
                        .map(|r| r.get(0));
                    return Err(StoreError::LeaseLost { run: lease.run, owner: lease.owner, current }.into());
                }
                Ok(())
            })
        })
    }

    fn renew_owner_leases(&self, owner: &str, ttl: Duration) -> Result<usize, StoreError> {
        let (owner, ttl) = (owner.to_string(), millis_ttl(ttl));
        self.run(move |c| {
            Box::pin(async move {
                let now = now_ms();
                let n = c
                    .execute(
                        "UPDATE run_leases SET renewed_at = $2, expires_at = $3 WHERE owner = $1",
                        &[&owner, &now, &now.saturating_add(ttl)],
                    )
                    .await?;
                Ok(n as usize)
            })
        })
    }

    fn release_run_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let lease = lease.clone();
        self.run(move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM run_leases WHERE run_id = $1 AND owner = $2", &[&lease.run.get(), &lease.owner])
                    .await?;
                Ok(())
            })
        })
    }

    fn claim(&self, queue: &str, n: usize, owner: &str, ttl: Duration) -> Result<Vec<Claim>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (queue, owner, ttl) = (queue.to_string(), owner.to_string(), millis_ttl(ttl));
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let now = now_ms();
        let expires_at = now.saturating_add(ttl);
        let rows = {
            let (queue, owner) = (queue.clone(), owner.clone());
            self.run(move |c| {
                Box::pin(async move {
                    Ok(c.query(
                        "WITH picked AS (
                             SELECT id FROM ready_queue
                             WHERE queue = $1 AND (state = 'ready' OR (state = 'claimed' AND expires_at <= $2))
                             ORDER BY priority DESC, id LIMIT $3
                             FOR UPDATE SKIP LOCKED)
                         UPDATE ready_queue q SET state = 'claimed', owner = $4, expires_at = $5, claims = q.claims + 1
                         FROM picked WHERE q.id = picked.id
                         RETURNING q.id, q.run_id, q.node_id, q.attempt, q.priority, q.task, q.input",
                        &[&queue, &now, &limit, &owner, &expires_at],
                    )
                    .await?)
                })
            })?
        };
        let mut claims: Vec<Claim> = rows
            .iter()
            .map(|r| Claim {
                id: r.get(0),
                run: RunId::new(r.get(1)),
                node: node_of(r.get(2)),
                attempt: u32_of(r.get(3)),
                priority: i32::try_from(r.get::<_, i64>(4)).unwrap_or_default(),
                task: r.get(5),
                input: parse_json(r.get(6)),
                queue: queue.clone(),
                owner: owner.clone(),
                expires_at,
            })
            .collect();
        claims.sort_by_key(|c| (std::cmp::Reverse(c.priority), c.id));
        Ok(claims)
    }

    fn renew_claim(&self, claim: &Claim, ttl: Duration) -> Result<Claim, StoreError> {
        let expires_at = now_ms().saturating_add(millis_ttl(ttl));
        self.settle(
            claim,
            "UPDATE ready_queue SET expires_at = $3 WHERE id = $1 AND owner = $2 AND state = 'claimed'",
            Some(Box::new(expires_at)),
        )?;
        Ok(Claim { expires_at, ..claim.clone() })
    }

    fn complete(&self, claim: &Claim, output: &Value) -> Result<(), StoreError> {
        self.settle(
            claim,
            "WITH done AS (
                 UPDATE ready_queue SET state = 'succeeded', result = $3, expires_at = NULL
                 WHERE id = $1 AND owner = $2 AND state = 'claimed' RETURNING run_id)
             SELECT pg_notify('salt_done', run_id::text) FROM done",
            Some(Box::new(output.to_string())),
        )
    }

    fn fail(&self, claim: &Claim, error: &Error) -> Result<(), StoreError> {
        self.settle(
            claim,
            "WITH done AS (
                 UPDATE ready_queue SET state = 'failed', error = $3, expires_at = NULL
                 WHERE id = $1 AND owner = $2 AND state = 'claimed' RETURNING run_id)
             SELECT pg_notify('salt_done', run_id::text) FROM done",
            Some(Box::new(json(error))),
        )
    }

    fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        // Ready again: the waiting workers of its queue are told.
        self.settle(
            claim,
            "WITH released AS (
                 UPDATE ready_queue SET state = 'ready', owner = NULL, expires_at = NULL, result = NULL
                 WHERE id = $1 AND owner = $2 AND state = 'claimed' RETURNING queue)
             SELECT pg_notify('salt_ready', queue) FROM released",
            None,
        )
    }

    fn queued(&self, run: RunId) -> Result<Vec<Queued>, StoreError> {
        let rows = self.run(move |c| {
            Box::pin(async move {
                Ok(c.query(
                    "SELECT q.node_id, q.attempt, q.queue, q.enqueued_at FROM ready_queue q
                     JOIN attempts a ON a.run_id = q.run_id AND a.node_id = q.node_id AND a.attempt = q.attempt
                     WHERE q.run_id = $1 AND q.taken_at IS NULL AND a.state = 'running'
                       AND (q.state = 'ready' OR (q.state = 'claimed' AND q.expires_at <= $2))
                     ORDER BY q.id",
                    &[&run.get(), &now_ms()],
                )
                .await?)
            })
        })?;
        Ok(rows
            .iter()
            .map(|r| Queued { node: node_of(r.get(0)), attempt: u32_of(r.get(1)), queue: r.get(2), since: r.get(3) })
            .collect())
    }

    fn queue_results(&self, run: RunId) -> Result<Vec<QueueResult>, StoreError> {
        let rows = self.run(move |c| {
            Box::pin(async move {
                Ok(c.query(
                    "SELECT q.node_id, q.attempt, q.state, q.result, q.error FROM ready_queue q
                     JOIN attempts a ON a.run_id = q.run_id AND a.node_id = q.node_id AND a.attempt = q.attempt
                     WHERE q.run_id = $1 AND q.state IN ('succeeded', 'failed') AND q.taken_at IS NULL
                       AND a.state = 'running'
                     ORDER BY q.id",
                    &[&run.get()],
                )
                .await?)
            })
        })?;
        let mut results = Vec::with_capacity(rows.len());
        for r in &rows {
            let node = node_of(r.get(0));
            let result = if r.get::<_, &str>(2) == "succeeded" {
                Ok(r.get::<_, Option<String>>(3).map_or(Value::Null, parse_json))
            } else {
                let error = r.get::<_, Option<&str>>(4).and_then(|e| serde_json::from_str::<Error>(e).ok());
                Err(error
                    .ok_or_else(|| corrupt("ready_queue", format!("entry of node {node} failed with no error")))?)
            };
            results.push(QueueResult { node, attempt: u32_of(r.get(1)), result });
        }
        Ok(results)
    }

    fn watch_queue(&self, queue: &str) -> Result<Option<QueueWatch>, StoreError> {
        let listener = self.pg.listen(&[READY_CHANNEL]).map_err(|e| backend(&self.url, e))?;
        Ok(Some(QueueWatch::notified_by(queue, listener)))
    }

    fn watch_results(&self) -> Result<Option<ResultWatch>, StoreError> {
        let listener = self.pg.listen(&[DONE_CHANNEL]).map_err(|e| backend(&self.url, e))?;
        Ok(Some(ResultWatch::notified_by(listener)))
    }
}

impl PgStore {
    /// Who holds the lease of `run` now, if anyone (on a fresh connection if the last broke).
    fn owner_of(&self, run: RunId) -> Result<Option<String>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let row = c.query_opt("SELECT owner FROM run_leases WHERE run_id = $1", &[&run.get()]).await?;
                Ok(row.map(|r| r.get(0)))
            })
        })
    }

    /// Runs `sql` (parameters: the claim's id, its owner, and `value` if any) if `claim` still
    /// holds its entry; [`StoreError::ClaimLost`] if it changed nothing.
    fn settle(&self, claim: &Claim, sql: &'static str, value: Option<Param>) -> Result<(), StoreError> {
        let mut params: Vec<Param> = vec![Box::new(claim.id), Box::new(claim.owner.clone())];
        params.extend(value);
        let s = Stmt { sql, params };
        let n = self.run(move |c| {
            Box::pin(async move {
                let params: Vec<&(dyn ToSql + Sync)> = s.params.iter().map(|p| p.as_ref() as _).collect();
                if s.sql.starts_with("WITH") {
                    Ok(c.query(s.sql, &params).await?.len() as u64)
                } else {
                    Ok(c.execute(s.sql, &params).await?)
                }
            })
        })?;
        if n == 0 {
            Err(StoreError::ClaimLost { id: claim.id, run: claim.run, node: claim.node, owner: claim.owner.clone() })
        } else {
            Ok(())
        }
    }
}

/// An argument read from `nodes.args`, its blob not read yet.
enum ArgCell {
    Arg(StoredArg),
    Blob(BlobRef),
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::store::tests::Backend;

    fn database(hint: &str) -> Backend {
        Backend::postgres(hint)
    }

    fn psql(url: &str, sql: &str) -> String {
        let out = std::process::Command::new("psql").arg(url).args(["-v", "ON_ERROR_STOP=1", "-Atc", sql]).output();
        let out = out.unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    use crate::store::tests::root_with as root;

    fn new_run(store: &dyn Store, input: &Value) -> RunId {
        let root = root(vec![("n".into(), StoredArg::Value(input.clone()))]);
        let run = NewRun { workflow: "wf", input, executor: "inline", parallelism: 1, root: &root, lease: None };
        store.create_run(run).unwrap()
    }

    /// The lease owner whose commits stop, inside their transaction and past the fence, for
    /// how long: a process stopped there (SIGSTOP) as the tests can arrange it.
    static PAUSED: std::sync::Mutex<Option<(String, Duration)>> = std::sync::Mutex::new(None);

    pub(super) fn pause_in_commit(owner: &str) {
        let pause = PAUSED.lock().unwrap().as_ref().filter(|(o, _)| o == owner).map(|(_, d)| *d);
        if let Some(d) = pause {
            std::thread::sleep(d);
        }
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn a_commit_cut_off_while_its_orchestrator_was_stopped_says_the_lease_was_lost() {
        let db = database("cut_off");
        let store = Arc::new(PgStore::open(db.url()).unwrap());
        let run = new_run(&*store, &Value::Null);
        let (stale, new) = ("host:1:5ta1e000", "host:2:0e000000");
        let lease = store.acquire_run_lease(run, stale, Duration::from_millis(500)).unwrap();
        // Stopped inside its transaction, past the fence, longer than the server lets a
        // transaction stay idle (5 s).
        *PAUSED.lock().unwrap() = Some((stale.to_string(), Duration::from_millis(6_500)));
        let committing = {
            let store = store.clone();
            let cancelled =
                Write::RunState { run, state: RunState::Cancelled, output: None, error: None, at: now_ms() };
            std::thread::spawn(move || store.commit(Some(&lease), &[cancelled]))
        };
        // Once the lease expired, a takeover waits for the stopped transaction until the server
        // ends it.
        std::thread::sleep(Duration::from_millis(700));
        let other = PgStore::open(db.url()).unwrap();
        other.acquire_run_lease(run, new, Duration::from_secs(30)).unwrap();
        let e = committing.join().unwrap().unwrap_err();
        assert!(
            matches!(&e, StoreError::LeaseLost { current: Some(c), .. } if c == new),
            "the stale orchestrator hears that the run was taken over, not that its connection broke: {e}"
        );
        let state = other.load(run).unwrap().run.state;
        assert_ne!(state, RunState::Cancelled, "nothing of the cut batch was written");
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn processes_opening_a_new_database_at_once_migrate_it_once() {
        let db = database("first_opens");
        let barrier = Arc::new(Barrier::new(8));
        let opened: Vec<_> = (0..8)
            .map(|_| {
                let (url, barrier) = (db.url().to_string(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    PgStore::open(&url).map(|_| ())
                })
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
        assert_eq!(psql(db.url(), "SELECT component, version FROM salt_migrations"), "store|1");
        // Opening again changes nothing.
        PgStore::open(db.url()).unwrap();
        assert_eq!(psql(db.url(), "SELECT count(*) FROM salt_migrations"), "1");
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn a_database_of_another_application_is_refused_and_left_untouched() {
        let db = database("foreign");
        psql(db.url(), "CREATE TABLE runs (customer TEXT); INSERT INTO runs VALUES ('ann')");
        for result in [PgStore::open(db.url()).map(|_| ()), PgStore::open_read_only(db.url()).map(|_| ())] {
            let e = result.unwrap_err();
            assert!(matches!(e, StoreError::Foreign { .. } | StoreError::Missing { .. }), "{e:?}");
        }
        let e = PgStore::open(db.url()).unwrap_err().to_string();
        assert!(e.contains("it has a table `runs` but no salt schema version") && e.contains("left untouched"), "{e}");
        assert_eq!(psql(db.url(), "SELECT to_regclass('salt_migrations') IS NULL, count(*) FROM runs"), "t|1");
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn a_newer_schema_is_refused_and_a_reader_never_writes() {
        let db = database("reader");
        let e = PgStore::open_read_only(db.url()).unwrap_err();
        assert!(e.to_string().contains("nothing has run here yet"), "{e}");
        assert_eq!(psql(db.url(), "SELECT to_regclass('salt_migrations') IS NULL"), "t", "a reader created tables");

        let store = PgStore::open(db.url()).unwrap();
        let run = new_run(&store, &serde_json::json!(3));
        let reader = PgStore::open_read_only(db.url()).unwrap();
        assert_eq!(reader.load(run).unwrap().nodes.len(), 1);
        let e = reader.commit(None, &[Write::SignalConsumed { id: 1 }]).unwrap_err().to_string();
        assert!(e.contains("read-only transaction"), "{e}");
        assert!(reader.send_signal(run, "s", &Value::Null).is_err(), "a reader wrote");

        psql(db.url(), "INSERT INTO salt_migrations VALUES ('store', 99, 0)");
        for e in [PgStore::open(db.url()).unwrap_err(), PgStore::open_read_only(db.url()).unwrap_err()] {
            assert!(matches!(e, StoreError::TooNew { found: 99, supported: 1, .. }), "{e:?}");
        }
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn large_values_are_stored_once_in_the_database_and_checked_against_their_hash() {
        let db = database("blobs");
        let store = PgStore::open(db.url()).unwrap();
        let big = serde_json::json!({"rows": vec!["x".repeat(1000); 2000]});
        let run = new_run(&store, &big);
        let done = Write::NodeFinished {
            run,
            node: NodeId::ROOT,
            state: NodeState::Succeeded,
            output: Some(big.clone()),
            error: None,
            at: 2,
        };
        let journal = Write::Journal {
            run,
            node: NodeId::ROOT,
            seq: 1,
            kind: crate::context::JournalKind::Signal,
            value: big["rows"].clone(),
        };
        store.commit(None, &[done, journal]).unwrap();
        // Another host reads them from the database: nothing is kept beside it.
        assert_eq!(store.blobs(), None);
        let snap = PgStore::open_read_only(db.url()).unwrap().load(run).unwrap();
        assert_eq!(snap.run.input, big);
        assert_eq!(snap.nodes[0].args[0].1, StoredArg::Value(big.clone()));
        assert_eq!(snap.nodes[0].output.as_ref(), Some(&big));
        assert_eq!(snap.journal[0].value, big["rows"]);
        // Two distinct values, two blobs, however many rows hold them; the rows stay small.
        assert_eq!(psql(db.url(), "SELECT count(*) FROM blobs"), "2");
        let raw = psql(db.url(), "SELECT output FROM nodes");
        assert!(raw.starts_with(r#"{"$salt_blob":""#) && raw.len() < 120, "{raw}");

        // A blob that is not what its hash says is refused, not used.
        psql(db.url(), "UPDATE blobs SET data = overlay(data placing 'y'::bytea from 20) WHERE bytes < 2100000");
        let e = store.load(run).unwrap_err().to_string();
        assert!(e.contains("does not match its hash"), "{e}");
        assert_eq!(store.runs(5).unwrap().len(), 1, "the run is still listed");
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn a_waiting_claimer_is_woken_by_an_enqueue_and_a_release() {
        let db = database("notify");
        let store = PgStore::open(db.url()).unwrap();
        let run = new_run(&store, &Value::Null);
        let watch = store.watch_queue("gpu").unwrap().expect("PostgreSQL tells");
        let woken = |watch: &QueueWatch| {
            futures::executor::block_on(async {
                tokio::time::timeout(Duration::from_secs(5), watch.notified()).await.unwrap_or(false)
            })
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let _guard = rt.enter();
        let enqueue = |node: u64, queue: &str| Write::Enqueue {
            run,
            node: NodeId::new(node),
            attempt: 1,
            queue: queue.into(),
            priority: 0,
            task: "t".into(),
            input: Value::Null,
        };
        // An enqueue on another queue is not announced to this one.
        store.commit(None, &[enqueue(1, "cpu"), enqueue(2, "gpu"), enqueue(3, "gpu")]).unwrap();
        assert!(rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), watch.notified()).await }).unwrap());
        let claims = store.claim("gpu", 5, "w", Duration::from_secs(30)).unwrap();
        assert_eq!(claims.iter().map(|c| c.node.get()).collect::<Vec<_>>(), [2, 3]);
        store.release(&claims[0]).unwrap();
        assert!(woken(&watch), "a release is announced");
        let quiet = rt.block_on(async { tokio::time::timeout(Duration::from_millis(200), watch.notified()).await });
        assert!(quiet.is_err(), "one batch, one notification");
    }
}
