//! The core of salt, free of IO: the vocabulary every other part speaks, and the rules of how a
//! run's graph changes.
//!
//! - [`model`]: runs, nodes, edges, attempts and their states, as stored and shown;
//! - [`call`]: what a running body asks of its run (spawn, edge, promise, wait, journal);
//! - [`journal`]: the [`Write`](journal::Write)s that make a change durable;
//! - [`policy`]: a task's retries, backoff, timeout, queue, priority and resources;
//! - [`error`]: the user-facing [`Error`] and its [`ErrorKind`];
//! - [`blob`]: references to large values stored by hash;
//! - [`attempt`]: the events a running body sends and the answers it gets;
//! - [`promise`]: promises and the DAG a shape promise constrains;
//! - [`run`]: the run core, one run's live graph and every rule of how it changes.
//!
//! Nothing here reads a clock, touches a file, a socket or a process, or holds a static that
//! changes: the store, the executors and the driver (in `salt-runtime`) do the IO around it.

pub mod attempt;
pub mod blob;
pub mod call;
pub mod error;
pub mod journal;
pub mod model;
pub mod policy;
pub mod promise;
pub mod run;
pub mod text;

pub use error::{Error, ErrorKind, Result};
