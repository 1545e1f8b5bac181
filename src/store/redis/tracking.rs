//! The per-request family check without a round trip (DESIGN.md §5): each instance keeps
//! what it read of a family's liveness — and of a user's record, which each rotation reads —
//! in memory, and Redis tells every instance when such a key changes (server-assisted
//! client-side caching: RESP3 `CLIENT TRACKING ON BCAST PREFIX <prefix>fam: PREFIX
//! <prefix>user:` on one connection to each primary that holds keys).
//!
//! The cache answers only while tracking is known to work. A tracker thread (its own
//! runtime, so no actix worker carries it) holds the tracking connections and checks each
//! with `ROLE` every [`HEARTBEAT`]: a connection that closes, does not answer within
//! [`HEARTBEAT_TIMEOUT`], or whose server is no longer a primary ends tracking at once —
//! the cache is emptied and every check goes to Redis again (one round trip, as before)
//! until tracking is back. So an entry is never older than the last invalidation Redis sent,
//! and in a partition that keeps connections open but silent, never older than
//! `HEARTBEAT + HEARTBEAT_TIMEOUT`.
//!
//! A read that raced an invalidation is not cached: each shard of the cache counts its
//! invalidations, a read takes a [`Ticket`] (the count, and the tracking epoch) before it
//! is sent, and its answer is kept only if neither moved meanwhile. Writes by this instance
//! invalidate its own entries at once (read your own writes without waiting for the push).
//!
//! Every invalidated family id is also broadcast ([`LivenessCache::changes`]) so that open
//! streams of that family re-check their session at once.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
    time::Duration,
};

use deadpool_redis::redis::{self, AsyncConnectionConfig, PushKind, RedisError, Value};
use tokio::sync::{broadcast, mpsc};

use super::{
    pool::{is_primary, Discovery, Source},
    records::LivenessRow,
};
use crate::store::{StoreError, UserRecord};

const HEARTBEAT_MS: u64 = 200;
const HEARTBEAT_TIMEOUT_MS: u64 = 300;
/// How often each tracking connection is asked whether it still leads to a primary.
pub const HEARTBEAT: Duration = Duration::from_millis(HEARTBEAT_MS);
/// How long an answer to the heartbeat may take.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(HEARTBEAT_TIMEOUT_MS);
/// The longest a cached answer can outlive a change Redis could not report (a partition
/// that keeps the connections open but silent): one heartbeat and its timeout.
pub const STALE_AT_MOST: Duration = Duration::from_millis(HEARTBEAT_MS + HEARTBEAT_TIMEOUT_MS);
/// Wait before tracking is tried again after it ended or could not start.
const RETRY: Duration = Duration::from_millis(250);
/// Shards of the cache (a lock each).
const SHARDS: usize = 64;
/// Families kept per shard; past it, an arbitrary entry makes room.
const SHARD_CAPACITY: usize = 4096;

struct Shard<V> {
    rows: HashMap<String, V>,
    /// Invalidations seen by this shard.
    invalidations: u64,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            invalidations: 0,
        }
    }
}

/// Records of one kind (families, users) by id, in [`SHARDS`] locked parts.
struct Shards<V> {
    shards: Vec<Mutex<Shard<V>>>,
}

