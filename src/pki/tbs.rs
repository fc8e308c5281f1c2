//! To-be-signed bytes for a signer outside this process (a threshold CA): the issuing code
//! runs as usual with a recorder in place of the key, and the signature made elsewhere is
//! put back around exactly the recorded bytes.

use super::issue::issue_with;
use super::{CaCertificate, Csr, PkiError, Revoked, Terms, crl::sign_crl_with};
use ::time::OffsetDateTime;
use std::cell::RefCell;
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};

/// The DER AlgorithmIdentifier of sha256WithRSAEncryption with its NULL parameters, as
/// rcgen writes it: the only algorithm a threshold (Shoup RSA) signature can be.
const SHA256_WITH_RSA: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];

/// rsaEncryption, the SubjectPublicKeyInfo algorithm of an RSA key.
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// Stands in for the CA key: announces sha256WithRSAEncryption, keeps the bytes it is asked
/// to sign, and signs nothing.
struct TbsRecorder {
    /// The CA's RSAPublicKey (the subjectPublicKey bits of its certificate).
    public_raw: Vec<u8>,
    tbs: RefCell<Option<Vec<u8>>>,
}

impl TbsRecorder {
    fn for_ca(ca: &CaCertificate) -> Result<Self, PkiError> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(&ca.spki_der)
            .map_err(|e| PkiError::BadCaCertificate(e.to_string()))?;
        if spki.algorithm.algorithm.to_id_string() != RSA_ENCRYPTION {
            return Err(PkiError::Build(
                "a threshold signature needs an RSA CA key".into(),
            ));
        }
        Ok(TbsRecorder {
            public_raw: spki.subject_public_key.data.to_vec(),
            tbs: RefCell::new(None),
        })
    }

    fn recorded(self) -> Result<Vec<u8>, PkiError> {
        self.tbs
            .into_inner()
            .ok_or_else(|| PkiError::Build("nothing was given to sign".into()))
    }
}

impl rcgen::PublicKeyData for TbsRecorder {
    fn der_bytes(&self) -> &[u8] {
        &self.public_raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for TbsRecorder {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.tbs.replace(Some(msg.to_vec()));
        Ok(Vec::new())
    }
}

/// The DER TBSCertificate that [`super::issue`] would sign for `csr` under `terms` with
/// this CA's key: same serial, validity and extensions, made by the same code.
pub fn tbs_certificate(ca: &CaCertificate, csr: &Csr, terms: &Terms) -> Result<Vec<u8>, PkiError> {
    let recorder = TbsRecorder::for_ca(ca)?;
    issue_with(&recorder, ca, csr, terms)?;
    recorder.recorded()
}

/// The DER TBSCertList that [`super::sign_crl`] would sign with this CA's key.
pub fn tbs_crl(
    ca: &CaCertificate,
    number: u64,
    revoked: &[Revoked],
    now: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    let recorder = TbsRecorder::for_ca(ca)?;
    sign_crl_with(&recorder, ca, number, revoked, now)?;
    recorder.recorded()
}

/// A certificate: SEQUENCE { `tbs`, sha256WithRSAEncryption, BIT STRING `signature` }.
/// The signature is not checked here; check the result with [`super::check_signed_by`].
pub fn assemble_certificate(tbs: &[u8], signature: &[u8]) -> Result<Vec<u8>, PkiError> {
    assemble(tbs, signature)
}

/// A CRL: SEQUENCE { `tbs`, sha256WithRSAEncryption, BIT STRING `signature` }.
pub fn assemble_crl(tbs: &[u8], signature: &[u8]) -> Result<Vec<u8>, PkiError> {
    assemble(tbs, signature)
}

fn assemble(tbs: &[u8], signature: &[u8]) -> Result<Vec<u8>, PkiError> {
    if tbs.first() != Some(&0x30) || signature.is_empty() {
        return Err(PkiError::Build(
            "to-be-signed bytes must be a DER SEQUENCE and the signature non-empty".into(),
        ));
    }
    let mut bits = vec![0x03];
    push_length(&mut bits, signature.len() + 1);
    bits.push(0); // no unused bits
    bits.extend_from_slice(signature);
    let body_len = tbs.len() + SHA256_WITH_RSA.len() + bits.len();
    let mut der = vec![0x30];
    push_length(&mut der, body_len);
    der.extend_from_slice(tbs);
    der.extend_from_slice(&SHA256_WITH_RSA);
    der.extend_from_slice(&bits);
    Ok(der)
}

/// A DER definite length.
fn push_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    out.push(0x80 | (bytes.len() - first) as u8);
    out.extend_from_slice(&bytes[first..]);
}
