//! `salt.toml`: the settings of each workflow given at registration (`salt register BINARY
//! --config salt.toml`): its cron schedule and time zone, whether it starts paused, its queue,
//! its default input, its overlap and catch-up policies, the events that start it and the
//! webhooks told about its runs.
//!
//! ```toml
//! [workflows.etl]
//! schedule = "0 3 * * *"          # overrides #[workflow(schedule = "…")]; "" removes it
//! timezone = "Europe/Berlin"      # IANA name; UTC when left out
//! paused = false
//! queue = "etl"
//! input = { day = "yesterday" }   # a TOML table, or a string holding JSON
//! overlap = "skip"                # skip | buffer_one | allow
//! catchup = "skip"                # skip | run_once
//! events = ["files_uploaded"]
//! webhooks = [{ url = "http://127.0.0.1:9000/hook", on = ["failed"] }]
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schedule::ScheduleSpec;

/// A parsed and checked `salt.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaltToml {
    /// Settings per workflow, by workflow name.
    #[serde(default)]
    pub workflows: BTreeMap<String, WorkflowConfig>,
}

/// The settings of one workflow in `salt.toml`; what is left out keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// A cron expression of 5 or 6 fields; overrides the workflow's own; `""` removes it.
    pub schedule: Option<String>,
    /// The IANA time zone the schedule is read in (default UTC).
    pub timezone: Option<String>,
    /// Whether the schedule is paused.
    pub paused: Option<bool>,
    /// The queue its runs go to.
    pub queue: Option<String>,
    /// The default input of scheduled and event-started runs: a TOML table or a JSON string.
    pub input: Option<toml::Value>,
    /// What happens to an occurrence while the previous run is still going.
    pub overlap: Option<Overlap>,
    /// What happens to occurrences missed while the server was down.
    pub catchup: Option<Catchup>,
    /// The events that start this workflow (`POST /api/v1/events/{name}`).
    #[serde(default)]
    pub events: Vec<String>,
    /// The webhooks told about its runs.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// What a schedule does with an occurrence while its previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The occurrence is skipped (recorded as skipped).
    #[default]
    Skip,
    /// One occurrence waits and starts when the previous run ends; further ones are skipped.
    BufferOne,
    /// The occurrence starts anyway.
    Allow,
}

/// What a schedule does with the occurrences it missed while the server was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Missed occurrences are dropped; the schedule goes on with the next one.
    #[default]
    Skip,
    /// One run starts for the missed occurrences (keyed by the latest of them).
    RunOnce,
}

impl Overlap {
    /// The name used in `salt.toml` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::BufferOne => "buffer_one",
            Self::Allow => "allow",
        }
    }

    /// Reads a name written by [`Overlap::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Skip, Self::BufferOne, Self::Allow].into_iter().find(|o| o.as_str() == s)
    }
}

impl Catchup {
    /// The name used in `salt.toml` and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run_once",
        }
    }

    /// Reads a name written by [`Catchup::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Skip, Self::RunOnce].into_iter().find(|o| o.as_str() == s)
    }
}

/// A webhook: where to POST, and on which events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `http://` (or, built with the `tls` feature, `https://`) URL to POST to.
    pub url: String,
    /// The events it is told about; every event when left out.
    #[serde(default = "WebhookEvent::all")]
    pub on: Vec<WebhookEvent>,
}

/// What a webhook is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    /// A run failed (or was terminated by a broken promise).
    Failed,
    /// A run succeeded.
    Succeeded,
    /// A node waits for a signal.
    Waiting,
}

impl WebhookEvent {
    /// Every event.
    pub fn all() -> Vec<Self> {
        vec![Self::Failed, Self::Succeeded, Self::Waiting]
    }

    /// Its name, as in `on = [...]` and the `event` of a delivery.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Succeeded => "succeeded",
            Self::Waiting => "waiting",
        }
    }
}

/// A `salt.toml` that cannot be used: which key, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted path of the bad key (`workflows.etl.timezone`); empty when the file does not
    /// parse (the message then carries the line and the key).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "salt.toml: {}", self.message)
        } else {
            write!(f, "salt.toml: `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl SaltToml {
    /// Parses and checks `salt.toml`: unknown keys, bad cron expressions, unknown time zones,
    /// bad inputs, URLs and event names are errors naming the key.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let parsed: Self = toml::from_str(text)
            .map_err(|e| ConfigError { key: String::new(), message: e.to_string().trim_end().to_string() })?;
        for (name, workflow) in &parsed.workflows {
            workflow.check(&format!("workflows.{name}"))?;
        }
        Ok(parsed)
    }

    /// Checks that every workflow named in the file is one of `known` (the binary's workflows).
    pub fn check_workflows<'a>(&self, known: impl IntoIterator<Item = &'a str>) -> Result<(), ConfigError> {
        let known: Vec<&str> = known.into_iter().collect();
        for name in self.workflows.keys() {
            if !known.contains(&name.as_str()) {
                return Err(ConfigError {
                    key: format!("workflows.{name}"),
                    message: format!("the binary has no workflow `{name}` (it has: {})", known.join(", ")),
                });
            }
        }
        Ok(())
    }
}

