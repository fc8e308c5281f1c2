//! Certificates: CA keys, the self-signed CA certificate, CSR checks, issuance profiles.
//!
//! Pure: this module sees bytes and returns bytes; it knows nothing of files or tokens.

pub mod batch;
mod ca;
pub mod constraints;
mod crl;
mod csr;
mod issue;
mod key;
mod summary;
mod tbs;
pub mod text;

pub use ca::{CaCertificate, CaSubject, check_signed_by, self_signed};
pub use crl::{CRL_VALIDITY_DAYS, REASONS, Revoked, parse_reason, sign_crl};
pub use csr::{Csr, CsrKey, San};
pub use issue::{
    CertificateView, Issued, MAX_URL_LEN, MAX_URLS, OCSP_MAX_DAYS, Profile, Terms, Urls,
    check as check_request, check_url, issue,
};
pub use key::{CaKey, KeyAlgorithm, RsaNumbers, rsa_public_numbers, verify_signature};
pub use summary::{CertificateSummary, CrlEntry, CrlSummary};
pub use tbs::{
    CrlContents, assemble_certificate, assemble_crl, check_tbs_certificate, read_tbs_crl,
    tbs_certificate, tbs_crl,
};

use sha2::{Digest, Sha256};

/// Errors of key handling, CSR checks and issuance. Each names what is wrong with the
/// input so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error(
        "unknown key type {0:?} (expected one of: rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384)"
    )]
    UnknownKeyAlgorithm(String),
    #[error("cryptographic operation failed: {0}")]
    Crypto(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("malformed certificate signing request: {0}")]
    MalformedCsr(String),
    #[error(
        "the CSR's {field} contains {why} (U+{code:04X}) at character {position}: such text can make a holder read another name than the one issued (hint: make the request again without it)"
    )]
    UnsafeText {
        field: String,
        why: &'static str,
        code: u32,
        position: usize,
    },
    #[error("the CSR's signature does not verify: it was altered or not signed by its key")]
    CsrSignatureInvalid,
    #[error("the CSR's RSA key has {bits} bits; at least 2048 are required")]
    WeakRsaKey { bits: usize },
    #[error("unsupported key in CSR: {0}")]
    UnsupportedCsrKey(String),
    #[error("the {profile} profile needs {what} in the CSR's subjectAltName")]
    MissingSan {
        profile: Profile,
        what: &'static str,
    },
    #[error("invalid DNS name {0:?} in the CSR")]
    InvalidDnsName(String),
    #[error("invalid e-mail address {0:?} in the CSR")]
    InvalidEmail(String),
    #[error("the {0} profile needs a non-empty subject")]
    EmptySubject(Profile),
    #[error(
        "a validity of {days} days ends after the CA certificate does ({ca_not_after}); at most {max_days} days are possible"
    )]
    ValidityPastCa {
        days: u32,
        max_days: i64,
        ca_not_after: String,
    },
    #[error(
        "the {profile} profile allows at most {max_days} days of validity, not {days} (hint: ask for fewer --days)"
    )]
    ValidityTooLong {
        profile: Profile,
        days: u32,
        max_days: u32,
    },
    #[error(
        "{0:?} cannot go into a certificate (hint: use a plain http:// URL of printable ASCII, at most 256 characters, at most 4 of a kind)"
    )]
    BadUrl(String),
    #[error("validity must be at least one day")]
    ZeroValidity,
    #[error(
        "the sub-CA's request names {0}, outside the name constraints the CA policy gives it \
         (hint: make the request without it, or change the policy's sub-ca subtrees)"
    )]
    OutsideConstraints(String),
    #[error("this CA's path length constraint forbids issuing a sub-CA")]
    PathLenExhausted,
    #[error("invalid CA certificate: {0}")]
    BadCaCertificate(String),
    #[error("certificate construction failed: {0}")]
    Build(String),
    #[error("cannot read the {what}: {why}")]
    Unreadable { what: &'static str, why: String },
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Build(e.to_string())
    }
}

/// A random positive serial number of 16 bytes (127 bits of entropy, RFC 5280 §4.1.2.2).
pub fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x01;
    }
    rcgen::SerialNumber::from_slice(&bytes)
}

/// Key identifier per RFC 7093 §2 method 1: the leftmost 160 bits of SHA-256 over the
/// subjectPublicKey bits.
pub(crate) fn key_identifier(subject_public_key: &[u8]) -> Vec<u8> {
    Sha256::digest(subject_public_key)[..20].to_vec()
}

/// Lower-case hex SHA-256 of some bytes; used for fingerprints and CSR digests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `AA:BB:…` SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Wraps DER in PEM armour with the given label (64-column base64, LF line ends).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der), config)
}

#[cfg(test)]
mod tests;
