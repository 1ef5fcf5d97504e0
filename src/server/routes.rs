//! lore's own endpoints: search, ask (JSON or SSE), documents, ingest,
//! health, metrics.

use std::convert::Infallible;
use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::auth::{self, Access, Scope};
use super::error::ApiError;
use super::openapi::ErrorResponses;
use super::{Permits, State};
use crate::engine::{
    AskRequest, AskResponse, CollectionInfo, ConstraintOptions, IngestReport, MAX_SAMPLES,
    NoProgress, Passage, RemoveReport, Status, Techniques, Turn,
};
use crate::generate::Sampling;
use crate::keys::Role;
use crate::search::{Filter, Mode, SearchRequest, SearchResponse};
use crate::types::{DocRecord, Metadata};

/// Largest `k` a search may ask for.
const MAX_SEARCH_K: usize = 1000;
/// Largest `k` an answer may be built from.
const MAX_ASK_K: usize = 50;
/// Tokens of the context window kept for instructions, sources and the
/// question: an answer may take the rest.
const PROMPT_ROOM: usize = 256;
/// Largest page of `GET /v1/documents`.
const MAX_PAGE: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use Scope::{Many, One, Path};
    cfg.service(resource("/healthz", "GET", OPEN, Scope::None).route(web::get().to(healthz)))
        .service(resource("/readyz", "GET", OPEN, Scope::None).route(web::get().to(readyz)))
        .service(resource("/metrics", "GET", OPEN, Scope::None).route(web::get().to(metrics)))
        .service(
            resource("/openapi.json", "GET", OPEN, Scope::None).route(web::get().to(openapi_json)),
        )
        .service(resource("/v1/search", "POST", READ, Many).route(web::post().to(search)))
        .service(resource("/v1/ask", "POST", READ, Many).route(web::post().to(ask)))
        .service(resource("/v1/status", "GET", READ, One).route(web::get().to(status)))
        .service(resource("/v1/whoami", "GET", READ, Scope::None).route(web::get().to(whoami)))
        .service(resource("/v1/chunks/{id}", "GET", READ, One).route(web::get().to(get_chunk)))
        .service(
            resource("/v1/documents", "GET, POST", READ_WRITE, One)
                .route(web::post().to(add_document))
                .route(web::get().to(list_documents)),
        )
        .service(
            resource("/v1/documents/{id}", "GET, DELETE", READ_WRITE, One)
                .route(web::get().to(get_document))
                .route(web::delete().to(delete_document)),
        )
        .service(resource("/v1/ingest", "POST", WRITE, One).route(web::post().to(ingest)))
        .service(resource("/v1/remove", "POST", WRITE, One).route(web::post().to(remove)))
        .service(
            resource("/v1/collections", "GET, POST", LIST_CREATE, Scope::None)
                .route(web::get().to(list_collections))
                .route(web::post().to(create_collection)),
        )
        .service(
            resource("/v1/collections/{name}", "DELETE", ADMIN, Path)
                .route(web::delete().to(drop_collection)),
        );
}

/// No key needed.
pub const OPEN: Access = Access::Open;
/// A read (or write) key.
pub const READ: Access = Access::Key(Role::Read);
/// A write key.
pub const WRITE: Access = Access::Key(Role::Write);
/// A read key to read, a write key to change.
pub const READ_WRITE: Access = Access::ReadWrite;
/// An admin key.
pub const ADMIN: Access = Access::Key(Role::Admin);
/// A read key to list, an admin key to create.
pub const LIST_CREATE: Access = Access::ReadAdmin;

/// A route at `path` that needs `access` for the collections of `scope`
/// (checked after routing, so on the route that matched), whose other
/// methods get 405 with `Allow: allowed`.
pub fn resource(
    path: &str,
    allowed: &'static str,
    access: Access,
    scope: Scope,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::resource(path)
        .default_service(web::to(move |req: HttpRequest| async move {
            let mut err = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{} {} is not supported (allowed: {allowed})",
                    req.method(),
                    req.path()
                ),
            );
            err.allow = Some(allowed);
            Err::<HttpResponse, _>(err)
        }))
        .wrap(from_fn(move |req, next| {
            auth::check(access, scope, allowed, req, next)
        }))
}

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| {
            use actix_web::error::JsonPayloadError as E;
            match err {
                E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body too large: {err}"),
                ),
                E::Payload(err) => payload_error(&err),
                E::ContentType => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "the body must be JSON (Content-Type: application/json)",
                ),
                _ => ApiError::bad_request(format!("bad JSON body: {err}")),
            }
            .into()
        })
}

