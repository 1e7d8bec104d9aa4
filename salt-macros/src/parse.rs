//! Parsing and checking of `#[task]` and `#[workflow]`: the arguments and the function become a
//! [`Task`] model, or every mistake found becomes one combined error. The body is kept as tokens.

use proc_macro2::{Delimiter, Group, Ident, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{
    Attribute, Expr, FnArg, GenericArgument, Lit, LitInt, LitStr, Meta, Pat, PathArguments, ReturnType, Signature,
    Token, Type, UnOp, Visibility,
};

use crate::error::Errors;

/// Which attribute is being expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Macro {
    /// `#[task]`.
    Task,
    /// `#[workflow]`.
    Workflow,
}

impl Macro {
    /// The attribute as messages name it.
    fn attr(self) -> &'static str {
        match self {
            Macro::Task => "`#[task]`",
            Macro::Workflow => "`#[workflow]`",
        }
    }

    /// The arguments it accepts, in the order messages list them.
    fn keys(self) -> &'static [&'static str] {
        match self {
            Macro::Task => &TASK_KEYS,
            Macro::Workflow => &WORKFLOW_KEYS,
        }
    }
}

const TASK_KEYS: [&str; 16] = [
    "name",
    "retries",
    "backoff",
    "timeout",
    "queue",
    "priority",
    "cores",
    "memory_mb",
    "label",
    "color",
    "promise",
    "spawns",
    "validate",
    "pre",
    "post",
    "on_failure",
];

const WORKFLOW_KEYS: [&str; 12] = [
    "name", "retries", "backoff", "timeout", "queue", "priority", "label", "color", "promise", "input", "schedule",
    "validate",
];

/// The arguments that may be given more than once.
const REPEATABLE: [&str; 1] = ["promise"];

/// How each argument is written, for messages.
fn example(key: &str) -> &'static str {
    match key {
        "name" => r#"name = "extract_rows""#,
        "retries" => "retries = 3",
        "backoff" => r#"backoff = "exponential(1s, 30s)""#,
        "timeout" => r#"timeout = "30s""#,
        "queue" => r#"queue = "io""#,
        "priority" => "priority = 10",
        "cores" => "cores = 2",
        "memory_mb" => "memory_mb = 512",
        "label" => r#"label = "Extract rows""#,
        "color" => r##"color = "#4c9aff""##,
        "promise" => r#"promise = "only tasks extract, load""#,
        "spawns" => "spawns",
        "input" => r##"input = r#"{"x": 1}"#"##,
        "schedule" => r#"schedule = "0 3 * * *""#,
        "validate" => "validate = check_output",
        "pre" => "pre = check_source",
        "post" => "post = verify_output",
        "on_failure" => "on_failure = clean_up",
        _ => "",
    }
}

/// A checked `#[task]` or `#[workflow]`: everything `expand` needs.
pub(crate) struct Task {
    /// Task or workflow.
    pub(crate) kind: Macro,
    /// The registered name.
    pub(crate) name: String,
    /// The doc comment, lines joined with `\n`.
    pub(crate) doc: String,
    /// Retries, backoff, timeout, queue, priority.
    pub(crate) policy: Policy,
    /// `label = "…"`.
    pub(crate) label: Option<String>,
    /// `color = "…"`.
    pub(crate) color: Option<String>,
    /// A workflow's default input, as JSON text.
    pub(crate) default_input: Option<String>,
    /// A workflow's cron schedule.
    pub(crate) schedule: Option<String>,
    /// `promise = "…"`, in order.
    pub(crate) promises: Vec<String>,
    /// `pre`, `post` and `on_failure`: the step actions around the body.
    pub(crate) steps: Steps,
    /// Whether the body may spawn nodes: a workflow, or a task that takes the context.
    pub(crate) may_spawn: bool,
    /// `validate = path`: a function that checks the output.
    pub(crate) validate: Option<syn::Path>,
    /// The user's outer attributes (the macro's own is already removed by the compiler).
    pub(crate) attrs: Vec<Attribute>,
    /// The user's visibility.
    pub(crate) vis: Visibility,
    /// The user's signature, verbatim.
    pub(crate) sig: Signature,
    /// The body, braces included, unparsed.
    pub(crate) body: Group,
    /// The parameters, in order.
    pub(crate) params: Vec<Param>,
    /// What the body returns.
    pub(crate) output: Output,
}

/// The run policy of a task, durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) timeout: Option<u64>,
    pub(crate) queue: String,
    pub(crate) priority: i32,
    /// CPU cores one attempt holds while it runs.
    pub(crate) cores: u32,
    /// Memory one attempt holds while it runs, in MiB.
    pub(crate) memory_mb: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retries: 0,
            backoff: Backoff::Fixed(1000),
            timeout: None,
            queue: "default".to_owned(),
            priority: 0,
            cores: 0,
            memory_mb: 0,
        }
    }
}

/// The step actions of a task, run in the attempt around its body.
#[derive(Default)]
pub(crate) struct Steps {
    /// Runs before the body; its failure skips the body.
    pub(crate) pre: Option<Action>,
    /// Runs after a successful body, with its output; its failure fails the attempt.
    pub(crate) post: Option<Action>,
    /// Runs after a failed attempt, with its error.
    pub(crate) on_failure: Option<Action>,
}

