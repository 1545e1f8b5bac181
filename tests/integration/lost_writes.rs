//! A store that lost its latest writes (DESIGN.md §5 "Lost writes"), over real HTTP on a real
//! `redis-server`: the family's keys are dumped and later restored, which is exactly what a
//! failover to a replica that missed the last rotation, or a crash under `appendfsync
//! everysec`, leaves behind. A browser one rotation ahead goes on with a fresh cookie and no
//! theft verdict; an older cookie is still a replay; more than one step ahead, or a family
//! that is gone, ends the session without accusing anyone.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
    time::{Duration, Instant},
};

use crate::common::{
    family_dump::{self, dump_family, restore_family, FamilyDump},
    instances::{Served, ServedInstances},
    topologies::SentinelGroup,
    *,
};
use bffgate::{
    clock::{Clock as _, SystemClock},
    store::FamilyState,
};
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

/// A signed-in browser refreshed twice, and the store lost the second rotation: the gateway
/// (its Redis alive), and the cookies of the first and the lost rotation.
async fn one_rotation_lost() -> (TestRedis, TestGateway, String, String) {
    let (redis, gw) = redis_gateway().await;
    let c0 = login_cookie_of(&gw, EMAIL).await;
    let c1 = refreshed(&gw, &c0).await;
    let before = snapshot(&redis, &c1);
    let c2 = refreshed(&gw, &c1).await;
    lose_writes_since(&redis, &before);
    (redis, gw, c1, c2)
}

