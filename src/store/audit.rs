//! The audit log: append-only and hash-chained. Each entry's hash covers the previous
//! entry's hash and all of its own fields; the head hash and the count are kept in `meta`
//! in the same transaction, so an edited, deleted, inserted or truncated entry is found by
//! [`verify_chain`].

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
}

/// SHA-256 over the previous hash and an entry's fields, each length-prefixed so no two
/// different entries hash alike.
fn entry_hash(prev: &str, fields: [&str; 7]) -> String {
    let mut h = Sha256::new();
    for field in std::iter::once(prev).chain(fields) {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    hex::encode(h.finalize())
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
    let hash = entry_hash(
        &prev,
        [
            &seq.to_string(),
            &at.to_string(),
            event,
            ca.unwrap_or(""),
            session.unwrap_or(""),
            holder.unwrap_or(""),
            detail,
        ],
    );
    tx.execute(
        "INSERT INTO audit (seq, at, event, ca_id, session_id, holder_id, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![seq, at, event, ca, session, holder, detail, prev, hash],
    )?;
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head', ?1), ('audit_count', ?2)",
        params![hash, seq.to_string()],
    )?;
    Ok(())
}

pub(super) fn entries(conn: &Connection) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare("SELECT seq, at, event, ca_id, session_id, holder_id, detail, prev_hash, hash FROM audit ORDER BY seq")?;
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
        let hash = entry_hash(
            &e.prev_hash,
            [
                &e.seq.to_string(),
                &e.at.to_string(),
                &e.event,
                e.ca_id.as_deref().unwrap_or(""),
                e.session_id.as_deref().unwrap_or(""),
                e.holder_id.as_deref().unwrap_or(""),
                &e.detail,
            ],
        );
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
