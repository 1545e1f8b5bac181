//! One acceptance suite, run against every store: the embedded memory store, and Redis as
//! one plain server, one TLS server with an ACL user, a primary found through sentinels, and
//! a three-primary Cluster (each started by the test, see `common::topologies`). Time is
//! passed in, so expiry is tested without waiting.

use std::sync::Arc;

use crate::common;

use bffgate::{
    clock::{Clock as _, Millis, SystemClock},
    store::{
        memory::MemoryStore, revoke_user_families, FamilyState, Liveness, NewFamily, ProviderScope,
        ProviderSession, Reservation, RevokeOutcome, RevokeReason, RotateOutcome, RotateRequest,
        Store, StoreError, ThrottlePolicy, UserRecord,
    },
    tokens::new_id,
};

const MIN: Millis = 60_000;
const IDLE: Millis = 10 * MIN;
const MAX: Millis = 25 * MIN;
const GRACE: Millis = 30_000;

fn user(email: &str) -> UserRecord {
    UserRecord {
        id: new_id().unwrap(),
        email: email.into(),
        password_hash: "$argon2id$dummy".into(),
        roles: vec!["a".into(), "b".into()],
        disabled: false,
        created_ms: 1,
    }
}

struct Fam {
    id: String,
    uid: String,
    t0: Millis,
}

async fn new_family(store: &dyn Store, uid: &str, hash: &str) -> Fam {
    let t0 = SystemClock.now_ms();
    let id = new_id().unwrap();
    store
        .create_family(&NewFamily {
            id: id.clone(),
            user_id: uid.into(),
            secret_hash: hash.into(),
            now: t0,
            idle_ms: IDLE,
            abs_exp: t0 + MAX,
            user_agent: "ua".into(),
            ip: "127.0.0.1".into(),
        })
        .await
        .unwrap();
    Fam {
        id,
        uid: uid.into(),
        t0,
    }
}

fn rotation(f: &Fam, presented: &str, successor: &str, now: Millis) -> RotateRequest {
    RotateRequest {
        family_id: f.id.clone(),
        presented_hash: presented.into(),
        successor_hash: successor.into(),
        sealed_successor: format!("sealed-{successor}"),
        now,
        idle_ms: IDLE,
        grace_ms: GRACE,
        presented_generation: None,
        previous_hash: None,
    }
}

/// A rotation whose token claims `generation` and whose cookie remembers `previous`.
fn rotation_at(
    f: &Fam,
    (presented, generation, previous): (&str, u64, Option<&str>),
    successor: &str,
    now: Millis,
) -> RotateRequest {
    RotateRequest {
        presented_generation: Some(generation),
        previous_hash: previous.map(str::to_owned),
        ..rotation(f, presented, successor, now)
    }
}

