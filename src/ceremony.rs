//! The key ceremony: validated parameters in, a CA certificate, a signed manifest and one
//! encrypted share per holder out. The CA key and the KEK exist only in memory, and only
//! for the duration of [`perform`].

use crate::manifest::{CaInfo, Manifest, ManifestBody, ManifestError, ManifestHolder};
use crate::pki::{self, CaKey, CaSubject, KeyAlgorithm, PkiError};
use crate::seal::{self, SealError};
use crate::sss::shoup::{self, SafePrimes, ThresholdError};
use crate::sss::{self, Share, ShareSet, SssError};
use age::secrecy::SecretString;
use serde::Deserialize;
use std::fmt::Write as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("holders file is not valid JSON for a list of holders: {0}")]
    HoldersJson(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Sss(#[from] SssError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
    #[error(transparent)]
    Enrollment(#[from] crate::enrollment::EnrollmentError),
    #[error(transparent)]
    Threshold(#[from] ThresholdError),
}

/// How the CA key is held after the ceremony.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaMode {
    /// Shares of a KEK that wraps the key: M of them rebuild it for one signature.
    #[default]
    Reconstruct,
    /// Shoup threshold RSA: each share signs on its own, the key is never whole again.
    Threshold,
}

impl std::str::FromStr for CaMode {
    type Err = CeremonyError;

    fn from_str(s: &str) -> Result<Self, CeremonyError> {
        match s {
            "reconstruct" => Ok(CaMode::Reconstruct),
            "threshold" => Ok(CaMode::Threshold),
            other => Err(invalid(
                "--mode",
                format!("{other:?} is not a CA mode (reconstruct or threshold)"),
            )),
        }
    }
}

impl std::fmt::Display for CaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CaMode::Reconstruct => "reconstruct",
            CaMode::Threshold => "threshold",
        })
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CeremonyError {
    CeremonyError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A Nitrokey id: `NK` followed by three digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NitrokeyId(String);

impl NitrokeyId {
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix("NK")?;
        (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| NitrokeyId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NitrokeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of `holders.json`, as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderEntry {
    nitrokey_id: String,
    holder_name: String,
    holder_email: String,
    location: String,
    #[serde(default)]
    age_recipient: Option<String>,
}

/// A validated share holder.
#[derive(Clone, Debug)]
pub struct Holder {
    pub nitrokey_id: NitrokeyId,
    pub holder_name: String,
    pub holder_email: String,
    pub location: String,
    pub age_recipient: Option<age::x25519::Recipient>,
}

/// Longest holder name, e-mail and location (the original design's limit).
pub const MAX_HOLDER_CHARS: usize = 255;

/// Longest CA name and organisation: X.520's upper bound for commonName and
/// organizationName (RFC 5280 appendix A); the original design's 255 would make
/// certificates that validators reject.
pub const MAX_DN_CHARS: usize = 64;

/// Validity of the CA certificate in years.
pub const VALIDITY_YEARS: std::ops::RangeInclusive<u32> = 1..=30;
/// How many holders must approve.
pub const THRESHOLD: std::ops::RangeInclusive<u32> = 2..=15;
/// How many holders (one share each).
pub const HOLDERS: std::ops::RangeInclusive<usize> = 3..=20;

// The checks below are shared by `ca-init` (holders.json and flags) and the generator
// form (src/generator.rs): each returns the reason, the caller names the field.

/// A non-empty text of at most `max` characters without control characters.
pub fn check_length(value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be empty".into());
    }
    let chars = value.chars().count();
    if chars > max {
        return Err(format!(
            "is {chars} characters long; at most {max} are allowed"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A country: two upper-case letters.
pub fn check_country(country: &str) -> Result<(), String> {
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{country:?} is not two upper-case letters (ISO 3166, e.g. FR)"
        ));
    }
    Ok(())
}

pub fn check_validity_years(years: u32) -> Result<(), String> {
    if !VALIDITY_YEARS.contains(&years) {
        return Err(format!("{years} is outside 1..=30"));
    }
    Ok(())
}

pub fn check_threshold(threshold: u32) -> Result<(), String> {
    if !THRESHOLD.contains(&threshold) {
        return Err(format!("{threshold} is outside 2..=15"));
    }
    Ok(())
}

pub fn check_holder_count(holders: usize) -> Result<(), String> {
    if !HOLDERS.contains(&holders) {
        return Err(format!(
            "{holders} holder(s) given; between 3 and 20 are required (one share each)"
        ));
    }
    Ok(())
}

/// The threshold cannot exceed the number of shares.
pub fn check_threshold_fits(threshold: u32, holders: usize) -> Result<(), String> {
    if threshold as usize > holders {
        return Err(format!(
            "{threshold} is more than the {holders} shares; the CA could never sign"
        ));
    }
    Ok(())
}

/// Threshold mode takes RSA keys only.
pub fn check_mode_key(mode: CaMode, key: KeyAlgorithm) -> Result<(), String> {
    if mode == CaMode::Threshold && key.rsa_bits().is_none() {
        return Err(format!(
            "{key} cannot be a threshold-mode key: threshold mode is Shoup threshold RSA \
             (rsa-2048, rsa-3072 or rsa-4096); ECDSA CAs use --mode reconstruct"
        ));
    }
    Ok(())
}

pub fn parse_nitrokey_id(text: &str) -> Result<NitrokeyId, String> {
    NitrokeyId::parse(text).ok_or_else(|| format!("{text:?} is not NK followed by three digits"))
}

/// The reason a second holder cannot take `id`.
pub fn duplicate_id(id: &NitrokeyId) -> String {
    format!("{id} appears twice; each token holds one share")
}

pub fn check_holder_text(value: &str) -> Result<(), String> {
    check_length(value, MAX_HOLDER_CHARS)
}

pub fn check_email(addr: &str) -> Result<(), String> {
    if !is_email(addr) || addr.len() > MAX_HOLDER_CHARS {
        return Err(format!("{addr:?} is not an e-mail address"));
    }
    Ok(())
}

/// An optional age recipient: absent or empty means a fresh passphrase.
pub fn parse_age_recipient(text: Option<&str>) -> Result<Option<age::x25519::Recipient>, String> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => seal::parse_recipient(r)
            .map(Some)
            .map_err(|_| format!("{r:?} is not an age X25519 recipient (age1…)")),
    }
}

/// A plain e-mail check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn is_email(addr: &str) -> bool {
    let Some((local, domain)) = addr.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Parses and validates `holders.json`.
pub fn parse_holders(json: &str) -> Result<Vec<Holder>, CeremonyError> {
    let entries: Vec<HolderEntry> =
        serde_json::from_str(json).map_err(|e| CeremonyError::HoldersJson(e.to_string()))?;
    let mut holders: Vec<Holder> = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let at = |field: &'static str| {
            move |reason: String| invalid(format!("holders[{i}].{field}"), reason)
        };
        let nitrokey_id = parse_nitrokey_id(&e.nitrokey_id).map_err(at("nitrokey_id"))?;
        if holders.iter().any(|h| h.nitrokey_id == nitrokey_id) {
            return Err(at("nitrokey_id")(duplicate_id(&nitrokey_id)));
        }
        check_holder_text(&e.holder_name).map_err(at("holder_name"))?;
        check_holder_text(&e.location).map_err(at("location"))?;
        check_email(&e.holder_email).map_err(at("holder_email"))?;
        let age_recipient =
            parse_age_recipient(e.age_recipient.as_deref()).map_err(at("age_recipient"))?;
        holders.push(Holder {
            nitrokey_id,
            holder_name: e.holder_name,
            holder_email: e.holder_email,
            location: e.location,
            age_recipient,
        });
    }
    Ok(holders)
}

