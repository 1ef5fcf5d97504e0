//! OpenAI-compatible endpoints, so clients written for OpenAI work
//! unchanged: `POST /v1/chat/completions` (the last user message is the
//! question, answered with retrieval; sources are listed in the message and
//! in the extra `lore` field), `GET /v1/models`, `POST /v1/embeddings`.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::State;
use super::auth::{self, Scope};
use super::error::{ApiError, ErrorResponses};
use super::routes::{READ, blocking, endpoint};
use super::stream::{Event, finish, sse, start_ask};
use crate::answer::Citation;
use crate::engine::{AskRequest, AskResponse, AskTimings, Turn};
use crate::search::Hit;
use crate::types::DEFAULT_COLLECTION;
use crate::wire::AskBody;

/// Most inputs one embeddings request may carry.
const MAX_EMBED_INPUTS: usize = 256;
/// The model name lore answers as from the `default` collection.
const MODEL: &str = "lore";
/// Model names `lore:NAME` answer from the collection `NAME`.
const MODEL_PREFIX: &str = "lore:";

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The collection is the body's `model`, checked by the handlers.
    let none = Scope::None;
    cfg.service(endpoint("/v1/chat/completions", READ, none).on(Method::POST, chat))
        .service(endpoint("/v1/models", READ, none).on(Method::GET, models))
        .service(endpoint("/v1/embeddings", READ, none).on(Method::POST, embeddings));
}

/// The collection a model name picks: `lore` (or none) is `default`,
/// `lore:NAME` is `NAME`; anything else is not a model here (404).
/// Checked against the caller's key like any named collection.
fn collection_of(
    state: &State,
    req: &HttpRequest,
    model: Option<&str>,
) -> Result<String, ApiError> {
    let name = match model {
        None | Some(MODEL) => DEFAULT_COLLECTION.to_string(),
        Some(model) => match model.strip_prefix(MODEL_PREFIX) {
            Some(name) => name.to_string(),
            None => {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::NOT_FOUND,
                    "model_not_found",
                    format!(
                        "no model '{model}': use {MODEL} or {MODEL_PREFIX}COLLECTION (GET /v1/models)"
                    ),
                ));
            }
        },
    };
    crate::types::check_collection_name(&name)?;
    auth::authorize(state, &auth::principal(req), std::slice::from_ref(&name))?;
    Ok(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One model.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCard {
    id: String,
    object: String,
    created: u64,
    owned_by: String,
}

/// `GET /v1/models` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    object: String,
    data: Vec<ModelCard>,
}

fn card(id: String) -> ModelCard {
    ModelCard {
        id,
        object: "model".into(),
        created: 0,
        owned_by: "lore".into(),
    }
}

/// The models: `lore:NAME` for every collection the key may use (an
/// OpenAI client picks a collection by picking a model; `lore` is
/// `default`'s other name).
#[utoipa::path(get, path = "/v1/models", security(("api_key" = [])), responses((status = 200, body = ModelList), ErrorResponses))]
pub async fn models(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let principal = auth::principal(&req);
    let engine = state.engine.clone();
    let names = blocking(&state, move || engine.collection_names()).await?;
    let mut data = Vec::new();
    for name in names.into_iter().filter(|n| principal.may_use(n)) {
        if name == DEFAULT_COLLECTION {
            data.push(card(MODEL.into()));
        }
        data.push(card(format!("{MODEL_PREFIX}{name}")));
    }
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list".into(),
        data,
    }))
}

/// A chat message; `content` is a string or an array of `{type, text}`
/// parts.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    #[schema(schema_with = message_content)]
    content: Value,
}

/// The OpenAI request fields lore uses; others are accepted and ignored,
/// as OpenAI clients send many.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatBody {
    /// `lore` (the `default` collection) or `lore:NAME` (the collection
    /// NAME), as `GET /v1/models` lists them.
    #[serde(default)]
    #[schema(pattern = r"^lore(:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")]
    model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4096)]
    max_tokens: Option<usize>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4096)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    temperature: Option<f64>,
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    top_p: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
    /// `json_object` or `json_schema`: the message content is JSON that
    /// matches it (decoded under the constraint), with no sources list.
    #[serde(default)]
    response_format: Option<ResponseFormat>,
}

/// OpenAI structured outputs.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Plain text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// `response_format.json_schema`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// The schema's name.
    #[allow(dead_code)] // part of the OpenAI request; lore needs only the schema
    name: String,
    /// The JSON Schema (any object when absent).
    #[serde(default)]
    schema: Option<Value>,
    /// Accepted for compatibility; lore always enforces the schema.
    #[serde(default)]
    #[allow(dead_code)]
    strict: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

