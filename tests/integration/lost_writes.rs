//! A store that lost its latest writes (DESIGN.md §5 "Lost writes"), over real HTTP on a real
//! `redis-server`: the family's keys are dumped and later restored, which is exactly what a
//! failover to a replica that missed the last rotation, or a crash under `appendfsync
//! everysec`, leaves behind. A browser one rotation ahead goes on with a fresh cookie and no
//! theft verdict; an older cookie is still a replay; more than one step ahead, or a family
//! that is gone, ends the session without accusing anyone.

use crate::common::{
    family_dump::{self, dump_family, restore_family, FamilyDump},
    *,
};
use bffgate::store::FamilyState;
use reqwest::Method;

const EMAIL: &str = "alice@example.com";

fn connection(redis: &TestRedis) -> ::redis::Connection {
    ::redis::Client::open(redis.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a connection to the test's Redis")
}

fn family_keys(redis: &TestRedis, cookie_value: &str) -> [String; 2] {
    family_dump::family_keys(&redis.prefix, &family_of(cookie_value))
}

fn snapshot(redis: &TestRedis, cookie_value: &str) -> FamilyDump {
    dump_family(
        &mut connection(redis),
        &redis.prefix,
        &family_of(cookie_value),
    )
}

/// Puts the family's keys back as `snapshot` saw them: every write since is lost.
fn lose_writes_since(redis: &TestRedis, snapshot: &FamilyDump) {
    restore_family(&mut connection(redis), snapshot);
}

async fn redis_gateway() -> (TestRedis, TestGateway) {
    let redis = TestRedis::new();
    let gw = TestGateway::start(redis.config(), EMAIL).await;
    (redis, gw)
}

fn is_removal(res: &reqwest::Response) -> bool {
    set_cookie(res).is_some_and(|c| c.value().is_empty())
}

/// `POST /auth/refresh` with `cookie_value` must be a 401 that clears the cookie.
async fn refused(gw: &TestGateway, cookie_value: &str) {
    let res = send_with_cookie(gw, Method::POST, "/auth/refresh", cookie_value).await;
    assert_eq!(res.status(), 401);
    assert!(is_removal(&res), "the cookie is cleared");
}

#[actix_web::test]
async fn a_store_that_lost_the_last_rotation_answers_200_with_a_fresh_cookie_and_no_theft_verdict()
{
    let (redis, gw) = redis_gateway().await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let c1 = refreshed(&gw, &c0).await;
    let before = snapshot(&redis, &c1);
    let c2 = refreshed(&gw, &c1).await;
    lose_writes_since(&redis, &before);
    assert_eq!(gw.live_generation(&c2).await, 1, "the store is one behind");

    let c3 = refreshed(&gw, &c2).await;
    let (_, refresh2) = open_cookie(&c2);
    let (_, refresh3) = open_cookie(&c3);
    assert_ne!(refresh3, refresh2, "a fresh successor");
    assert_eq!(
        gw.live_generation(&c3).await,
        3,
        "rotated from the store's state"
    );
    assert_eq!(session_status(&gw, &c3).await, 200);
    refreshed(&gw, &c3).await;
}

#[actix_web::test]
async fn an_older_cookie_is_still_a_replay_after_the_store_lost_a_rotation() {
    let (redis, gw) = redis_gateway().await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let c1 = refreshed(&gw, &c0).await;
    let before = snapshot(&redis, &c1);
    let c2 = refreshed(&gw, &c1).await;
    lose_writes_since(&redis, &before);
    let c3 = refreshed(&gw, &c2).await;
    // The thief's copy from before the loss: older than the store now, and no grace covers
    // it (its successor was lost, the store's predecessor is c2's secret).
    refused(&gw, &c1).await;
    assert_eq!(
        gw.family_state(&c1).await,
        FamilyState::Revoked {
            reason: "reuse".into()
        }
    );
    assert_eq!(
        session_status(&gw, &c3).await,
        401,
        "the whole family is out"
    );
}

#[actix_web::test]
async fn a_store_two_rotations_behind_ends_the_session_without_a_theft_verdict() {
    let (redis, gw) = redis_gateway().await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let before = snapshot(&redis, &c0);
    let c1 = refreshed(&gw, &c0).await;
    let c2 = refreshed(&gw, &c1).await;
    lose_writes_since(&redis, &before);
    refused(&gw, &c2).await;
    assert_eq!(
        gw.family_state(&c2).await,
        FamilyState::Revoked {
            reason: "store_behind".into()
        }
    );
}

#[actix_web::test]
async fn a_family_the_store_lost_entirely_is_a_401_that_clears_the_cookie() {
    let (redis, gw) = redis_gateway().await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let c1 = refreshed(&gw, &c0).await;
    let mut conn = connection(&redis);
    for key in family_keys(&redis, &c1) {
        ::redis::cmd("DEL").arg(key).exec(&mut conn).unwrap();
    }
    let res = send_with_cookie(&gw, Method::GET, "/auth/session", &c1).await;
    assert_eq!(res.status(), 401);
    assert!(is_removal(&res));
    refused(&gw, &c1).await;
    assert_eq!(gw.family_state(&c1).await, FamilyState::Expired);
}
