//! The driver: the IO around a run core. It feeds the core events from the executor, the
//! time and what other processes asked (through the store), commits the writes the core
//! returns, and performs its actions.
//!
//! Commits are pipelined: one runs on a blocking thread while the core goes on, and the writes
//! that pile up meanwhile form the next one, so a commit carries as many transitions as arrived
//! while the previous one was written (group commit, without a timer). What depends on a
//! transition being durable — answering a body's await or journaled call, showing progress —
//! waits for the commit that holds it. Starting an attempt does not: an attempt that started
//! and was lost in a crash is simply run again by `recover`, so attempts start at once (unless
//! the lease was not renewed lately, when they too wait for the fenced commit).
//!
//! Attempts the core put on a named queue run in workers, elsewhere: while any is outstanding,
//! the driver reads their results from the store every [`QUEUE_POLL`] and feeds them to the
//! core as the attempts' ends.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result, StoreError};
use crate::executor::{AttemptId, Event, Executor};
use crate::model::now_ms;
use crate::progress::Observer;
use crate::run::{Action, Core, Effects, Note};
use crate::runner::RunOutcome;
use crate::store::{Lease, LeaseWatch, Store, Write};

/// The most events applied between two looks at the rest of the world.
const MAX_BATCH: usize = 8_192;

/// How often the driver reads what other processes asked and shows progress.
const TICK: Duration = Duration::from_millis(250);

/// How often the driver reads the results of its queued attempts while it has some.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// Drives one run to its end.
pub(crate) struct Driver {
    pub(crate) core: Core,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executor: Box<dyn Executor>,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    /// The run's lease: every batch is committed only while the driver still holds the run.
    pub(crate) lease: Lease,
    /// When the lease was last renewed; none when nobody renews it.
    pub(crate) lease_watch: Option<LeaseWatch>,
    pub(crate) observer: Box<dyn Observer>,
    /// Stop the run (cancelled) on Ctrl-C and SIGTERM.
    pub(crate) handle_signals: bool,
    /// Recorded with the run: who drives it.
    pub(crate) executor_name: &'static str,
    pub(crate) parallelism: u32,
    /// Attempts waiting in the durable queue or running in a worker, not yet ended.
    pub(crate) queued: HashSet<AttemptId>,
}

/// What waits for a commit.
enum Deferred {
    Note(Note),
    Action(Action),
}

/// A commit on its blocking thread.
type Commit = JoinHandle<std::result::Result<(), StoreError>>;

/// Writes on their way to the store, and what waits for them.
#[derive(Default)]
struct Pipeline {
    /// Writes not yet handed to a commit.
    queued: Vec<Write>,
    /// What waits for the queued writes (and the commit in flight).
    after_queued: Vec<Deferred>,
    /// The commit in flight, and what waits for it.
    inflight: Option<(Commit, Vec<Deferred>)>,
}

impl Pipeline {
    fn is_idle(&self) -> bool {
        self.queued.is_empty() && self.inflight.is_none()
    }
}

impl Driver {
    /// Runs until every node is done, the run is cancelled, or the store fails.
    pub(crate) async fn run(mut self) -> Result<RunOutcome> {
        let mut pipe = Pipeline::default();
        let outcome = self.drive(&mut pipe).await;
        self.executor.shutdown();
        if let Some((commit, _)) = pipe.inflight.take() {
            let _ = commit.await;
        }
        outcome
    }

