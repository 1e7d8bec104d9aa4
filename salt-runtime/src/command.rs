//! Command steps: an executable run as a node of the run's graph.
//!
//! [`command`] builds a call of the built-in task `command`, whose input is the command line
//! (program, arguments, environment, directory, …) and whose body runs the process. Called in a
//! body, it spawns a node through the same mutation as a `#[task]` call, with the call's policy
//! (retries, backoff, timeout, queue, priority) carried by the spawn and stored with the node:
//! so a command step is durable, retried, timed out, recovered, re-run (`rerun --from`,
//! `run-one`), checked against promises, drawn and logged like any task.
//!
//! The process:
//!
//! - gets its argument list as given (no shell, unless [`shell`] asks for one; [`command_string`]
//!   splits a line the way a POSIX shell splits words);
//! - sees the host's environment, the variables the call sets, and `SALT_ARGS` (a file holding
//!   the call's [`Command::input`] as JSON), `SALT_RESULT` (a file it may write its JSON result
//!   to), `SALT_RUN`, `SALT_NODE`, `SALT_ATTEMPT`;
//! - runs in a process group of its own: when its attempt ends, times out or is cancelled,
//!   the whole group is killed (what it left running in the background included);
//! - writes its stdout and stderr, line by line, to the attempt's log.
//!
//! Exit code 0 is success; any other code, or a signal, fails the attempt with the code (or the
//! signal's name) and the last lines of the log.

use std::collections::{BTreeMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::container;
use crate::context::{Annotation, Arg, Context, Handle, TaskValue, WireArg, hooks};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{BodyFuture, Kind, Policy, PolicyOverride, TaskDescriptor};

/// The name of the built-in task that runs commands.
pub const TASK: &str = "command";

/// How many lines of the log an error quotes, and an output keeps of stdout.
const TAIL_LINES: usize = 20;

/// The most of its stdout a command that keeps it ([`Command::keep_stdout`]) may print: 1 MiB.
pub const MAX_KEPT_STDOUT: usize = 1 << 20;

/// How long the output of a command that exited is still read (a process outside its group
/// may hold its pipes open).
const DRAIN: Duration = Duration::from_secs(2);

/// Whether this process's binary is a salt workflow binary (its `main` is salt's), so that it
/// can guard the commands it starts (`<bin> __salt guard PROGRAM ARGS…`).
static GUARD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Commands started from now on go through a guard process of this binary: call it only from
/// a binary whose `main` hands `__salt …` arguments to salt (`salt::main` does, and calls it).
pub fn enable_guard() {
    GUARD.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// This binary, when it can guard commands ([`enable_guard`]).
pub(crate) fn guard_exe() -> Option<PathBuf> {
    GUARD.load(std::sync::atomic::Ordering::Relaxed).then(|| std::env::current_exe().ok()).flatten()
}

/// `<bin> __salt guard [--container ENGINE NAME] PROGRAM ARGS…`: runs the command as its
/// child, in the guard's process group, and exits as it exits. If the process that started the
/// guard dies (an orchestrator or node process killed with `kill -9`, which runs nothing on its
/// way out), the guard removes the container `NAME` (when given) and kills its whole group, so
/// that no command outlives the attempt it belonged to; `recover` then runs the command again,
/// once. A guard that cannot start the command returns the exit code and the message to print.
pub(crate) fn guard_main(
    mut args: impl Iterator<Item = std::ffi::OsString>,
) -> Result<std::process::ExitCode, (u8, String)> {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitCode;
    let usage = || (2, "usage: __salt guard [--container ENGINE NAME] PROGRAM [ARGS…]".to_string());
    let mut program = args.next();
    let mut container = None;
    if program.as_deref().is_some_and(|p| p == "--container") {
        let (Some(engine), Some(name)) = (args.next(), args.next()) else { return Err(usage()) };
        container = Some((engine.to_string_lossy().into_owned(), name.to_string_lossy().into_owned()));
        program = args.next();
    }
    let Some(program) = program else { return Err(usage()) };
    let parent = nix::unistd::getppid();
    let mut child = std::process::Command::new(&program)
        .args(args)
        .spawn()
        .map_err(|e| (127, format!("cannot start `{}`: {e}", program.to_string_lossy())))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if let Some(code) = status.code() {
                    return Ok(ExitCode::from(code.clamp(0, 255) as u8));
                }
                // Killed by a signal: the same death for the guard, so that its parent sees it.
                let signal = status.signal().unwrap_or(9);
                if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
                    let _ = nix::sys::signal::kill(nix::unistd::getpid(), sig);
                    std::thread::sleep(Duration::from_millis(200));
                }
                return Ok(ExitCode::from((128 + signal).clamp(0, 255) as u8));
            }
            Ok(None) => {}
            Err(_) => return Ok(ExitCode::from(1)),
        }
        if nix::unistd::getppid() != parent {
            if let Some((engine, name)) = &container {
                // The client first, so that it cannot create the container after its removal.
                let _ = child.kill();
                container::remove_now(engine, name);
            }
            let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `program` can be started from `dir`: a path that exists, or a name found on `PATH`.
fn findable(program: &str, dir: Option<&str>) -> bool {
    if program.contains('/') {
        let path = std::path::Path::new(program);
        return match dir {
            Some(dir) if path.is_relative() => std::path::Path::new(dir).join(path).exists(),
            _ => path.exists(),
        };
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Where a command's JSON result comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultFrom {
    /// It has none.
    #[default]
    None,
    /// The file named by `$SALT_RESULT`, which it must write.
    File,
    /// The last non-empty line of its stdout.
    Stdout,
}

/// The input of the task `command`: what to run and how.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The executable: a path, or a name looked up in `PATH`.
    pub program: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables set for it (on top of the host's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The directory it runs in (the orchestrator's by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_dir: Option<String>,
    /// Host environment variables it needs: the attempt fails before it starts when one is not set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_env: Vec<String>,
    /// Its arguments as JSON, in the file named by `$SALT_ARGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Where its JSON result comes from.
    #[serde(default, skip_serializing_if = "is_none_result")]
    pub result: ResultFrom,
    /// The CPU cores it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// The memory it needs, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Whether its output keeps its whole stdout (at most [`MAX_KEPT_STDOUT`]; more fails the
    /// attempt).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_stdout: bool,
    /// The container image it runs in (through Podman or Docker); on the host without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// More arguments of `podman run` (or `docker run`), before the image: mounts, network….
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub engine_args: Vec<String>,
}

fn is_none_result(r: &ResultFrom) -> bool {
    *r == ResultFrom::None
}

/// What a command that exited with code 0 gives: the output of a `command` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommandOutput {
    /// Its exit code (0).
    pub exit_code: i32,
    /// The last lines of its stdout (at most 20).
    pub stdout_tail: Vec<String>,
    /// Its whole stdout, its lines ending with `\n`, when the call asked to keep it
    /// ([`Command::keep_stdout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Its JSON result, when the call declared one ([`Command::result_file`],
    /// [`Command::result_stdout`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl CommandOutput {
    /// Its JSON result decoded as a `T`; an error when it has none or it does not decode.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let value = self.result.clone().ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                "this command declared no result; call `.result_file()` or `.result_stdout()` on it",
            )
        })?;
        serde_json::from_value(value)
            .map_err(|e| Error::new(ErrorKind::Input, format!("the command's result does not match its type: {e}")))
    }
}

