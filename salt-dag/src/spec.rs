//! The file format: daggy's DAG run definition, read with serde.
//!
//! A spec is one JSON object:
//!
//! ```json
//! {
//!   "parameters": { "DATE": ["2021-01-01", "2021-01-02"], "SOURCE": "name" },
//!   "jobDefaults": { "environment": ["TZ=UTC"] },
//!   "tasks": {
//!     "populate_inputs": { "job": { "command": ["/usr/bin/touch", "/tmp/{{DATE}}"] } },
//!     "calc_date": {
//!       "job": { "commandString": "/path/to/calculator {{DATE}} '{{SOURCE}}'" },
//!       "maxRetries": 3, "retryIntervalSeconds": 30,
//!       "parents": ["populate_inputs"]
//!     }
//!   }
//! }
//! ```
//!
//! `tasks` is either an object keyed by task name (daggy's current form) or a list of task
//! objects that each carry a `name` (its older form); both keep the order of the file.
//! Unknown keys are refused rather than ignored, so that a misspelt `parent` or `maxRetry`
//! is an error naming the key instead of a dependency or a retry silently lost.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::DagError;

/// A whole DAG file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DagSpec {
    /// `parameters`: values substituted for `{{NAME}}` in commands and environments. A list
    /// value expands every task that uses it, one task per value (see [`crate::Plan`]).
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
    /// `jobDefaults`: keys merged into every task's `job` that the task does not set itself.
    #[serde(default)]
    pub job_defaults: Map<String, Value>,
    /// `tasks`, in the order of the file.
    pub tasks: Tasks,
}

/// A parameter's value: one string, or a list of strings to expand over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// One value, substituted as is.
    One(String),
    /// Several values: every task that uses the parameter is expanded once per value.
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d) {
            Ok(Raw::One(v)) => Ok(ParamValue::One(v)),
            Ok(Raw::List(v)) => Ok(ParamValue::List(v)),
            Err(_) => Err(de::Error::custom("expected a string or a list of strings")),
        }
    }
}

impl ParamValue {
    /// Parses a `--param` value: a JSON list of strings when it starts with `[`, the text
    /// itself otherwise.
    pub fn parse_cli(text: &str) -> Result<Self, String> {
        if text.trim_start().starts_with('[') {
            serde_json::from_str::<Vec<String>>(text)
                .map(ParamValue::List)
                .map_err(|e| format!("`{text}` starts like a JSON list but is not a list of strings: {e}"))
        } else {
            Ok(ParamValue::One(text.to_string()))
        }
    }

    /// Its values, in order.
    pub fn values(&self) -> &[String] {
        match self {
            ParamValue::One(v) => std::slice::from_ref(v),
            ParamValue::List(v) => v,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::One(v) => f.write_str(v),
            ParamValue::List(v) => write!(f, "{}", serde_json::to_string(v).unwrap_or_default()),
        }
    }
}

/// The tasks of a spec (or of a generator's output), in the order written.
#[derive(Debug, Clone, Default)]
pub struct Tasks(pub Vec<(String, TaskSpec)>);

/// One task as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSpec {
    /// `name`: required in the list form; in the object form the key is the name, and a
    /// `name` that differs from the key is an error.
    #[serde(default)]
    pub name: Option<String>,
    /// `job`: what to run, before `jobDefaults` are merged in (see [`Job`]).
    #[serde(default)]
    pub job: Map<String, Value>,
    /// `maxRetries`: how many times a failed attempt is retried (daggy's default: 0).
    #[serde(default)]
    pub max_retries: u32,
    /// `retryIntervalSeconds`: how long to wait between attempts (default 0).
    #[serde(default)]
    pub retry_interval_seconds: u64,
    /// `parents`: tasks that must succeed before this one starts.
    #[serde(default)]
    pub parents: Vec<String>,
    /// `children`: tasks that wait for this one (the same edge written from the other end).
    #[serde(default)]
    pub children: Vec<String>,
    /// `isGenerator`: the task's output (its stdout) is a JSON object of new tasks, added to
    /// the running graph after it (see [`crate::Plan::add_generated`]).
    #[serde(default)]
    pub is_generator: bool,
}

