//! The `#[task]` and `#[workflow]` attribute macros of [salt](https://docs.rs/salt).
//!
//! Use them through the `salt` crate (`use salt::prelude::*;`), never directly: the code they
//! generate refers to `::salt::__private` only.
//!
//! Each macro parses and checks its arguments and function into a model (`parse`), then
//! generates code from it (`expand`). Every mistake is reported at once, spanned at the user's
//! tokens; on error the function is replaced by a stub with the signature the macro would have
//! generated, its body kept under another name, so that IDEs keep working and its callers get
//! no errors of their own.

mod error;
mod expand;
mod fatal;
mod parse;

use proc_macro::TokenStream;

use crate::parse::Macro;

/// Makes an `async fn` a task: a typed, retryable step of a workflow, run as its own node.
///
/// ```
/// use salt::prelude::*;
///
/// /// One row of a table.
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
/// pub struct Row {
///     pub id: u64,
///     pub amount: f64,
/// }
///
/// /// Parses the rows of a CSV text (`id,amount` per line).
/// #[task(retries = 2, backoff = "exponential(1s, 30s)", timeout = "10s", queue = "io")]
/// async fn parse_rows(text: String, ctx: &Context) -> salt::Result<Vec<Row>> {
///     ctx.log(format!("parsing {} bytes", text.len()));
///     let mut rows = Vec::new();
///     for line in text.lines() {
///         let (id, amount) = line.split_once(',').ok_or_else(|| salt::Error::msg(format!("bad line `{line}`")))?;
///         rows.push(Row { id: id.trim().parse()?, amount: amount.trim().parse()? });
///     }
///     Ok(rows)
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// // Outside a run, awaiting a call runs the body directly: a task is tested like an async fn.
/// let rows = parse_rows("1, 2.5\n2, 4").await?;
/// assert_eq!(rows, [Row { id: 1, amount: 2.5 }, Row { id: 2, amount: 4.0 }]);
/// assert!(parse_rows("1; 2").await.is_err());
/// # Ok(()) }
/// ```
///
/// # The function
///
/// - It must be an `async fn`, free-standing (no `self`), without generic parameters.
/// - Its parameters are its inputs: plain names with owned types that are serde
///   (de)serializable and have a JSON Schema (`#[derive(Serialize, Deserialize, JsonSchema)]`,
///   all in `salt::prelude`).
/// - One parameter may be `&Context` (or `&salt::Context`): it is not an input, it receives the
///   node's [`Context`](https://docs.rs/salt/latest/salt/struct.Context.html).
/// - It may spawn nodes of its own (call tasks) only if it is marked `spawns`: a task that is
///   not marked and calls a task fails with an error saying so. This keeps drawn graphs honest:
///   only nodes that may still grow the graph get a wildcard.
/// - It returns `salt::Result<T>`, `Result<T, E>` with `E: Into<salt::Error>`, a plain `T`, or
///   nothing. `T` is the task's output and must be serde too.
///
/// # Calling it
///
/// The macro keeps the name and visibility of the function but makes it a plain `fn` returning
/// `Handle<T>`, whose parameters accept values or handles of the same type:
///
/// ```
/// use salt::prelude::*;
///
/// /// The numbers from 1 to `n`.
/// #[task]
/// async fn numbers(n: u64) -> Vec<u64> {
///     (1..=n).collect()
/// }
///
/// /// Their sum.
/// #[task]
/// async fn total(values: Vec<u64>) -> u64 {
///     values.iter().sum()
/// }
///
/// /// Sums the numbers from 1 to `n`.
/// #[workflow]
/// async fn sum_to(n: u64) -> salt::Result<u64> {
///     let values = numbers(n); // inside a run: spawns a node, returns at once
///     let sum = total(values); // wired to `numbers` by a data edge
///     sum.await // the value, once the node has run
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// // Outside a run, awaiting the handle runs the body directly.
/// assert_eq!(total(vec![1, 2, 3]).await?, 6);
/// assert_eq!(sum_to(4).await?, 10);
/// # Ok(()) }
/// ```
///
/// Inside a run, each call spawns a child node; outside a run (a plain `#[tokio::test]`),
/// awaiting the handle runs the body directly.
///
/// # Arguments
///
/// All optional:
///
/// | argument | value | default |
/// | --- | --- | --- |
/// | `name` | the registered name, unique in the binary | the fn name |
/// | `retries` | how many times a failed attempt is retried (`u32`) | `0` |
/// | `backoff` | `"DUR"` (fixed) or `"exponential(BASE, CAP)"` | `"1s"` |
/// | `timeout` | `"DUR"`: the longest one attempt may run | none |
/// | `queue` | the queue workers take this task from | `"default"` |
/// | `priority` | among ready nodes, higher starts first (`i32`) | `0` |
/// | `cores` | CPU cores one attempt holds: run locally, it starts only when they are free (`u32`) | `0` (not counted) |
/// | `memory_mb` | memory one attempt holds, in MiB: likewise (`u64`) | `0` (not counted) |
/// | `label` | a label to draw instead of the name | none |
/// | `color` | a color to draw the node with | none |
/// | `promise` | a promise over the subtree of each node of this task, like `"only tasks a, b"` or `"a -> b*"`; may be given more than once; checked at compile time | none |
/// | `spawns` | a flag: the body may call tasks, growing the graph | not set |
///
/// A duration `DUR` is an integer followed by `ms`, `s`, `m` or `h`: `"500ms"`, `"30s"`, `"2m"`,
/// `"1h"`.
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    entry(Macro::Task, args, item)
}

