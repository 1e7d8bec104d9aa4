//! Workflows the end-to-end tests drive through the real CLI. Each task that does work appends
//! a line to a marker file, so tests can count how often it really ran.
//!
//! `FLOWS_FAKE_NODE=<kind>` makes the first node process of a run misbehave on purpose
//! (`garbage`, `unknown`, `oversized`, `early_exit`, `bad_hello`, and `huge_first` and
//! `huge_log_first`, a 10 MB first line that is not a hello), to test that the orchestrator
//! survives it; later node processes behave.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use salt::prelude::*;

#[path = "flows/bypass.rs"]
mod bypass;
#[path = "flows/checked.rs"]
mod checked;

/// Appends one line to `dir/name`: one execution of `name`.
fn mark(dir: &str, name: &str) {
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(Path::new(dir).join(name)).expect("marker file");
    let _ = writeln!(f, "ran");
}

/// Counts a step's run, sleeps `slow_ms`, and returns `x + 1`.
#[task]
async fn step(dir: String, name: String, x: u64, slow_ms: u64) -> u64 {
    mark(&dir, &name);
    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    x + 1
}

/// Fails (for good) when `fail` is true; else returns `x * 10`.
#[task]
async fn maybe_fail(dir: String, x: u64, fail: bool) -> salt::Result<u64> {
    mark(&dir, "maybe_fail");
    if fail {
        return Err(salt::Error::fatal("asked to fail"));
    }
    Ok(x * 10)
}

/// Sums its inputs.
#[task]
async fn total(dir: String, xs: Vec<u64>) -> u64 {
    mark(&dir, "total");
    xs.iter().sum()
}

/// Returns `i * i`; fails (for good) when `i` is `fail_at`.
#[task]
async fn part(i: u64, fail_at: Option<u64>) -> salt::Result<u64> {
    if fail_at == Some(i) {
        return Err(salt::Error::fatal(format!("part {i} failed")));
    }
    Ok(i * i)
}

/// Sums the parts, and says in which order they came.
#[task]
async fn sum_parts(xs: Vec<u64>) -> String {
    format!("{} = {}", xs.iter().map(u64::to_string).collect::<Vec<_>>().join(" + "), xs.iter().sum::<u64>())
}

/// `part(0) … part(n - 1)`, passed to `sum_parts` as a list of handles without awaiting them.
#[workflow]
async fn fan_in(n: u64, fail_at: Option<u64>) -> salt::Result<String> {
    let parts: Vec<salt::Handle<u64>> = (0..n).map(|i| part(i, fail_at)).collect();
    sum_parts(parts).await
}

/// Adds one, or says there is nothing.
#[task]
async fn plus_one(x: Option<u64>) -> String {
    x.map_or_else(|| "nothing".to_string(), |x| (x + 1).to_string())
}

/// `plus_one` of an optional handle: `part(3)`'s, or none.
#[workflow]
async fn fan_in_option(some: bool) -> salt::Result<String> {
    let x = some.then(|| part(3, None::<u64>));
    plus_one(x).await
}

/// a -> b -> (c1, c2, c3) -> total -> maybe_fail: a small pipeline with a fan-out.
#[workflow]
async fn pipeline(dir: String, slow_ms: u64, fail: bool) -> salt::Result<u64> {
    let a = step(dir.clone(), "a", 0, slow_ms);
    let b = step(dir.clone(), "b", a, slow_ms);
    let b = b.await?;
    let cs: Vec<_> = (1..=3).map(|i| step(dir.clone(), format!("c{i}"), b, slow_ms)).collect();
    let cs = salt::join_all(cs).await?;
    let t = total(dir.clone(), cs);
    maybe_fail(dir, t, fail).await
}

/// Counts its run, then sleeps `slow_ms`; retried twice, so a kill that came back would show.
#[task(retries = 2, backoff = "10ms")]
async fn sleeper(dir: String, slow_ms: u64) -> u64 {
    mark(&dir, "sleeper");
    tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    1
}

/// `sleeper`, a step that depends on it, and an independent step; awaits the sleeper, then the
/// rest: the target of the tests that kill one node.
#[workflow]
async fn kill_target(dir: String, slow_ms: u64) -> salt::Result<u64> {
    let slow = sleeper(dir.clone(), slow_ms);
    let other = step(dir.clone(), "other", 0, 200);
    let after = step(dir.clone(), "after", &slow, 0);
    let slow = slow.await?;
    Ok(slow + other.await? + after.await?)
}

