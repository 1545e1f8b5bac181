//! Opening the session cookie through the gateway's real cookie middleware and actix-session:
//! arbitrary `Cookie` headers never open a session nor cause a server error; a state sealed
//! under a key the gateway holds opens exactly as actix-session reads it, under any other key
//! never.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/common/invariants.rs"]
mod invariants;

use invariants::{CookieOpener, SealedUnder, COOKIE};

#[derive(Debug, Arbitrary)]
enum Input {
    /// A whole `Cookie` header.
    Header(Vec<u8>),
    /// A value for the session cookie's exact name, unsealed.
    Value(String),
    /// A session state sealed with one of the keys.
    Sealed { plain: String, key: u8 },
    /// The two tokens, sealed as actix-session writes them.
    Tokens { at: String, rt: String, key: u8 },
}

fn under(key: u8) -> SealedUnder {
    match key % 3 {
        0 => SealedUnder::Current,
        1 => SealedUnder::Previous,
        _ => SealedUnder::Foreign,
    }
}

thread_local! {
    // Built once, never dropped (actix-web's request pool is a thread local as well).
    static OPENER: &'static CookieOpener = Box::leak(Box::new(CookieOpener::new()));
}

fuzz_target!(|input: Input| {
    OPENER.with(|opener| match input {
        Input::Header(bytes) => opener.check_unsealed(&bytes),
        Input::Value(value) => opener.check_unsealed(format!("{COOKIE}={value}").as_bytes()),
        Input::Sealed { plain, key } => opener.check_sealed(&plain, under(key)),
        Input::Tokens { at, rt, key } => {
            opener.check_sealed(&invariants::session_state(&at, &rt), under(key))
        }
    });
});
