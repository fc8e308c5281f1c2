//! The CA's private key: generated in memory, signed with in memory, wiped on drop. It
//! implements rcgen's signing traits itself so rcgen never owns the key.

use super::PkiError;
use rand::rngs::SysRng;
use rsa::Generate;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{Signer, Verifier};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

/// The key types a CA can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcdsaP256,
    EcdsaP384,
}

impl KeyAlgorithm {
    pub const NAMES: [&'static str; 5] = [
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
        "ecdsa-p256",
        "ecdsa-p384",
    ];

    /// The modulus size of an RSA algorithm, `None` for ECDSA.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyAlgorithm {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "rsa-2048" => KeyAlgorithm::Rsa2048,
            "rsa-3072" => KeyAlgorithm::Rsa3072,
            "rsa-4096" => KeyAlgorithm::Rsa4096,
            "ecdsa-p256" => KeyAlgorithm::EcdsaP256,
            "ecdsa-p384" => KeyAlgorithm::EcdsaP384,
            other => return Err(PkiError::UnknownKeyAlgorithm(other.to_owned())),
        })
    }
}

enum Inner {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// A CA private key. `Debug` never prints it; every backing type zeroizes on drop.
pub struct CaKey {
    inner: Inner,
    algorithm: KeyAlgorithm,
    /// The subjectPublicKey bits (PKCS#1 RSAPublicKey or SEC1 point), for rcgen.
    public_raw: Vec<u8>,
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaKey({}, <redacted>)", self.algorithm)
    }
}

fn crypto(context: &str) -> impl Fn(String) -> PkiError + '_ {
    move |e| PkiError::Crypto(format!("{context}: {e}"))
}

