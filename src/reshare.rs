//! Resharing a CA on the ceremony laptop: M shares of the current set rebuild the CA key,
//! a new KEK wraps it and is split among a new holder set with a new threshold, and a new
//! manifest (set version + 1, naming the one it supersedes) is signed with the same key.
//! The CA key and certificate do not change; the ceremony's own code makes the manifest
//! and seals the shares or packages.

use crate::ceremony::{
    self, CaMode, CeremonyError, CeremonyOutput, CeremonyParams, Delivery, Holder, Lineage,
};
use crate::manifest::{EarlierSet, Manifest, ManifestError, VerifiedManifest};
use crate::pki::{CaKey, CaSubject, KeyAlgorithm, PkiError};
use crate::sss::shoup;
use crate::sss::{self, Share, SssError};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReshareError {
    #[error("the key shares do not rebuild the threshold key's primes: {0}")]
    Threshold(crate::sss::shoup::ThresholdError),
    #[error("{what} and {other} are the same share ({index}); each holder's share counts once")]
    Duplicate {
        what: String,
        other: String,
        index: u8,
    },
    #[error(
        "{got} valid share(s) of the current set given; resharing this CA needs {needed}; \
         nothing was changed"
    )]
    NotEnough { got: usize, needed: u8 },
    #[error("the shares do not rebuild the CA key: {0}")]
    Recover(SssError),
    #[error("the rebuilt key does not match the CA certificate")]
    KeyMismatch,
    #[error("the manifest's CA description is unusable: {0}")]
    CaInfo(String),
    #[error(
        "the CA policy does not fit the new holder set: {0}\n\
         hint: first change the policy with `nkpki policy set` (M current shares), then reshare"
    )]
    Policy(crate::policy::PolicyError),
    #[error(
        "holders[{index}] ({holder}) has no age_recipient: an online reshare seals each new \
         package to its holder's age recipient, never to a passphrase\n\
         hint: add the holder's `age-keygen` public key as age_recipient, or reshare offline \
         on the ceremony laptop"
    )]
    NoRecipient { index: usize, holder: String },
    #[error(
        "{first} and {second} have the same age recipient: one key would open both packages, \
         and one person would hold two shares\n\
         hint: each holder gives its own `age-keygen` public key"
    )]
    DuplicateRecipient { first: String, second: String },
    #[error("{0}")]
    ServerInfo(String),
    #[error(
        "re-dealing a threshold key needs the key whole: reshare offline on the ceremony \
         laptop, docs/ceremony.md\nhint: `nkpki reshare --manifest ... --token ...`"
    )]
    ThresholdOnline,
    #[error("the reshare request is not for this CA's current share set: {0}")]
    Stale(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// What a reshare is asked to make: the new holders (in share order) and threshold, and how
/// the new shares leave the laptop.
#[derive(Debug)]
pub struct ReshareRequest {
    params: CeremonyParams,
}

impl ReshareRequest {
    /// Validates the new holder set and threshold against the ceremony's limits (2–15,
    /// 3–20 holders, threshold ≤ holders), for the CA `current` describes. Nothing is read
    /// from a share before this passes.
    pub fn new(
        current: &VerifiedManifest,
        holders: Vec<Holder>,
        threshold: u32,
        delivery: Delivery,
    ) -> Result<Self, ReshareError> {
        for (i, h) in holders.iter().enumerate() {
            let Some(recipient) = h.age_recipient.as_ref().map(ToString::to_string) else {
                continue;
            };
            let twin = holders[..i].iter().find(|o| {
                o.age_recipient.as_ref().map(ToString::to_string).as_ref() == Some(&recipient)
            });
            if let Some(first) = twin {
                return Err(ReshareError::DuplicateRecipient {
                    first: first.nitrokey_id.to_string(),
                    second: h.nitrokey_id.to_string(),
                });
            }
        }
        let ca = &current.body.ca;
        let key: KeyAlgorithm = ca
            .key
            .parse()
            .map_err(|_| ReshareError::CaInfo(format!("unknown key type {:?}", ca.key)))?;
        let subject = CaSubject {
            name: ca.name.clone(),
            org: ca.org.clone(),
            country: ca.country.clone(),
        };
        let mut params = CeremonyParams::new(
            subject,
            key,
            ca.validity_years,
            ca.path_len,
            threshold,
            holders,
        )?;
        params.delivery = delivery;
        if current.threshold_key().is_some() {
            params = params.with_mode(CaMode::Threshold)?;
        }
        // the CA policy travels with the CA: checked against the new threshold and holders
        if let Some(policy) = &current.body.policy {
            params = params
                .with_policy(policy.clone())
                .map_err(ReshareError::Policy)?;
        }
        params.policy_revision = current.body.policy_revision;
        Ok(ReshareRequest { params })
    }

    /// The request of an online reshare (a `reshare` session's statement): every new
    /// holder needs an age recipient, the new packages point the agents at the statement's
    /// server, and a threshold-mode CA is refused. The server checks it before any holder
    /// is asked, and the session worker again before it uses a share.
    pub fn online(
        current: &VerifiedManifest,
        statement: &crate::proto::ReshareStatement,
    ) -> Result<Self, ReshareError> {
        if current.threshold_key().is_some() {
            return Err(ReshareError::ThresholdOnline);
        }
        if let Some((index, h)) = statement.holders.iter().enumerate().find(|(_, h)| {
            h.age_recipient
                .as_deref()
                .is_none_or(|r| r.trim().is_empty())
        }) {
            return Err(ReshareError::NoRecipient {
                index,
                holder: h.nitrokey_id.clone(),
            });
        }
        let holders_json = serde_json::to_string(&statement.holders)
            .map_err(|e| ReshareError::CaInfo(e.to_string()))?;
        let holders = ceremony::parse_holders(&holders_json)?;
        let url = statement.server_url.clone();
        let insecure = url.as_deref().is_some_and(crate::package::is_plain_http);
        let info =
            crate::package::check_server_info(url, statement.server_cert_sha256.clone(), insecure)
                .map_err(|p| ReshareError::ServerInfo(p.message))?;
        Self::new(
            current,
            holders,
            statement.threshold,
            Delivery::Packages(info),
        )
    }

    pub fn holders(&self) -> &[Holder] {
        &self.params.holders
    }

    pub fn threshold(&self) -> u8 {
        self.params.threshold
    }
}

/// A reshare's result: the new ceremony output (manifest, sealed shares or packages, text
/// log) and the JSON reshare log.
#[derive(Debug)]
pub struct ReshareOutput {
    pub output: CeremonyOutput,
    pub record: ReshareRecord,
}

/// The reshare log (`reshare.json`): who, when, the old and new sets. Public information
/// only.
#[derive(Debug, Serialize)]
pub struct ReshareRecord {
    pub format: &'static str,
    pub ca_id: String,
    pub ca_name: String,
    pub certificate_sha256: String,
    pub at: String,
    pub tool: String,
    /// The current holders whose shares rebuilt the key (share index and holder id).
    pub shares_used: Vec<UsedShare>,
    pub old: SetRecord,
    pub new: SetRecord,
    pub removed_holders: Vec<String>,
    pub added_holders: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct UsedShare {
    pub index: u8,
    pub holder: String,
    pub source: String,
}

#[derive(Debug, Serialize)]
pub struct SetRecord {
    pub set_version: u32,
    pub set_id: String,
    pub threshold: u8,
    pub total: u8,
    pub holders: Vec<String>,
    pub manifest_sha256: String,
    /// Each holder's share fingerprint (new set only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fingerprints: Vec<(String, String)>,
}

fn set_record(manifest: &Manifest, fingerprints: Vec<(String, String)>) -> SetRecord {
    let body = &manifest.signed;
    SetRecord {
        set_version: body.set_version,
        set_id: body.share_set.id().0,
        threshold: body.share_set.threshold,
        total: body.share_set.total,
        holders: body.holders.iter().map(|h| h.nitrokey_id.clone()).collect(),
        manifest_sha256: manifest.digest(),
        fingerprints,
    }
}

/// Checks the shares (each against the current manifest, no duplicates, at least M) and
/// rebuilds the CA key from them, checked against the certificate; for a threshold-mode
/// CA, also its safe primes.
fn rebuild_key(
    current: &VerifiedManifest,
    shares: &[(String, Share)],
) -> Result<(CaKey, Option<shoup::SafePrimes>), ReshareError> {
    for (i, (what, share)) in shares.iter().enumerate() {
        current.check_share(share, what)?;
        if let Some((other, _)) = shares[..i].iter().find(|(_, s)| s.index == share.index) {
            return Err(ReshareError::Duplicate {
                what: what.clone(),
                other: other.clone(),
                index: share.index,
            });
        }
    }
    if shares.len() < current.threshold() as usize {
        return Err(ReshareError::NotEnough {
            got: shares.len(),
            needed: current.threshold(),
        });
    }
    if let Some(threshold_key) = current.threshold_key() {
        let primes = threshold_primes(current, threshold_key, shares)?;
        let key = CaKey::from_rsa(
            primes
                .to_rsa_private_key()
                .map_err(ReshareError::Threshold)?,
        )?;
        if key.spki_der()? != current.ca.spki_der {
            return Err(ReshareError::KeyMismatch);
        }
        return Ok((key, Some(primes)));
    }
    let only: Vec<Share> = shares.iter().map(|(_, s)| s.clone()).collect();
    let pkcs8 = current
        .body
        .share_set
        .recover(&only)
        .map_err(ReshareError::Recover)?;
    drop(only);
    let key = CaKey::from_pkcs8_der(&pkcs8)?;
    drop(pkcs8);
    if key.spki_der()? != current.ca.spki_der {
        return Err(ReshareError::KeyMismatch);
    }
    Ok((key, None))
}

/// A threshold-mode CA: M key shares give back its safe primes (see
/// [`shoup::recover_primes`]), from which the new set is dealt.
fn threshold_primes(
    current: &VerifiedManifest,
    threshold_key: &shoup::ThresholdKey,
    shares: &[(String, Share)],
) -> Result<shoup::SafePrimes, ReshareError> {
    let mut key_shares = Vec::with_capacity(shares.len());
    for (what, share) in shares {
        let key_share =
            current
                .body
                .share_set
                .key_share(share)
                .map_err(|reason| ManifestError::Share {
                    what: what.clone(),
                    reason,
                })?;
        key_shares.push(key_share);
    }
    shoup::recover_primes(threshold_key, &key_shares).map_err(ReshareError::Threshold)
}

/// Reshares the CA of `current` (the manifest as read, and verified) with `shares` of its
/// current set: a new KEK wraps the same CA key for `request`'s holders and threshold, and
/// the new manifest (set version + 1) supersedes `current`. The CA key, the old and the
/// new KEK exist only in memory, for the duration of this call.
pub fn reshare(
    current_manifest: &Manifest,
    current: &VerifiedManifest,
    shares: &[(String, Share)],
    request: &ReshareRequest,
    now: OffsetDateTime,
) -> Result<ReshareOutput, ReshareError> {
    let params = &request.params;
    let at = now.format(&Rfc3339).unwrap_or_default();
    let mut log = String::new();
    ceremony::stamp(
        &mut log,
        &format!(
            "nkpki {} reshare of CA {} ({}) started",
            env!("CARGO_PKG_VERSION"),
            current.ca_id(),
            current.body.ca.name
        ),
    );
    let (key, primes) = rebuild_key(current, shares)?;
    let used: Vec<UsedShare> = shares
        .iter()
        .map(|(what, s)| UsedShare {
            index: s.index,
            holder: s
                .holder
                .clone()
                .or_else(|| current.holder(s.index).map(|h| h.nitrokey_id.clone()))
                .unwrap_or_default(),
            source: what.clone(),
        })
        .collect();
    ceremony::stamp(
        &mut log,
        &format!(
            "CA key rebuilt in memory from {} share(s) of set version {} ({}); it matches the \
             certificate {}",
            shares.len(),
            current.set_version(),
            used.iter()
                .map(|u| u.holder.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            current.body.certificate_sha256
        ),
    );
    let ids = ceremony::holder_ids(params);
    let (set, new_shares) = match primes {
        Some(primes) => {
            let (threshold_key, key_shares) =
                shoup::deal(primes, params.threshold, ids.len() as u8, &mut rand::rng())
                    .map_err(ReshareError::Threshold)?;
            let dealt = sss::threshold_set(threshold_key, &key_shares, &ids, &current.ca.spki_der)
                .map_err(CeremonyError::from)?;
            drop(key_shares);
            ceremony::stamp(
                &mut log,
                &format!(
                    "safe primes rebuilt from the key shares; private exponent re-dealt as \
                     Shoup shares {}-of-{}; primes and polynomial wiped; share set {} \
                     (version {})",
                    params.threshold,
                    ids.len(),
                    dealt.0.id(),
                    current.set_version() + 1
                ),
            );
            dealt
        }
        None => {
            let pkcs8 = key.to_pkcs8_der()?;
            let split = sss::split_bound(
                &pkcs8,
                params.threshold,
                ids.len() as u8,
                &ids,
                &current.ca.spki_der,
            )
            .map_err(CeremonyError::from)?;
            drop(pkcs8);
            ceremony::stamp(
                &mut log,
                &format!(
                    "CA key wrapped under a new KEK; KEK split {}-of-{}; share set {} (version {})",
                    params.threshold,
                    ids.len(),
                    split.0.id(),
                    current.set_version() + 1
                ),
            );
            split
        }
    };
    let mut earlier_sets = current.body.earlier_sets.clone();
    earlier_sets.push(EarlierSet {
        set_version: current.set_version(),
        set_id: current.body.share_set.id(),
    });
    let lineage = Lineage {
        ca_id: Some(current.ca_id().clone()),
        set_version: current.set_version() + 1,
        supersedes: Some(current_manifest.digest()),
        earlier_sets,
    };
    let certificate = (
        current.body.certificate.clone(),
        current.body.certificate_sha256.clone(),
    );
    let mut output = ceremony::finish_with(
        params,
        now,
        log,
        key,
        certificate,
        (set, new_shares),
        lineage,
    )?;
    output.log_file = "reshare.log";
    let old_ids: Vec<String> = current
        .body
        .holders
        .iter()
        .map(|h| h.nitrokey_id.clone())
        .collect();
    let record = ReshareRecord {
        format: "nkpki-reshare-log/1",
        ca_id: current.ca_id().0.clone(),
        ca_name: current.body.ca.name.clone(),
        certificate_sha256: current.body.certificate_sha256.clone(),
        at,
        tool: format!("nkpki {}", env!("CARGO_PKG_VERSION")),
        shares_used: used,
        old: set_record(current_manifest, Vec::new()),
        new: set_record(
            &output.manifest,
            output
                .shares
                .iter()
                .map(|s| (s.nitrokey_id.to_string(), s.fingerprint.clone()))
                .collect(),
        ),
        removed_holders: old_ids
            .iter()
            .filter(|i| !ids.contains(i))
            .cloned()
            .collect(),
        added_holders: ids
            .iter()
            .filter(|i| !old_ids.contains(i))
            .cloned()
            .collect(),
    };
    Ok(ReshareOutput { output, record })
}

impl ReshareRecord {
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

impl ReshareOutput {
    /// Writes the reshare into `dir` (an empty directory) as a ceremony is written, plus
    /// `reshare.json`.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.output.write_to(dir)?;
        crate::fsx::write_new(
            &dir.join("reshare.json"),
            self.record.to_json().as_bytes(),
            0o644,
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ceremony::NitrokeyId;
    use crate::pki;

    fn holders(ids: &[u32]) -> Vec<Holder> {
        ids.iter()
            .map(|i| Holder {
                nitrokey_id: NitrokeyId::parse(&format!("NK{i:03}")).unwrap(),
                holder_name: format!("Holder {i}"),
                holder_email: format!("h{i}@example.org"),
                location: "Paris".into(),
                age_recipient: Some(age::x25519::Identity::generate().to_public()),
            })
            .collect()
    }

    fn ceremony(threshold: u32, ids: &[u32]) -> (CeremonyOutput, Vec<(String, Share)>) {
        ceremony_with_policy(threshold, ids, None)
    }

    fn ceremony_with_policy(
        threshold: u32,
        ids: &[u32],
        policy: Option<&str>,
    ) -> (CeremonyOutput, Vec<(String, Share)>) {
        let subject = CaSubject {
            name: "Reshare CA".into(),
            org: "nkpki tests".into(),
            country: "FR".into(),
        };
        let params = CeremonyParams::new(
            subject,
            KeyAlgorithm::EcdsaP256,
            5,
            None,
            threshold,
            holders(ids),
        )
        .unwrap();
        let params = match policy {
            Some(text) => params
                .with_policy(crate::policy::Policy::from_toml(text).unwrap())
                .unwrap(),
            None => params,
        };
        let key = CaKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let now = OffsetDateTime::now_utc();
        let cert = pki::self_signed(&key, &params.subject, 5, None, now).unwrap();
        let spki = pki::CaCertificate::from_der(&cert).unwrap().spki_der;
        let pkcs8 = key.to_pkcs8_der().unwrap();
        let names: Vec<String> = ids.iter().map(|i| format!("NK{i:03}")).collect();
        let (set, shares) =
            sss::split_bound(&pkcs8, threshold as u8, ids.len() as u8, &names, &spki).unwrap();
        let kept: Vec<(String, Share)> = shares.iter().map(|s| (s.describe(), s.clone())).collect();
        let out = ceremony::finish_with(
            &params,
            now,
            String::new(),
            key,
            (
                pki::pem_encode("CERTIFICATE", &cert),
                pki::fingerprint(&cert),
            ),
            (set, shares),
            Lineage::ceremony(),
        )
        .unwrap();
        (out, kept)
    }

    #[test]
    fn a_reshare_keeps_the_ca_and_chains_to_the_manifest_it_supersedes() {
        let (first, shares) = ceremony(2, &[1, 2, 3]);
        let verified = first.manifest.verify().unwrap();
        let request =
            ReshareRequest::new(&verified, holders(&[2, 3, 4, 5]), 3, Delivery::ShareFiles)
                .unwrap();
        let out = reshare(
            &first.manifest,
            &verified,
            &shares[1..3],
            &request,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let second = out.output.manifest.verify().unwrap();
        assert_eq!(second.ca_id(), verified.ca_id());
        assert_eq!(second.set_version(), 2);
        assert_eq!(second.threshold(), 3);
        assert_eq!(
            second.body.certificate_sha256,
            verified.body.certificate_sha256
        );
        assert_eq!(
            second.body.supersedes.as_deref(),
            Some(first.manifest.digest().as_str())
        );
        assert_eq!(out.record.removed_holders, vec!["NK001".to_owned()]);
        assert_eq!(out.record.added_holders, vec!["NK004", "NK005"]);
        // an old share is named as such against the new manifest
        let err = second.check_share(&shares[0].1, "old").unwrap_err();
        assert!(
            err.to_string()
                .contains("old share set (version 1, current is 2)"),
            "{err}"
        );

        // a second reshare from the first one chains on
        let verified2 = second;
        let request =
            ReshareRequest::new(&verified2, holders(&[6, 7, 8]), 2, Delivery::ShareFiles).unwrap();
        assert!(matches!(
            reshare(
                &out.output.manifest,
                &verified2,
                &shares[1..3],
                &request,
                OffsetDateTime::now_utc()
            ),
            Err(ReshareError::Manifest(
                ManifestError::SupersededShare { .. }
            ))
        ));
    }

    #[test]
    fn a_tampered_lineage_is_refused() {
        let (first, shares) = ceremony(2, &[1, 2, 3]);
        let verified = first.manifest.verify().unwrap();
        let request =
            ReshareRequest::new(&verified, holders(&[1, 2, 3]), 2, Delivery::ShareFiles).unwrap();
        let out = reshare(
            &first.manifest,
            &verified,
            &shares[..2],
            &request,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let mut body = out.output.manifest.signed.clone();
        body.earlier_sets.clear();
        let key = CaKey::from_pkcs8_der(
            &verified
                .body
                .share_set
                .recover(&[shares[0].1.clone(), shares[1].1.clone()])
                .unwrap(),
        )
        .unwrap();
        let err = Manifest::sign(body, &key).unwrap().verify().unwrap_err();
        assert!(err.to_string().contains("earlier share sets"), "{err}");
    }

    #[test]
    fn out_of_limit_parameters_are_refused_before_any_share_is_used() {
        let (first, _) = ceremony(2, &[1, 2, 3]);
        let verified = first.manifest.verify().unwrap();
        for (ids, threshold, needle) in [
            (vec![1, 2, 3], 1, "outside 2..=15"),
            (vec![1, 2, 3], 4, "more than the 3 shares"),
            (vec![1, 2], 2, "between 3 and 20"),
        ] {
            let err =
                ReshareRequest::new(&verified, holders(&ids), threshold, Delivery::ShareFiles)
                    .unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn the_ca_policy_is_carried_over_and_must_fit_the_new_set() {
        let policy = "version = 1\n[server]\napprovals = 3\nrequired_holders = [\"NK002\"]\n";
        let (first, shares) = ceremony_with_policy(2, &[1, 2, 3], Some(policy));
        let verified = first.manifest.verify().unwrap();
        // the new set keeps NK002 and a threshold the policy's approvals still cover
        let request =
            ReshareRequest::new(&verified, holders(&[2, 3, 4, 5]), 3, Delivery::ShareFiles)
                .unwrap();
        let out = reshare(
            &first.manifest,
            &verified,
            &shares[1..3],
            &request,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let second = out.output.manifest.verify().unwrap();
        assert_eq!(second.body.policy, verified.body.policy);
        // a set without the required holder, or a threshold above the policy's approvals
        for (ids, threshold, needle) in [
            (vec![1, 3, 4], 2, "NK002"),
            (vec![2, 3, 4, 5], 4, "approvals"),
        ] {
            let err =
                ReshareRequest::new(&verified, holders(&ids), threshold, Delivery::ShareFiles)
                    .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("policy does not fit") && text.contains(needle),
                "{text}"
            );
        }
    }

    fn statement(verified: &VerifiedManifest, ids: &[u32]) -> crate::proto::ReshareStatement {
        crate::proto::ReshareStatement {
            format: crate::proto::RESHARE_FORMAT.into(),
            ca_id: verified.ca_id().0.clone(),
            current_set_version: 1,
            current_set_id: verified.body.share_set.id().0,
            current_threshold: verified.threshold(),
            current_holders: Vec::new(),
            supersedes: String::new(),
            new_set_version: 2,
            threshold: 2,
            holders: holders(ids)
                .into_iter()
                .map(|h| crate::proto::ReshareHolder {
                    nitrokey_id: h.nitrokey_id.to_string(),
                    holder_name: h.holder_name,
                    holder_email: h.holder_email,
                    location: h.location,
                    age_recipient: h.age_recipient.map(|r| r.to_string()),
                })
                .collect(),
            server_url: Some("https://pki.example.org:8443".into()),
            server_cert_sha256: None,
        }
    }

    #[test]
    fn an_offline_request_refuses_one_recipient_for_two_holders() {
        let (first, _) = ceremony(2, &[1, 2, 3]);
        let verified = first.manifest.verify().unwrap();
        let mut new = holders(&[2, 3, 4]);
        new[1].age_recipient = new[0].age_recipient.clone();
        let err = ReshareRequest::new(&verified, new, 2, Delivery::ShareFiles).unwrap_err();
        assert!(
            err.to_string()
                .contains("NK002 and NK003 have the same age recipient"),
            "{err}"
        );
    }

    #[test]
    fn an_online_request_needs_recipients_and_a_valid_server_url() {
        let (first, _) = ceremony(2, &[1, 2, 3]);
        let verified = first.manifest.verify().unwrap();
        let ok = statement(&verified, &[2, 3, 4]);
        let request = ReshareRequest::online(&verified, &ok).unwrap();
        assert_eq!(request.threshold(), 2);
        assert!(matches!(request.params.delivery, Delivery::Packages(_)));

        let mut no_recipient = ok.clone();
        no_recipient.holders[2].age_recipient = None;
        let err = ReshareRequest::online(&verified, &no_recipient).unwrap_err();
        assert!(
            err.to_string()
                .contains("holders[2] (NK004) has no age_recipient"),
            "{err}"
        );
        let mut bad_url = ok.clone();
        bad_url.server_url = Some("ftp://pki.example.org".into());
        let err = ReshareRequest::online(&verified, &bad_url).unwrap_err();
        assert!(
            err.to_string().contains("must start with https://"),
            "{err}"
        );
        let mut twins = ok.clone();
        twins.holders[2].age_recipient = twins.holders[0].age_recipient.clone();
        let err = ReshareRequest::online(&verified, &twins).unwrap_err();
        assert!(
            err.to_string()
                .contains("NK002 and NK004 have the same age recipient"),
            "{err}"
        );
        let mut too_high = ok;
        too_high.threshold = 300;
        let err = ReshareRequest::online(&verified, &too_high).unwrap_err();
        assert!(err.to_string().contains("outside 2..=15"), "{err}");
    }
}
