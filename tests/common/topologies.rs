//! Redis as production runs it, started by the test on free loopback ports and stopped with
//! it: a TLS server with a CA generated in the test and an ACL user ([`TlsRedis`]), a
//! primary with a replica watched by three sentinels ([`SentinelGroup`]), and a three-primary
//! Redis Cluster ([`RedisCluster`]). Each is ready (answers, replicates, agrees on its slots)
//! when its constructor returns; readiness is polled, never slept for.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use super::{
    fault::{Fault, FaultProxy},
    free_port,
    process::ChildProcess,
};
use bffgate::{
    config::{Redacted, RedisConfig, RedisMode},
    store::redis::{RedisStore, Topology},
};

/// The name the sentinels monitor the primary under.
pub const MASTER: &str = "mymaster";
/// The ACL user of the TLS server.
pub const ACL_USER: &str = "bffgate";

const PATIENCE: Duration = Duration::from_secs(30);

/// A `redis-server` (or sentinel) with `args`, on 127.0.0.1, without persistence, in `dir`.
fn spawn(dir: &Path, args: &[String], what: &str) -> ChildProcess {
    let mut cmd = Command::new("redis-server");
    cmd.args(args)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildProcess::spawn(&mut cmd, what)
}

/// One synchronous command to `client`, or `None` if it cannot be reached or refuses.
fn query<T: redis::FromRedisValue>(client: &redis::Client, cmd: &redis::Cmd) -> Option<T> {
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    cmd.query(&mut conn).ok()
}

fn client(url: &str) -> redis::Client {
    redis::Client::open(url).expect("redis url")
}

fn ping(url: &str) -> impl FnMut() -> bool + '_ {
    move || query::<String>(&client(url), &redis::cmd("PING")).is_some()
}

fn tcp_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

/// A server that speaks TLS only, with a certificate from a CA made for it, and an ACL user
/// (the default user is off).
pub struct TlsRedis {
    pub port: u16,
    pub password: String,
    /// The CA certificate, PEM, and where it is written.
    pub ca_pem: String,
    pub ca_file: PathBuf,
    dir: tempfile::TempDir,
    _process: ChildProcess,
}

impl TlsRedis {
    pub fn start() -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "redis test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("CA certificate");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("leaf params");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = leaf.signed_by(&key, &ca).expect("leaf certificate");
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).expect("CA written");
        std::fs::write(path("cert.pem"), cert.pem()).expect("cert written");
        std::fs::write(path("key.pem"), key.serialize_pem()).expect("key written");
        let port = free_port();
        let password = format!("pw-{}", bffgate::tokens::new_id().expect("id"));
        let arg = |p: PathBuf| p.to_string_lossy().into_owned();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &arg(path("cert.pem")),
            "--tls-key-file",
            &arg(path("key.pem")),
            "--tls-ca-cert-file",
            &arg(path("ca.pem")),
            "--tls-auth-clients",
            "no",
            "--user",
            "default",
            "off",
            "--user",
            ACL_USER,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut process = spawn(dir.path(), &args, "redis-server with TLS");
        let tls_client = tls_client(&tls_url(port, &password), &ca.pem());
        process.wait_until_ready_blocking(PATIENCE, || {
            query::<String>(&tls_client, &redis::cmd("PING")).is_some()
        });
        Self {
            port,
            password,
            ca_pem: ca.pem(),
            ca_file: path("ca.pem"),
            dir,
            _process: process,
        }
    }

    /// `rediss://bffgate:<password>@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        tls_url(self.port, &self.password)
    }

    /// A store on this server, trusting the test's CA.
    /// The gateway's `[redis]` section for this server: its `rediss://` URL with the ACL user
    /// and password, and the CA file.
    pub fn redis_config(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            url: Redacted::new(&self.url()),
            tls_ca_file: Some(self.ca_file.clone()),
            key_prefix: prefix.to_owned(),
            ..RedisConfig::default()
        }
    }

    pub fn store(&self, prefix: &str) -> RedisStore {
        let topology = Topology::Standalone { url: self.url() };
        RedisStore::open(
            &topology,
            Some(self.ca_pem.as_bytes()),
            prefix,
            8,
            Duration::from_secs(2),
        )
        .expect("TLS store")
    }
}

