//! The ceremony's public record: CA certificate, wrapped CA key, Feldman commitments,
//! holders. Signed with the CA key, so any later edit is detected by whoever reads it.
//!
//! The manifest proves its own integrity, not its origin: an attacker can make a whole new
//! manifest with a new CA. What an attacker cannot do (version 2) is keep a genuine CA's id
//! and shares under another certificate: the share set is bound to the certificate's
//! SubjectPublicKeyInfo, and the CA id is the bound set's id. Operators pin the CA
//! certificate fingerprint printed at the ceremony (see docs/threat-model.md).

use crate::pki::{self, CaCertificate, PkiError};
use crate::policy::{self, Policy, PolicyError};
use crate::sss::shoup::ThresholdKey;
use crate::sss::{SetId, Share, ShareSet, SssError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

pub const FORMAT: &str = "nkpki-manifest";
/// Version 2: the share set is bound to the certificate's key (the CA id commits to it).
pub const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("not an nkpki manifest: {0}")]
    Malformed(String),
    #[error("unsupported manifest version {0} (this nkpki reads version {VERSION})")]
    UnknownVersion(u32),
    #[error(
        "manifest format version 1 (made by nkpki 0.1.0) is not accepted: its CA id does not bind \
         the CA certificate, so a copy with a substituted certificate would pass under the same id\n\
         hint: run the ceremony again with this nkpki (`nkpki ca-init`), deploy the new packages \
         and register the new CA; a version-1 CA cannot be upgraded in place, because its id is \
         written into every share and token and its wrapped key can only be re-bound with M shares"
    )]
    Version1,
    #[error(
        "the manifest's CA certificate is not the key its shares were made for: the certificate \
         was substituted (the share set is bound to another public key)"
    )]
    CertificateNotBound,
    #[error("the manifest's signature does not verify: it was changed after the ceremony")]
    BadSignature,
    #[error("the manifest is inconsistent: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("the manifest's CA policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("{what}: {reason}")]
    Share { what: String, reason: SssError },
    #[error(
        "{what} is from an old share set (version {version}, current is {current}): this CA was \
         reshared and that share no longer counts\n\
         hint: deploy the holder's package of set version {current} (`nkpki deploy`), which \
         replaces the old share object on the token"
    )]
    SupersededShare {
        what: String,
        version: u32,
        current: u32,
    },
    #[error(
        "{what} was made for holder {claimed}, but the manifest gives index {index} to {expected}"
    )]
    WrongHolder {
        what: String,
        claimed: String,
        index: u8,
        expected: String,
    },
}

/// The CA's parameters as chosen at the ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaInfo {
    pub name: String,
    pub org: String,
    pub country: String,
    pub key: String,
    pub validity_years: u32,
    pub path_len: Option<u8>,
}

/// A share holder as the manifest records it (public information only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestHolder {
    pub index: u8,
    pub nitrokey_id: String,
    pub holder_name: String,
    pub holder_email: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_recipient: Option<String>,
}

/// Everything the signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestBody {
    pub format: String,
    pub version: u32,
    /// The CA id, equal to the share set's id (which commits to the certificate's key).
    pub ca_id: SetId,
    pub ca: CaInfo,
    /// The CA certificate, PEM.
    pub certificate: String,
    /// SHA-256 fingerprint of the certificate's DER, `AA:BB:…`.
    pub certificate_sha256: String,
    pub share_set: ShareSet,
    pub holders: Vec<ManifestHolder>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The nkpki version that ran the ceremony.
    pub tool: String,
    /// The share set's version: 1 for the ceremony's (absent), one more per reshare.
    #[serde(
        default = "first_set_version",
        skip_serializing_if = "is_first_set_version"
    )]
    pub set_version: u32,
    /// SHA-256 (hex) of the manifest this one replaces ([`Manifest::digest`]); absent for
    /// the ceremony's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
    /// Every earlier share set of this CA, oldest first: what a drill, an agent or the
    /// server names a superseded share by. The first one's id is the CA id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_sets: Vec<EarlierSet>,
    /// The CA policy (docs/policy.md); absent: M approvals for everything, no other rule.
    /// Left out of the JSON when absent, so manifests without one keep their signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// How many times `policy set` changed the policy of this CA (absent: never): a server
    /// takes a policy change only from a manifest with a higher revision, so an older,
    /// looser manifest cannot come back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub policy_revision: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A share set a reshare replaced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlierSet {
    pub set_version: u32,
    pub set_id: SetId,
}

