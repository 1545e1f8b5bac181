//! Micro-benchmarks of the per-request work: opening and sealing the session cookie,
//! minting an access JWT, parsing and hashing a refresh token. `cargo bench`.

use actix_web::cookie::{Cookie, CookieJar, Key};
use bffgate::tokens::{new_id, AccessClaims, RefreshToken, Signer};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const NAME: &str = "__Host-bff";

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "bffgate".into(),
        aud: "api".into(),
        sub: new_id().expect("id"),
        sid: new_id().expect("id"),
        iat: 1_800_000_000,
        exp: 1_800_000_300,
        jti: new_id().expect("id"),
        email: "alice@example.com".into(),
        roles: vec!["admin".into()],
    }
}

/// The session state as actix-session stores it: a JSON map of JSON-encoded tokens.
fn session_state(signer: &Signer) -> String {
    let access = signer.mint(&claims()).expect("jwt");
    let refresh = RefreshToken::generate(&new_id().expect("id"), 0)
        .expect("token")
        .expose();
    serde_json::json!({
        "at": serde_json::to_string(&access).expect("json"),
        "rt": serde_json::to_string(&refresh).expect("json"),
    })
    .to_string()
}

fn seal(key: &Key, state: &str) -> String {
    let mut jar = CookieJar::new();
    jar.private_mut(key)
        .add(Cookie::new(NAME, state.to_owned()));
    jar.get(NAME).expect("sealed").value().to_owned()
}

fn open(key: &Key, sealed: &str) -> Option<String> {
    let mut jar = CookieJar::new();
    jar.add_original(Cookie::new(NAME, sealed.to_owned()));
    jar.private(key).get(NAME).map(|c| c.value().to_owned())
}

fn hot_paths(c: &mut Criterion) {
    let signer = Signer::generate().expect("signer");
    let key = Key::from(&[7u8; 64]);
    let state = session_state(&signer);
    let sealed = seal(&key, &state);
    c.bench_function("cookie_seal", |b| b.iter(|| seal(&key, black_box(&state))));
    c.bench_function("cookie_open", |b| b.iter(|| open(&key, black_box(&sealed))));
    let claims = claims();
    c.bench_function("jwt_mint", |b| b.iter(|| signer.mint(black_box(&claims))));
    let token = RefreshToken::generate(&new_id().expect("id"), 0)
        .expect("token")
        .expose();
    c.bench_function("refresh_token_parse_and_hash", |b| {
        b.iter(|| {
            RefreshToken::parse(black_box(&token))
                .expect("parses")
                .secret_hash()
        })
    });
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
