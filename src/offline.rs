//! Signing without a network: shares are brought to the ceremony laptop (as files today),
//! checked one by one against the manifest, and M of them rebuild the CA key just long
//! enough to sign.

use crate::manifest::{ManifestError, VerifiedManifest};
use crate::pki::{self, CaKey, Csr, Issued, PkiError, Terms};
use crate::seal::{self, Identities, SealError};
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
