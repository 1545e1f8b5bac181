//! WebSocket proxying: the handshake is authenticated like any request (and its `Origin`
//! checked), the upstream connection is opened with the bearer token first — so an upstream
//! that refuses answers 502 before the browser's socket is upgraded — then frames are relayed
//! both ways until either side closes, or the session ends: then the browser gets a close
//! frame with the policy-violation code (1008) and the upstream socket is closed.

use std::{future::Future, time::Duration};

use actix_web::{
    http::header::{self, HeaderMap},
    web, HttpRequest, HttpResponse,
};
use awc::ws::{Frame, Message};
use futures_util::{SinkExt as _, StreamExt as _};

use crate::web::ApiError;

/// Largest frame relayed in either direction.
const MAX_FRAME: usize = 1024 * 1024;

/// Headers of the browser's handshake that belong to that one connection.
fn is_handshake_header(name: &header::HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("sec-websocket-") && name != "sec-websocket-protocol"
}

/// Opens the upstream socket and upgrades the browser's; relays until one side closes or
/// `session_ended` resolves.
pub async fn bridge(
    req: &HttpRequest,
    payload: web::Payload,
    client: &awc::Client,
    url: &str,
    upstream_headers: HeaderMap,
    timeout: Duration,
    session_ended: impl Future<Output = ()> + 'static,
) -> Result<HttpResponse, ApiError> {
    let ws_url = match url.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some((_, rest)) => format!("ws://{rest}"),
        None => return Err(ApiError::BadGateway),
    };
    let mut request = client.ws(ws_url.as_str()).max_frame_size(MAX_FRAME);
    for (name, value) in &upstream_headers {
        if !is_handshake_header(name) {
            request = request.header(name.clone(), value.clone());
        }
    }
    let connected = tokio::time::timeout(timeout, request.connect())
        .await
        .map_err(|_| ApiError::GatewayTimeout)?;
    let (_, upstream) = connected.map_err(|e| {
        tracing::warn!(error = %e, "upstream WebSocket handshake failed");
        ApiError::BadGateway
    })?;
    let (response, mut browser, from_browser) = actix_ws::handle(req, payload)
        .map_err(|e| ApiError::BadRequest(format!("WebSocket handshake: {e}")))?;
    let mut from_browser = from_browser.max_frame_size(MAX_FRAME);
    let (mut to_upstream, mut from_upstream) = upstream.split();

    actix_web::rt::spawn(async move {
        let session_ended = std::pin::pin!(session_ended);
        let mut session_ended = session_ended;
        loop {
            tokio::select! {
                () = &mut session_ended => {
                    let reason = actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Policy,
                        description: Some("the session ended".into()),
                    };
                    let _ = browser.close(Some(reason)).await;
                    let _ = to_upstream.send(Message::Close(None)).await;
                    break;
                }
                msg = from_browser.recv() => {
                    let Some(Ok(msg)) = msg else {
                        let _ = to_upstream.send(Message::Close(None)).await;
                        break;
                    };
                    let closing = matches!(msg, Message::Close(_));
                    if to_upstream.send(msg).await.is_err() || closing {
                        break;
                    }
                }
                frame = from_upstream.next() => {
                    let Some(Ok(frame)) = frame else {
                        let _ = browser.close(None).await;
                        break;
                    };
                    let sent = match frame {
                        Frame::Text(bytes) => match String::from_utf8(bytes.to_vec()) {
                            Ok(text) => browser.text(text).await,
                            Err(_) => break,
                        },
                        Frame::Binary(bytes) => browser.binary(bytes).await,
                        Frame::Continuation(item) => browser.continuation(item).await,
                        Frame::Ping(bytes) => {
                            if to_upstream.send(Message::Pong(bytes)).await.is_err() {
                                break;
                            }
                            Ok(())
                        }
                        Frame::Pong(bytes) => browser.pong(&bytes).await,
                        Frame::Close(reason) => {
                            let _ = browser.close(reason).await;
                            break;
                        }
                    };
                    if sent.is_err() {
                        let _ = to_upstream.send(Message::Close(None)).await;
                        break;
                    }
                }
            }
        }
    });
    Ok(response)
}
