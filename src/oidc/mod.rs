//! Signing in with an OpenID provider (`[[identity_providers]]`): the authorization code flow
//! with PKCE (S256), `state` and `nonce`, through the `openidconnect` crate — no protocol code
//! of our own beyond the checks the crate leaves to its caller.
//!
//! Owns: discovery (cached per provider), the authorization request ([`IdentityProviders::start`]),
//! the callback's checks in order — the flow belongs to this provider and is fresh, `state`
//! matches, the RFC 9207 `iss` parameter names the provider, the code is exchanged with the
//! PKCE verifier, the ID token is valid (signature from the provider's JWKS, `iss`, `aud`,
//! `azp`, `exp`, `nonce`) — then the user behind the identity ([`link`]) and the session,
//! opened exactly as a password login opens one (`Sessions::sign_in_verified`). Also
//! back-channel logout tokens ([`backchannel`]).
//!
//! Must not: know actix-web (the handlers translate, `web::cookie` seals the flow cookie),
//! put any token in a URL, a log line or an answer, or follow a provider's redirect.

pub mod backchannel;
pub mod http;
pub mod link;

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine as _;
use openidconnect::{
    core::{
        CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
        CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType,
        CoreSubjectIdentifierType,
    },
    AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata, RedirectUrl, RequestTokenError,
    Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};

use crate::{
    clock::Millis,
    config::{Config, IdentityProviderConfig},
    session::{Authenticated, ClientInfo, CookieTokens, SessionError, Sessions},
    store::ProviderSession,
};
use http::ProviderClient;

/// How long a started sign-in may take, from the redirect to the provider to the callback.
pub const FLOW_TTL: Duration = Duration::from_secs(10 * 60);

/// How long discovered metadata (endpoints and signing keys) is used before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(5 * 60);

/// Longest `return_to` kept (a path and query of the app).
const MAX_RETURN_TO: usize = 2048;

/// Discovery fields beyond the crate's: RFC 9207 and RP-initiated logout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraMetadata {
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

impl AdditionalProviderMetadata for ExtraMetadata {}

/// A provider's discovery document.
pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Why a sign-in through a provider did not complete. Each has a stable [`OidcError::code`]
/// the browser app shows; the detail is for the log only.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("no such identity provider")]
    UnknownProvider,
    /// `return_to` is not a path on this site.
    #[error("return_to must be a relative path on this site")]
    BadReturnTo,
    /// No flow cookie, an expired one, or one of another provider.
    #[error("no sign-in in progress")]
    NoFlow,
    #[error("state does not match")]
    StateMismatch,
    /// RFC 9207: the answer names another issuer (or none, where the provider promises one).
    #[error("issuer mix-up: {0}")]
    IssuerMismatch(String),
    /// The provider answered the authorization request with an error (`access_denied`, …).
    #[error("the provider refused: {0}")]
    ProviderRefused(String),
    /// The provider could not be reached, or answered nonsense.
    #[error("provider unavailable: {0}")]
    ProviderUnavailable(String),
    /// The token endpoint refused the code (used, expired, another client's).
    #[error("code rejected: {0}")]
    CodeRejected(String),
    /// The ID token is missing or invalid (signature, iss, aud, azp, exp, nonce).
    #[error("ID token invalid: {0}")]
    TokenInvalid(String),
    /// The identity may not sign in (unknown and not creatable, email taken, disabled).
    #[error("account refused: {0}")]
    AccountRefused(String),
    /// The store could not be reached.
    #[error("{0}")]
    Session(#[from] SessionError),
}

impl OidcError {
    /// The word the browser app is sent (`/?login_error=<code>`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownProvider => "unknown_provider",
            Self::BadReturnTo => "bad_return_to",
            Self::NoFlow => "flow_expired",
            Self::StateMismatch => "state_mismatch",
            Self::IssuerMismatch(_) => "issuer_mismatch",
            Self::ProviderRefused(_) => "access_denied",
            Self::ProviderUnavailable(_) => "provider_unavailable",
            Self::CodeRejected(_) => "code_rejected",
            Self::TokenInvalid(_) => "token_invalid",
            Self::AccountRefused(_) | Self::Session(SessionError::BadCredentials) => {
                "account_refused"
            }
            Self::Session(SessionError::Unavailable(_)) => "unavailable",
            Self::Session(_) => "internal",
        }
    }
}

/// What one started sign-in must remember until its callback: sealed in the flow cookie, never
/// readable by the browser.
#[derive(Clone, Serialize, Deserialize)]
pub struct FlowState {
    /// The provider's id.
    pub provider: String,
    state: String,
    nonce: String,
    /// The PKCE verifier (its S256 challenge went to the provider).
    verifier: String,
    /// Where to land afterwards: a relative path on this site.
    pub return_to: String,
    /// When the flow started.
    started: Millis,
}

