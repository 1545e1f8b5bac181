//! The store's records as Redis hashes: which fields a user and a family have, how they are
//! written, and how what Redis returns is read back into [`UserRecord`], [`FamilyState`] and
//! [`Liveness`]. Pure functions: no connection, no key names.
//!
//! A family hash holds `uid gen cur prev prev_at created last_used exp abs_exp ua [ua1 ua2
//! ua3] ip revoked revoked_at`. No value is longer than 64 bytes (the user agent is split, see
//! [`UA_FIELDS`]), so Redis keeps the hash in its compact listpack encoding: about 350 bytes
//! instead of 900. A user hash holds `id email pw roles disabled created`.
//!
//! Two clocks meet in a family hash: `prev_at` is Redis's own time (the rotation script's
//! `TIME`, which judges the grace window), every other timestamp is the gateway's.

use std::collections::HashMap;

use crate::{
    clock::Millis,
    store::{FamilyInfo, FamilyState, Liveness, NewFamily, StoreError, UserRecord},
};

/// Data that Redis returned but the store cannot read: not ours, or damaged.
pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// The fields [`family_state`] reads. The secret hashes (`cur`, `prev`) are only ever
/// compared inside the rotation script, never read out.
pub(super) const FAMILY_FIELDS: [&str; 12] = [
    "uid",
    "gen",
    "created",
    "last_used",
    "exp",
    "abs_exp",
    "ua",
    "ua1",
    "ua2",
    "ua3",
    "ip",
    "revoked",
];

/// The fields [`family_liveness`] reads, in the order of [`LivenessRow`]: the per-request
/// check reads no more than it needs.
pub(super) const LIVENESS_FIELDS: [&str; 4] = ["uid", "revoked", "exp", "abs_exp"];

/// The values of [`LIVENESS_FIELDS`], as `HMGET` returns them.
pub(super) type LivenessRow = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The user agent's fields, 64 bytes each: a hash with a value over `hash-max-listpack-value`
/// (64 by default) falls back to Redis's hashtable encoding, which more than doubles the
/// memory of a family. What does not fit in these (over 256 bytes) is not stored.
const UA_FIELDS: [&str; 4] = ["ua", "ua1", "ua2", "ua3"];
const UA_CHUNK: usize = 64;

/// `user_agent` as `(field, part)` pairs of at most [`UA_CHUNK`] bytes, cut on char boundaries.
fn user_agent_fields(user_agent: &str) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    let mut part = String::new();
    for c in user_agent.chars() {
        if part.len() + c.len_utf8() > UA_CHUNK {
            fields.push(std::mem::take(&mut part));
        }
        part.push(c);
    }
    fields.push(part);
    UA_FIELDS.into_iter().zip(fields).collect()
}

/// The fields of a new family's hash, whose key expires at `exp`.
pub(super) fn new_family_fields(f: &NewFamily, exp: Millis) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("uid", f.user_id.clone()),
        ("gen", "0".to_owned()),
        ("cur", f.secret_hash.clone()),
        ("created", f.now.to_string()),
        ("last_used", f.now.to_string()),
        ("exp", exp.to_string()),
        ("abs_exp", f.abs_exp.to_string()),
        ("ip", f.ip.clone()),
    ];
    fields.extend(user_agent_fields(&f.user_agent));
    fields
}

