//! lore's own endpoints: search, ask (JSON or SSE), documents, ingest,
//! health, metrics.

use std::convert::Infallible;
use std::path::PathBuf;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::{Permits, State};
use crate::engine::{AskRequest, AskResponse, NoProgress};
use crate::generate::Sampling;
use crate::search::{Filter, SearchRequest};
use crate::types::Metadata;

/// Largest `k` a search may ask for.
const MAX_SEARCH_K: usize = 1000;
/// Largest `k` an answer may be built from.
const MAX_ASK_K: usize = 50;
/// Most tokens one answer may generate.
const MAX_TOKENS: usize = 4096;
/// Largest page of `GET /v1/documents`.
const MAX_PAGE: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/v1/search", web::post().to(search))
        .route("/v1/ask", web::post().to(ask))
        .route("/v1/documents", web::post().to(add_document))
        .route("/v1/documents", web::get().to(list_documents))
        .route("/v1/documents/{id}", web::get().to(get_document))
        .route("/v1/documents/{id}", web::delete().to(delete_document))
        .route("/v1/ingest", web::post().to(ingest));
}

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| ApiError::bad_request(format!("bad JSON body: {err}")).into())
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

/// Runs blocking engine work off the reactor, within the request timeout.
pub async fn blocking<T: Send + 'static>(
    state: &State,
    work: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.timeout, web::block(work)).await {
        Ok(result) => Ok(result??),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took longer than the server's request timeout",
        )),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn readyz(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let status = blocking(&state, move || engine.status()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "documents": status.documents,
        "chunks": status.chunks,
        "consistent": status.consistent,
    })))
}

async fn metrics(state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let status = blocking(&state, move || engine.status()).await?;
    let body = state.metrics.render(
        state.gate.depth(),
        &[
            ("documents", status.documents),
            ("chunks", status.chunks),
            ("vectors", status.vectors),
            ("tombstones", status.tombstones),
            ("bytes", status.index_bytes),
        ],
    );
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body))
}

/// `POST /v1/search` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    #[serde(default = "default_search_k")]
    k: usize,
    #[serde(default)]
    mode: crate::search::Mode,
    #[serde(default)]
    filter: Filter,
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

async fn search(
    state: web::Data<State>,
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
    };
    let engine = state.engine.clone();
    let response = blocking(&state, move || engine.search(&request)).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// `POST /v1/ask` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskBody {
    pub question: String,
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
}

impl AskBody {
    /// The engine request, after range checks.
    pub fn into_request(self) -> Result<AskRequest, ApiError> {
        let defaults = Sampling::default();
        let sampling = Sampling {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.unwrap_or(defaults.seed),
            ..defaults
        };
        check_range("max_tokens", sampling.max_tokens, 1, MAX_TOKENS)?;
        check_range("temperature", sampling.temperature, 0.0, 2.0)?;
        check_range("top_p", sampling.top_p, 0.0, 1.0)?;
        let k = self.k.unwrap_or(AskRequest::DEFAULT_K);
        check_range("k", k, 1, MAX_ASK_K)?;
        if self.question.trim().is_empty() {
            return Err(ApiError::bad_request("question is empty"));
        }
        Ok(AskRequest {
            question: self.question,
            k,
            filter: self.filter,
            sampling,
        })
    }
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
        let _permits = permits;
        let mut on_text = |text: &str| tx.blocking_send(Event::Token(text.to_string())).is_ok();
        let event = match state.engine.ask(&request, &mut on_text) {
            Ok(response) => {
                state.metrics.tokens.fetch_add(
                    response.timings.gen_tokens as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                Event::Done(Box::new(response))
            }
            Err(err) => Event::Failed(err.into()),
        };
        let _ = tx.blocking_send(event);
    });
    rx
}

