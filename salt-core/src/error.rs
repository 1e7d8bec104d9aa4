//! The user-facing [`Error`]: what a task, a workflow or the engine reports, in one word (its
//! [`ErrorKind`]) and a message.

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
    /// The run was cancelled, or the node was stopped with something above it (its parent
    /// ended, the run was cancelled or terminated): `recover` runs it again.
    Cancelled,
    /// The node was killed on request (`cancel RUN --node NODE`, the API or the web UI): final
    /// whatever the moment. It is not retried, a replay of its parent never runs it again, what
    /// depends on it is skipped, and a parent awaiting it receives this error as a failure.
    Killed,
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
    /// The worker running the attempt was lost (it died, or its connection did): the attempt
    /// runs again elsewhere at once, without counting against the task's retries.
    Lost,
    /// The body returned an output that breaks its output schema (a range, a pattern, a
    /// length declared on the output type) or its `validate` function; not retried: the same
    /// input would give the same output.
    Output,
}

impl ErrorKind {
    /// Whether an attempt that failed this way may be retried.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Task
                | ErrorKind::Timeout
                | ErrorKind::Panic
                | ErrorKind::Protocol
                | ErrorKind::Child
                | ErrorKind::Lost
        )
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
            ErrorKind::Killed => "killed",
            ErrorKind::Input => "input",
            ErrorKind::Store => "store",
            ErrorKind::Graph => "graph",
            ErrorKind::Promise => "promise",
            ErrorKind::Usage => "usage",
            ErrorKind::Lost => "lost",
            ErrorKind::Output => "output",
        }
    }
}

/// The error of a task, a workflow or the salt API.
///
/// Any `std::error::Error`, an `anyhow::Error`, a `Box<dyn std::error::Error + Send + Sync>`, a
/// `String` or a `&str` converts into it with `?` (as a retryable task error), so a task body can
/// use `?` on I/O, parsing or HTTP errors and on the results of its helper functions directly.
/// The messages of the error's sources are kept, appended after `: `. Use [`Error::fatal`] for a
/// failure that retrying cannot fix.
///
/// So that `?` accepts every error type, it does not itself implement `std::error::Error` (the
/// conversion would otherwise include its own identity), like `anyhow::Error`. It converts into
/// `anyhow::Error` and into `Box<dyn std::error::Error>`, so `task(x).await?` works in a
/// function that returns either; an `anyhow::Error` made from it converts back with its kind.
///
/// ```
/// use anyhow::Context as _;
///
/// fn parse(text: &str) -> anyhow::Result<u64> {
///     text.trim().parse::<u64>().with_context(|| format!("reading {text:?}"))
/// }
///
/// fn twice(text: &str) -> salt::Result<u64> {
///     Ok(parse(text)? * 2)
/// }
///
/// assert_eq!(twice("21").unwrap(), 42);
/// let error = twice("x").unwrap_err();
/// assert_eq!(error.kind(), salt::ErrorKind::Task);
/// assert_eq!(error.to_string(), "reading \"x\": invalid digit found in string");
///
/// // And back: a salt error in a function that returns anyhow's.
/// fn helper() -> anyhow::Result<u64> {
///     Err(salt::Error::fatal("no such customer"))?
/// }
/// let back: salt::Error = helper().unwrap_err().into();
/// assert_eq!(back.kind(), salt::ErrorKind::Fatal);
/// ```
///
/// It is stored with the run and crosses the stdio protocol as `{"kind": "...", "message": "..."}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Error {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
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

/// The error types `?` converts: every `std::error::Error + Send + Sync`, `anyhow::Error`,
/// `Box<dyn std::error::Error + Send + Sync>`, `String` and `&str`.
type AnyError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl<E: Into<AnyError> + 'static> From<E> for Error {
    fn from(error: E) -> Self {
        // An `anyhow::Error` made from a salt error keeps its kind, with anyhow's context.
        if let Some(error) = (&error as &dyn std::any::Any).downcast_ref::<anyhow::Error>()
            && let Some(inner) = error.downcast_ref::<Error>()
        {
            return Self::new(inner.kind, format!("{error:#}"));
        }
        let error: AnyError = error.into();
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        let kind = if is_fatal(&*error) { ErrorKind::Fatal } else { ErrorKind::Task };
        Self::new(kind, message)
    }
}

impl From<Error> for anyhow::Error {
    /// An `anyhow::Error` with the same message, from which `downcast_ref::<salt::Error>()`
    /// gets the salt error back.
    fn from(error: Error) -> Self {
        anyhow::Error::msg(error)
    }
}

impl From<Error> for Box<dyn std::error::Error> {
    /// A boxed error with the same message, for `?` in a `main` that returns
    /// `Result<(), Box<dyn Error>>`.
    fn from(error: Error) -> Self {
        Box::<dyn std::error::Error + Send + Sync>::from(format!("{error}"))
    }
}

/// An error type that says which of its values are fatal: never retried, because trying again
/// cannot help (bad input, a missing permission).
///
/// `?` turns any `std::error::Error` into a retryable [`Error`] of kind [`ErrorKind::Task`]. The
/// values of a type that implements `Fatal` and is registered become errors of kind
/// [`ErrorKind::Fatal`] instead, where [`Fatal::is_fatal`] says so, with no conversion by hand;
/// also when the value is the source of another error. The first registered type in the chain
/// of sources decides.
///
/// `#[derive(salt::Fatal)]` implements and registers it: on an enum, the variants marked
/// `#[fatal]` are fatal (or every variant, with `#[fatal]` on the enum); a struct is always
/// fatal. A hand-written implementation is registered with `salt::register_fatal!(Type)`.
///
/// ```
/// #[derive(Debug, salt::Fatal)]
/// enum FetchError {
///     /// Retrying cannot fix a bad request.
///     #[fatal]
///     BadRequest(String),
///     /// A network error may go away.
///     Network(String),
/// }
/// # impl std::fmt::Display for FetchError {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{self:?}") }
/// # }
/// # impl std::error::Error for FetchError {}
///
/// let bad: salt::Error = FetchError::BadRequest("no such id".into()).into();
/// assert_eq!(bad.kind(), salt::ErrorKind::Fatal);
/// let flaky: salt::Error = FetchError::Network("reset".into()).into();
/// assert_eq!(flaky.kind(), salt::ErrorKind::Task);
/// ```
pub trait Fatal: std::error::Error + 'static {
    /// Whether this value is fatal. By default, every value of the type is.
    fn is_fatal(&self) -> bool {
        true
    }
}

/// A registered [`Fatal`] type: how to ask an error whether it is one, and fatal.
#[doc(hidden)]
pub struct FatalType {
    /// `Some(fatal)` when the error is of this type.
    pub classify: fn(&(dyn std::error::Error + 'static)) -> Option<bool>,
}

inventory::collect!(FatalType);

/// What [`FatalType::classify`] is for the type `T`.
#[doc(hidden)]
pub fn classify<T: Fatal>(error: &(dyn std::error::Error + 'static)) -> Option<bool> {
    error.downcast_ref::<T>().map(Fatal::is_fatal)
}

/// Whether the first registered [`Fatal`] type in the chain of `error` and its sources says
/// it is fatal.
fn is_fatal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(fatal) = inventory::iter::<FatalType>.into_iter().find_map(|t| (t.classify)(e)) {
            return fatal;
        }
        next = e.source();
    }
    false
}
