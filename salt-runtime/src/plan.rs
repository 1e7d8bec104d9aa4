//! Plans: a workflow's graph as far as it is known before it runs.
//!
//! The workflow's body runs in *plan mode*: its spawns, edges, promises and annotations are
//! recorded and nothing executes. The first wait for a value that does not exist yet (a node's
//! output, a journaled value, a signal) stops the plan there, and a wildcard after the awaited
//! nodes stands for what the rest of the body may still add. So a workflow that only wires
//! handles is planned completely, one that branches on a value up to the branch, and one that
//! spawns everything at run time shows its root and a wildcard.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::context::{Context, Host, JournalKind, Mutation, SignalWait, WireArg};
use crate::error::{Error, Result};
use crate::model::{EdgeKind, NodeId, RunId};
use crate::registry::{Registry, TaskDescriptor};
use crate::render::{GraphView, ViewNode, ViewPromise};

#[derive(Default)]
struct Recorded {
    mutations: Vec<Mutation>,
    /// The children the body stopped on, by sequence number.
    awaited: Vec<u32>,
    /// The body stopped on something other than a node (a journaled value, a signal).
    stopped_elsewhere: bool,
}

#[derive(Default)]
struct PlanHost {
    recorded: Mutex<Recorded>,
}

impl PlanHost {
    fn with<R>(&self, f: impl FnOnce(&mut Recorded) -> R) -> R {
        f(&mut self.recorded.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Host for PlanHost {
    fn mutate(&self, mutations: Vec<Mutation>) {
        self.with(|r| r.mutations.extend(mutations));
    }

    fn await_node(&self, seq: u32) -> BoxFuture<'static, std::result::Result<Value, Error>> {
        self.with(|r| r.awaited.push(seq));
        futures::future::pending().boxed()
    }

    fn journal(&self, _: u32, _: JournalKind, _: Value) -> BoxFuture<'static, Value> {
        self.with(|r| r.stopped_elsewhere = true);
        futures::future::pending().boxed()
    }

    fn wait_signal(&self, _: SignalWait) -> BoxFuture<'static, Value> {
        self.with(|r| r.stopped_elsewhere = true);
        futures::future::pending().boxed()
    }

    fn log(&self, _: String) {}
}

/// Which tasks may grow the graph: workflows and tasks marked `#[task(spawns)]`.
pub fn may_spawn(registry: &Registry) -> impl Fn(&str) -> bool + '_ {
    |task| registry.get(task).is_some_and(|d| d.may_spawn)
}