inventory::submit! {
    TaskDescriptor {
        name: TASK,
        kind: Kind::Task,
        module: module_path!(),
        doc: "Runs an executable (`salt::command`): exit code 0 is success.",
        input_schema: || serde_json::to_value(schemars::schema_for!(CommandSpec)).unwrap_or_default(),
        output_schema: || serde_json::to_value(schemars::schema_for!(CommandOutput)).unwrap_or_default(),
        run: body,
        check_input: |input| hooks::decode_input::<CommandSpec>(TASK, input.clone()).map(|_| ()),
        policy: Policy::DEFAULT,
        label: None,
        color: None,
        default_input: None,
        schedule: None,
        promises: &[],
        may_spawn: false,
    }
}

fn body(input: Value, ctx: Context) -> BodyFuture {
    Box::pin(async move {
        let spec: CommandSpec = hooks::decode_input(TASK, input)?;
        let output = execute(&spec, &ctx).await?;
        hooks::encode_output(TASK, &output)
    })
}

/// A command to run as a node: made by [`command`], [`command_string`] or [`shell`], set up
/// with its methods, then awaited (or [`Command::spawn`]ed for a handle).
///
/// ```no_run
/// use salt::prelude::*;
///
/// /// Transcodes one file with an external tool, retried twice, killed after 30 s.
/// #[workflow]
/// async fn transcode_one(path: String) -> salt::Result<i32> {
///     let out = salt::command("transcode")
///         .arg("--fast")
///         .arg(&path)
///         .env("LANG", "C")
///         .require_env("API_KEY")
///         .retries(2)
///         .timeout("30s")
///         .await?;
///     Ok(out.exit_code)
/// }
/// # fn main() {}
/// ```
#[must_use = "a command runs when it is awaited or spawned"]
pub struct Command {
    spec: CommandSpec,
    input: Option<Input>,
    policy: PolicyOverride,
    annotation: Annotation,
    /// A mistake in the call (a line that does not split, a bad duration): the node is not
    /// spawned, its handle fails with this.
    error: Option<Error>,
}

