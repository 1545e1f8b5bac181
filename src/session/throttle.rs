//! Login throttling: which attempts count against whom, and the two steps a login takes —
//! reserve the attempt before the password is checked, and give it back after a success.
//!
//! Attempts are counted under three keys: the email and client address together (`pair`),
//! the address alone (`ip`), and the email alone (`account`, across addresses: credential
//! stuffing). Each is reserved atomically in the store before Argon2 runs, so N attempts in
//! parallel — on one gateway or many — evaluate at most the free allowance; the rest are
//! refused with the delay's end. The store sees only hashes of emails and addresses; the
//! policy's arithmetic lives with [`ThrottlePolicy`] in the store, which applies it atomically.
//!
//! The trade-off of the `account` key: it slows an attacker who guesses one account's
//! password from many addresses, and it slows the owner too while that goes on — but never
//! by more than `max_delay` at a time, and the owner's own `pair` and `ip` keys are untouched.

use base64::Engine as _;

use crate::{
    clock::{duration_ms, Millis},
    config::ThrottleConfig,
    store::{Reservation, Store, StoreError, ThrottlePolicy},
};

/// Login throttling: one policy per email and address pair, per address, per email.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleSettings {
    pub pair: ThrottlePolicy,
    pub ip: ThrottlePolicy,
    pub account: ThrottlePolicy,
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
            account: policy(t.account_free_attempts),
        })
    }
}

/// Whether a login may go on to the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleVerdict {
    /// Reserved under every key: check the password.
    Free,
    /// A delay runs under one of the keys: refuse without verifying anything.
    Locked { retry_after_ms: Millis },
}

/// The throttle of one login attempt: its keys, and the policies they are counted under
/// (none when throttling is disabled: every step is then a no-op).
pub struct Throttle<'a> {
    store: &'a dyn Store,
    settings: Option<&'a ThrottleSettings>,
    pair_key: String,
    ip_key: String,
    account_key: String,
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
            account_key: key("acct", &[email]),
        }
    }

    /// Reserves this attempt under every key (one store round trip each). If one refuses,
    /// the reservations already made are given back and the attempt is refused.
    pub async fn reserve(&self, now: Millis) -> Result<ThrottleVerdict, StoreError> {
        let Some(settings) = self.settings else {
            return Ok(ThrottleVerdict::Free);
        };
        let keys = [
            (&self.pair_key, &settings.pair),
            (&self.ip_key, &settings.ip),
            (&self.account_key, &settings.account),
        ];
        for (reserved, (key, policy)) in keys.iter().enumerate() {
            if let Reservation::Refused { until } =
                self.store.throttle_reserve(key, policy, now).await?
            {
                for (key, _) in &keys[..reserved] {
                    self.store.throttle_refund(key).await?;
                }
                return Ok(ThrottleVerdict::Locked {
                    retry_after_ms: until - now,
                });
            }
        }
        Ok(ThrottleVerdict::Free)
    }

    /// After a successful login: forgets the pair's attempts, and gives this attempt back to
    /// the address and the account (which keep counting others' failures: one good account
    /// does not reopen an address that guesses at others).
    pub async fn succeeded(&self) -> Result<(), StoreError> {
        if self.settings.is_some() {
            self.store.throttle_reset(&self.pair_key).await?;
            self.store.throttle_refund(&self.ip_key).await?;
            self.store.throttle_refund(&self.account_key).await?;
        }
        Ok(())
    }
}

/// A throttle key: `<kind>:` and the SHA-256 of `parts`, so the store never holds an email or
/// an address. Each part is ended by a NUL, so `a`+`bc` and `ab`+`c` hash apart.
/// A sign-in that names no account (an identity provider's callback) is throttled under its
/// address only, with the address's policy: reserved before the flow's checks; given back
/// when it succeeds ([`refund_address`]). `Free` when throttling is disabled.
pub async fn reserve_address(
    store: &dyn Store,
    settings: Option<&ThrottleSettings>,
    ip: &str,
    now: Millis,
) -> Result<ThrottleVerdict, StoreError> {
    let Some(settings) = settings else {
        return Ok(ThrottleVerdict::Free);
    };
    Ok(
        match store
            .throttle_reserve(&key("ip", &[ip]), &settings.ip, now)
            .await?
        {
            Reservation::Granted { .. } => ThrottleVerdict::Free,
            Reservation::Refused { until } => ThrottleVerdict::Locked {
                retry_after_ms: until - now,
            },
        },
    )
}

/// Gives back what [`reserve_address`] reserved (the sign-in succeeded).
pub async fn refund_address(
    store: &dyn Store,
    settings: Option<&ThrottleSettings>,
    ip: &str,
) -> Result<(), StoreError> {
    match settings {
        Some(_) => store.throttle_refund(&key("ip", &[ip])).await,
        None => Ok(()),
    }
}

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