#[actix_web::test]
async fn a_store_that_lost_the_last_rotation_answers_200_with_a_fresh_cookie_and_no_theft_verdict()
{
    let (_redis, gw, _, c2) = one_rotation_lost().await;
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
    let (_redis, gw, c1, c2) = one_rotation_lost().await;
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

/// What one browser saw through the failover.
#[derive(Debug, Default)]
struct Seen {
    ok: usize,
    unavailable: usize,
    /// 401s: every one is a false logout, since no session is ever revoked here.
    logged_out: usize,
    other: Vec<u16>,
    /// 503s that set a cookie (there must be none: a store outage never touches it).
    cookie_touched: usize,
    /// The first 200 after the kill, as time since the kill.
    first_ok_after_kill: Option<Duration>,
    ok_after_kill: usize,
    /// 200s for requests sent after replication stopped and answered before the kill: the
    /// rotations the promoted replica never saw.
    unreplicated: usize,
    /// 200s for requests sent after replication stopped and before the kill, whenever
    /// answered: the rotations the replica may have missed. Two or more would put the browser
    /// more than one step ahead, which no cookie can prove (DESIGN.md §5): a 401 then is the
    /// documented limit, not a false logout. The pace keeps it at one at most.
    maybe_lost: usize,
}

/// How often each browser refreshes: slower than the window in which replication is stopped,
/// so that a browser is at most one rotation ahead of the promoted replica — the loss a
/// replica that lags by less than one refresh interval causes (in production the interval
/// is the access token's lifetime, minutes).
const PACE: Duration = Duration::from_millis(500);
/// How long the primary may acknowledge rotations the replica never gets before it dies (it
/// dies sooner once three were acknowledged).
const UNREPLICATED: Duration = Duration::from_millis(400);

/// When replication stopped and the primary was killed, and how many rotations the primary
/// acknowledged in between.
#[derive(Default)]
struct Failover {
    stopped: OnceLock<Instant>,
    killed: OnceLock<Instant>,
    unreplicated: AtomicUsize,
}

/// One browser refreshing in a loop through the instances in turn until it has had five
/// 200s after the kill (or the deadline passed).
async fn refresh_through_the_failover(
    n: usize,
    instances: &[Served],
    mut cookie: String,
    failover: &Failover,
    deadline: Instant,
) -> (Seen, String) {
    let mut seen = Seen::default();
    tokio::time::sleep(PACE / 32 * n as u32).await; // spread the browsers over the pace
    for step in 0.. {
        if seen.ok_after_kill >= 5 || Instant::now() > deadline {
            break;
        }
        let gw = &instances[(n + step) % instances.len()];
        let sent = Instant::now();
        let res = with_cookie(gw, Method::POST, "/auth/refresh", &cookie)
            .send()
            .await
            .expect("an answer, never a hang");
        match res.status().as_u16() {
            200 => {
                cookie = set_cookie_value(&res);
                seen.ok += 1;
                let after_stop = failover.stopped.get().is_some_and(|s| sent > *s);
                let before_kill = failover.killed.get().is_none_or(|k| sent < *k);
                seen.maybe_lost += usize::from(after_stop && before_kill);
                let unreplicated = after_stop && failover.killed.get().is_none();
                if unreplicated {
                    seen.unreplicated += 1;
                    failover.unreplicated.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(kill) = failover.killed.get().filter(|k| sent > **k) {
                    seen.ok_after_kill += 1;
                    seen.first_ok_after_kill.get_or_insert(kill.elapsed());
                }
            }
            503 => {
                seen.unavailable += 1;
                seen.cookie_touched += usize::from(set_cookie(&res).is_some());
            }
            401 => {
                seen.logged_out += 1;
                break;
            }
            other => seen.other.push(other),
        }
        tokio::time::sleep(PACE).await;
    }
    (seen, cookie)
}

/// 32 browsers refresh through two `bffgate serve` processes on a Sentinel group; the
/// replica stops receiving writes, the primary acknowledges rotations for 400 ms more and is
/// killed, and the sentinels promote the replica that never saw them. Every browser that
/// rotated in that window is one rotation ahead of the new primary. Afterwards: no false
/// logout (no 401 at all — nothing was revoked), no family revoked for reuse and no
/// `refresh_token_reuse` logged, only 503s while the failover ran (cookie untouched), and the
/// lost rotations resynchronised (`store_behind`).
#[actix_web::test]
async fn a_sentinel_failover_that_loses_rotations_logs_nobody_out_and_accuses_nobody() {
    let mut group = SentinelGroup::start_with_replica_link_through_a_proxy();
    group.wait_until_failover_is_possible();
    let mut config = test_config();
    config.redis = Some(group.redis_config("failover:"));
    let served = ServedInstances::start(2, &config, EMAIL).await;
    let mut cookies = Vec::new();
    for n in 0..32 {
        cookies.push(login_cookie_of(&served.instances[n % 2], EMAIL).await);
    }

    let failover = Failover::default();
    let deadline = Instant::now() + Duration::from_secs(40);
    let browsers = cookies.into_iter().enumerate().map(|(n, cookie)| {
        refresh_through_the_failover(n, &served.instances, cookie, &failover, deadline)
    });
    let kill = async {
        tokio::time::sleep(3 * PACE).await; // under load first
        group.stop_replication();
        let stopped = Instant::now();
        failover.stopped.set(stopped).expect("stopped once");
        // Until three rotations were acknowledged that the replica never got, or the window
        // is over (never longer than the pace: no browser may rotate twice in it).
        while failover.unreplicated.load(Ordering::SeqCst) < 3 && stopped.elapsed() < UNREPLICATED {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        failover.killed.set(Instant::now()).expect("killed once");
        let lost = failover.unreplicated.load(Ordering::SeqCst);
        let group = tokio::task::spawn_blocking(move || {
            group.kill_primary();
            group
        });
        (group.await.expect("the primary killed"), lost)
    };
    let (seen, (group, lost_at_kill)) =
        futures_util::future::join(futures_util::future::join_all(browsers), kill).await;

    let logged_out: usize = seen
        .iter()
        .filter(|(s, _)| s.maybe_lost <= 1)
        .map(|(s, _)| s.logged_out)
        .sum();
    let beyond_proof = seen.iter().filter(|(s, _)| s.maybe_lost > 1).count();
    let unavailable: usize = seen.iter().map(|(s, _)| s.unavailable).sum();
    let ok: usize = seen.iter().map(|(s, _)| s.ok).sum();
    let unreplicated: usize = seen.iter().map(|(s, _)| s.unreplicated).sum();
    let others: Vec<u16> = seen.iter().flat_map(|(s, _)| s.other.clone()).collect();
    let touched: usize = seen.iter().map(|(s, _)| s.cookie_touched).sum();
    let first_ok = seen.iter().filter_map(|(s, _)| s.first_ok_after_kill).min();
    let mut reuse_revoked = 0;
    for (_, cookie) in &seen {
        let state = served
            .store
            .family(&family_of(cookie), SystemClock.now_ms())
            .await
            .expect("the store answers after the failover");
        reuse_revoked += usize::from(
            state
                == FamilyState::Revoked {
                    reason: "reuse".into(),
                },
        );
    }
    let logs: String = served.instances.iter().map(Served::log_text).collect();
    let events = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
    let resynchronised = events("resynchronised");
    eprintln!(
        "failover under load: {ok} × 200, {unavailable} × 503, {logged_out} false logouts, \
         {reuse_revoked} families revoked for reuse, {} refresh_token_reuse logged, \
         {unreplicated} rotations never replicated, {resynchronised} resynchronised \
         (store_behind), {} ended as store_behind, \
         {beyond_proof} browsers possibly more than one rotation ahead, \
         first 200 {first_ok:?} after the kill; primary now on port {:?}",
        events("refresh_token_reuse"),
        events("outcome=\"ended\"") + events("outcome=ended"),
        group.current_primary_port(),
    );
    assert_eq!(logged_out, 0, "false logouts");
    assert_eq!(reuse_revoked, 0, "families wrongly revoked for reuse");
    served.assert_no_event("refresh_token_reuse");
    assert!(others.is_empty(), "only 200s and 503s: {others:?}");
    assert_eq!(touched, 0, "a 503 never touches the cookie");
    assert!(unavailable > 0, "the failover was felt");
    assert!(
        seen.iter()
            .all(|(s, _)| s.ok_after_kill >= 5 || s.maybe_lost > 1),
        "every session went on after the failover"
    );
    // Each rotation acknowledged after replication stopped and before the kill was lost;
    // each such browser is one ahead and resynchronises at its next refresh (answers that came
    // after the kill add more). On a very loaded machine no answer may come back within the
    // window: then nothing was provably lost, and the run says so.
    if lost_at_kill == 0 {
        eprintln!("no rotation was answered between the stop and the kill in this run");
    }
    assert!(
        resynchronised >= lost_at_kill,
        "{lost_at_kill} rotations lost, {resynchronised} resynchronised"
    );
}
