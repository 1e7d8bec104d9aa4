//! The command line of `salt`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use salt_runtime::logging::LogFormat;

use crate::auth::Role;
use crate::client::{self, Client, ClientError, pretty, segment};
use crate::{db, registry, server};

/// Registers, serves and runs salt workflow binaries.
#[derive(Debug, Parser)]
#[command(name = "salt", version, about)]
pub struct Cli {
    /// The server the client commands talk to.
    #[arg(long, global = true, env = "SALT_SERVER", default_value = client::DEFAULT_SERVER, value_name = "URL")]
    pub server: String,

    /// The token to send to the server.
    #[arg(long, global = true, env = "SALT_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// How the engine's own log lines are written to stderr: text, or one JSON object a line
    /// (`RUST_LOG` filters them).
    #[arg(long, global = true, env = "SALT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--db` of the commands that work on the server's database directly.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArg {
    /// The server's database: a SQLite file (a path or `sqlite://PATH`) or a PostgreSQL URL
    /// (`postgres://USER@HOST/DB`).
    #[arg(long, env = "SALT_SERVER_DB", default_value = server::DEFAULT_DB, value_name = "PATH|URL")]
    pub db: String,
}

/// The commands of `salt`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// JSON DAG files (daggy's format): check one, draw its plan, or run it, each step a
    /// command node of one run on an embedded database.
    Dag {
        /// What to do.
        #[command(subcommand)]
        command: salt_dag::DagCommand,
        /// With `run`: the database the run is kept in.
        #[arg(long, global = false, default_value = ".salt/dag.db", value_name = "PATH")]
        dag_db: String,
    },
    /// The schedules: list them with their next fire times, trigger one, backfill one.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        command: crate::schedule::cli::ScheduleCommand,
    },
    /// Take attempts of some queues from the server and run them, each in a process of its
    /// binary (fetched once, checked against its sha256). Ctrl-C drains: running attempts
    /// finish, no new ones start.
    Worker(crate::worker::WorkerArgs),
    /// Serve the registry, the runs and the REST API.
    Server {
        /// The database: a SQLite file (a path or `sqlite://PATH`), or a PostgreSQL URL
        /// (`postgres://USER@HOST/DB`) that several servers may share.
        #[arg(long, env = "SALT_SERVER_DB", default_value = server::DEFAULT_DB, value_name = "PATH|URL")]
        db: String,
        /// Where to listen.
        #[arg(long, default_value = server::DEFAULT_LISTEN, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// The data directory: registered binaries are kept in DATA/binaries.
        #[arg(long, default_value = server::DEFAULT_DATA, value_name = "DIR")]
        data: PathBuf,
        /// Listen on a non-loopback address even when no token exists.
        #[arg(long)]
        open: bool,
    },
    /// Register a workflow binary: upload it to the server, or with --db store it directly.
    Register {
        /// The binary.
        binary: PathBuf,
        /// Register directly in this database (the server's), not through the server.
        #[arg(long, value_name = "PATH|URL")]
        db: Option<String>,
        /// With --db: the data directory of the server.
        #[arg(long, default_value = server::DEFAULT_DATA, value_name = "DIR")]
        data: PathBuf,
        /// A salt.toml with per-workflow settings (schedule, time zone, paused, queue, input,
        /// overlap and catch-up policies, events, webhooks) that override the binary's.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List the registered workflows with their versions.
    Workflows {
        /// Read this database (the server's) directly, not through the server.
        #[arg(long, value_name = "PATH|URL")]
        db: Option<String>,
    },
    /// List the queues, or change one: pause or resume it, limit how many of its attempts run
    /// at once across every worker and server.
    Queue {
        /// What to do.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Create, list or delete tokens (on the server's database).
    Token {
        /// What to do.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Start a run of a workflow on the server.
    Run {
        /// The workflow.
        workflow: String,
        /// Its input: a JSON object of its parameters, or @FILE to read it from a file
        /// [default: its default input].
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// The version to run [default: the latest].
        #[arg(long)]
        version: Option<i64>,
        /// Wait for the run to end and print its output, as a workflow binary's `run` does.
        #[arg(long)]
        wait: bool,
    },
    /// List runs, newest first.
    Runs {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs in these states (`failed,cancelled`).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
    },
    /// Show a run, or one of its nodes.
    Show {
        /// The run.
        run: i64,
        /// A node id, or a task name that names one node of the run.
        node: Option<String>,
        /// List superseded nodes too.
        #[arg(long)]
        all: bool,
    },
    /// Print the logs of a run, or of one of its nodes, attempt by attempt.
    Logs {
        /// The run.
        run: i64,
        /// A node id, or a task name that names one node of the run.
        node: Option<String>,
        /// Keep printing the lines as they are written, until the run ends (with `--json`,
        /// one JSON object a line).
        #[arg(long, short)]
        follow: bool,
    },
    /// Draw the graph of a run as it is now.
    Graph {
        /// The run.
        run: i64,
        /// The output format: dot, mermaid, json or svg.
        #[arg(long, default_value = "dot")]
        format: String,
        /// Draw the task-level view: one node per task.
        #[arg(long)]
        collapse: bool,
        /// Draw superseded nodes too.
        #[arg(long)]
        all: bool,
        /// Label each data edge with the parameter its value is passed as.
        #[arg(long)]
        edge_labels: bool,
    },
    /// Cancel a run, or kill one of its nodes.
    Cancel {
        /// The run.
        run: i64,
        /// Kill only this node (an id, or a task name that names one node).
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
    },
    /// Pause a run: no new node starts; running ones finish.
    Pause {
        /// The run.
        run: i64,
    },
    /// Resume a paused run.
    Resume {
        /// The run.
        run: i64,
    },
    /// Resume a failed, cancelled or interrupted run; no succeeded node runs again.
    Recover {
        /// The run.
        run: i64,
        /// Wait for the run to end.
        #[arg(long)]
        wait: bool,
    },
    /// Run a node and everything downstream of it again.
    Rerun {
        /// The run.
        run: i64,
        /// The node to start from: an id, or a task name that names one node.
        #[arg(long, value_name = "NODE")]
        from: String,
        /// Wait for the run to end.
        #[arg(long)]
        wait: bool,
    },
    /// Run exactly one node again (its upstream must have succeeded).
    RunOne {
        /// The run.
        run: i64,
        /// The node: an id, or a task name that names one node.
        node: String,
    },
    /// Send a signal to a run whose node waits for it.
    Signal {
        /// The run.
        run: i64,
        /// The signal's name.
        name: String,
        /// Its value, as JSON (or @FILE).
        value: String,
    },
}

/// `salt queue …`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// The queues: their settings, attempts waiting and running.
    Ls,
    /// Change a queue's settings; those not given stay as they are.
    Set {
        /// The queue: 1 to 128 letters, digits, `_`, `-` and `.`.
        #[arg(value_parser = queue_name)]
        name: String,
        /// At most this many of its attempts run at once, across every worker and server.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "no_limit")]
        concurrency: Option<u32>,
        /// Remove its concurrency limit.
        #[arg(long)]
        no_limit: bool,
        /// Give none of its attempts to workers until it is resumed.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Give its attempts to workers again.
        #[arg(long)]
        resume: bool,
        /// Only workers with these tokens (names, comma-separated) take its attempts; `""`:
        /// any worker.
        #[arg(long, value_name = "TOKEN,…")]
        private_to: Option<String>,
    },
}

/// `salt token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// Its name.
        name: String,
        /// What it may do.
        #[arg(long, value_enum)]
        role: Role,
        /// The server's database.
        #[command(flatten)]
        db: DbArg,
    },
    /// List the tokens (names and roles; never the tokens).
    Ls {
        /// The server's database.
        #[command(flatten)]
        db: DbArg,
    },
    /// Delete a token.
    Rm {
        /// Its name.
        name: String,
        /// The server's database.
        #[command(flatten)]
        db: DbArg,
    },
}

