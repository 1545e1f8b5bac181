//! Invariants of the parsers that the browser (or an upstream) controls, as assertions: the
//! property tests (`tests/integration/properties.rs`) and the fuzz targets (`fuzz/`) share
//! them, so a fuzzer finds exactly what the suite would call a bug. Each `check_*` takes one
//! input and panics, naming the invariant, when the code under test breaks it.
//!
//! Only the crate's public API is used, plus parsers that read the same bytes the way the
//! other side does: actix-web's own cookie parsing (which actix-session uses to find the
//! session cookie) and a browser's reading of `Set-Cookie` (RFC 6265bis §5.6).

use std::collections::HashMap;

use actix_session::Session;
use actix_web::{
    cookie::{Cookie, CookieJar, Key},
    http::header::{self, HeaderMap, HeaderName, HeaderValue},
    middleware::from_fn,
    test, web, App, HttpResponse,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use bffgate::{
    config::{Config, Redacted},
    proxy::{
        headers::{to_browser, to_upstream, ClientSide},
        path::{matched_prefix, normalize, PathError},
    },
    tokens::{peek_claims, RefreshToken},
    web::{
        cookie::{self as session_cookie, could_be_named, keep_exact_name, CookieSettings},
        signed_in,
    },
};

/// The gateway's cookie name in every check.
pub const COOKIE: &str = "__Host-bff";

/// What the gateway itself puts in the forwarding headers of every checked request.
pub const CLIENT: ClientSide<'static> = ClientSide {
    peer_ip: "192.0.2.7",
    host: "app.example",
    proto: "https",
    request_id: "rid-fuzz",
};

/// Headers that say who the client is or what it asked for: only the gateway may set them.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-request-id",
];

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

fn is_forwarding(name: &str) -> bool {
    FORWARDING.contains(&name) || name.starts_with("x-forwarded-")
}

/// A header map of the pairs that are valid header names and values (the rest cannot reach
/// the gateway: the HTTP parser refuses them).
pub fn header_map<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_ref()),
            HeaderValue::from_bytes(value.as_ref()),
        ) {
            map.append(name, value);
        }
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The segments of an absolute path (`/a/b/` → `a`, `b`, ``).
fn segments(path: &str) -> Vec<&str> {
    path[1..].split('/').collect()
}

fn decoded(segment: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(segment).collect()
}

