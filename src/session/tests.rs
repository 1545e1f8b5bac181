//! Unit tests of [`Sessions`] on the memory store with a manual clock, no HTTP: the rotation
//! table of DESIGN.md §5, idle and absolute expiry, revocation, the session list and login
//! throttling. They use only the public methods of `Sessions` and the store trait.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::{
    clock::{duration_ms, Clock as _, ManualClock, Millis},
    config::Config,
    password::{hash_blocking, Passwords},
    session::{
        Authenticated, ClientInfo, CookieTokens, InvalidReason, Refresh, SessionError,
        SessionSettings, Sessions,
    },
    store::{
        memory::{MemorySnapshot, MemoryStore},
        FamilyState, Store, UserRecord,
    },
    tokens::{new_id, Sealer, Signer},
};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery";
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);

/// Argon2 is slow in a debug build: one hash of [`PASSWORD`] serves every test.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_blocking(PASSWORD).expect("hash"))
        .clone()
}

/// One `Passwords` for every test: building one hashes its dummy password.
fn passwords() -> Passwords {
    static PASSWORDS: OnceLock<Passwords> = OnceLock::new();
    PASSWORDS
        .get_or_init(|| Passwords::new(2).expect("passwords"))
        .clone()
}

/// The settings the tests assume unless they say otherwise: 5 min access tokens refreshed in
/// their last minute, 10 min idle, 60 min absolute, 30 s grace; logins throttled after 2
/// failures per email and address (50 per address), for 1 s doubling to 8 s.
fn config() -> Config {
    let mut config = Config::default();
    let session = &mut config.session;
    session.access_ttl = 5 * MINUTE;
    session.refresh_before = MINUTE;
    session.idle_timeout = 10 * MINUTE;
    session.max_lifetime = 60 * MINUTE;
    session.reuse_grace = 30 * SECOND;
    let throttle = &mut config.throttle;
    throttle.enabled = true;
    throttle.free_attempts = 2;
    throttle.ip_free_attempts = 50;
    throttle.base_delay = SECOND;
    throttle.max_delay = 8 * SECOND;
    config
}

