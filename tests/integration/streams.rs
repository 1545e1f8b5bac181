//! Streams end with their session: WebSockets get a policy close (1008), server-sent events
//! end — at once on the instance that revoked the session, within `session.stream_recheck`
//! on every other one — while a live session's stream outlives its access token. The demo
//! API is the upstream: it verifies every token through the gateway's JWKS.

use std::time::{Duration, Instant};

use crate::common::*;
use awc::ws;
use bffgate::config::Config;
use futures_util::{SinkExt as _, StreamExt as _};

const EMAIL: &str = "sam@example.com";

/// The demo stack on the memory store, or on `redis` for a second instance to join.
async fn stack(redis: Option<&TestRedis>, tweak: impl FnOnce(&mut Config)) -> DemoStack {
    let mut config = match redis {
        Some(redis) => redis.config(),
        None => test_config(),
    };
    tweak(&mut config);
    demo_stack(config, EMAIL).await
}

const ORIGIN: &str = "http://localhost:8080";

/// A client WebSocket, as awc opens one.
trait Socket:
    futures_util::Sink<ws::Message, Error = awc::error::WsProtocolError>
    + futures_util::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
    + Unpin
{
}

impl<S> Socket for S where
    S: futures_util::Sink<ws::Message, Error = awc::error::WsProtocolError>
        + futures_util::Stream<Item = Result<ws::Frame, awc::error::WsProtocolError>>
        + Unpin
{
}

async fn open_socket(gw: &TestGateway, cookie: &str) -> impl Socket {
    let (_, socket) = awc::Client::new()
        .ws(format!("ws://{}/api/ws", gw.addr))
        .header("cookie", cookie_header(cookie))
        .origin(ORIGIN)
        .connect()
        .await
        .expect("the handshake succeeds");
    socket
}

async fn socket_refused(gw: &TestGateway, cookie: &str) -> u16 {
    upgrade_refused(gw, cookie, ORIGIN, None).await
}

/// The status of a refused handshake from `origin` (with `Sec-Fetch-Site: site` if given).
async fn upgrade_refused(gw: &TestGateway, cookie: &str, origin: &str, site: Option<&str>) -> u16 {
    let mut request = awc::Client::new()
        .ws(format!("ws://{}/api/ws", gw.addr))
        .header("cookie", cookie_header(cookie))
        .origin(origin);
    if let Some(site) = site {
        request = request.header("sec-fetch-site", site);
    }
    let connect = request.connect().await;
    match connect {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(e) => panic!("unexpected WebSocket error: {e}"),
        Ok(_) => panic!("the handshake should have been refused"),
    }
}

/// Echo one message: the socket is relayed and the session is the user's.
async fn echo(socket: &mut impl Socket) {
    socket.send(ws::Message::Text("ping".into())).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("an answer")
        .expect("a frame")
        .expect("a valid frame");
    assert_eq!(frame, ws::Frame::Text(format!("{EMAIL}: ping").into()));
}

/// Waits (bounded) for the socket's close frame; returns its code and how long it took.
async fn closed(socket: &mut impl Socket, since: Instant) -> (Option<ws::CloseCode>, Duration) {
    let close = async {
        loop {
            match socket.next().await {
                Some(Ok(ws::Frame::Close(reason))) => return reason.map(|r| r.code),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => return None,
            }
        }
    };
    let code = tokio::time::timeout(Duration::from_secs(10), close)
        .await
        .expect("the socket is closed within 10 s");
    (code, since.elapsed())
}

