//! A model-based test of the rotation protocol (DESIGN.md §5, README "How rotation works"):
//! random sequences of rotate, replay (within and after grace), two concurrent rotations,
//! revoke, store rollback by one or two writes and gateway clock steps, run against the memory
//! store and a real `redis-server`, every answer checked against a small reference model of
//! the rotation table written here in plain Rust (no store code).
//!
//! **The model.** One family of one user. Secrets are numbers (hash `{n:064x}`, sealed
//! successor `sealed-{n}`). Every cookie ever issued is kept (generation, secret, the secret it
//! replaced): the newest one is the browser's, the others are what a thief (or a late request
//! of another tab) may present. The store's state is `gen, cur, prev, prev_at, next` (the
//! sealed successor, present only after a rotation with a grace window), `revoked`,
//! `last_used`, `exp`, `abs_exp`. A rotation follows the table: expired (judged first: an
//! expired tombstone is simply gone) → `Expired`; revoked → `Revoked`; the current secret →
//! `Rotated`; `prev` (or a sibling of `cur`: same generation, same predecessor) within grace
//! with the successor still kept → `Grace` with that successor; a generation exactly one ahead
//! whose cookie's previous secret is `cur` → `StoreBehind`, further ahead →
//! `StoreBehindUnproven` (family ended, `store_behind`); anything else → `ReuseDetected`
//! (family ended, `reuse`). The cookie a success hands out is derived as `session::rotate`
//! derives it. After every step `Store::family` must equal the model's state too.
//!
//! **Grace without stepping Redis's clock.** The memory store judges grace by the `now`
//! passed in, Redis by its own `TIME`, which a test cannot step. So the grace window is a
//! per-request choice with a verdict that is the same on both clocks:
//! - *within grace*: `grace_ms` = 1 h. On Redis less than an hour of real time passes in a
//!   case. On the memory store `prev_at` is the `now` of the last rotation, which is also
//!   `last_used`; a live family has `now < last_used + idle` (10 min), so `now - prev_at`
//!   is below the hour too. (The model asserts this.)
//! - *after grace*: `grace_ms` = 0, which the stores read as "within" only when no time at all
//!   passed since `prev_at` (`elapsed <= 0`). Such a request first moves the gateway clock by
//!   1 ms (memory: `now - prev_at >= 1`) and, on Redis, sleeps 2 ms (Redis time moves by at
//!   least 1 ms). A rotation made with `grace_ms` = 0 keeps no successor, so the second half
//!   of a concurrent pair (same `now`) finds none and the edge cannot matter.
//!
//! **The gateway clock** only moves forward (steps of 1 ms, 1 s, 1 min, 9 min, idle − 1 ms,
//! idle): idle and absolute expiry are judged by the `now` passed in on both stores. Redis
//! also expires the family *key* in real time (`PEXPIRE exp - now`, set at each rotation);
//! a step that would land within 10 s before `abs_exp` lands on `abs_exp` instead, so no key
//! is ever given a real lifetime shorter than a case runs.
//!
//! **Rollback** restores the store as it was before the last (or second-to-last) write,
//! creation included (a store that lost the family entirely): the memory store's
//! `snapshot`/`restore`, and on Redis `DUMP`/`RESTORE` of the family's two keys
//! (`common::family_dump`). Cookies are not rolled back: the browser keeps what it was given.
//! A concurrent pair is one write for rollback (no snapshot fits between its halves).
//!
//! **Concurrent rotation**: `tokio::join!` of two rotations of the browser's cookie with
//! different successors; the answers must be those of one of the two orders in the model.
//!
//! Cases: 1024 on the memory store, 256 on Redis (one server for all cases, a fresh family per
//! case); `PROPTEST_CASES=5000 cargo test --test integration rotation_model` runs more on
//! both.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use bffgate::{
    clock::{Clock as _, Millis, SystemClock},
    store::{
        memory::{MemorySnapshot, MemoryStore},
        FamilyInfo, FamilyState, NewFamily, RevokeOutcome, RevokeReason, RotateOutcome,
        RotateRequest, Store,
    },
    tokens::new_id,
};
use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, TestCaseError, TestRunner},
};

use crate::common::{
    family_dump::{dump_family, restore_family, FamilyDump},
    TestRedis,
};

