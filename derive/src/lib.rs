//! `#[derive(ConfigDoc)]`: documents a config struct from its own definition, so
//! `berth-coordinator config reference` and `berth-agent config reference` cannot drift from
//! the code.
//!
//! For a struct, each field becomes a key: its doc comment, its type (through the field type's
//! own `ConfigDoc`) and its default, read from the same serde attributes that make it:
//! `#[serde(default = "f")]` calls `f()`, `#[serde(default)]` on the field takes the type's
//! `Default`, `#[serde(default)]` on the struct takes the struct's `Default`, and a field with
//! none of them is required. `#[config(default_text = "…")]` replaces the rendered default where
//! the value alone would mislead (an empty string that means "required", a computed name).
//! For a fieldless enum, the variants (after serde's `rename_all`) are the values.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use syn::{Attribute, Data, DeriveInput, Fields, LitStr, Token, parse_macro_input};

#[proc_macro_derive(ConfigDoc, attributes(config))]
pub fn derive_config_doc(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(input: &DeriveInput) -> syn::Result<Tokens> {
    let serde = SerdeAttrs::read(&input.attrs)?;
    let name = &input.ident;
    let body = match &input.data {
        Data::Struct(data) => struct_body(data, &serde)?,
        Data::Enum(data) => enum_body(data, &serde)?,
        Data::Union(_) => {
            return Err(syn::Error::new_spanned(
                input,
                "ConfigDoc: unions are not configs",
            ));
        }
    };
    Ok(quote! {
        impl ::berth_shared::config_doc::ConfigDoc for #name {
            fn document(
                place: &::berth_shared::config_doc::Place,
                given: ::berth_shared::config_doc::Given<'_, Self>,
                out: &mut ::std::vec::Vec<::berth_shared::config_doc::Entry>,
            ) {
                #body
            }
        }
    })
}

fn struct_body(data: &syn::DataStruct, serde: &SerdeAttrs) -> syn::Result<Tokens> {
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &data.fields,
            "ConfigDoc: a config needs named fields",
        ));
    };
    let container = serde
        .default
        .is_some()
        .then(|| quote! { let __container = <Self as ::std::default::Default>::default(); });
    let mut keys = Vec::new();
    for field in &fields.named {
        let ident = field.ident.as_ref().expect("named field");
        let key = ident.to_string();
        let ty = &field.ty;
        let doc = doc_text(&field.attrs);
        let attrs = SerdeAttrs::read(&field.attrs)?;
        let default_text = match config_default_text(&field.attrs)? {
            Some(text) => quote! { ::std::option::Option::Some(#text) },
            None => quote! { ::std::option::Option::None },
        };
        let given = match (&attrs.default, &serde.default) {
            (Some(Some(path)), _) => {
                let path: syn::ExprPath = path.parse()?;
                quote! { ::berth_shared::config_doc::Given::Value(&#path()) }
            }
            (Some(None), _) => {
                quote! { ::berth_shared::config_doc::Given::Value(&<#ty as ::std::default::Default>::default()) }
            }
            (None, Some(_)) => {
                quote! { ::berth_shared::config_doc::Given::Value(&__container.#ident) }
            }
            (None, None) => quote! { given.field(|s| &s.#ident) },
        };
        keys.push(quote! {
            <#ty as ::berth_shared::config_doc::ConfigDoc>::document(
                &place.key(#key, #doc, #default_text),
                #given,
                out,
            );
        });
    }
    Ok(quote! {
        place.table(given.is_optional(), out);
        #container
        #(#keys)*
    })
}

fn enum_body(data: &syn::DataEnum, serde: &SerdeAttrs) -> syn::Result<Tokens> {
    let mut names = Vec::new();
    let mut arms = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(
                variant,
                "ConfigDoc: only fieldless enums are values",
            ));
        }
        let ident = &variant.ident;
        let name = rename(&ident.to_string(), serde.rename_all.as_deref());
        let rendered = format!("{name:?}");
        arms.push(quote! { Self::#ident => #rendered.to_owned(), });
        names.push(rendered);
    }
    let ty = names.join(" | ");
    Ok(quote! {
        place.value(#ty, given, |v| match v { #(#arms)* }, out);
    })
}

/// serde's `rename_all` for the cases configs use.
fn rename(variant: &str, rule: Option<&str>) -> String {
    match rule {
        Some("lowercase") => variant.to_lowercase(),
        Some("snake_case") => {
            let mut out = String::new();
            for (i, c) in variant.chars().enumerate() {
                if c.is_uppercase() && i > 0 {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
            }
            out
        }
        _ => variant.to_owned(),
    }
}

/// The doc comment's lines, trimmed and joined into one paragraph.
fn doc_text(attrs: &[Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("doc")) {
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) = &nv.value
        {
            lines.push(s.value().trim().to_owned());
        }
    }
    lines.retain(|l| !l.is_empty());
    lines.join(" ")
}

fn config_default_text(attrs: &[Attribute]) -> syn::Result<Option<String>> {
    let mut text = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("config")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("default_text") {
                text = Some(meta.value()?.parse::<LitStr>()?.value());
                Ok(())
            } else {
                Err(meta.error("ConfigDoc: the config attribute takes only default_text = \"…\""))
            }
        })?;
    }
    Ok(text)
}

/// The serde attributes that shape a config: `default` (bare or with a function) and
/// `rename_all`. Others are read past.
#[derive(Default)]
struct SerdeAttrs {
    /// `Some(None)`: bare `default`; `Some(Some(f))`: `default = "f"`.
    default: Option<Option<LitStr>>,
    rename_all: Option<String>,
}

impl SerdeAttrs {
    fn read(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut out = SerdeAttrs::default();
        for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                let valued = meta.input.peek(Token![=]);
                if meta.path.is_ident("default") {
                    out.default = Some(if valued {
                        Some(meta.value()?.parse::<LitStr>()?)
                    } else {
                        None
                    });
                } else if meta.path.is_ident("rename_all") {
                    out.rename_all = Some(meta.value()?.parse::<LitStr>()?.value());
                } else if meta.path.is_ident("rename")
                    || meta.path.is_ident("alias")
                    || meta.path.is_ident("flatten")
                {
                    return Err(meta.error(
                        "ConfigDoc: renamed, aliased or flattened keys are not documented yet",
                    ));
                } else if valued {
                    meta.value()?.parse::<syn::Expr>()?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }
}