/// One step action.
pub(crate) enum Action {
    /// The path of a function called with the task's inputs by reference (an `async fn`, or a
    /// `fn` that returns a `salt::Command`).
    Path(syn::Path),
    /// A call, evaluated in the attempt with the task's inputs in scope by reference: a
    /// command like `salt::shell("…")`, or a future.
    Expr(Box<Expr>),
}

impl Action {
    /// The span of what the user wrote.
    pub(crate) fn span(&self) -> proc_macro2::Span {
        match self {
            Action::Path(path) => path.span(),
            Action::Expr(expr) => expr.span(),
        }
    }
}

impl Steps {
    /// Whether any step action is given.
    pub(crate) fn any(&self) -> bool {
        self.pre.is_some() || self.post.is_some() || self.on_failure.is_some()
    }
}

/// The delay between attempts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backoff {
    Fixed(u64),
    Exponential { base: u64, cap: u64 },
}

/// One parameter of the task.
pub(crate) enum Param {
    /// An input, decoded from the task's input object: the binding without `mut`, and its type.
    Input { ident: Ident, ty: Box<Type> },
    /// The `&Context` parameter.
    Context,
}

/// What the body returns.
pub(crate) enum Output {
    /// No return type: `()`.
    Unit,
    /// A plain value.
    Plain(Box<Type>),
    /// `Result<ok, _>`; `full` is the whole return type.
    Result { ok: Box<Type>, full: Box<Type> },
}

/// The user's function, split into its parts.
struct ItemFn {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: Group,
}

/// The arguments of the attribute, each checked on its own.
#[derive(Default)]
struct Args {
    name: Option<String>,
    policy: Policy,
    label: Option<String>,
    color: Option<String>,
    input: Option<String>,
    schedule: Option<String>,
    promises: Vec<String>,
    steps: Steps,
    /// `spawns`: the task's body may spawn nodes.
    spawns: bool,
    /// A valid `backoff` was given.
    backoff_set: bool,
    /// `validate = path`.
    validate: Option<syn::Path>,
}

/// Parses and checks `#[kind(args)] item`, reporting every mistake at once.
pub(crate) fn parse(kind: Macro, args: TokenStream, item: TokenStream) -> syn::Result<Task> {
    let mut errors = Errors::default();
    let args = parse_args(kind, args, &mut errors);
    let item = match parse_item(kind, item) {
        Ok(item) => item,
        Err(error) => return Err(errors.fail(error)),
    };
    let (params, output) = check_sig(kind, &item.sig, &mut errors);
    let inputs = params.iter().filter(|p| matches!(p, Param::Input { .. })).count();
    let default_input = match kind {
        Macro::Task => None,
        Macro::Workflow if args.input.is_none() && inputs == 0 => Some("{}".to_owned()),
        Macro::Workflow => args.input,
    };
    let task = Task {
        kind,
        name: args.name.unwrap_or_else(|| item.sig.ident.unraw().to_string()),
        doc: doc(&item.attrs),
        policy: args.policy,
        label: args.label,
        color: args.color,
        default_input,
        schedule: args.schedule,
        promises: args.promises,
        steps: args.steps,
        may_spawn: kind == Macro::Workflow || args.spawns,
        validate: args.validate,
        attrs: item.attrs,
        vis: item.vis,
        sig: item.sig,
        body: item.body,
        params,
        output,
    };
    errors.finish(task)
}

fn parse_args(kind: Macro, args: TokenStream, errors: &mut Errors) -> Args {
    let mut out = Args::default();
    let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
        Ok(metas) => metas,
        Err(error) => {
            errors.push(error);
            return out;
        }
    };
    let attr = kind.attr();
    let mut seen: Vec<String> = Vec::new();
    let mut backoff_at = None;
    for meta in metas {
        let path = meta.path();
        let key = match path.get_ident() {
            Some(ident) => ident.to_string(),
            None => path.to_token_stream().to_string().replace(' ', ""),
        };
        if !kind.keys().contains(&key.as_str()) {
            if matches!(key.as_str(), "input" | "schedule") {
                errors.spanned(
                    path,
                    format!("`{key}` is only for `#[workflow]`; remove it, or make this function a `#[workflow]`"),
                );
            } else if matches!(key.as_str(), "pre" | "post" | "on_failure") {
                errors.spanned(
                    path,
                    format!(
                        "`{key}` is only for `#[task]`: a workflow's body is replayed; put the step action on the tasks it calls"
                    ),
                );
            } else {
                let expected = kind.keys().iter().map(|k| format!("`{k}`")).collect::<Vec<_>>();
                errors
                    .spanned(path, format!("unknown {attr} argument `{key}`; expected one of {}", expected.join(", ")));
            }
            continue;
        }
        if seen.contains(&key) && !REPEATABLE.contains(&key.as_str()) {
            errors.spanned(path, format!("duplicate {attr} argument `{key}`; remove one of them"));
            continue;
        }
        seen.push(key.clone());
        let tokens = meta.to_token_stream();
        let value = match meta {
            Meta::Path(_) if key == "spawns" => {
                out.spawns = true;
                continue;
            }
            Meta::NameValue(nv) if key == "spawns" => {
                errors.spanned(
                    &nv,
                    format!("`spawns` is a flag: write `{attr_spawns}` without a value", attr_spawns = "spawns"),
                );
                continue;
            }
            Meta::NameValue(nv) => nv.value,
            Meta::Path(path) => {
                errors.spanned(path, format!("{attr} argument `{key}` needs a value, like `{}`", example(&key)));
                continue;
            }
            Meta::List(list) => {
                errors.spanned(list, format!("expected `{key} = …` in {attr}, like `{}`", example(&key)));
                continue;
            }
        };
        set_arg(&mut out, &key, &ungroup(value), errors);
        if key == "backoff" && out.backoff_set {
            backoff_at = Some(tokens);
        }
    }
    // A backoff is the wait before a retry: without retries it would silently do nothing.
    if let Some(tokens) = backoff_at
        && out.policy.retries == 0
    {
        errors.spanned(
            tokens,
            format!(
                "`backoff` does nothing without retries: add `retries = N` (how many times a failed attempt is retried) to {attr}, or remove `backoff`"
            ),
        );
    }
    out
}

