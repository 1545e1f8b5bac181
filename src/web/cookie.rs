//! The session cookie: the only place it is built, read, written or removed.
//!
//! actix-session's `CookieSessionStore` seals `{at, rt}` with AES-256-GCM (private content
//! security) under the cookie key. `Max-Age` is the idle timeout, renewed whenever the cookie
//! changes; the server alone decides validity. A cookie that does not open is treated as
//! absent and, on a 401, removed.
//!
//! Removal is decided in one way only: [`clear`] marks the request, and the
//! [`clear_when_marked`] middleware answers with a removal cookie if the request carried one.
//!
//! Cookie names are compared byte for byte as the browser sent them, never percent-decoded
//! ([`exact_name_only`]): `__Host%2Dbff` is not our cookie, since browsers apply no prefix
//! rule to it and anyone on a sibling subdomain or a plain-HTTP path can plant it. A name
//! that any browser or parser could read as ours ([`could_be_named`]) is dropped on the way
//! in, and an upstream may never set one.

use std::time::Duration;

use actix_session::{
    config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy},
    storage::CookieSessionStore,
    Session, SessionMiddleware,
};
use actix_web::{
    body::MessageBody,
    cookie::{time::Duration as CookieDuration, Cookie, CookieJar, Key, SameSite},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web::Data,
    HttpMessage as _, HttpRequest,
};

use crate::{config::Config, session::CookieTokens};

const ACCESS: &str = "at";
const REFRESH: &str = "rt";
/// The refresh token the current one replaced: proof of a rotation the store lost.
const PREVIOUS: &str = "pr";
/// The current refresh token's generation (beside the token, which older gateways parse).
const GENERATION: &str = "gn";

/// Marker a request carries when its answer must remove the session cookie (see [`clear`]).
#[derive(Debug, Clone, Copy)]
struct ClearSessionCookie;

/// Marks `req` so that its answer, whatever it is, removes the session cookie (if the request
/// carried one): the session is over, or it did not open.
pub fn clear(req: &HttpRequest) {
    req.extensions_mut().insert(ClearSessionCookie);
}

fn is_marked(req: &HttpRequest) -> bool {
    req.extensions().get::<ClearSessionCookie>().is_some()
}

/// How the session cookie is named, scoped and sealed.
#[derive(Clone)]
pub struct CookieSettings {
    pub name: String,
    secure: bool,
    same_site: SameSite,
    idle: Duration,
    key: Key,
    /// Earlier keys: cookies they sealed are re-sealed with `key` (see [`reseal_previous`]).
    previous: Vec<Key>,
}

