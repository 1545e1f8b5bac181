//! The gateway on Redis as production runs it (topologies from `common::topologies`): a
//! Sentinel failover while requests run costs 503s (cookie kept, never a 401) until the
//! gateway finds the new primary by itself, and sessions continue; a pooled connection to a
//! primary that was only cut off is not lent once it is back (no stale read); several gateway
//! instances on one store, plain or Cluster, in process or as separate `bffgate serve`
//! processes (`common::instances`), agree on every rotation and logout, and 10,000 refreshes
//! over many sessions fork no family and revoke none; an authenticated request
//! costs one Redis command on every topology.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{instances::ServedInstances, topologies::*, *};
use bffgate::{
    clock::{Clock as _, SystemClock},
    config::Config,
    store::{FamilyState, Store},
};
use reqwest::Method;

const EMAIL: &str = "fran@example.com";

/// One answer seen while the primary died: when, its status, whether it set a cookie.
type Seen = (Instant, u16, bool);

/// Four browsers poll `/auth/session` with `cookie` while `cut` takes the primary away;
/// returns the time from `cut` to the first 200 after the first 503, having checked that
/// every answer was a 200 or a 503 and that no 503 touched the cookie.
async fn outage_under_load(
    gw: &Arc<TestGateway>,
    cookie: &str,
    what: &str,
    cut: impl FnOnce(),
) -> Duration {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (gw, cookie, seen, running) = (
            Arc::clone(gw),
            cookie.to_owned(),
            Arc::clone(&seen),
            Arc::clone(&running),
        );
        load.push(actix_web::rt::spawn(async move {
            while running.load(std::sync::atomic::Ordering::Relaxed) {
                let res = send_with_cookie(&gw, Method::GET, "/auth/session", &cookie).await;
                let sets_cookie = res.headers().contains_key("set-cookie");
                let entry = (Instant::now(), res.status().as_u16(), sets_cookie);
                seen.lock().unwrap().push(entry);
            }
        }));
    }
    eventually("requests to run", Duration::from_secs(10), || async {
        seen.lock().unwrap().len() >= 20
    })
    .await;

    let cut_at = Instant::now();
    cut();
    // The first 200 after the first 503: the gateway found the new primary by itself.
    let recovered = || {
        let seen = seen.lock().unwrap();
        let first_503 = seen
            .iter()
            .position(|(at, s, _)| *at >= cut_at && *s == 503)?;
        seen[first_503..]
            .iter()
            .find(|(_, s, _)| *s == 200)
            .map(|(at, _, _)| *at)
    };
    eventually(
        "a 200 after the failover",
        Duration::from_secs(60),
        || async { recovered().is_some() },
    )
    .await;
    let first_200 = recovered().expect("recovered");
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }
    let cost = first_200 - cut_at;
    let seen = seen.lock().unwrap().clone();
    let unavailable = seen.iter().filter(|(_, s, _)| *s == 503).count();
    println!(
        "{what}: first 200 {cost:?} after the primary was cut off; \
         {unavailable} of {} requests got 503",
        seen.len()
    );
    for (_, status, sets_cookie) in &seen {
        assert!(
            *status == 200 || *status == 503,
            "a failover answers 200 or 503, never {status}"
        );
        assert!(
            !(*status == 503 && *sets_cookie),
            "a 503 never touches the cookie"
        );
    }
    assert!(cost < Duration::from_secs(60), "{cost:?}");
    cost
}

async fn gateway_on(group: &SentinelGroup, prefix: &str) -> Arc<TestGateway> {
    let mut config = test_config();
    config.redis = Some(group.redis_config(prefix));
    Arc::new(TestGateway::start(config, EMAIL).await)
}

#[actix_web::test]
async fn a_sentinel_failover_costs_503s_with_the_cookie_kept_and_the_session_continues() {
    let mut group = SentinelGroup::start();
    group.wait_until_failover_is_possible();
    let gw = gateway_on(&group, "failover:").await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    assert_eq!(session_status(&gw, &cookie).await, 200);

    outage_under_load(&gw, &cookie, "sentinel, primary killed", || {
        group.kill_primary()
    })
    .await;
    let new_primary = group
        .current_primary_port()
        .expect("the sentinels name one");
    assert_eq!(new_primary, group.replica_port);

    // The session goes on, on the new primary: it refreshes and stays live.
    assert_eq!(session_status(&gw, &cookie).await, 200);
    let next = refreshed(&gw, &cookie).await;
    assert_eq!(session_status(&gw, &next).await, 200);
    assert_eq!(gw.live_generation(&next).await, 1);
}

