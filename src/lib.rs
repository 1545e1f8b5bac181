//! bffgate: a backend-for-frontend gateway. Browsers hold one sealed `HttpOnly` cookie; the
//! gateway keeps the access JWT and the rotating refresh token inside it and the refresh-token
//! families in a store shared by every instance.
//!
//! [`build_server`] is what both the binary and the tests call.
#![forbid(unsafe_code)]

pub mod background;
pub mod clock;
pub mod config;
pub mod demo;
pub mod handlers;
pub mod metrics;
pub mod oidc;
pub mod password;
pub mod proxy;
pub mod session;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod web;

use std::{net::TcpListener, sync::Arc};

use actix_web::{
    dev::Server,
    http::Method,
    middleware::{from_fn, DefaultHeaders},
    web::{self as actix, Data},
    App, HttpServer,
};

use crate::{
    clock::{Clock, SystemClock},
    config::Config,
    handlers::{endpoint, metrics::metrics_endpoint, openapi},
    oidc::{http::ProviderClient, IdentityProviders},
    password::Passwords,
    session::{SessionSettings, Sessions},
    store::{
        memory::MemoryStore,
        metered::Metered,
        redis::{RedisStore, Topology},
        Store,
    },
    tls::ServedCert,
    tokens::{Sealer, Signer},
    web::{
        body_timeout,
        body_timeout::BodyTimeout,
        context::{log_request, TrustedProxies},
        cookie,
        cookie::CookieSettings,
        csrf,
        csrf::PublicOrigin,
    },
    web::{ApiError, AppState},
};

/// Largest JSON body `/auth/*` accepts: every login body the OpenAPI document allows fits,
/// however it is escaped (1344 characters at most, each at most 12 bytes as a
/// `\uXXXX\uXXXX` surrogate pair).
const MAX_JSON_BODY: usize = 16 * 1024;

/// Why the gateway could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Opens the configured store: Redis when `[redis]` is set, else the embedded memory store.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, BuildError> {
    match &config.redis {
        Some(redis) => {
            let topology = match redis.mode {
                config::RedisMode::Standalone => Topology::Standalone {
                    url: redis.connection_url()?.expose().to_owned(),
                },
                config::RedisMode::Sentinel => Topology::Sentinel {
                    sentinels: exposed(redis.node_urls()?),
                    master: redis.sentinel_master.clone(),
                },
                config::RedisMode::Cluster => Topology::Cluster {
                    nodes: exposed(redis.node_urls()?),
                },
            };
            let ca_pem = match &redis.tls_ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    BuildError::Setup(format!(
                        "redis.tls_ca_file: cannot read {}: {e}",
                        path.display()
                    ))
                })?),
                None => None,
            };
            let store = RedisStore::open(
                &topology,
                ca_pem.as_deref(),
                &redis.key_prefix,
                redis.pool_size,
                redis.timeout,
            )
            .map_err(|e| BuildError::Setup(e.to_string()))?;
            Ok(Arc::new(if redis.track_liveness {
                store
            } else {
                store.without_liveness_tracking()
            }))
        }
        None => Ok(Arc::new(MemoryStore::new())),
    }
}

fn exposed(urls: Vec<config::Redacted>) -> Vec<String> {
    urls.iter().map(|url| url.expose().to_owned()).collect()
}

/// A server for `/metrics` alone, on its own listener (`metrics.listen`).
pub fn metrics_server(listener: TcpListener) -> std::io::Result<Server> {
    let handle = Data::new(metrics::handle());
    Ok(HttpServer::new(move || {
        App::new().app_data(handle.clone()).service(endpoint(
            "/metrics",
            Method::GET,
            metrics_endpoint,
        ))
    })
    .workers(1)
    .listen(listener)?
    .run())
}

/// A gateway ready to serve: configuration checked, keys loaded, store opened.
pub struct Gateway {
    config: Config,
    state: Data<AppState>,
    cookies: CookieSettings,
    /// The OpenID providers users may sign in with (`[[identity_providers]]`).
    providers: Data<IdentityProviders>,
    /// The HTTPS listener's certificate (`[tls]`); none: plain HTTP.
    tls: Option<Arc<ServedCert>>,
}

impl Gateway {
    /// Builds the gateway on the system clock.
    pub fn new(config: Config) -> Result<Self, BuildError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Builds the gateway with a given clock (tests move time).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, BuildError> {
        config.validate()?;
        let store = open_store(&config)?;
        Self::assemble(config, store, clock)
    }

    /// Builds the gateway on a given store.
    pub fn with_store(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        config.validate()?;
        Self::assemble(config, store, clock)
    }

