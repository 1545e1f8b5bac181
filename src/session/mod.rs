//! Sessions: login, authentication of a cookie's tokens, refresh (single-flight rotation),
//! logout, and the user's session list.
//!
//! No actix types here: handlers give it the tokens from the cookie and get back outcomes;
//! whether a cookie is set or cleared is decided by the handler from those outcomes.

pub mod single_flight;

use std::{fmt, sync::Arc};

use crate::{
    clock::{duration_ms, Clock, Millis},
    config::Config,
    metrics,
    password::{Passwords, MAX_PASSWORD_BYTES},
    store::{
        revoke_user_families, FamilyInfo, FamilyState, Liveness, NewFamily, RevokeReason,
        RotateOutcome, RotateRequest, Store, StoreError, ThrottlePolicy, UserRecord,
    },
    tokens::{new_id, peek_claims, unix_seconds, AccessClaims, RefreshToken, Sealer, Signer},
};
use single_flight::SingleFlight;

/// The two tokens the cookie carries. `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieTokens {
    pub access: String,
    pub refresh: String,
}

impl fmt::Debug for CookieTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieTokens([redacted])")
    }
}

/// Why a presented session is not valid (the cookie should be cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    Missing,
    Malformed,
    Expired,
    Revoked,
    ReuseDetected,
    UserDisabled,
}

/// What went wrong, by what the client should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    /// Wrong email or password (one answer for both).
    #[error("invalid email or password")]
    BadCredentials,
    /// Too many failed logins: try again after this many milliseconds.
    #[error("too many failed logins")]
    Throttled { retry_after_ms: Millis },
    /// The session is over: 401 and clear the cookie.
    #[error("session invalid: {0:?}")]
    Invalid(InvalidReason),
    /// The store could not be reached: 503, keep the cookie.
    #[error("{0}")]
    Unavailable(String),
    /// Not one of the user's sessions.
    #[error("no such session")]
    NotFound,
    /// A bug or corrupt data: 500.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::tokens::TokenError> for SessionError {
    fn from(e: crate::tokens::TokenError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub roles: Vec<String>,
}

/// The session's identity and deadlines (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub access_expires_at: Millis,
    pub idle_expires_at: Millis,
    pub max_expires_at: Millis,
}

/// A valid session, and new tokens for the cookie if it was rotated.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: UserView,
    pub session: SessionView,
    pub renewed: Option<CookieTokens>,
}

/// How eager [`Sessions::authenticate`] is to rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Rotate only if the access token expires within `refresh_before`.
    IfDue,
    /// Rotate now (`POST /auth/refresh`, or an upstream rejected the token).
    Force,
}

/// Lifetimes in milliseconds and token claims, from [`Config`].
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub access_ttl: Millis,
    pub refresh_before: Millis,
    pub idle: Millis,
    pub max_lifetime: Millis,
    pub grace: Millis,
    pub issuer: String,
    pub audience: String,
    /// Login throttling; `None` when disabled.
    pub throttle: Option<ThrottleSettings>,
}

/// Login throttling: one policy per email and address pair, one per address.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    pub pair: ThrottlePolicy,
    pub ip: ThrottlePolicy,
}

impl ThrottleSettings {
    pub fn from_config(t: &crate::config::ThrottleConfig) -> Option<Self> {
        let policy = |free| ThrottlePolicy {
            free,
            base_ms: duration_ms(t.base_delay),
            max_ms: duration_ms(t.max_delay),
            window_ms: duration_ms(t.window),
        };
        t.enabled.then(|| Self {
            pair: policy(t.free_attempts),
            ip: policy(t.ip_free_attempts),
        })
    }
}

/// Throttle keys: hashes, so the store never holds an email or an address.
fn throttle_keys(email: &str, ip: &str) -> (String, String) {
    use base64::Engine as _;
    let hash = |kind: &str, parts: &[&str]| {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in parts {
            ctx.update(part.as_bytes());
            ctx.update(b"\0");
        }
        let digest = ctx.finish();
        format!(
            "{kind}:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
        )
    };
    (hash("pair", &[email, ip]), hash("ip", &[ip]))
}

impl SessionSettings {
    pub fn from_config(config: &Config) -> Self {
        let s = &config.session;
        Self {
            access_ttl: duration_ms(s.access_ttl),
            refresh_before: duration_ms(s.refresh_before),
            idle: duration_ms(s.idle_timeout),
            max_lifetime: duration_ms(s.max_lifetime),
            grace: duration_ms(s.reuse_grace),
            issuer: config.jwt.issuer.clone(),
            audience: config.jwt.audience.clone(),
            throttle: ThrottleSettings::from_config(&config.throttle),
        }
    }
}

