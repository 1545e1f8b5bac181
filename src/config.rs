//! Configuration: defaults ← TOML file ← `BFFGATE_<SECTION>__<KEY>` environment variables
//! (or `BFFGATE_<SECTION>__<KEY>_FILE`, naming a file that holds the value).
//!
//! Owns parsing, validation and reading the files that hold secrets (`cookie.key_file`,
//! `redis.password_file`, `_FILE` variables), all while loading, so that a loaded `Config`
//! holds its secrets and nothing else reads a secret file; it builds nothing. The one
//! exception is the `[tls]` pair: checked here (through `tls`), it is read again by the
//! listener at start and on SIGHUP, so that a renewed certificate needs no restart. Unknown keys
//! are an error that names the key, durations are human-readable (`5m`, `14d`), secrets
//! have a redacting `Debug` and serialise as `[redacted]` (a secret file as its path).

use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// Environment variables with the `BFFGATE_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["BFFGATE_CONFIG", "BFFGATE_LOG", "BFFGATE_LOG_FORMAT"];

/// The suffix of a variable that names a file holding the value (`BFFGATE_REDIS__URL_FILE`).
const FILE_SUFFIX: &str = "_FILE";

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: String,
    /// The origin browsers load the app from; a foreign `Origin` header is refused.
    pub public_origin: String,
    /// CIDRs of the proxies (load balancers) in front of the gateway. Only when the peer is
    /// one of them are its `X-Forwarded-For` / `Forwarded`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` believed. Empty: the peer is the client.
    pub trusted_proxies: Vec<String>,
    /// The shared store. Absent: the embedded memory store (one instance, lost on restart).
    pub redis: Option<RedisConfig>,
    /// The HTTPS listener. Absent: plain HTTP (localhost, or behind a proxy that ends TLS).
    pub tls: Option<TlsConfig>,
    pub cookie: CookieConfig,
    pub session: SessionConfig,
    pub jwt: JwtConfig,
    pub password: PasswordConfig,
    /// Directory of the browser app, served for paths no route claims.
    pub static_dir: PathBuf,
    /// Upstream APIs, matched by longest path prefix.
    pub routes: Vec<RouteConfig>,
    pub throttle: ThrottleConfig,
    pub metrics: MetricsConfig,
    /// On SIGTERM/SIGINT: stop accepting, then give in-flight requests this long.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The gateway's own endpoints read a request body within this, counted from its head
    /// (408 after it), as actix bounds the head itself; proxied routes stream uploads and
    /// are bound by their route's `timeout` instead.
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
    /// OpenID providers users may sign in with, beside passwords (`[[identity_providers]]`).
    pub identity_providers: Vec<IdentityProviderConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_origin: "http://localhost:8080".into(),
            trusted_proxies: Vec::new(),
            redis: None,
            tls: None,
            cookie: CookieConfig::default(),
            session: SessionConfig::default(),
            jwt: JwtConfig::default(),
            password: PasswordConfig::default(),
            static_dir: PathBuf::from("static"),
            routes: Vec::new(),
            throttle: ThrottleConfig::default(),
            metrics: MetricsConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            request_body_timeout: Duration::from_secs(10),
            identity_providers: Vec::new(),
        }
    }
}

/// How a route authenticates browser requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A live session is required; without one the answer is 401.
    Required,
    /// A live session adds a token; anonymous requests pass without one.
    Optional,
    /// No token and no session lookup.
    None,
}

/// One upstream API behind a path prefix.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched on whole segments (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub prefix: String,
    /// Base URL of the upstream, http or https; its path is prepended.
    pub upstream: String,
    /// Remove the prefix from the path sent upstream.
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default = "default_auth")]
    pub auth: AuthMode,
    /// Require `X-CSRF: 1` (routes that use the session only). `false` drops only this
    /// requirement: cross-site unsafe requests stay refused on every cookie route.
    #[serde(default = "default_true")]
    pub csrf: bool,
    /// Bound on connecting and receiving the upstream's response head.
    #[serde(default = "default_route_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Browser cookies (by name) forwarded upstream; all others, and always the gateway's
    /// own cookie, are removed.
    #[serde(default)]
    pub forward_cookies: Vec<String>,
}

fn default_auth() -> AuthMode {
    AuthMode::Required
}

fn default_true() -> bool {
    true
}

