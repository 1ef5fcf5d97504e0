//! OpenAI-compatible endpoints, so clients written for OpenAI work
//! unchanged: `POST /v1/chat/completions` (the last user message is the
//! question, answered with retrieval; sources are listed in the message and
//! in the extra `lore` field), `GET /v1/models`, `POST /v1/embeddings`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::error::ApiError;
use super::routes::{AskBody, Event, blocking, finish, sse, start_ask};
use crate::engine::AskResponse;

/// Most inputs one embeddings request may carry.
const MAX_EMBED_INPUTS: usize = 256;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat))
        .route("/v1/models", web::get().to(models))
        .route("/v1/embeddings", web::post().to(embeddings));
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The model name lore answers as.
const MODEL: &str = "lore";

async fn models(state: web::Data<State>) -> HttpResponse {
    let embedder = state.engine.config().embedder_dir();
    let embedder = embedder
        .file_name()
        .map_or_else(|| "embedder".into(), |n| n.to_string_lossy().into_owned());
    HttpResponse::Ok().json(json!({
        "object": "list",
        "data": [
            {"id": MODEL, "object": "model", "created": 0, "owned_by": "lore"},
            {"id": embedder, "object": "model", "created": 0, "owned_by": "lore"},
        ]
    }))
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Value,
}

/// The OpenAI request fields lore uses; others are accepted and ignored,
/// as OpenAI clients send many.
#[derive(Debug, Deserialize)]
struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
}

/// Text of a message: a string, or the text parts of a content array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The answer with its sources listed, as the assistant message says it.
fn with_sources(response: &AskResponse) -> String {
    if response.citations.is_empty() {
        return response.answer.clone();
    }
    let sources: Vec<String> = response
        .citations
        .iter()
        .map(|c| format!("[{}] {}", c.n, c.path))
        .collect();
    format!("{}\n\nSources:\n{}", response.answer, sources.join("\n"))
}

fn sources_suffix(response: &AskResponse) -> String {
    with_sources(response)[response.answer.len()..].to_string()
}

fn lore_extra(response: &AskResponse) -> Value {
    json!({
        "abstained": response.abstained,
        "citations": response.citations,
        "retrieved": response.retrieved,
        "timings": response.timings,
    })
}

async fn chat(
    state: web::Data<State>,
    body: web::Json<ChatBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let question = body
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| text_of(&m.content))
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("messages need a non-empty user message"))?;
    let request = AskBody {
        question,
        k: None,
        filter: Default::default(),
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        temperature: body.temperature,
        top_p: body.top_p,
        seed: body.seed,
        stream: body.stream,
    }
    .into_request()?;
    let model = body.model.unwrap_or_else(|| MODEL.into());
    let id = format!(
        "chatcmpl-{}",
        crate::types::content_hash(
            format!("{}{:?}", now(), std::thread::current().id()).as_bytes()
        )
        .chars()
        .take(24)
        .collect::<String>()
    );
    let created = now();
    let permits = state.gate.enter().await?;
    let events = start_ask(state.clone(), request, permits);
    if !body.stream {
        let response = tokio::time::timeout(state.timeout, finish(events))
            .await
            .map_err(|_| {
                ApiError::new(
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "generation timed out",
                )
            })??;
        let usage = json!({
            "prompt_tokens": response.timings.prompt_tokens,
            "completion_tokens": response.timings.gen_tokens,
            "total_tokens": response.timings.prompt_tokens + response.timings.gen_tokens,
        });
        return Ok(HttpResponse::Ok().json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": with_sources(&response)},
                "finish_reason": "stop",
            }],
            "usage": usage,
            "lore": lore_extra(&response),
        })));
    }
    let chunk = move |delta: Value, finish: Value, extra: Option<Value>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some(extra) = extra {
            c["lore"] = extra;
        }
        format!("data: {c}\n\n")
    };
    let mut first = true;
    Ok(sse(events, move |event| match event {
        Event::Token(text) => {
            let delta = if std::mem::take(&mut first) {
                json!({"role": "assistant", "content": text})
            } else {
                json!({"content": text})
            };
            chunk(delta, Value::Null, None)
        }
        Event::Done(r) => {
            let sources = chunk(json!({"content": sources_suffix(&r)}), Value::Null, None);
            let last = chunk(json!({}), json!("stop"), Some(lore_extra(&r)));
            format!("{sources}{last}data: [DONE]\n\n")
        }
        Event::Failed(err) => format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"error": {"code": err.code, "message": err.message}})
        ),
    }))
}

#[derive(Debug, Deserialize)]
struct EmbeddingsBody {
    input: Value,
    #[serde(default)]
    model: Option<String>,
}

async fn embeddings(
    state: web::Data<State>,
    body: web::Json<EmbeddingsBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let inputs: Vec<String> = match &body.input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad_request("input must be a string or an array of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad_request(
                "input must be a string or an array of strings",
            ));
        }
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::bad_request(format!(
            "input must hold 1..={MAX_EMBED_INPUTS} strings"
        )));
    }
    let engine = state.engine.clone();
    let texts = inputs.clone();
    let vectors = blocking(&state, move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        engine.embedder()?.embed(&refs)
    })
    .await?;
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "object": "list",
        "data": data,
        "model": body.model.unwrap_or_else(|| "lore-embedder".into()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}