/// Validated ceremony parameters (limits of the original design).
#[derive(Clone, Debug)]
pub struct CeremonyParams {
    pub subject: CaSubject,
    pub key: KeyAlgorithm,
    pub validity_years: u32,
    pub path_len: Option<u8>,
    pub threshold: u8,
    pub holders: Vec<Holder>,
    pub delivery: Delivery,
    pub mode: CaMode,
    /// The CA policy written into the manifest (docs/policy.md).
    pub policy: Option<crate::policy::Policy>,
    /// The manifest's policy revision (0 at a ceremony; a reshare keeps the CA's).
    pub policy_revision: u32,
}

impl CeremonyParams {
    pub fn new(
        subject: CaSubject,
        key: KeyAlgorithm,
        validity_years: u32,
        path_len: Option<u8>,
        threshold: u32,
        holders: Vec<Holder>,
    ) -> Result<Self, CeremonyError> {
        let field = |name: &'static str| move |reason: String| invalid(name, reason);
        check_length(&subject.name, MAX_DN_CHARS).map_err(field("--name"))?;
        check_length(&subject.org, MAX_DN_CHARS).map_err(field("--org"))?;
        check_country(&subject.country).map_err(field("--country"))?;
        check_validity_years(validity_years).map_err(field("--validity-years"))?;
        check_threshold(threshold).map_err(field("--threshold"))?;
        check_holder_count(holders.len()).map_err(field("holders"))?;
        check_threshold_fits(threshold, holders.len()).map_err(field("--threshold"))?;
        Ok(CeremonyParams {
            subject,
            key,
            validity_years,
            path_len,
            threshold: threshold as u8,
            holders,
            delivery: Delivery::ShareFiles,
            mode: CaMode::Reconstruct,
            policy: None,
            policy_revision: 0,
        })
    }