const MIN: Millis = 60_000;
const IDLE: Millis = 10 * MIN;
const MAX: Millis = 25 * MIN;
/// "Within grace": longer than any case runs in real time and than any live family's idleness.
const GRACE: Millis = 60 * MIN;
/// No key may get a real lifetime shorter than this (see the module docs).
const NEAR_ABS: Millis = 10_000;
const UID: &str = "u-model";
const UA: &str = "model-ua";
const IP: &str = "127.0.0.1";

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// `grace_ms` = 1 h.
    Within,
    /// `grace_ms` = 0, at least 1 ms after the last rotation on every clock.
    After,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Ms,
    Second,
    Minute,
    NineMinutes,
    IdleLess1,
    Idle,
}

impl Step {
    fn ms(self) -> Millis {
        match self {
            Self::Ms => 1,
            Self::Second => 1_000,
            Self::Minute => MIN,
            Self::NineMinutes => 9 * MIN,
            Self::IdleLess1 => IDLE - 1,
            Self::Idle => IDLE,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// The browser refreshes with its newest cookie.
    Rotate(Window),
    /// A cookie issued before is presented again: the newest but `back` (modulo how many
    /// were issued; 0 is the newest issued, which may be the browser's).
    Replay { back: usize, window: Window },
    /// Two tabs refresh with the browser's newest cookie at once.
    Concurrent(Window),
    /// Logout.
    Revoke,
    /// The store forgets its last `writes` writes (1 or 2).
    Rollback { writes: usize },
    /// The gateway clock moves on.
    Step(Step),
}

fn window() -> impl Strategy<Value = Window> {
    prop_oneof![3 => Just(Window::Within), 1 => Just(Window::After)]
}

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![
        3 => Just(Step::Ms),
        3 => Just(Step::Second),
        3 => Just(Step::Minute),
        1 => Just(Step::NineMinutes),
        1 => Just(Step::IdleLess1),
        1 => Just(Step::Idle),
    ];
    // Mostly the cookies just before the browser's (a second tab, the one just rotated out).
    let back = prop_oneof![4 => 0usize..3, 1 => 0usize..16];
    prop_oneof![
        6 => window().prop_map(Op::Rotate),
        4 => (back, window()).prop_map(|(back, window)| Op::Replay { back, window }),
        2 => window().prop_map(Op::Concurrent),
        1 => Just(Op::Revoke),
        2 => (1usize..=2).prop_map(|writes| Op::Rollback { writes }),
        2 => step.prop_map(Op::Step),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..30)
}

// ---------------------------------------------------------------------------------------------
// The reference model

type Secret = u64;

fn hash(secret: Secret) -> String {
    format!("{secret:064x}")
}

fn sealed(secret: Secret) -> String {
    format!("sealed-{secret}")
}

fn unsealed(sealed: &str) -> Secret {
    sealed
        .strip_prefix("sealed-")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a sealed successor of this test: {sealed}"))
}

/// What a cookie holds of its refresh token (DESIGN.md §3, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cookie {
    generation: u64,
    secret: Secret,
    /// The secret this one replaced: the proof of a step the store may have lost.
    previous: Option<Secret>,
}

/// The family as the store should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fam {
    gen: u64,
    cur: Secret,
    prev: Option<Secret>,
    /// On the gateway clock (what the memory store keeps; Redis keeps its own time).
    prev_at: Millis,
    /// The successor kept for grace replays.
    next: Option<Secret>,
    revoked: Option<&'static str>,
    last_used: Millis,
    exp: Millis,
    abs_exp: Millis,
}

#[derive(Debug, Clone)]
struct Model {
    fid: String,
    t0: Millis,
    now: Millis,
    /// `None`: the store has no family (not yet created, or lost by a rollback).
    store: Option<Fam>,
    next_secret: Secret,
}

impl Model {
    fn new(fid: String, t0: Millis) -> Self {
        Self {
            fid,
            t0,
            now: t0,
            store: None,
            next_secret: 1,
        }
    }

    fn abs_exp(&self) -> Millis {
        self.t0 + MAX
    }

    fn mint(&mut self) -> Secret {
        self.next_secret += 1;
        self.next_secret
    }

