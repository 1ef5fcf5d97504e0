//! The route table: every endpoint with the access it needs and the
//! methods it serves (deny by default: a method a resource does not serve
//! is a 405, an unknown path a 404), and what all handlers share (body and
//! query limits, the blocking-work helper, the collection parameters). The
//! handlers live one file per resource beside it.

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use utoipa::IntoParams;

use super::auth::{self, Access, Scope};
use super::error::ApiError;
use super::{State, ask, collections, documents, health, ingest, openapi, search, status};
use crate::keys::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use Scope::{Many, One, Path};
    cfg.service(
        resource("/healthz", "GET", OPEN, Scope::None).route(web::get().to(health::healthz)),
    )
    .service(resource("/readyz", "GET", OPEN, Scope::None).route(web::get().to(health::readyz)))
    .service(resource("/metrics", "GET", OPEN, Scope::None).route(web::get().to(health::metrics)))
    .service(
        resource("/openapi.json", "GET", OPEN, Scope::None)
            .route(web::get().to(openapi::openapi_json)),
    )
    .service(resource("/v1/search", "POST", READ, Many).route(web::post().to(search::search)))
    .service(resource("/v1/ask", "POST", READ, Many).route(web::post().to(ask::ask)))
    .service(resource("/v1/status", "GET", READ, One).route(web::get().to(status::status)))
    .service(resource("/v1/whoami", "GET", READ, Scope::None).route(web::get().to(status::whoami)))
    .service(
        resource("/v1/chunks/{id}", "GET", READ, One).route(web::get().to(documents::get_chunk)),
    )
    .service(
        resource("/v1/documents", "GET, POST", READ_WRITE, One)
            .route(web::post().to(documents::add_document))
            .route(web::get().to(documents::list_documents)),
    )
    .service(
        resource("/v1/documents/{id}", "GET, DELETE", READ_WRITE, One)
            .route(web::get().to(documents::get_document))
            .route(web::delete().to(documents::delete_document)),
    )
    .service(resource("/v1/ingest", "POST", WRITE, One).route(web::post().to(ingest::ingest)))
    .service(resource("/v1/remove", "POST", WRITE, One).route(web::post().to(ingest::remove)))
    .service(
        resource("/v1/collections", "GET, POST", LIST_CREATE, Scope::None)
            .route(web::get().to(collections::list_collections))
            .route(web::post().to(collections::create_collection)),
    )
    .service(
        resource("/v1/collections/{name}", "DELETE", ADMIN, Path)
            .route(web::delete().to(collections::drop_collection)),
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
pub fn payload_error(err: &actix_web::error::PayloadError) -> ApiError {
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
