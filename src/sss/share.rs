//! The share format: versioned, self-describing JSON whose secret value is zeroized on drop
//! and never printed.

use super::{SCHEME, ShareSet, SssError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

pub(super) const FORMAT: &str = "nkpki-share";
pub(super) const VERSION: u32 = 1;

/// Identity of a share set (128 bits, hex). For a CA it is also the CA id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SetId(pub String);

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A share's secret value: the big-endian bytes of a P-256 scalar, boxed so that moving a
/// share never copies the value (moves of a plain array leave copies on the stack), and
/// wiped on drop.
#[derive(PartialEq, Eq)]
pub struct ShareValue(Box<[u8; 32]>);

impl ShareValue {
    pub(super) fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut value = ShareValue(Box::new([0u8; 32]));
        value.0.copy_from_slice(&bytes);
        value
    }

    pub(super) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Clone for ShareValue {
    fn clone(&self) -> Self {
        let mut value = ShareValue(Box::new([0u8; 32]));
        value.0.copy_from_slice(&self.0[..]);
        value
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
        let mut text = Zeroizing::new([0u8; 64]);
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
        f.write_str("64 hex digits")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ShareValue, E> {
        let mut value = ShareValue(Box::new([0u8; 32]));
        hex::decode_to_slice(text.as_bytes(), &mut value.0[..])
            .map_err(|_| E::custom("share value must be 64 hex digits"))?;
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
        if self.version != VERSION {
            return Err(SssError::UnknownVersion(self.version));
        }
        if self.scheme != SCHEME {
            return Err(SssError::UnknownScheme(self.scheme.clone()));
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

    /// A public fingerprint of the share: the first 64 bits of SHA-256 over g^value, hex.
    /// Anyone can compute it from the manifest's commitments, so a holder can compare it
    /// with what was printed at the ceremony without revealing the share.
    pub fn fingerprint(&self) -> Result<String, SssError> {
        use sha2::{Digest, Sha256};
        let point = super::feldman::public_point(&self.value)?;
        Ok(hex::encode(&Sha256::digest(&point)[..8]))
    }

    /// Signs `msg` with the share (ECDSA P-256, DER): proof that whoever made `msg` held
    /// this share. Anyone checks it with [`ShareSet::verify_share_signature`].
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
