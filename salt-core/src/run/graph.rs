//! The graph: nodes, their edges and children, the `(parent, seq)` index, and how a node's
//! end moves what depends on it.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use super::Core;
use super::TaskSpec;
use super::replay::{describe_call, hash_args};
use crate::attempt::{Answer, AttemptId};
use crate::call::{Annotation, Mutation, SpawnRequest, WireArg};
use crate::error::{Error, ErrorKind};
use crate::journal::Write;
use crate::model::{EdgeKind, EdgeRecord, NodeId, NodeRecord, NodeState, StoredArg};
use crate::policy::{Policy, PolicyOverride};

/// A body awaiting a node: the attempt and its call.
pub(super) struct Awaiter {
    pub(super) at: AttemptId,
    pub(super) call: u64,
}

pub(super) struct Node {
    pub(super) id: NodeId,
    pub(super) parent: Option<NodeId>,
    pub(super) task: &'static TaskSpec,
    /// Its task's policy, with what its call changed of it.
    pub(super) policy: Policy,
    /// What its call changed of its task's policy, as stored.
    pub(super) overrides: Option<PolicyOverride>,
    pub(super) state: NodeState,
    pub(super) args: Vec<(String, StoredArg)>,
    pub(super) input_hash: String,
    pub(super) output: Option<Value>,
    pub(super) error: Option<Error>,
    pub(super) attempts: u32,
    /// Nodes this one runs after (data and control edges).
    pub(super) deps: Vec<NodeId>,
    /// Nodes that run after this one.
    pub(super) dependents: Vec<NodeId>,
    /// Nodes this one's body spawned.
    pub(super) children: Vec<NodeId>,
    /// Deps not yet succeeded.
    pub(super) unmet: usize,
    pub(super) awaiters: Vec<Awaiter>,
    /// Awaits of this node's body not yet answered.
    pub(super) waiting_on: usize,
    /// The attempt running now, if any.
    pub(super) live: Option<u32>,
    pub(super) logged: u32,
    /// When (in the core's event count) the node last ended, or its attempt started.
    pub(super) ended_at: u64,
    pub(super) started_at: u64,
    /// Failed attempts so far (parked attempts are not failures).
    pub(super) failures: u32,
    /// Attempts lost in a row with their worker (not failures: they run again at once).
    pub(super) losses: u32,
    /// The signal a parked node waits for: (seq, name).
    pub(super) parked: Option<(u32, String)>,
    /// Its call's sequence number in its parent's body (none for the root).
    pub(super) seq: Option<u32>,
    /// Re-running for `rerun --from` (or `run-one`): from the first call its body makes
    /// differently than before, its old children are superseded and new ones spawned.
    pub(super) rerun: bool,
    /// Reset by a rerun, and not yet called again by its re-running parent: it does not start
    /// until the parent's body makes the same call again (which binds it).
    pub(super) unbound: bool,
    /// How many calls (spawns, journaled values, waits, promises) the running attempt's body
    /// has made: one more than the highest sequence number it used.
    pub(super) calls: u32,
    /// The attempt that was parked while it awaited children; the first of them to end
    /// replays the node.
    pub(super) parked_on_children: Option<u32>,
    /// What the live attempt's body has observed of its children.
    pub(super) observed: Observed,
    /// The deps this node runs after by `after` edges (a subset of `deps`).
    pub(super) after: Vec<NodeId>,
}

/// The children whose results one attempt of a body has observed, kept minimal: `frontier` holds
/// the observed nodes no other observed node runs after, `covered` every node some observed node
/// runs after (or is). A new child runs after the frontier.
#[derive(Default)]
pub(super) struct Observed {
    attempt: u32,
    frontier: BTreeSet<NodeId>,
    covered: HashSet<NodeId>,
}

impl Node {
    /// Whether it was killed on request ([`ErrorKind::Killed`]): final, never run again by a
    /// replay of its parent.
    pub(super) fn killed(&self) -> bool {
        self.state == NodeState::Cancelled && self.error.as_ref().is_some_and(|e| e.kind() == ErrorKind::Killed)
    }

