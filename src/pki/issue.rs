//! Issuance: a verified CSR, a profile and a validity become a certificate signed by the CA.
//! The certificate carries only what the profile allows; everything else in the CSR is
//! dropped and reported.

use super::{CaCertificate, CaKey, Csr, CsrKey, PkiError, San, key_identifier, random_serial};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, SanType,
    SubjectPublicKeyInfo,
};
use std::fmt;
use std::str::FromStr;
use time::{Duration, OffsetDateTime};

/// What kind of certificate to issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// TLS server: serverAuth, at least one DNS or IP subjectAltName.
    Server,
    /// TLS client or user: clientAuth.
    Client,
    /// Subordinate CA: CA:TRUE with path length 0.
    SubCa,
}

impl Profile {
    pub const NAMES: [&'static str; 3] = ["server", "client", "sub-ca"];
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::SubCa => "sub-ca",
        })
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "server" => Ok(Profile::Server),
            "client" => Ok(Profile::Client),
            "sub-ca" => Ok(Profile::SubCa),
            other => Err(format!(
                "unknown profile {other:?} (expected server, client or sub-ca)"
            )),
        }
    }
}

/// An issued certificate and what was left out of the request.
#[derive(Clone, Debug)]
pub struct Issued {
    pub der: Vec<u8>,
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
    /// Human-readable notes on CSR content the profile dropped.
    pub dropped: Vec<String>,
}

impl Issued {
    pub fn pem(&self) -> String {
        super::pem_encode("CERTIFICATE", &self.der)
    }
}

fn valid_dns_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    !body.is_empty()
        && name.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_email(addr: &str) -> bool {
    match addr.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && addr.is_ascii()
                && !addr.contains(char::is_whitespace)
                && valid_dns_name(domain)
        }
        None => false,
    }
}

/// Checks `csr` against `profile` and the CA without signing anything: the same rules as
/// [`issue`], so a request can be refused before any holder is asked.
pub fn check(
    ca: &CaCertificate,
    csr: &Csr,
    profile: Profile,
    days: u32,
    now: OffsetDateTime,
) -> Result<(), PkiError> {
    plan(ca, csr, profile, days, now).map(|_| ())
}

struct Plan {
    params: CertificateParams,
    dropped: Vec<String>,
}

fn plan(
    ca: &CaCertificate,
    csr: &Csr,
    profile: Profile,
    days: u32,
    now: OffsetDateTime,
) -> Result<Plan, PkiError> {
    if days == 0 {
        return Err(PkiError::ZeroValidity);
    }
    let now = now
        .replace_nanosecond(0)
        .map_err(|e| PkiError::Build(e.to_string()))?;
    // `days` is whatever a client sent: past the year 9999 the end date does not exist
    let not_after = match now.checked_add(Duration::days(i64::from(days))) {
        Some(not_after) if not_after <= ca.not_after => not_after,
        _ => {
            return Err(PkiError::ValidityPastCa {
                days,
                max_days: (ca.not_after - now).whole_days().max(0),
                ca_not_after: ca.not_after.to_string(),
            });
        }
    };
    if profile == Profile::SubCa && ca.path_len == Some(0) {
        return Err(PkiError::PathLenExhausted);
    }
    let mut dropped = Vec::new();

    let mut dn = DistinguishedName::new();
    for (kind, value) in &csr.subject {
        let ty = match kind.as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "C" => {
                let printable = rcgen::string::PrintableString::try_from(value.as_str())
                    .ok()
                    .filter(|_| value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        PkiError::MalformedCsr(format!(
                            "subject country {value:?} is not two letters"
                        ))
                    })?;
                dn.push(DnType::CountryName, DnValue::PrintableString(printable));
                continue;
            }
            other => {
                dropped.push(format!("subject attribute {other}={value}"));
                continue;
            }
        };
        if value.is_empty() || value.chars().count() > 64 {
            return Err(PkiError::MalformedCsr(format!(
                "subject {kind} must be 1 to 64 characters"
            )));
        }
        dn.push(ty, value.as_str());
    }

    let mut sans = Vec::new();
    for san in &csr.sans {
        let allowed = !matches!(
            (profile, san),
            (Profile::SubCa, _) | (_, San::Other(_)) | (Profile::Server, San::Email(_))
        );
        if !allowed {
            dropped.push(format!("subjectAltName {san}"));
            continue;
        }
        sans.push(match san {
            San::Dns(d) if valid_dns_name(d) => SanType::DnsName(d.as_str().try_into()?),
            San::Dns(d) => return Err(PkiError::InvalidDnsName(d.clone())),
            San::Email(e) if valid_email(e) => SanType::Rfc822Name(e.as_str().try_into()?),
            San::Email(e) => return Err(PkiError::InvalidEmail(e.clone())),
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Other(_) => continue,
        });
    }
    for ext in &csr.ignored_extensions {
        dropped.push(format!("requested extension {ext}"));
    }

    let mut params = CertificateParams::default();
    params.not_before = now;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    match profile {
        Profile::Server => {
            if sans.is_empty() {
                return Err(PkiError::MissingSan {
                    profile,
                    what: "at least one DNS name or IP address",
                });
            }
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            if matches!(csr.key, CsrKey::Rsa { .. }) {
                params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
            }
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        }
        Profile::Client => {
            if sans.is_empty() && dn.iter().next().is_none() {
                return Err(PkiError::EmptySubject(profile));
            }
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        Profile::SubCa => {
            if dn.iter().next().is_none() {
                return Err(PkiError::EmptySubject(profile));
            }
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
    }
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    Ok(Plan { params, dropped })
}

/// Issues a certificate for `csr` under `profile`, valid `days` from `now`.
pub fn issue(
    ca_key: &CaKey,
    ca: &CaCertificate,
    csr: &Csr,
    profile: Profile,
    days: u32,
    now: OffsetDateTime,
) -> Result<Issued, PkiError> {
    let Plan {
        mut params,
        dropped,
    } = plan(ca, csr, profile, days, now)?;
    let subject_key = SubjectPublicKeyInfo::from_der(&csr.spki_der)
        .map_err(|e| PkiError::UnsupportedCsrKey(e.to_string()))?;
    let ski = key_identifier(rcgen::PublicKeyData::der_bytes(&subject_key));
    if profile != Profile::SubCa {
        // rcgen writes subjectKeyIdentifier only for CAs; RFC 5280 §4.2.1.2 wants it in
        // end-entity certificates too
        let mut octets = vec![0x04, ski.len() as u8];
        octets.extend_from_slice(&ski);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(&[2, 5, 29, 14], octets));
    }
    params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
    let issuer = Issuer::from_ca_cert_der(&ca.der.as_slice().into(), ca_key)?;
    let serial_hex = params
        .serial_number
        .as_ref()
        .map(|s| hex::encode(s.to_bytes()))
        .unwrap_or_default();
    let not_after = params.not_after;
    let cert = params.signed_by(&subject_key, &issuer)?;
    Ok(Issued {
        der: cert.der().to_vec(),
        serial_hex,
        not_after,
        dropped,
    })
}
