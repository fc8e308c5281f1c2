//! Verifiable secret sharing of a key-encryption key (KEK), and the wrapping of a payload
//! under it.
//!
//! The secret that holders share is never the payload itself: a random P-256 scalar (the
//! KEK) is split with Feldman's verifiable scheme, and the payload (the CA key, or any
//! secret given to `nkpki split`) is sealed with ChaCha20-Poly1305 under a key derived from
//! the KEK with HKDF-SHA-256. Anyone holding the public [`ShareSet`] can check one share on
//! its own and name the share that is bad before combining anything.
//!
//! A threshold-mode CA shares no KEK: its [`ShareSet`] carries a Shoup threshold-RSA public
//! key ([`shoup::ThresholdKey`]) and each share a key share s_i of the CA's private exponent,
//! which signs on its own (signature shares) and is never combined into a key.
//!
//! This module is pure: no files, no network, no tokens.

mod feldman;
mod share;
pub mod shoup;
mod wrap;

pub use share::{SetId, Share, ShareFile, ShareValue};
pub use wrap::Wrapped;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The only scheme this version writes and reads: Feldman VSS over P-256, HKDF-SHA-256,
/// ChaCha20-Poly1305.
pub const SCHEME: &str = "feldman-p256/hkdf-sha256/chacha20poly1305";

/// The scheme of threshold-mode sets and shares: Shoup threshold RSA, signatures PKCS#1
/// v1.5 with SHA-256.
pub const THRESHOLD_SCHEME: &str = "shoup-rsa/pkcs1v15-sha256";

/// The proof context of a threshold share's proof of possession (enrollment,
/// [`ShareSet::sign_with_share`]). A signature share depends on the message alone, not on
/// this context: what keeps a possession signature from ever serving as a signature share
/// of a certificate is that its message is not DER and differs for every holder, so such
/// shares never combine. `sign_with_share` must never sign a message a server chose.
const POSSESSION_CONTEXT: &[u8] = b"nkpki share possession v1";

/// Smallest and largest share counts the sharing machinery accepts (share indices are one
/// byte; a threshold of one would not be sharing at all).
pub const MIN_THRESHOLD: u8 = 2;
pub const MAX_SHARES: u8 = 255;

/// Errors of splitting, checking and combining shares.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SssError {
    #[error(
        "threshold {threshold} is invalid for {total} shares (need 2 <= threshold <= shares <= 255)"
    )]
    BadParameters { threshold: usize, total: usize },
    #[error("unsupported share scheme {0:?} (this nkpki reads {SCHEME:?})")]
    UnknownScheme(String),
    #[error("unsupported share format version {0} (this nkpki reads version 1)")]
    UnknownVersion(u32),
    #[error("share {index} belongs to another share set ({found}, expected {expected})")]
    ForeignShare {
        index: u8,
        found: SetId,
        expected: SetId,
    },
    #[error("share {index} is out of range for a set of {total} shares")]
    IndexOutOfRange { index: u8, total: u8 },
    #[error("share {index} does not match the published commitments: it is corrupt or forged")]
    CommitmentMismatch { index: u8 },
    #[error("two copies of share {index} were given")]
    DuplicateShare { index: u8 },
    #[error("{got} valid share(s) given, {needed} needed")]
    NotEnoughShares { got: usize, needed: u8 },
    #[error("the public share set is malformed: {0}")]
    MalformedSet(String),
    #[error("the signature is not share {index}'s")]
    BadShareSignature { index: u8 },
    #[error("the share value is malformed")]
    MalformedValue,
    #[error("the recovered key does not open the wrapped secret (shares or set tampered with)")]
    UnwrapFailed,
    #[error("secret sharing failed: {0}")]
    Internal(String),
    #[error(
        "share {index} is a {share_mode}-mode share, but this CA is in {set_mode} mode: it belongs to another CA"
    )]
    OtherMode {
        index: u8,
        share_mode: &'static str,
        set_mode: &'static str,
    },
    #[error("this CA is in threshold mode: its key is never rebuilt, each share signs on its own")]
    ThresholdMode,
    #[error("this CA is in reconstruct mode: its shares make no signature shares")]
    ReconstructMode,
    #[error(transparent)]
    Threshold(#[from] shoup::ThresholdError),
}

/// The name of a scheme's CA mode, for messages.
fn mode_of(scheme: &str) -> &'static str {
    if scheme == THRESHOLD_SCHEME {
        "threshold"
    } else {
        "reconstruct"
    }
}

