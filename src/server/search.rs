//! `POST /v1/search`.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::State;
use super::auth;
use super::error::{ApiError, ErrorResponses};
use super::routes::{InCollections, blocking};
use crate::search::SearchResponse;
use crate::wire::SearchBody;

/// Searches the index (the hits of `lore search --json`).
#[utoipa::path(post, tag = "routes", path = "/v1/search", params(InCollections), request_body = SearchBody, security(("api_key" = [])), responses((status = 200, body = SearchResponse), ErrorResponses))]
pub async fn search(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<SearchBody>,
) -> Result<HttpResponse, ApiError> {
    let mut request = body.into_inner().into_request(auth::collections(&req));
    request.readers = auth::principal(&req).readers();
    let engine = state.engine.clone();
    let response = blocking(&state, move || engine.search(&request)).await?;
    Ok(HttpResponse::Ok().json(response))
}
