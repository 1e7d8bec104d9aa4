//! The `commands` example end to end: command steps run as nodes of the graph, their logs,
//! exit codes, signals, JSON results, retries, timeouts (the whole process tree killed),
//! `rerun --from` and required variables, through the example's real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

/// The compiled `commands` example, in `target/<profile>/examples/`.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this test binary");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lives in target/<profile>/deps/");
    let path = profile_dir.join("examples").join(format!("commands{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "the `commands` example is not built at {}: run `cargo test -p salt-examples`",
        path.display()
    );
    path
}

/// Runs the example in `dir` with `args`, `API_KEY` unset.
fn commands(dir: &Path, args: &[&str]) -> Output {
    Command::new(example())
        .args(args)
        .current_dir(dir)
        .env_remove("API_KEY")
        .env_remove("SALT_DB")
        .stdin(Stdio::null())
        .output()
        .expect("the example starts")
}

/// Stdout and stderr of a command, for assertions and their messages.
fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `args` with `--json`, expects success, and parses stdout.
fn json_of(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = commands(dir, &args);
    assert!(out.status.success(), "{args:?}:\n{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}):\n{}", text(&out)))
}

fn input_dir(dir: &Path) -> String {
    json!({ "dir": dir.display().to_string() }).to_string()
}

fn steps(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("steps.log")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn a_pipeline_of_commands_runs_logs_and_reruns_from_a_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = commands(dir, &["run", "pipeline", "--input", &input_dir(dir)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#""3 lines, total 42""#);
    assert_eq!(steps(dir), ["fetch", "count", "total"]);

    // Nodes of the one graph: three `command` nodes labelled by the call, then a Rust task,
    // each running after the one whose result the workflow observed before it.
    let graph = json_of(dir, &["graph", "1", "--format", "json"]);
    let nodes: Vec<(u64, String, String)> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let label = n["label"].as_str().unwrap_or_default().to_string();
            (n["id"].as_u64().unwrap(), n["task"].as_str().unwrap().to_string(), label)
        })
        .collect();
    let shown: Vec<(u64, &str, &str)> = nodes.iter().map(|(i, t, l)| (*i, t.as_str(), l.as_str())).collect();
    assert_eq!(
        shown,
        [
            (0, "pipeline", "pipeline"),
            (1, "command", "fetch"),
            (2, "command", "count"),
            (3, "command", "total"),
            (4, "report", "report")
        ]
    );
    let mut edges: Vec<(u64, u64)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].as_u64().unwrap(), e["to"].as_u64().unwrap()))
        .collect();
    edges.sort();
    assert_eq!(edges, [(1, 2), (2, 3), (3, 4)]);

    // The command line and its output, line by line, are the attempt's log.
    let logs = commands(dir, &["logs", "1", "2"]);
    let logs = text(&logs);
    assert!(logs.contains("[salt] $ sh -c 'echo count >> steps.log"), "{logs}");
    assert!(logs.contains(&format!("counted 3 lines of {}/fruit.txt", dir.display())), "{logs}");
    // The result read from $SALT_RESULT is the node's output.
    let node = json_of(dir, &["show", "1", "2"]);
    assert_eq!(node["node"]["output"]["result"], json!({"lines": 3}), "{node}");
    assert_eq!(node["node"]["output"]["exit_code"], 0);

    // Re-running from the `count` command runs it and what follows it again, not `fetch`.
    let out = commands(dir, &["rerun", "1", "--from", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(steps(dir), ["fetch", "count", "total", "count", "total"]);
}

#[test]
fn a_failed_command_says_its_exit_code_or_signal_and_its_last_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = commands(dir, &["run", "fail"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let node = json_of(dir, &["show", "1", "1"]);
    let error = node["node"]["error"]["message"].as_str().unwrap().to_string();
    assert!(error.starts_with("`sh` exited with code 3; the last lines of its log:\n"), "{error}");
    let mut tail: Vec<&str> = error.lines().skip(1).collect();
    tail.sort();
    assert_eq!(tail, ["disk full", "working"], "stdout and stderr both reach the log");
    assert_eq!(node["node"]["error"]["kind"], "task");

    let out = commands(dir, &["run", "fail", "--input", r#"{"how": "signal"}"#]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let node = json_of(dir, &["show", "2", "1"]);
    assert_eq!(
        node["node"]["error"]["message"],
        "`sh` was killed by signal SIGKILL (9); the last lines of its log:\nabout to die"
    );
}

#[test]
fn a_command_is_retried_by_its_call_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let output = json_of(dir, &["run", "flaky", "--input", &input_dir(dir)]);
    assert_eq!(output["output"], json!(["attempt 3"]), "{output}");
    let node = json_of(dir, &["show", "1", "1"]);
    let errors: Vec<&str> =
        node["attempts"].as_array().unwrap().iter().map(|a| a["error"]["message"].as_str().unwrap_or("")).collect();
    assert_eq!(
        errors,
        [
            "`sh` exited with code 1; the last lines of its log:\nattempt 1",
            "`sh` exited with code 1; the last lines of its log:\nattempt 2",
            ""
        ]
    );
}

#[test]
fn a_timed_out_command_is_killed_with_its_whole_process_tree() {
    for executor in ["inline", "process", "pool"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let started = std::time::Instant::now();
        let out = commands(dir, &["run", "slow", "--executor", executor, "--input", &input_dir(dir)]);
        assert_eq!(out.status.code(), Some(1), "{executor}: {}", text(&out));
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{executor}: the run waited for the command");
        let node = json_of(dir, &["show", "1", "1"]);
        assert_eq!(node["node"]["error"]["kind"], "timeout", "{executor}: {node}");
        assert_eq!(node["node"]["error"]["message"], "attempt timed out after 1s and was killed");
        // The background child would have written its marker two seconds in.
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert!(!dir.join("grandchild").exists(), "{executor}: the grandchild outlived the timeout");
    }
}

#[test]
fn a_missing_required_variable_fails_before_the_command_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = commands(dir, &["run", "needs_key"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let node = json_of(dir, &["show", "1", "1"]);
    assert_eq!(
        node["node"]["error"]["message"],
        "`sh` requires the environment variable `API_KEY`, which is not set on this host"
    );
    assert_eq!(node["node"]["error"]["kind"], "fatal");
    assert_eq!(node["attempts"].as_array().unwrap().len(), 1, "not retried");
    let logs = text(&commands(dir, &["logs", "1", "1"]));
    assert!(!logs.contains("[salt] $"), "the command never started:\n{logs}");

    let out = Command::new(example())
        .args(["run", "needs_key"])
        .current_dir(dir)
        .env("API_KEY", "s3cret")
        .env_remove("SALT_DB")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!(["key of 6 characters"]));
}

#[test]
fn a_command_whose_orchestrator_is_killed_leaves_nothing_running_and_recover_completes_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().display().to_string();
    let input = json!({"dir": work}).to_string();
    let mut child = Command::new(example())
        .args(["run", "once", "--input", &input])
        .current_dir(dir.path())
        .env_remove("SALT_DB")
        .env("SALT_LEASE_TTL_MS", "1500")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !dir.path().join("started").exists() {
        assert!(std::time::Instant::now() < deadline, "the command never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: nothing runs on the orchestrator's way out
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    assert!(!dir.path().join("finished").exists(), "the command outlived its orchestrator");
    assert!(!dir.path().join("orphan").exists(), "a child of the command outlived its orchestrator");
    let out = commands(dir.path(), &["recover", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = |f: &str| std::fs::read_to_string(dir.path().join(f)).map(|s| s.lines().count()).unwrap_or(0);
    assert_eq!((lines("started"), lines("finished")), (2, 1), "ran again once, to completion");
}

// Container steps, through Podman and through Docker, and a tiny busybox image built here (no
// registry needed). Each test runs once per engine (`podman::NAME`, `docker::NAME`), ignored
// unless asked for with `--ignored` (`.ci/run` does); an engine that does not run then fails
// its tests, saying why.

/// A container engine of these tests, with the configuration they pass to it.
struct Engine {
    /// `podman` or `docker`.
    program: &'static str,
    /// A containers.conf for this host (`CONTAINERS_CONF`), for Podman.
    conf: Option<PathBuf>,
}

/// The tiny local image the container tests run.
const IMAGE: &str = "localhost/salt-busybox:test";

impl Engine {
    /// `program` with the tests' configuration of this engine.
    fn configured(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        if let Some(conf) = &self.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd
    }

    /// `ENGINE ARGS` with the tests' configuration.
    fn cmd(&self, args: &[&str]) -> Output {
        self.configured(self.program).args(args).output().unwrap()
    }

    /// The example, running its container steps on this engine.
    fn example(&self, dir: &Path) -> Command {
        let mut cmd = self.configured(example());
        cmd.current_dir(dir).env_remove("SALT_DB").env("SALT_CONTAINER_ENGINE", self.program);
        cmd
    }

    /// The names of the containers labelled `salt.test=TAG`, running or not.
    fn containers(&self, tag: &str) -> Vec<String> {
        let out = self.cmd(&["ps", "--all", "--filter", &format!("label=salt.test={tag}"), "--format", "{{.Names}}"]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    /// Waits (up to 15 s) until no container labelled `salt.test=TAG` is left.
    fn assert_none_left(&self, tag: &str, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let left = self.containers(tag);
            if left.is_empty() {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{}, {what}: containers left behind: {left:?}", self.program);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// Whether `ENGINE info` succeeds; why not when it does not.
    fn works(&self) -> Result<(), String> {
        match self.configured(self.program).arg("info").output() {
            Err(e) => Err(format!("{} cannot start: {e}", self.program)),
            Ok(out) if !out.status.success() => {
                Err(format!("`{} info` fails: {}", self.program, String::from_utf8_lossy(&out.stderr).trim()))
            }
            Ok(_) => Ok(()),
        }
    }

    /// The engine with the busybox image, built unless it is there (kept by its tag across
    /// runs).
    fn with_image(self) -> Self {
        let verb = if self.program == "docker" { "inspect" } else { "exists" };
        if !self.cmd(&["image", verb, IMAGE]).status.success() {
            build_image(&self);
        }
        self
    }
}

/// The soft limit `name` of /proc/self/limits ("Max open files"), at most 4096.
fn soft_limit(name: &str) -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next().and_then(|n| n.parse().ok()));
    soft.unwrap_or(1024).min(4096)
}

/// Podman and the busybox image, built once; panics, saying why, when Podman cannot start here
/// (missing, or `podman info` failing).
fn podman() -> &'static Engine {
    static PODMAN: std::sync::OnceLock<Result<Engine, String>> = std::sync::OnceLock::new();
    let podman = PODMAN.get_or_init(|| {
        // Podman's default ulimits are above what an unprivileged sandbox may set, and crun
        // refuses a hybrid cgroup hierarchy that runc accepts: these tests ask for limits
        // within the host's and for runc where it is installed.
        let conf = std::env::temp_dir().join("salt-tests-containers.conf");
        let runc = std::process::Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
        let (nofile, nproc) = (soft_limit("Max open files"), soft_limit("Max processes"));
        let mut text =
            format!("[containers]\ndefault_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n");
        if runc {
            text.push_str("[engine]\nruntime = \"runc\"\n");
        }
        // Written whole, then renamed: a test binary running beside this one reads either.
        let part = conf.with_extension(format!("{}", std::process::id()));
        std::fs::write(&part, text).unwrap();
        std::fs::rename(&part, &conf).unwrap();
        let podman = Engine { program: "podman", conf: Some(conf) };
        podman.works().map(|()| podman.with_image())
    });
    podman.as_ref().unwrap_or_else(|why| {
        panic!(
            "these tests need Podman, which does not run here: {why}; install Debian's `podman` \
             (.ci/run lists its companions)"
        )
    })
}

/// Docker and the busybox image, built once; panics, saying why, when Docker cannot start here
/// (no client, or no daemon answering `docker info`: `.ci/docker-up` starts one).
fn docker() -> &'static Engine {
    static DOCKER: std::sync::OnceLock<Result<Engine, String>> = std::sync::OnceLock::new();
    let docker = DOCKER.get_or_init(|| {
        let docker = Engine { program: "docker", conf: None };
        docker.works().map(|()| docker.with_image())
    });
    docker.as_ref().unwrap_or_else(|why| {
        panic!(
            "these tests need Docker, which does not run here: {why}; install `docker.io` and start \
             its daemon (.ci/docker-up)"
        )
    })
}

/// Runs each named test (a `fn(&Engine)`) once per engine: `podman::NAME` and `docker::NAME`,
/// both ignored unless asked for.
macro_rules! on_every_engine {
    ($($name:ident),* $(,)?) => {
        mod podman {
            $(
                #[test]
                #[ignore = "needs Podman (run with --include-ignored; .ci/run does)"]
                fn $name() {
                    super::$name(super::podman());
                }
            )*
        }
        mod docker {
            $(
                #[test]
                #[ignore = "needs Docker, .ci/docker-up (run with --include-ignored; .ci/run does)"]
                fn $name() {
                    super::$name(super::docker());
                }
            )*
        }
    };
}

on_every_engine!(
    a_container_step_reads_json_arguments_writes_a_json_result_and_logs,
    a_failed_container_step_says_its_exit_code_or_signal,
    a_timed_out_container_is_stopped_and_removed,
    a_container_whose_orchestrator_is_killed_is_removed_and_recover_runs_it_once,
);

/// Imports a root file system of a static busybox and its applets as [`IMAGE`].
fn build_image(engine: &Engine) {
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.is_file(), "the container tests need a static busybox at /bin/busybox (Debian: busybox-static)");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(tmp.path().join("rootfs/tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let tar = tmp.path().join("rootfs.tar");
    let out =
        Command::new("tar").arg("-C").arg(tmp.path().join("rootfs")).arg("-cf").arg(&tar).arg(".").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = engine.cmd(&["import", &tar.display().to_string(), IMAGE]);
    assert!(out.status.success(), "{} import: {}", engine.program, text(&out));
}

/// A tag unique to one test, for the label of its containers.
fn tag_of(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().trim_start_matches('.').to_string()
}

fn a_container_step_reads_json_arguments_writes_a_json_result_and_logs(engine: &Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = (tmp.path(), tag_of(tmp.path()));
    let input = json!({"image": IMAGE, "tag": tag}).to_string();
    let out =
        engine.example(dir).args(["run", "in_container", "--input", &input]).env("API_KEY", "s3cret").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!({"doubled": 42}));

    let node = json_of(dir, &["show", "1", "1"]);
    assert_eq!(node["node"]["task"], "command");
    assert_eq!(node["input"]["image"], IMAGE);
    let logs = text(&commands(dir, &["logs", "1", "1"]));
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines[0], "── node 1 command · attempt 1 · inline · succeeded", "{logs}");
    let run_line = lines[1];
    let start = format!("[salt] $ {} run --rm --name salt-1-1-1-", engine.program);
    assert!(run_line.starts_with(&start), "{logs}");
    for part in [
        "--label 'io.salt.run=1' --label 'io.salt.node=1' --label 'io.salt.attempt=1' --mount 'type=bind,source=",
        ",destination=/logs' --mount 'type=bind,source=",
        ",destination=/results' --mount 'type=bind,source=",
        "/args.json,destination=/salt/args.json,readonly' ",
        "--env API_KEY --env 'GREETING=hello' --env 'SALT_ARGS=/salt/args.json' \
         --env 'SALT_RESULT=/results/result.json'",
        "--cpus 1 --memory 64m",
        &format!("--label 'salt.test={tag}' localhost/salt-busybox:test sh -c "),
    ] {
        assert!(run_line.contains(part), "`{part}` not in {run_line}");
    }
    assert!(!logs.contains("s3cret"), "a host variable's value is not logged: {logs}");
    // The command line spans the lines of the script; what the container wrote follows.
    let output = lines.iter().position(|l| l.starts_with("args: ")).expect("the arguments are printed");
    assert_eq!(
        &lines[output..],
        [
            r#"args: {"n":21}"#,
            "greeting: hello, key of 6 characters",
            "memory limit: 67108864",
            "a warning",
            "[logs/extra.log] written to /logs",
        ],
        "{logs}"
    );
    engine.assert_none_left(&tag, "after the run");
}

fn a_failed_container_step_says_its_exit_code_or_signal(engine: &Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = (tmp.path(), tag_of(tmp.path()));
    for (run, how, message) in [
        (1, "exit", "`sh` exited with code 3; the last lines of its log:\nworking\ndisk full"),
        (2, "signal", "`sh` was killed by signal SIGKILL (9); the last lines of its log:\nabout to die\nKilled"),
    ] {
        let input = json!({"image": IMAGE, "tag": tag, "how": how}).to_string();
        let out = engine.example(dir).args(["run", "container_fail", "--input", &input]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}, {how}: {}", engine.program, text(&out));
        let node = json_of(dir, &["show", &run.to_string(), "1"]);
        assert_eq!(node["node"]["error"]["message"], message, "{}, {how}", engine.program);
    }
    engine.assert_none_left(&tag, "after the run");
}

fn a_timed_out_container_is_stopped_and_removed(engine: &Engine) {
    for executor in ["inline", "process", "pool"] {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, tag) = (tmp.path(), tag_of(tmp.path()));
        let input = json!({"image": IMAGE, "tag": tag}).to_string();
        let started = std::time::Instant::now();
        let out = engine
            .example(dir)
            .args(["run", "container_slow", "--executor", executor, "--input", &input])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{executor}: {}", text(&out));
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{executor}: the run waited for the container");
        let node = json_of(dir, &["show", "1", "1"]);
        assert_eq!(node["node"]["error"]["kind"], "timeout", "{executor}: {node}");
        engine.assert_none_left(&tag, executor);
    }
}

fn a_container_whose_orchestrator_is_killed_is_removed_and_recover_runs_it_once(engine: &Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, tag) = (tmp.path(), tag_of(tmp.path()));
    let input = json!({"image": IMAGE, "tag": tag, "dir": dir.display().to_string()}).to_string();
    let mut child = engine
        .example(dir)
        .args(["run", "container_once", "--input", &input])
        .env("SALT_LEASE_TTL_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !dir.join("started").exists() {
        assert!(std::time::Instant::now() < deadline, "the container never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: nothing runs on the orchestrator's way out
    child.wait().unwrap();
    engine.assert_none_left(&tag, "after the run");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(!dir.join("finished").exists(), "the container outlived its orchestrator");
    let out = engine.example(dir).args(["recover", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let lines = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.lines().count()).unwrap_or(0);
    assert_eq!((lines("started"), lines("finished")), (2, 1), "ran again once, to completion");
    engine.assert_none_left(&tag, "after the run");
}

#[test]
fn commands_that_ask_for_cores_never_run_beyond_what_the_machine_offers() {
    for executor in ["inline", "process", "pool"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let input = json!({"dir": dir.display().to_string(), "steps": 3, "cores": 2, "memory_mb": 0}).to_string();
        let args = ["run", "crowd", "--input", &input, "--executor", executor, "--cores", "4", "--parallelism", "8"];
        let out = commands(dir, &args);
        assert!(out.status.success(), "{executor}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
        let steps = salt_testkit::step_intervals(dir, 3);
        assert_eq!(
            salt_testkit::most_at_once(&steps),
            2,
            "{executor}: three 2-core steps on 4 cores: two at a time: {steps:?}"
        );
    }
}

#[test]
fn commands_that_ask_for_memory_never_run_beyond_what_the_machine_offers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = json!({"dir": dir.display().to_string(), "steps": 4, "cores": 0, "memory_mb": 300}).to_string();
    let out = commands(dir, &["run", "crowd", "--input", &input, "--memory-mb", "700", "--parallelism", "8"]);
    assert!(out.status.success(), "{}", text(&out));
    let steps = salt_testkit::step_intervals(dir, 4);
    assert_eq!(salt_testkit::most_at_once(&steps), 2, "four 300 MiB steps in 700 MiB: two at a time: {steps:?}");

    // Capped through the environment, one at a time.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = json!({"dir": dir.display().to_string(), "steps": 3, "cores": 0, "memory_mb": 300}).to_string();
    let out = Command::new(example())
        .args(["run", "crowd", "--input", &input, "--parallelism", "8"])
        .current_dir(dir)
        .env_remove("SALT_DB")
        .env("SALT_MEMORY_MB", "500")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let steps = salt_testkit::step_intervals(dir, 3);
    assert_eq!(salt_testkit::most_at_once(&steps), 1, "three 300 MiB steps in 500 MiB: one at a time: {steps:?}");
}

#[test]
fn a_command_that_asks_for_more_than_the_machine_offers_fails_without_starting() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = json!({"dir": dir.display().to_string(), "steps": 1, "cores": 8, "memory_mb": 0}).to_string();
    let out = commands(dir, &["run", "crowd", "--input", &input, "--cores", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let node = json_of(dir, &["show", "1", "1"]);
    assert_eq!(node["node"]["state"], "failed");
    assert_eq!(node["node"]["error"]["kind"], "fatal");
    assert_eq!(
        node["node"]["error"]["message"],
        "node 1 (`command`) asks for 8 cores; this machine offers 4 (see --cores)"
    );
    assert_eq!(node["attempts"], json!([]), "no attempt started");
    assert!(!dir.join("start.0").exists(), "the command never ran");
}
