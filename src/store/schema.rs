//! Schema migrations: `PRAGMA user_version` counts the ones applied; each runs in a
//! transaction, so a database is always at one version or the next.

use super::{Result, StoreError};
use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE cas (ca_id TEXT PRIMARY KEY, name TEXT NOT NULL, manifest TEXT NOT NULL, added_at INTEGER NOT NULL);
     CREATE TABLE holders (
        ca_id TEXT NOT NULL REFERENCES cas(ca_id), holder_id TEXT NOT NULL, share_index INTEGER NOT NULL,
        enrollment_code_sha256 TEXT, code_used INTEGER NOT NULL DEFAULT 0, public_key_pem TEXT,
        enrolled_at INTEGER, last_seen INTEGER, PRIMARY KEY (ca_id, holder_id));
     CREATE TABLE api_tokens (name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0);
     CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY, ca_id TEXT NOT NULL REFERENCES cas(ca_id), kind TEXT NOT NULL, state TEXT NOT NULL,
        requester TEXT NOT NULL, request TEXT NOT NULL, request_sha256 TEXT NOT NULL, profile TEXT, days INTEGER,
        serial TEXT, reason TEXT, nonce TEXT NOT NULL, recipient TEXT NOT NULL, created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, detail TEXT);
     CREATE TABLE session_events (session_id TEXT NOT NULL REFERENCES sessions(session_id), holder_id TEXT NOT NULL,
        outcome TEXT NOT NULL, detail TEXT NOT NULL, at INTEGER NOT NULL);
     CREATE TABLE certificates (serial TEXT PRIMARY KEY, ca_id TEXT NOT NULL REFERENCES cas(ca_id),
        session_id TEXT NOT NULL, subject TEXT NOT NULL, not_after INTEGER NOT NULL, pem TEXT NOT NULL,
        issued_at INTEGER NOT NULL);
     CREATE TABLE revocations (serial TEXT PRIMARY KEY, ca_id TEXT NOT NULL REFERENCES cas(ca_id), reason TEXT NOT NULL,
        revoked_at INTEGER NOT NULL, session_id TEXT NOT NULL);
     CREATE TABLE crls (ca_id TEXT NOT NULL REFERENCES cas(ca_id), number INTEGER NOT NULL, der BLOB NOT NULL,
        pem TEXT NOT NULL, signed_at INTEGER NOT NULL, PRIMARY KEY (ca_id, number));
     CREATE TABLE audit (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, event TEXT NOT NULL, ca_id TEXT,
        session_id TEXT, holder_id TEXT, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
    // 2: API token roles (`ca-admin` may register CAs); audit hash encoding v2, which tells
    // NULL from "" (older entries keep version 1 and still verify)
    "ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'operator';
     ALTER TABLE audit ADD COLUMN hash_version INTEGER NOT NULL DEFAULT 1;",
    // 3: issue sessions keep the certificate the holders are shown and approve
    "ALTER TABLE sessions ADD COLUMN certificate_view TEXT;",
    // 4: where relying parties find a CA's CRL, certificate and OCSP responder (written into
    // the certificates it issues), and the delegated OCSP responders (the key is a file in
    // the data directory; the certificate is recorded once holders have had it signed)
    "CREATE TABLE ca_urls (ca_id TEXT PRIMARY KEY REFERENCES cas(ca_id), public_url TEXT NOT NULL,
        ocsp INTEGER NOT NULL DEFAULT 0, ocsp_require_signed INTEGER NOT NULL DEFAULT 0, set_at INTEGER NOT NULL, set_by TEXT NOT NULL);
     CREATE TABLE ocsp_responders (session_id TEXT PRIMARY KEY REFERENCES sessions(session_id),
        ca_id TEXT NOT NULL REFERENCES cas(ca_id), key_file TEXT NOT NULL, spki_sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL, certificate_der BLOB, not_after INTEGER);",
];

pub fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}
