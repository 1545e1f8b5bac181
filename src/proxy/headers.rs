//! Header hygiene for both directions of a proxied request (DESIGN.md §6).
//!
//! Upstream never sees the gateway's cookie, a client's `Authorization`, hop-by-hop headers
//! or client-made forwarding headers; the browser never sees upstream hop-by-hop headers or
//! an upstream `Set-Cookie` for the gateway's cookie name.

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::web::cookie;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers that say who the client is, which host or scheme it asked for, or which URL it
/// "really" requested: only the gateway may set them, so every client-sent one is removed
/// (upstreams and their frameworks believe them). Whole families go by prefix
/// ([`is_forwarding`]): they keep growing (`X-Forwarded-Uri`, `-User`, `-Client-Cert`,
/// `X-Original-Host`, …).
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-rewrite-url",
    "x-request-id",
];
const FORWARDING_PREFIXES: &[&str] = &["x-forwarded-", "x-original-"];

fn is_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str();
    FORWARDING.contains(&name) || FORWARDING_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// What the gateway knows about the browser's connection.
#[derive(Debug, Clone)]
pub struct ClientSide<'a> {
    pub peer_ip: &'a str,
    pub host: &'a str,
    pub proto: &'a str,
    pub request_id: &'a str,
}

/// Names listed in `Connection` headers (lower-cased).
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name.as_str()) || listed.iter().any(|l| l == name.as_str())
}

/// The `Cookie` header with only the allow-listed cookies, never one that could be read as
/// `gateway_cookie`.
fn filter_cookies(
    headers: &HeaderMap,
    allow: &[String],
    gateway_cookie: &str,
) -> Option<HeaderValue> {
    // Most routes forward no cookie at all: then the browser's are not even read.
    if allow.is_empty() {
        return None;
    }
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split_once('=').map_or("", |(n, _)| n);
            !cookie::could_be_named(name.as_bytes(), gateway_cookie)
                && allow.iter().any(|a| a == name.trim())
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// Headers for the upstream request.
pub fn to_upstream(
    incoming: &HeaderMap,
    allow_cookies: &[String],
    gateway_cookie: &str,
    bearer: Option<&str>,
    client: &ClientSide<'_>,
) -> HeaderMap {
    let listed = connection_listed(incoming);
    let mut out = HeaderMap::new();
    for (name, value) in incoming {
        let drop = is_hop_by_hop(name, &listed)
            || is_forwarding(name)
            || matches!(
                *name,
                header::HOST | header::AUTHORIZATION | header::COOKIE | header::CONTENT_LENGTH
            );
        if !drop {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(cookies) = filter_cookies(incoming, allow_cookies, gateway_cookie) {
        out.insert(header::COOKIE, cookies);
    }
    if let Some(token) = bearer {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            out.insert(header::AUTHORIZATION, value);
        }
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-forwarded-for", client.peer_ip);
    set("x-forwarded-host", client.host);
    set("x-forwarded-proto", client.proto);
    set("x-request-id", client.request_id);
    out
}

/// Headers for the browser, from the upstream response.
pub fn to_browser(upstream: &HeaderMap, gateway_cookie: &str) -> HeaderMap {
    let listed = connection_listed(upstream);
    let mut out = HeaderMap::new();
    for (name, value) in upstream {
        if is_hop_by_hop(name, &listed) {
            continue;
        }
        if *name == header::SET_COOKIE && !is_harmless_set_cookie(value, gateway_cookie) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// May an upstream's `Set-Cookie` reach the browser? Only a well-formed one (visible ASCII,
/// a token for a name) whose name no browser could read as the gateway's cookie. Judged on
/// the raw bytes: a header that is not plain ASCII is dropped, not waved through.
fn is_harmless_set_cookie(value: &HeaderValue, gateway_cookie: &str) -> bool {
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|b| matches!(b, b'\t' | b' '..=b'~'));
    let Some(at) = bytes.iter().position(|b| *b == b'=') else {
        return false;
    };
    let name = bytes[..at].trim_ascii();
    let is_token = !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b));
    visible && is_token && !cookie::could_be_named(name, gateway_cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::web::test_support::header_map as map;

    const CLIENT: ClientSide<'static> = ClientSide {
        peer_ip: "10.1.2.3",
        host: "app.example",
        proto: "https",
        request_id: "rid-1",
    };

    #[test]
    fn upstream_gets_bearer_and_no_gateway_cookie_or_client_auth() {
        let incoming = map(&[
            ("cookie", "__Host-bff=sealed; theme=dark; tracking=1"),
            ("authorization", "Bearer evil"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "6.6.6.6"),
            ("accept", "application/json"),
            ("host", "app.example"),
        ]);
        let out = to_upstream(
            &incoming,
            &["theme".into(), "__Host-bff".into()],
            "__Host-bff",
            Some("jwt"),
            &CLIENT,
        );
        assert_eq!(out.get("authorization").unwrap(), "Bearer jwt");
        assert_eq!(out.get("cookie").unwrap(), "theme=dark");
        assert!(out.get("x-secret-hop").is_none() && out.get("keep-alive").is_none());
        assert!(out.get("connection").is_none() && out.get("host").is_none());
        assert_eq!(out.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(out.get("x-forwarded-host").unwrap(), "app.example");
        assert_eq!(out.get("x-request-id").unwrap(), "rid-1");
        assert_eq!(out.get("accept").unwrap(), "application/json");
    }

    #[test]
    fn every_client_x_forwarded_header_is_dropped() {
        let incoming = map(&[
            ("x-forwarded-client-cert", "By=spiffe://evil"),
            ("x-forwarded-uri", "/admin"),
            ("x-forwarded-user", "admin"),
        ]);
        let out = to_upstream(&incoming, &[], "bff", None, &CLIENT);
        for name in [
            "x-forwarded-client-cert",
            "x-forwarded-uri",
            "x-forwarded-user",
        ] {
            assert!(out.get(name).is_none(), "{name}");
        }
    }

    #[test]
    fn anonymous_upstream_request_has_no_authorization() {
        let out = to_upstream(
            &map(&[("authorization", "Basic x")]),
            &[],
            "bff",
            None,
            &CLIENT,
        );
        assert!(out.get("authorization").is_none());
        assert!(out.get("cookie").is_none());
    }

    #[test]
    fn browser_never_gets_the_gateway_cookie_from_upstream() {
        let upstream = map(&[
            ("set-cookie", "__Host-bff=forged; Path=/"),
            ("set-cookie", "theme=light"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ]);
        let out = to_browser(&upstream, "__Host-bff");
        let cookies: Vec<_> = out.get_all("set-cookie").collect();
        assert_eq!(cookies, vec!["theme=light"]);
        assert!(out.get("transfer-encoding").is_none());
        assert_eq!(out.get("content-type").unwrap(), "text/plain");
    }
}
