//! Container steps: a command step with an image ([`crate::command::Command::image`]) runs its
//! program in a container, through Podman (or Docker where that is what the machine has).
//!
//! A container step is a command node like any other (the built-in task `command`, the image
//! carried in its input): only the way its process starts differs. The attempt runs
//! `ENGINE run --rm --name salt-RUN-NODE-ATTEMPT-XXXXXXXX … IMAGE PROGRAM ARGS…`, where
//!
//! - the attempt's logs directory is mounted at `/logs` (files the program writes there are
//!   copied into the attempt's log when it ends) and its results directory at `/results`
//!   (`$SALT_RESULT` is `/results/result.json`), as saltant's container tasks expect;
//! - the arguments, as JSON, are the file `/salt/args.json` (`$SALT_ARGS`), mounted read-only;
//! - the variables set by the call, the host variables it requires, and `SALT_RUN`,
//!   `SALT_NODE`, `SALT_ATTEMPT` are passed with `--env`;
//! - `cores` and `memory_mb` become `--cpus` and `--memory`.
//!
//! The engine is found once per process: `$SALT_CONTAINER_ENGINE` when set, else `podman` when
//! `podman info` succeeds, else `docker` when `docker info` does.

use std::path::Path;

use crate::command::CommandSpec;
use crate::error::{Error, Result};

/// Where the logs directory is mounted in the container.
pub const LOGS: &str = "/logs";
/// Where the results directory is mounted in the container.
pub const RESULTS: &str = "/results";
/// The arguments file in the container (`$SALT_ARGS`).
pub const ARGS: &str = "/salt/args.json";
/// The task's output in the container, for a `post` step action (`$SALT_OUTPUT`).
pub const OUTPUT: &str = "/salt/output.json";
/// The result file in the container (`$SALT_RESULT`).
pub const RESULT: &str = "/results/result.json";

/// How many lines of each file of the logs directory are copied into the attempt's log.
const LOG_FILE_LINES: usize = 10_000;

static ENGINE: tokio::sync::OnceCell<std::result::Result<String, String>> = tokio::sync::OnceCell::const_new();

/// The container engine of this machine (a program name or path), found once: an error naming
/// what was tried when there is none that runs.
pub async fn engine() -> Result<String> {
    let found = ENGINE.get_or_init(find_engine).await;
    found.clone().map_err(Error::fatal)
}

async fn find_engine() -> std::result::Result<String, String> {
    if let Some(engine) = std::env::var("SALT_CONTAINER_ENGINE").ok().filter(|e| !e.trim().is_empty()) {
        return Ok(engine);
    }
    let mut tried = Vec::new();
    for engine in ["podman", "docker"] {
        let out = tokio::process::Command::new(engine)
            .args(["info", "--format", "{{json .}}"])
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        match out {
            Ok(out) if out.status.success() => return Ok(engine.to_string()),
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
                tried.push(format!("`{engine} info` failed ({first})"));
            }
            Err(e) => tried.push(format!("`{engine}` cannot start ({e})")),
        }
    }
    Err(format!(
        "this step runs in a container, but no container engine works on this host: {}; install Podman, or set \
         SALT_CONTAINER_ENGINE",
        tried.join("; ")
    ))
}

/// Whether `engine` is Docker's command line (which lacks some of Podman's flags).
fn is_docker(engine: &str) -> bool {
    Path::new(engine).file_name().is_some_and(|n| n.to_string_lossy().contains("docker"))
}

/// The arguments that remove the container `name` at once, running or not.
pub fn remove_args(engine: &str, name: &str) -> Vec<String> {
    let mut args = vec!["rm".to_string(), "--force".to_string()];
    if !is_docker(engine) {
        args.extend(["--time".to_string(), "0".to_string()]);
    }
    args.push(name.to_string());
    args
}

/// Removes the container `name` and waits until it is gone: the removal is tried again while
/// the container exists, since a client killed while it was still creating the container may
/// leave it behind after a first removal found nothing, and the container must be found absent
/// twice in a row (at most about 10 s).
pub fn remove_now(engine: &str, name: &str) {
    let quiet = |args: Vec<String>| {
        std::process::Command::new(engine)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    let exists_args = || {
        let verb = if is_docker(engine) { "inspect" } else { "exists" };
        vec!["container".to_string(), verb.to_string(), name.to_string()]
    };
    let mut absent = 0;
    for _ in 0..20 {
        let _ = quiet(remove_args(engine, name));
        std::thread::sleep(std::time::Duration::from_millis(300));
        match quiet(exists_args()) {
            Ok(status) if status.success() => absent = 0,
            _ => absent += 1,
        }
        if absent == 2 {
            return;
        }
    }
}

/// A running container of an attempt: removed when dropped, unless [`Running::done`] said it
/// ended (an attempt that timed out or was cancelled drops it half-way).
pub(crate) struct Running {
    engine: String,
    name: String,
    /// The process group of the engine's client (`ENGINE run …`, under its guard).
    client: Option<i32>,
    done: bool,
}

impl Running {
    /// The container `name` that the client in process group `client` is running.
    pub(crate) fn new(engine: &str, name: &str, client: Option<i32>) -> Self {
        Running { engine: engine.to_string(), name: name.to_string(), client, done: false }
    }

    /// The container ended by itself (`run --rm` removed it).
    pub(crate) fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.done {
            // The client first: one still creating the container would otherwise create it
            // after the removal found nothing to remove.
            if let Some(group) = self.client {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), nix::sys::signal::Signal::SIGKILL);
            }
            remove_detached(&self.engine, &self.name);
        }
    }
}

