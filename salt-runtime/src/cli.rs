//! The command line every workflow binary gets from `salt::main()`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{Value, json};

use crate::error::{Error, ErrorKind, Result};
use crate::logging::LogFormat;
use crate::model::{NodeState, RunId, RunState, RunSummary, now_ms};
use crate::ops::{self, Drawing, GraphFormat, Logs, Part, PauseOutcome, RunOneOutcome, RunSettings};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::render;
use crate::runner::{Executor, RunOutcome, Runner};
use crate::store::Durability;

/// The most nodes `--parallelism` accepts.
const MAX_PARALLELISM: i64 = 65_536;

/// Runs and inspects the workflows of this binary.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A salt workflow binary: runs its workflows and shows their runs.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    /// The database of runs: a SQLite path or a `postgres://` URL.
    #[arg(long, global = true, env = "SALT_DB", default_value = DEFAULT_DB, value_name = "PATH|URL")]
    db: String,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// How the engine's own log lines are written to stderr: text, or one JSON object a line
    /// (`RUST_LOG` filters them).
    #[arg(long, global = true, env = "SALT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, value_name = "FORMAT")]
    log_format: LogFormat,

    /// What to do; with none, run the binary's only workflow with its default input.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, clap::Args)]
struct RunOptions {
    /// Where attempts run: in this process, each in a fresh process of this binary, or in a
    /// pool of long-lived processes of this binary [default: inline; for recover, rerun and
    /// run-one: the run's own].
    #[arg(long, value_enum)]
    executor: Option<ExecutorArg>,

    /// How many nodes run at once, 1 to 65536 [default: the number of cores; for recover,
    /// rerun and run-one: the run's own].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_PARALLELISM))]
    parallelism: Option<u32>,

    /// With `--executor pool`: how many processes to keep warm [default: the parallelism].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pool_size: Option<u16>,

    /// How many CPU cores the nodes that ask for some (`cores = N`) share: such a node starts
    /// only when its cores are free [default: the machine's cores].
    #[arg(long, env = "SALT_CORES", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    cores: Option<u32>,

    /// How much memory, in MiB, the nodes that ask for some (`memory_mb = M`) share [default:
    /// the machine's memory].
    #[arg(long, env = "SALT_MEMORY_MB", value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..))]
    memory_mb: Option<u64>,

    /// How hard each commit is made to last: `normal` survives a killed process, `full` a
    /// power cut too (every commit is synced to disk).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Normal)]
    durability: DurabilityArg,
}

/// `--executor`: [`Executor`], as the command line takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExecutorArg {
    /// In this process, on its async runtime: the fastest.
    Inline,
    /// Each attempt in a fresh process of this binary (`<bin> __salt exec`): isolated, killable.
    Process,
    /// Long-lived processes of this binary, each running many attempts one after the other:
    /// the isolation of `process` at a fraction of its cost.
    Pool,
}

impl From<ExecutorArg> for Executor {
    fn from(arg: ExecutorArg) -> Self {
        match arg {
            ExecutorArg::Inline => Executor::Inline,
            ExecutorArg::Process => Executor::Process,
            ExecutorArg::Pool => Executor::Pool,
        }
    }
}

/// `--format`: [`GraphFormat`], as the command line takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// The documented JSON form.
    Json,
    /// SVG, drawn by Graphviz `dot` (which must be on the PATH).
    Svg,
}

