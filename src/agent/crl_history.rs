//! What a threshold CA's CRLs have said, as this agent approved them: the highest CRL
//! number and every serial revoked. A threshold server holds no key, so the holders'
//! approval is all that stands between a compromised server and a CRL that forgets a
//! revocation; an agent refuses a CRL whose number is lower than one it approved or that
//! drops a serial it has seen revoked.

use super::AgentError;
use crate::pki::CrlContents;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

const FORMAT: &str = "nkpki crl history v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlHistory {
    format: String,
    ca_id: String,
    /// The highest CRL number approved (0: none yet).
    highest_number: u64,
    /// Every serial (lower-case hex) a CRL approved here has listed.
    revoked: BTreeSet<String>,
}

impl CrlHistory {
    /// The history kept at `path` for `ca_id`, or an empty one when there is no file yet.
    /// A file that does not read, or that belongs to another CA, is an error: silently
    /// starting over would forget what it guards.
    pub fn load(path: &Path, ca_id: &str) -> Result<CrlHistory, AgentError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CrlHistory {
                    format: FORMAT.into(),
                    ca_id: ca_id.into(),
                    highest_number: 0,
                    revoked: BTreeSet::new(),
                });
            }
            Err(e) => {
                return Err(AgentError::Config(format!(
                    "cannot read the CRL history {}: {e}",
                    path.display()
                )));
            }
        };
        let history: CrlHistory = serde_json::from_slice(&text).map_err(|e| {
            AgentError::Config(format!(
                "the CRL history {} is unreadable: {e} (hint: restore it from a backup; \
                 deleting it makes this agent trust the next CRL it is shown)",
                path.display()
            ))
        })?;
        if history.format != FORMAT || history.ca_id != ca_id {
            return Err(AgentError::Config(format!(
                "the CRL history {} is not this CA's ({}, CA {})",
                path.display(),
                history.format,
                history.ca_id
            )));
        }
        Ok(history)
    }

    /// Why `crl` would roll this CA's revocations back, if it would.
    pub fn refuses(&self, crl: &CrlContents) -> Option<String> {
        // the same number again is allowed: a CRL session that others declined or that
        // expired leaves its number unused, and the server offers it once more
        if crl.number < self.highest_number {
            return Some(format!(
                "the to-be-signed CRL is number {}, but this agent already approved CRL {}",
                crl.number, self.highest_number
            ));
        }
        let listed: BTreeSet<&str> = crl.revoked.iter().map(|r| r.serial_hex.as_str()).collect();
        let dropped: Vec<&str> = self
            .revoked
            .iter()
            .map(String::as_str)
            .filter(|serial| !listed.contains(serial))
            .collect();
        (!dropped.is_empty()).then(|| {
            format!(
                "the to-be-signed CRL no longer lists serial(s) {} revoked in a CRL this agent \
                 approved",
                dropped.join(", ")
            )
        })
    }

    /// Records `crl` as approved and writes the history to `path` (replaced atomically).
    pub fn record(&mut self, crl: &CrlContents, path: &Path) -> Result<(), AgentError> {
        self.highest_number = self.highest_number.max(crl.number);
        self.revoked
            .extend(crl.revoked.iter().map(|r| r.serial_hex.clone()));
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| AgentError::Config(format!("the CRL history: {e}")))?;
        crate::fsx::write_new(path, &json, 0o600, true).map_err(|e| {
            AgentError::Config(format!(
                "cannot write the CRL history {}: {e}",
                path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::pki::Revoked;

    fn crl(number: u64, serials: &[&str]) -> CrlContents {
        let now = time::OffsetDateTime::now_utc();
        CrlContents {
            number,
            this_update: now,
            next_update: None,
            revoked: serials
                .iter()
                .map(|s| Revoked {
                    serial_hex: (*s).into(),
                    reason: "unspecified".into(),
                    revoked_at: now.unix_timestamp(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_crl_must_grow_in_number_and_keep_every_serial_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl-history.json");
        let mut history = CrlHistory::load(&path, "ca1").unwrap();
        assert_eq!(history.refuses(&crl(1, &[])), None);
        history.record(&crl(3, &["0a", "0b"]), &path).unwrap();

        let history = CrlHistory::load(&path, "ca1").unwrap();
        let why = history.refuses(&crl(2, &["0a", "0b"])).unwrap();
        assert!(why.contains("already approved CRL 3"), "{why}");
        // the number of a CRL whose session never completed comes back
        assert_eq!(history.refuses(&crl(3, &["0a", "0b"])), None);
        let why = history.refuses(&crl(4, &["0b", "0c"])).unwrap();
        assert!(why.contains("no longer lists serial(s) 0a"), "{why}");
        assert_eq!(history.refuses(&crl(4, &["0a", "0b", "0c"])), None);
    }

    #[test]
    fn a_history_of_another_ca_or_unreadable_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl-history.json");
        let mut history = CrlHistory::load(&path, "ca1").unwrap();
        history.record(&crl(1, &["0a"]), &path).unwrap();
        let err = CrlHistory::load(&path, "ca2").unwrap_err().to_string();
        assert!(err.contains("not this CA's"), "{err}");
        std::fs::write(&path, "{").unwrap();
        let err = CrlHistory::load(&path, "ca1").unwrap_err().to_string();
        assert!(err.contains("unreadable"), "{err}");
    }
}