    async fn drive(&mut self, pipe: &mut Pipeline) -> Result<RunOutcome> {
        let run = self.core.run_id();
        let now = Instant::now().into_std();
        self.core.begin(now);
        let mut first = self.core.take_effects();
        first.writes.insert(
            0,
            Write::RunStarted { run, executor: self.executor_name, parallelism: self.parallelism, at: now_ms() },
        );
        // The takeover is durable before anything else happens.
        self.absorb(pipe, first);
        self.settle(pipe).await?;
        // A run taken over while paused stays paused; signals sent meanwhile are picked up.
        self.poll_control(now);
        // Listen for Ctrl-C and SIGTERM before anything starts, so that neither can kill the
        // process instead of stopping the run.
        let mut stop = self.handle_signals.then(stop_signals);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queue_poll = tokio::time::interval(QUEUE_POLL);
        queue_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = Instant::now().into_std();
            self.core.start_ready(now);
            let fx = self.core.take_effects();
            self.absorb(pipe, fx);
            if pipe.inflight.is_none() {
                self.launch(pipe);
            }
            if self.core.active() == 0 {
                let outcome = self.core.finish();
                let fx = self.core.take_effects();
                self.absorb(pipe, fx);
                self.settle(pipe).await?;
                self.observer.done(&self.core.summary(Instant::now().into_std()));
                return Ok(outcome);
            }
            let next_timer = self.core.next_timer().map(Instant::from_std);
            let cancelled = self.core.is_cancelled();
            tokio::select! {
                biased;
                done = async { match pipe.inflight.as_mut() { Some((h, _)) => h.await, None => std::future::pending().await } }, if pipe.inflight.is_some() => {
                    self.committed(pipe, done)?;
                }
                Some(ev) = self.events.recv() => {
                    let now = Instant::now().into_std();
                    self.apply(now, ev);
                    let mut n = 1;
                    while n < MAX_BATCH {
                        match self.events.try_recv() {
                            Ok(ev) => { self.apply(now, ev); n += 1; }
                            Err(_) => break,
                        }
                    }
                }
                () = async { tokio::time::sleep_until(next_timer.unwrap_or_else(Instant::now)).await }, if next_timer.is_some() => {
                    self.core.fire_timers(Instant::now().into_std());
                }
                Some(why) = async { match stop.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } }, if !cancelled => {
                    self.core.cancel(why.into());
                }
                _ = tick.tick() => {
                    let now = Instant::now().into_std();
                    self.poll_control(now);
                    self.observer.tick(&self.core.summary(now));
                }
                _ = queue_poll.tick(), if !self.queued.is_empty() => {
                    self.poll_queue(Instant::now().into_std());
                }
            }
        }
    }

    fn apply(&mut self, now: std::time::Instant, ev: Event) {
        if let Event::Finished { at, .. } = &ev {
            self.executor.ended(*at);
        }
        self.core.handle(now, ev);
    }

    /// Reads what other processes asked: cancel, pause or resume, signals.
    fn poll_control(&mut self, now: std::time::Instant) {
        if let Ok(control) = self.store.control(self.core.run_id()) {
            self.core.control(now, control);
        }
    }

    /// Feeds the core what workers reported for the run's queued attempts.
    fn poll_queue(&mut self, now: std::time::Instant) {
        let run = self.core.run_id();
        match self.store.queue_results(run) {
            Ok(results) => {
                for r in results {
                    let at = AttemptId { run, node: r.node, attempt: r.attempt };
                    self.core.handle(now, Event::Finished { at, result: r.result });
                }
            }
            // A busy database: read them at the next poll.
            Err(e) => tracing::warn!("cannot read the queued results of run {run}: {e}"),
        }
    }

    /// Notes which attempts are now queued, and which queued ones have ended.
    fn track_queued(&mut self, writes: &[Write]) {
        for w in writes {
            match *w {
                Write::Enqueue { run, node, attempt, .. } => {
                    self.queued.insert(AttemptId { run, node, attempt });
                }
                Write::AttemptFinished { run, node, attempt, .. } if !self.queued.is_empty() => {
                    self.queued.remove(&AttemptId { run, node, attempt });
                }
                _ => {}
            }
        }
    }

    /// Takes the core's effects: writes are queued for the next commit; what depends on them
    /// waits for it; the rest is done now.
    fn absorb(&mut self, pipe: &mut Pipeline, fx: Effects) {
        let Effects { writes, actions, notes } = fx;
        self.track_queued(&writes);
        pipe.queued.extend(writes);
        let durable = pipe.is_idle();
        let lease_fresh = self.lease_watch.as_ref().is_none_or(LeaseWatch::is_fresh);
        for action in actions {
            let now = match &action {
                Action::Answer { .. } => durable,
                Action::Start(_) => durable || lease_fresh,
                Action::Stop(_) => true,
            };
            if now {
                self.perform(action);
            } else {
                pipe.after_queued.push(Deferred::Action(action));
            }
        }
        for note in notes {
            if durable {
                self.show(&note);
            } else {
                pipe.after_queued.push(Deferred::Note(note));
            }
        }
    }

    /// Hands the queued writes to a commit on a blocking thread.
    fn launch(&mut self, pipe: &mut Pipeline) {
        if pipe.queued.is_empty() {
            // Nothing to write: what waited for earlier writes may go on.
            for d in std::mem::take(&mut pipe.after_queued) {
                self.release(d);
            }
            return;
        }
        let writes = std::mem::take(&mut pipe.queued);
        let waiting = std::mem::take(&mut pipe.after_queued);
        let (store, lease) = (self.store.clone(), self.lease.clone());
        let commit = tokio::task::spawn_blocking(move || store.commit(Some(&lease), &writes));
        pipe.inflight = Some((commit, waiting));
    }

    /// A commit ended: what waited for it goes on, and the next one starts.
    fn committed(
        &mut self,
        pipe: &mut Pipeline,
        done: std::result::Result<std::result::Result<(), StoreError>, tokio::task::JoinError>,
    ) -> Result<()> {
        let Some((_, waiting)) = pipe.inflight.take() else { return Ok(()) };
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into_error()),
            Err(e) => return Err(Error::new(ErrorKind::Store, format!("a commit did not finish: {e}"))),
        }
        for d in waiting {
            self.release(d);
        }
        self.launch(pipe);
        Ok(())
    }

    /// Commits everything queued and waits until it is durable.
    async fn settle(&mut self, pipe: &mut Pipeline) -> Result<()> {
        loop {
            if let Some((commit, _)) = pipe.inflight.as_mut() {
                let done = commit.await;
                self.committed(pipe, done)?;
            } else if !pipe.queued.is_empty() || !pipe.after_queued.is_empty() {
                self.launch(pipe);
            } else {
                return Ok(());
            }
        }
    }

    fn release(&mut self, d: Deferred) {
        match d {
            Deferred::Note(n) => self.show(&n),
            Deferred::Action(a) => self.perform(a),
        }
    }

    fn show(&mut self, n: &Note) {
        self.observer.node(n.node, n.task, n.state, n.attempt, n.error.as_ref());
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Answer { at, call, answer } => self.executor.answer(at, call, answer),
            Action::Start(launch) => self.executor.start(launch),
            Action::Stop(at) => self.executor.stop(at),
        }
    }
}

/// Ctrl-C and SIGTERM (what `timeout`, systemd, Docker and Kubernetes send), as reasons.
pub(crate) fn stop_signals() -> mpsc::UnboundedReceiver<&'static str> {
    let (tx, rx) = mpsc::unbounded_channel();
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, why) in
        [(SignalKind::interrupt(), "interrupted (Ctrl-C)"), (SignalKind::terminate(), "stopped by SIGTERM")]
    {
        if let Ok(mut s) = signal(kind) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(why).is_err() {
                        break;
                    }
                }
            });
        }
    }
    rx
}