/// The `input` of a command: wired (inside a run, a value or another node's output), or to be
/// resolved (outside a run).
enum Input {
    Wire(Result<(String, WireArg)>),
    Direct(BoxFuture<'static, Result<Value>>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Command").field("spec", &self.spec).field("policy", &self.policy).finish_non_exhaustive()
    }
}

/// A command that runs `program` with no arguments (add them with [`Command::arg`]); no shell
/// is involved.
pub fn command(program: impl Into<String>) -> Command {
    let program = program.into();
    let label = std::path::Path::new(&program)
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    Command {
        spec: CommandSpec { program, ..CommandSpec::default() },
        input: None,
        policy: PolicyOverride::default(),
        annotation: Annotation::label(label),
        error: None,
    }
}

/// A command from one line, split into words as a POSIX shell splits them (quotes and
/// backslashes group and escape; nothing is expanded): `command_string("grep -c 'a b' f.txt")`
/// runs `grep` with `-c`, `a b` and `f.txt`. A line that does not split (an unclosed quote) or
/// is empty fails the call.
pub fn command_string(line: &str) -> Command {
    match shell_words::split(line) {
        Ok(words) if !words.is_empty() => {
            let mut words = words.into_iter();
            let program = words.next().unwrap_or_default();
            command(program).args(words)
        }
        Ok(_) => failed(format!("the command line `{line}` is empty")),
        Err(e) => failed(format!("the command line `{line}` does not split into words: {e}")),
    }
}

/// A command that runs `script` with `sh -c`: the one way to ask for a shell.
pub fn shell(script: impl Into<String>) -> Command {
    command("sh").arg("-c").arg(script)
}

fn failed(message: String) -> Command {
    let mut c = command("");
    c.error = Some(Error::new(ErrorKind::Usage, message));
    c
}

/// A duration given to [`Command::timeout`] or [`Command::backoff`]: a [`Duration`], or text
/// like `"30s"`, `"500ms"`, `"2m"`, `"1h"` (as in `#[task(timeout = "30s")]`).
pub trait IntoDuration {
    /// The duration, or what is wrong with the text.
    fn into_duration(self) -> std::result::Result<Duration, String>;
}

impl IntoDuration for Duration {
    fn into_duration(self) -> std::result::Result<Duration, String> {
        Ok(self)
    }
}

impl IntoDuration for &str {
    fn into_duration(self) -> std::result::Result<Duration, String> {
        let text = self.trim();
        let invalid =
            || format!("invalid duration `{text}`; expected a number followed by `ms`, `s`, `m` or `h`, like \"30s\"");
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let (number, unit) = text.split_at(split);
        let factor = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(invalid()),
        };
        let ms = number.parse::<u64>().ok().and_then(|n| n.checked_mul(factor)).ok_or_else(invalid)?;
        Ok(Duration::from_millis(ms))
    }
}