    /// Sets the CA policy, checked against the threshold and holders chosen.
    pub fn with_policy(
        mut self,
        policy: crate::policy::Policy,
    ) -> Result<Self, crate::policy::PolicyError> {
        let holders: Vec<String> = self
            .holders
            .iter()
            .map(|h| h.nitrokey_id.to_string())
            .collect();
        policy.check_for_ca(self.threshold, &holders)?;
        self.policy = Some(policy);
        Ok(self)
    }

    /// Chooses the CA mode; threshold mode takes RSA keys only.
    pub fn with_mode(mut self, mode: CaMode) -> Result<Self, CeremonyError> {
        check_mode_key(mode, self.key).map_err(|reason| invalid("--key", reason))?;
        self.mode = mode;
        Ok(self)
    }
}

/// One holder's share, sealed for that holder.
#[derive(Debug)]
pub struct SealedShare {
    pub nitrokey_id: NitrokeyId,
    pub index: u8,
    /// `NK001.age` (share file) or `NK001.nkpkg` (deployment package).
    pub file_name: String,
    /// Armoured age file.
    pub armored: String,
    /// The fresh passphrase it is sealed to, when the holder gave no age recipient.
    pub passphrase: Option<SecretString>,
    /// What the holder compares after deploying (see [`crate::package::fingerprint`]).
    pub fingerprint: String,
    pub package: Option<PackageExtras>,
}

/// What a deployment package adds to the ceremony output.
#[derive(Debug)]
pub struct PackageExtras {
    /// QR code of the fingerprint, to print and hand over apart from the package.
    pub qr_png: Vec<u8>,
    /// The holder's `enrollment.json` entry: SHA-256 of the one-time enrollment code
    /// (the server's record), signed with the holder's share.
    pub enrollment: crate::enrollment::EnrollmentEntry,
}

/// How shares leave the ceremony.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// `shares/NK001.age`: the share alone, sealed.
    ShareFiles,
    /// `packages/NK001.nkpkg`: share, manifest, agent configuration, instructions.
    Packages(crate::package::ServerInfo),
}

