//! An embedding program follows a run through `Runner::subscribe`: every committed transition,
//! in order, ending with the run's final state.

use salt::prelude::*;
use salt::{NodeState, RunState, Runner, Transition};

/// Adds one.
#[task]
async fn inc(x: u64) -> u64 {
    x + 1
}

/// Fails for good.
#[task]
async fn refuse(x: u64) -> salt::Result<u64> {
    Err(salt::Error::fatal(format!("refused {x}")))
}

/// Two steps in a row.
#[workflow]
async fn chain(x: u64) -> salt::Result<u64> {
    let a = inc(x).await?;
    inc(a).await
}

/// One step, then a step that fails.
#[workflow]
async fn breaks(x: u64) -> salt::Result<u64> {
    let a = inc(x).await?;
    refuse(a).await
}

/// Everything sent so far.
fn drain(rx: &mut tokio::sync::broadcast::Receiver<Transition>) -> Vec<Transition> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

/// The states each node went through, by node id.
fn node_states(all: &[Transition]) -> Vec<Vec<NodeState>> {
    let mut states: Vec<Vec<NodeState>> = Vec::new();
    for t in all {
        if let Transition::Node { node, state, .. } = t {
            let i = node.index();
            if states.len() <= i {
                states.resize(i + 1, Vec::new());
            }
            states[i].push(*state);
        }
    }
    states
}

#[tokio::test]
async fn a_subscriber_sees_every_committed_transition_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(dir.path().join("salt.db")).parallelism(2);
    let mut rx = runner.subscribe();
    let outcome = runner.run("chain", serde_json::json!({"x": 1})).await.unwrap();
    assert_eq!(outcome.output, Some(serde_json::json!(3)));
    let all = drain(&mut rx);

    assert_eq!(all.first(), Some(&Transition::Run { run: outcome.run, state: RunState::Running, error: None }));
    assert_eq!(all.last(), Some(&Transition::Run { run: outcome.run, state: RunState::Succeeded, error: None }));
    assert!(all.last().unwrap().is_final());
    assert_eq!(all.iter().filter(|t| t.is_final()).count(), 1, "{all:#?}");
    assert!(all.iter().all(|t| t.run() == outcome.run));

    let states = node_states(&all);
    assert_eq!(states.len(), 3, "{all:#?}");
    for (id, s) in states.iter().enumerate() {
        assert_eq!(s.first(), Some(&NodeState::Running), "node {id}: {s:?}");
        assert_eq!(s.last(), Some(&NodeState::Succeeded), "node {id}: {s:?}");
    }
    // The second step starts only after the first one succeeded.
    let at = |node: u64, state: NodeState| {
        all.iter()
            .position(|t| matches!(t, Transition::Node { node: n, state: s, .. } if *n == node && *s == state))
            .unwrap()
    };
    assert!(at(1, NodeState::Succeeded) < at(2, NodeState::Running), "{all:#?}");
    assert!(at(2, NodeState::Succeeded) < at(0, NodeState::Succeeded), "{all:#?}");

    // What the stream said is what the store holds.
    let store = salt::ops::open(runner.db()).unwrap();
    let shown = salt::ops::show(store.as_ref(), outcome.run).unwrap();
    for n in &shown.nodes {
        assert_eq!(states[n.id.index()].last(), Some(&n.state));
    }
}

#[tokio::test]
async fn a_failed_run_ends_its_stream_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let runner = Runner::new(dir.path().join("salt.db"));
    let mut rx = runner.subscribe();
    let outcome = runner.run("breaks", serde_json::json!({"x": 1})).await.unwrap();
    assert_eq!(outcome.state, RunState::Failed);
    let all = drain(&mut rx);
    let Some(Transition::Run { state: RunState::Failed, error: Some(error), .. }) = all.last() else {
        panic!("the last transition is the failure: {all:#?}")
    };
    assert_eq!(Some(error), outcome.error.as_ref());
    let refused = all.iter().find_map(|t| match t {
        Transition::Node { task, state: NodeState::Failed, error: Some(e), .. } if task == "refuse" => Some(e),
        _ => None,
    });
    assert_eq!(refused.map(|e| e.message()), Some("refused 2"), "{all:#?}");
    let json = serde_json::to_value(all.last().unwrap()).unwrap();
    assert_eq!(json["type"], "run");
    assert_eq!(json["state"], "failed");
}
