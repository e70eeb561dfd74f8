//! The generated code: accessors, `SessionData`, and per-field type checks.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{DeriveInput, spanned::Spanned as _};

use crate::{
    ast::{self, Container, Field},
    check,
    ctxt::Ctxt,
};

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let container = ast::container(&mut cx, input);
    if let Some(container) = &container {
        check::container(&mut cx, container);
    }
    let Some(error) = cx.into_error() else {
        let container = container.expect("no errors means the struct was modelled");
        return expand(&container);
    };
    let errors = error.to_compile_error();
    // A minimal impl keeps one mistake from cascading into "SessionData is
    // not implemented" at every handler; it is only possible for a plain struct.
    let fallback = container
        .filter(|container| container.generics.params.is_empty())
        .map(|container| fallback(&container));
    quote! { #errors #fallback }
}

fn fallback(container: &Container<'_>) -> TokenStream {
    let ident = container.ident;
    quote! {
        const _: () = {
            impl ::axum_typed_session::__private::SessionData for #ident {
                type Accessors = ::axum_typed_session::__private::Handle<Self>;
                const SCHEMA: ::axum_typed_session::__private::Schema = ::axum_typed_session::__private::Schema {
                    table: "",
                    struct_name: "",
                    columns: &[],
                };
                fn encode_column(&self, _: usize) -> ::core::result::Result<
                    ::axum_typed_session::__private::Value<'_>,
                    ::axum_typed_session::__private::EncodeError,
                > {
                    ::core::unreachable!()
                }
                fn decode_columns(
                    _: &mut dyn ::axum_typed_session::__private::ColumnSource,
                ) -> ::core::result::Result<Self, ::axum_typed_session::__private::DecodeError> {
                    ::core::unreachable!()
                }
                fn duplicate(&self) -> Self {
                    ::core::unreachable!()
                }
                fn copy_fields(&self, _: &mut Self, _: ::axum_typed_session::__private::DirtyFields) {}
            }
        };
    }
}

/// The constant holding field `index`'s codec.
fn codec(index: usize) -> syn::Ident {
    format_ident!("__AXUM_TYPED_SESSION_FIELD_{}", index)
}