fn generation(outcome: &RotateOutcome) -> u64 {
    match outcome {
        RotateOutcome::Rotated { generation, .. } | RotateOutcome::Grace { generation, .. } => {
            *generation
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
}

async fn users_are_unique_by_email(store: Arc<dyn Store>) {
    let u = user("a@example.com");
    store.create_user(&u).await.unwrap();
    assert_eq!(
        store.user_by_email("a@example.com").await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.user(&u.id).await.unwrap(), Some(u.clone()));
    assert!(matches!(
        store.create_user(&user("a@example.com")).await,
        Err(StoreError::Conflict)
    ));
    let mut changed = u.clone();
    changed.disabled = true;
    changed.roles = vec![];
    store.update_user(&changed).await.unwrap();
    assert_eq!(store.user(&u.id).await.unwrap(), Some(changed));
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    assert_eq!(
        store.user_by_email("nobody@example.com").await.unwrap(),
        None
    );
}

async fn rotation_of_current_secret_rotates_and_slides_idle_expiry(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let t = f.t0 + 5 * MIN;
    let out = store.rotate(&rotation(&f, "h0", "h1", t)).await.unwrap();
    assert_eq!(
        out,
        RotateOutcome::Rotated {
            user_id: f.uid.clone(),
            generation: 1,
            idle_exp: t + IDLE,
            abs_exp: f.t0 + MAX
        }
    );
    // Past the original idle deadline, but within the slid one.
    let FamilyState::Live(info) = store.family(&f.id, f.t0 + 12 * MIN).await.unwrap() else {
        panic!("family should be live after sliding");
    };
    assert_eq!((info.generation, info.last_used), (1, t));
    let out = store
        .rotate(&rotation(&f, "h1", "h2", f.t0 + 12 * MIN))
        .await
        .unwrap();
    assert_eq!(generation(&out), 2);
}

async fn replay_within_grace_returns_the_same_successor(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    store
        .rotate(&rotation(&f, "h0", "h1", f.t0 + 1))
        .await
        .unwrap();
    // A loser of the race presents h0 again, with a successor of its own that must be ignored.
    let out = store
        .rotate(&rotation(&f, "h0", "other", f.t0 + 1 + GRACE))
        .await
        .unwrap();
    match out {
        RotateOutcome::Grace {
            generation,
            sealed_successor,
            ..
        } => {
            assert_eq!(generation, 1);
            assert_eq!(sealed_successor, "sealed-h1");
        }
        other => panic!("expected grace, got {other:?}"),
    }
    // The successor is still current: no branch was created.
    let out = store
        .rotate(&rotation(&f, "h1", "h2", f.t0 + 2))
        .await
        .unwrap();
    assert_eq!(generation(&out), 2);
}

async fn replay_after_grace_revokes_family(store: Arc<dyn Store>) {
    // Grace is judged by the store's clock: for the memory store the `now` passed in, for
    // Redis its own TIME. A short window lets both pass it: `now` moves past it, and so does
    // real time (the store's clock passing the window is what is tested, not a readiness).
    const SHORT: Millis = 200;
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let mut first = rotation(&f, "h0", "h1", f.t0 + 1);
    first.grace_ms = SHORT;
    store.rotate(&first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(SHORT as u64 + 100)).await;
    let late = f.t0 + 2 + SHORT;
    let mut replay = rotation(&f, "h0", "x", late);
    replay.grace_ms = SHORT;
    assert_eq!(
        store.rotate(&replay).await.unwrap(),
        RotateOutcome::ReuseDetected {
            user_id: f.uid.clone()
        }
    );
    // The legitimate holder of h1 is out too, and the tombstone remembers why.
    assert_eq!(
        store
            .rotate(&rotation(&f, "h1", "h2", late + 1))
            .await
            .unwrap(),
        RotateOutcome::Revoked
    );
    assert_eq!(
        store.family(&f.id, late + 1).await.unwrap(),
        FamilyState::Revoked {
            reason: "reuse".into()
        }
    );
}

async fn older_generation_replay_revokes_family_even_within_grace(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    store
        .rotate(&rotation(&f, "h0", "h1", f.t0 + 1))
        .await
        .unwrap();
    store
        .rotate(&rotation(&f, "h1", "h2", f.t0 + 2))
        .await
        .unwrap();
    assert!(matches!(
        store
            .rotate(&rotation(&f, "h0", "x", f.t0 + 3))
            .await
            .unwrap(),
        RotateOutcome::ReuseDetected { .. }
    ));
    assert_eq!(
        store
            .rotate(&rotation(&f, "h2", "h3", f.t0 + 4))
            .await
            .unwrap(),
        RotateOutcome::Revoked
    );
}

/// The store lost the rotation h0 → h1 (the browser holds h1 at generation 1 and remembers
/// h0): the cookie proves the step, the store rotates from its own state, and the family goes
/// on as if nothing was lost; h1 is now the predecessor (grace), h0 still a replay.
async fn a_token_one_step_ahead_with_proof_resynchronises(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let out = store
        .rotate(&rotation_at(&f, ("h1", 1, Some("h0")), "h2", f.t0 + 1))
        .await
        .unwrap();
    assert_eq!(
        out,
        RotateOutcome::StoreBehind {
            user_id: f.uid.clone(),
            generation: 2,
            idle_exp: f.t0 + 1 + IDLE,
            abs_exp: f.t0 + MAX
        }
    );
    // A second tab with the same cookie, within grace: the same successor.
    let out = store
        .rotate(&rotation_at(&f, ("h1", 1, Some("h0")), "other", f.t0 + 2))
        .await
        .unwrap();
    assert!(
        matches!(&out, RotateOutcome::Grace { generation: 2, sealed_successor, .. } if sealed_successor == "sealed-h2"),
        "{out:?}"
    );
    let out = store
        .rotate(&rotation_at(&f, ("h2", 2, Some("h1")), "h3", f.t0 + 3))
        .await
        .unwrap();
    assert_eq!(generation(&out), 3);
    // The cookie the store did know is older than the store now: a replay.
    assert!(matches!(
        store
            .rotate(&rotation_at(&f, ("h0", 0, None), "x", f.t0 + 4))
            .await
            .unwrap(),
        RotateOutcome::ReuseDetected { .. }
    ));
}

/// Ahead of the store without proof — two steps, a previous secret that is not the store's
/// current one, or none — ends the family as `store_behind`: never a reuse verdict.
async fn a_token_ahead_without_proof_ends_the_family_without_a_reuse_verdict(
    store: Arc<dyn Store>,
) {
    for (claim, why) in [
        (("h2", 2, Some("h1")), "two steps ahead"),
        (
            ("h1", 1, Some("not-h0")),
            "a previous secret the store never had",
        ),
        (("h1", 1, None), "no previous secret"),
    ] {
        let f = new_family(store.as_ref(), "u1", "h0").await;
        let out = store
            .rotate(&rotation_at(&f, claim, "x", f.t0 + 1))
            .await
            .unwrap();
        assert_eq!(
            out,
            RotateOutcome::StoreBehindUnproven {
                user_id: f.uid.clone()
            },
            "{why}"
        );
        assert_eq!(
            store.family(&f.id, f.t0 + 2).await.unwrap(),
            FamilyState::Revoked {
                reason: "store_behind".into()
            },
            "{why}"
        );
    }
}

/// A token at or below the store's generation is judged as before, whatever previous secret
/// its cookie claims: a secret the store never had, at the current generation or the one
/// before, is a replay.
async fn a_token_not_ahead_is_a_replay_whatever_its_cookie_claims(store: Arc<dyn Store>) {
    for claim in [("x", 2, Some("h0")), ("x", 1, Some("h0"))] {
        let f = new_family(store.as_ref(), "u1", "h0").await;
        for (p, s, t) in [("h0", "h1", 1), ("h1", "h2", 2)] {
            store.rotate(&rotation(&f, p, s, f.t0 + t)).await.unwrap();
        }
        assert!(
            matches!(
                store
                    .rotate(&rotation_at(&f, claim, "y", f.t0 + 3))
                    .await
                    .unwrap(),
                RotateOutcome::ReuseDetected { .. }
            ),
            "{claim:?}"
        );
    }
}

/// The store lost h0 → h1 and then rotated h0 again (an older request came after the loss):
/// the browser's h1 is a sibling of the store's current secret — same generation, same
/// predecessor. Within the grace window it gets that same successor; a sibling without the
/// predecessor's proof is a replay.
async fn a_sibling_of_the_current_secret_within_grace_gets_the_same_successor(
    store: Arc<dyn Store>,
) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    store
        .rotate(&rotation(&f, "h0", "h1-again", f.t0 + 1))
        .await
        .unwrap();
    let out = store
        .rotate(&rotation_at(&f, ("h1", 1, Some("h0")), "x", f.t0 + 2))
        .await
        .unwrap();
    assert!(
        matches!(&out, RotateOutcome::Grace { generation: 1, sealed_successor, .. } if sealed_successor == "sealed-h1-again"),
        "{out:?}"
    );
    assert!(matches!(
        store
            .rotate(&rotation_at(&f, ("h1", 1, None), "x", f.t0 + 3))
            .await
            .unwrap(),
        RotateOutcome::ReuseDetected { .. }
    ));
}

/// The same sibling after the grace window: still a lost write's artefact, not a replay of
/// anything the store handed out — the family ends as `store_behind`, nobody is accused.
async fn a_sibling_after_the_grace_window_ends_the_family_without_a_reuse_verdict(
    store: Arc<dyn Store>,
) {
    const SHORT: Millis = 200;
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let mut first = rotation(&f, "h0", "h1-again", f.t0 + 1);
    first.grace_ms = SHORT;
    store.rotate(&first).await.unwrap();
    // Grace is judged by the store's clock (Redis TIME): real time must pass.
    tokio::time::sleep(std::time::Duration::from_millis(SHORT as u64 + 100)).await;
    let mut late = rotation_at(&f, ("h1", 1, Some("h0")), "x", f.t0 + 2 + SHORT);
    late.grace_ms = SHORT;
    assert_eq!(
        store.rotate(&late).await.unwrap(),
        RotateOutcome::StoreBehindUnproven {
            user_id: f.uid.clone()
        }
    );
    assert_eq!(
        store.family(&f.id, f.t0 + 3 + SHORT).await.unwrap(),
        FamilyState::Revoked {
            reason: "store_behind".into()
        }
    );
}

async fn unknown_secret_revokes_family(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    assert!(matches!(
        store
            .rotate(&rotation(&f, "forged", "x", f.t0 + 1))
            .await
            .unwrap(),
        RotateOutcome::ReuseDetected { .. }
    ));
}

async fn idle_family_expires(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let later = f.t0 + IDLE;
    assert_eq!(
        store.family(&f.id, later).await.unwrap(),
        FamilyState::Expired
    );
    assert_eq!(
        store
            .rotate(&rotation(&f, "h0", "h1", later))
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
}

async fn absolute_lifetime_is_never_extended(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let mut hash = "h0".to_string();
    // Rotate every 8 minutes: idle never bites, the 25-minute maximum does.
    for (i, minute) in [8, 16, 24].into_iter().enumerate() {
        let next = format!("h{}", i + 1);
        let out = store
            .rotate(&rotation(&f, &hash, &next, f.t0 + minute * MIN))
            .await
            .unwrap();
        if let RotateOutcome::Rotated {
            idle_exp, abs_exp, ..
        } = out
        {
            assert!(idle_exp <= f.t0 + MAX && abs_exp == f.t0 + MAX);
        } else {
            panic!("rotation at {minute} min failed: {out:?}");
        }
        hash = next;
    }
    assert_eq!(
        store
            .rotate(&rotation(&f, &hash, "late", f.t0 + MAX))
            .await
            .unwrap(),
        RotateOutcome::Expired
    );
}

async fn unknown_family_is_expired(store: Arc<dyn Store>) {
    let f = Fam {
        id: new_id().unwrap(),
        uid: "u".into(),
        t0: SystemClock.now_ms(),
    };
    assert_eq!(
        store.rotate(&rotation(&f, "h0", "h1", f.t0)).await.unwrap(),
        RotateOutcome::Expired
    );
    assert_eq!(
        store.family(&f.id, f.t0).await.unwrap(),
        FamilyState::Expired
    );
    assert_eq!(
        store
            .revoke_family(&f.id, RevokeReason::Logout, f.t0)
            .await
            .unwrap(),
        RevokeOutcome::Expired
    );
}

async fn revocation_keeps_a_tombstone_and_first_reason(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    assert_eq!(
        store
            .revoke_family(&f.id, RevokeReason::Logout, f.t0 + 1)
            .await
            .unwrap(),
        RevokeOutcome::Revoked
    );
    assert_eq!(
        store
            .revoke_family(&f.id, RevokeReason::Admin, f.t0 + 2)
            .await
            .unwrap(),
        RevokeOutcome::AlreadyRevoked
    );
    assert_eq!(
        store.family(&f.id, f.t0 + 3).await.unwrap(),
        FamilyState::Revoked {
            reason: "logout".into()
        }
    );
    assert_eq!(
        store
            .rotate(&rotation(&f, "h0", "h1", f.t0 + 4))
            .await
            .unwrap(),
        RotateOutcome::Revoked
    );
}

async fn an_expired_tombstone_is_expired_not_revoked(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    store
        .revoke_family(&f.id, RevokeReason::Logout, f.t0 + 1)
        .await
        .unwrap();
    assert_eq!(
        store
            .revoke_family(&f.id, RevokeReason::Admin, f.t0 + IDLE)
            .await
            .unwrap(),
        RevokeOutcome::Expired
    );
}

async fn user_families_lists_only_live_ones(store: Arc<dyn Store>) {
    let a = new_family(store.as_ref(), "u1", "a0").await;
    let b = new_family(store.as_ref(), "u1", "b0").await;
    let _other = new_family(store.as_ref(), "u2", "c0").await;
    store
        .rotate(&rotation(&b, "b0", "b1", b.t0 + 10))
        .await
        .unwrap();
    let listed = store.user_families("u1", b.t0 + 20).await.unwrap();
    assert_eq!(
        listed.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec![b.id.as_str(), a.id.as_str()]
    );
    assert_eq!(listed[1].user_agent, "ua");
    store
        .revoke_family(&a.id, RevokeReason::Logout, b.t0 + 30)
        .await
        .unwrap();
    assert_eq!(store.user_families("u1", b.t0 + 40).await.unwrap().len(), 1);
    assert_eq!(
        revoke_user_families(store.as_ref(), "u1", RevokeReason::LogoutAll, b.t0 + 50)
            .await
            .unwrap(),
        1
    );
    assert!(store
        .user_families("u1", b.t0 + 60)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.user_families("u2", b.t0 + 60).await.unwrap().len(), 1);
}

async fn zero_grace_window_treats_every_replay_as_reuse(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let mut r = rotation(&f, "h0", "h1", f.t0 + 1);
    r.grace_ms = 0;
    store.rotate(&r).await.unwrap();
    let mut replay = rotation(&f, "h0", "x", f.t0 + 1);
    replay.grace_ms = 0;
    assert!(matches!(
        store.rotate(&replay).await.unwrap(),
        RotateOutcome::ReuseDetected { .. }
    ));
}

const POLICY: ThrottlePolicy = ThrottlePolicy {
    free: 2,
    base_ms: 1_000,
    max_ms: 8_000,
    window_ms: MIN,
};

fn granted(delay_until: Option<Millis>) -> Reservation {
    Reservation::Granted { delay_until }
}

async fn throttle_delays_after_the_free_attempts_and_doubles(store: Arc<dyn Store>) {
    let t0 = SystemClock.now_ms();
    let key = format!("pair:{}", new_id().unwrap());
    let reserve = |now| {
        let (store, key) = (store.clone(), key.clone());
        async move { store.throttle_reserve(&key, &POLICY, now).await.unwrap() }
    };
    assert_eq!(reserve(t0).await, granted(None));
    // The attempt that reaches the allowance goes on, and starts a 1 s delay; then 2 s, 4 s,
    // 8 s, and no more than max.
    assert_eq!(reserve(t0).await, granted(Some(t0 + 1_000)));
    let mut now = t0;
    let mut delay = 1_000;
    for next in [2_000, 4_000, 8_000, 8_000] {
        // While a delay runs, attempts are refused and not counted.
        for at in [now, now + delay - 1] {
            assert_eq!(
                reserve(at).await,
                Reservation::Refused { until: now + delay }
            );
        }
        now += delay;
        assert_eq!(reserve(now).await, granted(Some(now + next)));
        delay = next;
    }
}

async fn throttle_forgets_after_the_window_on_reset_and_takes_refunds(store: Arc<dyn Store>) {
    let t0 = SystemClock.now_ms();
    let key = format!("pair:{}", new_id().unwrap());
    let reserve = |now| {
        let (store, key) = (store.clone(), key.clone());
        async move { store.throttle_reserve(&key, &POLICY, now).await.unwrap() }
    };
    reserve(t0).await;
    reserve(t0).await;
    // A quiet window after the delay: attempts start from zero again.
    let later = t0 + 1_000 + MIN;
    assert_eq!(reserve(later).await, granted(None));
    // A refund gives the attempt back: the next one is still free.
    store.throttle_refund(&key).await.unwrap();
    assert_eq!(reserve(later).await, granted(None));
    assert_eq!(reserve(later).await, granted(Some(later + 1_000)));
    store.throttle_reset(&key).await.unwrap();
    assert_eq!(reserve(later).await, granted(None));
    // Refunding a key that does not exist creates nothing.
    let gone = format!("pair:{}", new_id().unwrap());
    store.throttle_refund(&gone).await.unwrap();
    let fresh = store.throttle_reserve(&gone, &POLICY, later).await.unwrap();
    assert_eq!(fresh, granted(None));
}

async fn parallel_reservations_grant_exactly_the_free_allowance(store: Arc<dyn Store>) {
    let now = SystemClock.now_ms();
    let key = format!("pair:{}", new_id().unwrap());
    let policy = ThrottlePolicy { free: 5, ..POLICY };
    let attempts = (0..50).map(|_| {
        let (store, key) = (store.clone(), key.clone());
        async move { store.throttle_reserve(&key, &policy, now).await.unwrap() }
    });
    let answers = futures_util::future::join_all(attempts).await;
    let granted = answers
        .iter()
        .filter(|a| matches!(a, Reservation::Granted { .. }))
        .count();
    assert_eq!(granted, 5);
}

async fn liveness_agrees_with_the_family_state(store: Arc<dyn Store>) {
    let f = new_family(store.as_ref(), "u1", "h0").await;
    let FamilyState::Live(info) = store.family(&f.id, f.t0 + 1).await.unwrap() else {
        panic!("a new family is live");
    };
    assert_eq!(
        store.family_liveness(&f.id, f.t0 + 1).await.unwrap(),
        Liveness::Live {
            user_id: "u1".into(),
            idle_exp: info.idle_exp,
            abs_exp: info.abs_exp,
        }
    );
    assert_eq!(
        store.family_liveness("nope", f.t0).await.unwrap(),
        Liveness::Expired
    );
    let revoked = new_family(store.as_ref(), "u1", "r0").await;
    store
        .revoke_family(&revoked.id, RevokeReason::Logout, revoked.t0 + 2)
        .await
        .unwrap();
    assert_eq!(
        store
            .family_liveness(&revoked.id, revoked.t0 + 3)
            .await
            .unwrap(),
        Liveness::Revoked
    );
    // Last: the memory store forgets a family once asked about it after its expiry.
    assert_eq!(
        store.family_liveness(&f.id, f.t0 + IDLE).await.unwrap(),
        Liveness::Expired
    );
}

async fn identity_links_are_per_provider_and_the_first_link_wins(store: Arc<dyn Store>) {
    // Subjects are the provider's strings: braces and spaces must not matter.
    let sub = "248289761001 {tag} ü";
    assert_eq!(store.linked_user("corp", sub).await.unwrap(), None);
    assert_eq!(
        store.link_identity("corp", sub, "user-a").await.unwrap(),
        "user-a"
    );
    // A concurrent second sign-in that created another user loses: the first link stays.
    assert_eq!(
        store.link_identity("corp", sub, "user-b").await.unwrap(),
        "user-a"
    );
    assert_eq!(
        store.linked_user("corp", sub).await.unwrap().as_deref(),
        Some("user-a")
    );
    // The same subject at another provider is another identity.
    assert_eq!(store.linked_user("other", sub).await.unwrap(), None);
    let racers = (0..8).map(|i| {
        let store = Arc::clone(&store);
        async move {
            store
                .link_identity("race", "s", &format!("u{i}"))
                .await
                .unwrap()
        }
    });
    let winners = futures_util::future::join_all(racers).await;
    assert!(winners.iter().all(|w| *w == winners[0]), "{winners:?}");
}

async fn provider_sessions_index_families_by_subject_and_session(store: Arc<dyn Store>) {
    let now = SystemClock.now_ms();
    let opened = |family: &str, sid: Option<&str>| ProviderSession {
        provider: "corp".into(),
        subject: "alice {x}".into(),
        sid: sid.map(Into::into),
        family_id: family.into(),
        now,
        until: now + MAX,
    };
    for (family, sid) in [("f1", Some("sid-1")), ("f2", Some("sid-2")), ("f3", None)] {
        store
            .record_provider_session(&opened(family, sid))
            .await
            .unwrap();
    }
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let subject = store
        .provider_families("corp", ProviderScope::Subject("alice {x}"), now)
        .await
        .unwrap();
    assert_eq!(sorted(subject), ["f1", "f2", "f3"]);
    let one = store
        .provider_families("corp", ProviderScope::Session("sid-2"), now)
        .await
        .unwrap();
    assert_eq!(one, ["f2"]);
    for (provider, scope) in [
        ("other", ProviderScope::Subject("alice {x}")),
        ("corp", ProviderScope::Subject("bob")),
        ("corp", ProviderScope::Session("sid-3")),
    ] {
        assert!(store
            .provider_families(provider, scope, now)
            .await
            .unwrap()
            .is_empty());
    }
}

macro_rules! acceptance_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(Arc::new(MemoryStore::new())).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let redis = common::TestRedis::new();
                    super::$case(redis.store()).await;
                }
            )*
        }
        mod redis_tls {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let redis = common::topologies::TlsRedis::start();
                    super::$case(Arc::new(redis.store("t:"))).await;
                }
            )*
        }
        mod redis_sentinel {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let group = common::topologies::SentinelGroup::start();
                    super::$case(Arc::new(group.store("t:"))).await;
                }
            )*
        }
        mod redis_cluster {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    let cluster = common::topologies::RedisCluster::start();
                    super::$case(Arc::new(cluster.store("t:"))).await;
                }
            )*
        }
    };
}

