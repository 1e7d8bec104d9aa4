//! Following a run while it runs: a live status line on a terminal, plain lines otherwise, and
//! a stream of committed [`Transition`]s for embedding programs ([`Runner::subscribe`]).
//!
//! [`Runner::subscribe`]: crate::runner::Runner::subscribe

#[cfg(feature = "progress")]
use std::io::IsTerminal as _;
use std::io::Write as _;
#[cfg(feature = "progress")]
use std::time::Duration;

#[cfg(feature = "progress")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::error::Error;
use crate::model::{NodeId, NodeState, RunId, RunState};

pub(crate) use salt_core::run::Summary;

/// Told of every node transition and ticked a few times a second.
pub(crate) trait Observer: Send {
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&Error>);
    fn tick(&mut self, summary: &Summary);
    fn done(&mut self, summary: &Summary);
    /// Node `id`'s attempt was enqueued on `queue`: nothing runs it until a worker of that
    /// queue takes it.
    fn queued(&mut self, _id: NodeId, _task: &str, _queue: &str) {}
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing (library use, benchmarks).
    #[default]
    Quiet,
    /// A live line on a terminal, plain lines otherwise; on stderr. Plain lines always in a
    /// binary built without the `progress` feature of `salt`.
    Auto,
}

pub(crate) fn observer(progress: Progress) -> Box<dyn Observer> {
    match progress {
        Progress::Quiet => Box::new(Quiet),
        #[cfg(feature = "progress")]
        Progress::Auto if std::io::stderr().is_terminal() => Box::new(Live::new()),
        Progress::Auto => Box::new(Plain::default()),
    }
}

struct Quiet;

impl Observer for Quiet {
    fn node(&mut self, _: NodeId, _: &str, _: NodeState, _: u32, _: Option<&Error>) {}
    fn tick(&mut self, _: &Summary) {}
    fn done(&mut self, _: &Summary) {}
}

fn transition_line(id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&Error>) -> Option<String> {
    let what = match (state, error) {
        (NodeState::Running, _) if attempt > 1 => format!("started (attempt {attempt})"),
        (NodeState::Running, _) => "started".to_string(),
        (NodeState::Pending, Some(e)) => format!("attempt {attempt} failed, will retry: {e}"),
        (NodeState::Succeeded, _) => "succeeded".to_string(),
        (state, Some(e)) => format!("{}: {e}", state.as_str()),
        (state, None) => state.as_str().to_string(),
    };
    Some(format!("node {id} {task}: {what}"))
}

/// This binary's name, as a user types it to start a worker (`flows worker --queue gpu`).
fn bin_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "<bin>".to_string())
}

/// What a run says, once per queue, when a node's attempt goes onto the work queue: it waits
/// for a worker of that queue, and how to start one.
fn queued_line(id: NodeId, task: &str, queue: &str) -> String {
    format!(
        "node {id} {task} waits for a worker of queue `{queue}`: start one with `{} worker --queue {queue}` \
         (or `salt worker --queue {queue}` for a server)",
        bin_name()
    )
}

/// The queues a run already said it waits on.
#[derive(Default)]
struct Announced(std::collections::HashSet<String>);

impl Announced {
    /// The line to say for a node enqueued on `queue`, the first time only.
    fn line(&mut self, id: NodeId, task: &str, queue: &str) -> Option<String> {
        self.0.insert(queue.to_string()).then(|| queued_line(id, task, queue))
    }
}

/// One line per transition, for logs and pipes.
#[derive(Default)]
struct Plain {
    announced: Announced,
}

impl Observer for Plain {
    fn queued(&mut self, id: NodeId, task: &str, queue: &str) {
        if let Some(line) = self.announced.line(id, task, queue) {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&Error>) {
        if let Some(line) = transition_line(id, task, state, attempt, error) {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
    fn tick(&mut self, _: &Summary) {}
    fn done(&mut self, s: &Summary) {
        let _ = writeln!(std::io::stderr(), "run {}: {} in {:.2?}", s.run, s.counts_line(), s.elapsed);
    }
}

/// A spinner line with counts by state, what is running and the elapsed time; failures and
/// retries are printed above it.
#[cfg(feature = "progress")]
struct Live {
    bar: ProgressBar,
    announced: Announced,
}

#[cfg(feature = "progress")]
impl Live {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar, announced: Announced::default() }
    }
}

#[cfg(feature = "progress")]
impl Observer for Live {
    fn queued(&mut self, id: NodeId, task: &str, queue: &str) {
        if let Some(line) = self.announced.line(id, task, queue) {
            self.bar.println(line);
        }
    }
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&Error>) {
        if error.is_some()
            && state != NodeState::Skipped
            && state != NodeState::Cancelled
            && let Some(line) = transition_line(id, task, state, attempt, error)
        {
            self.bar.println(line);
        }
    }
    fn tick(&mut self, s: &Summary) {
        let running =
            if s.running.is_empty() { String::new() } else { format!(" · running: {}", s.running.join(", ")) };
        self.bar.set_message(format!("run {} · {} · {:.1?}{running}", s.run, s.counts_line(), s.elapsed));
    }
    fn done(&mut self, s: &Summary) {
        self.bar.finish_and_clear();
        let _ = writeln!(std::io::stderr(), "run {}: {} in {:.2?}", s.run, s.counts_line(), s.elapsed);
    }
}

