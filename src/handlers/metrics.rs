//! `GET /metrics`: the Prometheus text exposition of everything `metrics` recorded.

use actix_web::{web::Data, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

/// Prometheus metrics (text exposition format). Served on `metrics.listen` when set, else on
/// the gateway's own listener; absent when `metrics.enabled = false`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4.", body = String, content_type = "text/plain")))]
pub async fn metrics_endpoint(handle: Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
