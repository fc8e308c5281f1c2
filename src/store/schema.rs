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
    // 4: when an API token was revoked (`serve token list`); tokens revoked before take
    // the time of their `api-token-revoked` audit entry
    "ALTER TABLE api_tokens ADD COLUMN revoked_at INTEGER;
     UPDATE api_tokens SET revoked_at = (SELECT MAX(at) FROM audit
        WHERE event = 'api-token-revoked' AND detail = api_tokens.name) WHERE revoked = 1;",
    // 5: threshold-mode sessions keep the exact to-be-signed DER the holders sign shares of
    "ALTER TABLE sessions ADD COLUMN tbs BLOB;",
    // 6: where relying parties find a CA's CRL, certificate and OCSP responder (written into
    // the certificates it issues), and the delegated OCSP responders (the key is a file in
    // the data directory; the certificate is recorded once holders have had it signed)
    "CREATE TABLE ca_urls (ca_id TEXT PRIMARY KEY REFERENCES cas(ca_id), public_url TEXT NOT NULL,
        ocsp INTEGER NOT NULL DEFAULT 0, ocsp_require_signed INTEGER NOT NULL DEFAULT 0, set_at INTEGER NOT NULL, set_by TEXT NOT NULL);
     CREATE TABLE ocsp_responders (session_id TEXT PRIMARY KEY REFERENCES sessions(session_id),
        ca_id TEXT NOT NULL REFERENCES cas(ca_id), key_file TEXT NOT NULL, spki_sha256 TEXT NOT NULL,
        created_at INTEGER NOT NULL, certificate_der BLOB, not_after INTEGER);",
    // 7: the web UI's CA page lists a CA's certificates newest first, a page at a time
    "CREATE INDEX certificates_by_ca ON certificates (ca_id, issued_at);",
    // 8: online reshare: the share set a `reshare` session made (manifest, enrollment
    // hashes, packages sealed to the new holders), pending until M′ new holders enroll,
    // and those holders' enrollments for it
    "CREATE TABLE reshare_sets (session_id TEXT PRIMARY KEY REFERENCES sessions(session_id),
        ca_id TEXT NOT NULL REFERENCES cas(ca_id), set_version INTEGER NOT NULL, threshold INTEGER NOT NULL,
        result TEXT NOT NULL, state TEXT NOT NULL, created_at INTEGER NOT NULL, switched_at INTEGER);
     CREATE TABLE reshare_holders (session_id TEXT NOT NULL REFERENCES reshare_sets(session_id),
        holder_id TEXT NOT NULL, share_index INTEGER NOT NULL, enrollment_code_sha256 TEXT NOT NULL,
        public_key_pem TEXT, enrolled_at INTEGER, PRIMARY KEY (session_id, holder_id));",
    // 9: each certificate keeps its own subjectAltNames (a JSON list), so the CA page
    // searches and lists them without reading its session's views (a batch's are a list
    // of up to 1,000); existing rows take them from that view, or from the batch's view
    // with the same serial
    "ALTER TABLE certificates ADD COLUMN sans TEXT NOT NULL DEFAULT '[]';
     UPDATE certificates SET sans = COALESCE((
        SELECT CASE json_type(s.certificate_view)
            WHEN 'array' THEN (SELECT json_extract(v.value, '$.sans') FROM json_each(s.certificate_view) v
                               WHERE lower(json_extract(v.value, '$.serial')) = lower(certificates.serial))
            ELSE json_extract(s.certificate_view, '$.sans') END
        FROM sessions s WHERE s.session_id = certificates.session_id AND json_valid(s.certificate_view)), '[]');",
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

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    /// A token revoked under schema 3 gets the time of its audit entry as `revoked_at`.
    #[test]
    fn migration_4_dates_tokens_revoked_before_it_from_the_audit_log() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &super::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO api_tokens (name, token_sha256, created_at, revoked) VALUES ('alice', 'a', 100, 0), ('bob', 'b', 200, 1);
             INSERT INTO audit (seq, at, event, detail, prev_hash, hash) VALUES
                (1, 300, 'api-token-revoked', 'bob', '', ''), (2, 400, 'api-token-created', 'alice', '', '');",
        )
        .unwrap();
        super::migrate(&mut conn).unwrap();
        let revoked_at = |name: &str| -> Option<i64> {
            conn.query_row(
                "SELECT revoked_at FROM api_tokens WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(revoked_at("bob"), Some(300));
        assert_eq!(revoked_at("alice"), None);
    }

    /// Migration 9 gives each certificate its own SANs: from its session's view, or from
    /// the batch view with its serial.
    #[test]
    fn migration_9_copies_each_certificates_sans_from_its_view() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &super::MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 8).unwrap();
        let single = r#"{"serial":"0a","sans":["DNS:one.example.org"]}"#;
        let batch = r#"[{"serial":"0b","sans":["DNS:b.example.org"]},{"serial":"0c","sans":["DNS:c.example.org","IP:192.0.2.1"]}]"#;
        conn.execute_batch(&format!(
            "INSERT INTO cas VALUES ('ca', 'CA', '{{}}', 1);
             INSERT INTO sessions (session_id, ca_id, kind, state, requester, request, request_sha256,
                nonce, recipient, created_at, expires_at, certificate_view) VALUES
                ('s1', 'ca', 'issue', 'signed', 'op', '', '', '', '', 1, 2, '{single}'),
                ('s2', 'ca', 'issue-batch', 'signed', 'op', '', '', '', '', 1, 2, '{batch}');
             INSERT INTO certificates (serial, ca_id, session_id, subject, not_after, pem, issued_at) VALUES
                ('0a', 'ca', 's1', 'CN=one', 9, '', 1), ('0b', 'ca', 's2', 'CN=b', 9, '', 1),
                ('0C', 'ca', 's2', 'CN=c', 9, '', 1), ('0d', 'ca', 'gone', 'CN=d', 9, '', 1);"
        ))
        .unwrap();
        super::migrate(&mut conn).unwrap();
        let sans = |serial: &str| -> String {
            conn.query_row(
                "SELECT sans FROM certificates WHERE serial = ?1",
                [serial],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(sans("0a"), r#"["DNS:one.example.org"]"#);
        assert_eq!(sans("0b"), r#"["DNS:b.example.org"]"#);
        assert_eq!(sans("0C"), r#"["DNS:c.example.org","IP:192.0.2.1"]"#);
        assert_eq!(sans("0d"), "[]");
    }
}
