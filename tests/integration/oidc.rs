//! Signing in through a real OpenID provider (`oidc-provider`, see `common::oidc_provider`):
//! the whole flow over HTTP with a cookie jar that fills in the provider's login form, and
//! every way a callback can be wrong — a tampered `state`, a replayed code, an ID token with
//! another nonce or for another client, an issuer mix-up, a `return_to` elsewhere, an error
//! from the provider, a provider that is down — each answered with a clear
//! `/?login_error=<code>` and nothing stored. Back-channel logout ends the session on two
//! gateway instances sharing one Redis.

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use crate::common::{oidc_provider::*, *};
use bffgate::{
    config::{Config, IdentityProviderConfig, SecretFile},
    store::{FamilyState, ProviderScope},
};
use reqwest::{header, redirect::Policy};

const PROVIDER: &str = "corp";

/// A gateway configured for one provider, and the provider.
struct Fixture {
    gw: TestGateway,
    provider: TestProvider,
    _secret_dir: tempfile::TempDir,
}

/// `config` with provider [`PROVIDER`] at `issuer`, the client secret in a file.
fn with_provider(mut config: Config, issuer: &str, origin: &str) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("client-secret");
    std::fs::write(&path, format!("{CLIENT_SECRET}\n")).expect("secret");
    config.public_origin = origin.to_owned();
    config.identity_providers = vec![IdentityProviderConfig {
        id: PROVIDER.into(),
        display_name: Some("Corp SSO".into()),
        issuer: issuer.to_owned(),
        client_id: CLIENT_ID.into(),
        client_secret_file: Some(
            SecretFile::load(path, "identity_providers.client_secret_file").expect("secret file"),
        ),
        scopes: vec![
            "openid".into(),
            "email".into(),
            "profile".into(),
            "groups".into(),
        ],
        link_by_verified_email: false,
        create_users: true,
        roles_claim: Some("groups".into()),
    }];
    (config, dir)
}

fn origin_of(listener: &TcpListener) -> String {
    format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    )
}

impl Fixture {
    /// A provider and a gateway on the memory store (a password user `pat@example.com`).
    async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    async fn start_with(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let origin = origin_of(&listener);
        let provider = TestProvider::start(TestProvider::client_for(&[&origin], PROVIDER)).await;
        let (config, dir) = with_provider(config, &provider.issuer, &origin);
        let gw = TestGateway::start_with_listener(config, "pat@example.com", listener).await;
        Self {
            gw,
            provider,
            _secret_dir: dir,
        }
    }
}

/// A client without a jar that follows no redirect, for replaying exact cookies and URLs.
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

/// A browser: a cookie jar, `X-CSRF: 1` on every request, redirects followed by the test.
fn navigator() -> reqwest::Client {
    let mut headers = header::HeaderMap::new();
    headers.insert("x-csrf", header::HeaderValue::from_static("1"));
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

fn location(res: &reqwest::Response) -> String {
    res.headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("a redirect, got {}", res.status()))
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// The value of `name` among a response's `Set-Cookie` headers, if set.
fn set_cookie_named(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| actix_web::cookie::Cookie::parse_encoded(v.to_owned()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

const FLOW_COOKIE: &str = "__Host-bff-oidc";

/// A sign-in started at the gateway and completed at the provider: the provider's redirect
/// back to the gateway's callback, not yet followed.
struct AtCallback {
    callback: String,
    /// The sealed flow cookie the start set.
    flow_cookie: String,
}

impl AtCallback {
    /// `url` (this callback, or a forged one) sent with this flow's cookie only, as whoever
    /// kept the cookie and the URL would send it.
    async fn send_with_flow(&self, url: &str) -> reqwest::Response {
        plain()
            .get(url)
            .header("cookie", format!("{FLOW_COOKIE}={}", self.flow_cookie))
            .send()
            .await
            .expect("callback")
    }
}

/// Starts a sign-in at `gw` with `return_to` and signs in as `login` at the provider (its
/// login form: any login, any password), up to the provider's redirect to the callback.
async fn sign_in_at_provider(
    client: &reqwest::Client,
    gw: &TestGateway,
    return_to: &str,
    login: &str,
) -> AtCallback {
    let start = client
        .get(start_url(gw, return_to))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 302, "start redirects to the provider");
    let flow_cookie = set_cookie_named(&start, FLOW_COOKIE).expect("a flow cookie");
    let mut next = location(&start);
    let callback_prefix = gw.url(&format!("/auth/oidc/{PROVIDER}/callback"));
    for _ in 0..10 {
        if next.starts_with(&callback_prefix) {
            return AtCallback {
                callback: next,
                flow_cookie,
            };
        }
        let res = client.get(&next).send().await.expect("provider");
        if res.status().is_redirection() {
            next = absolute(&next, &location(&res));
            continue;
        }
        assert_eq!(res.status(), 200, "{next}");
        let page = res.text().await.expect("page");
        let action = attribute_after(&page, "<form", "action").expect("a login form");
        let submit = client
            .post(absolute(&next, &action))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("prompt", "login"),
                ("login", login),
                ("password", "any"),
            ]))
            .send()
            .await
            .expect("login form");
        assert!(submit.status().is_redirection(), "{}", submit.status());
        next = absolute(&next, &location(&submit));
    }
    panic!("the provider never sent the browser back");
}

