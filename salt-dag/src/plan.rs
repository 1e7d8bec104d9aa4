//! Expansion and validation: a [`DagSpec`] becomes a [`Plan`] of [`Step`]s.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::spec::{self, DagSpec, ParamValue, TaskSpec, Tasks};
use crate::{DagError, DagErrors};

/// One command step of a plan: a task of the file with its parameters substituted.
///
/// This is what a runner turns into a node: run `argv` (no shell) with `env` added to the
/// environment, retry a failed attempt up to `max_retries` times waiting `retry_interval`
/// between attempts, start it once every step in `parents` has succeeded, and, when
/// `is_generator` is set, hand its stdout to [`Plan::add_generated`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its name: the task's name, or `NAME_1`, `NAME_2`, … when a list parameter expanded it.
    pub name: String,
    /// The name of the task it was expanded from, the name dependencies are written with.
    pub task: String,
    /// The command and its arguments, parameters substituted. Never empty.
    pub argv: Vec<String>,
    /// Environment variables set for the command, parameters substituted.
    pub env: BTreeMap<String, String>,
    /// The container image it runs in (`job.image`), parameters substituted; none: on the host.
    pub image: Option<String>,
    /// How many times a failed attempt is retried (`maxRetries`).
    pub max_retries: u32,
    /// The wait between attempts (`retryIntervalSeconds`).
    pub retry_interval: Duration,
    /// The steps that must succeed before it starts, in plan order.
    pub parents: Vec<String>,
    /// Whether its stdout is a JSON object of new tasks (`isGenerator`).
    pub is_generator: bool,
    /// The parameter values this step was expanded with (only those it uses).
    pub bindings: BTreeMap<String, String>,
    /// The generator step whose output added it; none for a step of the file.
    pub generated_by: Option<String>,
}

/// A DAG file expanded and checked: its steps in a topological order.
///
/// Expansion follows daggy: every `{{NAME}}` in a task's `command` (after `commandString` is
/// split, so a value with spaces stays one argument) and in its `environment` values is
/// replaced by parameter `NAME`. A task that uses parameters with list values is expanded
/// into one step per combination of their values (the cartesian product, the last-used
/// parameter varying fastest), named `TASK_1`, `TASK_2`, … in that order; a task that uses
/// none keeps its name. A dependency names a task of the file, never an expansion: a parent
/// `calc_date` means every `calc_date_N`.
#[derive(Debug, Clone)]
pub struct Plan {
    steps: Vec<Step>,
    parameters: BTreeMap<String, ParamValue>,
    job_defaults: Map<String, Value>,
    /// Task name → the steps expanded from it, in order.
    tasks: BTreeMap<String, Vec<String>>,
    /// How many tasks the file itself has (generated ones are counted in `tasks` too).
    file_tasks: usize,
}

/// The most steps one task may expand into.
pub const MAX_STEPS_PER_TASK: usize = 10_000;

/// The most steps a plan may have, generated ones included.
pub const MAX_STEPS: usize = 100_000;

/// The most edges a plan may have, generated ones included: a dependency between two expanded
/// tasks links every step of one to every step of the other.
pub const MAX_EDGES: usize = 100_000;

/// What a generator's output added to a plan (see [`Plan::add_generated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The new steps, in a topological order (each after its new parents).
    pub steps: Vec<Step>,
    /// Every new edge `(parent, child)`: from the generator to each new step, between new
    /// steps, from existing steps to new ones, and from new steps to existing ones.
    pub edges: Vec<(String, String)>,
}

/// Pushes an error naming the first task of `expanded` that brings a plan of `base` steps past
/// [`MAX_STEPS`].
fn check_step_count(base: usize, expanded: &[Expanded], errors: &mut Vec<DagError>) {
    let mut total = base;
    for e in expanded {
        total += e.steps.len();
        if total > MAX_STEPS {
            errors.push(DagError::TooManyStepsInPlan { task: e.task.clone(), limit: MAX_STEPS });
            return;
        }
    }
}

/// A task expanded, before its dependencies are resolved.
struct Expanded {
    task: String,
    spec: TaskSpec,
    steps: Vec<Step>,
}

impl Plan {
    /// Reads, expands and checks a DAG file's text, with `overrides` replacing (or adding)
    /// parameters, as `--param NAME=VALUE` does.
    pub fn from_json(text: &str, overrides: &[(String, ParamValue)]) -> Result<Plan, DagErrors> {
        let spec = DagSpec::from_json(text).map_err(DagErrors::one)?;
        Plan::from_spec(spec, overrides)
    }

