//! `/metrics` after a scripted session: login, proxied call, refresh, replay attack, logout,
//! failed and throttled logins — each counted, with bounded labels only. One test in its own
//! binary, because the Prometheus recorder is per process.

mod common;

use std::collections::BTreeMap;

use bffgate::config::AuthMode;
use common::*;
use reqwest::Method;

const EMAIL: &str = "erin@example.com";

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, label_text) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let have: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if labels.iter().all(|(k, v)| have.get(k) == Some(v)) {
            assert!(found.is_none(), "{name} {labels:?} matches twice");
            found = Some(value.parse::<f64>().expect("a number"));
        }
    }
    found.unwrap_or(0.0)
}

#[actix_web::test]
async fn metrics_are_not_served_on_the_public_listener_by_default() {
    let gw = TestGateway::start(test_config(), EMAIL).await;
    assert_eq!(status(raw_client().get(gw.url("/metrics"))).await, 404);
}

#[actix_web::test]
async fn metrics_count_a_scripted_session() {
    let upstream = common::upstream::start();
    let mut config = test_config();
    config.throttle.free_attempts = 2;
    config.metrics.public = true;
    config.routes = vec![route("/api", &upstream.base, AuthMode::Required)];
    let gw = TestGateway::start(config, EMAIL).await;
    // A disabled account: its right password and a wrong one are counted alike, so the
    // counters are no oracle for passwords.
    let disabled = "disabled@example.com";
    gw.add_user(disabled, vec![]).await;
    bffgate::session::users::Users::new(gw.store.clone())
        .set_disabled(disabled, true)
        .await
        .expect("disabled");
    for password in [PASSWORD, "wrong password"] {
        let res = login_request(&gw, disabled, password).send().await;
        assert_eq!(res.expect("login").status(), 401);
    }

    // A browser signs in, calls the API and signs out.
    let browser = browser();
    let signed_in = login(&gw, &browser, EMAIL).await;
    assert_eq!(status(browser.get(gw.url("/api/hello"))).await, 200);
    assert_eq!(status(browser.post(gw.url("/auth/logout"))).await, 204);
    // Another session rotates twice; replaying its first token is a reuse attack.
    let c1 = login_cookie_of(&gw, EMAIL).await;
    let c2 = refreshed(&gw, &c1).await;
    refreshed(&gw, &c2).await;
    let replay = with_cookie(&gw, Method::POST, "/auth/refresh", &c1);
    assert_eq!(status(replay).await, 401);
    // Two failed logins, then a throttled one (which runs no Argon2).
    for _ in 0..2 {
        let res = login_request(&gw, EMAIL, "wrong password").send().await;
        assert_eq!(res.expect("login").status(), 401);
    }
    let res = login_request(&gw, EMAIL, PASSWORD).send().await;
    assert_eq!(res.expect("login").status(), 429);

    let res = raw_client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("text/plain"));
    let text = res.text().await.expect("text");

    let logins = |outcome| sample(&text, "bffgate_logins_total", &[("outcome", outcome)]);
    assert_eq!(logins("ok"), 2.0);
    assert_eq!(
        logins("bad_credentials"),
        4.0,
        "two for the disabled account too"
    );
    assert_eq!(logins("throttled"), 1.0);
    assert!(
        !text.contains("outcome=\"disabled\""),
        "no outcome tells a right password from a wrong one"
    );
    let refreshes = |outcome| sample(&text, "bffgate_refreshes_total", &[("outcome", outcome)]);
    assert_eq!(refreshes("rotated"), 2.0);
    assert_eq!(refreshes("reuse_detected"), 1.0);
    let revoked = |reason| {
        sample(
            &text,
            "bffgate_families_revoked_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(revoked("logout"), 1.0);
    assert_eq!(revoked("reuse"), 1.0);
    assert_eq!(
        sample(
            &text,
            "bffgate_proxy_requests_total",
            &[("route", "/api"), ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "bffgate_upstream_duration_seconds_count",
            &[("route", "/api")]
        ),
        1.0
    );
    assert!(
        sample(
            &text,
            "bffgate_store_duration_seconds_count",
            &[("op", "rotate")]
        ) >= 3.0
    );
    assert_eq!(
        sample(&text, "bffgate_store_errors_total", &[("op", "rotate")]),
        0.0
    );
    // Two logins and four failures ran Argon2; the throttled attempt did not.
    assert_eq!(
        sample(&text, "bffgate_argon2_queue_wait_seconds_count", &[]),
        6.0
    );
    // No unbounded labels: no user, session, email or address appears.
    for private in [
        signed_in["user"]["id"].as_str().expect("id"),
        signed_in["session"]["id"].as_str().expect("id"),
        EMAIL,
        "127.0.0.1",
        "/api/hello",
    ] {
        assert!(!text.contains(private), "{private} in /metrics");
    }
}
