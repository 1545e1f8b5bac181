//! The demo API behind the gateway: tokens verified through the gateway's JWKS, bad tokens
//! refused, and WebSocket upgrades authenticated at the handshake.

use std::time::Duration;

use crate::common::*;
use awc::ws;
use bffgate::{
    clock::{Clock as _, SystemClock},
    tokens::{new_id, AccessClaims, Signer},
};
use futures_util::{SinkExt as _, StreamExt as _};

const EMAIL: &str = "dana@example.com";

struct Demo {
    stack: DemoStack,
    signer: Signer,
}

/// A gateway (memory store, known signing key) routing `/api` to a demo API that verifies
/// tokens through the gateway's JWKS.
async fn demo() -> Demo {
    let stack = demo_stack(test_config(), EMAIL).await;
    Demo {
        signer: Signer::from_pem_file(&stack.key_file).unwrap(),
        stack,
    }
}

fn claims() -> AccessClaims {
    let now = SystemClock.now_ms() / 1000;
    AccessClaims {
        iss: "bffgate".into(),
        aud: "api".into(),
        sub: "u1".into(),
        sid: "s1".into(),
        iat: now,
        exp: now + 300,
        jti: new_id().unwrap(),
        email: EMAIL.into(),
        roles: vec![],
    }
}

async fn api_status(d: &Demo, token: &str) -> u16 {
    let me = raw_client()
        .get(format!("{}/api/me", d.stack.api_base))
        .header("authorization", format!("Bearer {token}"));
    status(me).await
}

#[actix_web::test]
async fn the_demo_api_answers_through_the_gateway() {
    let d = demo().await;
    let browser = browser();
    login(&d.stack.gw, &browser, EMAIL).await;
    let me: serde_json::Value = json(browser.get(d.stack.gw.url("/api/me"))).await;
    assert_eq!(me["email"], EMAIL);
    let note = browser
        .post(d.stack.gw.url("/api/notes"))
        .json(&serde_json::json!({ "text": "buy milk" }));
    assert_eq!(status(note).await, 201);
    let notes: Vec<serde_json::Value> = json(browser.get(d.stack.gw.url("/api/notes"))).await;
    assert_eq!(notes[0]["text"], "buy milk");
    let mut clock = browser
        .get(d.stack.gw.url("/api/clock?count=2&every_ms=10"))
        .send()
        .await
        .unwrap();
    let mut events = String::new();
    while let Some(chunk) = clock.chunk().await.unwrap() {
        events.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(events.matches("data: ").count(), 2, "{events}");
}

#[actix_web::test]
async fn the_demo_api_refuses_bad_tokens() {
    let d = demo().await;
    assert_eq!(
        api_status(&d, &d.signer.mint(&claims()).unwrap()).await,
        200
    );
    let mut wrong_aud = claims();
    wrong_aud.aud = "other".into();
    let mut wrong_iss = claims();
    wrong_iss.iss = "someone-else".into();
    let mut expired = claims();
    expired.exp = expired.iat - 10;
    for bad in [wrong_aud, wrong_iss, expired] {
        assert_eq!(
            api_status(&d, &d.signer.mint(&bad).unwrap()).await,
            401,
            "{bad:?}"
        );
    }
    // alg=none, with our kid and valid claims.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(format!(
        r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
        d.signer.kid()
    ));
    let payload = b64.encode(serde_json::to_vec(&claims()).unwrap());
    assert_eq!(api_status(&d, &format!("{header}.{payload}.")).await, 401);
    // Signed by another key under our kid.
    let stranger = Signer::generate().unwrap();
    let forged = stranger.mint(&claims()).unwrap();
    let (_, rest) = forged.split_once('.').unwrap();
    let header = b64.encode(format!(
        r#"{{"alg":"EdDSA","typ":"JWT","kid":"{}"}}"#,
        d.signer.kid()
    ));
    assert_eq!(api_status(&d, &format!("{header}.{rest}")).await, 401);
    assert_eq!(api_status(&d, "not-a-jwt").await, 401);
}

fn ws_request(d: &Demo, cookie: Option<&str>, origin: Option<&str>) -> awc::ws::WebsocketsRequest {
    let mut req = awc::Client::new().ws(format!("ws://{}/api/ws", d.stack.gw.addr));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie_header(cookie));
    }
    if let Some(origin) = origin {
        req = req.origin(origin);
    }
    req
}

/// The status of a refused handshake.
async fn refused(req: awc::ws::WebsocketsRequest) -> u16 {
    match req.connect().await {
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(e) => panic!("unexpected WebSocket error: {e}"),
        Ok(_) => panic!("the handshake should have been refused"),
    }
}

#[actix_web::test]
async fn websocket_upgrades_are_authenticated_and_relayed() {
    let d = demo().await;
    let cookie = login_cookie_of(&d.stack.gw, EMAIL).await;
    let origin = "http://localhost:8080";
    assert_eq!(refused(ws_request(&d, None, Some(origin))).await, 401);
    assert_eq!(refused(ws_request(&d, Some(&cookie), None)).await, 403);
    assert_eq!(
        refused(ws_request(&d, Some(&cookie), Some("https://evil.example"))).await,
        403
    );
    let (_, mut socket) = ws_request(&d, Some(&cookie), Some(origin))
        .connect()
        .await
        .unwrap();
    for text in ["hello", "again"] {
        socket.send(ws::Message::Text(text.into())).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(frame, ws::Frame::Text(format!("{EMAIL}: {text}").into()));
    }
    socket.send(ws::Message::Close(None)).await.unwrap();
}
