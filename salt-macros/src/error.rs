//! An accumulator of errors, so that one expansion reports every mistake at once.

use std::fmt::Display;

use proc_macro2::Span;
use quote::ToTokens;

/// The errors found so far. [`Errors::finish`] turns them into one combined [`syn::Error`].
#[derive(Default)]
pub(crate) struct Errors {
    first: Option<syn::Error>,
}

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.first {
            Some(first) => first.combine(error),
            None => self.first = Some(error),
        }
    }

    /// Records an error spanning all of `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records an error at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// All the errors recorded, and `error` last.
    pub(crate) fn fail(self, error: syn::Error) -> syn::Error {
        match self.first {
            Some(mut first) => {
                first.combine(error);
                first
            }
            None => error,
        }
    }

    /// `value` if no error was recorded, else all of them.
    pub(crate) fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.first {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combines_every_error() {
        let mut errors = Errors::default();
        errors.at(Span::call_site(), "first");
        errors.at(Span::call_site(), "second");
        let messages: Vec<String> = match errors.finish(()) {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        assert_eq!(messages, ["first", "second"]);
    }

    #[test]
    fn no_error_gives_the_value() {
        assert_eq!(Errors::default().finish(7).ok(), Some(7));
    }
}
