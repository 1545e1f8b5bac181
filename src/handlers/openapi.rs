//! The OpenAPI 3.1 document of the gateway's own endpoints, generated from the handlers'
//! annotations and served at `GET /openapi.json`. `tests/integration/operations.rs` checks it against the
//! routes the gateway really answers.

use std::sync::LazyLock;

use actix_web::{get, HttpResponse};
use utoipa::{
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
    Modify, OpenApi,
};

use super::{auth, health, metrics};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bffgate",
        description = "The gateway's own endpoints. Every other path is proxied to a configured \
                       upstream or served from the browser app. Errors are \
                       `application/problem+json`."
    ),
    paths(
        auth::login,
        auth::refresh,
        auth::logout,
        auth::logout_all,
        auth::current,
        auth::list,
        auth::revoke,
        health::healthz,
        health::readyz,
        health::jwks,
        metrics::metrics_endpoint,
        openapi_json,
    ),
    components(schemas(crate::web::problem::Problem)),
    modifiers(&SessionCookie),
    tags(
        (name = "auth", description = "Sign-in and sessions. Every request needs `X-CSRF: 1`."),
        (name = "operations", description = "Health, keys, metrics and this document."),
    )
)]
pub struct ApiDoc;

/// The session cookie as the security scheme of authenticated endpoints.
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-bff",
                "The sealed, HttpOnly session cookie the gateway sets (`bff` when \
                 cookie.secure = false, or cookie.name).",
            ))),
        );
    }
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default());

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}