fn default_route_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Paths the gateway answers itself; no route may claim them.
const RESERVED_PREFIXES: &[&str] = &[
    "/auth",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// Each route, then that no two share a prefix.
fn validate_routes(routes: &[RouteConfig]) -> Result<(), ConfigError> {
    let mut prefixes = std::collections::HashSet::new();
    for (i, route) in routes.iter().enumerate() {
        route.validate(i)?;
        if !prefixes.insert(route.prefix.as_str()) {
            return Err(ConfigError::Invalid {
                key: "routes",
                problem: format!("[{i}]: duplicate prefix {:?}", route.prefix),
            });
        }
    }
    Ok(())
}

impl RouteConfig {
    /// Checks the route at `index` of `routes`; the message names both.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key: &'static str = "routes";
        let at = |problem: String| ConfigError::Invalid {
            key,
            problem: format!("[{index}] (prefix {:?}): {problem}", self.prefix),
        };
        if !self.prefix.starts_with('/') {
            return Err(at("prefix must start with '/'".into()));
        }
        if self.prefix.len() > 1 && self.prefix.ends_with('/') {
            return Err(at("prefix must not end with '/'".into()));
        }
        if self
            .prefix
            .split('/')
            .any(|seg| seg == "." || seg == ".." || seg.contains('%') || seg.contains(';'))
            || self.prefix.contains("//")
        {
            return Err(at(
                "prefix must be a plain path without dot segments or escapes".into(),
            ));
        }
        if RESERVED_PREFIXES
            .iter()
            .any(|r| self.prefix == *r || self.prefix.starts_with(&format!("{r}/")))
        {
            return Err(at(
                "prefix is reserved for the gateway's own endpoints".into()
            ));
        }
        let url = url::Url::parse(&self.upstream).map_err(|e| {
            at(format!(
                "upstream {:?} must be an http:// or https:// URL with a host ({e})",
                self.upstream
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(at(format!(
                "upstream {:?} must be an http:// or https:// URL with a host",
                self.upstream
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(at("upstream must not have a query or fragment".into()));
        }
        if self.timeout.is_zero() {
            return Err(at("timeout must be more than 0s".into()));
        }
        Ok(())
    }
}

/// How the gateway reaches Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `url`.
    #[default]
    Standalone,
    /// The primary the sentinels at `nodes` name `sentinel_master`.
    Sentinel,
    /// A Redis Cluster, discovered from the seed nodes at `nodes`.
    Cluster,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// standalone, sentinel or cluster.
    pub mode: RedisMode,
    /// Standalone: `redis://[user[:password]@]host[:port][/db]`, `rediss://…` (TLS) or
    /// `unix:///path/to/redis.sock[?db=N]`. Connect with [`RedisConfig::connection_url`],
    /// which adds the password from `password_file`.
    pub url: Redacted,
    /// Cluster: the seed nodes; sentinel: the sentinels' addresses (`redis://` or
    /// `rediss://`, credentials as in `url`). Connect with [`RedisConfig::node_urls`].
    pub nodes: Vec<Redacted>,
    /// Sentinel: the name the sentinels monitor the primary under.
    pub sentinel_master: String,
    /// A file holding the password for `url` (whose user, if any, is an ACL user); `url`
    /// must then carry no password itself. In cluster and sentinel mode, the password of
    /// every node.
    pub password_file: Option<SecretFile>,
    /// A PEM file of the CA that signed the servers' certificates (`rediss://`); the system
    /// roots when unset.
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key the gateway writes.
    pub key_prefix: String,
    /// Connections in each worker thread's pool.
    pub pool_size: usize,
    /// Bound on connecting, waiting for a pooled connection, and each command.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Keep each family's liveness in memory while Redis reports every change to it
    /// (RESP3 client tracking); `false`: ask Redis on every request.
    pub track_liveness: bool,
}

impl RedisConfig {
    /// Checks the URLs' schemes for the mode, that the password file fits them, and the
    /// pool's bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.mode {
            RedisMode::Standalone => {
                let url = self.url.expose();
                if !["redis://", "rediss://", "unix://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    return Err(ConfigError::invalid(
                        "redis.url",
                        "must start with redis://, rediss:// or unix://",
                    ));
                }
                self.connection_url()?;
            }
            RedisMode::Sentinel | RedisMode::Cluster => {
                if self.nodes.is_empty() {
                    return Err(ConfigError::invalid(
                        "redis.nodes",
                        format!("must name at least one node in {} mode", self.mode_name()),
                    ));
                }
                if self.nodes.iter().any(|node| {
                    !(node.expose().starts_with("redis://")
                        || node.expose().starts_with("rediss://"))
                }) {
                    return Err(ConfigError::invalid(
                        "redis.nodes",
                        "each node must start with redis:// or rediss://",
                    ));
                }
                if self.mode == RedisMode::Sentinel && self.sentinel_master.is_empty() {
                    return Err(ConfigError::invalid(
                        "redis.sentinel_master",
                        "must name the monitored primary in sentinel mode",
                    ));
                }
                self.node_urls()?;
            }
        }
        if self.pool_size == 0 {
            return Err(ConfigError::invalid(
                "redis.pool_size",
                "must be at least 1",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "redis.timeout",
                "must be more than 0s",
            ));
        }
        Ok(())
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            RedisMode::Standalone => "standalone",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }

    /// The node URLs to connect with (cluster seeds or sentinels), each with the password
    /// from `password_file` added as [`RedisConfig::connection_url`] adds it to `url`.
    pub fn node_urls(&self) -> Result<Vec<Redacted>, ConfigError> {
        self.nodes
            .iter()
            .map(|node| with_password_file(node, self.password_file.as_ref(), "redis.nodes"))
            .collect()
    }

    /// The URL to connect with: `url`, with the password from `password_file` (if set)
    /// added where the redis crate reads it — percent-encoded into the user-info of a
    /// `redis://` URL, after its ACL user if it names one, or as the `pass` parameter of a
    /// `unix://` URL.
    pub fn connection_url(&self) -> Result<Redacted, ConfigError> {
        with_password_file(&self.url, self.password_file.as_ref(), "redis.url")
    }
}

/// `url` (named `key` in errors) with the password from `file`, if set, added where the
/// redis crate reads it.
fn with_password_file(
    url: &Redacted,
    file: Option<&SecretFile>,
    key: &'static str,
) -> Result<Redacted, ConfigError> {
    let Some(file) = file else {
        return Ok(url.clone());
    };
    let password = file.secret("redis.password_file")?.expose();
    if password.is_empty() {
        return Err(ConfigError::invalid(
            "redis.password_file",
            format!("{} is empty", file.path().display()),
        ));
    }
    // The parse error describes the problem, never the (secret-bearing) input.
    let mut url = url::Url::parse(url.expose())
        .map_err(|e| ConfigError::invalid(key, format!("is not a URL: {e}")))?;
    let carries_password = if url.scheme() == "unix" {
        url.query_pairs().any(|(name, _)| name == "pass")
    } else {
        url.password().is_some()
    };
    if carries_password {
        return Err(ConfigError::invalid(
            "redis.password_file",
            format!("cannot be set when {key} carries a password"),
        ));
    }
    if url.scheme() == "unix" {
        url.query_pairs_mut().append_pair("pass", password);
    } else {
        // `set_password` leaves `%` as it is; encoding everything first makes the
        // password arrive byte for byte (the redis crate percent-decodes it).
        let encoded = utf8_percent_encode(password, NON_ALPHANUMERIC).to_string();
        url.set_password(Some(&encoded))
            .map_err(|()| ConfigError::invalid(key, "must name a host"))?;
    }
    Ok(Redacted::from(String::from(url)))
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: Redacted::new("redis://127.0.0.1:6379"),
            nodes: Vec::new(),
            sentinel_master: String::new(),
            password_file: None,
            tls_ca_file: None,
            key_prefix: "bffgate:".into(),
            pool_size: 16,
            timeout: Duration::from_secs(2),
            track_liveness: true,
        }
    }
}

/// The certificate and key the listener serves HTTPS with (HTTP/2 and HTTP/1.1).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain: the gateway's certificate first, then intermediates.
    pub cert_file: PathBuf,
    /// PEM private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// Reads both files and checks that the key is the certificate's; the serving side
    /// reads them again at start and on SIGHUP.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::tls::load(&self.cert_file, &self.key_file)
            .map(drop)
            .map_err(|e| ConfigError::invalid(e.key(), e.problem()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    Strict,
    Lax,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    /// Cookie name; with `secure = true` it should carry the `__Host-` prefix.
    pub name: Option<String>,
    /// Base64 of 64 random bytes. Absent (and no `key_file`): a random key per start
    /// (sessions die on restart).
    pub key: Option<Redacted>,
    /// A file holding `key` instead; setting both is an error.
    pub key_file: Option<SecretFile>,
    pub secure: bool,
    pub same_site: SameSite,
    /// Earlier cookie keys (base64, 64 bytes each): cookies sealed with them still open and
    /// are re-sealed with `key` on the response. Keep one for `session.idle_timeout`.
    pub previous_keys: Vec<Redacted>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: None,
            key: None,
            key_file: None,
            secure: true,
            same_site: SameSite::Strict,
            previous_keys: Vec::new(),
        }
    }
}

impl CookieConfig {
    /// The effective cookie name: the configured one, else `__Host-bff` (or `bff` when not
    /// `Secure`, since browsers refuse `__Host-` cookies without `Secure`).
    pub fn effective_name(&self) -> String {
        match (&self.name, self.secure) {
            (Some(name), _) => name.clone(),
            (None, true) => "__Host-bff".into(),
            (None, false) => "bff".into(),
        }
    }