/// Checks the value of argument `key` and records it in `out`.
fn set_arg(out: &mut Args, key: &str, value: &Expr, errors: &mut Errors) {
    match key {
        "name" => {
            if let Some(lit) = lit_str(key, value, errors) {
                let name = lit.value();
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    errors.spanned(
                        &lit,
                        format!(
                            "invalid `name` {:?}; a task name must be non-empty and without spaces, like `{}`",
                            name,
                            example("name")
                        ),
                    );
                } else {
                    out.name = Some(name);
                }
            }
        }
        "retries" => {
            if let Some((lit, negative)) = lit_int(key, value, errors) {
                match lit.base10_parse::<u32>() {
                    Ok(n) if !negative && matches!(lit.suffix(), "" | "u32") => {
                        out.policy.retries = n;
                    }
                    _ => errors.spanned(
                        value,
                        "`retries` must be a whole number of retries that fits a `u32`, like `retries = 3`",
                    ),
                }
            }
        }
        "priority" => {
            if let Some((lit, negative)) = lit_int(key, value, errors) {
                let n = lit.base10_parse::<i64>().map(|n| if negative { -n } else { n });
                match n.ok().and_then(|n| i32::try_from(n).ok()) {
                    Some(n) if matches!(lit.suffix(), "" | "i32") => out.policy.priority = n,
                    _ => errors.spanned(
                        value,
                        "`priority` must be an integer that fits an `i32`, like `priority = 10` or `priority = -1`",
                    ),
                }
            }
        }
        "cores" => {
            if let Some((lit, negative)) = lit_int(key, value, errors) {
                match lit.base10_parse::<u32>() {
                    Ok(n) if !negative && matches!(lit.suffix(), "" | "u32") => out.policy.cores = n,
                    _ => errors.spanned(
                        value,
                        "`cores` must be a whole number of CPU cores that fits a `u32`, like `cores = 2`",
                    ),
                }
            }
        }
        "memory_mb" => {
            if let Some((lit, negative)) = lit_int(key, value, errors) {
                match lit.base10_parse::<u64>() {
                    Ok(n) if !negative && matches!(lit.suffix(), "" | "u64") => out.policy.memory_mb = n,
                    _ => errors.spanned(
                        value,
                        "`memory_mb` must be a whole number of MiB that fits a `u64`, like `memory_mb = 512`",
                    ),
                }
            }
        }
        "timeout" => {
            if let Some(lit) = lit_str(key, value, errors) {
                match parse_duration(&lit.value()) {
                    Some(0) => errors.spanned(&lit, "`timeout` must be longer than zero; remove it for no timeout"),
                    Some(ms) => out.policy.timeout = Some(ms),
                    None => errors.spanned(&lit, invalid_duration(&lit.value(), "timeout")),
                }
            }
        }
        "backoff" => {
            if let Some(lit) = lit_str(key, value, errors) {
                match parse_backoff(&lit.value()) {
                    Ok(backoff) => {
                        out.policy.backoff = backoff;
                        out.backoff_set = true;
                    }
                    Err(message) => errors.spanned(&lit, message),
                }
            }
        }
        "queue" => {
            if let Some(lit) = lit_str(key, value, errors) {
                let queue = lit.value();
                if queue.trim().is_empty() {
                    errors.spanned(&lit, "`queue` must not be empty; remove it to use the `default` queue");
                } else {
                    out.policy.queue = queue;
                }
            }
        }
        "promise" => {
            if let Some(lit) = lit_str(key, value, errors) {
                if lit.value().trim().is_empty() {
                    errors.spanned(&lit, format!("`promise` must not be empty, like `{}`", example("promise")));
                } else if let Err(e) = lit.value().parse::<salt_promise::Promise>() {
                    errors.spanned(&lit, format!("invalid `promise`: {e}"));
                } else {
                    out.promises.push(lit.value());
                }
            }
        }
        "pre" | "post" | "on_failure" => {
            let path = match value {
                Expr::Path(path) if path.qself.is_none() => Some(Action::Path(path.path.clone())),
                Expr::Call(_) | Expr::MethodCall(_) => Some(Action::Expr(Box::new(value.clone()))),
                _ => {
                    errors.spanned(
                        value,
                        format!(
                            "`{key}` expects the path of an `async fn` that returns `salt::Result<()>` (or of a `fn` \
                             that returns a `salt::Command`), like `{}`, or a command, like `{key} = \
                             salt::shell(\"…\")`",
                            example(key)
                        ),
                    );
                    None
                }
            };
            match key {
                "pre" => out.steps.pre = path,
                "post" => out.steps.post = path,
                _ => out.steps.on_failure = path,
            }
        }
        "label" => out.label = lit_str(key, value, errors).map(|l| l.value()),
        "validate" => match value {
            Expr::Path(path) if path.qself.is_none() => out.validate = Some(path.path.clone()),
            _ => errors.spanned(
                value,
                format!(
                    "`validate` must name a function `fn(&Output) -> Result<(), E>`, like `{}`",
                    example("validate")
                ),
            ),
        },
        "color" => out.color = lit_str(key, value, errors).map(|l| l.value()),
        "input" => {
            if let Some(lit) = lit_str(key, value, errors) {
                if lit.value().trim_start().starts_with('{') {
                    out.input = Some(lit.value());
                } else {
                    errors.spanned(
                        &lit,
                        format!(
                            "`input` must be a JSON object of the workflow's parameters, like `{}`",
                            example("input")
                        ),
                    );
                }
            }
        }
        "schedule" => {
            if let Some(lit) = lit_str(key, value, errors) {
                if is_cron(&lit.value()) {
                    out.schedule = Some(lit.value());
                } else {
                    errors.spanned(
                        &lit,
                        format!(
                            "invalid cron schedule `{}` for `schedule`; expected 5 or 6 fields separated by spaces, made of digits, names and `* , - /`, like \"0 3 * * *\"",
                            lit.value()
                        ),
                    );
                }
            }
        }
        _ => {}
    }
}