#[actix_web::test]
async fn a_primary_cut_off_and_back_as_a_replica_never_answers_for_the_new_one() {
    let mut group = SentinelGroup::start();
    group.wait_until_failover_is_possible();
    let gw = gateway_on(&group, "partition:").await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let doomed = login_cookie_of(&gw, EMAIL).await;

    // Frozen, not dead: requests to it hang until the timeout (2 s), then 503.
    outage_under_load(&gw, &cookie, "sentinel, primary frozen", || {
        group.freeze_primary()
    })
    .await;
    assert_eq!(group.current_primary_port(), Some(group.replica_port));
    // A logout on the new primary, then the old one wakes up and knows nothing of it.
    let res = send_with_cookie(&gw, Method::POST, "/auth/logout", &doomed).await;
    assert!(res.status().is_success(), "logout: {}", res.status());
    group.thaw_primary();
    group.wait_until_old_primary_is_a_replica();
    for _ in 0..20 {
        assert_eq!(
            session_status(&gw, &doomed).await,
            401,
            "read from the new primary"
        );
        assert_eq!(session_status(&gw, &cookie).await, 200);
    }
    let next = refreshed(&gw, &cookie).await;
    assert_eq!(session_status(&gw, &next).await, 200);
}

/// Three gateway instances on the store `config` names.
async fn three_instances(config: Config) -> Vec<TestGateway> {
    vec![
        TestGateway::start(config.clone(), EMAIL).await,
        TestGateway::join(config.clone()).await,
        TestGateway::join(config).await,
    ]
}

/// The state of the family of `cookie` in `store`, now.
async fn family_state_in(store: &dyn Store, cookie: &str) -> FamilyState {
    store
        .family(&family_of(cookie), SystemClock.now_ms())
        .await
        .expect("the store answers")
}

/// The generation of the live family of `cookie` in `store`.
async fn generation_in(store: &dyn Store, cookie: &str) -> u64 {
    match family_state_in(store, cookie).await {
        FamilyState::Live(info) => info.generation,
        other => panic!("the family must stay live, it is {other:?}"),
    }
}

/// 1,000 concurrent refreshes of one cookie spread over the instances `gws` (on `store`) all
/// succeed with the same successor (one new generation, no reuse verdict); then a logout on
/// one instance is a 401 on each other one.
async fn instances_agree_on_rotation_and_logout(gws: &[impl Instance], store: &dyn Store) {
    let c0 = login_cookie_of(&gws[0], EMAIL).await;
    let client = raw_client();
    let refreshes = (0..1000).map(|i| {
        let gw = &gws[i % gws.len()];
        client
            .post(gw.url("/auth/refresh"))
            .header("x-csrf", "1")
            .header("cookie", cookie_header(&c0))
            .send()
    });
    let answers = futures_util::future::join_all(refreshes).await;
    let mut successors = std::collections::BTreeSet::new();
    for res in answers {
        let res = res.expect("refresh request");
        assert_eq!(res.status(), 200, "every concurrent refresh succeeds");
        successors.insert(open_cookie(&set_cookie_value(&res)).1);
    }
    assert_eq!(successors.len(), 1, "one successor secret for all of them");
    let c1 = refreshed(&gws[1 % gws.len()], &c0).await;
    assert_eq!(
        generation_in(store, &c1).await,
        1,
        "exactly one new generation"
    );
    for gw in gws {
        assert_eq!(session_status(gw, &c1).await, 200);
    }

    let res = send_with_cookie(&gws[0], Method::POST, "/auth/logout", &c1).await;
    assert!(res.status().is_success(), "logout: {}", res.status());
    for gw in &gws[1..] {
        assert_eq!(session_status(gw, &c1).await, 401);
    }
    assert!(matches!(
        family_state_in(store, &c1).await,
        FamilyState::Revoked { .. }
    ));
}

#[actix_web::test]
async fn three_instances_on_one_redis_agree_on_every_rotation_and_logout() {
    let redis = TestRedis::new();
    let gws = three_instances(redis.config()).await;
    instances_agree_on_rotation_and_logout(&gws, &*gws[0].store).await;
}

#[actix_web::test]
async fn three_instances_on_a_redis_cluster_agree_on_every_rotation_and_logout() {
    let cluster = RedisCluster::start();
    let mut config = test_config();
    config.redis = Some(cluster.redis_config("instances:"));
    let gws = three_instances(config).await;
    instances_agree_on_rotation_and_logout(&gws, &*gws[0].store).await;
}

