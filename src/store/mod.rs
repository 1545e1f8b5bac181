//! The store boundary: users and refresh-token families.
//!
//! A small trait with two backends — [`redis::RedisStore`] (shared, many gateway instances)
//! and [`memory::MemoryStore`] (embedded, one instance) — that pass one acceptance suite
//! (`tests/integration/store_acceptance.rs`). The store knows nothing of HTTP or cookies; it sees only
//! hashes of refresh secrets and sealed successors, never a usable token. Time is passed in.

pub mod memory;
pub mod metered;
pub mod redis;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or timed out: retry later, keep the session.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A user with this email already exists.
    #[error("a user with this email already exists")]
    Conflict,
    /// A record could not be read back (corrupt or foreign data).
    #[error("store data: {0}")]
    Corrupt(String),
}

/// A user account. `Debug` shows no password hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    /// Lower-cased.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_ms: Millis,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"[redacted]")
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// Why a family was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    Logout,
    LogoutAll,
    Reuse,
    Admin,
    UserDisabled,
    Replaced,
    PasswordChanged,
    /// The browser was ahead of the store by more than the one step its cookie can prove
    /// (DESIGN.md §5 "Lost writes"): the family cannot go on, but nobody is accused of theft.
    StoreBehind,
    /// The identity provider that signed the user in ended their session there (OpenID
    /// Connect back-channel logout).
    ProviderLogout,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::Reuse => "reuse",
            Self::Admin => "admin",
            Self::UserDisabled => "user_disabled",
            Self::Replaced => "replaced",
            Self::PasswordChanged => "password_changed",
            Self::StoreBehind => "store_behind",
            Self::ProviderLogout => "provider_logout",
        }
    }
}

/// What [`Store::revoke_family`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The family was live and is now revoked (a tombstone until its key expires).
    Revoked,
    /// The family was revoked before; its first reason stays.
    AlreadyRevoked,
    /// No such family, or it has expired (idle or absolute): nothing to revoke. The same word
    /// as [`RotateOutcome::Expired`] and [`FamilyState::Expired`]: a store cannot tell a family
    /// that expired from one that never was.
    Expired,
}

/// What a login writes: a new family whose current secret hash is `secret_hash`.
#[derive(Debug, Clone)]
pub struct NewFamily {
    pub id: String,
    pub user_id: String,
    pub secret_hash: String,
    pub now: Millis,
    pub idle_ms: Millis,
    pub abs_exp: Millis,
    pub user_agent: String,
    pub ip: String,
}

/// A live family as listed to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyInfo {
    pub id: String,
    pub user_id: String,
    pub generation: u64,
    pub created: Millis,
    pub last_used: Millis,
    /// When idleness ends it: `min(last_used + idle, abs_exp)`.
    pub idle_exp: Millis,
    pub abs_exp: Millis,
    pub user_agent: String,
    pub ip: String,
}

/// A family's state at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyState {
    Live(FamilyInfo),
    Revoked { reason: String },
    Expired,
}

/// What every authenticated request needs to know of its family at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Live {
        user_id: String,
        idle_exp: Millis,
        abs_exp: Millis,
    },
    Revoked,
    Expired,
}

impl From<FamilyState> for Liveness {
    fn from(state: FamilyState) -> Self {
        match state {
            FamilyState::Live(info) => Self::Live {
                user_id: info.user_id,
                idle_exp: info.idle_exp,
                abs_exp: info.abs_exp,
            },
            FamilyState::Revoked { .. } => Self::Revoked,
            FamilyState::Expired => Self::Expired,
        }
    }
}

/// One rotation attempt.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    pub family_id: String,
    pub presented_hash: String,
    /// The presented token's generation; `None` for a token from before generations.
    pub presented_generation: Option<u64>,
    /// The hash of the secret the presented one replaced, as the cookie remembers it: proof
    /// that the presented token is one step ahead of a store that lost that step.
    pub previous_hash: Option<String>,
    pub successor_hash: String,
    /// The successor token sealed for grace replays (see `tokens::Sealer`).
    pub sealed_successor: String,
    pub now: Millis,
    pub idle_ms: Millis,
    pub grace_ms: Millis,
}