fn tls_url(port: u16, password: &str) -> String {
    format!("rediss://{ACL_USER}:{password}@127.0.0.1:{port}")
}

fn tls_client(url: &str, ca_pem: &str) -> redis::Client {
    redis::Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.as_bytes().to_vec()),
        },
    )
    .expect("TLS client")
}

/// A primary, its replica, and three sentinels that monitor it as [`MASTER`] (quorum 2,
/// down after 1 s).
pub struct SentinelGroup {
    pub primary_port: u16,
    pub replica_port: u16,
    pub sentinel_ports: Vec<u16>,
    primary: Option<ChildProcess>,
    _replica: ChildProcess,
    _sentinels: Vec<ChildProcess>,
    /// The replica's link to the primary, when it runs through a fault proxy.
    replica_link: Option<FaultProxy>,
    _dir: tempfile::TempDir,
}

impl SentinelGroup {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A group whose replica replicates through a [`FaultProxy`], so that a test can stop
    /// replication ([`SentinelGroup::stop_replication`]) and have the primary acknowledge
    /// writes the replica will never see: a replica that lags, made exact. Its sentinels wait
    /// 60 s (`failover-timeout`) before they would "fix" the replica's unusual primary address.
    pub fn start_with_replica_link_through_a_proxy() -> Self {
        Self::start_with(true)
    }

    /// From now on the replica receives nothing from the primary; what the primary
    /// acknowledges after this is lost if it dies.
    pub fn stop_replication(&self) {
        if let Some(link) = &self.replica_link {
            link.set(Fault::BlackHole);
        }
    }