impl IntoDuration for String {
    fn into_duration(self) -> std::result::Result<Duration, String> {
        self.as_str().into_duration()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Command {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.spec.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.spec.env.insert(name.into(), value.into());
        self
    }

    /// Sets environment variables for the command.
    pub fn envs<K: Into<String>, V: Into<String>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        self.spec.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Runs the command in this directory.
    pub fn current_dir(mut self, dir: impl Into<String>) -> Self {
        self.spec.current_dir = Some(dir.into());
        self
    }

    /// Declares a host environment variable the command needs: each attempt checks it before
    /// it starts the process, and fails (without retries) with an error naming it when it is
    /// not set there (nor by [`Command::env`]).
    pub fn require_env(mut self, name: impl Into<String>) -> Self {
        self.spec.require_env.push(name.into());
        self
    }

    /// Arguments for the command as JSON, written to the file named by `$SALT_ARGS`: a value,
    /// or the [`Handle`] of another node (its output; the command then runs after it, by a
    /// data edge).
    pub fn input<T: TaskValue>(mut self, input: impl Into<Arg<T>>) -> Self {
        let arg: Arg<T> = input.into();
        self.input = Some(if Context::current().is_some() {
            Input::Wire(hooks::wire(arg, "input"))
        } else {
            Input::Direct(Box::pin(async move {
                let value = hooks::resolve(arg).await?;
                serde_json::to_value(value)
                    .map_err(|e| Error::new(ErrorKind::Input, format!("cannot encode the command's input: {e}")))
            }))
        });
        self
    }

    /// Declares a JSON result the command writes to the file named by `$SALT_RESULT`: an
    /// attempt that exits 0 without writing it, or writes something that is not JSON, fails.
    pub fn result_file(mut self) -> Self {
        self.spec.result = ResultFrom::File;
        self
    }

    /// Declares a JSON result printed as the last non-empty line of the command's stdout.
    pub fn result_stdout(mut self) -> Self {
        self.spec.result = ResultFrom::Stdout;
        self
    }

    /// Keeps the command's whole stdout in its output's `stdout` (not only the last 20 lines
    /// of `stdout_tail`): at most 1 MiB ([`MAX_KEPT_STDOUT`]); an attempt that prints more
    /// fails, saying so.
    pub fn keep_stdout(mut self) -> Self {
        self.spec.keep_stdout = true;
        self
    }

    /// Retries a failed attempt this many times.
    pub fn retries(mut self, retries: u32) -> Self {
        self.policy.retries = Some(retries);
        self
    }

    /// Waits this long before each retry (`"1s"`, or a [`Duration`]).
    pub fn backoff(mut self, delay: impl IntoDuration) -> Self {
        match delay.into_duration() {
            Ok(d) => {
                self.policy.backoff_ms = Some(millis(d));
                self.policy.backoff_cap_ms = None;
            }
            Err(e) => self.fail(format!("backoff: {e}")),
        }
        self
    }

    /// Waits `base` before the first retry, doubling at each one up to `cap`.
    pub fn backoff_exponential(mut self, base: impl IntoDuration, cap: impl IntoDuration) -> Self {
        match (base.into_duration(), cap.into_duration()) {
            (Ok(base), Ok(cap)) => {
                self.policy.backoff_ms = Some(millis(base));
                self.policy.backoff_cap_ms = Some(millis(cap));
            }
            (Err(e), _) | (_, Err(e)) => self.fail(format!("backoff: {e}")),
        }
        self
    }

    /// Kills an attempt (its whole process group) that runs longer than this (`"30s"`, or a
    /// [`Duration`]); the attempt fails and may be retried.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        match timeout.into_duration() {
            Ok(d) => self.policy.timeout_ms = Some(millis(d)),
            Err(e) => self.fail(format!("timeout: {e}")),
        }
        self
    }

    /// Runs the command from this queue: a worker of the queue (`<bin> worker --queue Q`)
    /// takes it.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.policy.queue = Some(queue.into());
        self
    }

    /// Among ready nodes, higher priorities start first.
    pub fn priority(mut self, priority: i32) -> Self {
        self.policy.priority = Some(priority);
        self
    }

    /// The label the graph draws (the program's file name by default).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.annotation.label = Some(label.into());
        self
    }

    /// The color the graph draws the node with.
    pub fn color(mut self, color: impl Into<String>) -> Self {
        self.annotation.color = Some(color.into());
        self
    }

    /// The CPU cores the command needs: run locally, its attempt waits in the ready queue
    /// until that many cores are free; asking for more than the machine offers fails the node,
    /// without retries, saying so.
    pub fn cores(mut self, cores: u32) -> Self {
        self.spec.cores = Some(cores);
        self.policy.cores = Some(cores);
        self
    }

    /// The memory the command needs, in MiB: run locally, its attempt waits in the ready queue
    /// until that much memory is free; asking for more than the machine offers fails the node,
    /// without retries, saying so.
    pub fn memory_mb(mut self, memory_mb: u64) -> Self {
        self.spec.memory_mb = Some(memory_mb);
        self.policy.memory_mb = Some(memory_mb);
        self
    }

    /// Runs the command in a container of this image, through Podman (or Docker where that is
    /// what the host has): the program and its arguments are looked up in the image; the
    /// attempt's logs and results directories are mounted at `/logs` and `/results`, its
    /// arguments at `/salt/args.json` (`$SALT_ARGS`), and `$SALT_RESULT` is
    /// `/results/result.json`. The variables set by [`Command::env`] and the host variables
    /// named by [`Command::require_env`] are passed in; [`Command::cores`] and
    /// [`Command::memory_mb`] limit the container; [`Command::current_dir`] is its working
    /// directory.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.spec.image = Some(image.into());
        self
    }

    /// Adds arguments to `podman run` (or `docker run`) for a command with an
    /// [image](Command::image), before the image: `["--network", "none"]`,
    /// `["--volume", "/data:/data:ro"]`….
    pub fn engine_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.spec.engine_args.extend(args.into_iter().map(Into::into));
        self
    }

    fn fail(&mut self, message: String) {
        self.error.get_or_insert(Error::new(ErrorKind::Usage, message));
    }

    /// Spawns the command's node now and returns its handle (inside a run); outside a run, the
    /// handle runs the command when awaited.
    pub fn spawn(self) -> Handle<CommandOutput> {
        let Command { mut spec, input, policy, annotation, error } = self;
        if let Some(e) = error {
            return hooks::direct(async move { Err(e) });
        }
        match Context::current() {
            Some(ctx) => {
                let mut args = spec_args(&spec);
                if let Some(input) = input {
                    match input {
                        Input::Wire(arg) => args.push(arg),
                        Input::Direct(_) => args.push(Err(Error::new(
                            ErrorKind::Usage,
                            "the command's input was given outside the run that spawns it",
                        ))),
                    }
                }
                ctx.spawn_with(TASK, args, policy, annotation)
            }
            None => hooks::direct(async move {
                if let Some(Input::Direct(value)) = input {
                    spec.input = Some(value.await?);
                }
                let ctx = Context::detached();
                let run = execute(&spec, &ctx);
                match policy.timeout_ms {
                    Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
                        .await
                        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, format!("timed out after {ms} ms")))),
                    None => run.await,
                }
            }),
        }
    }
}

