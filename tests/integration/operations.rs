//! Operations over real HTTP: login throttling (on the memory store, and across instances on a
//! real `redis-server`), cookie and signing key rotation without logging anyone out (instances
//! sharing a real `redis-server`), and the OpenAPI document checked against the routes the
//! gateway answers: exactly the declared methods (405 with `Allow` for any other), the limits
//! it states enforced as stated, and the gateway's own cookie, origin and CSRF rules in it.

use std::{collections::BTreeSet, time::Duration};

use crate::common::*;
use base64::Engine as _;
use bffgate::{
    config::{AuthMode, Config, Redacted},
    tokens::{generate_ed25519_pkcs8, pkcs8_pem},
};
use reqwest::Method;
use serde_json::Value;

const EMAIL: &str = "dora@example.com";

fn throttled(mut config: Config, free: u32, ip_free: u32) -> Config {
    config.throttle.free_attempts = free;
    config.throttle.ip_free_attempts = ip_free;
    config.throttle.base_delay = Duration::from_secs(1);
    config.throttle.max_delay = Duration::from_secs(8);
    config
}

/// A gateway on the memory store that throttles after `free` failures per email and address,
/// and after `ip_free` per address.
async fn throttled_gateway(free: u32, ip_free: u32) -> TestGateway {
    TestGateway::start(throttled(test_config(), free, ip_free), EMAIL).await
}

async fn attempt(gw: &TestGateway, email: &str, password: &str) -> reqwest::Response {
    login_request(gw, email, password)
        .send()
        .await
        .expect("login request")
}

fn retry_after(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned())
}