#[actix_web::test]
async fn three_instances_on_a_tls_redis_with_an_acl_user_agree_on_every_rotation_and_logout() {
    let redis = TlsRedis::start();
    let mut config = test_config();
    config.redis = Some(redis.redis_config("instances:"));
    let gws = three_instances(config).await;
    instances_agree_on_rotation_and_logout(&gws, &*gws[0].store).await;
}

#[actix_web::test]
async fn three_instances_on_a_sentinel_group_agree_on_every_rotation_and_logout() {
    let group = SentinelGroup::start();
    let mut config = test_config();
    config.redis = Some(group.redis_config("instances:"));
    let gws = three_instances(config).await;
    instances_agree_on_rotation_and_logout(&gws, &*gws[0].store).await;
}

#[actix_web::test]
async fn three_serve_processes_on_one_redis_agree_on_every_rotation_and_logout() {
    let redis = TestRedis::new();
    let served = ServedInstances::start(3, &redis.config(), EMAIL).await;
    instances_agree_on_rotation_and_logout(&served.instances, &*served.store).await;
    served.assert_no_event("refresh_token_reuse");
}

#[actix_web::test]
async fn three_serve_processes_on_a_redis_cluster_agree_on_every_rotation_and_logout() {
    let cluster = RedisCluster::start();
    let mut config = test_config();
    config.redis = Some(cluster.redis_config("processes:"));
    let served = ServedInstances::start(3, &config, EMAIL).await;
    instances_agree_on_rotation_and_logout(&served.instances, &*served.store).await;
    served.assert_no_event("refresh_token_reuse");
}

#[tokio::test]
async fn a_connection_to_a_primary_that_was_cut_off_is_not_lent_once_it_is_back() {
    use bffgate::store::{NewFamily, RevokeOutcome, RevokeReason};
    let mut group = SentinelGroup::start();
    group.wait_until_failover_is_possible();
    // This store's pooled connection leads to the primary, and sits idle through the cut.
    let store = group.store("cut:");
    let now = SystemClock.now_ms();
    let id = bffgate::tokens::new_id().expect("id");
    store
        .create_family(&NewFamily {
            id: id.clone(),
            user_id: "u1".into(),
            secret_hash: "h0".into(),
            now,
            idle_ms: 600_000,
            abs_exp: now + 600_000,
            user_agent: "ua".into(),
            ip: "127.0.0.1".into(),
        })
        .await
        .expect("family created");

    group.freeze_primary();
    let replica = group.replica_port;
    eventually("the failover", Duration::from_secs(60), || async {
        group.current_primary_port() == Some(replica)
    })
    .await;
    // Another instance revokes the family on the new primary, once it acts as one.
    let other = group.store("cut:");
    eventually("the new primary", Duration::from_secs(30), || async {
        other.ping().await.is_ok()
    })
    .await;
    assert_eq!(
        other
            .revoke_family(&id, RevokeReason::Logout, SystemClock.now_ms())
            .await
            .expect("revoked on the new primary"),
        RevokeOutcome::Revoked
    );
    // The old primary wakes up still believing it is one, with the family live in it.
    group.thaw_primary();
    let state = store
        .family(&id, SystemClock.now_ms())
        .await
        .expect("the store answers");
    assert!(
        matches!(state, FamilyState::Revoked { .. }),
        "read from the old primary: {state:?}"
    );
}

