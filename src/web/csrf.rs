//! CSRF: the only place a request is judged same-site (DESIGN.md §7).
//!
//! A browser request to `/auth/*` or a cookie-authenticated route must carry `X-CSRF: 1` — a
//! cross-site page cannot add a custom header without a CORS preflight, which the gateway
//! never grants (a route may drop this one requirement with `csrf = false`). Whatever the
//! route says:
//! - `Sec-Fetch-Site: cross-site` is refused; an unsafe method needs `same-origin` or `none`
//!   (`same-site` is not enough: a sibling subdomain is same-site);
//! - an `Origin` header, when present, must be the public origin, exactly;
//! - a WebSocket upgrade (browsers cannot add `X-CSRF` to one) must carry `Origin`, equal to
//!   the public origin.

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{
        header::{HeaderMap, ORIGIN},
        Method,
    },
    middleware::Next,
    web::Data,
    ResponseError as _,
};

use super::problem::ApiError;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRejection {
    MissingHeader,
    CrossSite,
    NotSameOrigin,
    ForeignOrigin,
}

impl CsrfRejection {
    pub fn message(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing the X-CSRF: 1 request header",
            Self::CrossSite => "cross-site requests are not allowed",
            Self::NotSameOrigin => "this request must come from the gateway's own origin",
            Self::ForeignOrigin => "the Origin header is missing or does not match this gateway",
        }
    }
}

/// The gateway's own origin, as browsers write it in `Origin`.
#[derive(Debug, Clone)]
pub struct PublicOrigin(pub String);

/// Does `X-CSRF` matter for this request?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfHeader {
    Required,
    /// `csrf = false` on a route: only the header requirement is dropped.
    NotRequired,
}

/// Judges one request to `/auth/*` or a cookie-authenticated route against `origin`.
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    origin: &str,
    header: CsrfHeader,
) -> Result<(), CsrfRejection> {
    if header == CsrfHeader::Required
        && headers.get("x-csrf").and_then(|v| v.to_str().ok()) != Some("1")
    {
        return Err(CsrfRejection::MissingHeader);
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        // Compared exactly: the values are Structured Field tokens, which are case-sensitive
        // (browsers send them in lower case), and the OpenAPI document lists exactly these.
        let site = site.to_str().unwrap_or("cross-site");
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        match site {
            "same-origin" | "none" => {}
            "same-site" if safe => {}
            "cross-site" => return Err(CsrfRejection::CrossSite),
            _ => return Err(CsrfRejection::NotSameOrigin),
        }
    }
    match headers.get(ORIGIN) {
        Some(sent) if sent.as_bytes() != origin.as_bytes() => Err(CsrfRejection::ForeignOrigin),
        _ => Ok(()),
    }
}

/// Judges a WebSocket upgrade: browsers cannot add `X-CSRF` to one, but they always send
/// `Origin`, and it must be ours exactly (Fetch Metadata's `same-site` would let a sibling
/// subdomain in).
pub fn check_upgrade(headers: &HeaderMap, origin: &str) -> Result<(), CsrfRejection> {
    match headers.get(ORIGIN) {
        Some(sent) if sent.as_bytes() == origin.as_bytes() => Ok(()),
        _ => Err(CsrfRejection::ForeignOrigin),
    }
}

