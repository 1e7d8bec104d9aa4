//! The same binary on a PostgreSQL database (`SALT_DB=postgres://…`): a killed orchestrator's
//! run recovers with nothing finished run again, one orchestrator drives a run at a time, and
//! workers of a queue take its nodes from the database.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::ownership::{lost_lease_in, two_recovers_at_once_in};
use crate::recovery::kill_and_recover_in;
use crate::support::{Env, text};

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn a_killed_pool_run_on_postgresql_recovers_without_redoing_finished_work() {
    let env = Env::postgres("kill_pool");
    kill_and_recover_in(&env, "pool");
}

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn a_killed_inline_run_on_postgresql_recovers_without_redoing_finished_work() {
    let env = Env::postgres("kill_inline");
    kill_and_recover_in(&env, "inline");
}

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn two_recovers_at_once_on_postgresql_drive_an_interrupted_run_once() {
    let env = Env::postgres("two_recovers");
    two_recovers_at_once_in(&env);
}

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn an_orchestrator_that_lost_its_lease_on_postgresql_stops_without_writing() {
    let env = Env::postgres("lost_lease");
    lost_lease_in(&env);
}

#[test]
#[ignore = "needs PostgreSQL (run with --include-ignored; .ci/run does)"]
fn waiting_workers_on_postgresql_take_each_queued_node_once() {
    let env = Env::postgres("workers");
    // Two workers wait on the queue before anything is on it.
    let workers: Vec<_> = (0..2).map(|_| env.spawn(&["worker", "--queue", "gpu", "--slots", "2"])).collect();
    let started = Instant::now();
    for n in 0..3 {
        let input = json!({"dir": env.dir(), "slow_ms": 0, "fail_first": 0}).to_string();
        let out = env.run(&["run", "remote", "--executor", "inline", "--input", &input]);
        assert!(out.status.success(), "run {n}: {}", text(&out));
    }
    // Each run's queued node ran once, on a worker.
    assert_eq!(env.count("on_gpu"), 3);
    assert_eq!(env.count("after"), 3);
    for run in 1..=3 {
        let show = env.show(run);
        assert_eq!(show["run"]["state"], "succeeded", "{show}");
        let queued: Vec<_> =
            show["attempts"].as_array().unwrap().iter().filter(|a| a["executor"] == "queue:gpu").collect();
        assert_eq!(queued.len(), 1, "{show}");
    }
    // Woken by the database, not by a poll every few seconds: three round trips through the
    // queue take well under the workers' fallback poll each.
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    for mut worker in workers {
        let _ = std::process::Command::new("kill").args(["-TERM", &worker.id().to_string()]).status();
        let _ = worker.wait();
    }
}
