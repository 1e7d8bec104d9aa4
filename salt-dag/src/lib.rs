//! JSON DAG files for salt, in [daggy]'s format.
//!
//! A DAG file lists command tasks with their dependencies, retry policy and environment;
//! `parameters` are substituted for `{{NAME}}` and a list value expands every task that uses
//! it into one task per value; generator tasks print more tasks while the DAG runs. This
//! crate reads such a file ([`DagSpec`]), checks it, and expands it into a [`Plan`]: the
//! command [`Step`]s in a topological order, ready for a runner to spawn as nodes of a salt
//! run. It also draws the plan ([`draw`]) and provides the `salt dag` subcommands
//! ([`DagCommand`]).
//!
//! ```
//! use salt_dag::Plan;
//!
//! let plan = Plan::from_json(
//!     r#"{
//!       "parameters": { "DATE": ["2021-01-01", "2021-01-02"] },
//!       "tasks": {
//!         "pull": { "job": { "command": ["echo", "pull"] } },
//!         "calc_date": { "job": { "commandString": "echo 'day {{DATE}}'" }, "parents": ["pull"] },
//!         "report": { "job": { "command": ["echo", "report"] }, "parents": ["calc_date"] }
//!       }
//!     }"#,
//!     &[],
//! )
//! .unwrap();
//! let names: Vec<&str> = plan.steps().iter().map(|s| s.name.as_str()).collect();
//! assert_eq!(names, ["pull", "calc_date_1", "calc_date_2", "report"]);
//! assert_eq!(plan.steps()[1].argv, ["echo", "day 2021-01-01"]);
//! assert_eq!(plan.steps()[3].parents, ["calc_date_1", "calc_date_2"]);
//! ```
//!
//! [daggy]: https://gitlab.com/iroddis/daggy

mod cli;
mod draw;
mod plan;
mod spec;

use std::fmt;

pub use cli::{CheckArgs, DagCommand, GraphArgs, Outcome, RunArgs, parse_param};
pub use draw::{DagFormat, draw};
pub use plan::{Generated, MAX_EDGES, MAX_STEPS, MAX_STEPS_PER_TASK, Plan, Step};
pub use spec::{DagSpec, Environment, Job, ParamValue, TaskSpec, Tasks};

/// One thing wrong with a DAG file or a generator's output. Each names its culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Not JSON, or a value of the wrong type or an unknown key at `path`.
    #[error("{}", if path == "." { message.clone() } else { format!("at {path}: {message}") })]
    Parse {
        /// Where, as `tasks.calc_date.maxRetries` (`.` for the whole document).
        path: String,
        /// What serde said.
        message: String,
    },
    /// A `parents` or `children` entry names no task.
    #[error("task `{task}`: {key} names `{name}`, which is not a task of this DAG")]
    UnknownDependency {
        /// The task that names it.
        task: String,
        /// `parents` or `children`.
        key: &'static str,
        /// The unknown name.
        name: String,
    },
    /// The dependencies go round.
    #[error("the dependencies form a cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The tasks on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// Two tasks (or expansions) with one name.
    #[error("{}", duplicate(name, first, second))]
    Duplicate {
        /// The name.
        name: String,
        /// The task that had it first.
        first: String,
        /// The task that has it again.
        second: String,
    },
    /// A `{{NAME}}` that is not a parameter.
    #[error("task `{task}` uses `{{{{{param}}}}}`, but there is no parameter `{param}`")]
    UnknownParameter {
        /// The task.
        task: String,
        /// The unknown parameter.
        param: String,
    },
    /// A list parameter with no values, used by a task (which would expand into nothing).
    #[error("task `{task}` uses parameter `{param}`, whose list of values is empty")]
    EmptyParameter {
        /// The task.
        task: String,
        /// The parameter.
        param: String,
    },
    /// A task whose list parameters multiply into too many steps.
    #[error("task `{task}` would expand into more than {limit} steps")]
    TooManySteps {
        /// The task.
        task: String,
        /// The limit, [`MAX_STEPS_PER_TASK`].
        limit: usize,
    },
    /// Tasks whose steps, together, are too many for one plan.
    #[error("the plan would have more than {limit} steps: task `{task}` brings it past the limit")]
    TooManyStepsInPlan {
        /// The task that brings the plan past the limit.
        task: String,
        /// The limit, [`MAX_STEPS`].
        limit: usize,
    },
    /// A dependency between two expanded tasks that would make too many edges: each step of
    /// one is linked to each step of the other.
    #[error(
        "the dependency of task `{task}` on task `{other}` would link {count} pairs of steps, bringing the plan past {limit} edges; expand fewer steps on one side"
    )]
    TooManyEdges {
        /// The task whose `parents` or `children` names the other.
        task: String,
        /// The task named.
        other: String,
        /// The pairs of steps the dependency links (at most `usize::MAX`).
        count: usize,
        /// The limit, [`MAX_EDGES`].
        limit: usize,
    },
    /// No command, or an empty one.
    #[error("task `{task}` has an empty command: set `job.command` (a list) or `job.commandString`")]
    EmptyCommand {
        /// The task.
        task: String,
    },
    /// Both `command` and `commandString`.
    #[error("task `{task}` sets both `job.command` and `job.commandString`; keep one")]
    BothCommands {
        /// The task.
        task: String,
    },
    /// A `commandString` that cannot be split (an unclosed quote).
    #[error("task `{task}`: cannot split job.commandString: {message}")]
    CommandString {
        /// The task.
        task: String,
        /// Why.
        message: String,
    },
    /// A malformed `--param`.
    #[error("--param `{arg}`: {message}")]
    Param {
        /// The argument as given.
        arg: String,
        /// Why.
        message: String,
    },
    /// Generated tasks were offered for a step that is not a generator.
    #[error("`{name}` is not a generator step of this plan")]
    NotAGenerator {
        /// The step.
        name: String,
    },
    /// A generated task (or one of its expansions) has the name of a step already planned.
    #[error("generator `{generator}`: generated task `{task}` is named `{name}`, which is already a step of this DAG")]
    AlreadyInPlan {
        /// The generator step.
        generator: String,
        /// The generated task.
        task: String,
        /// The name it clashes on.
        name: String,
    },
    /// A generator's output is not tasks.
    #[error("generator `{generator}` printed malformed tasks: {message}\n--- its output ---\n{text}")]
    MalformedOutput {
        /// The generator step.
        generator: String,
        /// The parse error.
        message: String,
        /// The offending text (cut after 2000 bytes).
        text: String,
    },
    /// A generated task names as a child a task that has already finished.
    #[error(
        "generator `{generator}`: task `{task}` names `{child}` as a child, but `{child}` has already run; \
         a generated task cannot add a dependency to a task that has completed"
    )]
    ChildFinished {
        /// The generator step.
        generator: String,
        /// The generated task.
        task: String,
        /// The finished step it named as a child.
        child: String,
    },
}

fn duplicate(name: &str, first: &str, second: &str) -> String {
    if first == name && second == name {
        format!("task `{name}` is defined twice")
    } else if first == second {
        format!("task `{first}` expands to `{name}` twice")
    } else {
        format!("two tasks are named `{name}` after expansion: from `{first}` and from `{second}`")
    }
}

/// Every error found in a DAG file (at least one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagErrors(pub Vec<DagError>);

impl DagErrors {
    /// Just one error.
    pub fn one(e: DagError) -> Self {
        DagErrors(vec![e])
    }
}

impl fmt::Display for DagErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DagErrors {}

#[cfg(test)]
mod tests;
