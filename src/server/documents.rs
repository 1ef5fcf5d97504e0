//! Documents and their passages: upload (JSON or multipart), list, fetch,
//! delete; `GET /v1/chunks/{id}` for a cited passage.

use actix_web::http::StatusCode;
use actix_web::web;
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::State;
use super::auth;
use super::error::{ApiError, ErrorResponses};
use super::routes::{InCollection, blocking, payload_error};
use crate::engine::{Passage, RemoveReport};
use crate::error::check_range;
use crate::types::{DocRecord, Metadata};

/// Largest page of `GET /v1/documents`.
const MAX_PAGE: usize = 1000;

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
#[utoipa::path(post, tag = "routes", path = "/v1/documents", params(InCollection), request_body(content((DocumentBody = "application/json"), (UploadForm = "multipart/form-data"))), security(("api_key" = [])), responses((status = 201, body = DocumentsAdded), ErrorResponses))]
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
#[utoipa::path(get, tag = "routes", path = "/v1/documents", params(Page, InCollection), security(("api_key" = [])), responses((status = 200, body = DocumentList), ErrorResponses))]
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
#[utoipa::path(get, tag = "routes", path = "/v1/documents/{id}", params(("id" = String, Path, description = "Document id"), InCollection), security(("api_key" = [])), responses((status = 200, body = DocRecord), ErrorResponses))]
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
#[utoipa::path(get, tag = "routes", path = "/v1/chunks/{id}", params(("id" = String, Path, description = "Chunk id"), InCollection), security(("api_key" = [])), responses((status = 200, body = Passage), ErrorResponses))]
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

/// Removes a document from every store.
#[utoipa::path(delete, tag = "routes", path = "/v1/documents/{id}", params(("id" = String, Path, description = "Document id"), InCollection), security(("api_key" = [])), responses((status = 200, body = RemoveReport), ErrorResponses))]
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