/// The outcome of a rotation (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The presented secret was current: the successor is now current.
    Rotated {
        user_id: String,
        generation: u64,
        idle_exp: Millis,
        abs_exp: Millis,
    },
    /// The presented secret was just rotated out, within the grace window: here is the same
    /// successor the winner got.
    Grace {
        user_id: String,
        generation: u64,
        idle_exp: Millis,
        abs_exp: Millis,
        sealed_successor: String,
    },
    /// The store lost its last rotation and the cookie proved it (its generation is one ahead
    /// and its previous secret is the store's current one): rotated from the store's state, the
    /// successor is now current. Not a replay (DESIGN.md §5 "Lost writes").
    StoreBehind {
        user_id: String,
        generation: u64,
        idle_exp: Millis,
        abs_exp: Millis,
    },
    /// The presented token is ahead of the store but cannot prove the lost steps (two or
    /// more, or no previous secret): the family is ended with reason `store_behind`, and no
    /// theft is alleged.
    StoreBehindUnproven {
        user_id: String,
    },
    /// A rotated-out secret came back too late (or an older one): the family is now revoked.
    ReuseDetected {
        user_id: String,
    },
    Revoked,
    Expired,
}

/// A session an identity provider opened: which family its sign-in created, under which
/// subject and (if the provider names one) which provider session. Back-channel logout finds
/// the families to end through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSession {
    /// The provider's configured id.
    pub provider: String,
    /// The ID token's `sub`.
    pub subject: String,
    /// The ID token's `sid`, when the provider sends one.
    pub sid: Option<String>,
    pub family_id: String,
    pub now: Millis,
    /// When the family ends at the latest (its `abs_exp`): the index may be forgotten then.
    pub until: Millis,
}

/// Which of a provider's sessions a back-channel logout ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderScope<'a> {
    /// Every session of this subject (`sub`).
    Subject(&'a str),
    /// The one provider session (`sid`).
    Session(&'a str),
}

/// How login attempts turn into delays: the first `free` attempts under one key are free; the
/// attempt that reaches `free` starts a delay of `base_ms`, and each attempt after a delay
/// has run out doubles it, up to `max_ms`. While a delay runs, attempts are refused and not
/// counted. A key is forgotten `window_ms` after its last attempt (or after its delay ends,
/// if later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    pub free: u32,
    pub base_ms: Millis,
    pub max_ms: Millis,
    pub window_ms: Millis,
}

impl ThrottlePolicy {
    /// The delay the `attempts`-th attempt at `now` starts: `None` before the allowance.
    pub fn delay_after(&self, attempts: u64, now: Millis) -> Option<Millis> {
        let over = attempts.checked_sub(u64::from(self.free))?;
        let factor = 1i64 << over.min(40);
        Some(now + self.base_ms.saturating_mul(factor).min(self.max_ms))
    }
}

/// The store's answer to one reserved login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Counted; go on. `Some(until)`: this attempt started a delay for the next ones.
    Granted { delay_until: Option<Millis> },
    /// A delay runs until `until`: refused, not counted.
    Refused { until: Millis },
}

