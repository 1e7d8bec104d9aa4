//! Command steps: executables run as nodes of the run's graph, next to Rust tasks.
//!
//! ```text
//! cargo run --example commands -- run pipeline --input '{"dir": "/tmp"}'
//! cargo run --example commands -- graph 1
//! cargo run --example commands -- logs 1 2
//! ```
//!
//! `pipeline` writes a file with one command, counts its lines with another (which reads its
//! arguments from `$SALT_ARGS` and writes its JSON result to `$SALT_RESULT`), gets a total
//! from a third (its last stdout line is its result), and reports with a Rust task. The other
//! workflows show what happens when a command fails, retries, times out or misses a variable;
//! the `container…` ones run their commands in a container (`in_container` needs an image with
//! a shell, like a busybox one: `--input '{"image": "IMAGE", "tag": "try"}'`).

use salt::prelude::*;

/// What `count` reads from `$SALT_ARGS`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CountArgs {
    /// The file to count the lines of.
    pub path: String,
}

/// What `count` writes to `$SALT_RESULT`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Counted {
    /// The number of lines.
    pub lines: u64,
}

/// What `total` prints as its last line.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Total {
    /// The total.
    pub total: u64,
}

/// Says what the pipeline found.
#[task]
async fn report(lines: u64, total: u64) -> String {
    format!("{lines} lines, total {total}")
}