impl<V: Clone> Shards<V> {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard_of(id: &str) -> usize {
        // FNV-1a: cheap, and the ids are random already.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % SHARDS as u64) as usize
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard<V>> {
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached value of `id` under `epoch` (odd: tracking), or a ticket to read it.
    fn get(&self, id: &str, epoch: u64) -> Result<V, Ticket> {
        let shard = Self::shard_of(id);
        let guard = self.lock(shard);
        if epoch % 2 == 1 {
            if let Some(row) = guard.rows.get(id) {
                return Ok(row.clone());
            }
        }
        Err(Ticket {
            shard,
            invalidations: guard.invalidations,
            epoch,
        })
    }

    /// `id`'s value from memory while tracking runs, else what `read` reads — kept unless an
    /// invalidation of its shard, or a change of tracking, came while it ran.
    async fn read_through<F>(
        &self,
        id: &str,
        epoch: &AtomicU64,
        read: impl FnOnce() -> F,
    ) -> Result<V, StoreError>
    where
        F: Future<Output = Result<V, StoreError>>,
    {
        let ticket = match self.get(id, epoch.load(Ordering::Acquire)) {
            Ok(cached) => return Ok(cached),
            Err(ticket) => ticket,
        };
        let value = read().await?;
        self.put(id, value.clone(), ticket, epoch);
        Ok(value)
    }

    /// Keeps `value` unless `epoch` (now) is not the ticket's, tracking is off, or the shard
    /// saw an invalidation since the ticket was taken.
    fn put(&self, id: &str, value: V, ticket: Ticket, epoch: &AtomicU64) {
        let mut guard = self.lock(ticket.shard);
        let now = epoch.load(Ordering::Acquire);
        if now != ticket.epoch
            || now.is_multiple_of(2)
            || guard.invalidations != ticket.invalidations
        {
            return;
        }
        if guard.rows.len() >= SHARD_CAPACITY {
            if let Some(victim) = guard.rows.keys().next().cloned() {
                guard.rows.remove(&victim);
            }
        }
        guard.rows.insert(id.to_owned(), value);
    }

    fn invalidate(&self, id: &str) {
        let mut guard = self.lock(Self::shard_of(id));
        guard.invalidations += 1;
        guard.rows.remove(id);
    }

    fn clear(&self) {
        for shard in 0..SHARDS {
            let mut guard = self.lock(shard);
            guard.invalidations += 1;
            guard.rows.clear();
        }
    }
}

/// Proof that a read started while tracking worked, and what had been invalidated by then.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    shard: usize,
    invalidations: u64,
    epoch: u64,
}

/// Families' liveness and users' records as last read, while Redis reports every change.
pub(super) struct LivenessCache {
    families: Shards<LivenessRow>,
    users: Shards<Option<UserRecord>>,
    /// Even: tracking is down (the cache answers nothing); odd: up. Every change adds one.
    epoch: AtomicU64,
    changes: broadcast::Sender<String>,
    started: std::sync::Once,
}

impl std::fmt::Debug for LivenessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivenessCache")
            .field("tracking", &self.is_tracking())
            .finish_non_exhaustive()
    }
}

impl LivenessCache {
    pub(super) fn new() -> Self {
        Self {
            families: Shards::new(),
            users: Shards::new(),
            epoch: AtomicU64::new(0),
            changes: broadcast::channel(1024).0,
            started: std::sync::Once::new(),
        }
    }

    /// Whether invalidations are flowing now.
    pub(super) fn is_tracking(&self) -> bool {
        self.epoch.load(Ordering::Acquire) % 2 == 1
    }

    /// Family `id`'s liveness row from memory while tracking runs, else what `read` reads
    /// from Redis (kept for next time unless the family changed meanwhile).
    pub(super) async fn family<F>(
        &self,
        id: &str,
        read: impl FnOnce() -> F,
    ) -> Result<LivenessRow, StoreError>
    where
        F: Future<Output = Result<LivenessRow, StoreError>>,
    {
        self.families.read_through(id, &self.epoch, read).await
    }

    /// Forgets family `id` (it changed, or this instance is about to change it).
    pub(super) fn invalidate_family(&self, id: &str) {
        self.families.invalidate(id);
        let _ = self.changes.send(id.to_owned());
    }

    /// [`LivenessCache::family`] for user `id`'s record (`None`: no such user).
    pub(super) async fn user<F>(
        &self,
        id: &str,
        read: impl FnOnce() -> F,
    ) -> Result<Option<UserRecord>, StoreError>
    where
        F: Future<Output = Result<Option<UserRecord>, StoreError>>,
    {
        self.users.read_through(id, &self.epoch, read).await
    }

    /// Forgets user `id`.
    pub(super) fn invalidate_user(&self, id: &str) {
        self.users.invalidate(id);
    }

    /// Empties both caches (tracking goes on, or starts or ends): changes may have been
    /// missed, so every open stream re-checks.
    fn flush(&self) {
        self.families.clear();
        self.users.clear();
        let _ = self.changes.send(crate::store::EVERY_FAMILY.to_owned());
    }

