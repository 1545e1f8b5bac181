//! A real OpenID provider for the tests: the `oidc-provider` npm package, started by
//! `tests/oidc/provider.mjs` on a free loopback port with the clients a test registers, and
//! stopped on drop. `scripts/test` installs the package (`npm ci` in `tests/oidc`).
//!
//! Its issuer is `http://localhost:<port>` while gateways run on `127.0.0.1`: two sites, as in
//! production, so the callback is a cross-site navigation and cookies of one never reach the
//! other.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use super::{free_port, process::ChildProcess};

/// The client id and secret tests register for the gateway.
pub const CLIENT_ID: &str = "bffgate";
pub const CLIENT_SECRET: &str = "bffgate-test-client-secret";

/// A running provider.
pub struct TestProvider {
    pub issuer: String,
    pub port: u16,
    process: ChildProcess,
}

impl TestProvider {
    /// Starts the provider with `clients` (the JSON client metadata `oidc-provider` takes).
    pub async fn start(clients: serde_json::Value) -> Self {
        Self::start_on(free_port(), clients).await
    }

    /// Starts the provider on `port` (a provider restarted where it was).
    pub async fn start_on(port: u16, clients: serde_json::Value) -> Self {
        Self::start_at("localhost", port, clients).await
    }

    /// Starts the provider with issuer `http://<host>:<port>` (`localhost` or `127.0.0.1`:
    /// whichever the gateway under test does not use, so that the two are different sites).
    pub async fn start_at(host: &str, port: u16, clients: serde_json::Value) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the oidc-provider package is missing: run `npm ci` in tests/oidc (scripts/test does)"
        );
        let issuer = format!("http://{host}:{port}");
        let mut process = ChildProcess::spawn(
            Command::new("node")
                .arg(dir.join("provider.mjs"))
                .env("PORT", port.to_string())
                .env("ISSUER", &issuer)
                .env("CLIENTS", clients.to_string())
                .stdout(Stdio::null())
                // BFFGATE_TEST_OIDC_LOG=1 shows the provider's errors.
                .stderr(if std::env::var_os("BFFGATE_TEST_OIDC_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                }),
            "oidc-provider",
        );
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        let client = reqwest::Client::new();
        process
            .wait_until_ready(Duration::from_secs(30), || async {
                client
                    .get(&discovery)
                    .send()
                    .await
                    .is_ok_and(|res| res.status() == 200)
            })
            .await;
        Self {
            issuer,
            port,
            process,
        }
    }

    /// The gateway's client registration for gateways at `origins` (the first receives
    /// back-channel logouts) and provider id `id`.
    pub fn client_for(origins: &[&str], id: &str) -> serde_json::Value {
        serde_json::json!([{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": origins.iter().map(|o| format!("{o}/auth/oidc/{id}/callback")).collect::<Vec<_>>(),
            "post_logout_redirect_uris": origins.iter().map(|o| format!("{o}/")).collect::<Vec<_>>(),
            "backchannel_logout_uri": format!("{}/auth/oidc/{id}/backchannel-logout", origins[0]),
            "backchannel_logout_session_required": true,
        }])
    }

    /// The next ID token the provider issues carries `claims` instead of its own (re-signed
    /// with the provider's key): a token meant for another client, or another nonce.
    pub async fn tamper_next_id_token(&self, claims: serde_json::Value) {
        let res = reqwest::Client::new()
            .post(format!("{}/__test/tamper", self.issuer))
            .body(claims.to_string())
            .send()
            .await
            .expect("tamper request");
        assert_eq!(res.status(), 204);
    }

    /// Stops the provider now (a provider that is down).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}