    /// Checks the keys and that browsers will accept the cookie's name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.key_bytes()?;
        self.previous_key_bytes()?;
        let name = self.effective_name();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(ConfigError::invalid(
                "cookie.name",
                "must be non-empty and use only letters, digits, '-' and '_'",
            ));
        }
        if name.starts_with("__Host-") && !self.secure {
            return Err(ConfigError::invalid(
                "cookie.name",
                "a __Host- cookie requires cookie.secure = true",
            ));
        }
        Ok(())
    }

    /// The decoded 64-byte key, if one is configured (as `key` or in `key_file`).
    pub fn key_bytes(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        match (&self.key, &self.key_file) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "cookie.key_file",
                "cannot be set together with cookie.key",
            )),
            (Some(key), None) => decode_cookie_key("cookie.key", key).map(Some),
            (None, Some(file)) => {
                decode_cookie_key("cookie.key_file", file.secret("cookie.key_file")?).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// The decoded earlier keys, in configured order.
    pub fn previous_key_bytes(&self) -> Result<Vec<Vec<u8>>, ConfigError> {
        self.previous_keys
            .iter()
            .map(|key| decode_cookie_key("cookie.previous_keys", key))
            .collect()
    }
}

fn decode_cookie_key(name: &'static str, key: &Redacted) -> Result<Vec<u8>, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.expose().trim())
        .map_err(|_| ConfigError::invalid(name, "is not valid base64"))?;
    if bytes.len() != 64 {
        return Err(ConfigError::invalid(
            name,
            format!("must decode to 64 bytes, got {}", bytes.len()),
        ));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Lifetime of an access JWT.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Refresh when the access token expires within this.
    #[serde(with = "humantime_serde")]
    pub refresh_before: Duration,
    /// A session unused (not rotated) for this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active.
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// A replay of the just-rotated refresh token within this window gets the same successor.
    #[serde(with = "humantime_serde")]
    pub reuse_grace: Duration,
    /// How often an open stream (WebSocket, server-sent events) asks the store whether its
    /// session is still live: the bound on how long it outlives a revocation made by another
    /// instance (revocations on this instance end it at once).
    #[serde(with = "humantime_serde")]
    pub stream_recheck: Duration,
    /// Streams one session may hold open at once; more are refused with 429.
    pub max_streams: usize,
}

impl SessionConfig {
    /// Checks that the lifetimes nest: refresh within the access TTL, idle within the
    /// maximum, the grace window within idle.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.access_ttl.is_zero() {
            return Err(ConfigError::invalid(
                "session.access_ttl",
                "must be more than 0s",
            ));
        }
        if self.refresh_before >= self.access_ttl {
            return Err(ConfigError::invalid(
                "session.refresh_before",
                "must be shorter than session.access_ttl",
            ));
        }
        if self.idle_timeout.is_zero() || self.idle_timeout > self.max_lifetime {
            return Err(ConfigError::invalid(
                "session.idle_timeout",
                "must be more than 0s and at most session.max_lifetime",
            ));
        }
        if self.reuse_grace > self.idle_timeout {
            return Err(ConfigError::invalid(
                "session.reuse_grace",
                "must be at most session.idle_timeout",
            ));
        }
        if self.stream_recheck.is_zero() {
            return Err(ConfigError::invalid(
                "session.stream_recheck",
                "must be more than 0s",
            ));
        }
        if self.max_streams == 0 {
            return Err(ConfigError::invalid(
                "session.max_streams",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(5 * 60),
            refresh_before: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(14 * 24 * 3600),
            max_lifetime: Duration::from_secs(30 * 24 * 3600),
            reuse_grace: Duration::from_secs(30),
            stream_recheck: Duration::from_secs(10),
            max_streams: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    /// PKCS#8 PEM Ed25519 private key. Absent: generated per start.
    pub signing_key_file: Option<PathBuf>,
    /// Earlier signing key files: never used to sign, published in the JWKS so that tokens
    /// they signed stay verifiable. Remove one once `session.access_ttl` has passed since
    /// every instance switched to the new key.
    pub previous_keys: Vec<PathBuf>,
}

impl JwtConfig {
    /// Checks the claims; key files are read (and checked) when the signer is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(ConfigError::invalid("jwt.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(ConfigError::invalid("jwt.audience", "must not be empty"));
        }
        Ok(())
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: "bffgate".into(),
            audience: "api".into(),
            signing_key_file: None,
            previous_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Argon2 verifications running at once; more wait. 0: one per CPU core.
    pub max_concurrent: usize,
}

/// Login throttling, counted in the store so that it holds across instances.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleConfig {
    pub enabled: bool,
    /// Login attempts for one email from one client address before delays start (a success
    /// clears the count).
    pub free_attempts: u32,
    /// Login attempts from one client address (any email) before delays start.
    pub ip_free_attempts: u32,
    /// Login attempts for one email from any address before delays start: slows credential
    /// stuffing from many addresses; its delays, like all, never exceed `max_delay`.
    pub account_free_attempts: u32,
    /// The first delay; each further attempt after one doubles it.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Failures are forgotten after this long without one.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl ThrottleConfig {
    /// Checks that delays are positive and ordered and that failures are kept a while.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, free) in [
            ("throttle.free_attempts", self.free_attempts),
            ("throttle.ip_free_attempts", self.ip_free_attempts),
            ("throttle.account_free_attempts", self.account_free_attempts),
        ] {
            if free == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.base_delay.is_zero() || self.base_delay > self.max_delay {
            return Err(ConfigError::invalid(
                "throttle.base_delay",
                "must be more than 0s and at most throttle.max_delay",
            ));
        }
        if self.window.is_zero() {
            return Err(ConfigError::invalid(
                "throttle.window",
                "must be more than 0s",
            ));
        }
        Ok(())
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            free_attempts: 5,
            ip_free_attempts: 50,
            account_free_attempts: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            window: Duration::from_secs(15 * 60),
        }
    }
}

/// Prometheus metrics at `GET /metrics`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Serve `/metrics` on this address (private: operators' network only).
    pub listen: Option<String>,
    /// Also serve `/metrics` on the gateway's public listener. Off by default: metrics are
    /// for operators, not for anyone who can reach the gateway.
    pub public: bool,
}

impl MetricsConfig {
    /// Checks that a separate listener is an IP:port address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = &self.listen {
            addr.parse::<SocketAddr>().map_err(|_| {
                ConfigError::invalid(
                    "metrics.listen",
                    format!("{addr:?} is not an IP:port address"),
                )
            })?;
        }
        Ok(())
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
            public: false,
        }
    }
}

/// One OpenID provider (`[[identity_providers]]`): the gateway is its confidential client
/// (authorization code + PKCE), and a signed-in identity opens an ordinary bffgate session.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// Short name in paths (`/auth/oidc/<id>/…`) and in user links: 1 to 32 of `a-z 0-9 - _`.
    pub id: String,
    /// What the sign-in button says ("Sign in with …"); `id` when unset.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The issuer; its `/.well-known/openid-configuration` is read on first use. https, or
    /// http on a loopback host (development and tests).
    pub issuer: String,
    pub client_id: String,
    /// A file holding the client secret; unset for a public client (PKCE alone).
    #[serde(default)]
    pub client_secret_file: Option<SecretFile>,
    /// Scopes asked for; must include `openid`.
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// An unknown identity whose email the provider marked verified is linked to the existing
    /// user with that email. Off: a taken email refuses the sign-in.
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// An identity that is neither linked nor linkable creates a user. Off: it is refused.
    #[serde(default = "default_true")]
    pub create_users: bool,
    /// A claim of the ID token (a string or a list of strings) copied into a new user's roles.
    #[serde(default)]
    pub roles_claim: Option<String>,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