    /// Tracking started (`true`) or ended: a new epoch, and an empty cache either way.
    fn set_tracking(&self, up: bool) {
        if self.is_tracking() == up {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.flush();
        if !up {
            tracing::warn!(
                event = "liveness_tracking_lost",
                "family invalidations from Redis stopped; every request checks its family in Redis until they are back"
            );
        } else {
            tracing::info!(
                "family invalidations from Redis are flowing; live families are checked in memory"
            );
        }
    }

    /// Family ids whose keys changed, as Redis reports them.
    pub(super) fn changes(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Whether [`LivenessCache::start`] ran.
    pub(super) fn is_started(&self) -> bool {
        self.started.is_completed()
    }

    /// Starts the tracker thread, once; it ends soon after the store is dropped.
    pub(super) fn start(self: &Arc<Self>, source: Arc<Source>, prefixes: Prefixes) {
        let cache = Arc::downgrade(self);
        self.started.call_once(move || {
            crate::background::spawn(
                "bffgate-tracking",
                "families are checked in Redis on every request",
                move || track(cache, source, prefixes),
            );
        });
    }
}

/// Tracks while the store lives: one tracking session after another, the cache off between
/// them.
async fn track(cache: Weak<LivenessCache>, source: Arc<Source>, prefixes: Prefixes) {
    loop {
        if let Err(e) = session(&cache, &source, &prefixes).await {
            tracing::debug!(error = %e, "liveness tracking ended");
        }
        match cache.upgrade() {
            Some(cache) => cache.set_tracking(false),
            None => return,
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One tracking session: a tracking connection to each primary, invalidations applied as
/// they come, until a connection closes or fails its heartbeat.
async fn session(
    cache: &Weak<LivenessCache>,
    source: &Source,
    prefixes: &Prefixes,
) -> Result<(), RedisError> {
    let (pushes, mut pushed) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(HEARTBEAT_TIMEOUT))
        .set_response_timeout(Some(HEARTBEAT_TIMEOUT))
        .set_push_sender(pushes);
    let mut discovery = Discovery::default();
    let primaries = source.primaries(&mut discovery).await?;
    if primaries.is_empty() {
        return Ok(());
    }
    let tracked: Vec<&str> = primaries.iter().map(|(addr, _)| addr.as_str()).collect();
    let mut connections = Vec::with_capacity(primaries.len());
    for (_, primary) in &primaries {
        let mut conn = primary
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("bffgate-tracking")
            .exec_async(&mut conn)
            .await?;
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&prefixes.families)
            .arg("PREFIX")
            .arg(&prefixes.users)
            .exec_async(&mut conn)
            .await?;
        connections.push(conn);
    }
    if !still_primaries(&mut connections).await? {
        return Ok(());
    }
    match cache.upgrade() {
        Some(cache) => cache.set_tracking(true),
        None => return Ok(()),
    }
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            push = pushed.recv() => match push {
                Some(push) if push.kind == PushKind::Invalidate => match cache.upgrade() {
                    Some(cache) => invalidate(&cache, prefixes, push.data.first()),
                    None => return Ok(()),
                },
                Some(push) if push.kind == PushKind::Disconnection => return Ok(()),
                Some(_) => {}
                None => return Ok(()),
            },
            _ = heartbeat.tick() => {
                if cache.strong_count() == 0 || !still_primaries(&mut connections).await? {
                    return Ok(());
                }
                // The primaries the sentinels name, or the Cluster's slots say, now: another
                // set (a failover, slots moved to a node not tracked) ends this session.
                let now = in_time(source.primaries(&mut discovery)).await??;
                if !now.iter().map(|(addr, _)| addr.as_str()).eq(tracked.iter().copied()) {
                    return Ok(());
                }
            }
        }
    }
}

/// `work`'s outcome within [`HEARTBEAT_TIMEOUT`], or a timeout error.
async fn in_time<T>(work: impl Future<Output = T>) -> Result<T, RedisError> {
    tokio::time::timeout(HEARTBEAT_TIMEOUT, work)
        .await
        .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))
}

/// Whether every tracking connection answers `ROLE` as a primary, all asked at once, within
/// [`HEARTBEAT_TIMEOUT`] in all.
async fn still_primaries(
    connections: &mut [redis::aio::MultiplexedConnection],
) -> Result<bool, RedisError> {
    let asked = connections.iter_mut().map(|conn| async move {
        let role: Vec<Value> = redis::cmd("ROLE").query_async(conn).await?;
        Ok::<_, RedisError>(is_primary(&role))
    });
    let answers = in_time(futures_util::future::join_all(asked)).await?;
    answers
        .into_iter()
        .try_fold(true, |all, answer| Ok(all && answer?))
}