/// Runs `sh -c "sleep 60; touch DIR/side_effect"` and waits for it with a blocking call, as
/// task code that shells out does.
#[task]
async fn shells_out(dir: String) -> salt::Result<bool> {
    mark(&dir, "shells_out");
    let script = format!("sleep 60; touch {dir}/side_effect");
    let status = std::process::Command::new("sh").args(["-c", &script]).status()?;
    Ok(status.success())
}

/// `shells_out` beside an independent step, awaited by the root: the target of the test that
/// kills a node whose body blocks on a child process.
#[workflow]
async fn kill_shell(dir: String) -> salt::Result<bool> {
    let shell = shells_out(dir.clone());
    let other = step(dir, "other", 0, 200);
    other.await?;
    shell.await
}

/// A failing first step and a step that depends on it, which is skipped.
#[workflow]
async fn broken_chain(dir: String) -> salt::Result<u64> {
    let x = maybe_fail(dir.clone(), 1, true);
    step(dir, "after".to_string(), x, 0).await
}

/// Returns how many times it has run so far (a value that changes when it runs again).
#[task]
async fn runs_so_far(dir: String) -> u64 {
    mark(&dir, "runs_so_far");
    std::fs::read_to_string(Path::new(&dir).join("runs_so_far")).map(|s| s.lines().count() as u64).unwrap_or(0)
}

/// Passes a value on, by value: the workflow awaited it first.
#[workflow]
async fn by_value(dir: String) -> salt::Result<u64> {
    let n = runs_so_far(dir.clone()).await?;
    step(dir, "echo".to_string(), n, 0).await
}

/// Reads `dir/side`: which branch `flip` takes, a value a test changes between runs.
#[task]
async fn which_side(dir: String) -> String {
    mark(&dir, "which_side");
    std::fs::read_to_string(Path::new(&dir).join("side")).unwrap_or_default().trim().to_string()
}

/// Appends " tail" to what it is given.
#[task]
async fn tail(dir: String, s: String) -> String {
    mark(&dir, "tail");
    format!("{s} tail")
}

/// Branches on `which_side`: `left -> tail` (by handle), or `right` alone.
#[workflow]
async fn flip(dir: String) -> salt::Result<String> {
    let side = which_side(dir.clone()).await?;
    if side == "left" {
        let l = left(dir.clone());
        tail(dir, l).await
    } else {
        right(dir).await
    }
}