/// The plan of `workflow` for `input`: what its body spawns before it first waits.
///
/// A plan that a run would refuse is an error, not a drawing: the body breaks a promise in
/// force (its workflow's, or one it declares) or closes a cycle with a control edge before it
/// first waits, or returns before a promised shape is complete. The error is the one the run
/// would end with, of kind `promise` or `graph`.
pub async fn plan(workflow: &'static TaskDescriptor, input: Value) -> Result<GraphView> {
    let registry = Registry::global()?;
    let host = Arc::new(PlanHost::default());
    let ctx = Context::new(host.clone(), RunId::new(0), NodeId::ROOT, 1);
    let ctx_input = input.clone();
    let body = ctx.clone().scope((workflow.run)(input, ctx.clone()));
    let mut body = std::pin::pin!(body);
    // Poll until the body returns or stops making progress (it waits for something unknown).
    let mut finished = false;
    for _ in 0..8 {
        if futures::poll!(body.as_mut()).is_ready() {
            finished = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    ctx.flush();
    let recorded = std::mem::take(&mut *host.recorded.lock().unwrap_or_else(|p| p.into_inner()));
    check(registry, workflow, &input_of(&ctx_input), recorded.mutations.clone(), finished)?;

    let mut nodes = vec![ViewNode {
        id: NodeId::ROOT,
        task: workflow.name.to_string(),
        state: None,
        label: workflow.label.map(str::to_string),
        color: workflow.color.map(str::to_string),
        shape: None,
        parent: None,
        attempts: 0,
    }];
    let mut by_seq = std::collections::HashMap::new();
    let mut edges = Vec::new();
    let (mut edge_labels, mut edge_args) = (BTreeMap::new(), BTreeMap::new());
    let mut promises: Vec<ViewPromise> = Vec::new();
    let declare = |promises: &mut Vec<ViewPromise>, scope: NodeId, task: &TaskDescriptor| {
        for text in task.promises {
            if let Ok(promise) = text.parse() {
                promises.push(ViewPromise { scope, declared_by: scope, promise });
            }
        }
    };
    declare(&mut promises, NodeId::ROOT, workflow);
    for m in recorded.mutations {
        match m {
            Mutation::Spawn(req) => {
                let id = NodeId::at(nodes.len());
                let task = registry.task(&req.task)?;
                let handles = req.args.iter().flat_map(|(name, arg)| match arg {
                    WireArg::List(items) => items.iter().map(|item| (name, item)).collect(),
                    arg => vec![(name, arg)],
                });
                for (name, arg) in handles {
                    if let WireArg::Handle(seq) = arg
                        && let Some(from) = by_seq.get(seq)
                        && !edges.contains(&(*from, id, EdgeKind::Data))
                    {
                        edges.push((*from, id, EdgeKind::Data));
                        edge_args.entry((*from, id)).or_insert_with(|| name.clone());
                    }
                }
                by_seq.insert(req.seq, id);
                nodes.push(ViewNode {
                    id,
                    task: task.name.to_string(),
                    state: None,
                    label: task.label.map(str::to_string),
                    color: task.color.map(str::to_string),
                    shape: None,
                    parent: Some(NodeId::ROOT),
                    attempts: 0,
                });
                declare(&mut promises, id, task);
            }
            Mutation::Edge { from, to } => {
                if let (Some(f), Some(t)) = (by_seq.get(&from), by_seq.get(&to)) {
                    edges.push((*f, *t, EdgeKind::Control));
                }
            }
            // In a plan, the root's subtree is the whole run: both scopes are the same.
            Mutation::Promise { text, .. } => {
                if let Ok(promise) = text.parse() {
                    promises.push(ViewPromise { scope: NodeId::ROOT, declared_by: NodeId::ROOT, promise });
                }
            }
            Mutation::EdgeLabel { from, to, label } => {
                if let (Some(f), Some(t)) = (by_seq.get(&from), by_seq.get(&to))
                    && edges.iter().any(|(a, b, _)| (a, b) == (f, t))
                {
                    edge_labels.insert((*f, *t), label);
                }
            }
            Mutation::Annotate { child, annotation } => {
                let target = match child {
                    None => Some(NodeId::ROOT),
                    Some(seq) => by_seq.get(&seq).copied(),
                };
                if let Some(n) = target.and_then(|t| nodes.get_mut(t.index())) {
                    n.label = annotation.label.or(n.label.take());
                    n.color = annotation.color.or(n.color.take());
                    n.shape = annotation.shape.or(n.shape.take());
                }
            }
        }
    }

    let mut view = GraphView {
        run: json!({"plan": workflow.name, "complete": finished}),
        title: format!("plan of {}", workflow.name),
        nodes,
        edges,
        edge_labels,
        edge_args,
        arg_labels: false,
        promises,
        wildcards: Vec::new(),
        ghosts: Vec::new(),
    };
    // The root's wildcard goes after the nodes it stopped on; a body that returned adds nothing.
    let awaited: Vec<NodeId> = recorded.awaited.iter().filter_map(|s| by_seq.get(s).copied()).collect();
    let root_anchors: Vec<NodeId> = if finished {
        Vec::new()
    } else if awaited.is_empty() || recorded.stopped_elsewhere {
        vec![NodeId::ROOT]
    } else {
        let mut a = awaited;
        a.sort_unstable();
        a.dedup();
        a
    };
    let spawns = may_spawn(registry);
    view.add_gradient(&spawns, &|n| if n == 0 { root_anchors.clone() } else { vec![n] });
    Ok(view)
}

/// The root's arguments, as a new run stores them.
fn input_of(input: &Value) -> Vec<(String, crate::model::StoredArg)> {
    input
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), crate::model::StoredArg::Value(v.clone()))).collect())
        .unwrap_or_default()
}

/// Applies what a planned body did to a new run of its workflow, as the run core would, and
/// fails with the error that run would end with if it refuses any of it.
fn check(
    registry: &'static Registry,
    workflow: &'static TaskDescriptor,
    args: &[(String, crate::model::StoredArg)],
    mutations: Vec<Mutation>,
    returned: bool,
) -> Result<()> {
    use crate::executor::{AttemptId, Event};
    use crate::model::{NodeRecord, NodeState, RunRecord, RunSnapshot, RunState};

    let run = RunId::new(0);
    let root = NodeRecord {
        id: NodeId::ROOT,
        parent: None,
        seq: None,
        task: workflow.name.to_string(),
        state: NodeState::Pending,
        args: args.to_vec(),
        ..Default::default()
    };
    let snapshot = RunSnapshot {
        run: RunRecord {
            id: run,
            workflow: workflow.name.to_string(),
            state: RunState::Queued,
            input: Value::Null,
            output: None,
            error: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
            executor: "plan".into(),
            parallelism: 1,
            owner: None,
        },
        nodes: vec![root],
        edges: Vec::new(),
        attempts: Vec::new(),
        journal: Vec::new(),
        promises: Vec::new(),
        waits: Vec::new(),
        delivered: Vec::new(),
    };
    let now = crate::run::now();
    let config = crate::run::Config {
        executor: "plan",
        placement: crate::run::Placement::Local,
        parallelism: 1,
        park_after: None,
        capacity: crate::run::Capacity::UNLIMITED,
        machine: None,
    };
    let mut core = crate::run::Core::new(snapshot, registry, config, now)?;
    core.begin(now);
    core.start_ready(now);
    let at = AttemptId { run, node: NodeId::ROOT, attempt: 1 };
    core.handle(now, Event::Mutate { at, mutations });
    if returned {
        core.handle(now, Event::Finished { at, result: Ok(Value::Null) });
    }
    // A body that has not returned is still running: only a termination or its own failure
    // (a cycle, an unknown task) refuses the plan.
    let root_failed = core.state_of(NodeId::ROOT) == NodeState::Failed;
    let outcome = core.finish();
    let refused = outcome.state == RunState::Terminated || (outcome.state == RunState::Failed && root_failed);
    match outcome.error {
        Some(e) if refused => {
            Err(Error::new(e.kind(), format!("the plan of `{}` is refused: {}", workflow.name, e.message())))
        }
        _ => Ok(()),
    }
}