/// The spec as the arguments of a spawn of [`TASK`], by name (the input is added by the caller).
fn spec_args(spec: &CommandSpec) -> Vec<Result<(String, WireArg)>> {
    let value = serde_json::to_value(spec).unwrap_or_default();
    let Value::Object(map) = value else { return Vec::new() };
    map.into_iter().map(|(k, v)| Ok((k, WireArg::Value(v)))).collect()
}

impl IntoFuture for Command {
    type Output = Result<CommandOutput>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<CommandOutput>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.spawn().into_future()
    }
}

/// The process group of a running command: killed, with everything in it, when dropped.
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A directory of one attempt's files, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The cores and memory of this machine (the memory when `/proc/meminfo` tells it).
pub(crate) fn machine() -> (u32, Option<u64>) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|info| {
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024)
    });
    (cores, memory_mb)
}

impl Command {
    /// Runs the command as a step action (`pre`, `post`, `on_failure` of `#[task]`) in the
    /// attempt of `ctx`, not as a node of its own: its lines go to the attempt's log. Its
    /// `$SALT_ARGS` is the task's input unless [`Command::input`] gave a value; `$SALT_STEP`
    /// names the step, `$SALT_OUTPUT` is a file holding the task's output as JSON (for `post`),
    /// `$SALT_ERROR` the attempt's error (for `on_failure`). Only [`Command::timeout`] of its
    /// policy applies: the rest is the task's.
    pub async fn run_as_step(self, ctx: &Context, step: &StepInfo) -> Result<()> {
        let Command { mut spec, input, policy, annotation: _, error } = self;
        if let Some(e) = error {
            return Err(e);
        }
        if policy.retries.is_some()
            || policy.backoff_ms.is_some()
            || policy.queue.is_some()
            || policy.priority.is_some()
        {
            return Err(Error::fatal(format!(
                "the {} command `{}` runs in its task's attempt: its retries, backoff, queue and priority are the                  task's; of its policy, only `.timeout(…)` applies",
                step.step, spec.program
            )));
        }
        spec.input = Some(match input {
            None => step.input.clone(),
            Some(Input::Wire(Ok((_, WireArg::Value(value))))) => value,
            Some(Input::Wire(Ok(_))) => {
                return Err(Error::fatal(format!(
                    "the {} command `{}` takes a value as its `.input(…)`, not the handle of a node",
                    step.step, spec.program
                )));
            }
            Some(Input::Wire(Err(e))) => return Err(e),
            Some(Input::Direct(value)) => value.await?,
        });
        spec.env.insert("SALT_STEP".into(), step.step.to_string());
        if let Some(error) = &step.error {
            spec.env.insert("SALT_ERROR".into(), error.clone());
        }
        let run = execute_with(&spec, ctx, step.output.as_ref());
        match policy.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run).await.unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::Timeout, format!("the {} command timed out after {ms} ms", step.step)))
            })?,
            None => run.await?,
        };
        Ok(())
    }
}

/// What a command run as a step action is told: which step it is, the task's input, and the
/// output or error of the attempt so far.
#[derive(Debug, Clone, Default)]
pub struct StepInfo {
    /// `pre`, `post` or `on_failure`.
    pub step: &'static str,
    /// The task's input, as JSON.
    pub input: Value,
    /// The task's output, for `post`.
    pub output: Option<Value>,
    /// The attempt's error, for `on_failure`.
    pub error: Option<String>,
}

/// Runs one attempt of a command.
async fn execute(spec: &CommandSpec, ctx: &Context) -> Result<CommandOutput> {
    execute_with(spec, ctx, None).await
}

