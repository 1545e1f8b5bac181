//! The gateway's data path: every path that is not one of the gateway's own endpoints goes
//! through [`dispatch`], in named phases (after pingora):
//!
//! 1. normalise the path, choose the route (longest prefix) — or serve the static app;
//! 2. judge the request (CSRF, or `Origin` for WebSocket upgrades);
//! 3. authenticate it from the session cookie, rotating if due (single-flight);
//! 4. filter the request headers and stream it upstream with `Authorization: Bearer`;
//! 5. on an upstream 401 to a `GET`/`HEAD` that was not just refreshed: refresh, retry once;
//! 6. filter the response headers and stream the body back;
//! 7. fail to proxy: connect errors → 502, timeouts → 504; neither touches the session.

pub mod headers;
pub mod path;
pub mod ws;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use actix_session::Session;
use actix_web::{
    body::SizedStream,
    http::{header, Method, StatusCode},
    web::{self, Data},
    HttpMessage as _, HttpRequest, HttpResponse,
};
use awc::error::{ConnectError, SendRequestError};

use crate::{
    config::{AuthMode, Config, RouteConfig},
    cookies::{self, ClearSessionCookie},
    csrf,
    errors::ApiError,
    handlers::auth::client_info,
    metrics,
    session::{Authenticated, ClientInfo, CookieTokens, InvalidReason, Refresh, SessionError},
    AppState, RequestId, RouteLabel,
};

/// One configured route, ready to match.
#[derive(Debug, Clone)]
pub struct Route {
    pub config: RouteConfig,
    /// The upstream base URL without a trailing slash.
    base: String,
}

impl Route {
    /// The upstream URL for a normalised `path` and the raw `query`.
    fn url(&self, path: &str, query: &str) -> String {
        let rest = if self.config.strip_prefix && self.config.prefix != "/" {
            &path[self.config.prefix.len()..]
        } else {
            path
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        let mut url = format!("{}{}", self.base, rest);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

/// The route table and what the data path needs to know of the gateway.
#[derive(Debug)]
pub struct Proxy {
    /// Longest prefix first.
    routes: Vec<Route>,
    static_dir: PathBuf,
    cookie_name: String,
    origin: String,
}

impl Proxy {
    pub fn new(config: &Config) -> Self {
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| Route {
                base: r.upstream.trim_end_matches('/').to_owned(),
                config: r.clone(),
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.config.prefix.len()));
        Self {
            routes,
            static_dir: config.static_dir.clone(),
            cookie_name: config.cookie.effective_name(),
            origin: config.origin(),
        }
    }

    /// The route for a normalised path: the longest matching prefix.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path::has_prefix(path, &r.config.prefix))
    }
}

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

/// Who the request is sent upstream as.
struct Identity {
    auth: Authenticated,
    tokens: CookieTokens,
}

/// Outcome of the authentication phase.
struct Authentication {
    identity: Option<Identity>,
    /// An `optional` route met a dead or unreadable session: proceed anonymously and remove
    /// the cookie (the removal is only sent if the request carried one).
    clear_cookie: bool,
}

async fn authenticate(
    mode: AuthMode,
    session: &Session,
    state: &AppState,
    client: &ClientInfo,
) -> Result<Authentication, ApiError> {
    let anonymous = |clear_cookie| Authentication {
        identity: None,
        clear_cookie,
    };
    if mode == AuthMode::None {
        return Ok(anonymous(false));
    }
    let Some(tokens) = cookies::read(session) else {
        // No cookie, or one that does not open: on an optional route the request goes on
        // anonymously and a cookie that did not open is removed (only if one was sent).
        return match mode {
            AuthMode::Required => Err(ApiError::Unauthenticated(InvalidReason::Missing)),
            _ => Ok(anonymous(true)),
        };
    };
    match state
        .sessions
        .authenticate(&tokens, Refresh::IfDue, client)
        .await
    {
        Ok(auth) => {
            let tokens = keep_renewed(session, &auth, tokens)?;
            Ok(Authentication {
                identity: Some(Identity { auth, tokens }),
                clear_cookie: false,
            })
        }
        Err(SessionError::Invalid(_)) if mode == AuthMode::Optional => Ok(anonymous(true)),
        Err(e) => Err(e.into()),
    }
}

/// Puts rotated tokens in the cookie and returns the tokens now in force.
fn keep_renewed(
    session: &Session,
    auth: &Authenticated,
    presented: CookieTokens,
) -> Result<CookieTokens, ApiError> {
    match &auth.renewed {
        Some(renewed) => {
            cookies::write(session, renewed).map_err(ApiError::Internal)?;
            Ok(renewed.clone())
        }
        None => Ok(presented),
    }
}

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The default service: everything that is not a gateway endpoint.
pub async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: Data<AppState>,
    proxy: Data<Proxy>,
    client: Data<awc::Client>,
) -> Result<HttpResponse, ApiError> {
    let path =
        path::normalize(req.uri().path()).map_err(|e| ApiError::BadRequest(e.message().into()))?;
    let Some(route) = proxy.find(&path) else {
        return serve_static(&req, &proxy, &path).await;
    };
    req.extensions_mut()
        .insert(RouteLabel(route.config.prefix.clone()));
    let result = proxy_route(
        &req, &path, payload, &session, &state, &proxy, &client, route,
    )
    .await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(e) => actix_web::ResponseError::status_code(e),
    };
    metrics::proxied(&route.config.prefix, status.as_u16());
    result
}