    fn start_with(proxied_link: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).expect("dir");
            path
        };
        let primary_port = free_port();
        let mut primary = spawn(
            &sub("primary"),
            // The replica's first sync starts at once, not after the default 5 s.
            &[
                "--port".into(),
                primary_port.to_string(),
                "--repl-diskless-sync-delay".into(),
                "0".into(),
            ],
            "redis-server (primary)",
        );
        primary.wait_until_ready_blocking(PATIENCE, ping(&tcp_url(primary_port)));
        let replica_link =
            proxied_link.then(|| FaultProxy::start(([127, 0, 0, 1], primary_port).into()));
        let upstream_port = replica_link.as_ref().map_or(primary_port, |l| l.port);
        let failover_timeout = if proxied_link { 60_000 } else { 10_000 };
        let replica_port = free_port();
        let mut replica = spawn(
            &sub("replica"),
            &[
                "--port".into(),
                replica_port.to_string(),
                "--replicaof".into(),
                "127.0.0.1".into(),
                upstream_port.to_string(),
            ],
            "redis-server (replica)",
        );
        let replica_client = client(&tcp_url(replica_port));
        replica.wait_until_ready_blocking(PATIENCE, || {
            query::<String>(&replica_client, redis::cmd("INFO").arg("replication"))
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        let mut sentinel_ports = Vec::new();
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let sdir = sub(&format!("sentinel{i}"));
            // A sentinel rewrites its configuration file, so it gets one of its own.
            let conf = sdir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\n\
                     sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\n\
                     sentinel failover-timeout {MASTER} {failover_timeout}\n\
                     sentinel parallel-syncs {MASTER} 1\n"
                ),
            )
            .expect("sentinel.conf");
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf)
                .args(["--sentinel", "--daemonize", "no", "--loglevel", "warning"])
                .arg("--dir")
                .arg(&sdir)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            sentinels.push(ChildProcess::spawn(&mut cmd, "redis-server --sentinel"));
            sentinel_ports.push(port);
        }
        let group_ready = |port: &u16| {
            let c = client(&tcp_url(*port));
            move || {
                query::<Option<Vec<String>>>(
                    &c,
                    redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(MASTER),
                )
                .flatten()
                .is_some()
            }
        };
        for (sentinel, port) in sentinels.iter_mut().zip(&sentinel_ports) {
            sentinel.wait_until_ready_blocking(PATIENCE, group_ready(port));
        }
        Self {
            primary_port,
            replica_port,
            sentinel_ports,
            primary: Some(primary),
            _replica: replica,
            _sentinels: sentinels,
            replica_link,
            _dir: dir,
        }
    }

    /// Waits until every sentinel knows the replica and the two other sentinels (their
    /// hello messages go out every 2 s): only then can they agree on a failover.
    pub fn wait_until_failover_is_possible(&mut self) {
        for port in &self.sentinel_ports {
            let c = client(&tcp_url(*port));
            super::process::eventually_blocking(
                "the sentinels to know each other",
                PATIENCE,
                || {
                    let replicas = query::<Vec<redis::Value>>(
                        &c,
                        redis::cmd("SENTINEL").arg("replicas").arg(MASTER),
                    );
                    let others = query::<Vec<redis::Value>>(
                        &c,
                        redis::cmd("SENTINEL").arg("sentinels").arg(MASTER),
                    );
                    replicas.is_some_and(|r| r.len() == 1) && others.is_some_and(|s| s.len() == 2)
                },
            );
        }
    }

    /// The sentinels' addresses.
    pub fn nodes(&self) -> Vec<String> {
        self.sentinel_ports.iter().map(|p| tcp_url(*p)).collect()
    }

    pub fn topology(&self) -> Topology {
        Topology::Sentinel {
            sentinels: self.nodes(),
            master: MASTER.into(),
        }
    }

    pub fn redis_config(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            mode: RedisMode::Sentinel,
            nodes: self.nodes().iter().map(|n| Redacted::new(n)).collect(),
            sentinel_master: MASTER.into(),
            key_prefix: prefix.to_owned(),
            ..RedisConfig::default()
        }
    }

    pub fn store(&self, prefix: &str) -> RedisStore {
        RedisStore::open(&self.topology(), None, prefix, 8, Duration::from_secs(2))
            .expect("sentinel store")
    }

    /// The port of the server the first sentinel names as the primary now.
    pub fn current_primary_port(&self) -> Option<u16> {
        let addr: Option<Vec<String>> = query(
            &client(&tcp_url(self.sentinel_ports[0])),
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER),
        );
        addr?.get(1)?.parse().ok()
    }

    /// SIGSTOP to the primary: cut off, its connections open but silent.
    pub fn freeze_primary(&self) {
        if let Some(primary) = &self.primary {
            primary.signal("STOP");
        }
    }

    /// SIGCONT to a frozen primary.
    pub fn thaw_primary(&self) {
        if let Some(primary) = &self.primary {
            primary.signal("CONT");
        }
    }

    /// Waits until the sentinels have turned the old primary into a replica.
    pub fn wait_until_old_primary_is_a_replica(&self) {
        let c = client(&tcp_url(self.primary_port));
        super::process::eventually_blocking("the old primary to be a replica", PATIENCE, || {
            query::<String>(&c, redis::cmd("INFO").arg("replication"))
                .is_some_and(|info| info.contains("role:slave"))
        });
    }

    /// SIGKILL to the primary: it dies without a word to anyone.
    pub fn kill_primary(&mut self) {
        if let Some(mut primary) = self.primary.take() {
            primary.signal("KILL");
            primary.wait_for_exit(Duration::from_secs(10));
        }
    }
}

/// A Redis Cluster of three primaries, every slot assigned and agreed on; with a replica
/// each if asked ([`RedisCluster::start_with_replicas`]).
pub struct RedisCluster {
    /// Every node's port: the primaries first, then their replicas in the same order.
    pub ports: Vec<u16>,
    nodes: Vec<Option<ChildProcess>>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Three primaries, no replicas.
    pub fn start() -> Self {
        Self::start_nodes(false, 5000)
    }

    /// Three primaries and a replica of each; a node is failed after 1.5 s unreachable.
    pub fn start_with_replicas() -> Self {
        Self::start_nodes(true, 1500)
    }

