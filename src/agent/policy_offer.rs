//! A `policy` session as the holder's agent sees it, and the manifests it adopts: the new
//! manifest body is recomputed from this holder's own manifest and the offered policy (a
//! server that slips in any other change is refused), the holder is shown the policy
//! before and after, and a newer manifest the server registers is adopted only if it is
//! this CA's, signed by its key, with the same shares and a higher policy revision.

use super::{AgentError, Approving};
use crate::client::Client;
use crate::manifest::{Manifest, ManifestBody, VerifiedManifest};
use crate::pki;
use crate::policy::{self, Policy, Verdict};
use crate::proto::{API, SessionOffer, SigningMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::Path;

fn refused(why: impl Into<String>) -> AgentError {
    AgentError::Refused(why.into())
}

/// The manifest body a `policy` offer asks to sign (its `request`), checked to be exactly
/// this holder's manifest with the offered policy and the next policy revision, in its
/// signed form, and with a policy that fits this CA.
pub fn check_body(request: &str, manifest: &VerifiedManifest) -> Result<ManifestBody, AgentError> {
    let offered: ManifestBody = serde_json::from_str(request)
        .map_err(|e| refused(format!("the offered manifest body is unreadable: {e}")))?;
    if let Some(part) = manifest.body.differs_beyond_policy(&offered) {
        return Err(refused(format!(
            "the server's new manifest changes the {part} of this holder's manifest, not only \
             its policy: refused"
        )));
    }
    let expected = manifest.body.with_policy(offered.policy.clone())?;
    if offered.policy_revision != expected.policy_revision {
        return Err(refused(format!(
            "the server's new manifest is policy revision {}, but this holder's manifest is at \
             revision {}: the next is {} (hint: if the server has a newer manifest, this agent \
             adopts it at its next poll)",
            offered.policy_revision, manifest.body.policy_revision, expected.policy_revision
        )));
    }
    if offered != expected {
        return Err(refused(
            "the server's new manifest is not this holder's manifest with the offered policy",
        ));
    }
    if offered.signed_bytes()? != request.as_bytes() {
        return Err(refused(
            "the offered manifest body is not in its signed form (compact JSON)",
        ));
    }
    if offered.policy == manifest.body.policy {
        return Err(refused(
            "the offered policy is the current one: nothing changes",
        ));
    }
    if let Some(p) = &offered.policy {
        p.check_for_ca(manifest.threshold(), &holder_ids(manifest))
            .map_err(|e| refused(format!("the offered policy does not fit this CA: {e}")))?;
    }
    Ok(offered)
}

fn holder_ids(manifest: &VerifiedManifest) -> Vec<String> {
    manifest
        .body
        .holders
        .iter()
        .map(|h| h.nitrokey_id.clone())
        .collect()
}

/// What the holder approves in a `policy` session: the digest of the new manifest body and,
/// in threshold mode, those exact bytes to make a signature share of.
pub(super) fn recompute(
    offer: &SessionOffer,
    manifest: &VerifiedManifest,
) -> Result<Approving, AgentError> {
    check_body(&offer.request, manifest)?;
    if offer.summary.profile != "policy" || offer.summary.days != 0 {
        return Err(refused("the offer's terms are not a policy change's"));
    }
    let bytes = offer.request.as_bytes();
    let tbs = match offer.mode {
        SigningMode::Reconstruct => None,
        SigningMode::Threshold => {
            let text = offer
                .tbs
                .as_deref()
                .ok_or_else(|| refused("a threshold offer without to-be-signed bytes"))?;
            let tbs = B64
                .decode(text)
                .map_err(|e| refused(format!("the to-be-signed bytes are not base64: {e}")))?;
            if tbs != bytes {
                return Err(refused(
                    "the to-be-signed bytes are not the offered manifest body",
                ));
            }
            Some(tbs)
        }
    };
    Ok(Approving {
        request_sha256: pki::sha256_hex(bytes),
        certificate: None,
        tbs,
        crl: None,
        batch: Vec::new(),
    })
}

/// Who must approve the change, by this holder's own manifest (the server's rule is the
/// same function of the same policy).
pub fn verdict(manifest: &VerifiedManifest) -> Verdict {
    policy::change_verdict(manifest.body.policy.as_ref(), manifest.threshold())
}

/// A policy as `section.key = value` lines, one per rule, sorted (empty: no policy).
fn rules(policy: Option<&Policy>) -> Vec<String> {
    let Some(value) = policy.and_then(|p| serde_json::to_value(p).ok()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(sections) = value.as_object() {
        for (section, rules) in sections {
            match rules.as_object() {
                Some(rules) => {
                    for (k, v) in rules {
                        out.push(format!("{section}.{k} = {v}"));
                    }
                }
                None => out.push(format!("{section} = {rules}")),
            }
        }
    }
    out.sort();
    out
}

/// The change as the holder is shown it: revisions, then every rule removed (`-`), added
/// (`+`) or kept, old policy against new.
pub fn describe(offer: &SessionOffer, manifest: &VerifiedManifest) -> Vec<String> {
    let Ok(offered) = serde_json::from_str::<ManifestBody>(&offer.request) else {
        return vec!["(the offered manifest body is unreadable)".into()];
    };
    let old = rules(manifest.body.policy.as_ref());
    let new = rules(offered.policy.as_ref());
    let mut lines = vec![format!(
        "policy revision {} -> {}{}",
        manifest.body.policy_revision,
        offered.policy_revision,
        match (&manifest.body.policy, &offered.policy) {
            (None, Some(_)) => " (a first policy)",
            (Some(_), None) => " (the policy is REMOVED: M approvals, no rule)",
            _ => "",
        }
    )];
    for rule in &old {
        if !new.contains(rule) {
            lines.push(format!("- {rule}"));
        }
    }
    for rule in &new {
        if !old.contains(rule) {
            lines.push(format!("+ {rule}"));
        }
    }
    for rule in new.iter().filter(|r| old.contains(r)) {
        lines.push(format!("  {rule}"));
    }
    lines
}

/// Checks a manifest the server registered against this holder's: it verifies, is signed
/// under the same CA key, has the same CA, shares and holders, and a strictly higher policy
/// revision. Anything else (an older manifest, another key, other shares) is refused.
pub fn check_newer(
    current: &VerifiedManifest,
    offered: &Manifest,
) -> Result<VerifiedManifest, AgentError> {
    let new = offered
        .verify()
        .map_err(|e| refused(format!("the server's manifest does not verify: {e}")))?;
    if new.ca.spki_der != current.ca.spki_der {
        return Err(refused(
            "the server's manifest is signed under another CA key than this holder's: refused",
        ));
    }
    if let Some(part) = current.body.differs_beyond_policy(&new.body) {
        return Err(refused(format!(
            "the server's manifest has another {part} than this holder's: not adopted"
        )));
    }
    if new.body.policy_revision <= current.body.policy_revision {
        return Err(refused(format!(
            "the server's manifest is policy revision {}, not newer than this holder's ({}): \
             an older or the same policy is never adopted",
            new.body.policy_revision, current.body.policy_revision
        )));
    }
    Ok(new)
}

/// Fetches the CA's registered manifest, checks it ([`check_newer`]), and writes it over
/// `path` (the previous one kept as `path.previous`). Returns the adopted manifest.
pub(super) fn adopt(
    client: &Client,
    current: &VerifiedManifest,
    path: &Path,
) -> Result<VerifiedManifest, AgentError> {
    let offered: Manifest = client.get(&format!("{API}/cas/{}/manifest", current.ca_id()))?;
    let new = check_newer(current, &offered)?;
    let previous = {
        let mut p = path.as_os_str().to_owned();
        p.push(".previous");
        std::path::PathBuf::from(p)
    };
    let old =
        std::fs::read(path).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
    crate::fsx::write_new(&previous, &old, 0o644, true)
        .map_err(|e| AgentError::Config(format!("cannot write {}: {e}", previous.display())))?;
    crate::fsx::write_new(path, offered.to_json().as_bytes(), 0o644, true)
        .map_err(|e| AgentError::Config(format!("cannot write {}: {e}", path.display())))?;
    tracing::info!(
        "adopted the CA's new manifest: policy revision {} (was {}), {}; written to {} \
         (previous kept as {})",
        new.body.policy_revision,
        current.body.policy_revision,
        if new.body.policy.is_some() {
            "signed by the CA key"
        } else {
            "no policy (M approvals, no rule), signed by the CA key"
        },
        path.display(),
        previous.display()
    );
    Ok(new)
}

#[cfg(test)]
mod tests;
