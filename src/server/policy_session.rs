//! Online `policy` sessions: the CA policy changed by M holders (and whatever the current
//! policy asks for its own change) while the server runs. The server builds the new
//! manifest body — the registered one, its policy replaced, the next policy revision — and
//! the holders approve exactly its bytes; the session worker (reconstruct mode) or the
//! holders' signature shares (threshold mode) sign it; the server checks that it supersedes
//! the registered manifest and switches to it at once.

use super::{ApiErr, ApiResult, Live, State, internal, lock};
use crate::manifest::{Manifest, ManifestBody, VerifiedManifest};
use crate::pki;
use crate::policy::{self, Policy};
use crate::proto::{CreateSession, ManifestNews, NewPolicy, OfferSummary, SessionKind, SignJob};
use crate::sss::shoup;
use crate::store::{ApiRole, SessionRow};
use std::sync::Arc;

/// Who must approve a change of `manifest`'s policy ([`policy::change_verdict`]).
pub(super) fn change_verdict(manifest: &VerifiedManifest) -> policy::Verdict {
    policy::change_verdict(manifest.body.policy.as_ref(), manifest.threshold())
}

/// The new manifest body a stored policy session approved, re-read from the session's
/// request and checked against the digest the holders signed.
fn approved_body(row: &SessionRow) -> Result<ManifestBody, String> {
    if pki::sha256_hex(row.request.as_bytes()) != row.request_sha256 {
        return Err(
            "the stored manifest body no longer matches the digest the holders approved".into(),
        );
    }
    let body: ManifestBody = serde_json::from_str(&row.request)
        .map_err(|e| format!("the stored manifest body is unreadable: {e}"))?;
    if body.signed_bytes().map_err(|e| e.to_string())? != row.request.as_bytes() {
        return Err("the stored manifest body is not in its signed form".into());
    }
    Ok(body)
}

impl State {
    /// Only an operator whose token has role `ca-admin` proposes a policy change; a refusal
    /// is audited.
    pub(super) fn check_policy_proposer(&self, operator: &str, ca_id: &str) -> ApiResult<()> {
        match self.policy_proposer_refusal(operator)? {
            None => Ok(()),
            Some(refusal) => Err(self.audited_refusal(
                "session-refused",
                Some(ca_id),
                &format!("{operator}: proposing a CA policy change needs role ca-admin"),
                refusal,
            )),
        }
    }

    /// Why `operator` may not propose a CA policy change (not audited: the dry run asks
    /// too), if it may not.
    pub(crate) fn policy_proposer_refusal(&self, operator: &str) -> ApiResult<Option<ApiErr>> {
        let role = lock(&self.store).api_role(operator)?;
        Ok((role != Some(ApiRole::CaAdmin)).then(|| {
            ApiErr::new(
                403,
                "forbidden",
                "proposing a CA policy change needs an API token with role ca-admin (hint: \
                 `nkpki serve token create --role ca-admin`)",
            )
        }))
    }