/// The public half of a sharing: commitments and the wrapped payload. It can be published
/// (manifest, server store, every share file) without revealing anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSet {
    pub scheme: String,
    pub threshold: u8,
    pub total: u8,
    /// Feldman commitments g^a_0 … g^a_{t-1}, SEC1 compressed points in hex.
    pub commitments: Vec<String>,
    /// SHA-256 (hex) of the public value the wrapped secret belongs to — for a CA, the DER
    /// of its certificate's SubjectPublicKeyInfo. It enters the set's id and the AEAD's
    /// associated data, so the same shares cannot be presented under another public key.
    /// Absent for a plain `nkpki split` secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
    /// The wrapped payload (reconstruct mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<Wrapped>,
    /// The threshold-RSA public key: n, e, v and every v_i (threshold mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_key: Option<shoup::ThresholdKey>,
}

impl ShareSet {
    /// The set's identity: the first 128 bits of SHA-256 over its canonical (compact) JSON,
    /// prefixed with [`BOUND_ID_DOMAIN`] when the set is bound to a public key. Any change to
    /// the commitments, parameters, binding or wrapped payload changes it. Unbound sets keep
    /// the 0.1.0 derivation, so `nkpki split` files made by 0.1.0 still combine.
    pub fn id(&self) -> SetId {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let mut h = Sha256::new();
        if self.binding.is_some() {
            h.update(BOUND_ID_DOMAIN);
        }
        h.update(&canonical);
        SetId(hex::encode(&h.finalize()[..16]))
    }

    /// Whether this set is bound to exactly `public` (e.g. a CA's SubjectPublicKeyInfo DER).
    pub fn is_bound_to(&self, public: &[u8]) -> bool {
        self.binding.as_deref() == Some(binding_of(public).as_str())
    }

    /// Checks the set on its own: scheme, parameters, and what each mode must carry
    /// (commitments and a wrapped key, or a sane threshold key).
    pub fn check(&self) -> Result<(), SssError> {
        self.check_parameters()
    }

    /// Whether this is a threshold-mode (Shoup RSA) set.
    pub fn is_threshold(&self) -> bool {
        self.scheme == THRESHOLD_SCHEME
    }

    fn check_parameters(&self) -> Result<(), SssError> {
        check_parameters(self.threshold as usize, self.total as usize)?;
        match self.scheme.as_str() {
            SCHEME => {
                if self.commitments.len() != self.threshold as usize {
                    return Err(SssError::MalformedSet(format!(
                        "{} commitments for threshold {}",
                        self.commitments.len(),
                        self.threshold
                    )));
                }
                if self.wrapped.is_none() || self.threshold_key.is_some() {
                    return Err(SssError::MalformedSet(
                        "a reconstruct-mode set carries a wrapped key and no threshold key".into(),
                    ));
                }
            }
            THRESHOLD_SCHEME => {
                let key = self.threshold_key()?;
                if !self.commitments.is_empty() || self.wrapped.is_some() {
                    return Err(SssError::MalformedSet(
                        "a threshold-mode set carries no commitments and no wrapped key".into(),
                    ));
                }
                if key.threshold != self.threshold || key.total != self.total {
                    return Err(SssError::MalformedSet(
                        "the threshold key's parameters differ from the set's".into(),
                    ));
                }
                key.check()?;
            }
            other => return Err(SssError::UnknownScheme(other.to_owned())),
        }
        Ok(())
    }

    /// The threshold-RSA public key of a threshold-mode set.
    pub fn threshold_key(&self) -> Result<&shoup::ThresholdKey, SssError> {
        self.threshold_key.as_ref().ok_or(SssError::ReconstructMode)
    }

    /// The threshold key share a threshold-mode share carries, checked against this set
    /// (v^{s_i} = v_i).
    pub fn key_share(&self, share: &Share) -> Result<shoup::KeyShare, SssError> {
        self.verify(share)?;
        self.parse_key_share(share)
    }

    fn parse_key_share(&self, share: &Share) -> Result<shoup::KeyShare, SssError> {
        let key = self.threshold_key()?;
        let key_share = shoup::KeyShare::from_bytes(share.value.as_bytes())
            .map_err(|_| SssError::MalformedValue)?;
        if key_share.index != share.index {
            return Err(SssError::CommitmentMismatch { index: share.index });
        }
        shoup::check_key_share(key, &key_share)
            .map_err(|_| SssError::CommitmentMismatch { index: share.index })?;
        Ok(key_share)
    }

    /// The share's public fingerprint, which the holder compares with the ceremony's: the
    /// first 64 bits of SHA-256 over g^value (reconstruct mode) or over v_i (threshold
    /// mode), hex. Call after [`ShareSet::verify`].
    pub fn fingerprint_of(&self, share: &Share) -> Result<String, SssError> {
        if !self.is_threshold() {
            return share.fingerprint();
        }
        let key = self.threshold_key()?;
        let vi = key
            .verification_keys
            .get(usize::from(share.index).wrapping_sub(1))
            .ok_or(SssError::IndexOutOfRange {
                index: share.index,
                total: self.total,
            })?;
        let bytes = vi.to_be_bytes();
        Ok(hex::encode(&Sha256::digest(&bytes)[..8]))
    }