impl WorkflowConfig {
    fn check(&self, at: &str) -> Result<(), ConfigError> {
        let err = |key: &str, message: String| ConfigError { key: format!("{at}.{key}"), message };
        let zone = self.timezone.as_deref().unwrap_or("UTC");
        if let Err(e) = jiff::tz::TimeZone::get(zone) {
            return Err(err("timezone", format!("unknown time zone `{zone}`: {e}")));
        }
        if let Some(cron) = self.schedule.as_deref().filter(|s| !s.trim().is_empty()) {
            ScheduleSpec::parse(cron, zone).map_err(|e| err("schedule", e.to_string()))?;
        }
        if let Some(queue) = &self.queue {
            check_name("queue", queue).map_err(|m| err("queue", m))?;
        }
        if self.input.is_some() {
            self.input_json().map_err(|m| err("input", m))?;
        }
        for (i, event) in self.events.iter().enumerate() {
            if !valid_event_name(event) {
                return Err(err(
                    &format!("events[{i}]"),
                    format!("`{event}` is not an event name: use letters, digits, `_`, `-` and `.`"),
                ));
            }
        }
        for (i, hook) in self.webhooks.iter().enumerate() {
            check_url(&hook.url).map_err(|m| err(&format!("webhooks[{i}].url"), m))?;
            if hook.on.is_empty() {
                return Err(err(&format!("webhooks[{i}].on"), "names no event; leave it out for every event".into()));
            }
        }
        Ok(())
    }

    /// The default input as JSON: a TOML table converts as is, a string is read as JSON text.
    pub fn input_json(&self) -> Result<Option<Value>, String> {
        match &self.input {
            None => Ok(None),
            Some(toml::Value::String(text)) => {
                serde_json::from_str(text).map(Some).map_err(|e| format!("a string input must hold JSON: {e}"))
            }
            Some(v @ toml::Value::Table(_)) => Ok(Some(toml_to_json(v))),
            Some(_) => Err("expected a table or a string holding JSON".into()),
        }
    }
}

/// The longest name of a queue or an event.
pub const NAME_MAX: usize = 128;

/// Whether `name` may name a queue or an event: 1 to [`NAME_MAX`] letters, digits, `_`, `-` or
/// `.`, not starting with `.` (so that no name reads as a path: `../x` is refused).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why `name` cannot name a `what` (`queue`, `event`), or nothing when it can (see
/// [`valid_name`]). A long name is shown cut.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if valid_name(name) {
        return Ok(());
    }
    let shown: String = name.chars().take(40).collect();
    let shown = if shown.len() < name.len() { format!("{shown}…") } else { shown };
    Err(format!(
        "`{shown}` is not a {what} name: use 1 to {NAME_MAX} letters, digits, `_`, `-` and `.`, not starting with `.`"
    ))
}

/// Whether `name` may name an event (see [`valid_name`]).
pub fn valid_event_name(name: &str) -> bool {
    valid_name(name)
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// The settings a workflow version runs with: its manifest's schedule and default input,
/// overridden by its `salt.toml` entry, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowSettings {
    /// The cron expression, if the workflow is scheduled.
    pub schedule: Option<String>,
    /// The IANA time zone of the schedule.
    pub timezone: String,
    /// Whether `salt.toml` says the schedule is paused (`None`: it does not say).
    pub paused: Option<bool>,
    /// The queue its runs go to, if not the default.
    pub queue: Option<String>,
    /// The input of scheduled and event-started runs (`null` when it has none).
    pub input: Value,
    /// The overlap policy.
    pub overlap: Overlap,
    /// The catch-up policy.
    pub catchup: Catchup,
    /// The events that start it.
    pub events: Vec<String>,
    /// The webhooks told about its runs.
    pub webhooks: Vec<WebhookConfig>,
}

