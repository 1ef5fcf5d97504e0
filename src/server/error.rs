//! The server's error response: every failure is `{"error": {"code",
//! "message"}}` with a status that says whose fault it is (4xx: the
//! request; 5xx: lore).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};

use crate::error::Error;
use crate::wire::{ErrorBody, ErrorDetail};

/// Error statuses every `/v1` endpoint may answer, each with
/// [`ErrorBody`] (for the OpenAPI document).
pub struct ErrorResponses;

impl IntoResponses for ErrorResponses {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            ("400", "The request is malformed or out of range."),
            ("401", "A valid API key is required."),
            (
                "403",
                "The key's role or collections do not allow this, the path is outside the \
                 ingest roots, or a page of another site sent a write.",
            ),
            (
                "404",
                "No such document, collection, model or endpoint (a collection the key \
                 may not use is a 403 whether it exists or not).",
            ),
            ("405", "The endpoint does not support this method."),
            ("408", "The request body did not arrive in time."),
            ("413", "The request body is too large."),
            ("415", "The body is not JSON (or, for uploads, multipart)."),
            (
                "421",
                "The Host header names a host this server does not answer to.",
            ),
            (
                "422",
                "The document could not be read (binary, empty, corrupt).",
            ),
            (
                "429",
                "The generation queue is full; retry after `Retry-After` seconds.",
            ),
            ("503", "Timed out, shutting down, or the index is busy."),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Seconds to wait before retrying (429).
    pub retry_after: Option<u64>,
    /// Methods the resource supports (405).
    pub allow: Option<String>,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
            },
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(seconds) = self.retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        if let Some(allow) = &self.allow {
            response.insert_header(("Allow", allow.as_str()));
        }
        response.json(self.body())
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let message = match &err {
            Error::InvalidRequest(reason) => reason.clone(),
            other => other.to_string(),
        };
        match err {
            Error::InvalidRequest(_) | Error::DimensionMismatch { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            Error::UnsupportedFile { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_file",
                message,
            ),
            Error::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            Error::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", message),
            Error::Forbidden(reason) => Self::new(StatusCode::FORBIDDEN, "forbidden", reason),
            Error::Unavailable(_) => {
                // Which file is missing stays in the server log.
                tracing::error!(error = %message, "request refused");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the server cannot check keys right now; the request is refused",
                )
            }
            Error::IndexLocked { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "index_locked",
                "the index is locked by another process",
            ),
            _ => {
                // The details (paths, model files) stay in the server log.
                tracing::error!(error = %message, "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the server failed to handle the request; its log has the details",
                )
            }
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(err: actix_web::error::BlockingError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            err.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_keeps_its_kind_through_the_wire() {
        let sent = [
            Error::InvalidRequest("question is empty".into()),
            Error::NotFound("docs/gone.md".into()),
            Error::Conflict("collection notes exists".into()),
            Error::Forbidden("outside the ingest roots".into()),
        ];
        for err in sent {
            let shown = err.to_string();
            let code = err.code().expect("a kind that crosses the wire");
            let api = ApiError::from(err);
            assert_eq!(api.code, code, "{shown}");
            let back = Error::from_code(api.code, api.message).unwrap();
            assert_eq!(back.to_string(), shown);
        }
        let internal = ApiError::from(Error::Inference("boom".into()));
        assert!(Error::from_code(internal.code, internal.message).is_err());
    }
}
