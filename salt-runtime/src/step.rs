//! Step actions (`pre`, `post`, `on_failure` of `#[task]`): what one may be, and how it runs in
//! an attempt. A step action is either a future of `Result<()>` (a call of an `async fn`) or a
//! [`Command`] (a command step run in the attempt, not as a node of its own).

use std::future::Future;
use std::pin::Pin;

use crate::command::{Command, StepInfo};
use crate::context::Context;
use crate::error::Result;

/// What a step action gives when called: a future of `salt::Result<()>` (an `async fn … ->
/// salt::Result<()>` called), or a [`Command`] to run in the attempt.
#[diagnostic::on_unimplemented(
    message = "a step action must give a future of `salt::Result<()>` or a `salt::Command`, but it gives `{Self}`",
    label = "this step action",
    note = "write it like `async fn check(a: &A, b: &B) -> salt::Result<()>` (the task's inputs by reference, in order, then `&Output` for `post` or `&salt::Error` for `on_failure`), a `fn` with those parameters that returns a `salt::Command`, or a command like `pre = salt::shell(\"test -e data.csv\")`"
)]
pub trait StepAction {
    /// The future that runs it.
    type Future: Future<Output = Result<()>>;

    /// Runs it in the attempt of `ctx`; `info` (computed only when needed) tells a command
    /// what it runs around.
    fn run(self, ctx: &Context, info: impl FnOnce() -> StepInfo) -> Self::Future;
}

#[diagnostic::do_not_recommend]
impl<F: Future<Output = Result<()>>> StepAction for F {
    type Future = F;

    fn run(self, _ctx: &Context, _info: impl FnOnce() -> StepInfo) -> F {
        self
    }
}

impl StepAction for Command {
    type Future = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn run(self, ctx: &Context, info: impl FnOnce() -> StepInfo) -> Self::Future {
        let (ctx, info) = (ctx.clone(), info());
        Box::pin(async move { self.run_as_step(&ctx, &info).await })
    }
}
