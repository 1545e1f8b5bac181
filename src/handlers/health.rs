//! Liveness, readiness (store reachability) and the public signing keys.

use actix_web::{web::Data, HttpResponse};

use crate::web::{ApiError, AppState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up.", body = Object, example = json!({"status": "ok"}))))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The store answers; 503 otherwise, so a load balancer stops sending traffic.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The store answers.", body = Object, example = json!({"status": "ready"})),
        (status = 503, description = "The store is unreachable.", body = crate::web::problem::Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(state: Data<AppState>) -> Result<HttpResponse, ApiError> {
    state
        .sessions
        .store()
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })))
}

/// Public keys for upstream APIs to verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "A JWK Set (RFC 7517): the signing key, then earlier ones.", body = Object,
        headers(("Cache-Control" = String, description = "`public, max-age=300`: verifiers may keep the keys five minutes.")))))]
pub async fn jwks(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(state.signer.jwks())
}
