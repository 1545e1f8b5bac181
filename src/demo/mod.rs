//! `bffgate demo`: the gateway on the memory store with a seeded user, the browser app and the
//! demo API in-process behind `/api`. The binary and the end-to-end tests start the same stack.
//!
//! The demo sits above the library's builder (it starts a whole gateway); nothing in the
//! gateway imports it.

pub mod api;

use std::{net::TcpListener, path::PathBuf, time::Duration};

use actix_web::dev::{Server, ServerHandle};

use api::{build_demo_api, DemoApiSettings};

use crate::{
    config::{AuthMode, Config, RouteConfig},
    session::users::Users,
    BuildError, Gateway,
};

/// Credentials of the user the demo seeds.
pub const DEMO_EMAIL: &str = "demo@example.com";
pub const DEMO_PASSWORD: &str = "bffgate-demo";

/// A started demo stack: await `server` to run it; `api` stops with it.
pub struct Demo {
    pub server: Server,
    pub api: ServerHandle,
    /// Where to open the app: the public origin browsers must use (their `Origin` is checked
    /// against it).
    pub page: String,
}

/// Builds the demo stack on `listener`: the memory store (any `[redis]` is ignored), the demo
/// user, the browser app (falling back to the source tree's `static/` when the configured
/// `static_dir` does not exist) and the demo API on a free loopback port, routed at `/api`.
pub async fn start(mut config: Config, listener: TcpListener) -> Result<Demo, BuildError> {
    config.redis = None;
    let bundled = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("static");
    if !config.static_dir.is_dir() && bundled.is_dir() {
        config.static_dir = bundled;
    }
    let addr = listener.local_addr()?;
    // Unless configured otherwise, the app is opened where the demo listens: `localhost` for
    // a loopback address (a secure context, so the `Secure` cookie works over http).
    if config.public_origin == Config::default().public_origin {
        config.public_origin = if addr.ip().is_loopback() {
            format!("http://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
    }
    let page = config.public_origin.clone();
    let api_listener = TcpListener::bind("127.0.0.1:0")?;
    let api_addr = api_listener.local_addr()?;
    let api = build_demo_api(
        DemoApiSettings {
            jwks_url: format!("http://{addr}/.well-known/jwks.json"),
            issuer: config.jwt.issuer.clone(),
            audience: config.jwt.audience.clone(),
        },
        api_listener,
    )?;
    let api_handle = api.handle();
    actix_web::rt::spawn(api);
    config.routes.retain(|r| r.prefix != "/api");
    config.routes.push(RouteConfig {
        prefix: "/api".into(),
        upstream: format!("http://{api_addr}"),
        strip_prefix: false,
        auth: AuthMode::Required,
        csrf: true,
        timeout: Duration::from_secs(30),
        forward_cookies: Vec::new(),
    });
    let gateway = Gateway::new(config)?;
    Users::new(gateway.store())
        .add(DEMO_EMAIL, DEMO_PASSWORD, vec!["demo".into()])
        .await
        .map_err(|e| BuildError::Setup(format!("cannot seed the demo user: {e}")))?;
    let server = gateway.serve(listener)?;
    Ok(Demo {
        server,
        api: api_handle,
        page,
    })
}
