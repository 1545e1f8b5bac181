//! Password hashing: Argon2id with OWASP parameters, run on the blocking pool behind a bound
//! so a login storm cannot starve the async workers.
//!
//! Unknown users still cost one verification (against a dummy hash), so timing does not tell
//! whether an email exists.

use std::sync::{Arc, Mutex, PoisonError};

use argon2::{
    password_hash::{phc::Output, PasswordHasher as _},
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
};
use tokio::sync::Semaphore;

/// Longest password accepted, in bytes (bounds the work one request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password `user add` / `user passwd` accept.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing was cancelled")]
    Cancelled,
}

/// OWASP's Argon2id recommendation: 19 MiB, 2 iterations, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes one password synchronously (CLI, start-up).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    argon2()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Argon2's working memory (19 MiB with our parameters), reused from one verification to the
/// next. A fresh allocation per login cost page faults every time, and on the blocking pool's
/// many threads glibc kept one 19 MiB region per thread: 757 MiB of RSS after a login storm
/// (bench/run.sh).
type Memory = Vec<Block>;

/// Verifies `password` against a PHC string in `memory` (grown to the hash's cost once). The
/// argon2 crate's `verify_password` does the same with an allocation of its own.
fn verify_blocking(password: &str, hash: &str, memory: &mut Memory) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm.as_str()),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        // As the crate does: no memory for the hash's cost is a failed verification, not an
        // abort.
        if memory.try_reserve_exact(blocks - memory.len()).is_err() {
            return false;
        }
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok()
        // `Output` compares in constant time.
        && Output::new(&out).is_ok_and(|computed| computed == *expected)
}

/// Runs Argon2 on the blocking pool, at most `limit` at once, each in one of at most `limit`
/// reused working memories.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    memories: Arc<Mutex<Vec<Memory>>>,
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// `limit` 0 means one verification per CPU core.
    pub fn new(limit: usize) -> Result<Self, PasswordError> {
        let limit = if limit == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            limit
        };
        Ok(Self {
            permits: Arc::new(Semaphore::new(limit)),
            memories: Arc::default(),
            dummy_hash: hash_blocking("bffgate dummy password for unknown users")?.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let queued = std::time::Instant::now();
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Cancelled)?;
        crate::metrics::argon2_wait(queued.elapsed());
        let memories = Arc::clone(&self.memories);
        let mut memory = memories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        // The permit goes with the work: a request that is cancelled while Argon2 runs
        // (the client went away) frees its slot only when the run ends, so there are never
        // more than `limit` runs, nor memories.
        tokio::task::spawn_blocking(move || {
            let result = work(&mut memory);
            memories
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(memory);
            drop(permit);
            result
        })
        .await
        .map_err(|_| PasswordError::Cancelled)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move |_| hash_blocking(&password)).await?
    }

    /// Verifies `password` against `hash`; with no hash (unknown user) it verifies against a
    /// dummy hash and answers `false`, spending the same time.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = self
            .run(move |memory| verify_blocking(&password, &hash, memory))
            .await?;
        Ok(ok && known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let p = Passwords::new(1).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(p
            .verify("correct horse".into(), Some(h.clone()))
            .await
            .unwrap());
        assert!(!p.verify("wrong horse".into(), Some(h)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies_even_with_the_dummy_password() {
        let p = Passwords::new(1).unwrap();
        let dummy = "bffgate dummy password for unknown users".to_string();
        assert!(!p.verify(dummy, None).await.unwrap());
    }

    #[test]
    fn garbage_hash_does_not_verify() {
        assert!(!verify_blocking(
            "x",
            "not a phc string",
            &mut Memory::new()
        ));
    }

    #[test]
    fn verification_reuses_one_memory_and_agrees_with_the_crate() {
        use argon2::password_hash::PasswordVerifier as _;
        let hash = hash_blocking("correct horse").unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        let mut memory = Memory::new();
        for (password, expected) in [("correct horse", true), ("wrong horse", false)] {
            assert_eq!(verify_blocking(password, &hash, &mut memory), expected);
            assert_eq!(
                argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
                expected
            );
        }
        assert_eq!(memory.len(), 19 * 1024, "one block per KiB of m_cost");
        // A hash with other parameters (and another variant) still verifies in the same memory.
        let other = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"tiny")
        .unwrap()
        .to_string();
        assert!(verify_blocking("tiny", &other, &mut memory));
        assert!(!verify_blocking("tinY", &other, &mut memory));
    }

    #[tokio::test]
    async fn cancelled_verifications_keep_their_slot_until_argon2_ends() {
        let p = Passwords::new(1).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        // Start a verification and drop it once its Argon2 run is under way.
        let started = p.verify("correct horse".into(), Some(h.clone()));
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1), started).await;
        assert!(cancelled.is_err(), "the verification was cancelled mid-run");
        assert_eq!(
            p.permits.available_permits(),
            0,
            "the cancelled run still holds its slot"
        );
        assert!(p.verify("correct horse".into(), Some(h)).await.unwrap());
        assert!(p.memories.lock().unwrap().len() <= 1);
    }

    #[tokio::test]
    async fn concurrent_verifications_never_hold_more_memories_than_permits() {
        let p = Passwords::new(2).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        let runs = (0..6).map(|_| p.verify("correct horse".into(), Some(h.clone())));
        for ok in futures_util::future::join_all(runs).await {
            assert!(ok.unwrap());
        }
        assert!(p.memories.lock().unwrap().len() <= 2);
    }
}
