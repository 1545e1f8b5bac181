//! `/auth/*`: login, refresh, logout, logout-all, the current session and the session list.
//!
//! Every route here sits behind the CSRF check and answers `Cache-Control: no-store`
//! (see `lib.rs`). The session cookie is only reached through the signed-in step
//! (`web::signed_in`).

use actix_session::Session;
use actix_web::{
    delete, get, post,
    web::{Data, Json, Path},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};

use crate::{
    clock::rfc3339,
    session::{Refresh, SessionView, UserView},
    web::{
        context::client_info,
        problem::{ApiError, Problem},
        signed_in, AppState,
    },
};

/// `POST /auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
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

/// The session's id and deadlines (RFC 3339).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionJson {
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

/// One of the user's live sessions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionListItem {
    id: String,
    created_at: String,
    last_used_at: String,
    user_agent: String,
    ip: String,
    current: bool,
}

/// Who is signed in, and their session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignedIn {
    user: UserView,
    session: SessionJson,
}

/// `POST /auth/refresh` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Refreshed {
    session: SessionJson,
}

/// A 204 that ends the request's session: the cookie is removed and the browser told to
/// forget it.
fn signed_out(req: &HttpRequest) -> HttpResponse {
    signed_in::end(req);
    HttpResponse::NoContent()
        .insert_header(("Clear-Site-Data", "\"cookies\""))
        .finish()
}

/// Checks email and password and opens a session: the answer sets the session cookie.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    params(("X-CSRF" = String, Header, description = "Must be `1`.")),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` carries the sealed session.", body = SignedIn),
        (status = 400, description = "Malformed JSON or missing fields.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email or password (one answer for both).", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`.", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable; see `Retry-After`.", body = Problem, content_type = "application/problem+json"),
    )
)]
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
    let previous = signed_in::presented(&session);
    let auth = state
        .sessions
        .login(&email, password, client_info(&req), previous)
        .await?;
    let auth = signed_in::opened(&session, auth)?;
    Ok(HttpResponse::Ok().json(SignedIn {
        session: SessionJson::from(&auth.session),
        user: auth.user,
    }))
}

/// Rotates the refresh token now (it also happens transparently when due).
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    params(("X-CSRF" = String, Header, description = "Must be `1`.")),
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "Rotated; `Set-Cookie` carries the new session.", body = Refreshed),
        (status = 401, description = "No live session; the cookie is cleared.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable; the cookie is kept.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/refresh")]
pub async fn refresh(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let auth = signed_in::required(&req, &session, &state.sessions, Refresh::Force)
        .await?
        .auth;
    Ok(HttpResponse::Ok().json(Refreshed {
        session: SessionJson::from(&auth.session),
    }))
}

/// Revokes this session and clears the cookie (also without a session).
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    params(("X-CSRF" = String, Header, description = "Must be `1`.")),
    responses(
        (status = 204, description = "Signed out; `Clear-Site-Data: \"cookies\"`."),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable; the cookie is kept.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/logout")]
pub async fn logout(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    if let Some(tokens) = signed_in::presented(&session) {
        state.sessions.logout(&tokens, &client_info(&req)).await?;
    }
    Ok(signed_out(&req))
}

/// Revokes every session of the signed-in user.
#[utoipa::path(
    post, path = "/auth/logout-all", tag = "auth",
    params(("X-CSRF" = String, Header, description = "Must be `1`.")),
    security(("session_cookie" = [])),
    responses(
        (status = 204, description = "Every session revoked; the cookie is cleared."),
        (status = 401, description = "No live session.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/logout-all")]
pub async fn logout_all(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let auth = signed_in::required(&req, &session, &state.sessions, Refresh::IfDue)
        .await?
        .auth;
    state.sessions.logout_all(&auth, &client_info(&req)).await?;
    Ok(signed_out(&req))
}

/// Who is signed in and when the session ends; rotates the tokens when due.
#[utoipa::path(
    get, path = "/auth/session", tag = "auth",
    params(("X-CSRF" = String, Header, description = "Must be `1`.")),
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "Signed in.", body = SignedIn),
        (status = 401, description = "No live session; the cookie is cleared.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable; the cookie is kept.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/session")]
pub async fn current(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let auth = signed_in::required(&req, &session, &state.sessions, Refresh::IfDue)
        .await?
        .auth;
    Ok(HttpResponse::Ok().json(SignedIn {
        session: SessionJson::from(&auth.session),
        user: auth.user,
    }))
}

/// The signed-in user's live sessions.
#[utoipa::path(
    get, path = "/auth/sessions", tag = "auth",
    params(("X-CSRF" = String, Header, description = "Must be `1`.")),
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "Live sessions, most recently used first.", body = [SessionListItem]),
        (status = 401, description = "No live session.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/sessions")]
pub async fn list(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let auth = signed_in::required(&req, &session, &state.sessions, Refresh::IfDue)
        .await?
        .auth;
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

/// Revokes one of the signed-in user's sessions.
#[utoipa::path(
    delete, path = "/auth/sessions/{id}", tag = "auth",
    params(
        ("id" = String, Path, description = "A session id from `GET /auth/sessions`."),
        ("X-CSRF" = String, Header, description = "Must be `1`."),
    ),
    security(("session_cookie" = [])),
    responses(
        (status = 204, description = "Revoked; the cookie is cleared if it was this session."),
        (status = 401, description = "No live session.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "CSRF check failed.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not one of this user's live sessions.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The store is unreachable.", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/sessions/{id}")]
pub async fn revoke(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
    id: Path<String>,
) -> Result<HttpResponse, ApiError> {
    let auth = signed_in::required(&req, &session, &state.sessions, Refresh::IfDue)
        .await?
        .auth;
    state
        .sessions
        .revoke(&auth, &id, &client_info(&req))
        .await?;
    if *id == auth.session.id {
        signed_in::end(&req);
    }
    Ok(HttpResponse::NoContent().finish())
}
