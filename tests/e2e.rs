//! End-to-end tests in real headless Chromium, driven through ChromeDriver with fantoccini,
//! against the stack `bffgate demo` runs (gateway, browser app, demo API) with a 2-second
//! access token. Time passes for real here: the demo API checks `exp` with no leeway.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). When they are
//! missing these tests fail; they never skip. `BFFGATE_E2E_CHROMEDRIVER` and
//! `BFFGATE_E2E_CHROMIUM` point at other binaries.

mod common;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use bffgate::config::{Config, IdentityProviderConfig, SecretFile};
use bffgate::demo::{DEMO_EMAIL, DEMO_PASSWORD};
use common::{
    eventually, free_port,
    oidc_provider::{TestProvider, CLIENT_ID, CLIENT_SECRET},
    test_config, ChildProcess, COOKIE,
};
use fantoccini::{elements::Element, wd::WindowHandle, Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long the app may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(15);
/// Access tokens live this long in these tests; waiting this long lets one expire.
const ACCESS_TTL: Duration = Duration::from_secs(2);
const PAST_EXPIRY: Duration = Duration::from_millis(2300);

/// A ChromeDriver process, killed on drop with the browser it started.
struct Driver {
    process: ChildProcess,
    port: u16,
}

impl Driver {
    /// Starts ChromeDriver and waits until it answers `/status` with `ready: true`.
    async fn start() -> Self {
        let binary = std::env::var("BFFGATE_E2E_CHROMEDRIVER")
            .unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = free_port();
        let mut command = Command::new(&binary);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // BFFGATE_E2E_LOG_DIR: keep ChromeDriver's log (one file per driver) for debugging.
        if let Ok(dir) = std::env::var("BFFGATE_E2E_LOG_DIR") {
            command.arg(format!("--log-path={dir}/chromedriver-{port}.log"));
        }
        let what = format!(
            "{binary} (the end-to-end tests need Chromium and ChromeDriver: \
             apt-get install chromium chromium-driver)"
        );
        // The browser it started goes too (a test that failed before `close`).
        let process = ChildProcess::spawn(&mut command, &what).ending_its_children_on_drop();
        let mut driver = Self { process, port };
        let status = format!("{}/status", driver.url());
        let client = reqwest::Client::new();
        driver
            .process
            .wait_until_ready(PATIENCE, || async {
                match client.get(&status).send().await {
                    Ok(res) => res
                        .json::<Value>()
                        .await
                        .is_ok_and(|status| status["value"]["ready"] == true),
                    Err(_) => false,
                }
            })
            .await;
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One test's world: the demo stack on a free port and a headless Chromium.
struct World {
    base: String,
    browser: Client,
    _profile: tempfile::TempDir,
    _driver: Driver,
}

impl World {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::start_with(test_config(), listener).await
    }

    /// [`World::start`] with `config` (its session lifetimes set here), on `listener`.
    async fn start_with(mut config: Config, listener: TcpListener) -> Self {
        config.session.access_ttl = ACCESS_TTL;
        config.session.refresh_before = Duration::from_secs(1);
        let port = listener.local_addr().expect("addr").port();
        let stack = bffgate::demo::start(config, listener)
            .await
            .expect("demo stack starts");
        actix_web::rt::spawn(stack.server);

        let driver = Driver::start().await;
        let profile = tempfile::tempdir().expect("profile dir");
        let chromium =
            std::env::var("BFFGATE_E2E_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding",
                    "--disable-backgrounding-occluded-windows",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .expect("a Chromium session (is chromium installed?)");
        // `localhost` is a secure context, so the `Secure` `__Host-` cookie works over http.
        Self {
            base: format!("http://localhost:{port}"),
            browser,
            _profile: profile,
            _driver: driver,
        }
    }

    /// [`World::start`], the app open and the demo user signed in.
    async fn signed_in() -> Self {
        let w = Self::start().await;
        w.open().await;
        w.sign_in().await;
        w
    }

    async fn open(&self) {
        self.browser
            .goto(&format!("{}/", self.base))
            .await
            .expect("page loads");
    }

    /// Waits for the first element matching `css`.
    async fn find(&self, css: &str) -> Element {
        self.browser
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }

    async fn visible(&self, id: &str) -> Element {
        self.find(&format!("#{id}:not([hidden])")).await
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    async fn script(&self, js: &str, args: Vec<Value>) -> Value {
        self.browser.execute(js, args).await.expect("script runs")
    }

    /// Waits until `check` (a JavaScript expression) is true in the current tab.
    async fn until(&self, what: &str, check: &str) {
        let script = format!("return Boolean({check});");
        eventually(what, PATIENCE, || async {
            self.script(&script, vec![]).await == true
        })
        .await;
    }

    /// Signs in through the form with `password` (the form must be showing).
    async fn submit_login(&self, password: &str) {
        self.visible("login-view").await;
        self.type_into("#email", DEMO_EMAIL).await;
        self.type_into("#password", password).await;
        self.click("#login-submit").await;
    }

    async fn sign_in(&self) {
        self.submit_login(DEMO_PASSWORD).await;
        self.visible("app-view").await;
        assert_eq!(self.text("#user-email").await, DEMO_EMAIL);
    }

    /// Clicks "Who am I?" and returns what the demo API answered, as the page shows it.
    async fn call_me(&self) -> Value {
        self.script(
            "document.getElementById('api-output').textContent = '';",
            vec![],
        )
        .await;
        self.click("#call-me").await;
        self.api_answer().await
    }

    /// Waits for the demo API's answer to show in this tab, and returns it.
    async fn api_answer(&self) -> Value {
        self.until(
            "the API answer",
            "document.getElementById('api-output').textContent.includes('\"email\"')",
        )
        .await;
        let shown = self.text("#api-output").await;
        serde_json::from_str(&shown).unwrap_or_else(|e| panic!("{e}: {shown}"))
    }

    /// Opens the app in a second tab and stays there; the (first, second) tabs.
    async fn open_second_tab(&self) -> (WindowHandle, WindowHandle) {
        let first = self.browser.window().await.expect("tab");
        let second = self.browser.new_window(true).await.expect("new tab").handle;
        self.switch_to(&second).await;
        self.open().await;
        (first, second)
    }

    async fn switch_to(&self, tab: &WindowHandle) {
        self.browser
            .switch_to_window(tab.clone())
            .await
            .expect("switch");
    }

    /// What the note field holds.
    async fn note_text(&self) -> Option<String> {
        self.find("#note-text")
            .await
            .prop("value")
            .await
            .expect("value")
    }

    /// A client on another device, signed in as the demo user.
    async fn other_device(&self) -> reqwest::Client {
        let other = common::browser();
        let login = other
            .post(format!("{}/auth/login", self.base))
            .json(&json!({ "email": DEMO_EMAIL, "password": DEMO_PASSWORD }));
        assert_eq!(common::status(login).await, 200);
        other
    }

    /// What `GET /auth/session` answers this tab now (status, body).
    async fn session_status(&self) -> (u64, Value) {
        let answer = self
            .script(
                "return fetch('/auth/session', { headers: { 'X-CSRF': '1' } })
                   .then(async (r) => [r.status, await r.json()]);",
                vec![],
            )
            .await;
        (answer[0].as_u64().expect("status"), answer[1].clone())
    }

    /// The login form is hidden and no error banner shows.
    async fn assert_unnoticed(&self) {
        let state = self
            .script(
                "return [document.getElementById('login-view').hidden,
                         document.getElementById('banner').hidden];",
                vec![],
            )
            .await;
        assert_eq!(state, json!([true, true]), "the user noticed something");
    }

    async fn close(self) {
        self.browser.close().await.expect("browser closes");
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("e2e");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

#[actix_web::test]
async fn signs_in_through_the_form_and_the_page_never_sees_the_tokens() {
    let w = World::start().await;
    w.open().await;

    // A wrong password gets a clear message and leaves the form usable.
    w.submit_login("not the password").await;
    w.visible("login-error").await;
    assert_eq!(w.text("#login-error").await, "Wrong email or password.");

    w.sign_in().await;
    assert_eq!(w.script("return document.cookie;", vec![]).await, "");
    let cookie = w
        .browser
        .get_named_cookie(COOKIE)
        .await
        .expect("the session cookie is set");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    // Nothing a script can reach holds a token either.
    let storage = w
        .script(
            "return [localStorage.length, sessionStorage.length, document.body.innerHTML];",
            vec![],
        )
        .await;
    assert_eq!(storage[0], 0);
    assert_eq!(storage[1], 0);
    let value = cookie.value().to_owned();
    assert!(!storage[2].as_str().unwrap_or_default().contains(&value));

    // An API call through the gateway, and the session list with this device marked.
    let me = w.call_me().await;
    assert_eq!(me["email"], DEMO_EMAIL);
    let (status, session) = w.session_status().await;
    assert_eq!(status, 200);
    assert_eq!(me["session"], session["session"]["id"]);
    w.find("#sessions-body tr .badge").await;
    assert_eq!(
        w.text("#sessions-body tr:has(.badge) .badge").await,
        "This device"
    );
    w.type_into("#note-text", "Remember the milk").await;
    w.click("#note-form button[type=submit]").await;
    w.until(
        "the note",
        "document.getElementById('notes').textContent.includes('Remember the milk')",
    )
    .await;

    let png = w.browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(artifacts().join("signed-in.png"), png).expect("screenshot saved");
    w.close().await;
}

#[actix_web::test]
async fn keeps_working_across_access_token_expiries() {
    let w = World::signed_in().await;
    let first = w.call_me().await;
    let mut seen = vec![first["token_expires_at"].clone()];
    for _ in 0..3 {
        // Let the access token expire; the next call must simply work.
        tokio::time::sleep(PAST_EXPIRY).await;
        let me = w.call_me().await;
        assert_eq!(me["email"], DEMO_EMAIL);
        assert_eq!(me["session"], first["session"], "same session throughout");
        assert!(
            !seen.contains(&me["token_expires_at"]),
            "a fresh access token each time"
        );
        seen.push(me["token_expires_at"].clone());
        w.assert_unnoticed().await;
    }
    let (status, _) = w.session_status().await;
    assert_eq!(status, 200);
    w.close().await;
}

#[actix_web::test]
async fn two_tabs_calling_at_the_same_moment_after_expiry_both_succeed() {
    let w = World::signed_in().await;
    let (first, second) = w.open_second_tab().await;
    w.visible("app-view").await;
    let before = w.session_status().await.1;

    tokio::time::sleep(PAST_EXPIRY).await;
    // Both tabs click "Who am I?" at the same instant, one timer each.
    let at = w.script("return Date.now() + 400;", vec![]).await;
    let arm = "document.getElementById('api-output').textContent = '';
               setTimeout(() => document.getElementById('call-me').click(),
                          arguments[0] - Date.now());";
    w.script(arm, vec![at.clone()]).await;
    w.switch_to(&first).await;
    w.script(arm, vec![at]).await;

    for tab in [&first, &second] {
        w.switch_to(tab).await;
        let me = w.api_answer().await;
        assert_eq!(me["email"], DEMO_EMAIL);
        w.assert_unnoticed().await;
    }
    // The session survived the race: same family, still live after a reload in each tab.
    for tab in [&first, &second] {
        w.switch_to(tab).await;
        w.open().await;
        w.visible("app-view").await;
        let (status, after) = w.session_status().await;
        assert_eq!(status, 200);
        assert_eq!(after["session"]["id"], before["session"]["id"]);
    }
    w.close().await;
}

#[actix_web::test]
async fn signing_in_and_out_in_one_tab_updates_the_other() {
    let w = World::start().await;
    w.open().await;
    let (first, second) = w.open_second_tab().await;
    w.visible("login-view").await;

    w.switch_to(&first).await;
    w.sign_in().await;
    w.switch_to(&second).await;
    w.visible("app-view").await;
    w.type_into("#note-text", "half-written note").await;

    w.switch_to(&first).await;
    w.click("#logout").await;
    w.visible("login-view").await;
    w.switch_to(&second).await;
    w.visible("login-view").await;
    assert_eq!(w.session_status().await.0, 401);

    // Signing in again in that tab brings back what the user had typed.
    w.sign_in().await;
    assert_eq!(w.note_text().await, Some("half-written note".to_owned()));
    w.close().await;
}

#[actix_web::test]
async fn a_401_shows_the_sign_in_form_and_keeps_what_was_typed() {
    let w = World::signed_in().await;
    w.type_into("#note-text", "draft that must survive").await;

    // Somebody signs this user out everywhere from another device.
    let other = w.other_device().await;
    let logout_all = other.post(format!("{}/auth/logout-all", w.base));
    assert_eq!(common::status(logout_all).await, 204);

    w.click("#call-me").await;
    w.visible("login-view").await;
    assert_eq!(
        w.text("#login-error").await,
        "Your session has ended. Sign in again to continue."
    );
    w.sign_in().await;
    assert_eq!(
        w.note_text().await,
        Some("draft that must survive".to_owned())
    );
    w.close().await;
}

#[actix_web::test]
async fn revoking_the_current_session_from_the_list_signs_that_tab_out() {
    let w = World::signed_in().await;
    // A second session of the same user, from another client, shows up in the list.
    let other = w.other_device().await;
    w.open().await;
    w.visible("app-view").await;
    w.until(
        "two sessions",
        "document.querySelectorAll('#sessions-body tr').length === 2",
    )
    .await;

    w.click("#sessions-body tr:has(.badge) .revoke").await;
    w.visible("login-view").await;
    assert_eq!(w.text("#login-error").await, "This session was revoked.");
    assert_eq!(w.session_status().await.0, 401);
    // The other session lives on.
    let session = other.get(format!("{}/auth/session", w.base));
    assert_eq!(common::status(session).await, 200);
    w.close().await;
}

#[actix_web::test]
async fn signs_in_with_the_identity_provider_and_calls_the_api() {
    // The app on localhost, the provider on 127.0.0.1: two sites, so the way back from the
    // provider is a cross-site navigation, as in production.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin = format!(
        "http://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let provider = TestProvider::start_at(
        "127.0.0.1",
        free_port(),
        TestProvider::client_for(&[&origin], "corp"),
    )
    .await;
    let secrets = tempfile::tempdir().expect("dir");
    let secret = secrets.path().join("client-secret");
    std::fs::write(&secret, CLIENT_SECRET).expect("secret");
    let mut config = test_config();
    config.public_origin = origin.clone();
    config.identity_providers = vec![IdentityProviderConfig {
        id: "corp".into(),
        display_name: Some("Corp SSO".into()),
        issuer: provider.issuer.clone(),
        client_id: CLIENT_ID.into(),
        client_secret_file: Some(
            SecretFile::load(secret, "identity_providers.client_secret_file").expect("secret"),
        ),
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        link_by_verified_email: false,
        create_users: true,
        roles_claim: None,
    }];
    let w = World::start_with(config, listener).await;
    w.open().await;
    w.visible("login-view").await;
    let button = w.find("a.provider[data-provider=corp]").await;
    assert_eq!(button.text().await.expect("label"), "Sign in with Corp SSO");

    let began = std::time::Instant::now();
    button.click().await.expect("click");
    // The provider's own login form (any login, any password).
    w.type_into("input[name=login]", "alice").await;
    w.type_into("input[name=password]", "any password").await;
    w.click("button[type=submit]").await;
    w.visible("app-view").await;
    assert_eq!(w.text("#user-email").await, "alice@example.com");
    let elapsed = began.elapsed();
    eprintln!("click to signed in through the provider in Chromium: {elapsed:?}");
    assert_eq!(
        w.browser.current_url().await.expect("url").as_str(),
        format!("{origin}/"),
        "back on the app, no error in the address bar"
    );
    assert_eq!(w.script("return document.cookie;", vec![]).await, "");
    assert!(
        w.browser.get_named_cookie("__Host-bff-oidc").await.is_err(),
        "the flow cookie is gone"
    );

    let me = w.call_me().await;
    assert_eq!(me["email"], "alice@example.com");
    let png = w.browser.screenshot().await.expect("screenshot");
    std::fs::write(artifacts().join("signed-in-with-provider.png"), png).expect("saved");
    w.close().await;
}

#[actix_web::test]
async fn a_provider_error_is_shown_on_the_sign_in_form() {
    let w = World::start().await;
    w.browser
        .goto(&format!("{}/?login_error=access_denied", w.base))
        .await
        .expect("page loads");
    w.visible("login-error").await;
    assert_eq!(
        w.text("#login-error").await,
        "Sign-in was cancelled at the identity provider."
    );
    assert_eq!(
        w.browser.current_url().await.expect("url").as_str(),
        format!("{}/", w.base),
        "the code is taken off the address bar"
    );
    // No provider is configured: no button.
    assert!(w
        .find("#providers[hidden]")
        .await
        .is_displayed()
        .await
        .is_ok());
    w.close().await;
}
