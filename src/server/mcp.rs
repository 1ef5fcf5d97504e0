//! `POST /mcp`: the Model Context Protocol's streamable HTTP transport,
//! served by `rmcp` in stateless mode behind the same route checks as
//! every other endpoint. The request is handed over with the principal the
//! auth check let in, and the tools run their work in the server's turns
//! (the blocking-work cores, the generation queue, the request timeout).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::Value;

use super::State;
use super::auth;
use super::error::ApiError;
use super::routes::blocking;
use crate::mcp::{Job, Tools, Turns, Work};

/// The MCP service of one server.
pub type Service = StreamableHttpService<Tools, NeverSessionManager>;

/// The service for `state`'s engine; `max_body` bounds a request.
pub fn service(state: web::Data<State>, max_body: usize) -> Service {
    let deadline = state.timeout;
    let tools = Tools::per_request(state.engine.clone(), Arc::new(ServerTurns(state)), deadline);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_max_request_body_bytes(max_body)
        // The host and origin checks are the server's own (guard.rs).
        .disable_allowed_hosts();
    StreamableHttpService::new(move || Ok(tools.clone()), Default::default(), config)
}

/// Engine work of the MCP tools, in the server's turns.
struct ServerTurns(web::Data<State>);

impl Turns for ServerTurns {
    fn run(&self, work: Work, job: Job) -> BoxFuture<'static, crate::error::Result<Value>> {
        let state = self.0.clone();
        Box::pin(async move {
            let result = match work {
                Work::Read => blocking(&state, job).await,
                Work::Generate => generate(&state, job).await,
            };
            result.map_err(|err| match err.status {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    crate::error::Error::unavailable(err.message)
                }
                _ => crate::error::Error::from_code(err.code, err.message)
                    .unwrap_or_else(crate::error::Error::unavailable),
            })
        })
    }
}

/// Runs a generation in its turn of the generation queue.
async fn generate(state: &State, job: Job) -> Result<Value, ApiError> {
    let _permits = state.generation_turn().await?;
    Ok(web::block(job).await??)
}

/// Hands a request to the MCP service with the principal it acts as.
pub async fn mcp(
    req: HttpRequest,
    body: web::Bytes,
    service: web::Data<Service>,
) -> Result<HttpResponse, ApiError> {
    let mut request = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let mut request = request
        .body(Full::new(body))
        .map_err(|e| ApiError::bad_request(format!("bad MCP request: {e}")))?;
    request.extensions_mut().insert(auth::principal(&req));
    let (parts, body) = service.handle(request).await.into_parts();
    let mut response = HttpResponse::build(
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    );
    for (name, value) in &parts.headers {
        response.insert_header((name.as_str(), value.as_bytes()));
    }
    let stream = body
        .into_data_stream()
        .map(|chunk| Ok::<_, actix_web::Error>(chunk.unwrap_or_else(|never| match never {})));
    Ok(response.streaming(stream))
}
