//! Prometheus metrics: every name and label the gateway records, in one place.
//!
//! Labels are bounded: outcomes and reasons are fixed words, `route` is a configured prefix,
//! `op` a store operation; never a user, family, path or address.
//!
//! A leaf: it records, and imports nothing of the crate (everyone may call it, it calls no
//! one), so callers pass their own fixed words, e.g. `RevokeReason::as_str()`.

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) for store, upstream and queue latencies.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often histogram samples are drained into their buckets. The recorder keeps every
/// sample until its upkeep runs; `build_recorder` starts no upkeep of its own, so without
/// this a gateway nobody scraped kept every latency it had recorded (two per proxied
/// request): its memory grew and its throughput fell round after round in bench/run.sh.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// The process's Prometheus recorder, installed on first use (every gateway in a process
/// shares it).
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            let upkeep = handle.clone();
            // A thread rather than a task: the recorder is process-wide and outlives any one
            // runtime (tests start many).
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are drained only when /metrics is scraped");
            }
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics shows nothing");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!("bffgate_logins_total", "Login attempts by outcome.");
    describe_counter!(
        "bffgate_refreshes_total",
        "Refresh-token presentations that reached the store, by outcome."
    );
    describe_counter!(
        "bffgate_families_revoked_total",
        "Sessions (token families) revoked by this process, by reason."
    );
    describe_counter!(
        "bffgate_proxy_requests_total",
        "Proxied requests by route and response status class."
    );
    describe_histogram!(
        "bffgate_upstream_duration_seconds",
        Unit::Seconds,
        "Time from sending a proxied request to the upstream's response head, by route."
    );
    describe_counter!(
        "bffgate_store_errors_total",
        "Store operations that failed, by operation."
    );
    describe_histogram!(
        "bffgate_store_duration_seconds",
        Unit::Seconds,
        "Store operation latency, by operation."
    );
    describe_histogram!(
        "bffgate_argon2_queue_wait_seconds",
        Unit::Seconds,
        "Time a password hash or verification waited for a free Argon2 slot."
    );
}

/// Login outcomes. A disabled account's right password counts as `BadCredentials`, like a
/// wrong one: a counter that told them apart would be a public oracle for passwords (the
/// log line, for operators, says which).
#[derive(Debug, Clone, Copy)]
pub enum Login {
    Ok,
    BadCredentials,
    Throttled,
}

pub fn login(outcome: Login) {
    let outcome = match outcome {
        Login::Ok => "ok",
        Login::BadCredentials => "bad_credentials",
        Login::Throttled => "throttled",
    };
    counter!("bffgate_logins_total", "outcome" => outcome).increment(1);
}

/// Refresh outcomes.
#[derive(Debug, Clone, Copy)]
pub enum Refresh {
    Rotated,
    Grace,
    ReuseDetected,
    /// The store had lost the last rotation; the cookie proved it (DESIGN.md §5).
    StoreBehind,
    /// The store lost more than the cookie can prove: the session ended, no theft alleged.
    StoreBehindUnproven,
    Revoked,
    Expired,
}

pub fn refresh(outcome: Refresh) {
    let outcome = match outcome {
        Refresh::Rotated => "rotated",
        Refresh::Grace => "grace",
        Refresh::ReuseDetected => "reuse_detected",
        Refresh::StoreBehind => "store_behind",
        Refresh::StoreBehindUnproven => "store_behind_unproven",
        Refresh::Revoked => "revoked",
        Refresh::Expired => "expired",
    };
    counter!("bffgate_refreshes_total", "outcome" => outcome).increment(1);
}

/// `n` families revoked for `reason` (the store's word for it, `RevokeReason::as_str()`).
pub fn families_revoked(reason: &'static str, n: u64) {
    if n > 0 {
        counter!("bffgate_families_revoked_total", "reason" => reason).increment(n);
    }
}

/// One proxied request: its route prefix and the status the browser got.
pub fn proxied(route: &str, status: u16) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    counter!("bffgate_proxy_requests_total", "route" => route.to_owned(), "status" => class)
        .increment(1);
}

/// Time from sending a request upstream to its response head.
pub fn upstream_latency(route: &str, elapsed: Duration) {
    histogram!("bffgate_upstream_duration_seconds", "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

pub fn store_op(op: &'static str, elapsed: Duration, ok: bool) {
    histogram!("bffgate_store_duration_seconds", "op" => op).record(elapsed.as_secs_f64());
    if !ok {
        counter!("bffgate_store_errors_total", "op" => op).increment(1);
    }
}

pub fn argon2_wait(elapsed: Duration) {
    histogram!("bffgate_argon2_queue_wait_seconds").record(elapsed.as_secs_f64());
}
