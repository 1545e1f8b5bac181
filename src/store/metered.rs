//! A [`Store`] that times every operation and counts failures (`bffgate_store_*` metrics),
//! around any other store.

use std::{future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;

use super::{
    FamilyInfo, FamilyState, Liveness, NewFamily, ProviderScope, ProviderSession, Reservation,
    RevokeOutcome, RevokeReason, RotateOutcome, RotateRequest, Store, StoreError, ThrottlePolicy,
    UserRecord,
};
use crate::clock::Millis;

/// Wraps a store with latency and error metrics.
pub struct Metered(Arc<dyn Store>);

impl Metered {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self(inner)
    }
}

async fn timed<T>(
    op: &'static str,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let result = work.await;
    crate::metrics::store_op(op, start.elapsed(), result.is_ok());
    result
}

#[async_trait]
impl Store for Metered {
    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.0.ping()).await
    }

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        timed("create_user", self.0.create_user(user)).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        timed("user_by_email", self.0.user_by_email(email)).await
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        timed("user", self.0.user(id)).await
    }

    async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        timed("update_user", self.0.update_user(user)).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        timed("list_users", self.0.list_users()).await
    }

    async fn create_family(&self, family: &NewFamily) -> Result<(), StoreError> {
        timed("create_family", self.0.create_family(family)).await
    }

    async fn family(&self, id: &str, now: Millis) -> Result<FamilyState, StoreError> {
        timed("family", self.0.family(id, now)).await
    }

    async fn family_liveness(&self, id: &str, now: Millis) -> Result<Liveness, StoreError> {
        timed("family_liveness", self.0.family_liveness(id, now)).await
    }

    fn tracks_liveness(&self) -> bool {
        self.0.tracks_liveness()
    }

    fn family_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.0.family_changes()
    }

    async fn rotate(&self, request: &RotateRequest) -> Result<RotateOutcome, StoreError> {
        timed("rotate", self.0.rotate(request)).await
    }

    async fn revoke_family(
        &self,
        id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<RevokeOutcome, StoreError> {
        timed("revoke_family", self.0.revoke_family(id, reason, now)).await
    }

    async fn user_families(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<FamilyInfo>, StoreError> {
        timed("user_families", self.0.user_families(user_id, now)).await
    }

    async fn throttle_reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        now: Millis,
    ) -> Result<Reservation, StoreError> {
        timed(
            "throttle_reserve",
            self.0.throttle_reserve(key, policy, now),
        )
        .await
    }

    async fn throttle_refund(&self, key: &str) -> Result<(), StoreError> {
        timed("throttle_refund", self.0.throttle_refund(key)).await
    }

    async fn throttle_reset(&self, key: &str) -> Result<(), StoreError> {
        timed("throttle_reset", self.0.throttle_reset(key)).await
    }

    async fn linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        timed("linked_user", self.0.linked_user(provider, subject)).await
    }

    async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<String, StoreError> {
        timed(
            "link_identity",
            self.0.link_identity(provider, subject, user_id),
        )
        .await
    }

    async fn record_provider_session(&self, session: &ProviderSession) -> Result<(), StoreError> {
        timed(
            "record_provider_session",
            self.0.record_provider_session(session),
        )
        .await
    }

    async fn provider_families(
        &self,
        provider: &str,
        scope: ProviderScope<'_>,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        timed(
            "provider_families",
            self.0.provider_families(provider, scope, now),
        )
        .await
    }
}