impl std::fmt::Debug for FlowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowState")
            .field("provider", &self.provider)
            .field("return_to", &self.return_to)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl FlowState {
    /// The cookie's plain content.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// From the cookie's plain content; `None` if it is not a flow.
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The query of a callback, as the provider sent it (every field is the browser's to forge).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

/// A started sign-in: send the browser to `authorize_url`, remember `flow` in its cookie.
#[derive(Debug)]
pub struct Started {
    pub authorize_url: String,
    pub flow: FlowState,
}

/// A finished sign-in.
#[derive(Debug)]
pub struct SignedIn {
    pub auth: Authenticated,
    pub return_to: String,
}

/// A provider as the browser app lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    /// The provider's id, as in `/auth/oidc/{id}/start`.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$")]
    pub id: String,
    /// The sign-in button's label.
    pub name: String,
}

struct Provider {
    config: IdentityProviderConfig,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    discovered: Mutex<Option<(Instant, Metadata)>>,
}

/// Every configured provider, with its discovered metadata cached.
pub struct IdentityProviders {
    providers: Vec<Provider>,
}

impl std::fmt::Debug for IdentityProviders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.providers.iter().map(|p| &p.config.id))
            .finish()
    }
}

impl IdentityProviders {
    /// The providers of a validated configuration; nothing is fetched yet (a provider that is
    /// down must not stop the gateway).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let origin = config.origin();
        let providers = config
            .identity_providers
            .iter()
            .map(|p| {
                let issuer = IssuerUrl::new(p.issuer.clone())
                    .map_err(|e| format!("identity_providers {}: issuer: {e}", p.id))?;
                let redirect = RedirectUrl::new(format!("{origin}/auth/oidc/{}/callback", p.id))
                    .map_err(|e| format!("identity_providers {}: redirect URI: {e}", p.id))?;
                Ok(Provider {
                    config: p.clone(),
                    issuer,
                    redirect,
                    discovered: Mutex::new(None),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { providers })
    }

    /// The providers the browser app offers, in configured order.
    pub fn list(&self) -> Vec<ProviderInfo> {
        self.providers
            .iter()
            .map(|p| ProviderInfo {
                id: p.config.id.clone(),
                name: p.config.label().to_owned(),
            })
            .collect()
    }

    fn get(&self, id: &str) -> Result<&Provider, OidcError> {
        self.providers
            .iter()
            .find(|p| p.config.id == id)
            .ok_or(OidcError::UnknownProvider)
    }

    /// Starts a sign-in at provider `id`: a fresh state, nonce and PKCE verifier, and the
    /// provider's authorization URL carrying state, nonce and the S256 challenge.
    pub async fn start(
        &self,
        id: &str,
        return_to: Option<&str>,
        http: &ProviderClient,
        now: Millis,
    ) -> Result<Started, OidcError> {
        let provider = self.get(id)?;
        let return_to = safe_return_to(return_to)?;
        let metadata = provider.metadata(http).await?;
        let client = provider.client(metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let scopes = provider
            .config
            .scopes
            .iter()
            .filter(|scope| *scope != "openid")
            .map(|scope| Scope::new(scope.clone()));
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(scopes)
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            authorize_url: url.to_string(),
            flow: FlowState {
                provider: id.to_owned(),
                state: state.secret().clone(),
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                return_to,
                started: now,
            },
        })
    }

    /// Completes a sign-in at provider `id` from its callback: every check of the module
    /// header, then the user, then a session opened as a password login opens one.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        id: &str,
        params: CallbackParams,
        flow: Option<FlowState>,
        http: &ProviderClient,
        sessions: &Sessions,
        client_info: ClientInfo,
        previous: Option<CookieTokens>,
    ) -> Result<SignedIn, OidcError> {
        let provider = self.get(id)?;
        let now = sessions.now();
        let flow = flow
            .filter(|f| f.provider == id)
            .filter(|f| now.saturating_sub(f.started) < FLOW_TTL.as_millis() as Millis)
            .ok_or(OidcError::NoFlow)?;
        let state = params.state.as_deref().unwrap_or_default();
        if !crate::tokens::hashes_equal(state, &flow.state) {
            return Err(OidcError::StateMismatch);
        }
        let metadata = provider.metadata(http).await?;
        check_issuer(&metadata, params.iss.as_deref())?;
        if let Some(error) = params.error {
            return Err(OidcError::ProviderRefused(error));
        }
        let code = params
            .code
            .ok_or_else(|| OidcError::CodeRejected("no code".into()))?;
        let client = provider.client(metadata)?;
        let request = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| OidcError::ProviderUnavailable(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier.clone()));
        let adapter = http.adapter();
        let tokens = request.request_async(&adapter).await.map_err(|e| match e {
            RequestTokenError::ServerResponse(answer) => {
                OidcError::CodeRejected(answer.error().to_string())
            }
            RequestTokenError::Request(e) => OidcError::ProviderUnavailable(e.to_string()),
            other => OidcError::ProviderUnavailable(other.to_string()),
        })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| OidcError::TokenInvalid("no ID token".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(flow.nonce.clone()))
            .map_err(|e| OidcError::TokenInvalid(e.to_string()))?;
        // Claims the crate does not model (`sid`, the roles claim), read from the token whose
        // signature and claims were just verified.
        let extra = verified_payload(&id_token.to_string());
        let identity = link::Identity::from_claims(&provider.config, claims, &extra);
        let user =
            link::user_for(&provider.config, &identity, sessions.store().as_ref(), now).await?;
        let auth = sessions
            .sign_in_verified(&user, &provider.config.id, client_info, previous)
            .await?;
        sessions
            .store()
            .record_provider_session(&ProviderSession {
                provider: provider.config.id.clone(),
                subject: identity.subject.clone(),
                sid: identity.sid.clone(),
                family_id: auth.session.id.clone(),
                now,
                until: auth.session.max_expires_at,
            })
            .await
            .map_err(SessionError::from)?;
        Ok(SignedIn {
            auth,
            return_to: flow.return_to,
        })
    }

    /// The provider's metadata (endpoints and keys), `id` named in errors.
    pub async fn metadata_of(
        &self,
        id: &str,
        http: &ProviderClient,
    ) -> Result<Metadata, OidcError> {
        self.get(id)?.metadata(http).await
    }

    /// The configuration of provider `id`.
    pub fn config_of(&self, id: &str) -> Result<&IdentityProviderConfig, OidcError> {
        Ok(&self.get(id)?.config)
    }
}