/// Phases 2–7 for a request that `route` claims.
#[allow(clippy::too_many_arguments)]
async fn proxy_route(
    req: &HttpRequest,
    path: &str,
    payload: web::Payload,
    session: &Session,
    state: &AppState,
    proxy: &Proxy,
    client: &awc::Client,
    route: &Route,
) -> Result<HttpResponse, ApiError> {
    let upgrade = is_websocket_upgrade(req);
    if route.config.auth != AuthMode::None {
        let judged = if upgrade {
            csrf::check_upgrade(req.headers(), &proxy.origin)
        } else if route.config.csrf {
            csrf::check(req.headers(), &proxy.origin)
        } else {
            Ok(())
        };
        judged.map_err(|rejection| ApiError::Forbidden(rejection.message()))?;
    }
    let authentication = authenticate(route.config.auth, session, state, &client_info(req)).await?;
    let request_id = RequestId::of(req);
    let peer_ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let info = req.connection_info().clone();
    let client_side = headers::ClientSide {
        peer_ip: &peer_ip,
        host: info.host(),
        proto: info.scheme(),
        request_id: &request_id,
    };
    let upstream_headers = |bearer: Option<&str>| {
        headers::to_upstream(
            req.headers(),
            &route.config.forward_cookies,
            &proxy.cookie_name,
            bearer,
            &client_side,
        )
    };
    let url = route.url(path, req.query_string());
    let bearer = authentication
        .identity
        .as_ref()
        .map(|i| i.tokens.access.as_str());
    let mut response = if upgrade {
        ws::bridge(
            req,
            payload,
            client,
            &url,
            upstream_headers(bearer),
            route.config.timeout,
        )
        .await?
    } else {
        let call = Call {
            req,
            state,
            session,
            client,
            route,
            url: &url,
            cookie_name: &proxy.cookie_name,
            headers: &upstream_headers,
        };
        forward(call, payload, authentication.identity).await?
    };
    if authentication.clear_cookie {
        response.extensions_mut().insert(ClearSessionCookie);
    }
    Ok(response)
}

/// Maps a failure to reach the upstream to 502/504, logging the cause.
fn upstream_error(prefix: &str, e: SendRequestError) -> ApiError {
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

/// One proxied HTTP request and what forwarding it needs.
struct Call<'a> {
    req: &'a HttpRequest,
    state: &'a AppState,
    session: &'a Session,
    client: &'a awc::Client,
    route: &'a Route,
    url: &'a str,
    cookie_name: &'a str,
    /// The filtered upstream headers for a given bearer token.
    headers: &'a dyn Fn(Option<&str>) -> header::HeaderMap,
}

