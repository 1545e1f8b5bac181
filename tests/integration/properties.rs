//! Property tests of the parsers that the browser (or an upstream) controls: path
//! normalisation, refresh and access tokens, the request's `Cookie` header, the session cookie
//! as actix-session opens it, and the header filters in both directions. The invariants live
//! in `tests/common/invariants.rs`, shared with the fuzz targets in `fuzz/`.
//!
//! Each property runs a fixed, small number of cases (the suite stays quick on two cores);
//! `PROPTEST_CASES=100000 cargo test --test integration properties::` runs more.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine as _};
use bffgate::tokens::AccessClaims;
use proptest::{prelude::*, test_runner::Config as ProptestConfig};

#[path = "../common/invariants.rs"]
mod invariants;

use invariants::*;

/// Cases per property: small by default, `PROPTEST_CASES` for a longer run.
fn budget() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// A path segment: plain, dot segments in every spelling, parameters, escapes.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "api",
            "a",
            "b",
            ".",
            "..",
            "%2e",
            "%2E%2e",
            ".%2e",
            "%2e.",
            "...",
            "..;",
            ".;x",
            "%2e%2e;",
            "..%3b",
            "x;y",
            "api;v=1",
            "%2f",
            "%2F",
            "%5c",
            "\\",
            "%00",
            "n%20x",
            "%41",
            "%",
            "%zz",
            "~",
            "%252e%252e",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9._~%;=-]{0,6}",
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    (
        prop::bool::weighted(0.95),
        prop::collection::vec(segment(), 0..8),
    )
        .prop_map(|(absolute, segments)| {
            let joined = segments.join("/");
            if absolute {
                format!("/{joined}")
            } else {
                joined
            }
        })
}

/// A route prefix as the configuration allows it.
fn route_prefix() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["api", "a", "b", "api2", "x"]),
        0..3,
    )
    .prop_map(|segments| format!("/{}", segments.join("/")))
}

/// Whitespace a parser might trim: ASCII and Unicode.
fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            " ", "\t", "\u{a0}", "\u{2003}", "\u{3000}", "\u{85}", "\u{feff}", "\u{200b}",
        ]),
        0..3,
    )
    .prop_map(|p| p.concat())
}

/// The session cookie's name spelled so that some parser might read it as the name: case
/// changed, characters percent-encoded, whitespace around.
fn lookalike_name() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((any::<bool>(), any::<bool>()), COOKIE.len()),
        padding(),
        padding(),
    )
        .prop_map(|(changes, before, after)| {
            let mut name = before;
            for (c, (flip_case, encode)) in COOKIE.chars().zip(changes) {
                let c = if flip_case {
                    if c.is_ascii_uppercase() {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                } else {
                    c
                };
                if encode {
                    name.push_str(&format!("%{:02X}", c as u32));
                } else {
                    name.push(c);
                }
            }
            name.push_str(&after);
            name
        })
}

fn cookie_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(COOKIE.to_owned()),
        3 => lookalike_name(),
        2 => prop::sample::select(vec!["theme", "tracking", "bff", "__Host-bffx", "", "__Secure-bff"])
            .prop_map(str::to_owned),
        1 => "[ -:<-~]{0,8}",
    ]
}

/// One `name=value` pair of a `Cookie` header (or a nameless value), now and then with bytes
/// that are not UTF-8.
fn cookie_pair() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (cookie_name(), "[A-Za-z0-9+/=%\" ]{0,8}", prop::bool::weighted(0.9)).prop_map(
            |(name, value, with_equals)| {
                let equals = if with_equals { "=" } else { "" };
                format!("{name}{equals}{value}").into_bytes()
            },
        ),
        1 => (cookie_name(), prop::collection::vec(any::<u8>(), 0..6)).prop_map(|(name, value)| {
            let mut pair = format!("{name}=").into_bytes();
            pair.extend(value.into_iter().filter(|b| *b != b';'));
            pair
        }),
    ]
}

/// The values of one request's `Cookie` headers.
fn cookie_headers() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        (
            prop::collection::vec(cookie_pair(), 0..5),
            prop::sample::select(vec![";", "; ", " ;  "]),
        )
            .prop_map(|(pairs, separator)| pairs.join(separator.as_bytes())),
        1..3,
    )
}

/// Header names a client or an upstream might send, the dangerous ones often.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "authorization", "proxy-authorization", "cookie", "set-cookie", "forwarded",
            "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
            "x-forwarded-prefix", "x-real-ip", "x-client-ip", "true-client-ip", "x-original-url",
            "x-rewrite-url", "x-request-id", "connection", "keep-alive", "te", "trailer",
            "transfer-encoding", "upgrade", "host", "content-length", "accept", "x-custom",
            "X-Forwarded-For", "Authorization",
        ])
        .prop_map(str::to_owned),
        2 => "x-forwarded-[a-z]{1,10}",
        1 => "[a-z][a-z0-9-]{0,12}",
    ]
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,16}".prop_map(String::into_bytes),
        2 => cookie_headers().prop_map(|v| v.join(&b"; "[..])),
        2 => prop::collection::vec(header_name(), 1..4).prop_map(|n| n.join(", ").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..16),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((header_name(), header_value()), 0..10)
}

