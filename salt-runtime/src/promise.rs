//! Promises: constraints on how a running workflow's graph may still change.
//!
//! The grammar, the shape engine and what a promise's scope and targets cover live in the
//! [`salt_promise`] crate, shared with the macros (which check promises at compile time); they
//! are re-exported here. A [`Promise`] (de)serializes as its text.

pub use salt_promise::{Promise, PromiseError, Shape, Target, in_scope};
