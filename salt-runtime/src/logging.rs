//! `tracing` events of task bodies, written to the log of the attempt that emitted them.
//!
//! [`cli::main`](crate::cli::main) installs [`TaskLogs`] as the global subscriber unless the
//! program installed its own first; a program with its own subscriber adds the layer to it
//! (`tracing_subscriber::registry().with(salt::TaskLogs::default())`) to get the same.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context as LayerContext, Layer};

use crate::context::Context;

/// Set in a node process: there, every event belongs to the attempt that runs, and lines
/// written to stderr land in its log.
static NODE_PROCESS: AtomicBool = AtomicBool::new(false);

/// A [`Layer`] that writes each event emitted inside a task's body to that attempt's log
/// (`logs RUN NODE`), as a line with its time (UTC), level and fields:
/// `2026-12-01T17:59:09.123Z  INFO fetched 3 records count=3`.
///
/// Which events are written is decided by a filter in the syntax of `RUST_LOG`
/// (`tracing_subscriber`'s `EnvFilter`): a level (`debug`), a level per target
/// (`warn,my_flows=debug,my_flows::fetch=trace`), directives on spans and fields
/// (`[fetch{user=ada}]=trace`). Events outside any body are not written (the orchestrator's own
/// ones), except in a node process, where everything runs on behalf of the attempt and goes to
/// its log.
#[derive(Debug)]
pub struct TaskLogs {
    filter: EnvFilter,
}

impl TaskLogs {
    /// The layer with the filter `directives`, in the syntax of `RUST_LOG`; an error that says
    /// what is wrong with them.
    pub fn with_filter(directives: &str) -> Result<Self, String> {
        EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse(directives)
            .map(|filter| Self { filter })
            .map_err(|e| format!("`{directives}` is not a log filter: {e}"))
    }

    /// The layer that writes the events at `level` and less verbose ones, of every target.
    pub fn with_max_level(level: Level) -> Self {
        Self { filter: EnvFilter::default().add_directive(LevelFilter::from_level(level).into()) }
    }

    /// The layer with the filter of `RUST_LOG`; `INFO` when it is unset or empty, an error when
    /// it is not a filter.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("RUST_LOG") {
            Ok(directives) if !directives.trim().is_empty() => {
                Self::with_filter(&directives).map_err(|e| format!("RUST_LOG: {e}"))
            }
            _ => Ok(Self::with_max_level(Level::INFO)),
        }
    }
}

impl Default for TaskLogs {
    /// [`TaskLogs::from_env`], or `INFO` when `RUST_LOG` is not a filter.
    fn default() -> Self {
        Self::from_env().unwrap_or_else(|_| Self::with_max_level(Level::INFO))
    }
}

// The filter decides, through its own `Layer` methods (span directives need to see spans come
// and go); this layer writes what it lets through.
impl<S: Subscriber> Layer<S> for TaskLogs {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&self.filter, metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: LayerContext<'_, S>) -> bool {
        self.filter.enabled(metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.filter)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        self.filter.on_new_span(attrs, id, ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        self.filter.on_record(id, values, ctx);
    }

    fn on_enter(&self, id: &Id, ctx: LayerContext<'_, S>) {
        self.filter.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &Id, ctx: LayerContext<'_, S>) {
        self.filter.on_exit(id, ctx);
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        self.filter.on_close(id, ctx);
    }

    fn on_event(&self, event: &Event<'_>, _: LayerContext<'_, S>) {
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
    let layer = TaskLogs::from_env().unwrap_or_else(|e| {
        // Said once, by the command; node processes, whose stderr is the attempt's log, do not.
        if !node {
            eprintln!("warning: {e}; task logs keep the events up to INFO");
        }
        TaskLogs::with_max_level(Level::INFO)
    });
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}
