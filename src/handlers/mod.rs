//! The gateway's own endpoints: `/auth/*`, health, JWKS, metrics, the OpenAPI document. They
//! translate between HTTP and the session service; no rotation or store logic lives here,
//! and the session cookie is reached only through `web::signed_in`.

pub mod auth;
pub mod health;
pub mod metrics;
pub mod openapi;