/// The key prefixes tracked: `<prefix>fam:` and `<prefix>user:`.
#[derive(Debug, Clone)]
pub(super) struct Prefixes {
    pub(super) families: String,
    pub(super) users: String,
}

/// Applies one invalidation message: its keys, or (a `null`, after `FLUSHALL`) everything.
fn invalidate(cache: &LivenessCache, prefixes: &Prefixes, keys: Option<&Value>) {
    match keys {
        Some(Value::Array(keys)) => {
            for key in keys {
                let Value::BulkString(key) = key else {
                    continue;
                };
                if let Some(id) = tagged(&prefixes.families, key) {
                    cache.invalidate_family(id);
                } else if let Some(id) = tagged(&prefixes.users, key) {
                    cache.invalidate_user(id);
                } else {
                    cache.flush();
                }
            }
        }
        _ => cache.flush(),
    }
}

/// The id in `<prefix>{<id>}` or `<prefix>{<id>}:…` (a family's or a user's keys).
fn tagged<'k>(prefix: &str, key: &'k [u8]) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix.as_bytes())?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (id, _) = rest.strip_prefix('{')?.split_once('}')?;
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uid: &str) -> LivenessRow {
        (Some(uid.into()), None, Some("10".into()), Some("20".into()))
    }

    fn tracking() -> LivenessCache {
        let cache = LivenessCache::new();
        cache.set_tracking(true);
        cache
    }

    async fn read(value: LivenessRow) -> Result<LivenessRow, StoreError> {
        Ok(value)
    }

    /// A read the cache must not make: it answers from memory.
    async fn no_read() -> Result<LivenessRow, StoreError> {
        Err(StoreError::Unavailable("Redis was asked".into()))
    }

    fn remembers(cache: &LivenessCache, id: &str) -> bool {
        cache
            .families
            .get(id, cache.epoch.load(Ordering::Acquire))
            .is_ok()
    }

    #[tokio::test]
    async fn nothing_is_cached_while_tracking_is_down() {
        let cache = LivenessCache::new();
        assert_eq!(
            cache.family("f", || read(row("u"))).await.ok(),
            Some(row("u"))
        );
        assert!(!remembers(&cache, "f"));
    }

    #[tokio::test]
    async fn a_read_is_cached_until_its_family_is_invalidated() {
        let cache = tracking();
        cache.family("f", || read(row("u"))).await.unwrap();
        assert_eq!(cache.family("f", no_read).await.ok(), Some(row("u")));
        cache.invalidate_family("f");
        assert!(!remembers(&cache, "f"));
    }

    #[tokio::test]
    async fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = tracking();
        let raced = async {
            cache.invalidate_family("f"); // the revocation's push came before the read's answer
            Ok(row("u"))
        };
        cache.family("f", || raced).await.unwrap();
        assert!(!remembers(&cache, "f"));
    }

    #[tokio::test]
    async fn losing_tracking_empties_the_cache_and_refuses_reads_begun_before() {
        let cache = tracking();
        cache.family("f", || read(row("u"))).await.unwrap();
        let across_a_gap = async {
            cache.set_tracking(false);
            assert!(!remembers(&cache, "f"), "emptied");
            cache.set_tracking(true);
            Ok(row("u"))
        };
        cache.family("g", || across_a_gap).await.unwrap();
        assert!(!remembers(&cache, "g"), "a read from before the gap");
    }

    #[test]
    fn invalidation_keys_name_their_family_or_user() {
        assert_eq!(tagged("p:fam:", b"p:fam:{abc}"), Some("abc"));
        assert_eq!(tagged("p:fam:", b"p:fam:{abc}:next"), Some("abc"));
        assert_eq!(tagged("p:fam:", b"p:user:{abc}"), None);
        assert_eq!(tagged("p:user:", b"p:user:{abc}:fams"), Some("abc"));
    }

    #[tokio::test]
    async fn a_user_record_is_cached_until_the_user_changes() {
        let cache = tracking();
        cache.user("u", || async { Ok(None) }).await.unwrap();
        let asked = || async { Err(StoreError::Unavailable("Redis was asked".into())) };
        assert_eq!(cache.user("u", asked).await.ok(), Some(None));
        cache.invalidate_user("u");
        assert!(cache.user("u", asked).await.is_err());
    }
}
