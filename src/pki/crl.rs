//! Certificate revocation lists signed by the CA key.

use super::{CaCertificate, CaKey, PkiError};
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// How long a CRL is valid: the next one is due before this.
pub const CRL_VALIDITY_DAYS: i64 = 7;

/// RFC 5280 reason names accepted by `revoke`.
pub const REASONS: [&str; 9] = [
    "unspecified",
    "keyCompromise",
    "cACompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "certificateHold",
    "privilegeWithdrawn",
    "aACompromise",
];

pub fn parse_reason(name: &str) -> Option<RevocationReason> {
    Some(match name {
        "unspecified" => RevocationReason::Unspecified,
        "keyCompromise" => RevocationReason::KeyCompromise,
        "cACompromise" => RevocationReason::CaCompromise,
        "affiliationChanged" => RevocationReason::AffiliationChanged,
        "superseded" => RevocationReason::Superseded,
        "cessationOfOperation" => RevocationReason::CessationOfOperation,
        "certificateHold" => RevocationReason::CertificateHold,
        "privilegeWithdrawn" => RevocationReason::PrivilegeWithdrawn,
        "aACompromise" => RevocationReason::AaCompromise,
        _ => return None,
    })
}

/// A revoked certificate: serial (hex), reason name, revocation time (Unix seconds).
#[derive(Clone, Debug)]
pub struct Revoked {
    pub serial_hex: String,
    pub reason: String,
    pub revoked_at: i64,
}

/// Big-endian bytes of `n` as a minimal positive DER INTEGER body.
fn minimal_positive(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut out = bytes[first..].to_vec();
    if out[0] & 0x80 != 0 {
        out.insert(0, 0);
    }
    out
}

/// Signs CRL number `number` listing `revoked`; returns (DER, PEM).
pub fn sign_crl(
    key: &CaKey,
    ca: &CaCertificate,
    number: u64,
    revoked: &[Revoked],
    now: OffsetDateTime,
) -> Result<(Vec<u8>, String), PkiError> {
    let der = sign_crl_with(key, ca, number, revoked, now)?;
    let pem = super::pem_encode("X509 CRL", &der);
    Ok((der, pem))
}

/// The one path that makes a CRL, whoever signs (see [`super::issue`]'s `issue_with`).
pub(super) fn sign_crl_with(
    signer: &impl rcgen::SigningKey,
    ca: &CaCertificate,
    number: u64,
    revoked: &[Revoked],
    now: OffsetDateTime,
) -> Result<Vec<u8>, PkiError> {
    let now = now
        .replace_nanosecond(0)
        .map_err(|e| PkiError::Build(e.to_string()))?;
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for r in revoked {
        let serial = hex::decode(&r.serial_hex)
            .map_err(|_| PkiError::Build(format!("serial {:?} is not hex", r.serial_hex)))?;
        let reason = parse_reason(&r.reason)
            .ok_or_else(|| PkiError::Build(format!("unknown reason {:?}", r.reason)))?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: OffsetDateTime::from_unix_timestamp(r.revoked_at)
                .map_err(|e| PkiError::Build(e.to_string()))?,
            // RFC 5280 §5.3.1: use no reason code rather than "unspecified"
            reason_code: (reason != RevocationReason::Unspecified).then_some(reason),
            invalidity_date: None,
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca.der.as_slice().into(), signer)?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + Duration::days(CRL_VALIDITY_DAYS),
        crl_number: SerialNumber::from_slice(&minimal_positive(number)),
        issuing_distribution_point: None,
        revoked_certs,
        // the authorityKeyIdentifier must carry the CA certificate's subjectKeyIdentifier
        // so that relying parties match the CRL to the CA
        key_identifier_method: KeyIdMethod::PreSpecified(ca.subject_key_id.clone()),
    };
    Ok(params.signed_by(&issuer)?.der().to_vec())
}