/// The fields of a user's hash.
pub(super) fn user_fields(user: &UserRecord) -> Result<[(&'static str, String); 6], StoreError> {
    let roles = serde_json::to_string(&user.roles).map_err(|_| corrupt("user roles"))?;
    Ok([
        ("id", user.id.clone()),
        ("email", user.email.clone()),
        ("pw", user.password_hash.clone()),
        ("roles", roles),
        ("disabled", if user.disabled { "1" } else { "0" }.to_owned()),
        ("created", user.created_ms.to_string()),
    ])
}

/// A user's hash (`HGETALL`) read back; `None` if there is no such user.
pub(super) fn user_record(map: &HashMap<String, String>) -> Result<Option<UserRecord>, StoreError> {
    if map.is_empty() {
        return Ok(None);
    }
    let get = |k: &str| map.get(k).cloned().ok_or_else(|| corrupt("user record"));
    Ok(Some(UserRecord {
        id: get("id")?,
        email: get("email")?,
        password_hash: get("pw")?,
        roles: serde_json::from_str(&get("roles")?).map_err(|_| corrupt("user roles"))?,
        disabled: get("disabled")? == "1",
        created_ms: int(map.get("created"), "user created")?,
    }))
}

/// What a family hash's [`LIVENESS_FIELDS`] say at `now`.
pub(super) fn family_liveness(
    (uid, revoked, exp, abs_exp): LivenessRow,
    now: Millis,
) -> Result<Liveness, StoreError> {
    liveness(
        uid.as_ref(),
        revoked.is_some(),
        exp.as_ref(),
        abs_exp.as_ref(),
        now,
    )
}

/// Reads a family hash (the values of [`FAMILY_FIELDS`], in order) into its state at `now`.
pub(super) fn family_state(
    fid: &str,
    fields: Vec<Option<String>>,
    now: Millis,
) -> Result<FamilyState, StoreError> {
    let map: HashMap<&str, String> = FAMILY_FIELDS
        .iter()
        .zip(fields)
        .filter_map(|(k, v)| v.map(|v| (*k, v)))
        .collect();
    let (user_id, idle_exp, abs_exp) = match liveness(
        map.get("uid"),
        map.contains_key("revoked"),
        map.get("exp"),
        map.get("abs_exp"),
        now,
    )? {
        Liveness::Live {
            user_id,
            idle_exp,
            abs_exp,
        } => (user_id, idle_exp, abs_exp),
        Liveness::Revoked => {
            return Ok(FamilyState::Revoked {
                reason: map.get("revoked").cloned().unwrap_or_default(),
            })
        }
        Liveness::Expired => return Ok(FamilyState::Expired),
    };
    Ok(FamilyState::Live(FamilyInfo {
        id: fid.to_owned(),
        user_id,
        generation: u64::try_from(int(map.get("gen"), "family gen")?).unwrap_or(0),
        created: int(map.get("created"), "family created")?,
        last_used: int(map.get("last_used"), "family last_used")?,
        idle_exp,
        abs_exp,
        user_agent: UA_FIELDS
            .iter()
            .filter_map(|k| map.get(k).map(String::as_str))
            .collect(),
        ip: map.get("ip").cloned().unwrap_or_default(),
    }))
}

/// What a family hash's `uid`, `revoked`, `exp` and `abs_exp` fields say at `now`: the one
/// decision behind both the per-request check and the full read of a family.
fn liveness(
    uid: Option<&String>,
    revoked: bool,
    exp: Option<&String>,
    abs_exp: Option<&String>,
    now: Millis,
) -> Result<Liveness, StoreError> {
    let Some(user_id) = uid else {
        return Ok(Liveness::Expired);
    };
    // Expiry first, as the scripts and the memory store judge it: an expired tombstone is gone.
    let idle_exp = int(exp, "family exp")?;
    if now >= idle_exp {
        return Ok(Liveness::Expired);
    }
    if revoked {
        return Ok(Liveness::Revoked);
    }
    Ok(Liveness::Live {
        user_id: user_id.clone(),
        idle_exp,
        abs_exp: int(abs_exp, "family abs_exp")?,
    })
}

fn int(value: Option<&String>, what: &str) -> Result<i64, StoreError> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| corrupt(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_user_agents_are_cut_on_char_boundaries_into_at_most_four_fields() {
        let agent = "é".repeat(100); // 200 bytes, 2 bytes a char
        let fields = user_agent_fields(&agent);
        assert_eq!(
            fields.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["ua", "ua1", "ua2", "ua3"]
        );
        assert!(fields.iter().all(|(_, v)| v.len() <= UA_CHUNK));
        assert_eq!(
            fields.iter().map(|(_, v)| v.as_str()).collect::<String>(),
            agent
        );
        let too_long = "a".repeat(300);
        let kept: String = user_agent_fields(&too_long)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(kept.len(), 256);
    }

    #[test]
    fn a_revoked_family_reads_as_revoked_with_its_reason() {
        let mut fields = vec![None; FAMILY_FIELDS.len()];
        fields[0] = Some("u1".to_owned());
        fields[4] = Some("100".to_owned());
        fields[11] = Some("logout".to_owned());
        assert_eq!(
            family_state("f", fields, 50).unwrap(),
            FamilyState::Revoked {
                reason: "logout".into()
            }
        );
    }
}
