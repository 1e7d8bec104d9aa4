//! The registry of tasks and workflows, filled by `#[task]`/`#[workflow]` through `inventory`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};

/// The future a registered task body returns: its output as JSON.
pub type BodyFuture = Pin<Box<dyn Future<Output = Result<Value>> + Send + 'static>>;

/// Whether a descriptor is a plain task or a workflow (an entry point of runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A `#[task]`.
    Task,
    /// A `#[workflow]`.
    Workflow,
}

/// How long to wait before the next attempt of a failed node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `base * 2^(retry - 1)`, at most `cap`.
    Exponential {
        /// The first delay.
        base: Duration,
        /// The longest delay.
        cap: Duration,
    },
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { base, cap } => {
                let factor = 2u32.saturating_pow(retry.saturating_sub(1));
                base.saturating_mul(factor).min(cap)
            }
        }
    }
}

impl Serialize for Backoff {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match *self {
            Backoff::Fixed(d) => serde_json::json!({"kind": "fixed", "delay_ms": d.as_millis() as u64}).serialize(s),
            Backoff::Exponential { base, cap } => serde_json::json!({
                "kind": "exponential",
                "base_ms": base.as_millis() as u64,
                "cap_ms": cap.as_millis() as u64,
            })
            .serialize(s),
        }
    }
}

/// The queue of tasks that name none: its nodes run on the run's own executor. A node of any
/// other queue waits in the store's durable queue for a worker of that queue.
pub const DEFAULT_QUEUE: &str = "default";

/// How a task is run: retries, backoff, timeout, queue and priority.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Policy {
    /// How many times a failed attempt is retried (0: one attempt only).
    pub retries: u32,
    /// The delay between attempts.
    pub backoff: Backoff,
    /// The longest one attempt may run; it is then killed.
    #[serde(serialize_with = "ser_opt_duration", rename = "timeout_ms")]
    pub timeout: Option<Duration>,
    /// The queue workers take this task from.
    pub queue: &'static str,
    /// Among ready nodes, higher priorities start first.
    pub priority: i32,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> std::result::Result<S::Ok, S::Error> {
    d.map(|d| d.as_millis() as u64).serialize(s)
}

impl Policy {
    /// The policy of a task with no arguments: one attempt, no timeout, queue `default`.
    pub const DEFAULT: Policy = Policy {
        retries: 0,
        backoff: Backoff::Fixed(Duration::from_secs(1)),
        timeout: None,
        queue: DEFAULT_QUEUE,
        priority: 0,
    };
}

/// Everything the runtime knows of one `#[task]` or `#[workflow]`, registered at compile time.
pub struct TaskDescriptor {
    /// The unique name (the fn name unless `name = "…"` is given).
    pub name: &'static str,
    /// Task or workflow.
    pub kind: Kind,
    /// `module_path!()` where it is defined.
    pub module: &'static str,
    /// Its doc comment.
    pub doc: &'static str,
    /// JSON Schema of its input object (parameters by name).
    pub input_schema: fn() -> Value,
    /// JSON Schema of its output.
    pub output_schema: fn() -> Value,
    /// Runs the body: decodes the input object, runs, encodes the output.
    pub run: fn(Value, Context) -> BodyFuture,
    /// Checks that a JSON value decodes as this task's input, without running anything.
    pub check_input: fn(&Value) -> Result<()>,
    /// Retries, backoff, timeout, queue, priority.
    pub policy: Policy,
    /// A label to draw instead of the name.
    pub label: Option<&'static str>,
    /// A color to draw the node with.
    pub color: Option<&'static str>,
    /// A workflow's default input, as JSON text.
    pub default_input: Option<&'static str>,
    /// A workflow's cron schedule.
    pub schedule: Option<&'static str>,
    /// Promises over the subtree of every node of this task (`promise = "…"`).
    pub promises: &'static [&'static str],
    /// Whether its body may spawn nodes: workflows, and tasks marked `#[task(spawns)]`.
    pub may_spawn: bool,
}

