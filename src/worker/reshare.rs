//! The worker's `reshare` job: the shares it holds rebuild the CA key, and the offline
//! reshare's own code ([`crate::reshare::reshare`]) wraps it under a new KEK for the new
//! holders, each package sealed to its holder's age recipient. Nothing secret leaves the
//! worker in clear.

use crate::manifest::{Manifest, VerifiedManifest};
use crate::proto::{RESHARE_FORMAT, ResharePackage, ReshareResult, ReshareStatement};
use crate::reshare::{self, ReshareRequest};
use crate::sss::Share;

/// Runs the reshare the holders approved (`request`, the statement's exact text) with
/// `shares` (sent by `holders`, same order); returns the JSON of the [`ReshareResult`].
pub(super) fn reshare(
    current_manifest: &Manifest,
    current: &VerifiedManifest,
    shares: Vec<Share>,
    holders: Vec<String>,
    request: &str,
) -> Result<Vec<u8>, String> {
    let statement: ReshareStatement = serde_json::from_str(request)
        .map_err(|e| format!("the reshare request is malformed: {e}"))?;
    if statement.format != RESHARE_FORMAT
        || statement.ca_id != current.ca_id().0
        || statement.current_set_id != current.body.share_set.id().0
        || statement.supersedes != current_manifest.digest()
    {
        return Err(
            "the reshare request is not for this CA's manifest as the session opened it".into(),
        );
    }
    let request = ReshareRequest::online(current, &statement).map_err(|e| e.to_string())?;
    let named: Vec<(String, Share)> = holders
        .into_iter()
        .zip(shares)
        .map(|(holder, share)| (format!("the share of {holder}"), share))
        .collect();
    let out = reshare::reshare(
        current_manifest,
        current,
        &named,
        &request,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())?;
    drop(named);
    let mut packages = Vec::with_capacity(out.output.shares.len());
    for sealed in &out.output.shares {
        if sealed.passphrase.is_some() || sealed.package.is_none() {
            return Err(format!(
                "the new share of {} is not a package sealed to its recipient",
                sealed.nitrokey_id
            ));
        }
        packages.push(ResharePackage {
            holder_id: sealed.nitrokey_id.to_string(),
            file_name: sealed.file_name.clone(),
            armored: sealed.armored.clone(),
            fingerprint: sealed.fingerprint.clone(),
        });
    }
    let result = ReshareResult {
        manifest_json: out.output.manifest.to_json(),
        enrollment_json: out
            .output
            .enrollment_json()
            .ok_or("the reshare made no enrollment records")?,
        record_json: out.record.to_json(),
        log: out.output.log.clone(),
        packages,
    };
    serde_json::to_vec(&result).map_err(|e| e.to_string())
}