fn first_set_version() -> u32 {
    1
}

fn is_first_set_version(v: &u32) -> bool {
    *v == 1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub signed: ManifestBody,
    /// Base64 signature by the CA key over the compact JSON of `signed`.
    pub signature: String,
}

/// A manifest whose signature and internal consistency have been checked.
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    pub body: ManifestBody,
    pub ca: CaCertificate,
    /// [`Manifest::digest`] of the manifest verified: what a reshare of it supersedes.
    pub digest: String,
}

fn canonical(body: &ManifestBody) -> Result<Vec<u8>, ManifestError> {
    serde_json::to_vec(body).map_err(|e| ManifestError::Malformed(e.to_string()))
}

impl ManifestBody {
    /// The bytes the CA key signs: the compact JSON of the body.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        canonical(self)
    }

    /// This body with `policy` in place of its own and the next policy revision: what a
    /// policy change signs (offline `policy set`, or an online `policy` session).
    pub fn with_policy(&self, policy: Option<Policy>) -> Result<ManifestBody, ManifestError> {
        let mut next = self.clone();
        next.policy = policy;
        next.policy_revision = self.policy_revision.checked_add(1).ok_or_else(|| {
            ManifestError::Inconsistent("the policy revision is at its limit".into())
        })?;
        Ok(next)
    }

    /// The first part (by name) in which `other` differs from this body, the policy and its
    /// revision aside; `None`: the two describe the same CA, shares and holders.
    pub fn differs_beyond_policy(&self, other: &ManifestBody) -> Option<&'static str> {
        let (a, b) = (self, other);
        let parts = [
            ("format", a.format == b.format && a.version == b.version),
            ("CA id", a.ca_id == b.ca_id),
            ("CA parameters", a.ca == b.ca),
            (
                "CA certificate",
                a.certificate == b.certificate && a.certificate_sha256 == b.certificate_sha256,
            ),
            ("share set", a.share_set == b.share_set),
            ("holders", a.holders == b.holders),
            (
                "ceremony date or tool",
                a.created_at == b.created_at && a.tool == b.tool,
            ),
            (
                "share set lineage",
                a.set_version == b.set_version
                    && a.supersedes == b.supersedes
                    && a.earlier_sets == b.earlier_sets,
            ),
        ];
        parts.iter().find(|(_, same)| !same).map(|(name, _)| *name)
    }
}

impl Manifest {
    /// A manifest from a body and a signature made elsewhere (a threshold CA's combined
    /// signature shares); [`Manifest::verify`] checks it.
    pub fn from_parts(body: ManifestBody, signature: &[u8]) -> Self {
        Manifest {
            signed: body,
            signature: B64.encode(signature),
        }
    }

