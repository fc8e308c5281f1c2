//! Online reshare on the server: the `reshare` session (opened by a ca-admin, approved by
//! M holders, done by the session worker with the offline reshare's code), the pending
//! share set and its packages, and the switch once M′ of the new holders have enrolled.

use super::{ApiErr, ApiResult, Pending, Prepared, State, lock, random_hex, token_hash};
use crate::manifest::{Manifest, VerifiedManifest};
use crate::pki;
use crate::proto::{
    CreateSession, Enroll, OfferSummary, OpenReshare, RESHARE_FORMAT, ReshareDownload,
    ReshareResult, ReshareStatement, SessionKind, SessionStatus, SignJob,
};
use crate::reshare::{ReshareError, ReshareRequest};
use crate::store::{ReshareSetRow, SessionRow};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::net::IpAddr;

impl State {
    /// Opens a `reshare` session for an operator whose token has role `ca-admin`. Every
    /// bad request is refused (and audited) before any holder is asked.
    pub fn open_reshare(&self, operator: &str, req: OpenReshare) -> ApiResult<SessionStatus> {
        let refuse = |status: u16, code: &'static str, message: String| {
            self.audited_refusal(
                "session-refused",
                Some(&req.ca_id),
                &format!("{operator}: reshare: {message}"),
                ApiErr::new(status, code, message.clone()),
            )
        };
        if lock(&self.store).api_role(operator)? != Some(crate::store::ApiRole::CaAdmin) {
            return Err(refuse(
                403,
                "forbidden",
                "resharing a CA needs an API token with role ca-admin (`nkpki serve token \
                 create --role ca-admin`)"
                    .into(),
            ));
        }
        let manifest = self.manifest(&req.ca_id)?;
        let registered = lock(&self.store)
            .ca_manifest(&req.ca_id)?
            .ok_or_else(|| ApiErr::new(404, "unknown-ca", format!("no CA {}", req.ca_id)))?;
        let registered = Manifest::from_json(&registered).map_err(super::internal)?;
        let statement = ReshareStatement {
            format: RESHARE_FORMAT.to_owned(),
            ca_id: req.ca_id.clone(),
            current_set_version: manifest.set_version(),
            current_set_id: manifest.body.share_set.id().0,
            current_threshold: manifest.threshold(),
            current_holders: manifest
                .body
                .holders
                .iter()
                .map(|h| h.nitrokey_id.clone())
                .collect(),
            supersedes: registered.digest(),
            new_set_version: manifest.set_version() + 1,
            threshold: req.threshold,
            holders: req.holders.clone(),
            server_url: req.server_url.clone().filter(|u| !u.trim().is_empty()),
            server_cert_sha256: req.server_cert_sha256.clone(),
        };
        if let Some(url) = &statement.server_url
            && crate::package::is_plain_http(url)
            && !req.insecure_http
        {
            return Err(refuse(
                422,
                "bad-reshare",
                format!(
                    "server_url {url:?} is plain http: the new agents would refuse it (hint: \
                     give the https:// URL, or --insecure-http on a network you trust)"
                ),
            ));
        }
        if let Err(e) = ReshareRequest::online(&manifest, &statement) {
            let code = match e {
                ReshareError::ThresholdOnline => "threshold-mode",
                _ => "bad-reshare",
            };
            return Err(refuse(422, code, e.to_string()));
        }
        if let Some(open) = self.open_reshare_session(&req.ca_id) {
            return Err(refuse(
                409,
                "reshare-session-open",
                format!("reshare session {open} of this CA is still open; wait for it to end"),
            ));
        }
        let request = statement.to_request();
        let prepared = Prepared {
            session_id: random_hex(16),
            request_sha256: pki::sha256_hex(request.as_bytes()),
            request,
            summary: OfferSummary {
                profile: "reshare".into(),
                days: 0,
                not_before: 0,
                serial: None,
                reason: None,
                certificate: None,
                batch: None,
            },
            signing: None,
            responder_key: None,
        };
        // built from JSON, so that fields other session kinds add keep their defaults
        let create: CreateSession =
            serde_json::from_value(serde_json::json!({"ca_id": req.ca_id, "kind": "reshare"}))
                .map_err(super::internal)?;
        self.open_session(operator, &manifest, &create, prepared)
    }

    /// An open `reshare` session of this CA, if any.
    fn open_reshare_session(&self, ca_id: &str) -> Option<String> {
        lock(&self.live)
            .iter()
            .find(|(_, l)| l.ca_id == ca_id && l.offer.kind == SessionKind::Reshare)
            .map(|(id, _)| id.clone())
    }

    /// The worker's job for a `reshare` session: the statement the holders approved,
    /// checked against its digest and against the manifest registered now.
    pub(super) fn reshare_job(&self, row: &SessionRow) -> Result<(SignJob, Pending), String> {
        if pki::sha256_hex(row.request.as_bytes()) != row.request_sha256 {
            return Err(
                "the stored reshare request no longer matches what the holders approved".into(),
            );
        }
        let statement: ReshareStatement =
            serde_json::from_str(&row.request).map_err(|e| e.to_string())?;
        let registered = lock(&self.store)
            .ca_manifest(&row.ca_id)
            .map_err(|e| e.to_string())?
            .ok_or("the CA is no longer registered")?;
        let digest = Manifest::from_json(&registered)
            .map_err(|e| e.to_string())?
            .digest();
        if statement.supersedes != digest {
            return Err("the CA's manifest changed since the reshare was requested".into());
        }
        Ok((
            SignJob::Reshare {
                request: row.request.clone(),
            },
            Pending::Reshare,
        ))
    }

    /// Checks what the worker made (a manifest that would register as the successor of
    /// the registered one, for exactly the holders and threshold approved, with a package
    /// for each) and records it as the CA's pending share set.
    pub(super) fn record_reshare(
        &self,
        row: &SessionRow,
        manifest: &VerifiedManifest,
        bytes: &[u8],
    ) -> Result<String, String> {
        let result: ReshareResult = serde_json::from_slice(bytes)
            .map_err(|e| format!("the worker's reshare result is malformed: {e}"))?;
        let statement: ReshareStatement =
            serde_json::from_str(&row.request).map_err(|e| e.to_string())?;
        let registration = crate::server::prepare_registration(
            &result.manifest_json,
            Some(&result.enrollment_json),
            &manifest.body.certificate_sha256,
        )
        .map_err(|e| format!("the new manifest: {e}"))?;
        let mut store = lock(&self.store);
        let registered = store
            .ca_manifest(&row.ca_id)
            .map_err(|e| e.to_string())?
            .ok_or("the CA is no longer registered")?;
        crate::server::check_successor(&registered, &registration)
            .map_err(|e| format!("the new manifest: {e}"))?;
        let new = Manifest::from_json(&result.manifest_json)
            .and_then(|m| m.verify())
            .map_err(|e| e.to_string())?;
        let ids: Vec<&str> = new
            .body
            .holders
            .iter()
            .map(|h| h.nitrokey_id.as_str())
            .collect();
        let approved: Vec<&str> = statement
            .holders
            .iter()
            .map(|h| h.nitrokey_id.as_str())
            .collect();
        let packaged: Vec<&str> = result
            .packages
            .iter()
            .map(|p| p.holder_id.as_str())
            .collect();
        if ids != approved
            || packaged != approved
            || u32::from(new.threshold()) != statement.threshold
        {
            return Err(
                "the new share set is not the one the holders approved (holders or threshold)"
                    .into(),
            );
        }
        let mut holders = Vec::with_capacity(registration.holders.len());
        for (holder, index, code) in &registration.holders {
            let code = code
                .clone()
                .ok_or_else(|| format!("no enrollment record for {holder}"))?;
            holders.push((holder.clone(), *index, code));
        }
        let set = ReshareSetRow {
            session_id: row.session_id.clone(),
            ca_id: row.ca_id.clone(),
            set_version: new.set_version(),
            threshold: new.threshold(),
            result: String::from_utf8_lossy(bytes).into_owned(),
            state: "pending".into(),
        };
        // written only over the manifest checked above (the store's transaction compares)
        store
            .add_reshare_set(&set, &holders, &registered)
            .map_err(|e| e.to_string())?;
        drop(store);
        Ok(format!(
            "new share set version {} ({} of {}: {}), pending until {} of its holders enroll; \
             packages sealed to their recipients",
            set.set_version,
            set.threshold,
            ids.len(),
            ids.join(", "),
            set.threshold
        ))
    }

    /// A `reshare` session's new share set and packages, for a ca-admin.
    pub fn reshare_download(&self, operator: &str, session_id: &str) -> ApiResult<ReshareDownload> {
        if lock(&self.store).api_role(operator)? != Some(crate::store::ApiRole::CaAdmin) {
            return Err(ApiErr::new(
                403,
                "forbidden",
                "a reshare's packages are for API tokens with role ca-admin",
            ));
        }
        let (set, holders) = {
            let store = lock(&self.store);
            let set = store.reshare_set(session_id)?.ok_or_else(|| {
                ApiErr::new(
                    404,
                    "not-found",
                    format!("session {session_id} made no share set (not a signed reshare)"),
                )
            })?;
            let holders = store.reshare_holders(session_id)?;
            (set, holders)
        };
        let result: ReshareResult = serde_json::from_str(&set.result).map_err(super::internal)?;
        Ok(ReshareDownload {
            session_id: set.session_id,
            ca_id: set.ca_id,
            set_version: set.set_version,
            state: set.state,
            enrolled: holders
                .into_iter()
                .filter(|h| h.public_key_pem.is_some())
                .map(|h| h.holder_id)
                .collect(),
            needed: set.threshold,
            result,
        })
    }

    /// A share the worker refused as bad: if it is a share of the CA's pending set, the
    /// holder learns that the server has not switched yet (409 `pending-share-set`);
    /// anything else stays a bad share (422).
    pub(super) fn other_share_set(&self, ca_id: &str, why: String) -> ApiErr {
        let pending = lock(&self.store).pending_reshare_set(ca_id).ok().flatten();
        let pending = pending.and_then(|set| {
            let result: ReshareResult = serde_json::from_str(&set.result).ok()?;
            let manifest = Manifest::from_json(&result.manifest_json).ok()?;
            let id = manifest.signed.share_set.id().0;
            why.contains(&id).then_some(set)
        });
        match pending {
            Some(set) => {
                let enrolled = lock(&self.store)
                    .reshare_holders(&set.session_id)
                    .map(|h| h.iter().filter(|h| h.public_key_pem.is_some()).count())
                    .unwrap_or(0);
                ApiErr::new(
                    409,
                    "pending-share-set",
                    format!(
                        "{why}: share set version {} is pending, not switched to yet: the server \
                         switches once {} of its holders have enrolled ({enrolled} so far); until \
                         then the current set signs",
                        set.set_version, set.threshold
                    ),
                )
            }
            None => ApiErr::new(422, "bad-share", why),
        }
    }

    /// The token key a holder of the CA's pending set enrolled for it: such a holder may
    /// log in and poll before the switch (so that its agent runs), but it is offered no
    /// session and can neither approve nor decline one until then.
    pub(super) fn pending_holder_key(
        &self,
        ca_id: &str,
        holder_id: &str,
    ) -> ApiResult<Option<Vec<u8>>> {
        let pem = {
            let store = lock(&self.store);
            match store.pending_reshare_set(ca_id)? {
                Some(set) => store
                    .reshare_holders(&set.session_id)?
                    .into_iter()
                    .find(|h| h.holder_id == holder_id)
                    .and_then(|h| h.public_key_pem),
                None => None,
            }
        };
        pem.map(|p| super::spki_from_pem(&p)).transpose()
    }

    /// `POST /api/v1/enroll`: an enrollment for the CA's pending share set when the code is
    /// one of its codes (switching the CA to it at the M′-th), else an ordinary one. A
    /// code of a set that went stale (the registered manifest changed under it) is refused
    /// `409 stale-share-set`.
    pub fn enroll_any(&self, req: Enroll, ip: IpAddr) -> ApiResult<serde_json::Value> {
        let code = token_hash(&req.enrollment_code);
        let found = lock(&self.store).reshare_set_for_code(&req.ca_id, &req.holder_id, &code)?;
        let (set, holder) = match found {
            Some((set, holder)) if set.state == "pending" || set.state == "stale" => (set, holder),
            _ => {
                self.enroll(req, ip)?;
                return Ok(serde_json::json!({"enrolled": true}));
            }
        };
        if set.state == "stale" || !self.pending_set_follows_registered(&set)? {
            return Err(ApiErr::new(
                409,
                "stale-share-set",
                format!(
                    "share set version {} is stale: the CA's registered manifest changed (a \
                     policy change or a registration) after the reshare made it, so it can \
                     never be switched to (hint: a ca-admin reshares again; this package's \
                     share is of no use)",
                    set.set_version
                ),
            ));
        }
        if holder.public_key_pem.is_some() {
            return Err(ApiErr::new(
                409,
                "code-used",
                "the enrollment code for the new share set was already used; an operator \
                 must reset this holder once the server has switched",
            ));
        }
        let spki = super::spki_from_pem(&req.public_key_pem)?;
        let sig = B64
            .decode(&req.signature)
            .map_err(|_| ApiErr::new(400, "bad-request", "signature is not base64"))?;
        let signed =
            crate::proto::enroll_signed_bytes(&req.ca_id, &req.holder_id, &req.public_key_pem);
        if pki::verify_signature(&spki, &signed, &sig).is_err() {
            let why = "the enrollment is not signed by the key it registers";
            self.refused(
                ip,
                super::Refusal::BadEnrollment,
                Some((req.ca_id.as_str(), req.holder_id.as_str())),
                "enrollment-refused",
                why,
            );
            return Err(ApiErr::new(400, "bad-signature", why));
        }
        let taken = lock(&self.store)
            .reshare_holders(&set.session_id)?
            .into_iter()
            .any(|h| {
                h.holder_id != req.holder_id
                    && h.public_key_pem.as_deref() == Some(req.public_key_pem.as_str())
            });
        if taken {
            return Err(ApiErr::new(
                409,
                "key-in-use",
                "this token key is already enrolled for another holder of the new share set \
                 (hint: each holder enrolls its own token)",
            ));
        }
        let enrolled =
            match lock(&self.store).enroll_for_reshare(&set, &req.holder_id, &req.public_key_pem) {
                Ok(n) => n,
                Err(e) => {
                    // a concurrent enrollment switched the CA meanwhile: this one is an
                    // ordinary enrollment now
                    let now_switched = lock(&self.store)
                        .reshare_set(&set.session_id)?
                        .is_some_and(|s| s.state == "switched");
                    if !now_switched {
                        return Err(e.into());
                    }
                    self.enroll(req, ip)?;
                    return Ok(serde_json::json!({
                        "enrolled": true,
                        "share_set_version": set.set_version,
                        "new_set_enrolled": set.threshold,
                        "new_set_needed": set.threshold,
                        "switched": true,
                    }));
                }
            };
        tracing::info!(
            "{} enrolled for share set version {} of CA {}: {enrolled} of {}",
            req.holder_id,
            set.set_version,
            set.ca_id,
            set.threshold
        );
        let switched = enrolled >= usize::from(set.threshold);
        if switched {
            self.switch_share_set(&set)?;
        }
        Ok(serde_json::json!({
            "enrolled": true,
            "share_set_version": set.set_version,
            "new_set_enrolled": enrolled,
            "new_set_needed": set.threshold,
            "switched": switched,
        }))
    }

    /// Whether the pending set's manifest supersedes the CA's registered manifest (else it
    /// is stale: it can never switch).
    fn pending_set_follows_registered(&self, set: &ReshareSetRow) -> ApiResult<bool> {
        let result: ReshareResult = serde_json::from_str(&set.result).map_err(super::internal)?;
        let pending = Manifest::from_json(&result.manifest_json).map_err(super::internal)?;
        let registered = lock(&self.store)
            .ca_manifest(&set.ca_id)?
            .ok_or_else(|| ApiErr::new(404, "unknown-ca", "the CA is not registered"))?;
        let registered = Manifest::from_json(&registered).map_err(super::internal)?;
        Ok(pending.signed.supersedes.as_deref() == Some(registered.digest().as_str()))
    }

    /// Switches the CA to its pending set, with the checks a registration makes: the new
    /// manifest and enrollment records verify, and it supersedes the registered manifest
    /// exactly. A session open at the switch fares as at a registration's switch: its
    /// worker holds the old manifest, and the holders who left are unknown.
    fn switch_share_set(&self, set: &ReshareSetRow) -> ApiResult<()> {
        let result: ReshareResult = serde_json::from_str(&set.result).map_err(super::internal)?;
        let current = self.manifest(&set.ca_id)?;
        let registration = crate::server::prepare_registration(
            &result.manifest_json,
            Some(&result.enrollment_json),
            &current.body.certificate_sha256,
        )
        .map_err(super::internal)?;
        let mut purged = result.clone();
        purged.packages.clear();
        let purged = serde_json::to_string(&purged).map_err(super::internal)?;
        {
            let mut store = lock(&self.store);
            // two M′-th enrollments at once: the later finds the set switched, and is done
            if store
                .reshare_set(&set.session_id)?
                .is_some_and(|s| s.state == "switched")
            {
                return Ok(());
            }
            let registered = store
                .ca_manifest(&set.ca_id)?
                .ok_or_else(|| ApiErr::new(404, "unknown-ca", "the CA is not registered"))?;
            let from = crate::server::check_successor(&registered, &registration)
                .map_err(|e| ApiErr::new(409, "conflict", e.to_string()))?;
            store.switch_to_reshare_set(
                set,
                &result.manifest_json,
                &registration.holders,
                &purged,
                &format!(
                    "share set version {from} -> {} (online reshare, session {}); switched \
                     when {} new holders had enrolled",
                    set.set_version, set.session_id, set.threshold
                ),
            )?;
        }
        lock(&self.manifests).remove(&set.ca_id);
        // holders of the old set only hold no share any more: their logins end
        let kept: Vec<&str> = registration
            .holders
            .iter()
            .map(|(h, _, _)| h.as_str())
            .collect();
        lock(&self.agents)
            .retain(|_, a| a.ca_id != set.ca_id || kept.contains(&a.holder_id.as_str()));
        tracing::info!(
            "CA {} switched to share set version {}",
            set.ca_id,
            set.set_version
        );
        Ok(())
    }
}
