//! Collections: list (the ones the key may use), create, drop.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::State;
use super::auth;
use super::error::{ApiError, ErrorResponses};
use super::routes::blocking;
use crate::engine::CollectionInfo;
use crate::wire::{CollectionList, Dropped, NewCollection};

/// The collections the caller's key may use.
#[utoipa::path(get, tag = "routes", path = "/v1/collections", security(("api_key" = [])), responses((status = 200, body = CollectionList), ErrorResponses))]
pub async fn list_collections(
    state: web::Data<State>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let principal = auth::principal(&req);
    let engine = state.engine.clone();
    let all = blocking(&state, move || engine.collections()).await?;
    Ok(HttpResponse::Ok().json(CollectionList {
        collections: all
            .into_iter()
            .filter(|c| principal.may_use(&c.name))
            .collect(),
    }))
}

/// Creates a collection (admin keys whose collections include it).
#[utoipa::path(post, tag = "routes", path = "/v1/collections", request_body = NewCollection, security(("api_key" = [])), responses((status = 201, body = CollectionInfo), (status = 409, description = "It exists already.", body = crate::wire::ErrorBody), ErrorResponses))]
pub async fn create_collection(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<NewCollection>,
) -> Result<HttpResponse, ApiError> {
    let NewCollection { name, embedder } = body.into_inner();
    crate::types::check_collection_name(&name)?;
    let principal = auth::principal(&req);
    // It does not exist yet: only the key's collections are checked.
    auth::permit(&principal, std::slice::from_ref(&name))?;
    let models = state.engine.config().models.clone();
    let embedder = match embedder {
        // A name in the models folder, never a path a client picks.
        Some(model) => {
            crate::types::check_collection_name(&model).map_err(|_| {
                ApiError::bad_request(format!("embedder '{model}' is not a model directory name"))
            })?;
            Some(models.join(model))
        }
        None => None,
    };
    let engine = state.engine.clone();
    let scope = state.write_scope(&req);
    let created = blocking(&state, move || {
        engine.create_collection(&name, embedder.as_deref(), &scope)
    })
    .await?;
    Ok(HttpResponse::Created().json(created))
}

/// Drops a collection and everything in it (admin keys whose collections
/// include it).
#[utoipa::path(delete, tag = "routes", path = "/v1/collections/{name}", params(("name" = String, Path, description = "Collection name", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), security(("api_key" = [])), responses((status = 200, body = Dropped), ErrorResponses))]
pub async fn drop_collection(
    state: web::Data<State>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let name = auth::collection(&req);
    let engine = state.engine.clone();
    let scope = state.write_scope(&req);
    let chunks = {
        let name = name.clone();
        blocking(&state, move || engine.drop_collection(&name, &scope)).await?
    };
    Ok(HttpResponse::Ok().json(Dropped { name, chunks }))
}
