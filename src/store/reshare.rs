//! Online reshare in the store: the share set a `reshare` session made, pending until M′
//! of its holders have enrolled their tokens for it, and the switch to it.

use super::{Result, Store, StoreError, audit, mark_signed, now, replace_share_set_in};
use rusqlite::{OptionalExtension, params};

/// A share set made by a `reshare` session.
#[derive(Clone, Debug)]
pub struct ReshareSetRow {
    pub session_id: String,
    pub ca_id: String,
    pub set_version: u32,
    /// M′: new-set enrollments the switch needs.
    pub threshold: u8,
    /// The JSON of the [`crate::proto::ReshareResult`] (manifest, enrollment hashes,
    /// packages sealed to the new holders).
    pub result: String,
    /// `pending`, `switched` or `replaced`.
    pub state: String,
}

/// One holder of a pending set and its enrollment for it.
#[derive(Clone, Debug)]
pub struct ReshareHolderRow {
    pub holder_id: String,
    pub share_index: u8,
    pub enrollment_code_sha256: String,
    pub public_key_pem: Option<String>,
}

fn set_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReshareSetRow> {
    Ok(ReshareSetRow {
        session_id: r.get(0)?,
        ca_id: r.get(1)?,
        set_version: r.get(2)?,
        threshold: r.get(3)?,
        result: r.get(4)?,
        state: r.get(5)?,
    })
}

const SET_COLUMNS: &str = "session_id, ca_id, set_version, threshold, result, state";

impl Store {
    /// Records the share set a `reshare` session made, pending, and the session signed; a
    /// set still pending for the same CA is `replaced` (its packages can no longer be
    /// enrolled).
    pub fn add_reshare_set(
        &mut self,
        set: &ReshareSetRow,
        holders: &[(String, u8, String)],
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let replaced = tx.execute(
            "UPDATE reshare_sets SET state = 'replaced' WHERE ca_id = ?1 AND state = 'pending'",
            [&set.ca_id],
        )?;
        tx.execute(
            "INSERT INTO reshare_sets (session_id, ca_id, set_version, threshold, result, state, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
            params![
                set.session_id,
                set.ca_id,
                set.set_version,
                set.threshold,
                set.result,
                now()
            ],
        )?;
        for (holder, index, code) in holders {
            tx.execute(
                "INSERT INTO reshare_holders (session_id, holder_id, share_index, enrollment_code_sha256) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![set.session_id, holder, index, code],
            )?;
        }
        mark_signed(
            &tx,
            &set.session_id,
            &format!(
                "share set version {} made; packages: GET /api/v1/sessions/{}/packages",
                set.set_version, set.session_id
            ),
        )?;
        audit::append_tx(
            &tx,
            "reshare-pending",
            Some(&set.ca_id),
            Some(&set.session_id),
            None,
            &format!(
                "share set version {} ({} of {}: {}) made; the current set signs until {} of its \
                 holders enroll{}",
                set.set_version,
                set.threshold,
                holders.len(),
                holders
                    .iter()
                    .map(|(h, _, _)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                set.threshold,
                if replaced > 0 {
                    "; it replaces the set an earlier reshare left pending"
                } else {
                    ""
                }
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The set pending for CA `ca_id`, if any.
    pub fn pending_reshare_set(&self, ca_id: &str) -> Result<Option<ReshareSetRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {SET_COLUMNS} FROM reshare_sets WHERE ca_id = ?1 AND state = 'pending'"
                ),
                [ca_id],
                set_from,
            )
            .optional()?)
    }