/// Everything the ceremony produces; nothing in it is secret except the passphrases.
#[derive(Debug)]
pub struct CeremonyOutput {
    pub certificate_pem: String,
    pub manifest: Manifest,
    pub shares: Vec<SealedShare>,
    pub log: String,
    /// The log's file name in the output directory (`ceremony.log`, `reshare.log`).
    pub log_file: &'static str,
}

pub(crate) fn stamp(log: &mut String, line: &str) {
    let t = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let _ = writeln!(log, "{t} {line}");
}

fn start_log(params: &CeremonyParams) -> String {
    let mut log = String::new();
    stamp(
        &mut log,
        &format!("nkpki {} ceremony started", env!("CARGO_PKG_VERSION")),
    );
    stamp(
        &mut log,
        &format!(
            "parameters: CN={} O={} C={} key={} mode={} validity={}y threshold={}/{}",
            params.subject.name,
            params.subject.org,
            params.subject.country,
            params.key,
            params.mode,
            params.validity_years,
            params.threshold,
            params.holders.len()
        ),
    );
    log
}

/// The CA certificate, self-signed: (DER, PEM, fingerprint).
fn self_sign(
    key: &CaKey,
    params: &CeremonyParams,
    now: OffsetDateTime,
    log: &mut String,
) -> Result<(Vec<u8>, String, String), CeremonyError> {
    let cert_der = pki::self_signed(
        key,
        &params.subject,
        params.validity_years,
        params.path_len,
        now,
    )?;
    let certificate_pem = pki::pem_encode("CERTIFICATE", &cert_der);
    let fingerprint = pki::fingerprint(&cert_der);
    stamp(
        log,
        &format!("CA certificate self-signed, SHA-256 fingerprint {fingerprint}"),
    );
    Ok((cert_der, certificate_pem, fingerprint))
}

pub(crate) fn holder_ids(params: &CeremonyParams) -> Vec<String> {
    params
        .holders
        .iter()
        .map(|h| h.nitrokey_id.to_string())
        .collect()
}

/// Safe primes from the file `NKPKI_TEST_SAFE_PRIMES` names: a test hook, compiled out
/// of release builds (see docs/decisions.md (at)); `None` when not set.
pub fn test_safe_primes() -> Option<Result<SafePrimes, CeremonyError>> {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("NKPKI_TEST_SAFE_PRIMES") {
        return Some(
            std::fs::read_to_string(&path)
                .map_err(|e| invalid("NKPKI_TEST_SAFE_PRIMES", e.to_string()))
                .and_then(|text| Ok(SafePrimes::from_text(&text)?)),
        );
    }
    None
}

/// Runs a reconstruct-mode ceremony in memory.
pub fn perform(
    params: &CeremonyParams,
    now: OffsetDateTime,
) -> Result<CeremonyOutput, CeremonyError> {
    if params.mode != CaMode::Reconstruct {
        return Err(invalid(
            "--mode",
            "a threshold-mode ceremony needs safe primes (perform_threshold)",
        ));
    }
    let mut log = start_log(params);
    let key = CaKey::generate(params.key)?;
    stamp(
        &mut log,
        &format!("CA key generated in memory ({})", params.key),
    );
    let (cert_der, certificate_pem, fingerprint) = self_sign(&key, params, now, &mut log)?;
    let ids = holder_ids(params);
    let spki = pki::CaCertificate::from_der(&cert_der)?.spki_der;
    let pkcs8 = key.to_pkcs8_der()?;
    let (set, shares) = sss::split_bound(
        &pkcs8,
        params.threshold,
        params.holders.len() as u8,
        &ids,
        &spki,
    )?;
    drop(pkcs8);
    stamp(
        &mut log,
        &format!(
            "CA key wrapped and bound to the certificate's key; KEK split {}-of-{}; CA id {}",
            params.threshold,
            ids.len(),
            set.id()
        ),
    );
    finish(
        params,
        now,
        log,
        key,
        (certificate_pem, fingerprint),
        set,
        shares,
    )
}

