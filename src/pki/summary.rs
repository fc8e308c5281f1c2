//! What a certificate or a CRL says, read back from its DER: what commands report to
//! scripts (`--json`), so the report is the signed object, not what was asked for.

use super::{PkiError, San};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

/// An issued certificate, field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertificateSummary {
    /// Lower-case hex of the serial number's bytes (`openssl x509 -serial`, lower case).
    pub serial: String,
    /// `CN=…, O=…` in certificate order.
    pub subject: String,
    pub issuer: String,
    /// `DNS:…`, `IP:…`, `email:…`.
    pub sans: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub sha256_fingerprint: String,
}

/// A revoked certificate as a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CrlEntry {
    pub serial: String,
    /// RFC 3339, UTC.
    pub revoked_at: String,
    /// RFC 5280 name (`keyCompromise`…); `unspecified` when the CRL gives no reason code.
    pub reason: String,
}

/// A CRL, field by field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CrlSummary {
    pub issuer: String,
    /// The cRLNumber extension, if present and under 2^64.
    pub number: Option<u64>,
    /// RFC 3339, UTC.
    pub this_update: String,
    pub next_update: Option<String>,
    pub revoked: Vec<CrlEntry>,
    /// Lower-case hex SHA-256 of the CRL's DER.
    pub sha256: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

impl CertificateSummary {
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let bad = |why: String| PkiError::Unreadable {
            what: "certificate",
            why,
        };
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .map(|n| San::from_general_name(n).map(|s| s.to_string()))
                .collect::<Result<_, _>>()?,
            Ok(None) => Vec::new(),
            Err(e) => return Err(bad(e.to_string())),
        };
        Ok(CertificateSummary {
            serial: hex::encode(cert.raw_serial()),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            not_before: rfc3339(cert.validity().not_before.to_datetime()),
            not_after: rfc3339(cert.validity().not_after.to_datetime()),
            sha256_fingerprint: super::sha256_hex(der),
        })
    }

    /// The first certificate of a PEM text (a chain starts with the issued certificate).
    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let (_, block) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Unreadable {
                what: "certificate",
                why: format!("PEM: {e}"),
            })?;
        Self::from_der(&block.contents)
    }
}

/// RFC 5280 §5.3.1 reason names by code.
fn reason_name(code: u8) -> String {
    match code {
        0 => "unspecified",
        1 => "keyCompromise",
        2 => "cACompromise",
        3 => "affiliationChanged",
        4 => "superseded",
        5 => "cessationOfOperation",
        6 => "certificateHold",
        8 => "removeFromCRL",
        9 => "privilegeWithdrawn",
        10 => "aACompromise",
        other => return format!("reason {other}"),
    }
    .to_owned()
}

impl CrlSummary {
    pub fn from_der(der: &[u8]) -> Result<Self, PkiError> {
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| PkiError::Unreadable {
                what: "CRL",
                why: e.to_string(),
            })?;
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| CrlEntry {
                serial: hex::encode(r.raw_serial()),
                revoked_at: rfc3339(r.revocation_date.to_datetime()),
                reason: r
                    .reason_code()
                    .map_or_else(|| reason_name(0), |(_, code)| reason_name(code.0)),
            })
            .collect();
        Ok(CrlSummary {
            issuer: crl.issuer().to_string(),
            number: crl.crl_number().and_then(|n| u64::try_from(n).ok()),
            this_update: rfc3339(crl.last_update().to_datetime()),
            next_update: crl.next_update().map(|t| rfc3339(t.to_datetime())),
            revoked,
            sha256: super::sha256_hex(der),
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        let (_, block) =
            x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::Unreadable {
                what: "CRL",
                why: format!("PEM: {e}"),
            })?;
        Self::from_der(&block.contents)
    }
}
