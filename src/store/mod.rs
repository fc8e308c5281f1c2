//! The server's state in one SQLite file: CAs, holders and their token keys, operators'
//! API tokens (hashed), sessions, issued certificates, revocations, CRLs, and the
//! hash-chained audit log. Nothing secret is ever stored here.

mod audit;
mod batch;
mod lock;
mod pages;
mod reshare;
mod schema;

pub use reshare::{ReshareHolderRow, ReshareSetRow};

pub use audit::{AuditEntry, AuditProblem, verify_chain};
pub use batch::NewCertificate;
pub use lock::DataDirLock;
pub use pages::{AuditFilter, IssuedRow, LastAnswer, OpenSession};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("cannot use data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error(
        "data directory {path} is in use by another nkpki serve (PID {pid}); stop it first, or give this one another --data-dir"
    )]
    InUse { path: String, pid: String },
    #[error(
        "the database {path} is damaged ({problem}); nkpki will not serve from it (hint: stop, keep a copy of the damaged file, and restore the latest `nkpki serve backup` as docs/operator-guide.md#backups-and-restore explains)"
    )]
    Corrupt { path: String, problem: String },
    #[error("the database schema version {found} is newer than this nkpki knows ({known})")]
    TooNew { found: i64, known: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What an operator's API token may do beyond operating sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiRole {
    /// Sessions, revocations, CRLs, listing CAs (the default).
    Operator,
    /// All of the above, and registering CAs over the API.
    CaAdmin,
}

impl ApiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Operator => "operator",
            ApiRole::CaAdmin => "ca-admin",
        }
    }

    /// A role by name; unknown names are `None` (a store row with one counts as `operator`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "operator" => Some(ApiRole::Operator),
            "ca-admin" => Some(ApiRole::CaAdmin),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

/// A registered holder.
#[derive(Clone, Debug)]
pub struct HolderRow {
    pub ca_id: String,
    pub holder_id: String,
    pub share_index: u8,
    pub enrollment_code_sha256: Option<String>,
    pub code_used: bool,
    pub public_key_pem: Option<String>,
    pub last_seen: Option<i64>,
}

/// A registered CA.
#[derive(Clone, Debug)]
pub struct CaRow {
    pub ca_id: String,
    pub name: String,
    /// The ceremony's manifest, as registered.
    pub manifest: String,
    /// Unix seconds.
    pub added_at: i64,
}

/// An operator's API token as the store keeps it (its hash is not read).
#[derive(Clone, Debug)]
pub struct ApiTokenRow {
    pub name: String,
    /// `operator` or `ca-admin`.
    pub role: String,
    /// Unix seconds.
    pub created_at: i64,
    pub revoked: bool,
    /// Unix seconds; `None` while active (or for a token revoked before nkpki recorded when).
    pub revoked_at: Option<i64>,
}

/// A session row (no secret: the session key lives in the server's memory only).
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub session_id: String,
    pub ca_id: String,
    pub kind: String,
    pub state: String,
    pub requester: String,
    pub request: String,
    pub request_sha256: String,
    pub profile: Option<String>,
    pub days: Option<u32>,
    pub serial: Option<String>,
    pub reason: Option<String>,
    pub nonce: String,
    pub recipient: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub detail: Option<String>,
    /// `issue`: the certificate as it will be issued (JSON of [`crate::pki::CertificateView`]),
    /// which the holders approve.
    pub certificate_view: Option<String>,
    /// Threshold mode: the DER TBSCertificate or TBSCertList the holders sign shares of.
    pub tbs: Option<Vec<u8>>,
}

