//! API keys and scopes. `read` keys may search, ask, chat, list models and
//! embed; `write` keys may also add, delete and ingest documents. With no
//! keys configured every request is let in (and `lore serve` refuses to
//! bind a non-loopback address).

use actix_web::HttpRequest;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;

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

/// What a route needs. Every route declares one ([`super::routes::resource`]
/// takes it), and the check runs after routing, on the route that actually
/// matched: a percent-encoded path cannot reach a handler under another
/// route's access. A path that matches no route gets 404 and no handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes, metrics and the API document: no key.
    Open,
    /// A key of at least this scope.
    Key(Scope),
    /// Reading (`GET`, `HEAD`) needs a read key, anything else a write key.
    ReadWrite,
}

impl Access {
    /// The scope a request with `method` needs, if any.
    fn needs(self, method: &actix_web::http::Method) -> Option<Scope> {
        use actix_web::http::Method;
        match self {
            Access::Open => None,
            Access::Key(scope) => Some(scope),
            Access::ReadWrite if *method == Method::GET || *method == Method::HEAD => {
                Some(Scope::Read)
            }
            Access::ReadWrite => Some(Scope::Write),
        }
    }
}

/// The bearer token of `req`: the scheme is case-insensitive (RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What `req` may do: everything when no keys are configured or it comes
/// from the local CLI, else its key's scope (`None`: no valid key).
pub fn scope_of_request(state: &State, req: &HttpRequest) -> Option<Scope> {
    if state.keys.is_empty() || state.is_local(req) {
        return Some(Scope::Write);
    }
    bearer(req.headers()).and_then(|t| state.keys.scope_of(t))
}

/// Route middleware: lets the request through when `access` allows it.
pub async fn check(
    access: Access,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = State::of(&req);
    if let Some(need) = access.needs(req.method()) {
        match scope_of_request(state, req.request()) {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid API key is required (Authorization: Bearer KEY)",
                )
                .into());
            }
            Some(scope) if scope < need => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this key is read-only; documents and ingest need a write key",
                )
                .into());
            }
            Some(_) => {}
        }
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_scopes() {
        let keys = Keys::parse(&["read:r1".into(), "write:w1".into()]);
        assert_eq!(keys.scope_of("r1"), Some(Scope::Read));
        assert_eq!(keys.scope_of("w1"), Some(Scope::Write));
        assert_eq!(keys.scope_of("w2"), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        use actix_web::test::TestRequest;
        for header in ["Bearer k", "bearer k", "BEARER  k ", "bEaReR k"] {
            let req = TestRequest::default()
                .insert_header(("authorization", header))
                .to_srv_request();
            assert_eq!(bearer(req.headers()), Some("k"), "{header}");
        }
        let req = TestRequest::default()
            .insert_header(("authorization", "Basic k"))
            .to_srv_request();
        assert_eq!(bearer(req.headers()), None);
    }
}
