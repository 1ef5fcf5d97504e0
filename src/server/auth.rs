//! API keys, roles and collections. `read` keys may search, ask, chat,
//! list models, embed and read documents; `write` keys may also add,
//! delete and ingest documents; `admin` keys may also create and drop
//! collections. Every key names the collections it may use, and every
//! route declares which collections a request works on ([`Scope`]): the
//! `collection` query parameter (one convention on every endpoint), the
//! `{name}` of a collection's own path, or none. Both are checked after
//! routing, on the route that matched, before any handler runs; handlers
//! read the checked names back with [`collections`]. Keys come from the
//! configuration and from the index's key store ([`crate::keys`]). With no
//! keys at all every request is let in (and `lore serve` refuses to bind a
//! non-loopback address).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};

use actix_web::web;

use super::State;
use super::error::ApiError;
use crate::keys::{KeyStore, Principal, Role};

use crate::search::MAX_COLLECTIONS;
use crate::types::{DEFAULT_COLLECTION, check_collection_name};

/// Secrets checked with argon2 at once; more wait their turn (cached and
/// configured keys do not wait).
pub const VERIFYING_AT_ONCE: usize = 2;

/// The query parameter that names a request's collections.
pub const COLLECTION_PARAM: &str = "collection";

/// The keys a server accepts: those configured (`LORE_API_KEYS`,
/// `server.api_keys`: every collection, no groups) and those of the
/// index's key store (`lore key create`).
pub struct Keys {
    configured: Vec<(Role, String)>,
    store: KeyStore,
    verifying: tokio::sync::Semaphore,
}

impl Keys {
    /// `role:key` entries (validated by `Config::validate`) and the store.
    pub fn new(entries: &[String], store: KeyStore) -> Keys {
        let configured = entries
            .iter()
            .filter_map(|e| e.split_once(':'))
            .map(|(role, key)| {
                let role = match role {
                    "admin" => Role::Admin,
                    "write" => Role::Write,
                    _ => Role::Read,
                };
                (role, key.to_string())
            })
            .collect();
        Keys {
            configured,
            store,
            verifying: tokio::sync::Semaphore::new(VERIFYING_AT_ONCE),
        }
    }

    /// True when no key is configured and the store holds none.
    pub fn is_empty(&self) -> crate::error::Result<bool> {
        Ok(self.configured.is_empty() && self.store.is_empty()?)
    }

    /// True when requests need a key: keys are configured, or the index has
    /// had a key store since this server started, even one whose last key
    /// was revoked or whose file went missing (deny by default: neither
    /// revoking keys nor losing the file ever opens the server).
    pub fn required(&self) -> bool {
        !self.configured.is_empty() || self.store.exists()
    }

    /// The configured key `token` is, if any (the highest role when
    /// several match).
    fn configured_principal(&self, token: &str) -> Option<Principal> {
        let (role, key) = self
            .configured
            .iter()
            .filter(|(_, key)| constant_time_eq(key.as_bytes(), token.as_bytes()))
            .map(|(role, key)| (*role, key))
            .max_by_key(|(role, _)| *role)?;
        // An id that names the key without revealing it.
        let id = format!("env-{}", &blake3::hash(key.as_bytes()).to_hex()[..8]);
        Some(Principal::everywhere(id, role))
    }

    /// Who `token` stands for, if it is a key.
    #[cfg(test)]
    fn principal_of(&self, token: &str) -> crate::error::Result<Option<Principal>> {
        match self.configured_principal(token) {
            Some(principal) => Ok(Some(principal)),
            None => self.store.verify(token),
        }
    }
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a route needs. Every route declares one ([`super::routes::endpoint`]
/// takes it), and the check runs after routing, on the route that actually
/// matched: a percent-encoded path cannot reach a handler under another
/// route's access. A path that matches no route gets 404 and no handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes, metrics and the API document: no key.
    Open,
    /// A key of at least this role.
    Key(Role),
    /// Reading (`GET`, `HEAD`) needs a read key, anything else a write key.
    ReadWrite,
    /// Reading needs a read key, anything else an admin key.
    ReadAdmin,
}

impl Access {
    /// The role a request with `method` needs, if any.
    fn needs(self, method: &actix_web::http::Method) -> Option<Role> {
        use actix_web::http::Method;
        match self {
            Access::Open => None,
            Access::Key(role) => Some(role),
            Access::ReadWrite if *method == Method::GET || *method == Method::HEAD => {
                Some(Role::Read)
            }
            Access::ReadWrite => Some(Role::Write),
            Access::ReadAdmin if *method == Method::GET || *method == Method::HEAD => {
                Some(Role::Read)
            }
            Access::ReadAdmin => Some(Role::Admin),
        }
    }
}

/// Which collections a route works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// None (probes, whoami, the collection list, the OpenAI models; chat
    /// and embeddings name theirs in the body's `model` and check it with
    /// [`authorize`]).
    None,
    /// One, from `?collection=NAME` (`default` when absent).
    One,
    /// One or more, from `?collection=A,B` (search and ask).
    Many,
    /// The `{name}` segment of the path (a collection's own resource).
    Path,
}

/// The collections a request was checked for (in the request's extensions).
#[derive(Debug, Clone)]
struct Checked(Vec<String>);