/// The expression inside invisible groups (what `macro_rules!` wraps a `$x:literal` in).
fn ungroup(expr: Expr) -> Expr {
    match expr {
        Expr::Group(group) => ungroup(*group.expr),
        Expr::Paren(paren) => ungroup(*paren.expr),
        expr => expr,
    }
}

fn lit_str(key: &str, value: &Expr, errors: &mut Errors) -> Option<LitStr> {
    if let Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) = value {
        return Some(lit.clone());
    }
    errors.spanned(value, format!("`{key}` expects a string literal, like `{}`", example(key)));
    None
}

/// An integer literal, and whether it was negated.
fn lit_int(key: &str, value: &Expr, errors: &mut Errors) -> Option<(LitInt, bool)> {
    match value {
        Expr::Lit(syn::ExprLit { lit: Lit::Int(lit), .. }) => return Some((lit.clone(), false)),
        Expr::Unary(unary) if matches!(unary.op, UnOp::Neg(_)) => {
            if let Expr::Lit(syn::ExprLit { lit: Lit::Int(lit), .. }) = ungroup((*unary.expr).clone()) {
                return Some((lit, true));
            }
        }
        _ => {}
    }
    errors.spanned(value, format!("`{key}` expects an integer literal, like `{}`", example(key)));
    None
}

/// `"500ms"`, `"30s"`, `"2m"` or `"1h"` in milliseconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let factor = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

fn invalid_duration(text: &str, key: &str) -> String {
    format!("invalid duration `{text}` for `{key}`; expected a number followed by `ms`, `s`, `m` or `h`, like \"30s\"")
}

/// `"DUR"` or `"exponential(BASE, CAP)"`.
fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let invalid = || {
        format!(
            "invalid backoff `{text}` for `backoff`; expected a duration like \"1s\", or `exponential(BASE, CAP)` like \"exponential(1s, 30s)\""
        )
    };
    let trimmed = text.trim();
    let Some(args) = trimmed.strip_prefix("exponential") else {
        return parse_duration(trimmed).map(Backoff::Fixed).ok_or_else(invalid);
    };
    let args = args.trim_start().strip_prefix('(').and_then(|a| a.strip_suffix(')'));
    let Some((base, cap)) = args.and_then(|a| a.split_once(',')) else {
        return Err(invalid());
    };
    let (Some(base), Some(cap)) = (parse_duration(base), parse_duration(cap)) else {
        return Err(invalid());
    };
    if base > cap {
        return Err(format!(
            "invalid backoff `{text}` for `backoff`; the base delay must not be longer than the cap, like \"exponential(1s, 30s)\""
        ));
    }
    Ok(Backoff::Exponential { base, cap })
}

/// 5 or 6 fields of digits, names and `* , - /`.
fn is_cron(text: &str) -> bool {
    let fields: Vec<&str> = text.split_whitespace().collect();
    matches!(fields.len(), 5 | 6)
        && fields
            .iter()
            .all(|field| field.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/')))
}

fn parse_item(kind: Macro, item: TokenStream) -> syn::Result<ItemFn> {
    let parser = |input: ParseStream<'_>| {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let is_fn = input.peek(Token![async])
            || input.peek(Token![const])
            || input.peek(Token![unsafe])
            || input.peek(Token![extern])
            || input.peek(Token![fn]);
        if !is_fn {
            return Err(input.error(format!("{} can only be used on an `async fn`", kind.attr())));
        }
        let sig: Signature = input.parse()?;
        let body: Group = input.parse()?;
        if body.delimiter() != Delimiter::Brace {
            return Err(syn::Error::new(body.span(), "expected the body of the function, in `{ … }`"));
        }
        Ok(ItemFn { attrs, vis, sig, body })
    };
    parser.parse2(item)
}

