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

/// What a TBSCertList says, read back from its bytes.
#[derive(Clone, Debug)]
pub struct CrlContents {
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: Option<OffsetDateTime>,
    pub revoked: Vec<Revoked>,
}

/// RFC 5280 reason code → the name `revoke` takes; no code means `unspecified`.
fn reason_name(code: Option<u8>) -> Option<&'static str> {
    Some(match code {
        None | Some(0) => "unspecified",
        Some(1) => "keyCompromise",
        Some(2) => "cACompromise",
        Some(3) => "affiliationChanged",
        Some(4) => "superseded",
        Some(5) => "cessationOfOperation",
        Some(6) => "certificateHold",
        Some(9) => "privilegeWithdrawn",
        Some(10) => "aACompromise",
        Some(_) => return None,
    })
}

/// Reads the TBSCertList `tbs` and checks that it is, byte for byte, the one this CA's
/// [`tbs_crl`] makes from what it says: nothing hidden besides what is read back.
pub fn read_tbs_crl(ca: &CaCertificate, tbs: &[u8]) -> Result<CrlContents, PkiError> {
    use x509_parser::revocation_list::TbsCertList;
    let bad = |why: String| PkiError::Build(format!("the to-be-signed CRL {why}"));
    let (rest, list) =
        TbsCertList::from_der(tbs).map_err(|e| bad(format!("does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("has trailing bytes".into()));
    }
    let number = list
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::CRLNumber(n) => Some(n.to_u64_digits()),
            _ => None,
        })
        .ok_or_else(|| bad("has no CRL number".into()))?;
    let number = match number.as_slice() {
        [] => 0,
        [n] => *n,
        _ => return Err(bad("has a CRL number over 64 bits".into())),
    };
    let mut revoked = Vec::with_capacity(list.revoked_certificates.len());
    for r in &list.revoked_certificates {
        let code = r.reason_code().map(|(_, c)| c.0);
        revoked.push(Revoked {
            serial_hex: hex::encode(r.raw_serial()),
            reason: reason_name(code)
                .ok_or_else(|| bad(format!("has an unknown reason code {code:?}")))?
                .to_owned(),
            revoked_at: r.revocation_date.timestamp(),
        });
    }
    let contents = CrlContents {
        number,
        this_update: list.this_update.to_datetime(),
        next_update: list.next_update.map(|t| t.to_datetime()),
        revoked,
    };
    if tbs_crl(ca, contents.number, &contents.revoked, contents.this_update)? != tbs {
        return Err(bad(
            "is not the CRL this CA makes from its number, time and entries (other issuer, \
             extensions or encoding)"
                .into(),
        ));
    }
    Ok(contents)
}

/// Checks that `tbs` is exactly the TBSCertificate [`tbs_certificate`] makes for `csr`
/// under `terms`; when it is not, says which part differs.
pub fn check_tbs_certificate(
    ca: &CaCertificate,
    csr: &Csr,
    terms: &Terms,
    tbs: &[u8],
) -> Result<(), PkiError> {
    use x509_parser::certificate::TbsCertificate;
    let bad = |why: String| PkiError::Build(format!("the to-be-signed certificate {why}"));
    let (rest, offered) =
        TbsCertificate::from_der(tbs).map_err(|e| bad(format!("does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("has trailing bytes".into()));
    }
    let expected_der = tbs_certificate(ca, csr, terms)?;
    if expected_der == tbs {
        return Ok(());
    }
    let (_, expected) = TbsCertificate::from_der(&expected_der)
        .map_err(|e| PkiError::Build(format!("the recomputed certificate: {e}")))?;
    let extensions = |t: &TbsCertificate<'_>| {
        t.extensions()
            .iter()
            .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
            .collect::<Vec<_>>()
    };
    let differs = if offered.raw_serial() != expected.raw_serial() {
        "serial number"
    } else if offered.subject.as_raw() != expected.subject.as_raw() {
        "subject"
    } else if offered.issuer.as_raw() != expected.issuer.as_raw() {
        "issuer"
    } else if offered.validity != expected.validity {
        "validity"
    } else if offered.subject_pki.raw != expected.subject_pki.raw {
        "public key"
    } else if extensions(&offered) != extensions(&expected) {
        "extensions (SANs, key usage, CA flag, …)"
    } else {
        "encoding"
    };
    Err(bad(format!(
        "differs from the one the CSR and the terms give: its {differs} differs"
    )))
}