/// Writes a file, counts its lines, computes a total, reports. Each command step appends its
/// name to `steps.log` in `dir`, so a test can tell what ran.
#[workflow(input = r#"{"dir": "."}"#)]
async fn pipeline(dir: String) -> salt::Result<String> {
    let path = format!("{dir}/fruit.txt");
    salt::shell(r#"echo fetch >> steps.log; printf 'apple\nbanana\ncherry\n' > "$OUT"; echo wrote "$OUT""#)
        .env("OUT", &path)
        .current_dir(&dir)
        .label("fetch")
        .color("lightblue")
        .await?;
    let counted = salt::shell(
        r#"echo count >> steps.log
path=$(sed 's/.*"path": *"\([^"]*\)".*/\1/' "$SALT_ARGS")
n=$(wc -l < "$path")
echo "counted $n lines of $path"
printf '{"lines": %d}' "$n" > "$SALT_RESULT""#,
    )
    .current_dir(&dir)
    .input(CountArgs { path })
    .result_file()
    .label("count")
    .await?;
    let lines = counted.json::<Counted>()?.lines;
    let total = salt::command_string(r#"sh -c 'echo total >> steps.log; echo computing; echo "{\"total\": 42}"'"#)
        .current_dir(&dir)
        .result_stdout()
        .label("total")
        .await?;
    report(lines, total.json::<Total>()?.total).await
}

/// A command that fails: `how` is `exit` (code 3, after writing to stdout and stderr) or
/// `signal` (it kills itself with SIGKILL).
#[workflow(input = r#"{"how": "exit"}"#)]
async fn fail(how: String) -> salt::Result<i32> {
    let script = match how.as_str() {
        "signal" => "echo about to die; kill -9 $$",
        _ => "echo working; echo 'disk full' >&2; exit 3",
    };
    Ok(salt::shell(script).await?.exit_code)
}

/// A command that fails twice, then succeeds: it counts its attempts in `dir/attempts`.
#[workflow(input = r#"{"dir": "."}"#)]
async fn flaky(dir: String) -> salt::Result<Vec<String>> {
    let out = salt::shell(
        r#"n=$(( $(cat attempts 2>/dev/null || echo 0) + 1 )); echo $n > attempts; echo "attempt $n"; [ $n -ge 3 ]"#,
    )
    .current_dir(&dir)
    .retries(2)
    .backoff("100ms")
    .await?;
    Ok(out.stdout_tail)
}

/// A command that runs past its timeout, with a background child that would write
/// `dir/grandchild` two seconds in: the timeout kills both.
#[workflow(input = r#"{"dir": "."}"#)]
async fn slow(dir: String) -> salt::Result<i32> {
    let out =
        salt::shell("(sleep 2; touch grandchild) & echo started; sleep 30").current_dir(&dir).timeout("1s").await?;
    Ok(out.exit_code)
}

/// A command of two seconds that records when it starts and ends, with a background child
/// that would write `dir/orphan` three seconds in: for killing its orchestrator half-way.
#[workflow(input = r#"{"dir": "."}"#)]
async fn once(dir: String) -> salt::Result<i32> {
    let script = "echo start >> started; (sleep 3; touch orphan) & sleep 2; echo done >> finished";
    let out = salt::shell(script).current_dir(&dir).await?;
    Ok(out.exit_code)
}

/// A command that needs `API_KEY` from the host: it prints the key's length.
#[workflow]
async fn needs_key() -> salt::Result<Vec<String>> {
    let out = salt::shell(r#"echo "key of ${#API_KEY} characters""#).require_env("API_KEY").await?;
    Ok(out.stdout_tail)
}

/// A command step in a container of `image` (a busybox image, say): it reads its JSON
/// arguments from `$SALT_ARGS`, prints what it was given, writes a file to `/logs` and its JSON
/// result to `$SALT_RESULT`. Its container is labelled `salt.test=TAG`.
#[workflow(input = r#"{"image": "localhost/salt-busybox:test", "tag": "example"}"#)]
async fn in_container(image: String, tag: String) -> salt::Result<serde_json::Value> {
    let script = r#"echo "args: $(cat "$SALT_ARGS")"
echo "greeting: $GREETING, key of ${#API_KEY} characters"
echo "memory limit: $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
sleep 0.2
echo 'a warning' >&2
echo 'written to /logs' > /logs/extra.log
n=$(sed 's/[^0-9]//g' "$SALT_ARGS")
printf '{"doubled": %d}' $((n * 2)) > "$SALT_RESULT""#;
    let out = salt::command("sh")
        .image(&image)
        .engine_args(["--label", &format!("salt.test={tag}")])
        .arg("-c")
        .arg(script)
        .input(serde_json::json!({"n": 21}))
        .env("GREETING", "hello")
        .require_env("API_KEY")
        .cores(1)
        .memory_mb(64)
        .result_file()
        .label("double")
        .await?;
    Ok(out.result.unwrap_or_default())
}

/// A command step in a container that fails: `how` is `exit` (code 3) or `signal` (its shell
/// is killed with SIGKILL).
#[workflow(input = r#"{"image": "localhost/salt-busybox:test", "tag": "example", "how": "exit"}"#)]
async fn container_fail(image: String, tag: String, how: String) -> salt::Result<i32> {
    let script = match how.as_str() {
        // Not the container's first process, which ignores signals it has no handler for. Both
        // lines on stderr (the shell says `Killed` there), so that their order is the same
        // every time.
        "signal" => r#"sh -c 'echo about to die >&2; kill -9 $$'; exit $?"#,
        _ => "echo working; sleep 0.2; echo 'disk full' >&2; exit 3",
    };
    let out = salt::shell(script).image(&image).engine_args(["--label", &format!("salt.test={tag}")]).await?;
    Ok(out.exit_code)
}

/// A command step in a container that runs past its timeout.
#[workflow(input = r#"{"image": "localhost/salt-busybox:test", "tag": "example"}"#)]
async fn container_slow(image: String, tag: String) -> salt::Result<i32> {
    let out = salt::shell("echo started; sleep 30")
        .image(&image)
        .engine_args(["--label", &format!("salt.test={tag}")])
        .timeout("1s")
        .await?;
    Ok(out.exit_code)
}

/// A command step of two seconds in a container, with `dir` mounted at `/work`, that records
/// when it starts and ends: for killing its orchestrator half-way.
#[workflow(input = r#"{"image": "localhost/salt-busybox:test", "tag": "example", "dir": "."}"#)]
async fn container_once(image: String, tag: String, dir: String) -> salt::Result<i32> {
    let out = salt::shell("echo start >> /work/started; sleep 2; echo done >> /work/finished")
        .image(&image)
        .engine_args([
            "--label".to_string(),
            format!("salt.test={tag}"),
            "--volume".to_string(),
            format!("{dir}:/work"),
        ])
        .await?;
    Ok(out.exit_code)
}

/// Counts the steps that ran; it holds one core while it runs.
#[task(cores = 1, memory_mb = 16)]
async fn tally(steps: Vec<i32>) -> usize {
    steps.len()
}

/// `steps` commands of half a second each, all spawned at once, each asking for `cores` cores
/// and `memory_mb` MiB: how many run together is what the machine offers (`--cores`,
/// `--memory-mb`). Each writes when it started and ended (ns) to `dir/start.N`, `dir/end.N`.
#[workflow(input = r#"{"dir": ".", "steps": 3, "cores": 2, "memory_mb": 0}"#)]
async fn crowd(dir: String, steps: u32, cores: u32, memory_mb: u64) -> salt::Result<usize> {
    let handles: Vec<_> = (0..steps)
        .map(|i| {
            let mut step = salt::shell(r#"date +%s%N > "start.$STEP"; sleep 0.5; date +%s%N > "end.$STEP""#)
                .env("STEP", i.to_string())
                .current_dir(&dir)
                .label(format!("step {i}"));
            if cores > 0 {
                step = step.cores(cores);
            }
            if memory_mb > 0 {
                step = step.memory_mb(memory_mb);
            }
            step.spawn()
        })
        .collect();
    let mut codes = Vec::new();
    for h in handles {
        codes.push(h.await?.exit_code);
    }
    tally(codes).await
}

/// The command line: `run`, `runs`, `show`, `logs`, `graph`… (`--help` lists them).
fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/commands.db")
}