/// An open server-sent-events stream of clock ticks every 50 ms, its first event read.
async fn open_events(gw: &TestGateway, cookie: &str) -> reqwest::Response {
    let mut res = with_cookie(gw, reqwest::Method::GET, "/api/clock?every_ms=50", cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().expect("a first event");
    assert!(first.starts_with(b"data: "));
    res
}

/// Reads until the stream ends (within 10 s); returns how long after `since` it ended.
async fn ended(res: &mut reqwest::Response, since: Instant) -> Duration {
    let drained = async { while let Ok(Some(_)) = res.chunk().await {} };
    tokio::time::timeout(Duration::from_secs(10), drained)
        .await
        .expect("the stream ends within 10 s");
    since.elapsed()
}

async fn logout(gw: &TestGateway, cookie: &str) {
    let res = send_with_cookie(gw, reqwest::Method::POST, "/auth/logout", cookie).await;
    assert_eq!(res.status(), 204);
}

#[actix_web::test]
async fn a_websocket_gets_a_policy_close_when_its_session_logs_out() {
    let s = stack(None, |_| {}).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let mut socket = open_socket(&s.gw, &cookie).await;
    echo(&mut socket).await;
    let since = Instant::now();
    logout(&s.gw, &cookie).await;
    let (code, took) = closed(&mut socket, since).await;
    eprintln!("same instance: WebSocket closed {took:?} after the logout answer");
    assert_eq!(code, Some(ws::CloseCode::Policy));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[actix_web::test]
async fn server_sent_events_end_when_their_session_logs_out() {
    let s = stack(None, |_| {}).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let mut events = open_events(&s.gw, &cookie).await;
    let since = Instant::now();
    logout(&s.gw, &cookie).await;
    let took = ended(&mut events, since).await;
    eprintln!("same instance: event stream ended {took:?} after the logout answer");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// A WebSocket and an event stream open on one instance of a Redis stack (configured by
/// `tweak`), and the session logged out on another: how long each took to end after the
/// logout's answer, having checked the WebSocket's policy close.
async fn logged_out_elsewhere(tweak: impl FnOnce(&mut Config)) -> (Duration, Duration) {
    let redis = TestRedis::new();
    let s = stack(Some(&redis), tweak).await;
    let tracked = s.config.redis.as_ref().is_some_and(|r| r.track_liveness);
    let other = TestGateway::join(s.config.clone()).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let mut socket = open_socket(&s.gw, &cookie).await;
    echo(&mut socket).await;
    let mut events = open_events(&s.gw, &cookie).await;
    if tracked {
        eventually("liveness tracking", Duration::from_secs(10), || async {
            s.gw.store.tracks_liveness()
        })
        .await;
    }
    let since = Instant::now();
    logout(&other, &cookie).await;
    let took_events = ended(&mut events, since).await;
    let (code, took_socket) = closed(&mut socket, since).await;
    assert_eq!(code, Some(ws::CloseCode::Policy));
    (took_events, took_socket)
}

#[actix_web::test]
async fn streams_on_another_instance_end_within_the_recheck_bound() {
    let (took_events, took_socket) = logged_out_elsewhere(|c| {
        c.session.stream_recheck = Duration::from_millis(500);
        if let Some(redis) = c.redis.as_mut() {
            redis.track_liveness = false; // the timer alone
        }
    })
    .await;
    eprintln!(
        "other instance (stream_recheck 500 ms): event stream ended after {took_events:?}, \
         WebSocket closed after {took_socket:?}"
    );
    let bound = Duration::from_millis(500 + 1000);
    assert!(took_events < bound && took_socket < bound);
}

/// With liveness tracking, the change Redis reports ends the other instance's streams at once,
/// however long `session.stream_recheck` is.
#[actix_web::test]
async fn streams_on_another_instance_end_at_once_when_redis_reports_the_logout() {
    let (took_events, took_socket) = logged_out_elsewhere(|c| {
        c.session.stream_recheck = Duration::from_secs(3600);
    })
    .await;
    eprintln!(
        "other instance (tracked, stream_recheck 1 h): event stream ended after \
         {took_events:?}, WebSocket closed after {took_socket:?}"
    );
    let bound = Duration::from_millis(500);
    assert!(took_events < bound && took_socket < bound);
}

#[actix_web::test]
async fn a_live_sessions_stream_outlives_its_access_token() {
    let s = stack(None, |c| {
        c.session.stream_recheck = Duration::from_millis(100);
    })
    .await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let mut events = open_events(&s.gw, &cookie).await;
    let mut socket = open_socket(&s.gw, &cookie).await;
    // The access token the streams were opened with expires; the session lives on.
    s.gw.clock.advance(Duration::from_secs(10 * 60));
    // 20 events at 50 ms span several re-checks.
    for _ in 0..20 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk())
            .await
            .unwrap()
            .unwrap();
        assert!(chunk.is_some(), "the stream of a live session ended");
    }
    echo(&mut socket).await;
}

#[actix_web::test]
async fn a_session_holds_at_most_max_streams() {
    let s = stack(None, |c| c.session.max_streams = 2).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let first = open_events(&s.gw, &cookie).await;
    let mut socket = open_socket(&s.gw, &cookie).await;
    let third = with_cookie(&s.gw, reqwest::Method::GET, "/api/clock", &cookie)
        .header("accept", "text/event-stream");
    let res = third.send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "a problem answer"
    );
    assert_eq!(socket_refused(&s.gw, &cookie).await, 429);
    // A body that merely has no length is watched, not counted: never refused after the
    // upstream did its work.
    let chunked = with_cookie(&s.gw, reqwest::Method::GET, "/api/clock?count=1", &cookie);
    assert_eq!(status(chunked).await, 200);
    // Another session of the same user is not affected.
    let other = login_cookie_of(&s.gw, EMAIL).await;
    drop(open_events(&s.gw, &other).await);
    // Closing a stream frees its place.
    drop(first);
    eventually("a freed stream place", Duration::from_secs(10), || async {
        with_cookie(&s.gw, reqwest::Method::GET, "/api/clock?count=1", &cookie)
            .header("accept", "text/event-stream")
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    echo(&mut socket).await;
}

#[actix_web::test]
async fn a_websocket_upgrade_needs_exactly_the_public_origin() {
    let s = stack(None, |_| {}).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    // A sibling subdomain is same-site; Fetch Metadata says so, and it is still refused.
    let sibling = upgrade_refused(&s.gw, &cookie, "https://evil.localhost", Some("same-site"));
    assert_eq!(sibling.await, 403);
    let other_host = upgrade_refused(&s.gw, &cookie, "http://127.0.0.1:8080", Some("same-origin"));
    assert_eq!(other_host.await, 403);
    echo(&mut open_socket(&s.gw, &cookie).await).await;
}

#[actix_web::test]
async fn a_stream_is_rechecked_when_its_access_token_expires_however_long_the_recheck() {
    let redis = TestRedis::new();
    let s = stack(Some(&redis), |c| {
        c.session.stream_recheck = Duration::from_secs(3600);
        c.session.access_ttl = Duration::from_secs(2);
        c.session.refresh_before = Duration::from_secs(1);
    })
    .await;
    let other = TestGateway::join(s.config.clone()).await;
    let cookie = login_cookie_of(&s.gw, EMAIL).await;
    let mut events = open_events(&s.gw, &cookie).await;
    let since = Instant::now();
    logout(&other, &cookie).await;
    let took = ended(&mut events, since).await;
    eprintln!("other instance, 2 s access token, 1 h recheck: stream ended after {took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}
