//! Liveness, readiness, metrics and the OpenAPI document: the endpoints
//! that need no key.

use actix_web::HttpResponse;
use actix_web::web;
use serde::Serialize;
use utoipa::ToSchema;

use super::State;
use super::error::ApiError;

/// `GET /healthz` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, tag = "routes", path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok".into(),
    })
}

/// `GET /readyz` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    status: String,
    /// Chunks searchable (live vectors).
    chunks: u64,
}

/// Readiness: the index is open and the embedder loaded (it is loaded
/// before the server accepts connections). Cheap: no store is scanned.
#[utoipa::path(get, tag = "routes", path = "/readyz", responses((status = 200, body = Ready), (status = 503, description = "Not ready.", body = crate::wire::ErrorBody)))]
pub async fn readyz(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let sizes = state
        .engine
        .collection(crate::types::DEFAULT_COLLECTION)?
        .index()
        .sizes()?;
    Ok(HttpResponse::Ok().json(Ready {
        status: "ready".into(),
        chunks: sizes.vectors,
    }))
}

/// Prometheus metrics: requests and latency per route, tokens generated,
/// generation queue depth, index sizes, the `--watch` lag.
#[utoipa::path(get, tag = "routes", path = "/metrics", responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain", body = String), (status = 503, description = "The index could not be read.", body = crate::wire::ErrorBody)))]
pub async fn metrics(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    // Sizes read without scanning a store, so scrapes stay cheap at any
    // index size (`/v1/status` has the full counts). Summed over the open
    // collections: an unauthenticated scrape learns no collection's name.
    let (mut vectors, mut keyword_docs, mut tombstones) = (0, 0, 0);
    for collection in state.engine.open_collections()? {
        let sizes = collection.index().sizes()?;
        vectors += sizes.vectors;
        keyword_docs += sizes.keyword_docs;
        tombstones += sizes.tombstones;
    }
    let watching: Vec<_> = state.watching.iter().map(|w| w.read()).collect();
    let body = state.metrics.render(
        state.gate.depth(),
        state.engine.generator_cache_bytes(),
        &[
            ("vectors", vectors),
            ("keyword_docs", keyword_docs),
            ("tombstones", tombstones),
        ],
        &watching,
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}
