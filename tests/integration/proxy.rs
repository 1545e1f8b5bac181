//! The gateway in front of a real upstream on port 0 that records what it receives, with a
//! cookie-keeping client in front. The gateway runs on the memory store: what is tested here
//! is the proxy, not the store (`http_auth` runs sessions against Redis).

use std::{
    io::{Read as _, Write as _},
    sync::atomic::Ordering,
    time::Duration,
};

use crate::common::{upstream::Upstream, *};
use bffgate::{
    config::{AuthMode, Config, RouteConfig},
    tokens::AccessClaims,
};
use reqwest::Method;

pub const EMAIL: &str = "carol@example.com";

/// A route as these tests use it: a 2 s timeout, and the client's `theme` cookie forwarded.
pub fn route(prefix: &str, upstream: &str, auth: AuthMode) -> RouteConfig {
    RouteConfig {
        timeout: Duration::from_secs(2),
        forward_cookies: vec!["theme".into()],
        ..crate::common::route(prefix, upstream, auth)
    }
}

pub struct Stack {
    pub upstream: Upstream,
    pub gw: TestGateway,
}

pub async fn stack(tweak: impl FnOnce(&mut Config, &str)) -> Stack {
    let upstream = crate::common::upstream::start();
    let mut config = test_config();
    config.routes = vec![route("/api", &upstream.base, AuthMode::Required)];
    tweak(&mut config, &upstream.base);
    let gw = TestGateway::start(config, EMAIL).await;
    Stack { upstream, gw }
}

/// The claims of a token the upstream received, verified through the gateway's JWKS. The
/// gateway's clock is manual: `exp` is checked against it in the tests instead.
async fn verified_claims(gw: &TestGateway, token: &str) -> AccessClaims {
    verify_with_jwks(gw, token, false).await.1
}

#[actix_web::test]
async fn upstream_gets_a_verifiable_bearer_and_never_the_gateway_cookie() {
    let s = stack(|_, _| {}).await;
    let session = cookie_header(&login_cookie_of(&s.gw, EMAIL).await);
    let res = raw_client()
        .get(s.gw.url("/api/things?x=1"))
        .header("x-csrf", "1")
        .header("authorization", "Bearer forged-by-the-client")
        .header("cookie", format!("theme=dark; {session}; tracking=abc"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "client-req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-upstream"], "yes");
    assert!(
        res.headers().get("x-hop").is_none(),
        "hop-by-hop header named in Connection"
    );
    assert!(
        set_cookie(&res).is_none(),
        "an upstream Set-Cookie for the gateway cookie is dropped"
    );
    assert_eq!(res.headers()["x-request-id"], "client-req-42");
    let seen = s.upstream.last();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_str()),
        ("/api/things", "x=1")
    );
    let claims = verified_claims(&s.gw, seen.bearer().expect("bearer")).await;
    assert_eq!(claims.email, EMAIL);
    let cookie = seen.header("cookie").unwrap_or("");
    assert!(
        !cookie.contains(COOKIE),
        "gateway cookie leaked upstream: {cookie}"
    );
    assert!(
        cookie.contains("theme=dark") && !cookie.contains("tracking"),
        "{cookie}"
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(s.gw.addr.to_string().as_str())
    );
    assert_eq!(seen.header("x-request-id"), Some("client-req-42"));
    assert!(seen.header("x-csrf").is_some());
}

