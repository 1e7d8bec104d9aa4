//! The `salt dag` subcommands: `check` and `graph` here; `run` parsed here and handed to the
//! caller, who spawns the plan's steps as command nodes.

use std::io::Write;
use std::path::PathBuf;

use crate::draw::{DagFormat, draw};
use crate::plan::Plan;
use crate::spec::ParamValue;
use crate::{DagError, DagErrors};

/// `salt dag …`: JSON DAG files in daggy's format.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DagCommand {
    /// Check a DAG file: parse it, expand its parameters and validate its dependencies.
    /// Prints a summary and exits 0, or prints every error and exits 2.
    Check(CheckArgs),
    /// Draw the plan of a DAG file, its parameters expanded.
    Graph(GraphArgs),
    /// Run a DAG file: every step a command node of one salt run.
    Run(RunArgs),
}

/// The arguments of `salt dag check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The DAG file (JSON).
    pub spec: PathBuf,
    /// Set parameter NAME to VALUE (a JSON list of strings expands over its values);
    /// repeatable; replaces the file's value.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, ParamValue)>,
}

/// The arguments of `salt dag graph`.
#[derive(Debug, Clone, clap::Args)]
pub struct GraphArgs {
    /// The DAG file (JSON).
    pub spec: PathBuf,
    /// Set parameter NAME to VALUE (a JSON list of strings expands over its values);
    /// repeatable; replaces the file's value.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, ParamValue)>,
    /// The output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: DagFormat,
}

/// The arguments of `salt dag run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The DAG file (JSON).
    pub spec: PathBuf,
    /// Set parameter NAME to VALUE (a JSON list of strings expands over its values);
    /// repeatable; replaces the file's value.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, ParamValue)>,
}

/// What [`DagCommand::execute`] leaves to its caller.
#[derive(Debug)]
pub enum Outcome {
    /// Done: exit with this code (0, or 2 for a bad file or argument, the errors printed).
    Exit(u8),
    /// `salt dag run` of a valid file: run `plan` (see [`Plan::steps`]); nothing was printed.
    Run {
        /// The checked plan.
        plan: Plan,
        /// The arguments, for the file's name and anything else the runner wants.
        args: RunArgs,
    },
}

/// Parses `--param NAME=VALUE`.
pub fn parse_param(arg: &str) -> Result<(String, ParamValue), String> {
    let bad = |message: String| DagError::Param { arg: arg.to_string(), message }.to_string();
    let Some((name, value)) = arg.split_once('=') else {
        return Err(bad("expected NAME=VALUE".into()));
    };
    if name.is_empty() {
        return Err(bad("the name is empty".into()));
    }
    Ok((name.to_string(), ParamValue::parse_cli(value).map_err(bad)?))
}

impl DagCommand {
    /// Runs `check` or `graph`, printing results to `out` and errors to `err` (one per line,
    /// each prefixed `error: `); for `run`, checks the file and returns the plan to run.
    pub fn execute(self, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
        match self {
            DagCommand::Check(a) => match Plan::load(&a.spec, &a.params) {
                Ok(plan) => {
                    let _ = out.write_all(summary(&plan, &a.spec.display().to_string()).as_bytes());
                    Outcome::Exit(0)
                }
                Err(e) => fail(err, &a.spec, &e),
            },
            DagCommand::Graph(a) => match Plan::load(&a.spec, &a.params) {
                Ok(plan) => {
                    let _ = out.write_all(draw(&plan, a.format, &a.spec.display().to_string()).as_bytes());
                    Outcome::Exit(0)
                }
                Err(e) => fail(err, &a.spec, &e),
            },
            DagCommand::Run(a) => match Plan::load(&a.spec, &a.params) {
                Ok(plan) => Outcome::Run { plan, args: a },
                Err(e) => fail(err, &a.spec, &e),
            },
        }
    }
}

fn fail(err: &mut dyn Write, spec: &std::path::Path, e: &DagErrors) -> Outcome {
    for e in &e.0 {
        let _ = writeln!(err, "error: {}: {e}", spec.display());
    }
    Outcome::Exit(2)
}

/// The summary `salt dag check` prints for a valid file.
pub(crate) fn summary(plan: &Plan, name: &str) -> String {
    let steps = plan.steps();
    let mut out = format!(
        "{name}: ok, {} tasks expanded into {} steps, {} edges\n",
        plan.file_tasks(),
        steps.len(),
        plan.edges().len()
    );
    if !plan.parameters().is_empty() {
        let params: Vec<String> = plan
            .parameters()
            .iter()
            .map(|(k, v)| match v {
                ParamValue::One(v) => format!("{k}={v}"),
                ParamValue::List(l) => format!("{k} ({} values)", l.len()),
            })
            .collect();
        out.push_str(&format!("parameters: {}\n", params.join(", ")));
    }
    let generators: Vec<&str> = steps.iter().filter(|s| s.is_generator).map(|s| s.name.as_str()).collect();
    if !generators.is_empty() {
        out.push_str(&format!("generators: {}\n", generators.join(", ")));
    }
    let order: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    out.push_str(&format!("order: {}\n", order.join(", ")));
    out
}
