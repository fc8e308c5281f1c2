//! The worker's side: one session's secrets, from `Open` to the one signature, then exit.

use super::{WorkerError, frame};
use crate::manifest::{Manifest, VerifiedManifest};
use crate::pki::{self, CaKey, Csr, Revoked};
use crate::proto::{SignJob, WorkerReply, WorkerRequest};
use crate::sss::Share;
use age_core::format::{FileKey, Stanza};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::cell::Cell;
use std::io::{Read, Write};
use zeroize::Zeroizing;

/// The tag of age's X25519 recipient stanzas.
const X25519_TAG: &str = "X25519";

/// The session's age identity. It opens only files whose header holds exactly one X25519
/// stanza (and at most one of the random "…-grease" stanzas the age crate adds to every
/// header), and checks that before any key agreement: a share also sealed to someone else
/// is refused unread.
struct SessionKey {
    identity: age::x25519::Identity,
    /// Set when a header was refused: (X25519 stanzas, other stanzas).
    refused: Cell<Option<(usize, usize)>>,
}

impl age::Identity for SessionKey {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        self.identity.unwrap_stanza(stanza)
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, age::DecryptError>> {
        let x25519 = stanzas.iter().filter(|s| s.tag == X25519_TAG).count();
        let grease = stanzas
            .iter()
            .filter(|s| s.tag.ends_with("-grease"))
            .count();
        let other = stanzas.len() - x25519 - grease.min(1);
        if x25519 != 1 || other != 0 {
            self.refused.set(Some((x25519, other)));
            return Some(Err(age::DecryptError::InvalidHeader));
        }
        self.identity.unwrap_stanzas(stanzas)
    }
}

/// A session between `Open` and `Sign`: everything secret the worker holds.
struct Session {
    /// The manifest as registered (a reshare names its digest).
    raw: Manifest,
    manifest: VerifiedManifest,
    key: SessionKey,
    /// The accepted shares, and beside them (same order) the holders who sent them. Kept
    /// apart so the shares reach the recovery without being moved into a new buffer.
    shares: Vec<Share>,
    holders: Vec<String>,
}

fn refused(holder_id: &str, code: &str, why: impl Into<String>) -> WorkerReply {
    WorkerReply::Refused {
        holder_id: holder_id.to_owned(),
        code: code.to_owned(),
        why: why.into(),
    }
}

impl Session {
    fn open(manifest_json: &str) -> Result<Self, String> {
        let raw = Manifest::from_json(manifest_json)
            .map_err(|e| format!("the CA's manifest does not verify: {e}"))?;
        let manifest = raw
            .verify()
            .map_err(|e| format!("the CA's manifest does not verify: {e}"))?;
        // never more than M shares are kept: room for them all, so the vector never moves
        // them into a new buffer and frees the old one unwiped
        let threshold = manifest.threshold() as usize;
        Ok(Session {
            raw,
            manifest,
            key: SessionKey {
                identity: age::x25519::Identity::generate(),
                refused: Cell::new(None),
            },
            shares: Vec::with_capacity(threshold),
            holders: Vec::with_capacity(threshold),
        })
    }

    fn recipient(&self) -> String {
        self.key.identity.to_public().to_string()
    }

    fn threshold(&self) -> usize {
        self.manifest.threshold() as usize
    }

