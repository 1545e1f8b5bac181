//! Connections to Redis: one deadpool pool per thread that uses the store, lent through a
//! manager ([`Lender`]) that checks a connection only when it has reason to doubt it; to one
//! server (TLS or not), to the primary a group of sentinels names, or to a Redis Cluster
//! ([`Topology`]).
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
        self,
        aio::{ConnectionLike, MultiplexedConnection},
        cluster::{ClusterClient, ClusterClientBuilder},
        cluster_async::ClusterConnection,
        sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
        AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, FromRedisValue,
        IntoConnectionInfo, Pipeline, ProtocolVersion, RedisError, RedisFuture, ServerErrorKind,
        TlsCertificates, TlsMode, Value,
    },
    Runtime,
};

use crate::store::StoreError;

/// The backend failed to answer: the caller retries later and keeps the session.
pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether a `ROLE` reply says the server is a primary.
pub(super) fn is_primary(role: &[Value]) -> bool {
    matches!(role.first(), Some(Value::BulkString(r)) if r.as_slice() == b"master")
}

/// A connection idle for longer than this is checked with a `PING` before it is lent again.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// The pool's manager: deadpool-redis's, without its `PING` at every checkout.
///
/// deadpool-redis checks a connection with `UNWATCH` + `PING` each time the pool lends it,
/// which doubled the Redis round trips of every authenticated request. This manager checks a
/// connection only when it sat idle for longer than [`IDLE_CHECK`], or when any connection of
/// the store failed since its last check (Redis restarted: every pooled connection is
/// suspect). After a restart, a read that finds its old connection dead is sent once more
/// ([`Pools::read`]) on a connection lent after the failure, so checked or new; a write that
/// does fails (503, cookie kept). Every request that starts after the first failure gets a
/// checked or new connection. A connection that failed itself is dropped.
struct Lender {
    source: Arc<Source>,
    connection: AsyncConnectionConfig,
    failures: Arc<AtomicU64>,
}

/// What new connections are opened from.
pub(super) enum Source {
    /// One server: `redis://`, `rediss://` (TLS), `unix://`.
    Server(redis::Client),
    /// The primary the sentinels name. Asked at each new connection only (not per request):
    /// after a failover the old connections fail, are dropped, and their successors are
    /// opened to whichever server the sentinels name then. The lock because asking takes
    /// `&mut`; it is held while connecting, which happens rarely.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    /// A Redis Cluster: each connection routes every command to the node of its key's slot
    /// and follows `MOVED`/`ASK` itself. Beside it, what a connection to one of its nodes
    /// is opened with (the first seed's credentials and protocol, the CA).
    Cluster {
        client: ClusterClient,
        node: Box<ConnectionInfo>,
        certificates: Option<TlsCertificates>,
    },
}

/// A connection of either kind; both are multiplexed.
enum Connection {
    Server(MultiplexedConnection),
    Cluster(ClusterConnection),
}

/// A pooled connection, whether a command on it failed at the connection level, the store's
/// failure count when it was last known good, and (sentinel) the primary it was opened to.
struct Pooled {
    conn: Connection,
    broken: bool,
    checked_at: u64,
    primary: Option<String>,
}

impl Lender {
    /// Whether a connection still leads where it should: it answers, and (sentinel) its
    /// server is the one the sentinels name as the primary now and says it is one. After a
    /// failover, an old primary that was only cut off (not dead) would otherwise keep
    /// answering reads with what it knew and accept writes that are lost when it rejoins
    /// as a replica.
    async fn check(&self, pooled: &mut Pooled) -> Result<(), RedisError> {
        let moved = || {
            RedisError::from((
                ErrorKind::Server(ServerErrorKind::ReadOnly),
                "the sentinels name another primary now",
            ))
        };
        match (&*self.source, &mut pooled.conn) {
            (Source::Sentinel(sentinel), Connection::Server(conn)) => {
                let current = sentinel.lock().await.async_get_client().await?;
                if Some(current.get_connection_info().addr().to_string()) != pooled.primary {
                    return Err(moved());
                }
                let role: Vec<Value> = redis::cmd("ROLE").query_async(conn).await?;
                if is_primary(&role) {
                    Ok(())
                } else {
                    Err(moved())
                }
            }
            (_, Connection::Server(conn)) => redis::cmd("PING").query_async::<()>(conn).await,
            (_, Connection::Cluster(conn)) => redis::cmd("PING").query_async::<()>(conn).await,
        }
    }
}