fn expand(container: &Container<'_>) -> TokenStream {
    let ident = container.ident;
    let vis = container.vis;
    let struct_name = ident.to_string();
    let table = &container.table.value;
    // Inside `const _`, so no user code can see (or clash with) this name;
    // it only has to avoid shadowing a type a field names.
    let accessors = format_ident!("__AxumTypedSession{}Accessors", ident);

    let codecs = container
        .fields
        .iter()
        .enumerate()
        .map(|(index, field)| field_codec(field, index));
    let column_defs = container
        .fields
        .iter()
        .enumerate()
        .map(|(index, field)| column_def(field, index));
    let methods = container
        .fields
        .iter()
        .enumerate()
        .map(|(index, field)| accessor_methods(ident, field, index, vis));
    let index_consts = container
        .fields
        .iter()
        .enumerate()
        .filter(|(_, field)| field.index.is_some())
        .map(|(index, field)| index_const(ident, field, index, vis));
    let encode_arms = container.fields.iter().enumerate().map(|(index, field)| {
        let member = field.ident;
        let codec = codec(index);
        let value =
            quote! { __private::encode_field(&#codec, &self.#member, &Self::SCHEMA, #index) };
        // The last field takes every index at or past it, so the match is
        // total without an arm that could silently write a wrong value.
        if index + 1 == container.fields.len() {
            quote! { _ => #value, }
        } else {
            quote! { #index => #value, }
        }
    });
    let decode_fields = container.fields.iter().enumerate().map(|(index, field)| {
        let member = field.ident;
        let codec = codec(index);
        quote! { #member: __private::decode_field(&#codec, source, &Self::SCHEMA, #index)?, }
    });
    let duplicate_fields = container.fields.iter().enumerate().map(|(index, field)| {
        let member = field.ident;
        let codec = codec(index);
        quote! { #member: (#codec.clone)(&self.#member), }
    });
    let copy_fields = container.fields.iter().enumerate().map(|(index, field)| {
        let member = field.ident;
        let codec = codec(index);
        quote! {
            if fields.contains(#index) {
                target.#member = (#codec.clone)(&self.#member);
            }
        }
    });

    quote! {
        const _: () = {
            use ::axum_typed_session::__private;

            #(#codecs)*

            #[doc = concat!("Accessors of [`Session<", stringify!(#ident), ">`](struct@::axum_typed_session::Session).")]
            #vis struct #accessors(__private::Handle<#ident>);

            impl ::core::convert::From<__private::Handle<#ident>> for #accessors {
                fn from(handle: __private::Handle<#ident>) -> Self {
                    Self(handle)
                }
            }

            impl ::core::convert::AsRef<__private::Handle<#ident>> for #accessors {
                fn as_ref(&self) -> &__private::Handle<#ident> {
                    &self.0
                }
            }

            impl #accessors {
                #(#methods)*
            }

            #(#index_consts)*

            impl __private::SessionData for #ident {
                type Accessors = #accessors;

                const SCHEMA: __private::Schema = __private::Schema {
                    table: #table,
                    struct_name: #struct_name,
                    columns: &[#(#column_defs),*],
                };

                fn encode_column(
                    &self,
                    index: usize,
                ) -> ::core::result::Result<__private::Value<'_>, __private::EncodeError> {
                    match index {
                        #(#encode_arms)*
                    }
                }

                fn decode_columns(
                    source: &mut dyn __private::ColumnSource,
                ) -> ::core::result::Result<Self, __private::DecodeError> {
                    ::core::result::Result::Ok(Self {
                        #(#decode_fields)*
                    })
                }

                fn duplicate(&self) -> Self {
                    Self {
                        #(#duplicate_fields)*
                    }
                }

                fn copy_fields(&self, target: &mut Self, fields: __private::DirtyFields) {
                    #(#copy_fields)*
                }
            }
        };
    }
}

/// The one place that requires the field type's traits, under its span: a
/// type that does not fit is a single error pointing at the field.
fn field_codec(field: &Field<'_>, index: usize) -> TokenStream {
    let ty = field.ty;
    let codec = codec(index);
    let constructor = if field.json.is_some() {
        quote_spanned! {field.ty_span()=> json }
    } else {
        quote_spanned! {field.ty_span()=> column }
    };
    quote_spanned! {field.ty_span()=>
        const #codec: __private::FieldCodec<#ty> = __private::FieldCodec::<#ty>::#constructor();
    }
}

fn column_def(field: &Field<'_>, index: usize) -> TokenStream {
    let name = &field.column.value;
    let field_name = &field.name;
    let codec = codec(index);
    let indexed = field.index.is_some();
    quote! {
        __private::ColumnDef {
            name: #name,
            field: #field_name,
            sql_type: #codec.sql_type,
            nullable: #codec.nullable,
            indexed: #indexed,
        }
    }
}

/// `Struct::FIELD`, the handle that queries sessions by an indexed field.
fn index_const(
    owner: &syn::Ident,
    field: &Field<'_>,
    index: usize,
    vis: &syn::Visibility,
) -> TokenStream {
    let name = format_ident!("{}", field.name.to_uppercase(), span = field.ident.span());
    let key = field.key_type();
    let doc = format!(
        "Finds and revokes sessions by `{}` (an indexed column), e.g. `store.sessions_by(&{owner}::{name}, &key)`.",
        field.name
    );
    let key_fn = quote_spanned! {key.span()=> __private::index_key::<#key> };
    quote! {
        impl #owner {
            #[doc = #doc]
            #vis const #name: __private::Index<#owner, #key> = __private::Index::new(#index, #key_fn);
        }
    }
}

fn accessor_methods(
    owner: &syn::Ident,
    field: &Field<'_>,
    index: usize,
    vis: &syn::Visibility,
) -> TokenStream {
    let member = field.ident;
    let ty = field.ty;
    let name = &field.name;
    let codec = codec(index);
    let setter = format_ident!("set_{}", name, span = member.span());
    let updater = format_ident!("update_{}", name, span = member.span());
    let get_doc = format!("The `{name}` field.");
    let set_doc = format!(
        "Sets `{name}`; only its column is written. Last writer wins: for a change that depends on the current value use [`{updater}`](Self::{updater})."
    );
    let update_doc = format!(
        "Changes `{name}` in place, as a compare-and-swap: if another request wrote the session first, the closure is replayed on the fresh value (so it is `FnMut` and may run more than once). Dropped, the change is written after the handler; awaited (`let n = visit.{updater}(|v| {{ *v += 1; *v }}).await?;`), it is written now and the answer is what the closure returned on the stored attempt."
    );
    quote! {
        #[doc = #get_doc]
        #vis fn #member(&self) -> #ty {
            self.0.read(|data| (#codec.clone)(&data.#member))
        }

        #[doc = #set_doc]
        #vis fn #setter(&self, value: #ty) {
            self.0.set(#index, value, |data| &mut data.#member, #codec.clone)
        }

        #[doc = #update_doc]
        #vis fn #updater<__AxumTypedSessionAnswer: ::core::marker::Send + 'static>(
            &self,
            change: impl ::core::ops::FnMut(&mut #ty) -> __AxumTypedSessionAnswer + ::core::marker::Send + 'static,
        ) -> ::axum_typed_session::__private::Updated<#owner, __AxumTypedSessionAnswer> {
            self.0.update_field(#index, change, |data| &mut data.#member)
        }
    }
}