/// Marks a session signed, in the transaction that records what it signed. Only a session
/// still waiting is signed: a cancel that came first wins, and the transaction rolls back.
fn mark_signed(tx: &rusqlite::Transaction<'_>, session_id: &str, detail: &str) -> Result<()> {
    let changed = tx.execute(
        "UPDATE sessions SET state = 'signed', detail = ?2 WHERE session_id = ?1 AND state = 'waiting'",
        params![session_id, detail],
    )?;
    if changed != 1 {
        return Err(StoreError::Conflict(
            "the session ended before it was signed".into(),
        ));
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) `DIR/nkpki.sqlite3`, migrating the schema.
    pub fn open(dir: &Path) -> Result<Self> {
        let fail = |reason: String| StoreError::DataDir {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(e.to_string()))?;
        let path = dir.join("nkpki.sqlite3");
        let corrupt = |problem: String| StoreError::Corrupt {
            path: path.display().to_string(),
            problem,
        };
        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| corrupt(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // a damaged page is found now, not when a session needs it
        let problems: Vec<String> = conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut q| {
                q.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| corrupt(e.to_string()))?;
        if problems.iter().any(|p| p != "ok") {
            return Err(corrupt(problems.join("; ")));
        }
        let mut store = Store { conn, path };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }

    /// A transaction that writes: it takes the database's write lock at once, so two
    /// writers wait for each other (up to the busy timeout) instead of one failing
    /// half-way with SQLITE_BUSY.
    fn write_tx(&mut self) -> Result<rusqlite::Transaction<'_>> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// A consistent copy of the whole database at `out` (which must not exist), safe while
    /// a server runs; the copy is verified before it is reported done.
    pub fn backup(&self, out: &Path) -> Result<()> {
        let text = out.to_str().ok_or_else(|| StoreError::DataDir {
            path: out.display().to_string(),
            reason: "the backup path is not UTF-8".into(),
        })?;
        if out.exists() {
            return Err(StoreError::Conflict(format!(
                "{} already exists; choose a new file for the backup",
                out.display()
            )));
        }
        self.conn.execute("VACUUM INTO ?1", [text])?;
        let copy = Connection::open(out)?;
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: out.display().to_string(),
                problem: check,
            });
        }
        Ok(())
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The data directory the database lives in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Runs `f` with commits that are not flushed to disk one by one (`synchronous =
    /// NORMAL`, write-ahead log): they become durable with the next flushed commit, which
    /// writes the log up to there. Certificates, CRLs, revocations, sessions' ends and every
    /// administrative change are flushed; the frequent records (session openings,
    /// contributions, audit notes, last-seen times) need not cost a disk flush each. A power
    /// loss can drop the unflushed tail: the database stays consistent and the audit chain
    /// a valid prefix, and no certificate is ever recorded without what led to it.
    fn unflushed<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = f(self);
        let restored = self.conn.pragma_update(None, "synchronous", "FULL");
        let out = out?;
        restored?;
        Ok(out)
    }

    // ---- CAs ----------------------------------------------------------------------

    pub fn add_ca(
        &mut self,
        ca_id: &str,
        name: &str,
        manifest_json: &str,
        holders: &[(String, u8, Option<String>)],
        note: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let exists: Option<String> = tx
            .query_row("SELECT ca_id FROM cas WHERE ca_id = ?1", [ca_id], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "CA {ca_id} is already registered"
            )));
        }
        tx.execute(
            "INSERT INTO cas (ca_id, name, manifest, added_at) VALUES (?1, ?2, ?3, ?4)",
            params![ca_id, name, manifest_json, now()],
        )?;
        for (holder, index, code) in holders {
            tx.execute(
                "INSERT INTO holders (ca_id, holder_id, share_index, enrollment_code_sha256) VALUES (?1, ?2, ?3, ?4)",
                params![ca_id, holder, index, code],
            )?;
        }
        audit::append_tx(
            &tx,
            "ca-registered",
            Some(ca_id),
            None,
            None,
            &format!("{name}; {} holders; {note}", holders.len()),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The stored manifest of CA `ca_id`, if it is registered.
    pub fn ca_manifest(&self, ca_id: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT manifest FROM cas WHERE ca_id = ?1", [ca_id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Replaces a registered CA's manifest with a reshared one (checked by the caller):
    /// holders of the old set only are forgotten, holders of both keep their enrolled
    /// token key, new holders enroll with their package's code.
    pub fn replace_share_set(
        &mut self,
        ca_id: &str,
        manifest_json: &str,
        holders: &[(String, u8, Option<String>)],
        note: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        replace_share_set_in(&tx, ca_id, manifest_json, holders, note)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces a registered CA's manifest by a new one of the same CA (a changed policy),
    /// with the audit entry `ca-policy-changed`.
    pub fn replace_manifest(&mut self, ca_id: &str, manifest_json: &str, note: &str) -> Result<()> {
        let tx = self.write_tx()?;
        let changed = tx.execute(
            "UPDATE cas SET manifest = ?2 WHERE ca_id = ?1",
            params![ca_id, manifest_json],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("CA {ca_id}")));
        }
        reshare::stale_pending_sets(&tx, ca_id)?;
        audit::append_tx(&tx, "ca-policy-changed", Some(ca_id), None, None, note)?;
        tx.commit()?;
        Ok(())
    }

    /// Ends an online `policy` session: the CA's manifest (checked by the caller) is
    /// replaced and the session marked signed in one transaction, so that neither happens
    /// without the other.
    pub fn record_policy_change(
        &mut self,
        session_id: &str,
        ca_id: &str,
        replaced_json: &str,
        manifest_json: &str,
        detail: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        // only over the manifest the change was checked against
        let changed = tx.execute(
            "UPDATE cas SET manifest = ?2 WHERE ca_id = ?1 AND manifest = ?3",
            params![ca_id, manifest_json, replaced_json],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!(
                "CA {ca_id} with the manifest the change was checked against"
            )));
        }
        reshare::stale_pending_sets(&tx, ca_id)?;
        mark_signed(&tx, session_id, detail)?;
        audit::append_tx(
            &tx,
            "ca-policy-changed",
            Some(ca_id),
            Some(session_id),
            None,
            detail,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every registered CA, in the order they were registered.
    pub fn cas(&self) -> Result<Vec<CaRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT ca_id, name, manifest, added_at FROM cas ORDER BY added_at, ca_id")?;
        let rows = stmt.query_map([], |r| {
            Ok(CaRow {
                ca_id: r.get(0)?,
                name: r.get(1)?,
                manifest: r.get(2)?,
                added_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn ca_manifests(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT ca_id, manifest FROM cas ORDER BY added_at")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    // ---- holders ------------------------------------------------------------------

    fn holder_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<HolderRow> {
        Ok(HolderRow {
            ca_id: r.get(0)?,
            holder_id: r.get(1)?,
            share_index: r.get(2)?,
            enrollment_code_sha256: r.get(3)?,
            code_used: r.get::<_, i64>(4)? != 0,
            public_key_pem: r.get(5)?,
            last_seen: r.get(6)?,
        })
    }

    pub fn holder(&self, ca_id: &str, holder_id: &str) -> Result<Option<HolderRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT ca_id, holder_id, share_index, enrollment_code_sha256, code_used, public_key_pem, last_seen \
                 FROM holders WHERE ca_id = ?1 AND holder_id = ?2",
                [ca_id, holder_id],
                Self::holder_from,
            )
            .optional()?)
    }

    pub fn holders(&self, ca_id: &str) -> Result<Vec<HolderRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT ca_id, holder_id, share_index, enrollment_code_sha256, code_used, public_key_pem, last_seen \
             FROM holders WHERE ca_id = ?1 ORDER BY share_index",
        )?;
        let rows = stmt.query_map([ca_id], Self::holder_from)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Registers a holder's token key, consuming the one-time code (checked by the caller).
    pub fn enroll(&mut self, ca_id: &str, holder_id: &str, public_key_pem: &str) -> Result<()> {
        let tx = self.write_tx()?;
        let changed = tx.execute(
            "UPDATE holders SET code_used = 1, public_key_pem = ?3, enrolled_at = ?4 \
             WHERE ca_id = ?1 AND holder_id = ?2 AND code_used = 0",
            params![ca_id, holder_id, public_key_pem, now()],
        )?;
        if changed != 1 {
            return Err(StoreError::Conflict(
                "the enrollment code was already used".into(),
            ));
        }
        audit::append_tx(
            &tx,
            "holder-enrolled",
            Some(ca_id),
            None,
            Some(holder_id),
            &format!(
                "key SHA-256 {}",
                crate::pki::sha256_hex(public_key_pem.as_bytes())
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Operator action: forget the holder's key and set a new one-time code (hash).
    pub fn reset_holder(&mut self, ca_id: &str, holder_id: &str, code_sha256: &str) -> Result<()> {
        let tx = self.write_tx()?;
        let changed = tx.execute(
            "UPDATE holders SET code_used = 0, public_key_pem = NULL, enrollment_code_sha256 = ?3 WHERE ca_id = ?1 AND holder_id = ?2",
            params![ca_id, holder_id, code_sha256],
        )?;
        if changed != 1 {
            return Err(StoreError::NotFound(format!(
                "holder {holder_id} of CA {ca_id}"
            )));
        }
        audit::append_tx(
            &tx,
            "holder-reset",
            Some(ca_id),
            None,
            Some(holder_id),
            "new enrollment code issued by an operator",
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn touch_holder(&mut self, ca_id: &str, holder_id: &str) -> Result<()> {
        self.unflushed(|s| {
            s.conn.execute(
                "UPDATE holders SET last_seen = ?3 WHERE ca_id = ?1 AND holder_id = ?2",
                params![ca_id, holder_id, now()],
            )?;
            Ok(())
        })
    }

    /// Writes agents' last-seen times (kept in the server's memory between writes), in
    /// one transaction.
    pub fn touch_holders(&mut self, seen: &[(String, String, i64)]) -> Result<()> {
        self.unflushed(|s| s.touch_holders_now(seen))
    }

    fn touch_holders_now(&mut self, seen: &[(String, String, i64)]) -> Result<()> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx.prepare(
                "UPDATE holders SET last_seen = MAX(COALESCE(last_seen, 0), ?3) WHERE ca_id = ?1 AND holder_id = ?2",
            )?;
            for (ca_id, holder_id, at) in seen {
                stmt.execute(params![ca_id, holder_id, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    // ---- operators' API tokens ----------------------------------------------------

    pub fn add_api_token(&mut self, name: &str, token_sha256: &str, role: ApiRole) -> Result<()> {
        let tx = self.write_tx()?;
        let exists: Option<String> = tx
            .query_row("SELECT name FROM api_tokens WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "an API token named {name:?} exists"
            )));
        }
        tx.execute(
            "INSERT INTO api_tokens (name, token_sha256, created_at, role) VALUES (?1, ?2, ?3, ?4)",
            params![name, token_sha256, now(), role.as_str()],
        )?;
        audit::append_tx(
            &tx,
            "api-token-created",
            None,
            None,
            None,
            &format!("{name} (role {})", role.as_str()),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Revokes an operator's API token; it stops working at once, even on a running server.
    pub fn revoke_api_token(&mut self, name: &str) -> Result<()> {
        let tx = self.write_tx()?;
        let changed = tx.execute(
            "UPDATE api_tokens SET revoked = 1, revoked_at = ?2 WHERE name = ?1 AND revoked = 0",
            params![name, now()],
        )?;
        if changed != 1 {
            return Err(StoreError::NotFound(format!(
                "an active API token named {name:?}"
            )));
        }
        audit::append_tx(&tx, "api-token-revoked", None, None, None, name)?;
        tx.commit()?;
        Ok(())
    }

    /// Every API token, revoked ones too, oldest first (names, roles and times; no hash).
    pub fn api_tokens(&self) -> Result<Vec<ApiTokenRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, role, created_at, revoked, revoked_at FROM api_tokens ORDER BY created_at, name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ApiTokenRow {
                name: r.get(0)?,
                role: r.get(1)?,
                created_at: r.get(2)?,
                revoked: r.get::<_, i64>(3)? != 0,
                revoked_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// The operator name owning a token hash, if any.
    pub fn operator_for(&self, token_sha256: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name FROM api_tokens WHERE token_sha256 = ?1 AND revoked = 0",
                [token_sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The role of an operator's active API token, if there is one.
    pub fn api_role(&self, name: &str) -> Result<Option<ApiRole>> {
        let role: Option<String> = self
            .conn
            .query_row(
                "SELECT role FROM api_tokens WHERE name = ?1 AND revoked = 0",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(role.map(|r| ApiRole::parse(&r).unwrap_or(ApiRole::Operator)))
    }

    // ---- sessions -----------------------------------------------------------------

    pub fn insert_session(&mut self, s: &SessionRow) -> Result<()> {
        self.unflushed(|store| store.insert_session_now(s))
    }

    fn insert_session_now(&mut self, s: &SessionRow) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO sessions (session_id, ca_id, kind, state, requester, request, request_sha256, profile, days, \
             serial, reason, nonce, recipient, created_at, expires_at, detail, certificate_view, tbs) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                s.session_id, s.ca_id, s.kind, s.state, s.requester, s.request, s.request_sha256, s.profile, s.days,
                s.serial, s.reason, s.nonce, s.recipient, s.created_at, s.expires_at, s.detail, s.certificate_view,
                s.tbs
            ],
        )?;
        audit::append_tx(
            &tx,
            "session-opened",
            Some(&s.ca_id),
            Some(&s.session_id),
            None,
            &format!(
                "{} by {}; request SHA-256 {}; expires {}",
                s.kind, s.requester, s.request_sha256, s.expires_at
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn session_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
        Ok(SessionRow {
            session_id: r.get(0)?,
            ca_id: r.get(1)?,
            kind: r.get(2)?,
            state: r.get(3)?,
            requester: r.get(4)?,
            request: r.get(5)?,
            request_sha256: r.get(6)?,
            profile: r.get(7)?,
            days: r.get(8)?,
            serial: r.get(9)?,
            reason: r.get(10)?,
            nonce: r.get(11)?,
            recipient: r.get(12)?,
            created_at: r.get(13)?,
            expires_at: r.get(14)?,
            detail: r.get(15)?,
            certificate_view: r.get(16)?,
            tbs: r.get(17)?,
        })
    }

    const SESSION_COLUMNS: &'static str = "session_id, ca_id, kind, state, requester, request, request_sha256, \
        profile, days, serial, reason, nonce, recipient, created_at, expires_at, detail, certificate_view, tbs";

    pub fn session(&self, session_id: &str) -> Result<Option<SessionRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {} FROM sessions WHERE session_id = ?1",
                    Self::SESSION_COLUMNS
                ),
                [session_id],
                Self::session_from,
            )
            .optional()?)
    }

    /// Moves a session out of `waiting`; returns false if it was not waiting any more.
    pub fn finish_session(
        &mut self,
        session_id: &str,
        state: &str,
        detail: &str,
        audit_event: &str,
    ) -> Result<bool> {
        let tx = self.write_tx()?;
        let row: Option<(String, String)> = tx
            .query_row(
                "SELECT ca_id, state FROM sessions WHERE session_id = ?1",
                [session_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((ca_id, current)) = row else {
            return Err(StoreError::NotFound(format!("session {session_id}")));
        };
        if current != "waiting" {
            return Ok(false);
        }
        tx.execute(
            "UPDATE sessions SET state = ?2, detail = ?3 WHERE session_id = ?1",
            params![session_id, state, detail],
        )?;
        audit::append_tx(
            &tx,
            audit_event,
            Some(&ca_id),
            Some(session_id),
            None,
            detail,
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// At start-up: sessions left `waiting` by a previous run lost their in-memory secrets.
    pub fn abort_open_sessions(&mut self) -> Result<usize> {
        self.abort_sessions_because(
            "the server restarted; the session's secrets were in memory only",
        )
    }

    /// Sessions still `waiting` whose time ran out at `now`.
    pub fn overdue_sessions(&self, now: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT session_id FROM sessions WHERE state = 'waiting' AND expires_at <= ?1",
        )?;
        let rows = stmt.query_map([now], |r| r.get(0))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Ends every session still waiting as `aborted`, with `why`; returns how many.
    pub fn abort_sessions_because(&mut self, why: &str) -> Result<usize> {
        let open: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT session_id FROM sessions WHERE state = 'waiting'")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<std::result::Result<_, _>>()?
        };
        for id in &open {
            self.finish_session(id, "aborted", why, "session-aborted")?;
        }
        Ok(open.len())
    }

    pub fn record_event(
        &mut self,
        session_id: &str,
        ca_id: &str,
        holder_id: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        self.unflushed(|s| s.record_event_now(session_id, ca_id, holder_id, outcome, detail))
    }

    fn record_event_now(
        &mut self,
        session_id: &str,
        ca_id: &str,
        holder_id: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO session_events (session_id, holder_id, outcome, detail, at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![session_id, holder_id, outcome, detail, now()],
        )?;
        audit::append_tx(
            &tx,
            &format!("contribution-{outcome}"),
            Some(ca_id),
            Some(session_id),
            Some(holder_id),
            detail,
        )?;
        tx.commit()?;
        Ok(())
    }

    /// (holder, outcome, detail) of a session, in order.
    /// A session's answers in order: (holder, outcome, detail, when).
    pub fn events(&self, session_id: &str) -> Result<Vec<(String, String, String, i64)>> {
        let mut stmt = self.conn.prepare("SELECT holder_id, outcome, detail, at FROM session_events WHERE session_id = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([session_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    // ---- certificates, revocations, CRLs ------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn record_certificate(
        &mut self,
        session_id: &str,
        ca_id: &str,
        certificate: &NewCertificate,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        batch::insert_certificate(&tx, session_id, ca_id, certificate, now())?;
        let serial = &certificate.serial;
        mark_signed(&tx, session_id, &format!("certificate {serial}"))?;
        audit::append_tx(
            &tx,
            "certificate-issued",
            Some(ca_id),
            Some(session_id),
            None,
            &format!("serial {serial}; {}", certificate.subject),
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn certificate_for_session(&self, session_id: &str) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT serial, pem FROM certificates WHERE session_id = ?1",
                [session_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    pub fn certificate_known(&self, ca_id: &str, serial: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM certificates WHERE ca_id = ?1 AND serial = ?2",
                [ca_id, serial],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// (serial, reason, revoked_at) of a CA.
    pub fn revocations(&self, ca_id: &str) -> Result<Vec<(String, String, i64)>> {
        let mut stmt = self.conn.prepare("SELECT serial, reason, revoked_at FROM revocations WHERE ca_id = ?1 ORDER BY revoked_at")?;
        let rows = stmt.query_map([ca_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub fn next_crl_number(&self, ca_id: &str) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM crls WHERE ca_id = ?1",
            [ca_id],
            |r| r.get(0),
        )?)
    }

    /// Records a signed CRL (and, for a revocation session, the revocation) atomically.
    #[allow(clippy::too_many_arguments)]
    pub fn record_crl(
        &mut self,
        session_id: &str,
        ca_id: &str,
        number: i64,
        der: &[u8],
        pem: &str,
        revoked: Option<(&str, &str, i64)>,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        if let Some((serial, reason, at)) = revoked {
            tx.execute(
                "INSERT INTO revocations (serial, ca_id, reason, revoked_at, session_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![serial, ca_id, reason, at, session_id],
            )?;
            audit::append_tx(
                &tx,
                "certificate-revoked",
                Some(ca_id),
                Some(session_id),
                None,
                &format!("serial {serial}; reason {reason}"),
            )?;
        }
        tx.execute(
            "INSERT INTO crls (ca_id, number, der, pem, signed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ca_id, number, der, pem, now()],
        )?;
        mark_signed(&tx, session_id, &format!("CRL {number}"))?;
        audit::append_tx(
            &tx,
            "crl-signed",
            Some(ca_id),
            Some(session_id),
            None,
            &format!("CRL number {number}"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The latest CRL of a CA: (DER, PEM).
    pub fn latest_crl(&self, ca_id: &str) -> Result<Option<(Vec<u8>, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT der, pem FROM crls WHERE ca_id = ?1 ORDER BY number DESC LIMIT 1",
                [ca_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The revocation of one certificate: (reason, revoked_at).
    pub fn revocation(&self, ca_id: &str, serial: &str) -> Result<Option<(String, i64)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT reason, revoked_at FROM revocations WHERE ca_id = ?1 AND serial = ?2",
                [ca_id, serial],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    // ---- publication: the CA's URLs and its OCSP responder ---------------------------

    /// Sets the base URL written into a CA's certificates (and whether they name its OCSP
    /// responder); `by` names who did it, for the audit log.
    pub fn set_ca_urls(
        &mut self,
        ca_id: &str,
        public_url: &str,
        ocsp: bool,
        ocsp_require_signed: bool,
        by: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let known = tx
            .query_row("SELECT 1 FROM cas WHERE ca_id = ?1", [ca_id], |_| Ok(()))
            .optional()?
            .is_some();
        if !known {
            return Err(StoreError::NotFound(format!("CA {ca_id}")));
        }
        tx.execute(
            "INSERT INTO ca_urls (ca_id, public_url, ocsp, ocsp_require_signed, set_at, set_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (ca_id) DO UPDATE SET public_url = ?2, ocsp = ?3, ocsp_require_signed = ?4,
             set_at = ?5, set_by = ?6",
            params![ca_id, public_url, ocsp, ocsp_require_signed, now(), by],
        )?;
        audit::append_tx(
            &tx,
            "ca-urls-set",
            Some(ca_id),
            None,
            None,
            &format!(
                "public URL {public_url}; OCSP {}{}; by {by}",
                if ocsp { "on" } else { "off" },
                if ocsp_require_signed {
                    " (signed requests only)"
                } else {
                    ""
                }
            ),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A CA's base URL and whether its certificates name the OCSP responder.
    pub fn ca_urls(&self, ca_id: &str) -> Result<Option<(String, bool)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT public_url, ocsp FROM ca_urls WHERE ca_id = ?1",
                [ca_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Whether the CA's OCSP responder answers signed requests only.
    pub fn ocsp_requires_signature(&self, ca_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT ocsp_require_signed FROM ca_urls WHERE ca_id = ?1",
                [ca_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Records a responder key waiting for the certificate session `session_id` asks for.
    pub fn add_ocsp_responder(
        &mut self,
        session_id: &str,
        ca_id: &str,
        key_file: &str,
        spki_sha256: &str,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO ocsp_responders (session_id, ca_id, key_file, spki_sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![session_id, ca_id, key_file, spki_sha256, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The responder key a session was opened for: (CA, key file, SPKI SHA-256).
    pub fn ocsp_responder_for_session(
        &self,
        session_id: &str,
    ) -> Result<Option<(String, String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT ca_id, key_file, spki_sha256 FROM ocsp_responders WHERE session_id = ?1",
                [session_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?)
    }

    /// Installs the signed responder certificate: from now on it answers for its CA.
    pub fn install_ocsp_responder(
        &mut self,
        session_id: &str,
        certificate_der: &[u8],
        not_after: i64,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        let ca_id: String = tx
            .query_row(
                "SELECT ca_id FROM ocsp_responders WHERE session_id = ?1",
                [session_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| {
                StoreError::NotFound(format!("OCSP responder of session {session_id}"))
            })?;
        tx.execute(
            "UPDATE ocsp_responders SET certificate_der = ?2, not_after = ?3 WHERE session_id = ?1",
            params![session_id, certificate_der, not_after],
        )?;
        audit::append_tx(
            &tx,
            "ocsp-responder-installed",
            Some(&ca_id),
            Some(session_id),
            None,
            "the delegated OCSP responder's certificate is installed; it answers from now on",
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Responder keys no answer will ever be signed with: their session ended without a
    /// certificate, or their certificate expired before `at`. Returns (session, key file).
    pub fn useless_ocsp_keys(&self, at: i64) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare(
            "SELECT r.session_id, r.key_file FROM ocsp_responders r JOIN sessions s USING (session_id)
             WHERE (r.certificate_der IS NULL AND s.state != 'waiting') OR r.not_after <= ?1",
        )?;
        let rows = stmt.query_map([at], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// Forgets a responder whose key file was deleted.
    pub fn forget_ocsp_responder(&mut self, session_id: &str) -> Result<()> {
        self.conn.execute(
            "DELETE FROM ocsp_responders WHERE session_id = ?1",
            [session_id],
        )?;
        Ok(())
    }

    /// The CA's current OCSP responder: (key file, certificate DER), the newest installed
    /// one still valid at `at`.
    pub fn ocsp_responder(&self, ca_id: &str, at: i64) -> Result<Option<(String, Vec<u8>)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT key_file, certificate_der FROM ocsp_responders
                 WHERE ca_id = ?1 AND certificate_der IS NOT NULL AND not_after > ?2
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                params![ca_id, at],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    // ---- audit ----------------------------------------------------------------------

    /// Appends an audit entry on its own (not flushed on its own: see `unflushed`).
    pub fn audit(
        &mut self,
        event: &str,
        ca_id: Option<&str>,
        session_id: Option<&str>,
        holder_id: Option<&str>,
        detail: &str,
    ) -> Result<()> {
        self.unflushed(|s| {
            let tx = s.write_tx()?;
            audit::append_tx(&tx, event, ca_id, session_id, holder_id, detail)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>> {
        audit::entries(&self.conn)
    }
}

/// [`Store::replace_share_set`] inside a transaction.
fn replace_share_set_in(
    tx: &rusqlite::Transaction<'_>,
    ca_id: &str,
    manifest_json: &str,
    holders: &[(String, u8, Option<String>)],
    note: &str,
) -> Result<()> {
    let changed = tx.execute(
        "UPDATE cas SET manifest = ?2 WHERE ca_id = ?1",
        params![ca_id, manifest_json],
    )?;
    if changed != 1 {
        return Err(StoreError::Conflict(format!(
            "CA {ca_id} is not registered"
        )));
    }
    // a set a reshare left pending no longer follows the registered manifest
    reshare::stale_pending_sets(tx, ca_id)?;
    let kept: Vec<&str> = holders.iter().map(|(h, _, _)| h.as_str()).collect();
    let mut removed = Vec::new();
    for (holder,) in holder_ids_in(tx, ca_id)? {
        if !kept.contains(&holder.as_str()) {
            removed.push(holder);
        }
    }
    for holder in &removed {
        tx.execute(
            "DELETE FROM holders WHERE ca_id = ?1 AND holder_id = ?2",
            params![ca_id, holder],
        )?;
    }
    for (holder, index, code) in holders {
        // a holder of both sets keeps its enrolled token key (deploy keeps it on the
        // token); one not enrolled yet takes the new package's code
        let updated = tx.execute(
            "UPDATE holders SET share_index = ?3, enrollment_code_sha256 = CASE WHEN \
             public_key_pem IS NULL THEN ?4 ELSE enrollment_code_sha256 END, code_used = \
             CASE WHEN public_key_pem IS NULL THEN 0 ELSE code_used END \
             WHERE ca_id = ?1 AND holder_id = ?2",
            params![ca_id, holder, index, code],
        )?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO holders (ca_id, holder_id, share_index, enrollment_code_sha256) VALUES (?1, ?2, ?3, ?4)",
                params![ca_id, holder, index, code],
            )?;
        }
    }
    audit::append_tx(
        tx,
        "ca-reshared",
        Some(ca_id),
        None,
        None,
        &format!(
            "{} holders (removed: {}); {note}",
            holders.len(),
            if removed.is_empty() {
                "none".to_owned()
            } else {
                removed.join(", ")
            }
        ),
    )?;
    Ok(())
}

/// The holder ids of CA `ca_id`, inside a transaction.
fn holder_ids_in(tx: &rusqlite::Transaction<'_>, ca_id: &str) -> Result<Vec<(String,)>> {
    let mut stmt = tx.prepare("SELECT holder_id FROM holders WHERE ca_id = ?1")?;
    let rows = stmt.query_map([ca_id], |r| Ok((r.get(0)?,)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}
