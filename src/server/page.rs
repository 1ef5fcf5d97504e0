//! The web page (`GET /`): one HTML file, one script and one style sheet,
//! embedded in the binary at compile time, so it works offline and needs
//! no build step. It calls the same API as every other client. Also the
//! headers every response carries (a strict Content-Security-Policy and
//! friends) and the opt-in CORS policy (`server.cors_origins`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};

use super::routes::{OPEN, endpoint};

/// Scripts and styles only from this server, no inline script, no
/// plugins, no framing, requests only to this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The page's files: path, content type, content.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("page/index.html"),
    ),
    (
        "/page/app.js",
        "text/javascript; charset=utf-8",
        include_str!("page/app.js"),
    ),
    (
        "/page/app.css",
        "text/css; charset=utf-8",
        include_str!("page/app.css"),
    ),
    (
        "/page/icon.svg",
        "image/svg+xml",
        include_str!("page/icon.svg"),
    ),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, content_type, body) in ASSETS {
        cfg.service(endpoint(path, OPEN, super::auth::Scope::None).on(
            Method::GET,
            move || async move {
                HttpResponse::Ok()
                    .content_type(content_type)
                    // Always revalidate: a new binary serves a new page.
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .body(body)
            },
        ));
    }
}

/// Middleware: the security headers, on every response, errors included.
pub async fn secure_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    match next.call(req).await {
        Ok(mut response) => {
            add_security_headers(response.headers_mut());
            Ok(response.map_into_boxed_body())
        }
        // Errors become responses after every middleware has run: wrap
        // them in one whose response carries the headers too.
        Err(err) => Err(Secured(err).into()),
    }
}

fn add_security_headers(headers: &mut header::HeaderMap) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// An error whose response carries the security headers.
#[derive(Debug)]
struct Secured(actix_web::Error);

impl std::fmt::Display for Secured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for Secured {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.0.as_response_error().status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = self.0.error_response();
        add_security_headers(response.headers_mut());
        response
    }
}

/// The CORS policy: none (no headers at all) unless origins are configured.
pub fn cors(origins: &[String]) -> actix_web::middleware::Condition<actix_cors::Cors> {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    actix_web::middleware::Condition::new(!origins.is_empty(), cors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let (_, _, html) = ASSETS[0];
        assert!(!html.contains("<script>"), "inline script");
        assert!(!html.contains("style="), "inline style");
        let inline_handler = html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.chars().take_while(char::is_ascii_alphabetic).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!inline_handler, "inline event handler");
        for (path, _, _) in &ASSETS[1..] {
            assert!(html.contains(path), "index.html does not load {path}");
        }
    }

    #[test]
    fn the_script_never_writes_html() {
        let (_, _, js) = ASSETS[1];
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!js.contains(sink), "app.js uses {sink}");
        }
    }
}
