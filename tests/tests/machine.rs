//! Runs driven by one process at once share its cores and memory: a sized node of one run
//! waits while the attempts of another hold what it asks for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use salt::prelude::*;
use salt::{RunState, Runner};

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MOST: AtomicUsize = AtomicUsize::new(0);

/// Holds two cores for `ms`, counting how many of its kind run at once.
#[task(cores = 2)]
async fn heavy(ms: u64) -> u64 {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    ms
}

/// Two heavy nodes side by side.
#[workflow]
async fn two_heavy(ms: u64) -> salt::Result<u64> {
    let (a, b) = (heavy(ms), heavy(ms));
    Ok(a.await? + b.await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_of_one_process_never_use_more_cores_than_it_has_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(dir.path().join("salt.db")).cores(3).parallelism(8);
    let input = serde_json::json!({"ms": 150});
    let (a, b) = tokio::join!(runner.run("two_heavy", input.clone()), runner.run("two_heavy", input));
    for outcome in [a.unwrap(), b.unwrap()] {
        assert_eq!(outcome.state, RunState::Succeeded, "{outcome:?}");
        assert_eq!(outcome.output, Some(serde_json::json!(300)));
    }
    // Four 2-core nodes of two runs on 3 cores: one at a time, never two.
    assert_eq!(MOST.load(Ordering::SeqCst), 1, "two 2-core nodes ran at once on 3 cores");
}
