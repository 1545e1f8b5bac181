//! Several gateway instances on one store: [`Instance`] is what a test needs of one (its
//! address), for an in-process [`TestGateway`] and a `bffgate serve` child process alike;
//! [`ServedInstances`] starts real `bffgate serve` processes that share one store and the
//! same cookie key and signing key files, each on its own free port, each logging to a file.
#![allow(dead_code)]

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
};

use base64::Engine as _;
use bffgate::{
    config::{Config, RedisConfig, RedisMode},
    session::users::Users,
    store::Store,
};

use super::{cookie_key_bytes, free_port, process::ChildProcess, TestGateway, PASSWORD};

/// One gateway instance as the browser sees it: an address.
pub trait Instance {
    /// `http://<its address><path>`.
    fn url(&self, path: &str) -> String;
}

impl Instance for TestGateway {
    fn url(&self, path: &str) -> String {
        TestGateway::url(self, path)
    }
}

/// One `bffgate serve` process of [`ServedInstances`]; killed on drop.
pub struct Served {
    pub port: u16,
    /// Its standard error (the log), a file: a pipe nobody reads would stall it.
    pub log: PathBuf,
    process: ChildProcess,
}

impl Instance for Served {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Served {
    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).expect("the instance's log")
    }
}

/// `count` `bffgate serve` processes on the store `config.redis` names (its `[redis]`
/// section written to their configuration file), sharing a cookie key file (the tests' key,
/// so [`super::open_cookie`] opens their cookies) and a signing key file.
pub struct ServedInstances {
    pub instances: Vec<Served>,
    /// The store the instances share, opened by the test.
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl ServedInstances {
    /// Starts the processes, waits until each answers `/readyz`, and adds a user `email` with
    /// [`PASSWORD`] to the store.
    pub async fn start(count: usize, config: &Config, email: &str) -> Self {
        let redis = config.redis.as_ref().expect("a Redis store");
        let dir = tempfile::tempdir().expect("temp dir");
        let cookie_key = dir.path().join("cookie.key");
        std::fs::write(
            &cookie_key,
            base64::engine::general_purpose::STANDARD.encode(cookie_key_bytes()),
        )
        .expect("cookie key written");
        let signing_key = dir.path().join("ed25519.pem");
        std::fs::write(
            &signing_key,
            bffgate::tokens::pkcs8_pem(&bffgate::tokens::generate_ed25519_pkcs8().expect("key")),
        )
        .expect("signing key written");
        let store = bffgate::open_store(config).expect("the shared store");
        Users::new(Arc::clone(&store))
            .add(email, PASSWORD, vec!["tester".into()])
            .await
            .expect("user added");

        let mut instances = Vec::new();
        for i in 0..count {
            let port = free_port();
            let file = dir.path().join(format!("bffgate-{i}.toml"));
            let text = format!(
                "listen = \"127.0.0.1:{port}\"\nshutdown_timeout = \"2s\"\n\n\
                 [cookie]\nkey_file = \"{cookie}\"\n\n[jwt]\nsigning_key_file = \"{signing}\"\n\n\
                 {redis}",
                cookie = cookie_key.display(),
                signing = signing_key.display(),
                redis = redis_toml(redis),
            );
            std::fs::write(&file, text).expect("config written");
            let log = file.with_extension("log");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_bffgate"));
            cmd.arg("serve")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("BFFGATE_CONFIG", &file)
                .env("BFFGATE_LOG", "info")
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"));
            let process = ChildProcess::spawn(&mut cmd, &format!("bffgate serve #{i}"));
            instances.push(Served { port, log, process });
        }
        // Started together, then each waited for.
        for served in &mut instances {
            let ready = served.url("/readyz");
            served.process.wait_until_http_ok(&ready).await;
        }
        Self {
            instances,
            store,
            _dir: dir,
        }
    }

    /// Asserts that no instance has logged `event` (e.g. `refresh_token_reuse`), and that each
    /// has logged requests (so the logs are there to search).
    pub fn assert_no_event(&self, event: &str) {
        for (i, served) in self.instances.iter().enumerate() {
            let log = served.log_text();
            assert!(
                log.contains("/auth/"),
                "instance {i} logged no request: {log:.2000}"
            );
            let found: Vec<&str> = log.lines().filter(|l| l.contains(event)).collect();
            assert!(
                found.is_empty(),
                "instance {i} logged {event}: {:?}",
                &found[..found.len().min(5)]
            );
        }
    }
}

/// The `[redis]` section of a configuration file for `redis`.
fn redis_toml(redis: &RedisConfig) -> String {
    let mut text = String::from("[redis]\n");
    let quoted = |s: &str| format!("{s:?}");
    match redis.mode {
        RedisMode::Standalone => {
            text += &format!("url = {}\n", quoted(redis.url.expose()));
        }
        RedisMode::Sentinel | RedisMode::Cluster => {
            let mode = if redis.mode == RedisMode::Sentinel {
                "sentinel"
            } else {
                "cluster"
            };
            let nodes: Vec<String> = redis.nodes.iter().map(|n| quoted(n.expose())).collect();
            text += &format!("mode = \"{mode}\"\nnodes = [{}]\n", nodes.join(", "));
            if redis.mode == RedisMode::Sentinel {
                text += &format!("sentinel_master = {}\n", quoted(&redis.sentinel_master));
            }
        }
    }
    text += &format!("key_prefix = {}\n", quoted(&redis.key_prefix));
    text
}

impl<T: Instance> Instance for Arc<T> {
    fn url(&self, path: &str) -> String {
        T::url(self, path)
    }
}