    /// Moves the gateway clock, never to just before `abs_exp` (see the module docs).
    fn advance_clock(&mut self, by: Millis) {
        self.now += by;
        let abs = self.abs_exp();
        if abs - NEAR_ABS < self.now && self.now < abs {
            self.now = abs;
        }
    }

    fn create(&mut self) -> Cookie {
        self.store = Some(Fam {
            gen: 0,
            cur: 0,
            prev: None,
            prev_at: 0,
            next: None,
            revoked: None,
            last_used: self.now,
            exp: (self.now + IDLE).min(self.abs_exp()),
            abs_exp: self.abs_exp(),
        });
        Cookie {
            generation: 0,
            secret: 0,
            previous: None,
        }
    }

    /// The live-or-tombstone family at `now`: `None` once expired (or missing).
    fn unexpired(&mut self) -> Option<&mut Fam> {
        let now = self.now;
        self.store.as_mut().filter(|f| now < f.exp)
    }

    fn state(&self) -> FamilyState {
        match &self.store {
            Some(f) if self.now < f.exp => match f.revoked {
                Some(reason) => FamilyState::Revoked {
                    reason: reason.into(),
                },
                None => FamilyState::Live(FamilyInfo {
                    id: self.fid.clone(),
                    user_id: UID.into(),
                    generation: f.gen,
                    created: self.t0,
                    last_used: f.last_used,
                    idle_exp: f.exp,
                    abs_exp: f.abs_exp,
                    user_agent: UA.into(),
                    ip: IP.into(),
                }),
            },
            _ => FamilyState::Expired,
        }
    }

    fn revoke(&mut self) -> RevokeOutcome {
        match self.unexpired() {
            None => RevokeOutcome::Expired,
            Some(f) if f.revoked.is_some() => RevokeOutcome::AlreadyRevoked,
            Some(f) => {
                f.revoked = Some("logout");
                f.next = None;
                RevokeOutcome::Revoked
            }
        }
    }

    /// The rotation table (DESIGN.md §5, with "Lost writes").
    fn rotate(&mut self, presented: Cookie, successor: Secret, window: Window) -> RotateOutcome {
        let now = self.now;
        let Some(f) = self.unexpired() else {
            return RotateOutcome::Expired;
        };
        if f.revoked.is_some() {
            return RotateOutcome::Revoked;
        }
        let user_id = UID.to_owned();
        let advance = |f: &mut Fam, rotated_out: Secret, gen: u64| {
            f.prev = Some(rotated_out);
            f.prev_at = now;
            f.cur = successor;
            f.gen = gen;
            f.next = (window == Window::Within).then_some(successor);
            f.last_used = now;
            f.exp = (now + IDLE).min(f.abs_exp);
        };
        if presented.secret == f.cur {
            advance(f, f.cur, f.gen + 1);
            return RotateOutcome::Rotated {
                user_id,
                generation: f.gen,
                idle_exp: f.exp,
                abs_exp: f.abs_exp,
            };
        }
        if let (Some(prev), Some(next)) = (f.prev, f.next) {
            let within = match window {
                Window::Within => {
                    assert!(now - f.prev_at < GRACE, "the model's grace argument");
                    true
                }
                Window::After => false,
            };
            let sibling = presented.generation == f.gen && presented.previous == Some(prev);
            if within && (presented.secret == prev || sibling) {
                return RotateOutcome::Grace {
                    user_id,
                    generation: f.gen,
                    idle_exp: f.exp,
                    abs_exp: f.abs_exp,
                    sealed_successor: sealed(next),
                };
            }
        }
        if f.prev.is_some() && presented.generation == f.gen && presented.previous == f.prev {
            // A sibling past the grace window: ended, nobody accused.
            f.revoked = Some("store_behind");
            f.next = None;
            return RotateOutcome::StoreBehindUnproven { user_id };
        }
        if presented.generation > f.gen {
            if presented.generation == f.gen + 1 && presented.previous == Some(f.cur) {
                advance(f, presented.secret, presented.generation + 1);
                return RotateOutcome::StoreBehind {
                    user_id,
                    generation: f.gen,
                    idle_exp: f.exp,
                    abs_exp: f.abs_exp,
                };
            }
            f.revoked = Some("store_behind");
            f.next = None;
            return RotateOutcome::StoreBehindUnproven { user_id };
        }
        f.revoked = Some("reuse");
        f.next = None;
        RotateOutcome::ReuseDetected { user_id }
    }
}

