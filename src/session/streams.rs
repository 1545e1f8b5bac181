//! Open streams (WebSockets, server-sent events) and the sessions they belong to.
//!
//! A stream lives no longer than its session. Each one holds a [`StreamWatch`] whose
//! [`StreamWatch::ended`] resolves when the session is over:
//! - at once when this process revokes the session (logout, logout-all, a revoked device, a
//!   replay, a disabled user): [`Streams::end_family`] / [`Streams::end_user`];
//! - otherwise at the next re-check — when the access token the stream was opened with
//!   expires, and every `session.stream_recheck` — which asks the store
//!   whether the family is still live — the per-request check, so a revocation by another
//!   instance or the CLI ends the stream within that bound.
//!
//! A re-check never rotates: a new refresh token could not reach the browser mid-stream, and
//! a browser left holding a rotated-out token would be judged a thief after the grace window.
//! The upstream keeps the token the stream was opened with.
//!
//! The number of streams a session holds open through one instance is bounded
//! (`session.max_streams`), so a few sessions cannot hold every upstream connection. What
//! counts is what a browser opens as a stream — WebSockets, `EventSource` requests — and it is
//! decided before the upstream is asked, so a refusal never follows work the upstream did.
//! Any other body without a length is watched (it ends with its session) but not counted.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::watch;

use super::Authenticated;
use crate::{
    clock::{Clock, Millis},
    store::{Liveness, Store},
};

/// Does a stream take one of its session's `max_streams` places?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A WebSocket, or a request for an event stream: counted, refused beyond the bound.
    Counted,
    /// A body that happens to have no length: watched, never refused.
    Uncounted,
}

/// One session's open streams.
struct Entry {
    user_id: String,
    /// Every watch of the family (the entry lives while one does).
    open: usize,
    /// The watches that count against `max_per_session`.
    counted: usize,
    /// `true` once the session is over; every watch of the family sees it.
    ended: watch::Sender<bool>,
    /// Counts the changes the store reported for the family: each makes its watches
    /// re-check at once.
    changed: watch::Sender<u64>,
}

/// The process's open streams, by family.
pub struct Streams {
    families: Mutex<HashMap<String, Entry>>,
    max_per_session: usize,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("max_per_session", &self.max_per_session)
            .finish_non_exhaustive()
    }
}

/// The session already holds `session.max_streams` open streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyStreams;

impl Streams {
    pub fn new(max_per_session: usize) -> Arc<Self> {
        Arc::new(Self {
            families: Mutex::new(HashMap::new()),
            max_per_session,
        })
    }

    fn families(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers one more stream of `family_id`; its ticket unregisters it when dropped.
    fn open(
        self: &Arc<Self>,
        family_id: &str,
        user_id: &str,
        limit: Limit,
    ) -> Result<(Ticket, watch::Receiver<bool>, watch::Receiver<u64>), TooManyStreams> {
        let mut families = self.families();
        let entry = families
            .entry(family_id.to_owned())
            .or_insert_with(|| Entry {
                user_id: user_id.to_owned(),
                open: 0,
                counted: 0,
                ended: watch::channel(false).0,
                changed: watch::channel(0).0,
            });
        if limit == Limit::Counted {
            if entry.counted >= self.max_per_session {
                if entry.open == 0 {
                    families.remove(family_id);
                }
                return Err(TooManyStreams);
            }
            entry.counted += 1;
        }
        entry.open += 1;
        let ended = entry.ended.subscribe();
        let changed = entry.changed.subscribe();
        Ok((
            Ticket {
                streams: Arc::clone(self),
                family_id: family_id.to_owned(),
                limit,
            },
            ended,
            changed,
        ))
    }

    /// The family's session is over: its open streams end now.
    pub fn end_family(&self, family_id: &str) {
        if let Some(entry) = self.families().get(family_id) {
            entry.ended.send_replace(true);
        }
    }

    /// The store reported a change to the family (another instance revoked or rotated it):
    /// its open streams re-check their session now.
    pub fn family_changed(&self, family_id: &str) {
        if let Some(entry) = self.families().get(family_id) {
            entry.changed.send_modify(|n| *n += 1);
        }
    }

    /// Changes were missed: every open stream re-checks its session now.
    pub fn all_changed(&self) {
        for entry in self.families().values() {
            entry.changed.send_modify(|n| *n += 1);
        }
    }

    /// Re-checks the open streams of every family the store reports changed, on a thread of
    /// its own, until the store stops reporting.
    pub fn follow(self: &Arc<Self>, mut changes: tokio::sync::broadcast::Receiver<String>) {
        use tokio::sync::broadcast::error::RecvError;
        let streams = Arc::downgrade(self);
        crate::background::spawn(
            "bffgate-stream-changes",
            "open streams re-check their sessions on their timer only",
            move || async move {
                loop {
                    let change = changes.recv().await;
                    let Some(streams) = streams.upgrade() else {
                        return;
                    };
                    match change {
                        Ok(every) if every == crate::store::EVERY_FAMILY => streams.all_changed(),
                        Ok(family_id) => streams.family_changed(&family_id),
                        Err(RecvError::Lagged(_)) => streams.all_changed(),
                        Err(RecvError::Closed) => return,
                    }
                }
            },
        );
    }

    /// Every session of the user is over.
    pub fn end_user(&self, user_id: &str) {
        for entry in self.families().values().filter(|e| e.user_id == user_id) {
            entry.ended.send_replace(true);
        }
    }
}

/// One registered stream; unregisters on drop.
struct Ticket {
    streams: Arc<Streams>,
    family_id: String,
    limit: Limit,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut families = self.streams.families();
        if let Some(entry) = families.get_mut(&self.family_id) {
            if self.limit == Limit::Counted {
                entry.counted = entry.counted.saturating_sub(1);
            }
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                families.remove(&self.family_id);
            }
        }
    }
}

