//! A family's Redis keys dumped and put back (`DUMP`/`PTTL`, then `RESTORE … REPLACE`, or
//! `DEL` for a key that did not exist): what a Redis that lost its latest writes looks like
//! after a failover to a lagging replica or a crash under `appendfsync everysec` (DESIGN.md
//! §5 "Lost writes"). Used by `lost_writes.rs` and `rotation_model.rs`.

/// A key's serialised value and its time to live in ms (`DUMP`, `PTTL`; 0: no expiry).
pub type Dumped = (Vec<u8>, i64);

/// A family's keys as Redis held them at one moment, `None` for a key that did not exist.
#[derive(Debug, Clone)]
pub struct FamilyDump(Vec<(String, Option<Dumped>)>);

/// The family hash and its sealed successor: `<prefix>fam:{<fid>}` and `…:next`.
pub fn family_keys(prefix: &str, family_id: &str) -> [String; 2] {
    let family = format!("{prefix}fam:{{{family_id}}}");
    let next = format!("{family}:next");
    [family, next]
}

pub fn dump_family(conn: &mut redis::Connection, prefix: &str, family_id: &str) -> FamilyDump {
    let keys = family_keys(prefix, family_id).map(|key| {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query(conn).unwrap();
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(conn).unwrap();
        (key, dump.map(|d| (d, ttl.max(0))))
    });
    FamilyDump(keys.into())
}

/// Puts the family's keys back as `dump` saw them: every write since is lost.
pub fn restore_family(conn: &mut redis::Connection, dump: &FamilyDump) {
    for (key, saved) in &dump.0 {
        match saved {
            Some((value, ttl)) => redis::cmd("RESTORE")
                .arg(key)
                .arg(ttl)
                .arg(value.as_slice())
                .arg("REPLACE")
                .exec(conn)
                .unwrap(),
            None => redis::cmd("DEL").arg(key).exec(conn).unwrap(),
        }
    }
}
