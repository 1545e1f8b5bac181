//! What every request carries: the gateway's shared state, the request id, the route label
//! for logs, the client's address, and the one log line per request.

use std::{net::IpAddr, sync::Arc, time::Instant};

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderMap},
    middleware::Next,
    HttpMessage as _, HttpRequest,
};

use crate::{
    session::{ClientInfo, Sessions},
    tokens::{new_id, Signer},
};

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

/// What every handler and the proxy share. The session cookie's settings
/// ([`CookieSettings`](super::cookie::CookieSettings)) and the public origin
/// ([`PublicOrigin`](super::csrf::PublicOrigin)) are app data of their own, read by the
/// middleware that owns them.
#[derive(Debug)]
pub struct AppState {
    pub sessions: Sessions,
    pub signer: Arc<Signer>,
}

/// The request's id: the client's `X-Request-Id` when well-formed, else a new one. Set by
/// [`log_request`], echoed on the response, forwarded upstream.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id of `req` (a new one outside the middleware, e.g. in unit tests).
    pub fn of(req: &HttpRequest) -> String {
        req.extensions()
            .get::<RequestId>()
            .map(|id| id.0.clone())
            .unwrap_or_else(|| new_id().unwrap_or_default())
    }
}

/// The configured route prefix a proxied request matched, for logs (never the raw path).
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

/// The client's `X-Request-Id` if well-formed (1–128 of `[A-Za-z0-9._-]`).
pub fn valid_request_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| id.to_owned())
}

/// The client's address: the one decision behind login throttling, logs, the session list
/// and the `X-Forwarded-For` sent upstream. Today the connection's peer; client-sent
/// forwarding headers are never believed.
pub fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    req.peer_addr().map(|addr| addr.ip())
}

/// The host the browser asked for: its `Host` header (HTTP/1.1) or the URI's authority
/// (HTTP/2), never a client's `X-Forwarded-Host` or `Forwarded`.
pub fn requested_host(req: &HttpRequest) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned()
}

/// The scheme the browser used to reach this listener (`https` on a TLS listener), never a
/// client's `X-Forwarded-Proto` or `Forwarded`.
pub fn requested_scheme(req: &HttpRequest) -> &'static str {
    if req.app_config().secure() {
        "https"
    } else {
        "http"
    }
}

/// Who sent the request: its address and (shortened) user agent.
pub fn client_info(req: &HttpRequest) -> ClientInfo {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_USER_AGENT)
        .collect();
    let ip = client_address(req)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    ClientInfo { user_agent, ip }
}

/// Middleware, outermost: gives every request an id and logs one line per request with
/// its route, status and latency (to the response head; bodies may still be streaming).
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = valid_request_id(req.headers())
        .or_else(|| new_id().ok())
        .unwrap_or_default();
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .extensions()
        .get::<RouteLabel>()
        .map(|r| r.0.clone())
        .or_else(|| res.request().match_pattern())
        .unwrap_or_else(|| "static".into());
    if let Ok(value) = header::HeaderValue::from_str(&id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    tracing::info!(
        target: "bffgate::request",
        request_id = %id,
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        latency_ms = started.elapsed().as_micros() as f64 / 1000.0,
        "request"
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::web::test_support::header_map as map;

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        assert_eq!(
            valid_request_id(&map(&[("x-request-id", "abc-123.x_y")])).as_deref(),
            Some("abc-123.x_y")
        );
        assert_eq!(
            valid_request_id(&map(&[("x-request-id", "has space")])),
            None
        );
        assert_eq!(valid_request_id(&map(&[])), None);
    }

    #[test]
    fn host_and_scheme_come_from_the_connection_not_forwarding_headers() {
        let req = actix_web::test::TestRequest::default()
            .insert_header(("host", "app.example:8443"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .insert_header(("x-forwarded-proto", "https"))
            .insert_header(("forwarded", "host=evil.example;proto=https"))
            .to_http_request();
        assert_eq!(requested_host(&req), "app.example:8443");
        assert_eq!(requested_scheme(&req), "http");
    }

    #[test]
    fn the_client_address_is_the_peer_whatever_the_client_claims() {
        let req = actix_web::test::TestRequest::default()
            .peer_addr("10.1.2.3:4567".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6"))
            .insert_header(("forwarded", "for=6.6.6.6"))
            .insert_header(("user-agent", "x".repeat(300)))
            .to_http_request();
        assert_eq!(client_address(&req), Some("10.1.2.3".parse().unwrap()));
        let info = client_info(&req);
        assert_eq!(info.ip, "10.1.2.3");
        assert_eq!(info.user_agent.len(), MAX_USER_AGENT);
    }
}
