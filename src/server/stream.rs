//! Generations as events: a running answer reports its tokens and its end
//! on a channel, and Server-Sent Events carry them to the client (`/v1/ask`
//! and the OpenAI-compatible chat both stream through here).

use std::convert::Infallible;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::error::ApiError;
use super::{Permits, State};
use crate::engine::{AskRequest, AskResponse};

/// One Server-Sent Event as the OpenAPI document describes it: `/v1/ask`
/// sends `token` events (`{"text"}`), then one `done` event (the answer
/// object) or an `error` event; chat completions send unnamed `data:`
/// chunks ending with `[DONE]`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // describes the event stream for OpenAPI
pub struct SseEvent {
    /// Event name (absent on chat completion chunks).
    event: Option<String>,
    /// JSON text of the event.
    data: String,
}

/// What a running generation reports.
pub enum Event {
    Token(String),
    Done(Box<AskResponse>),
    Failed(ApiError),
}

/// Starts `request` on a blocking thread; its events arrive on the
/// receiver. Dropping the receiver (a client that went away) stops the
/// generation at the next token.
pub fn start_ask(
    state: web::Data<State>,
    request: AskRequest,
    permits: Permits,
) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(256);
    actix_web::rt::task::spawn_blocking(move || {
        // "" asks whether anyone still listens: nothing is sent for it.
        let mut on_text = |text: &str| {
            if text.is_empty() {
                return !tx.is_closed();
            }
            tx.blocking_send(Event::Token(text.to_string())).is_ok()
        };
        let event = match state.engine.ask(&request, &mut on_text) {
            Ok(response) => {
                state.metrics.record_answer(&response);
                Event::Done(Box::new(response))
            }
            Err(err) => Event::Failed(err.into()),
        };
        // The turn is free before the client hears the end: one that asks
        // again at once is not told "busy".
        drop(permits);
        // A client that went away no longer listens; nothing to report.
        let _ = tx.blocking_send(event);
    });
    rx
}

/// Waits, within the request timeout, for the final event of a generation.
pub async fn finish(state: &State, events: mpsc::Receiver<Event>) -> Result<AskResponse, ApiError> {
    tokio::time::timeout(state.timeout, last_event(events))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "generation timed out",
            )
        })?
}

async fn last_event(mut events: mpsc::Receiver<Event>) -> Result<AskResponse, ApiError> {
    while let Some(event) = events.recv().await {
        match event {
            Event::Token(_) => {}
            Event::Done(response) => return Ok(*response),
            Event::Failed(err) => return Err(err),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the generation stopped without an answer",
    ))
}

/// An SSE response whose events `render` turns into text.
pub fn sse(
    events: mpsc::Receiver<Event>,
    mut render: impl FnMut(Event) -> String + 'static,
) -> HttpResponse {
    let stream = futures_util::stream::unfold(events, |mut events| async move {
        events.recv().await.map(|event| (event, events))
    })
    .map(move |event| Ok::<_, Infallible>(Bytes::from(render(event))));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(stream)
}

/// One named event.
pub fn sse_event(name: &str, data: &impl Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_default();
    format!("event: {name}\ndata: {data}\n\n")
}
