//! Test fixtures: a real `redis-server` on a free loopback port (killed on drop), a gateway
//! on port 0 with a controllable clock, HTTP clients with and without a cookie jar, and child
//! processes that end with their test ([`process`]).
//!
//! `BFFGATE_TEST_REDIS_URL` may point at an existing Redis instead; every test then still owns
//! its key prefix.
// Every test binary uses a different part of the fixtures.
#![allow(dead_code, unused_imports)]

pub mod family_dump;
pub mod fault;
pub mod instances;
pub mod oidc_provider;
pub mod process;
pub mod topologies;
pub mod upstream;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use actix_web::{
    cookie::{Cookie, CookieJar, Key},
    dev::{Server, ServerHandle},
};
use base64::Engine as _;
use bffgate::{
    clock::ManualClock,
    config::{AuthMode, Config, RedisConfig, RouteConfig},
    session::users::Users,
    store::{redis::RedisStore, FamilyState, Store},
    tokens::{new_id, AccessClaims},
    Gateway,
};
pub use instances::Instance;
pub use process::{eventually, ChildProcess};

pub const PASSWORD: &str = "correct horse battery";
pub const COOKIE: &str = "__Host-bff";

/// A gateway routing `/api` to the demo API, which verifies every token through that
/// gateway's JWKS: the upstream of tests about real tokens, WebSockets and event streams.
pub struct DemoStack {
    pub gw: TestGateway,
    /// The gateway's configuration, for another instance to join the same store.
    pub config: Config,
    pub api_base: String,
    /// The gateway's signing key (PKCS#8 PEM).
    pub key_file: PathBuf,
    _keys: tempfile::TempDir,
}

/// Starts a [`DemoStack`] on `config` (its store, a signing key file, `/api` to the demo API)
/// with a user `email`.
pub async fn demo_stack(mut config: Config, email: &str) -> DemoStack {
    let keys = tempfile::tempdir().expect("temp dir");
    let key_file = keys.path().join("ed25519.pem");
    let der = bffgate::tokens::generate_ed25519_pkcs8().expect("key");
    std::fs::write(&key_file, bffgate::tokens::pkcs8_pem(&der)).expect("key written");
    let gw_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let gw_addr = gw_listener.local_addr().expect("addr");
    let api_listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let api_base = format!("http://{}", api_listener.local_addr().expect("addr"));
    let settings = bffgate::demo::api::DemoApiSettings {
        jwks_url: format!("http://{gw_addr}/.well-known/jwks.json"),
        issuer: config.jwt.issuer.clone(),
        audience: config.jwt.audience.clone(),
    };
    let api = bffgate::demo::api::build_demo_api(settings, api_listener).expect("demo API");
    actix_web::rt::spawn(api);
    config.jwt.signing_key_file = Some(key_file.clone());
    config.routes = vec![route("/api", &api_base, AuthMode::Required)];
    let gw = TestGateway::start_with_listener(config.clone(), email, gw_listener).await;
    DemoStack {
        gw,
        config,
        api_base,
        key_file,
        _keys: keys,
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `redis-server` child process owned by one test.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    aof: bool,
    process: Option<ChildProcess>,
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server with AOF persistence (`appendfsync always`) in its own directory.
    pub fn start_with_aof() -> Self {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            aof,
            process: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts the process on the same port and directory; waits until it answers PING.
    pub fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(self.dir.path())
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut process = ChildProcess::spawn(
            &mut cmd,
            "redis-server (is it installed? apt-get install redis-server)",
        );
        let client = redis::Client::open(self.url()).expect("redis url");
        process.wait_until_ready_blocking(Duration::from_secs(10), || answers_ping(&client));
        self.process = Some(process);
    }

    /// Stops the process (SIGTERM lets it finish writing its AOF) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }
}

fn answers_ping(client: &redis::Client) -> bool {
    client
        .get_connection_with_timeout(Duration::from_millis(200))
        .is_ok_and(|mut conn| redis::cmd("PING").query::<String>(&mut conn).is_ok())
}

/// Where a test's Redis lives: its own server, or the one named by `BFFGATE_TEST_REDIS_URL`.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    _server: Option<RedisServer>,
}

impl TestRedis {
    pub fn new() -> Self {
        let prefix = format!("t{}:", new_id().expect("id"));
        match std::env::var("BFFGATE_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Self {
                url,
                prefix,
                _server: None,
            },
            _ => {
                let server = RedisServer::start();
                Self {
                    url: server.url(),
                    prefix,
                    _server: Some(server),
                }
            }
        }
    }

    /// [`test_config`] pointed at this Redis.
    pub fn config(&self) -> Config {
        with_redis(test_config(), &self.url, &self.prefix)
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(
            RedisStore::connect(&self.url, &self.prefix, 8, Duration::from_secs(2))
                .expect("redis store"),
        )
    }
}

