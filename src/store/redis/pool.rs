//! Connections to Redis: one deadpool pool per thread that uses the store, lent through a
//! manager ([`Lender`]) that checks a connection only when it has reason to doubt it.
//!
//! Owns connecting, lending and noticing connection-level failures; knows no key or command.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError, RwLock,
    },
    thread::ThreadId,
    time::Duration,
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::{
    redis::{
        aio::{ConnectionLike, MultiplexedConnection},
        AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value,
    },
    Runtime,
};

use crate::store::StoreError;

/// The backend failed to answer: the caller retries later and keeps the session.
pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
pub(super) struct Conn(managed::Object<Lender>);

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

/// Every pool of one store, and what a new one is made from.
pub(super) struct Pools {
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
}

impl Pools {
    /// Pools to `url`, `pool_size` connections for each thread; connects lazily, so an
    /// unreachable Redis is reported per request.
    pub(super) fn new(url: &str, pool_size: usize, timeout: Duration) -> Result<Self, StoreError> {
        let pools = Self {
            pools: RwLock::default(),
            failures: Arc::default(),
            url: url.to_owned(),
            connection: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            pool_size,
            timeout,
        };
        // A malformed URL is a configuration error, reported now rather than per request.
        pools.new_pool()?;
        Ok(pools)
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

    /// A connection from the calling thread's pool.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        self.pool()?.get().await.map_err(unavailable)
    }
}
