//! The browser app: files under `static_dir`, served for paths no route claims, with a strict
//! Content-Security-Policy and caching rules.

use std::path::{Path, PathBuf};

use actix_web::{
    http::{header, Method},
    HttpRequest, HttpResponse,
};

use super::problem::ApiError;

/// Security headers on everything served from `static_dir`: scripts and styles only from
/// this origin, no inline code, no framing, no plugins, fetches only to this origin.
const STATIC_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

/// Serves the file for a normalised `path` (no dot segments, no segment that decodes to a
/// separator) from `dir`: `GET` and `HEAD` only, `index.html` for directories, 404 otherwise.
pub async fn serve(req: &HttpRequest, dir: &Path, path: &str) -> Result<HttpResponse, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) || !dir.is_dir() {
        return Err(ApiError::NotFound);
    }
    let mut file = PathBuf::from(dir);
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        file.push(
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .as_ref(),
        );
    }
    if file.is_dir() {
        file.push("index.html");
    }
    let is_html = file.extension().is_some_and(|e| e == "html");
    let named = actix_files::NamedFile::open_async(&file)
        .await
        .map_err(|_| ApiError::NotFound)?;
    let mut response = named.into_response(req);
    let headers = response.headers_mut();
    for (name, value) in STATIC_HEADERS {
        headers.insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_static(value),
        );
    }
    // Pages revalidate every time (they name the scripts); scripts and styles may be cached
    // briefly and are revalidated with their ETag after that.
    let cache = if is_html {
        "no-cache"
    } else {
        "public, max-age=300, must-revalidate"
    };
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static(cache),
    );
    Ok(response)
}