    /// Proof that whoever made `msg` holds `share`: an ECDSA signature with the share
    /// (reconstruct mode) or a Shoup signature share on `msg` with its proof, JSON
    /// (threshold mode). [`ShareSet::verify_share_signature`] checks either.
    pub fn sign_with_share(&self, share: &Share, msg: &[u8]) -> Result<Vec<u8>, SssError> {
        if !self.is_threshold() {
            return share.sign(msg);
        }
        let key_share = self.parse_key_share(share)?;
        let signature = shoup::sign_share(
            self.threshold_key()?,
            &key_share,
            msg,
            POSSESSION_CONTEXT,
            &mut rand::rng(),
        )?;
        serde_json::to_vec(&signature).map_err(|e| SssError::Internal(e.to_string()))
    }

    /// Checks one share against this set alone: same set, index in range, value consistent
    /// with the commitments.
    pub fn verify(&self, share: &Share) -> Result<(), SssError> {
        self.check_parameters()?;
        share.check_header()?;
        if share.scheme != self.scheme {
            return Err(SssError::OtherMode {
                index: share.index,
                share_mode: mode_of(&share.scheme),
                set_mode: mode_of(&self.scheme),
            });
        }
        let expected = self.id();
        if share.set_id != expected
            || share.threshold != self.threshold
            || share.total != self.total
        {
            return Err(SssError::ForeignShare {
                index: share.index,
                found: share.set_id.clone(),
                expected,
            });
        }
        if share.index == 0 || share.index > self.total {
            return Err(SssError::IndexOutOfRange {
                index: share.index,
                total: self.total,
            });
        }
        if self.is_threshold() {
            return self.parse_key_share(share).map(|_| ());
        }
        let commitments = feldman::decode_commitments(&self.commitments)?;
        feldman::verify(&commitments, share.index, &share.value)
    }

    /// Checks a [`Share::sign`] signature made with share `index` of this set, from the
    /// public commitments alone.
    pub fn verify_share_signature(
        &self,
        index: u8,
        msg: &[u8],
        signature: &[u8],
    ) -> Result<(), SssError> {
        self.check_parameters()?;
        if index == 0 || index > self.total {
            return Err(SssError::IndexOutOfRange {
                index,
                total: self.total,
            });
        }
        if self.is_threshold() {
            let bad = || SssError::BadShareSignature { index };
            let signature: shoup::SignatureShare =
                serde_json::from_slice(signature).map_err(|_| bad())?;
            if signature.index != index {
                return Err(bad());
            }
            return shoup::verify_share(self.threshold_key()?, msg, POSSESSION_CONTEXT, &signature)
                .map_err(|_| bad());
        }
        let commitments = feldman::decode_commitments(&self.commitments)?;
        if feldman::verify_share_signature(&commitments, index, msg, signature) {
            Ok(())
        } else {
            Err(SssError::BadShareSignature { index })
        }
    }