impl ResponseFormat {
    /// The schema the answer must match; `None` for text.
    fn schema(self) -> Option<Value> {
        match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(json!({"type": "object"})),
            ResponseFormat::JsonSchema { json_schema } => Some(
                json_schema
                    .schema
                    .unwrap_or_else(|| json!({"type": "object"})),
            ),
        }
    }
}

/// The assistant's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    role: String,
    /// The answer, then a `Sources:` list.
    content: String,
}

/// The one choice.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    index: usize,
    message: AssistantMessage,
    finish_reason: String,
}

/// Token counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

/// lore's evidence for the answer (an extra field OpenAI clients ignore).
#[derive(Debug, Serialize, ToSchema)]
pub struct LoreExtra {
    abstained: bool,
    /// The question as retrieved and answered, rewritten from the earlier
    /// messages (absent with a single user message).
    #[serde(skip_serializing_if = "Option::is_none")]
    standalone_question: Option<String>,
    citations: Vec<Citation>,
    retrieved: Vec<Hit>,
    timings: AskTimings,
}

impl LoreExtra {
    fn of(response: &AskResponse) -> Self {
        LoreExtra {
            abstained: response.abstained,
            standalone_question: response.standalone_question.clone(),
            citations: response.citations.clone(),
            retrieved: response.retrieved.clone(),
            timings: response.timings.clone(),
        }
    }
}

/// `POST /v1/chat/completions` body (without `stream`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    id: String,
    object: String,
    created: u64,
    model: String,
    choices: Vec<ChatChoice>,
    usage: Usage,
    lore: LoreExtra,
}

fn string() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::String)
}

/// OpenAPI schema of a message's content: a string or an array of parts.
fn message_content() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let part = ObjectBuilder::new().schema_type(Type::Object);
    OneOfBuilder::new()
        .item(string())
        .item(ArrayBuilder::new().items(part))
        .build()
        .into()
}

/// OpenAPI schema of embeddings input: a string or 1..=256 strings.
fn embedding_input() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
    OneOfBuilder::new()
        .item(string())
        .item(
            ArrayBuilder::new()
                .items(string())
                .min_items(Some(1))
                .max_items(Some(MAX_EMBED_INPUTS)),
        )
        .build()
        .into()
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

/// The user and assistant turns of `messages` (system and other roles are
/// not part of the conversation lore rewrites from).
fn history_of(messages: &[ChatMessage]) -> Vec<Turn> {
    messages
        .iter()
        .filter_map(|m| match m.role.as_str() {
            "user" => Some(Turn::user(text_of(&m.content))),
            "assistant" => Some(Turn::assistant(text_of(&m.content))),
            _ => None,
        })
        .collect()
}

/// OpenAI's `finish_reason`: `length` when the answer hit `max_tokens`.
fn finish_reason(response: &AskResponse) -> &'static str {
    if response.truncated { "length" } else { "stop" }
}

/// The `Sources:` list that follows the answer ("" when nothing is cited).
fn sources(response: &AskResponse) -> String {
    let lines: Vec<String> = response
        .citations
        .iter()
        .map(|c| format!("[{}] {}", c.n, c.path))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("\n\nSources:\n{}", lines.join("\n"))
}

/// What follows a streamed answer: the withdrawal of a draft that named
/// what no source holds, with the answer that replaces it (a stream
/// cannot take text back), then the `Sources:` list.
fn after_stream(response: &AskResponse) -> String {
    let withdrawn = response.unsourced.as_ref().map_or(String::new(), |u| {
        format!(
            "\n\n(Withdrawn: it named {}, which no source holds.) {}",
            u.names.join(", "),
            response.answer
        )
    });
    format!("{withdrawn}{}", sources(response))
}

