//! Answers several endpoints share, as OpenAPI responses: types that exist for the document
//! only (`utoipa::IntoResponses`) and are never built — the answers themselves come from
//! [`ApiError`](crate::web::ApiError). A header documented on a response is always sent with
//! it (the served document marks it required).

use utoipa::IntoResponses;

use crate::web::problem::Problem;

/// 401: the request carries no live session.
#[derive(IntoResponses)]
#[response(
    status = 401,
    description = "No live session: none was sent, or it expired, was revoked or was replayed. \
                   A session cookie that was sent is cleared (`Set-Cookie`).",
    content_type = "application/problem+json"
)]
pub struct NotSignedIn(pub Problem);

/// 503: the session store is unreachable.
#[derive(IntoResponses)]
#[response(
    status = 503,
    description = "The session store is unreachable. The session and its cookie are kept; retry.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))
)]
pub struct StoreUnavailable(pub Problem);
