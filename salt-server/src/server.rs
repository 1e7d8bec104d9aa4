//! `salt server`: one process serving the REST API (and, mounted beside it, the run host's
//! worker endpoints, the scheduler's and the web UI's routes) over one database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// The database: a SQLite file (a path or `sqlite://PATH`) or a PostgreSQL URL.
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
pub fn open_state(
    db: &str,
    data: &Path,
    engine: Arc<dyn Engine>,
    dispatcher: salt_runtime::remote::Dispatcher,
) -> anyhow::Result<AppState> {
    make_parent(db)?;
    let store: Arc<dyn salt_runtime::store::Store> = Arc::from(salt_runtime::ops::open(db)?);
    let conn = db::open(db)?;
    std::fs::create_dir_all(data.join("binaries"))?;
    Ok(AppState {
        db: db.to_string(),
        store,
        conn: Arc::new(Mutex::new(conn)),
        engine,
        data: data.to_path_buf(),
        dispatcher,
    })
}

/// The opened tables of the database at `db` (the run store created first when missing), for
/// commands that work on the database directly (`register --db`, `token create`).
pub fn open_conn(db: &str) -> anyhow::Result<crate::sql::Conn> {
    make_parent(db)?;
    salt_runtime::ops::open(db)?;
    Ok(db::open(db)?)
}

/// Creates the directory of a SQLite database file (nothing for PostgreSQL).
fn make_parent(db: &str) -> std::io::Result<()> {
    if crate::sql::is_postgres(db) {
        return Ok(());
    }
    match db_path(db).parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// The whole server's routes with `state`: the REST API (with `/healthz`, `/metrics` and the
/// OpenAPI document) and the routes of the other parts, every request checked for a token
/// when tokens exist and for forgery ([`crate::csrf`]); `port` is the one the server listens
/// on, in its cookies' names.
pub fn router(state: AppState, port: u16) -> Router {
    let catalog = Arc::new(crate::wiring::Registry::new(state.conn.clone()));
    let routes = api::routes().merge(crate::ui::routes(catalog));
    let names = crate::csrf::CookieNames::for_port(port);
    api::fallback(routes)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token))
        .layer(axum::middleware::from_fn_with_state(names.clone(), crate::csrf::guard))
        .layer(axum::Extension(names))
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
    use axum::serve::ListenerExt as _;
    let port = listener.local_addr()?.port();
    // Workers and clients exchange many small messages: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state, port)).with_graceful_shutdown(shutdown).await
}

/// The run host of a server on `db`: it drives the runs of the registry's binaries on the
/// workers connected to `dispatcher`, and tells `notifier` how each ended and each node that
/// waits for a signal.
pub fn run_host(
    db: &str,
    dispatcher: salt_runtime::remote::Dispatcher,
    notifier: Option<crate::notify::Notifier>,
) -> anyhow::Result<Arc<crate::host::RunHost>> {
    let conn = Arc::new(Mutex::new(db::open(db)?));
    let registry = Arc::new(crate::wiring::Registry::new(conn));
    let mut host = crate::host::RunHost::new(db, dispatcher, registry);
    if let Some(notifier) = notifier {
        let waiting = notifier.clone();
        host = host
            .on_end(Arc::new(move |run, workflow, outcome| {
                if let Some(n) = crate::notify::Notification::run_ended(run, workflow, outcome.state) {
                    notifier.notify(n);
                }
            }))
            .on_waiting(Arc::new(move |w| {
                let node = crate::notify::WaitingNode {
                    id: w.node.get() as i64,
                    task: w.task.clone(),
                    signal: w.signal.clone(),
                };
                waiting.notify(crate::notify::Notification::waiting(w.run, &w.workflow, node));
            }));
    }
    Ok(Arc::new(host))
}

/// `salt server`: opens the database, checks that it may listen where asked, resumes the runs
/// it drove when it stopped, and serves (REST API, workers, scheduler, web UI) until Ctrl-C or
/// SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    make_parent(&config.db)?;
    salt_runtime::ops::open(&config.db)?;
    let dispatcher = salt_runtime::remote::Dispatcher::new();
    let notify_conn = Arc::new(Mutex::new(db::open(&config.db)?));
    let (notifier, _notifying) = crate::notify::Notifier::spawn(notify_conn, crate::notify::NotifyOptions::default());
    let host = run_host(&config.db, dispatcher.clone(), Some(notifier))?;
    let state = open_state(&config.db, &config.data, host.clone(), dispatcher.clone())?;
    let tokens = db::any_token(&state.conn.lock().unwrap_or_else(|p| p.into_inner()))?;
    if let Some(why) = refuse_open(&config.listen, tokens, config.open) {
        anyhow::bail!(why);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        listen = %addr,
        db = %config.db,
        data = %config.data.display(),
        tokens,
        "salt server listening on http://{addr} (database {}, data {}{})",
        config.db,
        config.data.display(),
        if tokens { ", tokens required" } else { "" }
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Queue settings (active, concurrency limits) shared with every server on the database.
    let queues = crate::limits::spawn(&config.db, dispatcher.clone(), stop_rx.clone())?;
    // Runs this server drove when it stopped: resumed, with nothing that finished run again.
    let unfinished = {
        let conn = state.conn.lock().unwrap_or_else(|p| p.into_inner());
        db::unfinished_runs(&conn)?
    };
    let resumed = host.resume(&unfinished);
    if !resumed.is_empty() {
        let runs: Vec<i64> = resumed.iter().map(|r| r.get()).collect();
        tracing::info!(?runs, "resumed {} run(s) left unfinished: {runs:?}", runs.len());
    }
    // Runs whose server is gone (their lease ran out): taken over by whichever server looks first.
    let takeover = tokio::spawn(take_over_orphans(state.conn.clone(), host.clone(), stop_rx.clone()));
    let scheduler = tokio::spawn(crate::schedule::run_scheduler(state.clone(), async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    serve_on(listener, state, shutdown_signal()).await?;
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = takeover.await;
    let _ = queues.await;
    Ok(())
}

/// How often a server looks for runs no server drives, unless `SALT_TAKEOVER_MS` says otherwise.
pub const TAKEOVER_EVERY: Duration = Duration::from_secs(3);

/// Every [`TAKEOVER_EVERY`] until `stop`: takes over the unfinished runs whose lease has run out
/// (their server died or lost the database for longer than the lease) and resumes them, with
/// nothing that finished run again. Several servers may look at once: the run's lease lets one
/// of them take it.
async fn take_over_orphans(
    conn: Arc<Mutex<crate::sql::Conn>>,
    host: Arc<crate::host::RunHost>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = std::env::var("SALT_TAKEOVER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(TAKEOVER_EVERY, Duration::from_millis);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        let orphans = {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            db::orphaned_runs(&conn, conn.now_ms())
        };
        match orphans {
            Ok(runs) if !runs.is_empty() => {
                let taken = host.resume(&runs);
                if !taken.is_empty() {
                    // Another server stopped driving them: worth a warning.
                    let runs: Vec<i64> = taken.iter().map(|r| r.get()).collect();
                    tracing::warn!(?runs, "took over {} run(s) no server drove: {runs:?}", runs.len());
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot look for runs to take over: {e}"),
        }
    }
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