/// Reads `dir/width.txt`: how many items `resize` maps over, a value a test changes between runs.
#[task]
async fn width(dir: String) -> u64 {
    mark(&dir, "width");
    std::fs::read_to_string(Path::new(&dir).join("width.txt")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// `x * x`.
#[task]
async fn square(dir: String, x: u64) -> u64 {
    mark(&dir, "square");
    x * x
}

/// Returns `n`.
#[task]
async fn count(dir: String, n: u64) -> u64 {
    mark(&dir, "count");
    n
}

/// `width -> square* -> count`: one `square` per item, each ordered before `count` by a
/// control edge. Returns the sum of the squares plus the count.
#[workflow(promise = "width -> square* -> count")]
async fn resize(dir: String, ctx: &Context) -> salt::Result<u64> {
    let n = width(dir.clone()).await?;
    let squares: Vec<_> = (0..n).map(|i| square(dir.clone(), i)).collect();
    let c = count(dir.clone(), n);
    for s in &squares {
        ctx.edge(s, &c);
    }
    let sum: u64 = salt::join_all(squares).await?.iter().sum();
    Ok(sum + c.await?)
}

/// Retries on failure, but its child fails for good: no retry helps.
#[workflow(retries = 2, backoff = "10ms")]
async fn doomed(dir: String) -> salt::Result<u64> {
    maybe_fail(dir, 1, true).await
}

/// Looks up a rate: fails (retryably) when `fail`; runs past its timeout when `hang`.
#[task(timeout = "300ms")]
async fn rate(dir: String, fail: bool, hang: bool) -> salt::Result<String> {
    mark(&dir, "rate");
    if hang {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    if fail {
        return Err(salt::Error::msg("rate service down"));
    }
    Ok("live".to_string())
}

/// Handles a failed `rate` with a fallback: the failure is the workflow's, and it handled it.
#[workflow]
async fn fallback(dir: String, fail: bool, hang: bool) -> salt::Result<String> {
    match rate(dir, fail, hang).await {
        Ok(rate) => Ok(rate),
        Err(e) if e.kind() == salt::ErrorKind::Child => Ok("fallback".to_string()),
        Err(e) if e.kind() == salt::ErrorKind::Timeout => Ok(format!("fallback after a timeout ({e})")),
        Err(e) => Err(e),
    }
}

/// Spawns a `rate` that fails and never awaits it: nobody handles that failure.
#[workflow]
async fn unawaited(dir: String) -> salt::Result<String> {
    let _rate = rate(dir, true, false);
    Ok("done".to_string())
}

/// Why `lookup` failed: an unknown id for good, a busy directory for now.
#[derive(Debug, salt::Fatal)]
enum LookupError {
    #[fatal]
    Unknown(u64),
    Busy,
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::Unknown(id) => write!(f, "no customer {id}"),
            LookupError::Busy => write!(f, "the directory is busy"),
        }
    }
}

impl std::error::Error for LookupError {}

/// Fails with `Unknown` for id 0 (fatal: not retried), else with `Busy` (retried).
#[task(retries = 2, backoff = "10ms")]
async fn lookup(dir: String, id: u64) -> Result<String, LookupError> {
    mark(&dir, "lookup");
    Err(if id == 0 { LookupError::Unknown(id) } else { LookupError::Busy })
}

/// Runs `lookup`.
#[workflow]
async fn look_up(dir: String, id: u64) -> salt::Result<String> {
    lookup(dir, id).await
}

/// Fails on its first attempt, succeeds on the second.
#[task(retries = 2, backoff = "50ms")]
async fn flaky(dir: String, ctx: &Context) -> salt::Result<u32> {
    mark(&dir, "flaky");
    if ctx.attempt() == 1 {
        return Err(salt::Error::msg("first attempt fails on purpose"));
    }
    Ok(ctx.attempt())
}

/// Runs `flaky` once.
#[workflow]
async fn retry_once(dir: String) -> salt::Result<u32> {
    flaky(dir).await
}

/// Starts a `sleep` child process, records its pid, and sleeps far past its timeout.
#[task(timeout = "300ms")]
async fn hang(dir: String) -> salt::Result<()> {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::fs::write(Path::new(&dir).join("grandchild.pid"), child.id().to_string())?;
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

/// Like `hang`, but blocks its thread, so that only killing its process stops it.
#[task(timeout = "300ms")]
async fn block(dir: String) -> salt::Result<()> {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    std::fs::write(Path::new(&dir).join("grandchild.pid"), child.id().to_string())?;
    std::thread::sleep(Duration::from_secs(30));
    Ok(())
}

/// Runs `block`, which times out and does not stop when asked.
#[workflow]
async fn blocked(dir: String) -> salt::Result<()> {
    block(dir).await
}

/// Exits its process on its first attempt; returns 100 on the second.
#[task(retries = 1, backoff = "10ms")]
async fn vanish_once(dir: String) -> u64 {
    if !Path::new(&dir).join("vanished").exists() {
        std::fs::write(Path::new(&dir).join("vanished"), "").expect("marker");
        std::process::exit(7);
    }
    100
}

/// Six slow steps side by side with one that takes its process down once.
#[workflow]
async fn crowd(dir: String) -> salt::Result<u64> {
    let steps: Vec<_> = (0..6).map(|i| step(dir.clone(), format!("crowd{i}"), i, 300)).collect();
    let lost = vanish_once(dir.clone());
    let sum: u64 = salt::join_all(steps).await?.into_iter().sum();
    Ok(sum + lost.await?)
}

/// Returns nothing.
#[task]
async fn nothing() {}

/// Returns `None`.
#[task]
async fn none() -> Option<u64> {
    None
}

/// A value with null fields, nested deep.
#[task]
async fn holes() -> serde_json::Value {
    let mut v = serde_json::json!({"a": null, "b": [null, {"c": null}]});
    for _ in 0..60 {
        v = serde_json::json!([v]);
    }
    v
}

/// Awaits children whose outputs are null or hold nulls, and passes them on by handle.
#[workflow]
async fn nulls() -> salt::Result<String> {
    let unit: () = nothing().await?;
    let none = none().await?;
    let holes = holes().await?;
    let mut depth = 0;
    let mut v = &holes;
    while let Some(inner) = v.get(0) {
        depth += 1;
        v = inner;
    }
    Ok(format!("{unit:?} {none:?} {depth} {v}"))
}

/// `mb` MB of JSON: `mb * 1000` strings of 998 digits (1001 bytes each in a JSON list).
#[task]
async fn big_make(mb: u64) -> Vec<String> {
    (0..mb * 1000).map(|i| format!("{i:0>998}")).collect()
}

/// Gives its rows back unchanged.
#[task]
async fn big_pass(rows: Vec<String>) -> Vec<String> {
    rows
}

/// The length of the rows' JSON.
#[task]
async fn big_len(rows: Vec<String>) -> salt::Result<u64> {
    let json = serde_json::to_string(&rows).map_err(|e| salt::Error::msg(e.to_string()))?;
    Ok(json.len() as u64)
}

/// Makes `mb` MB of JSON in one node, passes it by handle through a second, awaits it, and gives
/// it by value to a third, which measures it: one large value through three nodes.
#[workflow]
async fn big_values(mb: u64) -> salt::Result<u64> {
    let made = big_make(mb);
    let rows = big_pass(&made).await?;
    big_len(rows).await
}

/// Starts a shell that writes a marker after a while, and waits for it.
#[task]
async fn side_effect(dir: String) -> salt::Result<()> {
    mark(&dir, "side_started");
    let script = format!("sleep 1.5; echo done >> {dir}/side_effect");
    let status = tokio::process::Command::new("sh").arg("-c").arg(script).status().await?;
    if !status.success() {
        return Err(salt::Error::msg("the shell failed"));
    }
    Ok(())
}

/// Runs `side_effect`.
#[workflow]
async fn effects(dir: String) -> salt::Result<()> {
    side_effect(dir).await
}

/// Runs `hang`, which times out.
#[workflow]
async fn timeout(dir: String) -> salt::Result<()> {
    hang(dir).await
}

/// Panics.
#[task]
async fn explode() -> u32 {
    panic!("boom on purpose")
}

/// Runs `explode`.
#[workflow]
async fn panics() -> salt::Result<u32> {
    explode().await
}

/// Prints to stdout and stderr like any program, then returns.
#[task]
async fn chatty() -> String {
    println!("hello from stdout");
    eprintln!("hello from stderr");
    "spoke".to_string()
}

/// Runs `chatty`.
#[workflow]
async fn talk() -> salt::Result<String> {
    chatty().await
}

/// Emits `tracing` events at several levels, one with a field.
#[task]
async fn traced() -> String {
    tracing::info!(records = 3, "fetched the records");
    tracing::warn!("one record had no date");
    tracing::debug!("left out at the default level");
    "traced".to_string()
}

/// Runs `traced`.
#[workflow]
async fn tracing_flow() -> salt::Result<String> {
    traced().await
}

/// Writes `n` log lines, `ms` apart.
#[task]
async fn drip(n: u32, ms: u64) -> u32 {
    for i in 1..=n {
        tracing::info!("drop {i}");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    n
}

/// Runs `drip`.
#[workflow]
async fn dripping(n: u32, ms: u64) -> salt::Result<u32> {
    drip(n, ms).await
}

/// Exits its process without a word.
#[task]
async fn vanish() -> u32 {
    std::process::exit(7)
}

/// Runs `vanish`.
#[workflow]
async fn exits() -> salt::Result<u32> {
    vanish().await
}

/// Returns which task the first attempt of `wobbly` spawned.
#[task]
async fn left(dir: String) -> String {
    mark(&dir, "left");
    "left".into()
}

/// The other branch.
#[task]
async fn right(dir: String) -> String {
    mark(&dir, "right");
    "right".into()
}

/// Spawns `left` on its first attempt and `right` on its second: a replay that differs.
#[workflow(retries = 1, backoff = "10ms")]
async fn wobbly(dir: String, ctx: &Context) -> salt::Result<String> {
    let first = ctx.attempt() == 1;
    let out = if first { left(dir.clone()).await? } else { right(dir.clone()).await? };
    if first {
        return Err(salt::Error::msg("fail so that the body replays"));
    }
    Ok(out)
}

/// Draws a journaled random number, spawns a step with it, and fails its first attempt: the
/// replay gets the same number and binds to the same step, which does not run again.
#[workflow(retries = 1, backoff = "10ms")]
async fn lucky(dir: String, ctx: &Context) -> salt::Result<u64> {
    let r = ctx.random_below(1_000_000).await;
    let out = step(dir, "lucky_step".to_string(), r, 0).await?;
    if ctx.attempt() == 1 {
        return Err(salt::Error::msg("fail so that the body replays"));
    }
    Ok(out - 1)
}

/// Sleeps for a long time: something to cancel.
#[workflow]
async fn sleepy(dir: String) -> salt::Result<u64> {
    step(dir, "sleepy".to_string(), 0, 60_000).await
}

/// One step, with a retry to spare: survives one misbehaving node process.
#[workflow(retries = 1, backoff = "10ms")]
async fn sturdy(dir: String) -> salt::Result<u64> {
    step(dir, "sturdy_step".to_string(), 1, 0).await
}

/// Returns `x`.
#[task]
async fn one(x: u64) -> u64 {
    x
}

/// Returns `x + 1`.
#[task]
async fn two(x: u64) -> u64 {
    x + 1
}

/// Returns `x + 2`.
#[task]
async fn three(x: u64) -> u64 {
    x + 2
}

/// Declares a promise of the given kind, then keeps it or breaks it.
#[workflow]
async fn promised(kind: String, keep: bool, ctx: &Context) -> salt::Result<u64> {
    let a = one(1);
    let b = match kind.as_str() {
        "no new nodes" => {
            ctx.promise("no new nodes")?;
            if keep { a.clone() } else { two(a.clone()) }
        }
        "no new edges" => {
            ctx.promise("no new edges")?;
            if keep { two(5) } else { two(a.clone()) }
        }
        "only tasks" => {
            ctx.promise("only tasks one, two")?;
            if keep { two(1) } else { three(1) }
        }
        "only edges between" => {
            ctx.promise("only edges between one, two")?;
            if keep { two(a.clone()) } else { three(a.clone()) }
        }
        "no edges out of" => {
            ctx.promise("no edges out of one")?;
            let b = two(5);
            if keep {
                let c = three(1);
                ctx.edge(&b, &c);
            } else {
                ctx.edge(&a, &b);
            }
            b
        }
        "no edges into" => {
            ctx.promise("no edges into two")?;
            if keep { three(a.clone()) } else { two(a.clone()) }
        }
        "shape" => {
            ctx.promise("one -> two* -> three")?;
            if keep {
                let b = two(a.clone());
                let c = two(b.clone());
                three(c)
            } else {
                one(a.clone())
            }
        }
        "unfinished shape" => {
            ctx.promise("one -> two")?;
            if keep { two(a.clone()) } else { a.clone() }
        }
        other => return Err(salt::Error::fatal(format!("unknown promise kind `{other}`"))),
    };
    let _ = a.await?;
    b.await
}

/// Adds control edges: in order, into a node that already ran, or in a cycle.
#[workflow]
async fn edges(case: String, dir: String, ctx: &Context) -> salt::Result<u64> {
    match case.as_str() {
        "order" => {
            let slow = step(dir.clone(), "slow".to_string(), 0, 300);
            let fast = step(dir, "fast".to_string(), 0, 0);
            ctx.edge(&slow, &fast);
            Ok(fast.await? + slow.await?)
        }
        "started" => {
            let done = one(1);
            let x = done.clone().await?;
            let later = two(x);
            ctx.edge(&later, &done);
            later.await
        }
        "cycle" => {
            let x = one(1);
            let y = two(2);
            ctx.edge(&x, &y);
            ctx.edge(&y, &x);
            y.await
        }
        other => Err(salt::Error::fatal(format!("unknown case `{other}`"))),
    }
}

/// One step of `synergy`: the sum of its inputs plus its number.
#[task]
async fn syn(step: u64, xs: Vec<u64>) -> u64 {
    xs.iter().sum::<u64>() + step
}

/// Eight steps, `s1 -> s2 -> {s3, s4, s6}; {s3, s4} -> s5; s6 -> s7 -> s8`, written with
/// awaited values: each child runs after the results its parent had awaited when it spawned
/// it. The `s6 -> s7 -> s8` chain is wired by handles, so that it does not wait for `s3` and
/// `s4`, whose values the body awaits first.
#[workflow]
async fn synergy() -> salt::Result<u64> {
    let x1 = syn(1, Vec::<u64>::new()).await?;
    let x2 = syn(2, vec![x1]).await?;
    let (s3, s4, s6) = (syn(3, vec![x2]), syn(4, vec![x2]), syn(6, vec![x2]));
    let s7 = one(s6);
    let s8 = two(s7);
    let x34 = salt::join_all([s3, s4]).await?;
    let x5 = syn(5, x34).await?;
    Ok(x5 + s8.await?)
}

/// Labels two of its edges: the data edge `one -> two` (`two` takes `one`'s output as `x`) and
/// a control edge `two -> one`. The data edge `one -> two` of the second pair is not labelled.
#[workflow]
async fn labelled(ctx: &Context) -> salt::Result<u64> {
    let a = one(1);
    let b = two(a.clone());
    ctx.edge_label(&a, &b, "plus one");
    let c = one(5);
    ctx.edge(&b, &c);
    ctx.edge_label(&b, &c, "then");
    let d = two(c.clone());
    Ok(b.await? + d.await?)
}

// ANCHOR: tick
/// Counts down by spawning its own next iteration: a loop.
#[task(spawns)]
async fn tick(n: u64, ctx: &Context) -> salt::Result<u64> {
    ctx.annotate(salt::Annotation::label(format!("tick {n}")));
    if n == 0 { Ok(0) } else { Ok(tick(n - 1).await? + 1) }
}
// ANCHOR_END: tick

/// A loop of `n` iterations.
#[workflow]
async fn countdown(n: u64) -> salt::Result<u64> {
    tick(n).await
}

/// A task not marked `spawns` that calls another task: refused.
#[task]
async fn sneaky() -> salt::Result<u64> {
    one(1).await
}

/// Runs `sneaky`.
#[workflow]
async fn sneaks() -> salt::Result<u64> {
    sneaky().await
}

/// Runs on the `gpu` queue, so only a worker of that queue runs it: counts its run, sleeps
/// `slow_ms` the first time it runs, fails its first `fail_first` attempts (retried), and
/// returns `x * 100`.
#[task(queue = "gpu", retries = 2, backoff = "10ms")]
async fn on_gpu(dir: String, x: u64, slow_ms: u64, fail_first: u32, ctx: &Context) -> salt::Result<u64> {
    mark(&dir, "on_gpu");
    ctx.log(format!("on the gpu queue with x = {x}"));
    let runs = std::fs::read_to_string(Path::new(&dir).join("on_gpu")).map_or(0, |s| s.lines().count());
    if runs == 1 {
        tokio::time::sleep(Duration::from_millis(slow_ms)).await;
    }
    if ctx.attempt() <= fail_first {
        return Err(salt::Error::msg(format!("attempt {} fails on purpose", ctx.attempt())));
    }
    Ok(x * 100)
}

/// A local step, a step on the `gpu` queue that takes its output, and a local step after it.
#[workflow]
async fn remote(dir: String, slow_ms: u64, fail_first: u32) -> salt::Result<u64> {
    let before = step(dir.clone(), "before", 1, 0);
    let gpu = on_gpu(dir.clone(), before, slow_ms, fail_first);
    step(dir, "after".to_string(), gpu, 0).await
}

/// On the `gpu` queue, tries to spawn a child: a worker refuses.
#[task(queue = "gpu", spawns)]
async fn gpu_spawner(dir: String) -> salt::Result<u64> {
    mark(&dir, "gpu_spawner");
    one(1).await
}

/// Runs `gpu_spawner`.
#[workflow]
async fn remote_spawner(dir: String) -> salt::Result<u64> {
    gpu_spawner(dir).await
}

/// On the `gpu` queue with a short timeout, and slower than it.
#[task(queue = "gpu", timeout = "300ms")]
async fn gpu_slow(dir: String) -> salt::Result<()> {
    mark(&dir, "gpu_slow");
    tokio::time::sleep(Duration::from_secs(10)).await;
    Ok(())
}

/// Runs `gpu_slow`.
#[workflow]
async fn remote_timeout(dir: String) -> salt::Result<()> {
    gpu_slow(dir).await
}

/// Waits for a number, or takes 7 after `timeout_ms`.
#[workflow]
async fn waits(timeout_ms: u64, ctx: &Context) -> salt::Result<u64> {
    let before = one(1).await?;
    let n: u64 = if timeout_ms == 0 {
        ctx.wait_for("number").await?
    } else {
        ctx.wait_for_or("number", Duration::from_millis(timeout_ms), 7).await?
    };
    two(n + before).await
}

/// Sleeps durably between two steps.
#[workflow]
async fn naps(ms: u64, ctx: &Context) -> salt::Result<u64> {
    let x = one(1).await?;
    ctx.sleep(Duration::from_millis(ms)).await;
    two(x).await
}

/// Returns `n` copies of `text`: a large value from a small input.
#[task]
async fn repeat(text: String, n: usize) -> String {
    text.repeat(n)
}

/// Carries a note (as large as the caller makes it) and returns a large value.
#[workflow]
async fn bulky(note: String, n: usize) -> salt::Result<String> {
    let big = repeat("ab".to_string(), n).await?;
    Ok(format!("{}{big}", note.len()))
}

/// A value `depth` arrays deep around a number.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(serde_json::json!(1), |v, _| serde_json::json!([v]))
}

/// Returns a value nested `depth` arrays deep.
#[task]
async fn deep_value(depth: usize) -> serde_json::Value {
    nested(depth)
}

/// Takes any value; returns how deeply it nests.
#[task]
async fn measure(value: serde_json::Value) -> usize {
    let (mut depth, mut v) = (0, &value);
    while let Some(inner) = v.get(0) {
        depth += 1;
        v = inner;
    }
    depth
}

/// Makes a value `depth` deep: returned by a child (`via` = "output") or passed to one as an
/// argument (`via` = "argument").
#[workflow]
async fn deep(depth: usize, via: String) -> salt::Result<usize> {
    match via.as_str() {
        "output" => Ok(measure(deep_value(depth).await?).await?),
        "argument" => measure(nested(depth)).await,
        other => Err(salt::Error::fatal(format!("unknown `via` `{other}`"))),
    }
}

/// Takes any input.
#[workflow]
async fn anything(value: serde_json::Value) -> salt::Result<usize> {
    measure(value).await
}

/// Sleeps for `Duration::MAX` (or, with `wrap`, for 2^64 ms and 50 ms: a duration whose
/// milliseconds do not fit in 64 bits): a wait that never ends by itself.
#[workflow]
async fn forever(wrap: bool, ctx: &Context) -> salt::Result<u64> {
    let x = one(1).await?;
    let long = if wrap { Duration::new(18_446_744_073_709_551, 666_000_000) } else { Duration::MAX };
    ctx.sleep(long).await;
    two(x).await
}

/// Waits for a number with a timeout of `Duration::MAX` (7 if it ever gave up).
#[workflow]
async fn patient(ctx: &Context) -> salt::Result<u64> {
    let x = one(1).await?;
    let n: u64 = ctx.wait_for_or("number", Duration::MAX, 7).await?;
    two(x + n).await
}

/// Waits for the signal `number` `n` times, in one node, and returns the values in order.
#[workflow]
async fn collect(n: u64, ctx: &Context) -> salt::Result<Vec<u64>> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(ctx.wait_for::<u64>("number").await?);
    }
    Ok(got)
}

