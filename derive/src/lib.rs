//! Derive macros of Synod (re-exported by the `synod` crate; use them from
//! there):
//!
//! * `#[derive(Command)]` with `#[synod(name = "counter.add", result = "i64")]`
//!   implements `synod::Message`: a command with an explicit wire name
//!   (the name written in the log: choose it once and keep it, whatever
//!   the type's name or path becomes).
//! * `#[derive(Query)]` with `#[synod(name = "counter.get", result = "i64")]`
//!   implements `synod::Query`.
//! * `#[derive(ReplicatedActor)]` with
//!   `#[synod(commands(Add, Reset), queries(Get))]` implements
//!   `synod::ReplicatedActor` (registering exactly those) and
//!   `synod::Registered<M>` for each: `ReplicatedAddr::send` and `read`
//!   accept only registered messages, so one that is not listed does not
//!   compile (instead of failing at run time), and a listed one without a
//!   handler does not either.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, DeriveInput, LitStr, Path, Type};

/// `name` and `result` from `#[synod(...)]` on a command or query.
fn name_and_result(input: &DeriveInput, what: &str) -> syn::Result<(LitStr, Type)> {
    let mut name = None;
    let mut result = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("synod")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    return Err(meta.error("the wire name must not be empty"));
                }
                name = Some(lit);
                Ok(())
            } else if meta.path.is_ident("result") {
                let lit: LitStr = meta.value()?.parse()?;
                result = Some(lit.parse::<Type>()?);
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown key: a {what} takes `name = \"...\"` and `result = \"Type\"`"
                )))
            }
        })?;
    }
    let missing = |key: &str, example: &str| {
        syn::Error::new_spanned(
            &input.ident,
            format!(
                "a {what} needs `#[synod({key} = {example})]`: its wire name is written in the \
                 log, so it is explicit and must never change"
            ),
        )
    };
    let name = name.ok_or_else(|| missing("name", "\"app.verb\""))?;
    let result = match result {
        Some(r) => r,
        None => syn::parse_quote!(()),
    };
    Ok((name, result))
}

/// `impl ::synod::<trait_> for Input { type Result; const NAME }` from the
/// input's `#[synod(name, result)]`, or the error.
fn named_message(input: TokenStream, what: &str, trait_: proc_macro2::TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match name_and_result(&input, what) {
        Ok((name, result)) => {
            let ident = &input.ident;
            let (imp, ty, wh) = input.generics.split_for_impl();
            quote! {
                impl #imp ::synod::#trait_ for #ident #ty #wh {
                    type Result = #result;
                    const NAME: &'static str = #name;
                }
            }
            .into()
        }
        Err(e) => e.to_compile_error().into(),
    }
}

/// Implements `synod::Message` (a command). See the crate docs.
#[proc_macro_derive(Command, attributes(synod))]
pub fn derive_command(input: TokenStream) -> TokenStream {
    named_message(input, "command", quote!(Message))
}

/// Implements `synod::Query`. See the crate docs.
#[proc_macro_derive(Query, attributes(synod))]
pub fn derive_query(input: TokenStream) -> TokenStream {
    named_message(input, "query", quote!(Query))
}

/// Implements `synod::ReplicatedActor` and `synod::Registered` for the
/// commands and queries listed in `#[synod(commands(..), queries(..))]`.
#[proc_macro_derive(ReplicatedActor, attributes(synod))]
pub fn derive_replicated_actor(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let mut commands: Vec<Path> = Vec::new();
    let mut queries: Vec<Path> = Vec::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("synod")) {
        let parsed = attr.parse_nested_meta(|meta| {
            let list = if meta.path.is_ident("commands") {
                &mut commands
            } else if meta.path.is_ident("queries") {
                &mut queries
            } else {
                return Err(
                    meta.error("unknown key: an actor takes `commands(A, B)` and `queries(C)`")
                );
            };
            meta.parse_nested_meta(|m| {
                list.push(m.path);
                Ok(())
            })
        });
        if let Err(e) = parsed {
            return e.to_compile_error().into();
        }
    }
    let ident = &input.ident;
    let (imp, ty, wh) = input.generics.split_for_impl();
    quote! {
        impl #imp ::synod::ReplicatedActor for #ident #ty #wh {
            fn register(h: &mut ::synod::Handlers<Self>) {
                #( h.command::<#commands>(); )*
                #( h.query::<#queries>(); )*
            }
        }
        #( impl #imp ::synod::Registered<#commands> for #ident #ty #wh {} )*
        #( impl #imp ::synod::Registered<#queries> for #ident #ty #wh {} )*
    }
    .into()
}
