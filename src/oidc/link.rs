//! Which user an identity is: the link table (provider + `sub` → user id) decides, never the
//! email alone. An identity seen for the first time is linked to the existing user with its
//! email only when the provider allows it (`link_by_verified_email`) and the provider marked
//! the email verified; otherwise a taken email refuses the sign-in. An identity neither linked
//! nor linkable creates a user (without a password) when `create_users` allows it.
//!
//! The link is written before the user (`SET NX`, the first link wins a race), so a failure
//! between the two writes leaves a link to a user not yet created, which the next sign-in
//! creates — never a user whose identity can no longer find it.

use openidconnect::core::CoreIdTokenClaims;

use super::OidcError;
use crate::{
    clock::Millis,
    config::IdentityProviderConfig,
    session::{normalize_email, SessionError},
    store::{Store, StoreError, UserRecord},
    tokens::new_id,
};

/// Roles copied from a claim: at most this many, each at most [`MAX_ROLE_CHARS`] long.
const MAX_ROLES: usize = 32;
const MAX_ROLE_CHARS: usize = 64;

/// What a verified ID token says about who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    /// The provider session (`sid`), for back-channel logout.
    pub sid: Option<String>,
    /// Lower-cased.
    pub email: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
}

impl Identity {
    /// From the verified claims, and the raw payload for the claims the crate does not model.
    pub fn from_claims(
        config: &IdentityProviderConfig,
        claims: &CoreIdTokenClaims,
        payload: &serde_json::Value,
    ) -> Self {
        let roles = config
            .roles_claim
            .as_deref()
            .map(|claim| roles_from(&payload[claim]))
            .unwrap_or_default();
        Self {
            subject: claims.subject().as_str().to_owned(),
            sid: payload["sid"].as_str().map(str::to_owned),
            email: claims.email().map(|e| normalize_email(e.as_str())),
            email_verified: claims.email_verified() == Some(true),
            roles,
        }
    }
}