#[actix_web::test]
async fn repeated_failures_get_429_with_a_doubling_retry_after_and_success_resets() {
    let gw = throttled_gateway(2, 50).await;
    // Two attempts are free; the second starts a delay.
    for _ in 0..2 {
        assert_eq!(attempt(&gw, EMAIL, "wrong password").await.status(), 401);
    }
    // Locked for 1 s: even the right password is refused, without running Argon2.
    let res = attempt(&gw, EMAIL, PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert_eq!(retry_after(&res).as_deref(), Some("1"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.expect("problem");
    assert_eq!(problem["type"], "urn:bffgate:problem:too-many-requests");

    gw.clock.advance(Duration::from_secs(1));
    assert_eq!(attempt(&gw, EMAIL, "wrong password").await.status(), 401);
    let res = attempt(&gw, EMAIL, PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert_eq!(retry_after(&res).as_deref(), Some("2"), "the delay doubles");

    gw.clock.advance(Duration::from_secs(2));
    assert_eq!(attempt(&gw, EMAIL, PASSWORD).await.status(), 200);
    // The success reset this email's counter (its attempt had started a 4 s delay): the
    // allowance is free again.
    assert_eq!(attempt(&gw, EMAIL, "wrong password").await.status(), 401);
    assert_eq!(attempt(&gw, EMAIL, PASSWORD).await.status(), 200);
}

#[actix_web::test]
async fn unknown_emails_are_throttled_exactly_like_known_ones() {
    let gw = throttled_gateway(2, 50).await;
    let mut answers = Vec::new();
    for email in [EMAIL, "nobody@example.com"] {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(attempt(&gw, email, "wrong password").await.status());
        }
        let res = attempt(&gw, email, "wrong password").await;
        let status = res.status();
        let after = retry_after(&res);
        let body = res.text().await.expect("body");
        answers.push((statuses, status, after, body));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].1, 429);
}

#[actix_web::test]
async fn failures_from_one_address_throttle_every_email_from_it() {
    let gw = throttled_gateway(10, 3).await;
    for n in 0..3 {
        let email = format!("guess{n}@example.com");
        assert_eq!(attempt(&gw, &email, "wrong password").await.status(), 401);
    }
    let res = attempt(&gw, EMAIL, PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert_eq!(retry_after(&res).as_deref(), Some("1"));
}

#[actix_web::test]
async fn throttling_holds_across_gateway_instances() {
    let redis = TestRedis::new();
    let config = throttled(redis.config(), 2, 50);
    let a = TestGateway::start(config.clone(), EMAIL).await;
    let b = TestGateway::join(config).await;
    for _ in 0..2 {
        assert_eq!(attempt(&a, EMAIL, "wrong password").await.status(), 401);
    }
    assert_eq!(attempt(&b, EMAIL, PASSWORD).await.status(), 429);
}

/// Sends `n` wrong passwords for one account at once, spread over `gateways`; how many were
/// evaluated (401) and how many refused before Argon2 (429).
async fn parallel_guesses(gateways: &[&TestGateway], n: usize) -> (usize, usize) {
    let guesses = (0..n).map(|i| attempt(gateways[i % gateways.len()], EMAIL, "guess"));
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let count = |s| statuses.iter().filter(|x| **x == s).count();
    assert_eq!(count(401) + count(429), n, "{statuses:?}");
    (count(401), count(429))
}

#[actix_web::test]
async fn parallel_guesses_evaluate_at_most_the_free_allowance() {
    let gw = throttled_gateway(5, 50).await;
    assert_eq!(parallel_guesses(&[&gw], 50).await, (5, 45));
}

#[actix_web::test]
async fn parallel_guesses_across_instances_evaluate_at_most_the_free_allowance() {
    let redis = TestRedis::new();
    let config = throttled(redis.config(), 5, 50);
    let a = TestGateway::start(config.clone(), EMAIL).await;
    let b = TestGateway::join(config).await;
    assert_eq!(parallel_guesses(&[&a, &b], 50).await, (5, 45));
}

/// A login for `EMAIL` with `password`, as a proxy in front would send it for a browser at
/// `ip`; its status.
async fn forwarded_attempt(gw: &TestGateway, ip: &str, password: &str) -> u16 {
    forwarded_login(gw, EMAIL, ip, password).await
}

async fn forwarded_login(gw: &TestGateway, email: &str, ip: &str, password: &str) -> u16 {
    let login = login_request(gw, email, password).header("x-forwarded-for", ip.to_owned());
    status(login).await
}

/// The gateway behind a load balancer at 127.0.0.1 (the tests' peer address).
fn behind_a_load_balancer(mut config: Config) -> Config {
    config.trusted_proxies = vec!["127.0.0.1/32".into()];
    config
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_browser_is_throttled_on_its_own_address() {
    let gw = TestGateway::start(
        behind_a_load_balancer(throttled(test_config(), 10, 3)),
        EMAIL,
    )
    .await;
    // Someone guesses made-up emails: their address runs out of attempts...
    for n in 0..3 {
        let email = format!("guess{n}@example.com");
        assert_eq!(forwarded_login(&gw, &email, "198.51.100.1", "x").await, 401);
    }
    assert_eq!(forwarded_attempt(&gw, "198.51.100.1", PASSWORD).await, 429);
    // ...and only theirs: the real user, behind the same load balancer, signs in.
    assert_eq!(forwarded_attempt(&gw, "203.0.113.7", PASSWORD).await, 200);
}

#[actix_web::test]
async fn forged_forwarding_headers_change_nothing_without_a_trusted_proxy() {
    let gw = throttled_gateway(10, 3).await;
    for n in 0..3 {
        let forged = format!("198.51.100.{n}");
        let email = format!("guess{n}@example.com");
        assert_eq!(forwarded_login(&gw, &email, &forged, "x").await, 401);
    }
    // Every guess came from the peer address, whatever the header said.
    assert_eq!(forwarded_attempt(&gw, "203.0.113.7", PASSWORD).await, 429);
}

#[actix_web::test]
async fn guesses_for_one_account_from_many_addresses_are_slowed_but_never_past_max_delay() {
    let mut config = behind_a_load_balancer(throttled(test_config(), 100, 100));
    config.throttle.account_free_attempts = 3;
    config.throttle.max_delay = Duration::from_secs(4);
    let gw = TestGateway::start(config, EMAIL).await;
    // Each guess from a different address (the pair and address keys never fill up).
    for n in 0..3 {
        let guess = forwarded_attempt(&gw, &format!("198.51.100.{n}"), "guess").await;
        assert_eq!(guess, 401);
    }
    // The account's allowance is spent: the owner, from an address of their own, waits too.
    assert_eq!(forwarded_attempt(&gw, "203.0.113.7", PASSWORD).await, 429);
    // The delays double, but never past max_delay: after it, the owner is let in.
    for wait in [1, 2, 4, 4] {
        gw.clock.advance(Duration::from_secs(wait));
        assert_eq!(forwarded_attempt(&gw, "198.51.100.9", "guess").await, 401);
    }
    gw.clock.advance(Duration::from_secs(4));
    assert_eq!(forwarded_attempt(&gw, "203.0.113.7", PASSWORD).await, 200);
}

fn key(fill: u8) -> Redacted {
    Redacted::new(&base64::engine::general_purpose::STANDARD.encode([fill; 64]))
}

fn with_cookie_keys(mut config: Config, current: Redacted, previous: Vec<Redacted>) -> Config {
    config.cookie.key = Some(current);
    config.cookie.previous_keys = previous;
    config
}

fn test_key() -> Redacted {
    Redacted::new(&base64::engine::general_purpose::STANDARD.encode(cookie_key_bytes()))
}

/// The first instance of a deployment on a Redis of its own, and a session on it: the Redis,
/// the configuration more instances start from, the gateway and the session's cookie value.
async fn first_instance() -> (TestRedis, Config, TestGateway, String) {
    let redis = TestRedis::new();
    let base = redis.config();
    let gw = TestGateway::start(base.clone(), EMAIL).await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    (redis, base, gw, cookie)
}

#[actix_web::test]
async fn cookie_key_rotation_keeps_sessions_and_reseals_cookies() {
    let (_redis, base, _old, c1) = first_instance().await;

    // The new key, with the old one as previous: the old cookie works and comes back sealed
    // with the new key.
    let rotated = TestGateway::join(with_cookie_keys(base.clone(), key(7), vec![test_key()])).await;
    let res = send_with_cookie(&rotated, Method::GET, "/auth/session", &c1).await;
    assert_eq!(res.status(), 200);
    let resealed = set_cookie(&res).expect("the cookie is re-sealed");
    assert_ne!(resealed.value(), c1);
    assert_eq!(resealed.http_only(), Some(true));
    assert_eq!(resealed.path(), Some("/"));

    // Once the previous key is gone, only the re-sealed cookie opens.
    let done = TestGateway::join(with_cookie_keys(base, key(7), vec![])).await;
    assert_eq!(session_status(&done, resealed.value()).await, 200);
    assert_eq!(session_status(&done, &c1).await, 401);
}

#[actix_web::test]
async fn a_grace_replay_across_a_cookie_key_rotation_still_gets_the_successor() {
    let (_redis, base, old, c1) = first_instance().await;
    let c2 = refreshed(&old, &c1).await;

    // A request carrying c1 (sent before c2 arrived) reaches an instance with the new key:
    // the successor sealed under the old key must still open.
    let rotated = TestGateway::join(with_cookie_keys(base, key(9), vec![test_key()])).await;
    let replay = with_cookie(&rotated, Method::POST, "/auth/refresh", &c1);
    assert_eq!(status(replay).await, 200, "grace replay");
    let session = session_status(&rotated, &c2).await;
    assert_eq!(session, 200, "the session is not revoked");
}

fn write_key(dir: &tempfile::TempDir, name: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, pkcs8_pem(&generate_ed25519_pkcs8().expect("key"))).expect("write");
    path
}

#[actix_web::test]
async fn signing_key_rotation_keeps_issued_tokens_verifiable() {
    let upstream = crate::common::upstream::start();
    let redis = TestRedis::new();
    let dir = tempfile::tempdir().expect("dir");
    let (k1, k2) = (write_key(&dir, "k1.pem"), write_key(&dir, "k2.pem"));
    let mut base = redis.config();
    base.routes = vec![route("/api", &upstream.base, AuthMode::Required)];
    let mut first = base.clone();
    first.jwt.signing_key_file = Some(k1.clone());
    let old = TestGateway::start(first, EMAIL).await;
    let c1 = login_cookie_of(&old, EMAIL).await;

    let mut second = base;
    second.jwt.signing_key_file = Some(k2);
    second.jwt.previous_keys = vec![k1];
    let new = TestGateway::join(second).await;
    let jwks: Value = json(raw_client().get(new.url("/.well-known/jwks.json"))).await;
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));

    // A token the old key signed, still within its lifetime, goes upstream and verifies
    // against the new gateway's JWKS.
    let orders = with_cookie(&new, Method::GET, "/api/orders", &c1);
    assert_eq!(status(orders).await, 200);
    let old_token = upstream.last().bearer().expect("bearer").to_owned();
    let (old_kid, _) = verify_with_jwks(&new, &old_token, true).await;
    assert_eq!(old_kid, jwks["keys"][1]["kid"]);

    // The next rotation signs with the new key.
    let c2 = refreshed(&new, &c1).await;
    let orders = with_cookie(&new, Method::GET, "/api/orders", &c2);
    assert_eq!(status(orders).await, 200);
    let new_token = upstream.last().bearer().expect("bearer").to_owned();
    let (new_kid, claims) = verify_with_jwks(&new, &new_token, true).await;
    assert_eq!(new_kid, jwks["keys"][0]["kid"]);
    assert_eq!(claims.email, EMAIL);
}

#[actix_web::test]
async fn openapi_document_matches_the_routes_that_exist() {
    // /metrics is documented; it is served on the public listener only when configured so.
    let mut config = test_config();
    config.metrics.public = true;
    let gw = TestGateway::start(config, EMAIL).await;
    let doc: Value = json(raw_client().get(gw.url("/openapi.json"))).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("operations") {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut expected: BTreeSet<(String, String)> = [
        ("POST", "/auth/login"),
        ("POST", "/auth/refresh"),
        ("POST", "/auth/logout"),
        ("POST", "/auth/logout-all"),
        ("GET", "/auth/session"),
        ("GET", "/auth/sessions"),
        ("DELETE", "/auth/sessions/{id}"),
        ("GET", "/auth/providers"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    // `/metrics` is listed exactly when this listener serves it (see the metrics
    // configuration).
    if status(raw_client().get(gw.url("/metrics"))).await == 200 {
        expected.insert(("GET".to_owned(), "/metrics".to_owned()));
    }
    assert_eq!(
        documented, expected,
        "the document lists the gateway's endpoints"
    );

    // Every documented operation exists: it answers with one of its documented statuses
    // (an unknown path would fall through to the static files and answer 404).
    for (method, path) in &documented {
        let operation = &doc["paths"][path][method.to_lowercase()];
        let statuses: Vec<&String> = operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .collect();
        let url = gw.url(&path.replace("{id}", "no-such-session"));
        let mut request = raw_client()
            .request(method.parse().expect("method"), url)
            .header("x-csrf", "1");
        if path == "/auth/login" {
            request = request.json(&serde_json::json!({}));
        }
        let status = status(request).await.to_string();
        assert!(
            statuses.iter().any(|s| **s == status),
            "{method} {path} answered {status}, documented {statuses:?}"
        );
    }
}

/// Every method the document declares for `path`, upper-case.
fn declared_methods(doc: &Value, path: &str) -> BTreeSet<String> {
    doc["paths"][path]
        .as_object()
        .expect("a documented path")
        .keys()
        .map(|m| m.to_uppercase())
        .collect()
}

#[actix_web::test]
async fn undeclared_methods_on_the_gateways_own_paths_answer_405_with_allow() {
    let gw = TestGateway::memory(EMAIL).await;
    let doc: Value = json(raw_client().get(gw.url("/openapi.json"))).await;
    let paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    assert!(paths.iter().any(|p| p == "/readyz"), "{paths:?}");
    let methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
    ];
    for path in &paths {
        let declared = declared_methods(&doc, path);
        let url = gw.url(&path.replace("{id}", "no-such-session"));
        for method in methods.iter().filter(|m| !declared.contains(**m)) {
            let res = raw_client()
                .request(method.parse().expect("method"), &url)
                .header("x-csrf", "1")
                .send()
                .await
                .expect("request");
            assert_eq!(res.status(), 405, "{method} {path}");
            let allow: BTreeSet<String> = res
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                .to_str()
                .expect("ascii")
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, declared, "{method} {path}: Allow");
            if *method != "HEAD" {
                assert_eq!(
                    res.headers()["content-type"],
                    "application/problem+json",
                    "{method} {path}"
                );
                let problem: Value = res.json().await.expect("problem");
                assert_eq!(problem["type"], "urn:bffgate:problem:method-not-allowed");
            }
        }
    }
}

#[actix_web::test]
async fn the_gateways_own_paths_never_fall_through_to_the_browser_app() {
    // A browser app that happens to hold files where the gateway's endpoints live.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("auth")).expect("mkdir");
    std::fs::write(dir.path().join("auth").join("page.html"), "app").expect("write");
    std::fs::write(dir.path().join("healthz"), "app").expect("write");
    let mut config = test_config();
    config.static_dir = dir.path().to_owned();
    let gw = TestGateway::start(config, EMAIL).await;

    let unknown = raw_client()
        .get(gw.url("/auth/page.html"))
        .header("x-csrf", "1")
        .send()
        .await
        .expect("request");
    assert_eq!(
        unknown.status(),
        404,
        "an unknown /auth path is the gateway's"
    );
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(unknown.headers()["cache-control"], "no-store");
    let head = raw_client()
        .head(gw.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(head.status(), 405, "HEAD /healthz is not the app's file");
}

#[actix_web::test]
async fn login_field_limits_in_the_document_are_the_ones_the_server_enforces() {
    let mut config = test_config();
    // Every wrong login below must be judged, not throttled.
    config.throttle.enabled = false;
    let gw = TestGateway::start(config, EMAIL).await;
    let doc: Value = json(raw_client().get(gw.url("/openapi.json"))).await;
    let body = &doc["components"]["schemas"]["LoginRequest"];
    assert_eq!(body["additionalProperties"], false);
    for field in ["email", "password"] {
        let schema = &body["properties"][field];
        let min = schema["minLength"].as_u64().expect("minLength") as usize;
        let max = schema["maxLength"].as_u64().expect("maxLength") as usize;
        assert!(min >= 1 && max > min, "{field}: {schema}");
        // Lengths count characters (code points), as JSON Schema does.
        for (len, valid) in [(min - 1, false), (min, true), (max, true), (max + 1, false)] {
            let value = "é".repeat(len);
            let (email, password) = match field {
                "email" => (value.as_str(), "wrong password"),
                _ => (EMAIL, value.as_str()),
            };
            let status = status(login_request(&gw, email, password)).await;
            if valid {
                assert_eq!(status, 401, "{field} of {len} characters is schema-valid");
            } else {
                assert_eq!(status, 400, "{field} of {len} characters is schema-invalid");
            }
        }
    }
    // Only emptiness is refused: an email of spaces is schema-valid, and simply matches
    // nobody.
    assert_eq!(
        status(login_request(&gw, "   ", "wrong password")).await,
        401
    );
    let unknown_field = raw_client()
        .post(gw.url("/auth/login"))
        .header("x-csrf", "1")
        .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD, "remember": true }));
    assert_eq!(status(unknown_field).await, 400);
}

