//! Login: [`Sessions::login`] as a sequence of named steps — throttle check, credentials,
//! counting a failure, ending a replaced cookie's family, opening a new one — and why a login
//! is refused ([`LoginFailure`]).

use super::{
    normalize_email,
    throttle::{Throttle, ThrottleVerdict},
    user_view, Authenticated, ClientInfo, CookieTokens, SessionError, SessionView, Sessions,
};
use crate::{
    clock::Millis,
    metrics,
    password::MAX_PASSWORD_BYTES,
    store::{family_expiry, NewFamily, RevokeReason, UserRecord},
    tokens::{new_id, RefreshToken},
};

impl Sessions {
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
        let throttle = Throttle::new(
            self.store.as_ref(),
            self.settings.throttle.as_ref(),
            &email,
            &client.ip,
        );
        // Reserved before Argon2 runs: parallel guesses are counted before they are checked.
        if let ThrottleVerdict::Locked { retry_after_ms } = throttle.reserve(now).await? {
            return Err(throttled(retry_after_ms, &client));
        }
        let user = match self.check_credentials(&email, password).await? {
            Credentials::Valid(user) => user,
            Credentials::Refused { failure, user_id } => {
                // The reserved attempt stays counted: it was a failure.
                refused(failure, user_id.as_deref(), &client);
                return Err(SessionError::BadCredentials);
            }
        };
        throttle.succeeded().await?;
        if let Some(previous) = previous {
            self.end_replaced(&previous, now).await?;
        }
        let signed_in = self.open_session(&user, &client, now).await?;
        metrics::login(metrics::Login::Ok);
        tracing::info!(event = "login", user = %user.id, family = %signed_in.session.id, ip = %client.ip, "session opened");
        Ok(signed_in)
    }

    /// Reserves a sign-in through an identity provider from `client`'s address, before any of
    /// its checks: the address's login throttle (a callback names no account). A delay that
    /// runs is [`SessionError::Throttled`], counted and logged like a throttled login.
    pub async fn reserve_provider_sign_in(&self, client: &ClientInfo) -> Result<(), SessionError> {
        match self.address_throttle(client).reserve(self.now()).await? {
            ThrottleVerdict::Free => Ok(()),
            ThrottleVerdict::Locked { retry_after_ms } => Err(throttled(retry_after_ms, client)),
        }
    }

    /// The throttle of a sign-in through an identity provider from `client`.
    fn address_throttle(&self, client: &ClientInfo) -> Throttle<'_> {
        Throttle::for_address(
            self.store.as_ref(),
            self.settings.throttle.as_ref(),
            &client.ip,
        )
    }

    /// A sign-in through an identity provider failed its checks: counted as a failed login
    /// (its reservation stays counted against the address).
    pub fn provider_sign_in_failed(&self) {
        metrics::login(metrics::Login::BadCredentials);
    }

    /// Opens a session for a user whom someone else authenticated (an identity provider,
    /// named by `via` in the log): the rest of a password login — a disabled user is refused
    /// (one answer, as for a wrong password), a replaced cookie's family is ended, and the
    /// session is opened, counted and logged exactly as [`Sessions::login`] does.
    pub async fn sign_in_verified(
        &self,
        user: &UserRecord,
        via: &str,
        client: ClientInfo,
        previous: Option<CookieTokens>,
    ) -> Result<Authenticated, SessionError> {
        if user.disabled {
            refused(LoginFailure::Disabled, Some(&user.id), &client);
            return Err(SessionError::BadCredentials);
        }
        let now = self.now();
        if let Some(previous) = previous {
            self.end_replaced(&previous, now).await?;
        }
        let signed_in = self.open_session(user, &client, now).await?;
        self.address_throttle(&client).succeeded().await?;
        metrics::login(metrics::Login::Ok);
        tracing::info!(event = "login", via, user = %user.id, family = %signed_in.session.id, ip = %client.ip, "session opened");
        Ok(signed_in)
    }

    /// Ends the families an identity provider's logout named (reason `provider_logout`):
    /// counted, and their streams in this process closed, as every revocation is. Returns how
    /// many were live.
    pub async fn end_provider_sessions(
        &self,
        family_ids: &[String],
    ) -> Result<usize, SessionError> {
        let now = self.now();
        let mut live = 0;
        for family_id in family_ids {
            if self
                .end_family(family_id, RevokeReason::ProviderLogout, now)
                .await?
                == crate::store::RevokeOutcome::Revoked
            {
                live += 1;
            }
        }
        Ok(live)
    }

    /// Looks the user up and verifies the password. Argon2 runs for an unknown email too
    /// (against a dummy hash), and for a user without a password (one who signs in through an
    /// identity provider), so the time taken tells nothing.
    async fn check_credentials(
        &self,
        email: &str,
        password: String,
    ) -> Result<Credentials, SessionError> {
        let user = self.store.user_by_email(email).await?;
        let ok = self
            .passwords
            .verify(
                password,
                user.as_ref()
                    .map(|u| u.password_hash.clone())
                    .filter(|hash| !hash.is_empty()),
            )
            .await
            .map_err(|e| SessionError::Internal(e.to_string()))?;
        Ok(match user {
            Some(user) if ok && !user.disabled => Credentials::Valid(user),
            None => Credentials::Refused {
                failure: LoginFailure::UnknownEmail,
                user_id: None,
            },
            Some(user) => Credentials::Refused {
                failure: if user.disabled && ok {
                    LoginFailure::Disabled
                } else {
                    LoginFailure::BadPassword
                },
                user_id: Some(user.id),
            },
        })
    }

    /// Revokes the family of the cookie a login replaces (reason `replaced`). A cookie that
    /// names no family is simply dropped.
    async fn end_replaced(&self, previous: &CookieTokens, now: Millis) -> Result<(), SessionError> {
        if let Ok(old) = RefreshToken::parse(&previous.refresh) {
            self.end_family(&old.family_id, RevokeReason::Replaced, now)
                .await?;
        }
        Ok(())
    }

    /// Writes a new family for `user` and mints its first tokens.
    async fn open_session(
        &self,
        user: &UserRecord,
        client: &ClientInfo,
        now: Millis,
    ) -> Result<Authenticated, SessionError> {
        let family_id = new_id()?;
        let refresh = RefreshToken::generate(&family_id, 0)?;
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
        let view = user_view(user);
        let access = self.mint(&view, &family_id, now)?;
        Ok(Authenticated {
            user: view,
            session: SessionView {
                id: family_id,
                access_expires_at: now + self.settings.access_ttl,
                idle_expires_at: family_expiry(now, self.settings.idle, abs_exp),
                max_expires_at: abs_exp,
            },
            renewed: Some(CookieTokens {
                access,
                refresh: refresh.expose(),
                previous: None,
                generation: refresh.generation,
            }),
        })
    }
}