/// `Sessions` on a fresh memory store with a manual clock, and the user [`EMAIL`].
struct Fixture {
    sessions: Sessions,
    store: Arc<dyn Store>,
    /// The same store, for snapshots: a store that loses its latest writes.
    memory: Arc<MemoryStore>,
    clock: ManualClock,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(config()).await
    }

    /// A fixture with [`EMAIL`] signed in: the login and its tokens.
    async fn signed_in() -> (Self, Authenticated, CookieTokens) {
        let f = Self::new().await;
        let login = f.login().await;
        let tokens = renewed(&login);
        (f, login, tokens)
    }

    /// A fixture where [`EMAIL`] signed in on two devices, and `bob@example.com` on one:
    /// (fixture, laptop, phone, bob).
    async fn two_users() -> (Self, Authenticated, Authenticated, Authenticated) {
        let f = Self::new().await;
        f.add_user("bob@example.com").await;
        let (laptop, phone) = (f.login().await, f.login().await);
        let bob = f.login_as("bob@example.com").await;
        (f, laptop, phone, bob)
    }

    async fn with(config: Config) -> Self {
        let memory = Arc::new(MemoryStore::new());
        let store: Arc<dyn Store> = Arc::clone(&memory) as Arc<dyn Store>;
        let clock = ManualClock::new();
        let sessions = Sessions::new(
            Arc::clone(&store),
            passwords(),
            Arc::new(Signer::generate().expect("signing key")),
            Sealer::new(&[7; 64]),
            Arc::new(clock.clone()),
            SessionSettings::from_config(&config),
        );
        let fixture = Self {
            sessions,
            store,
            memory,
            clock,
        };
        fixture.add_user(EMAIL).await;
        fixture
    }

    async fn add_user(&self, email: &str) -> UserRecord {
        let user = UserRecord {
            id: new_id().expect("id"),
            email: email.to_owned(),
            password_hash: password_hash(),
            roles: vec!["tester".into()],
            disabled: false,
            created_ms: self.now(),
        };
        self.store.create_user(&user).await.expect("user created");
        user
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn try_login(&self, email: &str, password: &str) -> Result<Authenticated, SessionError> {
        self.sessions
            .login(email, password.to_owned(), client(), None)
            .await
    }

    /// Logs `email` in with [`PASSWORD`], which must work.
    async fn login_as(&self, email: &str) -> Authenticated {
        self.try_login(email, PASSWORD).await.expect("login")
    }

    async fn login(&self) -> Authenticated {
        self.login_as(EMAIL).await
    }

    async fn authenticate(
        &self,
        tokens: &CookieTokens,
        refresh: Refresh,
    ) -> Result<Authenticated, SessionError> {
        self.sessions.authenticate(tokens, refresh, &client()).await
    }

    /// A forced rotation of `tokens`, which must work: the successor tokens.
    async fn rotate(&self, tokens: &CookieTokens) -> CookieTokens {
        let auth = self
            .authenticate(tokens, Refresh::Force)
            .await
            .expect("rotation");
        renewed(&auth)
    }

    async fn logout(&self, tokens: &CookieTokens) -> Result<(), SessionError> {
        self.sessions.logout(tokens, &client()).await
    }

    async fn revoke(&self, auth: &Authenticated, family_id: &str) -> Result<(), SessionError> {
        self.sessions.revoke(auth, family_id, &client()).await
    }

    /// After `wait`, presents `tokens` (`refresh`), which must be valid and rotated, and
    /// replaces them with their successor.
    async fn rotate_after(
        &self,
        wait: Duration,
        tokens: &mut CookieTokens,
        refresh: Refresh,
    ) -> Authenticated {
        self.advance(wait);
        let auth = self
            .authenticate(tokens, refresh)
            .await
            .unwrap_or_else(|e| panic!("still live after {wait:?}: {e}"));
        *tokens = renewed(&auth);
        auth
    }

    /// Asserts that presenting `tokens` (`refresh`) is refused as an invalid session, for
    /// `reason`.
    async fn assert_invalid(&self, tokens: &CookieTokens, refresh: Refresh, reason: InvalidReason) {
        let result = self.authenticate(tokens, refresh).await;
        assert_eq!(invalid(result), reason, "{refresh:?}");
    }

    /// What the store holds now, to be put back by [`Fixture::lose_writes_since`].
    fn snapshot(&self) -> MemorySnapshot {
        self.memory.snapshot().expect("snapshot")
    }

    /// The store loses every write since `snapshot` (a failover to a lagging replica).
    fn lose_writes_since(&self, snapshot: &MemorySnapshot) {
        self.memory.restore(snapshot).expect("restore");
    }

    async fn state(&self, family_id: &str) -> FamilyState {
        self.store
            .family(family_id, self.now())
            .await
            .expect("the store answers")
    }

    async fn generation(&self, family_id: &str) -> u64 {
        match self.state(family_id).await {
            FamilyState::Live(info) => info.generation,
            other => panic!("the family should be live, it is {other:?}"),
        }
    }

    async fn assert_revoked(&self, family_id: &str, reason: &str) {
        assert_eq!(
            self.state(family_id).await,
            FamilyState::Revoked {
                reason: reason.into()
            }
        );
    }
}

fn client() -> ClientInfo {
    ClientInfo {
        user_agent: "unit-test/1.0".into(),
        ip: "192.0.2.7".into(),
    }
}

/// The new tokens for the cookie, which `auth` must carry.
fn renewed(auth: &Authenticated) -> CookieTokens {
    auth.renewed.clone().expect("new tokens for the cookie")
}

/// Why `result` is an invalid session (it must be one).
fn invalid(result: Result<Authenticated, SessionError>) -> InvalidReason {
    match result {
        Err(SessionError::Invalid(reason)) => reason,
        other => panic!("expected an invalid session, got {other:?}"),
    }
}

