//! The one error type at the HTTP edge: each variant maps to a status and a stable problem
//! `type` (RFC 9457 `application/problem+json`). 5xx bodies carry no internals; the cause is
//! logged instead.

use actix_web::{
    error::JsonPayloadError,
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};

use crate::session::{InvalidReason, SessionError};

/// Seconds a client should wait before retrying after a store outage.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// The body of every error answer (`application/problem+json`, RFC 9457); for the OpenAPI
/// document, the answers themselves are built in [`ApiError::error_response`].
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:bffgate:problem:<slug>`, stable.
    #[serde(rename = "type")]
    #[schema(pattern = "^urn:bffgate:problem:[a-z-]+$")]
    pub kind: String,
    pub title: String,
    /// The answer's status code.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// For the client; never internals.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
}

/// Every error an HTTP handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The body did not arrive within `request_body_timeout`.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("invalid email or password")]
    BadCredentials,
    /// Too many failed logins; retry after this many seconds.
    #[error("too many failed logins; try again in {0} s")]
    TooManyRequests(u64),
    #[error("no valid session")]
    Unauthenticated(InvalidReason),
    /// The session holds `session.max_streams` open streams already.
    #[error("this session has too many open streams; close one and retry")]
    TooManyStreams,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    /// A method the path does not answer; the value is the `Allow` header (the methods it
    /// does answer).
    #[error("this path answers {0} only")]
    MethodNotAllowed(String),
    #[error("the session store is unavailable")]
    Unavailable(String),
    #[error("the upstream could not be reached")]
    BadGateway,
    #[error("the upstream did not answer in time")]
    GatewayTimeout,
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RequestTimeout => "request-timeout",
            Self::BadCredentials => "invalid-credentials",
            Self::TooManyRequests(_) => "too-many-requests",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::TooManyStreams => "too-many-streams",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::Unavailable(_) => "store-unavailable",
            Self::BadGateway => "bad-gateway",
            Self::GatewayTimeout => "gateway-timeout",
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Malformed request",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Request body too large",
            Self::RequestTimeout => "Request timeout",
            Self::BadCredentials => "Invalid email or password",
            Self::TooManyRequests(_) => "Too many failed logins",
            Self::Unauthenticated(_) => "Not signed in",
            Self::TooManyStreams => "Too many open streams",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::Unavailable(_) => "Temporarily unavailable",
            Self::BadGateway => "Bad gateway",
            Self::GatewayTimeout => "Gateway timeout",
            Self::Internal(_) => "Internal error",
        }
    }

    /// Text for the client; never internals.
    fn detail(&self) -> Option<String> {
        match self {
            Self::BadRequest(d) => Some(d.clone()),
            Self::Forbidden(why) => Some((*why).to_owned()),
            Self::Unauthenticated(_) => Some("sign in again".into()),
            Self::Unavailable(_) => Some(
                "the session store cannot be reached; try again shortly, your session is kept"
                    .into(),
            ),
            Self::UnsupportedMediaType
            | Self::TooManyRequests(_)
            | Self::TooManyStreams
            | Self::PayloadTooLarge
            | Self::MethodNotAllowed(_)
            | Self::RequestTimeout
            | Self::BadGateway
            | Self::GatewayTimeout => Some(self.to_string()),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadCredentials | Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests(_) | Self::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "store unavailable"),
            _ => {}
        }
        let body = Problem {
            kind: format!("urn:bffgate:problem:{}", self.slug()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            Self::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
            }
            Self::TooManyRequests(seconds) => {
                response.insert_header((header::RETRY_AFTER, seconds.to_string()));
            }
            Self::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, allow.as_str()));
            }
            _ => {}
        }
        // A 401 removes the session cookie: the signed-in step marked the request
        // (`cookie::clear`); this type only answers.
        response.body(body)
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::BadCredentials => Self::BadCredentials,
            SessionError::Throttled { retry_after_ms } => Self::TooManyRequests(
                u64::try_from(retry_after_ms.max(1))
                    .unwrap_or(1)
                    .div_ceil(1000),
            ),
            SessionError::Invalid(reason) => Self::Unauthenticated(reason),
            SessionError::Unavailable(m) => Self::Unavailable(m),
            SessionError::NotFound => Self::NotFound,
            SessionError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<JsonPayloadError> for ApiError {
    fn from(e: JsonPayloadError) -> Self {
        match e {
            JsonPayloadError::ContentType => Self::UnsupportedMediaType,
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                Self::PayloadTooLarge
            }
            JsonPayloadError::Deserialize(e) => Self::BadRequest(format!("invalid JSON body: {e}")),
            other => Self::BadRequest(format!("unreadable body: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody as _;

    fn body_of(e: &ApiError) -> (StatusCode, String) {
        let response = e.error_response();
        let status = response.status();
        let bytes = response.into_body().try_into_bytes().unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[test]
    fn a_500_answer_carries_no_internal_detail() {
        let cause = "redis://:hunter2@10.0.0.5:6379 family fam:{abc} corrupt at field gen";
        let (status, body) = body_of(&ApiError::Internal(cause.into()));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !body.contains("hunter2") && !body.contains("corrupt"),
            "{body}"
        );
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(problem["type"], "urn:bffgate:problem:internal");
        assert_eq!(problem["status"], 500);
        assert!(problem.get("detail").is_none(), "{body}");
    }

    #[test]
    fn a_503_answer_names_no_store_detail_and_asks_to_retry() {
        let e = ApiError::Unavailable("connection refused (os error 111) to 10.0.0.5".into());
        let response = e.error_response();
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(RETRY_AFTER_SECONDS.to_string().as_bytes())
        );
        let (_, body) = body_of(&e);
        assert!(
            !body.contains("10.0.0.5") && !body.contains("refused"),
            "{body}"
        );
    }
}