acceptance_suite!(
    users_are_unique_by_email,
    rotation_of_current_secret_rotates_and_slides_idle_expiry,
    replay_within_grace_returns_the_same_successor,
    replay_after_grace_revokes_family,
    older_generation_replay_revokes_family_even_within_grace,
    a_token_one_step_ahead_with_proof_resynchronises,
    a_token_ahead_without_proof_ends_the_family_without_a_reuse_verdict,
    a_token_not_ahead_is_a_replay_whatever_its_cookie_claims,
    a_sibling_of_the_current_secret_within_grace_gets_the_same_successor,
    a_sibling_after_the_grace_window_ends_the_family_without_a_reuse_verdict,
    unknown_secret_revokes_family,
    idle_family_expires,
    absolute_lifetime_is_never_extended,
    unknown_family_is_expired,
    revocation_keeps_a_tombstone_and_first_reason,
    an_expired_tombstone_is_expired_not_revoked,
    user_families_lists_only_live_ones,
    zero_grace_window_treats_every_replay_as_reuse,
    throttle_delays_after_the_free_attempts_and_doubles,
    throttle_forgets_after_the_window_on_reset_and_takes_refunds,
    parallel_reservations_grant_exactly_the_free_allowance,
    liveness_agrees_with_the_family_state,
    identity_links_are_per_provider_and_the_first_link_wins,
    provider_sessions_index_families_by_subject_and_session,
);