impl IdentityProviderConfig {
    /// The label of the sign-in button.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.id)
    }

    /// The client secret read from `client_secret_file`, if one is configured.
    pub fn client_secret(&self) -> Result<Option<&Redacted>, ConfigError> {
        self.client_secret_file
            .as_ref()
            .map(|file| file.secret("identity_providers.client_secret_file"))
            .transpose()
    }

    /// Checks the provider at `index`; the message names both.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let at = |problem: String| ConfigError::Invalid {
            key: "identity_providers",
            problem: format!("[{index}] (id {:?}): {problem}", self.id),
        };
        if self.id.is_empty()
            || self.id.len() > 32
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
        {
            return Err(at("id must be 1 to 32 of a-z, 0-9, '-' and '_'".into()));
        }
        if self.display_name.as_deref().is_some_and(|name| {
            name.trim().is_empty()
                || name.chars().count() > 64
                || name.chars().any(char::is_control)
        }) {
            return Err(at(
                "display_name must be 1 to 64 printable characters".into()
            ));
        }
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| at(format!("issuer {:?} is not a URL ({e})", self.issuer)))?;
        let loopback = match issuer.host() {
            Some(url::Host::Domain(host)) => host == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if !(issuer.scheme() == "https" || issuer.scheme() == "http" && loopback) {
            return Err(at(
                "issuer must be an https:// URL (http:// only on a loopback host)".into(),
            ));
        }
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(at("issuer must not have a query or fragment".into()));
        }
        if self.client_id.is_empty() {
            return Err(at("client_id must not be empty".into()));
        }
        if !self.scopes.iter().any(|scope| scope == "openid") {
            return Err(at("scopes must include \"openid\"".into()));
        }
        if self
            .scopes
            .iter()
            .any(|scope| scope.is_empty() || scope.contains(|c: char| c == ' ' || c.is_control()))
        {
            return Err(at("each scope must be one non-empty word".into()));
        }
        if let Some(secret) = self.client_secret()? {
            if secret.expose().is_empty() {
                return Err(at("client_secret_file is empty".into()));
            }
        }
        Ok(())
    }
}

/// Each provider, then that no two share an id.
fn validate_identity_providers(providers: &[IdentityProviderConfig]) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    for (i, provider) in providers.iter().enumerate() {
        provider.validate(i)?;
        if !ids.insert(provider.id.as_str()) {
            return Err(ConfigError::Invalid {
                key: "identity_providers",
                problem: format!("[{i}]: duplicate id {:?}", provider.id),
            });
        }
    }
    Ok(())
}

/// A string secret whose `Debug` and serialised form never show the value.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Redacted(SecretString);

impl Redacted {
    pub fn new(value: &str) -> Self {
        Self(SecretString::from(value))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<String> for Redacted {
    fn from(value: String) -> Self {
        Self(SecretString::from(value))
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Redacted {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

/// A file that holds a secret (container secrets are files): its path, and the secret once
/// [`Config::load`] has read it. Configured and serialised as the path; `Debug` shows the
/// path and never the secret.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(from = "PathBuf", into = "PathBuf")]
pub struct SecretFile {
    path: PathBuf,
    secret: Option<Redacted>,
}

impl SecretFile {
    /// The file at `path`, read now (a configuration built in code rather than loaded);
    /// `key` names the setting in the error.
    pub fn load(path: impl Into<PathBuf>, key: &'static str) -> Result<Self, ConfigError> {
        let mut file = Self::from(path.into());
        file.read(key)?;
        Ok(file)
    }

    /// Where the secret is read from (not secret: `config check` prints it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the secret; `key` names the setting in the error.
    fn read(&mut self, key: &'static str) -> Result<(), ConfigError> {
        let secret = read_secret(&self.path).map_err(|e| {
            ConfigError::invalid(key, format!("cannot read {}: {e}", self.path.display()))
        })?;
        self.secret = Some(Redacted::from(secret));
        Ok(())
    }

    /// The secret read at load; `key` names the setting in the error.
    fn secret(&self, key: &'static str) -> Result<&Redacted, ConfigError> {
        self.secret.as_ref().ok_or_else(|| {
            ConfigError::invalid(
                key,
                format!(
                    "names {}, which was not read (Config::load reads it)",
                    self.path.display()
                ),
            )
        })
    }
}

impl From<PathBuf> for SecretFile {
    fn from(path: PathBuf) -> Self {
        Self { path, secret: None }
    }
}

impl From<SecretFile> for PathBuf {
    fn from(file: SecretFile) -> Self {
        file.path
    }
}

/// A secret file's contents without the trailing newline that `echo` and editors add.
fn read_secret(path: &Path) -> std::io::Result<String> {
    let mut text = std::fs::read_to_string(path)?;
    text.truncate(text.trim_end_matches(['\n', '\r']).len());
    Ok(text)
}

/// Why a configuration could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl ConfigError {
    fn invalid(key: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Loads defaults ← the TOML file (if any) ← `BFFGATE_*` environment variables, then
    /// validates.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, env)
    }

    /// Like [`Config::load`], with the environment given (tests).
    pub fn load_from(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} not found",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        let overrides = env_overrides(env)?;
        builder = builder.add_source(
            config::Environment::with_prefix("BFFGATE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("cookie.previous_keys")
                .with_list_parse_key("trusted_proxies")
                .with_list_parse_key("jwt.previous_keys")
                .with_list_parse_key("redis.nodes")
                .source(Some(overrides)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut config: Config = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        config.read_secret_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the secret files the configuration names, so that the rest of the gateway
    /// finds every secret in the `Config`.
    fn read_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(file) = &mut self.cookie.key_file {
            file.read("cookie.key_file")?;
        }
        if let Some(file) = self.redis.as_mut().and_then(|r| r.password_file.as_mut()) {
            file.read("redis.password_file")?;
        }
        for provider in &mut self.identity_providers {
            if let Some(file) = &mut provider.client_secret_file {
                file.read("identity_providers.client_secret_file")?;
            }
        }
        Ok(())
    }

    /// Checks what serde cannot: each section's values and formats. The sections check
    /// themselves; no check today spans two sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.trusted_proxy_nets()?;
        if self.request_body_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "request_body_timeout",
                "must be more than 0s",
            ));
        }
        self.cookie.validate()?;
        self.metrics.validate()?;
        self.throttle.validate()?;
        self.validate_public_origin()?;
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        self.session.validate()?;
        self.jwt.validate()?;
        validate_routes(&self.routes)?;
        validate_identity_providers(&self.identity_providers)
    }

    fn validate_public_origin(&self) -> Result<(), ConfigError> {
        let origin = url::Url::parse(&self.public_origin)
            .map_err(|e| ConfigError::invalid("public_origin", format!("is not a URL: {e}")))?;
        if !matches!(origin.scheme(), "http" | "https") || origin.host_str().is_none() {
            return Err(ConfigError::invalid(
                "public_origin",
                "must be an http(s) origin such as https://app.example.com",
            ));
        }
        Ok(())
    }

    /// Every key an environment variable can set, dotted (`redis.url`): the leaves of the
    /// serialised defaults, with `[redis]` and `[tls]` filled in since they are absent by
    /// default.
    fn settable_keys() -> HashSet<String> {
        fn leaves(prefix: &str, value: &serde_json::Value, keys: &mut HashSet<String>) {
            match value {
                serde_json::Value::Object(fields) => {
                    for (name, value) in fields {
                        let key = match prefix {
                            "" => name.clone(),
                            _ => format!("{prefix}.{name}"),
                        };
                        leaves(&key, value, keys);
                    }
                }
                _ => {
                    keys.insert(prefix.to_owned());
                }
            }
        }
        let all = Config {
            redis: Some(RedisConfig::default()),
            tls: Some(TlsConfig::default()),
            ..Config::default()
        };
        let mut keys = HashSet::new();
        // Serialising plain defaults cannot fail; if it did, no `_FILE` variable would be
        // read and each would be refused as an unknown key.
        if let Ok(value) = serde_json::to_value(&all) {
            leaves("", &value, &mut keys);
        }
        keys
    }

    /// Keys every instance must share: with a `[redis]` store, requests of one session reach
    /// any instance, so a cookie key or signing key generated per start would log users out
    /// (and upstreams would refuse tokens of other instances). The memory store and `demo`
    /// are one instance and keep generated keys. Checked by `serve` and `config check`.
    pub fn require_shared_keys(&self) -> Result<(), ConfigError> {
        if self.redis.is_none() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.cookie.key.is_none() && self.cookie.key_file.is_none() {
            missing.push("cookie.key (or cookie.key_file)");
        }
        if self.jwt.signing_key_file.is_none() {
            missing.push("jwt.signing_key_file");
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            key: "redis",
            problem: format!(
                "is a store that several instances share, so {} must be set: keys generated per \
                 start would log users out when a request reaches another instance (`bffgate \
                 keys generate` makes both)",
                missing.join(" and ")
            ),
        })
    }

    /// The parsed `trusted_proxies` (a bare address is a /32 or /128).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|text| {
                let text = text.trim();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::invalid(
                            "trusted_proxies",
                            format!("{text:?} is not a CIDR such as 10.0.0.0/8 or an address"),
                        )
                    })
            })
            .collect()
    }

    /// The parsed `listen` address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::invalid("listen", "must be an address like 127.0.0.1:8080"))
    }

    /// `public_origin` as browsers send it in `Origin` (scheme://host[:port], no path).
    pub fn origin(&self) -> String {
        url::Url::parse(&self.public_origin)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_else(|_| self.public_origin.clone())
    }
}