    /// Signs `body` with the CA key.
    pub fn sign(body: ManifestBody, key: &pki::CaKey) -> Result<Self, ManifestError> {
        let signature = B64.encode(key.sign(&canonical(&body)?)?);
        Ok(Manifest {
            signed: body,
            signature,
        })
    }

    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        serde_json::from_str(text).map_err(|e| ManifestError::Malformed(e.to_string()))
    }

    /// SHA-256 (hex) of the manifest as nkpki writes it ([`Manifest::to_json`], so
    /// `sha256sum manifest.json` of a ceremony's file): what a successor's `supersedes`
    /// names.
    pub fn digest(&self) -> String {
        pki::sha256_hex(self.to_json().as_bytes())
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks format, certificate, signature and the consistency of holders and shares.
    pub fn verify(&self) -> Result<VerifiedManifest, ManifestError> {
        let body = &self.signed;
        if body.format != FORMAT {
            return Err(ManifestError::Malformed(format!(
                "format {:?}",
                body.format
            )));
        }
        if body.version == 1 {
            return Err(ManifestError::Version1);
        }
        if body.version != VERSION {
            return Err(ManifestError::UnknownVersion(body.version));
        }
        let (_, pem) = x509_parser::pem::parse_x509_pem(body.certificate.as_bytes())
            .map_err(|_| ManifestError::Malformed("the certificate is not PEM".into()))?;
        let ca = CaCertificate::from_der(&pem.contents)?;
        let signature = B64
            .decode(&self.signature)
            .map_err(|_| ManifestError::BadSignature)?;
        pki::verify_signature(&ca.spki_der, &canonical(body)?, &signature)
            .map_err(|_| ManifestError::BadSignature)?;
        if pki::fingerprint(&ca.der) != body.certificate_sha256 {
            return Err(ManifestError::Inconsistent(
                "certificate fingerprint".into(),
            ));
        }
        body.share_set
            .check()
            .map_err(|e| ManifestError::Inconsistent(format!("the share set: {e}")))?;
        if let Some(key) = &body.share_set.threshold_key {
            check_threshold_key(key, &ca, &body.ca.key)?;
        }
        if !body.share_set.is_bound_to(&ca.spki_der) {
            return Err(ManifestError::CertificateNotBound);
        }
        check_lineage(body)?;
        let total = body.share_set.total as usize;
        let mut indices: Vec<u8> = body.holders.iter().map(|h| h.index).collect();
        indices.sort_unstable();
        if indices != (1..=total as u8).collect::<Vec<_>>() {
            return Err(ManifestError::Inconsistent(
                "holders do not cover shares 1..N exactly once".into(),
            ));
        }
        let mut ids: Vec<&str> = body
            .holders
            .iter()
            .map(|h| h.nitrokey_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != body.holders.len() {
            return Err(ManifestError::Inconsistent(
                "a Nitrokey id appears twice".into(),
            ));
        }
        if let Some(policy) = &body.policy {
            let holders: Vec<String> = body.holders.iter().map(|h| h.nitrokey_id.clone()).collect();
            policy.check_for_ca(body.share_set.threshold, &holders)?;
        }
        let described = (
            Some(body.ca.name.clone()),
            Some(body.ca.org.clone()),
            Some(body.ca.country.clone()),
        );
        if ca.subject_cn_o_c != described {
            return Err(ManifestError::Inconsistent(format!(
                "the certificate's subject ({}) is not the CA the manifest describes",
                ca.subject
            )));
        }
        Ok(VerifiedManifest {
            body: body.clone(),
            ca,
            digest: self.digest(),
        })
    }
}

/// The ceremony's manifest names its own share set as the CA id; a reshared one (set
/// version N > 1) names what it supersedes and the N - 1 earlier sets, the first of which
/// is the CA id.
fn check_lineage(body: &ManifestBody) -> Result<(), ManifestError> {
    let bad = |what: &str| Err(ManifestError::Inconsistent(what.to_owned()));
    let current = body.share_set.id();
    if body.set_version <= 1 {
        if body.set_version == 0 || body.supersedes.is_some() || !body.earlier_sets.is_empty() {
            return bad("a set version 1 manifest supersedes nothing");
        }
        if current != body.ca_id {
            return bad("the CA id is not the share set's id");
        }
        return Ok(());
    }
    let digest_ok = body
        .supersedes
        .as_deref()
        .is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
    if !digest_ok {
        return bad("a reshared manifest must name the manifest it supersedes (SHA-256)");
    }
    let versions: Vec<u32> = body.earlier_sets.iter().map(|e| e.set_version).collect();
    if versions != (1..body.set_version).collect::<Vec<_>>() {
        return bad("the earlier share sets are not versions 1..N-1 in order");
    }
    if body.earlier_sets.first().map(|e| &e.set_id) != Some(&body.ca_id) {
        return bad("the first share set's id is not the CA id");
    }
    if body.earlier_sets.iter().any(|e| e.set_id == current) {
        return bad("the current share set is listed as an earlier one");
    }
    Ok(())
}

/// A threshold-mode manifest's key must be the CA certificate's: same n, same e, and an
/// RSA key type.
fn check_threshold_key(
    key: &ThresholdKey,
    ca: &CaCertificate,
    key_type: &str,
) -> Result<(), ManifestError> {
    let pki::RsaNumbers { n, e } = pki::rsa_public_numbers(&ca.spki_der).ok_or_else(|| {
        ManifestError::Inconsistent("a threshold-mode CA needs an RSA certificate".into())
    })?;
    let algorithm: pki::KeyAlgorithm = key_type
        .parse()
        .map_err(|_| ManifestError::Inconsistent(format!("unknown key type {key_type:?}")))?;
    if algorithm.rsa_bits() != Some(key.modulus_bits()) {
        return Err(ManifestError::Inconsistent(format!(
            "the threshold key has {} bits, the manifest says {key_type}",
            key.modulus_bits()
        )));
    }
    let e_matches = e
        .iter()
        .skip_while(|b| **b == 0)
        .copied()
        .collect::<Vec<_>>()
        == key
            .e
            .to_be_bytes()
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<_>>();
    if n != key.modulus_bytes() || !e_matches {
        return Err(ManifestError::Inconsistent(
            "the threshold key's modulus n is not the CA certificate's".into(),
        ));
    }
    Ok(())
}

/// A SHA-256 fingerprint as `AA:BB:…` (what [`pki::fingerprint`] writes and `ca-init`
/// prints), from any of `AA:BB:…`, `aabb…` or either prefixed with `SHA256:`; `None` if it
/// is not 32 bytes of hex.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let text = text.trim();
    let bare = text
        .strip_prefix("SHA256:")
        .or_else(|| text.strip_prefix("sha256:"))
        .unwrap_or(text);
    let hex: String = bare.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let upper = hex.to_ascii_uppercase();
    let pairs: Vec<&str> = (0..32)
        .filter_map(|i| upper.get(2 * i..2 * i + 2))
        .collect();
    Some(pairs.join(":"))
}

