//! The embedded store: one gateway instance, nothing kept across a restart.
//!
//! Same semantics as the Redis store (the acceptance suite runs against both): expiry is
//! judged against the `now` passed in, and expired entries are dropped lazily.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{
    family_expiry, FamilyInfo, FamilyState, NewFamily, ProviderScope, ProviderSession, Reservation,
    RevokeOutcome, RevokeReason, RotateOutcome, RotateRequest, Store, StoreError, ThrottlePolicy,
    UserRecord,
};
use crate::{clock::Millis, tokens::hashes_equal};

/// Throttle entries kept before forgotten ones are swept.
const MAX_THROTTLE_KEYS: usize = 10_000;

#[derive(Debug, Clone)]
struct Family {
    info: FamilyInfo,
    cur: String,
    prev: Option<(String, Millis)>,
    /// The sealed successor, served to replays of `prev` within the grace window.
    next: Option<String>,
    revoked: Option<String>,
}

impl Family {
    /// Makes `r`'s successor current at `generation`, `rotated_out` becoming `prev`; returns
    /// the generation and the new expiries.
    fn advance(
        &mut self,
        rotated_out: String,
        generation: u64,
        r: &RotateRequest,
    ) -> (u64, Millis, Millis) {
        self.cur = r.successor_hash.clone();
        self.prev = Some((rotated_out, r.now));
        self.next = (r.grace_ms > 0).then(|| r.sealed_successor.clone());
        self.info.generation = generation;
        self.info.last_used = r.now;
        self.info.idle_exp = family_expiry(r.now, r.idle_ms, self.info.abs_exp);
        (generation, self.info.idle_exp, self.info.abs_exp)
    }

    /// Revokes the family, keeping it as a tombstone.
    fn end(&mut self, reason: RevokeReason) {
        self.revoked = Some(reason.as_str().to_owned());
        self.next = None;
    }
}

#[derive(Debug, Default, Clone)]
struct Inner {
    users: BTreeMap<String, UserRecord>,
    emails: HashMap<String, String>,
    families: HashMap<String, Family>,
    user_families: HashMap<String, HashSet<String>>,
    /// Throttle key → (failures, lock end, forget at).
    throttles: HashMap<String, (u64, Millis, Millis)>,
    /// (provider, subject) → user id.
    identity_links: HashMap<(String, String), String>,
    /// (provider, `sub:<subject>` or `sid:<sid>`) → (family ids, forget at).
    provider_families: HashMap<(String, String), (HashSet<String>, Millis)>,
}

/// The memory store's index key of a provider scope.
fn scope_key(provider: &str, scope: ProviderScope<'_>) -> (String, String) {
    let name = match scope {
        ProviderScope::Subject(sub) => format!("sub:{sub}"),
        ProviderScope::Session(sid) => format!("sid:{sid}"),
    };
    (provider.to_owned(), name)
}

/// A copy of a [`MemoryStore`]'s content.
#[derive(Debug, Clone)]
pub struct MemorySnapshot(Inner);

/// Users and families in this process's memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything this store holds, to be put back by [`MemoryStore::restore`]: what a
    /// Redis that lost its latest writes looks like (tests of DESIGN.md §5 "Lost writes").
    pub fn snapshot(&self) -> Result<MemorySnapshot, StoreError> {
        Ok(MemorySnapshot(self.lock()?.clone()))
    }

    /// Puts back what [`MemoryStore::snapshot`] took, forgetting every write since.
    pub fn restore(&self, snapshot: &MemorySnapshot) -> Result<(), StoreError> {
        *self.lock()? = snapshot.0.clone();
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".into()))
    }
}

impl Inner {
    /// The family, unless its record has expired (then it is dropped, as Redis would).
    fn family_mut(&mut self, id: &str, now: Millis) -> Option<&mut Family> {
        let expired = self
            .families
            .get(id)
            .is_some_and(|f| now >= f.info.idle_exp);
        if expired {
            self.families.remove(id);
            return None;
        }
        self.families.get_mut(id)
    }