/// Users and families, shared by every gateway instance.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Is the backend reachable?
    async fn ping(&self) -> Result<(), StoreError>;

    /// Adds a user; [`StoreError::Conflict`] if the email is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// Looks a user up by lower-cased email.
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Replaces an existing user's password hash, roles and disabled flag.
    async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Writes a new family; its key expires at `min(now + idle, abs_exp)`.
    async fn create_family(&self, family: &NewFamily) -> Result<(), StoreError>;
    /// The family's state at `now` (one round trip).
    async fn family(&self, id: &str, now: Millis) -> Result<FamilyState, StoreError>;
    /// The per-request check (one round trip): [`Store::family`] without the fields only the
    /// sessions list needs. A store that can read less overrides it.
    async fn family_liveness(&self, id: &str, now: Millis) -> Result<Liveness, StoreError> {
        Ok(self.family(id, now).await?.into())
    }
    /// Whether [`Store::family_liveness`] is answered in memory now, because the backend
    /// reports every change to a family (Redis client tracking). Families a store keeps
    /// itself (memory) are always current.
    fn tracks_liveness(&self) -> bool {
        false
    }
    /// The ids of families whose records changed, as the backend reports them (Redis client
    /// tracking), or [`EVERY_FAMILY`] when changes may have been missed; `None` when it reports
    /// nothing. Open streams re-check their session on it.
    fn family_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
    /// Rotates atomically (one round trip); see [`RotateOutcome`].
    async fn rotate(&self, request: &RotateRequest) -> Result<RotateOutcome, StoreError>;
    /// Marks a live family revoked, keeping it as a tombstone until it expires (one round
    /// trip); see [`RevokeOutcome`].
    async fn revoke_family(
        &self,
        id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<RevokeOutcome, StoreError>;
    /// The user's live families at `now`; dead index entries are pruned.
    async fn user_families(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<FamilyInfo>, StoreError>;

    /// Reserves one login attempt under the throttle `key` (opaque: the caller hashes emails
    /// and addresses), atomically: counted before the password is checked, so parallel
    /// attempts cannot all slip through. One round trip.
    async fn throttle_reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        now: Millis,
    ) -> Result<Reservation, StoreError>;
    /// Gives one reserved attempt back (the login succeeded).
    async fn throttle_refund(&self, key: &str) -> Result<(), StoreError>;
    /// Forgets `key`'s failures.
    async fn throttle_reset(&self, key: &str) -> Result<(), StoreError>;

    // Identity providers (OpenID Connect): user links and the sessions they opened.

    /// The user `subject` at `provider` is linked to, if any.
    async fn linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Links `subject` at `provider` to `user_id` unless it is linked already, atomically;
    /// returns the user it is linked to now (the first link wins a race).
    async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<String, StoreError>;
    /// Remembers which subject and provider session opened a family.
    async fn record_provider_session(&self, session: &ProviderSession) -> Result<(), StoreError>;
    /// The families opened at `provider` within `scope` (may name families that have since
    /// ended; revoking one of those is harmless).
    async fn provider_families(
        &self,
        provider: &str,
        scope: ProviderScope<'_>,
        now: Millis,
    ) -> Result<Vec<String>, StoreError>;
}

/// What [`Store::family_changes`] sends when any family may have changed (not a family id:
/// those are base64url).
pub const EVERY_FAMILY: &str = "*";

/// Revokes every live family of a user; returns how many were live.
pub async fn revoke_user_families(
    store: &dyn Store,
    user_id: &str,
    reason: RevokeReason,
    now: Millis,
) -> Result<usize, StoreError> {
    let mut revoked = 0;
    for family in store.user_families(user_id, now).await? {
        if store.revoke_family(&family.id, reason, now).await? == RevokeOutcome::Revoked {
            revoked += 1;
        }
    }
    Ok(revoked)
}

/// The expiry of a family record that was last used at `now`.
pub fn family_expiry(now: Millis, idle_ms: Millis, abs_exp: Millis) -> Millis {
    now.saturating_add(idle_ms).min(abs_exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_records_debug_shows_no_password_hash() {
        let user = UserRecord {
            id: "u1".into(),
            email: "a@example.com".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            roles: vec!["admin".into()],
            disabled: false,
            created_ms: 1,
        };
        let shown = format!("{user:?}");
        assert!(!shown.contains("argon2"), "{shown}");
        assert!(shown.contains("a@example.com") && shown.contains("[redacted]"));
    }
}
