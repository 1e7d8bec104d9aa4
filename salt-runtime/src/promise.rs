//! Promises: constraints on how a running workflow's graph may still change. The grammar and
//! the shape engine are in `salt-promise`, the DAG a shape constrains in `salt-core`; both are
//! re-exported here.

pub use salt_core::promise::*;