    fn state(&mut self, id: &str, now: Millis) -> FamilyState {
        match self.family_mut(id, now) {
            None => FamilyState::Expired,
            Some(f) => match &f.revoked {
                Some(reason) => FamilyState::Revoked {
                    reason: reason.clone(),
                },
                None => FamilyState::Live(f.info.clone()),
            },
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.emails.contains_key(&user.email) {
            return Err(StoreError::Conflict);
        }
        inner.emails.insert(user.email.clone(), user.id.clone());
        inner.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .emails
            .get(email)
            .and_then(|id| inner.users.get(id))
            .cloned())
    }

    async fn user(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.lock()?.users.get(id).cloned())
    }

    async fn update_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.lock()?.users.insert(user.id.clone(), user.clone());
        Ok(())
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut users: Vec<UserRecord> = self.lock()?.users.values().cloned().collect();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(users)
    }

    async fn create_family(&self, f: &NewFamily) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let family = Family {
            info: FamilyInfo {
                id: f.id.clone(),
                user_id: f.user_id.clone(),
                generation: 0,
                created: f.now,
                last_used: f.now,
                idle_exp: family_expiry(f.now, f.idle_ms, f.abs_exp),
                abs_exp: f.abs_exp,
                user_agent: f.user_agent.clone(),
                ip: f.ip.clone(),
            },
            cur: f.secret_hash.clone(),
            prev: None,
            next: None,
            revoked: None,
        };
        inner.families.insert(f.id.clone(), family);
        inner
            .user_families
            .entry(f.user_id.clone())
            .or_default()
            .insert(f.id.clone());
        Ok(())
    }

    async fn family(&self, id: &str, now: Millis) -> Result<FamilyState, StoreError> {
        Ok(self.lock()?.state(id, now))
    }

    async fn rotate(&self, r: &RotateRequest) -> Result<RotateOutcome, StoreError> {
        let mut inner = self.lock()?;
        let Some(f) = inner.family_mut(&r.family_id, r.now) else {
            return Ok(RotateOutcome::Expired);
        };
        if f.revoked.is_some() {
            return Ok(RotateOutcome::Revoked);
        }
        let user_id = f.info.user_id.clone();
        // The same table as `rotate_family.lua`, step for step (DESIGN.md §5).
        if hashes_equal(&r.presented_hash, &f.cur) {
            let rotated_out = f.cur.clone();
            let (generation, idle_exp, abs_exp) = f.advance(rotated_out, f.info.generation + 1, r);
            return Ok(RotateOutcome::Rotated {
                user_id,
                generation,
                idle_exp,
                abs_exp,
            });
        }
        let cookie_previous = |hash: &str| {
            r.previous_hash
                .as_deref()
                .is_some_and(|p| hashes_equal(p, hash))
        };
        if let (Some((prev, prev_at)), Some(sealed)) = (&f.prev, &f.next) {
            // One process, one clock: the caller's `now` is this store's clock (the Redis
            // store judges grace by Redis's own clock, whatever the caller's says).
            let within_grace = r.now - prev_at <= r.grace_ms;
            let sibling =
                r.presented_generation == Some(f.info.generation) && cookie_previous(prev);
            if within_grace && (hashes_equal(&r.presented_hash, prev) || sibling) {
                return Ok(RotateOutcome::Grace {
                    user_id,
                    generation: f.info.generation,
                    idle_exp: f.info.idle_exp,
                    abs_exp: f.info.abs_exp,
                    sealed_successor: sealed.clone(),
                });
            }
        }
        // A sibling past the grace window: a lost write's artefact, no replay (see the Lua).
        let sibling = r.presented_generation == Some(f.info.generation)
            && f.prev
                .as_ref()
                .is_some_and(|(prev, _)| cookie_previous(prev));
        if sibling {
            f.end(RevokeReason::StoreBehind);
            return Ok(RotateOutcome::StoreBehindUnproven { user_id });
        }
        match r.presented_generation {
            Some(ahead) if ahead > f.info.generation => {
                if ahead == f.info.generation + 1 && cookie_previous(&f.cur) {
                    let (generation, idle_exp, abs_exp) =
                        f.advance(r.presented_hash.clone(), ahead + 1, r);
                    return Ok(RotateOutcome::StoreBehind {
                        user_id,
                        generation,
                        idle_exp,
                        abs_exp,
                    });
                }
                f.end(RevokeReason::StoreBehind);
                Ok(RotateOutcome::StoreBehindUnproven { user_id })
            }
            _ => {
                f.end(RevokeReason::Reuse);
                Ok(RotateOutcome::ReuseDetected { user_id })
            }
        }
    }

    async fn revoke_family(
        &self,
        id: &str,
        reason: RevokeReason,
        now: Millis,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut inner = self.lock()?;
        Ok(match inner.family_mut(id, now) {
            None => RevokeOutcome::Expired,
            Some(f) if f.revoked.is_some() => RevokeOutcome::AlreadyRevoked,
            Some(f) => {
                f.end(reason);
                RevokeOutcome::Revoked
            }
        })
    }

    async fn user_families(
        &self,
        user_id: &str,
        now: Millis,
    ) -> Result<Vec<FamilyInfo>, StoreError> {
        let mut inner = self.lock()?;
        let ids: Vec<String> = inner
            .user_families
            .get(user_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut live = Vec::new();
        for id in ids {
            match inner.state(&id, now) {
                FamilyState::Live(info) => live.push(info),
                _ => {
                    if let Some(set) = inner.user_families.get_mut(user_id) {
                        set.remove(&id);
                    }
                }
            }
        }
        live.sort_by_key(|f| std::cmp::Reverse(f.last_used));
        Ok(live)
    }

    async fn throttle_reserve(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        now: Millis,
    ) -> Result<Reservation, StoreError> {
        let mut inner = self.lock()?;
        if inner.throttles.len() >= MAX_THROTTLE_KEYS {
            inner.throttles.retain(|_, (_, _, forget)| now < *forget);
        }
        let entry = inner.throttles.entry(key.to_owned()).or_insert((0, 0, 0));
        if now >= entry.2 {
            *entry = (0, 0, 0);
        }
        if now < entry.1 {
            return Ok(Reservation::Refused { until: entry.1 });
        }
        entry.0 += 1;
        let delay_until = policy.delay_after(entry.0, now);
        if let Some(until) = delay_until {
            entry.1 = until;
        }
        entry.2 = now + policy.window_ms + delay_until.map_or(0, |u| u - now);
        Ok(Reservation::Granted { delay_until })
    }

    async fn throttle_refund(&self, key: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.lock()?.throttles.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
        Ok(())
    }

    async fn throttle_reset(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.throttles.remove(key);
        Ok(())
    }

    async fn linked_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()?
            .identity_links
            .get(&(provider.to_owned(), subject.to_owned()))
            .cloned())
    }

    async fn link_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
    ) -> Result<String, StoreError> {
        Ok(self
            .lock()?
            .identity_links
            .entry((provider.to_owned(), subject.to_owned()))
            .or_insert_with(|| user_id.to_owned())
            .clone())
    }

    async fn record_provider_session(&self, session: &ProviderSession) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let scopes = std::iter::once(ProviderScope::Subject(&session.subject))
            .chain(session.sid.as_deref().map(ProviderScope::Session));
        for scope in scopes {
            let entry = inner
                .provider_families
                .entry(scope_key(&session.provider, scope))
                .or_insert_with(|| (HashSet::new(), session.until));
            if entry.1 <= session.now {
                entry.0.clear();
            }
            entry.0.insert(session.family_id.clone());
            entry.1 = entry.1.max(session.until);
        }
        Ok(())
    }

    async fn provider_families(
        &self,
        provider: &str,
        scope: ProviderScope<'_>,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let inner = self.lock()?;
        Ok(
            match inner.provider_families.get(&scope_key(provider, scope)) {
                Some((ids, until)) if *until > now => ids.iter().cloned().collect(),
                _ => Vec::new(),
            },
        )
    }
}
