//! Faults in the path to Redis (issue 15, point 3): a gateway whose Redis URL points at a
//! fault proxy ([`FaultProxy`]) in front of a real `redis-server`, `redis.timeout` 300 ms.
//! Under each fault a signed-in browser's session check, proxied GET and refresh answer 503
//! within the timeout (plus slack), never hang, never 401, never touch the cookie; when the
//! fault clears the same cookie works again. And a Redis restart (data kept) costs no request:
//! a read that finds its pooled connection dead is repeated once on a fresh one.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::common::{
    fault::{Fault, FaultProxy},
    upstream::Upstream,
    *,
};
use bffgate::config::AuthMode;
use reqwest::Method;

const EMAIL: &str = "faults@example.com";
/// `redis.timeout` of these gateways.
const TIMEOUT: Duration = Duration::from_millis(300);
/// What a 503 may take beyond `redis.timeout`: generous, so that a loaded machine does not
/// fail the test, and still far from a hang.
const SLACK: Duration = Duration::from_secs(2);
/// How long a cleared fault may take to stop costing requests.
const RECOVERY: Duration = Duration::from_secs(10);

/// The three requests of a signed-in browser each fault is tried on.
const REQUESTS: [(&str, &str); 3] = [
    ("GET", "/auth/session"),
    ("GET", "/api/items"),
    ("POST", "/auth/refresh"),
];

struct Stack {
    server: RedisServer,
    proxy: FaultProxy,
    _upstream: Upstream,
    gw: TestGateway,
    cookie: String,
}

/// A gateway on Redis (AOF) through a fault proxy, `redis.timeout` `timeout`, `/api` to a
/// recording upstream, and a signed-in browser's cookie. The user is written past the proxy
/// (with the default timeout), and the login is repeated until it succeeds: on a loaded
/// machine a 300 ms bound can cost a 503 without any fault, which is not what is tested.
async fn stack(prefix: &str, timeout: Duration) -> Stack {
    let server = RedisServer::start_with_aof();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], server.port)));
    let upstream = upstream::start();
    let direct: std::sync::Arc<dyn bffgate::store::Store> = std::sync::Arc::new(
        bffgate::store::redis::RedisStore::connect(&server.url(), prefix, 2, SLACK)
            .expect("redis store"),
    );
    bffgate::session::users::Users::new(direct)
        .add(EMAIL, PASSWORD, vec!["tester".into()])
        .await
        .expect("user added");
    let mut config = with_redis(test_config(), &proxy.url(), prefix);
    if let Some(redis) = config.redis.as_mut() {
        redis.timeout = timeout;
    }
    config.routes = vec![route("/api", &upstream.base, AuthMode::Required)];
    let gw = TestGateway::join(config).await;
    let cookie = std::cell::RefCell::new(None);
    eventually("a login", RECOVERY, || async {
        let res = login_request(&gw, EMAIL, PASSWORD)
            .send()
            .await
            .expect("login");
        assert_ne!(res.status(), 401, "the login is refused");
        if res.status() == 200 {
            *cookie.borrow_mut() = Some(set_cookie_value(&res));
        }
        cookie.borrow().is_some()
    })
    .await;
    let cookie = cookie.into_inner().expect("a cookie");
    Stack {
        server,
        proxy,
        _upstream: upstream,
        gw,
        cookie,
    }
}

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method")
}

/// Sends `method path` with `cookie`, bounded by `TIMEOUT + SLACK` (a hang fails the test);
/// the answer and how long it took.
async fn timed(
    gw: &TestGateway,
    (m, path): (&str, &str),
    cookie: &str,
) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let res = tokio::time::timeout(
        TIMEOUT + SLACK,
        send_with_cookie(gw, method(m), path, cookie),
    )
    .await
    .unwrap_or_else(|_| panic!("{m} {path} hung for more than {:?}", TIMEOUT + SLACK));
    (res, started.elapsed())
}

/// Repeats `request` until it answers 200 (never 401).
async fn answers_200(gw: &TestGateway, request: (&str, &str), cookie: &str, when: &str) {
    eventually(
        &format!("{request:?} to answer 200 {when}"),
        RECOVERY,
        || async {
            let (res, _) = timed(gw, request, cookie).await;
            assert_ne!(res.status(), 401, "{request:?} {when}");
            res.status() == 200
        },
    )
    .await;
}

/// The session cookie headers a response sets, if any.
fn session_cookies_set(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.starts_with(COOKIE))
        .map(str::to_owned)
        .collect()
}

