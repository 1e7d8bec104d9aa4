//! Ways around a promise that must not be: task calls from `tokio::spawn`, work after a
//! breaking mutation.

use std::time::Duration;

use salt::prelude::*;

use super::{mark, step};

/// Calls `step` from inside `tokio::spawn` (not the body's own future), after promising no
/// new nodes if `promise`; marks `after` once the spawned call returned.
#[workflow]
async fn spawned_call(dir: String, promise: bool, ctx: &Context) -> salt::Result<u64> {
    if promise {
        ctx.promise("no new nodes")?;
    }
    let d = dir.clone();
    let joined = tokio::spawn(async move { step(d, "spawned".to_string(), 1, 0).await }).await;
    let x = joined.map_err(|e| salt::Error::fatal(format!("the spawned future failed: {e}")))??;
    mark(&dir, "after");
    Ok(x)
}

/// Promises no new nodes, breaks it, then sleeps and marks `after_break`: work that must not
/// happen, since the run is terminated (and the body stopped) as soon as the spawn arrives.
#[workflow]
async fn breaks_then_works(dir: String, ctx: &Context) -> salt::Result<u64> {
    ctx.promise("no new nodes")?;
    let broken = step(dir.clone(), "forbidden".to_string(), 1, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    mark(&dir, "after_break");
    broken.await
}

/// While a slow child runs, calls `step` from inside `tokio::spawn`: with the `inline`
/// executor two bodies run in this process, so the call cannot be attributed and fails.
#[workflow]
async fn crowded_spawned_call(dir: String) -> salt::Result<u64> {
    let slow = step(dir.clone(), "slow".to_string(), 0, 2_000);
    let started = slow.clone();
    // Give the slow child time to start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = dir.clone();
    let joined = tokio::spawn(async move { step(d, "spawned".to_string(), 1, 0).await }).await;
    let x = joined.map_err(|e| salt::Error::fatal(format!("the spawned future failed: {e}")))??;
    Ok(x + started.await?)
}

/// Promises `one -> two`, spawns `one` and returns: its plan is complete, and refused.
#[workflow(promise = "one -> two")]
async fn short_shape() -> salt::Result<u64> {
    let _ = super::one(1);
    Ok(0)
}
