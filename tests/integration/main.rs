//! The integration tests, as one test binary (one link instead of one per file): a module per
//! area, all sharing the fixtures in `tests/common/`.
//!
//! Three suites stay binaries of their own: `tests/metrics.rs` (the Prometheus recorder is
//! per process), `tests/proxy_streaming.rs` (it measures the process's peak memory) and
//! `tests/e2e.rs` (real Chromium, slow; run alone with `cargo test --test e2e`).

#[path = "../common/mod.rs"]
mod common;

mod boundary;
mod cli;
mod demo_api;
mod deploy;
mod http_auth;
mod liveness_tracking;
mod lost_writes;
mod oidc;
mod operations;
mod properties;
mod proxy;
mod redis_topologies;
mod rotation_model;
mod serve;
mod slow_bodies;
mod store_acceptance;
mod store_faults;
mod streams;
mod tls;
