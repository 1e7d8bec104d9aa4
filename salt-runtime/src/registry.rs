//! The registry of tasks and workflows, filled by `#[task]`/`#[workflow]` through `inventory`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};

/// The future a registered task body returns: its output as JSON.
pub type BodyFuture = Pin<Box<dyn Future<Output = Result<Value>> + Send + 'static>>;

pub use salt_core::policy::{Backoff, DEFAULT_QUEUE, Kind, Policy, PolicyOverride};
use salt_core::run::{Catalog, TaskSpec};

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

impl TaskDescriptor {
    /// What the run core reads of this task.
    pub fn spec(&self) -> TaskSpec {
        TaskSpec {
            name: self.name,
            policy: self.policy,
            label: self.label,
            color: self.color,
            promises: self.promises,
            may_spawn: self.may_spawn,
        }
    }

    /// The body of an attempt: runs this task's body on `input`, then checks what it returned
    /// against the task's output schema (see [`TaskDescriptor::check_output`]). Every executor
    /// runs attempts through this, so the check holds wherever the body runs.
    pub fn body(&'static self, input: Value, ctx: Context) -> BodyFuture {
        let body = (self.run)(input, ctx);
        Box::pin(async move {
            let output = body.await?;
            self.check_output(&output)?;
            Ok(output)
        })
    }

    /// Checks a body's encoded output against this task's output schema (the ranges, patterns
    /// and lengths declared on the output type): an error of kind [`ErrorKind::Output`] naming
    /// each bad field's path and the rule it breaks. An output schema that is not a valid
    /// schema checks nothing.
    pub fn check_output(&'static self, output: &Value) -> Result<()> {
        type Validators = std::sync::Mutex<std::collections::HashMap<&'static str, Option<Arc<jsonschema::Validator>>>>;
        static VALIDATORS: OnceLock<Validators> = OnceLock::new();
        let validator = {
            let mut all = VALIDATORS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
            all.entry(self.name)
                .or_insert_with(|| jsonschema::validator_for(&(self.output_schema)()).ok().map(Arc::new))
                .clone()
        };
        let Some(validator) = validator else { return Ok(()) };
        let problems: Vec<String> = validator
            .iter_errors(output)
            .map(|e| {
                let at = e.instance_path.to_string();
                format!("{e} at `{}`", if at.is_empty() { "/" } else { at.as_str() })
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Output,
            format!("output of `{}` does not match its output schema: {}", self.name, problems.join("; ")),
        ))
    }
}

/// What is wrong with `value` against the JSON Schema `schema`: one line per problem, saying
/// what was expected and at which path of `value` (`/` for the value itself); empty when it
/// matches. An error when `schema` is not a valid schema. Sized integers (`format: uint32`, …)
/// are held to their range (see [`with_integer_bounds`]).
pub fn schema_problems(schema: &Value, value: &Value) -> std::result::Result<Vec<String>, String> {
    Ok(InputSchema::new(schema)?.problems(value).into_iter().map(|p| format!("{} at `{}`", p.message, p.at)).collect())
}

/// One way a value breaks a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// Where, as a JSON pointer into the value (`/` for the value itself).
    pub at: String,
    /// The field it is about: `at`, or for a missing property, the property's pointer.
    pub field: String,
    /// What was expected there, for people.
    pub message: String,
}

/// A JSON Schema compiled to check values against, with the ranges of its sized integers
/// added (see [`with_integer_bounds`]). Compile it once and check many values.
pub struct InputSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchema").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl InputSchema {
    /// Compiles `schema`; an error saying why when it is not a valid schema.
    pub fn new(schema: &Value) -> std::result::Result<Self, String> {
        let schema = with_integer_bounds(schema.clone());
        let validator = jsonschema::validator_for(&schema).map_err(|e| e.to_string())?;
        Ok(InputSchema { schema, validator })
    }

    /// Each way `value` breaks this schema; empty when it matches. A number out of the range
    /// of its integer type says the range: `4294967296 is out of range: allowed 0 to
    /// 4294967295 (uint32)`.
    pub fn problems(&self, value: &Value) -> Vec<SchemaProblem> {
        self.validator
            .iter_errors(value)
            .map(|e| {
                let at = e.instance_path.to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                let field = match &e.kind {
                    jsonschema::error::ValidationErrorKind::Required { property } => {
                        format!("{}/{}", at.trim_end_matches('/'), property.as_str().unwrap_or_default())
                    }
                    _ => at.clone(),
                };
                let message = match &e.kind {
                    jsonschema::error::ValidationErrorKind::Minimum { .. }
                    | jsonschema::error::ValidationErrorKind::Maximum { .. } => {
                        range_message(&self.schema, e.schema_path.as_str(), &e.instance)
                            .unwrap_or_else(|| e.to_string())
                    }
                    _ => e.to_string(),
                };
                SchemaProblem { at, field, message }
            })
            .collect()
    }
}