/// What a rejected function is replaced with, so that its callers see the signature the macro
/// would have generated and get no errors of their own (no "expected `Result<u64, Error>`, found
/// `u64`", no "remove the `.await`"): `fn NAME(_: impl Into<Arg<T>>, …) -> Handle<OUT>`, whose
/// body never runs (the crate does not compile), and the user's function renamed beside it, so
/// that its body is still checked. Parameters the macro refused take `impl Sized`. `None` when
/// the item is not a function at all: it is then emitted unchanged.
pub(crate) fn stub(kind: Macro, item: TokenStream) -> Option<TokenStream> {
    let ItemFn { attrs, vis, sig, body } = parse_item(kind, item).ok()?;
    let mut ignored = Errors::default();
    let params = sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Receiver(receiver) => Some(receiver.to_token_stream()),
        FnArg::Typed(arg) if context_type(&arg.ty).is_some() => None,
        FnArg::Typed(arg) => Some(if check_value_type(kind, &arg.ty, "parameters", &mut ignored) {
            let ty = &arg.ty;
            quote::quote!(_: impl ::core::convert::Into<::salt::__private::Arg<#ty>>)
        } else {
            quote::quote!(_: impl ::core::marker::Sized)
        }),
    });
    let output = match &sig.output {
        ReturnType::Default => quote::quote!(()),
        ReturnType::Type(_, ty) => result_ok(ty).unwrap_or(ty).to_token_stream(),
    };
    let ident = &sig.ident;
    let body_ident = quote::format_ident!("__salt_task_{}", ident.unraw(), span = ident.span());
    let (generics, where_clause) = (&sig.generics, &sig.generics.where_clause);
    let mut body_sig = sig.clone();
    body_sig.ident = body_ident;
    let lints: Vec<&Attribute> = attrs
        .iter()
        .filter(|a| ["cfg", "allow", "warn", "deny", "forbid"].iter().any(|l| a.path().is_ident(l)))
        .collect();
    Some(quote::quote! {
        #(#attrs)*
        #[allow(clippy::unused_async)]
        #vis fn #ident #generics(#(#params),*) -> ::salt::__private::Handle<#output> #where_clause {
            ::core::unreachable!("a function that `#[task]` or `#[workflow]` refused")
        }

        #(#lints)*
        #[doc(hidden)]
        #[allow(dead_code, non_snake_case, clippy::unused_async)]
        #body_sig #body
    })
}

/// Checks the signature and splits it into parameters and output.
fn check_sig(kind: Macro, sig: &Signature, errors: &mut Errors) -> (Vec<Param>, Output) {
    let attr = kind.attr();
    if let Some(token) = &sig.constness {
        errors.spanned(token, format!("{attr} cannot be a `const fn`; remove `const`"));
    }
    if sig.asyncness.is_none() {
        errors.at(sig.fn_token.span, format!("{attr} requires an `async fn`; add `async` before `fn`"));
    }
    if let Some(token) = &sig.unsafety {
        errors.spanned(
            token,
            format!("{attr} cannot be an `unsafe fn`; remove `unsafe` and use an `unsafe` block in the body"),
        );
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, format!("{attr} cannot have an ABI; remove `{}`", abi.to_token_stream()));
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format!(
                "{attr} cannot be generic: its inputs and output must be concrete types; remove the generic parameters"
            ),
        );
    }
    if let Some(clause) = &sig.generics.where_clause {
        errors.spanned(
            clause,
            format!("{attr} cannot have a `where` clause: its inputs and output must be concrete types; remove it"),
        );
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, format!("{attr} cannot be variadic; remove `...`"));
    }

    let mut params = Vec::new();
    let mut has_context = false;
    for arg in &sig.inputs {
        let arg = match arg {
            FnArg::Receiver(receiver) => {
                errors.spanned(
                    receiver,
                    format!(
                        "{attr} cannot take `self`; move the function out of the `impl` block and pass what it needs as parameters"
                    ),
                );
                continue;
            }
            FnArg::Typed(arg) => arg,
        };
        if let Some(mutable) = context_type(&arg.ty) {
            if has_context {
                errors.spanned(arg, format!("{attr} takes the context only once; remove this parameter"));
            }
            if mutable {
                errors.spanned(&arg.ty, format!("{attr} takes the context as `&Context`; remove `mut`"));
            }
            if !matches!(&*arg.pat, Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none())
                && !matches!(&*arg.pat, Pat::Wild(_))
            {
                errors.spanned(&arg.pat, format!("{attr} parameters must be plain names, like `ctx: &Context`"));
            }
            has_context = true;
            params.push(Param::Context);
            continue;
        }
        let ident = match &*arg.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => Some(p.ident.clone()),
            pat => {
                errors.spanned(
                    pat,
                    format!(
                        "{attr} parameters must be plain names, like `rows: Vec<Row>`; destructure in the body instead"
                    ),
                );
                None
            }
        };
        let ty_ok = check_value_type(kind, &arg.ty, "parameters", errors);
        if let (Some(ident), true) = (ident, ty_ok) {
            params.push(Param::Input { ident, ty: arg.ty.clone() });
        }
    }

    let output = match &sig.output {
        ReturnType::Default => Output::Unit,
        ReturnType::Type(_, ty) => match result_ok(ty) {
            Some(ok) => {
                check_value_type(kind, ok, "outputs", errors);
                Output::Result { ok: Box::new(ok.clone()), full: ty.clone() }
            }
            None => {
                check_value_type(kind, ty, "outputs", errors);
                Output::Plain(ty.clone())
            }
        },
    };
    (params, output)
}

