//! Issuance: a verified CSR, a profile and a validity become a certificate signed by the CA.
//! The certificate carries only what the profile allows; everything else in the CSR is
//! dropped and reported.

use super::constraints::{SubCaConstraints, eku_from_name};
use super::{CaCertificate, CaKey, Csr, CsrKey, PkiError, San, key_identifier, random_serial};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, SanType,
    SubjectPublicKeyInfo,
};
use serde::{Deserialize, Serialize};
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
    /// The CA's delegated OCSP responder: OCSPSigning, ocsp-nocheck, at most
    /// [`OCSP_MAX_DAYS`] days. Only the server asks for it, with a key of its own.
    Ocsp,
}

/// Longest validity of an OCSP responder certificate: relying parties never check its
/// revocation (ocsp-nocheck), so it must expire soon.
pub const OCSP_MAX_DAYS: u32 = 30;

impl Profile {
    pub const NAMES: [&'static str; 4] = ["server", "client", "sub-ca", "ocsp"];
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Server => "server",
            Profile::Client => "client",
            Profile::SubCa => "sub-ca",
            Profile::Ocsp => "ocsp",
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
            "ocsp" => Ok(Profile::Ocsp),
            other => Err(format!(
                "unknown profile {other:?} (expected server, client, sub-ca or ocsp)"
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
    /// What was shown before signing; the certificate carries exactly this.
    pub view: CertificateView,
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

/// Where relying parties find the CA's revocation information and certificate: the CA's
/// configuration, written into every certificate it issues (and so part of what holders
/// approve). Empty lists leave the extension out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Urls {
    /// cRLDistributionPoints.
    pub crl: Vec<String>,
    /// authorityInfoAccess caIssuers.
    pub ca_issuers: Vec<String>,
    /// authorityInfoAccess OCSP.
    pub ocsp: Vec<String>,
}

/// Most URLs of one kind in a certificate.
pub const MAX_URLS: usize = 4;
/// Longest URL accepted in a certificate.
pub const MAX_URL_LEN: usize = 256;

/// Checks a URL for a certificate's CRL distribution point or authority information
/// access: plain `http://` (RFC 5280 §4.2.1.13 and §4.2.2.1: relying parties fetch these
/// to validate, so TLS would need validation first), printable ASCII, no spaces.
pub fn check_url(url: &str) -> Result<(), PkiError> {
    let host = url.strip_prefix("http://").unwrap_or_default();
    let host = host.split(['/', ':']).next().unwrap_or_default();
    if url.len() > MAX_URL_LEN || host.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PkiError::BadUrl(url.to_owned()));
    }
    Ok(())
}

/// What the operator asks for and the holders approve, besides the CSR itself. Fixing the
/// serial and the start of validity when the request is made means the certificate the
/// holders are shown is, field for field, the one that is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    pub profile: Profile,
    pub days: u32,
    pub not_before: OffsetDateTime,
    /// The serial number's bytes, as encoded in the certificate (positive, no leading zero).
    pub serial: Vec<u8>,
    /// The CA's URLs to write into the certificate.
    pub urls: Urls,
    /// `sub-ca`: the nameConstraints and extended key usages the CA policy gives it
    /// (`None`: an unconstrained sub-CA, as without a policy).
    pub sub_ca: Option<SubCaConstraints>,
}

impl Terms {
    /// Terms for a certificate starting now, with a fresh random serial.
    pub fn new(profile: Profile, days: u32, now: OffsetDateTime) -> Result<Self, PkiError> {
        Ok(Terms {
            profile,
            days,
            not_before: now
                .replace_nanosecond(0)
                .map_err(|e| PkiError::Build(e.to_string()))?,
            serial: random_serial().to_bytes(),
            urls: Urls::default(),
            sub_ca: None,
        })
    }

    /// The same terms with a sub-CA's constraints (ignored by other profiles).
    pub fn with_sub_ca(mut self, constraints: Option<SubCaConstraints>) -> Self {
        self.sub_ca = constraints;
        self
    }

    /// The same terms with the CA's URLs.
    pub fn with_urls(mut self, urls: Urls) -> Self {
        self.urls = urls;
        self
    }

