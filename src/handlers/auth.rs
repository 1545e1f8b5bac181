//! `/auth/*`: login, refresh, logout, logout-all, the current session and the session list.
//!
//! Every route here sits behind the CSRF check and answers `Cache-Control: no-store`
//! (see `lib.rs`). Cookies are only touched through `cookies`.

use actix_session::Session;
use actix_web::{
    delete, get, post,
    web::{Data, Json, Path},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};

use crate::{
    clock::rfc3339,
    cookies::{self, ClearSessionCookie},
    errors::ApiError,
    session::{Authenticated, ClientInfo, CookieTokens, InvalidReason, Refresh, SessionView},
    AppState,
};

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("email", &self.email)
            .field("password", &"[redacted]")
            .finish()
    }
}

#[derive(Serialize)]
struct SessionJson {
    id: String,
    access_expires_at: String,
    idle_expires_at: String,
    max_expires_at: String,
}

impl From<&SessionView> for SessionJson {
    fn from(s: &SessionView) -> Self {
        Self {
            id: s.id.clone(),
            access_expires_at: rfc3339(s.access_expires_at),
            idle_expires_at: rfc3339(s.idle_expires_at),
            max_expires_at: rfc3339(s.max_expires_at),
        }
    }
}

#[derive(Serialize)]
struct SessionListItem {
    id: String,
    created_at: String,
    last_used_at: String,
    user_agent: String,
    ip: String,
    current: bool,
}

fn client_info(req: &HttpRequest) -> ClientInfo {
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(MAX_USER_AGENT)
        .collect();
    let ip = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    ClientInfo { user_agent, ip }
}

fn tokens(session: &Session) -> Result<CookieTokens, ApiError> {
    cookies::read(session).ok_or(ApiError::Unauthenticated(InvalidReason::Missing))
}

/// Stores rotated tokens, if any, so the middleware sends the new cookie.
fn keep(session: &Session, auth: &Authenticated) -> Result<(), ApiError> {
    match &auth.renewed {
        Some(tokens) => cookies::write(session, tokens).map_err(ApiError::Internal),
        None => Ok(()),
    }
}

fn cleared(mut response: HttpResponse) -> HttpResponse {
    response.extensions_mut().insert(ClearSessionCookie);
    response
}

#[post("/login")]
pub async fn login(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let LoginRequest { email, password } = body.into_inner();
    if email.trim().is_empty() || password.is_empty() {
        return Err(ApiError::BadRequest(
            "email and password are required".into(),
        ));
    }
    let previous = cookies::read(&session);
    let auth = state
        .sessions
        .login(&email, password, client_info(&req), previous)
        .await?;
    keep(&session, &auth)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": auth.user,
        "session": SessionJson::from(&auth.session),
    })))
}

#[post("/refresh")]
pub async fn refresh(state: Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    let auth = state
        .sessions
        .authenticate(&tokens(&session)?, Refresh::Force)
        .await?;
    keep(&session, &auth)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "session": SessionJson::from(&auth.session) })))
}

#[post("/logout")]
pub async fn logout(state: Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    if let Some(tokens) = cookies::read(&session) {
        state.sessions.logout(&tokens).await?;
    }
    Ok(cleared(
        HttpResponse::NoContent()
            .insert_header(("Clear-Site-Data", "\"cookies\""))
            .finish(),
    ))
}

#[post("/logout-all")]
pub async fn logout_all(state: Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    let auth = state
        .sessions
        .authenticate(&tokens(&session)?, Refresh::IfDue)
        .await?;
    state.sessions.logout_all(&auth).await?;
    Ok(cleared(
        HttpResponse::NoContent()
            .insert_header(("Clear-Site-Data", "\"cookies\""))
            .finish(),
    ))
}

#[get("/session")]
pub async fn current(state: Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    let auth = state
        .sessions
        .authenticate(&tokens(&session)?, Refresh::IfDue)
        .await?;
    keep(&session, &auth)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": auth.user,
        "session": SessionJson::from(&auth.session),
    })))
}

#[get("/sessions")]
pub async fn list(state: Data<AppState>, session: Session) -> Result<HttpResponse, ApiError> {
    let auth = state
        .sessions
        .authenticate(&tokens(&session)?, Refresh::IfDue)
        .await?;
    keep(&session, &auth)?;
    let items: Vec<SessionListItem> = state
        .sessions
        .list(&auth)
        .await?
        .into_iter()
        .map(|f| SessionListItem {
            current: f.id == auth.session.id,
            id: f.id,
            created_at: rfc3339(f.created),
            last_used_at: rfc3339(f.last_used),
            user_agent: f.user_agent,
            ip: f.ip,
        })
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

#[delete("/sessions/{id}")]
pub async fn revoke(
    state: Data<AppState>,
    session: Session,
    id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let auth = state
        .sessions
        .authenticate(&tokens(&session)?, Refresh::IfDue)
        .await?;
    state.sessions.revoke(&auth, &id).await?;
    if *id == auth.session.id {
        return Ok(cleared(HttpResponse::NoContent().finish()));
    }
    keep(&session, &auth)?;
    Ok(HttpResponse::NoContent().finish())
}