/// The configuration key a `BFFGATE_` variable sets, as the config crate reads it:
/// `BFFGATE_REDIS__URL` → `redis.url`.
fn env_key(var: &str) -> String {
    var.strip_prefix("BFFGATE_")
        .unwrap_or(var)
        .to_lowercase()
        .replace("__", ".")
}

/// `BFFGATE_REDIS__URL` for `BFFGATE_REDIS__URL_FILE`, in whatever case the suffix is.
fn strip_file_suffix(var: &str) -> Option<&str> {
    let cut = var.len().checked_sub(FILE_SUFFIX.len())?;
    var.get(cut..)?
        .eq_ignore_ascii_case(FILE_SUFFIX)
        .then(|| &var[..cut])
}

/// The `BFFGATE_*` variables that set configuration keys, with each `BFFGATE_<KEY>_FILE`
/// replaced by `BFFGATE_<KEY>` holding that file's contents (without a trailing newline).
/// A variable that is a key itself stays as it is (`BFFGATE_COOKIE__KEY_FILE` is
/// `cookie.key_file`, read at load like a `_FILE` variable), and so does a `_FILE`
/// variable for no key: deserialising then refuses it by name.
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<config::Map<String, String>, ConfigError> {
    let settable = Config::settable_keys();
    let mut overrides = config::Map::new();
    let mut from_files = Vec::new();
    for (var, value) in env {
        if !var.starts_with("BFFGATE_")
            || NON_CONFIG_ENV.contains(&var.as_str())
            || var.starts_with("BFFGATE_TEST_")
        {
            continue;
        }
        let target = strip_file_suffix(&var)
            .filter(|target| {
                !settable.contains(&env_key(&var)) && settable.contains(&env_key(target))
            })
            .map(str::to_owned);
        match target {
            Some(target) => from_files.push((var, target, value)),
            None => {
                overrides.insert(var, value);
            }
        }
    }
    for (file_var, var, path) in from_files {
        let key = env_key(&var);
        if let Some(other) = overrides.keys().find(|other| env_key(other) == key) {
            return Err(ConfigError::Load(format!(
                "{file_var} and {other} both set {key}; keep one"
            )));
        }
        // The message names the variable and the path, never what the file holds.
        let value = read_secret(Path::new(&path))
            .map_err(|e| ConfigError::Load(format!("{file_var}: cannot read {path}: {e}")))?;
        overrides.insert(var, value);
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.session.access_ttl, Duration::from_secs(300));
        assert_eq!(c.cookie.effective_name(), "__Host-bff");
        assert!(c.redis.is_none());
    }

    #[test]
    fn durations_are_human_readable_and_env_overrides_file() {
        let f = toml_file("[session]\nidle_timeout = \"14d\"\naccess_ttl = \"2m\"\n");
        let c = Config::load_from(
            Some(f.path()),
            env(&[
                ("BFFGATE_SESSION__ACCESS_TTL", "3m"),
                ("BFFGATE_CONFIG", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.session.idle_timeout, Duration::from_secs(14 * 86400));
        assert_eq!(c.session.access_ttl, Duration::from_secs(180));
    }

    #[test]
    fn previous_keys_come_from_comma_separated_environment_variables() {
        let b64 = |fill: u8| base64::engine::general_purpose::STANDARD.encode([fill; 64]);
        let c = Config::load_from(
            None,
            env(&[
                ("BFFGATE_COOKIE__KEY", &b64(1)),
                (
                    "BFFGATE_COOKIE__PREVIOUS_KEYS",
                    &format!("{},{}", b64(2), b64(3)),
                ),
                ("BFFGATE_JWT__PREVIOUS_KEYS", "old.pem,older.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.cookie.previous_key_bytes().unwrap(),
            vec![vec![2; 64], vec![3; 64]]
        );
        assert_eq!(
            c.jwt.previous_keys,
            vec![PathBuf::from("old.pem"), PathBuf::from("older.pem")]
        );
        let err = Config::load_from(None, env(&[("BFFGATE_COOKIE__PREVIOUS_KEYS", "c2hvcnQ=")]))
            .unwrap_err();
        assert!(err.to_string().contains("cookie.previous_keys"), "{err}");
    }

    #[test]
    fn throttle_delays_are_checked() {
        let err = Config::load_from(
            None,
            env(&[
                ("BFFGATE_THROTTLE__BASE_DELAY", "1m"),
                ("BFFGATE_THROTTLE__MAX_DELAY", "10s"),
            ]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("throttle.base_delay"), "{err}");
        let err =
            Config::load_from(None, env(&[("BFFGATE_METRICS__LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("metrics.listen"), "{err}");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let f = toml_file("[session]\nidle_timeot = \"1d\"\n");
        let err = Config::load_from(Some(f.path()), env(&[])).unwrap_err();
        assert!(err.to_string().contains("idle_timeot"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        let err =
            Config::load_from(None, env(&[("BFFGATE_REDIS__URLL", "redis://x")])).unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn short_cookie_key_is_rejected_with_its_key() {
        let err = Config::load_from(None, env(&[("BFFGATE_COOKIE__KEY", "c2hvcnQ=")])).unwrap_err();
        assert!(err.to_string().contains("cookie.key"), "{err}");
    }

    #[test]
    fn insecure_cookie_drops_host_prefix() {
        let c = Config::load_from(None, env(&[("BFFGATE_COOKIE__SECURE", "false")])).unwrap();
        assert_eq!(c.cookie.effective_name(), "bff");
    }

    #[test]
    fn refresh_before_must_be_below_access_ttl() {
        let err = Config::load_from(None, env(&[("BFFGATE_SESSION__REFRESH_BEFORE", "10m")]))
            .unwrap_err();
        assert!(err.to_string().contains("session.refresh_before"), "{err}");
    }

    #[test]
    fn routes_are_parsed_with_defaults() {
        let f = toml_file(
            "[[routes]]\nprefix = \"/api\"\nupstream = \"http://127.0.0.1:9001\"\n\n[[routes]]\nprefix = \"/pub\"\nupstream = \"https://example.com/base\"\nauth = \"none\"\ncsrf = false\ntimeout = \"2s\"\n",
        );
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].auth, AuthMode::Required);
        assert!(c.routes[0].csrf && !c.routes[0].strip_prefix);
        assert_eq!(c.routes[0].timeout, Duration::from_secs(30));
        assert_eq!(c.routes[1].auth, AuthMode::None);
    }

    #[test]
    fn bad_routes_are_rejected_with_a_clear_message() {
        let cases = [
            (
                "prefix = \"api\"\nupstream = \"http://x\"",
                "must start with '/'",
            ),
            (
                "prefix = \"/api\"\nupstream = \"127.0.0.1:9001\"",
                "http:// or https://",
            ),
            ("prefix = \"/auth\"\nupstream = \"http://x\"", "reserved"),
            (
                "prefix = \"/api/\"\nupstream = \"http://x\"",
                "must not end",
            ),
            (
                "prefix = \"/a/../b\"\nupstream = \"http://x\"",
                "dot segments",
            ),
            (
                "prefix = \"/api\"\nupstream = \"http://x\"\nauth = \"maybe\"",
                "maybe",
            ),
            (
                "prefix = \"/api\"\nupstream = \"http://x\"\ncsrff = true",
                "csrff",
            ),
        ];
        for (route, expected) in cases {
            let f = toml_file(&format!("[[routes]]\n{route}\n"));
            let err = Config::load_from(Some(f.path()), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{route}: {err}");
        }
        let dup = toml_file("[[routes]]\nprefix = \"/api\"\nupstream = \"http://a\"\n[[routes]]\nprefix = \"/api\"\nupstream = \"http://b\"\n");
        let err = Config::load_from(Some(dup.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate prefix"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let c = Config::load_from(None, env(&[("BFFGATE_COOKIE__KEY", &key)])).unwrap();
        assert!(!format!("{c:?}").contains(&key));
        assert!(format!("{c:?}").contains("[redacted]"));
    }

    fn secret_file(dir: &tempfile::TempDir, name: &str, contents: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    fn b64(fill: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([fill; 64])
    }

    /// What `bffgate config check` prints.
    fn serialised(config: &Config) -> String {
        serde_json::to_string_pretty(config).unwrap()
    }

    #[test]
    fn cookie_key_comes_from_key_file_and_shows_only_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = b64(4);
        let path = secret_file(&dir, "cookie_key", &format!("{key}\n"));
        let f = toml_file(&format!("[cookie]\nkey_file = {path:?}\n"));
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        assert_eq!(c.cookie.key_bytes().unwrap(), Some(vec![4; 64]));
        for shown in [format!("{c:?}"), serialised(&c)] {
            assert!(!shown.contains(&key), "{shown}");
            assert!(shown.contains("cookie_key"), "the path is shown: {shown}");
        }
    }

    #[test]
    fn cookie_key_file_from_the_environment_is_the_key_file_setting() {
        let dir = tempfile::tempdir().unwrap();
        let key = b64(5);
        let path = secret_file(&dir, "cookie_key", &key);
        let c = Config::load_from(None, env(&[("BFFGATE_COOKIE__KEY_FILE", &path)])).unwrap();
        assert_eq!(c.cookie.key_file.as_ref().unwrap().path(), Path::new(&path));
        assert_eq!(c.cookie.key_bytes().unwrap(), Some(vec![5; 64]));
        assert!(c.cookie.key.is_none());
        assert!(!format!("{c:?}").contains(&key) && !serialised(&c).contains(&key));
    }

    #[test]
    fn cookie_key_and_key_file_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "cookie_key", &b64(6));
        let f = toml_file(&format!("[cookie]\nkey = {:?}\n", b64(7)));
        let err = Config::load_from(Some(f.path()), env(&[("BFFGATE_COOKIE__KEY_FILE", &path)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cookie.key_file") && err.contains("cookie.key"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_key_in_a_key_file_names_the_setting_not_the_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "cookie_key", "c2hvcnQ=\n");
        let err = Config::load_from(None, env(&[("BFFGATE_COOKIE__KEY_FILE", &path)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cookie.key_file"), "{err}");
        assert!(!err.contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn redis_password_file_is_inserted_into_the_url_after_the_acl_user() {
        let dir = tempfile::tempdir().unwrap();
        // Characters that must be percent-encoded, `%` among them.
        let password = "p@ss:w/rd%41 é";
        let path = secret_file(&dir, "redis_password", &format!("{password}\n"));
        let f = toml_file(&format!(
            "[redis]\nurl = \"redis://bffgate@redis.internal:6380/2\"\npassword_file = {path:?}\n"
        ));
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        let redis = c.redis.as_ref().unwrap();
        assert_eq!(redis.url.expose(), "redis://bffgate@redis.internal:6380/2");
        let url = redis.connection_url().unwrap();
        assert!(
            url.expose().starts_with("redis://bffgate:")
                && url.expose().ends_with("@redis.internal:6380/2"),
            "{}",
            url.expose()
        );
        // The redis crate reads back exactly the file's password and the ACL user.
        let info = redis::IntoConnectionInfo::into_connection_info(url.expose()).unwrap();
        assert_eq!(info.redis_settings().password(), Some(password));
        assert_eq!(info.redis_settings().username(), Some("bffgate"));
        for shown in [format!("{c:?}"), format!("{url:?}"), serialised(&c)] {
            assert!(
                !shown.contains("p@ss") && !shown.contains("p%40ss"),
                "{shown}"
            );
        }
        assert!(serialised(&c).contains("redis_password"));
    }

    #[test]
    fn redis_password_file_without_a_user_and_for_a_unix_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "redis_password", "s3cret&x=1\n");
        let url_with = |url: &str| {
            Config::load_from(
                None,
                env(&[
                    ("BFFGATE_REDIS__URL", url),
                    ("BFFGATE_REDIS__PASSWORD_FILE", &path),
                ]),
            )
            .unwrap()
            .redis
            .unwrap()
            .connection_url()
            .unwrap()
        };
        let tcp = url_with("redis://127.0.0.1:6379");
        let info = redis::IntoConnectionInfo::into_connection_info(tcp.expose()).unwrap();
        assert_eq!(info.redis_settings().password(), Some("s3cret&x=1"));
        assert_eq!(info.redis_settings().username(), None);
        let unix = url_with("unix:///run/redis.sock?db=1");
        let info = redis::IntoConnectionInfo::into_connection_info(unix.expose()).unwrap();
        assert_eq!(info.redis_settings().password(), Some("s3cret&x=1"));
        assert_eq!(info.redis_settings().db(), 1);
    }

    #[test]
    fn redis_password_file_is_refused_when_the_url_carries_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "redis_password", "other");
        for url in [
            "redis://user:hunter2@127.0.0.1:6379",
            "redis://:hunter2@127.0.0.1:6379",
            "unix:///run/redis.sock?pass=hunter2",
        ] {
            let err = Config::load_from(
                None,
                env(&[
                    ("BFFGATE_REDIS__URL", url),
                    ("BFFGATE_REDIS__PASSWORD_FILE", &path),
                ]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("redis.password_file"), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let empty = secret_file(&dir, "empty", "\n");
        let err = Config::load_from(None, env(&[("BFFGATE_REDIS__PASSWORD_FILE", &empty)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.password_file") && err.contains("empty"),
            "{err}"
        );
    }

    #[test]
    fn redis_accepts_tls_urls_and_the_cluster_and_sentinel_modes() {
        let c = Config::load_from(
            None,
            env(&[(
                "BFFGATE_REDIS__URL",
                "rediss://bffgate@redis.internal:6380/0",
            )]),
        )
        .unwrap();
        assert_eq!(c.redis.unwrap().mode, RedisMode::Standalone);

        let c = Config::load_from(
            None,
            env(&[
                ("BFFGATE_REDIS__MODE", "cluster"),
                ("BFFGATE_REDIS__NODES", "redis://a:7000,redis://b:7000"),
            ]),
        )
        .unwrap();
        let redis = c.redis.unwrap();
        assert_eq!(redis.mode, RedisMode::Cluster);
        let nodes: Vec<String> = redis
            .node_urls()
            .unwrap()
            .iter()
            .map(|n| n.expose().to_owned())
            .collect();
        assert_eq!(nodes, ["redis://a:7000", "redis://b:7000"]);

        let f = toml_file(
            "[redis]\nmode = \"sentinel\"\nnodes = [\"redis://s1:26379\", \"rediss://s2:26379\"]\n\
             sentinel_master = \"mymaster\"\ntls_ca_file = \"/etc/ca.pem\"\n",
        );
        let c = Config::load_from(Some(f.path()), env(&[])).unwrap();
        let redis = c.redis.unwrap();
        assert_eq!(redis.mode, RedisMode::Sentinel);
        assert_eq!(redis.sentinel_master, "mymaster");
        assert_eq!(redis.nodes.len(), 2);
        assert_eq!(redis.tls_ca_file, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn redis_validation_names_the_key_that_is_missing_for_the_mode() {
        let err =
            |vars: &[(&str, &str)]| Config::load_from(None, env(vars)).unwrap_err().to_string();
        let e = err(&[("BFFGATE_REDIS__MODE", "cluster")]);
        assert!(e.contains("redis.nodes"), "{e}");
        let e = err(&[
            ("BFFGATE_REDIS__MODE", "sentinel"),
            ("BFFGATE_REDIS__NODES", "redis://s1:26379"),
        ]);
        assert!(e.contains("redis.sentinel_master"), "{e}");
        let e = err(&[
            ("BFFGATE_REDIS__MODE", "cluster"),
            ("BFFGATE_REDIS__NODES", "http://a:7000"),
        ]);
        assert!(e.contains("redis.nodes"), "{e}");
        let e = err(&[("BFFGATE_REDIS__URL", "http://127.0.0.1:6379")]);
        assert!(e.contains("redis.url") && e.contains("rediss://"), "{e}");
        let e = err(&[("BFFGATE_REDIS__MODE", "replicated")]);
        assert!(e.contains("replicated"), "{e}");
    }

    #[test]
    fn redis_password_file_is_added_to_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "redis_password", "s3cret\n");
        let c = Config::load_from(
            None,
            env(&[
                ("BFFGATE_REDIS__MODE", "cluster"),
                (
                    "BFFGATE_REDIS__NODES",
                    "redis://bffgate@a:7000,redis://bffgate@b:7000",
                ),
                ("BFFGATE_REDIS__PASSWORD_FILE", &path),
            ]),
        )
        .unwrap();
        for url in c.redis.unwrap().node_urls().unwrap() {
            let info = redis::IntoConnectionInfo::into_connection_info(url.expose()).unwrap();
            assert_eq!(info.redis_settings().password(), Some("s3cret"));
            assert_eq!(info.redis_settings().username(), Some("bffgate"));
        }
    }

    #[test]
    fn a_url_without_a_password_file_connects_as_configured() {
        let c = Config::load_from(
            None,
            env(&[("BFFGATE_REDIS__URL", "redis://:hunter2@127.0.0.1:6379")]),
        )
        .unwrap();
        let redis = c.redis.unwrap();
        assert_eq!(
            redis.connection_url().unwrap().expose(),
            "redis://:hunter2@127.0.0.1:6379"
        );
    }

    #[test]
    fn file_variables_set_the_key_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let url = "redis://:hunter2@redis.internal:6379";
        let url_path = secret_file(&dir, "redis_url", &format!("{url}\r\n"));
        let origin_path = secret_file(&dir, "origin", "https://app.example.com\n");
        let c = Config::load_from(
            None,
            env(&[
                ("BFFGATE_REDIS__URL_FILE", &url_path),
                ("BFFGATE_PUBLIC_ORIGIN_FILE", &origin_path),
            ]),
        )
        .unwrap();
        let redis = c.redis.as_ref().expect("the variable creates [redis]");
        assert_eq!(redis.url.expose(), url);
        assert_eq!(redis.connection_url().unwrap().expose(), url);
        assert_eq!(c.public_origin, "https://app.example.com");
        for shown in [format!("{c:?}"), serialised(&c)] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn file_variables_for_lists_are_split_like_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "previous", &format!("{},{}\n", b64(2), b64(3)));
        let c =
            Config::load_from(None, env(&[("BFFGATE_COOKIE__PREVIOUS_KEYS_FILE", &path)])).unwrap();
        assert_eq!(
            c.cookie.previous_key_bytes().unwrap(),
            vec![vec![2; 64], vec![3; 64]]
        );
    }

    #[test]
    fn an_unreadable_file_variable_names_the_variable_and_path() {
        let err = Config::load_from(
            None,
            env(&[("BFFGATE_REDIS__URL_FILE", "/nonexistent/redis_url")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("BFFGATE_REDIS__URL_FILE") && err.contains("/nonexistent/redis_url"),
            "{err}"
        );
        let err = Config::load_from(
            None,
            env(&[("BFFGATE_COOKIE__KEY_FILE", "/nonexistent/cookie_key")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cookie.key_file") && err.contains("/nonexistent/cookie_key"),
            "{err}"
        );
        let f = toml_file("[redis]\npassword_file = \"/nonexistent/redis_password\"\n");
        let err = Config::load_from(Some(f.path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.password_file") && err.contains("/nonexistent/redis_password"),
            "{err}"
        );
    }

    #[test]
    fn a_file_variable_never_shows_its_contents_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "redis_url", "http://:hunter2@redis.internal:6379\n");
        let err = Config::load_from(None, env(&[("BFFGATE_REDIS__URL_FILE", &path)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_file_variable_for_an_unknown_key_is_named() {
        let err = Config::load_from(None, env(&[("BFFGATE_REDIS__URLL_FILE", "/nonexistent")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("urll_file"), "{err}");
    }

    #[test]
    fn a_key_set_both_directly_and_from_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = secret_file(&dir, "redis_url", "redis://redis.internal:6379");
        let err = Config::load_from(
            None,
            env(&[
                ("BFFGATE_REDIS__URL_FILE", &path),
                ("BFFGATE_REDIS__URL", "redis://127.0.0.1:6379"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("BFFGATE_REDIS__URL_FILE") && err.contains("BFFGATE_REDIS__URL "),
            "{err}"
        );
    }

    #[test]
    fn only_redis_rediss_and_unix_urls_are_accepted() {
        let err = Config::load_from(
            None,
            env(&[("BFFGATE_REDIS__URL", "valkey://127.0.0.1:6379")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`redis.url` must start with redis://, rediss:// or unix://"),
            "{err}"
        );
        assert!(!err.contains("yet"), "{err}");
    }

    #[test]
    fn settable_keys_cover_every_section() {
        let keys = Config::settable_keys();
        for key in [
            "listen",
            "public_origin",
            "redis.url",
            "redis.password_file",
            "cookie.key",
            "cookie.key_file",
            "cookie.previous_keys",
            "jwt.signing_key_file",
            "metrics.listen",
            "tls.cert_file",
            "tls.key_file",
            "routes",
        ] {
            assert!(keys.contains(key), "{key}");
        }
        assert!(!keys.contains("redis") && !keys.contains("cookie"));
    }

    #[test]
    fn a_programmatic_config_sets_secrets_directly() {
        let mut c = Config::default();
        c.cookie.key = Some(Redacted::new(&b64(8)));
        c.redis = Some(RedisConfig {
            url: Redacted::new("redis://:pw@127.0.0.1:6379"),
            ..RedisConfig::default()
        });
        c.validate().unwrap();
        assert_eq!(c.cookie.key_bytes().unwrap(), Some(vec![8; 64]));
        assert_eq!(
            c.redis.unwrap().connection_url().unwrap().expose(),
            "redis://:pw@127.0.0.1:6379"
        );
    }

    fn provider_toml(extra: &str) -> String {
        format!(
            "[[identity_providers]]\nid = \"corp\"\nissuer = \"https://idp.example.com/realms/main\"\nclient_id = \"bffgate\"\n{extra}\n"
        )
    }

    #[test]
    fn identity_providers_are_parsed_with_defaults_and_their_secret_file_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = secret_file(&dir, "corp-secret", "s3cret-value\n");
        let file = toml_file(&provider_toml(&format!(
            "client_secret_file = {secret:?}\ndisplay_name = \"Corp SSO\"\nroles_claim = \"groups\""
        )));
        let c = Config::load_from(Some(file.path()), env(&[])).unwrap();
        let p = &c.identity_providers[0];
        assert_eq!(p.id, "corp");
        assert_eq!(p.label(), "Corp SSO");
        assert_eq!(p.scopes, ["openid", "email", "profile"]);
        assert!(p.create_users && !p.link_by_verified_email);
        assert_eq!(p.roles_claim.as_deref(), Some("groups"));
        assert_eq!(p.client_secret().unwrap().unwrap().expose(), "s3cret-value");
        let shown = format!("{c:?}{}", serialised(&c));
        assert!(!shown.contains("s3cret-value"), "{shown}");
        assert!(shown.contains("corp-secret"), "{shown}");
    }

    #[test]
    fn identity_providers_refuse_unknown_keys_and_bad_values_naming_the_provider() {
        for (extra, needle) in [
            ("colour = \"red\"", "colour"),
            ("scopes = [\"email\"]", "openid"),
            ("scopes = [\"openid\", \"a b\"]", "one non-empty word"),
            ("display_name = \"\"", "display_name"),
        ] {
            let file = toml_file(&provider_toml(extra));
            let err = Config::load_from(Some(file.path()), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
        for (id, issuer) in [
            ("Corp", "https://idp.example.com"),
            ("../x", "https://idp.example.com"),
            ("a%2f", "https://idp.example.com"),
            ("", "https://idp.example.com"),
            ("corp", "http://idp.example.com"),
            ("corp", "https://idp.example.com/?a=b"),
            ("corp", "not a url"),
        ] {
            let text = format!(
                "[[identity_providers]]\nid = {id:?}\nissuer = {issuer:?}\nclient_id = \"c\"\n"
            );
            let err = Config::load_from(Some(toml_file(&text).path()), env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("identity_providers"), "{id} {issuer}: {err}");
        }
        let loopback = "[[identity_providers]]\nid = \"dev\"\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"c\"\n";
        Config::load_from(Some(toml_file(loopback).path()), env(&[])).unwrap();
    }

    #[test]
    fn identity_provider_ids_are_unique_and_secret_files_must_exist() {
        let twice = format!("{}{}", provider_toml(""), provider_toml(""));
        let err = Config::load_from(Some(toml_file(&twice).path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate id \"corp\""), "{err}");
        let missing = provider_toml("client_secret_file = \"/nonexistent/secret\"");
        let err = Config::load_from(Some(toml_file(&missing).path()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("identity_providers.client_secret_file")
                && err.contains("/nonexistent/secret"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = secret_file(&dir, "empty", "\n");
        let err = Config::load_from(
            Some(toml_file(&provider_toml(&format!("client_secret_file = {empty:?}"))).path()),
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("client_secret_file is empty"), "{err}");
    }
}
