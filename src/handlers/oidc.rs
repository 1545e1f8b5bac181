//! Signing in with an identity provider over HTTP: `GET /auth/providers` (behind the CSRF
//! check like every `/auth` call of the app), and the flow's own paths under `/auth/oidc/{id}`,
//! which are browser navigations (start, callback) or the provider's own call (back-channel
//! logout) and so cannot carry `X-CSRF`:
//!
//! - `start` changes nothing but the browser's flow cookie;
//! - `callback` changes state only through the flow cookie and its `state` check (a forged
//!   callback finds no flow, or another state);
//! - `backchannel-logout` carries no cookie; its signed token is its authority.
//!
//! Failures of the flow answer `303 /?login_error=<code>` (the browser app shows it); the
//! detail goes to the log, never to the browser. The protocol lives in `crate::oidc`.

use actix_session::Session;
use actix_web::{
    http::{header, Method},
    web::{Bytes, Data, Path, ServiceConfig},
    HttpRequest, HttpResponse,
};

use super::endpoint;
use crate::{
    oidc::{
        backchannel, http::ProviderClient, CallbackParams, FlowState, IdentityProviders, OidcError,
        ProviderInfo, FLOW_TTL,
    },
    session::SessionError,
    web::{context::client_info, cookie::CookieSettings, signed_in, ApiError, AppState},
};

/// The flow's paths, mounted at `/auth/oidc` outside the CSRF check (see the module header).
pub fn flow_endpoints(cfg: &mut ServiceConfig) {
    cfg.service(endpoint("/{id}/start", Method::GET, start))
        .service(endpoint("/{id}/callback", Method::GET, callback))
        .service(endpoint(
            "/{id}/backchannel-logout",
            Method::POST,
            backchannel_logout,
        ));
}

/// The identity providers users may sign in with (ids and labels, nothing secret).
#[utoipa::path(
    get, path = "/auth/providers", tag = "auth",
    responses(
        (status = 200, description = "The configured identity providers, in configured order; empty when none is. Sign in with one by navigating to `/auth/oidc/{id}/start?return_to=/path`.",
            body = [ProviderInfo]),
    )
)]
pub async fn providers(providers: Data<IdentityProviders>) -> HttpResponse {
    HttpResponse::Ok().json(providers.list())
}

/// `GET /auth/oidc/{id}/start?return_to=/path`: 302 to the provider, with a fresh flow cookie.
pub async fn start(
    req: HttpRequest,
    id: Path<String>,
    providers: Data<IdentityProviders>,
    http: Data<ProviderClient>,
    cookies: Data<CookieSettings>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let query = single_params(req.query_string(), &["return_to"]);
    let return_to = match &query {
        Ok(params) => params.first().cloned().flatten(),
        Err(()) => return Ok(failed(&id, &OidcError::BadReturnTo)),
    };
    let now = state.sessions.now();
    match providers.start(&id, return_to.as_deref(), &http, now).await {
        Ok(started) => Ok(HttpResponse::Found()
            .insert_header((header::LOCATION, started.authorize_url))
            .cookie(cookies.flow_cookie(started.flow.to_json(), FLOW_TTL))
            .finish()),
        Err(OidcError::UnknownProvider) => Err(ApiError::NotFound),
        Err(e) => Ok(failed(&id, &e)),
    }
}

/// `GET /auth/oidc/{id}/callback?code&state&iss` (or `?error&state`): the checks, the user,
/// the session cookie, and 303 to the flow's `return_to`. The flow cookie is removed whatever
/// the outcome: a flow is used once.
pub async fn callback(
    req: HttpRequest,
    session: Session,
    id: Path<String>,
    providers: Data<IdentityProviders>,
    http: Data<ProviderClient>,
    cookies: Data<CookieSettings>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let flow = cookies
        .open_flow(&req)
        .and_then(|plain| FlowState::from_json(&plain));
    let params = match single_params(req.query_string(), &["code", "state", "iss", "error"]) {
        Ok(values) => {
            let mut values = values.into_iter();
            let mut next = || values.next().flatten();
            CallbackParams {
                code: next(),
                state: next(),
                iss: next(),
                error: next(),
            }
        }
        // A repeated parameter: which one counts would be the attacker's choice.
        Err(()) => CallbackParams::default(),
    };
    // Throttled like a password login, under the address (a callback names no account).
    let mut answer = match state
        .sessions
        .reserve_provider_sign_in(&client_info(&req))
        .await
    {
        Err(SessionError::Throttled { .. }) => see_other("/?login_error=throttled"),
        Err(e) => return Err(e.into()),
        Ok(()) => {
            let outcome = providers
                .finish(
                    &id,
                    params,
                    flow,
                    &http,
                    &state.sessions,
                    client_info(&req),
                    signed_in::presented(&session),
                )
                .await;
            match outcome {
                Ok(done) => {
                    signed_in::opened(&session, done.auth)?;
                    see_other(&done.return_to)
                }
                Err(OidcError::UnknownProvider) => return Err(ApiError::NotFound),
                Err(e) => {
                    state.sessions.provider_sign_in_failed();
                    failed(&id, &e)
                }
            }
        }
    };
    answer
        .add_cookie(&cookies.flow_removal())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(answer)
}

/// `POST /auth/oidc/{id}/backchannel-logout` with `logout_token=<JWT>` (form-encoded): 200
/// once every family of the named provider session or subject is revoked; 400 for a token
/// that does not pass; 503 when the store cannot be reached (the provider may retry).
pub async fn backchannel_logout(
    id: Path<String>,
    body: Bytes,
    providers: Data<IdentityProviders>,
    http: Data<ProviderClient>,
    state: Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = url::form_urlencoded::parse(&body)
        .filter(|(name, _)| name == "logout_token")
        .map(|(_, value)| value.into_owned())
        .collect::<Vec<_>>();
    let [token] = token.as_slice() else {
        return Err(ApiError::BadRequest(
            "the body must carry one logout_token".into(),
        ));
    };
    let now = state.sessions.now();
    let request = match backchannel::validate(&providers, &id, token, &http, now).await {
        Ok(request) => request,
        Err(OidcError::UnknownProvider) => return Err(ApiError::NotFound),
        Err(OidcError::ProviderUnavailable(detail)) => {
            tracing::warn!(event = "provider_logout_refused", provider = %id, %detail, "provider keys unavailable");
            return Err(ApiError::Unavailable(detail));
        }
        Err(e) => {
            tracing::warn!(event = "provider_logout_refused", provider = %id, detail = %e, "logout token refused");
            return Err(ApiError::BadRequest("invalid logout_token".into()));
        }
    };
    match backchannel::revoke(&state.sessions, &id, &request).await {
        Ok(_) => Ok(HttpResponse::Ok().finish()),
        Err(OidcError::Session(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The values of `names` in `query`, in order (`None` where absent); `Err` if any of them is
/// repeated.
#[allow(clippy::result_unit_err)]
pub fn single_params(query: &str, names: &[&str]) -> Result<Vec<Option<String>>, ()> {
    let mut values: Vec<Option<String>> = vec![None; names.len()];
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if let Some(i) = names.iter().position(|n| *n == name) {
            if values[i].is_some() {
                return Err(());
            }
            values[i] = Some(value.into_owned());
        }
    }
    Ok(values)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// A sign-in that did not complete: logged with its detail, answered with its code only.
fn failed(provider: &str, error: &OidcError) -> HttpResponse {
    tracing::warn!(event = "oidc_sign_in_failed", provider, code = error.code(), detail = %error, "sign-in through an identity provider failed");
    see_other(&format!("/?login_error={}", error.code()))
}
