//! The HTTPS listener (`[tls]`), against certificate authorities generated in the test: a
//! client trusting only the gateway's CA logs in over HTTP/2 and over HTTP/1.1 (as ALPN
//! negotiated them) and upstreams hear `X-Forwarded-Proto: https`; a client trusting another
//! CA fails the handshake; `bffgate serve` answers over HTTPS and takes a new certificate on
//! SIGHUP; missing, unreadable and mismatched files are refused by their key.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::common::{upstream, *};
use bffgate::config::{AuthMode, Config};
use reqwest::Version;

const BIN: &str = env!("CARGO_BIN_EXE_bffgate");
const EMAIL: &str = "tess@example.com";

/// A certificate authority of the test's own, which issues the gateway's certificates.
struct Authority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// A certificate for `127.0.0.1` and `localhost` and its key, as PEM.
    fn issue(&self) -> (String, String) {
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// [`Authority::issue`], written to `cert.pem` and `key.pem` in `dir` (replacing them).
    fn issue_into(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue();
        let paths = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&paths.0, cert).expect("certificate written");
        std::fs::write(&paths.1, key).expect("key written");
        paths
    }

    /// A browser-like client (cookie jar, `X-CSRF: 1`) that trusts this CA and no other;
    /// HTTP/1.1 only when `http1`, else whatever ALPN settles (HTTP/2 first).
    fn client(&self, http1: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.issuer.pem().as_bytes()).expect("CA pem");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-csrf", reqwest::header::HeaderValue::from_static("1"));
        let builder = reqwest::Client::builder()
            .tls_certs_only([ca])
            .cookie_store(true)
            .default_headers(headers);
        let builder = if http1 { builder.http1_only() } else { builder };
        builder.build().expect("client")
    }
}

/// `path` on `gw`'s HTTPS listener.
fn https(gw: &TestGateway, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", gw.addr.port())
}

/// The tests' configuration (fixed cookie key, memory store) with `[tls]` naming `cert` and
/// `key`, loaded from TOML as an operator writes it.
fn tls_config(dir: &Path, cert: &Path, key: &Path) -> Config {
    let file = dir.join("tls.toml");
    std::fs::write(&file, tls_toml(cert, key)).expect("config written");
    let mut config = Config::load_from(Some(&file), Vec::new()).expect("[tls] loads");
    config.cookie.key = test_config().cookie.key;
    config
}

fn tls_toml(cert: &Path, key: &Path) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    )
}

#[actix_web::test]
async fn logins_over_https_negotiate_http2_or_http1_and_upstreams_hear_https() {
    let ca = Authority::new("bffgate test CA");
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = ca.issue_into(dir.path());
    let upstream = upstream::start();
    let mut config = tls_config(dir.path(), &cert, &key);
    config.routes = vec![route("/api", &upstream.base, AuthMode::Required)];
    let gw = TestGateway::start(config, EMAIL).await;

    for (http1, version) in [(false, Version::HTTP_2), (true, Version::HTTP_11)] {
        let client = ca.client(http1);
        let res = client
            .post(https(&gw, "/auth/login"))
            .json(&serde_json::json!({ "email": EMAIL, "password": PASSWORD }))
            .send()
            .await
            .expect("login over https");
        assert_eq!(res.status(), 200, "login over {version:?}");
        assert_eq!(res.version(), version, "the version ALPN negotiated");
        assert!(set_cookie(&res).is_some_and(|c| c.secure() == Some(true)));

        // The Secure cookie comes back over HTTPS and the upstream hears the scheme.
        let res = client
            .get(https(&gw, "/api/orders"))
            .send()
            .await
            .expect("proxied request over https");
        assert_eq!(res.status(), 200, "proxied over {version:?}");
        assert_eq!(res.version(), version);
        let seen = upstream.last();
        assert_eq!(seen.path, "/api/orders");
        assert!(seen.bearer().is_some(), "signed in over {version:?}");
        assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    }
}

