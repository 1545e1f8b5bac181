//! The docker-compose stack, checked without a Docker engine: the compose file as Debian's
//! `docker-compose config` resolves it names only services, ports, binaries and settings that
//! exist, and the container's start command (`bffgate serve` with the mounted config and the
//! compose environment) serves a user whom the stack's `seed` command added. Its `sentinel`
//! profile runs two gateways on a Sentinel group: they share the keys and find the primary
//! through the profile's sentinels, and their start commands, on a Sentinel group the test
//! starts, serve one session between them.
//!
//! Needs `docker-compose` (`.ci/run` installs Debian's); without it these tests fail.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::common::{
    browser, cookie_header, free_port, raw_client, set_cookie_value, topologies::SentinelGroup,
    ChildProcess, TestRedis,
};
use bffgate::config::Config;
use bffgate::config::RedisMode;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bffgate");
const DEMO_API_BIN: &str = env!("CARGO_BIN_EXE_bffgate-demo-api");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `docker-compose config`: the compose file with variables resolved, as JSON.
fn compose() -> Value {
    let out = Command::new("docker-compose")
        .args([
            "--project-directory",
            ".",
            "-f",
            "docker-compose.yml",
            "config",
        ])
        .current_dir(root())
        .env_remove("BFFGATE_LOG")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker-compose ({e}); install it: apt-get install docker-compose")
        });
    assert!(
        out.status.success(),
        "docker-compose config refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::from_slice(&out.stdout).expect("docker-compose prints YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service["environment"]
        .as_object()
        .map(|env| {
            env.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The host file a service mounts at `target`.
fn mounted(service: &Value, target: &str) -> PathBuf {
    let volumes = service["volumes"].as_array().expect("volumes");
    let found = volumes
        .iter()
        .find_map(|v| {
            let spec = v.as_str().map(str::to_owned).unwrap_or_else(|| {
                format!(
                    "{}:{}",
                    v["source"].as_str().unwrap_or_default(),
                    v["target"].as_str().unwrap_or_default()
                )
            });
            let mut parts = spec.split(':');
            let source = parts.next()?;
            (parts.next()? == target).then(|| PathBuf::from(source))
        })
        .unwrap_or_else(|| panic!("nothing mounted at {target}"));
    if found.is_absolute() {
        found
    } else {
        root().join(found)
    }
}

/// Where the `gateway-keys` volume is mounted in the containers.
const KEYS_MOUNT: &str = "/keys";

/// The `keys` service's own command (shell, `$$` unescaped as compose does), with its volume
/// at `dir` on this machine.
fn keys_command(compose: &Value, dir: &Path) -> Vec<String> {
    let keys = service(compose, "keys");
    let mut command = strings(&keys["entrypoint"]);
    command.extend(strings(&keys["command"]).iter().map(|c| {
        c.replace("$$", "$")
            .replace(&format!("{KEYS_MOUNT}/"), &format!("{}/", dir.display()))
    }));
    command
}

/// Runs the `keys` service's command into a fresh directory standing for its volume.
fn generated_keys(compose: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let command = keys_command(compose, dir.path());
    let out = Command::new(&command[0])
        .args(&command[1..])
        .env("PATH", bin_path())
        .output()
        .expect("the keys command runs");
    assert!(
        out.status.success(),
        "keys failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// `PATH` with the built binaries first, as they are in the image.
fn bin_path() -> String {
    let bin_dir = Path::new(BIN).parent().expect("bin dir");
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A service's environment on this machine: the keys volume at `keys`.
fn environment_with_keys(service: &Value, keys: &Path) -> BTreeMap<String, String> {
    environment(service)
        .into_iter()
        .map(|(k, v)| {
            let v = v.replace(&format!("{KEYS_MOUNT}/"), &format!("{}/", keys.display()));
            (k, v)
        })
        .collect()
}

/// The configuration a service would load: its mounted file under its environment.
fn service_config(service: &Value, keys: &Path) -> Config {
    let env = environment_with_keys(service, keys);
    let file = mounted(service, &env["BFFGATE_CONFIG"]);
    Config::load_from(Some(&file), env)
        .unwrap_or_else(|e| panic!("{} with the compose environment: {e}", file.display()))
}

/// The value of `--name=value` in an argument list.
fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no --{name} in {args:?}"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// A compose service's environment for running its command on this machine: the mounted
/// configuration file at its host path, the generated keys in `keys`, `store`'s settings
/// (this test's Redis), the port `port`, the source tree's static files, this `PATH`.
fn local_environment(
    compose: &Value,
    name: &str,
    keys: &Path,
    store: &[(&str, String)],
    port: u16,
) -> BTreeMap<String, String> {
    let service = service(compose, name);
    let mut env = environment_with_keys(service, keys);
    let file = mounted(service, &env["BFFGATE_CONFIG"]);
    env.insert("BFFGATE_CONFIG".into(), file.display().to_string());
    for (key, value) in store {
        env.insert((*key).to_owned(), value.clone());
    }
    env.insert("BFFGATE_LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert(
        "BFFGATE_STATIC_DIR".into(),
        root().join("static").display().to_string(),
    );
    env.insert("PATH".into(), bin_path());
    env
}

/// Runs a seed service's own command (entrypoint and command, `$$` unescaped to `$` as
/// compose does) with `env`; it must succeed.
fn run_seed(seed: &Value, env: BTreeMap<String, String>) {
    let mut command = strings(&seed["entrypoint"]);
    command.extend(
        strings(&seed["command"])
            .iter()
            .map(|c| c.replace("$$", "$")),
    );
    let out = Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .envs(env)
        .output()
        .expect("seed runs");
    assert!(
        out.status.success(),
        "seed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a gateway service's command (`bffgate` and its arguments) with `env`.
fn start_gateway(gateway: &Value, env: BTreeMap<String, String>, what: &str) -> ChildProcess {
    let mut start = strings(&gateway["command"]);
    start.insert(0, BIN.to_owned());
    ChildProcess::spawn(
        Command::new(&start[0])
            .args(&start[1..])
            .env_clear()
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        what,
    )
}

#[test]
fn compose_file_names_only_services_ports_and_settings_that_exist() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    // The stack `docker compose up` starts: every service outside a profile.
    let names: Vec<&str> = services
        .iter()
        .filter(|(_, s)| strings(&s["profiles"]).is_empty())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(names, ["demo-api", "gateway", "keys", "redis", "seed"]);
    for (name, s) in services {
        if let Some(deps) = s["depends_on"].as_object() {
            for dep in deps.keys() {
                assert!(
                    services.contains_key(dep),
                    "{name} depends on unknown {dep}"
                );
            }
        }
    }

    // Redis keeps an append-only file and reports health; the gateway waits for it.
    let redis = service(&compose, "redis");
    let command = strings(&redis["command"]);
    assert!(command.windows(2).any(|w| w == ["--appendonly", "yes"]));
    assert!(redis["healthcheck"]["test"].is_array());
    let gateway = service(&compose, "gateway");
    assert_eq!(
        gateway["depends_on"]["redis"]["condition"],
        "service_healthy"
    );

    // The gateway waits for its keys, which the keys service makes once, and mounts them.
    assert_eq!(
        gateway["depends_on"]["keys"]["condition"],
        "service_completed_successfully"
    );
    mounted(service(&compose, "keys"), KEYS_MOUNT);
    mounted(gateway, KEYS_MOUNT);
    let keys = generated_keys(&compose);
    // Run again, it keeps the keys it made.
    let first = std::fs::read(keys.path().join("ed25519.pem")).expect("a signing key");
    let again = keys_command(&compose, keys.path());
    assert!(Command::new(&again[0])
        .args(&again[1..])
        .env("PATH", bin_path())
        .status()
        .expect("runs")
        .success());
    assert_eq!(
        std::fs::read(keys.path().join("ed25519.pem")).unwrap(),
        first
    );

    // The gateway: every variable is a setting, and it listens where the port is published;
    // with its Redis store it has the keys every instance must share.
    let config = service_config(gateway, keys.path());
    config
        .require_shared_keys()
        .expect("the stack's gateway may serve");
    let redis_url = config.redis.as_ref().expect("a Redis store").url.expose();
    assert_eq!(redis_url, "redis://redis:6379");
    let published = gateway["ports"][0]["target"]
        .as_u64()
        .or_else(|| {
            gateway["ports"][0]
                .as_str()
                .and_then(|p| p.split('/').next())
                .map(|p| u64::from(port_of(p)))
        })
        .expect("a published port");
    assert_eq!(u64::from(port_of(&config.listen)), published);
    assert!(
        config.listen.starts_with("0.0.0.0:"),
        "reachable from outside the container"
    );

    // Each route reaches a service of the stack on the port that service listens on.
    let demo_api = service(&compose, "demo-api");
    let api_args = strings(&demo_api["command"]);
    assert_eq!(
        strings(&demo_api["entrypoint"]),
        [Path::new(DEMO_API_BIN)
            .file_name()
            .expect("name")
            .to_string_lossy()]
    );
    for route in &config.routes {
        let upstream = url::Url::parse(&route.upstream).expect("upstream URL");
        assert_eq!(upstream.host_str(), Some("demo-api"), "{}", route.prefix);
        assert_eq!(
            upstream.port(),
            Some(port_of(flag(&api_args, "listen"))),
            "{}",
            route.prefix
        );
    }
    assert!(!config.routes.is_empty());
    // The demo API fetches the gateway's keys from the gateway service.
    let jwks = url::Url::parse(flag(&api_args, "jwks-url")).expect("JWKS URL");
    assert_eq!(jwks.host_str(), Some("gateway"));
    assert_eq!(jwks.port().map(u64::from), Some(published));
    assert_eq!(flag(&api_args, "issuer"), config.jwt.issuer);
    assert_eq!(flag(&api_args, "audience"), config.jwt.audience);
    // The demo API accepts exactly those flags.
    let help = Command::new(DEMO_API_BIN)
        .arg("--help")
        .output()
        .expect("demo API runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in &api_args {
        let name = arg.split('=').next().unwrap_or_default();
        assert!(help.contains(name), "bffgate-demo-api has no {name}");
    }

    // The seed service loads the same configuration.
    service_config(service(&compose, "seed"), keys.path());
}

#[test]
fn the_image_starts_bffgate_serve_with_the_mounted_config() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let line = |directive: &str| {
        dockerfile
            .lines()
            .rfind(|l| l.starts_with(directive))
            .unwrap_or_else(|| panic!("no {directive} in the Dockerfile"))
            .to_owned()
    };
    assert_eq!(line("ENTRYPOINT "), r#"ENTRYPOINT ["bffgate"]"#);
    assert_eq!(line("CMD "), r#"CMD ["serve"]"#);
    assert_eq!(line("USER "), "USER bffgate");
    assert!(dockerfile.contains("FROM debian:bookworm-slim"));
    // Every file the image copies from the build context exists.
    for l in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = l.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                root().join(source).exists(),
                "the Dockerfile copies missing {source}"
            );
        }
    }
    let compose = compose();
    assert_eq!(strings(&service(&compose, "gateway")["command"]), ["serve"]);
    let env = environment(service(&compose, "gateway"));
    let mounted_at = &env["BFFGATE_CONFIG"];
    assert!(
        dockerfile.contains(&format!("ENV BFFGATE_CONFIG={mounted_at}")),
        "the image and the compose file agree on where the config lives"
    );
}

#[actix_web::test]
async fn the_compose_start_command_serves_a_seeded_user() {
    let compose = compose();
    let redis = TestRedis::new();
    let port = free_port();
    let keys = generated_keys(&compose);
    let store = [
        ("BFFGATE_REDIS__URL", redis.url.clone()),
        ("BFFGATE_REDIS__KEY_PREFIX", redis.prefix.clone()),
    ];
    let env_of = |name: &str| local_environment(&compose, name, keys.path(), &store, port);

    // The seed service's own command, twice: it adds the user, then finds it there.
    let seed = service(&compose, "seed");
    for _ in 0..2 {
        run_seed(seed, env_of("seed"));
    }
    let seed_env = environment(seed);

    let gateway = service(&compose, "gateway");
    assert_eq!(strings(&gateway["command"]), ["serve"]);
    let mut serve = start_gateway(gateway, env_of("gateway"), "bffgate serve");
    let base = format!("http://127.0.0.1:{port}");
    serve.wait_until_http_ok(&format!("{base}/readyz")).await;
    let client = browser();
    let res = client
        .post(format!("{base}/auth/login"))
        .json(&serde_json::json!({
            "email": seed_env["DEMO_EMAIL"],
            "password": seed_env["DEMO_PASSWORD"],
        }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let session: Value = client
        .get(format!("{base}/auth/session"))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("JSON");
    assert_eq!(session["user"]["email"], seed_env["DEMO_EMAIL"]);
    assert_eq!(session["user"]["roles"], serde_json::json!(["demo"]));
    let page = client.get(format!("{base}/")).send().await.expect("app");
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
}

/// The services of the `sentinel` profile.
const SENTINEL_PROFILE: [&str; 8] = [
    "redis-primary",
    "redis-replica",
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
    "sentinel-gateway-1",
    "sentinel-gateway-2",
    "sentinel-seed",
];
const SENTINEL_GATEWAYS: [&str; 2] = ["sentinel-gateway-1", "sentinel-gateway-2"];
const SENTINELS: [&str; 3] = ["sentinel-1", "sentinel-2", "sentinel-3"];

/// The host port a service publishes first (`127.0.0.1:HOST:CONTAINER`).
fn published_host_port(service: &Value) -> u16 {
    let port = &service["ports"][0];
    port["published"]
        .as_u64()
        .map(|p| p as u16)
        .or_else(|| {
            let spec = port.as_str()?.split('/').next()?;
            let parts: Vec<&str> = spec.split(':').collect();
            parts.get(parts.len().checked_sub(2)?)?.parse().ok()
        })
        .expect("a published port")
}

/// A sentinel's configuration lines, as its command writes them (`'…'` or `"…"` arguments of
/// its `printf`, `$$NAME` from its environment).
fn sentinel_lines(service: &Value) -> Vec<String> {
    let env = environment(service);
    let script = strings(&service["command"]).join(" ");
    let mut lines = Vec::new();
    let mut rest = script.as_str();
    while let Some(start) = rest.find(['\'', '"']) {
        let quote = rest[start..].chars().next().expect("a quote");
        let after = &rest[start + 1..];
        let end = after.find(quote).expect("a closing quote");
        let mut line = after[..end].to_owned();
        for (k, v) in &env {
            line = line.replace(&format!("$${k}"), v);
        }
        lines.push(line);
        rest = &after[end + 1..];
    }
    lines
}

#[test]
fn the_sentinel_profile_runs_two_gateways_on_one_sentinel_group_with_the_shared_keys() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    let profiled: Vec<&str> = services
        .iter()
        .filter(|(_, s)| strings(&s["profiles"]).contains(&"sentinel".to_owned()))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(profiled, SENTINEL_PROFILE);
    // The default stack needs nothing of the profile.
    for (name, s) in services {
        if strings(&s["profiles"]).is_empty() {
            if let Some(deps) = s["depends_on"].as_object() {
                for dep in deps.keys() {
                    assert!(
                        !SENTINEL_PROFILE.contains(&dep.as_str()),
                        "{name} depends on {dep}, which runs only with --profile sentinel"
                    );
                }
            }
        }
    }

    // The replica follows the primary, and both announce their service names.
    let primary = service(&compose, "redis-primary");
    let replica = service(&compose, "redis-replica");
    assert!(strings(&primary["command"])
        .windows(2)
        .any(|w| w == ["--replica-announce-ip", "redis-primary"]));
    let replica_command = strings(&replica["command"]);
    assert!(replica_command
        .windows(3)
        .any(|w| w == ["--replicaof", "redis-primary", "6379"]));
    assert!(replica_command
        .windows(2)
        .any(|w| w == ["--replica-announce-ip", "redis-replica"]));

    // Three sentinels watch the primary by name, with hostnames on, each announcing its own.
    let mut master = None;
    for name in SENTINELS {
        let lines = sentinel_lines(service(&compose, name));
        for line in [
            "port 26379",
            "sentinel resolve-hostnames yes",
            "sentinel announce-hostnames yes",
            &format!("sentinel announce-ip {name}"),
        ] {
            assert!(lines.iter().any(|l| l == line), "{name} lacks `{line}`");
        }
        // Hostnames must be on before the monitor line names one.
        let resolve = lines.iter().position(|l| l.contains("resolve-hostnames"));
        let monitor_at = lines
            .iter()
            .position(|l| l.starts_with("sentinel monitor "))
            .unwrap_or_else(|| panic!("{name} monitors nothing"));
        assert!(resolve < Some(monitor_at));
        let monitor: Vec<&str> = lines[monitor_at].split_whitespace().collect();
        assert_eq!(monitor[3..], ["redis-primary", "6379", "2"], "{name}");
        assert!(master.is_none_or(|m| m == monitor[2]), "one master name");
        master = Some(monitor[2].to_owned());
        assert_eq!(
            service(&compose, name)["depends_on"]["redis-primary"]["condition"],
            "service_healthy"
        );
    }
    let master = master.expect("a master name");

    // The two gateways: their own published ports, the same keys as the stack's gateway,
    // the sentinels as nodes and the monitored name.
    let keys = generated_keys(&compose);
    let key_files = |s: &Value| {
        let env = environment(s);
        (
            env["BFFGATE_COOKIE__KEY_FILE"].clone(),
            env["BFFGATE_JWT__SIGNING_KEY_FILE"].clone(),
        )
    };
    let shared = key_files(service(&compose, "gateway"));
    let mut published = Vec::new();
    for name in SENTINEL_GATEWAYS {
        let gateway = service(&compose, name);
        assert_eq!(strings(&gateway["command"]), ["serve"]);
        assert_eq!(key_files(gateway), shared, "{name} shares the stack's keys");
        mounted(gateway, KEYS_MOUNT);
        assert_eq!(
            gateway["depends_on"]["keys"]["condition"],
            "service_completed_successfully"
        );
        for sentinel in SENTINELS {
            assert_eq!(
                gateway["depends_on"][sentinel]["condition"], "service_healthy",
                "{name} waits for {sentinel}"
            );
        }
        let env = environment(gateway);
        assert_eq!(env["BFFGATE_REDIS__MODE"], "sentinel");
        let config = service_config(gateway, keys.path());
        config
            .require_shared_keys()
            .unwrap_or_else(|e| panic!("{name} may not serve: {e}"));
        let redis = config.redis.as_ref().expect("a Redis store");
        assert_eq!(redis.mode, RedisMode::Sentinel);
        assert_eq!(redis.sentinel_master, master);
        let nodes: Vec<(String, u16)> = redis
            .nodes
            .iter()
            .map(|n| {
                let url = url::Url::parse(n.expose()).expect("a node URL");
                (
                    url.host_str().expect("a host").to_owned(),
                    url.port().expect("a port"),
                )
            })
            .collect();
        let sentinels: Vec<(String, u16)> =
            SENTINELS.iter().map(|s| (s.to_string(), 26379)).collect();
        assert_eq!(nodes, sentinels, "{name} asks the profile's sentinels");
        let host_port = published_host_port(gateway);
        assert_eq!(
            config.public_origin,
            format!("http://localhost:{host_port}"),
            "{name}: browsers open it where it is published"
        );
        assert!(config.listen.starts_with("0.0.0.0:"));
        published.push(host_port);
    }
    assert_ne!(published[0], published[1], "two gateways, two ports");
    assert!(!published.contains(&published_host_port(service(&compose, "gateway"))));

    // The profile's seed adds the demo user to the Sentinel group's store.
    let seed = service(&compose, "sentinel-seed");
    let config = service_config(seed, keys.path());
    let redis = config.redis.expect("a Redis store");
    assert_eq!(redis.mode, RedisMode::Sentinel);
    assert_eq!(redis.sentinel_master, master);
    assert_eq!(
        strings(&seed["command"]),
        strings(&service(&compose, "seed")["command"]),
        "the stack's seed script"
    );
}

#[actix_web::test]
async fn the_sentinel_gateways_start_commands_share_sessions_on_a_sentinel_group() {
    let compose = compose();
    let mut group = SentinelGroup::start();
    group.wait_until_failover_is_possible();
    let keys = generated_keys(&compose);
    let prefix = format!("t{}:", bffgate::tokens::new_id().expect("id"));
    // The sentinels of the test's group (same master name).
    let store = [
        ("BFFGATE_REDIS__NODES", group.nodes().join(",")),
        ("BFFGATE_REDIS__KEY_PREFIX", prefix),
    ];
    let env_of =
        |name: &str, port: u16| local_environment(&compose, name, keys.path(), &store, port);

    let seed = service(&compose, "sentinel-seed");
    run_seed(seed, env_of("sentinel-seed", free_port()));
    let seed_env = environment(seed);

    let mut bases = Vec::new();
    let mut processes = Vec::new();
    for name in SENTINEL_GATEWAYS {
        let port = free_port();
        let gateway = service(&compose, name);
        processes.push(start_gateway(gateway, env_of(name, port), name));
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for (process, base) in processes.iter_mut().zip(&bases) {
        process.wait_until_http_ok(&format!("{base}/readyz")).await;
    }

    // Signed in on one, signed in on the other; signed out on the other, out on the first.
    let client = raw_client();
    let res = client
        .post(format!("{}/auth/login", bases[0]))
        .header("x-csrf", "1")
        .json(&serde_json::json!({
            "email": seed_env["DEMO_EMAIL"],
            "password": seed_env["DEMO_PASSWORD"],
        }))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 200);
    let cookie = cookie_header(&set_cookie_value(&res));
    let session = |base: &str| {
        client
            .get(format!("{base}/auth/session"))
            .header("x-csrf", "1")
            .header("cookie", cookie.clone())
            .send()
    };
    let res = session(&bases[1]).await.expect("session");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    assert_eq!(body["user"]["email"], seed_env["DEMO_EMAIL"]);
    let res = client
        .post(format!("{}/auth/logout", bases[1]))
        .header("x-csrf", "1")
        .header("cookie", cookie.clone())
        .send()
        .await
        .expect("logout");
    assert!(res.status().is_success(), "logout: {}", res.status());
    assert_eq!(session(&bases[0]).await.expect("session").status(), 401);
}