/// The ranges of the integer formats schemars writes for Rust's sized integers.
const INTEGER_RANGES: [(&str, i128, i128); 12] = [
    ("uint8", 0, u8::MAX as i128),
    ("uint16", 0, u16::MAX as i128),
    ("uint32", 0, u32::MAX as i128),
    ("uint64", 0, u64::MAX as i128),
    ("uint", 0, usize::MAX as i128),
    ("uint128", 0, u64::MAX as i128),
    ("int8", i8::MIN as i128, i8::MAX as i128),
    ("int16", i16::MIN as i128, i16::MAX as i128),
    ("int32", i32::MIN as i128, i32::MAX as i128),
    ("int64", i64::MIN as i128, i64::MAX as i128),
    ("int", isize::MIN as i128, isize::MAX as i128),
    ("int128", i64::MIN as i128, u64::MAX as i128),
];

/// `schema` with `minimum` and `maximum` on every integer of a sized format (`uint32`,
/// `int8`, …, as schemars writes for `u32`, `i8`, …): the format alone checks nothing, so
/// without them `4294967296` passes for a `u32` and fails only when a body decodes it. A
/// bound the schema sets already is kept when it is narrower. (`u128` and `i128` are held to
/// what a JSON number carries exactly.)
pub fn with_integer_bounds(mut schema: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                let range = map
                    .get("format")
                    .and_then(Value::as_str)
                    .and_then(|f| INTEGER_RANGES.iter().find(|(name, _, _)| *name == f))
                    .filter(|_| match map.get("type") {
                        Some(Value::String(t)) => t == "integer",
                        Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                        _ => false,
                    });
                if let Some(&(_, min, max)) = range {
                    let number = |n: i128| match u64::try_from(n) {
                        Ok(u) => Value::from(u),
                        Err(_) => Value::from(n as i64),
                    };
                    let narrower_min = map.get("minimum").and_then(Value::as_f64).is_some_and(|m| m >= min as f64);
                    if !narrower_min {
                        map.insert("minimum".into(), number(min));
                    }
                    let narrower_max = map.get("maximum").and_then(Value::as_f64).is_some_and(|m| m <= max as f64);
                    if !narrower_max {
                        map.insert("maximum".into(), number(max));
                    }
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// `4294967296 is out of range: allowed 0 to 4294967295 (uint32)`, for a `minimum` or
/// `maximum` at `keyword` (a schema path, through local `$ref`s) of an integer with both
/// bounds; `None` for anything else.
fn range_message(schema: &Value, keyword: &str, instance: &Value) -> Option<String> {
    let mut node = schema;
    let mut segments: Vec<String> =
        keyword.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
    segments.pop()?;
    for segment in &segments {
        node = if segment == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            schema.pointer(target)?
        } else {
            match node {
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => node.get(segment)?,
            }
        };
    }
    let (min, max) = (node.get("minimum")?, node.get("maximum")?);
    let format = node.get("format").and_then(Value::as_str).map(|f| format!(" ({f})")).unwrap_or_default();
    Some(format!("{instance} is out of range: allowed {min} to {max}{format}"))
}

/// All tasks and workflows of this binary, by name.
#[derive(Debug)]
pub struct Registry {
    tasks: BTreeMap<&'static str, &'static TaskDescriptor>,
    /// What the run core reads of each, made once.
    specs: BTreeMap<&'static str, &'static TaskSpec>,
}

impl Catalog for Registry {
    fn spec(&self, name: &str) -> Option<&'static TaskSpec> {
        self.specs.get(name).copied()
    }
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
        let specs = tasks.iter().map(|(&name, d)| (name, &*Box::leak(Box::new(d.spec())))).collect();
        Ok(Registry { tasks, specs })
    }

    /// The registry of a binary this process does not link, from its manifest (what
    /// `<bin> manifest --json` prints): every task and workflow with its policy, promises,
    /// label and color, enough for a run core to drive its runs. Their bodies are not here:
    /// attempts of such a registry run in processes of the binary (see [`crate::remote`]), and
    /// inputs are checked against the manifest's schemas by the caller. Made once per binary
    /// and kept for the life of the process.
    pub fn from_manifest(manifest: &Value) -> Result<&'static Registry> {
        let bad = |what: String| Error::new(ErrorKind::Usage, format!("invalid manifest: {what}"));
        let mut descriptors = Vec::new();
        for (list, kind) in [("tasks", Kind::Task), ("workflows", Kind::Workflow)] {
            let entries =
                manifest.get(list).and_then(Value::as_array).ok_or_else(|| bad(format!("no `{list}` list")))?;
            for entry in entries {
                descriptors.push(descriptor_of(entry, kind).map_err(bad)?);
            }
        }
        let leaked: Vec<&'static TaskDescriptor> = descriptors.into_iter().map(|d| &*Box::leak(Box::new(d))).collect();
        let registry = Registry::build(leaked.into_iter()).map_err(bad)?;
        Ok(Box::leak(Box::new(registry)))
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

