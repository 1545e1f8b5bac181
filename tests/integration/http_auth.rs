//! `/auth/*` over real HTTP with a cookie jar. Sessions, rotation, expiry and revocation run
//! against a real `redis-server` each test starts; the cookie, login answers, CSRF and request
//! validation, where the store is not the point, against the memory store. The gateway runs
//! with a manual clock, so expiry and grace windows are crossed without waiting.

use std::time::Duration;

use crate::common::*;
use bffgate::store::FamilyState;
use reqwest::Method;

const EMAIL: &str = "alice@example.com";

/// A gateway on a Redis of its own, with the user [`EMAIL`].
async fn redis_gateway() -> (TestRedis, TestGateway) {
    let redis = TestRedis::new();
    let gw = TestGateway::start(redis.config(), EMAIL).await;
    (redis, gw)
}

/// A Redis gateway whose sessions idle out after `idle_min` and end after `max_min` minutes,
/// and a browser signed in to it.
async fn signed_in_with_lifetimes(
    idle_min: u64,
    max_min: u64,
) -> (TestRedis, TestGateway, reqwest::Client) {
    let redis = TestRedis::new();
    let mut config = redis.config();
    config.session.idle_timeout = Duration::from_secs(idle_min * 60);
    config.session.max_lifetime = Duration::from_secs(max_min * 60);
    let gw = TestGateway::start(config, EMAIL).await;
    let browser = browser();
    login(&gw, &browser, EMAIL).await;
    (redis, gw, browser)
}

fn is_removal(res: &reqwest::Response) -> bool {
    set_cookie(res).is_some_and(|c| {
        c.value().is_empty() && c.max_age() == Some(actix_web::cookie::time::Duration::ZERO)
    })
}

#[actix_web::test]
async fn login_sets_a_sealed_host_cookie_and_no_token_in_the_body() {
    let gw = TestGateway::memory(EMAIL).await;
    let res = login_request(&gw, "  Alice@Example.com ", PASSWORD)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let raw_set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    let cookie = set_cookie(&res).unwrap();
    assert_eq!(cookie.name(), "__Host-bff");
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site(),
        Some(actix_web::cookie::SameSite::Strict)
    );
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.domain(), None);
    assert_eq!(
        cookie.max_age(),
        Some(actix_web::cookie::time::Duration::days(14))
    );
    let (access, refresh) = open_cookie(cookie.value());
    // The cookie is sealed: neither token is readable in it.
    assert!(!raw_set_cookie.contains(&refresh) && !raw_set_cookie.contains(&access));
    let body = res.text().await.unwrap();
    assert!(!body.contains(&refresh) && !body.contains(&access));
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["user"]["email"], EMAIL);
    assert_eq!(body["user"]["roles"], serde_json::json!(["tester"]));
    assert_eq!(body["session"]["id"], family_of(cookie.value()));
    for k in ["access_expires_at", "idle_expires_at", "max_expires_at"] {
        assert!(body["session"][k].as_str().unwrap().ends_with('Z'), "{k}");
    }
}

#[actix_web::test]
async fn access_token_verifies_against_the_published_jwks() {
    let gw = TestGateway::memory(EMAIL).await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let (access, _) = open_cookie(&cookie);
    let (_, claims) = verify_with_jwks(&gw, &access, true).await;
    assert_eq!(claims.email, EMAIL);
    assert_eq!(claims.sid, family_of(&cookie));
    assert_eq!(claims.exp - claims.iat, 300);
}

#[actix_web::test]
async fn wrong_password_and_unknown_email_get_identical_answers() {
    let gw = TestGateway::memory(EMAIL).await;
    let attempt = |email: &'static str, password: &'static str| {
        let request = login_request(&gw, email, password);
        async move {
            let res = request.send().await.unwrap();
            let status = res.status();
            let has_cookie = res.headers().contains_key("set-cookie");
            (status, has_cookie, res.text().await.unwrap())
        }
    };
    let wrong_password = attempt(EMAIL, "not the password").await;
    let unknown_email = attempt("nobody@example.com", PASSWORD).await;
    assert_eq!(wrong_password.0, 401);
    assert!(!wrong_password.1);
    assert_eq!(wrong_password, unknown_email);
    assert!(wrong_password
        .2
        .contains("urn:bffgate:problem:invalid-credentials"));
}