/// Whether `ty` can be decoded from or encoded to JSON as far as syntax tells; reports why not.
fn check_value_type(kind: Macro, ty: &Type, what: &str, errors: &mut Errors) -> bool {
    let attr = kind.attr();
    match strip(ty) {
        Type::Reference(reference) => {
            let owned = match strip(&reference.elem) {
                Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => "String".to_owned(),
                Type::Slice(slice) => format!("Vec<{}>", show(&slice.elem)),
                elem => show(elem),
            };
            errors.spanned(
                ty,
                format!(
                    "{attr} {what} must be owned, not references: they cross the task boundary as JSON; use `{owned}` instead of `{}`",
                    show(ty)
                ),
            );
            false
        }
        Type::ImplTrait(_) => {
            errors.spanned(
                ty,
                format!(
                    "{attr} {what} must be concrete types, not `impl Trait`: they cross the task boundary as JSON; name the type"
                ),
            );
            false
        }
        Type::Path(path) if what == "parameters" && path.qself.is_none() && is_context(&path.path) => {
            errors.spanned(ty, format!("{attr} takes the context by reference; use `&{}`", show(ty)));
            false
        }
        _ => true,
    }
}

/// `Some(is_mut)` if `ty` is a reference to a type named `Context`.
fn context_type(ty: &Type) -> Option<bool> {
    match strip(ty) {
        Type::Reference(reference) => match strip(&reference.elem) {
            Type::Path(path) if path.qself.is_none() && is_context(&path.path) => Some(reference.mutability.is_some()),
            _ => None,
        },
        _ => None,
    }
}

fn is_context(path: &syn::Path) -> bool {
    path.segments.last().is_some_and(|s| s.ident == "Context" && matches!(s.arguments, PathArguments::None))
}

/// `T` if `ty` is a path ending in `Result<T, …>`.
fn result_ok(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = strip(ty) else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ok) => Some(ok),
        _ => None,
    }
}

/// The type inside invisible groups and parentheses.
fn strip(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => strip(&group.elem),
        Type::Paren(paren) => strip(&paren.elem),
        ty => ty,
    }
}

/// A type as a person writes it, for messages.
fn show(ty: &Type) -> String {
    let text = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        let next = chars.peek().copied().unwrap_or(' ');
        let keep = c != ' '
            || !(matches!(prev, '<' | '&' | ':' | '(' | '[' | '\'')
                || matches!(next, '<' | '>' | ':' | ',' | ')' | ']'));
        if keep {
            out.push(c);
            prev = c;
        }
    }
    out
}