/// Both ways of presenting tokens: a request (rotating only when due) and `/auth/refresh`.
const EITHER: [Refresh; 2] = [Refresh::IfDue, Refresh::Force];

#[tokio::test]
async fn login_opens_a_live_family_with_fresh_tokens_and_its_deadlines() {
    let f = Fixture::new().await;
    let t0 = f.now();
    let auth = f.login().await;
    assert_eq!(auth.user.email, EMAIL);
    assert_eq!(auth.user.roles, ["tester"]);
    assert_eq!(auth.session.access_expires_at, t0 + duration_ms(5 * MINUTE));
    assert_eq!(auth.session.idle_expires_at, t0 + duration_ms(10 * MINUTE));
    assert_eq!(auth.session.max_expires_at, t0 + duration_ms(60 * MINUTE));
    let tokens = renewed(&auth);
    assert!(tokens.refresh.starts_with(&format!("{}.", auth.session.id)));
    let FamilyState::Live(info) = f.state(&auth.session.id).await else {
        panic!("the new family is live");
    };
    assert_eq!(info.user_id, auth.user.id);
    assert_eq!(info.generation, 0);
    assert_eq!(
        (info.user_agent.as_str(), info.ip.as_str()),
        ("unit-test/1.0", "192.0.2.7")
    );
}

#[tokio::test]
async fn login_finds_the_user_by_a_trimmed_lower_cased_email() {
    let f = Fixture::new().await;
    let auth = f.login_as("  ADA@Example.com ").await;
    assert_eq!(auth.user.email, EMAIL);
}

#[tokio::test]
async fn a_wrong_password_an_unknown_email_and_a_disabled_user_are_all_bad_credentials() {
    let f = Fixture::new().await;
    let mut disabled = f.add_user("off@example.com").await;
    disabled.disabled = true;
    f.store.update_user(&disabled).await.expect("update");
    for (email, password) in [
        (EMAIL, "not the password"),
        ("nobody@example.com", PASSWORD),
        ("off@example.com", PASSWORD),
    ] {
        let result = f.try_login(email, password).await;
        assert!(
            matches!(result, Err(SessionError::BadCredentials)),
            "{email}: {result:?}"
        );
    }
}

#[tokio::test]
async fn authenticate_does_not_rotate_while_the_access_token_is_not_due() {
    let f = Fixture::new().await;
    let login = f.login().await;
    f.advance(3 * MINUTE); // two minutes left: not within the last one
    let auth = f
        .authenticate(&renewed(&login), Refresh::IfDue)
        .await
        .expect("valid");
    assert!(auth.renewed.is_none(), "no rotation when not due");
    assert_eq!(auth.user, login.user);
    assert_eq!(auth.session.id, login.session.id);
    assert_eq!(auth.session.idle_expires_at, login.session.idle_expires_at);
    assert_eq!(auth.session.max_expires_at, login.session.max_expires_at);
    // The same access token: read back from its `exp`, which holds whole seconds only.
    let truncated = login.session.access_expires_at - auth.session.access_expires_at;
    assert!((0..1000).contains(&truncated), "{truncated} ms");
    assert_eq!(f.generation(&login.session.id).await, 0);
}

#[tokio::test]
async fn authenticate_rotates_when_the_access_token_is_due() {
    let (f, login, old) = Fixture::signed_in().await;
    f.advance(4 * MINUTE); // within refresh_before (1 min) of the access token's expiry
    let now = f.now();
    let auth = f.authenticate(&old, Refresh::IfDue).await.expect("rotated");
    let new = renewed(&auth);
    assert_ne!(new.refresh, old.refresh);
    assert_ne!(new.access, old.access);
    assert_eq!(auth.session.id, login.session.id);
    assert_eq!(
        auth.session.access_expires_at,
        now + duration_ms(5 * MINUTE)
    );
    assert_eq!(f.generation(&login.session.id).await, 1);
    // The successor is valid and, fresh, not due.
    let again = f.authenticate(&new, Refresh::IfDue).await.expect("valid");
    assert!(again.renewed.is_none());
}