    pub(super) fn from_record(rec: NodeRecord, task: &'static TaskSpec) -> Self {
        let seq = rec.seq;
        let overrides = rec.policy;
        let mut node = Self::new(
            rec.id,
            rec.parent,
            task,
            rec.state,
            rec.args,
            rec.input_hash,
            rec.output,
            rec.error,
            rec.attempts,
        );
        node.seq = seq;
        node.set_policy(overrides);
        node
    }

    /// Applies what its call changed of its task's policy.
    pub(super) fn set_policy(&mut self, overrides: Option<PolicyOverride>) {
        self.policy = overrides.as_ref().map_or(self.task.policy, |o| o.apply(self.task.policy));
        self.overrides = overrides;
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        id: NodeId,
        parent: Option<NodeId>,
        task: &'static TaskSpec,
        state: NodeState,
        args: Vec<(String, StoredArg)>,
        input_hash: String,
        output: Option<Value>,
        error: Option<Error>,
        attempts: u32,
    ) -> Self {
        Self {
            id,
            parent,
            task,
            policy: task.policy,
            overrides: None,
            state,
            args,
            input_hash,
            output,
            error,
            attempts,
            deps: Vec::new(),
            dependents: Vec::new(),
            children: Vec::new(),
            unmet: 0,
            awaiters: Vec::new(),
            waiting_on: 0,
            live: None,
            logged: 0,
            ended_at: 0,
            started_at: 0,
            failures: 0,
            losses: 0,
            parked: None,
            seq: None,
            rerun: false,
            unbound: false,
            calls: 0,
            parked_on_children: None,
            observed: Observed::default(),
            after: Vec::new(),
        }
    }
}

impl Core {
    /// Applies one mutation of a body.
    pub(super) fn mutate(&mut self, at: AttemptId, m: Mutation) {
        match m {
            Mutation::Spawn(request) => self.spawn(at, request),
            Mutation::Edge { from, to } => self.control_edge(at, from, to),
            Mutation::Promise { seq, text, scope } => self.declare(at, seq, &text, scope),
            Mutation::Annotate { child, annotation } => self.annotate(at.node, child, annotation),
            Mutation::EdgeLabel { from, to, label } => self.label_edge(at.node, from, to, label),
        }
    }

    /// How many of a node's deps have not succeeded.
    pub(super) fn unmet_of(&self, id: NodeId) -> usize {
        self.nodes[id.index()].deps.iter().filter(|d| self.nodes[d.index()].state != NodeState::Succeeded).count()
    }

    pub(super) fn set_state(&mut self, id: NodeId, state: NodeState) {
        let n = &mut self.nodes[id.index()];
        if n.state != state {
            n.state = state;
            self.fx.writes.push(Write::NodeState { run: self.run, node: id, state });
        }
    }

    /// The input object of a node: its values, and the outputs of the nodes it takes.
    pub(super) fn input_of(&self, id: NodeId) -> Value {
        let mut input = Map::new();
        for (name, arg) in &self.nodes[id.index()].args {
            let v = arg.resolve(&|dep| self.nodes.get(dep.index()).and_then(|n| n.output.clone()));
            input.insert(name.clone(), v);
        }
        Value::Object(input)
    }

    /// Fails the current attempt of a node at once (its body is stopped).
    pub(super) fn fail_attempt(&mut self, at: AttemptId, error: Error) {
        if self.nodes[at.node.index()].live == Some(at.attempt) {
            self.fx.actions.push(super::Action::Stop(at));
        }
        self.attempt_finished(at.node, at.attempt, Err(error));
    }

