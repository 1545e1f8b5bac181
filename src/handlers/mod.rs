//! HTTP handlers: `/auth/*`, health, JWKS. They translate between HTTP and the session
//! service; no rotation or store logic lives here.

pub mod auth;
pub mod health;
pub mod openapi;
