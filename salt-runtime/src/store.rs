//! The store: the durable journal of runs, behind one trait.
//!
//! The orchestrator keeps the live graph in memory and sends the store batches of [`Write`]s,
//! one transaction per batch; every transition is committed before it is acted on. Readers
//! (`runs`, `show`, `graph` from another terminal) load snapshots and never block the writer.
//!
//! A run is driven by at most one orchestrator at a time: the one that holds its [`Lease`].
//! The lease expires unless renewed (a [`Heartbeat`] thread renews it), and every batch an
//! orchestrator commits is checked, in the same transaction, against the lease it holds, so one
//! that lost its lease can never write over the run's new owner.
//!
//! Nothing outside the backends knows which database it talks to: [`open`] takes a path or a
//! URL and returns a `Box<dyn Store>`.

#[cfg(feature = "postgres")]
mod postgres;
mod sqlite;
#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

#[cfg(feature = "postgres")]
pub use self::postgres::{PgStore, READY_CHANNEL, migrate as migrate_postgres};
pub use self::sqlite::SqliteStore;
use crate::error::{Error, StoreError};
use crate::model::{LogRecord, NodeId, NodeRecord, RunControl, RunId, RunSnapshot, RunState, RunSummary};

/// Where a database is, parsed from what `--db` / `SALT_DB` say.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A SQLite file: a plain path, or `sqlite://PATH`.
    Sqlite(PathBuf),
    /// A PostgreSQL database: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB` (or `postgresql://`).
    Postgres(String),
}

impl Location {
    /// Parses a path or a URL (`sqlite://PATH`, `postgres://…`).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let unsupported = |reason: &str| StoreError::Unsupported { url: url.to_string(), reason: reason.to_string() };
        let Some((scheme, rest)) = url.split_once("://").filter(|(scheme, _)| is_scheme(scheme)) else {
            if url.is_empty() {
                return Err(unsupported("an empty database path"));
            }
            return Ok(Location::Sqlite(PathBuf::from(url)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" if rest.is_empty() => Err(unsupported("`sqlite://` needs a path: `sqlite://PATH`")),
            "sqlite" => Ok(Location::Sqlite(PathBuf::from(rest))),
            "postgres" | "postgresql" => Ok(Location::Postgres(url.to_string())),
            _ => Err(unsupported("unknown database scheme; use a path, `sqlite://PATH` or `postgres://…`")),
        }
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Opens the database at `url` (a path, `sqlite://PATH` or `postgres://…`) to read and write
/// it, and migrates it to this salt's schema. A SQLite file is created (directory `0700`, file
/// `0600`) when it does not exist; a PostgreSQL database must exist. A database that is not
/// salt's is refused, untouched.
pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    match Location::parse(url)? {
        Location::Sqlite(path) => Ok(Box::new(SqliteStore::open(&path)?)),
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => Ok(Box::new(PgStore::open(&url)?)),
        #[cfg(not(feature = "postgres"))]
        Location::Postgres(url) => Err(without_postgres(url)),
    }
}

/// Opens the database at `url` only to read it: never creates, migrates or reconfigures it,
/// and works on a read-only file system. A missing database is an error.
pub fn open_read_only(url: &str) -> Result<Box<dyn Store>, StoreError> {
    match Location::parse(url)? {
        Location::Sqlite(path) => Ok(Box::new(SqliteStore::open_read_only(&path)?)),
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => Ok(Box::new(PgStore::open_read_only(&url)?)),
        #[cfg(not(feature = "postgres"))]
        Location::Postgres(url) => Err(without_postgres(url)),
    }
}

/// The refusal of a `postgres://` URL by a binary built without PostgreSQL. Only its scheme is
/// repeated: the rest may hold a password.
#[cfg(not(feature = "postgres"))]
fn without_postgres(url: String) -> StoreError {
    let url = format!("{}://…", url.split_once("://").map_or("postgres", |(scheme, _)| scheme));
    let reason = "this binary was built without the `postgres` feature of `salt`; \
                  enable it (`salt = { features = [\"postgres\"] }`) or use a SQLite path";
    StoreError::Unsupported { url, reason: reason.to_string() }
}

/// A new orchestrator identity, `host:pid:scope:start:random`, unique across machines and
/// restarts: the host's name, the process id, what that id is relative to (a hash of this
/// boot's id and of the pid namespace, `-` where they cannot be read), the process's start time
/// (in clock ticks since boot, `0` where it cannot be read), and a random nonce. The scope and
/// the start time let another process of the same host tell whether the holder is gone without
/// trusting a pid of another container, or a pid the kernel has since given to someone else
/// (see [`live_expiry`]).
pub fn new_owner() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = this_host().unwrap_or("localhost");
    // `RandomState` is seeded from the OS's randomness; a fresh one per call.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    let pid = std::process::id();
    let scope = pid_scope().unwrap_or("-");
    let start = start_time(pid as i32).unwrap_or(0);
    format!("{host}:{pid}:{scope}:{start}:{:08x}", hasher.finish() as u32)
}

/// This host's name, read once: lease checks ask for it for every run they list.
fn this_host() -> Option<&'static str> {
    static HOST: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    HOST.get_or_init(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok())).as_deref()
}

