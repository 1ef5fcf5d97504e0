//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request/response types. `api/openapi.json` is this
//! document committed; a test keeps the two equal (`LORE_BLESS=1` rewrites
//! the file), and the server serves it at `GET /openapi.json`.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{ask, collections, documents, health, ingest, openai, search, status};

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
        openapi_json,
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

/// This API's OpenAPI 3 document.
#[utoipa::path(get, tag = "routes", path = "/openapi.json", responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get_or_init(document).as_str())
}

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
