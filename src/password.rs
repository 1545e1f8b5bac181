//! Password hashing: Argon2id with OWASP parameters, run on the blocking pool behind a bound
//! so a login storm cannot starve the async workers.
//!
//! Unknown users still cost one verification (against a dummy hash), so timing does not tell
//! whether an email exists.

use std::sync::Arc;

use argon2::{
    password_hash::{PasswordHasher as _, PasswordVerifier as _},
    Algorithm, Argon2, Params, PasswordHash, Version,
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

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Runs Argon2 on the blocking pool, at most `limit` at once.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
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
            dummy_hash: hash_blocking("bffgate dummy password for unknown users")?.into(),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let queued = std::time::Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Cancelled)?;
        crate::metrics::argon2_wait(queued.elapsed());
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| PasswordError::Cancelled)
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_blocking(&password)).await?
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
        let ok = self.run(move || verify_blocking(&password, &hash)).await?;
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
        assert!(!verify_blocking("x", "not a phc string"));
    }
}