#[actix_web::test]
async fn a_client_that_does_not_trust_the_ca_fails_the_handshake() {
    let ca = Authority::new("the gateway's CA");
    let stranger = Authority::new("another CA");
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = ca.issue_into(dir.path());
    let gw = TestGateway::start(tls_config(dir.path(), &cert, &key), EMAIL).await;

    let err = stranger
        .client(false)
        .get(https(&gw, "/healthz"))
        .send()
        .await
        .expect_err("a certificate from an untrusted CA is refused");
    assert!(err.is_connect(), "{err:?}");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    // The listener itself is fine: the trusting client is served.
    assert_eq!(
        status(ca.client(false).get(https(&gw, "/healthz"))).await,
        200
    );
}

/// Whether a client trusting only `ca` gets a 200 from `/healthz` on `port` over HTTPS, on
/// a new connection (a new handshake).
async fn healthy(ca: &Authority, port: u16) -> bool {
    ca.client(false)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_ok_and(|res| res.status() == 200)
}

#[actix_web::test]
async fn bffgate_serve_answers_over_https_and_takes_a_new_certificate_on_sighup() {
    let first = Authority::new("first CA");
    let second = Authority::new("second CA");
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = first.issue_into(dir.path());
    let port = free_port();
    let config = dir.path().join("bffgate.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port}\"\n{}", tls_toml(&cert, &key)),
    )
    .expect("config written");
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BFFGATE_CONFIG", &config)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let mut served = ChildProcess::spawn(&mut cmd, "bffgate serve");
    served
        .wait_until_ready(Duration::from_secs(30), || healthy(&first, port))
        .await;
    assert!(!healthy(&second, port).await);

    // A certificate from another CA in place of the first; SIGHUP swaps it in.
    second.issue_into(dir.path());
    served.signal("HUP");
    eventually("the new certificate", Duration::from_secs(10), || {
        healthy(&second, port)
    })
    .await;
    assert!(!healthy(&first, port).await, "the old one is gone");

    // A key that does not match: the reload is refused and the current certificate stays.
    let (_, stray_key) = second.issue();
    std::fs::write(&key, stray_key).expect("key written");
    served.signal("HUP");
    eventually(
        "the refused reload in the log",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(text.contains("does not match"))
        },
    )
    .await;
    assert!(healthy(&second, port).await);

    let exit = served.stop();
    assert!(exit.success(), "clean exit: {exit}");
}

#[test]
fn missing_unreadable_and_mismatched_tls_files_are_refused_by_their_key() {
    let ca = Authority::new("bffgate test CA");
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = ca.issue_into(dir.path());
    let (_, other_key) = ca.issue();
    let other_key_path = dir.path().join("other-key.pem");
    std::fs::write(&other_key_path, other_key).expect("key written");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("garbage written");
    let directory = dir.path().to_path_buf();

    let cases: [(&Path, &Path, &str, &str); 7] = [
        (&missing, &key, "tls.cert_file", "missing.pem"),
        (&cert, &missing, "tls.key_file", "missing.pem"),
        (&directory, &key, "tls.cert_file", "cannot read"),
        (&cert, &directory, "tls.key_file", "cannot read"),
        (&garbage, &key, "tls.cert_file", "no PEM certificate"),
        (&cert, &garbage, "tls.key_file", "no PEM private key"),
        (&cert, &other_key_path, "tls.key_file", "does not match"),
    ];
    for (cert, key, named, says) in cases {
        let file = dir.path().join("case.toml");
        std::fs::write(&file, tls_toml(cert, key)).expect("config written");
        let err = Config::load_from(Some(&file), Vec::new())
            .expect_err("a bad [tls] pair is refused")
            .to_string();
        assert!(err.contains(named), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let file = dir.path().join("good.toml");
    std::fs::write(&file, tls_toml(&cert, &key)).expect("config written");
    Config::load_from(Some(&file), Vec::new()).expect("a matching pair loads");
}
