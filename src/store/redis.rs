//! The shared store on Redis (deadpool-redis pool, Lua scripts via `EVALSHA`).
//!
//! Keys (every key of one family shares the `{<family_id>}` hash tag, so rotation stays one
//! atomic script on Redis Cluster):
//! - `<prefix>fam:{<fid>}` hash: `uid gen cur prev prev_at created last_used exp abs_exp ua
//!   [ua1 ua2 ua3] ip revoked revoked_at`; expires at `exp = min(last_used + idle, abs_exp)`.
//!   No value is longer than 64 bytes (the user agent is split, see [`UA_FIELDS`]), so Redis
//!   keeps the hash in its compact listpack encoding: about 350 bytes instead of 900.
//! - `<prefix>fam:{<fid>}:next` the sealed successor, for the grace window only.
//! - `<prefix>user:{<uid>}` hash: `id email pw roles disabled created`.
//! - `<prefix>user:{<uid>}:fams` set of family ids (may hold dead ids; pruned when listed).
//! - `<prefix>email:<email>` → uid, and `<prefix>users` set of uids.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError, RwLock,
    },
    thread::ThreadId,
    time::Duration,
};

use async_trait::async_trait;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::{
    redis::{
        self,
        aio::{ConnectionLike, MultiplexedConnection},
        AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Script, Value,
    },
    Runtime,
};

use super::{
    FamilyInfo, FamilyState, Liveness, NewFamily, RevokeOutcome, RevokeReason, RotateOutcome,
    RotateRequest, Store, StoreError, ThrottlePolicy, UserRecord,
};
use crate::clock::Millis;

/// The fields [`RedisStore::family_state`] reads. The secret hashes (`cur`, `prev`) are only
/// ever compared inside the rotation script, never read out.
const FAMILY_FIELDS: [&str; 12] = [
    "uid",
    "gen",
    "created",
    "last_used",
    "exp",
    "abs_exp",
    "ua",
    "ua1",
    "ua2",
    "ua3",
    "ip",
    "revoked",
];

/// The user agent's fields, 64 bytes each: a hash with a value over `hash-max-listpack-value`
/// (64 by default) falls back to Redis's hashtable encoding, which more than doubles the
/// memory of a family. What does not fit in these (over 256 bytes) is not stored.
const UA_FIELDS: [&str; 4] = ["ua", "ua1", "ua2", "ua3"];
const UA_CHUNK: usize = 64;

/// `user_agent` as `(field, part)` pairs of at most [`UA_CHUNK`] bytes, cut on char boundaries.
fn user_agent_fields(user_agent: &str) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    let mut part = String::new();
    for c in user_agent.chars() {
        if part.len() + c.len_utf8() > UA_CHUNK {
            fields.push(std::mem::take(&mut part));
        }
        part.push(c);
    }
    fields.push(part);
    UA_FIELDS.into_iter().zip(fields).collect()
}

/// A connection idle for longer than this is checked with a `PING` before it is lent again.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The pool's manager: deadpool-redis's, without its `PING` at every checkout.
///
/// deadpool-redis checks a connection with `UNWATCH` + `PING` each time the pool lends it,
/// which doubled the Redis round trips of every authenticated request. This manager checks a
/// connection only when it sat idle for longer than [`IDLE_CHECK`], or when any connection of
/// the store failed since its last check (Redis restarted: every pooled connection is
/// suspect). After a restart, the requests already under way on old connections fail (503,
/// cookie kept); every request that starts after the first failure gets a checked or new
/// connection. A connection that failed itself is dropped.
struct Lender {
    manager: deadpool_redis::Manager,
    failures: Arc<AtomicU64>,
}

/// A pooled connection, whether a command on it failed at the connection level, and the
/// store's failure count when it was last known good.
struct Pooled {
    conn: MultiplexedConnection,
    broken: bool,
    checked_at: u64,
}

impl managed::Manager for Lender {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        Ok(Pooled {
            conn: self.manager.create().await?,
            broken: false,
            checked_at: self.failures.load(Ordering::Acquire),
        })
    }

    async fn recycle(&self, pooled: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        if pooled.broken {
            return Err(RecycleError::message("the connection failed"));
        }
        let failures = self.failures.load(Ordering::Acquire);
        if pooled.checked_at == failures && metrics.last_used() < IDLE_CHECK {
            return Ok(());
        }
        self.manager.recycle(&mut pooled.conn, metrics).await?;
        pooled.checked_at = failures;
        Ok(())
    }
}