/// The start URL of [`PROVIDER`] at `gw` with `return_to`.
fn start_url(gw: &TestGateway, return_to: &str) -> String {
    let mut url = url::Url::parse(&gw.url(&format!("/auth/oidc/{PROVIDER}/start"))).expect("url");
    url.query_pairs_mut().append_pair("return_to", return_to);
    url.to_string()
}

/// A form-encoded body of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `reference` resolved against `base`.
fn absolute(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .and_then(|b| b.join(reference))
        .expect("url")
        .to_string()
}

/// The value of attribute `name` in the first `tag` of `page`.
fn attribute_after(page: &str, tag: &str, name: &str) -> Option<String> {
    let at = page.find(tag)?;
    let rest = &page[at..];
    let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
    let end = rest[start..].find('"')?;
    Some(
        rest[start..start + end]
            .replace("&amp;", "&")
            .replace("&#x2F;", "/"),
    )
}

/// The callback URL with query parameter `name` set to `value` (removed when `None`).
fn with_param(callback: &str, name: &str, value: Option<&str>) -> String {
    let mut url = url::Url::parse(callback).expect("url");
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        for (k, v) in &pairs {
            query.append_pair(k, v);
        }
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    url.to_string()
}

fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Follows the callback; the answer.
async fn follow(client: &reqwest::Client, callback: &str) -> reqwest::Response {
    client.get(callback).send().await.expect("callback")
}

/// Asserts that `res` is the refusal `code`: 303 to the app's error page, no session cookie,
/// the flow cookie removed.
fn assert_refused(res: &reqwest::Response, code: &str) {
    assert_eq!(res.status(), 303);
    assert_eq!(location(res), format!("/?login_error={code}"));
    assert!(set_cookie(res).is_none(), "no session cookie");
    assert_eq!(
        set_cookie_named(res, FLOW_COOKIE).as_deref(),
        Some(""),
        "the flow cookie is removed"
    );
}

/// Only the password user the fixture made exists, and no session was opened.
async fn assert_nothing_stored(gw: &TestGateway, subject: &str) {
    let users = gw.store.list_users().await.expect("users");
    assert_eq!(
        users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
        ["pat@example.com"]
    );
    assert_eq!(
        gw.store.linked_user(PROVIDER, subject).await.expect("link"),
        None
    );
    assert!(gw
        .store
        .provider_families(PROVIDER, ProviderScope::Subject(subject), gw.clock_now())
        .await
        .expect("families")
        .is_empty());
}