/// Runs one attempt of a command, with `output` (the output of the task it is a step action
/// of) in the file `$SALT_OUTPUT`.
async fn execute_with(spec: &CommandSpec, ctx: &Context, output: Option<&Value>) -> Result<CommandOutput> {
    let program = spec.program.as_str();
    if program.is_empty() {
        return Err(Error::fatal("the command has no program to run"));
    }
    for name in &spec.require_env {
        if std::env::var_os(name).is_none() && !spec.env.contains_key(name) {
            return Err(Error::fatal(format!(
                "`{program}` requires the environment variable `{name}`, which is not set on this host"
            )));
        }
    }
    // Inside a run, the run's ready queue has checked the ask against what the run was given
    // (`--cores`, `--memory-mb`), and holds the node until it is free; outside a run, the
    // machine is the limit.
    let (cores, memory_mb) = if ctx.in_run() { (u32::MAX, None) } else { machine() };
    if let Some(want) = spec.cores.filter(|&c| c > cores) {
        return Err(Error::fatal(format!("`{program}` asks for {want} cores; this machine has {cores}")));
    }
    if let (Some(want), Some(have)) = (spec.memory_mb, memory_mb)
        && want > have
    {
        return Err(Error::fatal(format!("`{program}` asks for {want} MiB of memory; this machine has {have} MiB")));
    }

    let scratch = Scratch(std::env::temp_dir().join(format!(
        "salt-command-{}-{}-{}-{}-{:x}",
        ctx.run_id(),
        ctx.node_id(),
        ctx.attempt(),
        std::process::id(),
        rand_suffix()
    )));
    std::fs::create_dir_all(&scratch.0)
        .map_err(|e| Error::new(ErrorKind::Task, format!("cannot make {}: {e}", scratch.0.display())))?;
    let args_file = scratch.0.join("args.json");
    let mut result_file = scratch.0.join("result.json");
    let args_text = serde_json::to_string(spec.input.as_ref().unwrap_or(&Value::Null)).unwrap_or_default();
    std::fs::write(&args_file, args_text)
        .map_err(|e| Error::new(ErrorKind::Task, format!("cannot write {}: {e}", args_file.display())))?;

    let output_file = match output {
        Some(value) => {
            let file = scratch.0.join("output.json");
            std::fs::write(&file, serde_json::to_string(value).unwrap_or_default())
                .map_err(|e| Error::new(ErrorKind::Task, format!("cannot write {}: {e}", file.display())))?;
            Some(file)
        }
        None => None,
    };

    // In a container, the process started is `ENGINE run … IMAGE PROGRAM ARGS…`.
    let mut in_container = None;
    let (launcher, argv): (String, Vec<String>) = match &spec.image {
        Some(image) => {
            let engine = container::engine().await?;
            let logs = scratch.0.join("logs");
            let results = scratch.0.join("results");
            for dir in [&logs, &results] {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::new(ErrorKind::Task, format!("cannot make {}: {e}", dir.display())))?;
            }
            result_file = results.join("result.json");
            let name = container::name(ctx.run_id(), ctx.node_id(), ctx.attempt(), rand_suffix());
            let ids = [
                ("SALT_RUN", ctx.run_id().to_string()),
                ("SALT_NODE", ctx.node_id().to_string()),
                ("SALT_ATTEMPT", ctx.attempt().to_string()),
            ];
            let mounts =
                container::Mounts { logs: &logs, results: &results, args: &args_file, output: output_file.as_deref() };
            let argv = container::run_args(spec, image, &name, ids, &mounts);
            in_container = Some((engine.clone(), name, logs));
            (engine, argv)
        }
        None => (program.to_string(), spec.args.clone()),
    };
    let guard = guard_exe();
    let mut cmd = match &guard {
        Some(exe) => {
            if !findable(&launcher, spec.current_dir.as_deref().filter(|_| in_container.is_none())) {
                return Err(Error::fatal(format!("cannot start `{launcher}`: no such program or directory")));
            }
            let mut cmd = tokio::process::Command::new(exe);
            cmd.args(["__salt", "guard"]);
            if let Some((engine, name, _)) = &in_container {
                cmd.args(["--container", engine, name]);
            }
            cmd.arg(&launcher);
            cmd
        }
        None => tokio::process::Command::new(&launcher),
    };
    cmd.args(&argv)
        .envs(&spec.env)
        .env("SALT_ARGS", &args_file)
        .env("SALT_RESULT", &result_file)
        .env("SALT_RUN", ctx.run_id().to_string())
        .env("SALT_NODE", ctx.node_id().to_string())
        .env("SALT_ATTEMPT", ctx.attempt().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let (Some(file), None) = (&output_file, &in_container) {
        cmd.env("SALT_OUTPUT", file);
    }
    if let (Some(dir), None) = (&spec.current_dir, &in_container) {
        cmd.current_dir(dir);
    }
    let shown = std::iter::once(launcher.as_str()).chain(argv.iter().map(String::as_str));
    ctx.log(format!("[salt] $ {}", shell_words::join(shown)));
    let mut child = cmd.spawn().map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound { " (no such program or directory)" } else { "" };
        Error::fatal(format!("cannot start `{launcher}`: {e}{hint}"))
    })?;
    let mut group = Group(child.id().map(|pid| pid as i32));
    // Dropped before the group (declared after it): a container of an attempt that ends
    // half-way is removed, not only the engine's client killed.
    let mut running = in_container.as_ref().map(|(engine, name, _)| container::Running::new(engine, name, group.0));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::new(ErrorKind::Task, format!("`{program}` has no output pipes")));
    };
    let (mut out, mut err) = (BufReader::new(stdout), BufReader::new(stderr));
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut log_tail: VecDeque<String> = VecDeque::new();
    let mut stdout_tail: VecDeque<String> = VecDeque::new();
    let mut kept: Option<String> = spec.keep_stdout.then(String::new);
    let mut kept_over = false;
    let mut last_line: Option<String> = None;
    let mut status = None;
    // Armed once the process has exited.
    let drain = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(drain);
    let mut keep = |line: String, from_stdout: bool| {
        if from_stdout {
            if !line.trim().is_empty() {
                last_line = Some(line.clone());
            }
            if let Some(all) = kept.as_mut().filter(|_| !kept_over) {
                if all.len() + line.len() + 1 > MAX_KEPT_STDOUT {
                    kept_over = true;
                    all.clear();
                } else {
                    all.push_str(&line);
                    all.push('\n');
                }
            }
            stdout_tail.push_back(line.clone());
            if stdout_tail.len() > TAIL_LINES {
                stdout_tail.pop_front();
            }
        }
        log_tail.push_back(line.clone());
        if log_tail.len() > TAIL_LINES {
            log_tail.pop_front();
        }
        ctx.log(line);
    };
    while out_open || err_open || status.is_none() {
        tokio::select! {
            r = out.read_until(b'\n', &mut out_buf), if out_open => {
                if !matches!(r, Ok(n) if n > 0) {
                    out_open = false;
                }
                if !out_buf.is_empty() && (!out_open || out_buf.ends_with(b"\n")) {
                    keep(line_of(&mut out_buf), true);
                }
            }
            r = err.read_until(b'\n', &mut err_buf), if err_open => {
                if !matches!(r, Ok(n) if n > 0) {
                    err_open = false;
                }
                if !err_buf.is_empty() && (!err_open || err_buf.ends_with(b"\n")) {
                    keep(line_of(&mut err_buf), false);
                }
            }
            s = child.wait(), if status.is_none() => {
                status = Some(s.map_err(|e| Error::new(ErrorKind::Task, format!("cannot wait for `{launcher}`: {e}")))?);
                if let Some(running) = &mut running {
                    running.done();
                }
                // What it left running in the background ends with it.
                group.kill();
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
            }
            _ = &mut drain, if status.is_some() => break,
        }
    }
    let status = status.expect("the loop ends once the process has exited");
    if let Some((_, _, logs)) = &in_container {
        container::copy_logs(logs, &mut |line| keep(line, false));
    }
    let tail = || {
        if log_tail.is_empty() {
            " (its log is empty)".to_string()
        } else {
            format!("; the last lines of its log:\n{}", log_tail.iter().cloned().collect::<Vec<_>>().join("\n"))
        }
    };
    let code = match status.code() {
        Some(0) => 0,
        Some(code) if in_container.is_some() && container::engine_failure(code).is_some() => {
            let what = container::engine_failure(code).unwrap_or_default();
            return Err(Error::new(ErrorKind::Task, format!("`{program}`: {what} (exit code {code}){}", tail())));
        }
        Some(code) if in_container.is_some() && (129..=192).contains(&code) => {
            // The engine exits with 128 + N when the program was killed by signal N.
            let signal = code - 128;
            let name =
                nix::sys::signal::Signal::try_from(signal).map_or_else(|_| format!("{signal}"), |s| s.to_string());
            return Err(Error::new(
                ErrorKind::Task,
                format!("`{program}` was killed by signal {name} ({signal}){}", tail()),
            ));
        }
        Some(code) => {
            return Err(Error::new(ErrorKind::Task, format!("`{program}` exited with code {code}{}", tail())));
        }
        None => {
            use std::os::unix::process::ExitStatusExt;
            let signal = status.signal().unwrap_or_default();
            let name =
                nix::sys::signal::Signal::try_from(signal).map_or_else(|_| format!("{signal}"), |s| s.to_string());
            return Err(Error::new(
                ErrorKind::Task,
                format!("`{program}` was killed by signal {name} ({signal}){}", tail()),
            ));
        }
    };
    if kept_over {
        return Err(Error::fatal(format!(
            "`{program}` printed more than {} MiB on its stdout, the most a command that keeps its stdout may print",
            MAX_KEPT_STDOUT >> 20
        )));
    }
    let result = match spec.result {
        ResultFrom::None => None,
        ResultFrom::File => {
            let text = std::fs::read_to_string(&result_file).map_err(|e| {
                Error::new(
                    ErrorKind::Task,
                    format!("`{program}` exited with code 0 but wrote no result to $SALT_RESULT: {e}"),
                )
            })?;
            Some(parse_result(program, "the file $SALT_RESULT", &text)?)
        }
        ResultFrom::Stdout => {
            let line = last_line.ok_or_else(|| {
                Error::new(ErrorKind::Task, format!("`{program}` exited with code 0 but printed no result line"))
            })?;
            Some(parse_result(program, "its last stdout line", &line)?)
        }
    };
    Ok(CommandOutput { exit_code: code, stdout_tail: stdout_tail.into(), stdout: kept, result })
}