impl CaKey {
    /// Generates a fresh key from the operating system's random source.
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, PkiError> {
        let inner = match algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits = match algorithm {
                    KeyAlgorithm::Rsa2048 => 2048,
                    KeyAlgorithm::Rsa3072 => 3072,
                    _ => 4096,
                };
                let key = rsa::PrivateKey::new(&mut SysRng, bits)
                    .map_err(|e| crypto("RSA key generation")(e.to_string()))?;
                Inner::Rsa(Box::new(key))
            }
            KeyAlgorithm::EcdsaP256 => Inner::P256(
                p256::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng)
                    .map_err(|e| crypto("P-256 key generation")(e.to_string()))?,
            ),
            KeyAlgorithm::EcdsaP384 => Inner::P384(
                p384::ecdsa::SigningKey::try_generate_from_rng(&mut SysRng)
                    .map_err(|e| crypto("P-384 key generation")(e.to_string()))?,
            ),
        };
        Self::from_inner(inner, algorithm)
    }

    /// Wraps an RSA private key made elsewhere (the threshold ceremony's dealer builds it
    /// from its safe primes to self-sign the CA certificate and the manifest).
    pub fn from_rsa(key: rsa::PrivateKey) -> Result<Self, PkiError> {
        let algorithm = match rsa::traits::PublicKeyParts::size(&key) * 8 {
            2048 => KeyAlgorithm::Rsa2048,
            3072 => KeyAlgorithm::Rsa3072,
            4096 => KeyAlgorithm::Rsa4096,
            bits => {
                return Err(PkiError::Crypto(format!(
                    "unsupported RSA CA key size {bits}"
                )));
            }
        };
        Self::from_inner(Inner::Rsa(Box::new(key)), algorithm)
    }

    fn from_inner(inner: Inner, algorithm: KeyAlgorithm) -> Result<Self, PkiError> {
        let public_raw = match &inner {
            Inner::Rsa(k) => k
                .as_public_key()
                .to_pkcs1_der()
                .map_err(|e| crypto("RSA public key")(e.to_string()))?
                .into_vec(),
            Inner::P256(k) => k.verifying_key().to_sec1_bytes().to_vec(),
            Inner::P384(k) => k.verifying_key().to_sec1_bytes().to_vec(),
        };
        Ok(CaKey {
            inner,
            algorithm,
            public_raw,
        })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The private key as PKCS#8 DER, in memory that is wiped on drop.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, PkiError> {
        let doc = match &self.inner {
            Inner::Rsa(k) => k.to_pkcs8_der(),
            Inner::P256(k) => k.to_pkcs8_der(),
            Inner::P384(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| crypto("PKCS#8 encoding")(e.to_string()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// Reads a PKCS#8 DER private key of one of the supported types.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PkiError> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Self::from_inner(Inner::P256(k), KeyAlgorithm::EcdsaP256);
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Self::from_inner(Inner::P384(k), KeyAlgorithm::EcdsaP384);
        }
        let k = rsa::PrivateKey::from_pkcs8_der(der).map_err(|_| {
            PkiError::Crypto("the unwrapped CA key is not a supported PKCS#8 key".into())
        })?;
        let algorithm = match rsa::traits::PublicKeyParts::size(&k) * 8 {
            2048 => KeyAlgorithm::Rsa2048,
            3072 => KeyAlgorithm::Rsa3072,
            4096 => KeyAlgorithm::Rsa4096,
            bits => {
                return Err(PkiError::Crypto(format!(
                    "unsupported RSA CA key size {bits}"
                )));
            }
        };
        Self::from_inner(Inner::Rsa(Box::new(k)), algorithm)
    }

    /// The SubjectPublicKeyInfo DER of the public key.
    pub fn spki_der(&self) -> Result<Vec<u8>, PkiError> {
        let doc = match &self.inner {
            Inner::Rsa(k) => k.as_public_key().to_public_key_der(),
            Inner::P256(k) => k.verifying_key().to_public_key_der(),
            Inner::P384(k) => k.verifying_key().to_public_key_der(),
        }
        .map_err(|e| crypto("public key encoding")(e.to_string()))?;
        Ok(doc.into_vec())
    }

    /// Signs `msg` with the algorithm the key's certificate announces (PKCS#1 v1.5 with
    /// SHA-256, ECDSA with SHA-256 or SHA-384); ECDSA signatures are DER.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, PkiError> {
        match &self.inner {
            Inner::Rsa(k) => k
                .pkcs1v15_sign::<Sha256>(msg)
                .map_err(|e| crypto("RSA signature")(e.to_string())),
            Inner::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                Ok(sig.to_der().as_bytes().to_vec())
            }
            Inner::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(msg);
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

impl rcgen::PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public_raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.algorithm {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                &rcgen::PKCS_RSA_SHA256
            }
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        CaKey::sign(self, msg).map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// The modulus and exponent of an RSA public key, big-endian.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaNumbers {
    pub n: Vec<u8>,
    pub e: Vec<u8>,
}

/// The (n, e) of an RSA SubjectPublicKeyInfo; `None` for any other key type.
pub fn rsa_public_numbers(spki_der: &[u8]) -> Option<RsaNumbers> {
    use rsa::traits::PublicKeyParts;
    let k = rsa::PublicKey::from_public_key_der(spki_der).ok()?;
    Some(RsaNumbers {
        n: k.n_bytes().into_vec(),
        e: k.e_bytes().into_vec(),
    })
}

/// Verifies a signature made by [`CaKey::sign`] against a SubjectPublicKeyInfo.
pub fn verify_signature(spki_der: &[u8], msg: &[u8], signature: &[u8]) -> Result<(), PkiError> {
    let bad = || PkiError::BadSignature;
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(spki_der) {
        let sig = p256::ecdsa::Signature::from_der(signature).map_err(|_| bad())?;
        return k.verify(msg, &sig).map_err(|_| bad());
    }
    if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(spki_der) {
        let sig = p384::ecdsa::Signature::from_der(signature).map_err(|_| bad())?;
        return k.verify(msg, &sig).map_err(|_| bad());
    }
    let k = rsa::PublicKey::from_public_key_der(spki_der)
        .map_err(|_| PkiError::Crypto("unsupported public key type".into()))?;
    k.pkcs1v15_verify::<Sha256>(msg, signature)
        .map_err(|_| bad())
}
