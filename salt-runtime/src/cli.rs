//! The command line every workflow binary gets from `salt::main()`.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{NodeId, NodeState, RunId, RunSnapshot, RunState, now_ms};
use crate::progress::Progress;
use crate::registry::{Kind, Registry, TaskDescriptor};
use crate::render::{self, GraphView};
use crate::runner::{Executor, RunOutcome, Runner, default_parallelism};
use crate::store::{self, Store, Write};

/// Runs and inspects the workflows of this binary.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A salt workflow binary: runs its workflows and shows their runs.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    /// The database of runs: a SQLite file, as a path or `sqlite://PATH`.
    #[arg(long, global = true, env = "SALT_DB", default_value = ".salt/salt.db", value_name = "PATH|URL")]
    db: String,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// What to do; with none, run the binary's only workflow with its default input.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, clap::Args)]
struct RunOptions {
    /// Where attempts run: in this process, or each in a fresh process of this binary
    /// [default: inline; for recover, rerun and run-one: the run's own].
    #[arg(long, value_enum)]
    executor: Option<Executor>,

    /// How many nodes run at once [default: the number of cores; for recover, rerun and
    /// run-one: the run's own].
    #[arg(long, value_name = "N")]
    parallelism: Option<usize>,
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
    /// Show a run: its state, input, output and nodes.
    Show {
        /// The run.
        run: RunId,
    },
    /// Print the logs of a run, or of one of its nodes, attempt by attempt.
    Logs {
        /// The run.
        run: RunId,
        /// A node id, or a task name that names one node of the run.
        node: Option<String>,
    },
    /// Draw the graph of a run as it is now (also while it runs), or the plan of a workflow.
    Graph {
        /// A run id, or a workflow name (its plan).
        target: String,
        /// The output format.
        #[arg(long, value_enum, default_value_t = Format::Dot)]
        format: Format,
        /// Draw the plan of a workflow (implied when TARGET is not a run id).
        #[arg(long)]
        plan: bool,
        /// The input to plan with (default: the workflow's default input).
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// Draw the task-level view: one node per task, loops as cycles.
        #[arg(long)]
        collapse: bool,
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
    /// Cancel a run: no new node starts, running attempts are stopped.
    Cancel {
        /// The run.
        run: RunId,
    },
}

/// A graph format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Graphviz dot.
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// The documented JSON form.
    Json,
    /// SVG, drawn by Graphviz `dot` (which must be on the PATH).
    Svg,
}

/// The entry point of a workflow binary's command line.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let _bin = args.next();
    if args.next().is_some_and(|a| a == "__salt") && args.next().is_some_and(|a| a == "exec") {
        return crate::protocol::exec_main();
    }
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "salt".into());
    let command = Cli::command().name(name.clone()).bin_name(name).version(env!("CARGO_PKG_VERSION"));
    let cli = match command.try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
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
    out(format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()));
}

fn usage(message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Usage, message)
}