    fn spawn(&mut self, at: AttemptId, req: SpawnRequest) {
        let parent = at.node;
        let SpawnRequest { seq, task, args, after, policy } = req;
        let Some(descriptor) = self.registry.spec(&task) else {
            let e = Error::new(ErrorKind::Protocol, format!("spawn of unknown task `{task}`"));
            return self.fail_attempt(at, e);
        };
        let mut stored = Vec::with_capacity(args.len());
        for (name, arg) in args {
            let a = match arg {
                WireArg::List(items) => {
                    let mut list = Vec::with_capacity(items.len());
                    for item in items {
                        match self.stored_arg(parent, descriptor.name, &name, item) {
                            Ok(a) => list.push(a),
                            Err(e) => return self.fail_attempt(at, e),
                        }
                    }
                    StoredArg::List(list)
                }
                arg => match self.stored_arg(parent, descriptor.name, &name, arg) {
                    Ok(a) => a,
                    Err(e) => return self.fail_attempt(at, e),
                },
            };
            stored.push((name, a));
        }
        for s in after {
            match self.keys.get(&(parent, s)) {
                Some(&child) => self.observe(at, child),
                None => {
                    let e = Error::new(ErrorKind::Protocol, format!("observed call {s}, which spawned no node"));
                    return self.fail_attempt(at, e);
                }
            }
        }
        let input_hash = hash_args(descriptor.name, &stored);
        let rerun = self.nodes[parent.index()].rerun;
        if let Some(&(kind, _)) = self.journal.get(&(parent, seq)) {
            if rerun {
                // A re-running body calls something else here now: from here on it is new.
                self.supersede_from(parent, seq);
            } else {
                let e = self.nondeterministic(
                    parent,
                    seq,
                    format!("`{}()`", super::replay::journal_name(kind)),
                    describe_call(descriptor.name, &stored),
                );
                return self.fail_attempt(at, e);
            }
        }
        if let Some(&existing) = self.keys.get(&(parent, seq)) {
            let n = &self.nodes[existing.index()];
            if n.task.name != descriptor.name || n.input_hash != input_hash {
                if !rerun {
                    let expected = describe_call(n.task.name, &n.args);
                    let e = self.nondeterministic(parent, seq, expected, describe_call(descriptor.name, &stored));
                    return self.fail_attempt(at, e);
                }
                // A re-running body makes a different call here: the old child and every later
                // one are superseded, and this call spawns a new node below.
                self.supersede_from(parent, seq);
            } else {
                if n.unbound {
                    // The same call as before: the rerun runs the child again.
                    self.nodes[existing.index()].unbound = false;
                    self.promote(existing);
                    return;
                }
                // A child that failed before this attempt of its parent began runs again; one
                // that failed during it is this attempt's result, and so is one whose failure an
                // earlier attempt received without failing itself (it parked, or was interrupted).
                let stale = n.ended_at < self.nodes[parent.index()].started_at;
                if stale
                    && matches!(n.state, NodeState::Failed | NodeState::Cancelled | NodeState::Skipped)
                    && !n.killed()
                    && !self.keeps_failure(existing)
                {
                    self.revive(existing);
                }
                return;
            }
        }

        if !self.nodes[parent.index()].task.may_spawn {
            let p = self.nodes[parent.index()].task.name;
            let e = Error::new(
                ErrorKind::Graph,
                format!(
                    "task `{p}` called task `{}`, but only workflows and tasks marked `spawns` may spawn nodes; write `#[task(spawns)]` on `{p}`",
                    descriptor.name
                ),
            );
            return self.fail_attempt(at, e);
        }
        let id = NodeId::at(self.nodes.len());
        let deps: Vec<NodeId> = {
            let mut d: Vec<NodeId> = stored.iter().flat_map(|(_, a)| a.nodes()).collect();
            d.sort_unstable();
            d.dedup();
            d
        };
        let after = self.after_edges(parent, &deps);
        let what =
            format!("spawning `{}` from node {parent} (`{}`)", descriptor.name, self.nodes[parent.index()].task.name);
        match self.check_spawn(parent, descriptor.name, &deps) {
            Ok(shapes) => {
                for (i, shape) in shapes {
                    self.promises[i].shape = Some(shape);
                }
            }
            Err(promise) => return self.terminate(promise, &what, Some(parent)),
        }
        let unmet = deps.iter().filter(|d| self.nodes[d.index()].state != NodeState::Succeeded).count();
        let doomed = deps
            .iter()
            .find(|d| {
                matches!(self.nodes[d.index()].state, NodeState::Failed | NodeState::Skipped | NodeState::Cancelled)
            })
            .copied();
        let record = super::new_node(
            id,
            Some((parent, seq)),
            descriptor,
            stored.clone(),
            input_hash.clone(),
            policy.clone(),
            self.wall,
        );
        self.fx.writes.push(Write::InsertNode { run: self.run, node: Box::new(record) });
        for (d, kind) in deps.iter().map(|d| (d, EdgeKind::Data)).chain(after.iter().map(|d| (d, EdgeKind::After))) {
            let edge = EdgeRecord { from: *d, to: id, kind, label: None };
            self.fx.writes.push(Write::InsertEdge { run: self.run, edge });
            self.nodes[d.index()].dependents.push(id);
        }
        let mut node = Node::new(id, Some(parent), descriptor, NodeState::Pending, stored, input_hash, None, None, 0);
        node.deps = deps;
        node.deps.extend(after.iter().copied());
        node.after = after;
        node.unmet = unmet;
        node.set_policy(policy);
        node.seq = Some(seq);
        self.nodes.push(node);
        self.nodes[parent.index()].children.push(id);
        self.keys.insert((parent, seq), id);
        self.active += 1;
        self.declare_registered(id);
        if let Some(dep) = doomed {
            let e = self.upstream_error(dep);
            self.end_node(id, NodeState::Skipped, None, Some(e));
        } else {
            self.promote(id);
        }
    }