/// Starts the removal of the container `name` ([`remove_now`]) without waiting for it. In a
/// salt binary, the removal runs in a process that is not this one's descendant (`<bin> __salt
/// remove-container --detach ENGINE NAME` starts it and exits), so that it finishes even when
/// this process exits, or its descendants are killed, first; elsewhere, in a thread.
pub(crate) fn remove_detached(engine: &str, name: &str) {
    use std::os::unix::process::CommandExt as _;
    if let Some(exe) = crate::command::guard_exe() {
        // A group of its own, so that a kill of this process's group does not stop it half-way.
        let started = std::process::Command::new(exe)
            .args(["__salt", "remove-container", "--detach", engine, name])
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if started.is_ok_and(|s| s.success()) {
            return;
        }
    }
    let (engine, name) = (engine.to_string(), name.to_string());
    std::thread::spawn(move || remove_now(&engine, &name));
}

/// `<bin> __salt remove-container [--detach] ENGINE NAME`: [`remove_now`]; with `--detach`,
/// in a new process of its own process group, without waiting for it. Arguments it cannot take
/// return the exit code and the message to print.
pub(crate) fn remove_main(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Result<std::process::ExitCode, (u8, String)> {
    use std::os::unix::process::CommandExt as _;
    let mut args: Vec<std::ffi::OsString> = args.collect();
    let detach = args.first().is_some_and(|a| a == "--detach");
    if detach {
        args.remove(0);
    }
    let [engine, name] = args.as_slice() else {
        return Err((2, "usage: __salt remove-container [--detach] ENGINE NAME".to_string()));
    };
    if detach {
        let Ok(exe) = std::env::current_exe() else { return Ok(std::process::ExitCode::FAILURE) };
        let spawned = std::process::Command::new(exe)
            .args([std::ffi::OsStr::new("__salt"), "remove-container".as_ref(), engine, name])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        return Ok(if spawned.is_ok() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE });
    }
    remove_now(&engine.to_string_lossy(), &name.to_string_lossy());
    Ok(std::process::ExitCode::SUCCESS)
}

/// Whether the process `pid` is removing a container (`<bin> __salt remove-container …`):
/// the kills of an attempt's processes leave it alone, so that the removal finishes.
pub(crate) fn is_remover(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let mut args = cmdline.split(|b| *b == 0).skip(1);
    args.next() == Some(b"__salt") && args.next() == Some(b"remove-container")
}

/// The containers (engine, name) that the guards among the processes `pids` watch (read from
/// their command lines, `<bin> __salt guard --container ENGINE NAME …`): a kill of these
/// processes must remove them, which the guards, killed too, cannot do.
pub(crate) fn guarded(pids: &[i32]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for pid in pids {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if let [_, salt, guard, flag, engine, name, ..] = args.as_slice()
            && salt == "__salt"
            && guard == "guard"
            && flag == "--container"
        {
            found.push((engine.clone(), name.clone()));
        }
    }
    found
}

/// The name of the container of an attempt.
pub(crate) fn name(run: impl std::fmt::Display, node: impl std::fmt::Display, attempt: u32, salt: u64) -> String {
    format!("salt-{run}-{node}-{attempt}-{:08x}", salt as u32)
}

/// What an attempt mounts and passes.
pub(crate) struct Mounts<'a> {
    /// The host directory mounted at [`LOGS`].
    pub logs: &'a Path,
    /// The host directory mounted at [`RESULTS`].
    pub results: &'a Path,
    /// The host file mounted at [`ARGS`].
    pub args: &'a Path,
    /// The host file mounted at [`OUTPUT`], for a `post` step action.
    pub output: Option<&'a Path>,
}

