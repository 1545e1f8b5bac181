//! Request bodies on the gateway's own endpoints are read within `request_body_timeout`, as
//! request heads are within actix's `client_request_timeout`: a body trickled past the bound
//! is answered 408 (`application/problem+json`) and its connection closed. Proxied routes
//! stream their uploads and are not bound by it. Raw TCP sockets, so the trickle is exact.

use std::time::{Duration, Instant};

use crate::common::{upstream, *};
use bffgate::config::{AuthMode, Config};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{tcp::OwnedReadHalf, TcpStream},
};

const EMAIL: &str = "sol@example.com";
/// The configured bound, short for the test.
const BOUND: Duration = Duration::from_secs(1);
/// The pause between two bytes of a trickled body.
const TRICKLE: Duration = Duration::from_millis(100);

/// The tests' configuration (fixed cookie key, memory store) with `request_body_timeout` at
/// [`BOUND`], loaded from TOML as an operator writes it.
fn bounded_config() -> Config {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("bffgate.toml");
    std::fs::write(
        &file,
        format!("request_body_timeout = \"{}ms\"\n", BOUND.as_millis()),
    )
    .expect("config written");
    let mut config = Config::load_from(Some(&file), Vec::new()).expect("the bound loads");
    config.cookie.key = test_config().cookie.key;
    config
}

/// Sends `head` at once, then `body` one byte every [`TRICKLE`] (until the gateway stops
/// reading); the read half, and when the head was sent.
async fn trickle(gw: &TestGateway, head: String, body: Vec<u8>) -> (OwnedReadHalf, Instant) {
    let socket = TcpStream::connect(gw.addr).await.expect("connect");
    let (reader, mut writer) = socket.into_split();
    writer.write_all(head.as_bytes()).await.expect("head sent");
    let sent = Instant::now();
    actix_web::rt::spawn(async move {
        for byte in body {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(TRICKLE).await;
        }
    });
    (reader, sent)
}

/// A response read off a raw socket: status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a `Content-Length` body, or fails after `patience`.
async fn answer(reader: &mut OwnedReadHalf, patience: Duration) -> Answer {
    let read = async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = reader.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the connection closed without an answer");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let value = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let chunked = value("transfer-encoding").is_some_and(|v| v == "chunked");
        let length: usize = value("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = buf[head_end..].to_vec();
        let complete = |body: &[u8]| match chunked {
            true => body.ends_with(b"0\r\n\r\n"),
            false => body.len() >= length,
        };
        while !complete(&body) {
            let mut chunk = [0u8; 1024];
            let n = reader.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        if chunked {
            body = dechunk(&body);
        }
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(patience, read)
        .await
        .unwrap_or_else(|_| panic!("no answer within {patience:?}"))
}

/// The data of a complete chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        data.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    data
}

/// How a trickled body is framed.
#[derive(Debug, Clone, Copy)]
enum Framing {
    ContentLength,
    /// One chunk per byte: actix drains an unread chunked body as long as it keeps coming.
    Chunked,
}

/// A request head for `body` and the body as sent, framed as `framing`.
fn framed(
    gw: &TestGateway,
    request_line: &str,
    headers: &str,
    body: &[u8],
    framing: Framing,
) -> (String, Vec<u8>) {
    let head = |framing_header: String| {
        format!(
            "{request_line}\r\nHost: {}\r\n{headers}{framing_header}\r\n\r\n",
            gw.addr
        )
    };
    match framing {
        Framing::ContentLength => (
            head(format!("Content-Length: {}", body.len())),
            body.to_vec(),
        ),
        Framing::Chunked => {
            let mut wire: Vec<u8> = body
                .iter()
                .flat_map(|b| [b"1\r\n".as_slice(), &[*b], b"\r\n"].concat())
                .collect();
            wire.extend_from_slice(b"0\r\n\r\n");
            (head("Transfer-Encoding: chunked".into()), wire)
        }
    }
}

/// The gateway closes the connection within `patience` (the answer has been read).
async fn closes(reader: &mut OwnedReadHalf, patience: Duration) {
    let mut rest = Vec::new();
    tokio::time::timeout(patience, reader.read_to_end(&mut rest))
        .await
        .expect("the gateway closes the connection")
        .ok();
}

#[actix_web::test]
async fn a_login_body_trickled_one_byte_at_a_time_is_answered_408_within_the_bound() {
    let gw = TestGateway::start(bounded_config(), EMAIL).await;
    let body = serde_json::json!({ "email": EMAIL, "password": PASSWORD }).to_string();
    // The whole body would take longer than the bound and the test's patience together.
    assert!(TRICKLE * body.len() as u32 > BOUND + Duration::from_secs(3));
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let (head, wire) = framed(
            &gw,
            "POST /auth/login HTTP/1.1",
            "Content-Type: application/json\r\nX-CSRF: 1\r\n",
            body.as_bytes(),
            framing,
        );
        let (mut reader, sent) = trickle(&gw, head, wire).await;

        let answer = answer(&mut reader, BOUND + Duration::from_secs(3)).await;
        let waited = sent.elapsed();
        assert_eq!(answer.status, 408, "{framing:?}: {}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/problem+json")
        );
        assert!(answer.body.contains("urn:bffgate:problem:request-timeout"));
        assert!(waited >= BOUND, "{framing:?}: answered after {waited:?}");
        assert!(
            // Slack for a loaded machine; the trickle alone would take several times this.
            waited < BOUND + Duration::from_secs(2),
            "{framing:?}: answered after {waited:?}"
        );
        // Nothing holds the connection open for the rest of the trickle.
        closes(&mut reader, Duration::from_secs(3)).await;
    }
}

#[actix_web::test]
async fn a_trickled_body_an_endpoint_leaves_unread_does_not_hold_the_connection() {
    let gw = TestGateway::start(bounded_config(), EMAIL).await;
    let body = vec![b'x'; 100];
    for framing in [Framing::ContentLength, Framing::Chunked] {
        let (head, wire) = framed(
            &gw,
            "POST /auth/logout HTTP/1.1",
            "Content-Type: application/json\r\nX-CSRF: 1\r\n",
            &body,
            framing,
        );
        let (mut reader, _) = trickle(&gw, head, wire).await;
        let answer = answer(&mut reader, Duration::from_secs(3)).await;
        assert_eq!(answer.status, 204, "{framing:?}");
        closes(&mut reader, Duration::from_secs(3)).await;
    }
}

#[actix_web::test]
async fn an_upload_to_a_proxied_route_may_take_longer_than_the_bound() {
    let upstream = upstream::start();
    let mut config = bounded_config();
    config.routes = vec![route("/api", &upstream.base, AuthMode::None)];
    let gw = TestGateway::start(config, EMAIL).await;
    let body = vec![7u8; 20];
    assert!(TRICKLE * body.len() as u32 > BOUND);
    let (head, wire) = framed(
        &gw,
        "POST /api/upload HTTP/1.1",
        "Content-Type: application/octet-stream\r\n",
        &body,
        Framing::ContentLength,
    );
    let (mut reader, sent) = trickle(&gw, head, wire).await;

    let answer = answer(&mut reader, Duration::from_secs(10)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(sent.elapsed() >= TRICKLE * 19);
    let counted: serde_json::Value = serde_json::from_str(&answer.body).expect("json");
    assert_eq!(counted["len"], 20);
    assert_eq!(counted["sum"], 140);
}
