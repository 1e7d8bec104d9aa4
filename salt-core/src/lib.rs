//! The core of salt, free of IO: the vocabulary every other part speaks, and the rules of how a
//! run's graph changes.
//!
//! - [`model`]: runs, nodes, edges, attempts and their states, as stored and shown;
//! - [`call`]: what a running body asks of its run (spawn, edge, promise, wait, journal);
//! - [`journal`]: the [`Write`](journal::Write)s that make a change durable;
//! - [`policy`]: a task's retries, backoff, timeout, queue, priority and resources;
//! - [`error`]: the user-facing [`Error`] and its [`ErrorKind`];
//! - [`blob`]: references to large values stored by hash.
//!
//! Nothing here reads a clock, touches a file, a socket or a process, or holds a static that
//! changes: the store, the executors and the driver (in `salt-runtime`) do the IO around it.

pub mod blob;
pub mod call;
pub mod error;
pub mod journal;
pub mod model;
pub mod policy;
pub mod text;

pub use error::{Error, ErrorKind, Result};