/// The names `req` gives for `scope`, before any check of the key.
fn requested(req: &ServiceRequest, scope: Scope) -> Result<Vec<String>, ApiError> {
    let named = match scope {
        Scope::None => return Ok(Vec::new()),
        Scope::Path => req.match_info().get("name").map(str::to_string),
        Scope::One | Scope::Many => {
            let pairs =
                actix_web::web::Query::<Vec<(String, String)>>::from_query(req.query_string())
                    .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
            let mut values = pairs.0.into_iter().filter(|(k, _)| k == COLLECTION_PARAM);
            let first = values.next().map(|(_, v)| v);
            if values.next().is_some() {
                return Err(ApiError::bad_request(
                    "name the collections once: ?collection=A,B",
                ));
            }
            first
        }
    };
    let named = named.unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
    let mut names: Vec<String> = Vec::new();
    for name in named.split(',').map(str::trim) {
        check_collection_name(name).map_err(ApiError::from)?;
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    if names.len() > 1 && scope != Scope::Many {
        return Err(ApiError::bad_request(
            "this endpoint works on one collection",
        ));
    }
    if names.len() > MAX_COLLECTIONS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_COLLECTIONS} collections at once"
        )));
    }
    Ok(names)
}

/// 403 for the first of `names` that `principal` may not use.
pub fn permit(principal: &Principal, names: &[String]) -> Result<(), ApiError> {
    match names.iter().find(|n| !principal.may_use(n)) {
        Some(name) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this key may not use the collection '{name}'"),
        )),
        None => Ok(()),
    }
}

/// Lets `principal` use `names`: 403 for one it may not use (whether it
/// exists or not, so the answer reveals nothing), then 404 for one that
/// does not exist.
pub fn authorize(state: &State, principal: &Principal, names: &[String]) -> Result<(), ApiError> {
    permit(principal, names)?;
    if let Some(name) = names.iter().find(|n| !state.engine.has_collection(n)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no collection '{name}'"),
        ));
    }
    Ok(())
}

/// The collections the auth middleware checked for this request (the
/// route's [`Scope`]); `default` on routes that name none.
pub fn collections(req: &HttpRequest) -> Vec<String> {
    req.extensions()
        .get::<Checked>()
        .map(|c| c.0.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| vec![DEFAULT_COLLECTION.to_string()])
}

/// The one collection the auth middleware checked for this request.
pub fn collection(req: &HttpRequest) -> String {
    collections(req).swap_remove(0)
}

/// The bearer token of `req`: the scheme is case-insensitive (RFC 9110).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who `req` acts as: everything when no keys are configured or it comes
/// from the local CLI, else its key (`None`: no valid key). A stored key
/// not checked before is verified on the blocking pool, at most
/// [`VERIFYING_AT_ONCE`] at a time.
pub async fn principal_of_request(
    state: &web::Data<State>,
    req: &HttpRequest,
) -> Result<Option<Principal>, ApiError> {
    if state.is_local(req) {
        return Ok(Some(Principal::owner("local")));
    }
    if !state.keys.required() {
        return Ok(Some(Principal::owner("anonymous")));
    }
    let Some(token) = bearer(req.headers()) else {
        return Ok(None);
    };
    if let Some(principal) = state.keys.configured_principal(token) {
        return Ok(Some(principal));
    }
    let _turn = state
        .keys
        .verifying
        .acquire()
        .await
        .map_err(|e| ApiError::from(crate::error::Error::unavailable(e.to_string())))?;
    let (state, token) = (state.clone(), token.to_string());
    Ok(web::block(move || state.keys.store.verify(&token)).await??)
}

/// The principal the auth middleware let in. On open routes, which hold
/// no documents: an anonymous reader of nothing restricted.
pub fn principal(req: &HttpRequest) -> Principal {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(|| Principal::everywhere("anonymous", Role::Read))
}

/// Route middleware: lets the request through when `access` allows it
/// and the key may use the collections of `scope` (for the `methods` the
/// route serves), and records who it acts as and for which collections.
pub async fn check(
    access: Access,
    scope: Scope,
    methods: std::sync::Arc<[actix_web::http::Method]>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(need) = access.needs(req.method()) {
        let state = State::data(&req);
        let Some(principal) = principal_of_request(&state, req.request()).await? else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid API key is required (Authorization: Bearer KEY)",
            )
            .into());
        };
        if state.read_only && need > Role::Read {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this server is a read-only replica: send writes to the writer",
            )
            .into());
        }
        if principal.role < need {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this key's role is {}; this needs {need}", principal.role),
            )
            .into());
        }
        // A method the route does not serve gets its 405 whatever it names.
        let served = methods.contains(req.method());
        let names = if served {
            requested(&req, scope)?
        } else {
            Vec::new()
        };
        authorize(&state, &principal, &names)?;
        req.extensions_mut().insert(principal);
        req.extensions_mut().insert(Checked(names));
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_keys_have_roles_and_ids_that_do_not_reveal_them() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(
            &["read:r1".into(), "write:w1".into(), "admin:a1".into()],
            KeyStore::open(dir.path()),
        );
        let role = |t: &str| keys.principal_of(t).unwrap().map(|p| p.role);
        assert_eq!(role("r1"), Some(Role::Read));
        assert_eq!(role("w1"), Some(Role::Write));
        assert_eq!(role("a1"), Some(Role::Admin));
        assert_eq!(role("w2"), None);
        let id = keys.principal_of("w1").unwrap().unwrap().id;
        assert!(id.starts_with("env-") && !id.contains("w1"), "{id}");
    }

    #[test]
    fn stored_keys_are_accepted_next_to_configured_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path());
        let (_, secret) = store
            .create("test", Role::Write, vec!["default".into()], vec![])
            .unwrap();
        let keys = Keys::new(&["read:r1".into()], KeyStore::open(dir.path()));
        assert_eq!(
            keys.principal_of(&secret).unwrap().map(|p| p.role),
            Some(Role::Write)
        );
        assert!(!keys.is_empty().unwrap());
        assert!(keys.required());
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