/// Runs the `salt` command line and returns its exit code.
pub fn main() -> ExitCode {
    // The `salt` binary is a workflow binary too (its `dag` workflow runs DAG files): as a node
    // process (`salt __salt exec`) and for its manifest, it speaks as every workflow binary does,
    // so that a server can register it and its workers run it.
    if std::env::args_os().nth(1).is_some_and(|a| a == "__salt" || a == "manifest") {
        return salt_runtime::cli::main();
    }
    // `salt dag run` starts commands: each through a guard of this binary.
    salt_runtime::command::enable_guard();
    let cli = Cli::parse();
    if let Some(warning) = salt_runtime::logging::install(false, cli.log_format) {
        eprintln!("warning: {warning}");
    }
    let json = cli.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(message, code, body)) => {
            if json {
                // The API's error body, on one line: what the server answered when it refused,
                // else a code for what failed here.
                let code_name = if code == 2 { "usage" } else { "failed" };
                let body = body.unwrap_or_else(|| json!({"error": code_name, "message": message, "details": null}));
                eprintln!("{body}");
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(code)
        }
    }
}

/// Runs a checked plan's file on the embedded store at `db`, printing progress on stderr and
/// the outcome on stdout; returns the exit code (0 when every step succeeded).
fn dag_run(spec_path: &std::path::Path, params: &[String], db: &str) -> u8 {
    let spec = match std::fs::read_to_string(spec_path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", spec_path.display());
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let runner = salt::Runner::new(db).progress(salt::Progress::Auto).handle_ctrl_c(true);
    let input = serde_json::json!({"spec": spec, "params": params});
    match rt.block_on(runner.run("dag", input)) {
        Ok(outcome) => {
            let state = outcome.state.as_str();
            match (&outcome.output, &outcome.error) {
                (Some(output), _) => {
                    out(format!("{}\n", serde_json::to_string_pretty(output).unwrap_or_default()));
                    eprintln!("run {} of `{}` {state} (database {db})", outcome.run, spec_path.display());
                }
                (None, Some(error)) => eprintln!("run {} {state}: {error} (database {db})", outcome.run),
                (None, None) => eprintln!("run {} {state} (database {db})", outcome.run),
            }
            u8::from(outcome.state != salt::RunState::Succeeded)
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// A command that failed: its message and exit code.
#[derive(Debug)]
struct Failure(String, u8, Option<Value>);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.to_string(), e.exit_code(), Some(e.to_json()))
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure(format!("{e:#}"), 1, None)
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure(message.into(), 2, None)
}

/// How long one request of `logs --follow` waits for new lines.
const FOLLOW_WAIT_MS: u64 = 10_000;

/// `logs --follow`: prints the lines of `run` (of `node`) as they are written, each attempt's
/// lines under a header when they begin (with `json`, one JSON object a line), until the run
/// ends or is interrupted.
fn follow_logs(client: &client::Client, run: i64, node: Option<&str>, json: bool) -> Result<(), Failure> {
    let node = node.map(|n| format!("&node={}", segment(n))).unwrap_or_default();
    let mut after = 0;
    let mut last: Option<(Value, Value)> = None;
    loop {
        let page = client.get(&format!("/runs/{run}/logs?after={after}&wait={FOLLOW_WAIT_MS}{node}"))?.json()?;
        let mut text = String::new();
        for l in page["lines"].as_array().into_iter().flatten() {
            if json {
                let record =
                    serde_json::json!({"node": l["node"], "attempt": l["attempt"], "ts": l["ts"], "line": l["line"]});
                text.push_str(&record.to_string());
                text.push('\n');
                continue;
            }
            let at = (l["node"].clone(), l["attempt"].clone());
            if last.as_ref() != Some(&at) {
                text.push_str(&format!("── node {} {} · attempt {}\n", at.0, l["task"].as_str().unwrap_or("?"), at.1));
                last = Some(at);
            }
            text.push_str(l["line"].as_str().unwrap_or_default());
            text.push('\n');
        }
        if !text.is_empty() {
            out(text);
        }
        after = page["next"].as_i64().unwrap_or(after);
        match page["state"].as_str().unwrap_or_default() {
            "succeeded" | "failed" | "cancelled" | "terminated" => return Ok(()),
            "interrupted" => {
                eprintln!("run {run} is interrupted: `salt recover {run}` resumes it");
                return Ok(());
            }
            _ => {}
        }
    }
}

fn out(text: impl AsRef<str>) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_ref().as_bytes());
    let _ = stdout.flush();
}

