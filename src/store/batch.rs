//! A batch session's certificates: recorded together, in one transaction, or not at all.

use super::{Result, Store, audit, mark_signed, now};
use rusqlite::params;

/// A certificate to record: what the CA page lists and searches, and its PEM.
#[derive(Clone, Debug)]
pub struct NewCertificate {
    pub serial: String,
    pub subject: String,
    /// `DNS:…`, `IP:…`, `email:…`, as the holders approved them.
    pub sans: Vec<String>,
    pub not_after: i64,
    pub pem: String,
}

impl Store {
    /// Records every certificate a batch session issued, in order, each with its
    /// `certificate-issued` audit entry, and marks the session signed.
    pub fn record_certificates(
        &mut self,
        session_id: &str,
        ca_id: &str,
        certificates: &[NewCertificate],
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let issued_at = now();
        for c in certificates {
            insert_certificate(&tx, session_id, ca_id, c, issued_at)?;
            audit::append_tx(
                &tx,
                "certificate-issued",
                Some(ca_id),
                Some(session_id),
                None,
                &format!("serial {}; {}", c.serial, c.subject),
            )?;
        }
        mark_signed(
            &tx,
            session_id,
            &format!("{} certificates", certificates.len()),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A session's certificates, (serial, subject, PEM), in the order they were recorded.
    pub fn certificates_of_session(
        &self,
        session_id: &str,
    ) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT serial, subject, pem FROM certificates WHERE session_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([session_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// Inserts one issued certificate (with its SANs as a JSON list).
pub(super) fn insert_certificate(
    tx: &rusqlite::Transaction<'_>,
    session_id: &str,
    ca_id: &str,
    c: &NewCertificate,
    issued_at: i64,
) -> Result<()> {
    let sans = serde_json::to_string(&c.sans).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO certificates (serial, ca_id, session_id, subject, not_after, pem, issued_at, sans) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![c.serial, ca_id, session_id, c.subject, c.not_after, c.pem, issued_at, sans],
    )?;
    Ok(())
}