#[actix_web::test]
async fn a_browser_signs_in_through_the_provider_and_lands_signed_in() {
    let fx = Fixture::start().await;
    let client = navigator();
    // The app lists the provider (ids and labels only).
    let listed: serde_json::Value = json(client.get(fx.gw.url("/auth/providers"))).await;
    assert_eq!(
        listed,
        serde_json::json!([{ "id": "corp", "name": "Corp SSO" }])
    );

    let began = Instant::now();
    let at = sign_in_at_provider(&client, &fx.gw, "/notes?tab=2", "alice").await;
    assert!(
        param(&at.callback, "iss").is_some(),
        "the provider sends iss (RFC 9207)"
    );
    let landed = follow(&client, &at.callback).await;
    let elapsed = began.elapsed();
    assert_eq!(landed.status(), 303);
    assert_eq!(location(&landed), "/notes?tab=2");
    assert!(set_cookie(&landed).is_some(), "the session cookie is set");
    assert_eq!(set_cookie_named(&landed, FLOW_COOKIE).as_deref(), Some(""));
    eprintln!("the whole sign-in through the provider took {elapsed:?}");

    let me: serde_json::Value = json(client.get(fx.gw.url("/auth/session"))).await;
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(
        me["user"]["roles"],
        serde_json::json!(["staff", "group-alice"]),
        "roles from the configured claim"
    );
    let user_id = me["user"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        fx.gw
            .store
            .linked_user(PROVIDER, "alice")
            .await
            .expect("link"),
        Some(user_id.clone())
    );
    let user = fx
        .gw
        .store
        .user(&user_id)
        .await
        .expect("user")
        .expect("exists");
    assert_eq!(user.password_hash, "", "no password");
    // The session was opened like a password login's: listed, and indexed for back-channel
    // logout.
    let sessions: serde_json::Value = json(client.get(fx.gw.url("/auth/sessions"))).await;
    assert_eq!(sessions.as_array().expect("list").len(), 1);
    let family = me["session"]["id"].as_str().expect("sid").to_owned();
    assert_eq!(
        fx.gw
            .store
            .provider_families(PROVIDER, ProviderScope::Subject("alice"), fx.gw.clock_now())
            .await
            .expect("families"),
        [family]
    );
    // Nobody can sign in as her with a password.
    let password = login_request(&fx.gw, "alice@example.com", "")
        .send()
        .await
        .expect("login");
    assert_eq!(password.status(), 400);
    let password = login_request(&fx.gw, "alice@example.com", "x")
        .send()
        .await
        .expect("login");
    assert_eq!(password.status(), 401);

    // A second sign-in (the provider remembers her) finds the same user.
    let again = navigator();
    let at = sign_in_at_provider(&again, &fx.gw, "/", "alice").await;
    assert_eq!(follow(&again, &at.callback).await.status(), 303);
    let me_again: serde_json::Value = json(again.get(fx.gw.url("/auth/session"))).await;
    assert_eq!(me_again["user"]["id"], user_id.as_str());
    assert_eq!(fx.gw.store.list_users().await.expect("users").len(), 2);
}

#[actix_web::test]
async fn a_tampered_state_is_refused_and_nothing_is_stored() {
    let fx = Fixture::start().await;
    let client = navigator();
    let at = sign_in_at_provider(&client, &fx.gw, "/", "mallory").await;
    let state = param(&at.callback, "state").expect("state");
    for forged in [
        with_param(&at.callback, "state", Some(&format!("{state}x"))),
        with_param(&at.callback, "state", None),
        // Two states: which one counts would be the sender's choice.
        format!("{}&state={state}", at.callback),
    ] {
        assert_refused(&at.send_with_flow(&forged).await, "state_mismatch");
    }
    // Without the flow cookie (another browser, or a forged callback): no flow.
    let res = plain().get(&at.callback).send().await.expect("callback");
    assert_refused(&res, "flow_expired");
    assert_nothing_stored(&fx.gw, "mallory").await;
}

#[actix_web::test]
async fn a_replayed_code_is_refused() {
    let fx = Fixture::start().await;
    let client = navigator();
    let at = sign_in_at_provider(&client, &fx.gw, "/", "carol").await;
    assert_eq!(follow(&client, &at.callback).await.status(), 303);
    // The same browser again: its flow cookie is gone.
    assert_refused(&follow(&client, &at.callback).await, "flow_expired");
    // Someone who kept the flow cookie and the callback URL: the provider refuses the code.
    assert_refused(&at.send_with_flow(&at.callback).await, "code_rejected");
    // Only the first sign-in's session exists.
    let families = fx
        .gw
        .store
        .provider_families(PROVIDER, ProviderScope::Subject("carol"), fx.gw.clock_now())
        .await
        .expect("families");
    assert_eq!(families.len(), 1);
}

#[actix_web::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let fx = Fixture::start().await;
    let client = navigator();
    let at = sign_in_at_provider(&client, &fx.gw, "/", "dave").await;
    fx.provider
        .tamper_next_id_token(serde_json::json!({ "nonce": "not-the-flows-nonce" }))
        .await;
    assert_refused(&follow(&client, &at.callback).await, "token_invalid");
    assert_nothing_stored(&fx.gw, "dave").await;
}

