//! A real upstream HTTP server on port 0 that records what it receives.
#![allow(dead_code)]

use std::{
    net::TcpListener,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt as _;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

#[derive(Default)]
pub struct Shared {
    pub seen: Mutex<Vec<Seen>>,
    /// Answers 401 to this many requests to `/api/flaky` first.
    pub flaky_401s: AtomicUsize,
    /// Released by the test to let `/api/sse` send its second event.
    pub sse_gate: tokio::sync::Notify,
}

/// The running upstream.
pub struct Upstream {
    pub base: String,
    pub shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
}

impl Upstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn record(shared: &Shared, req: &HttpRequest) {
    shared.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
    });
}

async fn echo(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    record(&shared, &req);
    HttpResponse::Ok()
        .insert_header(("proxy-authenticate", "Basic realm=\"hop-by-hop\""))
        .insert_header(("set-cookie", "__Host-bff=forged; Path=/; Secure; HttpOnly"))
        .insert_header(("x-upstream", "yes"))
        .json(serde_json::json!({ "path": req.path(), "query": req.query_string() }))
}

async fn flaky(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    record(&shared, &req);
    let left = shared.flaky_401s.load(Ordering::SeqCst);
    if left > 0 {
        shared.flaky_401s.store(left - 1, Ordering::SeqCst);
        return HttpResponse::Unauthorized().finish();
    }
    HttpResponse::Ok().body("ok")
}

/// `Set-Cookie` headers a hostile upstream might send to plant or shadow the gateway's
/// cookie, as raw bytes, beside one honest cookie (`theme=dark`).
pub const HOSTILE_SET_COOKIES: &[&[u8]] = &[
    "__Host-bff=forged-é; Path=/; Secure; HttpOnly".as_bytes(),
    "theme=light; Comment=café".as_bytes(),
    b"__Host%2Dbff=forged; Path=/; Secure",
    b"=__Host-bff=forged; Path=/; Secure",
    b"__HOST-BFF=forged; Path=/; Secure",
    b" __Host-bff =forged; Path=/; Secure",
    b"__Host-bff",
    b"theme=dark; Path=/",
];

async fn hostile_cookies(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    record(&shared, &req);
    let mut response = HttpResponse::Ok();
    for raw in HOSTILE_SET_COOKIES {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_bytes(raw) {
            response.append_header(("set-cookie", value));
        }
    }
    response.finish()
}

/// Answers after `?ms=` milliseconds (default 5 s).
async fn slow(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    record(&shared, &req);
    let ms = req
        .query_string()
        .strip_prefix("ms=")
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(5000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    HttpResponse::Ok().finish()
}

/// Counts the uploaded bytes and their sum, without keeping them.
async fn upload(
    req: HttpRequest,
    shared: web::Data<Shared>,
    mut body: web::Payload,
) -> HttpResponse {
    record(&shared, &req);
    let (mut len, mut sum) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return HttpResponse::BadRequest().finish();
        };
        len += chunk.len() as u64;
        sum = chunk.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
    }
    HttpResponse::Ok().json(serde_json::json!({ "len": len, "sum": sum }))
}

/// Streams `size` bytes (the byte at offset i is i % 251) in 64 KiB chunks.
async fn download(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    record(&shared, &req);
    let size: u64 = req
        .query_string()
        .strip_prefix("size=")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunk = 64 * 1024u64;
    let chunks = futures_util::stream::iter((0..size.div_ceil(chunk)).map(move |i| {
        let start = i * chunk;
        let end = (start + chunk).min(size);
        let bytes: Vec<u8> = (start..end).map(|o| (o % 251) as u8).collect();
        Ok::<_, actix_web::Error>(web::Bytes::from(bytes))
    }));
    HttpResponse::Ok()
        .content_type("application/octet-stream")
        .streaming(chunks)
}

/// Sends one event, waits for the test's go-ahead, sends a second and ends.
async fn sse(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    record(&shared, &req);
    let events = futures_util::stream::unfold(0u8, move |n| {
        let shared = shared.clone();
        async move {
            match n {
                0 => Some((
                    Ok::<_, actix_web::Error>(web::Bytes::from_static(b"data: one\n\n")),
                    1,
                )),
                1 => {
                    shared.sse_gate.notified().await;
                    Some((Ok(web::Bytes::from_static(b"data: two\n\n")), 2))
                }
                _ => None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(events)
}

/// Starts the upstream on 127.0.0.1:0.
pub fn start() -> Upstream {
    let shared = Arc::new(Shared::default());
    let data = web::Data::from(Arc::clone(&shared));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/api/flaky", web::to(flaky))
            .route("/api/hostile-cookies", web::to(hostile_cookies))
            .route("/api/slow", web::to(slow))
            .route("/api/upload", web::to(upload))
            .route("/api/download", web::to(download))
            .route("/api/sse", web::to(sse))
            .default_service(web::to(echo))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    Upstream {
        base,
        shared,
        handle: super::spawn_server(server),
    }
}
