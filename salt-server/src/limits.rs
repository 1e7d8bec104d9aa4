//! Queue settings shared by every server on one database: whether a queue is active, and how
//! many of its attempts may run at once across all workers and servers.
//!
//! A limited queue's running attempts each hold a *place*, a row of `salt_server_queue_places`
//! taken in one transaction that counts the others (under the queue's row lock on PostgreSQL),
//! so that two servers giving out attempts at the same moment never exceed the limit. A place
//! names the server that holds it and expires unless that server renews it: the places of a
//! server that died are free again after [`PLACE_TTL`]. Each server reads the settings again
//! every [`SYNC_EVERY`], so that a change made through one server holds on all of them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use salt_runtime::remote::{Dispatcher, QueueLimits};

use crate::db;
use crate::sql::Conn;

/// How long a place lasts unless its server renews it.
pub const PLACE_TTL: Duration = Duration::from_secs(10);

/// How often a server reads the queues' settings again, renews its places and offers waiting
/// attempts the places other servers gave back.
pub const SYNC_EVERY: Duration = Duration::from_millis(250);

/// The places of limited queues, in the server's database.
pub struct Places {
    conn: Mutex<Conn>,
    /// This server, as the holder of its places (unique per process).
    holder: String,
    /// The limited queues, as last read.
    limited: RwLock<HashSet<String>>,
    /// Places given back while the database did not answer: given back again at each sync
    /// (renewed, they would stay taken for good).
    unreleased: Mutex<Vec<(String, String)>>,
}

impl std::fmt::Debug for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Places").field("holder", &self.holder).finish()
    }
}

impl Places {
    /// Places kept through `conn`, held as `holder`.
    pub fn new(conn: Conn, holder: String) -> Self {
        Places {
            conn: Mutex::new(conn),
            holder,
            limited: RwLock::new(HashSet::new()),
            unreleased: Mutex::new(Vec::new()),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the queues' settings again: applies whether each is active, and to whom it is
    /// private, to `dispatcher` and keeps which are limited; gives back the places it could not
    /// give back before, and renews the others.
    pub fn sync(&self, dispatcher: &Dispatcher) -> crate::sql::Result<()> {
        let queues = {
            let conn = self.conn();
            let now = conn.now_ms();
            let unreleased = std::mem::take(&mut *self.unreleased.lock().unwrap_or_else(|p| p.into_inner()));
            for (i, (queue, key)) in unreleased.iter().enumerate() {
                if let Err(e) = db::release_place(&conn, queue, key, &self.holder) {
                    self.unreleased.lock().unwrap_or_else(|p| p.into_inner()).extend(unreleased[i..].iter().cloned());
                    return Err(e);
                }
            }
            let expires = now + PLACE_TTL.as_millis() as i64;
            db::renew_places(&conn, &self.holder, expires)?;
            db::queues(&conn)?
        };
        let limited = queues.iter().filter(|q| q.concurrency.is_some()).map(|q| q.name.clone()).collect();
        *self.limited.write().unwrap_or_else(|p| p.into_inner()) = limited;
        for q in &queues {
            dispatcher.set_active(&q.name, q.active);
            dispatcher.set_private(&q.name, q.private_to.clone());
        }
        Ok(())
    }
}

impl QueueLimits for Places {
    fn limited(&self, queue: &str) -> bool {
        self.limited.read().unwrap_or_else(|p| p.into_inner()).contains(queue)
    }

    fn acquire(&self, queue: &str, key: &str, force: bool) -> bool {
        let conn = self.conn();
        let expires = conn.now_ms() + PLACE_TTL.as_millis() as i64;
        match db::take_place(&conn, queue, key, &self.holder, expires, force) {
            Ok(taken) => taken,
            Err(e) => {
                // The attempt waits; the next sync offers it a place again.
                tracing::warn!("cannot take a place in queue `{queue}`: {e}");
                force
            }
        }
    }

    fn release(&self, queue: &str, key: &str) {
        if let Err(e) = db::release_place(&self.conn(), queue, key, &self.holder) {
            tracing::warn!("cannot give back a place in queue `{queue}` yet: {e}");
            self.unreleased.lock().unwrap_or_else(|p| p.into_inner()).push((queue.to_string(), key.to_string()));
        }
    }
}

/// Makes `dispatcher` honour the queues' settings in the database `db` (a connection of its
/// own), and keeps them in sync every [`SYNC_EVERY`] until `stop`.
pub fn spawn(
    db: &str,
    dispatcher: Dispatcher,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> crate::sql::Result<tokio::task::JoinHandle<()>> {
    // Unique per process, as a run's lease owner is.
    let places = Arc::new(Places::new(db::open(db)?, salt_runtime::store::new_owner()));
    places.sync(&dispatcher)?;
    dispatcher.set_limits(places.clone());
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SYNC_EVERY) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let (places, dispatcher) = (places.clone(), dispatcher.clone());
            let synced = tokio::task::spawn_blocking(move || {
                let synced = places.sync(&dispatcher);
                dispatcher.pump();
                synced
            })
            .await;
            if let Ok(Err(e)) = synced {
                tracing::warn!("cannot read the queues' settings: {e}");
            }
        }
    }))
}
