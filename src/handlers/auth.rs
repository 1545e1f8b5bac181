//! `/auth/*`: login, refresh, logout, logout-all, the current session and the session list.
//!
//! Every route here sits behind the CSRF check and answers `Cache-Control: no-store`
//! (see `lib.rs`); the OpenAPI document states both for every `/auth` operation in one place
//! (`openapi::Document`), so the annotations here say only what each handler adds. The
//! session cookie is only reached through the signed-in step (`web::signed_in`).

use actix_session::Session;
use actix_web::{
    http::Method,
    web::{Data, Json, Path, ServiceConfig},
    HttpRequest, HttpResponse,
};
use serde::{Deserialize, Serialize};

use super::{
    endpoint,
    responses::{NotSignedIn, StoreUnavailable},
};
use crate::{
    clock::rfc3339,
    session::{Authenticated, Refresh, SessionView, UserView},
    web::{
        context::client_info,
        problem::{ApiError, Problem},
        signed_in, AppState,
    },
};

/// The endpoints under `/auth` (the scope itself, with its CSRF check, is `lib.rs`'s).
pub fn endpoints(cfg: &mut ServiceConfig) {
    cfg.service(endpoint("/login", Method::POST, login))
        .service(endpoint("/refresh", Method::POST, refresh))
        .service(endpoint("/logout", Method::POST, logout))
        .service(endpoint("/logout-all", Method::POST, logout_all))
        .service(endpoint("/session", Method::GET, current))
        .service(endpoint("/sessions", Method::GET, list))
        .service(endpoint("/sessions/{id}", Method::DELETE, revoke))
        .service(endpoint("/providers", Method::GET, super::oidc::providers));
}

/// Longest email a login accepts, in characters (64 for the local part, `@`, 255 for the
/// domain); the document's `maxLength` says the same.
pub const MAX_EMAIL_CHARS: usize = 320;

/// Longest password a login accepts, in characters; the document's `maxLength` says the
/// same. No account's password is longer than `password::MAX_PASSWORD_BYTES` bytes, so a
/// longer one in bytes is simply wrong (401).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// `POST /auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The account's email, matched without surrounding whitespace and case-insensitively:
    /// any string is well formed, one that is no account's gets 401.
    #[schema(min_length = 1, max_length = 320)]
    email: String,
    #[schema(min_length = 1, max_length = 1024)]
    password: String,
}

impl LoginRequest {
    /// The body's own rules, exactly those the document states: neither field empty nor longer
    /// than its limit, counted in characters as JSON Schema counts them. Nothing is trimmed
    /// here: an email of spaces is well formed and matches no account.
    fn check(&self) -> Result<(), ApiError> {
        for (field, value, max) in [
            ("email", &self.email, MAX_EMAIL_CHARS),
            ("password", &self.password, MAX_PASSWORD_CHARS),
        ] {
            if value.is_empty() || value.chars().count() > max {
                return Err(ApiError::BadRequest(format!(
                    "{field} must be 1 to {max} characters long"
                )));
            }
        }
        Ok(())
    }
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
    #[schema(pattern = "^[A-Za-z0-9_-]{22}$")]
    id: String,
    #[schema(format = DateTime)]
    access_expires_at: String,
    #[schema(format = DateTime)]
    idle_expires_at: String,
    #[schema(format = DateTime)]
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
    #[schema(pattern = "^[A-Za-z0-9_-]{22}$")]
    id: String,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: String,
    /// As the browser sent it when the session opened, cut to 256 characters; may be empty.
    user_agent: String,
    /// The client's address when the session opened; empty when unknown.
    ip: String,
    /// Whether this is the session of the request.
    current: bool,
}

/// Who is signed in, and their session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignedIn {
    user: UserView,
    session: SessionJson,
}

impl From<Authenticated> for SignedIn {
    fn from(auth: Authenticated) -> Self {
        Self {
            session: SessionJson::from(&auth.session),
            user: auth.user,
        }
    }
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
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in. A session cookie sent with the login is replaced and its session revoked.",
            body = SignedIn,
            headers(("Set-Cookie" = String, description = "The sealed session cookie (`HttpOnly`, `Secure` unless cookie.secure = false, `SameSite=Strict`)."))),
        (status = 400, description = "The body is not JSON, misses a field, has one more, or a field is empty or too long.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong email or password: one answer for both, and for a disabled account.", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The body did not arrive in time.", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "The body is larger than 16 KiB.", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body's media type is not JSON (`application/json`, or another `…/json` or `…+json` type).", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins: the attempt is refused without checking the password.",
            body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed."))),
        StoreUnavailable,
    )
)]
pub async fn login(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
    body: Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    body.check()?;
    let LoginRequest { email, password } = body.into_inner();
    let previous = signed_in::presented(&session);
    let auth = state
        .sessions
        .login(&email, password, client_info(&req), previous)
        .await?;
    let auth = signed_in::opened(&session, auth)?;
    Ok(HttpResponse::Ok().json(SignedIn::from(auth)))
}

/// Rotates the refresh token now (it also happens transparently when due).
#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "Rotated.", body = Refreshed,
            headers(("Set-Cookie" = String, description = "The session cookie with the new tokens."))),
        NotSignedIn,
        StoreUnavailable,
    )
)]
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
    responses(
        (status = 204, description = "Signed out: the session is revoked and a session cookie that was sent is cleared.",
            headers(("Clear-Site-Data" = String, description = "`\"cookies\"`: the browser forgets this site's cookies."))),
        StoreUnavailable,
    )
)]
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
    security(("session_cookie" = [])),
    responses(
        (status = 204, description = "Every session of the user is revoked; the cookie is cleared.",
            headers(("Clear-Site-Data" = String, description = "`\"cookies\"`: the browser forgets this site's cookies."))),
        NotSignedIn,
        StoreUnavailable,
    )
)]
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
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "Signed in. When the tokens were due and rotated, `Set-Cookie` carries the new ones.", body = SignedIn),
        NotSignedIn,
        StoreUnavailable,
    )
)]
pub async fn current(
    state: Data<AppState>,
    req: HttpRequest,
    session: Session,
) -> Result<HttpResponse, ApiError> {
    let auth = signed_in::required(&req, &session, &state.sessions, Refresh::IfDue)
        .await?
        .auth;
    Ok(HttpResponse::Ok().json(SignedIn::from(auth)))
}

/// The signed-in user's live sessions.
#[utoipa::path(
    get, path = "/auth/sessions", tag = "auth",
    security(("session_cookie" = [])),
    responses(
        (status = 200, description = "Live sessions, most recently used first.", body = [SessionListItem]),
        NotSignedIn,
        StoreUnavailable,
    )
)]
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
    params(("id" = String, Path, description = "A session id from `GET /auth/sessions`; any other value gets 404.")),
    security(("session_cookie" = [])),
    responses(
        (status = 204, description = "Revoked; if it was the request's own session, its cookie is cleared."),
        NotSignedIn,
        (status = 404, description = "Not one of this user's live sessions.", body = Problem, content_type = "application/problem+json"),
        StoreUnavailable,
    )
)]
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