    /// The terms that make exactly `view` again (with the same CSR and CA).
    pub fn of_view(view: &CertificateView) -> Result<Self, PkiError> {
        let bad = |what: &str| PkiError::Build(format!("certificate view: {what}"));
        let profile: Profile = view.profile.parse().map_err(|e: String| bad(&e))?;
        let constrained = !view.name_constraints.is_empty() || !view.extended_key_usage.is_empty();
        let sub_ca = if profile == Profile::SubCa && constrained {
            Some(SubCaConstraints::from_view(
                &view.name_constraints,
                &view.extended_key_usage,
            )?)
        } else {
            None
        };
        Ok(Terms {
            profile,
            days: view.days,
            not_before: OffsetDateTime::from_unix_timestamp(view.not_before)
                .map_err(|_| bad("start of validity out of range"))?,
            serial: hex::decode(&view.serial).map_err(|_| bad("serial is not hex"))?,
            urls: Urls {
                crl: view.crl_urls.clone(),
                ca_issuers: view.ca_issuers_urls.clone(),
                ocsp: view.ocsp_urls.clone(),
            },
            sub_ca,
        })
    }

    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }
}

/// The certificate as it will be issued, field by field, after the profile has applied:
/// what a holder is shown and approves. [`plan`] makes it, and [`issue`] signs exactly it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateView {
    pub profile: String,
    pub serial: String,
    /// Subject attributes in certificate order, as (short name, value).
    pub subject: Vec<(String, String)>,
    /// `DNS:…`, `IP:…`, `email:…`.
    pub sans: Vec<String>,
    pub key: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub days: u32,
    pub is_ca: bool,
    pub path_len: Option<u8>,
    pub key_usage: Vec<String>,
    pub extended_key_usage: Vec<String>,
    /// Permitted subtrees of a constrained sub-CA; empty when none are set.
    pub name_constraints: Vec<String>,
    /// What the CSR asked for that the certificate will not carry.
    pub dropped: Vec<String>,
    /// cRLDistributionPoints URLs (left out of the JSON when none, so views without URLs
    /// keep their digest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crl_urls: Vec<String>,
    /// authorityInfoAccess caIssuers URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_issuers_urls: Vec<String>,
    /// authorityInfoAccess OCSP URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ocsp_urls: Vec<String>,
}

