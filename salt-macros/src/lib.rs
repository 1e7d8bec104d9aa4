//! The `#[task]` and `#[workflow]` attribute macros of [salt](https://docs.rs/salt).
//!
//! Use them through the `salt` crate (`use salt::prelude::*;`), never directly: the code they
//! generate refers to `::salt::__private` only.
//!
//! Each macro parses and checks its arguments and function into a model (`parse`), then
//! generates code from it (`expand`). Every mistake is reported at once, spanned at the user's
//! tokens; on error the function is emitted unchanged next to the errors, so that IDEs keep
//! working and nothing else fails because of it.

mod error;
mod expand;
mod parse;

use proc_macro::TokenStream;

use crate::parse::Macro;

/// Makes an `async fn` a task: a typed, retryable step of a workflow, run as its own node.
///
/// ```ignore
/// use salt::prelude::*;
///
/// /// Reads the rows of a CSV file.
/// #[task(retries = 2, backoff = "exponential(1s, 30s)", timeout = "10s", queue = "io")]
/// async fn extract(path: String, ctx: &Context) -> salt::Result<Vec<Row>> {
///     ctx.log(format!("reading {path}"));
///     read_rows(&path).await
/// }
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
/// ```ignore
/// let rows = extract("data.csv"); // inside a run: spawns a node, returns at once
/// let total = sum(rows.clone()); // wired to `extract` by a data edge
/// let total: u64 = total.await?; // the value, once the node has run
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
/// ```ignore
/// use salt::prelude::*;
///
/// /// Doubles both numbers, then adds them.
/// #[workflow(input = r#"{"a": 1, "b": 2}"#, schedule = "0 3 * * *")]
/// async fn sum_of_doubles(a: u64, b: u64) -> salt::Result<u64> {
///     let (a, b) = (double(a), double(b)); // two nodes, running in parallel
///     add(a, b).await // a third, wired to both
/// }
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

/// The one dispatch point: the expansion, or the unchanged item plus every error.
fn entry(kind: Macro, args: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    let out = match parse::parse(kind, args.into(), item.clone()) {
        Ok(task) => expand::expand(&task),
        Err(error) => {
            let mut out = item;
            out.extend(error.into_compile_error());
            out
        }
    };
    out.into()
}