/// The cookie a rotation answer hands to whoever presented `presented` (as `session::rotate`
/// builds it).
fn issued(presented: Cookie, successor: Secret, outcome: &RotateOutcome) -> Option<Cookie> {
    match outcome {
        RotateOutcome::Rotated { generation, .. }
        | RotateOutcome::StoreBehind { generation, .. } => Some(Cookie {
            generation: *generation,
            secret: successor,
            previous: Some(presented.secret),
        }),
        RotateOutcome::Grace {
            generation,
            sealed_successor,
            ..
        } => Some(Cookie {
            generation: *generation,
            secret: unsealed(sealed_successor),
            // A sibling's successor came from the sibling's own predecessor.
            previous: if presented.generation == *generation {
                presented.previous
            } else {
                Some(presented.secret)
            },
        }),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// The stores

enum Backend {
    Memory(Arc<MemoryStore>),
    Redis {
        store: Arc<dyn Store>,
        conn: Mutex<::redis::Connection>,
        prefix: String,
    },
}

enum Snapshot {
    Memory(Box<MemorySnapshot>),
    Redis(FamilyDump),
}

impl Backend {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Memory(m) => m.clone(),
            Self::Redis { store, .. } => store.clone(),
        }
    }

    fn is_redis(&self) -> bool {
        matches!(self, Self::Redis { .. })
    }

    fn snapshot(&self, fid: &str) -> Snapshot {
        match self {
            Self::Memory(m) => Snapshot::Memory(Box::new(m.snapshot().unwrap())),
            Self::Redis { conn, prefix, .. } => {
                Snapshot::Redis(dump_family(&mut conn.lock().unwrap(), prefix, fid))
            }
        }
    }

    fn restore(&self, snapshot: &Snapshot) {
        match (self, snapshot) {
            (Self::Memory(m), Snapshot::Memory(s)) => m.restore(s).unwrap(),
            (Self::Redis { conn, .. }, Snapshot::Redis(d)) => {
                restore_family(&mut conn.lock().unwrap(), d)
            }
            _ => unreachable!("a snapshot of another store"),
        }
    }
}

fn request(
    fid: &str,
    presented: Cookie,
    successor: Secret,
    now: Millis,
    w: Window,
) -> RotateRequest {
    RotateRequest {
        family_id: fid.into(),
        presented_hash: hash(presented.secret),
        presented_generation: Some(presented.generation),
        previous_hash: presented.previous.map(hash),
        successor_hash: hash(successor),
        sealed_successor: sealed(successor),
        now,
        idle_ms: IDLE,
        grace_ms: match w {
            Window::Within => GRACE,
            Window::After => 0,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// One case

struct Case<'a> {
    backend: &'a Backend,
    store: Arc<dyn Store>,
    model: Model,
    /// Every cookie issued, in order; the browser holds `browser`.
    cookies: Vec<Cookie>,
    browser: Cookie,
    /// Before each write: the store's snapshot and the model's store state.
    history: Vec<(Snapshot, Option<Fam>)>,
    /// How often each answer came, to show what the cases reached.
    tally: BTreeMap<&'static str, u64>,
}

fn kind(outcome: &RotateOutcome) -> &'static str {
    match outcome {
        RotateOutcome::Rotated { .. } => "rotated",
        RotateOutcome::Grace { .. } => "grace",
        RotateOutcome::StoreBehind { .. } => "store_behind",
        RotateOutcome::StoreBehindUnproven { .. } => "store_behind_unproven",
        RotateOutcome::ReuseDetected { .. } => "reuse",
        RotateOutcome::Revoked => "revoked",
        RotateOutcome::Expired => "expired",
    }
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, actual: T, expected: T) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{what}: the store answered\n  {actual:?}\nthe model expects\n  {expected:?}"
        ))
    }
}