/// Makes an `async fn` a workflow: an entry point of runs, whose body calls tasks.
///
/// ```
/// use salt::prelude::*;
///
/// /// Doubles a number.
/// #[task]
/// async fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// /// Adds two numbers.
/// #[task]
/// async fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
///
/// /// Doubles both numbers, then adds them.
/// #[workflow(input = r#"{"a": 1, "b": 2}"#, schedule = "0 3 * * *")]
/// async fn sum_of_doubles(a: u64, b: u64) -> salt::Result<u64> {
///     let (a, b) = (double(a), double(b)); // two nodes, running in parallel
///     add(a, b).await // a third, wired to both
/// }
///
/// # #[tokio::main] async fn main() -> salt::Result<()> {
/// // A run, for real, on a SQLite database: with the default input, then with another.
/// let db = tempfile::tempdir()?;
/// let runner = salt::Runner::new(db.path().join("salt.db"));
/// let input = salt::Runner::default_input("sum_of_doubles")?;
/// let outcome = runner.run("sum_of_doubles", input).await?;
/// assert_eq!(outcome.output, Some(serde_json::json!(6)));
/// let outcome = runner.run("sum_of_doubles", serde_json::json!({"a": 10, "b": 20})).await?;
/// assert_eq!(outcome.output, Some(serde_json::json!(60)));
/// # Ok(()) }
/// ```
///
/// The function follows the rules of [`macro@task`] and takes its arguments but `spawns` (a
/// workflow always may spawn), plus:
///
/// | argument | value | default |
/// | --- | --- | --- |
/// | `input` | the default input, a JSON object of the parameters | `"{}"` for a workflow without parameters, else none |
/// | `schedule` | a cron expression of 5 or 6 fields, like `"0 3 * * *"` | none |
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    entry(Macro::Workflow, args, item)
}

/// Implements `salt::Fatal` for an error type and registers it, so that `?` turns its fatal
/// values into errors of kind `fatal` (never retried) and the others into retryable ones.
///
/// On an enum, the variants marked `#[fatal]` are fatal; `#[fatal]` on the enum makes every
/// variant fatal. Every value of a struct is fatal. The type must implement
/// `std::error::Error` and have no generic parameters.
///
/// ```
/// use salt::prelude::*;
///
/// #[derive(Debug, salt::Fatal)]
/// enum LookupError {
///     /// No such customer: looking again will not find one.
///     #[fatal]
///     Unknown(u64),
///     /// The directory is busy: it may answer later.
///     Busy,
/// }
///
/// impl std::fmt::Display for LookupError {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         match self {
///             LookupError::Unknown(id) => write!(f, "no customer {id}"),
///             LookupError::Busy => write!(f, "the directory is busy"),
///         }
///     }
/// }
///
/// impl std::error::Error for LookupError {}
///
/// /// Looks a customer up: an unknown id fails for good, a busy directory is retried.
/// #[task(retries = 3, backoff = "1s")]
/// async fn lookup(id: u64) -> Result<String, LookupError> {
///     if id == 0 { Err(LookupError::Unknown(id)) } else { Ok(format!("customer {id}")) }
/// }
///
/// # #[tokio::main] async fn main() {
/// let e = lookup(0).await.unwrap_err();
/// assert_eq!(e.kind(), salt::ErrorKind::Fatal);
/// assert_eq!(salt::Error::from(LookupError::Busy).kind(), salt::ErrorKind::Task);
/// # }
/// ```
#[proc_macro_derive(Fatal, attributes(fatal))]
pub fn derive_fatal(item: TokenStream) -> TokenStream {
    let out = syn::parse::<syn::DeriveInput>(item).and_then(fatal::derive);
    out.unwrap_or_else(syn::Error::into_compile_error).into()
}

/// The one dispatch point: the expansion, or the unchanged item plus every error.
fn entry(kind: Macro, args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let out = match parse::parse(kind, args.into(), item.clone()) {
        Ok(task) => expand::expand(&task),
        Err(error) => {
            let mut out = parse::stub(kind, item.clone()).unwrap_or(item);
            out.extend(error.into_compile_error());
            out
        }
    };
    out.into()
}
