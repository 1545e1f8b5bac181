//! Ending sessions: the one place the session layer revokes families and counts them
//! (`bffgate_families_revoked_total`), so a family is counted exactly once, when it was live,
//! whoever ended it — its user, an administrator, or the gateway itself.
//!
//! Callers log: who asked, and what they are told, differs from one to the next.

use crate::{
    clock::Millis,
    metrics,
    store::{self, RevokeOutcome, RevokeReason, Store, StoreError},
};

/// Revokes one family; counts it if it was live.
pub(crate) async fn revoke_family(
    store: &dyn Store,
    family_id: &str,
    reason: RevokeReason,
    now: Millis,
) -> Result<RevokeOutcome, StoreError> {
    let outcome = store.revoke_family(family_id, reason, now).await?;
    if outcome == RevokeOutcome::Revoked {
        counted(reason, 1);
    }
    Ok(outcome)
}

/// Revokes every live family of a user; counts them and returns how many there were.
pub(crate) async fn revoke_user_families(
    store: &dyn Store,
    user_id: &str,
    reason: RevokeReason,
    now: Millis,
) -> Result<usize, StoreError> {
    let n = store::revoke_user_families(store, user_id, reason, now).await?;
    counted(reason, n as u64);
    Ok(n)
}

/// Counts `n` revoked families. Called directly only for a family the store revoked by
/// itself: a replay caught by the rotation script.
pub(crate) fn counted(reason: RevokeReason, n: u64) {
    metrics::families_revoked(reason.as_str(), n);
}
