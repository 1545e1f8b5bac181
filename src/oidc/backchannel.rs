//! OpenID Connect Back-Channel Logout 1.0: the provider POSTs a signed `logout_token` when a
//! user's session there ends, and every family that provider session (`sid`) or subject
//! (`sub`) opened here is revoked — in the store, so on every gateway instance at once.
//!
//! The token is checked as the specification says: signature by a key of the provider's
//! JWKS (the discovered one), `iss` the provider's issuer, `aud` our client id, `iat` present
//! and recent, the back-channel logout event present, `sub` or `sid` present, no `nonce`.

use std::collections::HashSet;

use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{http::ProviderClient, IdentityProviders, OidcError};
use crate::{
    clock::Millis,
    session::{SessionError, Sessions},
    store::ProviderScope,
};

/// The event a logout token must carry.
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A logout token older than this (by `iat`) is refused.
const MAX_AGE_SECS: i64 = 5 * 60;

/// Signature algorithms accepted (never `none`, never HMAC with a public key).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, Deserialize)]
struct LogoutClaims {
    iat: i64,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    events: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    nonce: Option<serde_json::Value>,
}

/// What one logout token named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub subject: Option<String>,
    pub sid: Option<String>,
}

/// Checks `token` against provider `id`'s keys and claims rules.
pub async fn validate(
    providers: &IdentityProviders,
    id: &str,
    token: &str,
    http: &ProviderClient,
    now: Millis,
) -> Result<LogoutRequest, OidcError> {
    let config = providers.config_of(id)?;
    let metadata = providers.metadata_of(id, http).await?;
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| OidcError::TokenInvalid(format!("logout token header: {e}")))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(OidcError::TokenInvalid(format!(
            "logout token algorithm {:?} is not accepted",
            header.alg
        )));
    }
    let keys = serde_json::to_value(metadata.jwks())
        .ok()
        .and_then(|set| set.get("keys").cloned())
        .and_then(|keys| serde_json::from_value::<Vec<serde_json::Value>>(keys).ok())
        .unwrap_or_default();
    let key = keys
        .into_iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key).ok())
        .find(|jwk| match (&header.kid, &jwk.common.key_id) {
            (Some(kid), Some(key_id)) => kid == key_id,
            (None, _) => true,
            _ => false,
        })
        .ok_or_else(|| {
            OidcError::TokenInvalid("no provider key matches the logout token".into())
        })?;
    let key = DecodingKey::from_jwk(&key)
        .map_err(|e| OidcError::TokenInvalid(format!("provider key: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[metadata.issuer().as_str()]);
    validation.set_audience(&[config.client_id.as_str()]);
    validation.required_spec_claims = HashSet::from(["iss".to_owned(), "aud".to_owned()]);
    validation.leeway = 60;
    let claims = jsonwebtoken::decode::<LogoutClaims>(token, &key, &validation)
        .map_err(|e| OidcError::TokenInvalid(format!("logout token: {e}")))?
        .claims;
    let age = now.div_euclid(1000) - claims.iat;
    if !(-60..=MAX_AGE_SECS).contains(&age) {
        return Err(OidcError::TokenInvalid(
            "logout token iat is not recent".into(),
        ));
    }
    if !claims.events.contains_key(LOGOUT_EVENT) {
        return Err(OidcError::TokenInvalid(
            "logout token has no logout event".into(),
        ));
    }
    if claims.nonce.is_some() {
        return Err(OidcError::TokenInvalid(
            "logout token carries a nonce".into(),
        ));
    }
    if claims.sub.is_none() && claims.sid.is_none() {
        return Err(OidcError::TokenInvalid(
            "logout token names neither sub nor sid".into(),
        ));
    }
    Ok(LogoutRequest {
        subject: claims.sub,
        sid: claims.sid,
    })
}

/// Revokes every family the request names at provider `id`: those of its `sid` when it names
/// one, else every family of its subject. Returns how many were live.
pub async fn revoke(
    sessions: &Sessions,
    id: &str,
    request: &LogoutRequest,
) -> Result<usize, OidcError> {
    let now = sessions.now();
    let store = sessions.store();
    let scope = match (&request.sid, &request.subject) {
        (Some(sid), _) => ProviderScope::Session(sid),
        (None, Some(sub)) => ProviderScope::Subject(sub),
        (None, None) => return Ok(0),
    };
    let families = store
        .provider_families(id, scope, now)
        .await
        .map_err(SessionError::from)?;
    let revoked = sessions.end_provider_sessions(&families).await?;
    tracing::info!(event = "provider_logout", provider = %id, revoked, "back-channel logout");
    Ok(revoked)
}