/// 20 sessions refresh 420 times each, round the instances `gws` (on `store`), every fifth refresh sent
/// twice at once to two instances (two tabs): 10,080 requests, every one a 200, one
/// successor per step, and one generation per step at the end.
async fn many_sessions_never_fork_nor_get_revoked<I: Instance>(gws: &[I], store: &dyn Store) {
    const SESSIONS: usize = 20;
    const STEPS: usize = 420;
    let mut cookies = Vec::new();
    for _ in 0..SESSIONS {
        cookies.push(login_cookie_of(&gws[0], EMAIL).await);
    }
    let client = raw_client();
    let refresh = |gw: &I, cookie: &str| {
        client
            .post(gw.url("/auth/refresh"))
            .header("x-csrf", "1")
            .header("cookie", cookie_header(cookie))
            .send()
    };
    let chains = cookies.iter().enumerate().map(|(n, c0)| {
        let gws = &gws;
        let refresh = &refresh;
        async move {
            let mut cookie = c0.clone();
            let mut sent = 0;
            for step in 0..STEPS {
                let gw = &gws[(n + step) % gws.len()];
                let res = if step % 5 == 0 {
                    let twin = &gws[(n + step + 1) % gws.len()];
                    let (a, b) =
                        futures_util::future::join(refresh(gw, &cookie), refresh(twin, &cookie))
                            .await;
                    let (a, b) = (a.expect("refresh"), b.expect("refresh"));
                    sent += 2;
                    assert_eq!(a.status(), 200, "session {n} step {step}: wrongly refused");
                    assert_eq!(b.status(), 200, "session {n} step {step}: wrongly refused");
                    let (sa, sb) = (set_cookie_value(&a), set_cookie_value(&b));
                    assert_eq!(
                        open_cookie(&sa).1,
                        open_cookie(&sb).1,
                        "session {n} step {step}: forked"
                    );
                    sa
                } else {
                    let res = refresh(gw, &cookie).await.expect("refresh");
                    sent += 1;
                    assert_eq!(
                        res.status(),
                        200,
                        "session {n} step {step}: wrongly refused"
                    );
                    set_cookie_value(&res)
                };
                cookie = res;
            }
            (cookie, sent)
        }
    });
    let ends = futures_util::future::join_all(chains).await;
    let total: usize = ends.iter().map(|(_, sent)| sent).sum();
    assert_eq!(total, SESSIONS * STEPS + SESSIONS * STEPS / 5);
    assert!(total >= 10_000);
    for (cookie, _) in &ends {
        assert_eq!(
            generation_in(store, cookie).await,
            STEPS as u64,
            "one generation per step, no fork"
        );
    }
}

#[actix_web::test]
async fn ten_thousand_refreshes_over_three_instances_fork_no_family_and_revoke_none() {
    let redis = TestRedis::new();
    let gws = three_instances(redis.config()).await;
    many_sessions_never_fork_nor_get_revoked(&gws, &*gws[0].store).await;
}

#[actix_web::test]
async fn ten_thousand_refreshes_over_three_serve_processes_on_one_redis_fork_no_family_and_revoke_none(
) {
    let redis = TestRedis::new();
    let served = ServedInstances::start(3, &redis.config(), EMAIL).await;
    many_sessions_never_fork_nor_get_revoked(&served.instances, &*served.store).await;
    served.assert_no_event("refresh_token_reuse");
}

#[actix_web::test]
async fn ten_thousand_refreshes_over_three_serve_processes_on_a_redis_cluster_fork_no_family_and_revoke_none(
) {
    let cluster = RedisCluster::start();
    let mut config = test_config();
    config.redis = Some(cluster.redis_config("processes:"));
    let served = ServedInstances::start(3, &config, EMAIL).await;
    many_sessions_never_fork_nor_get_revoked(&served.instances, &*served.store).await;
    served.assert_no_event("refresh_token_reuse");
}

/// Commands the servers at `ports` processed so far, but for the kinds in `excluded`, read
/// on one connection per server (`INFO commandstats`; a read counts itself once on its
/// server, in the next read).
struct CommandCount {
    conns: Vec<redis::Connection>,
    excluded: &'static [&'static str],
}

