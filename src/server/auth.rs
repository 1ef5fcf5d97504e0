//! API keys and scopes. `read` keys may search, ask, chat, list models and
//! embed; `write` keys may also add, delete and ingest documents. With no
//! keys configured every request is let in (and `lore serve` refuses to
//! bind a non-loopback address).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web;

use super::State;
use super::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Search, ask, chat, models, embeddings.
    Read,
    /// Everything, documents and ingest included.
    Write,
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<(Scope, String)>);

impl Keys {
    /// Parses `scope:key` entries (validated by `Config::validate`).
    pub fn parse(entries: &[String]) -> Keys {
        Keys(
            entries
                .iter()
                .filter_map(|e| e.split_once(':'))
                .map(|(scope, key)| {
                    let scope = if scope == "write" {
                        Scope::Write
                    } else {
                        Scope::Read
                    };
                    (scope, key.to_string())
                })
                .collect(),
        )
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scope of `token`, if it is a key.
    fn scope_of(&self, token: &str) -> Option<Scope> {
        self.0
            .iter()
            .filter(|(_, key)| constant_time_eq(key.as_bytes(), token.as_bytes()))
            .map(|(scope, _)| *scope)
            .max()
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The scope a path needs; `None` for the open endpoints.
fn needed(path: &str) -> Option<Scope> {
    if ["/v1/documents", "/v1/ingest", "/v1/remove"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        Some(Scope::Write)
    } else if path.starts_with("/v1/") || path == "/v1" {
        Some(Scope::Read)
    } else {
        None
    }
}

/// Middleware: checks the bearer token against the scope the path needs.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = req
        .app_data::<web::Data<State>>()
        .expect("state is registered");
    let keys = &state.keys;
    let local = state.is_local(req.request());
    if let (false, false, Some(need)) = (keys.is_empty(), local, needed(req.path())) {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(scope) = token.and_then(|t| keys.scope_of(t)) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY)",
            )
            .into());
        };
        if scope < need {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this key is read-only; documents and ingest need a write key",
            )
            .into());
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_paths_and_keys() {
        let keys = Keys::parse(&["read:r1".into(), "write:w1".into()]);
        assert_eq!(keys.scope_of("r1"), Some(Scope::Read));
        assert_eq!(keys.scope_of("w1"), Some(Scope::Write));
        assert_eq!(keys.scope_of("w2"), None);
        assert_eq!(needed("/v1/search"), Some(Scope::Read));
        assert_eq!(needed("/v1/documents/abc"), Some(Scope::Write));
        assert_eq!(needed("/v1/ingest"), Some(Scope::Write));
        assert_eq!(needed("/v1/remove"), Some(Scope::Write));
        assert_eq!(needed("/v1/status"), Some(Scope::Read));
        assert_eq!(needed("/healthz"), None);
        assert_eq!(needed("/metrics"), None);
    }
}