/// What this process's pids are relative to: a hash of this boot's id and of the inode of its
/// pid namespace. Two processes with the same scope see the same process behind a pid; two
/// containers sharing a host name but not a pid namespace have different scopes.
fn pid_scope() -> Option<&'static str> {
    static SCOPE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    SCOPE
        .get_or_init(|| {
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
            // FNV-1a: stable across builds and processes, unlike `DefaultHasher`.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in boot.trim().bytes().chain([0]).chain(ns.to_string_lossy().bytes()) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            Some(format!("{:08x}", h as u32))
        })
        .as_deref()
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The right to drive a run, held by one orchestrator until it expires. Given to
/// [`Store::commit`], it fences the batch: the batch is written only if its holder still owns
/// the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// Who holds it (`host:pid:random`).
    pub owner: String,
}

/// A node taken from the durable ready queue by a worker, until the claim expires.
///
/// It carries all a worker needs to run the attempt: the task's name and its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The queue entry.
    pub id: i64,
    /// The run.
    pub run: RunId,
    /// The node.
    pub node: NodeId,
    /// The attempt to run.
    pub attempt: u32,
    /// The task whose body runs.
    pub task: String,
    /// The body's input: the node's arguments, upstream outputs resolved.
    pub input: Value,
    /// The queue it was taken from.
    pub queue: String,
    /// Its priority (higher first).
    pub priority: i32,
    /// The claimer.
    pub owner: String,
    /// When the claim expires unless renewed (ms since the epoch).
    pub expires_at: i64,
}

/// The end of a queued attempt, reported by the worker that ran it, not yet recorded by the
/// run's orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueResult {
    /// The node.
    pub node: NodeId,
    /// The attempt.
    pub attempt: u32,
    /// Its output, or why it failed.
    pub result: Result<Value, Error>,
}

/// An attempt waiting on the work queue for a worker: enqueued and not claimed, or claimed by a
/// worker whose claim expired. Nothing runs it until a worker of its queue takes it (`<bin>
/// worker --queue QUEUE`); `show`, the REST API and the web UI call its node `queued`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Queued {
    /// The node.
    pub node: NodeId,
    /// The attempt waiting.
    pub attempt: u32,
    /// The queue whose workers may take it.
    pub queue: String,
    /// When it was enqueued (ms since the epoch).
    pub since: i64,
}

pub use salt_core::journal::Write;

/// A new run to create, with its root node.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The workflow.
    pub workflow: &'a str,
    /// Its input.
    pub input: &'a Value,
    /// The executor.
    pub executor: &'a str,
    /// The parallelism limit.
    pub parallelism: u32,
    /// The root node (id 0), written in the same transaction as the run.
    pub root: &'a NodeRecord,
    /// The orchestrator that will drive the run, and for how long its lease lasts: taken in the
    /// same transaction, so no one else can take the new run over. `None` leaves it `queued`
    /// for anyone.
    pub lease: Option<(&'a str, Duration)>,
}

/// How hard a commit is made to last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A committed transition survives a killed process, not a power cut (SQLite's
    /// `synchronous = NORMAL` in WAL mode: the log is synced at checkpoints, not at each
    /// commit). The default.
    #[default]
    Normal,
    /// A committed transition survives a power cut too: every commit is synced to disk
    /// (`synchronous = FULL`). Commits carry whole batches of transitions, so a fan-out pays
    /// one sync per batch, not one per node.
    Full,
}