#[tokio::test]
async fn a_forced_refresh_rotates_even_when_not_due() {
    let f = Fixture::new().await;
    let login = f.login().await;
    let new = f.rotate(&renewed(&login)).await;
    assert_ne!(new.refresh, renewed(&login).refresh);
    assert_eq!(f.generation(&login.session.id).await, 1);
}

#[tokio::test]
async fn a_replay_within_grace_gets_the_same_successor_and_no_second_rotation() {
    let (f, login, first) = Fixture::signed_in().await;
    let successor = f.rotate(&first).await;
    f.advance(29 * SECOND); // the refresh response was lost; the browser retries
    let replayed = f.rotate(&first).await;
    assert_eq!(replayed.refresh, successor.refresh, "never a new branch");
    assert_eq!(f.generation(&login.session.id).await, 1);
    f.authenticate(&successor, Refresh::IfDue)
        .await
        .expect("the successor stays valid");
}

#[tokio::test]
async fn a_replay_after_grace_is_reuse_and_revokes_the_family_with_its_newest_token() {
    let (f, login, first) = Fixture::signed_in().await;
    let successor = f.rotate(&first).await;
    f.advance(31 * SECOND);
    f.assert_invalid(&first, Refresh::Force, InvalidReason::ReuseDetected)
        .await;
    f.assert_revoked(&login.session.id, "reuse").await;
    for refresh in EITHER {
        f.assert_invalid(&successor, refresh, InvalidReason::Revoked)
            .await;
    }
}

#[tokio::test]
async fn an_older_generation_is_reuse_even_within_grace() {
    let (f, login, first) = Fixture::signed_in().await;
    let second = f.rotate(&first).await;
    f.rotate(&second).await;
    f.assert_invalid(&first, Refresh::Force, InvalidReason::ReuseDetected)
        .await;
    f.assert_revoked(&login.session.id, "reuse").await;
}

#[tokio::test]
async fn a_browser_one_rotation_ahead_of_a_store_that_lost_it_goes_on_with_a_fresh_cookie() {
    let (f, login, first) = Fixture::signed_in().await;
    let before = f.snapshot();
    let second = f.rotate(&first).await;
    f.lose_writes_since(&before);
    f.advance(MINUTE);
    let third = f.rotate(&second).await;
    assert_ne!(third.refresh, second.refresh, "a fresh successor");
    assert_eq!(f.generation(&login.session.id).await, 2);
    f.authenticate(&third, Refresh::IfDue)
        .await
        .expect("the session goes on");
    f.rotate(&third).await;
}

#[tokio::test]
async fn an_older_cookie_is_still_a_replay_after_the_store_lost_a_rotation() {
    let (f, login, first) = Fixture::signed_in().await;
    let second = f.rotate(&first).await;
    let before = f.snapshot();
    f.rotate(&second).await;
    f.lose_writes_since(&before);
    f.advance(MINUTE);
    // The store is at `second`; `first` is a stolen older cookie, past its grace window.
    f.assert_invalid(&first, Refresh::Force, InvalidReason::ReuseDetected)
        .await;
    f.assert_revoked(&login.session.id, "reuse").await;
}

#[tokio::test]
async fn a_store_two_rotations_behind_ends_the_session_without_a_theft_verdict() {
    let (f, login, first) = Fixture::signed_in().await;
    let before = f.snapshot();
    let second = f.rotate(&first).await;
    let third = f.rotate(&second).await;
    f.lose_writes_since(&before);
    f.assert_invalid(&third, Refresh::Force, InvalidReason::StoreBehind)
        .await;
    f.assert_revoked(&login.session.id, "store_behind").await;
}

