//! The driver: the IO around a run core. It feeds the core events from the executor, the
//! time and what other processes asked (through the store), commits the writes the core
//! returns in one transaction per batch, and only then performs its actions. So every
//! transition is durable before anything depends on it, and a fan-out of thousands of nodes
//! costs a handful of transactions, not one per node per state.
//!
//! Attempts the core put on a named queue run in workers, elsewhere: while any is outstanding,
//! the driver reads their results from the store every [`QUEUE_POLL`] and feeds them to the
//! core as the attempts' ends.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::Result;
use crate::executor::{AttemptId, Event, Executor};
use crate::model::now_ms;
use crate::progress::Observer;
use crate::run::{Action, Core, Effects};
use crate::runner::RunOutcome;
use crate::store::{Lease, Store, Write};

/// The most events applied in one batch (one transaction).
const MAX_BATCH: usize = 8_192;

/// How often the driver reads what other processes asked and shows progress.
const TICK: Duration = Duration::from_millis(250);

/// How often the driver reads the results of its queued attempts while it has some.
const QUEUE_POLL: Duration = Duration::from_millis(50);

/// Drives one run to its end.
pub(crate) struct Driver {
    pub(crate) core: Core,
    pub(crate) store: Box<dyn Store>,
    pub(crate) executor: Box<dyn Executor>,
    pub(crate) events: mpsc::UnboundedReceiver<Event>,
    /// The run's lease: every batch is committed only while the driver still holds the run.
    pub(crate) lease: Lease,
    pub(crate) observer: Box<dyn Observer>,
    /// Stop the run (cancelled) on Ctrl-C and SIGTERM.
    pub(crate) handle_signals: bool,
    /// Recorded with the run: who drives it.
    pub(crate) executor_name: &'static str,
    pub(crate) parallelism: u32,
    /// Attempts waiting in the durable queue or running in a worker, not yet ended.
    pub(crate) queued: HashSet<AttemptId>,
}

impl Driver {
    /// Runs until every node is done, the run is cancelled, or the store fails.
    pub(crate) async fn run(mut self) -> Result<RunOutcome> {
        let outcome = self.drive().await;
        self.executor.shutdown();
        outcome
    }

    async fn drive(&mut self) -> Result<RunOutcome> {
        let run = self.core.run_id();
        let now = Instant::now().into_std();
        self.core.begin(now);
        let mut first = self.core.take_effects();
        first.writes.insert(
            0,
            Write::RunStarted { run, executor: self.executor_name, parallelism: self.parallelism, at: now_ms() },
        );
        self.flush(first)?;
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
            self.flush(fx)?;
            if self.core.active() == 0 {
                let outcome = self.core.finish();
                let fx = self.core.take_effects();
                self.flush(fx)?;
                self.observer.done(&self.core.summary(Instant::now().into_std()));
                return Ok(outcome);
            }
            let next_timer = self.core.next_timer().map(Instant::from_std);
            let cancelled = self.core.is_cancelled();
            tokio::select! {
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

    /// Commits the writes, then acts on them.
    fn flush(&mut self, fx: Effects) -> Result<()> {
        if !fx.writes.is_empty() {
            self.store.commit(Some(&self.lease), &fx.writes).map_err(|e| e.into_error())?;
            self.track_queued(&fx.writes);
        }
        self.perform(fx);
        Ok(())
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

    fn perform(&mut self, fx: Effects) {
        for n in &fx.notes {
            self.observer.node(n.node, n.task, n.state, n.attempt, n.error.as_ref());
        }
        for action in fx.actions {
            match action {
                Action::Answer { at, call, answer } => self.executor.answer(at, call, answer),
                Action::Start(launch) => self.executor.start(launch),
                Action::Stop(at) => self.executor.stop(at),
            }
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
