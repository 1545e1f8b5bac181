//! `bffgate serve` as a process: its JSON logs at trace level hold no secret, and SIGTERM
//! lets in-flight requests finish while new connections are refused.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{upstream::Upstream, *};
use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bffgate");
const EMAIL: &str = "frank@example.com";

/// What a `bffgate serve` test runs against: an upstream, its own Redis, and a configuration
/// file for a gateway on a free port with `/api` routed to the upstream.
struct Setup {
    upstream: Upstream,
    _redis: TestRedis,
    _dir: tempfile::TempDir,
    port: u16,
    config: PathBuf,
}

/// [`Setup`] with `/api` at `auth`.
fn setup(auth: &str) -> Setup {
    let upstream = crate::common::upstream::start();
    let redis = TestRedis::new();
    let dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let config = config_file(&dir, &redis, port, &upstream, auth);
    Setup {
        upstream,
        _redis: redis,
        _dir: dir,
        port,
        config,
    }
}

fn config_file(
    dir: &tempfile::TempDir,
    redis: &TestRedis,
    port: u16,
    upstream: &Upstream,
    auth: &str,
) -> PathBuf {
    let key = base64::engine::general_purpose::STANDARD.encode(cookie_key_bytes());
    let pem = dir.path().join("ed25519.pem");
    std::fs::write(
        &pem,
        bffgate::tokens::pkcs8_pem(&bffgate::tokens::generate_ed25519_pkcs8().unwrap()),
    )
    .expect("signing key written");
    let text = format!(
        r#"listen = "127.0.0.1:{port}"
shutdown_timeout = "10s"

[redis]
url = "{url}"
key_prefix = "{prefix}"

[cookie]
key = "{key}"

[jwt]
signing_key_file = "{pem}"

[[routes]]
prefix = "/api"
upstream = "{upstream}"
auth = "{auth}"
"#,
        url = redis.url,
        prefix = redis.prefix,
        upstream = upstream.base,
        pem = pem.display(),
    );
    let path = dir.path().join("bffgate.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

fn command(config: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BFFGATE_CONFIG", config)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// A `bffgate serve` process; killed on drop if still running. Its standard error goes to
/// a file (a pipe nobody reads would fill up and stall it).
struct Served {
    process: ChildProcess,
    port: u16,
    log: PathBuf,
}

impl Served {
    /// Starts `bffgate serve` on `setup`'s configuration, with `extra` environment.
    async fn start(setup: &Setup, extra: &[(&str, &str)]) -> Self {
        let log = setup.config.with_extension("log");
        let mut cmd = command(&setup.config);
        cmd.arg("serve")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut served = Self {
            process: ChildProcess::spawn(&mut cmd, "bffgate serve"),
            port: setup.port,
            log,
        };
        let ready = served.url("/readyz");
        served.process.wait_until_http_ok(&ready).await;
        served
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn terminate(&self) {
        self.process.terminate();
    }

    /// Waits for the process to exit (within `limit`); its status and standard error.
    fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = self.process.wait_for_exit(limit);
        let stderr = std::fs::read_to_string(&self.log).expect("log");
        (status, stderr)
    }
}

/// `method path` from the log test's client (`log-test/1.0`, `X-CSRF: 1`), with `cookie` as
/// the session cookie if given; not yet sent.
fn request(
    served: &Served,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> reqwest::RequestBuilder {
    let request = raw_client()
        .request(method, served.url(path))
        .header("x-csrf", "1")
        .header("user-agent", "log-test/1.0");
    match cookie {
        Some(value) => request.header("cookie", cookie_header(value)),
        None => request,
    }
}

async fn login(served: &Served, password: &str) -> reqwest::Response {
    request(served, Method::POST, "/auth/login", None)
        .json(&serde_json::json!({ "email": EMAIL, "password": password }))
        .send()
        .await
        .expect("login")
}

/// The successor cookie a refresh with `cookie` sets.
async fn refreshed_on(served: &Served, cookie: &str) -> String {
    let res = request(served, Method::POST, "/auth/refresh", Some(cookie))
        .send()
        .await
        .expect("refresh");
    set_cookie_value(&res)
}

#[actix_web::test]
async fn json_logs_record_events_and_never_a_secret() {
    let setup = setup("required");
    let mut add = command(&setup.config)
        .args(["user", "add", EMAIL, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    std::io::Write::write_all(&mut add.stdin.take().expect("stdin"), PASSWORD.as_bytes())
        .expect("password");
    assert!(add.wait().expect("user add exits").success());

    let served = Served::start(
        &setup,
        &[("BFFGATE_LOG", "trace"), ("BFFGATE_LOG_FORMAT", "json")],
    )
    .await;
    let wrong = "not-the-password-0xC0FFEE";
    assert_eq!(login(&served, wrong).await.status(), 401);
    let res = login(&served, PASSWORD).await;
    assert_eq!(res.status(), 200);
    let c1 = set_cookie_value(&res);
    let mut cookies = vec![c1.clone()];
    let status_of = |method, path, cookie| status(request(&served, method, path, Some(cookie)));
    assert_eq!(status_of(Method::GET, "/auth/session", &c1).await, 200);
    assert_eq!(status_of(Method::GET, "/api/orders", &c1).await, 200);
    let c2 = refreshed_on(&served, &c1).await;
    let c3 = refreshed_on(&served, &c2).await;
    // c1 is two generations old: a reuse attack.
    assert_eq!(status_of(Method::POST, "/auth/refresh", &c1).await, 401);
    assert_eq!(status_of(Method::GET, "/api/orders", &c3).await, 401);
    let c4 = set_cookie_value(&login(&served, PASSWORD).await);
    assert_eq!(status_of(Method::POST, "/auth/logout", &c4).await, 204);
    cookies.extend([c2, c3, c4]);

    served.terminate();
    let (status, logs) = served.wait(Duration::from_secs(15));
    assert!(status.success(), "clean exit: {status}");

    // Nothing secret, at any level.
    let mut secrets = vec![PASSWORD.to_owned(), wrong.to_owned()];
    for cookie in &cookies {
        let (access, refresh) = open_cookie(cookie);
        let secret = refresh.rsplit('.').next().expect("secret").to_owned();
        let signature = access.rsplit('.').next().expect("signature").to_owned();
        let encoded = cookie_header(cookie);
        secrets.extend([cookie.clone(), encoded, access, refresh, secret, signature]);
    }
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret is in the logs: {secret:.12}…"
        );
    }

    // One JSON object per line; the events carry their stable fields.
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let event = |name: &str| {
        lines
            .iter()
            .find(|l| l["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event"))
            .clone()
    };
    let reuse = event("refresh_token_reuse");
    assert_eq!(reuse["level"], "WARN");
    assert_eq!(
        reuse["family"].as_str(),
        Some(family_of(&cookies[0]).as_str())
    );
    assert!(reuse["user"].as_str().is_some_and(|u| !u.is_empty()));
    assert_eq!(reuse["ip"], "127.0.0.1");
    assert_eq!(reuse["user_agent"], "log-test/1.0");
    let failed = event("login_failed");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["ip"], "127.0.0.1");
    assert_eq!(failed["user_agent"], "log-test/1.0");
    let revoked = event("session_revoked");
    assert_eq!(revoked["level"], "WARN");
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert!(requests.iter().all(|r| {
        r["request_id"].as_str().is_some_and(|id| !id.is_empty())
            && r["status"].is_u64()
            && r["latency_ms"].is_f64()
    }));
    let routes: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["route"].as_str())
        .collect();
    for route in [
        "/auth/login",
        "/auth/session",
        "/auth/refresh",
        "/api",
        "/readyz",
    ] {
        assert!(
            routes.contains(&route),
            "no request line for {route}: {routes:?}"
        );
    }
    assert!(
        !routes.contains(&"/api/orders"),
        "routes are prefixes, not raw paths"
    );
}

#[actix_web::test]
async fn sigterm_finishes_in_flight_requests_and_refuses_new_ones() {
    let setup = setup("none");
    let served = Served::start(&setup, &[]).await;

    let url = served.url("/api/slow?ms=1500");
    let in_flight =
        actix_web::rt::spawn(async move { raw_client().get(url).send().await.map(|r| r.status()) });
    eventually(
        "the request to reach the upstream",
        Duration::from_secs(10),
        || std::future::ready(setup.upstream.seen().iter().any(|s| s.path == "/api/slow")),
    )
    .await;
    served.terminate();
    // The listener closes at once …
    let addr = format!("127.0.0.1:{}", setup.port);
    eventually("the listener to close", Duration::from_secs(5), || {
        std::future::ready(TcpStream::connect(&addr).is_err())
    })
    .await;
    assert!(
        !in_flight.is_finished(),
        "the slow request is still in flight when accepting stops"
    );
    // … and the request in flight still completes.
    let status = in_flight.await.expect("task").expect("in-flight request");
    assert_eq!(status, 200);
    let (exit, _) = served.wait(Duration::from_secs(12));
    assert!(exit.success(), "clean exit: {exit}");
}