impl Case<'_> {
    /// Moves the clock for a request in `window` (see the module docs).
    async fn prepare(&mut self, window: Window) {
        if window == Window::After {
            self.model.advance_clock(1);
            if self.backend.is_redis() {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }

    /// Keeps `before` for rollbacks if the model says the store was written.
    fn wrote(&mut self, before: Snapshot, model_before: Option<Fam>) {
        if model_before != self.model.store {
            self.history.push((before, model_before));
        }
    }

    async fn rotate(
        &mut self,
        presented: Cookie,
        window: Window,
    ) -> Result<Option<Cookie>, String> {
        self.prepare(window).await;
        let successor = self.model.mint();
        let model_before = self.model.store.clone();
        let snapshot = self.backend.snapshot(&self.model.fid);
        let req = request(
            &self.model.fid,
            presented,
            successor,
            self.model.now,
            window,
        );
        let actual = self.store.rotate(&req).await.map_err(|e| e.to_string())?;
        let expected = self.model.rotate(presented, successor, window);
        check(&format!("rotate {presented:?}"), &actual, &expected)?;
        let sibling = matches!(actual, RotateOutcome::Grace { generation, .. } if generation == presented.generation);
        let kind = if sibling {
            "grace (sibling)"
        } else {
            kind(&actual)
        };
        *self.tally.entry(kind).or_default() += 1;
        self.wrote(snapshot, model_before);
        let cookie = issued(presented, successor, &actual);
        self.cookies.extend(cookie);
        Ok(cookie)
    }

    async fn concurrent(&mut self, window: Window) -> Result<(), String> {
        self.prepare(window).await;
        let presented = self.browser;
        let (a, b) = (self.model.mint(), self.model.mint());
        let model_before = self.model.store.clone();
        let snapshot = self.backend.snapshot(&self.model.fid);
        let (ra, rb) = (
            request(&self.model.fid, presented, a, self.model.now, window),
            request(&self.model.fid, presented, b, self.model.now, window),
        );
        let (oa, ob) = tokio::join!(self.store.rotate(&ra), self.store.rotate(&rb));
        let actual = (
            oa.map_err(|e| e.to_string())?,
            ob.map_err(|e| e.to_string())?,
        );
        // Both orders in the model; the answers must be one of them.
        let mut a_first = self.model.clone();
        let ab = (
            a_first.rotate(presented, a, window),
            a_first.rotate(presented, b, window),
        );
        let mut b_first = self.model.clone();
        let bb = b_first.rotate(presented, b, window);
        let ba = (b_first.rotate(presented, a, window), bb);
        let (model, order) = if actual == ab {
            if actual == ba && a_first.store != b_first.store {
                return Err("the model cannot tell the order of a concurrent pair".into());
            }
            (a_first, [(a, &actual.0), (b, &actual.1)])
        } else if actual == ba {
            (b_first, [(b, &actual.1), (a, &actual.0)])
        } else {
            return Err(format!(
                "concurrent rotations of {presented:?}: the store answered\n  {actual:?}\nthe model expects (a first)\n  {ab:?}\nor (b first)\n  {ba:?}"
            ));
        };
        self.model = model;
        self.wrote(snapshot, model_before);
        *self.tally.entry("concurrent pair").or_default() += 1;
        // The browser keeps the cookie of the later answer that gave one.
        for (successor, outcome) in order {
            if let Some(cookie) = issued(presented, successor, outcome) {
                self.cookies.push(cookie);
                self.browser = cookie;
            }
        }
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Rotate(window) => {
                if let Some(cookie) = self.rotate(self.browser, window).await? {
                    self.browser = cookie;
                }
            }
            Op::Replay { back, window } => {
                let n = self.cookies.len();
                let presented = self.cookies[n - 1 - back % n];
                self.rotate(presented, window).await?;
            }
            Op::Concurrent(window) => self.concurrent(window).await?,
            Op::Revoke => {
                let model_before = self.model.store.clone();
                let snapshot = self.backend.snapshot(&self.model.fid);
                let actual = self
                    .store
                    .revoke_family(&self.model.fid, RevokeReason::Logout, self.model.now)
                    .await
                    .map_err(|e| e.to_string())?;
                check("revoke", actual, self.model.revoke())?;
                self.wrote(snapshot, model_before);
            }
            Op::Rollback { writes } => {
                let keep = self.history.len().saturating_sub(writes);
                if let Some((snapshot, fam)) = self.history.drain(keep..).next() {
                    self.backend.restore(&snapshot);
                    let lost = if fam.is_none() {
                        "family lost"
                    } else {
                        "rollback"
                    };
                    *self.tally.entry(lost).or_default() += 1;
                    self.model.store = fam;
                }
            }
            Op::Step(step) => self.model.advance_clock(step.ms()),
        }
        let state = self
            .store
            .family(&self.model.fid, self.model.now)
            .await
            .map_err(|e| e.to_string())?;
        check("family state", state, self.model.state())
    }
}

