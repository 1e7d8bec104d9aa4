//! `salt server`: one process serving the REST API (and, mounted beside it, the run host's
//! worker endpoints, the scheduler's and the web UI's routes) over one database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;

use crate::engine::Engine;
use crate::state::AppState;
use crate::{api, auth, db};

/// The database `salt server` uses when `--db` names none.
pub const DEFAULT_DB: &str = ".salt/server.db";
/// The data directory (binaries) `salt server` uses when `--data` names none.
pub const DEFAULT_DATA: &str = ".salt/data";
/// The address `salt server` listens on when `--listen` names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// How a server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database: a SQLite file, as a path or `sqlite://PATH`.
    pub db: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory: the registry's binaries live in `DATA/binaries`.
    pub data: PathBuf,
    /// Listen on a non-loopback address even when no token exists.
    pub open: bool,
}

/// The file a store URL names (`sqlite://PATH` or a path).
pub fn db_path(db: &str) -> PathBuf {
    PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(db))
}

/// Opens (creating when missing) the run store and the server's tables at `db`, and returns
/// the state for `engine` with `data` as the data directory.
pub fn open_state(db: &str, data: &Path, engine: Arc<dyn Engine>) -> anyhow::Result<AppState> {
    let path = db_path(db);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let store: Arc<dyn salt_runtime::store::Store> = Arc::from(salt_runtime::ops::open(db)?);
    let conn = db::open(&path)?;
    std::fs::create_dir_all(data.join("binaries"))?;
    Ok(AppState { db: db.to_string(), store, conn: Arc::new(Mutex::new(conn)), engine, data: data.to_path_buf() })
}

/// The opened tables of the database at `db` (the run store created first when missing), for
/// commands that work on the database directly (`register --db`, `token create`).
pub fn open_conn(db: &str) -> anyhow::Result<rusqlite::Connection> {
    let path = db_path(db);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    salt_runtime::ops::open(db)?;
    Ok(db::open(&path)?)
}

/// The whole server's routes with `state`: the REST API (with `/healthz`, `/metrics` and the
/// OpenAPI document) and the routes of the other parts, every request checked for a token
/// when tokens exist.
pub fn router(state: AppState) -> Router {
    let routes = api::routes();
    // Mount points of the other parts of the server, each a `Router<AppState>`:
    // let routes = routes.merge(crate::host::routes()); // the run host: /api/v1/workers/connect
    // let routes = routes.merge(crate::schedule::routes()); // schedules, events
    // let routes = routes.merge(crate::ui::routes()); // the web UI
    api::fallback(routes)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .with_state(state)
}

/// Why the server refuses to start on `listen`: a non-loopback address while no token exists
/// and `open` is not set.
pub fn refuse_open(listen: &SocketAddr, tokens: bool, open: bool) -> Option<String> {
    if listen.ip().is_loopback() || tokens || open {
        return None;
    }
    Some(format!(
        "refusing to listen on {listen} with no token: anyone who can reach it could run anything. \
         Create one with `salt token create NAME --role admin`, or pass --open to serve without tokens"
    ))
}

/// Serves `state` on `listener` until `shutdown` resolves.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

/// `salt server`: opens the database, checks that it may listen where asked, and serves until
/// Ctrl-C or SIGTERM. `engine` drives the runs.
pub async fn serve(config: Config, engine: Arc<dyn Engine>) -> anyhow::Result<()> {
    let state = open_state(&config.db, &config.data, engine)?;
    let tokens = db::any_token(&state.conn.lock().unwrap_or_else(|p| p.into_inner()))?;
    if let Some(why) = refuse_open(&config.listen, tokens, config.open) {
        anyhow::bail!(why);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    eprintln!(
        "salt server listening on http://{} (database {}, data {}{})",
        listener.local_addr()?,
        config.db,
        config.data.display(),
        if tokens { ", tokens required" } else { "" }
    );
    serve_on(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_serves_without_a_token_unless_open() {
        let local: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        assert_eq!(refuse_open(&local, false, false), None);
        assert!(refuse_open(&any, false, false).unwrap().starts_with("refusing to listen on 0.0.0.0:7878"));
        assert_eq!(refuse_open(&any, true, false), None);
        assert_eq!(refuse_open(&any, false, true), None);
    }
}
