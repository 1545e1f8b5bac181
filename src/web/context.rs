//! What every request carries: the gateway's shared state, the request id, the route label
//! for logs, the client's address, and the one log line per request.

use std::{net::IpAddr, sync::Arc, time::Instant};

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderMap},
    middleware::Next,
    web::Data,
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

/// The proxies in front of the gateway (`trusted_proxies`): only their forwarding headers are
/// believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl TrustedProxies {
    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The trusted proxies, if `req`'s peer is one of them (its forwarding headers count).
    fn of_peer(req: &HttpRequest) -> Option<&TrustedProxies> {
        let peer = req.peer_addr()?.ip();
        let trusted = req.app_data::<Data<TrustedProxies>>()?;
        trusted.contains(peer).then_some(trusted.get_ref())
    }
}

/// The client's address: the one decision behind login throttling, logs, the session list
/// and the `X-Forwarded-For` sent upstream. The connection's peer — unless the peer is a
/// trusted proxy: then the rightmost address of `Forwarded` (or, without it,
/// `X-Forwarded-For`) that is not itself a trusted proxy. Anything left of that address was
/// written by the client and is never believed.
pub fn client_address(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|addr| addr.ip());
    let Some(trusted) = TrustedProxies::of_peer(req) else {
        return peer;
    };
    let hops = forwarded_for(req.headers());
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(*ip) => continue,
            Some(ip) => return Some(*ip),
            // A hop the proxies wrote that is not an address (`unknown`, obfuscated): the
            // chain cannot be followed further; the last trusted proxy is the best answer.
            None => break,
        }
    }
    peer
}

/// The hops of `Forwarded: for=…` (RFC 7239) when present, else of `X-Forwarded-For`, in
/// order; `None` for a hop that is not an IP address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name| {
        headers
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>()
    };
    let forwarded = values(header::FORWARDED);
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| node_ip(v.trim()))
                })
            })
            .collect();
    }
    values(header::HeaderName::from_static("x-forwarded-for"))
        .iter()
        .map(|hop| node_ip(hop))
        .collect()
}

/// An address from a forwarding hop: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:443"`.
fn node_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

/// The last value of a forwarding header a trusted proxy set (it appends, or sets one).
fn last_forwarded<'a>(req: &'a HttpRequest, name: &'static str) -> Option<&'a str> {
    TrustedProxies::of_peer(req)?;
    req.headers()
        .get_all(name)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
}

/// The host the browser asked for: its `Host` header (HTTP/1.1) or the URI's authority
/// (HTTP/2) — or, from a trusted proxy, its `X-Forwarded-Host`. Never a client's.
pub fn requested_host(req: &HttpRequest) -> String {
    last_forwarded(req, "x-forwarded-host")
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned()
}

/// The scheme the browser used: `https` on a TLS listener — or, from a trusted proxy, its
/// `X-Forwarded-Proto` (`http` or `https`). Never a client's.
pub fn requested_scheme(req: &HttpRequest) -> &'static str {
    match last_forwarded(req, "x-forwarded-proto") {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        Some(p) if p.eq_ignore_ascii_case("http") => "http",
        _ if req.app_config().secure() => "https",
        _ => "http",
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

    fn behind(trusted: &[&str], peer: &str, pairs: &[(&'static str, &'static str)]) -> HttpRequest {
        let nets = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let mut req = actix_web::test::TestRequest::default()
            .peer_addr(peer.parse().unwrap())
            .app_data(Data::new(TrustedProxies(nets)));
        for (k, v) in pairs {
            req = req.insert_header((*k, *v));
        }
        req.to_http_request()
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let lb = ["10.0.0.0/8"];
        let req = behind(
            &lb,
            "10.0.0.2:1234",
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")],
        );
        assert_eq!(client_address(&req), Some("203.0.113.9".parse().unwrap()));
        let req = behind(
            &lb,
            "10.0.0.2:1234",
            &[(
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:443\";proto=https",
            )],
        );
        assert_eq!(client_address(&req), Some("2001:db8::1".parse().unwrap()));
        // Only the proxy itself is trusted: an untrusted peer's headers are ignored.
        let req = behind(&lb, "192.0.2.1:1234", &[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(client_address(&req), Some("192.0.2.1".parse().unwrap()));
        // A chain of trusted proxies only: the nearest one.
        let req = behind(&lb, "10.0.0.2:1234", &[("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(client_address(&req), Some("10.0.0.2".parse().unwrap()));
        let req = behind(
            &lb,
            "10.0.0.2:1234",
            &[("x-forwarded-for", "garbage, 10.0.0.9")],
        );
        assert_eq!(client_address(&req), Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn behind_trusted_proxies_their_proto_and_host_are_believed() {
        let pairs = [
            ("host", "lb.internal"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
        ];
        let req = behind(&["10.0.0.0/8"], "10.0.0.2:1", &pairs);
        assert_eq!(
            (requested_scheme(&req), requested_host(&req).as_str()),
            ("https", "app.example")
        );
        let req = behind(&["10.0.0.0/8"], "192.0.2.1:1", &pairs);
        assert_eq!(
            (requested_scheme(&req), requested_host(&req).as_str()),
            ("http", "lb.internal")
        );
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