/// A body that could not be read: 408 when the client was too slow.
fn payload_error(err: &actix_web::error::PayloadError) -> ApiError {
    use actix_web::error::PayloadError;
    match err {
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", io.to_string())
        }
        other => ApiError::bad_request(format!("cannot read body: {other}")),
    }
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _| ApiError::bad_request(format!("bad query string: {err}")).into())
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _| ApiError::bad_request(format!("bad path: {err}")).into())
}

pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no endpoint {} {}", req.method(), req.path()),
    ))
}

/// Runs blocking engine work off the reactor, within the request timeout,
/// at most one task per core at a time (more would only fight over the
/// cores with each other and with a running generation).
pub async fn blocking<T: Send + 'static>(
    state: &State,
    work: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let run = async {
        let _turn = state.cpu.acquire().await;
        web::block(work).await
    };
    match tokio::time::timeout(state.timeout, run).await {
        Ok(result) => Ok(result??),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the server's request timeout",
        )),
    }
}

/// `?collection=NAME`: the collection a request works on (the one
/// convention of every endpoint that reads or changes documents).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the parameter for OpenAPI; read by `auth::check`
pub struct InCollection {
    /// The collection (default `default`).
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    collection: Option<String>,
}

/// `?collection=A,B`: the collections a search or an answer draws on.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // describes the parameter for OpenAPI; read by `auth::check`
pub struct InCollections {
    /// One or more collections, comma-separated (at most 16; default
    /// `default`); hits are ranked across them.
    #[param(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(,[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,15}$"
    )]
    collection: Option<String>,
}

/// `GET /healthz` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
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
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Ready), (status = 503, description = "Not ready.", body = super::error::ErrorBody)))]
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

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/openapi.json", responses((status = 200, description = "The OpenAPI document.", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.get_or_init(super::openapi::document).as_str())
}

/// Prometheus metrics: requests and latency per route, tokens generated,
/// generation queue depth, index sizes, the `--watch` lag.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain", body = String), (status = 503, description = "The index could not be read.", body = super::error::ErrorBody)))]
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

/// `POST /v1/search` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    /// The query text.
    query: String,
    /// Hits wanted (1..=1000).
    #[serde(default = "default_search_k")]
    #[schema(default = 10, minimum = 1, maximum = 1000)]
    k: usize,
    /// Retriever.
    #[serde(default)]
    mode: Mode,
    /// Only chunks of documents matching this.
    #[serde(default)]
    filter: Filter,
    /// At most one hit per document.
    #[serde(default)]
    collapse: bool,
}