#[tokio::test]
async fn redis_keys_share_the_family_hash_tag_and_hold_no_secret() {
    let redis = common::TestRedis::new();
    let store = redis.store();
    let f = new_family(store.as_ref(), "u1", "h0").await;
    store
        .rotate(&rotation(&f, "h0", "h1", f.t0 + 1))
        .await
        .unwrap();
    let client = ::redis::Client::open(redis.url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}fam:*", redis.prefix))
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert!(
            key.contains(&format!("{{{}}}", f.id)),
            "{key} lacks the hash tag"
        );
    }
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("{}fam:{{{}}}", redis.prefix, f.id))
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 0 && ttl <= IDLE, "family key ttl {ttl}");
    let next_ttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("{}fam:{{{}}}:next", redis.prefix, f.id))
        .query(&mut conn)
        .unwrap();
    assert!(
        next_ttl > 0 && next_ttl <= GRACE,
        "successor ttl {next_ttl}"
    );
}

async fn long_user_agents_are_kept_whole(store: Arc<dyn Store>) {
    let t0 = SystemClock.now_ms();
    let user_agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
         (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1 — «ünïcødé» 🚀";
    let id = new_id().unwrap();
    store
        .create_family(&NewFamily {
            id: id.clone(),
            user_id: "u1".into(),
            secret_hash: "h0".into(),
            now: t0,
            idle_ms: IDLE,
            abs_exp: t0 + MAX,
            user_agent: user_agent.into(),
            ip: "2001:db8:85a3:8d3:1319:8a2e:370:7348".into(),
        })
        .await
        .unwrap();
    let listed = store.user_families("u1", t0 + 1).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user_agent, user_agent);
    assert_eq!(listed[0].ip, "2001:db8:85a3:8d3:1319:8a2e:370:7348");
    match store.family(&id, t0 + 1).await.unwrap() {
        FamilyState::Live(info) => assert_eq!(info.user_agent, user_agent),
        other => panic!("{other:?}"),
    }
}

