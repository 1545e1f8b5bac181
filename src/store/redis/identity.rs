//! Identity providers in Redis: the user link of a provider's subject (`SET NX`, so the first
//! link wins a race) and the sets of families each subject and provider session opened, for
//! back-channel logout. Key names are `keys`'s; none of these keys names a family's slot, and
//! no command here spans two keys, so a Cluster needs nothing special.

use deadpool_redis::redis;

use super::{pool::unavailable, RedisStore};
use crate::{
    clock::Millis,
    store::{ProviderScope, ProviderSession, StoreError},
};

impl RedisStore {
    pub(super) async fn identity_linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.pools
            .read(redis::cmd("GET").arg(self.keys.identity_link(provider, subject)))
            .await
    }

    pub(super) async fn identity_link(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<String, StoreError> {
        let key = self.keys.identity_link(provider, subject);
        let mut conn = self.conn().await?;
        // SET NX … GET answers the value already there (nil when this call set it): one
        // round trip decides the race.
        let before: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(user_id)
            .arg("NX")
            .arg("GET")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(before.unwrap_or_else(|| user_id.to_owned()))
    }

    pub(super) async fn identity_record_session(
        &self,
        session: &ProviderSession,
    ) -> Result<(), StoreError> {
        let ttl = (session.until - session.now).max(1);
        let mut keys =
            vec![self
                .keys
                .provider_families(&session.provider, "sub", &session.subject)];
        if let Some(sid) = &session.sid {
            keys.push(self.keys.provider_families(&session.provider, "sid", sid));
        }
        let mut conn = self.conn().await?;
        for key in keys {
            // Each set expires when its latest family must have ended; families opened later
            // end later, so the newest write's expiry is the right one.
            redis::pipe()
                .atomic()
                .sadd(&key, &session.family_id)
                .ignore()
                .pexpire(&key, ttl)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(super) async fn identity_families(
        &self,
        provider: &str,
        scope: ProviderScope<'_>,
        _now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let key = match scope {
            ProviderScope::Subject(sub) => self.keys.provider_families(provider, "sub", sub),
            ProviderScope::Session(sid) => self.keys.provider_families(provider, "sid", sid),
        };
        self.pools.read(redis::cmd("SMEMBERS").arg(key)).await
    }
}
