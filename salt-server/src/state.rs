//! What every request handler shares.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use salt_runtime::store::Store;

use crate::engine::Engine;

/// The server's shared state.
#[derive(Clone)]
pub struct AppState {
    /// The store URL runs are kept in (`--db`).
    pub db: String,
    /// The run store.
    pub store: Arc<dyn Store>,
    /// The server's own tables (registry, schedules, tokens), in the same database file.
    pub conn: Arc<Mutex<crate::sql::Conn>>,
    /// Drives runs.
    pub engine: Arc<dyn Engine>,
    /// Where binaries and other files live (`--data`).
    pub data: PathBuf,
    /// The workers connected to this server, and the attempts waiting for one.
    pub dispatcher: salt_runtime::remote::Dispatcher,
}