impl std::fmt::Debug for CookieSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieSettings")
            .field("name", &self.name)
            .field("secure", &self.secure)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl CookieSettings {
    /// From the configuration; `master_key` is the 64-byte cookie key.
    pub fn new(config: &Config, master_key: &[u8]) -> Result<Self, String> {
        let key = Key::try_from(master_key).map_err(|e| format!("cookie.key: {e}"))?;
        let previous = config
            .cookie
            .previous_key_bytes()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|bytes| Key::try_from(bytes.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cookie.previous_keys: {e}"))?;
        Ok(Self {
            name: config.cookie.effective_name(),
            secure: config.cookie.secure,
            same_site: match config.cookie.same_site {
                crate::config::SameSite::Strict => SameSite::Strict,
                crate::config::SameSite::Lax => SameSite::Lax,
            },
            idle: config.session.idle_timeout,
            key,
            previous,
        })
    }

    fn max_age(&self) -> CookieDuration {
        CookieDuration::seconds(i64::try_from(self.idle.as_secs()).unwrap_or(i64::MAX))
    }

    /// The actix-session middleware that opens and seals the cookie.
    pub fn middleware(&self) -> SessionMiddleware<CookieSessionStore> {
        let max_age = self.max_age();
        SessionMiddleware::builder(CookieSessionStore::default(), self.key.clone())
            .cookie_name(self.name.clone())
            .cookie_secure(self.secure)
            .cookie_http_only(true)
            .cookie_same_site(self.same_site)
            .cookie_path("/".into())
            .cookie_domain(None)
            .cookie_content_security(CookieContentSecurity::Private)
            .session_lifecycle(
                PersistentSession::default()
                    .session_ttl(max_age)
                    .session_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
            )
            .build()
    }

    /// A `Set-Cookie` that removes the session cookie (same name, path and attributes).
    pub fn removal(&self) -> Cookie<'static> {
        let mut cookie = Cookie::build(self.name.clone(), "")
            .path("/")
            .secure(self.secure)
            .http_only(true)
            .same_site(self.same_site)
            .finish();
        cookie.make_removal();
        cookie
    }

    /// The plain content of a sealed `value` if `key` opens it.
    fn open_with(&self, key: &Key, value: &str) -> Option<String> {
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(self.name.clone(), value.to_owned()));
        jar.private(key)
            .get(&self.name)
            .map(|c| c.value().to_owned())
    }

    /// `value` re-sealed with the current key, if the current key cannot open it and an
    /// earlier key can.
    fn reseal(&self, value: &str) -> Option<String> {
        if self.previous.is_empty() || self.open_with(&self.key, value).is_some() {
            return None;
        }
        let plain = self
            .previous
            .iter()
            .find_map(|key| self.open_with(key, value))?;
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(Cookie::new(self.name.clone(), plain));
        jar.get(&self.name).map(|c| c.value().to_owned())
    }

    /// The session cookie with a new sealed value, as the session middleware would set it.
    fn with_value(&self, value: String) -> Cookie<'static> {
        Cookie::build(self.name.clone(), value)
            .path("/")
            .secure(self.secure)
            .http_only(true)
            .same_site(self.same_site)
            .max_age(self.max_age())
            .finish()
    }

    /// The sign-in flow cookie's name (OpenID Connect, `oidc`): the session cookie's name with
    /// `-oidc`, so it keeps the `__Host-` prefix and its rules.
    pub fn flow_name(&self) -> String {
        format!("{}-oidc", self.name)
    }

    /// The sign-in flow cookie holding `plain`, sealed under the cookie key (AES-256-GCM,
    /// the cookie's name bound in, so it can never pass for the session cookie). `SameSite=Lax`
    /// because the callback that reads it is a cross-site top-level navigation; it lives
    /// `max_age` and is removed by the callback, whatever its outcome.
    pub fn flow_cookie(&self, plain: String, max_age: Duration) -> Cookie<'static> {
        let name = self.flow_name();
        let mut jar = CookieJar::new();
        jar.private_mut(&self.key)
            .add(Cookie::new(name.clone(), plain));
        let sealed = jar
            .get(&name)
            .map(|c| c.value().to_owned())
            .unwrap_or_default();
        Cookie::build(name, sealed)
            .path("/")
            .secure(self.secure)
            .http_only(true)
            .same_site(SameSite::Lax)
            .max_age(CookieDuration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(600),
            ))
            .finish()
    }

    /// The plain content of the request's flow cookie, if it carries one that opens.
    pub fn open_flow(&self, req: &HttpRequest) -> Option<String> {
        let name = self.flow_name();
        let sent = req.cookie(&name)?;
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(name.clone(), sent.value().to_owned()));
        jar.private(&self.key)
            .get(&name)
            .map(|c| c.value().to_owned())
    }

    /// A `Set-Cookie` that removes the flow cookie.
    pub fn flow_removal(&self) -> Cookie<'static> {
        let mut cookie = Cookie::build(self.flow_name(), "")
            .path("/")
            .secure(self.secure)
            .http_only(true)
            .same_site(SameSite::Lax)
            .finish();
        cookie.make_removal();
        cookie
    }

    /// Did the request carry a session cookie at all (whether or not it opens)?
    pub fn is_present(&self, req: &HttpRequest) -> bool {
        req.cookie(&self.name).is_some()
    }
}

/// Could a browser, or a parser that percent-decodes, folds case or trims whitespace, read
/// the cookie name `raw` (as sent, untrimmed) as `name`? Also true for a nameless cookie (`=v`
/// or `v`): browsers send those as the bare value, which can be `name=…`. Whitespace is
/// Unicode's (`str::trim`), as actix-web's cookie parser trims it: `\u{a0}__Host-bff` is
/// `__Host-bff` to actix-session.
pub fn could_be_named(raw: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(raw);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return true;
    }
    let decoded = percent_encoding::percent_decode_str(trimmed).decode_utf8_lossy();
    decoded.trim().eq_ignore_ascii_case(name)
}

/// Middleware, outside everything that reads cookies: the request's `Cookie` header keeps
/// only names that cannot be mistaken for the session cookie, plus the session cookie under
/// its exact name when it appears once, and only pairs that are UTF-8 (actix-web reads no
/// cookie at all from a header that is not). The exact name twice (only possible for a name
/// without the `__Host-` prefix, which a sibling subdomain can set) is ambiguous: neither is
/// used, so the request has no session.
pub async fn exact_name_only(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(settings) = req.app_data::<Data<CookieSettings>>().cloned() {
        keep_exact_name(req.headers_mut(), &settings.name);
    }
    next.call(req).await
}

