//! # salt — workflows as code in Rust
//!
//! Write typed async functions, mark them `#[task]` and `#[workflow]`, and compile one binary
//! that runs its workflows durably on an embedded SQLite store:
//!
//! ```no_run
//! use salt::prelude::*;
//!
//! /// Doubles a number.
//! #[task(retries = 2)]
//! async fn double(x: u64) -> u64 {
//!     x * 2
//! }
//!
//! /// Adds two numbers.
//! #[task]
//! async fn add(a: u64, b: u64) -> u64 {
//!     a + b
//! }
//!
//! /// Doubles both numbers, then adds them.
//! #[workflow(input = r#"{"a": 1, "b": 2}"#)]
//! async fn sum_of_doubles(a: u64, b: u64) -> salt::Result<u64> {
//!     let (a, b) = (double(a), double(b)); // two nodes, running in parallel
//!     add(a, b).await // a third, wired to both with data edges
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     salt::main()
//! }
//! ```
//!
//! Inside a run, calling a task spawns a child node and returns a [`Handle`]; awaiting the handle
//! gives the value, and passing it to another task call wires the two nodes. Outside a run (a
//! plain `#[tokio::test]`), awaiting a task call runs its body directly.
//!
//! `salt::main()` gives the binary its command line: `run`, `runs`, `show`, `logs`, `graph`,
//! `manifest`, `recover`, `rerun`, `run-one`, `cancel`, `signal`, `pause`, `resume`.

#[allow(unused_extern_crates)]
extern crate self as salt;

mod secret;

pub use secret::Secret;

#[doc(inline)]
pub use salt_macros::{Fatal, task, workflow};
#[doc(inline)]
pub use salt_runtime::command::{Command, CommandOutput, IntoDuration, StepInfo, command, command_string, shell};
#[doc(inline)]
pub use salt_runtime::context::{Annotation, Arg, Context, Handle, Handles, TaskValue, join_all};
#[doc(inline)]
pub use salt_runtime::error::{Error, ErrorKind, Fatal, Result};
#[doc(inline)]
pub use salt_runtime::logging::{LogFormat, TaskLogs, engine_layer};
#[doc(inline)]
pub use salt_runtime::model::{NodeId, NodeState, RunId, RunState};
#[doc(inline)]
pub use salt_runtime::ops;
#[doc(inline)]
pub use salt_runtime::progress::{Progress, Transition};
#[doc(inline)]
pub use salt_runtime::promise::{Promise, Shape};
#[doc(inline)]
pub use salt_runtime::runner::{Executor, RunOutcome, Runner};
#[doc(inline)]
pub use salt_runtime::store::Durability;

/// The command line of a workflow binary: parses `std::env::args`, runs the command, and
/// returns the exit code (0 success, 1 a run failed, 2 a usage error).
pub fn main() -> std::process::ExitCode {
    salt_runtime::cli::main()
}

/// [`main`], with `db` as the database of runs when neither `--db` nor `SALT_DB` names one
/// (instead of `.salt/salt.db`). Binaries that run from one directory keep their runs apart
/// this way: each example of this crate keeps its own, `.salt/NAME.db`.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     salt::main_with_default_db(".salt/etl.db")
/// }
/// ```
pub fn main_with_default_db(db: &'static str) -> std::process::ExitCode {
    salt_runtime::cli::main_with_default_db(db)
}

/// Registers error types that implement [`Fatal`] by hand, so that `?` turns their fatal
/// values into errors of kind [`ErrorKind::Fatal`]. `#[derive(salt::Fatal)]` registers the
/// types it derives for by itself.
///
/// ```
/// #[derive(Debug)]
/// struct Refused(u16);
///
/// impl std::fmt::Display for Refused {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "refused with status {}", self.0)
///     }
/// }
///
/// impl std::error::Error for Refused {}
///
/// impl salt::Fatal for Refused {
///     /// A client error will not go away; a server error may.
///     fn is_fatal(&self) -> bool {
///         self.0 < 500
///     }
/// }
///
/// salt::register_fatal!(Refused);
///
/// assert_eq!(salt::Error::from(Refused(404)).kind(), salt::ErrorKind::Fatal);
/// assert_eq!(salt::Error::from(Refused(503)).kind(), salt::ErrorKind::Task);
/// ```
#[macro_export]
macro_rules! register_fatal {
    ($($ty:ty),+ $(,)?) => {
        $(
            $crate::__private::inventory::submit! {
                $crate::__private::FatalType { classify: $crate::__private::classify::<$ty> }
            }
        )+
    };
}