    /// The set session `session_id` made, whatever its state.
    pub fn reshare_set(&self, session_id: &str) -> Result<Option<ReshareSetRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {SET_COLUMNS} FROM reshare_sets WHERE session_id = ?1"),
                [session_id],
                set_from,
            )
            .optional()?)
    }

    /// The holders of the set session `session_id` made, in share order.
    pub fn reshare_holders(&self, session_id: &str) -> Result<Vec<ReshareHolderRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT holder_id, share_index, enrollment_code_sha256, public_key_pem \
             FROM reshare_holders WHERE session_id = ?1 ORDER BY share_index",
        )?;
        let rows = stmt.query_map([session_id], |r| {
            Ok(ReshareHolderRow {
                holder_id: r.get(0)?,
                share_index: r.get(1)?,
                enrollment_code_sha256: r.get(2)?,
                public_key_pem: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Registers a new-set holder's token key for the pending set (code checked by the
    /// caller); returns how many of its holders have enrolled.
    pub fn enroll_for_reshare(
        &mut self,
        set: &ReshareSetRow,
        holder_id: &str,
        public_key_pem: &str,
    ) -> Result<usize> {
        let tx = self.write_tx()?;
        let changed = tx.execute(
            "UPDATE reshare_holders SET public_key_pem = ?3, enrolled_at = ?4 \
             WHERE session_id = ?1 AND holder_id = ?2 AND public_key_pem IS NULL \
             AND (SELECT state FROM reshare_sets WHERE session_id = ?1) = 'pending'",
            params![set.session_id, holder_id, public_key_pem, now()],
        )?;
        if changed != 1 {
            return Err(StoreError::Conflict(
                "the enrollment code for the new share set was already used".into(),
            ));
        }
        let enrolled: i64 = tx.query_row(
            "SELECT COUNT(*) FROM reshare_holders WHERE session_id = ?1 AND public_key_pem IS NOT NULL",
            [&set.session_id],
            |r| r.get(0),
        )?;
        audit::append_tx(
            &tx,
            "holder-enrolled-new-set",
            Some(&set.ca_id),
            Some(&set.session_id),
            Some(holder_id),
            &format!(
                "for share set version {}: {enrolled} of the {} enrollments the switch needs; key \
                 SHA-256 {}",
                set.set_version,
                set.threshold,
                crate::pki::sha256_hex(public_key_pem.as_bytes())
            ),
        )?;
        tx.commit()?;
        Ok(usize::try_from(enrolled).unwrap_or(0))
    }

    /// Switches CA `set.ca_id` to the pending set (its manifest checked by the caller, as
    /// a registration is): the manifest and holders are replaced as by a registration,
    /// and every new-set holder that enrolled for it keeps the key it enrolled.
    pub fn switch_to_reshare_set(
        &mut self,
        set: &ReshareSetRow,
        manifest_json: &str,
        holders: &[(String, u8, Option<String>)],
        note: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM reshare_sets WHERE session_id = ?1",
                [&set.session_id],
                |r| r.get(0),
            )
            .optional()?;
        if state.as_deref() != Some("pending") {
            return Err(StoreError::Conflict(format!(
                "the share set of session {} is not pending",
                set.session_id
            )));
        }
        replace_share_set_in(&tx, &set.ca_id, manifest_json, holders, note)?;
        tx.execute(
            "UPDATE holders SET public_key_pem = r.public_key_pem, enrolled_at = r.enrolled_at, \
             enrollment_code_sha256 = r.enrollment_code_sha256, code_used = 1 \
             FROM (SELECT holder_id, public_key_pem, enrolled_at, enrollment_code_sha256 \
                   FROM reshare_holders WHERE session_id = ?2 AND public_key_pem IS NOT NULL) AS r \
             WHERE holders.ca_id = ?1 AND holders.holder_id = r.holder_id",
            params![set.ca_id, set.session_id],
        )?;
        tx.execute(
            "UPDATE reshare_sets SET state = 'switched', switched_at = ?2 WHERE session_id = ?1",
            params![set.session_id, now()],
        )?;
        audit::append_tx(
            &tx,
            "share-set-switched",
            Some(&set.ca_id),
            Some(&set.session_id),
            None,
            &format!(
                "the CA signs with share set version {} from now on; contributions of the \
                 earlier set are refused",
                set.set_version
            ),
        )?;
        tx.commit()?;
        Ok(())
    }
}