async fn run_case(backend: &Backend, ops: &[Op]) -> Result<BTreeMap<&'static str, u64>, String> {
    let fid = new_id().unwrap();
    let mut model = Model::new(fid.clone(), SystemClock.now_ms());
    let store = backend.store();
    let snapshot = backend.snapshot(&fid);
    let browser = model.create();
    store
        .create_family(&NewFamily {
            id: fid.clone(),
            user_id: UID.into(),
            secret_hash: hash(browser.secret),
            now: model.now,
            idle_ms: IDLE,
            abs_exp: model.abs_exp(),
            user_agent: UA.into(),
            ip: IP.into(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut case = Case {
        backend,
        store,
        model,
        cookies: vec![browser],
        browser,
        history: vec![(snapshot, None)],
        tally: BTreeMap::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        case.apply(op)
            .await
            .map_err(|e| format!("step {i} ({op:?}): {e}\nmodel: {:?}", case.model))?;
    }
    Ok(case.tally)
}

/// Cases per store: `default` unless `PROPTEST_CASES` says otherwise.
fn budget(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `cases` sequences, each on the store `backend` gives.
fn run(cases: u32, backend: impl Fn() -> Arc<Backend>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = budget(cases);
    let cases = config.cases;
    let started = std::time::Instant::now();
    let tally = Mutex::new(BTreeMap::new());
    let result = TestRunner::new(config).run(&ops(), |ops| {
        let answers = rt
            .block_on(run_case(&backend(), &ops))
            .map_err(TestCaseError::fail)?;
        let mut tally = tally.lock().unwrap();
        for (kind, n) in answers {
            *tally.entry(kind).or_insert(0u64) += n;
        }
        Ok(())
    });
    eprintln!(
        "rotation model: {cases} cases in {:.1?}; {:?}",
        started.elapsed(),
        tally.lock().unwrap()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn the_memory_store_follows_the_rotation_model() {
    run(1024, || {
        Arc::new(Backend::Memory(Arc::new(MemoryStore::new())))
    });
}

#[test]
fn redis_follows_the_rotation_model() {
    let redis = TestRedis::new();
    let conn = ::redis::Client::open(redis.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a connection to the test's Redis");
    // One server, one pool, one connection for every case; a fresh family per case.
    let backend = Arc::new(Backend::Redis {
        store: redis.store(),
        conn: Mutex::new(conn),
        prefix: redis.prefix.clone(),
    });
    run(256, || backend.clone());
}

/// Runs one fixed sequence on both stores.
fn replay_on_both(ops: &[Op]) {
    let redis = TestRedis::new();
    let conn = ::redis::Client::open(redis.url.as_str())
        .and_then(|c| c.get_connection())
        .expect("a connection to the test's Redis");
    let backends = [
        Backend::Memory(Arc::new(MemoryStore::new())),
        Backend::Redis {
            store: redis.store(),
            conn: Mutex::new(conn),
            prefix: redis.prefix.clone(),
        },
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for backend in &backends {
        if let Err(e) = rt.block_on(run_case(backend, ops)) {
            panic!("{e}");
        }
    }
}

/// Found by the model: Redis judged a revoked family before its expiry (rotation and state),
/// so a tombstone past its idle expiry by the caller's clock, whose key Redis had not dropped
/// yet, answered `Revoked` where the memory store (and `revoke_family.lua`) say `Expired`.
#[test]
fn regression_an_expired_tombstone_is_expired_on_both_stores() {
    replay_on_both(&[
        Op::Replay {
            back: 0,
            window: Window::After,
        },
        Op::Rotate(Window::Within),
        Op::Step(Step::Idle),
    ]);
}