/// A descriptor of a task known from a manifest entry: no body, no schemas (see
/// [`Registry::from_manifest`]).
fn descriptor_of(entry: &Value, kind: Kind) -> std::result::Result<TaskDescriptor, String> {
    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }
    let text = |key: &str| entry.get(key).and_then(Value::as_str);
    let name = text("name").ok_or("an entry without a `name`")?;
    let at = |what: &str| format!("`{name}`: {what}");
    let policy = entry.get("policy").ok_or_else(|| at("no `policy`"))?;
    let ms = |v: Option<&Value>| v.and_then(Value::as_u64).map(Duration::from_millis);
    let backoff = match policy.get("backoff") {
        None => Policy::DEFAULT.backoff,
        Some(b) => match b.get("kind").and_then(Value::as_str) {
            Some("fixed") => {
                Backoff::Fixed(ms(b.get("delay_ms")).ok_or_else(|| at("a fixed backoff without `delay_ms`"))?)
            }
            Some("exponential") => Backoff::Exponential {
                base: ms(b.get("base_ms")).ok_or_else(|| at("an exponential backoff without `base_ms`"))?,
                cap: ms(b.get("cap_ms")).ok_or_else(|| at("an exponential backoff without `cap_ms`"))?,
            },
            _ => return Err(at("an unknown backoff")),
        },
    };
    let policy = Policy {
        retries: policy.get("retries").and_then(Value::as_u64).map_or(0, |r| r.min(u32::MAX as u64) as u32),
        backoff,
        timeout: ms(policy.get("timeout_ms")),
        queue: leak(policy.get("queue").and_then(Value::as_str).unwrap_or(DEFAULT_QUEUE)),
        priority: policy
            .get("priority")
            .and_then(Value::as_i64)
            .map_or(0, |p| p.clamp(i32::MIN as i64, i32::MAX as i64) as i32),
        cores: policy.get("cores").and_then(Value::as_u64).map_or(0, |c| c.min(u32::MAX as u64) as u32),
        memory_mb: policy.get("memory_mb").and_then(Value::as_u64).unwrap_or(0),
    };
    let promises: Vec<&'static str> = entry
        .get("promises")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(Value::as_str).map(leak).collect())
        .unwrap_or_default();
    for p in &promises {
        p.parse::<salt_promise::Promise>().map_err(|e| at(&format!("promise `{p}`: {e}")))?;
    }
    let default_input = entry.get("default_input").filter(|v| !v.is_null()).map(|v| leak(&v.to_string()));
    Ok(TaskDescriptor {
        name: leak(name),
        kind,
        module: leak(text("module").unwrap_or("")),
        doc: leak(text("doc").unwrap_or("")),
        input_schema: || Value::Bool(true),
        output_schema: || Value::Bool(true),
        run: elsewhere,
        check_input: |_| Ok(()),
        policy,
        label: text("label").map(leak),
        color: text("color").map(leak),
        default_input,
        schedule: text("schedule").map(leak),
        promises: Box::leak(promises.into_boxed_slice()),
        may_spawn: entry.get("may_spawn").and_then(Value::as_bool).unwrap_or(kind == Kind::Workflow),
    })
}