#[actix_web::test]
async fn required_route_without_a_session_is_401_problem_json_not_a_redirect() {
    let s = stack(|_, _| {}).await;
    let res = raw_client()
        .get(s.gw.url("/api/things"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(s.upstream.seen().is_empty());
}

#[actix_web::test]
async fn optional_and_none_routes_pass_anonymous_requests_without_a_token() {
    let s = stack(|c, base| {
        c.routes.push(route("/public", base, AuthMode::Optional));
        c.routes.push(route("/open", base, AuthMode::None));
    })
    .await;
    let anonymous = raw_client();
    assert_eq!(
        status(anonymous.get(s.gw.url("/public/x")).header("x-csrf", "1")).await,
        200
    );
    assert_eq!(s.upstream.last().bearer(), None);
    // `none` needs neither a session nor the CSRF header.
    assert_eq!(status(anonymous.get(s.gw.url("/open/x"))).await, 200);
    assert_eq!(s.upstream.last().bearer(), None);
    // Signed in, `optional` adds the token and `none` still does not.
    let browser = browser();
    login(&s.gw, &browser, EMAIL).await;
    browser.get(s.gw.url("/public/x")).send().await.unwrap();
    assert!(s.upstream.last().bearer().is_some());
    browser.get(s.gw.url("/open/x")).send().await.unwrap();
    assert_eq!(s.upstream.last().bearer(), None);
    // A dead session on an optional route: anonymous, and the cookie is removed.
    let res = send_with_cookie(&s.gw, Method::GET, "/public/x", "garbage").await;
    assert_eq!(res.status(), 200);
    assert_eq!(s.upstream.last().bearer(), None);
    assert!(set_cookie(&res).is_some_and(|c| c.value().is_empty()));
}

#[actix_web::test]
async fn a_due_token_is_refreshed_before_the_upstream_sees_it() {
    let s = stack(|_, _| {}).await;
    let browser = browser();
    login(&s.gw, &browser, EMAIL).await;
    browser.get(s.gw.url("/api/a")).send().await.unwrap();
    let first = s.upstream.last().bearer().unwrap().to_owned();
    s.gw.clock.advance(Duration::from_secs(4 * 60 + 30));
    let res = browser.get(s.gw.url("/api/b")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        set_cookie(&res).is_some(),
        "the rotated cookie rides on the proxied response"
    );
    let second = s.upstream.last().bearer().unwrap().to_owned();
    assert_ne!(first, second);
    let claims = verified_claims(&s.gw, &second).await;
    assert!(
        claims.exp * 1000 > s.gw.clock_now() + 60_000,
        "upstream got a fresh token"
    );
}

#[actix_web::test]
async fn twenty_concurrent_proxied_requests_with_a_due_token_rotate_once() {
    let s = stack(|_, _| {}).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    s.gw.clock.advance(Duration::from_secs(4 * 60 + 30));
    let paths: Vec<String> = (0..20).map(|i| format!("/api/item/{i}")).collect();
    let requests = paths
        .iter()
        .map(|p| send_with_cookie(&s.gw, Method::GET, p, &cookie));
    let responses = futures_util::future::join_all(requests).await;
    let mut successors = std::collections::HashSet::new();
    for res in &responses {
        assert_eq!(res.status(), 200);
        let c = set_cookie(res).expect("each response carries the successor");
        successors.insert(open_cookie(c.value()).1);
    }
    assert_eq!(successors.len(), 1);
    assert_eq!(s.gw.live_generation(&cookie).await, 1);
    assert_eq!(s.upstream.seen().len(), 20);
}

#[actix_web::test]
async fn a_revoked_family_gets_401_on_the_next_proxied_request() {
    let s = stack(|_, _| {}).await;
    let (laptop, phone) = (browser(), browser());
    login(&s.gw, &laptop, EMAIL).await;
    login(&s.gw, &phone, EMAIL).await;
    assert_eq!(status(phone.get(s.gw.url("/api/x"))).await, 200);
    laptop
        .post(s.gw.url("/auth/logout-all"))
        .send()
        .await
        .unwrap();
    let before = s.upstream.seen().len();
    assert_eq!(status(phone.get(s.gw.url("/api/x"))).await, 401);
    assert_eq!(
        s.upstream.seen().len(),
        before,
        "nothing reaches the upstream"
    );
}

#[actix_web::test]
async fn upstream_401_on_get_refreshes_and_retries_once() {
    let s = stack(|_, _| {}).await;
    let browser = browser();
    login(&s.gw, &browser, EMAIL).await;
    s.upstream.shared.flaky_401s.store(1, Ordering::SeqCst);
    let res = browser.get(s.gw.url("/api/flaky")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        set_cookie(&res).is_some(),
        "the forced refresh sets a new cookie"
    );
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0].bearer(), seen[1].bearer());
    // A second 401 is passed through: one retry only.
    s.upstream.shared.flaky_401s.store(2, Ordering::SeqCst);
    assert_eq!(status(browser.get(s.gw.url("/api/flaky"))).await, 401);
    assert_eq!(s.upstream.seen().len(), 4);
    // Not for POST.
    s.upstream.shared.flaky_401s.store(1, Ordering::SeqCst);
    assert_eq!(
        status(browser.post(s.gw.url("/api/flaky")).body("x")).await,
        401
    );
    assert_eq!(s.upstream.seen().len(), 5);
}

#[actix_web::test]
async fn request_bodies_keep_their_length_and_reach_the_upstream() {
    let s = stack(|_, _| {}).await;
    let browser = browser();
    login(&s.gw, &browser, EMAIL).await;
    let res = browser
        .post(s.gw.url("/api/upload"))
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    let counted: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        (counted["len"].as_u64(), counted["sum"].as_u64()),
        (Some(1000), Some(7000))
    );
    let seen = s.upstream.last();
    assert_eq!(seen.header("content-length"), Some("1000"));
    assert_eq!(seen.header("transfer-encoding"), None);
    // A body-less DELETE goes upstream without a body.
    browser
        .delete(s.gw.url("/api/thing/1"))
        .send()
        .await
        .unwrap();
    let seen = s.upstream.last();
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.header("transfer-encoding"), None);
}