/// Runs a threshold-mode ceremony in memory over two safe primes: the dealer assembles
/// the RSA key from them only to self-sign the CA certificate and the manifest, deals the
/// private exponent as Shoup shares, and wipes the primes, d and the polynomial.
pub fn perform_threshold(
    params: &CeremonyParams,
    primes: SafePrimes,
    now: OffsetDateTime,
) -> Result<CeremonyOutput, CeremonyError> {
    if params.mode != CaMode::Threshold {
        return Err(invalid("--mode", "not a threshold-mode ceremony"));
    }
    if params.key.rsa_bits() != Some(primes.modulus_bits()) {
        return Err(invalid(
            "--key",
            format!(
                "{} does not match safe primes for a {}-bit modulus",
                params.key,
                primes.modulus_bits()
            ),
        ));
    }
    let mut log = start_log(params);
    let key = CaKey::from_rsa(primes.to_rsa_private_key()?)?;
    stamp(
        &mut log,
        &format!(
            "CA key ({}) assembled in memory from two safe primes",
            params.key
        ),
    );
    let (cert_der, certificate_pem, fingerprint) = self_sign(&key, params, now, &mut log)?;
    let ids = holder_ids(params);
    let spki = pki::CaCertificate::from_der(&cert_der)?.spki_der;
    let (threshold_key, key_shares) =
        shoup::deal(primes, params.threshold, ids.len() as u8, &mut rand::rng())?;
    let (set, shares) = sss::threshold_set(threshold_key, &key_shares, &ids, &spki)?;
    drop(key_shares);
    stamp(
        &mut log,
        &format!(
            "private exponent dealt as Shoup threshold-RSA shares {}-of-{}; primes, p'q', d and \
             the polynomial wiped; CA id {}",
            params.threshold,
            ids.len(),
            set.id()
        ),
    );
    finish(
        params,
        now,
        log,
        key,
        (certificate_pem, fingerprint),
        set,
        shares,
    )
}

/// Where a manifest stands in its CA's line of share sets: the ceremony's (the share set's
/// id is the CA id) or a reshare's (see [`crate::reshare`]).
#[derive(Clone, Debug, Default)]
pub struct Lineage {
    /// `None` at the ceremony: the new share set's id becomes the CA id.
    pub ca_id: Option<sss::SetId>,
    pub set_version: u32,
    pub supersedes: Option<String>,
    pub earlier_sets: Vec<crate::manifest::EarlierSet>,
}

impl Lineage {
    pub(crate) fn ceremony() -> Self {
        Lineage {
            set_version: 1,
            ..Lineage::default()
        }
    }
}

/// The part of the ceremony both modes share: the manifest, signed with the CA key (then
/// wiped), and every share sealed for its holder.
fn finish(
    params: &CeremonyParams,
    now: OffsetDateTime,
    log: String,
    key: CaKey,
    certificate: (String, String),
    set: ShareSet,
    shares: Vec<Share>,
) -> Result<CeremonyOutput, CeremonyError> {
    finish_with(
        params,
        now,
        log,
        key,
        certificate,
        (set, shares),
        Lineage::ceremony(),
    )
}