/// Middleware for `/auth/*`; answers 403 `application/problem+json`. The refusal is an answer,
/// not an error, so the middleware around it (`Cache-Control: no-store`) still sees it.
pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let origin = req
        .app_data::<Data<PublicOrigin>>()
        .map(|o| o.0.clone())
        .unwrap_or_default();
    if let Err(rejection) = check(req.method(), req.headers(), &origin, CsrfHeader::Required) {
        tracing::info!(event = "csrf_rejected", reason = ?rejection, path = %req.path(), "request refused");
        let refusal = ApiError::Forbidden(rejection.message()).error_response();
        return Ok(req.into_response(refusal).map_into_right_body());
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    const ORIGIN_OK: &str = "http://localhost:8080";

    use crate::web::test_support::header_map as headers;

    fn post(pairs: &[(&'static str, &'static str)]) -> Result<(), CsrfRejection> {
        check(
            &Method::POST,
            &headers(pairs),
            ORIGIN_OK,
            CsrfHeader::Required,
        )
    }

    #[test]
    fn same_origin_request_with_header_passes() {
        assert_eq!(
            post(&[
                ("x-csrf", "1"),
                ("sec-fetch-site", "same-origin"),
                ("origin", ORIGIN_OK),
            ]),
            Ok(())
        );
        assert_eq!(post(&[("x-csrf", "1")]), Ok(()));
        assert_eq!(post(&[("x-csrf", "1"), ("sec-fetch-site", "none")]), Ok(()));
    }

    #[test]
    fn missing_or_wrong_header_is_refused() {
        assert_eq!(post(&[]), Err(CsrfRejection::MissingHeader));
        assert_eq!(
            post(&[("x-csrf", "yes")]),
            Err(CsrfRejection::MissingHeader)
        );
    }

    #[test]
    fn cross_site_fetch_metadata_is_refused() {
        let h = headers(&[("x-csrf", "1"), ("sec-fetch-site", "cross-site")]);
        for method in [Method::GET, Method::POST] {
            assert_eq!(
                check(&method, &h, ORIGIN_OK, CsrfHeader::Required),
                Err(CsrfRejection::CrossSite)
            );
        }
    }

    #[test]
    fn fetch_metadata_values_are_compared_exactly() {
        for variant in ["Same-Origin", "NONE", "same-origin "] {
            let mut h = headers(&[("x-csrf", "1")]);
            h.insert(
                HeaderName::from_static("sec-fetch-site"),
                HeaderValue::from_static(variant),
            );
            assert_eq!(
                check(&Method::POST, &h, ORIGIN_OK, CsrfHeader::Required),
                Err(CsrfRejection::NotSameOrigin),
                "{variant:?}"
            );
        }
    }

    #[test]
    fn same_site_is_not_enough_for_unsafe_methods() {
        let h = headers(&[("x-csrf", "1"), ("sec-fetch-site", "same-site")]);
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                check(&method, &h, ORIGIN_OK, CsrfHeader::Required),
                Err(CsrfRejection::NotSameOrigin),
                "{method}"
            );
        }
        assert_eq!(
            check(&Method::GET, &h, ORIGIN_OK, CsrfHeader::Required),
            Ok(())
        );
    }

    #[test]
    fn an_origin_when_present_must_be_exactly_ours() {
        for foreign in [
            "https://evil.example",
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
        ] {
            let h = headers(&[("x-csrf", "1"), ("sec-fetch-site", "same-origin")]);
            let mut h = h;
            h.insert(ORIGIN, HeaderValue::from_static(foreign));
            assert_eq!(
                check(&Method::POST, &h, ORIGIN_OK, CsrfHeader::Required),
                Err(CsrfRejection::ForeignOrigin),
                "{foreign}"
            );
        }
    }

    #[test]
    fn without_the_header_requirement_cross_site_unsafe_requests_are_still_refused() {
        let judge = |pairs| {
            check(
                &Method::POST,
                &headers(pairs),
                ORIGIN_OK,
                CsrfHeader::NotRequired,
            )
        };
        assert_eq!(
            judge(&[("origin", "https://evil.example")]),
            Err(CsrfRejection::ForeignOrigin)
        );
        assert_eq!(
            judge(&[("sec-fetch-site", "cross-site")]),
            Err(CsrfRejection::CrossSite)
        );
        assert_eq!(
            judge(&[("sec-fetch-site", "same-site")]),
            Err(CsrfRejection::NotSameOrigin)
        );
        assert_eq!(judge(&[("sec-fetch-site", "same-origin")]), Ok(()));
    }

    #[test]
    fn websocket_upgrades_need_exactly_our_origin() {
        assert_eq!(
            check_upgrade(&headers(&[("origin", ORIGIN_OK)]), ORIGIN_OK),
            Ok(())
        );
        for refused in [
            headers(&[]),
            headers(&[("origin", "https://evil.example")]),
            headers(&[
                ("origin", "https://evil.localhost"),
                ("sec-fetch-site", "same-site"),
            ]),
            headers(&[
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ]),
        ] {
            assert_eq!(
                check_upgrade(&refused, ORIGIN_OK),
                Err(CsrfRejection::ForeignOrigin)
            );
        }
    }
}