impl VerifiedManifest {
    pub fn ca_id(&self) -> &SetId {
        &self.body.ca_id
    }

    /// The share set's version (1 until the first reshare).
    pub fn set_version(&self) -> u32 {
        self.body.set_version
    }

    /// The version of an earlier (superseded) share set with id `set_id`, if it is one.
    pub fn superseded_version(&self, set_id: &SetId) -> Option<u32> {
        self.body
            .earlier_sets
            .iter()
            .find(|e| &e.set_id == set_id)
            .map(|e| e.set_version)
    }

    pub fn threshold(&self) -> u8 {
        self.body.share_set.threshold
    }

    /// The threshold-RSA public key of a threshold-mode CA; `None` in reconstruct mode.
    pub fn threshold_key(&self) -> Option<&ThresholdKey> {
        self.body.share_set.threshold_key.as_ref()
    }

    /// What the CA policy says of a request (M approvals and no rule without a policy).
    pub fn verdict(&self, request: &policy::Request<'_>) -> policy::Verdict {
        match &self.body.policy {
            Some(p) => policy::verdict(p, self.threshold(), request),
            None => {
                let profile = match request {
                    policy::Request::Issue(view) => view.profile.as_str(),
                    policy::Request::Revoke => "revocation",
                    policy::Request::Crl => "crl",
                };
                policy::Verdict::no_policy(profile, self.threshold())
            }
        }
    }

    /// The constraints a sub-CA gets under the CA policy (`None`: no policy, or no
    /// `sub-ca` section — then the verdict refuses it — or an unconstrained sub-CA with
    /// no extended key usage).
    pub fn sub_ca_constraints(&self) -> Option<pki::constraints::SubCaConstraints> {
        self.body
            .policy
            .as_ref()
            .and_then(|p| p.sub_ca_constraints())
            .filter(|c| c.constrains_names() || !c.ekus.is_empty())
    }

    pub fn holder(&self, index: u8) -> Option<&ManifestHolder> {
        self.body.holders.iter().find(|h| h.index == index)
    }