#[tokio::test]
async fn a_family_the_store_lost_entirely_is_expired() {
    let f = Fixture::new().await;
    let before = f.snapshot();
    let tokens = renewed(&f.login().await);
    f.lose_writes_since(&before);
    for refresh in EITHER {
        f.assert_invalid(&tokens, refresh, InvalidReason::Expired)
            .await;
    }
}

#[tokio::test]
async fn a_cookie_from_before_generations_still_rotates_and_gains_one() {
    let (f, login, first) = Fixture::signed_in().await;
    assert_eq!(first.generation, Some(0));
    let legacy = CookieTokens {
        previous: None,
        generation: None,
        ..first.clone()
    };
    let next = f.rotate(&legacy).await;
    assert_eq!(next.generation, Some(1));
    assert_eq!(f.generation(&login.session.id).await, 1);
}

#[tokio::test]
async fn a_revoked_family_is_revoked_whether_or_not_a_rotation_is_due() {
    let (f, _, tokens) = Fixture::signed_in().await;
    f.logout(&tokens).await.expect("logout");
    for refresh in EITHER {
        f.assert_invalid(&tokens, refresh, InvalidReason::Revoked)
            .await;
    }
}

#[tokio::test]
async fn an_idle_family_expires_and_every_rotation_slides_its_idle_deadline() {
    let (f, login, mut tokens) = Fixture::signed_in().await;
    // 8 and 16 minutes after login (the second is past the idle timeout counted from login):
    // each time the access token has expired, so the request rotates, which is activity.
    for _ in 0..2 {
        let auth = f
            .rotate_after(8 * MINUTE, &mut tokens, Refresh::IfDue)
            .await;
        let slid = f.now() + duration_ms(10 * MINUTE);
        assert_eq!(auth.session.idle_expires_at, slid);
    }
    f.advance(10 * MINUTE + SECOND); // idle since the last rotation
    f.assert_invalid(&tokens, Refresh::IfDue, InvalidReason::Expired)
        .await;
    assert_eq!(f.state(&login.session.id).await, FamilyState::Expired);
}

#[tokio::test]
async fn the_absolute_lifetime_is_never_extended_by_activity() {
    let mut config = config();
    config.session.max_lifetime = 25 * MINUTE;
    let f = Fixture::with(config).await;
    let t0 = f.now();
    let mut tokens = renewed(&f.login().await);
    for _ in 0..3 {
        let auth = f
            .rotate_after(8 * MINUTE, &mut tokens, Refresh::Force)
            .await;
        assert_eq!(auth.session.max_expires_at, t0 + duration_ms(25 * MINUTE));
        assert!(auth.session.idle_expires_at <= auth.session.max_expires_at);
    }
    f.advance(MINUTE + SECOND); // 25 min + 1 s after login
    f.assert_invalid(&tokens, Refresh::Force, InvalidReason::Expired)
        .await;
}

#[tokio::test]
async fn a_disabled_users_family_is_revoked_at_its_next_rotation() {
    let f = Fixture::new().await;
    let login = f.login().await;
    let mut user = f
        .store
        .user_by_email(EMAIL)
        .await
        .expect("store")
        .expect("user");
    user.disabled = true;
    f.store.update_user(&user).await.expect("update");
    f.assert_invalid(
        &renewed(&login),
        Refresh::Force,
        InvalidReason::UserDisabled,
    )
    .await;
    f.assert_revoked(&login.session.id, "user_disabled").await;
}

#[tokio::test]
async fn logout_revokes_the_family_and_drops_a_cookie_that_names_none() {
    let f = Fixture::new().await;
    let login = f.login().await;
    f.logout(&renewed(&login)).await.expect("logout");
    f.assert_revoked(&login.session.id, "logout").await;
    let garbage = CookieTokens {
        access: "garbage".into(),
        refresh: "garbage".into(),
        previous: None,
        generation: None,
    };
    f.logout(&garbage)
        .await
        .expect("nothing to revoke is not an error");
}