/// The body of a task known only from a manifest: it runs in a process of its binary.
fn elsewhere(_: Value, _: Context) -> BodyFuture {
    Box::pin(async {
        Err(Error::new(
            ErrorKind::Usage,
            "this task is known from a manifest: its attempts run in processes of its binary",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Size {
        width: u32,
        depth: Option<i8>,
    }

    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Input {
        size: Size,
        counts: Vec<u16>,
        big: u64,
    }

    #[test]
    fn sized_integers_are_held_to_their_range_with_a_message_saying_it() {
        let schema = serde_json::to_value(schemars::schema_for!(Input)).unwrap();
        let bounded = with_integer_bounds(schema.clone());
        assert_eq!(bounded["properties"]["big"]["maximum"], serde_json::json!(u64::MAX));
        assert_eq!(bounded["properties"]["counts"]["items"]["maximum"], 65535);
        let ok =
            serde_json::json!({"size": {"width": 4294967295u64, "depth": -128}, "counts": [65535], "big": u64::MAX});
        assert_eq!(schema_problems(&schema, &ok).unwrap(), Vec::<String>::new());
        let bad = serde_json::json!({"size": {"width": 4294967296u64, "depth": 128}, "counts": [70000], "big": -1});
        assert_eq!(
            schema_problems(&schema, &bad).unwrap(),
            [
                "-1 is out of range: allowed 0 to 18446744073709551615 (uint64) at `/big`",
                "70000 is out of range: allowed 0 to 65535 (uint16) at `/counts/0`",
                "128 is out of range: allowed -128 to 127 (int8) at `/size/depth`",
                "4294967296 is out of range: allowed 0 to 4294967295 (uint32) at `/size/width`",
            ]
        );
        // A narrower range the schema declares is kept.
        let narrow = serde_json::json!({"type": "integer", "format": "uint8", "minimum": 1, "maximum": 9});
        assert_eq!(with_integer_bounds(narrow.clone()), narrow);
        assert_eq!(
            schema_problems(&narrow, &serde_json::json!(10)).unwrap(),
            ["10 is out of range: allowed 1 to 9 (uint8) at `/`"]
        );
    }

    #[test]
    fn exponential_backoff_doubles_up_to_the_cap() {
        let b = Backoff::Exponential { base: Duration::from_secs(1), cap: Duration::from_secs(5) };
        let delays: Vec<u64> = (1..=5).map(|r| b.delay(r).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 5, 5]);
    }

    #[test]
    fn a_policy_override_replaces_only_what_it_sets() {
        let task = Policy { retries: 1, queue: "gpu", priority: 2, ..Policy::DEFAULT };
        let none = PolicyOverride::default().apply(task);
        assert_eq!((none.retries, none.queue, none.priority, none.timeout), (1, "gpu", 2, None));
        let o = PolicyOverride {
            retries: Some(4),
            backoff_ms: Some(100),
            backoff_cap_ms: Some(400),
            timeout_ms: Some(1500),
            queue: Some("cpu".into()),
            priority: None,
            cores: Some(2),
            memory_mb: None,
        };
        let p = o.apply(task);
        assert_eq!((p.retries, p.queue, p.priority), (4, "cpu", 2));
        assert_eq!((p.cores, p.memory_mb), (2, 0));
        assert_eq!(p.timeout, Some(Duration::from_millis(1500)));
        let delays: Vec<u128> = (1..=4).map(|r| p.backoff.delay(r).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 400]);
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<PolicyOverride>(&text).unwrap(), o);
    }
}