impl managed::Manager for Lender {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        // Boxed: the connecting futures (the Cluster's above all) are deep types, and every
        // store method awaits a checkout; inline, `create_user`'s future overflowed the
        // compiler's layout depth limit in release builds. Connecting is rare, so the
        // allocation costs nothing per request.
        Box::pin(self.connect()).await
    }

    async fn recycle(&self, pooled: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        if pooled.broken {
            return Err(RecycleError::message("the connection failed"));
        }
        let failures = self.failures.load(Ordering::Acquire);
        if pooled.checked_at == failures && metrics.last_used() < IDLE_CHECK {
            return Ok(());
        }
        Box::pin(self.check(pooled)).await?;
        pooled.checked_at = failures;
        Ok(())
    }
}

impl Lender {
    async fn connect(&self) -> Result<Pooled, RedisError> {
        let mut primary = None;
        let conn = match &*self.source {
            Source::Server(client) => Connection::Server(
                client
                    .get_multiplexed_async_connection_with_config(&self.connection)
                    .await?,
            ),
            Source::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                primary = Some(client.get_connection_info().addr().to_string());
                Connection::Server(
                    client
                        .get_multiplexed_async_connection_with_config(&self.connection)
                        .await?,
                )
            }
            Source::Cluster { client, .. } => {
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        Ok(Pooled {
            conn,
            broken: false,
            checked_at: self.failures.load(Ordering::Acquire),
            primary,
        })
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
            // READONLY: the server was a primary and is a replica now (a failover).
            if e.is_unrecoverable_error()
                || e.is_io_error()
                || e.is_timeout()
                || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
            {
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
            let result = match &mut self.0.conn {
                Connection::Server(conn) => conn.req_packed_command(cmd).await,
                Connection::Cluster(conn) => conn.req_packed_command(cmd).await,
            };
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
            let result = match &mut self.0.conn {
                Connection::Server(conn) => conn.req_packed_commands(cmd, offset, count).await,
                Connection::Cluster(conn) => conn.req_packed_commands(cmd, offset, count).await,
            };
            self.note(result)
        })
    }

    fn get_db(&self) -> i64 {
        match &self.0.conn {
            Connection::Server(conn) => conn.get_db(),
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

type Pool = managed::Pool<Lender, Conn>;

/// Where the store's Redis is.
#[derive(Clone)]
pub enum Topology {
    /// One server: `redis://`, `rediss://` (TLS) or `unix://`.
    Standalone { url: String },
    /// The primary the sentinels at `sentinels` monitor as `master`. The credentials (and
    /// TLS) of the first sentinel's URL are used for the sentinels and the primary alike.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
    /// A Redis Cluster, discovered from the seed `nodes`.
    Cluster { nodes: Vec<String> },
}

impl std::fmt::Debug for Topology {
    // The URLs may carry passwords.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Standalone { .. } => f.write_str("Standalone"),
            Self::Sentinel { master, .. } => write!(f, "Sentinel({master})"),
            Self::Cluster { nodes } => write!(f, "Cluster({} seeds)", nodes.len()),
        }
    }
}

/// A configuration error about `key`.
fn invalid(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{key}: {e}"))
}

impl Source {
    /// Where connections speaking `protocol` are opened from.
    pub(super) fn open(
        topology: &Topology,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
        protocol: ProtocolVersion,
    ) -> Result<Self, StoreError> {
        // The redis crate builds its rustls configuration with the process's default
        // provider; the gateway's is aws-lc-rs (as for the upstream client).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: ca_pem.map(<[u8]>::to_vec),
        };
        match topology {
            Topology::Standalone { url } => {
                let info = with_protocol(
                    url.as_str()
                        .into_connection_info()
                        .map_err(|e| invalid("redis.url", e))?,
                    protocol,
                );
                let client = match ca_pem {
                    Some(_) if url.starts_with("rediss://") => {
                        redis::Client::build_with_tls(info, certificates())
                    }
                    _ => redis::Client::open(info),
                };
                client
                    .map(Self::Server)
                    .map_err(|e| invalid("redis.url", e))
            }
            Topology::Sentinel { sentinels, master } => {
                let infos = sentinels
                    .iter()
                    .map(|url| url.as_str().into_connection_info())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("redis.nodes", e))?;
                let first = infos
                    .first()
                    .ok_or_else(|| invalid("redis.nodes", "no sentinel"))?;
                let settings = first.redis_settings();
                let tls = matches!(first.addr(), ConnectionAddr::TcpTls { .. });
                let mut builder = SentinelClientBuilder::new(
                    infos.iter().map(|info| info.addr().clone()),
                    master,
                    SentinelServerType::Master,
                )
                .map_err(|e| invalid("redis.nodes", e))?
                .set_client_to_redis_db(settings.db())
                .set_client_to_redis_protocol(protocol);
                if let Some(user) = settings.username() {
                    builder = builder
                        .set_client_to_redis_username(user)
                        .set_client_to_sentinel_username(user);
                }
                if let Some(password) = settings.password() {
                    builder = builder
                        .set_client_to_redis_password(password)
                        .set_client_to_sentinel_password(password);
                }
                if tls {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if ca_pem.is_some() {
                        builder = builder
                            .set_client_to_redis_certificates(certificates())
                            .set_client_to_sentinel_certificates(certificates());
                    }
                }
                let client = builder.build().map_err(|e| invalid("redis.nodes", e))?;
                Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
            }
            Topology::Cluster { nodes } => {
                let node = nodes
                    .first()
                    .ok_or_else(|| invalid("redis.nodes", "no node"))?
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| invalid("redis.nodes", e))?;
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .use_protocol(protocol);
                if ca_pem.is_some() {
                    builder = builder.certs(certificates());
                }
                let client = builder.build().map_err(|e| invalid("redis.nodes", e))?;
                Ok(Self::Cluster {
                    client,
                    node: Box::new(with_protocol(node, protocol)),
                    certificates: ca_pem.map(|_| certificates()),
                })
            }
        }
    }
}

