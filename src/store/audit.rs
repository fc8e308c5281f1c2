//! The audit log: append-only and hash-chained. Each entry's hash covers the previous
//! entry's hash and all of its own fields; the head hash and the count are kept in `meta`
//! in the same transaction, so an edited, deleted, inserted or truncated entry is found by
//! [`verify_chain`].
//!
//! Entries written since schema 2 hash with version 2 of the encoding, which tells an absent
//! field (NULL) from an empty one; entries written before keep version 1 and still verify.
//! The two encodings cannot collide (version 2 opens with a tag version 1 never starts
//! with), so relabelling an entry's version breaks its hash.

use super::{Result, now};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Debug, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: i64,
    pub event: String,
    pub ca_id: Option<String>,
    pub session_id: Option<String>,
    pub holder_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
    /// The encoding its hash uses: 1 (nkpki 0.1.0) or 2. Exported only when not 1, so the
    /// lines of entries written before the upgrade read exactly as 0.1.0 exported them.
    #[serde(skip_serializing_if = "is_version_1")]
    pub hash_version: i64,
}

fn is_version_1(version: &i64) -> bool {
    *version == 1
}

/// The encoding new entries use.
const HASH_VERSION: i64 = 2;
const V2_TAG: &str = "nkpki audit v2";

/// Version 1 (0.1.0): SHA-256 over the previous hash and the fields, each length-prefixed,
/// with an absent field hashed as an empty one.
fn entry_hash_v1(prev: &str, fields: [&str; 7]) -> String {
    let mut h = Sha256::new();
    for field in std::iter::once(prev).chain(fields) {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Version 2: a length-prefixed tag, then every field length-prefixed, an optional field
/// preceded by 0 (absent) or 1 (present), so NULL and "" hash apart.
fn entry_hash_v2(prev: &str, e: &EntryFields<'_>) -> String {
    let mut h = Sha256::new();
    let mut text = |field: &str| {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    };
    text(V2_TAG);
    text(prev);
    text(&e.seq.to_string());
    text(&e.at.to_string());
    text(e.event);
    for field in [e.ca, e.session, e.holder] {
        match field {
            None => h.update([0u8]),
            Some(f) => {
                h.update([1u8]);
                h.update((f.len() as u64).to_be_bytes());
                h.update(f.as_bytes());
            }
        }
    }
    h.update((e.detail.len() as u64).to_be_bytes());
    h.update(e.detail.as_bytes());
    hex::encode(h.finalize())
}

/// An entry's hashed fields.
struct EntryFields<'a> {
    seq: i64,
    at: i64,
    event: &'a str,
    ca: Option<&'a str>,
    session: Option<&'a str>,
    holder: Option<&'a str>,
    detail: &'a str,
}

fn entry_hash(version: i64, prev: &str, e: &EntryFields<'_>) -> Option<String> {
    match version {
        1 => Some(entry_hash_v1(
            prev,
            [
                &e.seq.to_string(),
                &e.at.to_string(),
                e.event,
                e.ca.unwrap_or(""),
                e.session.unwrap_or(""),
                e.holder.unwrap_or(""),
                e.detail,
            ],
        )),
        2 => Some(entry_hash_v2(prev, e)),
        _ => None,
    }
}

fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

pub(super) fn append_tx(
    tx: &Transaction<'_>,
    event: &str,
    ca: Option<&str>,
    session: Option<&str>,
    holder: Option<&str>,
    detail: &str,
) -> Result<()> {
    let prev = meta(tx, "audit_head")?.unwrap_or_else(|| GENESIS.to_owned());
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit", [], |r| {
        r.get(0)
    })?;
    let at = now();
    let fields = EntryFields {
        seq,
        at,
        event,
        ca,
        session,
        holder,
        detail,
    };
    let hash = entry_hash_v2(&prev, &fields);
    tx.execute(
        "INSERT INTO audit (seq, at, event, ca_id, session_id, holder_id, detail, prev_hash, hash, hash_version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![seq, at, event, ca, session, holder, detail, prev, hash, HASH_VERSION],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?1), ('audit_count', ?2)",
        params![hash, seq.to_string()],
    )?;
    Ok(())
}

