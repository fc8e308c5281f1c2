//! The self-signed CA certificate made at the ceremony.

use super::{CaKey, PkiError, key_identifier, random_serial};
use ::time::OffsetDateTime;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod,
    KeyUsagePurpose,
};
use x509_parser::prelude::*;

/// The CA's distinguished name, as the ceremony parameters give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSubject {
    pub name: String,
    pub org: String,
    /// Two upper-case letters (ISO 3166).
    pub country: String,
}

/// `now + years`, keeping the calendar day (29 February becomes 28 February).
fn add_years(now: OffsetDateTime, years: u32) -> Result<OffsetDateTime, PkiError> {
    let year = now.year() + years as i32;
    now.replace_year(year)
        .or_else(|_| now.replace_day(28).and_then(|d| d.replace_year(year)))
        .map_err(|e| PkiError::Build(format!("validity end: {e}")))
}

/// Makes the self-signed CA certificate; returns its DER.
pub fn self_signed(
    key: &CaKey,
    subject: &CaSubject,
    validity_years: u32,
    path_len: Option<u8>,
    now: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    let now = now
        .replace_nanosecond(0)
        .map_err(|e| PkiError::Build(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.not_before = now;
    params.not_after = add_years(now, validity_years)?;
    params.serial_number = Some(random_serial());
    let mut dn = DistinguishedName::new();
    let country = rcgen::string::PrintableString::try_from(subject.country.as_str())
        .map_err(|_| PkiError::Build("country is not a PrintableString".into()))?;
    dn.push(DnType::CountryName, DnValue::PrintableString(country));
    dn.push(DnType::OrganizationName, subject.org.as_str());
    dn.push(DnType::CommonName, subject.name.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method =
        KeyIdMethod::PreSpecified(key_identifier(rcgen::PublicKeyData::der_bytes(key)));
    let cert = params.self_signed(key)?;
    Ok(cert.der().to_vec())
}

fn first<'a>(mut attrs: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>) -> Option<String> {
    attrs
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

/// What issuance needs to know of the CA certificate.
#[derive(Clone, Debug)]
pub struct CaCertificate {
    pub der: Vec<u8>,
    pub not_after: OffsetDateTime,
    pub path_len: Option<u32>,
    pub spki_der: Vec<u8>,
    /// The subjectKeyIdentifier's value (empty if absent).
    pub subject_key_id: Vec<u8>,
    pub subject: String,
    /// The subject's (CN, O, C) values, when present and strings.
    pub subject_cn_o_c: (Option<String>, Option<String>, Option<String>),
}

impl CaCertificate {
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| PkiError::BadCaCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(PkiError::BadCaCertificate("trailing bytes".into()));
        }
        let bc = cert
            .basic_constraints()
            .map_err(|e| PkiError::BadCaCertificate(e.to_string()))?
            .ok_or_else(|| PkiError::BadCaCertificate("no basicConstraints".into()))?;
        if !bc.value.ca {
            return Err(PkiError::BadCaCertificate(
                "basicConstraints CA is false".into(),
            ));
        }
        Ok(CaCertificate {
            der: der.to_vec(),
            not_after: cert.validity().not_after.to_datetime(),
            path_len: bc.value.path_len_constraint,
            spki_der: cert.public_key().raw.to_vec(),
            subject_key_id: cert
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                    _ => None,
                })
                .unwrap_or_default(),
            subject: cert.subject().to_string(),
            subject_cn_o_c: (
                first(cert.subject().iter_common_name()),
                first(cert.subject().iter_organization()),
                first(cert.subject().iter_country()),
            ),
        })
    }

    pub fn pem(&self) -> String {
        super::pem_encode("CERTIFICATE", &self.der)
    }
}

/// Checks that `der` is a certificate whose signature verifies with `ca`'s key: what a
/// signer outside this process returned is checked before it is recorded.
pub fn check_signed_by(ca: &CaCertificate, der: &[u8]) -> Result<(), PkiError> {
    let (_, issuer) = X509Certificate::from_der(&ca.der)
        .map_err(|e| PkiError::BadCaCertificate(e.to_string()))?;
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| PkiError::Build(format!("the signed certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(PkiError::Build(
            "trailing bytes after the signed certificate".into(),
        ));
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|_| PkiError::BadSignature)
}
