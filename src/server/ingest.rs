//! `POST /v1/ingest` and `POST /v1/remove`: files and folders on the
//! server's side, under its ingest roots.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::State;
use super::auth;
use super::error::{ApiError, ErrorResponses};
use super::routes::{InCollection, blocking};
use crate::engine::{IngestReport, NoProgress, RemoveReport};
use crate::wire::{IngestBody, RemoveBody};

/// Ingests a file or folder on the server (incremental, like `lore ingest`).
#[utoipa::path(post, tag = "routes", path = "/v1/ingest", params(InCollection), request_body = IngestBody, security(("api_key" = [])), responses((status = 200, body = IngestReport), ErrorResponses))]
pub async fn ingest(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<IngestBody>,
) -> Result<HttpResponse, ApiError> {
    let requested = body.into_inner().path;
    let path = state
        .resolve(&req, &requested)?
        .ok_or_else(|| ApiError::bad_request(format!("{} does not exist", requested.display())))?;
    let engine = state.engine.clone();
    let collection = auth::collection(&req);
    let scope = state.write_scope(&req);
    let report = blocking(&state, move || {
        engine.ingest(&collection, &[path], &scope, &NoProgress)
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Removes a file, a folder or a document (like `lore remove`).
#[utoipa::path(post, tag = "routes", path = "/v1/remove", params(InCollection), request_body = RemoveBody, security(("api_key" = [])), responses((status = 200, body = RemoveReport), ErrorResponses))]
pub async fn remove(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<RemoveBody>,
) -> Result<HttpResponse, ApiError> {
    let target = body.into_inner().target;
    // The engine resolves the target once and checks the roots on that.
    let engine = state.engine.clone();
    let collection = auth::collection(&req);
    let scope = state.write_scope(&req);
    let report = blocking(&state, move || engine.remove(&collection, &target, &scope)).await?;
    Ok(HttpResponse::Ok().json(report))
}