#[tokio::test]
async fn logout_all_revokes_every_family_of_the_user_and_no_one_elses() {
    let (f, laptop, phone, bob) = Fixture::two_users().await;
    let revoked = f
        .sessions
        .logout_all(&laptop, &client())
        .await
        .expect("logout all");
    assert_eq!(revoked, 2);
    for family in [&laptop.session.id, &phone.session.id] {
        f.assert_revoked(family, "logout_all").await;
    }
    assert_eq!(f.generation(&bob.session.id).await, 0, "bob is still live");
}

#[tokio::test]
async fn the_list_holds_only_the_users_live_sessions() {
    let (f, laptop, phone, _bob) = Fixture::two_users().await;
    let gone = f.login().await;
    f.logout(&renewed(&gone)).await.expect("logout");
    let mut listed: Vec<String> = f
        .sessions
        .list(&laptop)
        .await
        .expect("list")
        .into_iter()
        .map(|info| info.id)
        .collect();
    listed.sort();
    let mut expected = vec![laptop.session.id, phone.session.id];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn a_user_revokes_one_of_their_sessions_and_another_users_is_not_found() {
    let (f, laptop, phone, bob) = Fixture::two_users().await;
    f.revoke(&laptop, &phone.session.id).await.expect("revoked");
    f.assert_revoked(&phone.session.id, "logout").await;
    for (auth, family_id) in [
        (&bob, laptop.session.id.as_str()),
        (&laptop, "no-such-session"),
        (&laptop, phone.session.id.as_str()),
    ] {
        let result = f.revoke(auth, family_id).await;
        assert!(
            matches!(result, Err(SessionError::NotFound)),
            "{family_id}: {result:?}"
        );
    }
    assert_eq!(f.generation(&laptop.session.id).await, 0, "still live");
}

#[tokio::test]
async fn a_malformed_token_is_malformed() {
    let f = Fixture::new().await;
    let (one, other) = (renewed(&f.login().await), renewed(&f.login().await));
    let cases = [
        CookieTokens {
            refresh: "garbage".into(),
            ..one.clone()
        },
        CookieTokens {
            access: "garbage".into(),
            ..one.clone()
        },
        // Both well-formed, but the access token names another family.
        CookieTokens {
            access: other.access,
            ..one
        },
    ];
    for tokens in &cases {
        for refresh in EITHER {
            f.assert_invalid(tokens, refresh, InvalidReason::Malformed)
                .await;
        }
    }
}

#[tokio::test]
async fn a_login_with_the_previous_cookie_revokes_the_old_family_as_replaced() {
    let f = Fixture::new().await;
    let before = f.login().await;
    let after = f
        .sessions
        .login(EMAIL, PASSWORD.to_owned(), client(), Some(renewed(&before)))
        .await
        .expect("login");
    f.assert_revoked(&before.session.id, "replaced").await;
    assert_eq!(f.generation(&after.session.id).await, 0);
}

#[tokio::test]
async fn logins_are_throttled_after_the_free_attempts_even_with_the_right_password() {
    let f = Fixture::new().await;
    // Two attempts are free; the second starts the delay the third waits out.
    for _ in 0..2 {
        let wrong = f.try_login(EMAIL, "not the password").await;
        assert!(matches!(wrong, Err(SessionError::BadCredentials)));
    }
    let locked = f.try_login(EMAIL, PASSWORD).await;
    assert!(
        matches!(
            locked,
            Err(SessionError::Throttled {
                retry_after_ms: 1000
            })
        ),
        "{locked:?}"
    );
    f.advance(SECOND);
    f.login().await;
}

#[tokio::test]
async fn a_successful_login_clears_the_counter_of_its_email_and_address() {
    let f = Fixture::new().await;
    for _ in 0..2 {
        let wrong = f.try_login(EMAIL, "not the password").await;
        assert!(matches!(wrong, Err(SessionError::BadCredentials)));
        // The second attempt starts a delay; without the reset, the next round's failure
        // would be refused.
        f.login().await;
    }
}