/// The cookie key tests configure, so they can open the sealed cookie and look inside.
pub fn cookie_key_bytes() -> Vec<u8> {
    (0..64u8).collect()
}

/// A configuration for tests: fixed cookie key, defaults elsewhere, memory store.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.cookie.key = Some(bffgate::config::Redacted::new(
        &base64::engine::general_purpose::STANDARD.encode(cookie_key_bytes()),
    ));
    config
}

/// Points `config` at a Redis.
pub fn with_redis(mut config: Config, url: &str, prefix: &str) -> Config {
    config.redis = Some(RedisConfig {
        url: bffgate::config::Redacted::new(url),
        key_prefix: prefix.to_owned(),
        ..RedisConfig::default()
    });
    config
}

/// A route to `upstream` under `prefix`: no prefix stripping, CSRF required, a 5 s timeout,
/// no client cookies forwarded.
pub fn route(prefix: &str, upstream: &str, auth: AuthMode) -> RouteConfig {
    RouteConfig {
        prefix: prefix.into(),
        upstream: upstream.into(),
        strip_prefix: false,
        auth,
        csrf: true,
        timeout: Duration::from_secs(5),
        forward_cookies: vec![],
    }
}

/// Runs an actix server in the background; its handle stops it.
pub fn spawn_server(server: Server) -> ServerHandle {
    let handle = server.handle();
    actix_web::rt::spawn(server);
    handle
}

/// A running gateway on 127.0.0.1:<port 0>.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
    handle: ServerHandle,
}

impl TestGateway {
    /// Starts a gateway with `config` (its store from `config`), a manual clock, and a user
    /// `email` with [`PASSWORD`].
    pub async fn start(config: Config, email: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::start_with_listener(config, email, listener).await
    }

    /// Like [`TestGateway::start`], on a listener the test bound already.
    pub async fn start_with_listener(config: Config, email: &str, listener: TcpListener) -> Self {
        let gw = Self::serve(config, listener);
        gw.add_user(email, vec!["tester".into()]).await;
        gw
    }

    /// Another gateway instance on the store `config` names, whose users exist already.
    pub async fn join(config: Config) -> Self {
        Self::serve(config, TcpListener::bind("127.0.0.1:0").expect("bind"))
    }

    /// Another gateway instance on the store `config` names, on a listener the test bound
    /// already (its URL had to be known first, e.g. to register it at an identity provider).
    pub fn join_on(config: Config, listener: TcpListener) -> Self {
        Self::serve(config, listener)
    }

    /// Starts a gateway on the memory store, for tests where Redis is not the point.
    pub async fn memory(email: &str) -> Self {
        Self::start(test_config(), email).await
    }

    /// Adds a user with [`PASSWORD`].
    pub async fn add_user(&self, email: &str, roles: Vec<String>) {
        Users::new(Arc::clone(&self.store))
            .add(email, PASSWORD, roles)
            .await
            .expect("user added");
    }