fn default_search_k() -> usize {
    10
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ApiError> {
    if value < min || value > max {
        return Err(ApiError::bad_request(format!(
            "{name} = {value} is out of range ({min}..={max})"
        )));
    }
    Ok(())
}

/// Searches the index (the hits of `lore search --json`).
#[utoipa::path(post, path = "/v1/search", params(InCollections), request_body = SearchBody, security(("api_key" = [])), responses((status = 200, body = SearchResponse), ErrorResponses))]
pub async fn search(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<SearchBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_range("k", body.k, 1, MAX_SEARCH_K)?;
    let request = SearchRequest {
        query: body.query,
        k: body.k,
        mode: body.mode,
        filter: body.filter,
        collapse: body.collapse,
        collections: auth::collections(&req),
        readers: auth::principal(&req).readers(),
        coverage: false,
    };
    let engine = state.engine.clone();
    let response = blocking(&state, move || engine.search(&request)).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// `POST /v1/ask` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    /// The question.
    pub question: String,
    /// Chunks to answer from (1..=50, default 3).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 50)]
    pub k: Option<usize>,
    /// Only documents matching this.
    #[serde(default)]
    pub filter: Filter,
    /// Most tokens to generate (default 256); at most the context window
    /// (`generator.context_tokens`, 2048 by default) less 256 for the prompt.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_tokens: Option<usize>,
    /// 0 = greedy (default), up to 2.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// Nucleus mass kept (above 0, up to 1; default 0.9).
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Random seed: same seed and input, same output.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stream Server-Sent Events: `token` events `{text}`, then one `done`
    /// event with the whole answer object.
    #[serde(default)]
    pub stream: bool,
    /// The answer is JSON valid against this JSON Schema; the string
    /// `"cited"` selects the built-in `{answer, citations}` schema.
    #[serde(default)]
    pub schema: Option<Value>,
    /// The answer is exactly one of these strings.
    #[serde(default)]
    pub choices: Option<Vec<String>>,
    /// The whole answer matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// The answer follows this Lark grammar (llguidance's dialect).
    #[serde(default)]
    pub grammar: Option<String>,
    /// Prompting techniques: chain of thought, self-consistency samples,
    /// reflection, few-shot examples, the expert prompt.
    #[serde(default)]
    pub techniques: Techniques,
    /// Earlier turns of the conversation, oldest first: the question is
    /// rewritten from them into a standalone one (reported as
    /// `standalone_question`) before retrieval. Only the newest turns that
    /// fit `generator.history_tokens` are used.
    #[serde(default)]
    pub history: Vec<Turn>,
}

impl AskBody {
    /// The engine request, after range checks (answers of at most
    /// `max_tokens`).
    pub fn into_request(self, max_tokens: usize) -> Result<AskRequest, ApiError> {
        let defaults = Sampling::default();
        let sampling = Sampling {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.unwrap_or(defaults.seed),
            ..defaults
        };
        check_range("max_tokens", sampling.max_tokens, 1, max_tokens)?;
        check_range("temperature", sampling.temperature, 0.0, 2.0)?;
        check_range("top_p", sampling.top_p, 0.0, 1.0)?;
        if sampling.top_p <= 0.0 {
            return Err(ApiError::bad_request("top_p must be above 0"));
        }
        let k = self.k.unwrap_or(AskRequest::DEFAULT_K);
        check_range("k", k, 1, MAX_ASK_K)?;
        if self.question.trim().is_empty() {
            return Err(ApiError::bad_request("question is empty"));
        }
        check_range(
            "techniques.samples",
            self.techniques.samples,
            0,
            MAX_SAMPLES,
        )?;
        let mut request = AskRequest {
            k,
            filter: self.filter,
            sampling,
            techniques: self.techniques,
            history: self.history,
            ..AskRequest::new(self.question)
        };
        let constraint = ConstraintOptions {
            schema: self.schema,
            choices: self.choices,
            regex: self.regex,
            grammar: self.grammar,
        };
        constraint.apply(&mut request)?;
        Ok(request)
    }
}

/// The longest answer the configured context window leaves room for.
pub fn max_answer_tokens(state: &State) -> usize {
    let context = state.engine.config().generator.context_tokens;
    context.saturating_sub(PROMPT_ROOM).max(1)
}

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

fn sse_event(name: &str, data: &impl Serialize) -> String {
    let data = serde_json::to_string(data).unwrap_or_default();
    format!("event: {name}\ndata: {data}\n\n")
}

/// Answers a question from the documents, citing them as [n] (the object
/// of `lore ask --json`, or SSE with `stream: true`).
#[utoipa::path(post, path = "/v1/ask", params(InCollections), request_body = AskBody, security(("api_key" = [])), responses((status = 200, content((AskResponse = "application/json"), (SseEvent = "text/event-stream"))), ErrorResponses))]
pub async fn ask(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Json<AskBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let stream = body.stream;
    let mut request = body.into_request(max_answer_tokens(&state))?;
    request.readers = auth::principal(&req).readers();
    request.collections = auth::collections(&req);
    let permits = state.gate.enter().await?;
    let events = start_ask(state.clone(), request, permits);
    if !stream {
        return Ok(HttpResponse::Ok().json(finish(&state, events).await?));
    }
    Ok(sse(events, |event| match event {
        Event::Token(text) => sse_event("token", &json!({ "text": text })),
        Event::Done(response) => sse_event("done", &response),
        Event::Failed(err) => sse_event("error", &err.body()),
    }))
}

/// `POST /v1/documents` JSON body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentBody {
    /// Relative name of the document; its extension picks the loader
    /// (`.md`, `.html`, `.txt`, code). The same path again replaces it.
    path: String,
    /// The document's content.
    text: String,
    /// Metadata for filters.
    #[serde(default)]
    #[schema(value_type = Object)]
    metadata: Metadata,
}

/// `POST /v1/documents` multipart form.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // describes the form for OpenAPI; read by `read_multipart`
pub struct UploadForm {
    /// The file; its filename names the document unless `path` is given.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// Name of the document.
    path: Option<String>,
    /// Metadata as a JSON object.
    metadata: Option<String>,
}

/// Documents written by `POST /v1/documents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentsAdded {
    /// The documents the upload became (a corpus file may hold many).
    documents: Vec<DocRecord>,
}