impl Durability {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Normal => "normal",
            Durability::Full => "full",
        }
    }
}

/// The durable journal of runs, their leases and the durable ready queue.
///
/// Every method takes `&self` and the trait is `Send + Sync`, so one store may be shared by
/// threads (a driver committing on a blocking thread); a backend serializes what it must.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Sets how hard this connection's commits are made to last.
    fn set_durability(&self, durability: Durability) -> Result<(), StoreError>;

    /// Where this store keeps values over [`crate::blob::SPILL_BYTES`]; executors give it to
    /// node processes, which store and read large values there themselves. `None`: a store
    /// that keeps every value in its rows.
    fn blobs(&self) -> Option<crate::blob::Blobs> {
        None
    }
    /// A new connection to the same database, for another thread (the lease heartbeat).
    fn reopen(&self) -> Result<Box<dyn Store>, StoreError>;
    /// Creates a run in state `queued` with its root node, in one transaction, and returns its
    /// id. With `run.lease`, the lease is taken in that transaction too.
    fn create_run(&self, run: NewRun<'_>) -> Result<RunId, StoreError>;
    /// Applies a batch of writes in one transaction. With a `lease`, the batch is written only
    /// if its holder still owns the run, checked in that transaction
    /// ([`StoreError::LeaseLost`] otherwise, and nothing is written).
    fn commit(&self, lease: Option<&Lease>, writes: &[Write]) -> Result<(), StoreError>;
    /// Everything stored about a run, read in one consistent snapshot. A run that is
    /// `running` or `paused` but whose lease has expired reads as `interrupted`.
    fn load(&self, run: RunId) -> Result<RunSnapshot, StoreError>;
    /// The latest runs, newest first, without their payloads.
    fn runs(&self, limit: usize) -> Result<Vec<RunSummary>, StoreError>;
    /// The log lines of a run, or of one of its nodes.
    fn logs(&self, run: RunId, node: Option<NodeId>) -> Result<Vec<LogRecord>, StoreError>;
    /// The state of a run and its log lines (of one node, if given) stored after the line
    /// numbered `after` (0: from the first), each with its number, read in one snapshot: once
    /// the state is final, no line comes after these.
    fn logs_after(
        &self,
        run: RunId,
        node: Option<NodeId>,
        after: i64,
    ) -> Result<(RunState, Vec<(i64, LogRecord)>), StoreError>;
    /// Asks the orchestrator of a run to cancel it.
    fn request_cancel(&self, run: RunId) -> Result<(), StoreError>;
    /// Asks the run's orchestrator to cancel one node: its attempt is stopped and it is
    /// recorded `cancelled` (its retry policy does not apply).
    fn request_node_cancel(&self, run: RunId, node: NodeId) -> Result<(), StoreError>;
    /// What other processes asked of the run: cancel, pause, signals.
    fn control(&self, run: RunId) -> Result<RunControl, StoreError>;
    /// [`Store::control`] of each of `runs` that exists, at once: what an orchestrator
    /// driving many runs asks every tick (one round trip on PostgreSQL, however many runs).
    fn controls(&self, runs: &[RunId]) -> Result<Vec<(RunId, RunControl)>, StoreError> {
        let mut out = Vec::with_capacity(runs.len());
        for &run in runs {
            match self.control(run) {
                Ok(c) => out.push((run, c)),
                Err(StoreError::NoRun(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// Pauses (no new node starts) or resumes a run.
    fn set_paused(&self, run: RunId, paused: bool) -> Result<(), StoreError>;
    /// Sends a signal to a run.
    fn send_signal(&self, run: RunId, name: &str, value: &Value) -> Result<(), StoreError>;
    /// Whether a signal named `name` was ever sent to a run (delivered or not).
    fn has_signal(&self, run: RunId, name: &str) -> Result<bool, StoreError>;

    /// Takes the lease of a run for `owner`, for `ttl`, atomically: refused with
    /// [`StoreError::Leased`] while another owner's lease is live; an expired lease is taken over.
    fn acquire_run_lease(&self, run: RunId, owner: &str, ttl: Duration) -> Result<Lease, StoreError>;
    /// Extends a lease by `ttl` from now; [`StoreError::LeaseLost`] if another owner took it.
    fn renew_run_lease(&self, lease: &Lease, ttl: Duration) -> Result<(), StoreError>;
    /// Renews every lease `owner` holds, in one write (an orchestrator hosting many runs);
    /// returns how many it renewed.
    fn renew_owner_leases(&self, owner: &str, ttl: Duration) -> Result<usize, StoreError>;
    /// Gives a lease up (the run, if unfinished, reads as `interrupted` at once). Releasing a
    /// lease that is no longer held does nothing.
    fn release_run_lease(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Claims up to `n` ready entries of `queue` for `owner`, for `ttl`, highest priority first,
    /// atomically: two claimers never get the same entry. An entry whose claim expired is ready
    /// again.
    fn claim(&self, queue: &str, n: usize, owner: &str, ttl: Duration) -> Result<Vec<Claim>, StoreError>;
    /// Extends a claim by `ttl` from now; [`StoreError::ClaimLost`] if it is no longer held.
    fn renew_claim(&self, claim: &Claim, ttl: Duration) -> Result<Claim, StoreError>;
    /// Records that the claimed attempt succeeded with `output`.
    fn complete(&self, claim: &Claim, output: &Value) -> Result<(), StoreError>;
    /// Records that the claimed attempt failed.
    fn fail(&self, claim: &Claim, error: &Error) -> Result<(), StoreError>;
    /// Gives a claim up: the entry is ready for another claimer at once.
    fn release(&self, claim: &Claim) -> Result<(), StoreError>;
    /// The results workers reported for queued attempts of `run` that are still running, in
    /// the order they were enqueued. A result stays here until the orchestrator commits the
    /// attempt's end ([`Write::AttemptFinished`]), so one taken by an orchestrator that stopped
    /// before committing it is not lost.
    fn queue_results(&self, run: RunId) -> Result<Vec<QueueResult>, StoreError>;
    /// The attempts of `run` that wait on the work queue for a worker (see [`Queued`]), in the
    /// order they were enqueued.
    fn queued(&self, run: RunId) -> Result<Vec<Queued>, StoreError>;

    /// A way to wait until entries of `queue` may have become ready (enqueued, given back),
    /// instead of polling for them: `None` from a store that cannot tell (then poll). Entries
    /// whose claim expires are not announced: a claimer still polls, less often.
    fn watch_queue(&self, _queue: &str) -> Result<Option<QueueWatch>, StoreError> {
        Ok(None)
    }

    /// A way to wait until a worker reported a result ([`Store::complete`], [`Store::fail`]),
    /// instead of polling [`Store::queue_results`]: `None` from a store that cannot tell (then
    /// poll).
    fn watch_results(&self) -> Result<Option<ResultWatch>, StoreError> {
        Ok(None)
    }
}

/// Where a watch's news comes from.
#[derive(Debug)]
enum News {
    /// PostgreSQL's notifications.
    #[cfg(feature = "postgres")]
    Notify(crate::pg::Listener),
    /// A thread that looks into a SQLite file after each commit of another connection.
    Local(tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>),
}

impl News {
    fn local(rx: tokio::sync::mpsc::Receiver<()>) -> Self {
        News::Local(tokio::sync::Mutex::new(rx))
    }
}

/// Tells a claimer that entries of its queue may have become ready (see [`Store::watch_queue`]).
#[derive(Debug)]
pub struct QueueWatch {
    /// The queue, to pick its notifications out of a connection's (PostgreSQL's only).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    queue: String,
    news: News,
}

impl QueueWatch {
    /// A watch on PostgreSQL's notifications of ready entries.
    #[cfg(feature = "postgres")]
    pub(crate) fn notified_by(queue: &str, listener: crate::pg::Listener) -> Self {
        Self { queue: queue.to_string(), news: News::Notify(listener) }
    }

    /// A watch told by a thread of this process (a message: there are ready entries).
    pub(crate) fn local(queue: &str, rx: tokio::sync::mpsc::Receiver<()>) -> Self {
        Self { queue: queue.to_string(), news: News::local(rx) }
    }

    /// Waits until entries of the queue were enqueued or given back: `true`; `false` once the
    /// watch is broken (its connection closed), after which the claimer polls.
    pub async fn notified(&self) -> bool {
        match &self.news {
            #[cfg(feature = "postgres")]
            News::Notify(listener) => loop {
                match listener.recv().await {
                    Some(n) if n.payload() == self.queue => return true,
                    Some(_) => continue,
                    None => return false,
                }
            },
            News::Local(rx) => rx.lock().await.recv().await.is_some(),
        }
    }
}

/// Tells an orchestrator that a worker reported the result of a queued attempt (see
/// [`Store::watch_results`]).
#[derive(Debug)]
pub struct ResultWatch {
    news: News,
}

impl ResultWatch {
    /// A watch on PostgreSQL's notifications of results.
    #[cfg(feature = "postgres")]
    pub(crate) fn notified_by(listener: crate::pg::Listener) -> Self {
        Self { news: News::Notify(listener) }
    }

    /// A watch told by a thread of this process (a message: there are unrecorded results).
    pub(crate) fn local(rx: tokio::sync::mpsc::Receiver<()>) -> Self {
        Self { news: News::local(rx) }
    }

    /// Waits until a worker reported a result: the run it belongs to, when the news says;
    /// `Err(())` once the watch is broken (its connection closed), after which the
    /// orchestrator polls.
    pub async fn reported(&self) -> Result<Option<RunId>, ()> {
        match &self.news {
            #[cfg(feature = "postgres")]
            News::Notify(listener) => match listener.recv().await {
                Some(n) => Ok(n.payload().parse::<i64>().ok().map(RunId::new)),
                None => Err(()),
            },
            News::Local(rx) => rx.lock().await.recv().await.map(|()| None).ok_or(()),
        }
    }
}

/// Renews a run's lease from a dedicated OS thread with its own connection, so that inline
/// task code blocking the async runtime cannot let the lease expire. Stopping it (or dropping
/// it) releases the lease.
#[derive(Debug)]
pub struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    watch: LeaseWatch,
}

/// When a heartbeat last renewed its lease: whether the lease is surely still held.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    renewed_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ttl_ms: i64,
}

impl LeaseWatch {
    /// A lease of `ttl` renewed just now.
    fn renewed_now(ttl: Duration) -> Self {
        Self {
            renewed_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(crate::model::now_ms())),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Whether the lease was renewed within half its time to live: no other orchestrator can
    /// have taken the run over since.
    pub fn is_fresh(&self) -> bool {
        let renewed = self.renewed_at.load(std::sync::atomic::Ordering::Relaxed);
        crate::model::now_ms().saturating_sub(renewed) < self.ttl_ms / 2
    }
}

impl Heartbeat {
    /// Starts renewing `lease` on `store` every fifth of `ttl`, from a thread of its own (so
    /// that nothing on the async runtime, such as a task body blocking its thread, can delay
    /// it).
    pub fn start(store: std::sync::Arc<dyn Store>, lease: Lease, ttl: Duration) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = (ttl / 5).max(Duration::from_millis(20));
        let watch = LeaseWatch::renewed_now(ttl);
        let renewed_at = watch.renewed_at.clone();
        let thread = std::thread::Builder::new()
            .name(format!("salt-lease-{}", lease.run))
            .spawn(move || {
                // Until told to stop (or dropped): renew at every beat.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let at = crate::model::now_ms();
                    match store.renew_run_lease(&lease, ttl) {
                        Ok(()) => renewed_at.store(at, std::sync::atomic::Ordering::Relaxed),
                        Err(e @ StoreError::LeaseLost { .. }) => {
                            tracing::error!(run = lease.run.get(), owner = %lease.owner, "lease lost: {e}");
                            return;
                        }
                        // A busy database: try again at the next beat.
                        Err(e) => tracing::warn!(
                            run = lease.run.get(),
                            owner = %lease.owner,
                            "cannot renew the lease of run {}: {e}",
                            lease.run
                        ),
                    }
                }
                if let Err(e) = store.release_run_lease(&lease) {
                    tracing::warn!(run = lease.run.get(), owner = %lease.owner, "cannot release the lease of run {}: {e}", lease.run);
                }
            })
            .map_err(|source| StoreError::Io { path: "the lease heartbeat thread".into(), source })?;
        Ok(Self { stop: Some(stop), thread: Some(thread), watch })
    }

    /// Starts renewing every lease `owner` holds on `store`, every fifth of `ttl`, from a
    /// thread of its own: one heartbeat for all the runs an orchestrator hosts. Stopping it
    /// releases nothing (each run releases its own lease when it ends).
    pub fn for_owner(store: std::sync::Arc<dyn Store>, owner: String, ttl: Duration) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = (ttl / 5).max(Duration::from_millis(20));
        let watch = LeaseWatch::renewed_now(ttl);
        let renewed_at = watch.renewed_at.clone();
        let thread = std::thread::Builder::new()
            .name("salt-leases".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    let at = crate::model::now_ms();
                    match store.renew_owner_leases(&owner, ttl) {
                        Ok(_) => renewed_at.store(at, std::sync::atomic::Ordering::Relaxed),
                        // A busy database: try again at the next beat.
                        Err(e) => tracing::warn!(%owner, "cannot renew the leases of {owner}: {e}"),
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: "the lease heartbeat thread".into(), source })?;
        Ok(Self { stop: Some(stop), thread: Some(thread), watch })
    }

    /// A view of when the lease was last renewed.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// Stops renewing and releases the lease; returns once it is released.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// When a run's lease expires, as far as anyone else is concerned: never (`None`) when its
/// holder is an orchestrator whose process is gone (killed, crashed), so that `recover` need not
/// wait for the lease to run out; its expiry otherwise. The holder's process is looked at only
/// when its owner ([`new_owner`]) is of this host, this boot and this pid namespace: then a
/// missing process, or another process with its pid (one that started at another time), means
/// it is gone. An owner of another host, of another container that shares the host's name but
/// not its pid namespace, or in an older form, is taken at its word: its lease runs out.
pub(crate) fn live_expiry(owner: Option<&str>, expires_at: Option<i64>) -> Option<i64> {
    let dead = owner.is_some_and(|owner| {
        let mut parts = owner.rsplitn(5, ':');
        let (_nonce, start, scope, pid, host) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next());
        let here = host.is_some_and(|h| Some(h) == this_host()) && scope.is_some() && scope == pid_scope();
        match (pid.and_then(|p| p.parse::<i32>().ok()), start.and_then(|s| s.parse::<u64>().ok())) {
            (Some(pid), Some(start)) if here && pid > 0 => {
                pid != std::process::id() as i32 && (process_gone(pid) || start_time(pid).is_some_and(|s| s != start))
            }
            _ => false,
        }
    });
    if dead { None } else { expires_at }
}

/// Whether process `pid` of this host has ended or is ending: it does not exist, it is a zombie
/// (killed, and its parent has not collected it yet), it is exiting, or a `SIGKILL` is pending
/// for it. A process killed with its parent (`timeout -s KILL` dies with its child) is
/// collected by init some time later, and a large one takes a while to exit: it will never
/// write again, so it counts as gone at once.
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat_says_gone(&stat)
                || status_says_killed(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default())
        }
        Err(_) if std::path::Path::new("/proc/self/stat").exists() => true,
        Err(_) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH),
    }
}