/// Normalises an email for lookup: trimmed, lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Client details recorded with a new session.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: String,
    pub ip: String,
}

/// The session service every handler shares.
pub struct Sessions {
    store: Arc<dyn Store>,
    passwords: Passwords,
    signer: Arc<Signer>,
    sealer: Sealer,
    clock: Arc<dyn Clock>,
    settings: SessionSettings,
    flights: SingleFlight<Result<Authenticated, SessionError>>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        passwords: Passwords,
        signer: Arc<Signer>,
        sealer: Sealer,
        clock: Arc<dyn Clock>,
        settings: SessionSettings,
    ) -> Self {
        Self {
            store,
            passwords,
            signer,
            sealer,
            clock,
            settings,
            flights: SingleFlight::default(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn mint(&self, user: &UserView, family_id: &str, now: Millis) -> Result<String, SessionError> {
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sub: user.id.clone(),
            sid: family_id.to_owned(),
            iat: unix_seconds(now),
            exp: unix_seconds(now + self.settings.access_ttl),
            jti: new_id()?,
            email: user.email.clone(),
            roles: user.roles.clone(),
        };
        Ok(self.signer.mint(&claims)?)
    }

    /// Checks email and password and opens a new session (family). A `previous` session
    /// presented with the login is revoked, so replaced cookies leave nothing live behind.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        client: ClientInfo,
        previous: Option<CookieTokens>,
    ) -> Result<Authenticated, SessionError> {
        let email = normalize_email(email);
        if password.len() > MAX_PASSWORD_BYTES || email.len() > 320 {
            metrics::login(metrics::Login::BadCredentials);
            return Err(SessionError::BadCredentials);
        }
        let now = self.now();
        let (pair_key, ip_key) = throttle_keys(&email, &client.ip);
        if self.settings.throttle.is_some() {
            let keys = [pair_key.clone(), ip_key.clone()];
            if let Some(until) = self.store.throttle_locked(&keys, now).await? {
                metrics::login(metrics::Login::Throttled);
                tracing::warn!(
                    event = "login_throttled",
                    ip = %client.ip,
                    user_agent = %client.user_agent,
                    retry_after_ms = until - now,
                    "login refused: too many failures"
                );
                return Err(SessionError::Throttled {
                    retry_after_ms: until - now,
                });
            }
        }
        let user = self.store.user_by_email(&email).await?;
        let ok = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await
            .map_err(|e| SessionError::Internal(e.to_string()))?;
        let user = match user {
            Some(user) if ok && !user.disabled => user,
            user => {
                let why = match &user {
                    None => "unknown_email",
                    Some(u) if u.disabled && ok => "disabled",
                    Some(_) => "bad_password",
                };
                metrics::login(if why == "disabled" {
                    metrics::Login::Disabled
                } else {
                    metrics::Login::BadCredentials
                });
                tracing::warn!(
                    event = "login_failed",
                    reason = why,
                    user = user.as_ref().map(|u| u.id.as_str()).unwrap_or("-"),
                    ip = %client.ip,
                    user_agent = %client.user_agent,
                    "login failed"
                );
                if let Some(t) = &self.settings.throttle {
                    self.store.throttle_fail(&pair_key, &t.pair, now).await?;
                    self.store.throttle_fail(&ip_key, &t.ip, now).await?;
                }
                return Err(SessionError::BadCredentials);
            }
        };
        if self.settings.throttle.is_some() {
            self.store.throttle_reset(&pair_key).await?;
        }
        if let Some(previous) = previous {
            if let Ok(old) = RefreshToken::parse(&previous.refresh) {
                if self
                    .store
                    .revoke_family(&old.family_id, RevokeReason::Replaced, now)
                    .await?
                {
                    metrics::families_revoked(RevokeReason::Replaced, 1);
                }
            }
        }
        let family_id = new_id()?;
        let refresh = RefreshToken::generate(&family_id)?;
        let abs_exp = now + self.settings.max_lifetime;
        self.store
            .create_family(&NewFamily {
                id: family_id.clone(),
                user_id: user.id.clone(),
                secret_hash: refresh.secret_hash(),
                now,
                idle_ms: self.settings.idle,
                abs_exp,
                user_agent: client.user_agent.clone(),
                ip: client.ip.clone(),
            })
            .await?;
        let view = user_view(&user);
        let access = self.mint(&view, &family_id, now)?;
        metrics::login(metrics::Login::Ok);
        tracing::info!(event = "login", user = %user.id, family = %family_id, ip = %client.ip, "session opened");
        Ok(Authenticated {
            user: view,
            session: SessionView {
                id: family_id,
                access_expires_at: now + self.settings.access_ttl,
                idle_expires_at: crate::store::family_expiry(now, self.settings.idle, abs_exp),
                max_expires_at: abs_exp,
            },
            renewed: Some(CookieTokens {
                access,
                refresh: refresh.expose(),
            }),
        })
    }

    /// Validates a cookie's tokens: the family must be live (one store round trip), and the
    /// access token is rotated when due (or when forced).
    pub async fn authenticate(
        &self,
        tokens: &CookieTokens,
        refresh: Refresh,
        client: &ClientInfo,
    ) -> Result<Authenticated, SessionError> {
        let invalid = |_| SessionError::Invalid(InvalidReason::Malformed);
        let presented = RefreshToken::parse(&tokens.refresh).map_err(invalid)?;
        let claims = peek_claims(&tokens.access).map_err(invalid)?;
        if claims.sid != presented.family_id {
            return Err(SessionError::Invalid(InvalidReason::Malformed));
        }
        let now = self.now();
        let access_exp = claims.exp.saturating_mul(1000);
        let due = refresh == Refresh::Force || access_exp - now <= self.settings.refresh_before;
        if due {
            let key = format!("{}:{}", presented.family_id, presented.secret_hash());
            return self
                .flights
                .run(&key, || {
                    self.rotate(presented.clone(), claims.sub.clone(), client.clone())
                })
                .await;
        }
        match self
            .store
            .family_liveness(&presented.family_id, now)
            .await?
        {
            Liveness::Live {
                user_id,
                idle_exp,
                abs_exp,
            } if user_id == claims.sub => Ok(Authenticated {
                user: UserView {
                    id: claims.sub,
                    email: claims.email,
                    roles: claims.roles,
                },
                session: SessionView {
                    id: presented.family_id,
                    access_expires_at: access_exp,
                    idle_expires_at: idle_exp,
                    max_expires_at: abs_exp,
                },
                renewed: None,
            }),
            Liveness::Revoked => Err(SessionError::Invalid(InvalidReason::Revoked)),
            _ => Err(SessionError::Invalid(InvalidReason::Expired)),
        }
    }

    /// One rotation of `presented`'s family (DESIGN.md §5): two store round trips, the user
    /// (disabled users lose the family) and the rotation script.
    async fn rotate(
        &self,
        presented: RefreshToken,
        user_id: String,
        client: ClientInfo,
    ) -> Result<Authenticated, SessionError> {
        let now = self.now();
        let fid = presented.family_id.clone();
        let user = match self.store.user(&user_id).await? {
            Some(user) if !user.disabled => user,
            _ => {
                if self
                    .store
                    .revoke_family(&fid, RevokeReason::UserDisabled, now)
                    .await?
                {
                    metrics::families_revoked(RevokeReason::UserDisabled, 1);
                }
                metrics::refresh(metrics::Refresh::Revoked);
                tracing::warn!(event = "session_revoked", reason = "user_disabled", family = %fid, user = %user_id, ip = %client.ip, user_agent = %client.user_agent, "session of a disabled user ended");
                return Err(SessionError::Invalid(InvalidReason::UserDisabled));
            }
        };
        let successor = RefreshToken::generate(&fid)?;
        let request = RotateRequest {
            family_id: fid.clone(),
            presented_hash: presented.secret_hash(),
            successor_hash: successor.secret_hash(),
            sealed_successor: self.sealer.seal(&fid, &successor)?,
            now,
            idle_ms: self.settings.idle,
            grace_ms: self.settings.grace,
        };
        let (refresh, idle_exp, abs_exp) = match self.store.rotate(&request).await? {
            RotateOutcome::Rotated {
                user_id: owner,
                idle_exp,
                abs_exp,
                ..
            } if owner == user.id => {
                metrics::refresh(metrics::Refresh::Rotated);
                (successor, idle_exp, abs_exp)
            }
            RotateOutcome::Grace {
                user_id: owner,
                idle_exp,
                abs_exp,
                sealed_successor,
                ..
            } if owner == user.id => {
                let earlier = self
                    .sealer
                    .open(&fid, &sealed_successor)
                    .map_err(|_| SessionError::Invalid(InvalidReason::Malformed))?;
                metrics::refresh(metrics::Refresh::Grace);
                tracing::debug!(family = %fid, "refresh within the grace window: same successor");
                (earlier, idle_exp, abs_exp)
            }
            RotateOutcome::ReuseDetected { user_id: owner } => {
                metrics::refresh(metrics::Refresh::ReuseDetected);
                metrics::families_revoked(RevokeReason::Reuse, 1);
                tracing::warn!(
                    event = "refresh_token_reuse",
                    family = %fid,
                    user = %owner,
                    ip = %client.ip,
                    user_agent = %client.user_agent,
                    "a rotated-out refresh token was replayed; the session is revoked"
                );
                return Err(SessionError::Invalid(InvalidReason::ReuseDetected));
            }
            RotateOutcome::Revoked => {
                metrics::refresh(metrics::Refresh::Revoked);
                return Err(SessionError::Invalid(InvalidReason::Revoked));
            }
            RotateOutcome::Expired => {
                metrics::refresh(metrics::Refresh::Expired);
                return Err(SessionError::Invalid(InvalidReason::Expired));
            }
            RotateOutcome::Rotated { .. } | RotateOutcome::Grace { .. } => {
                return Err(SessionError::Internal(
                    "family belongs to another user than its access token".into(),
                ))
            }
        };
        let view = user_view(&user);
        let access = self.mint(&view, &fid, now)?;
        Ok(Authenticated {
            user: view,
            session: SessionView {
                id: fid,
                access_expires_at: now + self.settings.access_ttl,
                idle_expires_at: idle_exp,
                max_expires_at: abs_exp,
            },
            renewed: Some(CookieTokens {
                access,
                refresh: refresh.expose(),
            }),
        })
    }

    /// Revokes the cookie's family. A cookie that names no family is simply dropped.
    pub async fn logout(
        &self,
        tokens: &CookieTokens,
        client: &ClientInfo,
    ) -> Result<(), SessionError> {
        let Ok(presented) = RefreshToken::parse(&tokens.refresh) else {
            return Ok(());
        };
        if self
            .store
            .revoke_family(&presented.family_id, RevokeReason::Logout, self.now())
            .await?
        {
            metrics::families_revoked(RevokeReason::Logout, 1);
            tracing::warn!(event = "session_revoked", reason = "logout", family = %presented.family_id, ip = %client.ip, user_agent = %client.user_agent, "logged out");
        }
        Ok(())
    }

    /// Revokes every family of the signed-in user.
    pub async fn logout_all(
        &self,
        auth: &Authenticated,
        client: &ClientInfo,
    ) -> Result<usize, SessionError> {
        let n = revoke_user_families(
            self.store.as_ref(),
            &auth.user.id,
            RevokeReason::LogoutAll,
            self.now(),
        )
        .await?;
        metrics::families_revoked(RevokeReason::LogoutAll, n as u64);
        tracing::warn!(event = "session_revoked", reason = "logout_all", family = %auth.session.id, user = %auth.user.id, sessions = n, ip = %client.ip, user_agent = %client.user_agent, "logged out everywhere");
        Ok(n)
    }

    /// The signed-in user's live sessions, newest use first.
    pub async fn list(&self, auth: &Authenticated) -> Result<Vec<FamilyInfo>, SessionError> {
        Ok(self.store.user_families(&auth.user.id, self.now()).await?)
    }

    /// Revokes one of the signed-in user's sessions; [`SessionError::NotFound`] for any other.
    pub async fn revoke(
        &self,
        auth: &Authenticated,
        family_id: &str,
        client: &ClientInfo,
    ) -> Result<(), SessionError> {
        let now = self.now();
        match self.store.family(family_id, now).await? {
            FamilyState::Live(info) if info.user_id == auth.user.id => {
                if self
                    .store
                    .revoke_family(family_id, RevokeReason::Logout, now)
                    .await?
                {
                    metrics::families_revoked(RevokeReason::Logout, 1);
                }
                tracing::warn!(event = "session_revoked", reason = "logout", family = %family_id, user = %auth.user.id, ip = %client.ip, user_agent = %client.user_agent, "session revoked by its user");
                Ok(())
            }
            _ => Err(SessionError::NotFound),
        }
    }
}

fn user_view(user: &UserRecord) -> UserView {
    UserView {
        id: user.id.clone(),
        email: user.email.clone(),
        roles: user.roles.clone(),
    }
}

#[cfg(test)]
mod tests;
