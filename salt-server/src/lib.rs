//! The `salt` command: `salt register` stores workflow binaries in a server's registry,
//! `salt server` drives their runs (registry, scheduler, REST API, web UI) and `salt worker`s
//! run the attempts, each from a cached copy of the binary, over the same JSON-lines protocol
//! a workflow binary speaks with its own node processes.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod csrf;
pub mod dag;
pub mod db;
pub mod engine;
pub mod host;
pub mod layout;
pub mod limits;
pub mod notify;
pub mod registry;
pub mod schedule;
pub mod server;
pub mod slurm;
pub mod sql;
pub mod state;
pub mod ui;
pub mod wiring;
pub mod worker;