    /// What the holders of a `policy` session approve: the new manifest body's signed
    /// bytes (its compact JSON), their digest, and the session's terms. The proposed policy
    /// is checked first, strictly and against this CA (threshold, holders): a bad one is a
    /// 422 `bad-policy` before any holder is asked.
    pub(super) fn policy_request(
        &self,
        manifest: &VerifiedManifest,
        req: &CreateSession,
    ) -> ApiResult<(String, String, OfferSummary)> {
        let bad = |message: String| ApiErr::new(422, "bad-policy", message);
        let policy = match &req.new_policy {
            Some(NewPolicy::Toml(text)) => {
                let policy = Policy::from_toml(text).map_err(|e| bad(e.to_string()))?;
                let holders: Vec<String> = manifest
                    .body
                    .holders
                    .iter()
                    .map(|h| h.nitrokey_id.clone())
                    .collect();
                policy
                    .check_for_ca(manifest.threshold(), &holders)
                    .map_err(|e| bad(e.to_string()))?;
                Some(policy)
            }
            Some(NewPolicy::Clear) => None,
            None => {
                return Err(ApiErr::new(
                    400,
                    "bad-request",
                    "a policy session needs new_policy (a policy file's text, or clear)",
                ));
            }
        };
        if policy == manifest.body.policy {
            return Err(bad(
                "the proposed policy is the CA's current policy: nothing would change".into(),
            ));
        }
        if let Some(open) = self.open_policy_session(&req.ca_id) {
            return Err(ApiErr::new(
                409,
                "policy-session-open",
                format!(
                    "session {open} already proposes a policy change for this CA; wait for it \
                     to end (hint: one change at a time, each made from the registered manifest)"
                ),
            ));
        }
        let body = manifest
            .body
            .with_policy(policy)
            .map_err(|e| bad(e.to_string()))?;
        let text = String::from_utf8(body.signed_bytes().map_err(internal)?).map_err(internal)?;
        let summary = OfferSummary {
            profile: "policy".into(),
            days: 0,
            not_before: 0,
            serial: None,
            reason: None,
            certificate: None,
            batch: None,
        };
        let digest = pki::sha256_hex(text.as_bytes());
        Ok((text, digest, summary))
    }

    /// The open `policy` session of this CA, if any.
    fn open_policy_session(&self, ca_id: &str) -> Option<String> {
        lock(&self.live)
            .iter()
            .find(|(_, l)| l.ca_id == ca_id && l.offer.kind == SessionKind::Policy)
            .map(|(id, _)| id.clone())
    }

    /// Signs the approved manifest body (the worker, or the signature shares), checks it
    /// supersedes the registered manifest, and switches the CA to it.
    pub(super) fn finalize_policy(&self, row: &SessionRow, manifest: &VerifiedManifest, l: Live) {
        let holders = l.approved.join(", ");
        let threshold = l.signing.is_some();
        let outcome = self
            .sign_policy(row, manifest, l)
            .and_then(|signed| self.switch_manifest(row, &signed));
        match outcome {
            Ok(what) => {
                self.count_session(&row.session_id, "signed");
                tracing::info!("session signed: {what}, approved by {holders}");
                let how = if threshold {
                    "from the signature shares of"
                } else {
                    "by the session worker (which has exited) with the shares of"
                };
                drop(self.audit(
                    "session-signed",
                    Some(&row.ca_id),
                    Some(&row.session_id),
                    None,
                    &format!("new manifest signed {how} {holders}: {what}"),
                ));
            }
            Err(why) => {
                let why = if threshold {
                    why
                } else {
                    format!("{why}; secrets wiped")
                };
                self.end_session(&row.session_id, "failed", &why);
            }
        }
        self.notify();
    }

    fn sign_policy(
        &self,
        row: &SessionRow,
        manifest: &VerifiedManifest,
        l: Live,
    ) -> Result<Manifest, String> {
        let body = approved_body(row)?;
        let signature = match l.signing {
            Some(session) => {
                if session.tbs.as_slice() != row.request.as_bytes() {
                    return Err("the signed bytes are not the approved manifest body".into());
                }
                let key = manifest
                    .threshold_key()
                    .ok_or("the CA has no threshold key")?;
                shoup::combine(key, &session.tbs, &session.context, &session.shares)
                    .map_err(|e| format!("the signature shares do not combine: {e}"))?
            }
            None => {
                let worker = l.worker.clone();
                drop(l);
                let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
                let handle = runtime
                    .block_on(async { worker.lock().await.take() })
                    .ok_or("the session's worker is gone")?;
                let job = SignJob::Manifest {
                    body_json: row.request.clone(),
                };
                runtime
                    .block_on(handle.sign(job))
                    .map_err(|e| format!("the session's worker did not sign: {e}"))?
            }
        };
        Ok(Manifest::from_parts(body, &signature))
    }

