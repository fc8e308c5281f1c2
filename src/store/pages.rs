//! Read-only queries the web pages make: open sessions, holders' last answers, a CA's
//! issued certificates (paged, searched) and the audit log (paged, filtered).

use super::{AuditEntry, Result, Store};
use rusqlite::{OptionalExtension, params};
use std::collections::HashMap;

/// A session still waiting for approvals.
#[derive(Clone, Debug)]
pub struct OpenSession {
    pub session_id: String,
    pub ca_id: String,
    pub kind: String,
    pub requester: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub profile: Option<String>,
    pub serial: Option<String>,
    /// `issue`: the certificate view (JSON) the holders are shown.
    pub certificate_view: Option<String>,
    pub approvals: u32,
}

/// A holder's latest answer to any session: (outcome, at, session).
pub type LastAnswer = (String, i64, String);

/// An issued certificate as the CA page lists it.
#[derive(Clone, Debug)]
pub struct IssuedRow {
    pub serial: String,
    pub subject: String,
    /// `DNS:…`, `IP:…`, `email:…` (as the holders approved them).
    pub sans: Vec<String>,
    pub not_after: i64,
    pub issued_at: i64,
    pub session_id: String,
    /// (reason, revoked_at) when revoked.
    pub revoked: Option<(String, i64)>,
}

/// What the audit page filters on (each `None` matches everything).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub event: Option<String>,
    pub holder_id: Option<String>,
    pub ca_id: Option<String>,
}

/// `q` as a SQL LIKE pattern matching it anywhere, its wildcards taken literally.
fn contains_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