/// A claim's roles: a string, or the strings of a list.
fn roles_from(value: &serde_json::Value) -> Vec<String> {
    let texts: Vec<&str> = match value {
        serde_json::Value::String(one) => vec![one.as_str()],
        serde_json::Value::Array(many) => many.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    texts
        .into_iter()
        .filter(|r| !r.is_empty() && r.chars().count() <= MAX_ROLE_CHARS)
        .take(MAX_ROLES)
        .map(str::to_owned)
        .collect()
}

fn store_error(e: StoreError) -> OidcError {
    OidcError::Session(SessionError::from(e))
}

/// The user `identity` at `provider` signs in as, linking or creating one as the provider's
/// rules allow.
pub async fn user_for(
    provider: &IdentityProviderConfig,
    identity: &Identity,
    store: &dyn Store,
    now: Millis,
) -> Result<UserRecord, OidcError> {
    let linked = store
        .linked_user(&provider.id, &identity.subject)
        .await
        .map_err(store_error)?;
    let user_id = match linked {
        Some(user_id) => user_id,
        None => {
            let existing = match &identity.email {
                Some(email) => store.user_by_email(email).await.map_err(store_error)?,
                None => None,
            };
            let candidate = match existing {
                Some(user) if provider.link_by_verified_email && identity.email_verified => user.id,
                Some(_) => {
                    return Err(OidcError::AccountRefused(
                        "a user with this email exists and is not linked to this identity".into(),
                    ))
                }
                None if provider.create_users => new_id()
                    .map_err(|e| OidcError::Session(SessionError::Internal(e.to_string())))?,
                None => {
                    return Err(OidcError::AccountRefused(
                        "unknown identity and create_users = false".into(),
                    ))
                }
            };
            let winner = store
                .link_identity(&provider.id, &identity.subject, &candidate)
                .await
                .map_err(store_error)?;
            tracing::info!(event = "identity_linked", provider = %provider.id, user = %winner, "identity linked");
            winner
        }
    };
    if let Some(user) = store.user(&user_id).await.map_err(store_error)? {
        return Ok(user);
    }
    // Linked, but the user is not there yet (created by this sign-in, or by one that failed
    // after linking).
    if !provider.create_users {
        return Err(OidcError::AccountRefused(
            "linked user is gone and create_users = false".into(),
        ));
    }
    let user = UserRecord {
        id: user_id.clone(),
        email: identity
            .email
            .clone()
            .unwrap_or_else(|| placeholder_email(&provider.id, &user_id)),
        // No password: an unparsable hash never verifies, so password login always fails.
        password_hash: String::new(),
        roles: identity.roles.clone(),
        disabled: false,
        created_ms: now,
    };
    match store.create_user(&user).await {
        Ok(()) => {
            tracing::info!(event = "user_created", via = %provider.id, user = %user.id, "user created from an identity provider");
            Ok(user)
        }
        Err(StoreError::Conflict) => match store.user(&user_id).await.map_err(store_error)? {
            // A concurrent sign-in of the same identity created it.
            Some(user) => Ok(user),
            None => Err(OidcError::AccountRefused(
                "a user with this email exists and is not linked to this identity".into(),
            )),
        },
        Err(e) => Err(store_error(e)),
    }
}

/// The email of a user whose provider sent none: unique, and in the reserved `.invalid` domain
/// so that it can never be anyone's address.
fn placeholder_email(provider: &str, user_id: &str) -> String {
    format!("{}@{provider}.oidc.invalid", user_id.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn provider(create: bool, link: bool) -> IdentityProviderConfig {
        IdentityProviderConfig {
            id: "corp".into(),
            display_name: None,
            issuer: "https://idp.example.com".into(),
            client_id: "c".into(),
            client_secret_file: None,
            scopes: vec!["openid".into()],
            link_by_verified_email: link,
            create_users: create,
            roles_claim: None,
        }
    }

    fn identity(sub: &str, email: &str, verified: bool) -> Identity {
        Identity {
            subject: sub.into(),
            sid: None,
            email: Some(email.into()),
            email_verified: verified,
            roles: vec!["staff".into()],
        }
    }

    async fn existing(store: &MemoryStore, email: &str) -> UserRecord {
        let user = UserRecord {
            id: new_id().unwrap(),
            email: email.into(),
            password_hash: "h".into(),
            roles: vec![],
            disabled: false,
            created_ms: 0,
        };
        store.create_user(&user).await.unwrap();
        user
    }

    #[tokio::test]
    async fn a_new_identity_creates_one_user_and_signs_in_as_it_again() {
        let store = MemoryStore::new();
        let p = provider(true, false);
        let first = user_for(&p, &identity("s1", "a@example.com", true), &store, 5)
            .await
            .unwrap();
        assert_eq!(first.email, "a@example.com");
        assert_eq!(first.roles, ["staff"]);
        assert_eq!(first.password_hash, "");
        // The email may change at the provider: the link decides.
        let again = user_for(&p, &identity("s1", "new@example.com", true), &store, 6)
            .await
            .unwrap();
        assert_eq!(again.id, first.id);
    }

    #[tokio::test]
    async fn a_taken_email_is_linked_only_when_verified_and_allowed() {
        let store = MemoryStore::new();
        let user = existing(&store, "b@example.com").await;
        for (p, verified) in [(provider(true, false), true), (provider(true, true), false)] {
            let err = user_for(&p, &identity("s2", "b@example.com", verified), &store, 1)
                .await
                .unwrap_err();
            assert_eq!(err.code(), "account_refused");
        }
        assert_eq!(store.linked_user("corp", "s2").await.unwrap(), None);
        let linked = user_for(
            &provider(false, true),
            &identity("s2", "b@example.com", true),
            &store,
            1,
        )
        .await
        .unwrap();
        assert_eq!(linked.id, user.id);
    }

    #[tokio::test]
    async fn unknown_identities_are_refused_without_create_users() {
        let store = MemoryStore::new();
        let err = user_for(
            &provider(false, false),
            &identity("s3", "c@example.com", true),
            &store,
            1,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), "account_refused");
        assert!(store.list_users().await.unwrap().is_empty());
    }

    #[test]
    fn roles_come_from_a_string_or_a_list_and_are_bounded() {
        assert_eq!(roles_from(&serde_json::json!("admin")), ["admin"]);
        assert_eq!(
            roles_from(&serde_json::json!(["a", 3, "", "b", "x".repeat(65)])),
            ["a", "b"]
        );
        assert_eq!(
            roles_from(&serde_json::json!((0..50)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()))
            .len(),
            32
        );
        assert!(roles_from(&serde_json::Value::Null).is_empty());
    }
}