mod long_user_agents {
    use super::*;

    #[tokio::test]
    async fn memory() {
        long_user_agents_are_kept_whole(Arc::new(MemoryStore::new())).await;
    }

    #[tokio::test]
    async fn redis() {
        let redis = common::TestRedis::new();
        long_user_agents_are_kept_whole(redis.store()).await;
    }
}

#[tokio::test]
async fn redis_family_hash_stays_in_the_compact_encoding() {
    let redis = common::TestRedis::new();
    let store = redis.store();
    let t0 = SystemClock.now_ms();
    let id = new_id().unwrap();
    store
        .create_family(&NewFamily {
            id: id.clone(),
            user_id: new_id().unwrap(),
            secret_hash: "x".repeat(43),
            now: t0,
            idle_ms: IDLE,
            abs_exp: t0 + MAX,
            user_agent: "A".repeat(256),
            ip: "2001:db8:85a3:8d3:1319:8a2e:370:7348".into(),
        })
        .await
        .unwrap();
    let mut conn = ::redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let key = format!("{}fam:{{{id}}}", redis.prefix);
    let encoding: String = ::redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    assert_eq!(encoding, "listpack");
    let bytes: i64 = ::redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query(&mut conn)
        .unwrap();
    // A 256-byte agent and a full IPv6 address: the hashtable encoding takes over 1,100.
    assert!(bytes < 700, "a family hash takes {bytes} bytes");
}

#[tokio::test]
async fn a_redis_restart_costs_no_read() {
    let mut server = common::RedisServer::start();
    let store: Arc<dyn Store> = Arc::new(
        bffgate::store::redis::RedisStore::connect(
            &server.url(),
            "restart:",
            4,
            std::time::Duration::from_secs(2),
        )
        .unwrap(),
    );
    // Open the pool's connections (pools are per thread: this test runs on one), all used a
    // moment ago, so none is due an idle check.
    let opened = (0..8).map(|_| store.family("f", SystemClock.now_ms()));
    for result in futures_util::future::join_all(opened).await {
        assert!(result.is_ok());
    }
    server.stop();
    server.restart();
    let mut failures = 0;
    for _ in 0..16 {
        if store.family("f", SystemClock.now_ms()).await.is_err() {
            failures += 1;
        }
    }
    // The read that finds its connection dead is sent once more, on a checked or new one.
    assert_eq!(failures, 0, "{failures} reads failed after the restart");
    assert!(store.ping().await.is_ok());
}
