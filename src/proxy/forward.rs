//! Forwarding one HTTP request upstream and its answer back: the upstream client, the body's
//! framing, the one retry after an upstream 401, and the mapping of failures to 502/504.

use std::time::{Duration, Instant};

use actix_session::Session;
use actix_web::{
    body::SizedStream,
    http::{header, Method, StatusCode},
    web, HttpRequest, HttpResponse,
};
use awc::{
    error::{ConnectError, SendRequestError},
    ClientResponse,
};
use futures_util::StreamExt as _;

use super::headers;
use crate::{
    config::RouteConfig,
    metrics,
    session::{streams::StreamWatch, Refresh, Sessions},
    web::{
        signed_in::{self, Identity},
        ApiError,
    },
};

/// What the upstream answered, its body still streaming.
pub type Upstream = ClientResponse;

/// The HTTP client for upstreams (one per worker: awc clients are not `Send`).
pub fn upstream_client() -> awc::Client {
    // TLS to https upstreams uses aws-lc, the crypto library the gateway already links.
    // Installing fails harmlessly when a provider is already in place.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let connector = awc::Connector::new()
        .limit(512)
        .conn_keep_alive(Duration::from_secs(30))
        .timeout(Duration::from_secs(5));
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        // Per-route timeouts are set on each request.
        .timeout(Duration::from_secs(3600))
        .finish()
}

fn is_bodiless(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// Sends the request upstream with `headers`. The body keeps its framing: a known length is
/// forwarded as Content-Length (uploads to object stores need it), an unknown one streams
/// chunked, none (or `payload: None`, a retry) sends none.
pub async fn send(
    client: &awc::Client,
    req: &HttpRequest,
    route: &RouteConfig,
    url: &str,
    headers: header::HeaderMap,
    payload: Option<web::Payload>,
) -> Result<Upstream, ApiError> {
    let mut request = client
        .request(req.method().clone(), url)
        .timeout(route.timeout);
    *request.headers_mut() = headers;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let payload = payload.filter(|_| !is_bodiless(req.method()));
    let started = Instant::now();
    let sent = match (payload, length, chunked) {
        (Some(payload), Some(len), false) if len > 0 => {
            request.send_body(SizedStream::new(len, payload)).await
        }
        (Some(payload), _, true) => request.send_stream(payload).await,
        _ => request.send().await,
    };
    let upstream = sent.map_err(|e| upstream_error(&route.prefix, e))?;
    metrics::upstream_latency(&route.prefix, started.elapsed());
    Ok(upstream)
}

/// The upstream refused a token the gateway did not just mint, on a request it can repeat
/// (`GET`/`HEAD`): rotate now and return the identity to retry once with.
pub async fn refresh_if_refused(
    req: &HttpRequest,
    session: &Session,
    sessions: &Sessions,
    identity: Option<&Identity>,
    upstream: &Upstream,
) -> Result<Option<Identity>, ApiError> {
    let Some(identity) = identity.filter(|i| {
        upstream.status() == StatusCode::UNAUTHORIZED
            && is_bodiless(req.method())
            && i.auth.renewed.is_none()
    }) else {
        return Ok(None);
    };
    signed_in::renew(
        req,
        session,
        sessions,
        identity.tokens.clone(),
        Refresh::Force,
    )
    .await
    .map(Some)
}

/// Will the answer stream for as long as the upstream likes (server-sent events, chunked
/// bodies)? Those are watched: they end when their session does.
pub fn is_open_ended(req: &HttpRequest, upstream: &Upstream) -> bool {
    !has_no_body(req, upstream) && !upstream.headers().contains_key(header::CONTENT_LENGTH)
}

fn has_no_body(req: &HttpRequest, upstream: &Upstream) -> bool {
    *req.method() == Method::HEAD
        || matches!(
            upstream.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        )
}

/// The browser's answer: the upstream's status, filtered headers and streaming body; an
/// open-ended body stops when `watch`'s session ends.
pub fn to_browser(
    req: &HttpRequest,
    upstream: Upstream,
    cookie_name: &str,
    watch: Option<StreamWatch>,
) -> HttpResponse {
    let mut response = HttpResponse::build(upstream.status());
    let filtered = headers::to_browser(upstream.headers(), cookie_name);
    let length = filtered
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    for (name, value) in &filtered {
        if name != header::CONTENT_LENGTH {
            response.append_header((name.clone(), value.clone()));
        }
    }
    match (has_no_body(req, &upstream), length, watch) {
        (true, _, _) => response.finish(),
        (false, Some(len), _) => response.body(SizedStream::new(len, upstream)),
        (false, None, Some(watch)) => response.streaming(upstream.take_until(watch.ended())),
        (false, None, None) => response.streaming(upstream),
    }
}

/// Maps a failure to reach the upstream to 502/504, logging the cause.
pub fn upstream_error(prefix: &str, e: SendRequestError) -> ApiError {
    let timeout = matches!(
        e,
        SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout)
    );
    tracing::warn!(route = %prefix, error = %e, "upstream request failed");
    if timeout {
        ApiError::GatewayTimeout
    } else {
        ApiError::BadGateway
    }
}
