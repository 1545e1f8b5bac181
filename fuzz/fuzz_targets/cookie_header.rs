//! The request's `Cookie` headers as the browser (or a planted cookie) sends them:
//! `keep_exact_name` leaves at most one pair that any parser reads as the session cookie.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/common/invariants.rs"]
mod invariants;

fuzz_target!(|values: Vec<Vec<u8>>| {
    invariants::check_cookie_header(&values);
});
