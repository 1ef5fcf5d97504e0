//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types. `api/openapi.json` is this
//! document committed; a test keeps the two equal (`LORE_BLESS=1` rewrites
//! the file), and the server serves it at `GET /openapi.json`.

use std::collections::BTreeMap;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::{ask, collections, documents, health, ingest, openai, search, status};

/// Error statuses every `/v1` endpoint may answer, each with
/// [`crate::wire::ErrorBody`].
pub struct ErrorResponses;

impl IntoResponses for ErrorResponses {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("400", "The request is malformed or out of range."),
            ("401", "A valid API key is required."),
            (
                "403",
                "The key's role or collections do not allow this, the path is outside the \
                 ingest roots, or a page of another site sent a write.",
            ),
            (
                "404",
                "No such document, collection, model or endpoint (a collection the key \
                 may not use is a 403 whether it exists or not).",
            ),
            ("405", "The endpoint does not support this method."),
            ("408", "The request body did not arrive in time."),
            ("413", "The request body is too large."),
            ("415", "The body is not JSON (or, for uploads, multipart)."),
            (
                "421",
                "The Host header names a host this server does not answer to.",
            ),
            (
                "422",
                "The document could not be read (binary, empty, corrupt).",
            ),
            (
                "429",
                "The generation queue is full; retry after `Retry-After` seconds.",
            ),
            ("503", "Timed out, shutting down, or the index is busy."),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
    }
}

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lore",
        description = "Retrieval-augmented answers over your documents: search, grounded answers with citations, document management, and OpenAI-compatible chat, models and embeddings."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi_json,
        search::search,
        ask::ask,
        documents::add_document,
        documents::list_documents,
        documents::get_document,
        documents::delete_document,
        ingest::ingest,
        ingest::remove,
        status::status,
        status::whoami,
        documents::get_chunk,
        collections::list_collections,
        collections::create_collection,
        collections::drop_collection,
        openai::chat,
        openai::models,
        openai::embeddings,
    ),
    components(schemas(crate::wire::ErrorBody)),
    modifiers(&BearerKeys)
)]
struct ApiDoc;

/// The document as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
        + "\n"
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn committed_document_matches_the_code() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("api/openapi.json");
        let generated = super::document();
        if std::env::var_os("LORE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "api/openapi.json is out of date: rerun with LORE_BLESS=1 and commit it"
        );
    }
}
