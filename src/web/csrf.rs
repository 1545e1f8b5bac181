//! CSRF: the only place a request is judged same-site (DESIGN.md §7).
//!
//! A browser request must carry `X-CSRF: 1` — a cross-site page cannot add a custom header
//! without a CORS preflight, which the gateway never grants. `Sec-Fetch-Site: cross-site` is
//! refused; without Fetch Metadata, an `Origin` header, when present, must be the gateway's
//! public origin. (With Fetch Metadata the browser has judged the origin itself, so a page
//! opened as `127.0.0.1` instead of `localhost` still works.)

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderMap, ORIGIN},
    middleware::Next,
    web::Data,
};

use super::problem::ApiError;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRejection {
    MissingHeader,
    CrossSite,
    ForeignOrigin,
}

impl CsrfRejection {
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing the X-CSRF: 1 request header",
            Self::CrossSite => "cross-site requests are not allowed",
            Self::ForeignOrigin => "the Origin header is missing or does not match this gateway",
        }
    }
}

/// The gateway's own origin, as browsers write it in `Origin`.
#[derive(Debug, Clone)]
pub struct PublicOrigin(pub String);

/// Judges one request's headers against `origin`.
pub fn check(headers: &HeaderMap, origin: &str) -> Result<(), CsrfRejection> {
    let csrf = headers.get("x-csrf").and_then(|v| v.to_str().ok());
    if csrf != Some("1") {
        return Err(CsrfRejection::MissingHeader);
    }
    same_site(headers, origin, false)
}

/// Fetch Metadata when the browser sends it (`cross-site` is refused); without it, the
/// `Origin` header — when present, or always when `origin_required` — must be ours.
fn same_site(
    headers: &HeaderMap,
    origin: &str,
    origin_required: bool,
) -> Result<(), CsrfRejection> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str() {
            Ok(site) if !site.eq_ignore_ascii_case("cross-site") => Ok(()),
            _ => Err(CsrfRejection::CrossSite),
        };
    }
    match headers.get(ORIGIN) {
        Some(sent) if sent.to_str().ok() == Some(origin) => Ok(()),
        None if !origin_required => Ok(()),
        _ => Err(CsrfRejection::ForeignOrigin),
    }
}

/// Judges a WebSocket upgrade: browsers cannot add `X-CSRF` to one, but they always send
/// `Origin` (and, when they have it, Fetch Metadata).
pub fn check_upgrade(headers: &HeaderMap, origin: &str) -> Result<(), CsrfRejection> {
    same_site(headers, origin, true)
}

/// Middleware for routes that need the check; answers 403 `application/problem+json`.
pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = req
        .app_data::<Data<PublicOrigin>>()
        .map(|o| o.0.clone())
        .unwrap_or_default();
    if let Err(rejection) = check(req.headers(), &origin) {
        tracing::info!(event = "csrf_rejected", reason = ?rejection, path = %req.path(), "request refused");
        return Err(ApiError::Forbidden(rejection.message()).into());
    }
    next.call(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    const ORIGIN_OK: &str = "http://localhost:8080";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_request_with_header_passes() {
        let h = headers(&[
            ("x-csrf", "1"),
            ("sec-fetch-site", "same-origin"),
            ("origin", ORIGIN_OK),
        ]);
        assert_eq!(check(&h, ORIGIN_OK), Ok(()));
        assert_eq!(check(&headers(&[("x-csrf", "1")]), ORIGIN_OK), Ok(()));
    }

    #[test]
    fn missing_or_wrong_header_is_refused() {
        assert_eq!(
            check(&headers(&[]), ORIGIN_OK),
            Err(CsrfRejection::MissingHeader)
        );
        assert_eq!(
            check(&headers(&[("x-csrf", "yes")]), ORIGIN_OK),
            Err(CsrfRejection::MissingHeader)
        );
    }

    #[test]
    fn cross_site_fetch_metadata_is_refused() {
        let h = headers(&[("x-csrf", "1"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(check(&h, ORIGIN_OK), Err(CsrfRejection::CrossSite));
    }

    #[test]
    fn websocket_upgrades_need_our_origin() {
        assert_eq!(
            check_upgrade(&headers(&[("origin", ORIGIN_OK)]), ORIGIN_OK),
            Ok(())
        );
        assert_eq!(
            check_upgrade(&headers(&[]), ORIGIN_OK),
            Err(CsrfRejection::ForeignOrigin)
        );
        assert_eq!(
            check_upgrade(&headers(&[("origin", "https://evil.example")]), ORIGIN_OK),
            Err(CsrfRejection::ForeignOrigin)
        );
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        let h = headers(&[
            ("x-csrf", "1"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(check(&h, ORIGIN_OK), Ok(()));
        let h = headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert_eq!(check_upgrade(&h, ORIGIN_OK), Ok(()));
        let h = headers(&[("sec-fetch-site", "cross-site"), ("origin", ORIGIN_OK)]);
        assert_eq!(check_upgrade(&h, ORIGIN_OK), Err(CsrfRejection::CrossSite));
    }

    #[test]
    fn foreign_origin_is_refused() {
        let h = headers(&[("x-csrf", "1"), ("origin", "https://evil.example")]);
        assert_eq!(check(&h, ORIGIN_OK), Err(CsrfRejection::ForeignOrigin));
    }
}
