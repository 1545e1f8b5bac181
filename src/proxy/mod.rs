//! The gateway's data path: every path that is not one of the gateway's own endpoints goes
//! through [`dispatch`], in named phases (after pingora):
//!
//! 1. [`choose`]: normalise the path, choose the route (longest prefix) — or serve the app;
//! 2. [`judge`]: CSRF, or `Origin` for WebSocket upgrades;
//! 3. [`authenticate`]: the signed-in step (`web::signed_in`), rotating if due;
//! 4. [`headers::to_upstream`]: filter the request headers, add `Authorization: Bearer`;
//! 5. [`forward::send`]: stream the request upstream (or [`ws::bridge`] a WebSocket);
//! 6. [`forward::refresh_if_refused`]: an upstream 401 to a `GET`/`HEAD` whose token was not
//!    just minted: refresh, and send once more;
//! 7. [`forward::to_browser`]: filter the response headers and stream the body back;
//! 8. [`forward::upstream_error`]: fail to proxy — connect errors → 502, timeouts → 504;
//!    neither touches the session.

pub mod forward;
pub mod headers;
pub mod path;
pub mod routes;
pub mod ws;

use actix_session::Session;
use actix_web::{
    http::header,
    web::{self, Data},
    HttpMessage as _, HttpRequest, HttpResponse,
};

use crate::{
    config::{AuthMode, RouteConfig},
    metrics,
    session::{
        streams::{Limit, StreamWatch},
        Sessions,
    },
    web::{
        body_timeout,
        context::{client_address, requested_host, requested_scheme, RequestId, RouteLabel},
        cookie::CookieSettings,
        csrf::{self, CsrfHeader, PublicOrigin},
        signed_in::{self, Identity},
        static_files, ApiError, AppState,
    },
};
pub use forward::upstream_client;
pub use routes::{Proxy, Route};

/// What a path is for.
enum Choice<'a> {
    /// A configured route claims it (the path is normalised; its prefix is the first
    /// `usize` bytes).
    Route(&'a Route, String, usize),
    /// The browser app.
    Static(String),
}

/// Phase 1: the normalised path and who serves it.
fn choose<'a>(proxy: &'a Proxy, req: &HttpRequest) -> Result<Choice<'a>, ApiError> {
    let path =
        path::normalize(req.uri().path()).map_err(|e| ApiError::BadRequest(e.message().into()))?;
    Ok(match proxy.find(&path) {
        Some((route, matched)) => Choice::Route(route, path, matched),
        None => Choice::Static(path),
    })
}

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Phase 2: may a browser have sent this request to a cookie-authenticated route?
fn judge(
    req: &HttpRequest,
    route: &RouteConfig,
    upgrade: bool,
    origin: &str,
) -> Result<(), ApiError> {
    if route.auth == AuthMode::None {
        return Ok(());
    }
    let header = if route.csrf {
        CsrfHeader::Required
    } else {
        CsrfHeader::NotRequired
    };
    let judged = if upgrade {
        csrf::check_upgrade(req.headers(), origin)
    } else {
        csrf::check(req.method(), req.headers(), origin, header)
    };
    judged.map_err(|rejection| ApiError::Forbidden(rejection.message()))
}

/// Phase 3: who the request goes upstream as (`None`: anonymously).
async fn authenticate(
    req: &HttpRequest,
    session: &Session,
    sessions: &Sessions,
    mode: AuthMode,
) -> Result<Option<Identity>, ApiError> {
    match mode {
        AuthMode::None => Ok(None),
        AuthMode::Optional => signed_in::optional(req, session, sessions).await,
        AuthMode::Required => {
            signed_in::required(req, session, sessions, crate::session::Refresh::IfDue)
                .await
                .map(Some)
        }
    }
}