    /// A single (not list) argument `name` of a call to `task` from `parent`, as stored.
    fn stored_arg(&self, parent: NodeId, task: &str, name: &str, arg: WireArg) -> Result<StoredArg, Error> {
        match arg {
            WireArg::Value(v) if crate::model::too_deep(&v) => {
                let what = format!("argument `{name}` of a call to task `{task}`");
                Err(Error::new(ErrorKind::Input, crate::model::depth_message(what)))
            }
            WireArg::Value(v) => Ok(StoredArg::Value(v)),
            // Executors read blobs back into values before the core sees a spawn.
            WireArg::Blob(_) => {
                Err(Error::new(ErrorKind::Protocol, format!("argument `{name}` arrived unread from its blob")))
            }
            WireArg::Handle(s) => match self.keys.get(&(parent, s)) {
                Some(dep) => Ok(StoredArg::Node(*dep)),
                None => Err(Error::new(
                    ErrorKind::Protocol,
                    format!("argument `{name}` refers to call {s}, which spawned no node"),
                )),
            },
            WireArg::List(_) => {
                Err(Error::new(ErrorKind::Protocol, format!("argument `{name}` nests a list in a list")))
            }
        }
    }

    /// The attempt `at` of a body observed the result of its child `child`: keep the observed
    /// set minimal. A child that did not succeed is not something to run after.
    fn observe(&mut self, at: AttemptId, child: NodeId) {
        if self.nodes[child.index()].state != NodeState::Succeeded {
            return;
        }
        let mut obs = std::mem::take(&mut self.nodes[at.node.index()].observed);
        if obs.attempt != at.attempt {
            obs = Observed { attempt: at.attempt, ..Observed::default() };
        }
        if !obs.covered.contains(&child) {
            // Everything `child` runs after is covered now, and no longer on the frontier.
            let mut stack = vec![child];
            while let Some(n) = stack.pop() {
                if !obs.covered.insert(n) {
                    obs.frontier.remove(&n);
                    continue;
                }
                stack.extend(self.nodes[n.index()].deps.iter().copied());
            }
            obs.frontier.insert(child);
        }
        self.nodes[at.node.index()].observed = obs;
    }