fn parse_json(text: &str, origin: &str) -> Result<Value, Failure> {
    let (text, origin) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read input file {path}: {e}")))?,
            format!("input file {path}"),
        ),
        None => (text.to_string(), origin.to_string()),
    };
    serde_json::from_str(&text).map_err(|e| usage(format!("{origin} is not JSON: {e}")))
}

/// A queue's name, checked as the server checks it.
fn queue_name(name: &str) -> Result<String, String> {
    crate::config::check_name("queue", name).map(|()| name.to_string())
}

/// `salt queue ls|set`.
fn queue(client: &Client, command: QueueCommand, json: bool) -> Result<u8, Failure> {
    let list = client.get("/queues")?.json()?;
    let queues = list["queues"].as_array().cloned().unwrap_or_default();
    match command {
        QueueCommand::Ls if json => out(pretty(&list)),
        QueueCommand::Ls => {
            let mut text = format!(
                "{:<20} {:<7} {:<12} {:>7} {:>7}  PRIVATE TO\n",
                "QUEUE", "STATE", "LIMIT", "WAITING", "RUNNING"
            );
            for q in &queues {
                let limit = q["concurrency"].as_u64().map_or("none".to_string(), |n| n.to_string());
                let private: Vec<&str> =
                    q["private_to"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                text.push_str(&format!(
                    "{:<20} {:<7} {:<12} {:>7} {:>7}  {}\n",
                    q["name"].as_str().unwrap_or_default(),
                    if q["active"].as_bool().unwrap_or(true) { "active" } else { "paused" },
                    limit,
                    q["ready"].as_i64().unwrap_or(0),
                    q["running"].as_i64().unwrap_or(0),
                    if private.is_empty() { "anyone".to_string() } else { private.join(", ") },
                ));
            }
            if queues.is_empty() {
                text.push_str("(no queue has settings or waiting attempts)\n");
            }
            out(text);
        }
        QueueCommand::Set { name, concurrency, no_limit, pause, resume, private_to } => {
            let now = queues.iter().find(|q| q["name"] == name.as_str());
            let mut body = json!({
                "active": now.and_then(|q| q["active"].as_bool()).unwrap_or(true),
                "private_to": now.map_or(json!([]), |q| q["private_to"].clone()),
                "concurrency": now.map_or(Value::Null, |q| q["concurrency"].clone()),
            });
            if pause || resume {
                body["active"] = json!(resume);
            }
            if let Some(n) = concurrency {
                body["concurrency"] = json!(n);
            }
            if no_limit {
                body["concurrency"] = Value::Null;
            }
            if let Some(p) = private_to {
                let names: Vec<&str> = p.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
                body["private_to"] = json!(names);
            }
            let set = client.put_json(&format!("/queues/{}", segment(&name)), &body)?.json()?;
            if json {
                out(pretty(&set));
            } else {
                let limit =
                    set["concurrency"].as_u64().map_or("no limit".to_string(), |n| format!("at most {n} at once"));
                let state = if set["active"].as_bool().unwrap_or(true) { "active" } else { "paused" };
                out(format!("queue `{name}`: {state}, {limit}\n"));
            }
        }
    }
    Ok(0)
}

/// Reads and checks a salt.toml.
fn read_config(path: &std::path::Path) -> Result<crate::config::SaltToml, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    crate::config::SaltToml::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let json = cli.json;
    let client = Client::new(&cli.server, cli.token.clone());
    match cli.command {
        Command::Dag { command, dag_db } => match command.execute(&mut std::io::stdout(), &mut std::io::stderr()) {
            salt_dag::Outcome::Exit(code) => Ok(code),
            salt_dag::Outcome::Run { args, .. } => {
                Ok(dag_run(&args.spec, &crate::dag::param_args(&args.params), &dag_db))
            }
        },
        Command::Schedule { command } => {
            let remote = crate::schedule::cli::Remote { server: cli.server, token: cli.token };
            Ok(crate::schedule::cli::code(&command.with_json(json), &remote))
        }
        Command::Worker(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure(format!("cannot start the async runtime: {e}"), 1, None))?;
            rt.block_on(crate::worker::run(args.options(cli.server, cli.token)))?;
            Ok(0)
        }
        Command::Server { db, listen, data, open } => {
            let tokens = db::any_token(&server::open_conn(&db)?).map_err(anyhow::Error::from)?;
            if let Some(why) = server::refuse_open(&listen, tokens, open) {
                return Err(Failure(why, 2, None));
            }
            let config = server::Config { db, listen, data, open };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure(format!("cannot start the async runtime: {e}"), 1, None))?;
            rt.block_on(server::serve(config))?;
            Ok(0)
        }
        Command::Register { binary, db: Some(db), data, config } => {
            let config = match config {
                Some(path) => Some(read_config(&path)?),
                None => None,
            };
            let conn = server::open_conn(&db)?;
            let registered = registry::register_file(&conn, &data, &binary, config.as_ref()).map_err(|e| match e {
                registry::RegisterError::Db(_) | registry::RegisterError::Io(_) => Failure(e.to_string(), 1, None),
                _ => usage(e.to_string()),
            })?;
            print_registered(&serde_json::to_value(registered).unwrap_or_default(), json);
            Ok(0)
        }
        Command::Register { binary, db: None, config, .. } => {
            let bytes = std::fs::read(&binary).map_err(|e| usage(format!("cannot read {}: {e}", binary.display())))?;
            let path = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
                    // Checked here too, so that a mistake is reported before the upload.
                    crate::config::SaltToml::parse(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?;
                    format!("/binaries?config={}", client::query_escape(&text))
                }
                None => "/binaries".to_string(),
            };
            // Whether this token may register, before uploading what may be hundreds of MB: a
            // refused upload ends in a broken pipe that says nothing of why.
            client.post_bytes("/binaries?check=true", &[]).map_err(|e| match e {
                ClientError::Refused { status: 401, .. } => usage(
                    "the server needs a valid token to register a binary: pass a token of the admin role \
                     with --token TOKEN or SALT_TOKEN=TOKEN (`salt token create NAME --role admin --db DB` \
                     creates one)",
                ),
                ClientError::Refused { status: 403, message, .. } => {
                    usage(format!("this token may not register binaries ({message}); registering needs the admin role"))
                }
                other => Failure::from(other),
            })?;
            let reply = client.post_bytes(&path, &bytes)?.json()?;
            print_registered(&reply, json);
            Ok(0)
        }
        Command::Workflows { db } => {
            let workflows = match db {
                Some(db) => {
                    let conn = server::open_conn(&db)?;
                    json!({ "workflows": registry::workflows(&conn).map_err(anyhow::Error::from)? })
                }
                None => client.get("/workflows")?.json()?,
            };
            if json {
                out(pretty(&workflows));
            } else {
                out(workflows_text(&workflows));
            }
            Ok(0)
        }
        Command::Token { command } => token(command, json),
        Command::Queue { command } => queue(&client, command, json),
        Command::Run { workflow, input, version, wait } => {
            let input = input.map(|s| parse_json(&s, "--input")).transpose()?;
            let mut body = json!({ "workflow": workflow });
            if let Some(input) = input {
                body["input"] = input;
            }
            if let Some(v) = version {
                body["version"] = json!(v);
            }
            let started = client.post_json("/runs", &body)?.json()?;
            let run = started["run"].as_i64().unwrap_or_default();
            if wait {
                return Ok(finish(&client.wait(run)?, json));
            }
            if json {
                out(pretty(&started));
            } else {
                out(format!("run {run} of `{workflow}` started (version {})\n", started["version"]));
            }
            Ok(0)
        }
        Command::Runs { limit, state, workflow } => {
            let mut query = format!("/runs?limit={}", limit.clamp(1, crate::api::MAX_PAGE));
            if let Some(s) = state {
                query.push_str(&format!("&state={}", segment(&s)));
            }
            if let Some(w) = workflow {
                query.push_str(&format!("&workflow={}", segment(&w)));
            }
            let page = client.get(&query)?.json()?;
            if json {
                out(pretty(&json!({ "runs": page["runs"] })));
            } else {
                out(client::runs_text(page["runs"].as_array().map(Vec::as_slice).unwrap_or_default()));
            }
            Ok(0)
        }
        Command::Show { run, node, all } => {
            let path = match &node {
                Some(n) => format!("/runs/{run}/nodes/{}", segment(n)),
                None => format!("/runs/{run}"),
            };
            if json {
                out(pretty(&client.get(&path)?.json()?));
            } else {
                out(client.get(&format!("{path}?format=text&all={all}"))?.body);
            }
            Ok(0)
        }
        Command::Logs { run, node, follow: true } => {
            follow_logs(&client, run, node.as_deref(), json)?;
            Ok(0)
        }
        Command::Logs { run, node, follow: false } => {
            let path = match &node {
                Some(n) => format!("/runs/{run}/logs?node={}", segment(n)),
                None => format!("/runs/{run}/logs"),
            };
            let mut logs = client.get(&path)?.json()?;
            if json {
                if let Some(o) = logs.as_object_mut() {
                    o.remove("tasks");
                }
                out(pretty(&logs));
            } else {
                out(client::logs_text(&logs));
            }
            Ok(0)
        }
        Command::Graph { run, format, collapse, all, edge_labels } => {
            let format = if json { "json".to_string() } else { format };
            let reply = client.get(&format!(
                "/runs/{run}/graph?format={}&collapse={collapse}&all={all}&edge_labels={edge_labels}",
                segment(&format)
            ))?;
            if format == "json" {
                out(pretty(&reply.json()?))
            } else {
                out(reply.body)
            }
            Ok(0)
        }
        Command::Cancel { run, node: Some(node) } => {
            let reply =
                client.post_json(&format!("/runs/{run}/nodes/{}/cancel", segment(&node)), &json!({}))?.json()?;
            if json {
                out(pretty(&reply));
            } else {
                out(format!("cancelling node {} of run {run}\n", reply["node"]));
            }
            Ok(0)
        }
        Command::Cancel { run, node: None } => {
            let reply = client.post_json(&format!("/runs/{run}/cancel"), &json!({}))?.json()?;
            if json {
                out(pretty(&reply));
            } else {
                out(format!("run {run} {}\n", reply["state"].as_str().unwrap_or_default()));
            }
            Ok(0)
        }
        Command::Pause { run } => {
            let reply = client.post_json(&format!("/runs/{run}/pause"), &json!({}))?.json()?;
            print_pause(run, &reply, json);
            Ok(0)
        }
        Command::Resume { run } => {
            let reply = client.post_json(&format!("/runs/{run}/resume"), &json!({}))?.json()?;
            print_pause(run, &reply, json);
            Ok(0)
        }
        Command::Recover { run, wait } => {
            let reply = client.post_json(&format!("/runs/{run}/recover"), &json!({}))?.json()?;
            accepted(&client, run, &reply, wait, json, format!("recovering run {run}"))
        }
        Command::Rerun { run, from, wait } => {
            let reply = client.post_json(&format!("/runs/{run}/rerun"), &json!({ "from": from }))?.json()?;
            let what = format!("rerunning run {run} from node {}", reply["node"]);
            accepted(&client, run, &reply, wait, json, what)
        }
        Command::RunOne { run, node } => {
            let reply = client.post_json(&format!("/runs/{run}/run_one"), &json!({ "node": node }))?.json()?;
            let what = format!("running node {} of run {run}", reply["node"]);
            accepted(&client, run, &reply, false, json, what)
        }
        Command::Signal { run, name, value } => {
            let value = parse_json(&value, "the signal's value")?;
            let sent =
                client.post_json(&format!("/runs/{run}/signal"), &json!({ "name": name, "value": value }))?.json()?;
            if json {
                out(pretty(&json!({ "run": sent["run"], "signal": sent["signal"], "node": sent["node"] })));
            } else {
                let note = if sent["needs_recover"] == true {
                    format!("; its orchestrator is gone: `salt recover {run}` resumes it")
                } else {
                    String::new()
                };
                match sent["node"].as_u64() {
                    Some(node) => out(format!("sent `{name}` to node {node} of run {run}{note}\n")),
                    None => out(format!(
                        "sent `{name}` to run {run}: no node waits for it this moment; the next \
                         `wait_for(\"{name}\")` gets it{note}\n"
                    )),
                }
            }
            Ok(0)
        }
    }
}