    /// Checks a contribution and keeps its share, or says why not.
    fn contribute(&mut self, holder_id: &str, ciphertext: &str) -> WorkerReply {
        if self.shares.len() >= self.threshold() {
            return refused(
                holder_id,
                "not-waiting",
                "the session already holds the shares it needs",
            );
        }
        if self.holders.iter().any(|h| h == holder_id) {
            return refused(holder_id, "duplicate", "this holder's share is already in");
        }
        self.key.refused.set(None);
        let plain = match crate::seal::open_with(ciphertext.as_bytes(), &self.key) {
            Ok(plain) => plain,
            Err(err) => {
                let why = match self.key.refused.take() {
                    Some((x25519, other)) => format!(
                        "the share is sealed to {x25519} X25519 and {other} other recipients; \
                         it must be sealed to the session's key alone"
                    ),
                    None => format!("the share cannot be decrypted with the session key: {err}"),
                };
                return refused(holder_id, "bad-ciphertext", why);
            }
        };
        let Ok(share) = serde_json::from_slice::<Share>(&plain) else {
            return refused(
                holder_id,
                "bad-share",
                "the decrypted contribution is not a share",
            );
        };
        drop(plain);
        if share.set_id != self.manifest.body.share_set.id()
            && self.manifest.superseded_version(&share.set_id).is_none()
        {
            return refused(
                holder_id,
                "bad-share",
                format!(
                    "share failed verification: the share sent by {holder_id} belongs to \
                     share set {}, not to the CA's current set {} (version {})",
                    share.set_id,
                    self.manifest.body.share_set.id(),
                    self.manifest.set_version()
                ),
            );
        }
        if let Err(err) = self
            .manifest
            .check_share(&share, &format!("the share sent by {holder_id}"))
        {
            let code = match err {
                crate::manifest::ManifestError::SupersededShare { .. } => "superseded-share-set",
                _ => "bad-share",
            };
            return refused(holder_id, code, format!("share failed verification: {err}"));
        }
        let owner = self
            .manifest
            .holder(share.index)
            .map(|h| h.nitrokey_id.as_str());
        if owner != Some(holder_id) {
            return refused(
                holder_id,
                "bad-share",
                format!(
                    "{holder_id} sent share {} which belongs to {}",
                    share.index,
                    owner.unwrap_or("nobody")
                ),
            );
        }
        if self.shares.iter().any(|s| s.index == share.index) {
            return refused(
                holder_id,
                "duplicate",
                format!("share {} is already in", share.index),
            );
        }
        let index = share.index;
        self.shares.push(share);
        self.holders.push(holder_id.to_owned());
        WorkerReply::Accepted {
            holder_id: holder_id.to_owned(),
            index,
            count: self.shares.len() as u8,
        }
    }

    /// Rebuilds the CA key, does the job, and wipes everything on the way out.
    fn sign(self, job: SignJob) -> Result<WorkerReply, String> {
        if self.shares.len() < self.threshold() {
            return Err(format!(
                "only {} of the {} shares needed are in",
                self.shares.len(),
                self.threshold()
            ));
        }
        let Session {
            raw,
            manifest,
            key: session_key,
            shares,
            holders,
        } = self;
        drop(session_key);
        if let SignJob::Reshare { request } = &job {
            return super::reshare::reshare(&raw, &manifest, shares, holders, request).map(
                |json| WorkerReply::Signed {
                    der: B64.encode(json),
                },
            );
        }
        drop(holders);
        let pkcs8: Zeroizing<Vec<u8>> = manifest
            .body
            .share_set
            .recover(&shares)
            .map_err(|e| format!("recovering the CA key: {e}"))?;
        drop(shares);
        let key = CaKey::from_pkcs8_der(&pkcs8).map_err(|e| e.to_string())?;
        drop(pkcs8);
        if key.spki_der().map_err(|e| e.to_string())? != manifest.ca.spki_der {
            return Err("the rebuilt key does not match the CA certificate".into());
        }
        let signed = |der: Vec<u8>| WorkerReply::Signed {
            der: B64.encode(der),
        };
        match job {
            SignJob::Issue { csr_der, view } => issue(&key, &manifest, &csr_der, &view).map(signed),
            SignJob::Crl {
                revoked,
                number,
                now,
            } => crl(&key, &manifest, revoked, number, now).map(signed),
            SignJob::Manifest { body_json } => {
                manifest_signature(&key, &manifest, &body_json).map(signed)
            }
            SignJob::Reshare { .. } => Err("a reshare is not signed with the rebuilt key".into()),
            SignJob::IssueBatch { csr_ders, views } => {
                super::batch::issue_batch(&key, &manifest, &csr_ders, &views)
                    .map(|ders| WorkerReply::SignedBatch { ders })
            }
        }
    }
}

