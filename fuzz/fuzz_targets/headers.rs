//! The header filters: `to_upstream` never forwards the gateway's cookie, the client's
//! `Authorization` or forwarding headers; `to_browser` never passes a `Set-Cookie` that a
//! browser could store as the gateway's cookie.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/common/invariants.rs"]
mod invariants;

#[derive(Debug, Arbitrary)]
struct Input {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    allow_cookies: Vec<String>,
    bearer: Option<String>,
}

fuzz_target!(|input: Input| {
    let headers = invariants::header_map(&input.headers);
    invariants::check_to_upstream(&headers, &input.allow_cookies, input.bearer.as_deref());
    invariants::check_to_browser(&headers);
});
