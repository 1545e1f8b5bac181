//! The shared store on Redis: the [`Store`] operations as commands and Lua scripts
//! (`EVALSHA`), one module per concern beside it — `pool` lends connections, `keys` names
//! the keys (and says why every key of a family shares a hash tag), `records` writes and
//! reads the hashes. The scripts live in `src/store/lua/`, each with a header that lists its
//! `KEYS`, `ARGV` and reply.

mod identity;
mod keys;
mod pool;
mod records;
mod tracking;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use deadpool_redis::redis::{self, Script};

use super::{
    family_expiry, FamilyInfo, FamilyState, Liveness, NewFamily, ProviderScope, ProviderSession,
    Reservation, RevokeOutcome, RevokeReason, RotateOutcome, RotateRequest, Store, StoreError,
    ThrottlePolicy, UserRecord,
};
use crate::clock::Millis;
use keys::Keys;
pub use pool::Topology;
use pool::{unavailable, Conn, Pools, Source};
use records::{corrupt, FAMILY_FIELDS, LIVENESS_FIELDS};
pub use tracking::STALE_AT_MOST;
use tracking::{LivenessCache, Prefixes};

/// Users and families in Redis.
pub struct RedisStore {
    pools: Pools,
    keys: Keys,
    /// What the tracking connections are opened from (RESP3), and the cache they keep
    /// true; `None` when the per-request check must always ask Redis.
    liveness: Option<(Arc<Source>, Arc<LivenessCache>)>,
    rotate: Script,
    revoke: Script,
    throttle_reserve: Script,
    throttle_refund: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Pools to the one server at `url`, `pool_size` connections for each thread that uses
    /// the store; connects lazily, so an unreachable Redis is reported per request.
    pub fn connect(
        url: &str,
        prefix: &str,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let topology = Topology::Standalone {
            url: url.to_owned(),
        };
        Self::open(&topology, None, prefix, pool_size, timeout)
    }

    /// Pools to `topology`, trusting the CA certificates in `ca_pem` (PEM) for TLS, else the
    /// system roots; otherwise as [`RedisStore::connect`].
    pub fn open(
        topology: &Topology,
        ca_pem: Option<&[u8]>,
        prefix: &str,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let tracking = Source::open(topology, ca_pem, timeout, redis::ProtocolVersion::RESP3)?;
        Ok(Self {
            pools: Pools::new(topology, ca_pem, pool_size, timeout)?,
            keys: Keys::new(prefix),
            liveness: Some((Arc::new(tracking), Arc::new(LivenessCache::new()))),
            rotate: Script::new(include_str!("../lua/rotate_family.lua")),
            revoke: Script::new(include_str!("../lua/revoke_family.lua")),
            throttle_reserve: Script::new(include_str!("../lua/throttle_reserve.lua")),
            throttle_refund: Script::new(include_str!("../lua/throttle_refund.lua")),
        })
    }

    /// Checks every family in Redis on every request (`redis.track_liveness = false`): no
    /// tracking connections, no cache.
    pub fn without_liveness_tracking(mut self) -> Self {
        self.liveness = None;
        self
    }

    /// Whether this store is told of family changes now (its per-request check is then
    /// answered in memory for families it has read).
    pub fn is_tracking_liveness(&self) -> bool {
        self.liveness
            .as_ref()
            .is_some_and(|(_, cache)| cache.is_tracking())
    }

    /// Family `id`'s liveness fields as Redis holds them now.
    async fn read_liveness(&self, id: &str) -> Result<records::LivenessRow, StoreError> {
        self.pools
            .read(
                redis::cmd("HMGET")
                    .arg(self.keys.family(id))
                    .arg(&LIVENESS_FIELDS[..]),
            )
            .await
    }

    /// User `id`'s record as Redis holds it now.
    async fn read_user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let map: HashMap<String, String> = self
            .pools
            .read(redis::cmd("HGETALL").arg(self.keys.user(id)))
            .await?;
        records::user_record(&map)
    }

    /// Forgets what this instance read of family `id`: it is about to change (its own
    /// writes are read back at once, without waiting for Redis's invalidation).
    fn changed(&self, id: &str) {
        if let Some((_, cache)) = &self.liveness {
            cache.invalidate_family(id);
        }
    }

    /// [`RedisStore::changed`] for a user's record.
    fn user_changed(&self, id: &str) {
        if let Some((_, cache)) = &self.liveness {
            cache.invalidate_user(id);
        }
    }

    /// The tracked key prefixes.
    fn prefixes(&self) -> Prefixes {
        Prefixes {
            families: self.keys.families_prefix(),
            users: self.keys.users_prefix(),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.pools.conn().await
    }

    /// Writes the user's hash and adds its id to the users set: two slots in a Cluster, so
    /// two commands there (one pipeline elsewhere). The set first: an id whose hash was
    /// never written is skipped by `list_users`, while a hash missing from the set would
    /// hide a user from the admin list.
    async fn write_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let fields = records::user_fields(user)?;
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.sadd(self.keys.users(), &user.id)
            .ignore()
            .hset_multiple(self.keys.user(&user.id), &fields)
            .ignore();
        if self.pools.is_cluster() {
            for cmd in pipe.cmd_iter() {
                cmd.query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable)?;
            }
            return Ok(());
        }
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }
}

