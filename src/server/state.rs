//! The orchestrator's logic, independent of HTTP: CAs, holders, sessions and their
//! in-memory secrets, contributions, reconstruction and signing.

use crate::manifest::{Manifest, VerifiedManifest};
use crate::pki::{self, CaKey, Csr, Profile, Revoked};
use crate::proto::{
    self, Challenge, ChallengeRequest, Contribution, CreateSession, Decline, Enroll, Login,
    LoginOk, OfferSummary, SessionKind, SessionOffer, SessionState, SessionStatus,
};
use crate::sss::Share;
use crate::store::{self, SessionRow, Store, now};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use zeroize::Zeroizing;

/// An API failure: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiErr {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiErr>;

fn internal(e: impl std::fmt::Display) -> ApiErr {
    ApiErr::new(500, "internal", e.to_string())
}

impl From<store::StoreError> for ApiErr {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Conflict(m) => ApiErr::new(409, "conflict", m),
            store::StoreError::NotFound(m) => {
                ApiErr::new(404, "not-found", format!("{m} not found"))
            }
            other => internal(other),
        }
    }
}

/// A session's secrets, in memory only: dropped (and zeroized) when the session ends.
struct Live {
    ca_id: String,
    threshold: u8,
    total: u8,
    identity: age::x25519::Identity,
    shares: Vec<(String, Share)>,
    answered: Vec<String>,
    declined: usize,
    offer: SessionOffer,
}

struct AgentLogin {
    ca_id: String,
    holder_id: String,
    expires_at: i64,
}

struct PendingChallenge {
    ca_id: String,
    holder_id: String,
    expires_at: i64,
}

/// Everything the server holds.
pub struct State {
    store: Mutex<Store>,
    manifests: Mutex<HashMap<String, Arc<VerifiedManifest>>>,
    live: Mutex<HashMap<String, Live>>,
    agents: Mutex<HashMap<String, AgentLogin>>,
    challenges: Mutex<HashMap<String, PendingChallenge>>,
    changed: watch::Sender<u64>,
    pub session_ttl: i64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State(<redacted>)")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A stored certificate view.
fn view_of(json: &str) -> Result<pki::CertificateView, String> {
    serde_json::from_str(json)
        .map_err(|e| format!("the stored certificate view is unreadable: {e}"))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut buf);
    hex::encode(buf)
}

/// SHA-256 of a bearer or API token, hex: what is stored and compared.
pub fn token_hash(token: &str) -> String {
    pki::sha256_hex(token.as_bytes())
}

fn spki_from_pem(pem: &str) -> ApiResult<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| ApiErr::new(400, "bad-request", "public_key_pem is not PEM"))?;
    if block.label != "PUBLIC KEY" {
        return Err(ApiErr::new(
            400,
            "bad-request",
            "public_key_pem is not a PUBLIC KEY",
        ));
    }
    Ok(block.contents)
}