    fn serve(config: Config, listener: TcpListener) -> Self {
        let clock = ManualClock::new();
        let gateway = Gateway::with_clock(config, Arc::new(clock.clone())).expect("gateway builds");
        let store = gateway.store();
        let addr = listener.local_addr().expect("addr");
        let handle = spawn_server(gateway.serve(listener).expect("serve"));
        Self {
            addr,
            clock,
            store,
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The gateway's current time.
    pub fn clock_now(&self) -> bffgate::clock::Millis {
        use bffgate::clock::Clock as _;
        self.clock.now_ms()
    }

    /// The state of the family a sealed cookie value belongs to, at the gateway's time.
    pub async fn family_state(&self, cookie_value: &str) -> FamilyState {
        self.store
            .family(&family_of(cookie_value), self.clock_now())
            .await
            .expect("the store answers")
    }

    /// The generation of the live family a sealed cookie value belongs to.
    pub async fn live_generation(&self, cookie_value: &str) -> u64 {
        match self.family_state(cookie_value).await {
            FamilyState::Live(info) => info.generation,
            other => panic!("the family must stay live, it is {other:?}"),
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// A browser-like client: keeps cookies, sends `X-CSRF: 1` on every request.
pub fn browser() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-csrf", reqwest::header::HeaderValue::from_static("1"));
    reqwest::Client::builder()
        .cookie_store(true)
        .default_headers(headers)
        .pool_idle_timeout(CLIENT_IDLE)
        .build()
        .expect("client")
}

/// How long the test clients keep an idle connection: well under the gateway's keep-alive
/// (5 s), so that a client never sends on a connection the server is closing at that moment
/// (hyper's `IncompleteMessage`, seen on a loaded machine).
const CLIENT_IDLE: Duration = Duration::from_secs(2);

/// A client without a jar, for replaying exact cookie values.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(CLIENT_IDLE)
        .build()
        .expect("client")
}

/// Sends `request`; the status code of the answer.
pub async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.expect("request").status().as_u16()
}

/// Sends `request`; the answer's JSON body.
pub async fn json<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    let res = request.send().await.expect("request");
    res.json().await.expect("a JSON body")
}

/// A login request from a jar-less client with `X-CSRF: 1`, not yet sent.
pub fn login_request(gw: &impl Instance, email: &str, password: &str) -> reqwest::RequestBuilder {
    raw_client()
        .post(gw.url("/auth/login"))
        .header("x-csrf", "1")
        .json(&serde_json::json!({ "email": email, "password": password }))
}

/// Logs in `email` with a jar-less client and returns the sealed cookie value.
pub async fn login_cookie_of(gw: &impl Instance, email: &str) -> String {
    let res = login_request(gw, email, PASSWORD)
        .send()
        .await
        .expect("login request");
    assert_eq!(res.status(), 200, "login failed");
    set_cookie_value(&res)
}

/// Logs in `client` and asserts success.
pub async fn login(gw: &TestGateway, client: &reqwest::Client, email: &str) -> serde_json::Value {
    let res = client
        .post(gw.url("/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("login request");
    assert_eq!(res.status(), 200, "login failed");
    res.json().await.expect("login body")
}

/// Our session cookie among a response's `Set-Cookie` headers (value percent-decoded).
pub fn set_cookie(res: &reqwest::Response) -> Option<Cookie<'static>> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| Cookie::parse_encoded(v.to_owned()).ok())
        .find(|c| c.name() == COOKIE)
}

/// The value of the session cookie `res` sets (which it must).
pub fn set_cookie_value(res: &reqwest::Response) -> String {
    set_cookie(res)
        .expect("a session cookie")
        .value()
        .to_owned()
}

/// A `Cookie` header value carrying exactly `cookie_value` (decoded form) as the session
/// cookie.
pub fn cookie_header(cookie_value: &str) -> String {
    Cookie::new(COOKIE, cookie_value.to_owned())
        .encoded()
        .to_string()
}

/// `method path` from a jar-less client with `X-CSRF: 1` and exactly `cookie_value` as the
/// session cookie, not yet sent.
pub fn with_cookie(
    gw: &impl Instance,
    method: reqwest::Method,
    path: &str,
    cookie_value: &str,
) -> reqwest::RequestBuilder {
    raw_client()
        .request(method, gw.url(path))
        .header("x-csrf", "1")
        .header("cookie", cookie_header(cookie_value))
}

/// Sends [`with_cookie`]'s request.
pub async fn send_with_cookie(
    gw: &impl Instance,
    method: reqwest::Method,
    path: &str,
    cookie_value: &str,
) -> reqwest::Response {
    with_cookie(gw, method, path, cookie_value)
        .send()
        .await
        .expect("request")
}

/// What `GET /auth/session` answers `cookie_value`: 200 while its session lives.
pub async fn session_status(gw: &impl Instance, cookie_value: &str) -> u16 {
    status(with_cookie(
        gw,
        reqwest::Method::GET,
        "/auth/session",
        cookie_value,
    ))
    .await
}

/// `POST /auth/refresh` with `cookie_value`; asserts a 200 and returns the successor cookie.
pub async fn refreshed(gw: &impl Instance, cookie_value: &str) -> String {
    let res = send_with_cookie(gw, reqwest::Method::POST, "/auth/refresh", cookie_value).await;
    assert_eq!(res.status(), 200, "refresh failed");
    set_cookie_value(&res)
}

/// Verifies an access token against `gw`'s published JWKS (EdDSA, our issuer and audience);
/// `exp` too when `check_exp` (not for a gateway whose manual clock has moved on). The key
/// id and the claims.
pub async fn verify_with_jwks(
    gw: &TestGateway,
    token: &str,
    check_exp: bool,
) -> (String, AccessClaims) {
    let jwks: jsonwebtoken::jwk::JwkSet =
        json(raw_client().get(gw.url("/.well-known/jwks.json"))).await;
    let kid = jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid");
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["api"]);
    validation.set_issuer(&["bffgate"]);
    validation.validate_exp = check_exp;
    let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
        .expect("the token verifies")
        .claims;
    (kid, claims)
}

/// Opens a sealed session cookie value with the tests' key: `(access, refresh)`.
pub fn open_cookie(value: &str) -> (String, String) {
    let key = Key::from(&cookie_key_bytes());
    let mut jar = CookieJar::new();
    jar.add_original(Cookie::new(COOKIE, value.to_owned()));
    let opened = jar.private(&key).get(COOKIE).expect("cookie opens");
    let state: std::collections::HashMap<String, String> =
        serde_json::from_str(opened.value()).expect("session state");
    let get = |k: &str| serde_json::from_str::<String>(&state[k]).expect("token");
    (get("at"), get("rt"))
}

/// The family id inside a sealed cookie value.
pub fn family_of(value: &str) -> String {
    let (_, refresh) = open_cookie(value);
    refresh.split('.').next().expect("family id").to_owned()
}

/// A path beside the test binary's temp area.
pub fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
