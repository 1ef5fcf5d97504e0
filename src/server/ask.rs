//! `POST /v1/ask`: an answer as one JSON object or as Server-Sent Events.

use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};

use super::State;
use super::auth;
use super::error::{ApiError, ErrorResponses};
use super::routes::InCollections;
use super::stream::{Event, finish, sse, sse_event, start_ask};
use crate::engine::AskResponse;
use crate::wire::{AskBody, TokenEvent};

/// Answers a question from the documents, citing them as [n] (the object
/// of `lore ask --json`, or SSE with `stream: true`).
#[utoipa::path(post, tag = "routes", path = "/v1/ask", params(InCollections), request_body = AskBody, security(("api_key" = [])), responses((status = 200, content((AskResponse = "application/json"), (super::stream::SseEvent = "text/event-stream"))), ErrorResponses))]
pub async fn ask(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<AskBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let stream = body.stream;
    let mut request = body.into_request()?;
    // Refused before it queues: a bad request never waits for a turn.
    request.validate(&state.engine.config().generator)?;
    request.readers = auth::principal(&req).readers();
    request.collections = auth::collections(&req);
    let permits = state.generation_turn().await?;
    let events = start_ask(state.clone(), request, permits);
    if !stream {
        return Ok(HttpResponse::Ok().json(finish(&state, events).await?));
    }
    Ok(sse(events, |event| match event {
        Event::Token(text) => sse_event("token", &TokenEvent { text }),
        Event::Done(response) => sse_event("done", &response),
        Event::Failed(err) => sse_event("error", &err.body()),
    }))
}
