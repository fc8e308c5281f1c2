//! AEAD wrapping of a payload under a key derived from the KEK.

use super::SssError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

const AEAD: &str = "chacha20poly1305";
const HKDF_INFO: &[u8] = b"nkpki kek -> aead key v1";

/// A payload sealed under the KEK. Public: without the KEK it reveals only its length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wrapped {
    pub aead: String,
    /// 96-bit nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ciphertext: String,
}

fn cipher(kek: &[u8; 32]) -> Result<ChaCha20Poly1305, SssError> {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(None, kek)
        .expand(HKDF_INFO, key.as_mut())
        .map_err(|_| SssError::Internal("HKDF expand".into()))?;
    Ok(ChaCha20Poly1305::new(Key::from_slice(key.as_ref())))
}

impl Wrapped {
    pub(super) fn seal(kek: &[u8; 32], payload: &[u8], aad: &[u8]) -> Result<Self, SssError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher(kek)?
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: payload, aad })
            .map_err(|_| SssError::Internal("AEAD seal".into()))?;
        Ok(Wrapped {
            aead: AEAD.to_owned(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        })
    }

    pub(super) fn open(&self, kek: &[u8; 32], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SssError> {
        if self.aead != AEAD {
            return Err(SssError::MalformedSet(format!(
                "unknown AEAD {:?}",
                self.aead
            )));
        }
        let nonce = B64
            .decode(&self.nonce)
            .ok()
            .filter(|n| n.len() == 12)
            .ok_or_else(|| SssError::MalformedSet("wrapped nonce".into()))?;
        let ciphertext = B64
            .decode(&self.ciphertext)
            .map_err(|_| SssError::MalformedSet("wrapped ciphertext".into()))?;
        cipher(kek)?
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SssError::UnwrapFailed)
    }
}