/// The doc comment: the `#[doc = "…"]` lines, each without its first space, joined with `\n`.
fn doc(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(syn::ExprLit { lit: Lit::Str(lit), .. }) => Some(lit.value()),
                _ => None,
            },
            _ => None,
        })
        .map(|line| line.strip_prefix(' ').map(str::to_owned).unwrap_or(line))
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn task(args: TokenStream, item: TokenStream) -> Task {
        match parse(Macro::Task, args, item) {
            Ok(task) => task,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn errors(kind: Macro, args: TokenStream, item: TokenStream) -> Vec<String> {
        match parse(kind, args, item) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    fn task_errors(args: TokenStream, item: TokenStream) -> Vec<String> {
        errors(Macro::Task, args, item)
    }

    #[test]
    fn defaults() {
        let t = task(
            quote!(),
            quote!(
                async fn double(x: u64) -> u64 {
                    x * 2
                }
            ),
        );
        assert_eq!(t.name, "double");
        assert_eq!(t.policy, Policy::default());
        assert_eq!(t.doc, "");
        assert!(t.label.is_none() && t.color.is_none());
        assert!(t.default_input.is_none() && t.schedule.is_none());
        assert!(matches!(t.output, Output::Plain(_)));
        assert!(matches!(&t.params[..], [Param::Input { ident, .. }] if ident == "x"));
    }

    #[test]
    fn every_argument() {
        let t = task(
            quote!(
                retries = 2,
                backoff = "exponential(1s, 30s)",
                timeout = "10s",
                queue = "io",
                priority = -5,
                cores = 4,
                memory_mb = 2048,
                label = "Extract",
                color = "#ff0000",
                name = "extract_rows"
            ),
            quote! {
                /// Reads rows.
                ///
                ///  Indented.
                pub async fn extract(source: String, ctx: &Context) -> salt::Result<Vec<Row>> { todo!() }
            },
        );
        assert_eq!(t.name, "extract_rows");
        assert_eq!(
            t.policy,
            Policy {
                retries: 2,
                backoff: Backoff::Exponential { base: 1000, cap: 30_000 },
                timeout: Some(10_000),
                queue: "io".to_owned(),
                priority: -5,
                cores: 4,
                memory_mb: 2048,
            }
        );
        assert_eq!(t.label.as_deref(), Some("Extract"));
        assert_eq!(t.color.as_deref(), Some("#ff0000"));
        assert_eq!(t.doc, "Reads rows.\n\n Indented.");
        assert!(matches!(&t.params[..], [Param::Input { .. }, Param::Context]));
        assert!(matches!(&t.output, Output::Result { ok, .. } if ok.to_token_stream().to_string() == "Vec < Row >"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("30s"), Some(30_000));
        assert_eq!(parse_duration("2m"), Some(120_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        for bad in ["soon", "30", "s", "1.5s", "-1s", "1 s", "1d", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(parse_backoff("2s"), Ok(Backoff::Fixed(2000)));
        assert_eq!(parse_backoff("exponential(500ms, 1m)"), Ok(Backoff::Exponential { base: 500, cap: 60_000 }));
        assert!(parse_backoff("exponential(1m, 1s)").is_err());
        assert!(parse_backoff("exponential(1s)").is_err());
        assert!(parse_backoff("linear(1s, 2s)").is_err());
    }

    #[test]
    fn cron() {
        assert!(is_cron("0 3 * * *"));
        assert!(is_cron("*/15 9-17 * JAN-MAR MON,FRI"));
        assert!(is_cron("0 0 3 * * *"));
        assert!(!is_cron("0 3 * *"));
        assert!(!is_cron("every day"));
        assert!(!is_cron("0 3 * * * * *"));
        assert!(!is_cron("0 3 * * ?"));
    }

    #[test]
    fn plain_unit_and_result_outputs() {
        let t = task(
            quote!(),
            quote!(
                async fn f() {}
            ),
        );
        assert!(matches!(t.output, Output::Unit));
        let t = task(
            quote!(),
            quote!(
                async fn f() -> Result<u8, std::io::Error> {
                    Ok(1)
                }
            ),
        );
        assert!(matches!(&t.output, Output::Result { ok, .. } if ok.to_token_stream().to_string() == "u8"));
        let t = task(
            quote!(),
            quote!(
                async fn f() -> Option<u8> {
                    None
                }
            ),
        );
        assert!(matches!(t.output, Output::Plain(_)));
    }

    #[test]
    fn context_parameter() {
        for ty in [quote!(&Context), quote!(&salt::Context), quote!(&::salt::Context)] {
            let t = task(quote!(), quote!(async fn f(a: u8, ctx: #ty, mut b: u8) {}));
            assert!(matches!(
                &t.params[..],
                [Param::Input { .. }, Param::Context, Param::Input { ident, .. }] if ident == "b"
            ));
        }
        let t = task(
            quote!(),
            quote!(
                async fn f(_: &Context) {}
            ),
        );
        assert!(matches!(&t.params[..], [Param::Context]));
    }

    #[test]
    fn unknown_argument() {
        assert_eq!(
            task_errors(
                quote!(retires = 3),
                quote!(
                    async fn f() {}
                )
            ),
            [
                "unknown `#[task]` argument `retires`; expected one of `name`, `retries`, `backoff`, `timeout`, `queue`, `priority`, `cores`, `memory_mb`, `label`, `color`, `promise`, `spawns`, `validate`, `pre`, `post`, `on_failure`"
            ]
        );
        let errs = errors(
            Macro::Workflow,
            quote!(retires = 3),
            quote!(
                async fn f() {}
            ),
        );
        assert!(errs[0].ends_with("`label`, `color`, `promise`, `input`, `schedule`, `validate`"), "{errs:?}");
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            task_errors(
                quote!(timeout = "soon"),
                quote!(
                    async fn f() {}
                )
            ),
            [
                "invalid duration `soon` for `timeout`; expected a number followed by `ms`, `s`, `m` or `h`, like \"30s\""
            ]
        );
        assert_eq!(
            task_errors(
                quote!(retries = "three"),
                quote!(
                    async fn f() {}
                )
            ),
            ["`retries` expects an integer literal, like `retries = 3`"]
        );
        assert_eq!(
            task_errors(
                quote!(retries = -1),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(retries = 5000000000),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(priority = 3000000000),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(name = 3),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(name = "a b"),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(timeout = "0s"),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(queue = ""),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(retries),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            task_errors(
                quote!(retries(3)),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
        let t = task(
            quote!(priority = -2147483648),
            quote!(
                async fn f() {}
            ),
        );
        assert_eq!(t.policy.priority, i32::MIN);
    }

    #[test]
    fn promises_may_repeat() {
        let t = task(
            quote!(promise = "no new edges", promise = "only tasks a, b"),
            quote!(
                async fn f() {}
            ),
        );
        assert_eq!(t.promises, ["no new edges", "only tasks a, b"]);
        assert_eq!(
            task_errors(
                quote!(promise = " "),
                quote!(
                    async fn f() {}
                )
            )
            .len(),
            1
        );
    }

    #[test]
    fn workflows_and_tasks_marked_spawns_may_spawn() {
        assert!(
            !task(
                quote!(),
                quote!(
                    async fn f(ctx: &Context) {}
                )
            )
            .may_spawn
        );
        assert!(
            task(
                quote!(spawns, retries = 1),
                quote!(
                    async fn f(x: u8) {}
                )
            )
            .may_spawn
        );
        let workflow = parse(
            Macro::Workflow,
            quote!(),
            quote!(
                async fn w() {}
            ),
        );
        assert!(workflow.is_ok_and(|w| w.may_spawn));
    }

    #[test]
    fn duplicate_argument() {
        assert_eq!(
            task_errors(
                quote!(retries = 1, retries = 2),
                quote!(
                    async fn f() {}
                )
            ),
            ["duplicate `#[task]` argument `retries`; remove one of them"]
        );
    }

    #[test]
    fn workflow_only_arguments() {
        let errs = task_errors(
            quote!(input = "{}", schedule = "0 3 * * *"),
            quote!(
                async fn f() {}
            ),
        );
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| e.contains("only for `#[workflow]`")), "{errs:?}");
    }

    #[test]
    fn workflow_arguments() {
        let wf = |args, item| match parse(Macro::Workflow, args, item) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let t = wf(
            quote!(input = r#"{"a": 1}"#, schedule = "0 3 * * *"),
            quote!(
                async fn w(a: u8) {}
            ),
        );
        assert_eq!(t.kind, Macro::Workflow);
        assert_eq!(t.default_input.as_deref(), Some(r#"{"a": 1}"#));
        assert_eq!(t.schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(
            wf(
                quote!(),
                quote!(
                    async fn w() {}
                )
            )
            .default_input
            .as_deref(),
            Some("{}")
        );
        assert_eq!(
            wf(
                quote!(),
                quote!(
                    async fn w(a: u8) {}
                )
            )
            .default_input,
            None
        );

        let errs = errors(
            Macro::Workflow,
            quote!(input = "[1]", schedule = "daily"),
            quote!(
                async fn w() {}
            ),
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[1].starts_with("invalid cron schedule `daily` for `schedule`"), "{errs:?}");
    }

    #[test]
    fn not_async() {
        assert_eq!(
            task_errors(
                quote!(),
                quote!(
                    fn f() {}
                )
            ),
            ["`#[task]` requires an `async fn`; add `async` before `fn`"]
        );
    }

    #[test]
    fn every_mistake_at_once() {
        let errs = task_errors(
            quote!(retires = 3, timeout = "soon"),
            quote!(
                const unsafe extern "C" fn f<T>(
                    &self,
                    (a, b): (u8, u8),
                    s: &str,
                    i: impl Fn(),
                    c: &Context,
                    d: &Context,
                ) where
                    T: Copy,
                {
                }
            ),
        );
        let expected = [
            "unknown `#[task]` argument `retires`",
            "invalid duration `soon`",
            "cannot be a `const fn`",
            "requires an `async fn`",
            "cannot be an `unsafe fn`",
            "cannot have an ABI; remove `extern \"C\"`",
            "cannot be generic",
            "cannot have a `where` clause",
            "cannot take `self`",
            "parameters must be plain names",
            "use `String` instead of `&str`",
            "not `impl Trait`",
            "takes the context only once",
        ];
        assert_eq!(errs.len(), expected.len(), "{errs:#?}");
        for (err, expected) in errs.iter().zip(expected) {
            assert!(err.contains(expected), "{err:?} does not contain {expected:?}");
        }
    }

    #[test]
    fn references_suggest_owned_types() {
        let errs = task_errors(
            quote!(),
            quote!(
                async fn f(a: &[u8], b: &Vec<Row>, c: Context) -> &'static str {
                    ""
                }
            ),
        );
        assert!(errs[0].ends_with("use `Vec<u8>` instead of `&[u8]`"), "{errs:?}");
        assert!(errs[1].ends_with("use `Vec<Row>` instead of `&Vec<Row>`"), "{errs:?}");
        assert!(errs[2].ends_with("use `&Context`"), "{errs:?}");
        assert!(errs[3].contains("outputs must be owned"), "{errs:?}");
        assert!(errs[3].ends_with("use `String` instead of `&'static str`"), "{errs:?}");
    }

    #[test]
    fn not_a_function() {
        assert_eq!(
            task_errors(
                quote!(),
                quote!(
                    struct S;
                )
            ),
            ["`#[task]` can only be used on an `async fn`"]
        );
    }

    #[test]
    fn syntax_errors_in_arguments_do_not_hide_others() {
        let errs = task_errors(
            quote!(retries 3),
            quote!(
                fn f() {}
            ),
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn raw_identifiers() {
        let t = task(
            quote!(),
            quote!(
                async fn r#type(r#in: u8) {}
            ),
        );
        assert_eq!(t.name, "type");
    }

    #[test]
    fn shows_types_like_people_write_them() {
        let ty: Type = syn::parse_quote!(&'a std::collections::HashMap<String, Vec<(u8, u16)>>);
        assert_eq!(show(&ty), "&'a std::collections::HashMap<String, Vec<(u8, u16)>>");
    }
}
