//! The route table: every endpoint with the access it needs and the
//! methods it serves (deny by default: a method a resource does not serve
//! is a 405, an unknown path a 404), and what all handlers share (body and
//! query limits, the blocking-work helper, the collection parameters). The
//! handlers live one file per resource beside it.

use std::sync::Arc;

use actix_web::dev::{AppService, HttpServiceFactory};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::web;
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Responder, Route};
use utoipa::IntoParams;

use super::auth::{self, Access, Scope};
use super::error::ApiError;
use super::{State, ask, collections, documents, health, ingest, mcp, openapi, search, status};
use crate::keys::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use Scope::{Many, None, One, Path};
    cfg.service(endpoint("/healthz", OPEN, None).on(Method::GET, health::healthz))
        .service(endpoint("/readyz", OPEN, None).on(Method::GET, health::readyz))
        .service(endpoint("/metrics", OPEN, None).on(Method::GET, health::metrics))
        .service(endpoint("/openapi.json", OPEN, None).on(Method::GET, openapi::openapi_json))
        .service(endpoint("/v1/search", READ, Many).on(Method::POST, search::search))
        .service(endpoint("/v1/ask", READ, Many).on(Method::POST, ask::ask))
        .service(endpoint("/v1/status", READ, One).on(Method::GET, status::status))
        .service(endpoint("/v1/whoami", READ, None).on(Method::GET, status::whoami))
        .service(endpoint("/v1/chunks/{id}", READ, One).on(Method::GET, documents::get_chunk))
        .service(
            endpoint("/v1/documents", READ_WRITE, One)
                .on(Method::GET, documents::list_documents)
                .on(Method::POST, documents::add_document),
        )
        .service(
            endpoint("/v1/documents/{id}", READ_WRITE, One)
                .on(Method::GET, documents::get_document)
                .on(Method::DELETE, documents::delete_document),
        )
        .service(endpoint("/v1/ingest", WRITE, One).on(Method::POST, ingest::ingest))
        .service(endpoint("/mcp", READ, None).on(Method::POST, mcp::mcp))
        .service(endpoint("/v1/remove", WRITE, One).on(Method::POST, ingest::remove))
        .service(
            endpoint("/v1/collections", LIST_CREATE, None)
                .on(Method::GET, collections::list_collections)
                .on(Method::POST, collections::create_collection),
        )
        .service(
            endpoint("/v1/collections/{name}", ADMIN, Path)
                .on(Method::DELETE, collections::drop_collection),
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

/// An endpoint: a path, the access it needs for the collections of its
/// scope (checked after routing, so on the route that matched), and one
/// handler per method it serves. Any other method gets a 405 whose `Allow`
/// lists exactly the methods given here: the list is never written twice.
pub struct Endpoint {
    path: &'static str,
    access: Access,
    scope: Scope,
    methods: Vec<Method>,
    routes: Vec<Route>,
}

/// The endpoint at `path`, serving no method yet.
pub fn endpoint(path: &'static str, access: Access, scope: Scope) -> Endpoint {
    Endpoint {
        path,
        access,
        scope,
        methods: Vec::new(),
        routes: Vec::new(),
    }
}

impl Endpoint {
    /// Serves `method` with `handler`; the 405's `Allow` and the auth
    /// check's methods follow from these calls.
    pub fn on<F, Args>(mut self, method: Method, handler: F) -> Endpoint
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.routes.push(web::method(method.clone()).to(handler));
        self.methods.push(method);
        self
    }
}

impl HttpServiceFactory for Endpoint {
    fn register(self, config: &mut AppService) {
        let names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        let allowed: Arc<str> = names.join(", ").into();
        let methods: Arc<[Method]> = self.methods.into();
        let (access, scope) = (self.access, self.scope);
        let mut resource = web::resource(self.path)
            .default_service(web::to(move |req: HttpRequest| {
                let allowed = allowed.clone();
                async move {
                    let mut err = ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        format!(
                            "{} {} is not supported (allowed: {allowed})",
                            req.method(),
                            req.path()
                        ),
                    );
                    err.allow = Some(allowed.to_string());
                    Err::<HttpResponse, _>(err)
                }
            }))
            .wrap(from_fn(move |req, next| {
                auth::check(access, scope, methods.clone(), req, next)
            }));
        for route in self.routes {
            resource = resource.route(route);
        }
        resource.register(config);
    }
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

/// Runs blocking engine work off the reactor on the work threads (below
/// a generation's priority), within the request timeout, at most one task
/// per core at a time (more would only fight over the cores with each
/// other and with a running generation).
pub async fn blocking<T: Send + 'static>(
    state: &State,
    work: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let pool = state.work.clone();
    let run = async {
        let _turn = state.cpu.acquire().await;
        web::block(move || pool.install(work)).await
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