async fn forward(
    call: Call<'_>,
    payload: web::Payload,
    identity: Option<Identity>,
) -> Result<HttpResponse, ApiError> {
    let Call {
        req,
        state,
        session,
        client,
        route,
        url,
        cookie_name,
        headers: upstream_headers,
    } = call;
    let bodiless = matches!(*req.method(), Method::GET | Method::HEAD);
    let request = |bearer: Option<&str>| {
        let mut r = client
            .request(req.method().clone(), url)
            .timeout(route.config.timeout);
        *r.headers_mut() = upstream_headers(bearer);
        r
    };
    let bearer = identity.as_ref().map(|i| i.tokens.access.clone());
    // The body keeps its framing: a known length is forwarded as Content-Length (uploads to
    // object stores need it), an unknown one streams chunked, none sends none.
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let started = Instant::now();
    let sent = match (bodiless, length, chunked) {
        (false, Some(len), false) if len > 0 => {
            request(bearer.as_deref())
                .send_body(SizedStream::new(len, payload))
                .await
        }
        (false, _, true) => request(bearer.as_deref()).send_stream(payload).await,
        _ => request(bearer.as_deref()).send().await,
    };
    let mut upstream = sent.map_err(|e| upstream_error(&route.config.prefix, e))?;
    metrics::upstream_latency(&route.config.prefix, started.elapsed());

    // Phase 5: the upstream refused a token we did not just mint: refresh once, retry once.
    if let Some(identity) = identity.filter(|i| {
        upstream.status() == StatusCode::UNAUTHORIZED && bodiless && i.auth.renewed.is_none()
    }) {
        let auth = state
            .sessions
            .authenticate(&identity.tokens, Refresh::Force, &client_info(req))
            .await?;
        let tokens = keep_renewed(session, &auth, identity.tokens)?;
        tracing::info!(route = %route.config.prefix, "upstream answered 401; refreshed and retried once");
        upstream = request(Some(&tokens.access))
            .send()
            .await
            .map_err(|e| upstream_error(&route.config.prefix, e))?;
    }

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
    let no_body = *req.method() == Method::HEAD
        || matches!(
            upstream.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        );
    Ok(match (no_body, length) {
        (true, _) => response.finish(),
        (false, Some(len)) => response.body(SizedStream::new(len, upstream)),
        (false, None) => response.streaming(upstream),
    })
}

/// Serves the browser app for paths no route claims.
async fn serve_static(
    req: &HttpRequest,
    proxy: &Proxy,
    path: &str,
) -> Result<HttpResponse, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) || !proxy.static_dir.is_dir() {
        return Err(ApiError::NotFound);
    }
    // `path` is normalised: no dot segments, and no segment decodes to a separator.
    let mut file = proxy.static_dir.clone();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        file.push(
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .as_ref(),
        );
    }
    if file.is_dir() {
        file.push("index.html");
    }
    let is_html = file.extension().is_some_and(|e| e == "html");
    let named = actix_files::NamedFile::open_async(&file)
        .await
        .map_err(|_| ApiError::NotFound)?;
    let mut response = named.into_response(req);
    let headers = response.headers_mut();
    for (name, value) in STATIC_HEADERS {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    // Pages revalidate every time (they name the scripts); scripts and styles may be cached
    // briefly and are revalidated with their ETag after that.
    let cache = if is_html {
        "no-cache"
    } else {
        "public, max-age=300, must-revalidate"
    };
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache),
    );
    Ok(response)
}

/// Security headers on everything served from `static_dir`: scripts and styles only from
/// this origin, no inline code, no framing, no plugins, fetches only to this origin.
const STATIC_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteConfig;

    fn route(prefix: &str, upstream: &str, strip: bool) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            upstream: upstream.into(),
            strip_prefix: strip,
            auth: AuthMode::Required,
            csrf: true,
            timeout: Duration::from_secs(1),
            forward_cookies: vec![],
        }
    }

    fn proxy(routes: Vec<RouteConfig>) -> Proxy {
        Proxy::new(&Config {
            routes,
            ..Config::default()
        })
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let p = proxy(vec![
            route("/api", "http://a", false),
            route("/api/admin", "http://b", false),
        ]);
        assert_eq!(p.find("/api/admin/x").unwrap().base, "http://b");
        assert_eq!(p.find("/api/adminx").unwrap().base, "http://a");
        assert_eq!(p.find("/api").unwrap().base, "http://a");
        assert!(p.find("/apix").is_none());
        assert!(p.find("/").is_none());
    }

    #[test]
    fn upstream_urls_keep_or_strip_the_prefix() {
        let keep = Route {
            config: route("/api", "http://u:9/base/", false),
            base: "http://u:9/base".into(),
        };
        assert_eq!(
            keep.url("/api/notes", "a=1"),
            "http://u:9/base/api/notes?a=1"
        );
        let strip = Route {
            config: route("/api", "http://u:9", true),
            base: "http://u:9".into(),
        };
        assert_eq!(strip.url("/api/notes", ""), "http://u:9/notes");
        assert_eq!(strip.url("/api", ""), "http://u:9/");
    }
}
