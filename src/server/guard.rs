//! Checks every request passes before routing, whatever route it is for:
//! the `Host` header against the names the server answers to (DNS
//! rebinding), the `Origin` of browser writes (cross-site requests), and a
//! deadline on the request body (slow senders).

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};

use super::State;
use super::error::ApiError;

/// What the guard enforces, from the server's configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Host names accepted (lower case, no port); empty: any.
    pub hosts: Vec<String>,
    /// Origins that may send writes besides the server's own.
    pub origins: Vec<String>,
    /// Time a client has to send its body.
    pub body_timeout: Duration,
}

impl Policy {
    /// The names a loopback-bound server answers to by default.
    pub fn loopback_hosts() -> Vec<String> {
        ["localhost", "127.0.0.1", "[::1]"]
            .map(str::to_string)
            .to_vec()
    }
}

/// Middleware: host, origin and body deadline.
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let state = State::of(&req);
    let policy = &state.guard;
    let host = header(&req, "host").unwrap_or_default();
    if !policy.hosts.is_empty() && !policy.hosts.contains(&host_name(host)) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            "this server does not answer to that Host (server.allowed_hosts)",
        )
        .into());
    }
    if is_write(req.method()) && !origin_allowed(&req, host, &policy.origins) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "writes from another site's page are refused (server.allowed_origins)",
        )
        .into());
    }
    let deadline = tokio::time::Instant::now() + policy.body_timeout;
    let (http, payload) = req.into_parts();
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(before(deadline, payload));
    let payload = Payload::Stream { payload: stream };
    next.call(ServiceRequest::from_parts(http, payload)).await
}

fn header<'a>(req: &'a ServiceRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `host[:port]` → lower-case host (`[::1]` keeps its brackets).
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        &host[..end + 2]
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.to_ascii_lowercase()
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A write is allowed unless a browser says it comes from another site:
/// an `Origin` that is neither this server nor configured, or
/// `Sec-Fetch-Site: cross-site`. Clients that are not browsers send
/// neither header.
fn origin_allowed(req: &ServiceRequest, host: &str, allowed: &[String]) -> bool {
    match header(req, "origin") {
        Some(origin) => {
            let own = ["http://", "https://"]
                .iter()
                .any(|scheme| origin.strip_prefix(scheme) == Some(host));
            own || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
        }
        None => header(req, "sec-fetch-site") != Some("cross-site"),
    }
}

/// The body stream, failing with a timeout once `deadline` passes. Fused:
/// readers (multipart) may poll again after the end.
fn before(
    deadline: tokio::time::Instant,
    payload: Payload,
) -> impl Stream<Item = Result<Bytes, PayloadError>> {
    futures_util::stream::unfold(Some(payload), move |payload| async move {
        let mut payload = payload?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(item) => item.map(|item| (item, Some(payload))),
            Err(_) => {
                let err = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request body did not arrive in time (server.body_timeout_s)",
                );
                Some((Err(PayloadError::Io(err)), None))
            }
        }
    })
    .fuse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_drop_the_port() {
        assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_name("LocalHost"), "localhost");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("evil.example:8080"), "evil.example");
    }
}