#[actix_web::test]
async fn unreachable_upstream_is_502_and_slow_is_504_and_the_session_survives() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let s = stack(|c, _| {
        c.routes.push(route("/down", &dead, AuthMode::Required));
        c.routes[0].timeout = Duration::from_millis(300);
    })
    .await;
    let browser = browser();
    login(&s.gw, &browser, EMAIL).await;
    let res = browser.get(s.gw.url("/down/x")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(set_cookie(&res).is_none());
    let res = browser.get(s.gw.url("/api/slow")).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert!(set_cookie(&res).is_none());
    assert_eq!(status(browser.get(s.gw.url("/auth/session"))).await, 200);
}

#[actix_web::test]
async fn csrf_is_required_on_cookie_routes_unless_the_route_opts_out() {
    let s = stack(|c, base| {
        let mut downloads = route("/files", base, AuthMode::Required);
        downloads.csrf = false;
        c.routes.push(downloads);
    })
    .await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let plain = |path: &str| {
        raw_client()
            .get(s.gw.url(path))
            .header("cookie", cookie_header(&cookie))
    };
    assert_eq!(status(plain("/api/x")).await, 403);
    assert_eq!(status(plain("/files/x")).await, 200);
    let cross = plain("/api/x")
        .header("x-csrf", "1")
        .header("sec-fetch-site", "cross-site");
    assert_eq!(status(cross).await, 403);
    let foreign = plain("/api/x")
        .header("x-csrf", "1")
        .header("origin", "https://evil.example");
    assert_eq!(status(foreign).await, 403);
}

/// Sends a raw request line, so that no client library normalises the path first; returns
/// the status code. Runs on a blocking thread.
async fn raw_get(gw: &TestGateway, target: &str) -> u16 {
    let (addr, target) = (gw.addr, target.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap()
    })
    .await
    .unwrap()
}

#[actix_web::test]
async fn dot_segments_cannot_reach_a_route_they_do_not_name() {
    let s = stack(|c, base| {
        c.routes.push(route("/open", base, AuthMode::None));
    })
    .await;
    // `/open/../api/x` is `/api/x`: the required route, which wants a session.
    for target in ["/open/../api/x", "/open/%2e%2e/api/x", "/open/.%2E/api/x"] {
        assert_eq!(raw_get(&s.gw, target).await, 401, "{target}");
    }
    assert!(s.upstream.seen().is_empty());
    for target in ["/open/..%2fapi/x", "/open/%2e%2e%5capi", "/../etc/passwd"] {
        assert_eq!(raw_get(&s.gw, target).await, 400, "{target}");
    }
    assert!(s.upstream.seen().is_empty());
    // Paths that stay inside the route reach it, normalised.
    assert_eq!(raw_get(&s.gw, "/open/a/./b/../c").await, 200);
    assert_eq!(s.upstream.last().path, "/open/a/c");
}

#[actix_web::test]
async fn server_sent_events_are_flushed_as_they_arrive() {
    let s = stack(|_, _| {}).await;
    let browser = browser();
    login(&s.gw, &browser, EMAIL).await;
    let res = browser.get(s.gw.url("/api/sse")).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut res = res;
    // The upstream holds its second event until we have seen the first through the gateway:
    // a buffering gateway would never deliver it, and this read would time out.
    let first = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .expect("first event arrives before the stream ends")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    s.upstream.shared.sse_gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: two\n\n");
}

#[actix_web::test]
async fn unmatched_paths_fall_through_to_static_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>app</h1>").unwrap();
    std::fs::create_dir(dir.path().join("js")).unwrap();
    std::fs::write(dir.path().join("js/app.js"), "console.log(1)").unwrap();
    let static_dir = dir.path().to_owned();
    let s = stack(move |c, _| c.static_dir = static_dir).await;
    let client = raw_client();
    let index = client.get(s.gw.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(index.headers()["x-content-type-options"], "nosniff");
    assert_eq!(index.headers()["referrer-policy"], "no-referrer");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert_eq!(index.text().await.unwrap(), "<h1>app</h1>");
    let js = client.get(s.gw.url("/js/app.js")).send().await.unwrap();
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert_eq!(status(client.get(s.gw.url("/missing.txt"))).await, 404);
    assert!(s.upstream.seen().is_empty());
}
