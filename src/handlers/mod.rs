//! The gateway's own endpoints: `/auth/*`, health, JWKS, metrics, the OpenAPI document. They
//! translate between HTTP and the session service; no rotation or store logic lives here,
//! and the session cookie is reached only through `web::signed_in`.
//!
//! Each path answers exactly the method its handler declares; any other method gets 405 with
//! `Allow` ([`endpoint`]), so a request for one of these paths never falls through to the
//! proxy or the browser app.

pub mod auth;
pub mod health;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod responses;

use actix_web::{
    http::Method,
    web::{self, ServiceConfig},
    FromRequest, Handler, HttpResponse, Resource, Responder,
};

use crate::web::ApiError;

/// `handler` answers `method` on `path`; every other method gets 405 with `Allow: method`.
///
/// actix's method macros (`#[get]`, …) guard the whole resource, so a request with another
/// method matches nothing and falls through to the default service (the proxy and the static
/// files): a route guard inside the resource keeps the path ours.
pub fn endpoint<F, Args>(path: &str, method: Method, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let allow = method.to_string();
    web::resource(path)
        .route(web::method(method).to(handler))
        .default_service(web::to(move || {
            let allow = allow.clone();
            async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allow)) }
        }))
}

/// The endpoints outside `/auth` that every gateway serves (`/metrics` is configured apart).
pub fn endpoints(cfg: &mut ServiceConfig) {
    cfg.service(endpoint("/healthz", Method::GET, health::healthz))
        .service(endpoint("/readyz", Method::GET, health::readyz))
        .service(endpoint(
            "/.well-known/jwks.json",
            Method::GET,
            health::jwks,
        ))
        .service(endpoint(
            "/openapi.json",
            Method::GET,
            openapi::openapi_json,
        ));
}

/// A path under `/auth` that no endpoint answers: 404, never the proxy or the browser app.
pub async fn unknown() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