/// The rotation script's reply (see `rotate_family.lua`) as an outcome.
fn rotate_outcome(reply: &[String]) -> Result<RotateOutcome, StoreError> {
    let num = |v: &String| v.parse::<i64>().map_err(|_| corrupt("rotation reply"));
    match reply {
        [tag, uid, gen, exp, abs_exp] if tag == "rotated" => Ok(RotateOutcome::Rotated {
            user_id: uid.clone(),
            generation: num(gen)?.unsigned_abs(),
            idle_exp: num(exp)?,
            abs_exp: num(abs_exp)?,
        }),
        [tag, uid, gen, exp, abs_exp, sealed] if tag == "grace" => Ok(RotateOutcome::Grace {
            user_id: uid.clone(),
            generation: num(gen)?.unsigned_abs(),
            idle_exp: num(exp)?,
            abs_exp: num(abs_exp)?,
            sealed_successor: sealed.clone(),
        }),
        [tag, uid, gen, exp, abs_exp] if tag == "behind" => Ok(RotateOutcome::StoreBehind {
            user_id: uid.clone(),
            generation: num(gen)?.unsigned_abs(),
            idle_exp: num(exp)?,
            abs_exp: num(abs_exp)?,
        }),
        [tag, uid] if tag == "behind_unproven" => Ok(RotateOutcome::StoreBehindUnproven {
            user_id: uid.clone(),
        }),
        [tag, uid] if tag == "reuse" => Ok(RotateOutcome::ReuseDetected {
            user_id: uid.clone(),
        }),
        [tag] if tag == "revoked" => Ok(RotateOutcome::Revoked),
        [tag] if tag == "expired" => Ok(RotateOutcome::Expired),
        _ => Err(corrupt("rotation reply")),
    }
}

