//! The names of every Redis key the store writes, all under the configured prefix.
//!
//! - `<prefix>fam:{<fid>}` hash: one family (fields in [`super::records`]); expires at
//!   `exp = min(last_used + idle, abs_exp)`.
//! - `<prefix>fam:{<fid>}:next` the sealed successor, for the grace window only.
//! - `<prefix>user:{<uid>}` hash: `id email pw roles disabled created`.
//! - `<prefix>user:{<uid>}:fams` set of family ids (may hold dead ids; pruned when listed).
//! - `<prefix>email:<email>` → uid, and `<prefix>users` set of uids.
//! - `<prefix>thr:<key>` hash: one throttle counter `{n, until, forget}`.
//! - `<prefix>idp:<provider>:link:<h(sub)>` → uid: the user an identity provider's subject
//!   is linked to; `<prefix>idp:<provider>:sub:<h(sub)>:fams` and
//!   `<prefix>idp:<provider>:sid:<h(sid)>:fams` sets of the family ids that subject or
//!   provider session opened (for back-channel logout; they may hold dead ids). `h` is the
//!   hex SHA-256 of the provider's value, so that no `{` from a provider moves a key's slot
//!   and no key grows with it.
//!
//! Hash tags: Redis Cluster places a key by the part inside its first `{…}`. Every key of one
//! family carries `{<fid>}`, so the scripts that touch a family and its sealed successor
//! together (rotation, revocation) run in one slot, atomically. Per-user keys carry `{<uid>}`;
//! the family index therefore lives in the user's slot, not the family's: it is written
//! separately, before the cookie is issued (see `create_family`). No script or atomic
//! pipeline that names an email, throttle or users key names any other key, so those need
//! no tag; the plain pipelines that span slots (writing a user, listing sessions) are sent
//! command by command on a Cluster.

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What every family key starts with (the tracking prefix).
    pub(super) fn families_prefix(&self) -> String {
        format!("{}fam:", self.prefix)
    }

    /// What every user key starts with (the tracking prefix).
    pub(super) fn users_prefix(&self) -> String {
        format!("{}user:", self.prefix)
    }

    pub(super) fn family(&self, fid: &str) -> String {
        format!("{}fam:{{{fid}}}", self.prefix)
    }

    pub(super) fn next(&self, fid: &str) -> String {
        format!("{}fam:{{{fid}}}:next", self.prefix)
    }

    pub(super) fn user(&self, uid: &str) -> String {
        format!("{}user:{{{uid}}}", self.prefix)
    }

    pub(super) fn user_families(&self, uid: &str) -> String {
        format!("{}user:{{{uid}}}:fams", self.prefix)
    }

    pub(super) fn email(&self, email: &str) -> String {
        format!("{}email:{email}", self.prefix)
    }

    /// Throttle counters: the key is already a hash of what it counts.
    pub(super) fn throttle(&self, key: &str) -> String {
        format!("{}thr:{key}", self.prefix)
    }

    pub(super) fn users(&self) -> String {
        format!("{}users", self.prefix)
    }

    /// The user link of a provider's subject.
    pub(super) fn identity_link(&self, provider: &str, subject: &str) -> String {
        format!("{}idp:{provider}:link:{}", self.prefix, hex_sha256(subject))
    }

    /// The families one subject (`scope = "sub"`) or one provider session (`"sid"`) opened.
    pub(super) fn provider_families(&self, provider: &str, scope: &str, value: &str) -> String {
        format!(
            "{}idp:{provider}:{scope}:{}:fams",
            self.prefix,
            hex_sha256(value)
        )
    }
}

/// Lower-case hex of the SHA-256 of `value`.
fn hex_sha256(value: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