    pub fn holder_by_id(&self, nitrokey_id: &str) -> Option<&ManifestHolder> {
        self.body
            .holders
            .iter()
            .find(|h| h.nitrokey_id == nitrokey_id)
    }

    /// Checks one share against this CA: same set, Feldman commitments, and the holder the
    /// manifest assigns to its index. `what` names the share's origin in errors (a file, a
    /// token).
    pub fn check_share(&self, share: &Share, what: &str) -> Result<(), ManifestError> {
        let named = |reason| ManifestError::Share {
            what: what.to_owned(),
            reason,
        };
        if let Some(version) = self.superseded_version(&share.set_id) {
            return Err(ManifestError::SupersededShare {
                what: what.to_owned(),
                version,
                current: self.set_version(),
            });
        }
        self.body.share_set.verify(share).map_err(named)?;
        let expected = self.holder(share.index).ok_or_else(|| {
            ManifestError::Inconsistent(format!("no holder for share {}", share.index))
        })?;
        if let Some(claimed) = &share.holder
            && claimed != &expected.nitrokey_id
        {
            return Err(ManifestError::WrongHolder {
                what: what.to_owned(),
                claimed: claimed.clone(),
                index: share.index,
                expected: expected.nitrokey_id.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_fingerprint;

    #[test]
    fn fingerprints_compare_in_any_common_spelling() {
        let colons = "E0:C0:25:85:45:DB:12:F8:FB:F1:F3:92:7A:7F:18:9C:7D:32:CD:34:21:56:93:7B:CF:23:58:E8:5F:41:FB:F9";
        let bare = colons.replace(':', "").to_lowercase();
        assert_eq!(normalize_fingerprint(colons).as_deref(), Some(colons));
        assert_eq!(normalize_fingerprint(&bare).as_deref(), Some(colons));
        let prefixed = format!("SHA256:{bare}");
        assert_eq!(normalize_fingerprint(&prefixed).as_deref(), Some(colons));
        assert_eq!(normalize_fingerprint(&bare[2..]), None);
        assert_eq!(normalize_fingerprint(&format!("{bare}00")), None);
        assert_eq!(normalize_fingerprint(&bare.replace('e', "g")), None);
    }
}

#[cfg(test)]
mod threshold_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ceremony;
    use crate::pki::CaKey;
    use crate::sss::shoup::SafePrimes;
    use crypto_bigint::{BoxedUint, Resize};

    fn threshold_manifest() -> Manifest {
        ceremony::test_threshold_ceremony("Threshold CA").manifest
    }

    #[test]
    fn a_signed_manifest_whose_threshold_key_is_not_the_certificates_is_refused() {
        let manifest = threshold_manifest();
        let verified = manifest.verify().unwrap();
        assert!(verified.threshold_key().is_some());

        // the dealer's own key signs a body whose n is not the certificate's: still refused
        let dealer = CaKey::from_rsa(
            SafePrimes::from_text(ceremony::TEST_PRIMES)
                .unwrap()
                .to_rsa_private_key()
                .unwrap(),
        )
        .unwrap();
        let mut body = manifest.signed.clone();
        let key = body.share_set.threshold_key.as_mut().unwrap();
        // another odd n of the same size with which v and every v_i stay units (a random
        // v shares a small factor with some candidates: step on until none does)
        loop {
            key.n = key
                .n
                .wrapping_add(BoxedUint::from(2u64).resize_unchecked(2048));
            if key.check().is_ok() {
                break;
            }
        }
        let err = Manifest::sign(body, &dealer).unwrap().verify().unwrap_err();
        assert!(
            err.to_string()
                .contains("the threshold key's modulus n is not the CA certificate's"),
            "{err}"
        );

        // a key share set of the wrong size for the manifest's key type
        let mut body = manifest.signed.clone();
        body.ca.key = "rsa-3072".into();
        let err = Manifest::sign(body, &dealer).unwrap().verify().unwrap_err();
        assert!(
            err.to_string().contains("the manifest says rsa-3072"),
            "{err}"
        );
    }
}