    /// Checks the new manifest (it verifies, and is the registered one with only its
    /// policy changed and the next revision), stores it with the session's end, serves it
    /// from now on, and ends the CA's other open sessions: they were judged by the old
    /// policy. Returns what changed.
    fn switch_manifest(&self, row: &SessionRow, signed: &Manifest) -> Result<String, String> {
        let new = signed
            .verify()
            .map_err(|e| format!("the new manifest does not verify: {e}"))?;
        // checked, written and served under one hold of the store: a registration or
        // another switch cannot come between the check and the write
        let mut store = lock(&self.store);
        let registered_json = store
            .ca_manifest(&row.ca_id)
            .map_err(|e| e.to_string())?
            .ok_or("the CA is no longer registered")?;
        let registered = Manifest::from_json(&registered_json)
            .and_then(|m| m.verify())
            .map_err(|e| format!("the registered manifest: {e}"))?;
        if let Some(part) = registered.body.differs_beyond_policy(&new.body) {
            return Err(format!(
                "the new manifest changes the {part} of the registered one, not only its policy"
            ));
        }
        let next = registered.body.policy_revision.checked_add(1);
        if Some(new.body.policy_revision) != next {
            return Err(format!(
                "the new manifest (policy revision {}) does not supersede the registered one \
                 (revision {})",
                new.body.policy_revision, registered.body.policy_revision
            ));
        }
        let revision = new.body.policy_revision;
        let detail = format!(
            "{} in force from now: policy revision {revision}, manifest SHA-256 {}",
            if new.body.policy.is_some() {
                "new CA policy"
            } else {
                "CA policy removed (M approvals, no rule)"
            },
            signed.digest()
        );
        store
            .record_policy_change(
                &row.session_id,
                &row.ca_id,
                &registered_json,
                &signed.to_json(),
                &detail,
            )
            .map_err(|e| format!("the store refused the new manifest: {e}"))?;
        lock(&self.manifests).insert(row.ca_id.clone(), Arc::new(new));
        drop(store);
        self.end_sessions_judged_by_old_policy(&row.ca_id, revision);
        // agents waiting in a poll learn of the new manifest now
        self.notify_offers(&row.ca_id);
        Ok(detail)
    }

    /// Ends (cancelled) every open session of `ca_id`: each was checked and offered under
    /// the policy just replaced, so none signs under it.
    fn end_sessions_judged_by_old_policy(&self, ca_id: &str, revision: u32) {
        let ended: Vec<(String, Live)> = {
            let mut live = lock(&self.live);
            let ids: Vec<String> = live
                .iter()
                .filter(|(_, l)| l.ca_id == ca_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| live.remove(&id).map(|l| (id, l)))
                .collect()
        };
        for (id, l) in ended {
            drop(l);
            self.end_session(&id, "cancelled", &policy_changed_while_open(revision));
        }
    }

    /// News for an agent that holds policy revision `known` of `ca_id`'s manifest.
    pub fn manifest_news(&self, ca_id: &str, known: Option<u32>) -> Option<ManifestNews> {
        let known = known?;
        let registered = self.manifest(ca_id).ok()?.body.policy_revision;
        (registered > known).then_some(ManifestNews {
            policy_revision: registered,
        })
    }

    /// The registered manifest of `ca_id`, as stored (`GET /api/v1/cas/{id}/manifest`).
    pub fn manifest_json(&self, ca_id: &str) -> ApiResult<String> {
        lock(&self.store)
            .ca_manifest(ca_id)?
            .ok_or_else(|| ApiErr::new(404, "unknown-ca", format!("no CA {ca_id} is registered")))
    }
}

/// Why a session opened under a replaced policy ends without signing.
pub(super) fn policy_changed_while_open(revision: u32) -> String {
    format!(
        "the CA policy changed (revision {revision}) while the session was open; open it \
         again to have it judged by the new policy; secrets wiped"
    )
}
