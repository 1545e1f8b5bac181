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
    ip_key: String,
    /// The keys of the account an attempt names (a password login); none for a sign-in
    /// through an identity provider, whose callback names no account.
    account: Option<AccountKeys>,
}

struct AccountKeys {
    pair: String,
    account: String,
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
            account: Some(AccountKeys {
                pair: key("pair", &[email, ip]),
                account: key("acct", &[email]),
            }),
            ..Self::for_address(store, settings, ip)
        }
    }

    /// The throttle of a sign-in that names no account (an identity provider's callback):
    /// the address's key only, with the address's policy.
    pub fn for_address(
        store: &'a dyn Store,
        settings: Option<&'a ThrottleSettings>,
        ip: &str,
    ) -> Self {
        Self {
            store,
            settings,
            ip_key: key("ip", &[ip]),
            account: None,
        }
    }

    /// Reserves this attempt under every key (one store round trip each). If one refuses,
    /// the reservations already made are given back and the attempt is refused.
    pub async fn reserve(&self, now: Millis) -> Result<ThrottleVerdict, StoreError> {
        let Some(settings) = self.settings else {
            return Ok(ThrottleVerdict::Free);
        };
        let account = self.account.as_ref();
        let keys: Vec<(&String, &ThrottlePolicy)> = account
            .map(|a| (&a.pair, &settings.pair))
            .into_iter()
            .chain([(&self.ip_key, &settings.ip)])
            .chain(account.map(|a| (&a.account, &settings.account)))
            .collect();
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
        if self.settings.is_none() {
            return Ok(());
        }
        if let Some(account) = &self.account {
            self.store.throttle_reset(&account.pair).await?;
        }
        self.store.throttle_refund(&self.ip_key).await?;
        if let Some(account) = &self.account {
            self.store.throttle_refund(&account.account).await?;
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