impl Store {
    /// Sessions waiting for approvals, newest first (at most `limit`).
    pub fn open_sessions(&self, limit: u32) -> Result<Vec<OpenSession>> {
        let mut stmt = self.conn.prepare(
            "SELECT s.session_id, s.ca_id, s.kind, s.requester, s.created_at, s.expires_at,
                    s.profile, s.serial, s.certificate_view,
                    (SELECT COUNT(*) FROM session_events e
                      WHERE e.session_id = s.session_id AND e.outcome = 'approved')
             FROM sessions s WHERE s.state = 'waiting' ORDER BY s.created_at DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(OpenSession {
                session_id: r.get(0)?,
                ca_id: r.get(1)?,
                kind: r.get(2)?,
                requester: r.get(3)?,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
                profile: r.get(6)?,
                serial: r.get(7)?,
                certificate_view: r.get(8)?,
                approvals: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Each holder of a CA's latest answer to one of its sessions.
    pub fn last_answers(&self, ca_id: &str) -> Result<HashMap<String, LastAnswer>> {
        // SQLite takes the bare columns from the row holding the MAX
        let mut stmt = self.conn.prepare(
            "SELECT e.holder_id, e.outcome, MAX(e.at), e.session_id
             FROM session_events e JOIN sessions s ON s.session_id = e.session_id
             WHERE s.ca_id = ?1 GROUP BY e.holder_id",
        )?;
        let rows = stmt.query_map([ca_id], |r| {
            Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?)))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// One page of a CA's issued certificates, newest first, and how many match in all.
    /// `q` (when not empty) matches a serial's start, or any part of the subject or of a
    /// subjectAltName, ignoring (ASCII) case.
    pub fn issued_certificates(
        &self,
        ca_id: &str,
        q: &str,
        offset: u32,
        limit: u32,
    ) -> Result<(u64, Vec<IssuedRow>)> {
        let q = q.trim();
        // a serial is searched by its start, as hex with or without colons
        let hex = q.to_lowercase().replace(':', "");
        let serial = (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| format!("{hex}%"));
        let anywhere = contains_pattern(q);
        let filter = "c.ca_id = ?1 AND (?2 = '' OR c.serial LIKE ?3 ESCAPE '\\'
              OR c.subject LIKE ?4 ESCAPE '\\'
              OR EXISTS (SELECT 1 FROM json_each(c.sans) n WHERE n.value LIKE ?4 ESCAPE '\\'))";
        let total: u64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM certificates c WHERE {filter}"),
            params![ca_id, q, serial, anywhere],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT c.serial, c.subject, c.not_after, c.issued_at, c.session_id,
                    c.sans,
                    r.reason, r.revoked_at
             FROM certificates c LEFT JOIN revocations r ON r.serial = c.serial AND r.ca_id = c.ca_id
             WHERE {filter} ORDER BY c.issued_at DESC, c.rowid DESC LIMIT ?5 OFFSET ?6"
        ))?;
        let rows = stmt.query_map(params![ca_id, q, serial, anywhere, limit, offset], |r| {
            let sans: String = r.get(5)?;
            let sans = serde_json::from_str(&sans).unwrap_or_default();
            let reason: Option<String> = r.get(6)?;
            let at: Option<i64> = r.get(7)?;
            Ok(IssuedRow {
                serial: r.get(0)?,
                subject: r.get(1)?,
                sans,
                not_after: r.get(2)?,
                issued_at: r.get(3)?,
                session_id: r.get(4)?,
                revoked: reason.zip(at),
            })
        })?;
        Ok((total, rows.collect::<std::result::Result<_, _>>()?))
    }

    /// The PEM of a certificate a CA issued.
    pub fn issued_pem(&self, ca_id: &str, serial: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT pem FROM certificates WHERE ca_id = ?1 AND serial = ?2",
                [ca_id, serial],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// A CA's CRLs: (number, signed_at), newest first (at most `limit`).
    pub fn crl_list(&self, ca_id: &str, limit: u32) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT number, signed_at FROM crls WHERE ca_id = ?1 ORDER BY number DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![ca_id, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// One page of the audit log, newest first, and how many entries match in all.
    pub fn audit_page(
        &self,
        filter: &AuditFilter,
        offset: u32,
        limit: u32,
    ) -> Result<(u64, Vec<AuditEntry>)> {
        let condition = "(?1 IS NULL OR event = ?1) AND (?2 IS NULL OR holder_id = ?2)
                         AND (?3 IS NULL OR ca_id = ?3)";
        let args = params![filter.event, filter.holder_id, filter.ca_id];
        let total: u64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM audit WHERE {condition}"),
            args,
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT seq, at, event, ca_id, session_id, holder_id, detail, prev_hash, hash, hash_version
             FROM audit WHERE {condition} ORDER BY seq DESC LIMIT ?4 OFFSET ?5"
        ))?;
        let rows = stmt.query_map(
            params![filter.event, filter.holder_id, filter.ca_id, limit, offset],
            |r| {
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
            },
        )?;
        Ok((total, rows.collect::<std::result::Result<_, _>>()?))
    }

    /// The distinct audit event kinds, for the audit page's filter.
    pub fn audit_kinds(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT event FROM audit ORDER BY event")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Whether the audit chain verifies: `Ok(entries)` or the first problem.
    pub fn verify_audit(&self) -> Result<std::result::Result<usize, super::AuditProblem>> {
        super::audit::verify_chain(&self.conn)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::store::{NewCertificate, Store};

    /// A batch's certificates are found by a subjectAltName and listed with their own.
    #[test]
    fn batch_certificates_are_searched_and_listed_by_their_own_sans() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .conn()
            .execute_batch(
                "INSERT INTO cas VALUES ('ca', 'CA', '{}', 1);
                 INSERT INTO sessions (session_id, ca_id, kind, state, requester, request,
                    request_sha256, nonce, recipient, created_at, expires_at, certificate_view)
                 VALUES ('s', 'ca', 'issue-batch', 'waiting', 'op', '', '', '', '', 1, 2, '[]');",
            )
            .unwrap();
        let certificate = |i: u32| NewCertificate {
            serial: format!("0{i}"),
            subject: format!("CN=host{i}"),
            sans: vec![
                format!("DNS:host{i}.example.org"),
                format!("IP:192.0.2.{i}"),
            ],
            not_after: 9,
            pem: String::new(),
        };
        store
            .record_certificates("s", "ca", &[certificate(1), certificate(2)])
            .unwrap();
        let (total, rows) = store
            .issued_certificates("ca", "HOST2.example", 0, 10)
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(rows[0].serial, "02");
        assert_eq!(rows[0].sans, ["DNS:host2.example.org", "IP:192.0.2.2"]);
        let (total, rows) = store.issued_certificates("ca", "", 0, 10).unwrap();
        assert_eq!(total, 2);
        assert!(rows.iter().all(|r| r.sans.len() == 2), "{rows:?}");
        assert_eq!(
            store
                .issued_certificates("ca", "192.0.2.1", 0, 10)
                .unwrap()
                .0,
            1
        );
    }
}
