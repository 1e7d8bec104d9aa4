//! The engine behind [salt](https://docs.rs/salt): the model, the store, the orchestrator, the
//! executors, the stdio protocol, rendering and the CLI.
//!
//! Users depend on the `salt` crate, which re-exports what they need; this crate's API is the
//! contract between the facade, the generated code and the binary.

pub mod blob;
pub mod cli;
pub mod command;
pub mod container;
pub mod context;
mod driver;
pub mod error;
mod executor;
pub mod logging;
pub mod model;
pub mod ops;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod plan;
pub mod progress;
pub mod promise;
pub mod protocol;
pub mod registry;
pub mod remote;
pub mod render;
mod run;
pub mod runner;
pub mod step;
pub mod store;
mod worker;

pub use context::{Arg, Context, Handle, Handles, TaskValue, join_all};
pub use error::{Error, ErrorKind, Result};
pub use logging::{LogFormat, TaskLogs, engine_layer};
pub use progress::{Progress, Transition};
pub use registry::{Backoff, Kind, Policy, Registry, TaskDescriptor};
pub use runner::{Executor, RunOutcome, Runner};