impl State {
    pub fn new(store: Store, session_ttl: i64) -> Self {
        let (changed, _) = watch::channel(0);
        State {
            store: Mutex::new(store),
            manifests: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            challenges: Mutex::new(HashMap::new()),
            changed,
            session_ttl,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records an event of the server's own in the audit log.
    pub fn note(&self, event: &str, detail: &str) {
        self.audit(event, None, None, None, detail);
    }

    fn audit(
        &self,
        event: &str,
        ca: Option<&str>,
        session: Option<&str>,
        holder: Option<&str>,
        detail: &str,
    ) {
        if let Err(e) = lock(&self.store).audit(event, ca, session, holder, detail) {
            eprintln!("error: audit log: {e}");
        }
    }

    fn manifest(&self, ca_id: &str) -> ApiResult<Arc<VerifiedManifest>> {
        if let Some(m) = lock(&self.manifests).get(ca_id) {
            return Ok(m.clone());
        }
        let all = lock(&self.store).ca_manifests()?;
        let text = all
            .into_iter()
            .find(|(id, _)| id == ca_id)
            .map(|(_, m)| m)
            .ok_or_else(|| {
                ApiErr::new(404, "unknown-ca", format!("no CA {ca_id} is registered"))
            })?;
        let verified = Manifest::from_json(&text)
            .and_then(|m| m.verify())
            .map_err(internal)?;
        let verified = Arc::new(verified);
        lock(&self.manifests).insert(ca_id.to_owned(), verified.clone());
        Ok(verified)
    }

    // ---- authentication -----------------------------------------------------------

    /// The operator owning an API token.
    pub fn operator(&self, bearer: Option<&str>) -> ApiResult<String> {
        let Some(token) = bearer else {
            return Err(ApiErr::new(
                401,
                "unauthorized",
                "an operator API token is required (Authorization: Bearer …)",
            ));
        };
        let operator = lock(&self.store).operator_for(&token_hash(token))?;
        match operator {
            Some(name) => Ok(name),
            None => {
                self.audit(
                    "auth-refused",
                    None,
                    None,
                    None,
                    "unknown operator API token",
                );
                Err(ApiErr::new(
                    401,
                    "unauthorized",
                    "unknown or revoked API token",
                ))
            }
        }
    }

    /// The (CA, holder) an agent bearer token was issued to.
    pub fn agent(&self, bearer: Option<&str>) -> ApiResult<(String, String)> {
        let token = bearer
            .ok_or_else(|| ApiErr::new(401, "unauthorized", "an agent bearer token is required"))?;
        let agents = lock(&self.agents);
        match agents.get(&token_hash(token)) {
            Some(a) if a.expires_at > now() => Ok((a.ca_id.clone(), a.holder_id.clone())),
            Some(_) => Err(ApiErr::new(
                401,
                "unauthorized",
                "the agent login expired; log in again",
            )),
            None => Err(ApiErr::new(
                401,
                "unauthorized",
                "unknown agent bearer token",
            )),
        }
    }

    pub fn challenge(&self, req: ChallengeRequest) -> ApiResult<Challenge> {
        self.manifest(&req.ca_id)?;
        let holder = lock(&self.store).holder(&req.ca_id, &req.holder_id)?;
        match holder {
            Some(h) if h.public_key_pem.is_some() => {}
            Some(_) => {
                return Err(ApiErr::new(
                    403,
                    "not-enrolled",
                    format!("holder {} has not enrolled its token key", req.holder_id),
                ));
            }
            None => {
                return Err(ApiErr::new(
                    403,
                    "unknown-holder",
                    format!("{} is not a holder of CA {}", req.holder_id, req.ca_id),
                ));
            }
        }
        let challenge = random_hex(32);
        let expires_at = now() + 60;
        let mut pending = lock(&self.challenges);
        pending.retain(|_, c| c.expires_at > now());
        pending.insert(
            challenge.clone(),
            PendingChallenge {
                ca_id: req.ca_id,
                holder_id: req.holder_id,
                expires_at,
            },
        );
        Ok(Challenge {
            challenge,
            expires_at,
        })
    }

    pub fn login(&self, req: Login) -> ApiResult<LoginOk> {
        let pending = lock(&self.challenges).remove(&req.challenge);
        let Some(c) = pending.filter(|c| {
            c.expires_at > now() && c.ca_id == req.ca_id && c.holder_id == req.holder_id
        }) else {
            return Err(ApiErr::new(
                401,
                "unauthorized",
                "unknown or expired challenge",
            ));
        };
        let key = self.holder_key(&c.ca_id, &c.holder_id)?;
        let sig = B64
            .decode(&req.signature)
            .map_err(|_| ApiErr::new(400, "bad-request", "signature is not base64"))?;
        if pki::verify_signature(
            &key,
            &crate::proto::login_signed_bytes(&c.ca_id, &c.holder_id, &req.challenge),
            &sig,
        )
        .is_err()
        {
            self.audit(
                "auth-refused",
                Some(&c.ca_id),
                None,
                Some(&c.holder_id),
                "agent login with a bad token signature",
            );
            return Err(ApiErr::new(
                401,
                "bad-signature",
                "the login signature does not verify with the holder's registered key",
            ));
        }
        let bearer = random_hex(32);
        let expires_at = now() + 3600;
        lock(&self.agents).insert(
            token_hash(&bearer),
            AgentLogin {
                ca_id: c.ca_id.clone(),
                holder_id: c.holder_id.clone(),
                expires_at,
            },
        );
        lock(&self.store).touch_holder(&c.ca_id, &c.holder_id)?;
        Ok(LoginOk { bearer, expires_at })
    }

    fn holder_key(&self, ca_id: &str, holder_id: &str) -> ApiResult<Vec<u8>> {
        let holder = lock(&self.store).holder(ca_id, holder_id)?;
        let pem = holder.and_then(|h| h.public_key_pem).ok_or_else(|| {
            ApiErr::new(
                403,
                "unknown-holder",
                format!("{holder_id} is not an enrolled holder of CA {ca_id}"),
            )
        })?;
        spki_from_pem(&pem)
    }

    pub fn enroll(&self, req: Enroll) -> ApiResult<()> {
        self.manifest(&req.ca_id)?;
        let holder = lock(&self.store)
            .holder(&req.ca_id, &req.holder_id)?
            .ok_or_else(|| {
                ApiErr::new(
                    403,
                    "unknown-holder",
                    format!("{} is not a holder of CA {}", req.holder_id, req.ca_id),
                )
            })?;
        let refuse = |why: &str, status: u16, code: &'static str| {
            self.audit(
                "enrollment-refused",
                Some(&req.ca_id),
                None,
                Some(&req.holder_id),
                why,
            );
            Err(ApiErr::new(status, code, why.to_owned()))
        };
        if holder.code_used {
            return refuse(
                "the enrollment code was already used; an operator must reset this holder",
                409,
                "code-used",
            );
        }
        if holder.enrollment_code_sha256.as_deref()
            != Some(token_hash(&req.enrollment_code).as_str())
        {
            return refuse("wrong enrollment code", 403, "bad-code");
        }
        let spki = spki_from_pem(&req.public_key_pem)?;
        let sig = B64
            .decode(&req.signature)
            .map_err(|_| ApiErr::new(400, "bad-request", "signature is not base64"))?;
        let signed =
            crate::proto::enroll_signed_bytes(&req.ca_id, &req.holder_id, &req.public_key_pem);
        if pki::verify_signature(&spki, &signed, &sig).is_err() {
            return refuse(
                "the enrollment is not signed by the key it registers",
                400,
                "bad-signature",
            );
        }
        lock(&self.store).enroll(&req.ca_id, &req.holder_id, &req.public_key_pem)?;
        Ok(())
    }

    // ---- sessions -----------------------------------------------------------------

    pub fn create_session(&self, operator: &str, req: CreateSession) -> ApiResult<SessionStatus> {
        let manifest = self.manifest(&req.ca_id)?;
        let refuse = |message: String| {
            self.audit(
                "session-refused",
                Some(&req.ca_id),
                None,
                None,
                &format!("{operator}: {message}"),
            );
            ApiErr::new(422, "policy", message)
        };
        let (request, request_sha256, summary) = match req.kind {
            SessionKind::Issue => {
                let pem = req
                    .csr_pem
                    .as_deref()
                    .ok_or_else(|| ApiErr::new(400, "bad-request", "csr_pem is required"))?;
                let csr = Csr::parse(pem.as_bytes()).map_err(|e| refuse(e.to_string()))?;
                let profile: Profile = req
                    .profile
                    .as_deref()
                    .unwrap_or("server")
                    .parse()
                    .map_err(refuse)?;
                let days = req.days.unwrap_or(90);
                let terms = pki::Terms::new(profile, days, time::OffsetDateTime::now_utc())
                    .map_err(|e| refuse(e.to_string()))?;
                let view = pki::check_request(&manifest.ca, &csr, &terms)
                    .map_err(|e| refuse(e.to_string()))?;
                let summary = OfferSummary {
                    profile: profile.to_string(),
                    days,
                    not_before: view.not_before,
                    serial: Some(view.serial.clone()),
                    reason: None,
                    certificate: Some(view),
                };
                (
                    pki::pem_encode("CERTIFICATE REQUEST", &csr.der),
                    csr.digest(),
                    summary,
                )
            }
            SessionKind::Revoke => {
                let serial = req.serial.as_deref().unwrap_or_default().to_lowercase();
                let reason = req.reason.as_deref().unwrap_or("unspecified");
                if pki::parse_reason(reason).is_none() {
                    return Err(refuse(format!(
                        "unknown revocation reason {reason:?} (one of {})",
                        pki::REASONS.join(", ")
                    )));
                }
                let (known, revoked) = {
                    let store = lock(&self.store);
                    let known = store.certificate_known(&req.ca_id, &serial)?;
                    let revoked = store
                        .revocations(&req.ca_id)?
                        .iter()
                        .any(|(s, _, _)| *s == serial);
                    (known, revoked)
                };
                if !known {
                    return Err(refuse(format!(
                        "CA {} issued no certificate with serial {serial:?}",
                        req.ca_id
                    )));
                }
                if revoked {
                    return Err(refuse(format!("serial {serial} is already revoked")));
                }
                let text = proto::revoke_statement(&req.ca_id, &serial, reason);
                let summary = OfferSummary {
                    profile: "revoke".into(),
                    days: 0,
                    not_before: 0,
                    serial: Some(serial.clone()),
                    reason: Some(reason.to_owned()),
                    certificate: None,
                };
                (text.clone(), pki::sha256_hex(text.as_bytes()), summary)
            }
            SessionKind::Crl => {
                let text = proto::crl_statement(&req.ca_id);
                let summary = OfferSummary {
                    profile: "crl".into(),
                    days: pki::CRL_VALIDITY_DAYS as u32,
                    not_before: 0,
                    serial: None,
                    reason: None,
                    certificate: None,
                };
                (text.clone(), pki::sha256_hex(text.as_bytes()), summary)
            }
        };
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let session_id = random_hex(16);
        let nonce = random_hex(32);
        let created_at = now();
        let expires_at = created_at.saturating_add(self.session_ttl);
        let kind = serde_json::to_value(req.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let row = SessionRow {
            session_id: session_id.clone(),
            ca_id: req.ca_id.clone(),
            kind,
            state: SessionState::Waiting.as_str().into(),
            requester: operator.to_owned(),
            request: request.clone(),
            request_sha256: request_sha256.clone(),
            profile: Some(summary.profile.clone()),
            days: Some(summary.days),
            serial: summary.serial.clone(),
            reason: summary.reason.clone(),
            nonce: nonce.clone(),
            recipient: recipient.clone(),
            created_at,
            expires_at,
            detail: None,
            certificate_view: summary
                .certificate
                .as_ref()
                .and_then(|v| serde_json::to_string(v).ok()),
        };
        lock(&self.store).insert_session(&row)?;
        let offer = SessionOffer {
            session_id: session_id.clone(),
            ca_id: req.ca_id.clone(),
            ca_name: manifest.body.ca.name.clone(),
            kind: req.kind,
            requester: operator.to_owned(),
            request,
            request_sha256,
            summary,
            nonce,
            expires_at,
            recipient,
        };
        lock(&self.live).insert(
            session_id.clone(),
            Live {
                ca_id: req.ca_id,
                threshold: manifest.threshold(),
                total: manifest.body.share_set.total,
                identity,
                shares: Vec::new(),
                answered: Vec::new(),
                declined: 0,
                offer,
            },
        );
        self.notify();
        self.status(&session_id)
    }

    pub fn status(&self, session_id: &str) -> ApiResult<SessionStatus> {
        let store = lock(&self.store);
        let row = store
            .session(session_id)?
            .ok_or_else(|| ApiErr::new(404, "not-found", format!("no session {session_id}")))?;
        let events = store.events(session_id)?;
        let pick = |outcome: &str| {
            events
                .iter()
                .filter(|(_, o, _)| o == outcome)
                .map(|(h, _, d)| {
                    if outcome == "refused" {
                        format!("{h}: {d}")
                    } else {
                        h.clone()
                    }
                })
                .collect::<Vec<_>>()
        };
        let (serial, certificate_pem) = match store.certificate_for_session(session_id)? {
            Some((s, p)) => (Some(s), Some(p)),
            None => (row.serial.clone(), None),
        };
        let crl_pem = if row.state == "signed" && row.kind != "issue" {
            store.latest_crl(&row.ca_id)?.map(|(_, pem)| pem)
        } else {
            None
        };
        // the manifest lookup may take the store's lock itself
        drop(store);
        let threshold = self.manifest(&row.ca_id)?.threshold();
        Ok(SessionStatus {
            session_id: row.session_id.clone(),
            ca_id: row.ca_id.clone(),
            kind: serde_json::from_value(serde_json::Value::String(row.kind.clone()))
                .map_err(internal)?,
            state: SessionState::parse(&row.state).ok_or_else(|| internal("bad state in store"))?,
            requester: row.requester.clone(),
            threshold,
            approved: pick("approved"),
            declined: pick("declined"),
            refused: pick("refused"),
            expires_at: row.expires_at,
            seconds_left: (row.expires_at - now()).max(0),
            detail: row.detail.clone(),
            certificate: row
                .certificate_view
                .as_deref()
                .and_then(|v| view_of(v).ok()),
            certificate_pem,
            serial,
            crl_pem,
        })
    }

    pub fn cancel(&self, operator: &str, session_id: &str) -> ApiResult<SessionStatus> {
        let live = lock(&self.live).remove(session_id);
        drop(live);
        let done = lock(&self.store).finish_session(
            session_id,
            "cancelled",
            &format!("cancelled by {operator}; secrets wiped"),
            "session-cancelled",
        )?;
        if !done {
            return Err(ApiErr::new(
                409,
                "not-waiting",
                "the session is not waiting any more",
            ));
        }
        self.notify();
        self.status(session_id)
    }

    /// Expires every session past its time, wiping its secrets. Returns how many.
    pub fn expire(&self) -> usize {
        let t = now();
        let expired: Vec<(String, Live)> = {
            let mut live = lock(&self.live);
            let ids: Vec<String> = live
                .iter()
                .filter(|(_, l)| l.offer.expires_at <= t)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| live.remove(&id).map(|l| (id, l)))
                .collect()
        };
        let n = expired.len();
        for (id, l) in expired {
            let detail = format!(
                "expired with {} of {} shares; secrets wiped",
                l.shares.len(),
                l.threshold
            );
            drop(l);
            if let Err(e) =
                lock(&self.store).finish_session(&id, "expired", &detail, "session-expired")
            {
                eprintln!("error: expiring session {id}: {e}");
            }
        }
        if n > 0 {
            self.notify();
        }
        n
    }

    /// Sessions the agent of (CA, holder) has not answered yet.
    pub fn offers(&self, ca_id: &str, holder_id: &str) -> Vec<SessionOffer> {
        let t = now();
        let live = lock(&self.live);
        let mut out: Vec<SessionOffer> = live
            .values()
            .filter(|l| {
                l.ca_id == ca_id
                    && l.offer.expires_at > t
                    && !l.answered.iter().any(|h| h == holder_id)
            })
            .map(|l| l.offer.clone())
            .collect();
        out.sort_by_key(|o| o.expires_at);
        out
    }

    pub fn seen(&self, ca_id: &str, holder_id: &str) {
        let _ = lock(&self.store).touch_holder(ca_id, holder_id);
    }

    fn refuse_contribution(
        &self,
        session_id: &str,
        ca_id: &str,
        holder_id: &str,
        status: u16,
        code: &'static str,
        why: String,
    ) -> ApiErr {
        // bind the result first: the store's lock must be released before `audit` takes it
        let recorded =
            lock(&self.store).record_event(session_id, ca_id, holder_id, "refused", &why);
        if let Err(e) = recorded {
            // the session may not exist (unknown id): keep the refusal in the audit log
            self.audit(
                "contribution-refused",
                Some(ca_id),
                None,
                Some(holder_id),
                &format!("{why} ({e})"),
            );
        }
        ApiErr::new(status, code, why)
    }

    pub fn decline(
        &self,
        ca_id: &str,
        holder_id: &str,
        session_id: &str,
        req: Decline,
    ) -> ApiResult<SessionStatus> {
        if req.holder_id != holder_id {
            return Err(ApiErr::new(
                403,
                "forbidden",
                "an agent can only decline for its own holder",
            ));
        }
        let failed = {
            let mut live = lock(&self.live);
            let l = live
                .get_mut(session_id)
                .filter(|l| l.ca_id == ca_id)
                .ok_or_else(|| {
                    ApiErr::new(
                        409,
                        "not-waiting",
                        "no open session with that id for this CA",
                    )
                })?;
            if l.answered.iter().any(|h| h == holder_id) {
                return Err(ApiErr::new(
                    409,
                    "duplicate",
                    "this holder already answered",
                ));
            }
            l.answered.push(holder_id.to_owned());
            l.declined += 1;
            let still_possible =
                (l.total as usize).saturating_sub(l.declined) >= l.threshold as usize;
            if still_possible {
                None
            } else {
                live.remove(session_id)
            }
        };
        lock(&self.store).record_event(session_id, ca_id, holder_id, "declined", &req.reason)?;
        if let Some(l) = failed {
            drop(l);
            lock(&self.store).finish_session(
                session_id,
                "failed",
                "declined by too many holders to reach the threshold; secrets wiped",
                "session-failed",
            )?;
        }
        self.notify();
        self.status(session_id)
    }

    /// Checks a contribution; at the threshold, reconstructs, signs and wipes.
    pub fn contribute(
        &self,
        ca_id: &str,
        holder_id: &str,
        session_id: &str,
        c: Contribution,
    ) -> ApiResult<SessionStatus> {
        let refuse = |status, code, why: String| {
            Err(self.refuse_contribution(session_id, ca_id, holder_id, status, code, why))
        };
        let row = lock(&self.store).session(session_id)?;
        let Some(row) = row.filter(|r| r.ca_id == ca_id) else {
            return refuse(
                404,
                "not-found",
                format!("no session {session_id} for CA {ca_id}"),
            );
        };
        if row.state != "waiting" {
            return refuse(
                409,
                "not-waiting",
                format!("the session is {} (contributions are closed)", row.state),
            );
        }
        if now() >= row.expires_at {
            return refuse(409, "expired", "the session expired".into());
        }
        let e = &c.envelope;
        if e.session_id != session_id
            || e.ca_id != ca_id
            || e.nonce != row.nonce
            || e.expires_at != row.expires_at
        {
            return refuse(
                409,
                "wrong-session",
                "the envelope is bound to another session (replay?)".into(),
            );
        }
        if e.holder_id != holder_id {
            return refuse(
                403,
                "forbidden",
                format!(
                    "the envelope names holder {}, the agent is {holder_id}",
                    e.holder_id
                ),
            );
        }
        if e.request_sha256 != row.request_sha256 {
            return refuse(
                409,
                "wrong-request",
                "the envelope approves another request (CSR digest differs)".into(),
            );
        }
        if Some(&e.profile) != row.profile.as_ref() || Some(e.days) != row.days {
            return refuse(
                409,
                "wrong-terms",
                format!(
                    "the envelope approves profile {} for {} days; the session is {} for {} days",
                    e.profile,
                    e.days,
                    row.profile.as_deref().unwrap_or("-"),
                    row.days.unwrap_or(0)
                ),
            );
        }
        let certificate_sha256 = match row.certificate_view.as_deref().map(view_of) {
            Some(Ok(view)) => Some(view.digest()),
            Some(Err(why)) => return refuse(500, "internal", why),
            None => None,
        };
        if e.certificate_sha256 != certificate_sha256 {
            return refuse(
                409,
                "wrong-certificate",
                "the envelope approves another certificate than the session issues".into(),
            );
        }
        if pki::sha256_hex(c.ciphertext.as_bytes()) != e.ciphertext_sha256 {
            return refuse(
                400,
                "bad-envelope",
                "the ciphertext does not match the envelope's digest".into(),
            );
        }
        let key = match self.holder_key(ca_id, holder_id) {
            Ok(k) => k,
            Err(e) => return refuse(e.status, e.code, e.message),
        };
        let sig = B64.decode(&c.signature).unwrap_or_default();
        if pki::verify_signature(&key, &e.signed_bytes(), &sig).is_err() {
            return refuse(
                400,
                "bad-signature",
                "the envelope's signature does not verify with the holder's token key".into(),
            );
        }
        let manifest = self.manifest(ca_id)?;
        // decrypt and check under the live-session lock, so two contributions of one holder
        // cannot race
        let ready = {
            let mut live = lock(&self.live);
            let Some(l) = live.get_mut(session_id) else {
                drop(live);
                return refuse(409, "not-waiting", "the session is no longer open".into());
            };
            if l.answered.iter().any(|h| h == holder_id) {
                drop(live);
                return refuse(
                    409,
                    "duplicate",
                    "this holder already answered the session".into(),
                );
            }
            let plain = match crate::seal::open_with_identity(c.ciphertext.as_bytes(), &l.identity)
            {
                Ok(p) => p,
                Err(err) => {
                    drop(live);
                    return refuse(
                        400,
                        "bad-ciphertext",
                        format!("the share cannot be decrypted with the session key: {err}"),
                    );
                }
            };
            let share: Share = match serde_json::from_slice(&plain) {
                Ok(s) => s,
                Err(_) => {
                    drop(live);
                    return refuse(
                        400,
                        "bad-share",
                        "the decrypted contribution is not a share".into(),
                    );
                }
            };
            drop(plain);
            if let Err(err) =
                manifest.check_share(&share, &format!("the share sent by {holder_id}"))
            {
                drop(live);
                return refuse(
                    422,
                    "bad-share",
                    format!("share failed verification: {err}"),
                );
            }
            let expected = manifest.holder(share.index).map(|h| h.nitrokey_id.as_str());
            if expected != Some(holder_id) {
                drop(live);
                return refuse(
                    422,
                    "bad-share",
                    format!(
                        "{holder_id} sent share {} which belongs to {}",
                        share.index,
                        expected.unwrap_or("nobody")
                    ),
                );
            }
            l.answered.push(holder_id.to_owned());
            l.shares.push((holder_id.to_owned(), share));
            if l.shares.len() >= l.threshold as usize {
                live.remove(session_id)
            } else {
                None
            }
        };
        lock(&self.store).record_event(
            session_id,
            ca_id,
            holder_id,
            "approved",
            "share verified against the commitments",
        )?;
        if let Some(l) = ready {
            self.finalize(&row, &manifest, l);
        }
        self.notify();
        self.status(session_id)
    }

    /// Rebuilds the CA key from `l`'s shares, does the session's work, wipes everything.
    fn finalize(&self, row: &SessionRow, manifest: &VerifiedManifest, l: Live) {
        let holders: Vec<String> = l.shares.iter().map(|(h, _)| h.clone()).collect();
        let shares: Vec<Share> = l.shares.iter().map(|(_, s)| s.clone()).collect();
        drop(l);
        let outcome = (|| -> Result<String, String> {
            let pkcs8: Zeroizing<Vec<u8>> = manifest
                .body
                .share_set
                .recover(&shares)
                .map_err(|e| e.to_string())?;
            drop(shares);
            let key = CaKey::from_pkcs8_der(&pkcs8).map_err(|e| e.to_string())?;
            drop(pkcs8);
            if key.spki_der().map_err(|e| e.to_string())? != manifest.ca.spki_der {
                return Err("the rebuilt key does not match the CA certificate".into());
            }
            let result = self.sign_with(&key, row, manifest);
            drop(key);
            result
        })();
        match outcome {
            Ok(what) => self.audit(
                "session-signed",
                Some(&row.ca_id),
                Some(&row.session_id),
                None,
                &format!(
                    "{what} with shares of {}; CA key and shares wiped",
                    holders.join(", ")
                ),
            ),
            Err(why) => {
                let _ = lock(&self.store).finish_session(
                    &row.session_id,
                    "failed",
                    &format!("{why}; secrets wiped"),
                    "session-failed",
                );
            }
        }
    }

    fn sign_with(
        &self,
        key: &CaKey,
        row: &SessionRow,
        manifest: &VerifiedManifest,
    ) -> Result<String, String> {
        let now_t = time::OffsetDateTime::now_utc();
        match row.kind.as_str() {
            "issue" => {
                let csr = Csr::parse(row.request.as_bytes()).map_err(|e| e.to_string())?;
                // sign only the exact request the holders approved, whatever the store says now
                if csr.digest() != row.request_sha256 {
                    return Err(
                        "the stored request no longer matches the digest the holders approved"
                            .into(),
                    );
                }
                let approved = view_of(row.certificate_view.as_deref().unwrap_or_default())?;
                let terms = pki::Terms::of_view(&approved).map_err(|e| e.to_string())?;
                let issued =
                    pki::issue(key, &manifest.ca, &csr, &terms).map_err(|e| e.to_string())?;
                if issued.view != approved {
                    return Err(
                        "the certificate issuance would make differs from the one the holders approved"
                            .into(),
                    );
                }
                lock(&self.store)
                    .record_certificate(
                        &row.session_id,
                        &row.ca_id,
                        &issued.serial_hex,
                        &issued.view.subject_string(),
                        issued.not_after.unix_timestamp(),
                        &issued.pem(),
                    )
                    .map_err(|e| e.to_string())?;
                Ok(format!("certificate {}", issued.serial_hex))
            }
            kind => {
                let mut store = lock(&self.store);
                let mut revoked: Vec<Revoked> = store
                    .revocations(&row.ca_id)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|(serial_hex, reason, revoked_at)| Revoked {
                        serial_hex,
                        reason,
                        revoked_at,
                    })
                    .collect();
                // re-derive what the holders approved from what is about to be signed
                let (statement, new) = if kind == "revoke" {
                    let n = Revoked {
                        serial_hex: row.serial.clone().unwrap_or_default(),
                        reason: row.reason.clone().unwrap_or_else(|| "unspecified".into()),
                        revoked_at: now(),
                    };
                    (
                        proto::revoke_statement(&row.ca_id, &n.serial_hex, &n.reason),
                        Some(n),
                    )
                } else {
                    (proto::crl_statement(&row.ca_id), None)
                };
                if pki::sha256_hex(statement.as_bytes()) != row.request_sha256 {
                    return Err(
                        "the stored revocation no longer matches what the holders approved".into(),
                    );
                }
                if let Some(n) = &new {
                    revoked.push(n.clone());
                }
                let number = store
                    .next_crl_number(&row.ca_id)
                    .map_err(|e| e.to_string())?;
                let (der, pem) = pki::sign_crl(key, &manifest.ca, number as u64, &revoked, now_t)
                    .map_err(|e| e.to_string())?;
                store
                    .record_crl(
                        &row.session_id,
                        &row.ca_id,
                        number,
                        &der,
                        &pem,
                        new.as_ref()
                            .map(|n| (n.serial_hex.as_str(), n.reason.as_str(), n.revoked_at)),
                    )
                    .map_err(|e| e.to_string())?;
                Ok(format!("CRL number {number}"))
            }
        }
    }

