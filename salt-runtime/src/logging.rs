//! `tracing` events: those of task bodies, written to the log of the attempt that emitted them
//! ([`TaskLogs`]), and the engine's own, written to stderr ([`engine_layer`]).
//!
//! [`cli::main`](crate::cli::main) installs both as the global subscriber unless the program
//! installed its own first; a program with its own subscriber adds the layers to it
//! (`tracing_subscriber::registry().with(salt::TaskLogs::default())`) to get the same.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::LookupSpan;

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
/// (`[fetch{user=ada}]=trace`). Events outside any body (the orchestrator's own ones) are not
/// written: [`engine_layer`] writes them to stderr. In a node process, though, everything runs
/// on behalf of the attempt, and this layer writes every event to its log.
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
        match owner() {
            Owner::Attempt(ctx) => ctx.log(format_event(event)),
            // The node process's stderr is the attempt's log.
            Owner::NodeProcess => {
                let _ = writeln!(std::io::stderr().lock(), "{}", format_event(event));
            }
            Owner::Engine => {}
        }
    }
}

/// Whose log an event emitted here and now belongs to.
enum Owner {
    /// The attempt whose body runs: [`TaskLogs`] writes it to its log.
    Attempt(Context),
    /// A node process, where everything runs on behalf of its attempt: [`TaskLogs`] writes it to
    /// stderr, which is the attempt's log.
    NodeProcess,
    /// The engine: the [`engine_layer`] writes it.
    Engine,
}

fn owner() -> Owner {
    match Context::in_body().filter(Context::in_run) {
        Some(ctx) => Owner::Attempt(ctx),
        None if NODE_PROCESS.load(Ordering::Relaxed) => Owner::NodeProcess,
        None => Owner::Engine,
    }
}

/// A per-layer filter that lets through the events that belong to no attempt. Whether an event
/// does is known only when it is emitted (the body is a task-local), never once for a callsite.
struct OutsideBodies;

