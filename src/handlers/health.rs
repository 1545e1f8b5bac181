//! Liveness, readiness (store reachability) and the public signing keys.

use actix_web::{get, web::Data, HttpResponse};

use crate::{errors::ApiError, AppState};

/// The process is up.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// The store answers; 503 otherwise, so a load balancer stops sending traffic.
#[get("/readyz")]
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
#[get("/.well-known/jwks.json")]
pub async fn jwks(state: Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(state.signer.jwks())
}