impl From<FormatArg> for GraphFormat {
    fn from(arg: FormatArg) -> Self {
        match arg {
            FormatArg::Dot => GraphFormat::Dot,
            FormatArg::Mermaid => GraphFormat::Mermaid,
            FormatArg::Json => GraphFormat::Json,
            FormatArg::Svg => GraphFormat::Svg,
        }
    }
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DurabilityArg {
    /// Survives a killed process (the default).
    Normal,
    /// Survives a power cut.
    Full,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow (the only one, when the binary has one).
    Run {
        /// The workflow.
        workflow: Option<String>,
        /// Its input: a JSON object of its parameters, or @FILE to read it from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        #[command(flatten)]
        options: RunOptions,
    },
    /// List runs, newest first.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a run: its state, input, output and nodes; or one node; or a whole input or output.
    Show {
        /// The run.
        run: RunId,
        /// A node id, or a task name that names one node of the run: show that node.
        node: Option<String>,
        /// Print the whole input of the run (or of NODE) as JSON, however large.
        #[arg(long, conflicts_with = "output")]
        input: bool,
        /// Print the whole output of the run (or of NODE) as JSON, however large.
        #[arg(long)]
        output: bool,
        /// List superseded nodes too (nodes a rerun replaced; `--json` always lists them).
        #[arg(long)]
        all: bool,
        /// List only the nodes in these states (repeat it, or separate them by commas:
        /// `--state failed,skipped`); with `--json` too.
        #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = parse_node_state,
              conflicts_with_all = ["node", "input", "output"])]
        state: Vec<NodeState>,
    },
    /// Print the logs of a run, or of one of its nodes, attempt by attempt.
    Logs {
        /// The run.
        run: RunId,
        /// A node id, or a task name that names one node of the run.
        node: Option<String>,
        /// Keep printing the lines as they are written, until the run ends (with `--json`,
        /// one JSON object a line).
        #[arg(long, short)]
        follow: bool,
    },
    /// Draw the graph of a run as it is now (also while it runs), or the plan of a workflow.
    Graph {
        /// A run id, or a workflow name (its plan).
        target: String,
        /// The output format.
        #[arg(long, value_enum, default_value_t = FormatArg::Dot)]
        format: FormatArg,
        /// Draw the plan of a workflow (implied when TARGET is not a run id).
        #[arg(long)]
        plan: bool,
        /// The input to plan with (default: the workflow's default input).
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// Draw the task-level view: one node per task, loops as cycles.
        #[arg(long)]
        collapse: bool,
        /// Draw superseded nodes too (nodes a rerun replaced), greyed and dashed.
        #[arg(long)]
        all: bool,
        /// Label each data edge with the parameter its value is passed as (edges a body labelled
        /// with `ctx.edge_label` always show their label).
        #[arg(long)]
        edge_labels: bool,
    },
    /// Send a signal to a run whose node waits for it (`ctx.wait_for`).
    Signal {
        /// The run.
        run: RunId,
        /// The signal's name.
        name: String,
        /// Its value, as JSON matching the type the node waits for (or @FILE).
        value: String,
    },
    /// Pause a run: no new node starts; running ones finish.
    Pause {
        /// The run.
        run: RunId,
    },
    /// Resume a paused run.
    Resume {
        /// The run.
        run: RunId,
    },
    /// Describe this binary: its tasks and workflows, with input and output schemas.
    Manifest,
    /// Resume a failed, cancelled or interrupted run; no succeeded node runs again.
    Recover {
        /// The run.
        run: RunId,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run a node and everything downstream of it again; nothing upstream runs again.
    Rerun {
        /// The run.
        run: RunId,
        /// The node to start from: an id, or a task name that names one node.
        #[arg(long, value_name = "NODE")]
        from: String,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Run exactly one node again (its upstream must have succeeded).
    RunOne {
        /// The run.
        run: RunId,
        /// The node: an id, or a task name that names one node.
        node: String,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Start a new run of a run's workflow with the same input, or with that input patched.
    Clone {
        /// The run to copy.
        run: RunId,
        /// A JSON merge patch (RFC 7396) applied to the run's input, or @FILE to read it from a
        /// file: `{"n": 5}` sets `n`, `{"n": null}` removes it.
        #[arg(long, value_name = "PATCH|@FILE")]
        input: Option<String>,
        #[command(flatten)]
        options: RunOptions,
    },
    /// Cancel a run: no new node starts, running attempts are stopped.
    Cancel {
        /// The run.
        run: RunId,
        /// Cancel only this node (an id, or a task name that names one node): its attempt is
        /// stopped and it is recorded `cancelled`, without retries; the run goes on.
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Run the attempts waiting in a queue of the database: nodes of tasks with
    /// `queue = "NAME"` wait there for a worker of that queue.
    #[command(hide = true)]
    Worker {
        /// The queue to take attempts from.
        #[arg(long, value_name = "NAME")]
        queue: String,
        /// How many attempts run at once.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        slots: u16,
        /// Run what is ready now, then exit.
        #[arg(long)]
        once: bool,
        /// How long a claim lasts unless renewed (it is renewed every third of it): when a
        /// worker dies, another takes its attempts over after this long.
        #[arg(long, env = "SALT_CLAIM_TTL", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
        claim_ttl: std::time::Duration,
    },
}

/// The entry point of a workflow binary's command line.
pub fn main() -> ExitCode {
    main_with_default_db(DEFAULT_DB)
}

/// The database of runs when neither `--db` nor `SALT_DB` names one.
pub const DEFAULT_DB: &str = ".salt/salt.db";

/// [`main`], with `db` as the database of runs when neither `--db` nor `SALT_DB` names one:
/// binaries that live side by side in one directory (the examples of a crate) keep their runs
/// apart this way, each with its own run 1.
pub fn main_with_default_db(db: &'static str) -> ExitCode {
    let mut args = std::env::args_os();
    let _bin = args.next();
    let salt = args.next().is_some_and(|a| a == "__salt");
    let sub = if salt { args.next() } else { None };
    if sub.as_deref().is_some_and(|s| s == "guard") {
        return or_say(crate::command::guard_main(args));
    }
    if sub.as_deref().is_some_and(|s| s == "remove-container") {
        return or_say(crate::container::remove_main(args));
    }
    // This binary can be a command's guard: commands its runs start go through one.
    crate::command::enable_guard();
    if sub.is_some_and(|a| a == "exec") {
        // A node process: its stderr is the attempt's log, and everything it logs goes there.
        crate::logging::install(true, LogFormat::default());
        return crate::protocol::exec_main();
    }
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "salt".into());
    let command = Cli::command()
        .name(name.clone())
        .bin_name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .mut_arg("db", |a| a.default_value(db));
    let cli = match command.try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Some(warning) = crate::logging::install(false, cli.log_format) {
        eprintln!("warning: {warning}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    keep_stdout_for_results();
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e.kind() {
                ErrorKind::Usage | ErrorKind::Input => 2,
                _ => 1,
            })
        }
    }
}

/// The exit code of a helper process (`__salt guard`, `__salt remove-container`), after printing
/// why it failed when it did.
fn or_say(result: std::result::Result<ExitCode, (u8, String)>) -> ExitCode {
    result.unwrap_or_else(|(code, message)| {
        eprintln!("{message}");
        ExitCode::from(code)
    })
}

/// Where results go: the process's real stdout. Everything else that prints to fd 1 while the
/// command runs (task bodies on the inline executor, plans) is sent to stderr, so a run's output
/// on stdout stays clean (`run --json | jq` works whatever the tasks print).
static RESULTS: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

fn keep_stdout_for_results() {
    use std::os::fd::AsFd;
    // A close-on-exec copy, so that processes the tasks start do not hold the results open.
    if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned()
        && nix::unistd::dup2_stdout(std::io::stderr()).is_ok()
    {
        let _ = RESULTS.set(std::sync::Mutex::new(std::fs::File::from(fd)));
    }
}

fn out(text: impl AsRef<str>) {
    if let Some(file) = RESULTS.get() {
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(text.as_ref().as_bytes());
        let _ = file.flush();
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_ref().as_bytes());
    let _ = stdout.flush();
}

fn print_json(value: &Value) {
    print_serialized(value);
}

/// Prints any serializable value as pretty JSON, without building a `Value` of it first (a run
/// of 100 000 nodes is printed in a fraction of the time).
fn print_serialized(value: &impl serde::Serialize) {
    out(format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()));
}