    /// Keys, store and sessions from a configuration its caller validated.
    fn assemble(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BuildError> {
        if config.metrics.enabled {
            metrics::handle();
        }
        let store: Arc<dyn Store> = Arc::new(Metered::new(store));
        if config.redis.is_none() {
            tracing::warn!("no [redis] configured: using the embedded memory store; sessions are lost on restart and cannot be shared between instances");
        }
        let master_key = match config.cookie.key_bytes()? {
            Some(key) => key,
            None => {
                tracing::warn!("no cookie.key configured: using a random key; every session ends when the gateway restarts");
                tokens::random_cookie_key().map_err(|e| BuildError::Setup(e.to_string()))?
            }
        };
        if !config.cookie.secure {
            tracing::warn!(cookie = %config.cookie.effective_name(), "cookie.secure = false: the session cookie is sent over plain http; use only for development");
        }
        let signer = match &config.jwt.signing_key_file {
            Some(path) => Signer::from_pem_file(path),
            None => {
                tracing::warn!("no jwt.signing_key_file configured: using a key generated for this run; upstream APIs must refetch the JWKS after a restart");
                Signer::generate()
            }
        }
        .map_err(|e| BuildError::Setup(format!("jwt.signing_key_file: {e}")))?
        .with_previous_files(&config.jwt.previous_keys)
        .map_err(|e| BuildError::Setup(format!("jwt.previous_keys: {e}")))?;
        let signer = Arc::new(signer);
        let passwords = Passwords::new(config.password.max_concurrent)
            .map_err(|e| BuildError::Setup(e.to_string()))?;
        let cookies = CookieSettings::new(&config, &master_key).map_err(BuildError::Setup)?;
        let tls = match &config.tls {
            Some(files) => Some(Arc::new(
                ServedCert::load(&files.cert_file, &files.key_file)
                    .map_err(|e| BuildError::Setup(e.to_string()))?,
            )),
            None => None,
        };
        let sessions = Sessions::new(
            store,
            passwords,
            Arc::clone(&signer),
            Sealer::with_previous(&master_key, &config.cookie.previous_key_bytes()?),
            clock,
            SessionSettings::from_config(&config),
        );
        let providers =
            Data::new(IdentityProviders::from_config(&config).map_err(BuildError::Setup)?);
        Ok(Self {
            config,
            state: Data::new(AppState { sessions, signer }),
            cookies,
            providers,
            tls,
        })
    }

    /// The store this gateway uses (seeding the demo user, tests).
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(self.state.sessions.store())
    }

    /// Starts serving on `listener` — HTTPS when `[tls]` is configured, reloading its
    /// certificate on SIGHUP — and returns the server, which runs when awaited or spawned.
    /// Call it inside the actix runtime.
    pub fn serve(self, listener: TcpListener) -> Result<Server, BuildError> {
        let Self {
            config,
            state,
            cookies,
            providers,
            tls,
        } = self;
        let origin = Data::new(PublicOrigin(config.origin()));
        let trusted = Data::new(TrustedProxies(config.trusted_proxy_nets()?));
        let proxy = Data::new(proxy::Proxy::new(&config));
        let cookie_data = Data::new(cookies);
        let metrics_here = config.metrics.enabled && config.metrics.public;
        let metrics_handle = Data::new(metrics::handle());
        let document = Data::new(openapi::Document::new(openapi::Site {
            cookie_name: &cookie_data.name,
            public_origin: &origin.0,
            metrics: metrics_here,
        }));
        let shutdown = config.shutdown_timeout.as_secs();
        let body_timeout = Data::new(BodyTimeout(config.request_body_timeout));
        let server = HttpServer::new(move || {
            let json = actix::JsonConfig::default()
                .limit(MAX_JSON_BODY)
                .content_type_required(true)
                .error_handler(|err, _req| ApiError::from(err).into());
            // middleware order (outermost first): request log, the request body's time bound
            // (its 408 is logged), exact cookie names, re-sealing of cookies under previous
            // keys, clear-marked cookies, the session cookie; within /auth: no-store headers,
            // then the CSRF check.
            let app = App::new()
                .app_data(state.clone())
                .app_data(origin.clone())
                .app_data(trusted.clone())
                .app_data(cookie_data.clone())
                .app_data(proxy.clone())
                .app_data(Data::new(proxy::upstream_client()))
                .app_data(json)
                .app_data(
                    actix::PathConfig::default()
                        .error_handler(|err, _req| ApiError::BadRequest(err.to_string()).into()),
                )
                .app_data(metrics_handle.clone())
                .app_data(document.clone())
                .app_data(body_timeout.clone())
                .app_data(providers.clone())
                .app_data(Data::new(ProviderClient::new()))
                .wrap(cookie_data.middleware())
                .wrap(from_fn(cookie::clear_when_marked))
                // Before anything reads (and caches) the request's cookies: only the exact
                // name is ours, then cookies sealed under a previous key are re-sealed.
                .wrap(from_fn(cookie::reseal_previous))
                .wrap(from_fn(cookie::exact_name_only))
                .wrap(from_fn(body_timeout::limit))
                .wrap(from_fn(log_request))
                .configure(handlers::endpoints)
                // The sign-in flow's navigations and the provider's back-channel call cannot
                // carry X-CSRF; each guards itself (see handlers::oidc). Registered before
                // /auth, which would otherwise claim these paths.
                .service(
                    actix::scope("/auth/oidc")
                        .wrap(DefaultHeaders::new().add(("Cache-Control", "no-store")))
                        .configure(handlers::oidc::flow_endpoints)
                        .default_service(actix::to(handlers::unknown)),
                )
                .service(
                    actix::scope("/auth")
                        .wrap(from_fn(csrf::require))
                        .wrap(DefaultHeaders::new().add(("Cache-Control", "no-store")))
                        .configure(handlers::auth::endpoints)
                        .default_service(actix::to(handlers::unknown)),
                );
            let app = if metrics_here {
                app.service(endpoint("/metrics", Method::GET, metrics_endpoint))
            } else {
                app
            };
            app.default_service(actix::to(proxy::dispatch))
        })
        .shutdown_timeout(shutdown);
        let server = match tls {
            // actix marks the listener secure (`requested_scheme` answers https) and adds
            // the h2 and http/1.1 ALPN protocols.
            Some(cert) => {
                #[cfg(unix)]
                actix_web::rt::spawn(cert.reload_on_hangup()?);
                let tls = cert
                    .server_config()
                    .map_err(|e| BuildError::Setup(format!("tls: {e}")))?;
                server.listen_rustls_0_23(listener, tls)?
            }
            None => server.listen(listener)?,
        };
        Ok(server.run())
    }
}

/// Builds the gateway from `config` and serves it on `listener` (what `main` and tests call).
pub fn build_server(config: Config, listener: TcpListener) -> Result<Server, BuildError> {
    Gateway::new(config)?.serve(listener)
}
