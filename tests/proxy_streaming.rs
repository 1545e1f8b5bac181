//! Large bodies stream through the gateway both ways without being buffered. Alone in its
//! own test binary, so that the process's peak memory belongs to this test only.

mod common;

use std::time::Duration;

use bffgate::config::{AuthMode, RouteConfig};
use common::*;
use futures_util::StreamExt as _;

const EMAIL: &str = "erin@example.com";
const SIZE: u64 = 64 * 1024 * 1024;
const CHUNK: u64 = 64 * 1024;

/// Peak resident memory of this process, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[actix_web::test]
async fn sixty_four_megabytes_stream_each_way_in_flat_memory() {
    let upstream = common::upstream::start();
    let mut config = test_config();
    config.routes = vec![RouteConfig {
        timeout: Duration::from_secs(30),
        ..route("/api", &upstream.base, AuthMode::Required)
    }];
    let gw = TestGateway::start(config, EMAIL).await;
    let cookie = cookie_header(&login_cookie_of(&gw, EMAIL).await);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(120))
        .finish();
    let before = peak_rss();

    // Upload: generated on the fly, counted on the fly by the upstream.
    let chunks = futures_util::stream::iter((0..SIZE / CHUNK).map(|i| {
        Ok::<_, std::io::Error>(actix_web::web::Bytes::from(vec![
            (i % 251) as u8;
            CHUNK as usize
        ]))
    }));
    let mut res = client
        .post(gw.url("/api/upload"))
        .insert_header(("cookie", cookie.clone()))
        .insert_header(("x-csrf", "1"))
        .send_stream(chunks)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let counted: serde_json::Value = res.json().await.unwrap();
    let expected_sum: u64 = (0..SIZE / CHUNK).map(|i| (i % 251) * CHUNK).sum();
    assert_eq!(counted["len"], SIZE);
    assert_eq!(counted["sum"], expected_sum);

    // Download: streamed by the upstream, counted here.
    let mut res = client
        .get(gw.url(&format!("/api/download?size={SIZE}")))
        .insert_header(("cookie", cookie))
        .insert_header(("x-csrf", "1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut received = 0u64;
    let mut in_order = true;
    while let Some(chunk) = res.next().await {
        let chunk = chunk.unwrap();
        in_order &= chunk
            .iter()
            .enumerate()
            .all(|(i, b)| u64::from(*b) == (received + i as u64) % 251);
        received += chunk.len() as u64;
    }
    assert_eq!(received, SIZE);
    assert!(
        in_order,
        "downloaded bytes differ from what the upstream sent"
    );

    let growth = peak_rss().saturating_sub(before);
    eprintln!(
        "peak RSS growth while streaming 2 x {} MiB: {} KiB",
        SIZE >> 20,
        growth >> 10
    );
    assert!(
        growth < SIZE / 2,
        "peak memory grew by {growth} bytes while streaming {SIZE} bytes each way: a body was buffered"
    );
}