/// Answers the last user message from the documents (OpenAI chat
/// completions, streaming or not).
#[utoipa::path(post, path = "/v1/chat/completions", request_body = ChatBody, security(("api_key" = [])), responses((status = 200, content((ChatCompletion = "application/json"), (super::stream::SseEvent = "text/event-stream"))), ErrorResponses))]
pub async fn chat(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<ChatBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let collection = collection_of(&state, &req, body.model.as_deref())?;
    let last = body
        .messages
        .iter()
        .rposition(|m| m.role == "user")
        .filter(|i| !text_of(&body.messages[*i].content).trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("messages need a non-empty user message"))?;
    let question = text_of(&body.messages[last].content);
    let history = history_of(&body.messages[..last]);
    let schema = body.response_format.and_then(ResponseFormat::schema);
    let structured = schema.is_some();
    let request = AskBody {
        question,
        k: None,
        filter: Default::default(),
        max_tokens: body.max_completion_tokens.or(body.max_tokens),
        temperature: body.temperature,
        top_p: body.top_p,
        seed: body.seed,
        stream: body.stream,
        schema,
        choices: None,
        regex: None,
        grammar: None,
        techniques: Default::default(),
        history,
        ..AskBody::default()
    }
    .into_request()?;
    request.validate(&state.engine.config().generator)?;
    let model = body.model.unwrap_or_else(|| MODEL.into());
    let request = AskRequest {
        readers: auth::principal(&req).readers(),
        collections: vec![collection],
        ..request
    };
    // Structured content is the JSON alone: a sources list would break it.
    let sources = move |r: &AskResponse| {
        if structured {
            String::new()
        } else {
            sources(r)
        }
    };
    let created = now();
    let id = format!("chatcmpl-{}", crate::types::random_id());
    let permits = state.generation_turn().await?;
    let events = start_ask(state.clone(), request, permits);
    if !body.stream {
        let response = finish(&state, events).await?;
        let timings = &response.timings;
        return Ok(HttpResponse::Ok().json(ChatCompletion {
            id,
            object: "chat.completion".into(),
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant".into(),
                    content: format!("{}{}", response.answer, sources(&response)),
                },
                finish_reason: finish_reason(&response).into(),
            }],
            usage: Usage {
                prompt_tokens: timings.prompt_tokens,
                completion_tokens: timings.gen_tokens,
                total_tokens: timings.prompt_tokens + timings.gen_tokens,
            },
            lore: LoreExtra::of(&response),
        }));
    }
    let chunk = move |delta: Value, finish: Value, extra: Option<LoreExtra>| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        if let Some(extra) = extra {
            c["lore"] = json!(extra);
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
            let list = after_stream(&r);
            let sources = if list.is_empty() {
                String::new()
            } else {
                chunk(json!({"content": list}), Value::Null, None)
            };
            let last = chunk(json!({}), json!(finish_reason(&r)), Some(LoreExtra::of(&r)));
            format!("{sources}{last}data: [DONE]\n\n")
        }
        Event::Failed(err) => format!("data: {}\n\ndata: [DONE]\n\n", json!(err.body())),
    }))
}

/// `POST /v1/embeddings` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingsBody {
    /// A string or an array of 1..=256 strings.
    #[schema(schema_with = embedding_input)]
    input: Value,
    /// `lore` or `lore:NAME`: the embedder of that collection.
    #[serde(default)]
    #[schema(pattern = r"^lore(:[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$")]
    model: Option<String>,
}

/// One embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct Embedding {
    object: String,
    index: usize,
    embedding: Vec<f32>,
}

/// Token counts of an embeddings request (whitespace words).
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// `POST /v1/embeddings` response.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    object: String,
    data: Vec<Embedding>,
    model: String,
    usage: EmbeddingUsage,
}

fn inputs_of(input: &Value) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::bad_request("input must be a string or an array of strings");
    let inputs: Vec<String> = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBED_INPUTS {
        return Err(ApiError::bad_request(format!(
            "input must hold 1..={MAX_EMBED_INPUTS} strings"
        )));
    }
    Ok(inputs)
}

/// Embeds texts with the embedder of the collection the model names
/// (`lore:NAME`; `lore` or none: `default`), as unit vectors.
#[utoipa::path(post, path = "/v1/embeddings", request_body = EmbeddingsBody, security(("api_key" = [])), responses((status = 200, body = EmbeddingList), ErrorResponses))]
pub async fn embeddings(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<EmbeddingsBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let collection = collection_of(&state, &req, body.model.as_deref())?;
    let inputs = inputs_of(&body.input)?;
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    let engine = state.engine.clone();
    let vectors = blocking(&state, move || {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        engine.collection(&collection)?.embedder()?.embed(&refs)
    })
    .await?;
    Ok(HttpResponse::Ok().json(EmbeddingList {
        object: "list".into(),
        data: vectors
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| Embedding {
                object: "embedding".into(),
                index,
                embedding,
            })
            .collect(),
        model: body.model.unwrap_or_else(|| MODEL.into()),
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(extra: Value) -> AskResponse {
        let mut value = json!({
            "answer": "I don't know based on the documents.", "abstained": true,
            "citations": [], "invalid_citations": [], "corrected_citations": [],
            "retrieved": [],
            "timings": {"retrieve_ms": 1.0, "prompt_tokens": 1, "prompt_ms": 1.0, "gen_tokens": 1, "gen_ms": 1.0},
        });
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_withdrawn_stream_ends_with_the_withdrawal_and_the_answer_that_replaces_it() {
        let withdrawn = response(json!({
            "abstained_because": "unsourced",
            "unsourced": {"draft": "Use `git mv` [1].", "names": ["mv"]},
        }));
        assert_eq!(
            after_stream(&withdrawn),
            "\n\n(Withdrawn: it named mv, which no source holds.) I don't know based on the documents."
        );
        assert_eq!(after_stream(&response(json!({}))), "");
    }
}