impl CertificateView {
    /// SHA-256 (hex) of the view's canonical JSON: what a holder's envelope binds.
    pub fn digest(&self) -> String {
        super::sha256_hex(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// The view as lines for a terminal, every CSR-derived string escaped.
    pub fn lines(&self) -> Vec<String> {
        let esc = super::text::escape;
        let when = |t: i64| {
            OffsetDateTime::from_unix_timestamp(t)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| t.to_string())
        };
        let list = |items: &[String]| {
            if items.is_empty() {
                "(none)".to_owned()
            } else {
                esc(&items.join(", "))
            }
        };
        let mut lines = vec![
            format!("Profile:     {}", esc(&self.profile)),
            format!("Subject:     {}", esc(&self.subject_string())),
            format!("SANs:        {}", list(&self.sans)),
            format!("Key:         {}", esc(&self.key)),
            format!(
                "Validity:    {} days, {} to {}",
                self.days,
                when(self.not_before),
                when(self.not_after)
            ),
            format!(
                "CA:          {}",
                match (self.is_ca, self.path_len) {
                    (false, _) => "no (end entity)".to_owned(),
                    (true, Some(n)) => format!("YES, path length {n}"),
                    (true, None) => "YES, no path length limit".to_owned(),
                }
            ),
            format!("Key usage:   {}", list(&self.key_usage)),
            format!("Ext. usage:  {}", list(&self.extended_key_usage)),
            format!("Name constr: {}", list(&self.name_constraints)),
            format!("Serial:      {}", esc(&self.serial)),
        ];
        for (label, urls) in [
            ("CRL URL:    ", &self.crl_urls),
            ("CA issuers: ", &self.ca_issuers_urls),
            ("OCSP URL:   ", &self.ocsp_urls),
        ] {
            if !urls.is_empty() {
                lines.push(format!("{label} {}", list(urls)));
            }
        }
        if self.profile == "ocsp" {
            lines.push(
                "Responder:   the CA's delegated OCSP responder (ocsp-nocheck: its own \
                 revocation is never checked, so it expires soon)"
                    .to_owned(),
            );
        }
        for d in &self.dropped {
            lines.push(format!("Dropped:     {} (in the CSR, not issued)", esc(d)));
        }
        lines
    }

    /// The subject as `CN=…, O=…`.
    pub fn subject_string(&self) -> String {
        self.subject
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Checks `csr` against the terms and the CA without signing anything, and returns the
/// certificate that [`issue`] would make: the same code decides both.
pub fn check(ca: &CaCertificate, csr: &Csr, terms: &Terms) -> Result<CertificateView, PkiError> {
    plan(ca, csr, terms).map(|p| p.view)
}

struct Plan {
    params: CertificateParams,
    view: CertificateView,
}

fn plan(ca: &CaCertificate, csr: &Csr, terms: &Terms) -> Result<Plan, PkiError> {
    let (profile, days) = (terms.profile, terms.days);
    let now = terms
        .not_before
        .replace_nanosecond(0)
        .map_err(|e| PkiError::Build(e.to_string()))?;
    if days == 0 {
        return Err(PkiError::ZeroValidity);
    }
    let not_after = now
        .checked_add(Duration::days(i64::from(days)))
        .filter(|end| *end <= ca.not_after)
        .ok_or_else(|| PkiError::ValidityPastCa {
            days,
            max_days: (ca.not_after - now).whole_days().max(0),
            ca_not_after: ca.not_after.to_string(),
        })?;
    if profile == Profile::Ocsp && days > OCSP_MAX_DAYS {
        return Err(PkiError::ValidityTooLong {
            profile,
            days,
            max_days: OCSP_MAX_DAYS,
        });
    }
    if profile == Profile::SubCa && ca.path_len == Some(0) {
        return Err(PkiError::PathLenExhausted);
    }
    if terms.serial.is_empty() || terms.serial.len() > 20 || terms.serial[0] & 0x80 != 0 {
        return Err(PkiError::Build(
            "the serial number must be 1 to 20 bytes and positive".into(),
        ));
    }
    if terms.serial.len() > 1 && terms.serial[0] == 0 {
        return Err(PkiError::Build(format!(
            "the serial number {} starts with a zero byte: DER writes it without, so it would \
             be recorded under another serial than the certificate carries",
            terms.serial_hex()
        )));
    }
    let mut dropped = Vec::new();

    let mut dn = DistinguishedName::new();
    let mut subject = Vec::new();
    for (kind, value) in &csr.subject {
        let ty = match kind.as_str() {
            "CN" => DnType::CommonName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            "L" => DnType::LocalityName,
            "ST" => DnType::StateOrProvinceName,
            "C" => DnType::CountryName,
            other => {
                dropped.push(format!("subject attribute {other}={value}"));
                continue;
            }
        };
        // a certificate carries each attribute once here: a request repeating one would be
        // shown with two values and issued with one
        if subject.iter().any(|(k, _): &(String, String)| k == kind) {
            return Err(PkiError::MalformedCsr(format!(
                "subject attribute {kind} appears more than once; nkpki issues one value per \
                 attribute (hint: make the request with a single {kind})"
            )));
        }
        if ty == DnType::CountryName {
            let printable = rcgen::string::PrintableString::try_from(value.as_str())
                .ok()
                .filter(|_| value.len() == 2 && value.bytes().all(|b| b.is_ascii_uppercase()))
                .ok_or_else(|| {
                    PkiError::MalformedCsr(format!("subject country {value:?} is not two letters"))
                })?;
            dn.push(DnType::CountryName, DnValue::PrintableString(printable));
        } else {
            if value.is_empty() || value.chars().count() > 64 {
                return Err(PkiError::MalformedCsr(format!(
                    "subject {kind} must be 1 to 64 characters"
                )));
            }
            dn.push(ty, value.as_str());
        }
        subject.push((kind.clone(), value.clone()));
    }

    let mut sans = Vec::new();
    let mut shown_sans = Vec::new();
    for san in &csr.sans {
        let allowed = !matches!(
            (profile, san),
            (Profile::SubCa | Profile::Ocsp, _)
                | (_, San::Other(_))
                | (Profile::Server, San::Email(_))
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
        shown_sans.push(san.to_string());
    }
    for ext in &csr.ignored_extensions {
        dropped.push(format!("requested extension {ext}"));
    }

    let mut params = CertificateParams::default();
    params.not_before = now;
    params.not_after = not_after;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&terms.serial));
    params.use_authority_key_identifier_extension = true;
    let mut path_len = None;
    let mut name_constraints = Vec::new();
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
            path_len = Some(0);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            if let Some(c) = &terms.sub_ca {
                // the sub-CA's own request must not ask for names its constraints exclude
                if let Some(outside) = csr.sans.iter().find(|san| !c.permits(san)) {
                    return Err(PkiError::OutsideConstraints(outside.to_string()));
                }
                params.name_constraints = c.rcgen();
                name_constraints = c.view_lines();
                for name in &c.ekus {
                    let eku = eku_from_name(name).ok_or_else(|| {
                        PkiError::Build(format!("unknown extended key usage {name:?}"))
                    })?;
                    params.extended_key_usages.push(eku);
                }
            }
        }
        Profile::Ocsp => {
            if dn.iter().next().is_none() {
                return Err(PkiError::EmptySubject(profile));
            }
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::OcspSigning];
            // RFC 6960 §4.2.2.2.1: relying parties do not ask about the responder itself
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    OCSP_NOCHECK,
                    vec![0x05, 0x00],
                ));
        }
    }
    // the responder is checked by no one (ocsp-nocheck): it carries no revocation pointers
    let urls = if profile == Profile::Ocsp {
        Urls::default()
    } else {
        terms.urls.clone()
    };
    for list in [&urls.crl, &urls.ca_issuers, &urls.ocsp] {
        if list.len() > MAX_URLS {
            return Err(PkiError::BadUrl(format!(
                "more than {MAX_URLS} URLs of one kind"
            )));
        }
        for url in list {
            check_url(url)?;
        }
    }
    if !urls.crl.is_empty() {
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: urls.crl.clone(),
        }];
    }
    if !urls.ca_issuers.is_empty() || !urls.ocsp.is_empty() {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                AUTHORITY_INFO_ACCESS,
                authority_info_access(&urls)?,
            ));
    }
    let view = CertificateView {
        profile: profile.to_string(),
        serial: terms.serial_hex(),
        subject,
        sans: shown_sans,
        key: csr.key.to_string(),
        not_before: now.unix_timestamp(),
        not_after: not_after.unix_timestamp(),
        days,
        is_ca: profile == Profile::SubCa,
        path_len,
        key_usage: params.key_usages.iter().map(key_usage_name).collect(),
        extended_key_usage: params.extended_key_usages.iter().map(eku_name).collect(),
        name_constraints,
        dropped,
        crl_urls: urls.crl,
        ca_issuers_urls: urls.ca_issuers,
        ocsp_urls: urls.ocsp,
    };
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    Ok(Plan { params, view })
}