impl<S> tracing_subscriber::layer::Filter<S> for OutsideBodies {
    fn enabled(&self, _: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        matches!(owner(), Owner::Engine)
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

/// How the engine writes its own events to stderr (`--log-format`, `SALT_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text an event: time (UTC), level, target, message and fields.
    #[default]
    Pretty,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message` and the event's fields.
    Json,
}

/// The filter of the engine's own events when `RUST_LOG` is unset or empty: `INFO` for salt's
/// crates (the targets that start with `salt`), `WARN` for every other.
pub const DEFAULT_ENGINE_FILTER: &str = "warn,salt=info";

/// The filter of the engine's events: `RUST_LOG`'s directives, or [`DEFAULT_ENGINE_FILTER`]
/// when it is unset or empty; an error that says what is wrong with a `RUST_LOG` that is not a
/// filter.
fn engine_filter() -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse(&directives)
            .map_err(|e| format!("RUST_LOG: `{directives}` is not a log filter: {e}")),
        _ => Ok(default_engine_filter()),
    }
}

fn default_engine_filter() -> EnvFilter {
    EnvFilter::builder().parse_lossy(DEFAULT_ENGINE_FILTER)
}

/// A [`Layer`] that writes the engine's own events (the orchestrator's, a worker's, a server's:
/// every event emitted outside a task's body) to stderr in `format`, those the filter of
/// `RUST_LOG` lets through ([`DEFAULT_ENGINE_FILTER`] when it is unset, empty or not a filter).
/// Events of task bodies are left out: [`TaskLogs`] writes them to their attempt's log.
///
/// [`cli::main`](crate::cli::main) installs it; a program with its own subscriber adds it
/// (`tracing_subscriber::registry().with(salt::TaskLogs::default()).with(salt::engine_layer(salt::LogFormat::Json))`).
pub fn engine_layer<S>(format: LogFormat) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let filter = engine_filter().unwrap_or_else(|_| default_engine_filter());
    engine_layer_to(format, filter, std::io::stderr)
}

fn engine_layer_to<S, W>(format: LogFormat, filter: EnvFilter, writer: W) -> impl Layer<S> + Send + Sync
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = filter.and(OutsideBodies);
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(false);
    match format {
        LogFormat::Pretty => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
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

/// Installs the global subscriber of a salt process, unless one is installed already:
/// [`TaskLogs`], and but in a node process (`node`), the [`engine_layer`] in `format`. A
/// `RUST_LOG` that is not a filter leaves the default filters in force; the warning that says
/// so is returned, for the command to print.
pub fn install(node: bool, format: LogFormat) -> Option<String> {
    use tracing_subscriber::layer::SubscriberExt;
    // Told first: a program's own subscriber with `TaskLogs` in it needs to know too.
    NODE_PROCESS.store(node, Ordering::Relaxed);
    if tracing::dispatcher::has_been_set() {
        return None;
    }
    let (task_logs, warning) = match TaskLogs::from_env() {
        Ok(layer) => (layer, None),
        Err(e) => (TaskLogs::with_max_level(Level::INFO), Some(e)),
    };
    let registry = tracing_subscriber::registry().with(task_logs);
    if node {
        let _ = tracing::subscriber::set_global_default(registry);
    } else {
        let _ = tracing::subscriber::set_global_default(registry.with(engine_layer(format)));
    }
    warning.map(|e| {
        format!("{e}; task logs keep the events up to INFO, the engine's own its default `{DEFAULT_ENGINE_FILTER}`")
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::FutureExt as _;
    use futures::future::BoxFuture;
    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::context::{Host, JournalKind, Mutation, SignalWait};
    use crate::error::Error;
    use crate::model::{NodeId, RunId};

    /// What the engine layer writes.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Written {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(String::from).collect()
        }
    }

    /// An orchestrator that keeps the attempt's log lines.
    #[derive(Default)]
    struct Attempt(Mutex<Vec<String>>);

    impl Host for Attempt {
        fn mutate(&self, _: Vec<Mutation>) {}
        fn await_node(&self, _: u32) -> BoxFuture<'static, std::result::Result<Value, Error>> {
            futures::future::pending().boxed()
        }
        fn journal(&self, _: u32, _: JournalKind, _: Value) -> BoxFuture<'static, Value> {
            futures::future::pending().boxed()
        }
        fn wait_signal(&self, _: SignalWait) -> BoxFuture<'static, Value> {
            futures::future::pending().boxed()
        }
        fn log(&self, line: String) {
            self.0.lock().unwrap().push(line);
        }
    }

    /// Runs `emit` under TaskLogs and the engine layer (JSON, `filter`); returns the engine's
    /// lines and the attempt's log.
    fn emitted(filter: &str, emit: impl AsyncFnOnce(Context)) -> (Vec<Value>, Vec<String>) {
        let written = Written::default();
        let attempt = Arc::new(Attempt::default());
        let sink = written.clone();
        let subscriber = tracing_subscriber::registry()
            .with(TaskLogs::with_max_level(Level::INFO))
            .with(engine_layer_to(LogFormat::Json, EnvFilter::new(filter), move || sink.clone()));
        let ctx = Context::new(attempt.clone(), RunId::new(7), NodeId::ROOT, 1);
        tracing::subscriber::with_default(subscriber, || {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(emit(ctx));
        });
        let engine = written.lines().iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        let log = attempt.0.lock().unwrap().clone();
        (engine, log)
    }

    #[test]
    fn task_body_events_go_to_the_attempts_log_and_not_to_the_engines() {
        let (engine, log) = emitted(DEFAULT_ENGINE_FILTER, async |ctx| {
            tracing::error!(target: "salt_runtime::store", run = 7, "lease lost");
            ctx.scope(async {
                tracing::warn!(target: "salt_runtime::store", "inside a body");
                tracing::info!(records = 3, "fetched the records");
            })
            .await;
        });
        assert_eq!(engine.len(), 1, "{engine:?}");
        assert_eq!(engine[0]["level"], "ERROR");
        assert_eq!(engine[0]["target"], "salt_runtime::store");
        assert_eq!(engine[0]["message"], "lease lost");
        assert_eq!(engine[0]["run"], 7);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].ends_with(" WARN inside a body"), "{log:?}");
        assert!(log[1].ends_with(" INFO fetched the records records=3"), "{log:?}");
    }

    #[test]
    fn the_engine_keeps_salts_info_and_the_warnings_of_other_crates_by_default() {
        let (engine, _) = emitted(DEFAULT_ENGINE_FILTER, async |_| {
            tracing::info!(target: "salt_server::host", worker = "w1", "worker connected");
            tracing::debug!(target: "salt_server::host", "not kept");
            tracing::info!(target: "hyper::proto", "not kept");
            tracing::warn!(target: "hyper::proto", "kept");
        });
        let messages: Vec<&Value> = engine.iter().map(|e| &e["message"]).collect();
        assert_eq!(messages, ["worker connected", "kept"]);
        assert_eq!(engine[0]["worker"], "w1");
        let (engine, _) = emitted("off", async |_| tracing::error!(target: "salt_runtime::store", "lease lost"));
        assert!(engine.is_empty(), "{engine:?}");
    }
}