/// Does the absolute path `raw` have more `..` (in any spelling) than segments to leave?
fn climbs_above_root(raw: &str) -> bool {
    let mut depth = 0usize;
    for segment in segments(raw) {
        match decoded(segment).as_slice() {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// `normalize` of a raw path, and `matched_prefix` of its output against a route prefix (a plain
/// path as the configuration allows it: `/`, or `/seg/seg` without dot segments or escapes).
pub fn check_path(raw: &str, prefix: &str) {
    if raw.starts_with('/') && climbs_above_root(raw) {
        assert!(normalize(raw).is_err(), "{raw:?} climbs above the root");
    }
    let Ok(path) = normalize(raw) else {
        let not_absolute = normalize(raw) == Err(PathError::NotAbsolute);
        assert_eq!(not_absolute, !raw.starts_with('/'), "{raw:?}");
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} → {path:?}: not absolute");
    assert!(!path.contains("//"), "{raw:?} → {path:?}: empty segment");
    assert_eq!(
        normalize(&path).as_deref(),
        Ok(path.as_str()),
        "{raw:?} → {path:?}: not idempotent"
    );
    let out = segments(&path);
    for (i, segment) in out.iter().enumerate() {
        let bytes = decoded(segment);
        let before_parameters = bytes.split(|b| *b == b';').next().unwrap_or_default();
        assert!(
            !matches!(before_parameters, b"." | b".."),
            "{raw:?} → {path:?}: dot segment {segment:?}"
        );
        assert!(
            !bytes.iter().any(|b| matches!(b, b'/' | b'\\' | 0)),
            "{raw:?} → {path:?}: encoded separator in {segment:?}"
        );
        assert!(
            !segment.is_empty() || (i == out.len() - 1),
            "{raw:?} → {path:?}: empty segment"
        );
    }
    // Never above the root, never a segment made up: the output's segments are the input's
    // (in their original encoding, in order), with dot segments resolved away.
    let mut input = segments(raw).into_iter();
    for segment in out.iter().filter(|s| !s.is_empty()) {
        assert!(
            input.any(|s| s == *segment),
            "{raw:?} → {path:?}: {segment:?} is not one of the input's segments in order"
        );
    }
    // `matched_prefix` agrees with whole segments, each read as an upstream reads it
    // (percent-decoded, `;` parameters cut off), and says how much of the path matched.
    let read = |segment: &str| {
        let bytes = decoded(segment);
        let before = bytes
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .to_vec();
        String::from_utf8_lossy(&before).into_owned()
    };
    let wanted = segments(prefix);
    let by_segments = prefix == "/"
        || (out.len() >= wanted.len()
            && out
                .iter()
                .zip(&wanted)
                .all(|(have, want)| read(have) == *want));
    let matched = matched_prefix(&path, prefix);
    assert_eq!(
        matched.is_some(),
        by_segments,
        "matched_prefix({path:?}, {prefix:?})"
    );
    if let Some(len) = matched {
        let head = path
            .get(..len)
            .unwrap_or_else(|| panic!("{path:?}: {len} is no boundary"));
        assert!(
            path[len..].is_empty() || path[len..].starts_with('/'),
            "matched_prefix({path:?}, {prefix:?}) = {len}: not a segment boundary"
        );
        if prefix != "/" {
            assert_eq!(segments(head).len(), wanted.len(), "{path:?} {prefix:?}");
        }
    }
    if prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/")) {
        assert!(matched.is_some(), "matched_prefix({path:?}, {prefix:?})");
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// `RefreshToken::parse`: whatever parses is the one canonical text of its family and
/// secret, so no second string names the same token.
pub fn check_refresh_token(text: &str) {
    let Ok(token) = RefreshToken::parse(text) else {
        return;
    };
    assert_eq!(token.expose(), text, "parse then expose changed the text");
    let (family, secret) = text.split_once('.').expect("a parsed token has a '.'");
    for (part, len) in [(family, 16), (secret, 32)] {
        let bytes = B64.decode(part).expect("a parsed part is base64url");
        assert_eq!(bytes.len(), len, "{part:?}");
        assert_eq!(B64.encode(&bytes), part, "a non-canonical encoding parsed");
    }
    assert_eq!(token.family_id, family);
    assert_eq!(
        RefreshToken::parse(&token.expose()).ok().as_ref(),
        Some(&token)
    );
}

const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The refresh token of 16 family and 32 secret bytes round-trips, and the text of any other
/// bytes never parses to it.
pub fn check_refresh_token_bytes(family: &[u8; 16], secret: &[u8; 32], other: &str) {
    let text = format!("{}.{}", B64.encode(family), B64.encode(secret));
    let token = RefreshToken::parse(&text).expect("a well-formed token parses");
    assert_eq!(token.expose(), text);
    // The last character of each part carries unused bits: only one spelling may parse.
    for last in [21, text.len() - 1] {
        for c in BASE64URL {
            let mut variant = text.clone().into_bytes();
            variant[last] = *c;
            check_refresh_token(std::str::from_utf8(&variant).expect("ASCII"));
        }
    }
    if other != text {
        assert_ne!(
            RefreshToken::parse(other).ok(),
            Some(token),
            "{other:?} parsed to the token of {text:?}"
        );
    }
}

/// `peek_claims` on an access token: never panics, and what it reads is the payload's JSON.
pub fn check_access_token(text: &str) {
    let Ok(claims) = peek_claims(text) else {
        return;
    };
    let parts: Vec<&str> = text.split('.').collect();
    assert_eq!(parts.len(), 3, "claims read from {} parts", parts.len());
    let payload: serde_json::Value =
        serde_json::from_slice(&B64.decode(parts[1]).expect("payload was base64url"))
            .expect("payload was JSON");
    assert_eq!(payload["sid"], claims.sid.as_str());
    assert_eq!(payload["exp"], claims.exp);
}

// ---------------------------------------------------------------------------------------------
// Cookies on the way in

/// The `(name, value)` pairs of `headers`' `Cookie` headers as actix-web reads them (and so
/// actix-session, which takes the first whose name equals the session cookie's).
fn actix_cookies(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let text = std::str::from_utf8(value.as_bytes()).ok()?;
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if let Ok(c) = Cookie::parse_encoded(pair) {
                out.push((c.name().to_owned(), c.value().to_owned()));
            }
        }
    }
    Some(out)
}

/// The raw `name=value` pairs of `headers`' `Cookie` headers, split as the gateway splits.
fn raw_pairs(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .map(|p| p.trim_ascii().to_vec())
        .filter(|p| !p.is_empty())
        .collect()
}

fn raw_name(pair: &[u8]) -> &[u8] {
    pair.iter()
        .position(|b| *b == b'=')
        .map_or(&[][..], |at| &pair[..at])
}

/// `keep_exact_name` on the request's `Cookie` header values: afterwards at most one pair can
/// be read as the session cookie — by the gateway's own rule or by actix-web's parser — and
/// it is the one that carried the exact name, alone, before; every other cookie is kept.
pub fn check_cookie_header<V: AsRef<[u8]>>(values: &[V]) {
    let mut headers = HeaderMap::new();
    for value in values {
        if let Ok(value) = HeaderValue::from_bytes(value.as_ref()) {
            headers.append(header::COOKIE, value);
        }
    }
    let before = raw_pairs(&headers);
    keep_exact_name(&mut headers, COOKIE);
    let after = raw_pairs(&headers);

    let exact_before: Vec<&Vec<u8>> = before
        .iter()
        .filter(|p| raw_name(p) == COOKIE.as_bytes())
        .collect();
    let ours_after: Vec<&Vec<u8>> = after
        .iter()
        .filter(|p| could_be_named(raw_name(p), COOKIE))
        .collect();
    match ours_after.as_slice() {
        [] => {}
        [one] => {
            assert_eq!(
                raw_name(one),
                COOKIE.as_bytes(),
                "{one:?} kept as the session cookie"
            );
            assert_eq!(exact_before.len(), 1, "kept one of several exact copies");
            assert_eq!(*one, exact_before[0]);
        }
        many => panic!("{} pairs could be the session cookie: {many:?}", many.len()),
    }
    if let Some(cookies) = actix_cookies(&headers) {
        let read_as_ours: Vec<_> = cookies.iter().filter(|(n, _)| n == COOKIE).collect();
        assert!(
            read_as_ours.len() <= 1,
            "actix-web reads {} session cookies in {:?}",
            read_as_ours.len(),
            headers.get_all(header::COOKIE).collect::<Vec<_>>()
        );
        if let [(_, value)] = read_as_ours.as_slice() {
            let [exact] = exact_before.as_slice() else {
                panic!("actix-web reads a lookalike as the session cookie: {value:?}");
            };
            let Ok(sent) = Cookie::parse_encoded(String::from_utf8_lossy(exact).into_owned())
            else {
                panic!("actix-web read {value:?} from a pair it cannot parse");
            };
            assert_eq!(sent.value(), value, "actix-web reads another value");
        }
    }
    // Nothing hides the session cookie: sent once under its exact name (with a value actix-web
    // can read), it is what actix-web reads.
    if let [exact] = exact_before.as_slice() {
        let sent = std::str::from_utf8(exact)
            .ok()
            .and_then(|pair| Cookie::parse_encoded(pair).ok());
        if let Some(sent) = sent {
            let read = actix_cookies(&headers);
            assert!(
                read.as_ref().is_some_and(|cookies| cookies
                    .iter()
                    .any(|(n, v)| n == COOKIE && v == sent.value())),
                "the session cookie is hidden: actix-web reads {read:?} from {:?}",
                headers.get_all(header::COOKIE).collect::<Vec<_>>()
            );
        }
    }
    // Nothing but the session cookie's lookalikes and duplicates, and pairs that are not UTF-8
    // (which would hide it), is dropped.
    let innocent: Vec<&Vec<u8>> = before
        .iter()
        .filter(|p| !could_be_named(raw_name(p), COOKIE) && std::str::from_utf8(p).is_ok())
        .collect();
    let kept_innocent: Vec<&Vec<u8>> = after
        .iter()
        .filter(|p| !could_be_named(raw_name(p), COOKIE))
        .collect();
    assert_eq!(innocent, kept_innocent, "an unrelated cookie was dropped");
}

// ---------------------------------------------------------------------------------------------
// Header filters

/// Names listed in `Connection` headers.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// `to_upstream`: the gateway's cookie never goes upstream under any name that could read as
/// it, only allow-listed cookies do, the client's `Authorization` and forwarding headers never
/// do (the gateway's own replace them), and neither do hop-by-hop headers.
pub fn check_to_upstream(incoming: &HeaderMap, allow: &[String], bearer: Option<&str>) {
    let out = to_upstream(incoming, allow, COOKIE, bearer, &CLIENT);
    let expected_bearer = bearer.and_then(|b| HeaderValue::from_str(&format!("Bearer {b}")).ok());
    let auth: Vec<&HeaderValue> = out.get_all(header::AUTHORIZATION).collect();
    assert_eq!(
        auth,
        expected_bearer.iter().collect::<Vec<_>>(),
        "Authorization upstream"
    );
    for (name, value) in &out {
        let name = name.as_str();
        if is_forwarding(name) {
            let ours = match name {
                "x-forwarded-for" => CLIENT.peer_ip,
                "x-forwarded-host" => CLIENT.host,
                "x-forwarded-proto" => CLIENT.proto,
                "x-request-id" => CLIENT.request_id,
                _ => panic!("the client's {name}: {value:?} went upstream"),
            };
            assert_eq!(value, ours, "{name} upstream is not the gateway's");
        }
        assert!(
            !HOP_BY_HOP.contains(&name) && name != "host" && name != "content-length",
            "{name} went upstream"
        );
    }
    for name in [
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
    ] {
        assert_eq!(out.get_all(name).count(), 1, "{name} upstream");
    }
    let gateway_set = [
        "authorization",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
    ];
    for listed in connection_listed(incoming) {
        if !gateway_set.contains(&listed.as_str()) {
            assert!(
                out.get(listed.as_str()).is_none(),
                "{listed} (in Connection) went upstream"
            );
        }
    }
    assert!(out.get_all(header::COOKIE).count() <= 1);
    for pair in raw_pairs(&out) {
        let name = raw_name(&pair);
        assert!(
            !could_be_named(name, COOKIE),
            "a cookie that could be the gateway's went upstream: {pair:?}"
        );
        let name = String::from_utf8_lossy(name);
        assert!(
            allow.iter().any(|a| a == name.trim()),
            "{name:?} is not allow-listed"
        );
    }
    if let Some(cookies) = actix_cookies(&out) {
        assert!(
            cookies.iter().all(|(n, _)| n != COOKIE),
            "an upstream parser reads the gateway's cookie"
        );
    }
}

/// A browser's name for a `Set-Cookie` header (RFC 6265bis §5.6): `None` when it ignores
/// the header, `""` for a nameless cookie.
fn browser_cookie_name(value: &[u8]) -> Option<&[u8]> {
    if value
        .iter()
        .any(|b| matches!(b, 0x00..=0x08 | 0x0a..=0x1f | 0x7f))
    {
        return None;
    }
    let pair = value.split(|b| *b == b';').next().unwrap_or_default();
    let name = match pair.iter().position(|b| *b == b'=') {
        Some(at) => &pair[..at],
        None => &[][..],
    };
    let is_wsp = |b: &u8| matches!(b, b' ' | b'\t');
    let start = name.iter().position(|b| !is_wsp(b)).unwrap_or(name.len());
    let end = name
        .iter()
        .rposition(|b| !is_wsp(b))
        .map_or(start, |e| e + 1);
    Some(&name[start..end])
}

/// `to_browser`: no upstream `Set-Cookie` that a browser could store under the gateway's
/// cookie name (or as a nameless cookie) passes, nor a hop-by-hop header; everything else
/// passes unchanged.
pub fn check_to_browser(upstream: &HeaderMap) {
    let out = to_browser(upstream, COOKIE);
    let listed = connection_listed(upstream);
    for (name, value) in &out {
        let name = name.as_str();
        assert!(
            !HOP_BY_HOP.contains(&name) && !listed.iter().any(|l| l == name),
            "hop-by-hop {name} reached the browser"
        );
        if name == "set-cookie" {
            if let Some(cookie_name) = browser_cookie_name(value.as_bytes()) {
                assert!(
                    !could_be_named(cookie_name, COOKIE),
                    "a browser stores {value:?} as {cookie_name:?}"
                );
            }
            if let Ok(c) = Cookie::parse(String::from_utf8_lossy(value.as_bytes()).into_owned()) {
                assert!(
                    !c.name().trim().eq_ignore_ascii_case(COOKIE),
                    "{value:?} passed"
                );
            }
        }
    }
    let passes = |name: &HeaderName| {
        name != header::SET_COOKIE
            && !HOP_BY_HOP.contains(&name.as_str())
            && !listed.iter().any(|l| l == name.as_str())
    };
    // A header map keeps the order of each name's values, not the order between names.
    let by_name = |map: &HeaderMap| {
        let mut pairs: Vec<(String, Vec<u8>)> = map
            .iter()
            .filter(|(n, _)| passes(n))
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs
    };
    assert_eq!(
        by_name(upstream),
        by_name(&out),
        "a plain header was changed"
    );
}

// ---------------------------------------------------------------------------------------------
// Opening the session cookie

/// Which key seals a value for [`CookieOpener::check_sealed`].
#[derive(Debug, Clone, Copy)]
pub enum SealedUnder {
    /// `cookie.key`.
    Current,
    /// One of `cookie.previous_keys`: opens, and is re-sealed under the current key.
    Previous,
    /// A key the gateway never had: never opens.
    Foreign,
}

/// What an opened cookie gave the signed-in step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Opened {
    pub at: String,
    pub rt: String,
}

/// The response of the opener app to one `Cookie` header.
struct Answer {
    status: u16,
    set_cookies: Vec<String>,
    opened: Option<Opened>,
}

type Call = Box<dyn Fn(HeaderValue) -> Answer>;

/// The gateway's cookie middleware (in `build_server`'s order) around a handler that takes the
/// signed-in step's first move — read the tokens, parse both — on a runtime of its own.
pub struct CookieOpener {
    keys: [Key; 3],
    call: Call,
}

/// The handler: what the session cookie opened to, if anything, and the parses that follow.
async fn opened(session: Session) -> HttpResponse {
    match signed_in::presented(&session) {
        Some(tokens) => {
            // What `Sessions::authenticate` parses next; neither may panic.
            let _ = RefreshToken::parse(&tokens.refresh);
            let _ = peek_claims(&tokens.access);
            HttpResponse::Ok().json(Opened {
                at: tokens.access,
                rt: tokens.refresh,
            })
        }
        None => HttpResponse::NoContent().finish(),
    }
}

impl Default for CookieOpener {
    fn default() -> Self {
        Self::new()
    }
}

impl CookieOpener {
    pub fn new() -> Self {
        let keys = [[1u8; 64], [2u8; 64], [3u8; 64]];
        let mut config = Config::default();
        config.cookie.previous_keys = vec![Redacted::new(
            &base64::engine::general_purpose::STANDARD.encode(keys[1]),
        )];
        let settings = web::Data::new(CookieSettings::new(&config, &keys[0]).expect("settings"));
        assert_eq!(settings.name, COOKIE);
        let rt = actix_web::rt::System::new();
        let app = rt.block_on(test::init_service(
            App::new()
                .app_data(settings.clone())
                .wrap(settings.middleware())
                .wrap(from_fn(session_cookie::clear_when_marked))
                .wrap(from_fn(session_cookie::reseal_previous))
                .wrap(from_fn(session_cookie::exact_name_only))
                .default_service(web::to(opened)),
        ));
        let call: Call = Box::new(move |cookie| {
            rt.block_on(async {
                let req = test::TestRequest::get()
                    .uri("/")
                    .insert_header((header::COOKIE, cookie))
                    .to_request();
                let res = test::call_service(&app, req).await;
                let status = res.status().as_u16();
                let set_cookies = res
                    .headers()
                    .get_all(header::SET_COOKIE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                let body = test::read_body(res).await;
                let opened = (status == 200)
                    .then(|| serde_json::from_slice(&body).expect("the handler's JSON"));
                Answer {
                    status,
                    set_cookies,
                    opened,
                }
            })
        });
        Self {
            keys: keys.map(|k| Key::from(&k)),
            call,
        }
    }

    /// `plain` sealed as the private cookie `name`, as actix-session seals its state.
    fn seal(&self, plain: &str, under: SealedUnder) -> String {
        let key = &self.keys[match under {
            SealedUnder::Current => 0,
            SealedUnder::Previous => 1,
            SealedUnder::Foreign => 2,
        }];
        let mut jar = CookieJar::new();
        jar.private_mut(key)
            .add(Cookie::new(COOKIE, plain.to_owned()));
        jar.get(COOKIE).expect("sealed").value().to_owned()
    }

    /// A `Cookie` header of arbitrary bytes (the browser's or an attacker's, without any key):
    /// never a server error, never a session.
    pub fn check_unsealed(&self, cookie: &[u8]) {
        let Ok(value) = HeaderValue::from_bytes(cookie) else {
            return;
        };
        let answer = (self.call)(value);
        assert!(answer.status < 500, "{} for {cookie:?}", answer.status);
        assert_eq!(answer.opened, None, "{cookie:?} opened without a key");
        assert!(
            answer.set_cookies.is_empty(),
            "{cookie:?} got {:?}",
            answer.set_cookies
        );
    }

    /// `plain` sealed under `under` and sent as the session cookie: it opens exactly when
    /// actix-session's cookie store would read both tokens from it (a JSON object of
    /// JSON-encoded strings, at most 4064 bytes) under a key the gateway holds; under a
    /// previous key the answer re-seals it under the current key.
    pub fn check_sealed(&self, plain: &str, under: SealedUnder) {
        let sealed = self.seal(plain, under);
        let value = HeaderValue::from_str(&format!("{COOKIE}={sealed}")).expect("header");
        let answer = (self.call)(value);
        assert!(answer.status < 500, "{} for {plain:?}", answer.status);
        let expected = match under {
            SealedUnder::Foreign => None,
            SealedUnder::Current | SealedUnder::Previous => expected_tokens(plain),
        };
        assert_eq!(answer.opened, expected, "{plain:?} sealed under {under:?}");
        match under {
            SealedUnder::Previous => {
                let [resealed] = answer.set_cookies.as_slice() else {
                    panic!("re-sealed as {:?}", answer.set_cookies);
                };
                let cookie = Cookie::parse_encoded(resealed.clone()).expect("a cookie");
                assert_eq!(cookie.name(), COOKIE);
                let mut jar = CookieJar::new();
                jar.add_original(cookie.into_owned());
                let reopened = jar.private(&self.keys[0]).get(COOKIE);
                assert_eq!(
                    reopened.as_ref().map(Cookie::value),
                    Some(plain),
                    "the re-sealed cookie does not open under the current key"
                );
            }
            SealedUnder::Current | SealedUnder::Foreign => {
                assert!(answer.set_cookies.is_empty(), "{:?}", answer.set_cookies)
            }
        }
    }
}

/// The tokens actix-session's cookie store and `web::cookie::read` give for a session state.
fn expected_tokens(plain: &str) -> Option<Opened> {
    if plain.len() > 4064 {
        return None;
    }
    let state: HashMap<String, String> = serde_json::from_str(plain).ok()?;
    let at = serde_json::from_str::<String>(state.get("at")?).ok()?;
    let rt = serde_json::from_str::<String>(state.get("rt")?).ok()?;
    Some(Opened { at, rt })
}

/// A session state as actix-session writes it: `{"at": "<json>", "rt": "<json>"}`.
pub fn session_state(at: &str, rt: &str) -> String {
    let encode = |s: &str| serde_json::to_string(s).expect("a string serialises");
    serde_json::json!({ "at": encode(at), "rt": encode(rt) }).to_string()
}