#[actix_web::test]
async fn session_endpoint_reports_the_user_through_the_cookie_jar() {
    let (_redis, gw) = redis_gateway().await;
    let browser = browser();
    login(&gw, &browser, EMAIL).await;
    let res = browser.get(gw.url("/auth/session")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(set_cookie(&res).is_none(), "no rotation when not due");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], EMAIL);
}

#[actix_web::test]
async fn session_refreshes_when_the_access_token_is_due() {
    let (_redis, gw) = redis_gateway().await;
    let browser = browser();
    let first = login(&gw, &browser, EMAIL).await;
    gw.clock.advance(Duration::from_secs(4 * 60 + 1)); // within refresh_before (60 s) of expiry
    let res = browser.get(gw.url("/auth/session")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(set_cookie(&res).is_some(), "a due access token is rotated");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_ne!(
        body["session"]["access_expires_at"],
        first["session"]["access_expires_at"]
    );
    assert_eq!(body["session"]["id"], first["session"]["id"]);
    // The jar now holds the successor, which keeps working.
    assert_eq!(status(browser.get(gw.url("/auth/session"))).await, 200);
}

#[actix_web::test]
async fn fifty_concurrent_refreshes_with_one_cookie_all_succeed_with_one_successor() {
    let (_redis, gw) = redis_gateway().await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let requests = (0..50).map(|_| send_with_cookie(&gw, Method::POST, "/auth/refresh", &cookie));
    let responses = futures_util::future::join_all(requests).await;
    let mut successors = std::collections::HashSet::new();
    let mut new_cookies = Vec::new();
    for res in &responses {
        assert_eq!(res.status(), 200);
        let c = set_cookie(res).expect("every winner and loser gets the successor cookie");
        assert!(!c.value().is_empty(), "no request may clear the cookie");
        successors.insert(open_cookie(c.value()).1);
        new_cookies.push(c.value().to_owned());
    }
    assert_eq!(successors.len(), 1, "exactly one successor refresh token");
    assert_eq!(
        gw.live_generation(&cookie).await,
        1,
        "one rotation for fifty requests"
    );
    // Every cookie handed out works.
    for c in new_cookies.iter().step_by(10) {
        assert_eq!(session_status(&gw, c).await, 200);
    }
}

#[actix_web::test]
async fn replay_within_grace_gets_the_same_successor() {
    let (_redis, gw) = redis_gateway().await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let c1 = refreshed(&gw, &c0).await;
    gw.clock.advance(Duration::from_secs(29)); // the refresh response was "lost"; retry
    let c2 = refreshed(&gw, &c0).await;
    assert_eq!(open_cookie(&c1).1, open_cookie(&c2).1);
    assert_eq!(session_status(&gw, &c1).await, 200);
}

#[actix_web::test]
async fn replay_after_grace_revokes_the_family_and_the_newest_cookie_too() {
    let redis = TestRedis::new();
    let mut config = redis.config();
    config.session.reuse_grace = Duration::from_secs(1);
    let gw = TestGateway::start(config, EMAIL).await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let c1 = refreshed(&gw, &c0).await;
    // Grace is judged by Redis's clock: it must really pass (that is what is tested).
    gw.clock.advance(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let replay = send_with_cookie(&gw, Method::POST, "/auth/refresh", &c0).await;
    assert_eq!(replay.status(), 401);
    assert!(is_removal(&replay), "the replayed cookie is cleared");
    let newest = send_with_cookie(&gw, Method::GET, "/auth/session", &c1).await;
    assert_eq!(newest.status(), 401);
    assert!(is_removal(&newest));
    assert_eq!(
        gw.family_state(&c0).await,
        FamilyState::Revoked {
            reason: "reuse".into()
        }
    );
}

#[actix_web::test]
async fn idle_timeout_ends_a_session_but_activity_slides_it() {
    let (_redis, gw, browser) = signed_in_with_lifetimes(10, 60).await;
    gw.clock.advance(Duration::from_secs(8 * 60));
    assert_eq!(status(browser.get(gw.url("/auth/session"))).await, 200);
    gw.clock.advance(Duration::from_secs(8 * 60)); // 16 min since login, 8 since the rotation
    assert_eq!(status(browser.get(gw.url("/auth/session"))).await, 200);
    gw.clock.advance(Duration::from_secs(10 * 60 + 1));
    let res = browser.get(gw.url("/auth/session")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(is_removal(&res));
}

#[actix_web::test]
async fn absolute_lifetime_is_never_extended_by_activity() {
    let (_redis, gw, browser) = signed_in_with_lifetimes(10, 25).await;
    for _ in 0..3 {
        gw.clock.advance(Duration::from_secs(8 * 60));
        assert_eq!(status(browser.post(gw.url("/auth/refresh"))).await, 200);
    }
    gw.clock.advance(Duration::from_secs(60 + 1)); // 25 min + 1 s after login
    assert_eq!(status(browser.post(gw.url("/auth/refresh"))).await, 401);
}

#[actix_web::test]
async fn tampered_or_garbage_cookie_is_401_and_cleared() {
    let gw = TestGateway::memory(EMAIL).await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let mut bytes = cookie.clone().into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    for value in [tampered.as_str(), "garbage", "%%%"] {
        let res = send_with_cookie(&gw, Method::GET, "/auth/session", value).await;
        assert_eq!(res.status(), 401, "{value}");
        assert!(is_removal(&res), "{value}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    // The real cookie is unaffected.
    assert_eq!(session_status(&gw, &cookie).await, 200);
}

#[actix_web::test]
async fn logout_revokes_the_family_and_clears_the_cookie() {
    let (_redis, gw) = redis_gateway().await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let res = send_with_cookie(&gw, Method::POST, "/auth/logout", &cookie).await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["clear-site-data"], "\"cookies\"");
    assert!(is_removal(&res));
    assert_eq!(session_status(&gw, &cookie).await, 401);
    // Without any session, logout still answers 204.
    let anonymous = raw_client()
        .post(gw.url("/auth/logout"))
        .header("x-csrf", "1");
    assert_eq!(status(anonymous).await, 204);
}

#[actix_web::test]
async fn logout_all_ends_every_session_of_the_user() {
    let (_redis, gw) = redis_gateway().await;
    let (laptop, phone) = (browser(), browser());
    login(&gw, &laptop, EMAIL).await;
    login(&gw, &phone, EMAIL).await;
    assert_eq!(status(laptop.post(gw.url("/auth/logout-all"))).await, 204);
    assert_eq!(status(phone.get(gw.url("/auth/session"))).await, 401);
    assert_eq!(status(laptop.get(gw.url("/auth/session"))).await, 401);
}

#[actix_web::test]
async fn sessions_are_listed_and_one_can_be_revoked() {
    let (_redis, gw) = redis_gateway().await;
    let (laptop, phone) = (browser(), browser());
    login(&gw, &laptop, EMAIL).await;
    let phone_login = login(&gw, &phone, EMAIL).await;
    let list: Vec<serde_json::Value> = json(laptop.get(gw.url("/auth/sessions"))).await;
    assert_eq!(list.len(), 2);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    assert_eq!(list[0]["ip"], "127.0.0.1");
    let phone_id = phone_login["session"]["id"].as_str().unwrap();
    let revoke = laptop.delete(gw.url(&format!("/auth/sessions/{phone_id}")));
    assert_eq!(status(revoke).await, 204);
    assert_eq!(status(phone.get(gw.url("/auth/session"))).await, 401);
    assert_eq!(status(laptop.get(gw.url("/auth/session"))).await, 200);
    let unknown = laptop.delete(gw.url("/auth/sessions/not-a-session"));
    assert_eq!(status(unknown).await, 404);
}

#[actix_web::test]
async fn another_users_session_cannot_be_revoked() {
    let (_redis, gw) = redis_gateway().await;
    gw.add_user("bob@example.com", vec![]).await;
    let (alice, bob) = (browser(), browser());
    let alice_login = login(&gw, &alice, EMAIL).await;
    login(&gw, &bob, "bob@example.com").await;
    let id = alice_login["session"]["id"].as_str().unwrap();
    let revoke = bob.delete(gw.url(&format!("/auth/sessions/{id}")));
    assert_eq!(status(revoke).await, 404);
    assert_eq!(status(alice.get(gw.url("/auth/session"))).await, 200);
}

#[actix_web::test]
async fn a_disabled_users_family_dies_at_its_next_refresh() {
    let (_redis, gw) = redis_gateway().await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let mut user = gw.store.user_by_email(EMAIL).await.unwrap().unwrap();
    user.disabled = true;
    gw.store.update_user(&user).await.unwrap();
    let res = send_with_cookie(&gw, Method::POST, "/auth/refresh", &cookie).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        gw.family_state(&cookie).await,
        FamilyState::Revoked {
            reason: "user_disabled".into()
        }
    );
}

#[actix_web::test]
async fn csrf_header_and_same_origin_are_required_on_auth_routes() {
    let gw = TestGateway::memory(EMAIL).await;
    // A login without the header, and `login_request`'s (which carries it) with more.
    let no_header = raw_client()
        .post(gw.url("/auth/login"))
        .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 403);
    assert!(!no_header.headers().contains_key("set-cookie"));
    let login = || login_request(&gw, EMAIL, PASSWORD);
    let cross_site = login().header("sec-fetch-site", "cross-site");
    assert_eq!(status(cross_site).await, 403);
    let foreign = login()
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        foreign.headers()["content-type"],
        "application/problem+json"
    );
    let same_origin = login()
        .header("origin", "http://localhost:8080")
        .header("sec-fetch-site", "same-origin");
    assert_eq!(status(same_origin).await, 200);
}

#[actix_web::test]
async fn malformed_bodies_get_specific_answers() {
    let gw = TestGateway::memory(EMAIL).await;
    let post = |body: &'static str, content_type: &'static str| {
        raw_client()
            .post(gw.url("/auth/login"))
            .header("x-csrf", "1")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let cases = [
        (post("{not json", "application/json").await.unwrap(), 400),
        (
            post(r#"{"email":"a@b.c"}"#, "application/json")
                .await
                .unwrap(),
            400,
        ),
        (
            post("email=a&password=b", "application/x-www-form-urlencoded")
                .await
                .unwrap(),
            415,
        ),
    ];
    for (res, status) in cases {
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    // Over the 16 KiB body limit (a login's fields fit within it however they are escaped).
    assert_eq!(
        status(login_request(&gw, EMAIL, &"x".repeat(20_000))).await,
        413
    );
}

#[actix_web::test]
async fn unauthenticated_requests_get_problem_json_and_unknown_paths_404() {
    let gw = TestGateway::memory(EMAIL).await;
    let res = raw_client()
        .get(gw.url("/auth/session"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["type"], "urn:bffgate:problem:unauthenticated");
    let res = raw_client().get(gw.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
}

#[actix_web::test]
async fn redis_outage_answers_503_keeps_the_cookie_and_the_session_survives_a_restart() {
    let mut server = RedisServer::start_with_aof();
    let config = with_redis(test_config(), &server.url(), "outage:");
    let gw = TestGateway::start(config, EMAIL).await;
    let browser = browser();
    login(&gw, &browser, EMAIL).await;
    assert_eq!(status(browser.get(gw.url("/readyz"))).await, 200);

    server.stop();
    for path in ["/auth/session", "/auth/sessions"] {
        let res = browser.get(gw.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 503, "{path}");
        assert!(res.headers().contains_key("retry-after"));
        assert!(
            !res.headers().contains_key("set-cookie"),
            "an outage never touches the cookie"
        );
    }
    // A refresh that is due meets the outage too, and still keeps the cookie.
    gw.clock.advance(Duration::from_secs(4 * 60 + 30));
    let res = browser.post(gw.url("/auth/refresh")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(!res.headers().contains_key("set-cookie"));
    let res = browser.post(gw.url("/auth/logout")).send().await.unwrap();
    assert_eq!(
        res.status(),
        503,
        "logout cannot revoke, so it keeps the cookie"
    );
    assert!(!res.headers().contains_key("set-cookie"));
    assert_eq!(status(browser.get(gw.url("/readyz"))).await, 503);
    assert_eq!(status(browser.get(gw.url("/healthz"))).await, 200);

    server.restart();
    assert_eq!(
        status(browser.get(gw.url("/auth/session"))).await,
        200,
        "the same cookie works once Redis is back"
    );
    assert_eq!(status(browser.get(gw.url("/readyz"))).await, 200);
}

#[actix_web::test]
async fn login_while_redis_is_down_is_503() {
    let mut server = RedisServer::start();
    let config = with_redis(test_config(), &server.url(), "down:");
    let gw = TestGateway::start(config, EMAIL).await;
    server.stop();
    let res = login_request(&gw, EMAIL, PASSWORD).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
}

#[actix_web::test]
async fn memory_store_gateway_serves_the_same_flow() {
    let gw = TestGateway::memory(EMAIL).await;
    let browser = browser();
    login(&gw, &browser, EMAIL).await;
    assert_eq!(status(browser.get(gw.url("/auth/session"))).await, 200);
    assert_eq!(status(browser.post(gw.url("/auth/refresh"))).await, 200);
    assert_eq!(status(browser.post(gw.url("/auth/logout"))).await, 204);
    assert_eq!(status(browser.get(gw.url("/auth/session"))).await, 401);
}