/// A task's `job` once `jobDefaults` are merged in.
///
/// daggy's forking executor takes `command` (an argv list, run without a shell),
/// `commandString` (one string split into arguments with shell quoting rules, still run
/// without a shell) and `environment` (a list of `NAME=VALUE` strings; an object of names to
/// values is accepted too).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Job {
    /// `command`: the argv.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `commandString`: the argv as one string, split like a POSIX shell splits words
    /// (quotes and backslashes), without any expansion.
    #[serde(default)]
    pub command_string: Option<String>,
    /// `environment`: variables set for the command.
    #[serde(default)]
    pub environment: Environment,
    /// `image`: a container image to run the command in (an extension of daggy's format).
    #[serde(default)]
    pub image: Option<String>,
}

/// A job's `environment`: `["NAME=VALUE", …]` as daggy writes it, or `{"NAME": "VALUE"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Map(BTreeMap<String, String>),
        }
        match Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected a list of \"NAME=VALUE\" strings or an object of strings"))?
        {
            Raw::Map(m) => Ok(Environment(m.into_iter().collect())),
            Raw::List(l) => l
                .into_iter()
                .map(|entry| match entry.split_once('=') {
                    Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                    _ => Err(de::Error::custom(format!("environment entry `{entry}` is not NAME=VALUE"))),
                })
                .collect::<Result<_, _>>()
                .map(Environment),
        }
    }
}

impl<'de> Deserialize<'de> for Tasks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tasks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of tasks keyed by name, or a list of tasks with a `name`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tasks, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let task: TaskSpec = map.next_value()?;
                    if let Some(name) = &task.name
                        && *name != key
                    {
                        return Err(de::Error::custom(format!("task `{key}` has a different `name`: `{name}`")));
                    }
                    out.push((key, task));
                }
                Ok(Tasks(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tasks, A::Error> {
                let mut out = Vec::new();
                while let Some(task) = seq.next_element::<TaskSpec>()? {
                    let Some(name) = task.name.clone() else {
                        return Err(de::Error::custom(format!("task number {} has no `name`", out.len() + 1)));
                    };
                    out.push((name, task));
                }
                Ok(Tasks(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Deserializes JSON text into `T`, an error saying where (`tasks.calc_date.maxRetries`).
pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, DagError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        DagError::Parse { path: if path == "?" { ".".into() } else { path }, message: e.inner().to_string() }
    })?;
    de.end().map_err(|e| DagError::Parse { path: ".".into(), message: e.to_string() })?;
    Ok(value)
}

/// Deserializes a `job` object (defaults merged in) of task `task`, errors prefixed with its path.
pub(crate) fn job_from(task: &str, job: Map<String, Value>) -> Result<Job, DagError> {
    serde_path_to_error::deserialize(Value::Object(job))
        .map_err(|e| DagError::Parse { path: format!("tasks.{task}.job.{}", e.path()), message: e.inner().to_string() })
}

impl DagSpec {
    /// Reads a spec from JSON text. Type errors name the path of the bad value.
    pub fn from_json(text: &str) -> Result<Self, DagError> {
        from_json(text)
    }
}

/// Merges `jobDefaults` into a task's `job`, as daggy does: a key the task sets wins, a key
/// only the defaults set is copied. `command` and `commandString` are one slot: a task that
/// sets either takes neither from the defaults.
pub(crate) fn merge_defaults(job: &Map<String, Value>, defaults: &Map<String, Value>) -> Map<String, Value> {
    let mut out = job.clone();
    let sets_command = job.contains_key("command") || job.contains_key("commandString");
    for (k, v) in defaults {
        if sets_command && (k == "command" || k == "commandString") {
            continue;
        }
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    out
}