    /// The `after` edges of a child `parent` spawns now, taking the nodes `deps`: from every
    /// node of the parent's observed frontier that is neither one of `deps` nor upstream of one.
    fn after_edges(&self, parent: NodeId, deps: &[NodeId]) -> Vec<NodeId> {
        let p = &self.nodes[parent.index()];
        if p.observed.frontier.is_empty() || p.live != Some(p.observed.attempt) {
            return Vec::new();
        }
        let obs = &p.observed;
        let mut implied = HashSet::new();
        let mut seen = HashSet::new();
        let mut stack = deps.to_vec();
        while let Some(n) = stack.pop() {
            if obs.frontier.contains(&n) {
                implied.insert(n);
            }
            // What a covered node runs after is covered too, and none of it is on the frontier.
            if obs.covered.contains(&n) || !seen.insert(n) {
                continue;
            }
            stack.extend(self.nodes[n.index()].deps.iter().copied());
        }
        obs.frontier.iter().filter(|f| !implied.contains(*f)).copied().collect()
    }

    pub(super) fn nondeterministic(&self, node: NodeId, seq: u32, expected: String, found: String) -> Error {
        Error::new(
            ErrorKind::NonDeterministic,
            format!(
                "non-deterministic replay of node {node} (`{}`) at call {seq}: the journal has {expected}, the body now made {found}; task bodies must make the same calls in the same order on every run",
                self.nodes[node.index()].task.name
            ),
        )
    }

    pub(super) fn upstream_error(&self, dep: NodeId) -> Error {
        let d = &self.nodes[dep.index()];
        Error::new(ErrorKind::Upstream, format!("upstream node {} (`{}`) did not succeed", d.id, d.task.name))
    }

    pub(super) fn await_child(&mut self, at: AttemptId, call: u64, seq: u32) {
        let node = at.node;
        let Some(&child) = self.keys.get(&(node, seq)) else {
            let e = Error::new(ErrorKind::Protocol, format!("await of call {seq}, which spawned no node"));
            return self.fail_attempt(at, e);
        };
        if self.nodes[child.index()].state.is_terminal() {
            let result = self.result_of(child);
            if result.is_err() {
                self.delivered(child, at.attempt);
            }
            return self.answer(at, call, Answer::Resolved(result));
        }
        self.nodes[child.index()].awaiters.push(Awaiter { at, call });
        let p = &mut self.nodes[node.index()];
        p.waiting_on += 1;
        if p.waiting_on == 1 && p.state == NodeState::Running {
            self.held.free(super::queue::ask_of(&p.policy, self.config.placement));
            self.set_state(node, NodeState::Waiting);
            if let Some(after) = self.config.park_after {
                self.set_timer(after, super::timers::Timer::Park { node, attempt: at.attempt });
            }
        }
    }

    pub(super) fn result_of(&self, id: NodeId) -> Result<Value, Error> {
        let n = &self.nodes[id.index()];
        match n.state {
            NodeState::Succeeded => Ok(n.output.clone().unwrap_or(Value::Null)),
            NodeState::Cancelled if n.killed() => {
                Err(Error::new(ErrorKind::Killed, format!("node {} (`{}`) was killed", n.id, n.task.name)))
            }
            NodeState::Cancelled => {
                Err(Error::new(ErrorKind::Cancelled, format!("node {} (`{}`) was cancelled", n.id, n.task.name)))
            }
            // A child that timed out says so. A child that failed for good (a fatal error, a
            // broken rule) makes its awaiting parent fail for good too: retrying the parent
            // would not help.
            _ => Err(Error::new(
                match &n.error {
                    Some(e) if e.kind() == ErrorKind::Timeout => ErrorKind::Timeout,
                    Some(e) if !e.kind().is_retryable() && e.kind() != ErrorKind::Upstream => ErrorKind::Fatal,
                    _ => ErrorKind::Child,
                },
                format!(
                    "node {} (`{}`) failed: {}",
                    n.id,
                    n.task.name,
                    n.error.as_ref().map(|e| e.message()).unwrap_or("unknown error")
                ),
            )),
        }
    }

