//! The demo upstream API (`bffgate-demo-api`, and in-process under `bffgate demo`): a small
//! real API that trusts nothing but a valid gateway JWT.
//!
//! It verifies every bearer token against the gateway's JWKS (fetched, cached, refetched on an
//! unknown `kid` at most every few seconds), accepts only EdDSA with the expected `iss` and
//! `aud`, and refuses expired tokens. Endpoints: `GET /api/me`, `GET|POST /api/notes`,
//! `GET /api/clock` (server-sent events), `GET /api/ws` (WebSocket echo).

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{Mutex, RwLock},
    time::{Duration, Instant},
};

use actix_web::{
    dev::Server,
    get,
    http::header,
    post,
    web::{self, Data, Json},
    App, HttpRequest, HttpResponse, HttpServer,
};
use jsonwebtoken::{jwk::JwkSet, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::tokens::AccessClaims;

/// A JWKS refetch for an unknown `kid` happens at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(5);

/// Where the demo API finds the gateway's keys and what it expects in tokens.
#[derive(Debug, Clone)]
pub struct DemoApiSettings {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone, Serialize)]
struct Note {
    id: u64,
    text: String,
    created_at: String,
}

struct DemoApi {
    settings: DemoApiSettings,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: Mutex<Option<Instant>>,
    notes: Mutex<HashMap<String, Vec<Note>>>,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
}

impl actix_web::ResponseError for DemoError {
    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unauthorized(why) => HttpResponse::Unauthorized()
                .insert_header((
                    header::WWW_AUTHENTICATE,
                    format!("Bearer error=\"invalid_token\", error_description=\"{why}\""),
                ))
                .json(serde_json::json!({ "error": "invalid_token", "detail": why })),
            Self::BadRequest(why) => {
                HttpResponse::BadRequest().json(serde_json::json!({ "error": why }))
            }
        }
    }
}

impl DemoApi {
    async fn refetch(&self) -> bool {
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        let fetched = async {
            let mut res = awc::Client::default()
                .get(&self.settings.jwks_url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .ok()?;
            res.json::<JwkSet>().await.ok()
        }
        .await;
        let Some(set) = fetched else {
            tracing::warn!(url = %self.settings.jwks_url, "could not fetch the JWKS");
            return false;
        };
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        true
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    /// The verified claims of the request's bearer token.
    async fn verify(&self, req: &HttpRequest) -> Result<AccessClaims, DemoError> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(DemoError::Unauthorized("missing bearer token"))?;
        let head = jsonwebtoken::decode_header(token)
            .map_err(|_| DemoError::Unauthorized("malformed token"))?;
        let kid = head
            .kid
            .ok_or(DemoError::Unauthorized("token has no kid"))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refetch().await;
                self.key(&kid)
                    .ok_or(DemoError::Unauthorized("unknown signing key"))?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.leeway = 0;
        jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                DemoError::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAlgorithm => "wrong algorithm",
                    _ => "invalid token",
                })
            })
    }
}

#[get("/api/me")]
async fn me(api: Data<DemoApi>, req: HttpRequest) -> Result<HttpResponse, DemoError> {
    let claims = api.verify(&req).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "id": claims.sub,
        "email": claims.email,
        "roles": claims.roles,
        "session": claims.sid,
        "token_expires_at": crate::clock::rfc3339(claims.exp * 1000),
        "request_id": req.headers().get("x-request-id").and_then(|v| v.to_str().ok()),
    })))
}

#[get("/api/notes")]
async fn list_notes(api: Data<DemoApi>, req: HttpRequest) -> Result<HttpResponse, DemoError> {
    let claims = api.verify(&req).await?;
    let notes = api.notes.lock().unwrap_or_else(|p| p.into_inner());
    Ok(HttpResponse::Ok().json(notes.get(&claims.sub).cloned().unwrap_or_default()))
}

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

#[post("/api/notes")]
async fn add_note(
    api: Data<DemoApi>,
    req: HttpRequest,
    body: Json<NewNote>,
) -> Result<HttpResponse, DemoError> {
    let claims = api.verify(&req).await?;
    let text = body.into_inner().text.trim().to_owned();
    if text.is_empty() || text.len() > 1000 {
        return Err(DemoError::BadRequest("text must be 1 to 1000 bytes".into()));
    }
    let mut notes = api.notes.lock().unwrap_or_else(|p| p.into_inner());
    let list = notes.entry(claims.sub).or_default();
    let note = Note {
        id: list.len() as u64 + 1,
        text,
        created_at: crate::clock::rfc3339(crate::clock::Clock::now_ms(&crate::clock::SystemClock)),
    };
    list.push(note.clone());
    Ok(HttpResponse::Created().json(note))
}

#[derive(Deserialize)]
struct ClockQuery {
    /// Stop after this many events (default: never).
    count: Option<usize>,
    /// Milliseconds between events (default 1000, at least 10).
    every_ms: Option<u64>,
}

/// Server-sent events: the time, and who is asking, once a second.
#[get("/api/clock")]
async fn clock(
    api: Data<DemoApi>,
    req: HttpRequest,
    query: web::Query<ClockQuery>,
) -> Result<HttpResponse, DemoError> {
    let claims = api.verify(&req).await?;
    let every = Duration::from_millis(query.every_ms.unwrap_or(1000).max(10));
    let count = query.count.unwrap_or(usize::MAX);
    let email = claims.email;
    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(every));
    let events =
        futures_util::StreamExt::map(futures_util::StreamExt::take(ticks, count), move |_| {
            let now =
                crate::clock::rfc3339(crate::clock::Clock::now_ms(&crate::clock::SystemClock));
            let data = serde_json::json!({ "now": now, "user": email });
            Ok::<_, actix_web::Error>(web::Bytes::from(format!("data: {data}\n\n")))
        });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(events))
}

/// WebSocket echo: every text message comes back prefixed with the caller's email.
#[get("/api/ws")]
async fn ws(
    api: Data<DemoApi>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let claims = api.verify(&req).await?;
    let (response, mut session, mut messages) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(async move {
        while let Some(Ok(msg)) = messages.recv().await {
            let ok = match msg {
                actix_ws::Message::Text(text) => session
                    .text(format!("{}: {text}", claims.email))
                    .await
                    .is_ok(),
                actix_ws::Message::Binary(bytes) => session.binary(bytes).await.is_ok(),
                actix_ws::Message::Ping(bytes) => session.pong(&bytes).await.is_ok(),
                actix_ws::Message::Close(_) => false,
                _ => true,
            };
            if !ok {
                break;
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}

/// Starts the demo API on `listener`.
pub fn build_demo_api(settings: DemoApiSettings, listener: TcpListener) -> std::io::Result<Server> {
    let api = Data::new(DemoApi {
        settings,
        keys: RwLock::new(HashMap::new()),
        last_fetch: Mutex::new(None),
        notes: Mutex::new(HashMap::new()),
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(api.clone())
            .service(me)
            .service(list_notes)
            .service(add_note)
            .service(clock)
            .service(ws)
    })
    .listen(listener)?
    .workers(1)
    .run())
}
