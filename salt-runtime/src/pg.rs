//! A blocking PostgreSQL client, for salt's synchronous store traits.
//!
//! The stores are called from synchronous code and from async code alike (on any runtime, or
//! none), so the client cannot lean on the caller's runtime: every connection's socket is
//! driven on one background runtime of its own (`runtime()`), and a call waits for its answer
//! with [`futures::executor::block_on`], which works on any thread. A [`Pg`] keeps a few
//! connections, reconnects one that was closed (the server restarted, say) on its next use, and
//! [`Pg::listen`] opens a connection for `LISTEN`, whose notifications arrive on a channel.
//! Each connection is a [`Session`] that keeps the statements prepared on it ([`Statements`]),
//! so that a statement run again costs one round trip, not two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::BoxFuture;
pub use tokio_postgres;
use tokio_postgres::{AsyncMessage, Client, Config, GenericClient, NoTls, Notification, Statement};

/// The runtime that drives every connection's socket.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("salt-postgres")
            .enable_all()
            .build()
            .expect("cannot start the PostgreSQL client's runtime thread")
    })
}

/// Opens a connection, its socket driven on [`runtime`]; notifications go to `notify`.
fn connect(
    config: &Config,
    notify: Option<tokio::sync::mpsc::UnboundedSender<Notification>>,
) -> Result<Client, tokio_postgres::Error> {
    let config = config.clone();
    let connecting = runtime().spawn(async move {
        let (client, mut connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = futures::StreamExt::next(&mut messages).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if let Some(notify) = &notify {
                            let _ = notify.send(n);
                        }
                    }
                    Ok(AsyncMessage::Notice(notice)) => tracing::debug!(%notice, "postgres notice"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "postgres connection closed");
                        break;
                    }
                }
            }
        });
        Ok::<_, tokio_postgres::Error>(client)
    });
    futures::executor::block_on(connecting).expect("the PostgreSQL client's runtime stopped")
}

/// How far the database's clock is ahead of this host's, in ms, as last measured.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);
/// When (this host's ms) the offset was last measured; 0: never.
static CLOCK_MEASURED_AT: AtomicI64 = AtomicI64::new(0);
/// How often the offset is measured again (on the next use of a connection after that).
const CLOCK_EVERY_MS: i64 = 60_000;

/// Milliseconds since the Unix epoch by the PostgreSQL server's clock: this host's clock
/// corrected by the offset measured against the server this process connects to (when it
/// connects, and every minute after). Every host then reads and writes leases, claims and
/// their expiries on one clock, however far their own clocks are apart.
pub fn now_ms() -> i64 {
    crate::model::now_ms() + CLOCK_OFFSET_MS.load(Ordering::Relaxed)
}

/// Measures how far the database's clock is from this host's: the server's time against the
/// middle of the round trip that asked for it.
async fn measure_clock(client: &Client) {
    let sent = crate::model::now_ms();
    let Ok(row) = client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[]).await else {
        return;
    };
    let received = crate::model::now_ms();
    let Ok(db) = row.try_get::<_, i64>(0) else { return };
    CLOCK_OFFSET_MS.store(db - (sent + received) / 2, Ordering::Relaxed);
    CLOCK_MEASURED_AT.store(received, Ordering::Relaxed);
}

/// How long (ms) a session may sit in an open transaction without sending anything before the
/// server ends it.
const IDLE_IN_TRANSACTION_MS: u64 = 5_000;

/// At most this many statements are kept prepared on a connection (more: it starts over).
const MAX_STATEMENTS: usize = 512;

/// The statements prepared on one connection, by their SQL: a clone is the same cache, for use
/// inside a transaction of that connection.
#[derive(Clone, Default)]
pub struct Statements(Arc<Mutex<HashMap<String, Statement>>>);

impl std::fmt::Debug for Statements {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statements").field("prepared", &self.0.lock().map_or(0, |m| m.len())).finish()
    }
}