    /// Reads, expands and checks the DAG file at `path`.
    pub fn load(path: &std::path::Path, overrides: &[(String, ParamValue)]) -> Result<Plan, DagErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DagErrors::one(DagError::Io { path: path.display().to_string(), message: e.to_string() }))?;
        Plan::from_json(&text, overrides)
    }

    /// Expands and checks a parsed spec. Every error found is reported, not just the first.
    pub fn from_spec(spec: DagSpec, overrides: &[(String, ParamValue)]) -> Result<Plan, DagErrors> {
        let mut parameters = spec.parameters;
        for (k, v) in overrides {
            parameters.insert(k.clone(), v.clone());
        }
        let mut plan = Plan {
            steps: Vec::new(),
            parameters,
            job_defaults: spec.job_defaults,
            tasks: BTreeMap::new(),
            file_tasks: spec.tasks.0.len(),
        };
        let mut errors = Vec::new();
        let expanded = plan.expand_all(spec.tasks, None, &mut errors);
        check_step_count(0, &expanded, &mut errors);
        let edges = plan.resolve(&expanded, 0, &mut errors);
        if !errors.is_empty() {
            return Err(DagErrors(errors));
        }
        let tasks: Vec<(String, Vec<String>)> =
            expanded.iter().map(|e| (e.task.clone(), e.steps.iter().map(|s| s.name.clone()).collect())).collect();
        let steps: Vec<Step> = expanded.into_iter().flat_map(|e| e.steps).collect();
        plan.tasks = tasks.into_iter().collect();
        plan.steps = steps;
        plan.link(&edges)?;
        Ok(plan)
    }

    /// The steps, in a topological order: each after all of its parents, ties kept in the
    /// order of the file. This is the hand-off to a runner: spawn one command node per step,
    /// in this order, with an edge from each of `parents`, the retry policy of
    /// `max_retries`/`retry_interval`; when a generator step succeeds, pass its stdout to
    /// [`Plan::add_generated`] and spawn the returned steps with their edges the same way.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The step named `name`.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Every edge `(parent, child)`, in plan order of the child, then of the parent.
    pub fn edges(&self) -> Vec<(&str, &str)> {
        self.steps.iter().flat_map(|s| s.parents.iter().map(move |p| (p.as_str(), s.name.as_str()))).collect()
    }

    /// The plan as JSON, titled `title`: what `salt dag graph --format json` prints (see
    /// [`crate::DagFormat::Json`]).
    pub fn to_json(&self, title: &str) -> serde_json::Value {
        crate::draw::to_json(self, title)
    }

    /// The parameters in force (the file's, with the overrides applied).
    pub fn parameters(&self) -> &BTreeMap<String, ParamValue> {
        &self.parameters
    }

    /// How many tasks the file defines (before expansion).
    pub fn file_tasks(&self) -> usize {
        self.file_tasks
    }

    /// The names of the steps expanded from task `task` (a task of the file or a generated one).
    pub fn expansions(&self, task: &str) -> Option<&[String]> {
        self.tasks.get(task).map(Vec::as_slice)
    }

    /// Adds the tasks a generator printed to the plan.
    ///
    /// As in daggy, the output is parsed as tasks in the same format as the file (an object
    /// keyed by name or a list; an object with a `tasks` member, like a whole file, is
    /// accepted too), merged with the file's `jobDefaults` and expanded with the same
    /// parameters. Every generated step becomes a child of `generator`. Their `parents` and
    /// `children` may name generated tasks or tasks already in the plan (by task name).
    ///
    /// daggy's documentation warns that a generated task must not add a child dependency to a
    /// task that has already completed; here that is refused: a generated task naming as a
    /// child any step in `done` (the steps that have finished, or started, and can no longer
    /// wait) is an error, and nothing is added. The same holds for a malformed output (the
    /// error carries the parse error and the offending text), a name already in the plan,
    /// an unknown dependency or parameter, and a cycle.
    pub fn add_generated(
        &mut self,
        generator: &str,
        output: &str,
        done: &BTreeSet<String>,
    ) -> Result<Generated, DagErrors> {
        match self.step(generator) {
            Some(s) if s.is_generator => {}
            _ => return Err(DagErrors::one(DagError::NotAGenerator { name: generator.to_string() })),
        }
        let tasks = parse_generated(generator, output).map_err(DagErrors::one)?;
        let mut errors = Vec::new();
        for (name, _) in &tasks.0 {
            if self.tasks.contains_key(name) {
                errors.push(DagError::AlreadyInPlan {
                    generator: generator.to_string(),
                    task: name.clone(),
                    name: name.clone(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(DagErrors(errors));
        }
        let expanded = self.expand_all(tasks, Some(generator), &mut errors);
        // A job of the wrong shape is a malformed output too.
        for e in &mut errors {
            if let DagError::Parse { path, message } = e {
                *e = malformed(generator, output, format!("at {path}: {message}"));
            }
        }
        check_step_count(self.steps.len(), &expanded, &mut errors);
        // The plan's edges, and one from the generator to each new step.
        let base = self.edges().len() + expanded.iter().map(|e| e.steps.len()).sum::<usize>();
        let mut edges = self.resolve(&expanded, base, &mut errors);
        for e in &expanded {
            for s in &e.steps {
                if self.step(&s.name).is_some() {
                    errors.push(DagError::AlreadyInPlan {
                        generator: generator.to_string(),
                        task: e.task.clone(),
                        name: s.name.clone(),
                    });
                }
                edges.push((generator.to_string(), s.name.clone()));
            }
        }
        // A generated task may not make a step that already ran wait for it.
        let new: BTreeSet<String> = expanded.iter().flat_map(|e| e.steps.iter().map(|s| s.name.clone())).collect();
        for (from, to) in &edges {
            if new.contains(from) && !new.contains(to) && done.contains(to) {
                let task = expanded.iter().find(|e| e.steps.iter().any(|s| s.name == *from)).map(|e| e.task.clone());
                errors.push(DagError::ChildFinished {
                    generator: generator.to_string(),
                    task: task.unwrap_or_else(|| from.clone()),
                    child: to.clone(),
                });
            }
        }
        errors.dedup();
        if !errors.is_empty() {
            return Err(DagErrors(errors));
        }
        let mut next = self.clone();
        for e in &expanded {
            next.tasks.insert(e.task.clone(), e.steps.iter().map(|s| s.name.clone()).collect());
        }
        next.steps.extend(expanded.into_iter().flat_map(|e| e.steps));
        let mut all_edges: Vec<(String, String)> =
            self.edges().into_iter().map(|(a, b)| (a.into(), b.into())).collect();
        all_edges.extend(edges.iter().cloned());
        next.link(&all_edges)?;
        edges.sort_by_key(|(a, b)| (next.position(b), next.position(a)));
        edges.dedup();
        let steps = next.steps.iter().filter(|s| new.contains(&s.name)).cloned().collect();
        *self = next;
        Ok(Generated { steps, edges })
    }

    fn position(&self, name: &str) -> usize {
        self.steps.iter().position(|s| s.name == name).unwrap_or(usize::MAX)
    }

    /// Expands every task; collects every expansion error in `errors`.
    /// A task that fails to expand is kept with no steps, so that its name still resolves
    /// and the remaining checks still run.
    fn expand_all(&self, tasks: Tasks, generator: Option<&str>, errors: &mut Vec<DagError>) -> Vec<Expanded> {
        let mut out = Vec::new();
        let mut seen_tasks: HashMap<String, ()> = HashMap::new();
        for (task, spec) in tasks.0 {
            if seen_tasks.insert(task.clone(), ()).is_some() {
                errors.push(DagError::Duplicate { name: task.clone(), first: task.clone(), second: task.clone() });
                continue;
            }
            match self.expand(&task, &spec, generator) {
                Ok(steps) => out.push(Expanded { task, spec, steps }),
                Err(mut e) => {
                    errors.append(&mut e);
                    out.push(Expanded { task, spec, steps: Vec::new() });
                }
            }
        }
        // Two expansions (or a task and an expansion) with one name.
        let mut owner: HashMap<&str, &str> = HashMap::new();
        for e in &out {
            for s in &e.steps {
                if let Some(first) = owner.insert(&s.name, &e.task) {
                    errors.push(DagError::Duplicate {
                        name: s.name.clone(),
                        first: first.to_string(),
                        second: e.task.clone(),
                    });
                }
            }
        }
        out
    }

    /// Expands one task into its steps (dependencies not yet resolved).
    fn expand(&self, task: &str, spec: &TaskSpec, generator: Option<&str>) -> Result<Vec<Step>, Vec<DagError>> {
        let job = spec::job_from(task, spec::merge_defaults(&spec.job, &self.job_defaults)).map_err(|e| vec![e])?;
        let argv = match (job.command, job.command_string) {
            (Some(_), Some(_)) => return Err(vec![DagError::BothCommands { task: task.to_string() }]),
            (Some(argv), None) => argv,
            (None, Some(s)) => shell_words::split(&s)
                .map_err(|e| vec![DagError::CommandString { task: task.to_string(), message: e.to_string() }])?,
            (None, None) => Vec::new(),
        };
        if argv.first().is_none_or(|a| a.trim().is_empty()) {
            return Err(vec![DagError::EmptyCommand { task: task.to_string() }]);
        }
        // The parameters it uses, in order of first use.
        let mut used: Vec<String> = Vec::new();
        let texts = argv.iter().chain(job.environment.0.iter().map(|(_, v)| v)).chain(job.image.iter());
        for text in texts {
            for name in placeholders(text) {
                if !used.contains(&name) {
                    used.push(name);
                }
            }
        }
        let mut errors = Vec::new();
        for name in &used {
            match self.parameters.get(name) {
                None => errors.push(DagError::UnknownParameter { task: task.to_string(), param: name.clone() }),
                Some(ParamValue::List(v)) if v.is_empty() => {
                    errors.push(DagError::EmptyParameter { task: task.to_string(), param: name.clone() })
                }
                Some(_) => {}
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let expands = used.iter().any(|n| matches!(self.parameters[n], ParamValue::List(_)));
        let count = used.iter().try_fold(1usize, |n, p| n.checked_mul(self.parameters[p].values().len()));
        if count.is_none_or(|n| n > MAX_STEPS_PER_TASK) {
            return Err(vec![DagError::TooManySteps { task: task.to_string(), limit: MAX_STEPS_PER_TASK }]);
        }
        let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        for name in &used {
            let values = self.parameters[name].values();
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(name.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        let mut steps = Vec::with_capacity(combos.len());
        for (i, bindings) in combos.into_iter().enumerate() {
            let argv: Vec<String> = argv.iter().map(|a| substitute(a, &bindings)).collect();
            if argv[0].trim().is_empty() {
                return Err(vec![DagError::EmptyCommand { task: task.to_string() }]);
            }
            steps.push(Step {
                name: if expands { format!("{task}_{}", i + 1) } else { task.to_string() },
                task: task.to_string(),
                argv,
                env: job.environment.0.iter().map(|(k, v)| (k.clone(), substitute(v, &bindings))).collect(),
                image: job.image.as_ref().map(|image| substitute(image, &bindings)),
                max_retries: spec.max_retries,
                retry_interval: Duration::from_secs(spec.retry_interval_seconds),
                parents: Vec::new(),
                is_generator: spec.is_generator,
                bindings,
                generated_by: generator.map(str::to_string),
            });
        }
        Ok(steps)
    }

    /// The edges `(parent step, child step)` that the tasks' `parents` and `children` ask
    /// for; a name is looked up among `expanded` first, then among the plan's tasks.
    ///
    /// The plan may hold at most [`MAX_EDGES`] edges, `base` of which it has already: the
    /// first dependency that would bring it past is an error naming both tasks, and no more
    /// edges are made.
    fn resolve(&self, expanded: &[Expanded], base: usize, errors: &mut Vec<DagError>) -> Vec<(String, String)> {
        let lookup = |name: &str| -> Option<Vec<String>> {
            expanded
                .iter()
                .find(|e| e.task == name)
                .map(|e| e.steps.iter().map(|s| s.name.clone()).collect())
                .or_else(|| self.tasks.get(name).cloned())
        };
        let mut edges = Vec::new();
        for e in expanded {
            let mine: Vec<String> = e.steps.iter().map(|s| s.name.clone()).collect();
            for (key, names, is_parent) in [("parents", &e.spec.parents, true), ("children", &e.spec.children, false)] {
                for other in names {
                    let Some(theirs) = lookup(other) else {
                        errors.push(DagError::UnknownDependency { task: e.task.clone(), key, name: other.clone() });
                        continue;
                    };
                    let count = mine.len().saturating_mul(theirs.len());
                    if base.saturating_add(edges.len()).saturating_add(count) > MAX_EDGES {
                        errors.push(DagError::TooManyEdges {
                            task: e.task.clone(),
                            other: other.clone(),
                            count,
                            limit: MAX_EDGES,
                        });
                        return edges;
                    }
                    for a in &mine {
                        for b in &theirs {
                            edges.push(if is_parent { (b.clone(), a.clone()) } else { (a.clone(), b.clone()) });
                        }
                    }
                }
            }
        }
        edges
    }

    /// Sets every step's parents from `edges` and orders the steps topologically, ties in
    /// their current order; a cycle is an error naming it (by task names).
    fn link(&mut self, edges: &[(String, String)]) -> Result<(), DagErrors> {
        let index: HashMap<&str, usize> = self.steps.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
        let n = self.steps.len();
        let mut children: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        let mut parents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (a, b) in edges {
            let (Some(&a), Some(&b)) = (index.get(a.as_str()), index.get(b.as_str())) else { continue };
            children[a].insert(b);
            parents[b].insert(a);
        }
        let mut indegree: Vec<usize> = parents.iter().map(BTreeSet::len).collect();
        let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &c in &children[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(Reverse(c));
                }
            }
        }
        if order.len() < n {
            let cycle = find_cycle(&parents, &indegree).into_iter().map(|i| self.steps[i].task.clone()).collect();
            return Err(DagErrors::one(DagError::Cycle { cycle: dedup_cycle(cycle) }));
        }
        let mut position = vec![0; n];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let mut steps: Vec<Option<Step>> = std::mem::take(&mut self.steps).into_iter().map(Some).collect();
        let names: Vec<String> = steps.iter().map(|s| s.as_ref().map(|s| s.name.clone()).unwrap_or_default()).collect();
        for &i in &order {
            let mut step = steps[i].take().unwrap_or_else(|| unreachable!("each step is ordered once"));
            let mut ps: Vec<usize> = parents[i].iter().copied().collect();
            ps.sort_by_key(|&p| position[p]);
            step.parents = ps.into_iter().map(|p| names[p].clone()).collect();
            self.steps.push(step);
        }
        Ok(())
    }
}

/// Finds one cycle among the nodes Kahn's algorithm could not order (those left with a
/// nonzero in-degree), returned closed (first node repeated at the end) and starting at its
/// earliest node. Each such node has a parent among them, so walking from parent to parent
/// must come back to a node already seen.
fn find_cycle(parents: &[BTreeSet<usize>], indegree: &[usize]) -> Vec<usize> {
    let stuck = |i: usize| indegree[i] > 0;
    let Some(start) = (0..indegree.len()).find(|&i| stuck(i)) else { return Vec::new() };
    let mut path = vec![start];
    let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut at = start;
    loop {
        let Some(&p) = parents[at].iter().find(|&&p| stuck(p)) else { return Vec::new() };
        if let Some(&i) = seen.get(&p) {
            // path[i..] walks the cycle backwards.
            let mut cycle: Vec<usize> = path[i..].iter().rev().copied().collect();
            let first = cycle.iter().enumerate().min_by_key(|(_, n)| **n).map_or(0, |(k, _)| k);
            cycle.rotate_left(first);
            cycle.push(cycle[0]);
            return cycle;
        }
        seen.insert(p, path.len());
        path.push(p);
        at = p;
    }
}

/// A cycle of steps as a cycle of tasks: consecutive repeats (expansions of one task) merged.
fn dedup_cycle(mut cycle: Vec<String>) -> Vec<String> {
    cycle.dedup();
    if cycle.len() == 1 {
        cycle.push(cycle[0].clone());
    }
    cycle
}

/// The `{{NAME}}` placeholders of `text`, in order.
pub(crate) fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 2..];
    }
    out
}

/// `text` with every `{{NAME}}` replaced by its binding.
fn substitute(text: &str, bindings: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        match bindings.get(&after[..end]) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// The longest part of a generator's output quoted in an error.
const QUOTED: usize = 2000;

/// A [`DagError::MalformedOutput`] quoting `output`.
fn malformed(generator: &str, output: &str, message: String) -> DagError {
    DagError::MalformedOutput {
        generator: generator.to_string(),
        message,
        text: if output.len() > QUOTED {
            let mut cut = QUOTED;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            format!("{}…", &output[..cut])
        } else {
            output.to_string()
        },
    }
}

/// Parses a generator's output into tasks.
fn parse_generated(generator: &str, output: &str) -> Result<Tasks, DagError> {
    let malformed = |message: String| malformed(generator, output, message);
    let value: Value = serde_json::from_str(output).map_err(|e| malformed(e.to_string()))?;
    let nested = match &value {
        Value::Object(m) => match m.get("tasks") {
            Some(Value::Array(_)) => true,
            Some(Value::Object(t)) => !t.contains_key("job"),
            _ => false,
        },
        _ => false,
    };
    let text = if nested { value["tasks"].to_string() } else { value.to_string() };
    spec::from_json::<Tasks>(&text).map_err(|e| match e {
        DagError::Parse { path, message } if path == "." => malformed(message),
        DagError::Parse { path, message } => malformed(format!("at {path}: {message}")),
        other => malformed(other.to_string()),
    })
}