/// Waits for a long child: with the process executor and a short `SALT_PARK_AFTER_MS`, the root
/// is parked while the child runs.
#[workflow]
async fn parked(dir: String) -> salt::Result<u64> {
    let a = one(1).await?;
    step(dir, "long".to_string(), a, 60_000).await
}

/// Appends its index as a line to `dir/tiny`: one execution. Takes `FLOWS_TINY_US` microseconds (none
/// by default), so that a test can stop a run of them half-way.
#[task]
async fn tiny(dir: String, i: u64) -> u64 {
    if let Some(us) = std::env::var("FLOWS_TINY_US").ok().and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_micros(us)).await;
    }
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(Path::new(&dir).join("tiny")).expect("marker file");
    let _ = f.write_all(format!("{i}\n").as_bytes());
    i
}

/// Fans out `n` trivial tasks and sums their outputs.
#[workflow]
async fn fan(dir: String, n: u64) -> salt::Result<u64> {
    let all: Vec<_> = (0..n).map(|i| tiny(dir.clone(), i)).collect();
    Ok(salt::join_all(all).await?.into_iter().sum())
}

/// Calls `std::process::exit(0)` in its task: with the inline executor, that ends the
/// orchestrator too.
#[task]
async fn quit() -> u32 {
    std::process::exit(0)
}

