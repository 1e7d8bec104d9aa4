//! Showing a run while it runs: a live status line on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::ErrorWire;
use crate::model::{NodeId, NodeState, RunId};

/// Counts of a run's nodes by state, what runs now, and the time so far.
pub(crate) struct Summary {
    pub(crate) run: RunId,
    /// Indexed like [`NodeState::ALL`].
    pub(crate) counts: [usize; NodeState::ALL.len()],
    pub(crate) running: Vec<&'static str>,
    pub(crate) elapsed: Duration,
}

impl Summary {
    fn counts_line(&self) -> String {
        NodeState::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, c)| *c > 0)
            .map(|(s, c)| format!("{c} {}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Told of every node transition and ticked a few times a second.
pub(crate) trait Observer: Send {
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&ErrorWire>);
    fn tick(&mut self, summary: &Summary);
    fn done(&mut self, summary: &Summary);
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing (library use, benchmarks).
    #[default]
    Quiet,
    /// A live line on a terminal, plain lines otherwise; on stderr.
    Auto,
}

pub(crate) fn observer(progress: Progress) -> Box<dyn Observer> {
    match progress {
        Progress::Quiet => Box::new(Quiet),
        Progress::Auto if std::io::stderr().is_terminal() => Box::new(Live::new()),
        Progress::Auto => Box::new(Plain),
    }
}

struct Quiet;

impl Observer for Quiet {
    fn node(&mut self, _: NodeId, _: &str, _: NodeState, _: u32, _: Option<&ErrorWire>) {}
    fn tick(&mut self, _: &Summary) {}
    fn done(&mut self, _: &Summary) {}
}

fn transition_line(
    id: NodeId,
    task: &str,
    state: NodeState,
    attempt: u32,
    error: Option<&ErrorWire>,
) -> Option<String> {
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

/// One line per transition, for logs and pipes.
struct Plain;

impl Observer for Plain {
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&ErrorWire>) {
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
struct Live {
    bar: ProgressBar,
}

impl Live {
    fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Self { bar }
    }
}

impl Observer for Live {
    fn node(&mut self, id: NodeId, task: &str, state: NodeState, attempt: u32, error: Option<&ErrorWire>) {
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