/// Rewrites `headers`' `Cookie` headers as [`exact_name_only`] says, if anything is dropped.
/// Public for the property tests and fuzz targets (it is what the browser's header meets).
pub fn keep_exact_name(headers: &mut header::HeaderMap, name: &str) {
    // Judged on borrowed slices: nothing is copied unless a pair is dropped (the rare case).
    let name_of = |pair: &[u8]| -> usize { pair.iter().position(|b| *b == b'=').unwrap_or(0) };
    let (joined, exact) = {
        let pairs: Vec<&[u8]> = headers
            .get_all(header::COOKIE)
            .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
            .map(<[u8]>::trim_ascii)
            .filter(|pair| !pair.is_empty())
            .collect();
        let exact = pairs
            .iter()
            .filter(|p| &p[..name_of(p)] == name.as_bytes())
            .count();
        let keep = |p: &&[u8]| {
            // actix-web reads no cookie at all from a header that is not UTF-8: one planted
            // pair would hide the session cookie.
            if std::str::from_utf8(p).is_err() {
                return false;
            }
            let raw = &p[..name_of(p)];
            if raw == name.as_bytes() {
                exact == 1
            } else {
                !could_be_named(raw, name)
            }
        };
        if pairs.iter().all(keep) {
            return;
        }
        let kept: Vec<&[u8]> = pairs.into_iter().filter(keep).collect();
        (kept.join(&b"; "[..]), exact)
    };
    if exact > 1 {
        tracing::warn!(
            event = "session_cookie_ambiguous",
            copies = exact,
            "the session cookie's name appeared more than once; the request has no session"
        );
    }
    headers.remove(header::COOKIE);
    if let Ok(value) = header::HeaderValue::from_bytes(&joined) {
        if !joined.is_empty() {
            headers.insert(header::COOKIE, value);
        }
    }
}

/// The tokens in the session, if the cookie opened and holds both.
pub fn read(session: &Session) -> Option<CookieTokens> {
    let access = session.get::<String>(ACCESS).ok().flatten()?;
    let refresh = session.get::<String>(REFRESH).ok().flatten()?;
    let previous = session.get::<String>(PREVIOUS).ok().flatten();
    let generation = session.get::<u64>(GENERATION).ok().flatten();
    Some(CookieTokens {
        access,
        refresh,
        previous,
        generation,
    })
}

/// Puts new tokens in the session; the middleware seals them into a new cookie.
pub fn write(session: &Session, tokens: &CookieTokens) -> Result<(), String> {
    // An absent value is removed: a stale one from the cookie's previous state must not stay.
    fn put_or_remove<T: serde::Serialize>(
        session: &Session,
        key: &str,
        value: Option<&T>,
    ) -> Result<(), actix_session::SessionInsertError> {
        match value {
            Some(value) => session.insert(key, value),
            None => {
                session.remove(key);
                Ok(())
            }
        }
    }
    session
        .insert(ACCESS, &tokens.access)
        .and_then(|()| session.insert(REFRESH, &tokens.refresh))
        .and_then(|()| put_or_remove(session, PREVIOUS, tokens.previous.as_ref()))
        .and_then(|()| put_or_remove(session, GENERATION, tokens.generation.as_ref()))
        .map_err(|e| e.to_string())
}

/// Middleware: removes the session cookie when the request was marked by [`clear`] and
/// carried one. Removal is never decided anywhere else.
pub async fn clear_when_marked(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let settings = req.app_data::<Data<CookieSettings>>().cloned();
    let had_cookie = settings
        .as_ref()
        .is_some_and(|s| s.is_present(req.request()));
    let mut res = next.call(req).await?;
    let marked = is_marked(res.request());
    if let (true, true, Some(settings)) = (marked, had_cookie, settings) {
        let value = header::HeaderValue::from_str(&settings.removal().to_string())
            .map_err(actix_web::error::ErrorInternalServerError)?;
        let headers = res.response_mut().headers_mut();
        // A session that ended in the same request may have rotated first: the removal
        // replaces that cookie rather than following it.
        let ours = format!("{}=", settings.name);
        let others: Vec<header::HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .filter(|v| !v.as_bytes().starts_with(ours.as_bytes()))
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for other in others {
            headers.append(header::SET_COOKIE, other);
        }
        headers.append(header::SET_COOKIE, value);
    }
    Ok(res)
}