/// What a workflow file needs: the macros, [`Context`], [`Handle`], and the serde and
/// schemars derives.
///
/// `use salt::prelude::*;` is all a crate needs besides `serde` (with its `derive` feature):
/// the prelude also brings the name `schemars`, which the code `#[derive(JsonSchema)]` generates
/// refers to, so the crate does not depend on schemars itself.
pub mod prelude {
    pub use crate::{Context, Handle, join_all, task, workflow};
    #[doc(no_inline)]
    pub use schemars::{self, JsonSchema};
    pub use serde::{Deserialize, Serialize};
}

/// Implemented for every [`TaskValue`]: the check `#[task]`
/// and `#[workflow]` make of each input and output type, `<T as CrossesTaskBoundary>::OK`.
///
/// A type that misses a derive is reported once, at the type in the function's signature, with
/// the derives to add; the rest of the generated code does not require them, so it adds no
/// errors of its own.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a task boundary",
    label = "task inputs and outputs must be serde (de)serializable and have a JSON Schema",
    note = "add `#[derive(Serialize, Deserialize, JsonSchema)]` to the type (all three are in `salt::prelude`)"
)]
pub trait CrossesTaskBoundary {
    /// Names the check in a constant.
    const OK: () = ();
}

#[diagnostic::do_not_recommend]
impl<T: salt_runtime::context::TaskValue> CrossesTaskBoundary for T {}

/// Implemented for every `Result<T, E>` whose error converts into [`Error`]: the check
/// `#[task]` and `#[workflow]` make of a return type named `Result`, `<R as TaskResult>::OK`.
///
/// An error type that does not convert is reported once, at the return type, with what it
/// needs; the rest of the generated code does not require it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a task: its error type does not convert into `salt::Error`",
    label = "the error type must be a `std::error::Error + Send + Sync + 'static`, `anyhow::Error`, `salt::Error` or `String`",
    note = "implement `std::error::Error` for the error type (`#[derive(thiserror::Error)]`, say), or turn it into one of those with `.map_err(…)` in the body"
)]
pub trait TaskResult {
    /// Names the check in a constant.
    const OK: () = ();
}

#[diagnostic::do_not_recommend]
impl<T, E: Into<Error>> TaskResult for ::core::result::Result<T, E> {}