    /// A control edge between two children of the attempt's node.
    fn control_edge(&mut self, at: AttemptId, from_seq: u32, to_seq: u32) {
        let node = at.node;
        let (Some(&from), Some(&to)) = (self.keys.get(&(node, from_seq)), self.keys.get(&(node, to_seq))) else {
            let e = Error::new(ErrorKind::Protocol, "edge between handles that spawned no node");
            return self.fail_attempt(at, e);
        };
        if self.nodes[to.index()].deps.contains(&from) {
            return; // already there (a replay, or a data edge)
        }
        let name = |id: NodeId| format!("{id} (`{}`)", self.nodes[id.index()].task.name);
        let graph_error = |msg: String| Error::new(ErrorKind::Graph, msg);
        let t = &self.nodes[to.index()];
        if t.attempts > 0 || !matches!(t.state, NodeState::Pending | NodeState::Ready) {
            let e = graph_error(format!(
                "cannot add edge {} -> {}: node {} has already {}",
                name(from),
                name(to),
                to,
                if t.state.is_terminal() { t.state.as_str() } else { "started" }
            ));
            return self.fail_attempt(at, e);
        }
        // A cycle: `from` is downstream of `to`.
        let mut stack = vec![to];
        let mut seen = std::collections::HashSet::new();
        while let Some(n) = stack.pop() {
            if n == from {
                let e = graph_error(format!("cannot add edge {} -> {}: it would close a cycle", name(from), name(to)));
                return self.fail_attempt(at, e);
            }
            if seen.insert(n) {
                stack.extend(self.nodes[n.index()].dependents.iter().copied());
            }
        }
        match self.check_edge(from, to) {
            Ok(shapes) => {
                for (i, shape) in shapes {
                    self.promises[i].shape = Some(shape);
                }
            }
            Err(p) => {
                let what = format!("adding edge {} -> {} from node {}", name(from), name(to), name(node));
                return self.terminate(p, &what, Some(node));
            }
        }
        let edge = EdgeRecord { from, to, kind: EdgeKind::Control, label: None };
        self.fx.writes.push(Write::InsertEdge { run: self.run, edge });
        self.nodes[from.index()].dependents.push(to);
        let from_state = self.nodes[from.index()].state;
        let t = &mut self.nodes[to.index()];
        t.deps.push(from);
        if from_state != NodeState::Succeeded {
            t.unmet += 1;
            if t.state == NodeState::Ready {
                self.set_state(to, NodeState::Pending);
            }
        }
        if matches!(from_state, NodeState::Failed | NodeState::Skipped | NodeState::Cancelled) {
            let e = self.upstream_error(from);
            self.end_node(to, NodeState::Skipped, None, Some(e));
        }
    }

    fn annotate(&mut self, node: NodeId, child: Option<u32>, annotation: Annotation) {
        let target = match child {
            None => Some(node),
            Some(seq) => self.keys.get(&(node, seq)).copied(),
        };
        if let Some(target) = target {
            self.fx.writes.push(Write::Annotate { run: self.run, node: target, annotation });
        }
    }

    /// Labels the edge between two children of `node` (by their sequence numbers), whatever its
    /// kind; nothing happens when there is no such edge (a label is cosmetic).
    fn label_edge(&mut self, node: NodeId, from: u32, to: u32, label: String) {
        if let (Some(&from), Some(&to)) = (self.keys.get(&(node, from)), self.keys.get(&(node, to)))
            && self.nodes[to.index()].deps.contains(&from)
        {
            self.fx.writes.push(Write::EdgeLabel { run: self.run, from, to, label });
        }
    }