/// [`finish`] for a manifest with the given [`Lineage`] (a reshare reuses it whole).
pub(crate) fn finish_with(
    params: &CeremonyParams,
    now: OffsetDateTime,
    mut log: String,
    key: CaKey,
    (certificate_pem, fingerprint): (String, String),
    (set, shares): (ShareSet, Vec<Share>),
    lineage: Lineage,
) -> Result<CeremonyOutput, CeremonyError> {
    let ca_id = lineage.ca_id.unwrap_or_else(|| set.id());
    let body = ManifestBody {
        format: crate::manifest::FORMAT.to_owned(),
        version: crate::manifest::VERSION,
        ca_id: ca_id.clone(),
        ca: CaInfo {
            name: params.subject.name.clone(),
            org: params.subject.org.clone(),
            country: params.subject.country.clone(),
            key: params.key.to_string(),
            validity_years: params.validity_years,
            path_len: params.path_len,
        },
        certificate: certificate_pem.clone(),
        certificate_sha256: fingerprint,
        share_set: set,
        holders: params
            .holders
            .iter()
            .enumerate()
            .map(|(i, h)| ManifestHolder {
                index: (i + 1) as u8,
                nitrokey_id: h.nitrokey_id.to_string(),
                holder_name: h.holder_name.clone(),
                holder_email: h.holder_email.clone(),
                location: h.location.clone(),
                age_recipient: h.age_recipient.as_ref().map(|r| r.to_string()),
            })
            .collect(),
        created_at: now.format(&Rfc3339).unwrap_or_default(),
        tool: format!("nkpki {}", env!("CARGO_PKG_VERSION")),
        set_version: lineage.set_version,
        supersedes: lineage.supersedes,
        earlier_sets: lineage.earlier_sets,
        policy: params.policy.clone(),
        policy_revision: params.policy_revision,
    };
    let set_version = body.set_version;
    let manifest = Manifest::sign(body, &key)?;
    drop(key);
    stamp(
        &mut log,
        "manifest signed with the CA key; CA key wiped from memory",
    );
    // the manifest must verify as any reader will check it
    let verified = manifest.verify()?;

    let manifest_json = manifest.to_json();
    let mut sealed = Vec::with_capacity(shares.len());
    for (share, holder) in shares.iter().zip(&params.holders) {
        verified.check_share(share, &share.describe())?;
        let fingerprint = crate::package::fingerprint(&verified, share)?;
        let how = match &holder.age_recipient {
            Some(r) => format!("age recipient {r}"),
            None => "a fresh passphrase".to_owned(),
        };
        let item = match &params.delivery {
            Delivery::ShareFiles => {
                let json = share.to_json();
                let (armored, passphrase) = match &holder.age_recipient {
                    Some(r) => (seal::to_recipient(r, json.as_bytes())?, None),
                    None => {
                        let pass = seal::generate_passphrase();
                        (seal::to_passphrase(&pass, json.as_bytes())?, Some(pass))
                    }
                };
                SealedShare {
                    nitrokey_id: holder.nitrokey_id.clone(),
                    index: share.index,
                    file_name: format!("{}.age", holder.nitrokey_id),
                    armored,
                    passphrase,
                    fingerprint,
                    package: None,
                }
            }
            Delivery::Packages(server) => {
                let built = crate::package::build(
                    &manifest_json,
                    &verified,
                    share,
                    server,
                    holder.age_recipient.as_ref(),
                )?;
                SealedShare {
                    nitrokey_id: holder.nitrokey_id.clone(),
                    index: share.index,
                    file_name: format!("{}.{}", holder.nitrokey_id, crate::package::EXTENSION),
                    armored: built.armored,
                    passphrase: built.passphrase,
                    fingerprint,
                    package: Some(PackageExtras {
                        qr_png: built.qr_png,
                        enrollment: crate::enrollment::sign_entry(
                            &verified,
                            share,
                            &built.enrollment_code_sha256,
                        )?
                        .1,
                    }),
                }
            }
        };
        stamp(
            &mut log,
            &format!(
                "share {} for {} ({}, {}) sealed to {how} as {}; fingerprint {}; file SHA-256 {}",
                share.index,
                holder.nitrokey_id,
                holder.holder_name,
                holder.location,
                item.file_name,
                item.fingerprint,
                pki::sha256_hex(item.armored.as_bytes())
            ),
        );
        sealed.push(item);
    }
    drop(shares);
    stamp(
        &mut log,
        match params.mode {
            CaMode::Reconstruct if set_version > 1 => {
                "CA key, new KEK and shares wiped from memory; reshare complete"
            }
            CaMode::Reconstruct => "KEK and shares wiped from memory; ceremony complete",
            CaMode::Threshold if set_version > 1 => {
                "CA key, primes and key shares wiped from memory; reshare complete"
            }
            CaMode::Threshold => "key shares wiped from memory; ceremony complete",
        },
    );
    Ok(CeremonyOutput {
        certificate_pem,
        manifest,
        shares: sealed,
        log,
        log_file: "ceremony.log",
    })
}