#[actix_web::test]
async fn the_document_names_this_gateways_cookie_origin_and_csrf_header() {
    let mut config = test_config();
    config.cookie.secure = false;
    config.public_origin = "http://app.example.test:8080".into();
    config.metrics.enabled = false;
    let gw = TestGateway::start(config, EMAIL).await;
    let doc: Value = json(raw_client().get(gw.url("/openapi.json"))).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["session_cookie"]["name"],
        "bff"
    );
    assert!(
        doc["paths"].get("/metrics").is_none(),
        "/metrics is not served here, so not documented"
    );
    assert_eq!(status(raw_client().get(gw.url("/metrics"))).await, 404);

    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let header = |name: &str| {
                operation["parameters"]
                    .as_array()
                    .and_then(|ps| {
                        ps.iter()
                            .find(|p| p["in"] == "header" && p["name"] == name)
                            .cloned()
                    })
                    .unwrap_or(Value::Null)
            };
            let responses = operation["responses"].as_object().expect("responses");
            if !path.starts_with("/auth/") {
                assert!(header("X-CSRF").is_null(), "{method} {path}");
                continue;
            }
            let csrf = header("X-CSRF");
            assert_eq!(csrf["required"], true, "{method} {path}");
            assert_eq!(csrf["schema"]["enum"], serde_json::json!(["1"]));
            assert_eq!(
                header("Origin")["schema"]["enum"],
                serde_json::json!(["http://app.example.test:8080"]),
                "{method} {path}"
            );
            assert!(responses.contains_key("403"), "{method} {path}");
            for (status, response) in responses {
                let no_store = &response["headers"]["Cache-Control"];
                assert_eq!(no_store["required"], true, "{method} {path} {status}");
                assert_eq!(no_store["schema"]["const"], "no-store");
            }
        }
    }

    // The CSRF refusal carries no-store like every other /auth answer.
    let refused = raw_client()
        .post(gw.url("/auth/login"))
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()["cache-control"], "no-store");
}
