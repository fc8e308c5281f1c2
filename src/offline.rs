//! Signing without a network: shares are brought to the ceremony laptop (files or tokens),
//! checked one by one against the manifest. In reconstruct mode M of them rebuild the CA
//! key just long enough to sign; in threshold mode each share makes one signature share on
//! the TBSCertificate and is wiped before the next is read, and the signature shares
//! combine into the signature — the CA key never exists.

use crate::manifest::{Manifest, ManifestBody, ManifestError, VerifiedManifest};
use crate::pki::{self, CaKey, Csr, Issued, PkiError, Terms};
use crate::seal::{self, Identities, SealError};
use crate::sss::shoup::{self, SignatureShare, ThresholdError, ThresholdKey};
use crate::sss::{Share, SssError};
use age::secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error("cannot open {what}: {reason}")]
    Open { what: String, reason: SealError },
    #[error("{what} is not an nkpki share: {reason}")]
    NotAShare { what: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{what} and {other} are the same share ({index}); each holder's share counts once")]
    Duplicate {
        what: String,
        other: String,
        index: u8,
    },
    #[error("{got} valid share(s) given; this CA needs {needed}")]
    NotEnough { got: usize, needed: u8 },
    #[error("the shares do not rebuild the CA key: {0}")]
    Recover(SssError),
    #[error("the rebuilt key does not match the CA certificate")]
    KeyMismatch,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{what}: {reason}")]
    Threshold { what: String, reason: SssError },
    #[error("the signature shares do not combine: {0}")]
    Combine(ThresholdError),
    #[error("{what}: {reason}")]
    Token {
        what: String,
        reason: crate::hsm::HsmError,
    },
}

