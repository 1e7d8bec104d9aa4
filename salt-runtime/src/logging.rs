//! `tracing` events of task bodies, written to the log of the attempt that emitted them.
//!
//! [`cli::main`](crate::cli::main) installs [`TaskLogs`] as the global subscriber unless the
//! program installed its own first; a program with its own subscriber adds the layer to it
//! (`tracing_subscriber::registry().with(salt::TaskLogs::default())`) to get the same.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerContext, Layer};

use crate::context::Context;

/// Set in a node process: there, every event belongs to the attempt that runs, and lines
/// written to stderr land in its log.
static NODE_PROCESS: AtomicBool = AtomicBool::new(false);

/// A [`Layer`] that writes each event emitted inside a task's body to that attempt's log
/// (`logs RUN NODE`), as a line with its time (UTC), level and fields:
/// `2026-12-01T17:59:09.123Z  INFO fetched 3 records count=3`.
///
/// Events at a level more verbose than [`TaskLogs::max_level`] are left out. Events outside
/// any body are not written (the orchestrator's own ones), except in a node process, where
/// everything runs on behalf of the attempt and goes to its log.
#[derive(Debug, Clone, Copy)]
pub struct TaskLogs {
    /// The most verbose level written.
    pub max_level: Level,
}

impl Default for TaskLogs {
    /// `INFO`, or the level `RUST_LOG` names when it is just a level (`debug`, `warn`, ...).
    fn default() -> Self {
        let max_level = std::env::var("RUST_LOG").ok().and_then(|v| v.trim().parse::<Level>().ok());
        Self { max_level: max_level.unwrap_or(Level::INFO) }
    }
}

impl<S: Subscriber> Layer<S> for TaskLogs {
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: LayerContext<'_, S>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn on_event(&self, event: &Event<'_>, _: LayerContext<'_, S>) {
        if *event.metadata().level() > self.max_level {
            return;
        }
        let ctx = Context::in_body().filter(Context::in_run);
        if ctx.is_none() && !NODE_PROCESS.load(Ordering::Relaxed) {
            return;
        }
        let line = format_event(event);
        match ctx {
            Some(ctx) => ctx.log(line),
            None => eprintln!("{line}"),
        }
    }
}

/// The line an event becomes.
fn format_event(event: &Event<'_>) -> String {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let time = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut line = format!("{time} {:>5} {}", event.metadata().level(), fields.message);
    if !fields.rest.is_empty() {
        if !fields.message.is_empty() {
            line.push(' ');
        }
        line.push_str(&fields.rest);
    }
    line
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{}={value:?}", field.name());
        }
    }
}

/// Installs [`TaskLogs`] as the global subscriber, unless one is installed already. `node`
/// says whether this is a node process.
pub(crate) fn install(node: bool) {
    use tracing_subscriber::layer::SubscriberExt;
    NODE_PROCESS.store(node, Ordering::Relaxed);
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(TaskLogs::default()));
}