fn issue(
    key: &CaKey,
    manifest: &VerifiedManifest,
    csr_der: &str,
    view: &pki::CertificateView,
) -> Result<Vec<u8>, String> {
    let der = B64
        .decode(csr_der)
        .map_err(|_| "the CSR is not base64".to_owned())?;
    let csr = Csr::parse(&der).map_err(|e| e.to_string())?;
    let terms = pki::Terms::of_view(view).map_err(|e| e.to_string())?;
    let issued = pki::issue(key, &manifest.ca, &csr, &terms).map_err(|e| e.to_string())?;
    if issued.view != *view {
        return Err(
            "the certificate issuance would make differs from the one the holders approved".into(),
        );
    }
    Ok(issued.der)
}

fn crl(
    key: &CaKey,
    manifest: &VerifiedManifest,
    revoked: Vec<(String, String, i64)>,
    number: u64,
    now: i64,
) -> Result<Vec<u8>, String> {
    let now = time::OffsetDateTime::from_unix_timestamp(now)
        .map_err(|_| format!("the CRL time {now} is out of range"))?;
    let revoked: Vec<Revoked> = revoked
        .into_iter()
        .map(|(serial_hex, reason, revoked_at)| Revoked {
            serial_hex,
            reason,
            revoked_at,
        })
        .collect();
    let (der, _pem) =
        pki::sign_crl(key, &manifest.ca, number, &revoked, now).map_err(|e| e.to_string())?;
    Ok(der)
}

/// Signs a new manifest body for this CA: only one that is the worker's own manifest with
/// its policy changed and the next policy revision, given in its signed form. Returns the
/// raw signature.
fn manifest_signature(
    key: &CaKey,
    manifest: &VerifiedManifest,
    body_json: &str,
) -> Result<Vec<u8>, String> {
    let body: crate::manifest::ManifestBody = serde_json::from_str(body_json)
        .map_err(|e| format!("the manifest body is unreadable: {e}"))?;
    if body.signed_bytes().map_err(|e| e.to_string())? != body_json.as_bytes() {
        return Err("the manifest body is not in its signed form".into());
    }
    if let Some(part) = manifest.body.differs_beyond_policy(&body) {
        return Err(format!(
            "the manifest body changes the {part} of the CA's manifest, not only its policy"
        ));
    }
    if Some(body.policy_revision) != manifest.body.policy_revision.checked_add(1) {
        return Err("the manifest body is not the next policy revision".into());
    }
    let signed = Manifest::sign(body, key).map_err(|e| e.to_string())?;
    B64.decode(&signed.signature)
        .map_err(|e| format!("the signature is not base64: {e}"))
}

/// Answers with `Failed` and ends the worker with that error.
fn fail(output: &mut impl Write, why: String) -> Result<(), WorkerError> {
    frame::write(output, &WorkerReply::Failed { why: why.clone() })?;
    Err(WorkerError::Failed(why))
}