    /// A node reached a final state: record it, answer its awaiters, and move its dependents
    /// on (ready when all their deps succeeded, skipped when one did not).
    pub(super) fn end_node(&mut self, id: NodeId, state: NodeState, output: Option<Value>, error: Option<Error>) {
        let mut stack = vec![(id, state, output, error)];
        while let Some((id, state, output, error)) = stack.pop() {
            let n = &mut self.nodes[id.index()];
            if n.state.is_terminal() {
                continue;
            }
            if let Some(attempt) = n.live.take() {
                if n.state == NodeState::Running {
                    self.held.free(super::queue::ask_of(&n.policy, self.config.placement));
                }
                self.fx.actions.push(super::Action::Stop(AttemptId { run: self.run, node: id, attempt }));
                self.fx.writes.push(Write::AttemptFinished {
                    run: self.run,
                    node: id,
                    attempt,
                    state: if state == NodeState::Failed { NodeState::Failed } else { NodeState::Cancelled },
                    error: error.clone(),
                    at: self.wall,
                });
            }
            let n = &mut self.nodes[id.index()];
            n.state = state;
            n.output = output.clone();
            n.error = error.clone();
            n.parked = None;
            n.parked_on_children = None;
            self.clock += 1;
            n.ended_at = self.clock;
            let task = n.task.name;
            let attempts = n.attempts;
            self.active -= 1;
            self.fx.writes.push(Write::NodeFinished {
                run: self.run,
                node: id,
                state,
                output,
                error: error.clone(),
                at: self.wall,
            });
            self.note(id, task, state, attempts, error.as_ref());

            let result = self.result_of(id);
            for w in std::mem::take(&mut self.nodes[id.index()].awaiters) {
                let p = &mut self.nodes[w.at.node.index()];
                let current = p.live == Some(w.at.attempt) || p.parked_on_children == Some(w.at.attempt);
                if current && result.is_err() {
                    self.delivered(id, w.at.attempt);
                }
                let p = &mut self.nodes[w.at.node.index()];
                if p.parked_on_children == Some(w.at.attempt) {
                    // Parked while it awaited: replay it now that a child has ended.
                    self.unpark(w.at.node);
                    continue;
                }
                if p.live == Some(w.at.attempt) {
                    p.waiting_on = p.waiting_on.saturating_sub(1);
                    if p.waiting_on == 0 && p.state == NodeState::Waiting {
                        self.held.take(super::queue::ask_of(&p.policy, self.config.placement));
                        self.set_state(w.at.node, NodeState::Running);
                    }
                }
                self.answer(w.at, w.call, Answer::Resolved(result.clone()));
            }

            let dependents = self.nodes[id.index()].dependents.clone();
            if state == NodeState::Succeeded {
                for d in dependents {
                    let dn = &mut self.nodes[d.index()];
                    dn.unmet = dn.unmet.saturating_sub(1);
                    self.promote(d);
                }
            } else {
                let up = self.upstream_error(id);
                for d in dependents {
                    if !self.nodes[d.index()].state.is_terminal() && self.nodes[d.index()].live.is_none() {
                        stack.push((d, NodeState::Skipped, None, Some(up.clone())));
                    }
                }
                // Nobody will await what a failed body spawned: stop it.
                let cancel = Error::new(ErrorKind::Cancelled, format!("its parent node {id} (`{task}`) ended"));
                for c in self.nodes[id.index()].children.clone() {
                    if !self.nodes[c.index()].state.is_terminal() {
                        stack.push((c, NodeState::Cancelled, None, Some(cancel.clone())));
                    }
                }
                if id == 0 {
                    for i in 1..self.nodes.len() {
                        if !self.nodes[i].state.is_terminal() {
                            stack.push((NodeId::at(i), NodeState::Cancelled, None, Some(cancel.clone())));
                        }
                    }
                }
            }
        }
    }

    /// Cancels the run: every node not in a final state is cancelled.
    pub fn cancel(&mut self, reason: String) {
        self.cancel_reason = Some(reason.clone());
        let e = Error::new(ErrorKind::Cancelled, reason);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].state.is_terminal() {
                self.end_node(NodeId::at(i), NodeState::Cancelled, None, Some(e.clone()));
            }
        }
    }
}