/// Milliseconds as a duration of at least 1 ms.
fn millis(ms: Millis) -> Duration {
    Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(1))
}

/// Watches one open stream's session; see the module documentation.
pub struct StreamWatch {
    _ticket: Ticket,
    ended: watch::Receiver<bool>,
    changed: watch::Receiver<u64>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    family_id: String,
    user_id: String,
    recheck: Duration,
    /// When the access token the stream was opened with expires: a re-check happens then at
    /// the latest, however long `recheck` is.
    access_expires_at: Millis,
}

impl std::fmt::Debug for StreamWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWatch")
            .field("family_id", &self.family_id)
            .finish_non_exhaustive()
    }
}

impl StreamWatch {
    pub(super) fn open(
        streams: &Arc<Streams>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        auth: &Authenticated,
        recheck: Millis,
        limit: Limit,
    ) -> Result<Self, TooManyStreams> {
        let (family_id, user_id) = (&auth.session.id, &auth.user.id);
        let (ticket, ended, changed) = streams.open(family_id, user_id, limit)?;
        Ok(Self {
            _ticket: ticket,
            ended,
            changed,
            store,
            clock,
            family_id: family_id.clone(),
            user_id: user_id.clone(),
            recheck: millis(recheck),
            access_expires_at: auth.session.access_expires_at,
        })
    }

    /// Resolves when the session is over (never while it is live). A store that cannot be
    /// reached ends nothing: the next re-check asks again.
    pub async fn ended(mut self) {
        // The signal cannot close while this watch's ticket keeps the family's entry; if it
        // ever did, re-checks alone would still end the stream.
        let mut signalled = true;
        let until_access = self.access_expires_at - self.clock.now_ms();
        let mut next = self.recheck.min(millis(until_access));
        loop {
            if *self.ended.borrow_and_update() {
                return;
            }
            tokio::select! {
                changed = self.ended.changed(), if signalled => signalled = changed.is_ok(),
                Ok(()) = self.changed.changed() => {
                    if !self.is_live().await {
                        return;
                    }
                }
                () = tokio::time::sleep(next) => {
                    if !self.is_live().await {
                        return;
                    }
                    next = self.recheck;
                }
            }
        }
    }

    async fn is_live(&self) -> bool {
        let now = self.clock.now_ms();
        match self.store.family_liveness(&self.family_id, now).await {
            Ok(Liveness::Live { user_id, .. }) => user_id == self.user_id,
            Ok(Liveness::Revoked | Liveness::Expired) => false,
            Err(e) => {
                tracing::debug!(family = %self.family_id, error = %e, "stream re-check: store unavailable; the stream goes on");
                true
            }
        }
    }
}