/// Used by the code `#[task]` and `#[workflow]` generate. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use salt_runtime::context::hooks::{decode_input, direct, encode_output, resolve, spawn, wire};
    pub use salt_runtime::context::{Arg, Context, Handle, TaskValue, WireArg};

    pub use crate::{CrossesTaskBoundary, TaskResult};

    pub use salt_runtime::error::{Error, FatalType, Result, classify};
    pub use salt_runtime::registry::{Backoff, BodyFuture, Kind, Policy, TaskDescriptor};
    pub use schemars;
    pub use serde;
    pub use serde_json;
    use std::future::Future;

    pub use salt_runtime::command::StepInfo;
    pub use salt_runtime::step::StepAction;

    /// A started step action (`pre`, `post`, `on_failure` of `#[task]`).
    pub struct Step<'a>(std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>);

    /// Starts a step action in the attempt of `ctx`: `action` is what calling the user's step
    /// gave (checked to be a [`StepAction`], once, here), `info` what a command step is told.
    pub fn into_step<'a, A: StepAction + 'a>(ctx: &'a Context, info: impl FnOnce() -> StepInfo, action: A) -> Step<'a>
    where
        A::Future: Send + 'a,
    {
        Step(Box::pin(action.run(ctx, info)))
    }

    /// Runs a started step action through [`step`], which logs its line.
    pub async fn step_action(ctx: &Context, name: &str, action: Step<'_>) -> Result<()> {
        step(ctx, name, action.0).await
    }

    /// Runs one part of an attempt of a task with step actions (`pre`, `body`, `post`,
    /// `on_failure`) and writes its outcome and timing to the attempt's log, like
    /// `pre: ok in 3ms` or `post: failed in 1ms: <error>`.
    pub async fn step<T>(ctx: &Context, name: &str, future: impl Future<Output = Result<T>>) -> Result<T> {
        let started = std::time::Instant::now();
        let result = future.await;
        let took = format!("{}ms", started.elapsed().as_millis());
        match &result {
            Ok(_) => ctx.log(format!("{name}: ok in {took}")),
            Err(e) => ctx.log(format!("{name}: failed in {took}: {e}")),
        }
        result
    }

    /// The JSON Schema of `T`, with the ranges of its sized integers (`minimum` and `maximum`
    /// of a `u32`, …).
    pub fn schema<T: schemars::JsonSchema>() -> serde_json::Value {
        salt_runtime::registry::with_integer_bounds(serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default())
    }

    /// Selects, for a concrete `T`, [`Checked`] when `T` is a [`TaskValue`] and [`Unchecked`]
    /// otherwise (by method resolution: `(&&Probe::<T>::new()).probe()`), without requiring
    /// the bound. The generated code calls the operations of what it selects; when `T` misses
    /// a derive, [`CrossesTaskBoundary`] reports it and nothing else does.
    pub struct Probe<T>(::core::marker::PhantomData<fn() -> T>);

    #[allow(clippy::new_without_default)]
    impl<T> Probe<T> {
        /// The probe of `T`.
        pub const fn new() -> Self {
            Probe(::core::marker::PhantomData)
        }
    }

    /// Selected when `T` is a task value.
    pub trait ProbeChecked<T> {
        /// The real operations on `T`.
        fn probe(&self) -> Checked<T> {
            Checked(::core::marker::PhantomData)
        }
    }

    impl<T: TaskValue> ProbeChecked<T> for &Probe<T> {}

    /// Selected when `T` is not a task value.
    pub trait ProbeUnchecked<T> {
        /// Stand-ins of the operations on `T`, which type-check without its bounds.
        fn probe(&self) -> Unchecked<T> {
            Unchecked(::core::marker::PhantomData)
        }
    }

    impl<T> ProbeUnchecked<T> for Probe<T> {}

    /// Selects, for a body's concrete return type `R` with the output `T`, [`CheckedResult`]
    /// when `R` is a `Result<T, E>` with `E: Into<Error>`, and [`UncheckedResult`] otherwise,
    /// like [`Probe`]: [`TaskResult`] alone reports an error type that does not convert.
    pub struct ResultProbe<T, R>(::core::marker::PhantomData<fn() -> (T, R)>);

    #[allow(clippy::new_without_default)]
    impl<T, R> ResultProbe<T, R> {
        /// The probe of `R`.
        pub const fn new() -> Self {
            ResultProbe(::core::marker::PhantomData)
        }
    }

    /// Selected when `R` is a result salt converts.
    pub trait ResultProbeChecked<T, E> {
        /// The real conversion.
        fn probe(&self) -> CheckedResult<T, E> {
            CheckedResult(::core::marker::PhantomData)
        }
    }

    impl<T, E: Into<Error>> ResultProbeChecked<T, E> for &ResultProbe<T, ::core::result::Result<T, E>> {}

    /// Selected otherwise.
    pub trait ResultProbeUnchecked<T, R> {
        /// A stand-in of the conversion.
        fn probe(&self) -> UncheckedResult<T, R> {
            UncheckedResult(::core::marker::PhantomData)
        }
    }

    impl<T, R> ResultProbeUnchecked<T, R> for ResultProbe<T, R> {}

    /// Converts a body's `Result<T, E>` into salt's.
    pub struct CheckedResult<T, E>(::core::marker::PhantomData<fn() -> (T, E)>);

    impl<T, E: Into<Error>> CheckedResult<T, E> {
        /// See [`into_result`].
        pub fn into_result(self, result: ::core::result::Result<T, E>) -> Result<T> {
            into_result(result)
        }
    }

    /// A stand-in of [`CheckedResult`], never called: the crate does not compile,
    /// [`TaskResult`] says why.
    pub struct UncheckedResult<T, R>(::core::marker::PhantomData<fn() -> (T, R)>);

    #[allow(clippy::unused_self, clippy::needless_pass_by_value)]
    impl<T, R> UncheckedResult<T, R> {
        /// Never called.
        pub fn into_result(self, _: R) -> Result<T> {
            unreachable!("a return type whose error does not convert")
        }
    }

    /// The operations the generated code performs on a task value `T`.
    pub struct Checked<T>(::core::marker::PhantomData<fn() -> T>);

    impl<T: TaskValue> Checked<T> {
        /// See [`wire`].
        pub fn wire(self, arg: Arg<T>, name: &str) -> Result<(String, WireArg)> {
            wire(arg, name)
        }

        /// See [`resolve`].
        pub async fn resolve(self, arg: Arg<T>) -> Result<T> {
            resolve(arg).await
        }

        /// See [`spawn`].
        pub fn spawn(self, ctx: &Context, task: &'static str, args: Vec<Result<(String, WireArg)>>) -> Handle<T> {
            spawn(ctx, task, args)
        }

        /// See [`direct`].
        pub fn direct(self, body: impl Future<Output = Result<T>> + Send + 'static) -> Handle<T> {
            direct(body)
        }

        /// See [`encode_output`].
        pub fn encode_output(self, task: &str, output: &T) -> Result<serde_json::Value> {
            encode_output(task, output)
        }

        /// See [`decode_input`].
        pub fn decode_input(self, task: &str, input: serde_json::Value) -> Result<T> {
            decode_input(task, input)
        }

        /// [`schema`] of `T`.
        pub fn schema(self) -> fn() -> serde_json::Value {
            schema::<T>
        }
    }

    /// Stand-ins of [`Checked`]'s operations for a type that is not a task value. They are never
    /// called: the crate does not compile, [`CrossesTaskBoundary`] says why.
    pub struct Unchecked<T>(::core::marker::PhantomData<fn() -> T>);

    #[allow(clippy::unused_self, clippy::needless_pass_by_value)]
    impl<T> Unchecked<T> {
        /// Never called.
        pub fn wire(self, _: Arg<T>, _: &str) -> Result<(String, WireArg)> {
            unreachable!("a type that is not a task value")
        }

        /// Never called.
        pub async fn resolve(self, _: Arg<T>) -> Result<T> {
            unreachable!("a type that is not a task value")
        }

        /// Never called.
        pub fn spawn(self, _: &Context, _: &'static str, _: Vec<Result<(String, WireArg)>>) -> Handle<T> {
            unreachable!("a type that is not a task value")
        }

        /// Never called.
        pub fn direct(self, _: impl Future<Output = Result<T>> + Send + 'static) -> Handle<T> {
            unreachable!("a type that is not a task value")
        }

        /// Never called.
        pub fn encode_output(self, _: &str, _: &T) -> Result<serde_json::Value> {
            unreachable!("a type that is not a task value")
        }

        /// Never called.
        pub fn decode_input(self, _: &str, _: serde_json::Value) -> Result<T> {
            unreachable!("a type that is not a task value")
        }

        /// Never called.
        pub fn schema(self) -> fn() -> serde_json::Value {
            unreachable!("a type that is not a task value")
        }
    }

    /// Turns a body's `Result<T, E>` into salt's.
    pub fn into_result<T, E: Into<Error>>(result: ::core::result::Result<T, E>) -> Result<T> {
        result.map_err(Into::into)
    }

    /// Runs a task's `validate` function on its output: a refusal fails the attempt with an
    /// error of kind `output` (not retried) that says why.
    pub fn validate_output<T, E: ::core::fmt::Display>(
        task: &str,
        output: &T,
        check: fn(&T) -> ::core::result::Result<(), E>,
    ) -> Result<()> {
        check(output).map_err(|e| {
            Error::new(
                salt_runtime::error::ErrorKind::Output,
                format!("output of `{task}` is refused by its `validate` function: {e}"),
            )
        })
    }

    /// A `Duration` from milliseconds, in const context.
    pub const fn millis(ms: u64) -> ::core::time::Duration {
        ::core::time::Duration::from_millis(ms)
    }
}