/// Waits for the final event of a generation.
pub async fn finish(mut events: mpsc::Receiver<Event>) -> Result<AskResponse, ApiError> {
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

fn sse_event(name: &str, data: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

async fn ask(state: web::Data<State>, body: web::Json<AskBody>) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let stream = body.stream;
    let request = body.into_request()?;
    let permits = state.gate.enter().await?;
    let events = start_ask(state.clone(), request, permits);
    if !stream {
        let response = tokio::time::timeout(state.timeout, finish(events))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    "generation timed out",
                )
            })??;
        return Ok(HttpResponse::Ok().json(response));
    }
    Ok(sse(events, |event| match event {
        Event::Token(text) => sse_event("token", &json!({ "text": text })),
        Event::Done(r) => sse_event(
            "done",
            &json!({
                "answer": r.answer,
                "abstained": r.abstained,
                "citations": r.citations,
                "invalid_citations": r.invalid_citations,
                "corrected_citations": r.corrected_citations,
                "retrieved": r.retrieved,
                "timings": r.timings,
            }),
        ),
        Event::Failed(err) => sse_event(
            "error",
            &json!({"error": {"code": err.code, "message": err.message}}),
        ),
    }))
}

/// `POST /v1/documents` JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    path: String,
    text: String,
    #[serde(default)]
    metadata: Metadata,
}

async fn add_document(
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
    let (path, bytes, metadata) = if content_type.starts_with("multipart/form-data") {
        read_multipart(actix_multipart::Multipart::new(req.headers(), payload)).await?
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
            .map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        let doc: DocumentBody = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
        (doc.path, doc.text.into_bytes(), doc.metadata)
    };
    let engine = state.engine.clone();
    let docs = blocking(&state, move || {
        engine.add_document(&path, &bytes, &metadata)
    })
    .await?;
    Ok(HttpResponse::Created().json(json!({ "documents": docs })))
}

/// A multipart upload: a `file` part (its filename names the document) and
/// optional `path` and `metadata` (JSON object) parts.
async fn read_multipart(
    mut form: actix_multipart::Multipart,
) -> Result<(String, Vec<u8>, Metadata), ApiError> {
    let (mut file, mut name, mut path, mut metadata) = (None, None, None, Metadata::new());
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| ApiError::bad_request(format!("bad multipart: {e}")))?;
        let field_name = field.name().unwrap_or_default().to_string();
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("bad multipart: {e}")))?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_page")]
    limit: usize,
}

fn default_page() -> usize {
    100
}

async fn list_documents(
    state: web::Data<State>,
    page: web::Query<Page>,
) -> Result<HttpResponse, ApiError> {
    let Page { offset, limit } = page.into_inner();
    check_range("limit", limit, 1, MAX_PAGE)?;
    let engine = state.engine.clone();
    let (documents, total) = blocking(&state, move || engine.documents(offset, limit)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "documents": documents, "total": total, "offset": offset, "limit": limit,
    })))
}

async fn get_document(
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let id = id.into_inner();
    let doc = blocking(&state, move || engine.document(&id)).await?;
    Ok(HttpResponse::Ok().json(doc))
}

async fn delete_document(
    state: web::Data<State>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let id = id.into_inner();
    let report = blocking(&state, move || {
        engine.document(&id)?;
        engine.remove(&id)
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `POST /v1/ingest` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestBody {
    path: PathBuf,
}

async fn ingest(
    state: web::Data<State>,
    body: web::Json<IngestBody>,
) -> Result<HttpResponse, ApiError> {
    let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, "path_not_allowed", why);
    let requested = body.into_inner().path;
    let path = requested
        .canonicalize()
        .map_err(|e| ApiError::bad_request(format!("{}: {e}", requested.display())))?;
    if state.ingest_roots.is_empty() {
        return Err(forbidden(
            "no ingest roots are configured (server.ingest_roots)".into(),
        ));
    }
    if !state.ingest_roots.iter().any(|root| path.starts_with(root)) {
        return Err(forbidden(format!(
            "{} is outside the configured ingest roots",
            requested.display()
        )));
    }
    let engine = state.engine.clone();
    let report = blocking(&state, move || engine.ingest(&[path], &NoProgress)).await?;
    Ok(HttpResponse::Ok().json(report))
}
