//! Login throttling: which failures count against whom, and the three steps a login takes —
//! check before the password is verified, count a failure, reset after a success.
//!
//! Failures are counted under two keys: the email and client address together (`pair`), and
//! the address alone (`ip`). The store sees only hashes of them, never an email or address;
//! the policy's arithmetic lives with [`ThrottlePolicy`] in the store, which applies it
//! atomically.

use base64::Engine as _;

use crate::{
    clock::{duration_ms, Millis},
    config::ThrottleConfig,
    store::{Store, StoreError, ThrottlePolicy},
};

/// Login throttling: one policy per email and address pair, one per address.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    pub pair: ThrottlePolicy,
    pub ip: ThrottlePolicy,
}

impl ThrottleSettings {
    /// The configured policies; `None` when throttling is disabled.
    pub fn from_config(t: &ThrottleConfig) -> Option<Self> {
        let policy = |free| ThrottlePolicy {
            free,
            base_ms: duration_ms(t.base_delay),
            max_ms: duration_ms(t.max_delay),
            window_ms: duration_ms(t.window),
        };
        t.enabled.then(|| Self {
            pair: policy(t.free_attempts),
            ip: policy(t.ip_free_attempts),
        })
    }
}

/// Whether a login may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleVerdict {
    Free,
    /// Too many recent failures under one of the keys: refuse without verifying anything.
    Locked {
        retry_after_ms: Millis,
    },
}

/// The throttle of one login attempt: its keys, and the policies they are counted under
/// (none when throttling is disabled: every step is then a no-op).
pub struct Throttle<'a> {
    store: &'a dyn Store,
    settings: Option<&'a ThrottleSettings>,
    pair_key: String,
    ip_key: String,
}

impl<'a> Throttle<'a> {
    /// The throttle of a login for `email` (normalised) from the address `ip`.
    pub fn new(
        store: &'a dyn Store,
        settings: Option<&'a ThrottleSettings>,
        email: &str,
        ip: &str,
    ) -> Self {
        Self {
            store,
            settings,
            pair_key: key("pair", &[email, ip]),
            ip_key: key("ip", &[ip]),
        }
    }

    /// Is either key locked at `now`? (One store round trip.)
    pub async fn check(&self, now: Millis) -> Result<ThrottleVerdict, StoreError> {
        if self.settings.is_none() {
            return Ok(ThrottleVerdict::Free);
        }
        let keys = [self.pair_key.clone(), self.ip_key.clone()];
        Ok(match self.store.throttle_locked(&keys, now).await? {
            Some(until) => ThrottleVerdict::Locked {
                retry_after_ms: until - now,
            },
            None => ThrottleVerdict::Free,
        })
    }

    /// Counts one failed login under both keys.
    pub async fn count_failure(&self, now: Millis) -> Result<(), StoreError> {
        if let Some(settings) = self.settings {
            self.store
                .throttle_fail(&self.pair_key, &settings.pair, now)
                .await?;
            self.store
                .throttle_fail(&self.ip_key, &settings.ip, now)
                .await?;
        }
        Ok(())
    }

    /// After a successful login: forgets the pair's failures. The address keeps its count,
    /// so one good account does not reopen an address that guesses at others.
    pub async fn reset(&self) -> Result<(), StoreError> {
        if self.settings.is_some() {
            self.store.throttle_reset(&self.pair_key).await?;
        }
        Ok(())
    }
}

/// A throttle key: `<kind>:` and the SHA-256 of `parts`, so the store never holds an email or
/// an address. Each part is ended by a NUL, so `a`+`bc` and `ab`+`c` hash apart.
fn key(kind: &str, parts: &[&str]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(b"\0");
    }
    let digest = ctx.finish();
    format!(
        "{kind}:{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_what_they_count_and_keep_pairs_apart() {
        let a = key("pair", &["a@example.com", "10.0.0.1"]);
        assert!(a.starts_with("pair:"));
        assert!(!a.contains("example") && !a.contains("10.0.0.1"));
        assert_ne!(a, key("pair", &["a@example.com1", "0.0.0.1"]));
    }
}