impl Statements {
    /// `sql` prepared on `client` (the connection these statements belong to, or a transaction
    /// of it): once, then from the cache.
    pub async fn get<C: GenericClient + Sync>(
        &self,
        client: &C,
        sql: &str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(sql) {
            return Ok(s.clone());
        }
        let statement = client.prepare(sql).await?;
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// One connection, with the statements prepared on it. It derefs to its [`Client`].
pub struct Session {
    client: Client,
    statements: Statements,
}

impl Session {
    fn new(client: Client) -> Self {
        Session { client, statements: Statements::default() }
    }

    /// The statements prepared on this connection.
    pub fn statements(&self) -> Statements {
        self.statements.clone()
    }

    /// `sql` prepared on this connection: once, then from its cache.
    pub async fn prepared(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        self.statements.get(&self.client, sql).await
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// A small set of connections to one PostgreSQL database, used from synchronous code.
pub struct Pg {
    config: Config,
    url: String,
    slots: Vec<Mutex<Option<Session>>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").field("url", &redact(&self.url)).field("connections", &self.slots.len()).finish()
    }
}

/// The URL with its password, if any, replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

impl Pg {
    /// Connects to `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?…]`) with up to
    /// `connections` connections; the first is opened now, so a bad URL or an unreachable
    /// server is an error here.
    pub fn connect(url: &str, connections: usize) -> Result<Self, tokio_postgres::Error> {
        let mut config: Config = url.parse()?;
        // A process that stops in the middle of a transaction (frozen, swapped out, cut off)
        // must not hold its row locks, the lease's among them, for longer than that: the server
        // ends its session and whoever waits on the locks goes on.
        let idle = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}");
        let options = match config.get_options() {
            Some(given) => format!("{given} {idle}"),
            None => idle,
        };
        config.options(&options);
        let first = connect(&config, None)?;
        futures::executor::block_on(measure_clock(&first));
        let mut slots = vec![Mutex::new(Some(Session::new(first)))];
        slots.extend((1..connections.max(1)).map(|_| Mutex::new(None)));
        Ok(Pg { config, url: url.to_string(), slots, next: AtomicUsize::new(0) })
    }

    /// The URL this client connects to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `f` with a connection of its own and waits for its result. A connection found
    /// closed is replaced first; one that closes during `f` is replaced on its next use.
    pub fn with<R, E>(&self, f: impl for<'c> FnOnce(&'c mut Session) -> BoxFuture<'c, Result<R, E>>) -> Result<R, E>
    where
        E: From<tokio_postgres::Error>,
    {
        self.with_slot(f, true)
    }

    /// [`Pg::with`], but a connection found closed is not replaced: `f` fails on it. For the
    /// statements of a transaction opened by an earlier call (on a client of one connection),
    /// which must not go on, outside the transaction, on a new connection.
    pub fn with_same<R, E>(
        &self,
        f: impl for<'c> FnOnce(&'c mut Session) -> BoxFuture<'c, Result<R, E>>,
    ) -> Result<R, E>
    where
        E: From<tokio_postgres::Error>,
    {
        self.with_slot(f, false)
    }

    fn with_slot<R, E>(
        &self,
        f: impl for<'c> FnOnce(&'c mut Session) -> BoxFuture<'c, Result<R, E>>,
        reconnect: bool,
    ) -> Result<R, E>
    where
        E: From<tokio_postgres::Error>,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let mut slot = (0..n)
            .find_map(|i| self.slots[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.slots[start % n].lock().unwrap_or_else(|e| e.into_inner()));
        if slot.is_none() || (reconnect && slot.as_ref().is_some_and(|s| s.is_closed())) {
            *slot = None;
            *slot = Some(Session::new(connect(&self.config, None)?));
        }
        let client = slot.as_mut().expect("connected above");
        if crate::model::now_ms() - CLOCK_MEASURED_AT.load(Ordering::Relaxed) > CLOCK_EVERY_MS {
            futures::executor::block_on(measure_clock(client));
        }
        let result = futures::executor::block_on(f(client));
        if reconnect && client.is_closed() {
            *slot = None;
        }
        result
    }