/// Each request answers 503 under `fault`, in time, with the cookie kept; once the fault is
/// lifted, the same cookie gets 200 from each.
async fn fault_costs_503s_and_the_session_continues(fault: Fault, prefix: &str) {
    let s = stack(prefix, TIMEOUT).await;
    for request in REQUESTS {
        answers_200(&s.gw, request, &s.cookie, "before the fault").await;
    }
    // Concurrent requests, so that each worker's pool holds several connections: under the
    // fault every one of them is suspect, and lending must not try them one by one.
    let warm = (0..16).map(|_| session_status(&s.gw, &s.cookie));
    for status in futures_util::future::join_all(warm).await {
        assert_ne!(status, 401);
    }

    // Liveness tracking: a cached answer may outlive the fault until tracking notices it
    // (at once when connections close, within one heartbeat and its timeout when they go
    // silent); from then on every request asks Redis.
    eventually("liveness tracking", RECOVERY, || async {
        s.gw.store.tracks_liveness()
    })
    .await;
    s.proxy.set(fault);
    let faulted = Instant::now();
    eventually("tracking to notice the fault", RECOVERY, || async {
        !s.gw.store.tracks_liveness()
    })
    .await;
    let noticed = faulted.elapsed();
    println!("{fault:?}: liveness tracking off {noticed:?} after the fault");
    assert!(
        noticed <= bffgate::store::redis::STALE_AT_MOST + SLACK,
        "{fault:?}: the cache answered for {noticed:?}"
    );
    let mut slowest = Duration::ZERO;
    // Twice each: the first meets the fault on a pooled connection, the second on whatever
    // the pool makes of it (checks, new connections).
    for request in REQUESTS.into_iter().chain(REQUESTS) {
        let (res, took) = timed(&s.gw, request, &s.cookie).await;
        assert_eq!(res.status(), 503, "{fault:?}: {request:?}");
        assert!(
            res.headers().contains_key("retry-after"),
            "{fault:?}: {request:?}"
        );
        assert_eq!(
            session_cookies_set(&res),
            Vec::<String>::new(),
            "{fault:?}: {request:?} must keep the cookie"
        );
        assert!(
            took <= TIMEOUT + SLACK,
            "{fault:?}: {request:?} took {took:?}"
        );
        slowest = slowest.max(took);
    }
    println!("{fault:?}: slowest 503 took {slowest:?} (redis.timeout {TIMEOUT:?})");

    s.proxy.set(Fault::Pass);
    let started = Instant::now();
    eventually("the session to answer 200 again", RECOVERY, || async {
        let status = session_status(&s.gw, &s.cookie).await;
        assert_ne!(status, 401, "{fault:?}: a fault never signs the user out");
        status == 200
    })
    .await;
    println!(
        "{fault:?}: back to 200 {:?} after the fault cleared",
        started.elapsed()
    );
    for request in REQUESTS {
        answers_200(&s.gw, request, &s.cookie, "after the fault").await;
    }
    drop(s.server);
}

#[actix_web::test]
async fn a_redis_answering_late_costs_503s_in_time_and_the_session_continues() {
    fault_costs_503s_and_the_session_continues(Fault::Delay(TIMEOUT * 3), "fdelay:").await;
}

#[actix_web::test]
async fn a_redis_dropping_connections_costs_503s_in_time_and_the_session_continues() {
    fault_costs_503s_and_the_session_continues(Fault::Drop, "fdrop:").await;
}

#[actix_web::test]
async fn a_redis_resetting_connections_costs_503s_in_time_and_the_session_continues() {
    fault_costs_503s_and_the_session_continues(Fault::Reset, "freset:").await;
}

#[actix_web::test]
async fn a_black_holed_redis_costs_503s_in_time_and_the_session_continues() {
    fault_costs_503s_and_the_session_continues(Fault::BlackHole, "fhole:").await;
}
/// Every pooled connection closed under the gateway at once (as a restart does), and Redis
/// straight back: no request of the signed-in browser fails.
#[actix_web::test]
async fn connections_closed_under_the_gateway_cost_no_request() {
    // The default timeout: only the closed connections may cost a request here.
    let s = stack("fclosed:", SLACK).await;
    for round in 0..3 {
        for request in REQUESTS {
            let (res, _) = timed(&s.gw, request, &s.cookie).await;
            assert_eq!(res.status(), 200, "{request:?} before round {round}");
        }
        s.proxy.set(Fault::Drop);
        s.proxy.set(Fault::Pass);
        for request in REQUESTS {
            let (res, _) = timed(&s.gw, request, &s.cookie).await;
            assert_eq!(
                res.status(),
                200,
                "round {round}: {request:?} after the close"
            );
        }
    }
}

/// Redis restarted (its data kept in the AOF): the requests that find their pooled
/// connections dead are answered, not failed.
#[actix_web::test]
async fn a_redis_restart_with_its_data_kept_costs_no_request() {
    let mut s = stack("frestart:", SLACK).await;
    // Several concurrent requests, so that each worker's pool holds a few connections, all
    // used a moment ago (none is due the idle check).
    let warm = (0..8).map(|_| session_status(&s.gw, &s.cookie));
    for status in futures_util::future::join_all(warm).await {
        assert_eq!(status, 200);
    }
    let started = Instant::now();
    s.server.stop();
    s.server.restart();
    let restart = started.elapsed();
    let after = (0..8).map(|i| {
        let request = REQUESTS[i % 3];
        let gw = &s.gw;
        let cookie = &s.cookie;
        async move { timed(gw, request, cookie).await.0.status().as_u16() }
    });
    let statuses = futures_util::future::join_all(after).await;
    println!("restart took {restart:?}; then {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "after a restart that took {restart:?}: {statuses:?}"
    );
    let (res, _) = timed(&s.gw, REQUESTS[2], &s.cookie).await;
    assert_eq!(res.status(), 200, "a refresh after the restart");
}
