//! The one "signed-in" step every `/auth` handler and the proxy take: open the session
//! cookie, ask [`Sessions::authenticate`], and then either put rotated tokens in the cookie,
//! or — when the session is over or the cookie does not open — mark the cookie for removal
//! and answer 401 (or go on anonymously where the route allows it).
//!
//! A store outage is neither: it is a 503 and the cookie is left alone.

use actix_session::Session;
use actix_web::HttpRequest;

use super::{context::client_info, cookie, problem::ApiError};
use crate::session::{Authenticated, CookieTokens, InvalidReason, Refresh, SessionError, Sessions};

/// A request's live session, and the tokens now in force (the renewed ones if it rotated).
#[derive(Debug, Clone)]
pub struct Identity {
    pub auth: Authenticated,
    pub tokens: CookieTokens,
}

/// The tokens the cookie carries, if it opened and holds both (no store lookup).
pub fn presented(session: &Session) -> Option<CookieTokens> {
    cookie::read(session)
}

/// The signed-in step for a request that needs a live session: 401 (and the cookie removed)
/// without one. `refresh` says whether to rotate only when due, or now.
pub async fn required(
    req: &HttpRequest,
    session: &Session,
    sessions: &Sessions,
    refresh: Refresh,
) -> Result<Identity, ApiError> {
    let Some(tokens) = presented(session) else {
        return Err(ended(req, InvalidReason::Missing));
    };
    renew(req, session, sessions, tokens, refresh).await
}

/// The signed-in step for a request that may be anonymous: `None` without a live session
/// (a dead or unreadable cookie is removed); a store outage is still an error.
pub async fn optional(
    req: &HttpRequest,
    session: &Session,
    sessions: &Sessions,
) -> Result<Option<Identity>, ApiError> {
    match required(req, session, sessions, Refresh::IfDue).await {
        Ok(identity) => Ok(Some(identity)),
        Err(ApiError::Unauthenticated(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Authenticates `tokens` (already taken from the cookie, e.g. for a retry after an upstream
/// refused them) and keeps rotated tokens in the cookie.
pub async fn renew(
    req: &HttpRequest,
    session: &Session,
    sessions: &Sessions,
    tokens: CookieTokens,
    refresh: Refresh,
) -> Result<Identity, ApiError> {
    match sessions
        .authenticate(&tokens, refresh, &client_info(req))
        .await
    {
        Ok(auth) => keep(session, auth, tokens),
        Err(SessionError::Invalid(reason)) => Err(ended(req, reason)),
        Err(e) => Err(e.into()),
    }
}

/// A session a login just opened: its tokens go in the cookie.
pub fn opened(session: &Session, auth: Authenticated) -> Result<Authenticated, ApiError> {
    write_renewed(session, &auth)?;
    Ok(auth)
}

/// Keeps an authenticated session: rotated tokens go in the cookie and are the ones in force.
fn keep(
    session: &Session,
    auth: Authenticated,
    presented: CookieTokens,
) -> Result<Identity, ApiError> {
    write_renewed(session, &auth)?;
    let tokens = auth.renewed.clone().unwrap_or(presented);
    Ok(Identity { auth, tokens })
}

fn write_renewed(session: &Session, auth: &Authenticated) -> Result<(), ApiError> {
    match &auth.renewed {
        Some(renewed) => cookie::write(session, renewed).map_err(ApiError::Internal),
        None => Ok(()),
    }
}

/// The session is over (or never was): its answer removes the cookie.
pub fn end(req: &HttpRequest) {
    cookie::clear(req);
}

fn ended(req: &HttpRequest, reason: InvalidReason) -> ApiError {
    end(req);
    ApiError::Unauthenticated(reason)
}
