//! End-to-end tests: the real `flows` binary, a real SQLite file (or PostgreSQL database), real
//! node processes.

mod blobs;
mod bypass;
mod checked;
mod cli;
mod failures;
mod fan_in;
mod gradient;
mod handled;
mod limits;
mod oplogs;
mod ops;
mod ownership;
mod postgres;
mod queued;
mod recovery;
mod replay;
mod runs_after;
mod scale;
mod steps;
mod support;
mod takeover;
mod workers;
