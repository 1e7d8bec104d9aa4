//! A task's policy: retries, backoff, timeout, queue, priority and resources.

use std::time::Duration;

use serde::Serialize;

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

/// How a task is run: retries, backoff, timeout, queue, priority and the resources it needs.
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
    /// The CPU cores one attempt holds while it runs (0: none counted; such a node is limited
    /// by the run's parallelism only).
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub cores: u32,
    /// The memory one attempt holds while it runs, in MiB (0: none counted).
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub memory_mb: u64,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
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
        cores: 0,
        memory_mb: 0,
    };
}

/// Per-call changes to a task's [`Policy`], carried by a spawn request and stored with the node:
/// a field that is set replaces the task's own. Command steps (`salt::command(…).retries(2)`)
/// use it; every part of the run core reads the node's policy, not the task's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverride {
    /// How many times a failed attempt is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The delay before each retry (the first one, for an exponential backoff), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// With `backoff_ms`: the backoff doubles at each retry up to this many ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_cap_ms: Option<u64>,
    /// The longest one attempt may run, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The queue the node runs from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its priority among ready nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The CPU cores one attempt holds while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// The memory one attempt holds while it runs, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
}

impl PolicyOverride {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `policy` with these changes.
    pub fn apply(&self, policy: Policy) -> Policy {
        let backoff = match (self.backoff_ms, self.backoff_cap_ms) {
            (Some(base), Some(cap)) => {
                Backoff::Exponential { base: Duration::from_millis(base), cap: Duration::from_millis(cap.max(base)) }
            }
            (Some(d), None) => Backoff::Fixed(Duration::from_millis(d)),
            (None, _) => policy.backoff,
        };
        Policy {
            retries: self.retries.unwrap_or(policy.retries),
            backoff,
            timeout: self.timeout_ms.map(Duration::from_millis).or(policy.timeout),
            queue: self.queue.as_deref().map_or(policy.queue, intern),
            priority: self.priority.unwrap_or(policy.priority),
            cores: self.cores.unwrap_or(policy.cores),
            memory_mb: self.memory_mb.unwrap_or(policy.memory_mb),
        }
    }
}

/// A queue name as a `&'static str`: each distinct name is leaked once (there are few).
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}