/// Whether a `/proc/PID/stat` line is of a zombie, a dead or an exiting process: its state (the
/// field after the command, which is in parentheses) is `Z` or `X`, or its flags (the seventh
/// field after the command) have `PF_EXITING`.
fn stat_says_gone(stat: &str) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    let mut fields = rest.split_whitespace();
    let state_gone = fields.next().is_some_and(|s| s.starts_with(['Z', 'X', 'x']));
    let exiting = fields.nth(5).and_then(|f| f.parse::<u64>().ok()).is_some_and(|f| f & PF_EXITING != 0);
    state_gone || exiting
}

/// Whether a `/proc/PID/status` text says a `SIGKILL` is pending for the process (`SigPnd`, or
/// `ShdPnd` for its whole thread group).
fn status_says_killed(status: &str) -> bool {
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    status.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else { return false };
        matches!(key, "SigPnd" | "ShdPnd")
            && u64::from_str_radix(value.trim(), 16).is_ok_and(|mask| mask & SIGKILL_BIT != 0)
    })
}

/// Whether a run in `state` with a lease expiring at `expires_at` (none: no lease) reads as
/// `interrupted` at `now`.
pub(crate) fn effective_state(state: RunState, expires_at: Option<i64>, now: i64) -> RunState {
    let live = expires_at.is_some_and(|e| e > now);
    if matches!(state, RunState::Running | RunState::Paused) && !live { RunState::Interrupted } else { state }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn a_lease_of_a_dead_orchestrator_of_this_host_is_not_live() {
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        let scope = pid_scope().expect("this host has /proc");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let (other, other_start) = (child.id(), start_time(child.id() as i32).unwrap());
        let owner = |pid: u32, scope: &str, start: u64| format!("{host}:{pid}:{scope}:{start}:0a1b2c3d");
        let me = std::process::id();
        let my_start = start_time(me as i32).unwrap();
        assert_eq!(live_expiry(Some(&owner(me, scope, my_start)), Some(5)), Some(5), "this process");
        assert_eq!(live_expiry(Some(&owner(other, scope, other_start)), Some(5)), Some(5), "a live process");
        assert_eq!(live_expiry(Some(&owner(other, scope, other_start + 1)), Some(5)), None, "a pid given to another");
        assert_eq!(
            live_expiry(Some(&owner(other, "0badc0de", other_start + 1)), Some(5)),
            Some(5),
            "another pid namespace (a container with the same host name): its pids are not ours"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(live_expiry(Some(&owner(other, scope, other_start)), Some(5)), None, "a process that ended");
        assert_eq!(live_expiry(Some(&format!("{host}x:{other}:{scope}:{other_start}:0a1b2c3d")), Some(5)), Some(5));
        assert_eq!(live_expiry(Some(&format!("{host}:{other}:0a1b2c3d")), Some(5)), Some(5), "an older owner");
        assert_eq!(live_expiry(Some("not an owner"), Some(5)), Some(5));
        assert_eq!(live_expiry(None, Some(5)), Some(5));
    }

    #[test]
    fn a_dying_process_reads_as_gone() {
        let sleeping = "4242 (etl) S 1 4242 4242 0 -1 4194304 120 0 0 0 1 0 0 0 20 0 3 0";
        let exiting = "4242 (e t) l) R 1 4242 4242 0 -1 4194308 120 0 0 0 1 0 0 0 20 0 3 0";
        let zombie = "4242 (etl) Z 1 4242 4242 0 -1 4227084 120 0 0 0 1 0 0 0 20 0 1 0";
        assert!(!stat_says_gone(sleeping));
        assert!(stat_says_gone(exiting), "PF_EXITING");
        assert!(stat_says_gone(zombie));
        assert!(!stat_says_gone("garbage"));
        let status =
            |pnd: &str, shd: &str| format!("Name:\tetl\nState:\tR (running)\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\n");
        assert!(!status_says_killed(&status("0000000000000000", "0000000000000000")));
        assert!(!status_says_killed(&status("0000000000004000", "0000000000000002")), "SIGTERM, SIGINT");
        assert!(status_says_killed(&status("0000000000000100", "0000000000000000")));
        assert!(status_says_killed(&status("0000000000000000", "0000000000000100")));
        assert!(!process_gone(std::process::id() as i32));
    }

    #[test]
    fn a_path_or_a_sqlite_url_opens_sqlite_and_a_postgres_url_postgresql() {
        assert_eq!(Location::parse(".salt/salt.db").unwrap(), Location::Sqlite(".salt/salt.db".into()));
        assert_eq!(Location::parse("sqlite://runs.db").unwrap(), Location::Sqlite("runs.db".into()));
        assert_eq!(Location::parse("sqlite:///tmp/x.db").unwrap(), Location::Sqlite("/tmp/x.db".into()));
        assert_eq!(Location::parse("dir:with/colon.db").unwrap(), Location::Sqlite("dir:with/colon.db".into()));
        assert_eq!(Location::parse("postgres://u@h/db").unwrap(), Location::Postgres("postgres://u@h/db".into()));
        assert_eq!(Location::parse("postgresql://h/db").unwrap(), Location::Postgres("postgresql://h/db".into()));
        let e = Location::parse("mysql://h/db").unwrap_err().to_string();
        assert!(e.contains("unknown database scheme"), "{e}");
        assert!(Location::parse("sqlite://").is_err());
    }

    #[test]
    fn one_store_is_shared_by_threads() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("salt.db").display());
        let store: std::sync::Arc<dyn Store> = open(&url).unwrap().into();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || store.send_signal(RunId::new(0), &format!("s{i}"), &Value::Null))
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(
            open_read_only(&url).unwrap().control(RunId::new(0)).map(|_| ()).unwrap_err().to_string(),
            "no run 0"
        );
    }

    #[test]
    fn owners_are_unique() {
        let (a, b) = (new_owner(), new_owner());
        assert_ne!(a, b);
        assert!(a.contains(&format!(":{}:", std::process::id())), "{a}");
    }
}