impl RunOptions {
    fn settings(&self) -> RunSettings {
        RunSettings {
            executor: self.executor.map(Executor::from),
            parallelism: self.parallelism.map(|n| n as usize),
            pool_size: self.pool_size.map(usize::from),
            cores: self.cores,
            memory_mb: self.memory_mb,
            durability: match self.durability {
                DurabilityArg::Normal => Durability::Normal,
                DurabilityArg::Full => Durability::Full,
            },
        }
    }

    /// A runner with these options; for a run taken over (`stored`), what is not given is what
    /// the run had.
    fn runner(&self, db: &str, stored: Option<&crate::model::RunRecord>) -> Runner {
        self.settings().runner(db, stored).progress(Progress::Auto).handle_ctrl_c(true)
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let registry = Registry::global()?;
    let db = cli.db;
    let json = cli.json;
    let command = cli.command.unwrap_or(Command::Run {
        workflow: None,
        input: None,
        options: RunOptions {
            executor: None,
            parallelism: None,
            pool_size: None,
            cores: None,
            memory_mb: None,
            durability: DurabilityArg::Normal,
        },
    });
    match command {
        Command::Run { workflow, input, options } => {
            let input = input.map(|s| parse_input(&s)).transpose()?;
            let outcome = ops::run(&options.runner(&db, None), workflow.as_deref(), input).await?;
            Ok(report(&outcome, json))
        }
        Command::Runs { limit } => {
            let runs = ops::list_runs(ops::open_read_only(&db)?.as_ref(), limit)?;
            if json {
                print_json(&json!({ "runs": runs }));
            } else {
                out(runs_text(&runs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { run, node, input, output, all, state } => {
            let store = ops::open_read_only(&db)?;
            let part = match (input, output) {
                (true, _) => Some(Part::Input),
                (_, true) => Some(Part::Output),
                _ => None,
            };
            if let Some(part) = part {
                print_json(&ops::value(store.as_ref(), run, node.as_deref(), part)?);
            } else if let Some(node) = node {
                let view = ops::show_node(store.as_ref(), run, &node)?;
                if json { print_json(&to_json(&view)) } else { out(render::node_text(&view)) }
            } else {
                let mut view = ops::show_run(store.as_ref(), run)?;
                if json {
                    if !state.is_empty() {
                        view.snapshot.nodes.retain(|n| state.contains(&n.state));
                    }
                    print_serialized(&view)
                } else {
                    out(render::show_text(&view, all, &state))
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { run, node, follow } => {
            let store = ops::open_read_only(&db)?;
            let logs = ops::logs(store.as_ref(), run, node.as_deref())?;
            if follow {
                follow_logs(store.as_ref(), &logs, json).await?;
            } else if json {
                print_json(&to_json(&logs));
            } else {
                out(logs_text(&logs));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { target, format, plan, input, collapse, all, edge_labels } => {
            let input = input.map(|s| parse_input(&s)).transpose()?;
            let mut view = ops::graph_with(&db, &target, plan, input, all).await?;
            view.arg_labels = edge_labels;
            match ops::draw(&view, if json { GraphFormat::Json } else { format.into() }, collapse)? {
                Drawing::Text(text) => out(text),
                Drawing::Json(value) => print_json(&value),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Signal { run, name, value } => {
            let value = parse_input(&value)?;
            let sent = ops::signal(ops::open(&db)?.as_ref(), run, &name, &value)?;
            if json {
                print_json(&to_json(&sent));
            } else {
                let note = if sent.needs_recover {
                    format!("; its orchestrator is gone: `recover {run}` resumes it")
                } else {
                    String::new()
                };
                match sent.node {
                    Some(node) => out(format!("sent `{name}` to node {node} of run {run}{note}\n")),
                    None => out(format!(
                        "sent `{name}` to run {run}: no node waits for it this moment; the next \
                         `wait_for(\"{name}\")` gets it{note}\n"
                    )),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause { run } => {
            let outcome = ops::pause(ops::open(&db)?.as_ref(), run)?;
            print_pause(&outcome, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { run } => {
            let outcome = ops::resume(ops::open(&db)?.as_ref(), run)?;
            print_pause(&outcome, json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifest => {
            // Kept in every binary: a server looks for it before running an uploaded file.
            std::hint::black_box(ops::MANIFEST_MARKER);
            print_json(&to_json(&ops::manifest(registry).await));
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover { run, options } => {
            let stored = ops::show(ops::open(&db)?.as_ref(), run)?.run;
            let outcome = ops::recover(&options.runner(&db, Some(&stored)), run).await?;
            Ok(report(&outcome, json))
        }
        Command::Rerun { run, from, options } => {
            let stored = ops::show(ops::open(&db)?.as_ref(), run)?.run;
            let outcome = ops::rerun_from(&options.runner(&db, Some(&stored)), run, &from).await?;
            Ok(report(&outcome, json))
        }
        Command::Clone { run, input, options } => {
            let patch = input.map(|s| parse_input(&s)).transpose()?;
            let stored = ops::show(ops::open_read_only(&db)?.as_ref(), run)?.run;
            let outcome = ops::clone_run(&options.runner(&db, Some(&stored)), run, patch.as_ref()).await?;
            Ok(report(&outcome, json))
        }
        Command::RunOne { run, node, options } => {
            let stored = ops::show(ops::open(&db)?.as_ref(), run)?.run;
            let outcome = ops::run_one(&options.runner(&db, Some(&stored)), run, &node).await?;
            Ok(report_one(&outcome, json))
        }
        Command::Worker { queue, slots, once, claim_ttl } => {
            let options = crate::worker::Options { queue, slots: usize::from(slots), once, claim_ttl };
            let report: crate::worker::Report = std::sync::Arc::new(|line: String| eprintln!("{line}"));
            let summary = crate::worker::work(&db, registry, options, report, crate::driver::stop_signals()).await?;
            if json {
                print_json(&to_json(&summary));
            } else {
                eprintln!(
                    "worker {} of queue `{}` stops: {} succeeded, {} failed, {} given up",
                    summary.owner, summary.queue, summary.succeeded, summary.failed, summary.lost
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { run, node: Some(node) } => {
            let outcome = ops::cancel_node(ops::open(&db)?.as_ref(), run, &node).await?;
            if json {
                print_json(&to_json(&outcome));
            } else {
                out(format!("run {run} node {} {}\n", outcome.node, outcome.state.as_str()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cancel { run, node: None } => {
            let outcome = ops::cancel(ops::open(&db)?.as_ref(), run).await?;
            if json {
                print_json(&to_json(&outcome));
            } else {
                out(format!("run {run} {}\n", outcome.state.as_str()));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

fn parse_input(text: &str) -> Result<Value> {
    let (text, origin) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| Error::new(ErrorKind::Input, format!("cannot read input file {path}: {e}")))?,
            format!("input file {path}"),
        ),
        None => (text.to_string(), "--input".to_string()),
    };
    serde_json::from_str(&text).map_err(|e| Error::new(ErrorKind::Input, format!("{origin} is not JSON: {e}")))
}

/// A node state by its name, as `show` prints it.
fn parse_node_state(text: &str) -> std::result::Result<NodeState, String> {
    NodeState::parse(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = NodeState::ALL.iter().map(|s| s.as_str()).collect();
        format!("`{text}` is not a node state; one of: {}", names.join(", "))
    })
}

/// A duration such as `30s`, `500ms` or `2m`.
fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let d: jiff::SignedDuration =
        text.parse().map_err(|e| format!("`{text}` is not a duration such as `30s` or `500ms`: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("`{text}` is negative"))
}

fn report(outcome: &RunOutcome, json: bool) -> ExitCode {
    if json {
        print_json(&to_json(outcome));
    } else {
        match outcome.state {
            RunState::Succeeded => {
                if let Some(output) = &outcome.output {
                    out(format!("{}\n", serde_json::to_string_pretty(output).unwrap_or_default()));
                }
                eprintln!("run {} of `{}` succeeded", outcome.run, outcome.workflow);
            }
            state => {
                let why = outcome.error.as_ref().map(|e| e.message()).unwrap_or("");
                let run = outcome.run;
                eprintln!("run {run} of `{}` {}: {why}", outcome.workflow, state.as_str());
                if state == RunState::Terminated {
                    eprintln!("see `show {run}` and `graph {run}`; a terminated run is final");
                } else {
                    eprintln!("see `show {run}` and `logs {run}`; `recover {run}` resumes it");
                }
            }
        }
    }
    if outcome.state == RunState::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `run-one`: the exit code is the node's, not the run's (the rest of the run may have failed
/// before); the run's state is printed.
fn report_one(one: &RunOneOutcome, json: bool) -> ExitCode {
    let run = &one.outcome;
    if json {
        print_json(&to_json(one));
    } else {
        match one.node_state {
            NodeState::Succeeded => {
                if let Some(output) = &one.node_output {
                    out(format!("{}\n", serde_json::to_string_pretty(output).unwrap_or_default()));
                }
                eprintln!("node {} (`{}`) of run {} succeeded", one.node, one.task, run.run);
            }
            state => {
                let why = one.node_error.as_ref().map(|e| e.message()).unwrap_or("");
                eprintln!("node {} (`{}`) of run {} {}: {why}", one.node, one.task, run.run, state.as_str());
                eprintln!("see `logs {} {}`", run.run, one.node);
            }
        }
        eprintln!("run {} of `{}` is {}", run.run, run.workflow, run.state.as_str());
    }
    if one.node_state == NodeState::Succeeded { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn print_pause(outcome: &PauseOutcome, json: bool) {
    if json {
        print_json(&to_json(outcome));
    } else if outcome.paused {
        out(format!("pausing run {}: no new node starts; running ones finish\n", outcome.run));
    } else {
        out(format!("resuming run {}: nodes start again\n", outcome.run));
    }
}

fn runs_text(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "no runs yet; start one with `run`\n".into();
    }
    let mut text = format!("{:>5}  {:<24} {:<12} {:<20} {:>9}\n", "run", "workflow", "state", "started", "duration");
    for r in runs {
        let started = r.started_at.map(format_time).unwrap_or_default();
        let duration = match (r.started_at, r.finished_at) {
            (Some(a), Some(b)) => render::human_ms(b - a),
            (Some(a), None) if matches!(r.state, RunState::Running | RunState::Paused) => {
                render::human_ms(now_ms() - a)
            }
            _ => String::new(),
        };
        text.push_str(&format!(
            "{:>5}  {:<24} {:<12} {:<20} {:>9}\n",
            r.id,
            r.workflow,
            r.state.as_str(),
            started,
            duration
        ));
    }
    for r in runs.iter().filter(|r| r.state == RunState::Interrupted) {
        text.push_str(&format!(
            "run {} was interrupted: its orchestrator stopped before the run ended; `recover {}` resumes it\n",
            r.id, r.id
        ));
    }
    text
}

fn logs_text(logs: &Logs) -> String {
    let mut text = String::new();
    for a in &logs.attempts {
        let how = match &a.error {
            Some(e) => format!("{}: {}", a.state.as_str(), e.message()),
            None => a.state.as_str().to_string(),
        };
        text.push_str(&format!(
            "── node {} {} · attempt {} · {} · {how}\n",
            a.node,
            logs.task(a.node),
            a.attempt,
            a.executor
        ));
        for l in logs.logs.iter().filter(|l| l.node == a.node && l.attempt == a.attempt) {
            text.push_str(&l.line);
            text.push('\n');
        }
    }
    if text.is_empty() {
        text.push_str("no attempts yet\n");
    }
    text
}

/// How often `logs --follow` looks for new lines.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(150);

/// Prints the log lines of `start`'s run (or node) as they are written, each attempt's lines
/// under a header when they begin, until the run ends (or is interrupted: nothing more is
/// written until it is recovered).
async fn follow_logs(store: &dyn crate::store::Store, start: &Logs, json: bool) -> Result<()> {
    let mut tasks: Option<Vec<String>> = None;
    let mut after = 0;
    let mut last = None;
    loop {
        let (state, lines) = ops::logs_after(store, start.run, start.node, after)?;
        let mut text = String::new();
        for (id, l) in lines {
            after = id;
            if json {
                text.push_str(&serde_json::to_string(&l).unwrap_or_default());
                text.push('\n');
                continue;
            }
            if last != Some((l.node, l.attempt)) {
                last = Some((l.node, l.attempt));
                let mut task = start.task(l.node).to_string();
                if task == "?" {
                    // A node that appeared after the start.
                    let now = match &tasks {
                        Some(t) if t.len() > l.node.index() => t,
                        _ => tasks.insert(ops::show(store, start.run)?.nodes.into_iter().map(|n| n.task).collect()),
                    };
                    task = now.get(l.node.index()).cloned().unwrap_or(task);
                }
                text.push_str(&format!("── node {} {task} · attempt {}\n", l.node, l.attempt));
            }
            text.push_str(&l.line);
            text.push('\n');
        }
        if !text.is_empty() {
            out(text);
        }
        if state.is_terminal() {
            return Ok(());
        }
        if state == RunState::Interrupted {
            eprintln!("run {} is interrupted: `recover {}` resumes it", start.run, start.run);
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

fn format_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%F %T").to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_000_000_000), "2026-11-18 11:06:40");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        use std::time::Duration;
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["bin", "--db", "x.db", "runs"]).unwrap();
        let b = Cli::try_parse_from(["bin", "runs", "--db", "x.db", "--json"]).unwrap();
        assert!(Cli::try_parse_from(["bin"]).unwrap().command.is_none(), "no subcommand runs the workflow");
        assert_eq!(a.db, "x.db");
        assert_eq!(b.db, "x.db");
        assert!(b.json);
    }
}