/// The engine that drives the server's runs: the run host.
fn accepted(client: &Client, run: i64, reply: &Value, wait: bool, json: bool, what: String) -> Result<u8, Failure> {
    if wait {
        return Ok(finish(&client.wait(run)?, json));
    }
    if json {
        out(pretty(reply));
    } else {
        out(format!("{what}\n"));
    }
    Ok(0)
}

fn finish(snapshot: &Value, json: bool) -> u8 {
    let (stdout, stderr, code) = client::report(snapshot, json);
    out(stdout);
    eprint!("{stderr}");
    code
}

fn print_pause(run: i64, reply: &Value, json: bool) {
    if json {
        out(pretty(reply));
    } else if reply["paused"] == true {
        out(format!("pausing run {run}: no new node starts; running ones finish\n"));
    } else {
        out(format!("resuming run {run}: nodes start again\n"));
    }
}

fn print_registered(registered: &Value, json: bool) {
    if json {
        out(pretty(registered));
        return;
    }
    let mut text = format!(
        "binary {} ({} bytes){}\n",
        registered["sha256"].as_str().unwrap_or_default(),
        registered["size"],
        if registered["new_binary"] == true { "" } else { ", already registered" }
    );
    for w in registered["workflows"].as_array().into_iter().flatten() {
        let note = if w["new_version"] == true { "new version" } else { "unchanged" };
        text.push_str(&format!("  {} v{} ({note})\n", w["workflow"].as_str().unwrap_or_default(), w["version"]));
    }
    out(text);
}