/// Phase 4: the upstream request's headers for `bearer`.
fn upstream_headers(
    req: &HttpRequest,
    route: &RouteConfig,
    cookie_name: &str,
    bearer: Option<&str>,
) -> header::HeaderMap {
    let peer_ip = client_address(req)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let host = requested_host(req);
    let request_id = RequestId::of(req);
    headers::to_upstream(
        req.headers(),
        &route.forward_cookies,
        cookie_name,
        bearer,
        &headers::ClientSide {
            peer_ip: &peer_ip,
            host: &host,
            proto: requested_scheme(req),
            request_id: &request_id,
        },
    )
}

/// A stream (WebSocket, open-ended body) of a signed-in request is watched so that it ends
/// with its session; a counted one is refused (429) when the session holds
/// `session.max_streams` already.
fn watch_stream(
    sessions: &Sessions,
    identity: Option<&Identity>,
    limit: Limit,
) -> Result<Option<StreamWatch>, ApiError> {
    identity
        .map(|i| {
            sessions
                .watch_stream(&i.auth, limit)
                .map_err(|_| ApiError::TooManyStreams)
        })
        .transpose()
}

/// Does the browser ask for an event stream (`EventSource` sends this `Accept`)?
fn asks_for_event_stream(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The default service: everything that is not a gateway endpoint, phase by phase.
#[allow(clippy::too_many_arguments)] // one extractor each; the phases below take what they need
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: Data<AppState>,
    proxy: Data<Proxy>,
    client: Data<awc::Client>,
    cookie: Data<CookieSettings>,
    origin: Data<PublicOrigin>,
) -> Result<HttpResponse, ApiError> {
    let (route, path, matched) = match choose(&proxy, &req)? {
        Choice::Static(path) => return static_files::serve(&req, &proxy.static_dir, &path).await,
        Choice::Route(route, path, matched) => (route, path, matched),
    };
    // Uploads stream upstream for as long as the route's timeout allows.
    body_timeout::lift(&req);
    let prefix = &route.config.prefix;
    req.extensions_mut().insert(RouteLabel(prefix.clone()));
    let result = async {
        let upgrade = is_websocket_upgrade(&req);
        judge(&req, &route.config, upgrade, &origin.0)?;
        let identity = authenticate(&req, &session, &state.sessions, route.config.auth).await?;
        let bearer = identity.as_ref().map(|i| i.tokens.access.as_str());
        let url = route.url(&path, matched, req.query_string());
        let headers = upstream_headers(&req, &route.config, &cookie.name, bearer);
        if upgrade {
            let watch = watch_stream(&state.sessions, identity.as_ref(), Limit::Counted)?;
            let ended = async move {
                match watch {
                    Some(watch) => watch.ended().await,
                    None => std::future::pending().await,
                }
            };
            let timeout = route.config.timeout;
            return ws::bridge(&req, payload, &client, &url, headers, timeout, ended).await;
        }
        // A requested event stream takes its place before the upstream is asked.
        let requested_stream = if asks_for_event_stream(&req) {
            watch_stream(&state.sessions, identity.as_ref(), Limit::Counted)?
        } else {
            None
        };
        let mut upstream =
            forward::send(&client, &req, &route.config, &url, headers, Some(payload)).await?;
        let mut identity = identity;
        if let Some(renewed) = forward::refresh_if_refused(
            &req,
            &session,
            &state.sessions,
            identity.as_ref(),
            &upstream,
        )
        .await?
        {
            tracing::info!(route = %prefix, "upstream answered 401; refreshed and retried once");
            let bearer = Some(renewed.tokens.access.as_str());
            let headers = upstream_headers(&req, &route.config, &cookie.name, bearer);
            upstream = forward::send(&client, &req, &route.config, &url, headers, None).await?;
            identity = Some(renewed);
        }
        let watch = match (forward::is_open_ended(&req, &upstream), requested_stream) {
            (false, _) => None,
            (true, Some(watch)) => Some(watch),
            (true, None) => watch_stream(&state.sessions, identity.as_ref(), Limit::Uncounted)?,
        };
        Ok(forward::to_browser(&req, upstream, &cookie.name, watch))
    }
    .await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(e) => actix_web::ResponseError::status_code(e),
    };
    metrics::proxied(prefix, status.as_u16());
    result
}
