//! The browser boundary, as an adversarial review attacked it: cookies that shadow the session
//! cookie, cross-site and same-site requests, WebSocket origins, a hostile upstream's
//! `Set-Cookie`, client-made forwarding headers, path segments that upstreams read as dot
//! segments. Each test failed on the code before its fix, for the reason reported.

use std::time::Duration;

use crate::common::{upstream::HOSTILE_SET_COOKIES, *};
use crate::proxy::{route, stack, EMAIL};
use bffgate::config::AuthMode;
use reqwest::Method;

const VICTIM: &str = "victim@example.com";

/// `__Host-bff` with its `-` percent-encoded: what a sibling subdomain or a plain-HTTP
/// response can plant, since browsers apply no prefix rule to that name.
fn lookalike(cookie_value: &str) -> String {
    cookie_header(cookie_value).replacen("__Host-bff=", "__Host%2Dbff=", 1)
}

/// A gateway where the attacker (`EMAIL`) and the victim are signed in: their cookies.
async fn attacker_and_victim() -> (TestGateway, String, String) {
    let gw = TestGateway::memory(EMAIL).await;
    gw.add_user(VICTIM, vec![]).await;
    let attacker = login_cookie_of(&gw, EMAIL).await;
    let victim = login_cookie_of(&gw, VICTIM).await;
    (gw, attacker, victim)
}