/// Middleware, outside the session middleware: a session cookie sealed with one of
/// `cookie.previous_keys` is re-sealed with the current key before the session is read, and
/// the re-sealed cookie is set on the response unless the response sets or removes the
/// cookie itself. Key rotation therefore logs nobody out.
pub async fn reseal_previous(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let settings = req.app_data::<Data<CookieSettings>>().cloned();
    let resealed = settings
        .as_ref()
        .and_then(|settings| reseal_request_cookie(settings, &mut req));
    let mut res = next.call(req).await?;
    if let (Some(value), Some(settings)) = (resealed, settings) {
        let sets_cookie = res
            .response()
            .headers()
            .get_all(header::SET_COOKIE)
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| Cookie::parse_encoded(v).ok())
            .any(|c| c.name() == settings.name);
        if !sets_cookie && !is_marked(res.request()) {
            let cookie = settings.with_value(value);
            let value = header::HeaderValue::from_str(&cookie.encoded().to_string())
                .map_err(actix_web::error::ErrorInternalServerError)?;
            res.response_mut()
                .headers_mut()
                .append(header::SET_COOKIE, value);
        }
    }
    Ok(res)
}

/// Rewrites the request's `Cookie` header when the session cookie opens only with an
/// earlier key; returns the re-sealed value.
fn reseal_request_cookie(settings: &CookieSettings, req: &mut ServiceRequest) -> Option<String> {
    if settings.previous.is_empty() {
        return None;
    }
    let joined = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let prefix = format!("{}=", settings.name);
    let mut resealed = None;
    let pairs: Vec<String> = joined
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            if resealed.is_some() || !pair.starts_with(&prefix) {
                return pair.to_owned();
            }
            let Ok(cookie) = Cookie::parse_encoded(pair) else {
                return pair.to_owned();
            };
            match settings.reseal(cookie.value()) {
                Some(new_value) => {
                    let rewritten = Cookie::new(settings.name.clone(), new_value.clone())
                        .encoded()
                        .to_string();
                    resealed = Some(new_value);
                    rewritten
                }
                None => pair.to_owned(),
            }
        })
        .collect();
    let value = header::HeaderValue::from_str(&pairs.join("; ")).ok()?;
    resealed.as_ref()?;
    req.headers_mut().insert(header::COOKIE, value);
    resealed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_read_as_ours() {
        for raw in [
            &b"__Host-bff"[..],
            b" __Host-bff ",
            b"__Host%2Dbff",
            b"__host%2dBFF",
            b"__HOST-BFF",
            b"",
            b"  ",
            "\u{a0}__Host-bff".as_bytes(),
            "__Host-bff\u{3000}".as_bytes(),
            b"%C2%A0__Host-bff",
        ] {
            assert!(could_be_named(raw, "__Host-bff"), "{raw:?}");
        }
        for raw in [&b"theme"[..], b"__Host-bffx", b"bff", b"__Host-bff%00"] {
            assert!(!could_be_named(raw, "__Host-bff"), "{raw:?}");
        }
    }

    fn rewritten(cookie: &str) -> Option<String> {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            header::HeaderValue::from_str(cookie).unwrap(),
        );
        keep_exact_name(&mut headers, "__Host-bff");
        headers
            .get(header::COOKIE)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn lookalikes_are_dropped_and_the_exact_name_kept() {
        assert_eq!(
            rewritten("__Host%2Dbff=evil; theme=dark; __Host-bff=mine").as_deref(),
            Some("theme=dark; __Host-bff=mine")
        );
        assert_eq!(
            rewritten("theme=dark;__Host-bff=mine").as_deref(),
            Some("theme=dark;__Host-bff=mine"),
            "nothing dropped: the header is left as it was"
        );
        assert_eq!(rewritten("__Host%2Dbff=evil").as_deref(), None);
    }

    #[test]
    fn unicode_whitespace_around_a_name_makes_a_lookalike() {
        // actix-web trims cookie names with `str::trim`, which knows Unicode whitespace.
        for raw in [
            "\u{a0}__Host-bff",
            "__Host-bff\u{3000}",
            " \u{2003}__Host-bff",
        ] {
            assert!(could_be_named(raw.as_bytes(), "__Host-bff"), "{raw:?}");
        }
        assert_eq!(
            rewritten("\u{a0}__Host-bff=evil; __Host-bff=mine").as_deref(),
            Some("__Host-bff=mine")
        );
    }

    #[test]
    fn a_pair_that_is_not_utf8_is_dropped() {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            header::HeaderValue::from_bytes(b"x=\xff; theme=dark; __Host-bff=mine").unwrap(),
        );
        keep_exact_name(&mut headers, "__Host-bff");
        assert_eq!(
            headers.get(header::COOKIE).unwrap(),
            "theme=dark; __Host-bff=mine"
        );
    }

    #[test]
    fn the_exact_name_twice_keeps_neither() {
        assert_eq!(
            rewritten("__Host-bff=a; theme=dark; __Host-bff=b").as_deref(),
            Some("theme=dark")
        );
    }
}
