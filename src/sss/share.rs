//! The share format: versioned, self-describing JSON whose secret value is zeroized on drop
//! and never printed.

use super::{SCHEME, ShareSet, SssError, THRESHOLD_SCHEME};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

pub(super) const FORMAT: &str = "nkpki-share";
/// Version 1: a Feldman share of a KEK (reconstruct mode).
pub(super) const VERSION: u32 = 1;
/// Version 2: a Shoup threshold-RSA key share s_i (threshold mode).
pub(super) const THRESHOLD_VERSION: u32 = 2;

/// Identity of a share set (128 bits, hex). For a CA it is also the CA id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SetId(pub String);

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A share's secret value: the big-endian bytes of a P-256 scalar (reconstruct mode) or of
/// a threshold-RSA key share (threshold mode), boxed so that moving a share never copies
/// the value, and wiped on drop.
#[derive(PartialEq, Eq)]
pub struct ShareValue(Box<[u8]>);

/// Longest value a share may carry: a threshold key share of a 4096-bit key and its index.
const MAX_VALUE_LEN: usize = 1 + 512;

impl ShareValue {
    pub(super) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::from_slice(&bytes)
    }

    pub(super) fn from_slice(bytes: &[u8]) -> Self {
        let mut value = ShareValue(vec![0u8; bytes.len()].into_boxed_slice());
        value.0.copy_from_slice(bytes);
        value
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Clone for ShareValue {
    fn clone(&self) -> Self {
        Self::from_slice(&self.0)
    }
}

impl Zeroize for ShareValue {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for ShareValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for ShareValue {}

impl fmt::Debug for ShareValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for ShareValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Zeroizing::new(vec![0u8; 2 * self.0.len()]);
        hex::encode_to_slice(&self.0[..], &mut text[..]).map_err(serde::ser::Error::custom)?;
        // hex digits are ASCII: this cannot fail
        let text = std::str::from_utf8(&text[..]).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

/// Decodes the hex text where the parser holds it (borrowed from the input, or its scratch
/// buffer) straight into the boxed value: no owned copy of the text is made.
struct ValueVisitor;

impl serde::de::Visitor<'_> for ValueVisitor {
    type Value = ShareValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a share value in hex")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShareValue, E> {
        if text.is_empty() || text.len() % 2 != 0 || text.len() > 2 * MAX_VALUE_LEN {
            return Err(E::custom("share value must be hex digits of a share"));
        }
        let mut value = ShareValue(vec![0u8; text.len() / 2].into_boxed_slice());
        hex::decode_to_slice(text.as_bytes(), &mut value.0[..])
            .map_err(|_| E::custom("share value must be hex digits of a share"))?;
        Ok(value)
    }
}

impl<'de> Deserialize<'de> for ShareValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ValueVisitor)
    }
}

/// One holder's share of a KEK.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub format: String,
    pub version: u32,
    pub scheme: String,
    pub set_id: SetId,
    pub threshold: u8,
    pub total: u8,
    /// 1-based x coordinate of the share.
    pub index: u8,
    /// The holder the share was made for (a Nitrokey id such as `NK001`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    pub value: ShareValue,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("set_id", &self.set_id)
            .field("threshold", &self.threshold)
            .field("total", &self.total)
            .field("index", &self.index)
            .field("holder", &self.holder)
            .field("value", &self.value)
            .finish()
    }
}

impl Share {
    pub(super) fn check_header(&self) -> Result<(), SssError> {
        if self.format != FORMAT {
            return Err(SssError::MalformedSet(format!(
                "not an nkpki share (format {:?})",
                self.format
            )));
        }
        let expected_version = match self.scheme.as_str() {
            SCHEME => VERSION,
            THRESHOLD_SCHEME => THRESHOLD_VERSION,
            other => return Err(SssError::UnknownScheme(other.to_owned())),
        };
        if self.version != expected_version {
            return Err(SssError::UnknownVersion(self.version));
        }
        Ok(())
    }

    /// A short name for messages: `share 2 (NK002)`.
    pub fn describe(&self) -> String {
        match &self.holder {
            Some(h) => format!("share {} ({h})", self.index),
            None => format!("share {}", self.index),
        }
    }

    /// A public fingerprint of a reconstruct-mode share: the first 64 bits of SHA-256 over
    /// g^value, hex. Anyone can compute it from the manifest's commitments, so a holder can
    /// compare it with what was printed at the ceremony without revealing the share.
    /// [`ShareSet::fingerprint_of`] covers both modes.
    pub fn fingerprint(&self) -> Result<String, SssError> {
        use sha2::{Digest, Sha256};
        let point = super::feldman::public_point(&self.value)?;
        Ok(hex::encode(&Sha256::digest(&point)[..8]))
    }

    /// Signs `msg` with a reconstruct-mode share (ECDSA P-256, DER): proof that whoever
    /// made `msg` held this share. Anyone checks it with
    /// [`ShareSet::verify_share_signature`]; [`ShareSet::sign_with_share`] covers both modes.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SssError> {
        super::feldman::sign_with_share(&self.value, msg)
    }

    /// The share as JSON text, in memory that is wiped on drop.
    pub fn to_json(&self) -> Zeroizing<String> {
        Zeroizing::new(serde_json::to_string_pretty(self).unwrap_or_default())
    }
}

/// A standalone share as written by `nkpki split`: the share and the public set it belongs
/// to, so that any M such files are enough to recover the secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareFile {
    pub share: Share,
    pub set: ShareSet,
}

impl ShareFile {
    pub fn to_json(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(serde_json::to_string_pretty(self).unwrap_or_default());
        text.push('\n');
        text
    }
}