async fn whoami(gw: &TestGateway, cookie: String) -> (u16, serde_json::Value) {
    let cookie = reqwest::header::HeaderValue::from_bytes(cookie.as_bytes()).expect("a header");
    let res = raw_client()
        .get(gw.url("/auth/session"))
        .header("x-csrf", "1")
        .header("cookie", cookie)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

#[actix_web::test]
async fn a_percent_encoded_lookalike_never_shadows_the_session_cookie() {
    let (gw, attacker, victim) = attacker_and_victim().await;

    let planted = format!("{}; {}", lookalike(&attacker), cookie_header(&victim));
    let (status, body) = whoami(&gw, planted.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["user"]["email"], VICTIM,
        "served as the planted session"
    );

    // Padded with white space that Rust's `str::trim` (and so actix's cookie parser) strips.
    for pad in ["\u{a0}", "\u{3000}"] {
        let planted = format!(
            "{pad}{}; {}",
            cookie_header(&attacker),
            cookie_header(&victim)
        );
        let (status, body) = whoami(&gw, planted).await;
        assert_eq!(status, 200);
        assert_eq!(
            body["user"]["email"], VICTIM,
            "served as the {pad:?}-padded session"
        );
    }

    let garbage = format!("__Host%2Dbff=garbage; {}", cookie_header(&victim));
    let (status, body) = whoami(&gw, garbage).await;
    assert_eq!(
        status, 200,
        "a planted garbage value must not log the victim out"
    );
    assert_eq!(body["user"]["email"], VICTIM);

    // When a refresh is due, the new cookie is the victim's successor, not the attacker's.
    gw.clock.advance(Duration::from_secs(4 * 60 + 30));
    let res = raw_client()
        .get(gw.url("/auth/session"))
        .header("x-csrf", "1")
        .header("cookie", planted)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let renewed = set_cookie_value(&res);
    assert_eq!(family_of(&renewed), family_of(&victim));
}

#[actix_web::test]
async fn a_lookalike_padded_with_unicode_whitespace_never_shadows_the_session_cookie() {
    // actix-web trims a cookie name with `str::trim` (Unicode whitespace): U+00A0 before the
    // name made a second `__Host-bff` that browsers send without any prefix rule.
    let (gw, attacker, victim) = attacker_and_victim().await;
    for space in ["\u{a0}", "\u{3000}", "\u{2003}"] {
        let planted = format!(
            "{}; {}",
            cookie_header(&attacker).replacen("__Host-bff=", &format!("{space}__Host-bff="), 1),
            cookie_header(&victim)
        );
        let (status, body) = whoami(&gw, planted).await;
        assert_eq!(status, 200, "{space:?}");
        assert_eq!(
            body["user"]["email"], VICTIM,
            "{space:?}: served as the planted session"
        );
    }
}

#[actix_web::test]
async fn a_planted_cookie_that_is_not_utf8_never_hides_the_session_cookie() {
    // actix-web reads no cookie at all from a `Cookie` header that is not UTF-8: one planted
    // byte made every request of the victim anonymous for as long as it stayed.
    let gw = TestGateway::memory(EMAIL).await;
    let mine = login_cookie_of(&gw, EMAIL).await;
    let mut header = b"planted=\xff\xfe; ".to_vec();
    header.extend_from_slice(cookie_header(&mine).as_bytes());
    let res = raw_client()
        .get(gw.url("/auth/session"))
        .header("x-csrf", "1")
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(&header).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the session cookie was hidden");
}

#[actix_web::test]
async fn the_exact_name_twice_is_ambiguous_and_serves_neither_session() {
    let (gw, attacker, victim) = attacker_and_victim().await;
    let both = format!("{}; {}", cookie_header(&attacker), cookie_header(&victim));
    let (status, _) = whoami(&gw, both).await;
    assert_eq!(status, 401);
    // Each alone still works: nothing was revoked.
    assert_eq!(whoami(&gw, cookie_header(&victim)).await.0, 200);
    assert_eq!(whoami(&gw, cookie_header(&attacker)).await.0, 200);
}

#[actix_web::test]
async fn cookie_routes_refuse_same_site_and_foreign_origin_unsafe_requests() {
    let s = stack(|_, _| {}).await;
    let session = cookie_header(&login_cookie_of(&s.gw, EMAIL).await);
    let post = |site: Option<&str>, origin: Option<&str>| {
        let mut r = raw_client()
            .post(s.gw.url("/api/notes"))
            .header("x-csrf", "1")
            .header("cookie", session.clone())
            .body("{}");
        if let Some(site) = site {
            r = r.header("sec-fetch-site", site.to_owned());
        }
        if let Some(origin) = origin {
            r = r.header("origin", origin.to_owned());
        }
        r
    };
    assert_eq!(status(post(Some("same-site"), None)).await, 403);
    assert_eq!(
        status(post(Some("same-origin"), Some("http://127.0.0.1:9"))).await,
        403,
        "an Origin header, when present, must be the public origin"
    );
    assert!(s.upstream.seen().is_empty());
    assert_eq!(
        status(post(Some("same-origin"), Some("http://localhost:8080"))).await,
        200
    );
    assert_eq!(status(post(Some("none"), None)).await, 200);
    assert_eq!(status(post(None, None)).await, 200);
}

#[actix_web::test]
async fn csrf_false_drops_only_the_header_requirement() {
    let s = stack(|config, base| {
        let mut open = route("/files", base, AuthMode::Required);
        open.csrf = false;
        config.routes.push(open);
    })
    .await;
    let session = cookie_header(&login_cookie_of(&s.gw, EMAIL).await);
    let cross_site_form = raw_client()
        .post(s.gw.url("/files/upload"))
        .header("cookie", session.clone())
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body("hello");
    assert_eq!(status(cross_site_form).await, 403);
    let cross_site_fetch = raw_client()
        .post(s.gw.url("/files/upload"))
        .header("cookie", session.clone())
        .header("sec-fetch-site", "cross-site")
        .body("hello");
    assert_eq!(status(cross_site_fetch).await, 403);
    assert!(
        s.upstream.seen().is_empty(),
        "nothing cross-site was forwarded"
    );
    // What csrf = false is for: a plain same-origin download without the header.
    let download = raw_client()
        .get(s.gw.url("/files/report.pdf"))
        .header("cookie", session)
        .header("sec-fetch-site", "same-origin");
    assert_eq!(status(download).await, 200);
}

#[actix_web::test]
async fn upstream_set_cookies_that_could_be_the_gateways_are_dropped() {
    let s = stack(|_, _| {}).await;
    let res = with_cookie(
        &s.gw,
        Method::GET,
        "/api/hostile-cookies",
        &login_cookie_of(&s.gw, EMAIL).await,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let kept: Vec<&[u8]> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    assert_eq!(kept, vec![*HOSTILE_SET_COOKIES.last().unwrap()]);
}

#[actix_web::test]
async fn client_forwarding_headers_never_reach_the_upstream() {
    let s = stack(|_, _| {}).await;
    let req = with_cookie(
        &s.gw,
        Method::GET,
        "/api/things",
        &login_cookie_of(&s.gw, EMAIL).await,
    )
    .header("x-forwarded-proto", "https")
    .header("x-forwarded-host", "evil.example")
    .header("x-forwarded-for", "6.6.6.6")
    .header("forwarded", "for=6.6.6.6;host=evil.example;proto=https")
    .header("x-real-ip", "6.6.6.6")
    .header("x-forwarded-uri", "/admin")
    .header("x-original-host", "evil.example");
    assert_eq!(status(req).await, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(s.gw.addr.to_string().as_str())
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-real-ip"), None);
    assert_eq!(seen.header("x-forwarded-uri"), None);
    assert_eq!(seen.header("x-original-host"), None);
}

#[actix_web::test]
async fn client_headers_of_any_x_forwarded_name_never_reach_the_upstream() {
    // Found by the property tests: only a list of X-Forwarded-* names was removed, so
    // X-Forwarded-Client-Cert (a TLS identity for Envoy-style upstreams) or X-Forwarded-Uri
    // went upstream as the client wrote them.
    let s = stack(|_, _| {}).await;
    let req = with_cookie(
        &s.gw,
        Method::GET,
        "/api/things",
        &login_cookie_of(&s.gw, EMAIL).await,
    )
    .header(
        "x-forwarded-client-cert",
        "By=spiffe://evil;URI=spiffe://admin",
    )
    .header("x-forwarded-uri", "/admin")
    .header("X-Forwarded-User", "admin");
    assert_eq!(status(req).await, 200);
    let seen = s.upstream.last();
    for name in [
        "x-forwarded-client-cert",
        "x-forwarded-uri",
        "x-forwarded-user",
    ] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
}

#[actix_web::test]
async fn path_segments_an_upstream_reads_as_dot_segments_are_refused() {
    let s = stack(|_, _| {}).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    for path in [
        "/api/files/..;/secret",
        "/api/files/..;jsessionid=1/secret",
        "/api/files/%2e%2e;/secret",
        "/api/files/.;x/secret",
        "/api/..;/admin",
    ] {
        let res = with_cookie(&s.gw, Method::GET, path, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{path}");
    }
    assert!(s.upstream.seen().is_empty(), "nothing reached the upstream");
    // Parameters on an ordinary segment are the upstream's business.
    let res = with_cookie(&s.gw, Method::GET, "/api/files;v=2/report", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(s.upstream.last().path, "/api/files;v=2/report");
}

/// Two gateway instances on one Redis whose clocks disagree by `skew` (the second ahead when
/// positive), with a 1 s grace window.
async fn skewed_pair(skew_s: i64) -> (TestRedis, TestGateway, TestGateway) {
    let redis = TestRedis::new();
    let mut config = redis.config();
    config.session.reuse_grace = Duration::from_secs(1);
    let a = TestGateway::start(config.clone(), EMAIL).await;
    let b = TestGateway::join(config).await;
    if skew_s >= 0 {
        b.clock.advance(Duration::from_secs(skew_s.unsigned_abs()));
    } else {
        a.clock.advance(Duration::from_secs(skew_s.unsigned_abs()));
    }
    (redis, a, b)
}

#[actix_web::test]
async fn a_benign_replay_on_an_instance_whose_clock_runs_ahead_is_not_theft() {
    // Two tabs refresh the same cookie at the same moment, on two instances; the second
    // instance's clock is 5 s ahead, more than the 1 s grace window.
    let (_redis, a, b) = skewed_pair(5).await;
    let c0 = login_cookie_of(&a, EMAIL).await;
    let c1 = refreshed(&a, &c0).await;
    let res = send_with_cookie(&b, Method::POST, "/auth/refresh", &c0).await;
    assert_eq!(
        res.status(),
        200,
        "judged by the gateway's clock: a false theft verdict"
    );
    assert_eq!(open_cookie(&set_cookie_value(&res)).1, open_cookie(&c1).1);
    assert_eq!(session_status(&a, &c1).await, 200);
}

#[actix_web::test]
async fn a_real_replay_on_an_instance_whose_clock_runs_behind_is_still_theft() {
    let (_redis, a, b) = skewed_pair(-5).await;
    let c0 = login_cookie_of(&a, EMAIL).await;
    let _c1 = refreshed(&a, &c0).await;
    // The grace window passes on the store's clock (what is being tested, not a wait for
    // readiness); the replaying instance's clock still says it has not.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let res = send_with_cookie(&b, Method::POST, "/auth/refresh", &c0).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        a.family_state(&c0).await,
        bffgate::store::FamilyState::Revoked {
            reason: "reuse".into()
        }
    );
}

#[actix_web::test]
async fn a_stricter_route_cannot_be_dodged_by_spelling_its_prefix_differently() {
    let s = stack(|config, base| {
        config.routes = vec![
            route("/api", base, AuthMode::None),
            route("/api/admin", base, AuthMode::Required),
        ];
    })
    .await;
    for path in [
        "/api/admin;x/users",
        "/api/%61dmin/users",
        "/api/admin%3bx/users",
    ] {
        let anonymous = raw_client().get(s.gw.url(path)).header("x-csrf", "1");
        assert_eq!(status(anonymous).await, 401, "{path}");
    }
    assert!(s.upstream.seen().is_empty(), "nothing reached the upstream");
    let open = raw_client()
        .get(s.gw.url("/api/public"))
        .header("x-csrf", "1");
    assert_eq!(status(open).await, 200);
}