impl CeremonyOutput {
    /// `enrollment.json` (the hashes of the packages' enrollment codes, for the server),
    /// when the ceremony made packages.
    pub fn enrollment_json(&self) -> Option<String> {
        let mut enrollment = crate::enrollment::EnrollmentFile::new(&self.manifest.signed.ca_id);
        for share in &self.shares {
            let extras = share.package.as_ref()?;
            enrollment
                .holders
                .insert(share.nitrokey_id.to_string(), extras.enrollment.clone());
        }
        Some(enrollment.to_json())
    }

    /// Writes the ceremony into `dir` (an empty directory): `ca.crt`, `manifest.json`,
    /// `ceremony.log`, and either `shares/` or `packages/` + `qr/` + `enrollment.json`.
    /// Sealed files are 0600 in 0700 directories; public files are 0644.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use crate::fsx::write_new;
        use std::os::unix::fs::PermissionsExt;
        let private_dir = |name: &str| -> std::io::Result<std::path::PathBuf> {
            let path = dir.join(name);
            std::fs::create_dir(&path)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
            Ok(path)
        };
        write_new(
            &dir.join("ca.crt"),
            self.certificate_pem.as_bytes(),
            0o644,
            false,
        )?;
        write_new(
            &dir.join("manifest.json"),
            self.manifest.to_json().as_bytes(),
            0o644,
            false,
        )?;
        let packaged = self.shares.iter().any(|s| s.package.is_some());
        let sealed_dir = private_dir(if packaged { "packages" } else { "shares" })?;
        for share in &self.shares {
            write_new(
                &sealed_dir.join(&share.file_name),
                share.armored.as_bytes(),
                0o600,
                false,
            )?;
        }
        if packaged {
            let qr_dir = dir.join("qr");
            std::fs::create_dir(&qr_dir)?;
            for share in &self.shares {
                if let Some(extras) = &share.package {
                    write_new(
                        &qr_dir.join(format!("{}.png", share.nitrokey_id)),
                        &extras.qr_png,
                        0o644,
                        false,
                    )?;
                }
            }
        }
        if let Some(enrollment) = self.enrollment_json() {
            write_new(
                &dir.join("enrollment.json"),
                enrollment.as_bytes(),
                0o644,
                false,
            )?;
        }
        write_new(&dir.join(self.log_file), self.log.as_bytes(), 0o644, false)
    }
}

/// A 2-of-3 threshold-mode ceremony (RSA-2048, from the checked-in test primes) for unit
/// tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_threshold_ceremony(ca_name: &str) -> CeremonyOutput {
    let holders = (1..=3)
        .map(|i| Holder {
            nitrokey_id: NitrokeyId::parse(&format!("NK00{i}")).unwrap(),
            holder_name: format!("Holder {i}"),
            holder_email: format!("h{i}@example.org"),
            location: "Paris".into(),
            age_recipient: Some(age::x25519::Identity::generate().to_public()),
        })
        .collect();
    let subject = CaSubject {
        name: ca_name.into(),
        org: "nkpki tests".into(),
        country: "FR".into(),
    };
    let params = CeremonyParams::new(subject, KeyAlgorithm::Rsa2048, 5, None, 2, holders)
        .unwrap()
        .with_mode(CaMode::Threshold)
        .unwrap();
    let primes = SafePrimes::from_text(TEST_PRIMES).unwrap();
    perform_threshold(&params, primes, OffsetDateTime::now_utc()).unwrap()
}

/// The safe primes of [`test_threshold_ceremony`]'s CA key.
#[cfg(test)]
pub(crate) const TEST_PRIMES: &str = include_str!("../tests/fixtures/threshold/rsa-2048.primes");
