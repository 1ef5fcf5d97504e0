//! The server's error response: every failure is `{"error": {"code",
//! "message"}}` with a status that says whose fault it is (4xx: the
//! request; 5xx: lore).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::error::Error;
use crate::wire::{ErrorBody, ErrorDetail};

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
    pub allow: Option<&'static str>,
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
        if let Some(allow) = self.allow {
            response.insert_header(("Allow", allow));
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