const OCSP_NOCHECK: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 5];
const AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];

/// The DER of an authorityInfoAccess extension's value (RFC 5280 §4.2.2.1): OCSP first,
/// then caIssuers.
fn authority_info_access(urls: &Urls) -> Result<Vec<u8>, PkiError> {
    use der::Encode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};
    const OCSP: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
    const CA_ISSUERS: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
    let bad = |e: der::Error| PkiError::Build(format!("authorityInfoAccess: {e}"));
    let mut access = Vec::new();
    for (method, list) in [(OCSP, &urls.ocsp), (CA_ISSUERS, &urls.ca_issuers)] {
        for url in list {
            access.push(AccessDescription {
                access_method: method,
                access_location: GeneralName::UniformResourceIdentifier(
                    der::asn1::Ia5String::new(url).map_err(bad)?,
                ),
            });
        }
    }
    AuthorityInfoAccessSyntax(access).to_der().map_err(bad)
}

fn key_usage_name(usage: &KeyUsagePurpose) -> String {
    match usage {
        KeyUsagePurpose::DigitalSignature => "digitalSignature",
        KeyUsagePurpose::KeyEncipherment => "keyEncipherment",
        KeyUsagePurpose::KeyCertSign => "keyCertSign",
        KeyUsagePurpose::CrlSign => "cRLSign",
        _ => "other",
    }
    .to_owned()
}

fn eku_name(usage: &ExtendedKeyUsagePurpose) -> String {
    match usage {
        ExtendedKeyUsagePurpose::ServerAuth => "serverAuth",
        ExtendedKeyUsagePurpose::ClientAuth => "clientAuth",
        ExtendedKeyUsagePurpose::OcspSigning => "OCSPSigning",
        ExtendedKeyUsagePurpose::CodeSigning => "codeSigning",
        ExtendedKeyUsagePurpose::EmailProtection => "emailProtection",
        ExtendedKeyUsagePurpose::TimeStamping => "timeStamping",
        _ => "other",
    }
    .to_owned()
}

/// Issues the certificate [`check`] describes for `csr` under `terms`.
pub fn issue(
    ca_key: &CaKey,
    ca: &CaCertificate,
    csr: &Csr,
    terms: &Terms,
) -> Result<Issued, PkiError> {
    issue_with(ca_key, ca, csr, terms)
}

/// The one path that turns a plan into a certificate, whoever signs: the CA key, or
/// [`super::tbs_certificate`]'s recorder that keeps the to-be-signed bytes for a threshold
/// signature.
pub(super) fn issue_with(
    signer: &impl rcgen::SigningKey,
    ca: &CaCertificate,
    csr: &Csr,
    terms: &Terms,
) -> Result<Issued, PkiError> {
    let Plan { mut params, view } = plan(ca, csr, terms)?;
    let profile = terms.profile;
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
    let issuer = Issuer::from_ca_cert_der(&ca.der.as_slice().into(), signer)?;
    let not_after = params.not_after;
    let cert = params.signed_by(&subject_key, &issuer)?;
    Ok(Issued {
        der: cert.der().to_vec(),
        serial_hex: view.serial.clone(),
        not_after,
        dropped: view.dropped.clone(),
        view,
    })
}