#[actix_web::test]
async fn an_id_token_for_another_client_is_refused() {
    let fx = Fixture::start().await;
    for claims in [
        serde_json::json!({ "aud": "another-client" }),
        serde_json::json!({ "aud": ["another-client", CLIENT_ID], "azp": "another-client" }),
        serde_json::json!({ "iss": "http://localhost:1" }),
        serde_json::json!({ "exp": 1_000_000_000 }),
    ] {
        let client = navigator();
        let at = sign_in_at_provider(&client, &fx.gw, "/", "erin").await;
        fx.provider.tamper_next_id_token(claims.clone()).await;
        let res = follow(&client, &at.callback).await;
        assert_refused(&res, "token_invalid");
    }
    assert_nothing_stored(&fx.gw, "erin").await;
}

#[actix_web::test]
async fn an_issuer_mix_up_is_refused() {
    let fx = Fixture::start().await;
    let client = navigator();
    let at = sign_in_at_provider(&client, &fx.gw, "/", "frank").await;
    for forged in [
        with_param(&at.callback, "iss", Some("https://attacker.example")),
        // The provider promises iss (authorization_response_iss_parameter_supported).
        with_param(&at.callback, "iss", None),
    ] {
        assert_refused(&at.send_with_flow(&forged).await, "issuer_mismatch");
    }
    assert_nothing_stored(&fx.gw, "frank").await;
}

#[actix_web::test]
async fn return_to_elsewhere_is_refused_before_the_provider_is_asked() {
    let fx = Fixture::start().await;
    for elsewhere in [
        "https://evil.example",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let res = navigator()
            .get(start_url(&fx.gw, elsewhere))
            .send()
            .await
            .expect("start");
        assert_eq!(res.status(), 303, "{elsewhere}");
        assert_eq!(location(&res), "/?login_error=bad_return_to");
        assert!(set_cookie_named(&res, FLOW_COOKIE).is_none());
    }
    // An unknown provider is the gateway's 404, not the app.
    let unknown = navigator()
        .get(fx.gw.url("/auth/oidc/nope/start"))
        .send()
        .await
        .expect("start");
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
}

#[actix_web::test]
async fn an_error_from_the_provider_is_shown_by_the_app() {
    let fx = Fixture::start().await;
    let client = navigator();
    let start = client
        .get(fx.gw.url(&format!("/auth/oidc/{PROVIDER}/start")))
        .send()
        .await
        .expect("start");
    let state = param(&location(&start), "state").expect("state");
    // What the provider sends when the user cancels.
    let callback = format!(
        "{}?error=access_denied&error_description=End-User+aborted&state={state}&iss={}",
        fx.gw.url(&format!("/auth/oidc/{PROVIDER}/callback")),
        fx.provider.issuer
    );
    assert_refused(&follow(&client, &callback).await, "access_denied");
}

#[actix_web::test]
async fn a_provider_that_is_down_gets_a_clear_error_and_nothing_is_stored() {
    // Down from the start: no discovery, no flow.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin = origin_of(&listener);
    let closed = format!("http://localhost:{}", free_port());
    let (config, _dir) = with_provider(test_config(), &closed, &origin);
    let gw = TestGateway::start_with_listener(config, "pat@example.com", listener).await;
    let began = Instant::now();
    let res = navigator()
        .get(gw.url(&format!("/auth/oidc/{PROVIDER}/start")))
        .send()
        .await
        .expect("start");
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/?login_error=provider_unavailable");
    assert!(set_cookie_named(&res, FLOW_COOKIE).is_none());
    assert!(began.elapsed() < Duration::from_secs(10));

    // Down between the start and the callback: the code cannot be exchanged.
    let mut fx = Fixture::start().await;
    let client = navigator();
    let at = sign_in_at_provider(&client, &fx.gw, "/", "grace").await;
    fx.provider.stop();
    assert_refused(&follow(&client, &at.callback).await, "provider_unavailable");
    assert_nothing_stored(&fx.gw, "grace").await;
}

