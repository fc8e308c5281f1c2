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
    /// `pending`, `switched`, `replaced` (by a later reshare) or `stale` (the registered
    /// manifest changed under it: a policy change, a registration).
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
    /// enrolled). Only while the CA's registered manifest is still `checked_manifest`, the
    /// one the caller checked the new set against (else a conflict, nothing written).
    pub fn add_reshare_set(
        &mut self,
        set: &ReshareSetRow,
        holders: &[(String, u8, String)],
        checked_manifest: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let registered: Option<String> = tx
            .query_row(
                "SELECT manifest FROM cas WHERE ca_id = ?1",
                [&set.ca_id],
                |r| r.get(0),
            )
            .optional()?;
        if registered.as_deref() != Some(checked_manifest) {
            return Err(StoreError::Conflict(
                "the CA's registered manifest changed while the new share set was checked".into(),
            ));
        }
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

    /// The set (any state, newest first) with a holder `holder_id` whose enrollment code
    /// hashes to `code_sha256`, and that holder.
    pub fn reshare_set_for_code(
        &self,
        ca_id: &str,
        holder_id: &str,
        code_sha256: &str,
    ) -> Result<Option<(ReshareSetRow, ReshareHolderRow)>> {
        let session: Option<String> = self
            .conn
            .query_row(
                "SELECT s.session_id FROM reshare_sets s JOIN reshare_holders h \
                 ON h.session_id = s.session_id \
                 WHERE s.ca_id = ?1 AND h.holder_id = ?2 AND h.enrollment_code_sha256 = ?3 \
                 ORDER BY s.set_version DESC, s.created_at DESC LIMIT 1",
                params![ca_id, holder_id, code_sha256],
                |r| r.get(0),
            )
            .optional()?;
        let Some(session) = session else {
            return Ok(None);
        };
        let set = self.reshare_set(&session)?;
        let holder = self
            .reshare_holders(&session)?
            .into_iter()
            .find(|h| h.holder_id == holder_id);
        Ok(set.zip(holder))
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
        let taken: i64 = tx.query_row(
            "SELECT COUNT(*) FROM reshare_holders WHERE session_id = ?1 AND holder_id != ?2 \
             AND public_key_pem = ?3",
            params![set.session_id, holder_id, public_key_pem],
            |r| r.get(0),
        )?;
        if taken > 0 {
            return Err(StoreError::Conflict(
                "this token key is already enrolled for another holder of the new share set".into(),
            ));
        }
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
        purged_result: &str,
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
        // the sealed packages are not kept past the switch: the manifest and record are
        tx.execute(
            "UPDATE reshare_sets SET state = 'switched', switched_at = ?2, result = ?3 \
             WHERE session_id = ?1",
            params![set.session_id, now(), purged_result],
        )?;
        replace_share_set_in(&tx, &set.ca_id, manifest_json, holders, note)?;
        tx.execute(
            "UPDATE holders SET public_key_pem = r.public_key_pem, enrolled_at = r.enrolled_at, \
             enrollment_code_sha256 = r.enrollment_code_sha256, code_used = 1 \
             FROM (SELECT holder_id, public_key_pem, enrolled_at, enrollment_code_sha256 \
                   FROM reshare_holders WHERE session_id = ?2 AND public_key_pem IS NOT NULL) AS r \
             WHERE holders.ca_id = ?1 AND holders.holder_id = r.holder_id",
            params![set.ca_id, set.session_id],
        )?;
        // a kept holder that had not enrolled for the new set keeps its key; its new
        // package's code is spent, so that its agent hears `code-used`, not `bad-code`
        tx.execute(
            "UPDATE holders SET enrollment_code_sha256 = r.enrollment_code_sha256, code_used = 1 \
             FROM (SELECT holder_id, enrollment_code_sha256 FROM reshare_holders \
                   WHERE session_id = ?2 AND public_key_pem IS NULL) AS r \
             WHERE holders.ca_id = ?1 AND holders.holder_id = r.holder_id \
             AND holders.public_key_pem IS NOT NULL",
            params![set.ca_id, set.session_id],
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

/// Marks the share sets pending for CA `ca_id` `stale`, in the transaction that replaces
/// its registered manifest: they were made as the successor of the manifest replaced, so
/// they can never switch; their enrollments are refused `stale-share-set`.
pub(super) fn stale_pending_sets(tx: &rusqlite::Transaction<'_>, ca_id: &str) -> Result<usize> {
    let n = tx.execute(
        "UPDATE reshare_sets SET state = 'stale' WHERE ca_id = ?1 AND state = 'pending'",
        [ca_id],
    )?;
    if n > 0 {
        audit::append_tx(
            tx,
            "reshare-stale",
            Some(ca_id),
            None,
            None,
            "the share set a reshare left pending is stale: the registered manifest changed \
             before its switch; reshare again",
        )?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::SessionRow;

    const REGISTERED: &str = r#"{"registered":1}"#;

    /// A store with CA `ca1` (manifest [`REGISTERED`]) and a waiting `reshare` session `s1`,
    /// and the 2-of-3 set that session would record.
    fn store() -> (
        tempfile::TempDir,
        Store,
        ReshareSetRow,
        Vec<(String, u8, String)>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store
            .add_ca(
                "ca1",
                "Test CA",
                REGISTERED,
                &[("NK001".into(), 1, Some("c1".into()))],
                "test",
            )
            .unwrap();
        store
            .insert_session(&SessionRow {
                session_id: "s1".into(),
                ca_id: "ca1".into(),
                kind: "reshare".into(),
                state: "waiting".into(),
                requester: "admin".into(),
                request: "{}".into(),
                request_sha256: "00".into(),
                profile: Some("reshare".into()),
                days: Some(0),
                serial: None,
                reason: None,
                nonce: "00".into(),
                recipient: String::new(),
                created_at: 0,
                expires_at: i64::MAX,
                detail: None,
                certificate_view: None,
                tbs: None,
            })
            .unwrap();
        let set = ReshareSetRow {
            session_id: "s1".into(),
            ca_id: "ca1".into(),
            set_version: 2,
            threshold: 2,
            result: "{}".into(),
            state: "pending".into(),
        };
        let holders = ["NK002", "NK003", "NK004"]
            .iter()
            .enumerate()
            .map(|(i, h)| ((*h).to_owned(), i as u8 + 1, format!("code{i}")))
            .collect();
        (dir, store, set, holders)
    }

    #[test]
    fn a_new_set_is_recorded_only_over_the_manifest_it_was_checked_against() {
        let (_dir, mut store, set, holders) = store();
        let err = store
            .add_reshare_set(&set, &holders, r#"{"registered":0}"#)
            .unwrap_err();
        assert!(err.to_string().contains("manifest changed"), "{err}");
        assert!(store.pending_reshare_set("ca1").unwrap().is_none());
        store.add_reshare_set(&set, &holders, REGISTERED).unwrap();
        assert!(store.pending_reshare_set("ca1").unwrap().is_some());
    }

    #[test]
    fn a_changed_manifest_makes_the_pending_set_stale() {
        let (_dir, mut store, set, holders) = store();
        store.add_reshare_set(&set, &holders, REGISTERED).unwrap();
        store
            .replace_manifest("ca1", r#"{"registered":2}"#, "policy changed")
            .unwrap();
        assert!(store.pending_reshare_set("ca1").unwrap().is_none());
        assert_eq!(store.reshare_set("s1").unwrap().unwrap().state, "stale");
        let audit = store.audit_entries().unwrap();
        assert!(audit.iter().any(|e| e.event == "reshare-stale"));
        // its enrollments are refused
        assert!(store.enroll_for_reshare(&set, "NK002", "PEM").is_err());
    }

    #[test]
    fn one_token_key_enrolls_for_one_holder_of_a_set() {
        let (_dir, mut store, set, holders) = store();
        store.add_reshare_set(&set, &holders, REGISTERED).unwrap();
        assert_eq!(store.enroll_for_reshare(&set, "NK002", "PEM A").unwrap(), 1);
        let err = store
            .enroll_for_reshare(&set, "NK003", "PEM A")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("already enrolled for another holder"),
            "{err}"
        );
        assert_eq!(store.enroll_for_reshare(&set, "NK003", "PEM B").unwrap(), 2);
    }
}
