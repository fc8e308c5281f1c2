//! Threshold-mode sessions: the server builds the exact to-be-signed bytes, checks each
//! holder's signature share against that holder's public verification key, and combines M
//! of them into the CA's signature. Nothing here is secret: a signature share signs one
//! message, and the server never holds a share of the key.

use super::state::{ApiErr, ApiResult, Pending};
use crate::manifest::VerifiedManifest;
use crate::pki::{self, Csr, Revoked};
use crate::sss::shoup::{self, SignatureShare, ThresholdKey};
use std::sync::Arc;

/// What an open threshold session holds: all of it public.
pub(super) struct ThresholdSession {
    /// The DER TBSCertificate or TBSCertList offered to the holders.
    pub tbs: Arc<Vec<u8>>,
    /// What every proof is bound to besides the TBS ([`crate::proto::threshold_context`]).
    pub context: Arc<Vec<u8>>,
    /// Verified signature shares, in arrival order.
    pub shares: Vec<SignatureShare>,
    /// What the signature will be recorded as.
    pub pending: Pending,
}

/// The CA's threshold public key, when it was made in threshold mode.
pub(super) fn key(manifest: &VerifiedManifest) -> Option<&ThresholdKey> {
    manifest.threshold_key()
}

/// The TBSCertificate of an `issue` session: the certificate `view` describes, for `csr`.
pub(super) fn tbs_for_issue(
    manifest: &VerifiedManifest,
    csr: &Csr,
    view: &pki::CertificateView,
) -> Result<Vec<u8>, String> {
    let terms = pki::Terms::of_view(view).map_err(|e| e.to_string())?;
    pki::tbs_certificate(&manifest.ca, csr, &terms).map_err(|e| e.to_string())
}

/// The TBSCertList of a `revoke` or `crl` session: CRL `number` at `now`, listing
/// `revoked` and, for a revocation, `new`.
pub(super) fn tbs_for_crl(
    manifest: &VerifiedManifest,
    number: i64,
    mut revoked: Vec<Revoked>,
    new: Option<&Revoked>,
    now: i64,
) -> Result<Vec<u8>, String> {
    if let Some(n) = new {
        revoked.push(n.clone());
    }
    let at = time::OffsetDateTime::from_unix_timestamp(now).map_err(|e| e.to_string())?;
    let number = u64::try_from(number).map_err(|e| e.to_string())?;
    pki::tbs_crl(&manifest.ca, number, &revoked, at).map_err(|e| e.to_string())
}

/// Refuses a signature share the agent made with a share of an earlier set of this CA
/// (it was reshared): `409 superseded-share-set`, not a bad proof.
pub(super) fn check_set(
    manifest: &VerifiedManifest,
    set_id: Option<&crate::sss::SetId>,
) -> ApiResult<()> {
    match set_id.and_then(|id| manifest.superseded_version(id)) {
        Some(version) => Err(ApiErr::new(
            409,
            "superseded-share-set",
            format!(
                "the signature share was made with a share of an old share set (version \
                 {version}, current is {}): this CA was reshared; deploy the new package",
                manifest.set_version()
            ),
        )),
        None => Ok(()),
    }
}

/// Checks one holder's signature share: its index must be the one the manifest gives that
/// holder, and its proof must hold for exactly this TBS and session.
pub(super) fn check_share(
    manifest: &VerifiedManifest,
    holder_id: &str,
    tbs: &[u8],
    context: &[u8],
    share: &SignatureShare,
) -> ApiResult<()> {
    let refuse = |why: String| Err(ApiErr::new(422, "bad-signature-share", why));
    let Some(key) = key(manifest) else {
        return Err(ApiErr::new(
            500,
            "internal",
            "the CA has no threshold key".to_owned(),
        ));
    };
    match manifest.holder_by_id(holder_id) {
        Some(h) if h.index == share.index => {}
        Some(_) => {
            let owner = manifest
                .holder(share.index)
                .map_or_else(|| "no holder".to_owned(), |h| h.nitrokey_id.clone());
            return refuse(format!(
                "{holder_id} sent a signature share for index {}, which belongs to {owner}",
                share.index
            ));
        }
        None => return refuse(format!("{holder_id} holds no share of this CA")),
    }
    shoup::verify_share(key, tbs, context, share)
        .or_else(|e| refuse(format!("signature share failed verification: {e}")))
}

/// Combines the session's M signature shares, checks the RSA signature against the CA
/// certificate's key, and puts the certificate or CRL together.
pub(super) fn combine(
    manifest: &VerifiedManifest,
    session: &ThresholdSession,
) -> Result<Vec<u8>, String> {
    let key = key(manifest).ok_or("the CA has no threshold key")?;
    let signature = shoup::combine(key, &session.tbs, &session.context, &session.shares)
        .map_err(|e| format!("the signature shares do not combine: {e}"))?;
    pki::verify_signature(&manifest.ca.spki_der, &session.tbs, &signature)
        .map_err(|e| format!("the combined signature does not verify with the CA key: {e}"))?;
    match session.pending {
        Pending::Certificate(_) => pki::assemble_certificate(&session.tbs, &signature),
        Pending::Crl { .. } => pki::assemble_crl(&session.tbs, &signature),
        Pending::Manifest => Ok(signature),
        Pending::Reshare => return Err("a threshold CA is not reshared online".into()),
    }
    .map_err(|e| e.to_string())
}