/// A runner with the command's options; for a run taken over (`stored`), what is not given is
/// what the run had.
fn runner(db: &str, options: &RunOptions, stored: Option<&crate::model::RunRecord>) -> Runner {
    let executor = options
        .executor
        .or_else(|| stored.and_then(|r| Executor::from_str(&r.executor, true).ok()))
        .unwrap_or(Executor::Inline);
    let parallelism =
        options.parallelism.or_else(|| stored.map(|r| r.parallelism as usize)).unwrap_or_else(default_parallelism);
    Runner::new(db).executor(executor).parallelism(parallelism).progress(Progress::Auto).handle_ctrl_c(true)
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let registry = Registry::global()?;
    let db = cli.db;
    let command = cli.command.unwrap_or(Command::Run {
        workflow: None,
        input: None,
        options: RunOptions { executor: None, parallelism: None },
    });
    match command {
        Command::Run { workflow, input, options } => {
            let workflow = pick_workflow(registry, workflow.as_deref())?;
            let input = input.map(|s| parse_input(&s)).transpose()?;
            let input = Runner::input_for(workflow, input)?;
            let outcome = runner(&db, &options, None).run(workflow.name, input).await?;
            Ok(report(&outcome, cli.json))
        }
        Command::Runs { limit } => {
            let runs = open_read_only(&db)?.runs(limit).map_err(|e| e.into_error())?;
            if cli.json {
                print_json(&json!({ "runs": runs }));
            } else if runs.is_empty() {
                out("no runs yet; start one with `run`\n");
            } else {
                let mut text =
                    format!("{:>5}  {:<24} {:<12} {:<20} {:>9}\n", "run", "workflow", "state", "started", "duration");
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
                out(text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { run } => {
            let snapshot = load(&db, run)?;
            if cli.json {
                print_json(&serde_json::to_value(&snapshot).unwrap_or_default());
            } else {
                out(render::show_text(&snapshot));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs { run, node } => {
            let store = open_read_only(&db)?;
            let snapshot = store.load(run).map_err(|e| e.into_error())?;
            let node = node.map(|n| resolve_node(&snapshot, &n)).transpose()?;
            let logs = store.logs(run, node).map_err(|e| e.into_error())?;
            if cli.json {
                print_json(
                    &json!({ "run": run, "logs": logs, "attempts": snapshot.attempts.iter().filter(|a| node.is_none_or(|n| a.node == n)).collect::<Vec<_>>() }),
                );
            } else {
                out(logs_text(&snapshot, &logs, node));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph { target, format, plan, input, collapse } => {
            let view = match target.parse::<RunId>() {
                Ok(run) if !plan => {
                    if input.is_some() {
                        return Err(usage("`--input` is for plans: `graph WORKFLOW --plan --input JSON`"));
                    }
                    GraphView::of_run(&load(&db, run)?, &crate::plan::may_spawn(registry))
                }
                _ => {
                    let workflow = Runner::workflow(&target)?;
                    let input = input.map(|s| parse_input(&s)).transpose()?;
                    let input = Runner::input_for(workflow, input)?;
                    crate::plan::plan(workflow, input).await?
                }
            };
            let format = if cli.json { Format::Json } else { format };
            if collapse {
                let tasks = view.collapse();
                match format {
                    Format::Dot => out(tasks.to_dot()),
                    Format::Mermaid => out(tasks.to_mermaid()),
                    Format::Json => print_json(&tasks.to_json()),
                    Format::Svg => out(svg(&tasks.to_dot())?),
                }
            } else {
                match format {
                    Format::Dot => out(view.to_dot()),
                    Format::Mermaid => out(view.to_mermaid()),
                    Format::Json => print_json(&view.to_json()),
                    Format::Svg => out(svg(&view.to_dot())?),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Signal { run, name, value } => {
            let value = parse_input(&value)?;
            signal(&db, run, &name, value, cli.json)
        }
        Command::Pause { run } => pause(&db, run, true, cli.json),
        Command::Resume { run } => pause(&db, run, false, cli.json),
        Command::Manifest => {
            print_json(&manifest(registry).await);
            Ok(ExitCode::SUCCESS)
        }
        Command::Recover { run, options } => {
            let stored = open(&db)?.load(run).map_err(|e| e.into_error())?.run;
            let outcome = runner(&db, &options, Some(&stored)).recover(run).await?;
            Ok(report(&outcome, cli.json))
        }
        Command::Rerun { run, from, options } => {
            let snapshot = open(&db)?.load(run).map_err(|e| e.into_error())?;
            let node = resolve_node(&snapshot, &from)?;
            let outcome = runner(&db, &options, Some(&snapshot.run)).rerun_from(run, node).await?;
            Ok(report(&outcome, cli.json))
        }
        Command::RunOne { run, node, options } => {
            let snapshot = open(&db)?.load(run).map_err(|e| e.into_error())?;
            let node = resolve_node(&snapshot, &node)?;
            let outcome = runner(&db, &options, Some(&snapshot.run)).run_one(run, node).await?;
            Ok(report(&outcome, cli.json))
        }
        Command::Cancel { run } => cancel(&db, run, cli.json).await,
    }
}

/// The database, to read and write (created and migrated if needed).
fn open(db: &str) -> Result<Box<dyn Store>> {
    store::open(db).map_err(|e| e.into_error())
}

/// The database, only to read: never created or changed.
fn open_read_only(db: &str) -> Result<Box<dyn Store>> {
    store::open_read_only(db).map_err(|e| e.into_error())
}

/// A run, read only.
fn load(db: &str, run: RunId) -> Result<RunSnapshot> {
    open_read_only(db)?.load(run).map_err(|e| e.into_error())
}

fn pick_workflow(registry: &Registry, name: Option<&str>) -> Result<&'static TaskDescriptor> {
    if let Some(name) = name {
        return Runner::workflow(name);
    }
    let all: Vec<_> = registry.workflows().collect();
    match all.as_slice() {
        [one] => Ok(one),
        [] => Err(usage("this binary has no `#[workflow]`")),
        many => Err(usage(format!(
            "this binary has {} workflows; name one: {}",
            many.len(),
            many.iter().map(|d| d.name).collect::<Vec<_>>().join(", ")
        ))),
    }
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

/// A node given by id, or by a task name that names exactly one node of the run.
fn resolve_node(snapshot: &RunSnapshot, text: &str) -> Result<NodeId> {
    if let Ok(id) = text.parse::<NodeId>() {
        if (id as usize) < snapshot.nodes.len() {
            return Ok(id);
        }
        return Err(usage(format!("run {} has no node {id}", snapshot.run.id)));
    }
    let matches: Vec<_> = snapshot.nodes.iter().filter(|n| n.task == text).collect();
    match matches.as_slice() {
        [one] => Ok(one.id),
        [] => Err(usage(format!("run {} has no node of task `{text}`", snapshot.run.id))),
        many => Err(usage(format!(
            "run {} has {} nodes of task `{text}` ({}); give a node id",
            snapshot.run.id,
            many.len(),
            many.iter().map(|n| n.id.to_string()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn report(outcome: &RunOutcome, json: bool) -> ExitCode {
    if json {
        print_json(&serde_json::to_value(outcome).unwrap_or_default());
    } else {
        match outcome.state {
            RunState::Succeeded => {
                if let Some(output) = &outcome.output {
                    out(format!("{}\n", serde_json::to_string_pretty(output).unwrap_or_default()));
                }
                eprintln!("run {} of `{}` succeeded", outcome.run, outcome.workflow);
            }
            state => {
                let why = outcome.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
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

fn logs_text(snapshot: &RunSnapshot, logs: &[crate::model::LogRecord], node: Option<NodeId>) -> String {
    let mut text = String::new();
    for a in snapshot.attempts.iter().filter(|a| node.is_none_or(|n| a.node == n)) {
        let task = snapshot.nodes.get(a.node as usize).map(|n| n.task.as_str()).unwrap_or("?");
        let how = match &a.error {
            Some(e) => format!("{}: {}", a.state.as_str(), e.message),
            None => a.state.as_str().to_string(),
        };
        text.push_str(&format!("── node {} {task} · attempt {} · {} · {how}\n", a.node, a.attempt, a.executor));
        for l in logs.iter().filter(|l| l.node == a.node && l.attempt == a.attempt) {
            text.push_str(&l.line);
            text.push('\n');
        }
    }
    if text.is_empty() {
        text.push_str("no attempts yet\n");
    }
    text
}

fn svg(dot: &str) -> Result<String> {
    use std::process::{Command, Stdio};
    let mut child =
        Command::new("dot").arg("-Tsvg").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(|e| {
            usage(format!("`--format svg` needs Graphviz `dot` on the PATH ({e}); use `--format dot` instead"))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(dot.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| usage(format!("graphviz failed: {e}")))?;
    if !output.status.success() {
        return Err(usage(format!("graphviz failed: {}", output.status)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `manifest`: every task and workflow with its doc, schemas, policy and promises; each
/// workflow with its plan for its default input.
pub async fn manifest(registry: &Registry) -> Value {
    let describe = |d: &TaskDescriptor| {
        let mut v = json!({
            "name": d.name,
            "module": d.module,
            "doc": d.doc,
            "input_schema": (d.input_schema)(),
            "output_schema": (d.output_schema)(),
            "policy": d.policy,
            "label": d.label,
            "color": d.color,
            "promises": d.promises,
            "may_spawn": d.may_spawn,
        });
        if d.kind == Kind::Workflow {
            v["default_input"] = d.default_input.and_then(|t| serde_json::from_str(t).ok()).unwrap_or(Value::Null);
            v["schedule"] = json!(d.schedule);
        }
        v
    };
    let mut workflows = Vec::new();
    for d in registry.workflows() {
        let mut v = describe(d);
        v["plan"] = match Runner::input_for(d, None) {
            Ok(input) => match crate::plan::plan(d, input).await {
                Ok(view) => view.to_json(),
                Err(e) => json!({"error": e.message()}),
            },
            Err(_) => Value::Null,
        };
        workflows.push(v);
    }
    json!({
        "binary": std::env::current_exe().ok().and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned())),
        "salt_version": env!("CARGO_PKG_VERSION"),
        "tasks": registry.all().filter(|d| d.kind == Kind::Task).map(describe).collect::<Vec<_>>(),
        "workflows": workflows,
    })
}

async fn cancel(db: &str, run: RunId, json: bool) -> Result<ExitCode> {
    let store = open(db)?;
    let snapshot = store.load(run).map_err(|e| e.into_error())?;
    let state = snapshot.run.state;
    if state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", state.as_str())));
    }
    if matches!(state, RunState::Interrupted | RunState::Queued) {
        // No orchestrator to tell: record the cancellation ourselves.
        let at = now_ms();
        let mut writes: Vec<Write> = snapshot
            .nodes
            .iter()
            .filter(|n| !n.state.is_terminal())
            .map(|n| Write::NodeFinished {
                run,
                node: n.id,
                state: NodeState::Cancelled,
                output: None,
                error: None,
                at,
            })
            .collect();
        let error = crate::error::ErrorWire::new(ErrorKind::Cancelled, "cancelled with `cancel`");
        writes.push(Write::RunState { run, state: RunState::Cancelled, output: None, error: Some(error), at });
        // Take the run's lease, so that no orchestrator takes it over meanwhile.
        let lease = store
            .acquire_run_lease(run, &store::new_owner(), std::time::Duration::from_secs(30))
            .map_err(|e| e.into_error())?;
        let committed = store.commit(Some(&lease), &writes);
        let _ = store.release_run_lease(&lease);
        committed.map_err(|e| e.into_error())?;
    } else {
        store.request_cancel(run).map_err(|e| e.into_error())?;
        // The orchestrator polls for the request; wait until it has stopped the run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let state = store.load(run).map_err(|e| e.into_error())?.run.state;
            if state.is_terminal() || state == RunState::Interrupted {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!("run {run} did not stop within 30s; it is still {}", state.as_str()),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let state = store.load(run).map_err(|e| e.into_error())?.run.state;
    if json {
        print_json(&json!({"run": run, "state": state}));
    } else {
        out(format!("run {run} {}\n", state.as_str()));
    }
    Ok(ExitCode::SUCCESS)
}

fn signal(db: &str, run: RunId, name: &str, value: Value, json: bool) -> Result<ExitCode> {
    let store = open(db)?;
    let snapshot = store.load(run).map_err(|e| e.into_error())?;
    if snapshot.run.state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", snapshot.run.state.as_str())));
    }
    let waits = snapshot.waits.iter().filter(|w| w.name != crate::context::SLEEP_SIGNAL);
    let Some(wait) = waits.clone().find(|w| w.name == name) else {
        let names: Vec<&str> = waits.map(|w| w.name.as_str()).collect();
        return Err(usage(if names.is_empty() {
            format!("run {run} is not waiting for any signal")
        } else {
            format!("run {run} is not waiting for signal `{name}`; it waits for: {}", names.join(", "))
        }));
    };
    let validator = jsonschema::validator_for(&wait.schema)
        .map_err(|e| usage(format!("the schema of signal `{name}` is not valid: {e}")))?;
    let problems: Vec<String> =
        validator.iter_errors(&value).map(|e| format!("{} at `{}`", e, e.instance_path)).collect();
    if !problems.is_empty() {
        return Err(Error::new(
            ErrorKind::Input,
            format!(
                "signal `{name}` of run {run} does not match the type node {} waits for: {}\nexpected schema: {}",
                wait.node,
                problems.join("; "),
                serde_json::to_string(&wait.schema).unwrap_or_default()
            ),
        ));
    }
    store.send_signal(run, name, &value).map_err(|e| e.into_error())?;
    let note = if snapshot.run.state == RunState::Interrupted {
        format!("; its orchestrator is gone: `recover {run}` resumes it")
    } else {
        String::new()
    };
    if json {
        print_json(&json!({"run": run, "signal": name, "node": wait.node}));
    } else {
        out(format!("sent `{name}` to node {} of run {run}{note}\n", wait.node));
    }
    Ok(ExitCode::SUCCESS)
}

fn pause(db: &str, run: RunId, paused: bool, json: bool) -> Result<ExitCode> {
    let store = open(db)?;
    let state = store.load(run).map_err(|e| e.into_error())?.run.state;
    if state.is_terminal() {
        return Err(usage(format!("run {run} already ended: {}", state.as_str())));
    }
    store.set_paused(run, paused).map_err(|e| e.into_error())?;
    let word = if paused { "pausing" } else { "resuming" };
    if json {
        print_json(&json!({"run": run, "paused": paused}));
    } else {
        out(format!(
            "{word} run {run}: {}\n",
            if paused { "no new node starts; running ones finish" } else { "nodes start again" }
        ));
    }
    Ok(ExitCode::SUCCESS)
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
    fn global_options_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["bin", "--db", "x.db", "runs"]).unwrap();
        let b = Cli::try_parse_from(["bin", "runs", "--db", "x.db", "--json"]).unwrap();
        assert!(Cli::try_parse_from(["bin"]).unwrap().command.is_none(), "no subcommand runs the workflow");
        assert_eq!(a.db, "x.db");
        assert_eq!(b.db, "x.db");
        assert!(b.json);
    }
}