pub(super) fn entries(conn: &Connection) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare("SELECT seq, at, event, ca_id, session_id, holder_id, detail, prev_hash, hash, hash_version FROM audit ORDER BY seq")?;
    let rows = stmt.query_map([], |r| {
        Ok(AuditEntry {
            seq: r.get(0)?,
            at: r.get(1)?,
            event: r.get(2)?,
            ca_id: r.get(3)?,
            session_id: r.get(4)?,
            holder_id: r.get(5)?,
            detail: r.get(6)?,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
            hash_version: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// What is wrong with the chain, at which entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditProblem {
    pub seq: i64,
    pub what: String,
}

/// Recomputes the whole chain; returns the number of entries, or the first problem.
pub fn verify_chain(conn: &Connection) -> Result<std::result::Result<usize, AuditProblem>> {
    let all = entries(conn)?;
    let mut prev = GENESIS.to_owned();
    let mut newest = 1;
    for (i, e) in all.iter().enumerate() {
        let expected_seq = i as i64 + 1;
        if e.seq != expected_seq {
            return Ok(Err(AuditProblem {
                seq: expected_seq,
                what: format!("entry {expected_seq} is missing (found {} next)", e.seq),
            }));
        }
        if e.prev_hash != prev {
            return Ok(Err(AuditProblem {
                seq: e.seq,
                what: "does not link to the entry before it".into(),
            }));
        }
        let fields = EntryFields {
            seq: e.seq,
            at: e.at,
            event: &e.event,
            ca: e.ca_id.as_deref(),
            session: e.session_id.as_deref(),
            holder: e.holder_id.as_deref(),
            detail: &e.detail,
        };
        let Some(hash) = entry_hash(e.hash_version, &e.prev_hash, &fields) else {
            return Ok(Err(AuditProblem {
                seq: e.seq,
                what: format!("has an unknown hash version {}", e.hash_version),
            }));
        };
        // once entries hash with version 2, an older version later in the chain is an edit
        if e.hash_version < newest {
            return Ok(Err(AuditProblem {
                seq: e.seq,
                what: "was edited (its hash version went back)".into(),
            }));
        }
        newest = e.hash_version;
        if hash != e.hash {
            return Ok(Err(AuditProblem {
                seq: e.seq,
                what: "was edited (its hash does not match its content)".into(),
            }));
        }
        prev = hash;
    }
    let head = meta(conn, "audit_head")?.unwrap_or_else(|| GENESIS.to_owned());
    let count: usize = meta(conn, "audit_count")?
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if head != prev || count != all.len() {
        return Ok(Err(AuditProblem {
            seq: all.len() as i64 + 1,
            what: format!(
                "the log ends early: {count} entries were written, {} remain",
                all.len()
            ),
        }));
    }
    Ok(Ok(all.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::Store;

    fn fields(ca: Option<&str>) -> EntryFields<'_> {
        EntryFields {
            seq: 1,
            at: 2,
            event: "e",
            ca,
            session: None,
            holder: None,
            detail: "d",
        }
    }

    #[test]
    fn absent_and_empty_fields_hash_apart() {
        assert_ne!(
            entry_hash_v2(GENESIS, &fields(None)),
            entry_hash_v2(GENESIS, &fields(Some("")))
        );
        // the defect version 2 mends
        assert_eq!(
            entry_hash(1, GENESIS, &fields(None)),
            entry_hash(1, GENESIS, &fields(Some("")))
        );
    }

    #[test]
    fn turning_null_into_empty_is_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.audit("first", None, None, None, "x").unwrap();
        store.audit("second", Some("ca"), None, None, "y").unwrap();
        assert_eq!(verify_chain(store.conn()).unwrap(), Ok(2));
        store
            .conn()
            .execute("UPDATE audit SET session_id = '' WHERE seq = 1", [])
            .unwrap();
        let problem = verify_chain(store.conn()).unwrap().unwrap_err();
        assert_eq!(problem.seq, 1);
    }

    #[test]
    fn version_1_entries_still_verify_and_cannot_be_relabelled() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        // an entry as nkpki 0.1.0 wrote it
        let old = fields(Some("ca"));
        let hash = entry_hash(1, GENESIS, &old).unwrap();
        store
            .conn()
            .execute(
                "INSERT INTO audit (seq, at, event, ca_id, detail, prev_hash, hash, hash_version) \
                 VALUES (1, 2, 'e', 'ca', 'd', ?1, ?2, 1)",
                params![GENESIS, hash],
            )
            .unwrap();
        store
            .conn()
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?1), ('audit_count', '1')",
                [&hash],
            )
            .unwrap();
        store.audit("new", None, None, None, "z").unwrap();
        assert_eq!(verify_chain(store.conn()).unwrap(), Ok(2));
        let versions: Vec<i64> = store
            .audit_entries()
            .unwrap()
            .iter()
            .map(|e| e.hash_version)
            .collect();
        assert_eq!(versions, [1, 2]);
        // claiming the new entry was hashed the old way is detected
        store
            .conn()
            .execute("UPDATE audit SET hash_version = 1 WHERE seq = 2", [])
            .unwrap();
        assert_eq!(verify_chain(store.conn()).unwrap().unwrap_err().seq, 2);
    }
}
