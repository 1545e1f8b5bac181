//! Sessions: login, authentication of a cookie's tokens, refresh (single-flight rotation),
//! logout, and the user's session list.
//!
//! No actix types here: handlers give it the tokens from the cookie and get back outcomes;
//! whether a cookie is set or cleared is decided by the handler from those outcomes.
//!
//! Beside it: `login` (the steps of [`Sessions::login`]), [`throttle`] (login throttling),
//! `revoke` (every revocation, counted once), [`users`] (user administration for the CLI),
//! [`single_flight`].

mod login;
mod revoke;
pub mod single_flight;
pub mod streams;
pub mod throttle;
pub mod users;

use std::{fmt, sync::Arc};

use crate::{
    clock::{duration_ms, Clock, Millis},
    config::Config,
    metrics,
    password::Passwords,
    store::{
        FamilyInfo, FamilyState, Liveness, RevokeOutcome, RevokeReason, RotateOutcome,
        RotateRequest, Store, StoreError, UserRecord,
    },
    tokens::{new_id, peek_claims, unix_seconds, AccessClaims, RefreshToken, Sealer, Signer},
};
use revoke::{revoke_family, revoke_user_families};
use single_flight::SingleFlight;
use streams::{Limit, StreamWatch, Streams, TooManyStreams};
pub use throttle::ThrottleSettings;