impl WorkflowSettings {
    /// Resolves a workflow's settings: `manifest_schedule` (its `#[workflow(schedule = …)]`) and
    /// `manifest_input` (its default input, `null` for none) are overridden by `config`.
    pub fn resolve(manifest_schedule: Option<&str>, manifest_input: &Value, config: Option<&WorkflowConfig>) -> Self {
        let default = WorkflowConfig::default();
        let config = config.unwrap_or(&default);
        let schedule = match config.schedule.as_deref() {
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(s.trim().to_string()),
            None => manifest_schedule.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()),
        };
        Self {
            schedule,
            timezone: config.timezone.clone().unwrap_or_else(|| "UTC".into()),
            paused: config.paused,
            queue: config.queue.clone(),
            input: config.input_json().ok().flatten().unwrap_or_else(|| manifest_input.clone()),
            overlap: config.overlap.unwrap_or_default(),
            catchup: config.catchup.unwrap_or_default(),
            events: config.events.clone(),
            webhooks: config.webhooks.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_full_entry_parses_with_its_values() {
        let cfg = SaltToml::parse(
            r#"
            [workflows.etl]
            schedule = "0 3 * * *"
            timezone = "Europe/Berlin"
            paused = true
            queue = "etl"
            input = { day = "2024-01-01", n = 3, tags = ["a"] }
            overlap = "buffer_one"
            catchup = "run_once"
            events = ["files_uploaded", "manual.kick"]
            webhooks = [{ url = "http://127.0.0.1:9/hook", on = ["failed", "waiting"] }, { url = "https://example.org/x" }]
            "#,
        )
        .unwrap();
        let etl = &cfg.workflows["etl"];
        let s = WorkflowSettings::resolve(Some("0 4 * * *"), &Value::Null, Some(etl));
        assert_eq!(s.schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(s.timezone, "Europe/Berlin");
        assert_eq!(s.paused, Some(true));
        assert_eq!(s.queue.as_deref(), Some("etl"));
        assert_eq!(s.input, json!({"day": "2024-01-01", "n": 3, "tags": ["a"]}));
        assert_eq!((s.overlap, s.catchup), (Overlap::BufferOne, Catchup::RunOnce));
        assert_eq!(s.events, ["files_uploaded", "manual.kick"]);
        assert_eq!(s.webhooks[0].on, [WebhookEvent::Failed, WebhookEvent::Waiting]);
        assert_eq!(s.webhooks[1].on, WebhookEvent::all());
    }

    #[test]
    fn the_manifest_gives_the_defaults_and_salt_toml_overrides_them() {
        let s = WorkflowSettings::resolve(Some("0 4 * * *"), &json!({"a": 1}), None);
        assert_eq!(s.schedule.as_deref(), Some("0 4 * * *"));
        assert_eq!(s.timezone, "UTC");
        assert_eq!(s.paused, None);
        assert_eq!(s.input, json!({"a": 1}));
        assert_eq!((s.overlap, s.catchup), (Overlap::Skip, Catchup::Skip));

        let cfg = SaltToml::parse("[workflows.w]\nschedule = \"\"\ninput = '{\"a\": 2}'\n").unwrap();
        let s = WorkflowSettings::resolve(Some("0 4 * * *"), &json!({"a": 1}), cfg.workflows.get("w"));
        assert_eq!(s.schedule, None, "an empty schedule removes the manifest's");
        assert_eq!(s.input, json!({"a": 2}), "a string input is JSON text");
    }

    fn error(text: &str) -> String {
        SaltToml::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_bad_key() {
        let e = error("[workflows.etl]\nschedul = \"0 3 * * *\"\n");
        assert!(e.contains("unknown field `schedul`") && e.contains("line 2"), "{e}");
        let e = error("[workflow.etl]\n");
        assert!(e.contains("unknown field `workflow`"), "{e}");
        assert_eq!(
            error("[workflows.etl]\ntimezone = \"Europe/Berln\"\n").split(':').take(2).collect::<Vec<_>>(),
            ["salt.toml", " `workflows.etl.timezone`"]
        );
        assert!(
            error("[workflows.etl]\nschedule = \"61 * * * *\"\n").starts_with("salt.toml: `workflows.etl.schedule`: ")
        );
        let e = error("[workflows.etl]\noverlap = \"queue\"\n");
        assert!(e.contains("unknown variant `queue`") && e.contains("overlap"), "{e}");
        assert!(
            error("[workflows.etl]\ninput = 3\n").starts_with("salt.toml: `workflows.etl.input`: expected a table")
        );
        assert!(
            error("[workflows.etl]\ninput = '{oops'\n")
                .starts_with("salt.toml: `workflows.etl.input`: a string input must hold JSON")
        );
        assert!(error("[workflows.etl]\nevents = [\"a b\"]\n").starts_with("salt.toml: `workflows.etl.events[0]`: "));
        assert_eq!(
            error("[workflows.etl]\nqueue = \"../../x\"\n"),
            "salt.toml: `workflows.etl.queue`: `../../x` is not a queue name: use 1 to 128 letters, digits, `_`, `-` and `.`, not starting with `.`"
        );
        let long = "q".repeat(129);
        assert!(error(&format!("[workflows.etl]\nqueue = \"{long}\"\n")).contains("is not a queue name"));
        assert!(SaltToml::parse("[workflows.etl]\nqueue = \"gpu-2.large_x\"\n").is_ok());
        assert!(
            error("[workflows.etl]\nwebhooks = [{ url = \"ftp://x\" }]\n")
                .starts_with("salt.toml: `workflows.etl.webhooks[0].url`: `ftp://x` is not an http")
        );
        let e = error("[workflows.etl]\nwebhooks = [{ url = \"http://x\", on = [\"started\"] }]\n");
        assert!(e.contains("unknown variant `started`"), "{e}");
        let e = error("[workflows.etl]\nwebhooks = [{ url = \"http://x\", retries = 3 }]\n");
        assert!(e.contains("unknown field `retries`"), "{e}");
    }

    #[test]
    fn a_workflow_the_binary_lacks_is_an_error() {
        let cfg = SaltToml::parse("[workflows.etl]\npaused = true\n").unwrap();
        assert!(cfg.check_workflows(["etl", "other"]).is_ok());
        assert_eq!(
            cfg.check_workflows(["other"]).unwrap_err().to_string(),
            "salt.toml: `workflows.etl`: the binary has no workflow `etl` (it has: other)"
        );
    }
}