/// A complete line out of `buf` (which is emptied), without its line ending.
fn line_of(buf: &mut Vec<u8>) -> String {
    let mut line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    line
}

fn parse_result(program: &str, place: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text.trim()).map_err(|e| {
        let shown: String = text.chars().take(200).collect();
        Error::new(ErrorKind::Task, format!("the result of `{program}` in {place} is not JSON ({e}): {shown}"))
    })
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c: Command) -> CommandSpec {
        assert!(c.error.is_none(), "{:?}", c.error);
        c.spec
    }

    #[test]
    fn a_command_string_splits_quoted_words() {
        let s = spec(command_string(r#"grep -c 'a b' "c \"d\"" e\ f"#));
        assert_eq!(s.program, "grep");
        assert_eq!(s.args, ["-c", "a b", "c \"d\"", "e f"]);
        let bad = command_string("echo 'open");
        assert!(bad.error.unwrap().message().contains("does not split into words"));
        assert!(command_string("  ").error.unwrap().message().contains("is empty"));
    }

    #[test]
    fn durations_read_like_the_task_attribute() {
        assert_eq!("30s".into_duration(), Ok(Duration::from_secs(30)));
        assert_eq!("250ms".into_duration(), Ok(Duration::from_millis(250)));
        assert!("5 minutes".into_duration().is_err());
        let c = command("x").timeout("soon");
        assert!(c.error.unwrap().message().starts_with("timeout: invalid duration `soon`"));
    }

    #[tokio::test]
    async fn a_command_keeps_its_whole_stdout_when_asked_up_to_one_mib() {
        let out = shell("seq 1 30").keep_stdout().await.unwrap();
        assert_eq!(out.stdout_tail.len(), 20);
        assert_eq!(out.stdout.as_deref(), Some((1..=30).map(|i| format!("{i}\n")).collect::<String>().as_str()));
        assert_eq!(shell("seq 1 3").await.unwrap().stdout, None);
        let e = shell("head -c 1100000 /dev/zero | tr '\\0' x; echo").keep_stdout().await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fatal);
        assert_eq!(
            e.message(),
            "`sh` printed more than 1 MiB on its stdout, the most a command that keeps its stdout may print"
        );
    }

    #[tokio::test]
    async fn outside_a_run_a_command_runs_directly() {
        let out = shell("echo one; echo '{\"n\": 2}'").result_stdout().await.unwrap();
        assert_eq!(out.exit_code, 0);
        assert_eq!(out.stdout_tail, ["one", "{\"n\": 2}"]);
        assert_eq!(out.json::<serde_json::Map<String, Value>>().unwrap()["n"], 2);
        let e = shell("echo bad >&2; exit 3").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Task);
        assert_eq!(e.message(), "`sh` exited with code 3; the last lines of its log:\nbad");
        let e = shell("kill -TERM $$").await.unwrap_err();
        assert!(e.message().starts_with("`sh` was killed by signal SIGTERM (15)"), "{}", e.message());
        let e = command("sh").require_env("SALT_SURELY_UNSET_VARIABLE").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fatal);
        assert_eq!(
            e.message(),
            "`sh` requires the environment variable `SALT_SURELY_UNSET_VARIABLE`, which is not set on this host"
        );
        let e = command("sh").cores(1_000_000).await.unwrap_err();
        assert!(e.message().starts_with("`sh` asks for 1000000 cores; this machine has "), "{}", e.message());
    }

    #[tokio::test]
    async fn arguments_and_results_go_through_files() {
        let out = shell(r#"cat "$SALT_ARGS" > "$SALT_RESULT""#)
            .input(serde_json::json!({"a": [1, 2]}))
            .result_file()
            .await
            .unwrap();
        assert_eq!(out.result, Some(serde_json::json!({"a": [1, 2]})));
        let e = shell("true").result_file().await.unwrap_err();
        assert!(e.message().starts_with("`sh` exited with code 0 but wrote no result to $SALT_RESULT"));
        let e = shell("echo not json").result_stdout().await.unwrap_err();
        assert!(e.message().starts_with("the result of `sh` in its last stdout line is not JSON"), "{}", e.message());
    }
}