inventory::collect!(TaskDescriptor);

impl std::fmt::Debug for TaskDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDescriptor")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("module", &self.module)
            .finish_non_exhaustive()
    }
}

impl TaskDescriptor {
    /// Checks an input before anything is stored: it must match this task's input schema
    /// (the error names the path of each bad field and what was expected there, as `signal`
    /// does; this also refuses a JSON array, which would decode into a struct, where an object
    /// of arguments by name is expected), then decode as its parameters.
    pub fn validate_input(&self, input: &Value) -> Result<()> {
        let schema = (self.input_schema)();
        let problems = schema_problems(&schema, input).map_err(|e| {
            Error::new(ErrorKind::Usage, format!("the input schema of `{}` is not valid: {e}", self.name))
        })?;
        if !problems.is_empty() {
            return Err(Error::new(
                ErrorKind::Input,
                format!(
                    "input of `{}` does not match its input schema: {}\nexpected schema: {}",
                    self.name,
                    problems.join("; "),
                    serde_json::to_string(&schema).unwrap_or_default()
                ),
            ));
        }
        (self.check_input)(input).map_err(|e| Error::new(ErrorKind::Input, e.message()))
    }
}

/// What is wrong with `value` against the JSON Schema `schema`: one line per problem, saying
/// what was expected and at which path of `value` (`/` for the value itself); empty when it
/// matches. An error when `schema` is not a valid schema.
pub fn schema_problems(schema: &Value, value: &Value) -> std::result::Result<Vec<String>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    Ok(validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path.to_string();
            format!("{e} at `{}`", if at.is_empty() { "/" } else { at.as_str() })
        })
        .collect())
}

/// All tasks and workflows of this binary, by name.
#[derive(Debug)]
pub struct Registry {
    tasks: BTreeMap<&'static str, &'static TaskDescriptor>,
}

impl Registry {
    /// The registry of this binary, checked once: two tasks with one name are an error naming
    /// both module paths.
    pub fn global() -> Result<&'static Registry> {
        static REGISTRY: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();
        REGISTRY
            .get_or_init(|| Registry::build(inventory::iter::<TaskDescriptor>.into_iter()))
            .as_ref()
            .map_err(|m| Error::new(ErrorKind::Usage, m))
    }

    pub(crate) fn build(
        descriptors: impl Iterator<Item = &'static TaskDescriptor>,
    ) -> std::result::Result<Registry, String> {
        let mut tasks = BTreeMap::new();
        let mut all: Vec<_> = descriptors.collect();
        all.sort_by_key(|d| (d.name, d.module));
        for d in all {
            if let Some(prev) = tasks.insert(d.name, d) {
                return Err(format!(
                    "two tasks are named `{}`: one in `{}`, one in `{}`; give one of them another name with `#[task(name = \"…\")]`",
                    d.name, prev.module, d.module
                ));
            }
        }
        Ok(Registry { tasks })
    }

    /// The task or workflow with this name.
    pub fn get(&self, name: &str) -> Option<&'static TaskDescriptor> {
        self.tasks.get(name).copied()
    }

    /// The task or workflow with this name, or a clear error.
    pub fn task(&self, name: &str) -> Result<&'static TaskDescriptor> {
        self.get(name).ok_or_else(|| Error::new(ErrorKind::Usage, format!("this binary has no task `{name}`")))
    }

    /// Every task and workflow, sorted by name.
    pub fn all(&self) -> impl Iterator<Item = &'static TaskDescriptor> + '_ {
        self.tasks.values().copied()
    }

    /// The workflows, sorted by name.
    pub fn workflows(&self) -> impl Iterator<Item = &'static TaskDescriptor> + '_ {
        self.all().filter(|d| d.kind == Kind::Workflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let b = Backoff::Exponential { base: Duration::from_secs(1), cap: Duration::from_secs(5) };
        let delays: Vec<u64> = (1..=5).map(|r| b.delay(r).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
    }
}