/// Adds or replaces one document (JSON or a multipart upload).
#[utoipa::path(post, path = "/v1/documents", params(InCollection), request_body(content((DocumentBody = "application/json"), (UploadForm = "multipart/form-data"))), security(("api_key" = [])), responses((status = 201, body = DocumentsAdded), ErrorResponses))]
pub async fn add_document(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let _turn = state.uploads.acquire().await;
    let (path, bytes, metadata) = if content_type.starts_with("multipart/form-data") {
        read_multipart(
            actix_multipart::Multipart::new(req.headers(), payload),
            state.body_limit,
        )
        .await?
    } else if !content_type.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a JSON body (application/json) or a multipart/form-data upload",
        ));
    } else {
        let limit = state.body_limit;
        let body = payload
            .to_bytes_limited(limit)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "request body too large",
                )
            })?
            .map_err(|e| match e.as_error::<actix_web::error::PayloadError>() {
                Some(err) => payload_error(err),
                None => ApiError::bad_request(format!("cannot read body: {e}")),
            })?;
        let doc: DocumentBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
        (doc.path, doc.text.into_bytes(), doc.metadata)
    };
    let engine = state.engine.clone();
    let collection = auth::collection(&req);
    let scope = state.write_scope(&req);
    let docs = blocking(&state, move || {
        engine.add_document(&collection, &path, &bytes, &metadata, &scope)
    })
    .await?;
    Ok(HttpResponse::Created().json(DocumentsAdded { documents: docs }))
}

/// A multipart upload: a `file` part (its filename names the document) and
/// optional `path` and `metadata` (JSON object) parts.
async fn read_multipart(
    mut form: actix_multipart::Multipart,
    limit: usize,
) -> Result<(String, Vec<u8>, Metadata), ApiError> {
    let (mut file, mut name, mut path, mut metadata) = (None, None, None, Metadata::new());
    let mut total = 0;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(multipart_error)?;
        let field_name = field.name().unwrap_or_default().to_string();
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(multipart_error)?;
            total += chunk.len();
            if total > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("upload larger than {limit} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match field_name.as_str() {
            "file" => {
                name = filename;
                file = Some(bytes);
            }
            "path" => path = Some(text()),
            "metadata" => {
                metadata = serde_json::from_slice(&bytes).map_err(|e| {
                    ApiError::bad_request(format!("metadata must be a JSON object: {e}"))
                })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unexpected multipart field '{other}' (file, path, metadata)"
                )));
            }
        }
    }
    let file = file.ok_or_else(|| ApiError::bad_request("multipart upload needs a 'file' part"))?;
    let path = path
        .or(name)
        .ok_or_else(|| ApiError::bad_request("name the document: a filename or a 'path' part"))?;
    Ok((path, file, metadata))
}

fn multipart_error(err: actix_multipart::MultipartError) -> ApiError {
    match err {
        actix_multipart::MultipartError::Payload(err) => payload_error(&err),
        other => ApiError::bad_request(format!("bad multipart: {other}")),
    }
}

/// A page of `GET /v1/documents`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Documents to skip.
    #[serde(default)]
    offset: usize,
    /// Documents to return (1..=1000).
    #[serde(default = "default_page")]
    #[param(default = 100, minimum = 1, maximum = 1000)]
    limit: usize,
    /// Only documents whose path contains this (any case).
    #[serde(default)]
    path: String,
    /// The collection (`?collection=NAME`; read and checked by the auth
    /// middleware, which is why the handler ignores it).
    #[serde(default, rename = "collection")]
    #[param(ignore)]
    _collection: Option<serde::de::IgnoredAny>,
}

/// `GET /v1/documents` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    /// Documents in id order.
    documents: Vec<DocRecord>,
    /// Documents matching (all of them without a path filter).
    total: usize,
    /// As requested.
    offset: usize,
    /// As requested.
    limit: usize,
}

fn default_page() -> usize {
    100
}

/// Lists documents, paged, in id order, optionally only those whose path
/// contains a string.
#[utoipa::path(get, path = "/v1/documents", params(Page, InCollection), security(("api_key" = [])), responses((status = 200, body = DocumentList), ErrorResponses))]
pub async fn list_documents(
    state: web::Data<State>,
    req: HttpRequest,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let Page {
        offset,
        limit,
        path,
        ..
    } = page.into_inner();
    check_range("limit", limit, 1, MAX_PAGE)?;
    if path.len() > crate::search::MAX_QUERY_BYTES {
        return Err(ApiError::bad_request("path filter too long"));
    }
    let readers = auth::principal(&req).readers();
    let engine = state.engine.clone();
    let collection = auth::collection(&req);
    let (documents, total) = blocking(&state, move || {
        engine.documents(&collection, &readers, &path, offset, limit)
    })
    .await?;
    Ok(HttpResponse::Ok().json(DocumentList {
        documents,
        total,
        offset,
        limit,
    }))
}

