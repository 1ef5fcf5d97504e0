//! `GET /v1/status` (what the index holds) and `GET /v1/whoami` (what the
//! caller's key may do).

use std::path::PathBuf;

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::State;
use super::auth;
use super::error::{ApiError, ErrorResponses};
use super::routes::{InCollection, blocking};
use crate::engine::Status;

/// What the index holds and whether its stores agree (`lore status`).
#[utoipa::path(get, tag = "routes", path = "/v1/status", params(InCollection), security(("api_key" = [])), responses((status = 200, body = Status), ErrorResponses))]
pub async fn status(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let collection = auth::collection(&req);
    let mut status = blocking(&state, move || engine.status(&collection)).await?;
    if !state.is_local(&req) {
        // Where the server keeps its files is none of a client's business.
        status.index = file_name(&status.index);
        status.embedder.path = file_name(&status.embedder.path);
    }
    Ok(HttpResponse::Ok().json(status))
}

fn file_name(path: &std::path::Path) -> PathBuf {
    path.file_name().map_or_else(PathBuf::new, PathBuf::from)
}

/// `GET /v1/whoami` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// Key id (never the secret).
    id: String,
    /// What this key may do: `read`, `write` or `admin`.
    role: String,
    /// Collections it may use (`*`: all).
    collections: Vec<String>,
    /// Groups it belongs to.
    groups: Vec<String>,
    /// True when the server requires keys.
    keys_required: bool,
}

/// What the caller's key may do (the web page shows write actions only
/// to keys that may write).
#[utoipa::path(get, tag = "routes", path = "/v1/whoami", security(("api_key" = [])), responses((status = 200, body = WhoAmI), ErrorResponses))]
pub async fn whoami(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = auth::principal(&req);
    Ok(HttpResponse::Ok().json(WhoAmI {
        id: principal.id,
        role: principal.role.to_string(),
        collections: principal.collections,
        groups: principal.groups,
        keys_required: state.keys.required(),
    }))
}