    // ---- public documents -----------------------------------------------------------

    pub fn ca_certificate(&self, ca_id: &str) -> ApiResult<String> {
        Ok(self.manifest(ca_id)?.ca.pem())
    }

    pub fn crl(&self, ca_id: &str) -> ApiResult<(Vec<u8>, String)> {
        self.manifest(ca_id)?;
        lock(&self.store).latest_crl(ca_id)?.ok_or_else(|| {
            ApiErr::new(
                404,
                "not-found",
                format!("CA {ca_id} has not signed a CRL yet"),
            )
        })
    }

    /// Registers a CA from its manifest (and enrollment hashes), as `serve ca add` does, for
    /// an operator whose token has role `ca-admin`. Refusals are audited; nothing is stored.
    pub fn register_ca(
        &self,
        operator: &str,
        req: crate::proto::RegisterCa,
    ) -> ApiResult<serde_json::Value> {
        let refuse = |status: u16, code: &'static str, message: String| {
            self.audit(
                "ca-refused",
                None,
                None,
                None,
                &format!("{operator}: {message}"),
            );
            ApiErr::new(status, code, message)
        };
        let role = lock(&self.store).api_role(operator)?;
        if role != Some(crate::store::ApiRole::CaAdmin) {
            return Err(refuse(
                403,
                "forbidden",
                "registering a CA needs an API token with role ca-admin (`nkpki serve token \
                 create --role ca-admin`), or `nkpki serve ca add` on the server host"
                    .into(),
            ));
        }
        // verification (signatures, fingerprints) runs outside the store's lock
        let prepared = super::prepare_registration(
            &req.manifest,
            req.enrollment.as_deref(),
            &req.expected_fingerprint,
        );
        let result = prepared.and_then(|r| {
            super::register_prepared(
                &mut lock(&self.store),
                &req.manifest,
                &r,
                &format!("operator {operator}"),
            )
            .map(|()| r)
        });
        match result {
            Ok(r) => Ok(serde_json::json!({
                "ca_id": r.ca_id,
                "certificate_sha256": r.fingerprint,
                "registered_by": operator,
            })),
            Err(e) => {
                let message = e.to_string();
                Err(match e {
                    super::ServerError::Store(crate::store::StoreError::Conflict(_)) => {
                        refuse(409, "conflict", message)
                    }
                    super::ServerError::FingerprintMismatch { .. } => {
                        refuse(422, "fingerprint-mismatch", message)
                    }
                    super::ServerError::Enrollment(_) => refuse(422, "bad-enrollment", message),
                    _ => refuse(422, "bad-manifest", message),
                })
            }
        }
    }

    /// CAs and their holders' enrollment and liveness, for operators.
    pub fn cas(&self) -> ApiResult<serde_json::Value> {
        let store = lock(&self.store);
        let mut out = Vec::new();
        for (ca_id, _) in store.ca_manifests()? {
            let holders: Vec<serde_json::Value> = store
                .holders(&ca_id)?
                .into_iter()
                .map(|h| {
                    serde_json::json!({
                        "holder_id": h.holder_id,
                        "share_index": h.share_index,
                        "enrolled": h.public_key_pem.is_some(),
                        "online": h.last_seen.is_some_and(|t| now() - t < 90),
                        "last_seen": h.last_seen,
                    })
                })
                .collect();
            out.push(serde_json::json!({ "ca_id": ca_id, "holders": holders }));
        }
        Ok(serde_json::Value::Array(out))
    }
}
