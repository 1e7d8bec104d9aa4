//! Errors: the user-facing [`Error`] and the errors of each subsystem it wraps.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The result type of tasks, workflows and the salt API.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in one word; decides whether an attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// A task body returned an error; retried by the task's policy.
    Task,
    /// A task body returned an error that must not be retried ([`Error::fatal`]).
    Fatal,
    /// A node this one awaited failed.
    Child,
    /// A node this one depends on failed, so it never ran.
    Upstream,
    /// The attempt ran longer than the task's `timeout`.
    Timeout,
    /// The task body panicked.
    Panic,
    /// A node process broke the stdio protocol (garbage, unknown message, early exit).
    Protocol,
    /// A replayed body made a different call than the one recorded.
    NonDeterministic,
    /// The run or the node was cancelled.
    Cancelled,
    /// The input did not match the task's input type.
    Input,
    /// The store failed.
    Store,
    /// A graph mutation that cannot be applied (an edge into a started node, a cycle).
    Graph,
    /// A mutation broke a promise: the run is terminated.
    Promise,
    /// Anything the runtime itself refuses (unknown task, bad arguments, a refused command).
    Usage,
}

impl ErrorKind {
    /// Whether an attempt that failed this way may be retried.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Task | ErrorKind::Timeout | ErrorKind::Panic | ErrorKind::Protocol | ErrorKind::Child)
    }

    /// The lowercase name of the kind, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Task => "task",
            ErrorKind::Fatal => "fatal",
            ErrorKind::Child => "child",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Panic => "panic",
            ErrorKind::Protocol => "protocol",
            ErrorKind::NonDeterministic => "non_deterministic",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Input => "input",
            ErrorKind::Store => "store",
            ErrorKind::Graph => "graph",
            ErrorKind::Promise => "promise",
            ErrorKind::Usage => "usage",
        }
    }
}

/// The error of a task, a workflow or the salt API.
///
/// Any `std::error::Error` converts into it with `?` (as a retryable task error), so a task body
/// can use `?` on I/O, parsing or HTTP errors directly. Use [`Error::fatal`] for a failure that
/// retrying cannot fix. Like `anyhow::Error`, it does not itself implement `std::error::Error`.
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// A retryable task error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Task, message)
    }

    /// A task error that is never retried: the attempt fails and so does the node.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self { kind, message: message.to_string() }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the task's retry policy applies to this failure.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    pub(crate) fn to_wire(&self) -> ErrorWire {
        ErrorWire { kind: self.kind, message: self.message.clone() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind.as_str(), self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(ErrorKind::Task, message)
    }
}

/// An error as it crosses the stdio protocol and is kept in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorWire {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The message shown to the user.
    pub message: String,
}

impl ErrorWire {
    /// A wire error of this kind.
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self { kind, message: message.to_string() }
    }
}

impl From<ErrorWire> for Error {
    fn from(wire: ErrorWire) -> Self {
        Error::new(wire.kind, wire.message)
    }
}

impl fmt::Display for ErrorWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The directory of the database could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
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
    /// A row holds something this salt cannot read.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// No run has this id.
    #[error("no run {0}")]
    NoRun(i64),
}

impl StoreError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            StoreError::NoRun(_) => Error::new(ErrorKind::Usage, self),
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
}

impl From<ProtocolError> for ErrorWire {
    fn from(error: ProtocolError) -> Self {
        ErrorWire::new(ErrorKind::Protocol, error)
    }
}