/// The tokens the cookie carries. `Debug` shows none.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieTokens {
    pub access: String,
    pub refresh: String,
    /// The refresh token `refresh` replaced (none after a login): with it the cookie proves
    /// a rotation the store lost (DESIGN.md §5 "Lost writes").
    pub previous: Option<String>,
    /// `refresh`'s generation, as the store gave it (none in a cookie from a gateway before
    /// generations).
    pub generation: Option<u64>,
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
    /// The store is behind the cookie by more than the cookie can prove.
    StoreBehind,
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
    #[schema(pattern = "^[A-Za-z0-9_-]{22}$")]
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
    /// How often an open stream re-checks its session.
    pub stream_recheck: Millis,
    /// Open streams per session.
    pub max_streams: usize,
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
            stream_recheck: duration_ms(s.stream_recheck),
            max_streams: s.max_streams,
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
    streams: Arc<Streams>,
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
        let streams = Streams::new(settings.max_streams);
        if let Some(changes) = store.family_changes() {
            streams.follow(changes);
        }
        Self {
            streams,
            store,
            passwords,
            signer,
            sealer,
            clock,
            settings,
            flights: SingleFlight::default(),
        }
    }

    /// Watches a stream (WebSocket, server-sent events) that `auth`'s session opens: it
    /// resolves when the session is over (see [`streams`]).
    pub fn watch_stream(
        &self,
        auth: &Authenticated,
        limit: Limit,
    ) -> Result<StreamWatch, TooManyStreams> {
        StreamWatch::open(
            &self.streams,
            Arc::clone(&self.store),
            Arc::clone(&self.clock),
            auth,
            self.settings.stream_recheck,
            limit,
        )
    }

    /// This process's open streams.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Revokes one family (counted once) and ends its streams in this process.
    async fn end_family(
        &self,
        family_id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<RevokeOutcome, SessionError> {
        let outcome = revoke_family(self.store.as_ref(), family_id, reason, now).await?;
        self.streams.end_family(family_id);
        Ok(outcome)
    }

    /// Revokes every family of a user (counted) and ends their streams in this process.
    async fn end_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<usize, SessionError> {
        let n = revoke_user_families(self.store.as_ref(), user_id, reason, now).await?;
        self.streams.end_user(user_id);
        Ok(n)
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

    /// Validates a cookie's tokens: the family must be live (one store round trip), and the
    /// access token is rotated when due (or when forced).
    pub async fn authenticate(
        &self,
        tokens: &CookieTokens,
        refresh: Refresh,
        client: &ClientInfo,
    ) -> Result<Authenticated, SessionError> {
        let invalid = |_| SessionError::Invalid(InvalidReason::Malformed);
        let presented = RefreshToken::parse(&tokens.refresh)
            .map_err(invalid)?
            .at_generation(tokens.generation);
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
                    let previous = tokens.previous.as_deref().and_then(|p| {
                        RefreshToken::parse(p)
                            .ok()
                            .filter(|p| p.family_id == presented.family_id)
                    });
                    self.rotate(
                        presented.clone(),
                        previous,
                        claims.sub.clone(),
                        client.clone(),
                    )
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
        previous: Option<RefreshToken>,
        user_id: String,
        client: ClientInfo,
    ) -> Result<Authenticated, SessionError> {
        let now = self.now();
        let fid = presented.family_id.clone();
        let user = match self.store.user(&user_id).await? {
            Some(user) if !user.disabled => user,
            _ => {
                self.end_family(&fid, RevokeReason::UserDisabled, now)
                    .await?;
                metrics::refresh(metrics::Refresh::Revoked);
                tracing::warn!(event = "session_revoked", reason = "user_disabled", family = %fid, user = %user_id, ip = %client.ip, user_agent = %client.user_agent, "session of a disabled user ended");
                return Err(SessionError::Invalid(InvalidReason::UserDisabled));
            }
        };
        // The store gives the successor its generation (see `RefreshToken::at_generation`).
        let successor = RefreshToken::generate(&fid, presented.generation.map_or(0, |g| g + 1))?;
        let request = RotateRequest {
            family_id: fid.clone(),
            presented_hash: presented.secret_hash(),
            presented_generation: presented.generation,
            previous_hash: previous.as_ref().map(RefreshToken::secret_hash),
            successor_hash: successor.secret_hash(),
            sealed_successor: self.sealer.seal(&fid, &successor)?,
            now,
            idle_ms: self.settings.idle,
            grace_ms: self.settings.grace,
        };
        // What the successor replaced, for the new cookie's proof: the presented token, but for
        // a grace answer to a sibling (same generation), whose successor came from the same
        // predecessor as the presented token.
        let mut predecessor = presented.expose();
        let (refresh, idle_exp, abs_exp) = match self.store.rotate(&request).await? {
            RotateOutcome::Rotated {
                user_id: owner,
                generation,
                idle_exp,
                abs_exp,
            } if owner == user.id => {
                metrics::refresh(metrics::Refresh::Rotated);
                (successor.at_generation(generation), idle_exp, abs_exp)
            }
            RotateOutcome::Grace {
                user_id: owner,
                generation,
                idle_exp,
                abs_exp,
                sealed_successor,
            } if owner == user.id => {
                let earlier = self
                    .sealer
                    .open(&fid, &sealed_successor)
                    .map_err(|_| SessionError::Invalid(InvalidReason::Malformed))?;
                metrics::refresh(metrics::Refresh::Grace);
                tracing::debug!(family = %fid, "refresh within the grace window: same successor");
                if presented.generation == Some(generation) {
                    if let Some(previous) = &previous {
                        predecessor = previous.expose();
                    }
                }
                (earlier.at_generation(generation), idle_exp, abs_exp)
            }
            RotateOutcome::StoreBehind {
                user_id: owner,
                generation,
                idle_exp,
                abs_exp,
            } if owner == user.id => {
                metrics::refresh(metrics::Refresh::StoreBehind);
                tracing::warn!(
                    event = "store_behind",
                    outcome = "resynchronised",
                    family = %fid,
                    user = %owner,
                    generation,
                    "the store had lost this session's last rotation; the cookie proved it and the session goes on"
                );
                (successor.at_generation(generation), idle_exp, abs_exp)
            }
            RotateOutcome::StoreBehindUnproven { user_id: owner } => {
                metrics::refresh(metrics::Refresh::StoreBehindUnproven);
                revoke::counted(RevokeReason::StoreBehind, 1);
                self.streams.end_family(&fid);
                tracing::warn!(
                    event = "store_behind",
                    outcome = "ended",
                    family = %fid,
                    user = %owner,
                    ip = %client.ip,
                    user_agent = %client.user_agent,
                    "the store lost more of this session than its cookie can prove; the session ends (no theft alleged)"
                );
                return Err(SessionError::Invalid(InvalidReason::StoreBehind));
            }
            RotateOutcome::ReuseDetected { user_id: owner } => {
                metrics::refresh(metrics::Refresh::ReuseDetected);
                revoke::counted(RevokeReason::Reuse, 1);
                self.streams.end_family(&fid);
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
            RotateOutcome::Rotated { .. }
            | RotateOutcome::Grace { .. }
            | RotateOutcome::StoreBehind { .. } => {
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
                previous: Some(predecessor),
                generation: refresh.generation,
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
        let outcome = self
            .end_family(&presented.family_id, RevokeReason::Logout, self.now())
            .await?;
        if outcome == RevokeOutcome::Revoked {
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
        let n = self
            .end_user(&auth.user.id, RevokeReason::LogoutAll, self.now())
            .await?;
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
                self.end_family(family_id, RevokeReason::Logout, now)
                    .await?;
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