/// One document by id.
#[utoipa::path(get, path = "/v1/documents/{id}", params(("id" = String, Path, description = "Document id"), InCollection), security(("api_key" = [])), responses((status = 200, body = DocRecord), ErrorResponses))]
pub async fn get_document(
    state: web::Data<State>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let id = id.into_inner();
    let readers = auth::principal(&req).readers();
    let collection = auth::collection(&req);
    let doc = blocking(&state, move || engine.document(&collection, &readers, &id)).await?;
    Ok(HttpResponse::Ok().json(doc))
}

/// A chunk (a cited passage) with the text either side of it.
#[utoipa::path(get, path = "/v1/chunks/{id}", params(("id" = String, Path, description = "Chunk id"), InCollection), security(("api_key" = [])), responses((status = 200, body = Passage), ErrorResponses))]
pub async fn get_chunk(
    state: web::Data<State>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let id = id.into_inner();
    let readers = auth::principal(&req).readers();
    let collection = auth::collection(&req);
    let passage = blocking(&state, move || engine.passage(&collection, &readers, &id)).await?;
    Ok(HttpResponse::Ok().json(passage))
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
#[utoipa::path(get, path = "/v1/whoami", security(("api_key" = [])), responses((status = 200, body = WhoAmI), ErrorResponses))]
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

/// Removes a document from every store.
#[utoipa::path(delete, path = "/v1/documents/{id}", params(("id" = String, Path, description = "Document id"), InCollection), security(("api_key" = [])), responses((status = 200, body = RemoveReport), ErrorResponses))]
pub async fn delete_document(
    state: web::Data<State>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let id = id.into_inner();
    let collection = auth::collection(&req);
    let scope = state.write_scope(&req);
    let report = blocking(&state, move || {
        engine.remove_document(&collection, &crate::types::DocId(id), &scope)
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `POST /v1/ingest` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    /// A file or folder on the server, under a configured ingest root.
    #[schema(value_type = String)]
    path: PathBuf,
}

/// Ingests a file or folder on the server (incremental, like `lore ingest`).
#[utoipa::path(post, path = "/v1/ingest", params(InCollection), request_body = IngestBody, security(("api_key" = [])), responses((status = 200, body = IngestReport), ErrorResponses))]
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

/// `POST /v1/remove` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    /// A document id, or an ingested file or folder on the server (under a
    /// configured ingest root).
    target: String,
}

/// Removes a file, a folder or a document (like `lore remove`).
#[utoipa::path(post, path = "/v1/remove", params(InCollection), request_body = RemoveBody, security(("api_key" = [])), responses((status = 200, body = RemoveReport), ErrorResponses))]
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

/// What the index holds and whether its stores agree (`lore status`).
#[utoipa::path(get, path = "/v1/status", params(InCollection), security(("api_key" = [])), responses((status = 200, body = Status), ErrorResponses))]
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

/// `GET /v1/collections` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// The collections this key may use, `default` first.
    collections: Vec<CollectionInfo>,
}

/// The collections the caller's key may use.
#[utoipa::path(get, path = "/v1/collections", security(("api_key" = [])), responses((status = 200, body = CollectionList), ErrorResponses))]
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

/// `POST /v1/collections` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// Letters, digits, `-`, `_`, `.`; starts with a letter or digit.
    name: String,
    /// The embedder: the name of a model directory in the server's models
    /// folder (default: the configured embedder).
    #[serde(default)]
    embedder: Option<String>,
}

/// Creates a collection (admin keys whose collections include it).
#[utoipa::path(post, path = "/v1/collections", request_body = NewCollection, security(("api_key" = [])), responses((status = 201, body = CollectionInfo), (status = 409, description = "It exists already.", body = super::error::ErrorBody), ErrorResponses))]
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
#[utoipa::path(delete, path = "/v1/collections/{name}", params(("name" = String, Path, description = "Collection name", pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")), security(("api_key" = [])), responses((status = 200, body = Dropped), ErrorResponses))]
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

/// `DELETE /v1/collections/{name}` body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dropped {
    /// The collection dropped.
    name: String,
    /// Chunks it held.
    chunks: u64,
}