/// The revocation script's reply (see `revoke_family.lua`) as an outcome.
fn revoke_outcome(reply: &str) -> Result<RevokeOutcome, StoreError> {
    match reply {
        "revoked" => Ok(RevokeOutcome::Revoked),
        "already_revoked" => Ok(RevokeOutcome::AlreadyRevoked),
        "expired" => Ok(RevokeOutcome::Expired),
        _ => Err(corrupt("revocation reply")),
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// The email claim (`SET NX`) decides between concurrent creations; it comes after the
    /// user is written, so that an email never leads to a missing user: a crash before the
    /// claim leaves only an unreachable record (listed, without a way to log in), and a lost
    /// claim removes what was written.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        if self.user_by_email(&user.email).await?.is_some() {
            return Err(StoreError::Conflict);
        }
        self.write_user(user).await?;
        self.user_changed(&user.id);
        let claimed: bool = {
            let mut conn = self.conn().await?;
            redis::cmd("SET")
                .arg(self.keys.email(&user.email))
                .arg(&user.id)
                .arg("NX")
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(unavailable)?
                .is_some()
        };
        if !claimed {
            let mut conn = self.conn().await?;
            redis::cmd("DEL")
                .arg(self.keys.user(&user.id))
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
            redis::cmd("SREM")
                .arg(self.keys.users())
                .arg(&user.id)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let uid: Option<String> = self
            .pools
            .read(redis::cmd("GET").arg(self.keys.email(email)))
            .await?;
        // Read afresh, never from memory: a login (rare, and Argon2 costs far more than a
        // round trip) must see a user disabled a moment ago on another instance.
        match uid {
            Some(uid) => self.read_user(&uid).await,
            None => Ok(None),
        }
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        // From memory while tracking runs (started by the per-request check; a CLI command
        // never starts it): each rotation reads its user.
        match &self.liveness {
            Some((_, cache)) => cache.user(id, || self.read_user(id)).await,
            None => self.read_user(id).await,
        }
    }

    async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let written = self.write_user(user).await;
        self.user_changed(&user.id);
        written
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let ids: Vec<String> = self
            .pools
            .read(redis::cmd("SMEMBERS").arg(self.keys.users()))
            .await?;
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(user) = self.user(&id).await? {
                users.push(user);
            }
        }
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users)
    }

    async fn create_family(&self, f: &NewFamily) -> Result<(), StoreError> {
        let exp = family_expiry(f.now, f.idle_ms, f.abs_exp);
        let mut conn = self.conn().await?;
        let key = self.keys.family(&f.id);
        let fields = records::new_family_fields(f, exp);
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, exp - f.now)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        self.changed(&f.id);
        // The per-user index lives in another slot (a second command, not atomic with the
        // first). The family first: the cookie is issued only once both writes succeeded, so
        // a family that never reached the index (a failure or crash in between) was never
        // handed out; logout-all and a password change, which revoke through the index,
        // therefore miss no family a browser holds.
        redis::cmd("SADD")
            .arg(self.keys.user_families(&f.user_id))
            .arg(&f.id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn family(&self, id: &str, now: Millis) -> Result<FamilyState, StoreError> {
        let fields: Vec<Option<String>> = self
            .pools
            .read(
                redis::cmd("HMGET")
                    .arg(self.keys.family(id))
                    .arg(&FAMILY_FIELDS[..]),
            )
            .await?;
        records::family_state(id, fields, now)
    }

    async fn family_liveness(&self, id: &str, now: Millis) -> Result<Liveness, StoreError> {
        let row = match &self.liveness {
            Some((source, cache)) => {
                if !cache.is_started() {
                    cache.start(Arc::clone(source), self.prefixes());
                }
                cache.family(id, || self.read_liveness(id)).await?
            }
            None => self.read_liveness(id).await?,
        };
        records::family_liveness(row, now)
    }

    fn tracks_liveness(&self) -> bool {
        self.is_tracking_liveness()
    }

    fn family_changes(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        self.liveness.as_ref().map(|(_, cache)| cache.changes())
    }

    async fn rotate(&self, r: &RotateRequest) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.conn().await?;
        // EVALSHA; redis-rs loads the script and repeats only on NOSCRIPT, when it did not run.
        let reply: Result<Vec<String>, _> = self
            .rotate
            .key(self.keys.family(&r.family_id))
            .key(self.keys.next(&r.family_id))
            .arg(&r.presented_hash)
            .arg(&r.successor_hash)
            .arg(&r.sealed_successor)
            .arg(r.now)
            .arg(r.idle_ms)
            .arg(r.grace_ms)
            .arg(
                r.presented_generation
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
            )
            .arg(r.previous_hash.as_deref().unwrap_or_default())
            .invoke_async(&mut conn)
            .await;
        self.changed(&r.family_id);
        let reply = reply.map_err(unavailable)?;
        rotate_outcome(&reply)
    }

    async fn revoke_family(
        &self,
        id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let reply: Result<String, _> = self
            .revoke
            .key(self.keys.family(id))
            .key(self.keys.next(id))
            .arg(reason.as_str())
            .arg(now)
            .invoke_async(&mut conn)
            .await;
        self.changed(id);
        revoke_outcome(&reply.map_err(unavailable)?)
    }

    async fn user_families(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<FamilyInfo>, StoreError> {
        let index = self.keys.user_families(user_id);
        let ids: Vec<String> = self.pools.read(redis::cmd("SMEMBERS").arg(&index)).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys.family(id))
                .arg(&FAMILY_FIELDS[..]);
        }
        // Each family is in its own slot: in a Cluster, one command at a time (the sessions
        // list is rare and short).
        let rows: Vec<Vec<Option<String>>> = if self.pools.is_cluster() {
            let mut rows = Vec::with_capacity(ids.len());
            for cmd in pipe.cmd_iter() {
                rows.push(self.pools.read(cmd).await?);
            }
            rows
        } else {
            self.pools.read_pipeline(&pipe).await?
        };
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, fields) in ids.into_iter().zip(rows) {
            match records::family_state(&id, fields, now)? {
                FamilyState::Live(info) if info.user_id == user_id => live.push(info),
                _ => dead.push(id),
            }
        }
        if !dead.is_empty() {
            let mut conn = self.conn().await?;
            redis::cmd("SREM")
                .arg(&index)
                .arg(&dead)
                .query_async::<()>(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        live.sort_by_key(|f| std::cmp::Reverse(f.last_used));
        Ok(live)
    }

    async fn throttle_reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        now: Millis,
    ) -> Result<Reservation, StoreError> {
        let mut conn = self.conn().await?;
        let reply: Vec<String> = self
            .throttle_reserve
            .key(self.keys.throttle(key))
            .arg(policy.free)
            .arg(policy.base_ms)
            .arg(policy.max_ms)
            .arg(policy.window_ms)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let until = |v: &String| v.parse::<Millis>().map_err(|_| corrupt("throttle reply"));
        match reply.as_slice() {
            [tag, u] if tag == "refused" => Ok(Reservation::Refused { until: until(u)? }),
            [tag, u] if tag == "granted" => Ok(Reservation::Granted {
                delay_until: Some(until(u)?).filter(|u| *u > 0),
            }),
            _ => Err(corrupt("throttle reply")),
        }
    }

    async fn throttle_refund(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        self.throttle_refund
            .key(self.keys.throttle(key))
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn throttle_reset(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.keys.throttle(key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    // Identity providers: see `identity.rs`.

    async fn linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        self.identity_linked_user(provider, subject).await
    }

    async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<String, StoreError> {
        self.identity_link(provider, subject, user_id).await
    }

    async fn record_provider_session(&self, session: &ProviderSession) -> Result<(), StoreError> {
        self.identity_record_session(session).await
    }

    async fn provider_families(
        &self,
        provider: &str,
        scope: ProviderScope<'_>,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        self.identity_families(provider, scope, now).await
    }
}