/// Why a well-formed login was refused. The client gets one answer for all of them
/// ([`SessionError::BadCredentials`]); the log and the metrics tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginFailure {
    UnknownEmail,
    /// The password was right, but the user is disabled.
    Disabled,
    /// A wrong password (for a disabled user too: that the user is disabled is not told to
    /// someone who does not know the password).
    BadPassword,
}

impl LoginFailure {
    /// The `reason` field of the `login_failed` log event.
    fn as_str(self) -> &'static str {
        match self {
            Self::UnknownEmail => "unknown_email",
            Self::Disabled => "disabled",
            Self::BadPassword => "bad_password",
        }
    }
}

/// What the password check found.
enum Credentials {
    Valid(UserRecord),
    Refused {
        failure: LoginFailure,
        /// The user the email belongs to, if any (for the log).
        user_id: Option<String>,
    },
}

/// Counts and logs a login refused by the throttle, and the error it answers.
fn throttled(retry_after_ms: Millis, client: &ClientInfo) -> SessionError {
    metrics::login(metrics::Login::Throttled);
    tracing::warn!(
        event = "login_throttled",
        ip = %client.ip,
        user_agent = %client.user_agent,
        retry_after_ms,
        "login refused: too many failures"
    );
    SessionError::Throttled { retry_after_ms }
}

/// Counts and logs a refused login.
fn refused(failure: LoginFailure, user_id: Option<&str>, client: &ClientInfo) {
    metrics::login(metrics::Login::BadCredentials);
    tracing::warn!(
        event = "login_failed",
        reason = failure.as_str(),
        user = user_id.unwrap_or("-"),
        ip = %client.ip,
        user_agent = %client.user_agent,
        "login failed"
    );
}