/// A connection lent by the pool. A connection-level failure (I/O, dropped, timed out) marks
/// it broken and makes every other pooled connection suspect.
struct Conn(managed::Object<Lender>);

impl From<managed::Object<Lender>> for Conn {
    fn from(object: managed::Object<Lender>) -> Self {
        Self(object)
    }
}

impl Conn {
    fn note<T>(&mut self, result: Result<T, RedisError>) -> Result<T, RedisError> {
        if let Err(e) = &result {
            if e.is_unrecoverable_error() || e.is_io_error() || e.is_timeout() {
                self.0.broken = true;
                if let Some(pool) = managed::Object::pool(&self.0) {
                    pool.manager().failures.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
        result
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.0.conn.req_packed_command(cmd).await;
            self.note(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.0.conn.req_packed_commands(cmd, offset, count).await;
            self.note(result)
        })
    }

    fn get_db(&self) -> i64 {
        self.0.conn.get_db()
    }
}

type Pool = managed::Pool<Lender, Conn>;

/// Users and families in Redis.
pub struct RedisStore {
    /// One pool per thread that uses the store. A multiplexed connection's reader runs on the
    /// runtime that opened it, and each actix worker is its own runtime: with one shared pool,
    /// half the replies (and every wait for a free connection) woke another thread.
    pools: RwLock<HashMap<ThreadId, Pool>>,
    /// Connection-level failures seen by any pool (see [`Lender`]).
    failures: Arc<AtomicU64>,
    url: String,
    connection: AsyncConnectionConfig,
    pool_size: usize,
    timeout: Duration,
    prefix: String,
    rotate: Script,
    revoke: Script,
    throttle: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// What a family hash's `uid`, `revoked`, `exp` and `abs_exp` fields say at `now`: the one
/// decision behind both the per-request check and the full read of a family.
fn liveness(
    uid: Option<&String>,
    revoked: bool,
    exp: Option<&String>,
    abs_exp: Option<&String>,
    now: Millis,
) -> Result<Liveness, StoreError> {
    let Some(user_id) = uid else {
        return Ok(Liveness::Expired);
    };
    if revoked {
        return Ok(Liveness::Revoked);
    }
    let idle_exp = int(exp, "family exp")?;
    if now >= idle_exp {
        return Ok(Liveness::Expired);
    }
    Ok(Liveness::Live {
        user_id: user_id.clone(),
        idle_exp,
        abs_exp: int(abs_exp, "family abs_exp")?,
    })
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

fn int(value: Option<&String>, what: &str) -> Result<i64, StoreError> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(what))
}

impl RedisStore {
    /// Pools to `url`, `pool_size` connections for each thread that uses the store; connects
    /// lazily, so an unreachable Redis is reported per request.
    pub fn connect(
        url: &str,
        prefix: &str,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let store = Self {
            pools: RwLock::default(),
            failures: Arc::default(),
            url: url.to_owned(),
            connection: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            pool_size,
            timeout,
            prefix: prefix.to_owned(),
            rotate: Script::new(include_str!("lua/rotate_family.lua")),
            revoke: Script::new(include_str!("lua/revoke_family.lua")),
            throttle: Script::new(include_str!("lua/throttle_fail.lua")),
        };
        // A malformed URL is a configuration error, reported now rather than per request.
        store.new_pool()?;
        Ok(store)
    }

    fn new_pool(&self) -> Result<Pool, StoreError> {
        let manager =
            deadpool_redis::Manager::new_with_config(self.url.as_str(), self.connection.clone())
                .map_err(|e| StoreError::Unavailable(format!("redis.url: {e}")))?;
        managed::Pool::builder(Lender {
            manager,
            failures: Arc::clone(&self.failures),
        })
        .max_size(self.pool_size)
        .wait_timeout(Some(self.timeout))
        .create_timeout(Some(self.timeout))
        .recycle_timeout(Some(self.timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(unavailable)
    }

    /// The calling thread's pool, made on its first use.
    fn pool(&self) -> Result<Pool, StoreError> {
        let thread = std::thread::current().id();
        let pools = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = pools.get(&thread) {
            return Ok(pool.clone());
        }
        drop(pools);
        let pool = self.new_pool()?;
        let mut pools = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        Ok(pools.entry(thread).or_insert(pool).clone())
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.pool()?.get().await.map_err(unavailable)
    }

    fn family_key(&self, fid: &str) -> String {
        format!("{}fam:{{{fid}}}", self.prefix)
    }

    fn next_key(&self, fid: &str) -> String {
        format!("{}fam:{{{fid}}}:next", self.prefix)
    }

    fn user_key(&self, uid: &str) -> String {
        format!("{}user:{{{uid}}}", self.prefix)
    }

    fn user_families_key(&self, uid: &str) -> String {
        format!("{}user:{{{uid}}}:fams", self.prefix)
    }

    fn email_key(&self, email: &str) -> String {
        format!("{}email:{email}", self.prefix)
    }

    /// Throttle counters: the key is already a hash of what it counts.
    fn throttle_key(&self, key: &str) -> String {
        format!("{}thr:{key}", self.prefix)
    }

    fn users_key(&self) -> String {
        format!("{}users", self.prefix)
    }

    fn user_from_hash(map: &HashMap<String, String>) -> Result<Option<UserRecord>, StoreError> {
        if map.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| map.get(k).cloned().ok_or_else(|| corrupt("user record"));
        Ok(Some(UserRecord {
            id: get("id")?,
            email: get("email")?,
            password_hash: get("pw")?,
            roles: serde_json::from_str(&get("roles")?).map_err(|_| corrupt("user roles"))?,
            disabled: get("disabled")? == "1",
            created_ms: int(map.get("created"), "user created")?,
        }))
    }

    async fn write_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&user.roles).map_err(|_| corrupt("user roles"))?;
        let mut conn = self.conn().await?;
        redis::pipe()
            .hset_multiple(
                self.user_key(&user.id),
                &[
                    ("id", user.id.as_str()),
                    ("email", user.email.as_str()),
                    ("pw", user.password_hash.as_str()),
                    ("roles", roles.as_str()),
                    ("disabled", if user.disabled { "1" } else { "0" }),
                    ("created", user.created_ms.to_string().as_str()),
                ],
            )
            .ignore()
            .sadd(self.users_key(), &user.id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    /// Reads a family hash (the fields of [`FAMILY_FIELDS`]) into its state at `now`.
    fn family_state(
        fid: &str,
        fields: Vec<Option<String>>,
        now: Millis,
    ) -> Result<FamilyState, StoreError> {
        let map: HashMap<&str, String> = FAMILY_FIELDS
            .iter()
            .zip(fields)
            .filter_map(|(k, v)| v.map(|v| (*k, v)))
            .collect();
        let (user_id, idle_exp, abs_exp) = match liveness(
            map.get("uid"),
            map.contains_key("revoked"),
            map.get("exp"),
            map.get("abs_exp"),
            now,
        )? {
            Liveness::Live {
                user_id,
                idle_exp,
                abs_exp,
            } => (user_id, idle_exp, abs_exp),
            Liveness::Revoked => {
                return Ok(FamilyState::Revoked {
                    reason: map.get("revoked").cloned().unwrap_or_default(),
                })
            }
            Liveness::Expired => return Ok(FamilyState::Expired),
        };
        Ok(FamilyState::Live(FamilyInfo {
            id: fid.to_owned(),
            user_id,
            generation: u64::try_from(int(map.get("gen"), "family gen")?).unwrap_or(0),
            created: int(map.get("created"), "family created")?,
            last_used: int(map.get("last_used"), "family last_used")?,
            idle_exp,
            abs_exp,
            user_agent: UA_FIELDS
                .iter()
                .filter_map(|k| map.get(k).map(String::as_str))
                .collect(),
            ip: map.get("ip").cloned().unwrap_or_default(),
        }))
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

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let claimed: bool = {
            let mut conn = self.conn().await?;
            redis::cmd("SET")
                .arg(self.email_key(&user.email))
                .arg(&user.id)
                .arg("NX")
                .query_async::<Option<String>>(&mut conn)
                .await
                .map_err(unavailable)?
                .is_some()
        };
        if !claimed {
            return Err(StoreError::Conflict);
        }
        self.write_user(user).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let uid: Option<String> = {
            let mut conn = self.conn().await?;
            redis::cmd("GET")
                .arg(self.email_key(email))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?
        };
        match uid {
            Some(uid) => self.user(&uid).await,
            None => Ok(None),
        }
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        let mut conn = self.conn().await?;
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.user_key(id))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Self::user_from_hash(&map)
    }

    async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.write_user(user).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let ids: Vec<String> = {
            let mut conn = self.conn().await?;
            redis::cmd("SMEMBERS")
                .arg(self.users_key())
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?
        };
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
        let exp = super::family_expiry(f.now, f.idle_ms, f.abs_exp);
        let mut conn = self.conn().await?;
        let key = self.family_key(&f.id);
        let mut fields = vec![
            ("uid", f.user_id.clone()),
            ("gen", "0".to_owned()),
            ("cur", f.secret_hash.clone()),
            ("created", f.now.to_string()),
            ("last_used", f.now.to_string()),
            ("exp", exp.to_string()),
            ("abs_exp", f.abs_exp.to_string()),
            ("ip", f.ip.clone()),
        ];
        fields.extend(user_agent_fields(&f.user_agent));
        redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire(&key, exp - f.now)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)?;
        // The per-user index lives in another slot; a lost write only hides the family from
        // the sessions list, it still expires on its own.
        redis::cmd("SADD")
            .arg(self.user_families_key(&f.user_id))
            .arg(&f.id)
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn family(&self, id: &str, now: Millis) -> Result<FamilyState, StoreError> {
        let mut conn = self.conn().await?;
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.family_key(id))
            .arg(&FAMILY_FIELDS[..])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Self::family_state(id, fields, now)
    }

    async fn family_liveness(&self, id: &str, now: Millis) -> Result<Liveness, StoreError> {
        let mut conn = self.conn().await?;
        let (uid, revoked, exp, abs_exp): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = redis::cmd("HMGET")
            .arg(self.family_key(id))
            .arg(&["uid", "revoked", "exp", "abs_exp"])
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        liveness(
            uid.as_ref(),
            revoked.is_some(),
            exp.as_ref(),
            abs_exp.as_ref(),
            now,
        )
    }

    async fn rotate(&self, r: &RotateRequest) -> Result<RotateOutcome, StoreError> {
        let mut conn = self.conn().await?;
        // EVALSHA; redis-rs loads the script and repeats only on NOSCRIPT, when it did not run.
        let reply: Vec<String> = self
            .rotate
            .key(self.family_key(&r.family_id))
            .key(self.next_key(&r.family_id))
            .arg(&r.presented_hash)
            .arg(&r.successor_hash)
            .arg(&r.sealed_successor)
            .arg(r.now)
            .arg(r.idle_ms)
            .arg(r.grace_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let num = |v: &String| v.parse::<i64>().map_err(|_| corrupt("rotation reply"));
        match reply.as_slice() {
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
            [tag, uid] if tag == "reuse" => Ok(RotateOutcome::ReuseDetected {
                user_id: uid.clone(),
            }),
            [tag] if tag == "revoked" => Ok(RotateOutcome::Revoked),
            [tag] if tag == "expired" => Ok(RotateOutcome::Expired),
            _ => Err(corrupt("rotation reply")),
        }
    }

    async fn revoke_family(
        &self,
        id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut conn = self.conn().await?;
        let reply: String = self
            .revoke
            .key(self.family_key(id))
            .key(self.next_key(id))
            .arg(reason.as_str())
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        revoke_outcome(&reply)
    }

    async fn user_families(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<FamilyInfo>, StoreError> {
        let index = self.user_families_key(user_id);
        let mut conn = self.conn().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.family_key(id))
                .arg(&FAMILY_FIELDS[..]);
        }
        let rows: Vec<Vec<Option<String>>> =
            pipe.query_async(&mut conn).await.map_err(unavailable)?;
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, fields) in ids.into_iter().zip(rows) {
            match Self::family_state(&id, fields, now)? {
                FamilyState::Live(info) if info.user_id == user_id => live.push(info),
                _ => dead.push(id),
            }
        }
        if !dead.is_empty() {
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

    async fn throttle_locked(
        &self,
        keys: &[String],
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGET").arg(self.throttle_key(key)).arg("until");
        }
        let mut conn = self.conn().await?;
        let locks: Vec<Option<i64>> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
        Ok(locks
            .into_iter()
            .flatten()
            .filter(|until| now < *until)
            .max())
    }

    async fn throttle_fail(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        now: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let mut conn = self.conn().await?;
        let until: String = self
            .throttle
            .key(self.throttle_key(key))
            .arg(policy.free)
            .arg(policy.base_ms)
            .arg(policy.max_ms)
            .arg(policy.window_ms)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let until: Millis = until.parse().map_err(|_| corrupt("throttle reply"))?;
        Ok((until > 0).then_some(until))
    }

    async fn throttle_reset(&self, key: &str) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        redis::cmd("DEL")
            .arg(self.throttle_key(key))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }
}
