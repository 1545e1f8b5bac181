//! User administration shared by the CLI and the demo: add, change password, disable,
//! enable, list, and a user's sessions (list, revoke). Disabling a user also revokes every
//! session they have. Emails are normalised here exactly as a login normalises them.

use std::sync::Arc;

use super::{
    normalize_email,
    revoke::{revoke_family, revoke_user_families},
};
use crate::{
    clock::{Clock, SystemClock},
    password::{hash_blocking, MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS},
    store::{FamilyInfo, RevokeOutcome, RevokeReason, Store, StoreError, UserRecord},
    tokens::new_id,
};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0} is not a valid email address")]
    InvalidEmail(String),
    #[error("the password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes long")]
    WeakPassword,
    #[error("no user {0}")]
    NotFound(String),
    #[error("user {0} already exists")]
    Exists(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

fn valid_email(email: &str) -> Result<String, UserError> {
    let email = normalize_email(email);
    let ok = email.len() <= 320
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        })
        && !email.chars().any(char::is_whitespace);
    if ok {
        Ok(email)
    } else {
        Err(UserError::InvalidEmail(email))
    }
}

fn check_password(password: &str) -> Result<(), UserError> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::WeakPassword);
    }
    Ok(())
}

/// What a password change does to the user's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPasswordChange {
    RevokeSessions,
    KeepSessions,
}

/// User administration on a store.
pub struct Users {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Users {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
        }
    }

    async fn find(&self, email: &str) -> Result<UserRecord, UserError> {
        let email = normalize_email(email);
        self.store
            .user_by_email(&email)
            .await?
            .ok_or(UserError::NotFound(email))
    }

    /// Adds a user with an Argon2id hash of `password`.
    pub async fn add(
        &self,
        email: &str,
        password: &str,
        roles: Vec<String>,
    ) -> Result<UserRecord, UserError> {
        let email = valid_email(email)?;
        check_password(password)?;
        let user = UserRecord {
            id: new_id().map_err(|e| UserError::Other(e.to_string()))?,
            email: email.clone(),
            password_hash: hash_blocking(password).map_err(|e| UserError::Other(e.to_string()))?,
            roles,
            disabled: false,
            created_ms: self.clock.now_ms(),
        };
        match self.store.create_user(&user).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict) => Err(UserError::Exists(email)),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets a new password. Every session of the user ends (reason `password_changed`: a
    /// password is changed because it may be known to someone else) unless `sessions` says
    /// to keep them; returns how many were revoked.
    pub async fn set_password(
        &self,
        email: &str,
        password: &str,
        sessions: AfterPasswordChange,
    ) -> Result<usize, UserError> {
        check_password(password)?;
        let mut user = self.find(email).await?;
        user.password_hash =
            hash_blocking(password).map_err(|e| UserError::Other(e.to_string()))?;
        self.store.update_user(&user).await?;
        if sessions == AfterPasswordChange::KeepSessions {
            return Ok(0);
        }
        let now = self.clock.now_ms();
        let n = revoke_user_families(
            self.store.as_ref(),
            &user.id,
            RevokeReason::PasswordChanged,
            now,
        )
        .await?;
        tracing::warn!(event = "session_revoked", reason = "password_changed", user = %user.id, sessions = n, "password changed; the user's sessions were revoked");
        Ok(n)
    }

    /// Disables (and revokes every session of) or re-enables a user; returns sessions revoked.
    pub async fn set_disabled(&self, email: &str, disabled: bool) -> Result<usize, UserError> {
        let mut user = self.find(email).await?;
        user.disabled = disabled;
        self.store.update_user(&user).await?;
        if disabled {
            let now = self.clock.now_ms();
            return Ok(revoke_user_families(
                self.store.as_ref(),
                &user.id,
                RevokeReason::UserDisabled,
                now,
            )
            .await?);
        }
        Ok(0)
    }

    pub async fn list(&self) -> Result<Vec<UserRecord>, UserError> {
        Ok(self.store.list_users().await?)
    }

    /// The user's live sessions, most recently used first.
    pub async fn sessions(&self, email: &str) -> Result<Vec<FamilyInfo>, UserError> {
        let user = self.find(email).await?;
        Ok(self
            .store
            .user_families(&user.id, self.clock.now_ms())
            .await?)
    }

    /// Revokes every session of a user (reason `admin`); returns how many were live.
    pub async fn revoke_sessions(&self, email: &str) -> Result<usize, UserError> {
        let user = self.find(email).await?;
        let n = revoke_user_families(
            self.store.as_ref(),
            &user.id,
            RevokeReason::Admin,
            self.clock.now_ms(),
        )
        .await?;
        tracing::warn!(event = "session_revoked", reason = "admin", user = %user.id, sessions = n, "sessions revoked by an administrator");
        Ok(n)
    }

    /// Revokes one session by id (reason `admin`); `false` if it was not live.
    pub async fn revoke_session(&self, id: &str) -> Result<bool, UserError> {
        let outcome = revoke_family(
            self.store.as_ref(),
            id,
            RevokeReason::Admin,
            self.clock.now_ms(),
        )
        .await?;
        let revoked = outcome == RevokeOutcome::Revoked;
        if revoked {
            tracing::warn!(event = "session_revoked", reason = "admin", family = %id, "session revoked by an administrator");
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_lowercased() {
        assert_eq!(
            valid_email(" Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in ["", "alice", "@x", "a@", "a b@x", "a@b@c"] {
            assert!(valid_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(check_password("short").is_err());
        assert!(check_password("long enough").is_ok());
    }
}
