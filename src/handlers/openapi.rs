//! The OpenAPI 3.1 document of the gateway's own endpoints, served at `GET /openapi.json`:
//! generated from the handlers' annotations, then completed for the gateway that serves it
//! ([`Document`]). `tests/integration/operations.rs` checks it against the routes the gateway
//! really answers, and `scripts/api-fuzz` runs a schema-driven fuzzer against it.

use actix_web::{http::Method, web::Data, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::{auth, health, metrics, oidc};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bffgate",
        description = "The gateway's own endpoints. Every other path is proxied to a configured \
                       upstream or served from the browser app. Errors are \
                       `application/problem+json`. A method a path does not list answers 405 \
                       with `Allow`."
    ),
    paths(
        auth::login,
        auth::refresh,
        auth::logout,
        auth::logout_all,
        auth::current,
        auth::list,
        auth::revoke,
        oidc::providers,
        health::healthz,
        health::readyz,
        health::jwks,
        metrics::metrics_endpoint,
        openapi_json,
    ),
    components(schemas(crate::web::problem::Problem)),
    tags(
        (name = "auth", description = "Sign-in and sessions. Every request needs `X-CSRF: 1`."),
        (name = "operations", description = "Health, keys, metrics and this document."),
    )
)]
pub struct ApiDoc;

/// What the document says about the gateway that serves it, beyond the annotations.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The session cookie's name (`cookie.name`, `__Host-bff` or `bff`).
    pub cookie_name: &'a str,
    /// The origin browsers must send in `Origin` (`public_origin`).
    pub public_origin: &'a str,
    /// Whether this listener serves `/metrics`.
    pub metrics: bool,
}

/// The document one gateway serves, rendered once when it starts.
#[derive(Debug, Clone)]
pub struct Document(Bytes);

impl Document {
    /// The annotations' document, completed with what the annotations cannot know or would
    /// repeat on every operation: the cookie's name, the endpoints this listener serves, the
    /// CSRF rules of `/auth` (the scope's middleware applies them to every route under it, so
    /// they are stated once here too) and which response headers are always sent.
    pub fn new(site: Site<'_>) -> Self {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        if let Some(paths) = doc.pointer_mut("/paths").and_then(Value::as_object_mut) {
            if !site.metrics {
                paths.remove("/metrics");
            }
            for (path, item) in paths.iter_mut() {
                let behind_csrf = path.starts_with("/auth/");
                let operations = item.as_object_mut().into_iter().flat_map(|o| o.iter_mut());
                for (method, operation) in operations {
                    let Some(operation) = operation.as_object_mut() else {
                        continue;
                    };
                    if behind_csrf {
                        add_csrf_rules(method, operation, site.public_origin);
                    }
                    let responses = operation
                        .get_mut("responses")
                        .and_then(Value::as_object_mut)
                        .into_iter()
                        .flat_map(|r| r.values_mut())
                        .filter_map(Value::as_object_mut);
                    for response in responses {
                        complete_headers(response, behind_csrf);
                    }
                }
            }
        }
        if let Some(components) = doc
            .pointer_mut("/components")
            .and_then(Value::as_object_mut)
        {
            components.insert(
                "securitySchemes".into(),
                json!({ "session_cookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": site.cookie_name,
                    "description": "The sealed, HttpOnly session cookie the gateway sets at login."
                }}),
            );
        }
        Self(serde_json::to_vec_pretty(&doc).unwrap_or_default().into())
    }
}

/// What `web::csrf::require` adds to an `/auth` operation: the headers it reads, and its 403.
fn add_csrf_rules(method: &str, operation: &mut Map<String, Value>, public_origin: &str) {
    // Fetch Metadata: `same-site` is enough only for a safe method (a sibling subdomain is
    // same-site); `cross-site` never is.
    let safe = method
        .to_uppercase()
        .parse::<Method>()
        .is_ok_and(|m| matches!(m, Method::GET | Method::HEAD | Method::OPTIONS));
    let fetch_sites = if safe {
        json!(["same-origin", "same-site", "none"])
    } else {
        json!(["same-origin", "none"])
    };
    let parameters = [
        json!({
            "name": "X-CSRF",
            "in": "header",
            "required": true,
            "description": "Must be `1`: a cross-site page cannot send it without a CORS \
                            preflight, which the gateway never grants.",
            "schema": { "type": "string", "enum": ["1"] }
        }),
        json!({
            "name": "Sec-Fetch-Site",
            "in": "header",
            "required": false,
            "description": "Sent by browsers (Fetch Metadata); other values are refused.",
            "schema": { "type": "string", "enum": fetch_sites }
        }),
        json!({
            "name": "Origin",
            "in": "header",
            "required": false,
            "description": "When sent, exactly the gateway's public origin.",
            "schema": { "type": "string", "enum": [public_origin] }
        }),
    ];
    if let Some(list) = operation
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
    {
        list.extend(parameters);
    }
    if let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    {
        responses.insert(
            "403".into(),
            json!({
                "description": "Refused by the CSRF check: no `X-CSRF: 1`, a `Sec-Fetch-Site` \
                                or an `Origin` the gateway does not accept.",
                "content": { "application/problem+json": {
                    "schema": { "$ref": "#/components/schemas/Problem" }
                }}
            }),
        );
    }
}

/// Completes one response's headers: `Cache-Control: no-store` when `no_store` (the `/auth`
/// scope's default headers add it to every answer), and every documented header marked
/// required. A header the annotations document is one the gateway always sends with that
/// answer (one sent only sometimes, like `Set-Cookie` after a rotation, is told in the
/// description instead); utoipa has no attribute to say so.
fn complete_headers(response: &mut Map<String, Value>, no_store: bool) {
    if no_store {
        if let Some(headers) = response
            .entry("headers")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            headers.insert(
                "Cache-Control".into(),
                json!({
                    "description": "Answers about sessions are never cached.",
                    "schema": { "type": "string", "const": "no-store" }
                }),
            );
        }
    }
    let headers = response
        .get_mut("headers")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|h| h.values_mut())
        .filter_map(Value::as_object_mut);
    for header in headers {
        header.insert("required".into(), Value::Bool(true));
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document.", body = Object)))]
pub async fn openapi_json(document: Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}
