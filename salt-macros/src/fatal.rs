//! `#[derive(Fatal)]`: which values of an error type are fatal, and its registration.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Data, DeriveInput};

/// Whether `attrs` has a `#[fatal]`; a `#[fatal(...)]` or `#[fatal = ...]` is an error.
fn marked(attrs: &[Attribute]) -> syn::Result<bool> {
    let mut found = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("fatal")) {
        attr.meta.require_path_only().map_err(|_| {
            syn::Error::new_spanned(attr, "`#[fatal]` takes no arguments: write `#[fatal]` on a fatal variant")
        })?;
        found = true;
    }
    Ok(found)
}

/// The `impl salt::Fatal` of the type and the registration that makes `?` use it.
pub(crate) fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let name = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "`salt::Fatal` cannot be derived for a generic type: implement it by hand and register each \
             type you use with `salt::register_fatal!(Type<...>)`",
        ));
    }
    let all = marked(&input.attrs)?;
    let body = match &input.data {
        Data::Struct(_) => quote!(true),
        Data::Enum(_) if all => quote!(true),
        Data::Enum(e) => {
            let mut fatal = Vec::new();
            for v in &e.variants {
                if marked(&v.attrs)? {
                    let ident = &v.ident;
                    fatal.push(quote!(Self::#ident { .. }));
                }
            }
            if fatal.is_empty() {
                return Err(syn::Error::new_spanned(
                    name,
                    "no variant is marked `#[fatal]`: mark the variants that retrying cannot fix, or write \
                     `#[fatal]` on the enum to make every value fatal",
                ));
            }
            quote!(::core::matches!(self, #(#fatal)|*))
        }
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(name, "`salt::Fatal` can be derived for a struct or an enum only"));
        }
    };
    Ok(quote! {
        impl ::salt::Fatal for #name {
            fn is_fatal(&self) -> bool {
                #body
            }
        }
        ::salt::__private::inventory::submit! {
            ::salt::__private::FatalType { classify: ::salt::__private::classify::<#name> }
        }
    })
}