/// The arguments of `ENGINE run` for `spec` (whose `image` is set), up to and including the
/// program and its arguments.
pub(crate) fn run_args(
    spec: &CommandSpec,
    image: &str,
    name: &str,
    ids: [(&str, String); 3],
    mounts: &Mounts<'_>,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "--rm".into(), "--name".into(), name.into()];
    for (key, value) in &ids {
        a.push("--label".into());
        a.push(format!("io.salt.{}={value}", key.trim_start_matches("SALT_").to_lowercase()));
    }
    let mount = |host: &Path, inside: &str, ro: bool| {
        format!("type=bind,source={},destination={inside}{}", host.display(), if ro { ",readonly" } else { "" })
    };
    for (host, inside, ro) in [(mounts.logs, LOGS, false), (mounts.results, RESULTS, false), (mounts.args, ARGS, true)]
    {
        a.push("--mount".into());
        a.push(mount(host, inside, ro));
    }
    if let Some(output) = mounts.output {
        a.push("--mount".into());
        a.push(mount(output, OUTPUT, true));
    }
    // A host variable goes by name only: the engine reads its value from its own environment,
    // so no value (a token, say) is in the command line, the log or `ps`.
    for name in spec.require_env.iter().filter(|name| !spec.env.contains_key(*name)) {
        a.push("--env".into());
        a.push(name.clone());
    }
    let mut env: Vec<(String, String)> = Vec::new();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.push(("SALT_ARGS".into(), ARGS.into()));
    env.push(("SALT_RESULT".into(), RESULT.into()));
    env.push(("SALT_LOGS".into(), LOGS.into()));
    env.push(("SALT_RESULTS".into(), RESULTS.into()));
    if mounts.output.is_some() {
        env.push(("SALT_OUTPUT".into(), OUTPUT.into()));
    }
    env.extend(ids.iter().map(|(k, v)| (k.to_string(), v.clone())));
    for (key, value) in env {
        a.push("--env".into());
        a.push(format!("{key}={value}"));
    }
    if let Some(cores) = spec.cores {
        a.push("--cpus".into());
        a.push(cores.to_string());
    }
    if let Some(mb) = spec.memory_mb {
        a.push("--memory".into());
        a.push(format!("{mb}m"));
    }
    if let Some(dir) = &spec.current_dir {
        a.push("--workdir".into());
        a.push(dir.clone());
    }
    a.extend(spec.engine_args.iter().cloned());
    a.push(image.into());
    a.push(spec.program.clone());
    a.extend(spec.args.iter().cloned());
    a
}

/// What an exit code of `ENGINE run` means, when it is not the program's own: 125 (the engine
/// failed), 126 (the program cannot be run), 127 (no such program in the image). A code above
/// 128 is the program killed by signal `code - 128`.
pub(crate) fn engine_failure(code: i32) -> Option<&'static str> {
    match code {
        125 => Some("the container engine could not run the container"),
        126 => Some("the program cannot be run in the container"),
        127 => Some("the program is not found in the container"),
        _ => None,
    }
}

/// Copies the files the program wrote to the logs directory into the attempt's log, each line
/// as `[logs/FILE] line`, files by name.
pub(crate) fn copy_logs(dir: &Path, log: &mut dyn FnMut(String)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let Ok(bytes) = std::fs::read(&file) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().take(LOG_FILE_LINES) {
            log(format!("[logs/{name}] {line}"));
        }
        if lines.len() > LOG_FILE_LINES {
            log(format!("[logs/{name}] … {} more lines not copied", lines.len() - LOG_FILE_LINES));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_line_mounts_passes_and_limits() {
        let spec = CommandSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "true".into()],
            env: [("A".to_string(), "1".to_string())].into(),
            current_dir: Some("/work".into()),
            cores: Some(2),
            memory_mb: Some(64),
            engine_args: vec!["--network=none".into()],
            image: Some("localhost/img".into()),
            ..CommandSpec::default()
        };
        let mounts = Mounts {
            logs: Path::new("/s/logs"),
            results: Path::new("/s/results"),
            args: Path::new("/s/args.json"),
            output: None,
        };
        let ids = [("SALT_RUN", "7".to_string()), ("SALT_NODE", "3".to_string()), ("SALT_ATTEMPT", "1".to_string())];
        let a = run_args(&spec, "localhost/img", "salt-7-3-1-00000001", ids, &mounts).join(" ");
        assert_eq!(
            a,
            "run --rm --name salt-7-3-1-00000001 --label io.salt.run=7 --label io.salt.node=3 --label io.salt.attempt=1 \
             --mount type=bind,source=/s/logs,destination=/logs --mount type=bind,source=/s/results,destination=/results \
             --mount type=bind,source=/s/args.json,destination=/salt/args.json,readonly --env A=1 \
             --env SALT_ARGS=/salt/args.json --env SALT_RESULT=/results/result.json --env SALT_LOGS=/logs \
             --env SALT_RESULTS=/results --env SALT_RUN=7 --env SALT_NODE=3 --env SALT_ATTEMPT=1 --cpus 2 --memory 64m \
             --workdir /work --network=none localhost/img sh -c true"
        );
        assert_eq!(remove_args("podman", "n").join(" "), "rm --force --time 0 n");
        assert_eq!(remove_args("/usr/bin/docker", "n").join(" "), "rm --force n");
    }
}
