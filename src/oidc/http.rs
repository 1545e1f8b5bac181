//! The HTTP client the OpenID Connect crate talks to providers through: awc, the client the
//! gateway already links, adapted to `openidconnect`'s request and response types. Redirects
//! are never followed (a provider's redirect could point the gateway anywhere), bodies are
//! bounded, and every call has a deadline.

use std::time::Duration;

use openidconnect::{HttpRequest, HttpResponse};

/// Longest provider answer read (discovery documents and key sets are a few KiB).
const MAX_BODY: usize = 1024 * 1024;

/// A provider that has not answered within this is down.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// One request of the OpenID Connect crate, under way.
pub type PendingResponse<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, HttpError>> + 'a>>;

/// Why a provider could not be reached or read; the text is for the log only.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The client for identity providers (one per worker: awc clients are not `Send`).
#[derive(Clone)]
pub struct ProviderClient(awc::Client);

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderClient")
    }
}

impl Default for ProviderClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ProviderClient {
    pub fn new() -> Self {
        // As for upstreams: TLS with aws-lc, installed once (a second install fails harmlessly).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let connector = awc::Connector::new()
            .limit(64)
            .timeout(TIMEOUT)
            .conn_keep_alive(Duration::from_secs(30));
        Self(
            awc::Client::builder()
                .connector(connector)
                .disable_redirects()
                .timeout(TIMEOUT)
                .finish(),
        )
    }

    /// Sends one request of the OpenID Connect crate.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let method = awc::http::Method::from_bytes(parts.method.as_str().as_bytes())
            .map_err(|e| HttpError(format!("method: {e}")))?;
        let mut outgoing = self.0.request(method, parts.uri.to_string());
        for (name, value) in &parts.headers {
            outgoing = outgoing.insert_header((name.as_str(), value.as_bytes()));
        }
        let mut response = outgoing
            .send_body(body)
            .await
            .map_err(|e| HttpError(format!("{} {}: {e}", parts.method, parts.uri)))?;
        let bytes = response
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| HttpError(format!("{} {}: body: {e}", parts.method, parts.uri)))?;
        let mut answer =
            openidconnect::http::Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            answer = answer.header(name.as_str(), value.as_bytes());
        }
        answer
            .body(bytes.to_vec())
            .map_err(|e| HttpError(format!("response: {e}")))
    }

    /// The client as the OpenID Connect crate calls it.
    pub fn adapter<'a>(&'a self) -> impl Fn(HttpRequest) -> PendingResponse<'a> + 'a {
        move |request| Box::pin(self.send(request))
    }
}