    /// Runs SQL statements (no parameters, no results), e.g. a migration.
    pub fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        let sql = sql.to_string();
        self.with(move |c| Box::pin(async move { c.batch_execute(&sql).await }))
    }

    /// Opens a connection that `LISTEN`s on `channels`; their notifications arrive on the
    /// returned [`Listener`]. It does not reconnect: when [`Listener::is_closed`], open another.
    pub fn listen(&self, channels: &[&str]) -> Result<Listener, tokio_postgres::Error> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let client = connect(&self.config, Some(tx))?;
        let sql: String = channels.iter().map(|c| format!("LISTEN \"{}\";", c.replace('"', "\"\""))).collect();
        futures::executor::block_on(client.batch_execute(&sql))?;
        Ok(Listener { client, rx: Arc::new(tokio::sync::Mutex::new(rx)) })
    }
}

/// A connection that listens for notifications (see [`Pg::listen`]).
#[derive(Debug)]
pub struct Listener {
    client: Client,
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Notification>>>,
}

impl Listener {
    /// The next notification; `None` once the connection is closed.
    pub async fn recv(&self) -> Option<Notification> {
        self.rx.lock().await.recv().await
    }

    /// The next notification within `timeout`, waiting on this thread; `None` if none came (or
    /// the connection is closed).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Notification> {
        let rx = self.rx.clone();
        let waiting =
            runtime().spawn(async move { tokio::time::timeout(timeout, async { rx.lock().await.recv().await }).await });
        futures::executor::block_on(waiting).ok().and_then(|r| r.ok()).flatten()
    }

    /// Whether the connection is gone (the server closed it or restarted).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Pg;

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn a_session_idle_in_a_transaction_is_ended_and_the_clock_is_the_servers() {
        let url = salt_testkit::postgres::database("pg_idle");
        let pg = Pg::connect(&url, 1).unwrap();
        let (timeout, db_ms): (String, i64) = pg
            .with(|c| {
                Box::pin(async move {
                    let row = c
                        .query_one(
                            "SELECT current_setting('idle_in_transaction_session_timeout'),
                                    (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                            &[],
                        )
                        .await?;
                    Ok::<_, tokio_postgres::Error>((row.get(0), row.get(1)))
                })
            })
            .unwrap();
        assert_eq!(timeout, "5s");
        assert!((super::now_ms() - db_ms).abs() < 1_000, "{} vs the server's {db_ms}", super::now_ms());
    }

    #[test]
    #[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
    fn queries_notifications_and_a_reconnect() {
        let url = salt_testkit::postgres::database("pg_client");
        let pg = Pg::connect(&url, 2).unwrap();
        pg.batch("CREATE TABLE t (x BIGINT)").unwrap();
        let listener = pg.listen(&["ready"]).unwrap();
        let n: i64 = pg
            .with(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute("INSERT INTO t VALUES (1), (2)", &[]).await?;
                    tx.execute("NOTIFY ready, 'q'", &[]).await?;
                    tx.commit().await?;
                    let row = c.query_one("SELECT sum(x)::BIGINT FROM t", &[]).await?;
                    Ok::<_, tokio_postgres::Error>(row.get(0))
                })
            })
            .unwrap();
        assert_eq!(n, 3);
        let note = listener.recv_timeout(Duration::from_secs(5)).expect("a notification");
        assert_eq!((note.channel(), note.payload()), ("ready", "q"));
        assert!(listener.recv_timeout(Duration::from_millis(50)).is_none());

        // Every connection of this database is terminated: the next calls reconnect.
        let server = salt_testkit::postgres::server();
        let db = url.rsplit('/').next().unwrap();
        server.psql(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let count = |pg: &Pg| {
            pg.with(|c| {
                Box::pin(async move {
                    Ok::<i64, tokio_postgres::Error>(c.query_one("SELECT count(*) FROM t", &[]).await?.get(0))
                })
            })
        };
        // The connection may only be seen closed by the call that fails on it.
        let first = count(&pg);
        assert_eq!(first.or_else(|_| count(&pg)).unwrap(), 2);
        assert!(listener.is_closed() || listener.recv_timeout(Duration::from_millis(10)).is_none());
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/d"), "postgres://u:***@h:5432/d");
        assert_eq!(super::redact("postgres://u@h/d"), "postgres://u@h/d");
    }
}
