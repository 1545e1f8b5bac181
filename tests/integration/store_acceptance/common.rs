//! `store_acceptance.rs` was a test binary of its own and still declares `mod common;`; in
//! this binary that declaration lands here and names the shared fixtures.

pub use crate::common::*;