    /// Verifies every share, refuses duplicates, and opens the wrapped payload with any
    /// `threshold` of them. The first bad share stops everything and is named.
    pub fn recover(&self, shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, SssError> {
        let wrapped = self.wrapped.as_ref().ok_or(SssError::ThresholdMode)?;
        let mut seen = Vec::with_capacity(shares.len());
        for share in shares {
            self.verify(share)?;
            if seen.contains(&share.index) {
                return Err(SssError::DuplicateShare { index: share.index });
            }
            seen.push(share.index);
        }
        if shares.len() < self.threshold as usize {
            return Err(SssError::NotEnoughShares {
                got: shares.len(),
                needed: self.threshold,
            });
        }
        let used = &shares[..self.threshold as usize];
        let kek = feldman::combine(used)?;
        wrapped.open(&kek, &self.associated_data())
    }

    /// What the AEAD authenticates besides the payload: the scheme, parameters and
    /// commitments, so a wrapped payload cannot be moved to another set.
    fn associated_data(&self) -> Vec<u8> {
        associated_data(
            self.threshold,
            self.total,
            &self.commitments,
            self.binding.as_deref(),
        )
    }
}

/// What a bound set's id hashes before its JSON: keeps CA ids apart from plain set ids.
pub const BOUND_ID_DOMAIN: &[u8] = b"nkpki ca id v2\n";

/// The `binding` of a set bound to `public`: SHA-256 of it, hex.
pub fn binding_of(public: &[u8]) -> String {
    hex::encode(Sha256::digest(public))
}

/// v1 (unbound, as 0.1.0 wrote it) or v2: the same lines plus the binding.
fn associated_data(
    threshold: u8,
    total: u8,
    commitments: &[String],
    binding: Option<&str>,
) -> Vec<u8> {
    let version = if binding.is_some() { 2 } else { 1 };
    let mut aad =
        format!("nkpki kek wrap v{version}\n{SCHEME}\n{threshold}/{total}\n").into_bytes();
    for c in commitments {
        aad.extend_from_slice(c.as_bytes());
        aad.push(b'\n');
    }
    if let Some(b) = binding {
        aad.extend_from_slice(format!("binding {b}\n").as_bytes());
    }
    aad
}

fn check_parameters(threshold: usize, total: usize) -> Result<(), SssError> {
    if threshold < MIN_THRESHOLD as usize || threshold > total || total > MAX_SHARES as usize {
        return Err(SssError::BadParameters { threshold, total });
    }
    Ok(())
}

/// Splits `payload` `threshold`-of-`holders.len()` (or of `total` anonymous shares when
/// `holders` is empty): makes a fresh KEK, wraps the payload under it, shares the KEK.
pub fn split(
    payload: &[u8],
    threshold: u8,
    total: u8,
    holders: &[String],
) -> Result<(ShareSet, Vec<Share>), SssError> {
    split_with(payload, threshold, total, holders, None)
}

/// [`split`], with the set bound to `public` (a CA's SubjectPublicKeyInfo DER): the binding
/// enters the set's id and the wrap's associated data.
pub fn split_bound(
    payload: &[u8],
    threshold: u8,
    total: u8,
    holders: &[String],
    public: &[u8],
) -> Result<(ShareSet, Vec<Share>), SssError> {
    split_with(payload, threshold, total, holders, Some(binding_of(public)))
}

fn split_with(
    payload: &[u8],
    threshold: u8,
    total: u8,
    holders: &[String],
    binding: Option<String>,
) -> Result<(ShareSet, Vec<Share>), SssError> {
    check_parameters(threshold as usize, total as usize)?;
    if !holders.is_empty() && holders.len() != total as usize {
        return Err(SssError::BadParameters {
            threshold: threshold as usize,
            total: holders.len(),
        });
    }
    let (kek, values, commitments) = feldman::split(threshold, total)?;
    let aad = associated_data(threshold, total, &commitments, binding.as_deref());
    let wrapped = Wrapped::seal(&kek, payload, &aad)?;
    let set = ShareSet {
        scheme: SCHEME.to_owned(),
        threshold,
        total,
        commitments,
        binding,
        wrapped: Some(wrapped),
        threshold_key: None,
    };
    let set_id = set.id();
    let shares = values
        .into_iter()
        .enumerate()
        .map(|(i, value)| Share {
            format: share::FORMAT.to_owned(),
            version: share::VERSION,
            scheme: SCHEME.to_owned(),
            set_id: set_id.clone(),
            threshold,
            total,
            index: (i + 1) as u8,
            holder: holders.get(i).cloned(),
            value,
        })
        .collect();
    Ok((set, shares))
}

/// Makes the threshold-mode set and shares of a dealt Shoup key, bound to `public` (the CA
/// certificate's SubjectPublicKeyInfo DER) as [`split_bound`] binds a reconstruct-mode set.
pub fn threshold_set(
    key: shoup::ThresholdKey,
    key_shares: &[shoup::KeyShare],
    holders: &[String],
    public: &[u8],
) -> Result<(ShareSet, Vec<Share>), SssError> {
    let (threshold, total) = (key.threshold, key.total);
    check_parameters(threshold as usize, total as usize)?;
    if holders.len() != total as usize || key_shares.len() != total as usize {
        return Err(SssError::BadParameters {
            threshold: threshold as usize,
            total: holders.len(),
        });
    }
    let set = ShareSet {
        scheme: THRESHOLD_SCHEME.to_owned(),
        threshold,
        total,
        commitments: Vec::new(),
        binding: Some(binding_of(public)),
        wrapped: None,
        threshold_key: Some(key),
    };
    set.check_parameters()?;
    let set_id = set.id();
    let shares = key_shares
        .iter()
        .zip(holders)
        .map(|(key_share, holder)| Share {
            format: share::FORMAT.to_owned(),
            version: share::THRESHOLD_VERSION,
            scheme: THRESHOLD_SCHEME.to_owned(),
            set_id: set_id.clone(),
            threshold,
            total,
            index: key_share.index,
            holder: Some(holder.clone()),
            value: ShareValue::from_slice(&key_share.to_bytes()),
        })
        .collect();
    Ok((set, shares))
}

#[cfg(test)]
mod tests;