fn with_protocol(info: ConnectionInfo, protocol: ProtocolVersion) -> ConnectionInfo {
    let settings = info.redis_settings().clone().set_protocol(protocol);
    info.set_redis_settings(settings)
}

/// What [`Source::primaries`] keeps between calls: the Cluster connection it reads
/// `CLUSTER SLOTS` on.
#[derive(Default)]
pub(super) struct Discovery {
    cluster: Option<ClusterConnection>,
}

/// Slots of a Redis Cluster.
const CLUSTER_SLOTS: i64 = 16384;

impl Source {
    /// Each primary that holds keys now, by address (`host:port`), with a client for it: the
    /// server, the primary the sentinels name now, or every primary of the Cluster (from
    /// `CLUSTER SLOTS`, which must cover every slot). Sorted by address, so two answers compare.
    pub(super) async fn primaries(
        &self,
        discovery: &mut Discovery,
    ) -> Result<Vec<(String, redis::Client)>, RedisError> {
        let one = |client: redis::Client| {
            let addr = client.get_connection_info().addr().to_string();
            Ok(vec![(addr, client)])
        };
        match self {
            Self::Server(client) => one(client.clone()),
            Self::Sentinel(sentinel) => one(sentinel.lock().await.async_get_client().await?),
            Self::Cluster {
                client,
                node,
                certificates,
            } => {
                let conn = match &mut discovery.cluster {
                    Some(conn) => conn,
                    none => none.insert(client.get_async_connection().await?),
                };
                let slots: Vec<Vec<Value>> =
                    redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
                let unreadable =
                    || RedisError::from((ErrorKind::Parse, "a CLUSTER SLOTS range it cannot read"));
                let mut covered = 0;
                let mut primaries = Vec::with_capacity(slots.len());
                for range in &slots {
                    let (Some(start), Some(end), Some(Value::Array(primary))) =
                        (range.first(), range.get(1), range.get(2))
                    else {
                        return Err(unreadable());
                    };
                    let start: i64 = redis::from_redis_value_ref(start)?;
                    let end: i64 = redis::from_redis_value_ref(end)?;
                    covered += end - start + 1;
                    let (Some(host), Some(port)) = (primary.first(), primary.get(1)) else {
                        return Err(unreadable());
                    };
                    let host: String = redis::from_redis_value_ref(host)?;
                    let port: u16 = redis::from_redis_value_ref(port)?;
                    primaries.push((host, port));
                }
                if covered != CLUSTER_SLOTS {
                    return Err(RedisError::from((
                        ErrorKind::ClusterConnectionNotFound,
                        "the cluster's slots are not all served",
                    )));
                }
                primaries.sort();
                primaries.dedup();
                primaries
                    .into_iter()
                    .map(|(host, port)| {
                        let key = format!("{host}:{port}");
                        let addr = match node.addr() {
                            &ConnectionAddr::TcpTls {
                                insecure,
                                ref tls_params,
                                ..
                            } => ConnectionAddr::TcpTls {
                                host,
                                port,
                                insecure,
                                tls_params: tls_params.clone(),
                            },
                            _ => ConnectionAddr::Tcp(host, port),
                        };
                        let info = (**node).clone().set_addr(addr);
                        let client = match certificates {
                            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
                            None => redis::Client::open(info),
                        }?;
                        Ok((key, client))
                    })
                    .collect()
            }
        }
    }
}