impl CommandCount {
    fn of(ports: &[u16], excluded: &'static [&'static str]) -> Self {
        let conns = ports
            .iter()
            .map(|p| {
                redis::Client::open(format!("redis://127.0.0.1:{p}"))
                    .and_then(|c| c.get_connection())
                    .expect("redis connection")
            })
            .collect();
        Self { conns, excluded }
    }

    fn total(&mut self) -> u64 {
        let excluded = self.excluded;
        self.conns
            .iter_mut()
            .map(|conn| {
                let info: String = redis::cmd("INFO")
                    .arg("commandstats")
                    .query(conn)
                    .expect("INFO");
                info.lines()
                    .filter_map(|l| l.strip_prefix("cmdstat_"))
                    .filter_map(|l| l.split_once(":calls="))
                    // Subcommands count as their command (`cluster|slots` is `cluster`).
                    .filter(|(name, _)| !excluded.contains(&name.split('|').next().unwrap_or(name)))
                    .filter_map(|(_, rest)| rest.split(',').next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }
}

/// Redis commands per authenticated `GET /auth/session`, over 200 requests after a warm-up.
async fn commands_per_request(
    config: Config,
    ports: &[u16],
    excluded: &'static [&'static str],
) -> f64 {
    let tracked = config.redis.as_ref().is_some_and(|r| r.track_liveness);
    let gw = TestGateway::start(config, EMAIL).await;
    let cookie = login_cookie_of(&gw, EMAIL).await;
    for _ in 0..10 {
        assert_eq!(session_status(&gw, &cookie).await, 200);
    }
    if tracked {
        eventually("liveness tracking", Duration::from_secs(10), || async {
            gw.store.tracks_liveness()
        })
        .await;
        assert_eq!(
            session_status(&gw, &cookie).await,
            200,
            "read once, tracked"
        );
    }
    let mut count = CommandCount::of(ports, excluded);
    let before = count.total();
    for _ in 0..200 {
        assert_eq!(session_status(&gw, &cookie).await, 200);
    }
    let after = count.total();
    let reads = if excluded.contains(&"info") {
        0
    } else {
        ports.len() as u64
    };
    (after - before - reads) as f64 / 200.0
}

/// Redis commands per authenticated request on one server, a Sentinel group and a Cluster,
/// with liveness tracking on or off.
async fn commands_per_request_on_every_topology(track_liveness: bool) -> [(&'static str, f64); 3] {
    let plain = RedisServer::start();
    let mut config = with_redis(test_config(), &plain.url(), "cost:");
    let redis = |mut r: bffgate::config::RedisConfig| {
        r.track_liveness = track_liveness;
        Some(r)
    };
    config.redis = redis(config.redis.clone().expect("redis"));
    // The tracking connection's heartbeat (ROLE) and set-up (HELLO, CLIENT) are not requests'.
    let tracking: &[&str] = &["role", "client", "hello"];
    let standalone = commands_per_request(config.clone(), &[plain.port], tracking).await;

    // The sentinels and the replica talk to the primary on their own (PING, INFO, PUBLISH,
    // REPLCONF…): those kinds are not counted; the standalone count covers a PING per
    // checkout, which takes the same path.
    let group = SentinelGroup::start();
    config.redis = redis(group.redis_config("cost:"));
    let background = &[
        "ping",
        "info",
        "publish",
        "replconf",
        "client",
        "subscribe",
        "role",
        "hello",
    ];
    let sentinel = commands_per_request(config.clone(), &[group.primary_port], background).await;

    let cluster = RedisCluster::start();
    config.redis = redis(cluster.redis_config("cost:"));
    let tracking_cluster: &[&str] = &["role", "client", "hello", "cluster"];
    let clustered = commands_per_request(config, &cluster.ports, tracking_cluster).await;
    [
        ("standalone", standalone),
        ("sentinel", sentinel),
        ("cluster", clustered),
    ]
}

#[actix_web::test]
async fn an_authenticated_request_costs_one_redis_command_on_every_topology_without_tracking() {
    let costs = commands_per_request_on_every_topology(false).await;
    println!("Redis commands per authenticated request, untracked: {costs:?}");
    for (mode, cost) in costs {
        assert!(cost <= 1.0, "{mode}: {cost} commands per request");
    }
}

#[actix_web::test]
async fn an_authenticated_request_of_a_tracked_family_costs_no_redis_command_on_every_topology() {
    let costs = commands_per_request_on_every_topology(true).await;
    println!("Redis commands per authenticated request, tracked: {costs:?}");
    for (mode, cost) in costs {
        // A pooled connection idle for over a second is checked (PING) when lent, whatever
        // the request then needs: at most a few in 200 requests.
        assert!(cost <= 0.05, "{mode}: {cost} commands per request");
    }
}

#[actix_web::test]
async fn a_cluster_failover_costs_503s_with_the_cookie_kept_and_the_session_continues() {
    let mut cluster = RedisCluster::start_with_replicas();
    let mut config = test_config();
    config.redis = Some(cluster.redis_config("cfail:"));
    let gw = Arc::new(TestGateway::start(config, EMAIL).await);
    let cookie = login_cookie_of(&gw, EMAIL).await;
    let key = format!("cfail:fam:{{{}}}", family_of(&cookie));
    let primary = cluster.primary_of(&key).expect("the family's primary");

    outage_under_load(&gw, &cookie, "cluster, primary killed", || {
        cluster.kill(primary)
    })
    .await;
    let promoted = cluster
        .primary_of(&key)
        .expect("a new primary holds the family");
    assert_ne!(promoted, primary);

    assert_eq!(session_status(&gw, &cookie).await, 200);
    let next = refreshed(&gw, &cookie).await;
    assert_eq!(session_status(&gw, &next).await, 200);
    assert_eq!(gw.live_generation(&next).await, 1);
}
