//! A batch session's certificates: recorded together, in one transaction, or not at all.

use super::{Result, Store, audit, mark_signed, now};
use rusqlite::params;

impl Store {
    /// Records every certificate a batch session issued — (serial, subject, not after,
    /// PEM) in order — each with its `certificate-issued` audit entry, and marks the
    /// session signed.
    pub fn record_certificates(
        &mut self,
        session_id: &str,
        ca_id: &str,
        certificates: &[(String, String, i64, String)],
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let issued_at = now();
        for (serial, subject, not_after, pem) in certificates {
            tx.execute(
                "INSERT INTO certificates (serial, ca_id, session_id, subject, not_after, pem, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![serial, ca_id, session_id, subject, not_after, pem, issued_at],
            )?;
            audit::append_tx(
                &tx,
                "certificate-issued",
                Some(ca_id),
                Some(session_id),
                None,
                &format!("serial {serial}; {subject}"),
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