/// Opens a sealed share and checks it against the manifest. `what` names it in errors.
pub fn open_share(
    manifest: &VerifiedManifest,
    armored: &[u8],
    what: &str,
    identities: &Identities,
    passphrase: impl FnOnce() -> Option<SecretString>,
) -> Result<Share, SignError> {
    let plain = seal::open(armored, identities, passphrase).map_err(|reason| SignError::Open {
        what: what.to_owned(),
        reason,
    })?;
    let share: Share = serde_json::from_slice(&plain).map_err(|e| SignError::NotAShare {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    manifest.check_share(&share, what)?;
    Ok(share)
}

/// Rebuilds the CA key from checked shares, issues the certificate, wipes the key.
/// `shares` pairs each share with the name of where it came from.
pub fn sign(
    manifest: &VerifiedManifest,
    csr: &Csr,
    terms: &Terms,
    shares: &[(String, Share)],
) -> Result<Issued, SignError> {
    check_distinct(manifest, shares)?;
    if manifest.threshold_key().is_some() {
        let mut signing = ThresholdSigning::begin(manifest, csr, terms)?;
        for (what, share) in shares {
            signing.add(what, share)?;
        }
        return signing.finish();
    }
    let only: Vec<Share> = shares.iter().map(|(_, s)| s.clone()).collect();
    let pkcs8 = manifest
        .body
        .share_set
        .recover(&only)
        .map_err(SignError::Recover)?;
    drop(only);
    let key = CaKey::from_pkcs8_der(&pkcs8)?;
    drop(pkcs8);
    if key.spki_der()? != manifest.ca.spki_der {
        return Err(SignError::KeyMismatch);
    }
    let issued = pki::issue(&key, &manifest.ca, csr, terms)?;
    drop(key);
    Ok(issued)
}

/// Signs a new body for `manifest`'s CA (the same CA, a changed policy) with M checked
/// shares: the key is rebuilt just long enough to sign (reconstruct mode), or each share
/// makes a signature share on the body (threshold mode). The result is verified.
pub fn resign_manifest(
    manifest: &VerifiedManifest,
    body: ManifestBody,
    shares: &[(String, Share)],
) -> Result<Manifest, SignError> {
    check_distinct(manifest, shares)?;
    let bytes = body.signed_bytes()?;
    let signed = match manifest.threshold_key() {
        Some(key) => {
            let context = offline_context(manifest);
            let mut signature_shares = Vec::with_capacity(shares.len());
            for (what, share) in shares {
                let threshold_error = |reason| SignError::Threshold {
                    what: what.clone(),
                    reason,
                };
                let key_share = manifest
                    .body
                    .share_set
                    .key_share(share)
                    .map_err(threshold_error)?;
                let signature_share =
                    shoup::sign_share(key, &key_share, &bytes, &context, &mut rand::rng())
                        .map_err(|e| threshold_error(e.into()))?;
                signature_shares.push(signature_share);
            }
            let signature = shoup::combine(key, &bytes, &context, &signature_shares)
                .map_err(SignError::Combine)?;
            Manifest::from_parts(body, &signature)
        }
        None => {
            let key = rebuild_key(manifest, shares)?;
            Manifest::sign(body, &key)?
        }
    };
    signed.verify()?;
    Ok(signed)
}

fn check_distinct(
    manifest: &VerifiedManifest,
    shares: &[(String, Share)],
) -> Result<(), SignError> {
    for (i, (what, share)) in shares.iter().enumerate() {
        if let Some((other, _)) = shares[..i].iter().find(|(_, s)| s.index == share.index) {
            return Err(SignError::Duplicate {
                what: what.clone(),
                other: other.clone(),
                index: share.index,
            });
        }
    }
    if shares.len() < manifest.threshold() as usize {
        return Err(SignError::NotEnough {
            got: shares.len(),
            needed: manifest.threshold(),
        });
    }
    Ok(())
}

/// Rebuilds the CA key of a reconstruct-mode CA from checked shares.
fn rebuild_key(
    manifest: &VerifiedManifest,
    shares: &[(String, Share)],
) -> Result<CaKey, SignError> {
    let only: Vec<Share> = shares.iter().map(|(_, s)| s.clone()).collect();
    let pkcs8 = manifest
        .body
        .share_set
        .recover(&only)
        .map_err(SignError::Recover)?;
    drop(only);
    let key = CaKey::from_pkcs8_der(&pkcs8)?;
    drop(pkcs8);
    if key.spki_der()? != manifest.ca.spki_der {
        return Err(SignError::KeyMismatch);
    }
    Ok(key)
}

/// Reads the share of `manifest`'s CA from a logged-in token and checks it.
pub fn share_from_token(
    manifest: &VerifiedManifest,
    token: &crate::hsm::Token,
) -> Result<Share, SignError> {
    let what = format!("token {}", token.label());
    let bytes = token
        .read_share(&manifest.ca_id().0)
        .map_err(|e| SignError::Token {
            what: what.clone(),
            reason: e,
        })?;
    let share: Share = serde_json::from_slice(&bytes).map_err(|e| SignError::NotAShare {
        what: what.clone(),
        reason: e.to_string(),
    })?;
    manifest.check_share(&share, &what)?;
    Ok(share)
}

/// What an offline proof is bound to besides the TBS: the CA, and that it was made here.
fn offline_context(manifest: &VerifiedManifest) -> Vec<u8> {
    format!("nkpki offline signature v1\n{}\n", manifest.ca_id()).into_bytes()
}

/// Offline signing with a threshold-mode CA, one share at a time: the TBSCertificate is
/// fixed first, each share adds its signature share (and is dropped, so wiped, at once),
/// and [`ThresholdSigning::finish`] combines them and assembles the certificate.
#[derive(Debug)]
pub struct ThresholdSigning<'a> {
    manifest: &'a VerifiedManifest,
    key: &'a ThresholdKey,
    view: pki::CertificateView,
    tbs: Vec<u8>,
    context: Vec<u8>,
    signature_shares: Vec<(String, SignatureShare)>,
}

impl<'a> ThresholdSigning<'a> {
    /// Checks the request and fixes the TBSCertificate (serial and validity from `terms`).
    pub fn begin(
        manifest: &'a VerifiedManifest,
        csr: &Csr,
        terms: &Terms,
    ) -> Result<Self, SignError> {
        let key = manifest
            .threshold_key()
            .ok_or(SignError::Recover(SssError::ReconstructMode))?;
        let view = pki::check_request(&manifest.ca, csr, terms)?;
        let tbs = pki::tbs_certificate(&manifest.ca, csr, terms)?;
        Ok(ThresholdSigning {
            manifest,
            key,
            view,
            tbs,
            context: offline_context(manifest),
            signature_shares: Vec::new(),
        })
    }

    /// How many more shares are needed.
    pub fn missing(&self) -> usize {
        (self.manifest.threshold() as usize).saturating_sub(self.signature_shares.len())
    }

    /// The SHA-256 (hex) of the TBSCertificate every signature share is made on.
    pub fn tbs_sha256(&self) -> String {
        pki::sha256_hex(&self.tbs)
    }

    /// Checks `share` against the manifest (v^{s_i} = v_i), makes its signature share on
    /// the TBS with a proof, and drops the share before returning.
    pub fn add(&mut self, what: &str, share: &Share) -> Result<(), SignError> {
        if let Some((other, _)) = self
            .signature_shares
            .iter()
            .find(|(_, s)| s.index == share.index)
        {
            return Err(SignError::Duplicate {
                what: what.to_owned(),
                other: other.clone(),
                index: share.index,
            });
        }
        self.manifest.check_share(share, what)?;
        let key_share = self
            .manifest
            .body
            .share_set
            .key_share(share)
            .map_err(|reason| SignError::Threshold {
                what: what.to_owned(),
                reason,
            })?;
        let signature_share = shoup::sign_share(
            self.key,
            &key_share,
            &self.tbs,
            &self.context,
            &mut rand::rng(),
        )
        .map_err(|reason| SignError::Threshold {
            what: what.to_owned(),
            reason: reason.into(),
        })?;
        drop(key_share);
        self.signature_shares
            .push((what.to_owned(), signature_share));
        Ok(())
    }

    /// Combines the signature shares (every proof checked, the RSA signature checked
    /// against the public key), assembles the certificate and checks it against the CA
    /// certificate.
    pub fn finish(self) -> Result<Issued, SignError> {
        if self.missing() > 0 {
            return Err(SignError::NotEnough {
                got: self.signature_shares.len(),
                needed: self.manifest.threshold(),
            });
        }
        let shares: Vec<SignatureShare> =
            self.signature_shares.into_iter().map(|(_, s)| s).collect();
        let signature = shoup::combine(self.key, &self.tbs, &self.context, &shares)
            .map_err(SignError::Combine)?;
        let der = pki::assemble_certificate(&self.tbs, &signature)?;
        pki::check_signed_by(&self.manifest.ca, &der)?;
        let not_after = time::OffsetDateTime::from_unix_timestamp(self.view.not_after)
            .map_err(|_| PkiError::Build("validity out of range".into()))?;
        Ok(Issued {
            der,
            serial_hex: self.view.serial.clone(),
            not_after,
            dropped: self.view.dropped.clone(),
            view: self.view,
        })
    }
}
