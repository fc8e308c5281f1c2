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

/// A share's secret value: the big-endian bytes of a P-256 scalar.
#[derive(Clone, PartialEq, Eq, Zeroize)]
#[zeroize(drop)]
pub struct ShareValue([u8; 32]);

impl ShareValue {
    pub(super) fn from_bytes(bytes: [u8; 32]) -> Self {
        ShareValue(bytes)
    }

    pub(super) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ShareValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for ShareValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(hex::encode(self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for ShareValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.as_bytes(), &mut bytes)
            .map_err(|_| serde::de::Error::custom("share value must be 64 hex digits"))?;
        let value = ShareValue(bytes);
        bytes.zeroize();
        Ok(value)
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
