//! Code generation from a checked [`Task`]. Infallible: every check happened in `parse`.
//!
//! For `#[task] async fn f(…) -> …` this emits:
//! - `fn f(…) -> Handle<T>` with the user's attributes and visibility: it spawns a child node
//!   inside a run, and runs the body directly outside one;
//! - `async fn __salt_task_f(…)`: the user's function, renamed, its signature verbatim;
//! - a `const _: () = { … };` block with the input struct, the registered body, the input check
//!   and the `inventory` submission of the descriptor;
//! - one `const _: () = <T as CrossesTaskBoundary>::OK;` per input and output type, spanned at the
//!   user's type so that a type that cannot cross a task boundary is reported there.
//!
//! Every path is absolute through `::salt::__private`; generated names start with `__salt`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Type};

use crate::parse::{Action, Backoff, Macro, Output, Param, Task};

/// The generated items for one `#[task]` or `#[workflow]`.
pub(crate) fn expand(task: &Task) -> TokenStream {
    let Task { attrs, vis, sig, body, params, output, .. } = task;
    let name = task.name.as_str();
    let ident = &sig.ident;
    let body_fn = format_ident!("__salt_task_{}", ident.unraw(), span = ident.span());
    let cfgs: Vec<&Attribute> = attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    let lints: Vec<&Attribute> =
        attrs.iter().filter(|a| ["allow", "warn", "deny", "forbid"].iter().any(|l| a.path().is_ident(l))).collect();

    let inputs: Vec<(&Ident, &Type)> = params
        .iter()
        .filter_map(|p| match p {
            Param::Input { ident, ty } => Some((ident, &**ty)),
            Param::Context => None,
        })
        .collect();
    // The output type, and where to report a bound it misses: at the user's type.
    let (out_ty, out_span) = match output {
        Output::Unit => (quote!(()), Span::call_site()),
        Output::Plain(ty) | Output::Result { ok: ty, .. } => (ty.to_token_stream(), ty.span()),
    };

    // The public fn: spawn inside a run, run the body directly outside one.
    let pub_params =
        inputs.iter().map(|(ident, ty)| quote!(#ident: impl ::core::convert::Into<::salt::__private::Arg<#ty>>));
    let into_args = inputs
        .iter()
        .map(|(ident, ty)| quote!(let #ident: ::salt::__private::Arg<#ty> = ::core::convert::Into::into(#ident);));
    let wires = inputs.iter().map(|(ident, ty)| {
        let wire = ident.unraw().to_string();
        let probe = probe(ty, ty.span());
        quote_spanned!(ty.span()=> #probe.wire(#ident, #wire))
    });
    let resolves = inputs.iter().map(|(ident, ty)| {
        let probe = probe(ty, ty.span());
        let resolve = quote_spanned!(ty.span()=> #probe.resolve(#ident));
        quote!(let #ident = #resolve.await?;)
    });
    let direct_args = params.iter().map(|p| match p {
        Param::Input { ident, .. } => quote!(#ident),
        Param::Context => quote!(&__salt_ctx),
    });
    let run_args = params.iter().map(|p| match p {
        Param::Input { ident, .. } => quote!(__salt_input.#ident),
        Param::Context => quote!(&ctx),
    });
    let direct_call = quote!(#body_fn(#(#direct_args),*).await);
    let run_call = quote!(#body_fn(#(#run_args),*).await);
    let (direct_out, mut run_out) = match output {
        Output::Result { ok, full } => {
            // Through a probe: an error type without `Into<salt::Error>` is reported once, by
            // the `TaskResult` check below.
            let into_result = quote_spanned!(full.span()=>
                (&&::salt::__private::ResultProbe::<#ok, #full>::new()).probe().into_result
            );
            (quote!(#into_result(#direct_call)), quote!(#into_result(#run_call)?))
        }
        Output::Unit | Output::Plain(_) => (quote!(::core::result::Result::Ok(#direct_call)), run_call.clone()),
    };
    if task.steps.any() {
        let out_probe = probe(&out_ty, out_span);
        let encode_output = quote_spanned!(out_span=> #out_probe.encode_output);
        run_out = with_steps(task, &inputs, &out_ty, &run_call, &encode_output);
    }
    let handle = quote_spanned!(out_span=> ::salt::__private::Handle<#out_ty>);
    let out_probe = probe(&out_ty, out_span);
    let direct = quote_spanned!(out_span=> #out_probe.direct);
    let spawn = quote_spanned!(out_span=> #out_probe.spawn);
    let encode_output = quote_spanned!(out_span=> #out_probe.encode_output);
    let public_fn = quote! {
        #(#attrs)*
        #vis fn #ident(#(#pub_params),*) -> #handle {
            use ::salt::__private::{
                ProbeChecked as _, ProbeUnchecked as _, ResultProbeChecked as _, ResultProbeUnchecked as _,
            };
            #(#into_args)*
            match ::salt::__private::Context::current() {
                ::core::option::Option::Some(__salt_ctx) => {
                    #spawn(&__salt_ctx, #name, ::std::vec![#(#wires),*])
                }
                ::core::option::Option::None => #direct(async move {
                    #(#resolves)*
                    let __salt_ctx = ::salt::__private::Context::detached();
                    #direct_out
                }),
            }
        }
    };

    // The user's fn, renamed and private, its signature otherwise verbatim.
    let mut body_sig = sig.clone();
    body_sig.ident = body_fn.clone();
    let body_fn_item = quote! {
        #(#cfgs)*
        #(#lints)*
        #[doc(hidden)]
        #[allow(non_snake_case, clippy::unused_async)]
        #body_sig #body
    };

    // The registration. The input struct is generic over the input types, so that its derives
    // require nothing of them; it is used through a probe, like every other type.
    let params: Vec<Ident> = (0..inputs.len()).map(|i| format_ident!("__SaltA{i}")).collect();
    // An `Option` parameter may be omitted (it is then `None`): its schema says so, with
    // `"default": null`, as a serde default does.
    let fields = inputs.iter().zip(&params).map(|((ident, ty), param)| {
        if is_option(ty) {
            quote!(#[schemars(extend("default" = null))] #ident: #param)
        } else {
            quote!(#ident: #param)
        }
    });
    let input_tys = inputs.iter().map(|(_, ty)| ty);
    let input_probe = probe(&quote!(__SaltInputOf), Span::call_site());
    let schema_name = format!("{name}_input");
    let kind = match task.kind {
        Macro::Task => quote!(::salt::__private::Kind::Task),
        Macro::Workflow => quote!(::salt::__private::Kind::Workflow),
    };
    let output_schema = quote_spanned!(out_span=> (#out_probe.schema())());
    let doc = task.doc.as_str();
    let policy = policy(task);
    let label = option(task.label.as_deref());
    let color = option(task.color.as_deref());
    let default_input = option(task.default_input.as_deref());
    let schedule = option(task.schedule.as_deref());
    let promises = &task.promises;
    let may_spawn = task.may_spawn;
    // The user's check of the output, spanned at its path, so that a function that is not
    // `fn(&Output) -> Result<(), E>` is reported there.
    let validate = task.validate.as_ref().map(|path| {
        let check = quote_spanned!(path.span()=> ::salt::__private::validate_output(#name, &__salt_out, #path));
        quote!(#check?;)
    });
    let steps_input = task.steps.any().then(|| {
        quote! {
            let __salt_steps_json = input.clone();
            let __salt_steps_input: __SaltInputOf = #input_probe.decode_input(#name, input.clone())?;
        }
    });
    let registration = quote! {
        #(#cfgs)*
        const _: () = {
            use ::salt::__private::{
                ProbeChecked as _, ProbeUnchecked as _, ResultProbeChecked as _, ResultProbeUnchecked as _,
            };

            #[derive(
                ::salt::__private::serde::Serialize,
                ::salt::__private::serde::Deserialize,
                ::salt::__private::schemars::JsonSchema,
            )]
            #[serde(crate = "::salt::__private::serde", deny_unknown_fields)]
            #[schemars(crate = "::salt::__private::schemars", rename = #schema_name)]
            struct __SaltInput<#(#params),*> {
                #(#fields,)*
            }

            type __SaltInputOf = __SaltInput<#(#input_tys),*>;

            fn __salt_run(
                input: ::salt::__private::serde_json::Value,
                ctx: ::salt::__private::Context,
            ) -> ::salt::__private::BodyFuture {
                ::std::boxed::Box::pin(async move {
                    #steps_input
                    let __salt_input: __SaltInputOf = #input_probe.decode_input(#name, input)?;
                    let __salt_out = #run_out;
                    #validate
                    #encode_output(#name, &__salt_out)
                })
            }

            fn __salt_check(
                input: &::salt::__private::serde_json::Value,
            ) -> ::salt::__private::Result<()> {
                #input_probe.decode_input(#name, input.clone()).map(|_| ())
            }

            fn __salt_input_schema() -> ::salt::__private::serde_json::Value {
                (#input_probe.schema())()
            }

            fn __salt_output_schema() -> ::salt::__private::serde_json::Value {
                #output_schema
            }

            ::salt::__private::inventory::submit! {
                ::salt::__private::TaskDescriptor {
                    name: #name,
                    kind: #kind,
                    module: ::core::module_path!(),
                    doc: #doc,
                    input_schema: __salt_input_schema,
                    output_schema: __salt_output_schema,
                    run: __salt_run,
                    check_input: __salt_check,
                    policy: #policy,
                    label: #label,
                    color: #color,
                    default_input: #default_input,
                    schedule: #schedule,
                    promises: &[#(#promises),*],
                    may_spawn: #may_spawn,
                }
            }
        };
    };

    // Type checks spanned at the user's types, so a type that is not a task value is reported
    // there with `TaskValue`'s hint.
    let checked_out = match output {
        Output::Unit => None,
        Output::Plain(ty) | Output::Result { ok: ty, .. } => Some(&**ty),
    };
    let assertions = inputs.iter().map(|(_, ty)| *ty).chain(checked_out).map(|ty| {
        quote_spanned! {ty.span()=>
            #(#cfgs)*
            const _: () = <#ty as ::salt::__private::CrossesTaskBoundary>::OK;
        }
    });
    let result_check = match output {
        Output::Result { full, .. } => Some(quote_spanned! {full.span()=>
            #(#cfgs)*
            const _: () = <#full as ::salt::__private::TaskResult>::OK;
        }),
        Output::Unit | Output::Plain(_) => None,
    };

    // The assertions come first: their errors, which carry `TaskValue`'s hint, are then the
    // first ones the user reads.
    quote! {
        #(#assertions)*
        #result_check
        #public_fn
        #body_fn_item
        #registration
    }
}

/// The body's output in the registered body of a task with step actions: `pre`, the body and
/// `post` in one block whose error, if any, `on_failure` sees before it is returned. Each runs
/// through `salt::__private::step`, which logs its outcome and timing. The steps borrow a second
/// decoding of the input (`__salt_steps_input`), since the body takes the first one by value;
/// a command step is also told the input as JSON (`__salt_steps_json`), and the output or error.
fn with_steps(
    task: &Task,
    inputs: &[(&Ident, &Type)],
    out_ty: &TokenStream,
    run_call: &TokenStream,
    encode_output: &TokenStream,
) -> TokenStream {
    let borrowed: Vec<&Ident> = inputs.iter().map(|(ident, _)| *ident).collect();
    let name = task.name.as_str();
    let body_result = match &task.output {
        Output::Result { full, ok } => {
            let into_result = quote_spanned!(full.span()=>
                (&&::salt::__private::ResultProbe::<#ok, #full>::new()).probe().into_result
            );
            quote!(#into_result(#run_call))
        }
        Output::Unit | Output::Plain(_) => quote!(::core::result::Result::Ok(#run_call)),
    };
    // The whole step is spanned at the action too: a mistake in the step's signature is then
    // reported once, there.
    let at = |action: &Action| Span::call_site().located_at(action.span());
    // The future of a step, `::salt::__private::step_action(…)`, which logs its line.
    let call = |step: &str, action: &Action, extra: Option<TokenStream>, info: TokenStream| {
        let info = quote! {
            || ::salt::__private::StepInfo { step: #step, input: __salt_steps_json.clone(), #info }
        };
        // Spanned at the action, so that a mismatched argument is reported at the user's step.
        let span = at(action);
        match action {
            Action::Path(path) => {
                let args = borrowed.iter().map(|ident| quote_spanned!(span=> &__salt_steps_input.#ident)).chain(extra);
                let started = quote_spanned!(span=> ::salt::__private::into_step(&ctx, #info, #path(#(#args),*)));
                quote_spanned!(span=> ::salt::__private::step_action(&ctx, #step, #started))
            }
            // The task's inputs are in scope by reference.
            Action::Expr(expr) => {
                let started = quote_spanned!(span=> ::salt::__private::into_step(&ctx, #info, #expr));
                quote! {{
                    #(#[allow(unused_variables)] let #borrowed = &__salt_steps_input.#borrowed;)*
                    ::salt::__private::step_action(&ctx, #step, #started)
                }}
            }
        }
    };
    let none = quote!(output: ::core::option::Option::None, error: ::core::option::Option::None);
    let pre = task.steps.pre.as_ref().map(|action| {
        let call = call("pre", action, None, none.clone());
        quote_spanned!(at(action)=> #call.await?;)
    });
    let post = task.steps.post.as_ref().map(|action| {
        let info = quote! {
            output: #encode_output(#name, &__salt_out).ok(), error: ::core::option::Option::None
        };
        let call = call("post", action, Some(quote_spanned!(at(action)=> &__salt_out)), info);
        quote_spanned!(at(action)=> #call.await?;)
    });
    let on_failure = task.steps.on_failure.as_ref().map(|action| {
        let info = quote! {
            output: ::core::option::Option::None,
            error: ::core::option::Option::Some(::std::string::ToString::to_string(__salt_error))
        };
        let call = call("on_failure", action, Some(quote_spanned!(at(action)=> __salt_error)), info);
        let step = quote_spanned!(at(action)=> #call.await);
        quote! {
            if let ::core::result::Result::Err(__salt_error) = &__salt_result {
                let _ = #step;
            }
        }
    });
    quote! {{
        let __salt_result: ::salt::__private::Result<#out_ty> = async {
            #pre
            let __salt_out: ::salt::__private::Result<#out_ty> =
                ::salt::__private::step(&ctx, "body", async { #body_result }).await;
            let __salt_out = __salt_out?;
            #post
            ::core::result::Result::Ok(__salt_out)
        }
        .await;
        #on_failure
        __salt_result?
    }}
}

/// The operations on `ty`, selected by [`salt::__private::Probe`] without requiring `ty` to
/// be a task value: `CrossesTaskBoundary` alone reports a missing derive. The traits
/// `ProbeChecked` and `ProbeUnchecked` must be in scope.
fn probe(ty: &impl ToTokens, span: Span) -> TokenStream {
    quote_spanned!(span=> (&&::salt::__private::Probe::<#ty>::new()).probe())
}

fn policy(task: &Task) -> TokenStream {
    let p = &task.policy;
    let retries = Literal::u32_unsuffixed(p.retries);
    let priority = Literal::i32_unsuffixed(p.priority);
    let queue = p.queue.as_str();
    let backoff = match p.backoff {
        Backoff::Fixed(ms) => {
            let delay = millis(ms);
            quote!(::salt::__private::Backoff::Fixed(#delay))
        }
        Backoff::Exponential { base, cap } => {
            let (base, cap) = (millis(base), millis(cap));
            quote!(::salt::__private::Backoff::Exponential { base: #base, cap: #cap })
        }
    };
    let timeout = match p.timeout {
        Some(ms) => {
            let timeout = millis(ms);
            quote!(::core::option::Option::Some(#timeout))
        }
        None => quote!(::core::option::Option::None),
    };
    let cores = Literal::u32_unsuffixed(p.cores);
    let memory_mb = Literal::u64_unsuffixed(p.memory_mb);
    quote! {
        ::salt::__private::Policy {
            retries: #retries,
            backoff: #backoff,
            timeout: #timeout,
            queue: #queue,
            priority: #priority,
            cores: #cores,
            memory_mb: #memory_mb,
        }
    }
}

/// Whether `ty` is written as an `Option<T>`: `Option`, `std::option::Option` or
/// `core::option::Option`, with one type argument.
fn is_option(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<&syn::PathSegment> = path.path.segments.iter().collect();
    let Some((last, prefix)) = segments.split_last() else { return false };
    let prefix: Vec<String> = prefix.iter().map(|s| s.ident.to_string()).collect();
    let prefixed = match prefix.as_slice() {
        [] => path.path.leading_colon.is_none(),
        [krate, module] => (krate == "std" || krate == "core") && module == "option",
        _ => false,
    };
    prefixed
        && last.ident == "Option"
        && matches!(&last.arguments, syn::PathArguments::AngleBracketed(a) if a.args.len() == 1)
}

fn millis(ms: u64) -> TokenStream {
    let ms = Literal::u64_unsuffixed(ms);
    quote!(::salt::__private::millis(#ms))
}

fn option(value: Option<&str>) -> TokenStream {
    match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
    use crate::parse::parse;

    /// Tokens as text without spaces, so that comparisons ignore how punctuation is joined.
    fn squash(tokens: &TokenStream) -> String {
        tokens.to_string().replace(' ', "")
    }

    fn assert_has(out: &str, expected: TokenStream) {
        let expected = squash(&expected);
        assert!(out.contains(&expected), "missing `{expected}` in\n{out}");
    }

    fn expand_str(kind: Macro, args: TokenStream, item: TokenStream) -> String {
        match parse(kind, args, item) {
            Ok(task) => {
                let out = expand(&task);
                if let Err(e) = syn::parse2::<syn::File>(out.clone()) {
                    panic!("the expansion does not parse: {e}\n{out}");
                }
                squash(&out)
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn expands_the_documented_shape() {
        let out = expand_str(
            Macro::Task,
            quote!(
                retries = 2,
                backoff = "exponential(1s, 30s)",
                timeout = "10s",
                queue = "io",
                priority = 5,
                cores = 2,
                memory_mb = 512,
                label = "Extract",
                color = "#ff0000",
                name = "extract_rows"
            ),
            quote! {
                /// Reads rows.
                pub async fn extract(mut source: String, ctx: &Context) -> salt::Result<Vec<Row>> {
                    Ok(vec![])
                }
            },
        );
        for expected in [
            quote!(#[doc = r" Reads rows."] pub fn extract(source: impl ::core::convert::Into<::salt::__private::Arg<String> >) -> ::salt::__private::Handle<Vec<Row> >),
            quote!((&&::salt::__private::Probe::<Vec<Row>>::new()).probe().spawn(
                &__salt_ctx,
                "extract_rows",
                ::std::vec![(&&::salt::__private::Probe::<String>::new()).probe().wire(source, "source")]
            )),
            quote!(let source = (&&::salt::__private::Probe::<String>::new()).probe().resolve(source).await?;),
            quote!(::core::option::Option::None => (&&::salt::__private::Probe::<Vec<Row>>::new()).probe().direct),
            quote!(
                (&&::salt::__private::ResultProbe::<Vec<Row>, salt::Result<Vec<Row>>>::new())
                    .probe()
                    .into_result(__salt_task_extract(source, &__salt_ctx).await)
            ),
            quote!(async fn __salt_task_extract(mut source: String, ctx: &Context) -> salt::Result<Vec<Row> >),
            quote!(
                struct __SaltInput<__SaltA0> {
                    source: __SaltA0,
                }
            ),
            quote!(
                type __SaltInputOf = __SaltInput<String>;
            ),
            quote!(rename = "extract_rows_input"),
            quote!(
                (&&::salt::__private::ResultProbe::<Vec<Row>, salt::Result<Vec<Row>>>::new())
                    .probe()
                    .into_result(__salt_task_extract(__salt_input.source, &ctx).await)?
            ),
            quote!(
                const _: () = <salt::Result<Vec<Row>> as ::salt::__private::TaskResult>::OK;
            ),
            quote!(doc: "Reads rows.",),
            quote!(retries: 2, backoff: ::salt::__private::Backoff::Exponential { base: ::salt::__private::millis(1000), cap: ::salt::__private::millis(30000) },),
            quote!(timeout: ::core::option::Option::Some(::salt::__private::millis(10000)), queue: "io", priority: 5, cores: 2, memory_mb: 512,),
            quote!(label: ::core::option::Option::Some("Extract"), color: ::core::option::Option::Some("#ff0000"),),
            quote!(default_input: ::core::option::Option::None, schedule: ::core::option::Option::None, promises: &[], may_spawn: false,),
            quote!(
                const _: () = <String as ::salt::__private::CrossesTaskBoundary>::OK;
            ),
            quote!(
                const _: () = <Vec<Row> as ::salt::__private::CrossesTaskBoundary>::OK;
            ),
        ] {
            assert_has(&out, expected);
        }
    }

    #[test]
    fn option_parameters_are_recognised_by_how_they_are_written() {
        let ty = |t: TokenStream| syn::parse2::<Type>(t).unwrap();
        for yes in [quote!(Option<u32>), quote!(std::option::Option<String>), quote!(::core::option::Option<Vec<u8>>)] {
            assert!(is_option(&ty(yes.clone())), "{yes}");
        }
        for no in
            [quote!(u32), quote!(Vec<Option<u32>>), quote!(my::Option<u32>), quote!(::Option<u32>), quote!(Option)]
        {
            assert!(!is_option(&ty(no.clone())), "{no}");
        }
        let out = expand_str(
            Macro::Task,
            quote!(),
            quote!(
                async fn pick(x: u64, y: Option<u64>) -> u64 {
                    y.unwrap_or(x)
                }
            ),
        );
        assert_has(&out, quote!(x: __SaltA0, #[schemars(extend("default" = null))] y: __SaltA1,));
    }

    #[test]
    fn plain_outputs_are_wrapped_in_ok() {
        let out = expand_str(
            Macro::Task,
            quote!(),
            quote!(
                async fn double(x: u64) -> u64 {
                    x * 2
                }
            ),
        );
        assert_has(&out, quote!(::core::result::Result::Ok(__salt_task_double(x).await)));
        assert_has(&out, quote!(let __salt_out = __salt_task_double(__salt_input.x).await;));
        assert_has(&out, quote!(backoff: ::salt::__private::Backoff::Fixed(::salt::__private::millis(1000))));
        assert_has(&out, quote!(queue: "default", priority: 0, cores: 0, memory_mb: 0,));
        assert_has(&out, quote!(kind: ::salt::__private::Kind::Task));
    }

    #[test]
    fn validate_checks_the_output_before_it_is_encoded() {
        let out = expand_str(
            Macro::Task,
            quote!(validate = checks::in_range),
            quote!(
                async fn double(x: u64) -> u64 {
                    x * 2
                }
            ),
        );
        assert_has(
            &out,
            quote!(
                let __salt_out = __salt_task_double(__salt_input.x).await;
                ::salt::__private::validate_output("double", &__salt_out, checks::in_range)?;
                (&&::salt::__private::Probe::<u64>::new()).probe().encode_output("double", &__salt_out)
            ),
        );
    }

    #[test]
    fn workflows_carry_input_and_schedule() {
        let out = expand_str(
            Macro::Workflow,
            quote!(input = r#"{"a": 1}"#, schedule = "0 3 * * *"),
            quote!(
                async fn nightly(a: u64) {}
            ),
        );
        assert_has(&out, quote!(kind: ::salt::__private::Kind::Workflow));
        assert_has(&out, quote!(default_input: ::core::option::Option::Some("{\"a\": 1}")));
        assert_has(&out, quote!(schedule: ::core::option::Option::Some("0 3 * * *")));
        let out = expand_str(
            Macro::Workflow,
            quote!(),
            quote!(
                async fn empty() {}
            ),
        );
        assert_has(&out, quote!(default_input: ::core::option::Option::Some("{}")));
    }

    #[test]
    fn step_actions_wrap_the_registered_body() {
        let out = expand_str(
            Macro::Task,
            quote!(pre = checks::ready, post = verify, on_failure = clean_up),
            quote!(
                async fn resize(path: String, width: u32) -> salt::Result<u64> {
                    Ok(1)
                }
            ),
        );
        let info = |step: &str, rest: TokenStream| quote!(|| ::salt::__private::StepInfo { step: #step, input: __salt_steps_json.clone(), #rest });
        let pre_info = info("pre", quote!(output: ::core::option::Option::None, error: ::core::option::Option::None));
        let post_info = info(
            "post",
            quote!(
                output: (&&::salt::__private::Probe::<u64>::new()).probe().encode_output("resize", &__salt_out).ok(),
                error: ::core::option::Option::None
            ),
        );
        let failure_info = info(
            "on_failure",
            quote!(
                output: ::core::option::Option::None,
                error: ::core::option::Option::Some(::std::string::ToString::to_string(__salt_error))
            ),
        );
        for expected in [
            quote!(let __salt_steps_json = input.clone();),
            quote!(let __salt_steps_input: __SaltInputOf = (&&::salt::__private::Probe::<__SaltInputOf>::new()).probe().decode_input("resize", input.clone())?;),
            quote!(::salt::__private::step_action(&ctx, "pre", ::salt::__private::into_step(&ctx, #pre_info, checks::ready(&__salt_steps_input.path, &__salt_steps_input.width))).await?;),
            quote!(::salt::__private::step(&ctx, "body", async {
                (&&::salt::__private::ResultProbe::<u64, salt::Result<u64>>::new())
                    .probe()
                    .into_result(__salt_task_resize(__salt_input.path, __salt_input.width).await)
            }).await;),
            quote!(::salt::__private::step_action(&ctx, "post", ::salt::__private::into_step(&ctx, #post_info, verify(&__salt_steps_input.path, &__salt_steps_input.width, &__salt_out))).await?;),
            quote!(if let ::core::result::Result::Err(__salt_error) = &__salt_result),
            quote!(::salt::__private::step_action(&ctx, "on_failure", ::salt::__private::into_step(&ctx, #failure_info, clean_up(
                &__salt_steps_input.path,
                &__salt_steps_input.width,
                __salt_error
            ))).await),
        ] {
            assert_has(&out, expected);
        }
        // A command: the inputs are in scope by reference.
        let out = expand_str(
            Macro::Task,
            quote!(pre = salt::command("test").arg("-e").arg(path)),
            quote!(
                async fn resize(path: String, width: u32) -> u64 {
                    1
                }
            ),
        );
        assert_has(
            &out,
            quote!({
                #[allow(unused_variables)]
                let path = &__salt_steps_input.path;
                #[allow(unused_variables)]
                let width = &__salt_steps_input.width;
                ::salt::__private::step_action(&ctx, "pre", ::salt::__private::into_step(&ctx, #pre_info, salt::command("test").arg("-e").arg(path)))
            }.await?;),
        );
        // Without step actions the body is called as before.
        let out = expand_str(
            Macro::Task,
            quote!(),
            quote!(
                async fn plain(x: u64) -> u64 {
                    x
                }
            ),
        );
        assert!(!out.contains("__salt_steps_input") && !out.contains("step("), "{out}");
    }

    #[test]
    fn cfg_and_lint_attributes_reach_every_item() {
        let out = expand_str(
            Macro::Task,
            quote!(),
            quote!(
                #[cfg(test)]
                #[allow(unused_variables)]
                async fn f(x: u8) {}
            ),
        );
        assert_eq!(out.matches("#[cfg(test)]").count(), 4, "{out}");
        assert_eq!(out.matches("#[allow(unused_variables)]").count(), 2, "{out}");
    }
}
