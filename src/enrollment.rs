//! `enrollment.json`: the server's record of each holder's one-time enrollment code (its
//! SHA-256). Each entry is signed with that holder's share, whose public key anyone derives
//! from the manifest's Feldman commitments, so an entry edited on its way to the server (to
//! enroll an attacker's agent key as a holder) is refused at registration.

use crate::manifest::VerifiedManifest;
use crate::sss::{SetId, Share, SssError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: &str = "nkpki-enrollment/2";
const FORMAT_V1: &str = "nkpki-enrollment/1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollmentError {
    #[error("enrollment.json is malformed: {0}")]
    Malformed(String),
    #[error(
        "enrollment.json format {FORMAT_V1:?} (nkpki 0.1.0) is not accepted: its entries are not \
         signed\nhint: re-run the ceremony or `nkpki package` with this nkpki"
    )]
    Version1,
    #[error("enrollment.json belongs to CA {found}, not to CA {expected}")]
    OtherCa { found: String, expected: String },
    #[error("enrollment.json names {0:?}, who holds no share of this CA")]
    UnknownHolder(String),
    #[error(
        "enrollment.json's entry for {holder} is not signed with {holder}'s share: it was \
         edited after packaging"
    )]
    BadSignature { holder: String },
    #[error("enrollment entry for share {index}: {reason}")]
    Share { index: u8, reason: SssError },
}

/// One holder's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentEntry {
    /// SHA-256 (hex) of the holder's one-time enrollment code.
    pub enrollment_code_sha256: String,
    /// ECDSA P-256 (DER, base64) over [`message`], made with the holder's share.
    pub signature: String,
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentFile {
    pub format: String,
    pub ca_id: String,
    /// By Nitrokey id.
    pub holders: BTreeMap<String, EnrollmentEntry>,
}

/// What a holder's share signs: domain, CA, holder and the code's hash, one per line.
fn message(ca_id: &str, holder_id: &str, code_sha256: &str) -> Vec<u8> {
    format!("nkpki enrollment v2\n{ca_id}\n{holder_id}\n{code_sha256}\n").into_bytes()
}

/// Signs a holder's enrollment entry with its share (already checked against `manifest`).
pub fn sign_entry(
    manifest: &VerifiedManifest,
    share: &Share,
    code_sha256: &str,
) -> Result<(String, EnrollmentEntry), EnrollmentError> {
    let holder = manifest
        .holder(share.index)
        .ok_or_else(|| EnrollmentError::UnknownHolder(format!("share {}", share.index)))?;
    let msg = message(&manifest.ca_id().0, &holder.nitrokey_id, code_sha256);
    let signature = manifest
        .body
        .share_set
        .sign_with_share(share, &msg)
        .map_err(|reason| EnrollmentError::Share {
            index: share.index,
            reason,
        })?;
    Ok((
        holder.nitrokey_id.clone(),
        EnrollmentEntry {
            enrollment_code_sha256: code_sha256.to_owned(),
            signature: B64.encode(signature),
        },
    ))
}

impl EnrollmentFile {
    /// An empty file for CA `ca_id`.
    pub fn new(ca_id: &SetId) -> Self {
        EnrollmentFile {
            format: FORMAT.to_owned(),
            ca_id: ca_id.0.clone(),
            holders: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses and checks every entry against `manifest`: same CA, known holder, code hash
    /// signed with that holder's share.
    pub fn verify(text: &str, manifest: &VerifiedManifest) -> Result<Self, EnrollmentError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EnrollmentError::Malformed(e.to_string()))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(FORMAT_V1) => return Err(EnrollmentError::Version1),
            other => {
                return Err(EnrollmentError::Malformed(format!(
                    "format {other:?} (expected {FORMAT:?})"
                )));
            }
        }
        let file: EnrollmentFile =
            serde_json::from_value(value).map_err(|e| EnrollmentError::Malformed(e.to_string()))?;
        let expected = &manifest.ca_id().0;
        if &file.ca_id != expected {
            return Err(EnrollmentError::OtherCa {
                found: file.ca_id,
                expected: expected.clone(),
            });
        }
        for (holder_id, entry) in &file.holders {
            let holder = manifest
                .holder_by_id(holder_id)
                .ok_or_else(|| EnrollmentError::UnknownHolder(holder_id.clone()))?;
            let code = &entry.enrollment_code_sha256;
            if code.len() != 64 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(EnrollmentError::Malformed(format!(
                    "{holder_id}'s enrollment_code_sha256 is not 64 hex digits"
                )));
            }
            let bad = || EnrollmentError::BadSignature {
                holder: holder_id.clone(),
            };
            let signature = B64.decode(&entry.signature).map_err(|_| bad())?;
            manifest
                .body
                .share_set
                .verify_share_signature(
                    holder.index,
                    &message(expected, holder_id, code),
                    &signature,
                )
                .map_err(|_| bad())?;
        }
        Ok(file)
    }
}