/// A committed change of a run or of one of its nodes, as [`Runner::subscribe`] streams it.
///
/// Every transition is sent after the store has committed it, so what a subscriber sees is
/// always already what `show` reads. Its JSON form is tagged by `type`:
/// `{"type": "node", "run": 1, "node": 3, "task": "fetch", "state": "running", "attempt": 1,
/// "error": null}` or `{"type": "run", "run": 1, "state": "succeeded", "error": null}`.
///
/// [`Runner::subscribe`]: crate::runner::Runner::subscribe
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Transition {
    /// The run changed state: `running` when an orchestrator takes it, `paused` and `running`
    /// again on `pause` and `resume`, and last its final state (`interrupted` when its
    /// orchestrator failed, for example on a store error).
    Run {
        /// The run.
        run: RunId,
        /// Its new state.
        state: RunState,
        /// Why it did not succeed, with a final state.
        error: Option<Error>,
    },
    /// A node changed state: `running` for each attempt, `waiting` when it parks, `pending`
    /// when an attempt failed and will be retried (with the error), and its final state.
    Node {
        /// The run.
        run: RunId,
        /// The node.
        node: NodeId,
        /// Its task.
        task: String,
        /// Its new state.
        state: NodeState,
        /// The attempt this transition belongs to.
        attempt: u32,
        /// Why the attempt or the node failed.
        error: Option<Error>,
    },
}

impl Transition {
    /// The run it belongs to.
    pub fn run(&self) -> RunId {
        match self {
            Transition::Run { run, .. } | Transition::Node { run, .. } => *run,
        }
    }

    /// Whether it is the last transition of a run that a command drives: a run transition to a
    /// state no orchestrator continues from.
    pub fn is_final(&self) -> bool {
        matches!(self, Transition::Run { state, .. } if state.is_terminal() || *state == RunState::Interrupted)
    }
}

/// Shows progress through `inner` and sends each committed transition to `tx`.
pub(crate) struct Broadcast {
    inner: Box<dyn Observer>,
    tx: broadcast::Sender<Transition>,
    run: RunId,
    started: bool,
    /// The pause state last sent, and one seen but not yet committed.
    paused: bool,
    pending_pause: Option<bool>,
}

impl Broadcast {
    pub(crate) fn new(inner: Box<dyn Observer>, tx: broadcast::Sender<Transition>, run: RunId) -> Self {
        Self { inner, tx, run, started: false, paused: false, pending_pause: None }
    }

    /// Sends what became committed since the last call: the start of the run (committed with
    /// the first batch), a pause or resume seen at the tick before.
    fn catch_up(&mut self) {
        if !self.started {
            self.started = true;
            self.send_run(RunState::Running, None);
        }
        if let Some(paused) = self.pending_pause.take()
            && paused != self.paused
        {
            self.paused = paused;
            self.send_run(if paused { RunState::Paused } else { RunState::Running }, None);
        }
    }

    fn send_run(&self, state: RunState, error: Option<Error>) {
        // No subscriber is not an error.
        let _ = self.tx.send(Transition::Run { run: self.run, state, error });
    }
}

impl Observer for Broadcast {
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&Error>) {
        self.catch_up();
        let _ = self.tx.send(Transition::Node {
            run: self.run,
            node: id,
            task: task.to_string(),
            state,
            attempt,
            error: error.cloned(),
        });
        self.inner.node(id, task, state, attempt, error);
    }
    fn tick(&mut self, summary: &Summary) {
        self.catch_up();
        if summary.paused != self.paused {
            self.pending_pause = Some(summary.paused);
        }
        self.inner.tick(summary);
    }
    fn done(&mut self, summary: &Summary) {
        self.catch_up();
        self.inner.done(summary);
    }
    fn queued(&mut self, id: NodeId, task: &str, queue: &str) {
        self.inner.queued(id, task, queue);
    }
}

/// Sends the final transition of a run once the command that drove it returns.
pub(crate) fn send_final(tx: &broadcast::Sender<Transition>, run: RunId, state: RunState, error: Option<Error>) {
    let _ = tx.send(Transition::Run { run, state, error });
}
