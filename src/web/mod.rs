//! The HTTP edge that is not an endpoint: everything that knows HTTP and is shared by the
//! gateway's own handlers and the proxy.
//!
//! - [`body_timeout`]: the bound on reading a request body, lifted by the proxy for its routes;
//! - [`cookie`]: the session cookie — the only place it is built, read, written or removed;
//! - [`csrf`]: the only place a request is judged same-site;
//! - [`problem`]: the one error type and its `application/problem+json` answers;
//! - [`context`]: what every request carries — shared state, request id, route label, the
//!   client's address (one function decides it), the request log;
//! - [`signed_in`]: the one "signed-in" step: cookie → [`Sessions::authenticate`] → renewed
//!   cookie, cleared cookie, or anonymous;
//! - [`static_files`]: the browser app for paths no route claims.
//!
//! Nothing here imports `handlers`, `proxy` or the crate root; below it are `session`,
//! `store`, `tokens` and `config`.
//!
//! [`Sessions::authenticate`]: crate::session::Sessions::authenticate

pub mod body_timeout;
pub mod context;
pub mod cookie;
pub mod csrf;
pub mod problem;
pub mod signed_in;
pub mod static_files;

pub use context::AppState;
pub use problem::ApiError;

/// Helpers for unit tests of the HTTP edge (and the proxy's filters).
#[cfg(test)]
pub(crate) mod test_support {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    /// A header map of static `(name, value)` pairs, repeated names appended.
    pub(crate) fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }
}