impl Provider {
    /// The discovered metadata, read again once [`DISCOVERY_TTL`] has passed.
    async fn metadata(&self, http: &ProviderClient) -> Result<Metadata, OidcError> {
        if let Ok(cached) = self.discovered.lock() {
            if let Some((at, metadata)) = cached.as_ref() {
                if at.elapsed() < DISCOVERY_TTL {
                    return Ok(metadata.clone());
                }
            }
        }
        let adapter = http.adapter();
        let metadata = Metadata::discover_async(self.issuer.clone(), &adapter)
            .await
            .map_err(|e| {
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    detail.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                OidcError::ProviderUnavailable(format!("discovery of {}: {detail}", self.issuer))
            })?;
        if let Ok(mut cached) = self.discovered.lock() {
            *cached = Some((Instant::now(), metadata.clone()));
        }
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: Metadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let secret = self
            .config
            .client_secret()
            .map_err(|e| OidcError::ProviderUnavailable(e.to_string()))?
            .map(|s| ClientSecret::new(s.expose().to_owned()));
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect.clone()))
    }
}

/// RFC 9207: an `iss` in the answer must be the provider's issuer, exactly; a provider that
/// promises one (`authorization_response_iss_parameter_supported`) must send it.
fn check_issuer(metadata: &Metadata, iss: Option<&str>) -> Result<(), OidcError> {
    let expected = metadata.issuer().as_str();
    match iss {
        Some(sent) if sent == expected => Ok(()),
        Some(sent) => Err(OidcError::IssuerMismatch(format!(
            "answer names {sent:?}, expected {expected:?}"
        ))),
        None if metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported =>
        {
            Err(OidcError::IssuerMismatch("answer names no issuer".into()))
        }
        None => Ok(()),
    }
}

/// `return_to` if it is a path on this site: starts with one `/`, no `//` or `/\` (which
/// browsers read as another host), no backslash or control character anywhere, not too long.
/// Absent: `/`.
pub fn safe_return_to(return_to: Option<&str>) -> Result<String, OidcError> {
    let Some(path) = return_to else {
        return Ok("/".into());
    };
    let bytes = path.as_bytes();
    let ok = bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/') | Some(b'\\'))
        && path.len() <= MAX_RETURN_TO
        && !path
            .chars()
            .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
    if ok {
        Ok(path.to_owned())
    } else {
        Err(OidcError::BadReturnTo)
    }
}

/// The JSON payload of a JWT whose signature was already verified (or an empty object).
fn verified_payload(jwt: &str) -> serde_json::Value {
    jwt.split('.')
        .nth(1)
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_a_path_on_this_site_only() {
        for good in ["/", "/app", "/app/x?y=1#z", "/a/b/../c"] {
            assert_eq!(safe_return_to(Some(good)).unwrap(), good);
        }
        assert_eq!(safe_return_to(None).unwrap(), "/");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "evil",
            "",
            "/a\\b",
            "/a\nb",
            "/a b",
            "javascript:alert(1)",
        ] {
            assert!(safe_return_to(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(safe_return_to(Some(&format!("/{}", "a".repeat(3000)))).is_err());
    }

    #[test]
    fn flow_state_shows_no_secret_in_debug() {
        let flow = FlowState {
            provider: "corp".into(),
            state: "the-state".into(),
            nonce: "the-nonce".into(),
            verifier: "the-verifier".into(),
            return_to: "/x".into(),
            started: 1,
        };
        let shown = format!("{flow:?}");
        assert!(!shown.contains("the-"), "{shown}");
        let back = FlowState::from_json(&flow.to_json()).unwrap();
        assert_eq!(back.verifier, "the-verifier");
        assert!(FlowState::from_json("{}").is_none());
    }

    #[test]
    fn error_codes_are_stable_words() {
        assert_eq!(OidcError::StateMismatch.code(), "state_mismatch");
        assert_eq!(
            OidcError::Session(SessionError::Unavailable("x".into())).code(),
            "unavailable"
        );
        assert_eq!(
            OidcError::Session(SessionError::BadCredentials).code(),
            "account_refused"
        );
    }
}
