//! The tokens inside the cookie: `RefreshToken::parse` accepts only the one canonical text of
//! a family and secret; `peek_claims` on an access token never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/common/invariants.rs"]
mod invariants;

fuzz_target!(|text: &str| {
    invariants::check_refresh_token(text);
    invariants::check_access_token(text);
});