fn workflows_text(list: &Value) -> String {
    let workflows = list["workflows"].as_array().cloned().unwrap_or_default();
    if workflows.is_empty() {
        return "no workflows yet; register a binary with `salt register BINARY`\n".into();
    }
    let mut text = format!(
        "{:<24} {:>7} {:<14} {:<32} {:<7} {}\n",
        "workflow", "latest", "binary", "schedule", "paused", "versions"
    );
    for w in workflows {
        let versions: Vec<String> = w["versions"].as_array().into_iter().flatten().map(|v| v.to_string()).collect();
        let schedule = match (w["schedule"].as_str(), w["timezone"].as_str()) {
            (Some(cron), Some(tz)) => format!("{cron} ({tz})"),
            (Some(cron), None) => cron.to_string(),
            _ => "-".to_string(),
        };
        text.push_str(&format!(
            "{:<24} {:>7} {:<14} {:<32} {:<7} {}\n",
            w["name"].as_str().unwrap_or_default(),
            format!("v{}", w["latest"]),
            w["binary"].as_str().unwrap_or_default().get(..12).unwrap_or_default(),
            schedule,
            if w["paused"].as_bool() == Some(true) { "yes" } else { "no" },
            versions.join(", ")
        ));
    }
    text
}

fn token(command: TokenCommand, json: bool) -> Result<u8, Failure> {
    match command {
        TokenCommand::Create { name, role, db } => {
            let conn = server::open_conn(&db.db)?;
            let token = crate::auth::create_token(&conn, &name, role).map_err(usage)?;
            if json {
                out(pretty(&json!({ "name": name, "role": role, "token": token })));
            } else {
                out(format!("{token}\n"));
                eprintln!("token `{name}` ({}) created: keep it now, it is not shown again", role.as_str());
            }
            Ok(0)
        }
        TokenCommand::Ls { db } => {
            let conn = server::open_conn(&db.db)?;
            let tokens = db::tokens(&conn).map_err(anyhow::Error::from)?;
            let list: Vec<Value> =
                tokens.iter().map(|t| json!({ "name": t.name, "role": t.role, "created_at": t.created_at })).collect();
            if json {
                out(pretty(&json!({ "tokens": list })));
            } else if tokens.is_empty() {
                out("no tokens: the server is open to anyone who can reach it (loopback only by default)\n");
            } else {
                out(tokens.iter().map(|t| format!("{:<24} {}\n", t.name, t.role)).collect::<String>());
            }
            Ok(0)
        }
        TokenCommand::Rm { name, db } => {
            let conn = server::open_conn(&db.db)?;
            if !db::delete_token(&conn, &name).map_err(anyhow::Error::from)? {
                return Err(usage(format!("no token named `{name}`")));
            }
            out(format!("token `{name}` deleted\n"));
            Ok(0)
        }
    }
}