    fn start_nodes(replicas: bool, node_timeout_ms: u64) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let count = if replicas { 6 } else { 3 };
        let mut ports = Vec::new();
        let mut bus_ports = Vec::new();
        let mut nodes = Vec::new();
        for _ in 0..count {
            let port = free_port();
            let bus = free_port();
            let ndir = dir.path().join(port.to_string());
            std::fs::create_dir(&ndir).expect("dir");
            // The bus port is set: port + 10000, the default, may be above 65535.
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-node-timeout",
                &node_timeout_ms.to_string(),
                "--repl-diskless-sync-delay",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut node = spawn(&ndir, &args, "redis-server (cluster node)");
            node.wait_until_ready_blocking(PATIENCE, ping(&tcp_url(port)));
            ports.push(port);
            bus_ports.push(bus);
            nodes.push(node);
        }
        // What `redis-cli --cluster create` does, without its one-second waits: a distinct
        // config epoch and a third of the slots for each primary, every node meets the
        // first, then each replica follows its primary.
        let clients: Vec<redis::Client> = ports.iter().map(|p| client(&tcp_url(*p))).collect();
        let cluster = |c: &redis::Client, args: &[String]| {
            let mut cmd = redis::cmd("CLUSTER");
            for arg in args {
                cmd.arg(arg);
            }
            query::<redis::Value>(c, &cmd)
                .unwrap_or_else(|| panic!("CLUSTER {} refused", args.join(" ")))
        };
        let per_node = 16384 / 3;
        for (i, c) in clients.iter().enumerate() {
            cluster(c, &["SET-CONFIG-EPOCH".into(), (i + 1).to_string()]);
            if i < 3 {
                let first = i * per_node;
                let last = if i == 2 { 16383 } else { first + per_node - 1 };
                cluster(
                    c,
                    &["ADDSLOTSRANGE".into(), first.to_string(), last.to_string()],
                );
            }
        }
        for (port, bus) in ports.iter().zip(&bus_ports).skip(1) {
            cluster(
                &clients[0],
                &[
                    "MEET".into(),
                    "127.0.0.1".into(),
                    port.to_string(),
                    bus.to_string(),
                ],
            );
        }
        let known = format!("cluster_known_nodes:{count}");
        for (node, port) in nodes.iter_mut().zip(&ports) {
            let c = client(&tcp_url(*port));
            node.wait_until_ready_blocking(PATIENCE, || {
                query::<String>(&c, redis::cmd("CLUSTER").arg("INFO"))
                    .is_some_and(|info| info.contains(&known))
            });
        }
        if replicas {
            for i in 0..3 {
                let id: String =
                    query(&clients[i], redis::cmd("CLUSTER").arg("MYID")).expect("CLUSTER MYID");
                cluster(&clients[i + 3], &["REPLICATE".into(), id]);
            }
            for (node, port) in nodes.iter_mut().zip(&ports).skip(3) {
                let c = client(&tcp_url(*port));
                node.wait_until_ready_blocking(PATIENCE, || {
                    query::<String>(&c, redis::cmd("INFO").arg("replication"))
                        .is_some_and(|info| info.contains("master_link_status:up"))
                });
            }
        }
        for (node, port) in nodes.iter_mut().zip(&ports) {
            let c = client(&tcp_url(*port));
            node.wait_until_ready_blocking(PATIENCE, || {
                query::<String>(&c, redis::cmd("CLUSTER").arg("INFO")).is_some_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                })
            });
        }
        Self {
            ports,
            nodes: nodes.into_iter().map(Some).collect(),
            _dir: dir,
        }
    }

    /// The port of the primary that holds `key` now (asked of every live node).
    pub fn primary_of(&self, key: &str) -> Option<u16> {
        self.ports
            .iter()
            .zip(&self.nodes)
            .filter(|(_, node)| node.is_some())
            .find_map(|(port, _)| {
                let c = client(&tcp_url(*port));
                let role: Vec<redis::Value> = query(&c, &redis::cmd("ROLE"))?;
                let is_primary =
                    matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
                let here: i64 = query(&c, redis::cmd("EXISTS").arg(key))?;
                (is_primary && here == 1).then_some(*port)
            })
    }

    /// SIGKILL to the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut node) = self.nodes[i].take() {
            node.signal("KILL");
            node.wait_for_exit(Duration::from_secs(10));
        }
    }

    pub fn nodes(&self) -> Vec<String> {
        self.ports.iter().map(|p| tcp_url(*p)).collect()
    }

    pub fn redis_config(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            mode: RedisMode::Cluster,
            nodes: self.nodes().iter().map(|n| Redacted::new(n)).collect(),
            key_prefix: prefix.to_owned(),
            ..RedisConfig::default()
        }
    }

    pub fn store(&self, prefix: &str) -> RedisStore {
        let topology = Topology::Cluster {
            nodes: self.nodes(),
        };
        RedisStore::open(&topology, None, prefix, 8, Duration::from_secs(2)).expect("cluster store")
    }
}