/// Runs `quit`.
#[workflow]
async fn quits() -> salt::Result<u32> {
    quit().await
}

/// Replaces this process with a misbehaving node for the first node process of a run.
fn fake_node(kind: &str, dir: &str) {
    let flag = Path::new(dir).join("faked");
    if flag.exists() {
        return;
    }
    let _ = std::fs::write(&flag, kind);
    let hello = format!(r#"{{"type":"hello","protocol":2,"pid":{}}}"#, std::process::id());
    let mut out = std::io::stdout().lock();
    match kind {
        "garbage" => {
            let _ = writeln!(out, "{hello}");
            let _ = writeln!(out, "this is not json");
        }
        "unknown" => {
            let _ = writeln!(out, "{hello}");
            let _ = writeln!(out, r#"{{"type":"explode","now":true}}"#);
        }
        "oversized" => {
            let _ = writeln!(out, "{hello}");
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..70 {
                let _ = out.write_all(&chunk);
            }
            let _ = writeln!(out);
        }
        "early_exit" => {
            let _ = writeln!(out, "{hello}");
        }
        "bad_hello" => {
            let _ = writeln!(out, r#"{{"type":"hello","protocol":99,"pid":1}}"#);
        }
        "huge_first" => {
            // A 10 MB first line that is JSON but not a hello.
            let _ = write!(out, r#"{{"type":""#);
            let _ = out.write_all(&vec![b'x'; 10 << 20]);
            let _ = writeln!(out, r#""}}"#);
        }
        "huge_log_first" => {
            // A 10 MB first line that is a valid message, but not a hello.
            let _ = write!(out, r#"{{"type":"log","attempt_id":1,"line":""#);
            let _ = out.write_all(&vec![b'x'; 10 << 20]);
            let _ = writeln!(out, r#""}}"#);
        }
        _ => return,
    }
    let _ = out.flush();
    std::process::exit(0);
}

/// `pre` of `guarded`: marks its run; fails when `fail` is `"pre"`.
async fn guard_pre(dir: &str, fail: &str) -> salt::Result<()> {
    mark(dir, "guard_pre");
    if fail == "pre" {
        return Err("the source is not ready".into());
    }
    Ok(())
}

/// `post` of `guarded`: marks its run; fails when `fail` is `"post"`.
async fn guard_post(dir: &str, fail: &str, out: &u64) -> salt::Result<()> {
    mark(dir, "guard_post");
    if fail == "post" {
        return Err(format!("output {out} is out of range").into());
    }
    Ok(())
}

/// `on_failure` of `guarded`: marks its run with the attempt's error; fails when `fail` is
/// `"cleanup"`.
async fn guard_on_failure(dir: &str, fail: &str, error: &salt::Error) -> salt::Result<()> {
    mark(dir, "guard_on_failure");
    let _ = std::fs::write(Path::new(dir).join("guard_error"), error.to_string());
    if fail == "cleanup" {
        return Err("the scratch space is gone".into());
    }
    Ok(())
}

/// A task with step actions: `fail` is `"none"`, `"pre"`, `"post"`, `"body"` or `"cleanup"`
/// (the body and then `on_failure` fail).
#[task(retries = 1, backoff = "10ms", pre = guard_pre, post = guard_post, on_failure = guard_on_failure)]
async fn guarded(dir: String, fail: String) -> salt::Result<u64> {
    mark(&dir, "guarded");
    if fail == "body" || fail == "cleanup" {
        return Err("the body failed".into());
    }
    Ok(7)
}

/// Runs `guarded`.
#[workflow]
async fn guarded_flow(dir: String, fail: String) -> salt::Result<u64> {
    guarded(dir, fail).await
}

/// `post` of `shelled`: a command, from a function of the task's inputs and output; it reads
/// the output from `$SALT_OUTPUT`.
fn shelled_post(dir: &str, _fail: &str, out: &u64) -> salt::Command {
    salt::shell(r#"echo "post sees $(cat "$SALT_OUTPUT") in $SALT_STEP""#)
        .env("EXPECTED", out.to_string())
        .current_dir(dir)
}

/// A task whose step actions are commands: `pre` a command with the task's inputs in scope (it
/// fails when `fail` is `"pre"`), `post` a function that returns a command, `on_failure` a
/// command that reads the attempt's error.
#[task(
    retries = 1,
    backoff = "10ms",
    pre = salt::shell(r#"echo "pre args: $(cat "$SALT_ARGS")"; [ "$FAIL" != pre ] || { echo 'not ready'; exit 3; }"#)
        .env("FAIL", fail)
        .current_dir(dir),
    post = shelled_post,
    on_failure = salt::shell(r#"echo "on_failure saw: $SALT_ERROR" | head -n 1"#),
)]
async fn shelled(dir: String, fail: String) -> salt::Result<u64> {
    mark(&dir, "shelled");
    let _ = fail; // read by `pre`
    Ok(7)
}

/// Runs `shelled`.
#[workflow]
async fn shelled_flow(dir: String, fail: String) -> salt::Result<u64> {
    shelled(dir, fail).await
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__salt")
        && let (Ok(kind), Ok(dir)) = (std::env::var("FLOWS_FAKE_NODE"), std::env::var("FLOWS_DIR"))
    {
        fake_node(&kind, &dir);
    }
    salt::main()
}
