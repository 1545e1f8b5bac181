//! The per-request family check answered in memory (Redis client tracking, DESIGN.md §5):
//! an instance that answered a session from memory sees a logout on another instance at its
//! next request, and open streams of that session end at once.

use std::time::{Duration, Instant};

use crate::common::*;
use reqwest::Method;

const EMAIL: &str = "trudy@example.com";

/// Waits until `gw` tracks (it starts at its first per-request check: make one before).
async fn tracking(gw: &TestGateway) {
    eventually("liveness tracking", Duration::from_secs(10), || async {
        gw.store.tracks_liveness()
    })
    .await;
}

/// 100 sessions: each signs in on A, is answered twice by B (the second from memory), logs
/// out on A, and is then asked of B until B says 401. The delay is from A's logout answer to
/// B's 401 (it includes that request's own time); B never answers anything but 200 or 401.
#[actix_web::test]
async fn a_logout_on_one_instance_is_a_401_at_the_next_request_to_another_that_remembered_it() {
    let redis = TestRedis::new();
    let a = TestGateway::start(redis.config(), EMAIL).await;
    let b = TestGateway::join(redis.config()).await;
    let first = login_cookie_of(&a, EMAIL).await;
    assert_eq!(session_status(&b, &first).await, 200);
    tracking(&b).await;
    let mut delays = Vec::new();
    let mut at_first_request = 0;
    for _ in 0..100 {
        let cookie = login_cookie_of(&a, EMAIL).await;
        for _ in 0..2 {
            assert_eq!(session_status(&b, &cookie).await, 200);
        }
        let res = send_with_cookie(&a, Method::POST, "/auth/logout", &cookie).await;
        assert!(res.status().is_success(), "logout: {}", res.status());
        let answered = Instant::now();
        let mut requests = 0;
        loop {
            requests += 1;
            let status = session_status(&b, &cookie).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                answered.elapsed() < Duration::from_secs(1),
                "B still answers 200 a second after the logout"
            );
        }
        delays.push(answered.elapsed());
        at_first_request += usize::from(requests == 1);
    }
    delays.sort();
    let (p50, p99, max) = (delays[49], delays[98], delays[99]);
    println!(
        "revocation seen by the other instance: p50 {p50:?}, p99 {p99:?}, max {max:?}; \
         {at_first_request}/100 at the first request"
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}

/// Liveness tracking lost (its connection killed on the server) empties the cache: a family
/// revoked behind the instance's back while tracking was down is a 401 at once, and tracking
/// comes back by itself.
#[actix_web::test]
async fn losing_tracking_falls_back_to_asking_redis_and_tracking_comes_back() {
    let redis = TestRedis::new();
    let gw = TestGateway::start(redis.config(), EMAIL).await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    assert_eq!(session_status(&gw, &cookie).await, 200);
    tracking(&gw).await;
    assert_eq!(session_status(&gw, &cookie).await, 200);
    let mut conn = ::redis::Client::open(redis.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("redis");
    let killed: u64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg("default")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut conn)
        .expect("client kill");
    assert!(killed > 0);
    eventually("tracking to notice", Duration::from_secs(5), || async {
        !gw.store.tracks_liveness()
    })
    .await;
    // Revoked behind the gateway's back, while no invalidation could reach it.
    let key = format!("{}fam:{{{}}}", redis.prefix, family_of(&cookie));
    ::redis::cmd("HSET")
        .arg(&key)
        .arg("revoked")
        .arg("admin")
        .exec(&mut conn)
        .expect("hset");
    assert_eq!(session_status(&gw, &cookie).await, 401);
    tracking(&gw).await;
}

/// A rotation reads its user from memory too while tracking runs: a user disabled through
/// another store (another instance, the CLI) is seen at the next refresh once Redis's message
/// arrives — within a second here, at once in practice — and loses the family.
#[actix_web::test]
async fn a_user_disabled_elsewhere_loses_the_session_at_a_refresh_soon_after() {
    let redis = TestRedis::new();
    let gw = TestGateway::start(redis.config(), EMAIL).await;
    let mut cookie = login_cookie_of(&gw, EMAIL).await;
    assert_eq!(session_status(&gw, &cookie).await, 200);
    tracking(&gw).await;
    cookie = refreshed(&gw, &cookie).await; // the user's record is now in memory
    let elsewhere = redis.store();
    let mut user = elsewhere
        .user_by_email(EMAIL)
        .await
        .expect("store")
        .expect("user");
    user.disabled = true;
    elsewhere.update_user(&user).await.expect("disabled");
    let disabled = Instant::now();
    loop {
        let res = send_with_cookie(&gw, Method::POST, "/auth/refresh", &cookie).await;
        match res.status().as_u16() {
            401 => break,
            200 => cookie = set_cookie_value(&res),
            other => panic!("refresh answered {other}"),
        }
        assert!(
            disabled.elapsed() < Duration::from_secs(1),
            "still refreshing a second after the user was disabled"
        );
    }
    println!(
        "disabled user refused {:?} after the change",
        disabled.elapsed()
    );
    assert_eq!(
        gw.family_state(&cookie).await,
        bffgate::store::FamilyState::Revoked {
            reason: "user_disabled".into()
        }
    );
}