/// An upstream's `Set-Cookie` value: a name spelled in any way, attributes, stray bytes.
fn set_cookie() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (
            cookie_name(),
            padding(),
            "[A-Za-z0-9=]{0,6}",
            prop::sample::select(vec!["", "; Path=/", "; Secure; HttpOnly", "; Domain=x", ";"]),
        )
            .prop_map(|(name, pad, value, attrs)| format!("{name}{pad}={value}{attrs}").into_bytes()),
        1 => "[ -~]{0,24}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ]
}

fn claims() -> impl Strategy<Value = AccessClaims> {
    (
        (
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
        ),
        (any::<i64>(), any::<i64>(), any::<String>(), any::<String>()),
        prop::collection::vec(any::<String>(), 0..3),
    )
        .prop_map(
            |((iss, aud, sub, sid), (iat, exp, jti, email), roles)| AccessClaims {
                iss,
                aud,
                sub,
                sid,
                iat,
                exp,
                jti,
                email,
                roles,
            },
        )
}

/// A session state actix-session could have sealed, or anything else sealed in its place.
fn session_plain() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (any::<String>(), any::<String>()).prop_map(|(at, rt)| session_state(&at, &rt)),
        1 => Just(r#"{"at":"1","rt":"2"}"#.to_owned()),
        1 => Just(r#"{"at":"\"a\""}"#.to_owned()),
        1 => Just(r#"{"at":"\"a\"","rt":"\"b\"","at":"\"c\""}"#.to_owned()),
        1 => any::<String>(),
        1 => "[{}\\[\\]\":,atr0-9 ]{0,24}",
    ]
}

fn sealed_under() -> impl Strategy<Value = SealedUnder> {
    prop::sample::select(vec![
        SealedUnder::Current,
        SealedUnder::Previous,
        SealedUnder::Foreign,
    ])
}

thread_local! {
    // One app per test thread, never dropped: actix-web's request pool is a thread local too,
    // and thread locals cannot be used while they are being destroyed.
    static OPENER: &'static CookieOpener = Box::leak(Box::new(CookieOpener::new()));
}

fn with_opener(f: impl FnOnce(&CookieOpener)) {
    OPENER.with(|opener| f(opener));
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(budget())]

    #[test]
    fn normalised_paths_are_idempotent_free_of_dot_segments_and_prefixed_by_whole_segments(
        raw in raw_path(),
        prefix in route_prefix(),
    ) {
        check_path(&raw, &prefix);
    }

    #[test]
    fn any_text_parses_as_a_refresh_token_only_in_its_one_canonical_form(text in any::<String>()) {
        check_refresh_token(&text);
    }

    #[test]
    fn a_refresh_token_round_trips_and_no_other_string_parses_to_it(
        family in any::<[u8; 16]>(),
        secret in any::<[u8; 32]>(),
        at in any::<prop::sample::Index>(),
        c in "[A-Za-z0-9_=+/.-]",
    ) {
        let text = format!("{}.{}", B64.encode(family), B64.encode(secret));
        let i = at.index(text.len());
        let mut replaced = text.clone();
        replaced.replace_range(i..=i, &c);
        let mut inserted = text.clone();
        inserted.insert_str(i, &c);
        for other in [replaced, inserted, format!("{text}="), format!(" {text}")] {
            check_refresh_token_bytes(&family, &secret, &other);
        }
    }

    #[test]
    fn reading_an_access_token_never_panics(text in any::<String>()) {
        check_access_token(&text);
    }

    #[test]
    fn an_access_tokens_claims_read_back_as_written(claims in claims(), signature in "[A-Za-z0-9_-]{0,8}") {
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap());
        let jwt = format!("eyJhbGciOiJFZERTQSJ9.{payload}.{signature}");
        check_access_token(&jwt);
        prop_assert_eq!(bffgate::tokens::peek_claims(&jwt).ok(), Some(claims));
    }

    #[test]
    fn the_cookie_header_keeps_at_most_one_pair_that_reads_as_the_session_cookie(
        values in cookie_headers(),
    ) {
        check_cookie_header(&values);
    }

    #[test]
    fn a_cookie_header_of_arbitrary_bytes_never_opens_a_session(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
        sealed_like in "[A-Za-z0-9+/=%]{0,120}",
    ) {
        with_opener(|opener| {
            opener.check_unsealed(&bytes);
            opener.check_unsealed(format!("{COOKIE}={sealed_like}").as_bytes());
        });
    }

    #[test]
    fn a_sealed_cookie_opens_only_under_the_gateways_keys_and_exactly_as_actix_session_reads_it(
        plain in session_plain(),
        under in sealed_under(),
    ) {
        with_opener(|opener| opener.check_sealed(&plain, under));
    }

    #[test]
    fn upstream_never_gets_the_gateways_cookie_client_authorization_or_forwarding_headers(
        incoming in headers(),
        cookies in cookie_headers(),
        allow in prop::collection::vec(cookie_name(), 0..4),
        bearer in prop::option::of("[A-Za-z0-9._-]{1,24}"),
    ) {
        let mut pairs = incoming;
        pairs.extend(cookies.into_iter().map(|v| ("cookie".to_owned(), v)));
        check_to_upstream(&header_map(&pairs), &allow, bearer.as_deref());
    }

    #[test]
    fn the_browser_never_gets_a_set_cookie_that_could_be_the_gateways_cookie(
        upstream in headers(),
        set_cookies in prop::collection::vec(set_cookie(), 0..5),
    ) {
        let mut pairs = upstream;
        pairs.extend(set_cookies.into_iter().map(|v| ("set-cookie".to_owned(), v)));
        check_to_browser(&header_map(&pairs));
    }
}