#[actix_web::test]
async fn back_channel_logout_ends_the_session_on_every_instance() {
    let redis = TestRedis::new();
    let l1 = TcpListener::bind("127.0.0.1:0").expect("bind");
    let l2 = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (o1, o2) = (origin_of(&l1), origin_of(&l2));
    let provider = TestProvider::start(TestProvider::client_for(&[&o1, &o2], PROVIDER)).await;
    let (c1, _d1) = with_provider(redis.config(), &provider.issuer, &o1);
    let (c2, _d2) = with_provider(redis.config(), &provider.issuer, &o2);
    let gw1 = TestGateway::start_with_listener(c1, "pat@example.com", l1).await;
    let gw2 = TestGateway::join_on(c2, l2);

    // Heidi signs in through instance 2; her cookie works on both instances.
    let client = navigator();
    let at = sign_in_at_provider(&client, &gw2, "/", "heidi").await;
    let landed = follow(&client, &at.callback).await;
    let cookie = set_cookie_value(&landed);
    assert_eq!(session_status(&gw1, &cookie).await, 200);
    assert_eq!(session_status(&gw2, &cookie).await, 200);
    // A password session of another user is not the provider's to end.
    let pat = login_cookie_of(&gw1, "pat@example.com").await;

    // She signs out at the provider (RP-initiated logout's confirmation form); the provider
    // tells instance 1 over the back channel.
    let end = client
        .get(format!("{}/session/end", provider.issuer))
        .send()
        .await
        .expect("end session");
    assert_eq!(end.status(), 200);
    let page = end.text().await.expect("page");
    let action = attribute_after(&page, "<form", "action").expect("logout form");
    let xsrf = attribute_after(&page, "name=\"xsrf\"", "value").expect("xsrf");
    let confirm = client
        .post(absolute(&provider.issuer, &action))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("xsrf", xsrf.as_str()), ("logout", "yes")]))
        .send()
        .await
        .expect("confirm");
    assert!(confirm.status().is_redirection() || confirm.status() == 200);
    eventually(
        "the session ends on both instances",
        Duration::from_secs(10),
        || async {
            session_status(&gw1, &cookie).await == 401 && session_status(&gw2, &cookie).await == 401
        },
    )
    .await;
    let family = family_of(&cookie);
    assert!(matches!(
        gw1.store.family(&family, gw1.clock_now()).await.expect("family"),
        FamilyState::Revoked { reason } if reason == "provider_logout"
    ));
    assert_eq!(session_status(&gw2, &pat).await, 200);
}

#[actix_web::test]
async fn a_forged_logout_token_is_refused() {
    let fx = Fixture::start().await;
    let url = fx
        .gw
        .url(&format!("/auth/oidc/{PROVIDER}/backchannel-logout"));
    // An unsigned token naming a subject, and a token signed with a key of our own.
    let unsigned = format!(
        "{}.{}.",
        base64url(r#"{"alg":"none"}"#),
        base64url(&format!(
            r#"{{"iss":"{}","aud":"{CLIENT_ID}","iat":{},"sub":"alice","events":{{"http://schemas.openid.net/event/backchannel-logout":{{}}}}}}"#,
            fx.provider.issuer,
            fx.gw.clock_now() / 1000
        ))
    );
    for body in [
        format!("logout_token={unsigned}"),
        "logout_token=not.a.jwt".to_owned(),
        String::new(),
    ] {
        let res = plain()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .expect("logout");
        assert_eq!(res.status(), 400, "{body}");
    }
}

fn base64url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// Failed callbacks count against the address like failed password logins: past the
/// address's free attempts a callback is refused before any check (`throttled`), and a
/// successful sign-in gives its attempt back.
#[actix_web::test]
async fn failed_provider_sign_ins_from_one_address_are_throttled() {
    let mut config = test_config();
    config.throttle.enabled = true;
    config.throttle.ip_free_attempts = 2;
    config.throttle.base_delay = Duration::from_secs(60);
    let fx = Fixture::start_with(config).await;
    let client = navigator();
    let at = sign_in_at_provider(&client, &fx.gw, "/", "mallory").await;
    let forged = with_param(&at.callback, "state", Some("forged"));
    for _ in 0..2 {
        assert_refused(&at.send_with_flow(&forged).await, "state_mismatch");
    }
    assert_refused(&at.send_with_flow(&forged).await, "throttled");
    assert_nothing_stored(&fx.gw, "mallory").await;
}
