//! Errors: the user-facing [`Error`] (defined in `salt-core`) and the errors of each subsystem
//! it wraps.

use std::fmt;

pub use salt_core::error::{Error, ErrorKind, Fatal, FatalType, Result, classify};

use crate::model::{NodeId, RunId};

/// The error a store backend reports, boxed so that its type stays out of salt's API.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (SQLite, PostgreSQL) failed to open, read or write.
    #[error("{context}: {source}")]
    Backend {
        /// What was being done, and on which database.
        context: String,
        /// What the backend said.
        #[source]
        source: BackendError,
    },
    /// A file or directory of the store could not be created or read.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The database URL names a backend this build does not have.
    #[error("{url}: {reason}")]
    Unsupported {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A command that only reads found no database.
    #[error(
        "no salt database at {path}: nothing has run here yet (start a run with `run`, or point --db / SALT_DB at an existing database)"
    )]
    Missing {
        /// The database file.
        path: String,
    },
    /// The file is not a salt database; it was left untouched.
    #[error(
        "{path} is not a salt database ({detail}); it was left untouched. Point --db / SALT_DB at a salt database or at a new file"
    )]
    Foreign {
        /// The file.
        path: String,
        /// What gave it away.
        detail: String,
    },
    /// The database was written by a newer salt.
    #[error("database {path} has schema version {found}, newer than this salt ({supported}); upgrade salt")]
    TooNew {
        /// The database file.
        path: String,
        /// Its version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// A command that only reads found a database of an older schema, which it may not upgrade.
    #[error(
        "database {path} has schema version {found}, older than this salt ({supported}); a command that writes (`run`, `recover`, `cancel`) upgrades it"
    )]
    TooOld {
        /// The database file.
        path: String,
        /// Its version.
        found: i64,
        /// The version this build needs.
        supported: i64,
    },
    /// A row holds something this salt cannot read.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A value stored beside the database (over 1 MiB) could not be written or read.
    #[error(transparent)]
    Blob(#[from] crate::blob::BlobError),
    /// No run has this id.
    #[error("no run {0}")]
    NoRun(RunId),
    /// Another orchestrator holds a live lease on the run.
    #[error(
        "run {run} is being driven by {owner} (lease renewed {} s ago); wait for it or cancel it",
        renewed_ms_ago / 1000
    )]
    Leased {
        /// The run.
        run: RunId,
        /// The orchestrator that holds the lease (`host:pid:random`).
        owner: String,
        /// How long ago it renewed the lease, in milliseconds.
        renewed_ms_ago: i64,
    },
    /// This orchestrator no longer holds the run's lease: it expired and another one took the
    /// run over. Nothing of the refused batch was written.
    #[error("{}", lease_lost(*run, owner, current.as_deref()))]
    LeaseLost {
        /// The run.
        run: RunId,
        /// The orchestrator that lost the lease.
        owner: String,
        /// The orchestrator that holds it now, if any.
        current: Option<String>,
    },
    /// A claim on a queued node is no longer held by its claimer: it expired and the node was
    /// claimed again, or it was completed, failed or released.
    #[error("claim {id} on node {node} of run {run} is no longer held by {owner}")]
    ClaimLost {
        /// The queue entry.
        id: i64,
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// The claimer that lost it.
        owner: String,
    },
}

fn lease_lost(run: RunId, owner: &str, current: Option<&str>) -> String {
    match current {
        Some(current) => format!(
            "{owner} lost the lease of run {run}: it expired and {current} took the run over; this orchestrator stops without writing"
        ),
        None => format!("{owner} no longer holds the lease of run {run}; this orchestrator stops without writing"),
    }
}

impl StoreError {
    /// A backend failure while doing `context`.
    pub fn backend(context: impl fmt::Display, source: impl Into<BackendError>) -> Self {
        StoreError::Backend { context: context.to_string(), source: source.into() }
    }

    pub(crate) fn into_error(self) -> Error {
        match self {
            StoreError::NoRun(_)
            | StoreError::Leased { .. }
            | StoreError::Missing { .. }
            | StoreError::Foreign { .. }
            | StoreError::Unsupported { .. } => Error::new(ErrorKind::Usage, self),
            other => Error::new(ErrorKind::Store, other),
        }
    }
}

/// A node process broke the stdio protocol.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A line that is not a JSON message of the protocol.
    #[error("node process sent a line that is not a protocol message ({reason}): {line}")]
    Malformed {
        /// The start of the line.
        line: String,
        /// What serde said.
        reason: String,
    },
    /// A line longer than the limit.
    #[error("node process sent a message over the {limit}-byte limit")]
    Oversized {
        /// The limit in bytes.
        limit: usize,
    },
    /// The node process did not begin with a `hello` of our version.
    #[error("node process spoke protocol {found}, expected hello with protocol {expected}")]
    Version {
        /// What it sent.
        found: String,
        /// What we speak.
        expected: u32,
    },
    /// A message that makes no sense at this point.
    #[error("node process sent an unexpected message: {0}")]
    Unexpected(String),
    /// The node process ended without reporting a result.
    #[error("node process exited before reporting a result ({status})")]
    EarlyExit {
        /// How it ended.
        status: String,
    },
    /// The node process could not be started or talked to.
    #[error("node process: {0}")]
    Io(String),
    /// A value the node process passed by reference could not be read.
    #[error("node process passed a value by reference that cannot be read: {0}")]
    Blob(String),
}

impl ProtocolError {
    /// The error of the attempt this broke: of kind [`ErrorKind::Protocol`].
    pub(crate) fn into_error(self) -> Error {
        Error::new(ErrorKind::Protocol, self)
    }
}
