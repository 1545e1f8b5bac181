//! Path normalisation: idempotent, no dot segment or empty segment in its output, never above
//! the root, and `matched_prefix` of the output agrees with whole segments.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../tests/common/invariants.rs"]
mod invariants;

/// Route prefixes as the configuration allows them.
const PREFIXES: &[&str] = &["/", "/api", "/api/v1", "/a", "/files"];

fuzz_target!(|input: (u8, &str)| {
    let (prefix, raw) = input;
    invariants::check_path(raw, PREFIXES[usize::from(prefix) % PREFIXES.len()]);
});