/// The worker's loop: reads requests from `input`, answers on `output` (which carries
/// nothing but frames), until it has signed once, is told to abort, or `input` ends.
/// Returns an error after answering `Failed` (or when the pipe itself fails), so that the
/// process exits 0 only after `Signed`, `Abort` or the end of its input.
pub fn run_worker(mut input: impl Read, mut output: impl Write) -> Result<(), WorkerError> {
    let mut session: Option<Session> = None;
    loop {
        let request = match frame::read::<WorkerRequest>(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(err @ (WorkerError::Malformed(_) | WorkerError::TooLarge(_))) => {
                return fail(&mut output, err.to_string());
            }
            Err(err) => return Err(err),
        };
        match request {
            WorkerRequest::Open { manifest_json } => {
                if session.is_some() {
                    return fail(&mut output, "the session is already open".into());
                }
                let opened = match Session::open(&manifest_json) {
                    Ok(opened) => opened,
                    Err(why) => return fail(&mut output, why),
                };
                let recipient = opened.recipient();
                session = Some(opened);
                frame::write(&mut output, &WorkerReply::Opened { recipient })?;
            }
            WorkerRequest::Contribution {
                holder_id,
                ciphertext,
            } => {
                let Some(open) = session.as_mut() else {
                    return fail(
                        &mut output,
                        "a contribution before the session is open".into(),
                    );
                };
                let reply = open.contribute(&holder_id, &ciphertext);
                frame::write(&mut output, &reply)?;
            }
            WorkerRequest::Sign { job } => {
                let Some(open) = session.take() else {
                    return fail(
                        &mut output,
                        "a signing job before the session is open".into(),
                    );
                };
                return match open.sign(job) {
                    Ok(reply) => frame::write(&mut output, &reply),
                    Err(why) => fail(&mut output, why),
                };
            }
            WorkerRequest::Abort {} => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::Identity as _;

    fn stanza(tag: &str) -> Stanza {
        Stanza {
            tag: tag.into(),
            args: vec!["arg".into()],
            body: vec![0; 32],
        }
    }

    /// Whether the header check let `tags` through to the X25519 identity.
    fn passes(tags: &[&str]) -> bool {
        let key = SessionKey {
            identity: age::x25519::Identity::generate(),
            refused: Cell::new(None),
        };
        let stanzas: Vec<Stanza> = tags.iter().map(|t| stanza(t)).collect();
        let _ = key.unwrap_stanzas(&stanzas);
        key.refused.get().is_none()
    }

    #[test]
    fn only_one_x25519_stanza_and_at_most_one_grease_stanza_pass() {
        assert!(passes(&["X25519"]));
        assert!(passes(&["X25519", "a!b-grease"]));
        assert!(!passes(&["X25519", "X25519"]));
        assert!(!passes(&["X25519", "ssh-ed25519"]));
        assert!(!passes(&["X25519", "a-grease", "b-grease"]));
        assert!(!passes(&["a-grease"]));
        assert!(!passes(&[]));
    }
}

#[cfg(test)]
mod manifest_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ceremony;
    use crate::sss::shoup::SafePrimes;

    /// A 2-of-3 CA from the test primes, and the dealer's key (the CA key).
    fn ca() -> (VerifiedManifest, CaKey) {
        let manifest = ceremony::test_threshold_ceremony("Worker CA").manifest;
        let primes = SafePrimes::from_text(ceremony::TEST_PRIMES).unwrap();
        let key = CaKey::from_rsa(primes.to_rsa_private_key().unwrap()).unwrap();
        (manifest.verify().unwrap(), key)
    }

    #[test]
    fn the_worker_signs_only_its_manifest_with_the_policy_changed() {
        let (manifest, key) = ca();
        let policy =
            crate::policy::Policy::from_toml("version = 1\n[crl]\napprovals = 3\n").unwrap();
        let next = manifest.body.with_policy(Some(policy)).unwrap();
        let json = String::from_utf8(next.signed_bytes().unwrap()).unwrap();
        let signature = manifest_signature(&key, &manifest, &json).unwrap();
        Manifest::from_parts(next.clone(), &signature)
            .verify()
            .unwrap();

        let mut holders = next.clone();
        holders.holders[1].location = "Elsewhere".into();
        let json = String::from_utf8(holders.signed_bytes().unwrap()).unwrap();
        let why = manifest_signature(&key, &manifest, &json).unwrap_err();
        assert!(why.contains("changes the holders"), "{why}");

        let mut skipped = next.clone();
        skipped.policy_revision = 5;
        let json = String::from_utf8(skipped.signed_bytes().unwrap()).unwrap();
        let why = manifest_signature(&key, &manifest, &json).unwrap_err();
        assert!(why.contains("not the next policy revision"), "{why}");

        let pretty = serde_json::to_string_pretty(&next).unwrap();
        let why = manifest_signature(&key, &manifest, &pretty).unwrap_err();
        assert!(why.contains("signed form"), "{why}");
    }
}