/// Every pool of one store, and what a new one is made from.
pub(super) struct Pools {
    /// One pool per thread that uses the store. A multiplexed connection's reader runs on the
    /// runtime that opened it, and each actix worker is its own runtime: with one shared pool,
    /// half the replies (and every wait for a free connection) woke another thread.
    pools: RwLock<HashMap<ThreadId, Pool>>,
    /// Connection-level failures seen by any pool (see [`Lender`]).
    failures: Arc<AtomicU64>,
    source: Arc<Source>,
    connection: AsyncConnectionConfig,
    pool_size: usize,
    timeout: Duration,
}

impl Pools {
    /// Pools to `topology` (trusting the CA `ca_pem` for TLS, else the system roots),
    /// `pool_size` connections for each thread; connects lazily, so an unreachable Redis is
    /// reported per request.
    pub(super) fn new(
        topology: &Topology,
        ca_pem: Option<&[u8]>,
        pool_size: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        // A malformed URL is a configuration error, reported now rather than per request.
        let source = Source::open(topology, ca_pem, timeout, ProtocolVersion::RESP2)?;
        let pools = Self {
            pools: RwLock::default(),
            failures: Arc::default(),
            source: Arc::new(source),
            connection: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            pool_size,
            timeout,
        };
        pools.new_pool()?;
        Ok(pools)
    }

    /// Whether commands of one pipeline may have to go to different nodes.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(*self.source, Source::Cluster { .. })
    }

    fn new_pool(&self) -> Result<Pool, StoreError> {
        managed::Pool::builder(Lender {
            source: Arc::clone(&self.source),
            connection: self.connection.clone(),
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

    /// A connection from the calling thread's pool, within `redis.timeout` in all. deadpool
    /// bounds each step (the wait, each check, the connecting) but not their sum: with Redis
    /// unreachable without an answer (a partition), every pooled connection is suspect and
    /// would be checked in turn, each for up to the timeout. The timer is armed only when the
    /// pool cannot lend at once.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        let pool = self.pool()?;
        match tokio::time::timeout(self.timeout, pool.get()).await {
            Ok(conn) => conn.map_err(unavailable),
            Err(_) => Err(unavailable(format!(
                "no Redis connection within {:?}",
                self.timeout
            ))),
        }
    }
}

// Reads sent once more when their connection was lost (issue 15).

/// Whether `e` says the command's connection was lost — closed, reset, refused, a broken
/// pipe — as when Redis restarted under a pooled connection; not a timeout (see
/// [`Pools::read`]).
fn connection_lost(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_unrecoverable_error())
}

impl Pools {
    /// `cmd`, which must be a read (repeating it changes nothing), sent once more when its
    /// connection turned out lost: on a connection lent after the failure, so one the pool
    /// checked with a `PING` (the failure made every pooled connection suspect) or opened anew.
    /// In the normal path this is one command and one round trip, as before.
    ///
    /// Never after a timeout: Redis may be slow rather than gone, a second try would double
    /// the load on it and the time the request waits past `redis.timeout`; the request
    /// answers 503 (cookie kept) instead. Writes, the rotation script above all, are never
    /// sent again: the redis crate reports a connection that died before the command was
    /// written and one that died after Redis ran it with the same error, so nothing proves
    /// that a write did not run.
    pub(super) async fn read<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        self.read_once_more(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// [`Pools::read`] for a pipeline of reads.
    pub(super) async fn read_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        self.read_once_more(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// Sends a read on a lent connection, and once more on another when the first lost its
    /// connection (see [`Pools::read`]).
    async fn read_once_more<T, F>(&self, send: impl Fn(Conn) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        match send(self.conn().await?).await {
            Err(e) if connection_lost(&e) => {
                tracing::debug!(error = %e, "a read lost its Redis connection; sent once more");
                send(self.conn().await?).await.map_err(unavailable)
            }
            result => result.map_err(unavailable),
        }
    }
}
