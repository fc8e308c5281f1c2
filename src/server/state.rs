//! The orchestrator's logic, independent of HTTP: CAs, holders, sessions and their
//! in-memory secrets, contributions, reconstruction and signing.

use super::guard::{self, FailureLimiter, Refusal, Refusals};
use super::metrics::Metrics;
use super::threshold::{self, ThresholdSession};
use crate::logging::session_span;
use crate::manifest::{Manifest, VerifiedManifest};
use crate::pki::{self, Csr, Profile, Revoked};
use crate::policy;
use crate::proto::{
    self, Challenge, ChallengeRequest, Contribution, CreateSession, Decline, Enroll, Login,
    LoginOk, OfferSummary, SessionKind, SessionOffer, SessionState, SessionStatus, SignJob,
    SigningMode,
};
use crate::store::{self, NewCertificate, SessionRow, Store, now};
use crate::worker::{Verdict, WorkerHandle};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use zeroize::Zeroizing;

#[path = "policy_session.rs"]
mod policy_session;
#[path = "reshare_session.rs"]
mod reshare_session;

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

/// An open session. Its secrets (the age identity, the shares, the rebuilt key) are in
/// its worker process, never here: dropping the handle kills the worker. A threshold CA's
/// session has no worker and no secret: only the TBS and the signature shares.
struct Live {
    ca_id: String,
    threshold: u8,
    total: u8,
    /// Taken out to sign (which consumes it); `None` once signing has begun, and always
    /// for a threshold CA.
    worker: Arc<tokio::sync::Mutex<Option<WorkerHandle>>>,
    /// Threshold mode: the TBS, the verified signature shares and what they will sign.
    signing: Option<ThresholdSession>,
    /// Approvals the CA policy asks for this session (M without a policy).
    approvals: u8,
    /// Holders the CA policy requires among the approvers.
    required: Vec<String>,
    /// The policy revision the session was judged by: it signs only if that is still the
    /// registered one ([`State::finalize`]).
    policy_revision: u32,
    /// Shares accepted (sealed shares in the worker, or signature shares): at most M are
    /// asked for; approvals beyond them come without a share.
    shares: usize,
    /// Holders whose approval was accepted (with or without a share).
    approved: Vec<String>,
    /// Holders that answered in any way (approved, declined, or refused): never offered
    /// the session again, and a second contribution is a duplicate.
    answered: Vec<String>,
    /// Holders that can no longer approve: declines and refused contributions.
    declined: usize,
    offer: SessionOffer,
}

/// A session checked and built, not yet stored: what [`State::prepare_session`] makes.
pub(super) struct Prepared {
    pub session_id: String,
    /// What the holders approve: the CSR (PEM) or the revocation/CRL statement.
    pub request: String,
    pub request_sha256: String,
    pub summary: OfferSummary,
    /// Threshold mode: the TBS the holders will sign shares of.
    pub signing: Option<ThresholdSession>,
    /// An `ocsp` profile session: the responder key made for it.
    pub responder_key: Option<pki::CaKey>,
}

/// What a signature will be recorded as.
pub(super) enum Pending {
    Certificate(Box<pki::CertificateView>),
    Crl {
        number: i64,
        new: Option<Revoked>,
    },
    /// A `policy` session's new manifest (the signature alone; the body is the request).
    Manifest,
    /// A new share set (`reshare`): recorded pending by [`State::record_reshare`].
    Reshare,
}

struct AgentLogin {
    ca_id: String,
    holder_id: String,
    expires_at: i64,
}

/// Bearers one holder may hold at once; a new login beyond it ends the oldest.
pub const MAX_LOGINS_PER_HOLDER: usize = 4;
/// Seconds an agent bearer lives.
pub const LOGIN_TTL: i64 = 3600;
/// Seconds a login challenge may be answered in.
pub const CHALLENGE_TTL: i64 = 60;

/// Everything the server holds.
pub struct State {
    store: Mutex<Store>,
    manifests: Mutex<HashMap<String, Arc<VerifiedManifest>>>,
    live: Mutex<HashMap<String, Live>>,
    /// Sessions ended in memory whose ending the store could not record yet (a full disk):
    /// id → (state, detail), written as soon as the store takes it.
    unrecorded_endings: Mutex<HashMap<String, (String, String)>>,
    agents: Mutex<HashMap<String, AgentLogin>>,
    /// Challenges are stateless (MACed with this key); only used ones are remembered.
    challenge_key: Zeroizing<[u8; 32]>,
    used_challenges: Mutex<HashMap<String, i64>>,
    /// (CA, holder) → (last poll, not yet written to the store).
    last_seen: Mutex<HashMap<(String, String), (i64, bool)>>,
    /// Per CA: bumped when a session is offered to its holders (what agents' polls wait on).
    offered: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Any session changed state (what operators' status long-polls wait on).
    changed: watch::Sender<u64>,
    pub limiter: FailureLimiter,
    pub refusals: Refusals,
    pub session_ttl: i64,
    pub metrics: Metrics,
    /// Open session event streams and their watchers.
    pub push: super::push::Push,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State(<redacted>)")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the CA policy says of a session of `kind` (issuing `view`).
fn session_verdict(
    manifest: &VerifiedManifest,
    kind: SessionKind,
    view: Option<&pki::CertificateView>,
) -> policy::Verdict {
    let request = match (kind, view) {
        (SessionKind::Policy, _) => return policy_session::change_verdict(manifest),
        (SessionKind::Issue | SessionKind::IssueBatch, Some(view)) => policy::Request::Issue(view),
        (SessionKind::Revoke, _) => policy::Request::Revoke,
        // a reshare needs the strictest quorum of the policy, as a policy change does
        (SessionKind::Reshare, _) => {
            return policy::reshare_verdict(manifest.body.policy.as_ref(), manifest.threshold());
        }
        _ => policy::Request::Crl,
    };
    manifest.verdict(&request)
}

/// SHA-256 (hex) of a threshold offer's to-be-signed bytes.
fn offered_tbs_sha256(offer: &SessionOffer) -> Option<String> {
    offer
        .tbs
        .as_deref()
        .and_then(|t| B64.decode(t).ok())
        .map(|t| pki::sha256_hex(&t))
}

/// A stored certificate view.
/// Whether the certificate(s) stored for a session are exactly those its offer showed the
/// holders: what the worker issues is read from the store.
fn stored_terms_are_offered(row: &SessionRow, offer: &SessionOffer) -> bool {
    match row.kind.as_str() {
        "issue" => {
            view_of(row.certificate_view.as_deref().unwrap_or_default()).ok()
                == offer.summary.certificate
        }
        "issue-batch" => {
            super::batch::stored_views(row).ok()
                == offer.summary.batch.as_ref().map(|b| b.certificates.clone())
        }
        _ => true,
    }
}

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
        let mut challenge_key = Zeroizing::new([0u8; 32]);
        rand::Rng::fill_bytes(&mut rand::rng(), challenge_key.as_mut());
        State {
            store: Mutex::new(store),
            manifests: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            unrecorded_endings: Mutex::new(HashMap::new()),
            agents: Mutex::new(HashMap::new()),
            challenge_key,
            used_challenges: Mutex::new(HashMap::new()),
            last_seen: Mutex::new(HashMap::new()),
            offered: Mutex::new(HashMap::new()),
            changed,
            limiter: FailureLimiter::default(),
            refusals: Refusals::default(),
            session_ttl,
            metrics: Metrics::default(),
            push: super::push::Push::default(),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes when a session is offered to the holders of `ca_id`.
    pub fn subscribe_offers(&self, ca_id: &str) -> watch::Receiver<u64> {
        lock(&self.offered)
            .entry(ca_id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn notify_offers(&self, ca_id: &str) {
        if let Some(tx) = lock(&self.offered).get(ca_id) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Counts an unauthenticated refusal from `ip` (spending its failure allowance); logs
    /// the first per address and minute, audits the first per named holder and minute.
    pub fn refused(
        &self,
        ip: IpAddr,
        kind: Refusal,
        holder: Option<(&str, &str)>,
        event: &str,
        detail: &str,
    ) {
        if kind != Refusal::RateLimited {
            self.limiter.failed(ip);
        }
        self.metrics.auth_refused(kind.code());
        let sample = self.refusals.count(ip, kind, holder);
        if sample.log {
            tracing::warn!(
                "refused {ip}: {detail} (further refusals from it this minute are counted, not logged)"
            );
        }
        if sample.audit
            && let Some((ca, h)) = holder
        {
            let _ = self.audit(
                event,
                Some(ca),
                None,
                Some(h),
                &format!("{detail} (from {ip}; repeats this minute are counted in a summary)"),
            );
        }
    }

    /// Housekeeping every few seconds: expired logins and challenges forgotten, the
    /// minute's summary of unauthenticated refusals audited.
    pub fn housekeeping(&self) {
        let t = now();
        lock(&self.agents).retain(|_, a| a.expires_at > t);
        lock(&self.used_challenges).retain(|_, expires| *expires > t);
        if let Some(summary) = self.refusals.summary_due() {
            tracing::warn!("{summary}");
            let _ = self.note("auth-refusals", &summary);
        }
    }

    /// Writes the last-seen times polled since the previous flush, in one transaction.
    pub fn flush_last_seen(&self) {
        let dirty: Vec<(String, String, i64)> = lock(&self.last_seen)
            .iter_mut()
            .filter(|(_, (_, dirty))| *dirty)
            .map(|((ca, h), (t, dirty))| {
                *dirty = false;
                (ca.clone(), h.clone(), *t)
            })
            .collect();
        if !dirty.is_empty()
            && let Err(e) = lock(&self.store).touch_holders(&dirty)
        {
            tracing::error!("writing last-seen times: {e}");
        }
    }

    /// Records an event of the server's own in the audit log.
    pub fn note(&self, event: &str, detail: &str) -> Result<(), store::StoreError> {
        self.audit(event, None, None, None, detail)
    }

    /// Appends to the audit log. A failure is the caller's to report: nothing is dropped
    /// silently (background writers with no caller log it).
    fn audit(
        &self,
        event: &str,
        ca: Option<&str>,
        session: Option<&str>,
        holder: Option<&str>,
        detail: &str,
    ) -> Result<(), store::StoreError> {
        let written = lock(&self.store).audit(event, ca, session, holder, detail);
        if let Err(e) = &written {
            tracing::error!("audit log: cannot record {event}: {e}");
        }
        written
    }

    /// A refusal the audit log must hold: if it cannot, the caller is told that instead.
    fn audited_refusal(
        &self,
        event: &str,
        ca: Option<&str>,
        detail: &str,
        refusal: ApiErr,
    ) -> ApiErr {
        match self.audit(event, ca, None, None, detail) {
            Ok(()) => refusal,
            Err(e) => ApiErr::new(
                503,
                "store-unavailable",
                format!(
                    "{} (and the refusal could not be recorded: {e})",
                    refusal.message
                ),
            ),
        }
    }

    /// Runs `f` with the store, for the modules that publish what it holds.
    pub fn read_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&lock(&self.store))
    }

    pub fn manifest(&self, ca_id: &str) -> ApiResult<Arc<VerifiedManifest>> {
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
            // counted by the caller as an unauthenticated refusal, not audited one by one
            None => Err(ApiErr::new(
                401,
                "unauthorized",
                "unknown or revoked API token",
            )),
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
                "login-expired",
                "the agent login expired; log in again",
            )),
            None => Err(ApiErr::new(
                401,
                "unauthorized",
                "unknown agent bearer token",
            )),
        }
    }

    /// The MAC that makes a challenge the server's own, for this holder, until `expires_at`.
    fn challenge_mac(&self, ca_id: &str, holder_id: &str, expires_at: i64, nonce: &str) -> String {
        let mut mac = [0u8; 32];
        let message = format!("nkpki challenge v1\n{ca_id}\n{holder_id}\n{expires_at}\n{nonce}");
        // HKDF-Expand is HMAC-SHA-256 keyed by the PRK: a MAC without another dependency
        let _ = hkdf::Hkdf::<sha2::Sha256>::new(None, self.challenge_key.as_ref())
            .expand(message.as_bytes(), &mut mac);
        hex::encode(mac)
    }

    /// A login challenge. It is the same for every request, whether or not the CA or the
    /// holder exist or have enrolled (a stranger learns nothing), and stateless: nothing is
    /// stored until a login uses it.
    pub fn challenge(&self, req: ChallengeRequest) -> ApiResult<Challenge> {
        let nonce = random_hex(16);
        let expires_at = now() + CHALLENGE_TTL;
        let mac = self.challenge_mac(&req.ca_id, &req.holder_id, expires_at, &nonce);
        Ok(Challenge {
            challenge: format!("{expires_at}.{nonce}.{mac}"),
            expires_at,
        })
    }

    /// Whether `challenge` was issued by this server for (CA, holder) and is still fresh.
    fn challenge_valid(&self, ca_id: &str, holder_id: &str, challenge: &str) -> bool {
        let mut parts = challenge.splitn(3, '.');
        let (Some(expires), Some(nonce), Some(mac)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(expires_at) = expires.parse::<i64>() else {
            return false;
        };
        let expected = self.challenge_mac(ca_id, holder_id, expires_at, nonce);
        let same = expected.len() == mac.len()
            && expected
                .bytes()
                .zip(mac.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same && expires_at > now() && expires_at <= now() + CHALLENGE_TTL
    }

    /// Logs an agent in. Every failure looks the same to the caller (`login-failed`): an
    /// unknown holder, one that has not enrolled, a stale challenge or a wrong key.
    pub fn login(&self, req: Login, ip: IpAddr) -> ApiResult<LoginOk> {
        let failed = |why: &str, known: bool| {
            self.refused(
                ip,
                Refusal::BadLogin,
                known.then_some((req.ca_id.as_str(), req.holder_id.as_str())),
                "auth-refused",
                &format!(
                    "agent login for {} of CA {}: {why}",
                    req.holder_id, req.ca_id
                ),
            );
            ApiErr::new(
                401,
                "login-failed",
                "login refused: the challenge is stale, or this holder has not enrolled, or the \
                 signature is not by its enrolled key (hint: an agent that has not enrolled yet \
                 enrolls with its one-time code)",
            )
        };
        if !self.challenge_valid(&req.ca_id, &req.holder_id, &req.challenge) {
            return Err(failed("unknown or expired challenge", false));
        }
        if lock(&self.used_challenges).contains_key(&req.challenge) {
            return Err(failed("the challenge was already used", false));
        }
        let Some(key) = self.login_key(&req.ca_id, &req.holder_id)? else {
            return Err(failed("not an enrolled holder", false));
        };
        let sig = B64.decode(&req.signature).unwrap_or_default();
        if pki::verify_signature(
            &key,
            &crate::proto::login_signed_bytes(&req.ca_id, &req.holder_id, &req.challenge),
            &sig,
        )
        .is_err()
        {
            return Err(failed("bad token signature", true));
        }
        let t = now();
        {
            let mut used = lock(&self.used_challenges);
            if used
                .insert(req.challenge.clone(), t + CHALLENGE_TTL)
                .is_some()
            {
                drop(used);
                return Err(failed("the challenge was already used", false));
            }
        }
        let bearer = random_hex(32);
        let expires_at = t + LOGIN_TTL;
        {
            let mut agents = lock(&self.agents);
            agents.retain(|_, a| a.expires_at > t);
            // a holder keeps its newest few logins: the oldest beyond them ends
            let mut mine: Vec<(String, i64)> = agents
                .iter()
                .filter(|(_, a)| a.ca_id == req.ca_id && a.holder_id == req.holder_id)
                .map(|(k, a)| (k.clone(), a.expires_at))
                .collect();
            mine.sort_by_key(|(_, e)| *e);
            let excess = (mine.len() + 1).saturating_sub(MAX_LOGINS_PER_HOLDER);
            for (k, _) in mine.into_iter().take(excess) {
                agents.remove(&k);
            }
            agents.insert(
                token_hash(&bearer),
                AgentLogin {
                    ca_id: req.ca_id.clone(),
                    holder_id: req.holder_id.clone(),
                    expires_at,
                },
            );
        }
        lock(&self.last_seen).insert((req.ca_id.clone(), req.holder_id.clone()), (t, false));
        lock(&self.store).touch_holder(&req.ca_id, &req.holder_id)?;
        Ok(LoginOk { bearer, expires_at })
    }

    /// The enrolled token key of a holder of the CA's current set (SubjectPublicKeyInfo
    /// DER), if any: the only key an envelope, a contribution or a decline is taken from.
    fn holder_key(&self, ca_id: &str, holder_id: &str) -> ApiResult<Option<Vec<u8>>> {
        let holder = lock(&self.store).holder(ca_id, holder_id)?;
        holder
            .and_then(|h| h.public_key_pem)
            .map(|pem| spki_from_pem(&pem))
            .transpose()
    }

    /// The key an agent logs in with: its current-set key, else (a holder only of a
    /// pending reshared set, enrolled for it) its pending-set key. A login by the latter
    /// only polls: [`State::is_current_holder`] keeps every session from it.
    fn login_key(&self, ca_id: &str, holder_id: &str) -> ApiResult<Option<Vec<u8>>> {
        match self.holder_key(ca_id, holder_id)? {
            Some(key) => Ok(Some(key)),
            None => self.pending_holder_key(ca_id, holder_id),
        }
    }

    /// Whether `holder_id` holds an enrolled token key of the CA's current set: only such
    /// a holder is offered sessions and may answer them.
    fn is_current_holder(&self, ca_id: &str, holder_id: &str) -> bool {
        matches!(
            lock(&self.store).holder(ca_id, holder_id),
            Ok(Some(h)) if h.public_key_pem.is_some()
        )
    }

    /// Registers a holder's token key with its one-time code. A wrong code, an unknown
    /// holder and an unknown CA all answer `bad-code`: only the code's owner learns more.
    pub fn enroll(&self, req: Enroll, ip: IpAddr) -> ApiResult<()> {
        let refuse = |why: &str, known: bool, status: u16, code: &'static str| {
            self.refused(
                ip,
                Refusal::BadEnrollment,
                known.then_some((req.ca_id.as_str(), req.holder_id.as_str())),
                "enrollment-refused",
                why,
            );
            Err(ApiErr::new(status, code, why.to_owned()))
        };
        let holder = lock(&self.store).holder(&req.ca_id, &req.holder_id)?;
        let Some(holder) = holder else {
            return refuse("wrong enrollment code", false, 403, "bad-code");
        };
        if holder.enrollment_code_sha256.as_deref()
            != Some(token_hash(&req.enrollment_code).as_str())
        {
            return refuse("wrong enrollment code", true, 403, "bad-code");
        }
        if holder.code_used {
            return refuse(
                "the enrollment code was already used; an operator must reset this holder",
                true,
                409,
                "code-used",
            );
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
                true,
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
        if req.kind == SessionKind::Policy {
            self.check_policy_proposer(operator, &req.ca_id)?;
        }
        let prepared = self.prepare_session(&manifest, &req).map_err(|e| {
            if e.status == 422 || e.code == "crl-session-open" || e.code == "policy-session-open" {
                let detail = format!("{operator}: {}", e.message);
                self.audited_refusal("session-refused", Some(&req.ca_id), &detail, e)
            } else {
                e
            }
        })?;
        self.open_session(operator, &manifest, &req, prepared)
    }

    /// Stores a prepared session, starts its worker (reconstruct mode) and offers it to
    /// the CA's holders.
    fn open_session(
        &self,
        operator: &str,
        manifest: &VerifiedManifest,
        req: &CreateSession,
        prepared: Prepared,
    ) -> ApiResult<SessionStatus> {
        let Prepared {
            session_id,
            request,
            request_sha256,
            summary,
            signing,
            responder_key,
        } = prepared;
        let created_at = now();
        let (worker, recipient) = match &signing {
            Some(_) => (None, String::new()),
            None => {
                // a batch's worker also has the time to sign it, should it be approved late
                let signing_time = match req.kind {
                    SessionKind::IssueBatch => super::batch::sign_timeout(req.csr_pems.len()),
                    _ => std::time::Duration::ZERO,
                };
                let (worker, recipient) =
                    self.start_worker(&req.ca_id, &session_id, signing_time)?;
                (Some(worker), recipient)
            }
        };
        let nonce = random_hex(32);
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
            certificate_view: match &summary.batch {
                Some(batch) => serde_json::to_string(&batch.certificates).ok(),
                None => summary
                    .certificate
                    .as_ref()
                    .and_then(|v| serde_json::to_string(v).ok()),
            },
            tbs: signing.as_ref().map(|t| t.tbs.to_vec()),
        };
        // the responder key is on disk before the session exists: no session waits for a
        // key that could not be written
        let responder = match responder_key {
            Some(key) => {
                let dir = lock(&self.store).dir().to_owned();
                Some(
                    super::ocsp::save_responder_key(&dir, &session_id, &key)
                        .map_err(|e| internal(format!("writing the OCSP responder key: {e}")))?,
                )
            }
            None => None,
        };
        {
            let mut store = lock(&self.store);
            store.insert_session(&row)?;
            if let Some((file, spki_sha256)) = &responder {
                store.add_ocsp_responder(
                    &session_id,
                    &req.ca_id,
                    &file.display().to_string(),
                    spki_sha256,
                )?;
            }
        }
        let kind_label = row.kind.clone();
        let _in = session_span(&session_id, &req.ca_id).entered();
        self.metrics.session(&req.ca_id, &kind_label, "opened");
        let judged = summary
            .certificate
            .as_ref()
            .or_else(|| summary.batch.as_ref().and_then(|b| b.certificates.first()));
        let verdict = session_verdict(manifest, req.kind, judged);
        let beyond_m = if verdict.approvals > manifest.threshold() {
            format!(
                " (the CA policy's; {} of them with shares)",
                manifest.threshold()
            )
        } else {
            String::new()
        };
        tracing::info!(
            "session opened: {kind_label} for {operator}, {} of {} approvals needed{beyond_m}",
            verdict.approvals,
            manifest.body.share_set.total,
        );
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
            mode: if signing.is_some() {
                SigningMode::Threshold
            } else {
                SigningMode::Reconstruct
            },
            tbs: signing.as_ref().map(|t| B64.encode(t.tbs.as_slice())),
            policy: manifest.body.policy.as_ref().map(|_| proto::OfferPolicy {
                approvals: verdict.approvals,
                required_holders: verdict.required_holders.clone(),
                summary: verdict.summary.clone(),
            }),
            approval_only: false,
        };
        lock(&self.live).insert(
            session_id.clone(),
            Live {
                ca_id: req.ca_id.clone(),
                threshold: manifest.threshold(),
                approvals: verdict.approvals,
                required: verdict.required_holders,
                policy_revision: manifest.body.policy_revision,
                shares: 0,
                total: manifest.body.share_set.total,
                worker: Arc::new(tokio::sync::Mutex::new(worker)),
                signing,
                approved: Vec::new(),
                answered: Vec::new(),
                declined: 0,
                offer,
            },
        );
        self.notify();
        self.notify_offers(&req.ca_id);
        self.status(&session_id)
    }

    /// Refuses (code `policy-violation`) a request the CA policy does not allow, before
    /// any holder is asked; [`State::create_session`] audits the refusal.
    fn policy_check(manifest: &VerifiedManifest, request: &policy::Request<'_>) -> ApiResult<()> {
        let verdict = manifest.verdict(request);
        if verdict.allowed() {
            return Ok(());
        }
        let message = format!("refused by the CA policy: {}", verdict.refusal());
        Err(ApiErr::new(422, "policy-violation", message))
    }

    /// Everything [`State::create_session`] checks and builds before it stores anything:
    /// the request the holders will approve, what it will be recorded as, and (threshold
    /// mode) the exact bytes they will sign. A policy refusal is a 422 `policy` error (or
    /// 409 `crl-session-open`), not yet audited. The dry run ([`super::preview`]) calls
    /// it too, so a preview and the session it previews cannot disagree.
    pub(super) fn prepare_session(
        &self,
        manifest: &VerifiedManifest,
        req: &CreateSession,
    ) -> ApiResult<Prepared> {
        let refuse = |message: String| ApiErr::new(422, "policy", message);
        // the OCSP responder's key, made here for a session asking for its certificate
        let mut responder_key = None;
        if !req.csr_pems.is_empty() && req.kind != SessionKind::IssueBatch {
            return Err(ApiErr::new(
                400,
                "bad-request",
                "csr_pems is for issue-batch sessions only (hint: kind issue-batch, or one \
                 csr_pem for an issue session)",
            ));
        }
        let (request, request_sha256, summary) = match req.kind {
            SessionKind::IssueBatch => {
                if threshold::key(manifest).is_some() {
                    return Err(ApiErr::new(
                        409,
                        "batch-threshold",
                        "this CA signs in threshold mode, where a batch is not supported yet \
                         (hint: issue the certificates one session each, or use a \
                         reconstruct-mode CA for batches)",
                    ));
                }
                let urls = self.read_store(|s| super::publish::ca_urls(s, &req.ca_id))?;
                let checked =
                    super::batch::check(manifest, req, urls, |r| Self::policy_check(manifest, r))?;
                return Ok(Prepared {
                    session_id: random_hex(16),
                    request: checked.request,
                    request_sha256: checked.request_sha256,
                    summary: checked.summary,
                    signing: None,
                    responder_key: None,
                });
            }
            SessionKind::Issue => {
                let profile: Profile = req
                    .profile
                    .as_deref()
                    .unwrap_or("server")
                    .parse()
                    .map_err(refuse)?;
                let csr = if profile == Profile::Ocsp {
                    if req.csr_pem.is_some() {
                        return Err(refuse(
                            "the ocsp profile certifies the server's own responder key, never a \
                             CSR (hint: `nkpki ocsp-responder` asks for it)"
                                .into(),
                        ));
                    }
                    let (key, csr) = super::ocsp::responder_request(&manifest.body.ca.name)
                        .map_err(|e| internal(format!("making the OCSP responder key: {e}")))?;
                    responder_key = Some(key);
                    csr
                } else {
                    let pem = req
                        .csr_pem
                        .as_deref()
                        .ok_or_else(|| ApiErr::new(400, "bad-request", "csr_pem is required"))?;
                    Csr::parse(pem.as_bytes()).map_err(|e| refuse(e.to_string()))?
                };
                let days = req.days.unwrap_or(if profile == Profile::Ocsp {
                    pki::OCSP_MAX_DAYS
                } else {
                    90
                });
                let urls = self.read_store(|s| super::publish::ca_urls(s, &req.ca_id))?;
                let sub_ca = (profile == Profile::SubCa)
                    .then(|| manifest.sub_ca_constraints())
                    .flatten();
                let terms = pki::Terms::new(profile, days, time::OffsetDateTime::now_utc())
                    .map_err(|e| refuse(e.to_string()))?
                    .with_urls(urls)
                    .with_sub_ca(sub_ca);
                let view = pki::check_request(&manifest.ca, &csr, &terms)
                    .map_err(|e| refuse(e.to_string()))?;
                Self::policy_check(manifest, &policy::Request::Issue(&view))?;
                let summary = OfferSummary {
                    profile: profile.to_string(),
                    days,
                    not_before: view.not_before,
                    serial: Some(view.serial.clone()),
                    reason: None,
                    certificate: Some(view),
                    batch: None,
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
                Self::policy_check(manifest, &policy::Request::Revoke)?;
                let text = proto::revoke_statement(&req.ca_id, &serial, reason);
                let summary = OfferSummary {
                    profile: "revoke".into(),
                    days: 0,
                    not_before: 0,
                    serial: Some(serial.clone()),
                    reason: Some(reason.to_owned()),
                    certificate: None,
                    batch: None,
                };
                (text.clone(), pki::sha256_hex(text.as_bytes()), summary)
            }
            SessionKind::Policy => self.policy_request(manifest, req)?,
            SessionKind::Crl => {
                Self::policy_check(manifest, &policy::Request::Crl)?;
                let text = proto::crl_statement(&req.ca_id);
                let summary = OfferSummary {
                    profile: "crl".into(),
                    days: pki::CRL_VALIDITY_DAYS as u32,
                    not_before: 0,
                    serial: None,
                    reason: None,
                    certificate: None,
                    batch: None,
                };
                (text.clone(), pki::sha256_hex(text.as_bytes()), summary)
            }
            SessionKind::Reshare => {
                return Err(ApiErr::new(
                    400,
                    "bad-request",
                    "a reshare is opened with POST /api/v1/reshare (`nkpki reshare --server`)",
                ));
            }
        };
        if threshold::key(manifest).is_some()
            && matches!(req.kind, SessionKind::Revoke | SessionKind::Crl)
            && let Some(open) = self.open_crl_session(&req.ca_id)
        {
            // a threshold CRL's number and list are fixed when its session opens: two open
            // at once would both be CRL n, and the second could never be recorded
            return Err(ApiErr::new(
                409,
                "crl-session-open",
                format!(
                    "session {open} is still open: it will sign this CA's next CRL; wait for it to end \
                     (hint: a threshold CA signs one CRL at a time)"
                ),
            ));
        }
        let session_id = random_hex(16);
        // threshold mode: the exact bytes the holders will sign shares of, fixed now
        let signing = match threshold::key(manifest) {
            Some(_) => Some(
                self.threshold_session(manifest, &session_id, req.kind, &request, &summary)
                    .map_err(refuse)?,
            ),
            None => None,
        };
        Ok(Prepared {
            session_id,
            request,
            request_sha256,
            summary,
            signing,
            responder_key,
        })
    }

    /// An open revocation or CRL session of this CA, if any.
    fn open_crl_session(&self, ca_id: &str) -> Option<String> {
        lock(&self.live)
            .iter()
            .find(|(_, live)| {
                live.ca_id == ca_id
                    && matches!(live.offer.kind, SessionKind::Revoke | SessionKind::Crl)
            })
            .map(|(id, _)| id.clone())
    }

    /// A threshold session's to-be-signed bytes and what they will be recorded as: the
    /// certificate the offer describes, or the next CRL (listing, for a revocation, the
    /// new entry revoked as of now).
    fn threshold_session(
        &self,
        manifest: &VerifiedManifest,
        session_id: &str,
        kind: SessionKind,
        request: &str,
        summary: &OfferSummary,
    ) -> Result<ThresholdSession, String> {
        let (tbs, pending) = match kind {
            SessionKind::Policy => (request.as_bytes().to_vec(), Pending::Manifest),
            SessionKind::IssueBatch => {
                return Err("a batch is not signed in threshold mode".into());
            }
            SessionKind::Issue => {
                let csr = Csr::parse(request.as_bytes()).map_err(|e| e.to_string())?;
                let view = summary
                    .certificate
                    .as_ref()
                    .ok_or("an issue session has a certificate")?;
                let tbs = threshold::tbs_for_issue(manifest, &csr, view)?;
                (tbs, Pending::Certificate(Box::new(view.clone())))
            }
            SessionKind::Revoke | SessionKind::Crl => {
                let new = (kind == SessionKind::Revoke).then(|| Revoked {
                    serial_hex: summary.serial.clone().unwrap_or_default(),
                    reason: summary
                        .reason
                        .clone()
                        .unwrap_or_else(|| "unspecified".into()),
                    revoked_at: now(),
                });
                let (revoked, number) = {
                    let store = lock(&self.store);
                    let revoked: Vec<Revoked> = store
                        .revocations(&manifest.body.ca_id.0)
                        .map_err(|e| e.to_string())?
                        .into_iter()
                        .map(|(serial_hex, reason, revoked_at)| Revoked {
                            serial_hex,
                            reason,
                            revoked_at,
                        })
                        .collect();
                    let number = store
                        .next_crl_number(&manifest.body.ca_id.0)
                        .map_err(|e| e.to_string())?;
                    (revoked, number)
                };
                let tbs = threshold::tbs_for_crl(manifest, number, revoked, new.as_ref(), now())?;
                (tbs, Pending::Crl { number, new })
            }
            SessionKind::Reshare => return Err("a threshold CA is not reshared online".into()),
        };
        Ok(ThresholdSession {
            tbs: Arc::new(tbs),
            context: Arc::new(proto::threshold_context(&manifest.body.ca_id.0, session_id)),
            shares: Vec::new(),
            pending,
        })
    }

    pub fn status(&self, session_id: &str) -> ApiResult<SessionStatus> {
        let store = lock(&self.store);
        let row = store
            .session(session_id)?
            .ok_or_else(|| ApiErr::new(404, "not-found", format!("no session {session_id}")))?;
        let events = store.events(session_id)?;
        let answers = events
            .iter()
            .map(|(holder, outcome, detail, at)| proto::Answer {
                holder: holder.clone(),
                outcome: outcome.clone(),
                detail: detail.clone(),
                at: *at,
            })
            .collect();
        let pick = |outcome: &str| {
            events
                .iter()
                .filter(|(_, o, _, _)| o == outcome)
                .map(|(h, _, d, _)| {
                    if outcome == "refused" {
                        format!("{h}: {d}")
                    } else {
                        h.clone()
                    }
                })
                .collect::<Vec<_>>()
        };
        let batch_views = if row.kind == "issue-batch" {
            super::batch::stored_views(&row).map_err(internal)?
        } else {
            Vec::new()
        };
        let (serial, certificate_pem, certificates) = if row.kind == "issue-batch" {
            let issued = store.certificates_of_session(session_id)?;
            (
                None,
                None,
                super::batch::status_certificates(&batch_views, issued),
            )
        } else {
            match store.certificate_for_session(session_id)? {
                Some((s, p)) => (Some(s), Some(p), Vec::new()),
                None => (row.serial.clone(), None, Vec::new()),
            }
        };
        let crl_pem = if row.state == "signed" && matches!(row.kind.as_str(), "revoke" | "crl") {
            store.latest_crl(&row.ca_id)?.map(|(_, pem)| pem)
        } else {
            None
        };
        // the manifest lookup may take the store's lock itself
        drop(store);
        let mut row = row;
        if row.state == "waiting"
            && let Some((state, detail)) = lock(&self.unrecorded_endings).get(session_id)
        {
            row.state = state.clone();
            row.detail = Some(format!(
                "{detail} (not yet recorded: the store refuses writes)"
            ));
        }
        let manifest = self.manifest(&row.ca_id)?;
        let threshold = manifest.threshold();
        let kind: SessionKind = serde_json::from_value(serde_json::Value::String(row.kind.clone()))
            .map_err(internal)?;
        let view = row
            .certificate_view
            .as_deref()
            .and_then(|v| view_of(v).ok());
        let verdict = session_verdict(&manifest, kind, view.as_ref().or(batch_views.first()));
        let with_policy = manifest.body.policy.is_some();
        Ok(SessionStatus {
            session_id: row.session_id.clone(),
            ca_id: row.ca_id.clone(),
            kind,
            state: SessionState::parse(&row.state).ok_or_else(|| internal("bad state in store"))?,
            requester: row.requester.clone(),
            threshold,
            approved: pick("approved"),
            declined: pick("declined"),
            refused: pick("refused"),
            answers,
            expires_at: row.expires_at,
            seconds_left: (row.expires_at - now()).max(0),
            detail: row.detail.clone(),
            certificate: view,
            certificate_pem,
            serial,
            crl_pem,
            approvals_required: with_policy.then_some(verdict.approvals),
            required_holders: verdict.required_holders,
            policy: if with_policy {
                verdict.summary
            } else {
                Vec::new()
            },
            certificates,
        })
    }

    pub fn cancel(&self, operator: &str, session_id: &str) -> ApiResult<SessionStatus> {
        let _in = tracing::info_span!("session", session = %session_id).entered();
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
        self.count_session(session_id, "cancelled");
        tracing::info!("session cancelled by {operator}");
        self.notify();
        self.status(session_id)
    }

    /// The server is stopping: every open session ends `aborted` (its worker, holding its
    /// secrets, is killed), and the audit log says why the server stopped.
    pub fn shutdown(&self, why: &str) -> Result<usize, store::StoreError> {
        let open: Vec<Live> = lock(&self.live).drain().map(|(_, l)| l).collect();
        drop(open);
        self.flush_last_seen();
        let mut store = lock(&self.store);
        let n = store.abort_sessions_because(&format!(
            "the server stopped ({why}) while the session was open; its worker was ended"
        ))?;
        store.audit(
            "server-stopped",
            None,
            None,
            None,
            &format!("{why}; {n} open session(s) aborted"),
        )?;
        Ok(n)
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
            let _in = session_span(&id, &l.ca_id).entered();
            let detail = if l.signing.is_some() {
                format!(
                    "expired with {} of {} signature shares ({} approvals)",
                    l.shares.min(usize::from(l.threshold)),
                    l.threshold,
                    l.approved.len()
                )
            } else {
                format!(
                    "expired with {} of {} shares ({} approvals); secrets wiped",
                    l.shares.min(usize::from(l.threshold)),
                    l.threshold,
                    l.approved.len()
                )
            };
            drop(l);
            self.end_session(&id, "expired", &detail);
        }
        // the store, not only memory, says when a session is over: one whose end was never
        // recorded (a write that failed, a crash between) is ended here
        if self.record_endings() {
            let overdue = lock(&self.store).overdue_sessions(t).unwrap_or_default();
            for id in overdue {
                if !lock(&self.live).contains_key(&id) {
                    let _in = tracing::info_span!("session", session = %id).entered();
                    self.end_session(
                        &id,
                        "expired",
                        "expired; no open session held it in the server's memory",
                    );
                }
            }
        }
        n
    }

    /// Sessions the agent of (CA, holder) has not answered yet, less those it said it
    /// skips (offers it saw and cannot answer: it waits for news instead of re-polling).
    pub fn offers(&self, ca_id: &str, holder_id: &str, skip: &[String]) -> Vec<SessionOffer> {
        // a holder only of a pending reshared set polls, and is offered nothing
        if !self.is_current_holder(ca_id, holder_id) {
            return Vec::new();
        }
        let t = now();
        let live = lock(&self.live);
        let mut out: Vec<SessionOffer> = live
            .values()
            .filter(|l| {
                l.ca_id == ca_id
                    && l.offer.expires_at > t
                    && !l.answered.iter().any(|h| h == holder_id)
                    && !skip.contains(&l.offer.session_id)
            })
            .map(|l| {
                let mut offer = l.offer.clone();
                // shares only ever add up: once M are in, later holders approve without one
                offer.approval_only = l.shares >= usize::from(l.threshold);
                offer
            })
            .collect();
        out.sort_by_key(|o| o.expires_at);
        out
    }

    /// Notes that the agent of (CA, holder) is polling: kept in memory, written to the
    /// store every 30 seconds by [`State::flush_last_seen`].
    pub fn seen(&self, ca_id: &str, holder_id: &str) {
        lock(&self.last_seen).insert((ca_id.to_owned(), holder_id.to_owned()), (now(), true));
    }

    /// Records a refused contribution (once per holder and session: the refusal is its
    /// answer) and returns the error to send.
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
            let _ = self.audit(
                "contribution-refused",
                Some(ca_id),
                None,
                Some(holder_id),
                &format!("{why} ({e})"),
            );
        }
        ApiErr::new(status, code, why)
    }

    /// Marks `holder_id` as having answered `session_id` without approving (a decline or a
    /// refused contribution); returns the session's secrets when it can no longer reach
    /// its threshold, so that the caller ends it.
    fn answered_without_share(&self, session_id: &str, holder_id: &str) -> Option<Live> {
        let mut live = lock(&self.live);
        let l = live.get_mut(session_id)?;
        if !l.answered.iter().any(|h| h == holder_id) {
            l.answered.push(holder_id.to_owned());
        }
        l.declined += 1;
        let still_possible = (l.total as usize).saturating_sub(l.declined)
            >= usize::from(l.approvals.max(l.threshold))
            && !l.required.iter().any(|h| h == holder_id);
        if still_possible {
            None
        } else {
            live.remove(session_id)
        }
    }

    /// Ends a session that can no longer reach its threshold; `outcome` is its label in the
    /// metrics (`declined`, `failed`).
    fn fail_unreachable(&self, session_id: &str, l: Live, why: &str, outcome: &str) {
        // a threshold session held nothing secret to wipe
        let detail = if l.signing.is_some() {
            why.to_owned()
        } else {
            format!("{why}; secrets wiped")
        };
        drop(l);
        self.end_session_as(session_id, "failed", &detail, outcome);
    }

    /// Counts a session's opening or end in the metrics, by its CA and kind.
    fn count_session(&self, session_id: &str, outcome: &str) {
        let row = lock(&self.store).session(session_id).ok().flatten();
        let (ca, kind) = row.map(|r| (r.ca_id, r.kind)).unwrap_or_default();
        self.metrics.session(&ca, &kind, outcome);
    }

    fn end_session(&self, session_id: &str, state: &str, detail: &str) {
        self.end_session_as(session_id, state, detail, state);
    }

    /// Records a session's end; when the store cannot take it (a full disk), the ending is
    /// kept in memory, shown to operators at once, and written as soon as the store can.
    fn end_session_as(&self, session_id: &str, state: &str, detail: &str, outcome: &str) {
        let event = format!("session-{state}");
        let written = lock(&self.store).finish_session(session_id, state, detail, &event);
        match &written {
            Ok(false) => {}
            Ok(true) | Err(_) => {
                self.count_session(session_id, outcome);
                tracing::info!("session {state}: {detail}");
            }
        }
        if let Err(e) = written {
            tracing::error!(
                "the store cannot record that session {session_id} {state} ({e}); \
                 retrying every half second"
            );
            lock(&self.unrecorded_endings)
                .insert(session_id.to_owned(), (state.to_owned(), detail.to_owned()));
        }
        self.notify();
    }

    /// Writes the endings the store could not take before; true if none is left.
    fn record_endings(&self) -> bool {
        let pending: Vec<(String, (String, String))> = lock(&self.unrecorded_endings)
            .iter()
            .map(|(id, ending)| (id.clone(), ending.clone()))
            .collect();
        for (id, (state, detail)) in pending {
            let event = format!("session-{state}");
            let written = lock(&self.store).finish_session(
                &id,
                &state,
                &format!("{detail} (recorded late: the store refused writes at the time)"),
                &event,
            );
            if written.is_ok() {
                lock(&self.unrecorded_endings).remove(&id);
            }
        }
        lock(&self.unrecorded_endings).is_empty()
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
        if !self.is_current_holder(ca_id, holder_id) {
            return Err(ApiErr::new(
                403,
                "unknown-holder",
                format!(
                    "{holder_id} is not an enrolled holder of CA {ca_id}'s current share set: \
                     a holder only of a pending set answers no session before the switch"
                ),
            ));
        }
        {
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
        }
        let failed = self.answered_without_share(session_id, holder_id);
        lock(&self.store).record_event(session_id, ca_id, holder_id, "declined", &req.reason)?;
        tracing::info!(
            "declined by {holder_id}: {}",
            crate::pki::text::escape(&req.reason)
        );
        if let Some(l) = failed {
            self.fail_unreachable(
                session_id,
                l,
                "declined by too many holders to reach the threshold",
                "declined",
            );
        }
        self.notify();
        self.status(session_id)
    }

    /// Checks a contribution; at the threshold, reconstructs, signs and wipes.
    ///
    /// The live-session lock is held only to look up and to commit: the holder is marked as
    /// having answered first (so a second contribution, even a concurrent one, is a
    /// duplicate refused without any work), then every check, the decryption and the
    /// Feldman verification run with no lock held.
    pub fn contribute(
        &self,
        ca_id: &str,
        holder_id: &str,
        session_id: &str,
        c: Contribution,
    ) -> ApiResult<SessionStatus> {
        let result = self.take_contribution(ca_id, holder_id, session_id, c);
        match &result {
            Ok(status) => {
                self.metrics.contribution_accepted();
                tracing::info!(
                    "share of {holder_id} accepted: {} of {} approvals, state {}",
                    status.approved.len(),
                    status.threshold,
                    status.state.as_str()
                );
            }
            Err(e) => {
                self.metrics.contribution_refused(e.code);
                tracing::warn!(
                    "contribution of {holder_id} refused ({}): {}",
                    e.code,
                    e.message
                );
            }
        }
        result
    }

    fn take_contribution(
        &self,
        ca_id: &str,
        holder_id: &str,
        session_id: &str,
        c: Contribution,
    ) -> ApiResult<SessionStatus> {
        // a holder only of a pending reshared set answers nothing: neither its approval nor
        // its refusal counts toward the current set's session
        if !self.is_current_holder(ca_id, holder_id) {
            return Err(ApiErr::new(
                403,
                "unknown-holder",
                format!(
                    "{holder_id} is not an enrolled holder of CA {ca_id}'s current share set: \
                     a holder only of a pending set answers no session before the switch"
                ),
            ));
        }
        let (worker, offer, signing, shares_in) = {
            let mut live = lock(&self.live);
            match live.get_mut(session_id).filter(|l| l.ca_id == ca_id) {
                Some(l) if l.answered.iter().any(|h| h == holder_id) => {
                    return Err(ApiErr::new(
                        409,
                        "duplicate",
                        "this holder already answered the session",
                    ));
                }
                Some(l) => {
                    l.answered.push(holder_id.to_owned());
                    let signing = l
                        .signing
                        .as_ref()
                        .map(|t| (t.tbs.clone(), t.context.clone()));
                    let shares_in = l.shares >= usize::from(l.threshold);
                    (l.worker.clone(), l.offer.clone(), signing, shares_in)
                }
                None => {
                    drop(live);
                    return Err(self.closed_session(ca_id, session_id));
                }
            }
        };
        let approval_only = c.envelope.is_approval_only();
        // once M shares are in, a contribution is an approval: a share sent anyway (by an
        // agent that polled before) is dropped unread, sealed to a key it never meets
        let mut with_share = !approval_only && !shares_in;
        let verdict = match self.check_envelope(ca_id, holder_id, &offer, &c) {
            Ok(()) if approval_only && !shares_in => Err(ApiErr::new(
                409,
                "share-needed",
                "the session still needs shares: an approval without one counts only once \
                 M shares are in",
            )),
            Ok(()) if !with_share => Ok(()),
            Ok(()) => match &signing {
                Some((tbs, context)) => self.manifest(ca_id).and_then(|manifest| {
                    let share = c.signature_share.as_ref().ok_or_else(|| {
                        ApiErr::new(400, "bad-envelope", "no signature share was sent")
                    })?;
                    threshold::check_set(&manifest, c.share_set_id.as_ref())?;
                    threshold::check_share(&manifest, holder_id, tbs, context, share)
                }),
                None => self.worker_contribute(&worker, ca_id, holder_id, &c.ciphertext),
            },
            Err(e) => Err(e),
        };
        // a share that crossed the M-th on its way (its agent polled before): the worker
        // holds M already and refuses it unread; its signed envelope counts as an approval,
        // as it would had it come a moment later
        let verdict = match verdict {
            Err(e) if with_share && signing.is_none() && e.code == "not-waiting" => {
                with_share = false;
                Ok(())
            }
            other => other,
        };
        drop(worker);
        if let Err(e) = &verdict
            && e.code == "worker"
        {
            // not the holder's fault: the session cannot go on without its secrets
            let l = lock(&self.live).remove(session_id);
            if let Some(l) = l {
                self.fail_unreachable(session_id, l, &e.message, "failed");
            }
            self.notify();
        }
        if let Err(e) = verdict {
            let err =
                self.refuse_contribution(session_id, ca_id, holder_id, e.status, e.code, e.message);
            if let Some(l) = self.answered_without_share(session_id, holder_id) {
                self.fail_unreachable(
                    session_id,
                    l,
                    "too many holders refused or declined to reach the threshold",
                    "failed",
                );
            }
            self.notify();
            return Err(err);
        }
        let ready = {
            let mut live = lock(&self.live);
            let Some(l) = live.get_mut(session_id) else {
                drop(live);
                return Err(self.closed_session(ca_id, session_id));
            };
            l.approved.push(holder_id.to_owned());
            // a signature share beyond the M-th (it crossed another) is an approval only
            with_share = with_share && l.shares < usize::from(l.threshold);
            if with_share {
                l.shares += 1;
                if let (Some(t), Some(share)) = (l.signing.as_mut(), &c.signature_share) {
                    t.shares.push(share.clone());
                }
            }
            let complete = l.shares >= usize::from(l.threshold)
                && l.approved.len() >= usize::from(l.approvals)
                && l.required.iter().all(|h| l.approved.contains(h));
            if complete {
                live.remove(session_id)
            } else {
                None
            }
        };
        let detail = if !with_share {
            "approval without a share (the session holds M shares), envelope signed by the \
             holder's token"
        } else if signing.is_some() {
            "signature share's proof verified against the holder's verification key"
        } else {
            "share verified against the commitments by the session worker"
        };
        let recorded =
            lock(&self.store).record_event(session_id, ca_id, holder_id, "approved", detail);
        if let Err(e) = recorded {
            // nothing is signed that the store cannot record: the session ends here, and
            // its worker (holding the shares) with it
            drop(ready);
            let l = lock(&self.live).remove(session_id);
            drop(l);
            self.end_session(
                session_id,
                "failed",
                &format!("the store refused a write ({e}); secrets wiped"),
            );
            return Err(ApiErr::new(
                503,
                "store-unavailable",
                format!("the server cannot record the contribution ({e}); the session failed"),
            ));
        }
        if let Some(l) = ready {
            let row = lock(&self.store)
                .session(session_id)?
                .ok_or_else(|| ApiErr::new(404, "not-found", format!("no session {session_id}")))?;
            let manifest = self.manifest(ca_id)?;
            self.finalize(&row, &manifest, l);
        }
        self.notify();
        self.status(session_id)
    }

    /// Starts a session's worker for `ca_id` and opens the session in it; returns the
    /// handle and the session's recipient (the identity stays in the worker). The worker
    /// lives the session's TTL, 30 s, and `signing_time` (what a batch may take to sign).
    fn start_worker(
        &self,
        ca_id: &str,
        session_id: &str,
        signing_time: std::time::Duration,
    ) -> ApiResult<(WorkerHandle, String)> {
        let manifest_json = lock(&self.store)
            .ca_manifests()?
            .into_iter()
            .find(|(id, _)| id == ca_id)
            .map(|(_, m)| m)
            .ok_or_else(|| {
                ApiErr::new(404, "unknown-ca", format!("no CA {ca_id} is registered"))
            })?;
        // the worker outlives the session by a little at most, whatever happens here
        let lifetime = std::time::Duration::from_secs(
            u64::try_from(self.session_ttl.saturating_add(30)).unwrap_or(330),
        )
        .saturating_add(signing_time);
        let runtime = tokio::runtime::Handle::try_current().map_err(internal)?;
        runtime
            .block_on(async {
                let mut worker = WorkerHandle::spawn_current(lifetime, session_id).await?;
                let recipient = worker.open(&manifest_json).await?;
                Ok::<_, crate::worker::WorkerError>((worker, recipient))
            })
            .map_err(|e| {
                ApiErr::new(
                    500,
                    "worker",
                    format!("cannot start the session's worker: {e}"),
                )
            })
    }

    /// Hands a contribution to the session's worker, which decrypts and checks it; a refusal
    /// comes back as the error the holder gets.
    fn worker_contribute(
        &self,
        worker: &tokio::sync::Mutex<Option<WorkerHandle>>,
        ca_id: &str,
        holder_id: &str,
        ciphertext: &str,
    ) -> ApiResult<()> {
        let runtime = tokio::runtime::Handle::try_current().map_err(internal)?;
        let verdict = runtime.block_on(async {
            match worker.lock().await.as_mut() {
                Some(w) => w.contribute(holder_id, ciphertext).await.map(Some),
                None => Ok(None),
            }
        });
        match verdict {
            Ok(Some(Verdict::Accepted { .. })) => Ok(()),
            Ok(Some(Verdict::Refused { code, why })) => {
                let (status, code) = match code.as_str() {
                    "bad-ciphertext" => (400, "bad-ciphertext"),
                    // a share of the CA's pending reshared set is named as such
                    "bad-share" => return Err(self.other_share_set(ca_id, why)),
                    "superseded-share-set" => (409, "superseded-share-set"),
                    "duplicate" => (409, "duplicate"),
                    _ => (409, "not-waiting"),
                };
                Err(ApiErr::new(status, code, why))
            }
            Ok(None) => Err(ApiErr::new(
                409,
                "not-waiting",
                "the session is being signed (contributions are closed)",
            )),
            Err(e) => Err(ApiErr::new(
                500,
                "worker",
                format!("the session's worker failed: {e}"),
            )),
        }
    }

    /// Why a contribution to a session that is not open is refused (not recorded: the
    /// session has no holder to mark, and a replay must cost nothing).
    fn closed_session(&self, ca_id: &str, session_id: &str) -> ApiErr {
        let row = lock(&self.store).session(session_id);
        match row {
            Ok(Some(r)) if r.ca_id == ca_id && r.state == "waiting" && now() >= r.expires_at => {
                ApiErr::new(409, "expired", "the session expired")
            }
            Ok(Some(r)) if r.ca_id == ca_id => ApiErr::new(
                409,
                "not-waiting",
                format!("the session is {} (contributions are closed)", r.state),
            ),
            Ok(_) => ApiErr::new(
                404,
                "not-found",
                format!("no session {session_id} for CA {ca_id}"),
            ),
            Err(e) => e.into(),
        }
    }

    /// Every check of a contribution's envelope, cheapest first, with no lock held; what
    /// is sealed inside is the worker's to check.
    fn check_envelope(
        &self,
        ca_id: &str,
        holder_id: &str,
        offer: &SessionOffer,
        c: &Contribution,
    ) -> ApiResult<()> {
        let refuse = |status, code, why: String| Err(ApiErr::new(status, code, why));
        if now() >= offer.expires_at {
            return refuse(409, "expired", "the session expired".into());
        }
        let e = &c.envelope;
        if e.session_id != offer.session_id
            || e.ca_id != ca_id
            || e.nonce != offer.nonce
            || e.expires_at != offer.expires_at
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
        if e.request_sha256 != offer.request_sha256 {
            return refuse(
                409,
                "wrong-request",
                "the envelope approves another request (CSR digest differs)".into(),
            );
        }
        if e.profile != offer.summary.profile || e.days != offer.summary.days {
            return refuse(
                409,
                "wrong-terms",
                format!(
                    "the envelope approves profile {} for {} days; the session is {} for {} days",
                    e.profile, e.days, offer.summary.profile, offer.summary.days
                ),
            );
        }
        let certificate_sha256 = match &offer.summary.batch {
            Some(batch) => Some(batch.certificates_sha256.clone()),
            None => offer
                .summary
                .certificate
                .as_ref()
                .map(pki::CertificateView::digest),
        };
        if e.certificate_sha256 != certificate_sha256 {
            return refuse(
                409,
                "wrong-certificate",
                "the envelope approves another certificate than the session issues".into(),
            );
        }
        if e.is_approval_only() {
            let tbs_ok = match offer.mode {
                SigningMode::Reconstruct => e.tbs_sha256.is_none(),
                SigningMode::Threshold => {
                    e.tbs_sha256.is_some() && e.tbs_sha256 == offered_tbs_sha256(offer)
                }
            };
            if !c.ciphertext.is_empty() || c.signature_share.is_some() {
                return refuse(
                    400,
                    "bad-envelope",
                    "an approval without a share carries a share".into(),
                );
            }
            if !tbs_ok {
                return refuse(
                    409,
                    "wrong-tbs",
                    "the approval names other to-be-signed bytes than the session signs".into(),
                );
            }
        } else {
            self.check_share_fields(offer, c)?;
        }
        let Some(key) = self.holder_key(ca_id, holder_id)? else {
            return refuse(
                403,
                "unknown-holder",
                format!("{holder_id} is not an enrolled holder of CA {ca_id}"),
            );
        };
        let sig = B64.decode(&c.signature).unwrap_or_default();
        if pki::verify_signature(&key, &e.signed_bytes(), &sig).is_err() {
            return refuse(
                400,
                "bad-signature",
                "the envelope's signature does not verify with the holder's token key".into(),
            );
        }
        Ok(())
    }

    /// The checks of a contribution that carries a share: a sealed share (reconstruct
    /// mode) or a signature share (threshold mode), each matching its envelope digest.
    fn check_share_fields(&self, offer: &SessionOffer, c: &Contribution) -> ApiResult<()> {
        let refuse = |status, code, why: String| Err(ApiErr::new(status, code, why));
        let e = &c.envelope;
        match offer.mode {
            SigningMode::Reconstruct => {
                if c.signature_share.is_some()
                    || e.tbs_sha256.is_some()
                    || e.signature_share_sha256.is_some()
                {
                    return refuse(
                        400,
                        "bad-envelope",
                        "a signature share was sent to a session that takes sealed shares".into(),
                    );
                }
                if let Err(why) = guard::check_ciphertext(&c.ciphertext) {
                    return refuse(400, "bad-ciphertext", why);
                }
                if pki::sha256_hex(c.ciphertext.as_bytes()) != e.ciphertext_sha256 {
                    return refuse(
                        400,
                        "bad-envelope",
                        "the ciphertext does not match the envelope's digest".into(),
                    );
                }
            }
            SigningMode::Threshold => {
                if !c.ciphertext.is_empty() || !e.ciphertext_sha256.is_empty() {
                    return refuse(
                        400,
                        "bad-envelope",
                        "a sealed share was sent to a threshold session, which takes signature \
                         shares only"
                            .into(),
                    );
                }
                let tbs_sha256 = offer
                    .tbs
                    .as_deref()
                    .and_then(|t| B64.decode(t).ok())
                    .map(|t| pki::sha256_hex(&t));
                if e.tbs_sha256.is_none() || e.tbs_sha256 != tbs_sha256 {
                    return refuse(
                        409,
                        "wrong-tbs",
                        "the envelope approves other to-be-signed bytes than the session signs"
                            .into(),
                    );
                }
                let Some(share) = &c.signature_share else {
                    return refuse(400, "bad-envelope", "no signature share was sent".into());
                };
                if e.signature_share_sha256.as_deref()
                    != Some(proto::signature_share_sha256(share).as_str())
                {
                    return refuse(
                        400,
                        "bad-envelope",
                        "the signature share does not match the envelope's digest".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Has the session's worker rebuild the key, sign exactly what the holders approved
    /// and exit; records what it signed.
    fn finalize(&self, row: &SessionRow, manifest: &VerifiedManifest, l: Live) {
        if l.policy_revision != manifest.body.policy_revision {
            // opened under a policy replaced since: the switch's sweep may have missed it
            // (created or finalizing meanwhile); it must not sign by the old rules
            drop(l);
            return self.end_session(
                &row.session_id,
                "cancelled",
                &policy_session::policy_changed_while_open(manifest.body.policy_revision),
            );
        }
        if row.request != l.offer.request
            || row.request_sha256 != l.offer.request_sha256
            || !stored_terms_are_offered(row, &l.offer)
        {
            // what is signed is built from the stored row: it must be what was offered
            drop(l);
            return self.end_session(
                &row.session_id,
                "failed",
                "the stored request or certificate is not the one the holders approved (the \
                 database was changed during the session); nothing signed; secrets wiped",
            );
        }
        if l.offer.kind == SessionKind::Policy {
            return self.finalize_policy(row, manifest, l);
        }
        if l.signing.is_some() {
            return self.finalize_threshold(row, manifest, l);
        }
        let holders = l.approved.join(", ");
        let worker = l.worker.clone();
        drop(l);
        let outcome = (|| -> Result<String, String> {
            let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
            let handle = runtime
                .block_on(async { worker.lock().await.take() })
                .ok_or("the session's worker is gone")?;
            if row.kind == "issue-batch" {
                return self.sign_batch(row, manifest, handle, &runtime);
            }
            let (job, record) = match self.job_for(row) {
                Ok(job) => job,
                Err(why) => {
                    runtime.block_on(handle.abort());
                    return Err(why);
                }
            };
            let der = runtime
                .block_on(handle.sign(job))
                .map_err(|e| format!("the session's worker did not sign: {e}"))?;
            self.record_signed(row, manifest, record, &der)
        })();
        match outcome {
            // the certificate or CRL and its own audit entry are already recorded
            Ok(what) => {
                self.count_session(&row.session_id, "signed");
                tracing::info!("session signed: {what} with shares of {holders}");
                drop(self.audit(
                "session-signed",
                Some(&row.ca_id),
                Some(&row.session_id),
                None,
                &format!(
                    "{what} with shares of {holders}; the worker that held the CA key and the shares has exited"
                ),
            ));
            }
            Err(why) => {
                self.end_session(&row.session_id, "failed", &format!("{why}; secrets wiped"));
            }
        }
    }

    /// Has the session's worker issue the whole batch with the key rebuilt once, checks
    /// every certificate, and records them all together.
    fn sign_batch(
        &self,
        row: &SessionRow,
        manifest: &VerifiedManifest,
        handle: WorkerHandle,
        runtime: &tokio::runtime::Handle,
    ) -> Result<String, String> {
        let (job, views) = match super::batch::job(row) {
            Ok(job) => job,
            Err(why) => {
                runtime.block_on(handle.abort());
                return Err(why);
            }
        };
        let timeout = super::batch::sign_timeout(views.len());
        let ders = runtime
            .block_on(handle.sign_batch(job, timeout))
            .map_err(|e| format!("the session's worker did not sign: {e}"))?;
        let records = super::batch::records(manifest, &views, &ders)?;
        lock(&self.store)
            .record_certificates(&row.session_id, &row.ca_id, &records)
            .map_err(|e| e.to_string())?;
        let serials = |r: Option<&NewCertificate>| r.map(|c| c.serial.clone()).unwrap_or_default();
        Ok(format!(
            "{} certificates (serials {} … {})",
            records.len(),
            serials(records.first()),
            serials(records.last())
        ))
    }

    /// Combines a threshold session's M signature shares into the CA's signature over the
    /// TBS the holders approved, checks it against the CA certificate, and records the
    /// certificate or CRL. Nothing secret is involved: no worker, no key.
    fn finalize_threshold(&self, row: &SessionRow, manifest: &VerifiedManifest, l: Live) {
        let holders = l.approved.join(", ");
        let Some(session) = l.signing else {
            return self.end_session(&row.session_id, "failed", "not a threshold session");
        };
        let outcome = threshold::combine(manifest, &session)
            .and_then(|der| self.record_signed(row, manifest, session.pending, &der));
        match outcome {
            Ok(what) => drop(self.audit(
                "session-signed",
                Some(&row.ca_id),
                Some(&row.session_id),
                None,
                &format!(
                    "{what} from the signature shares of {holders}; the CA key was not rebuilt"
                ),
            )),
            Err(why) => self.end_session(&row.session_id, "failed", &why),
        }
    }

    /// What the worker is to sign for `row`, re-derived from the stored session and
    /// checked against what the holders approved.
    fn job_for(&self, row: &SessionRow) -> Result<(SignJob, Pending), String> {
        match row.kind.as_str() {
            "policy" => Err("a policy session signs its manifest on its own path".into()),
            "reshare" => self.reshare_job(row),
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
                let job = SignJob::Issue {
                    csr_der: B64.encode(&csr.der),
                    view: Box::new(approved.clone()),
                };
                Ok((job, Pending::Certificate(Box::new(approved))))
            }
            kind => {
                let store = lock(&self.store);
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
                let job = SignJob::Crl {
                    revoked: revoked
                        .iter()
                        .map(|r| (r.serial_hex.clone(), r.reason.clone(), r.revoked_at))
                        .collect(),
                    number: u64::try_from(number).map_err(|e| e.to_string())?,
                    now: now(),
                };
                Ok((job, Pending::Crl { number, new }))
            }
        }
    }

    /// Records what the worker signed, after checking it is signed by this CA.
    fn record_signed(
        &self,
        row: &SessionRow,
        manifest: &VerifiedManifest,
        pending: Pending,
        der: &[u8],
    ) -> Result<String, String> {
        match pending {
            Pending::Certificate(view) => {
                pki::check_signed_by(&manifest.ca, der).map_err(|e| e.to_string())?;
                let pem = pki::pem_encode("CERTIFICATE", der);
                lock(&self.store)
                    .record_certificate(
                        &row.session_id,
                        &row.ca_id,
                        &NewCertificate {
                            serial: view.serial.clone(),
                            subject: view.subject_string(),
                            sans: view.sans.clone(),
                            not_after: view.not_after,
                            pem,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                if view.profile == Profile::Ocsp.to_string() {
                    return Ok(match self.install_responder(row, der, view.not_after) {
                        Ok(()) => format!(
                            "certificate {} (the CA's OCSP responder, installed)",
                            view.serial
                        ),
                        Err(why) => {
                            tracing::warn!(
                                "OCSP responder of CA {} not installed: {why}",
                                row.ca_id
                            );
                            format!(
                                "certificate {} (an OCSP responder certificate, NOT installed: {why})",
                                view.serial
                            )
                        }
                    });
                }
                Ok(format!("certificate {}", view.serial))
            }
            Pending::Reshare => self.record_reshare(row, manifest, der),
            Pending::Crl { number, new } => {
                let pem = pki::pem_encode("X509 CRL", der);
                lock(&self.store)
                    .record_crl(
                        &row.session_id,
                        &row.ca_id,
                        number,
                        der,
                        &pem,
                        new.as_ref()
                            .map(|n| (n.serial_hex.as_str(), n.reason.as_str(), n.revoked_at)),
                    )
                    .map_err(|e| e.to_string())?;
                Ok(format!("CRL number {number}"))
            }
            Pending::Manifest => Err("a new manifest is recorded by its policy session".into()),
        }
    }

    /// Installs a signed OCSP responder certificate, if it certifies the key this server
    /// made for the session.
    fn install_responder(
        &self,
        row: &SessionRow,
        der: &[u8],
        not_after: i64,
    ) -> Result<(), String> {
        let mut store = lock(&self.store);
        let (_, _, spki_sha256) = store
            .ocsp_responder_for_session(&row.session_id)
            .map_err(|e| e.to_string())?
            .ok_or("no responder key was made for this session")?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        if pki::sha256_hex(cert.tbs_certificate.subject_pki.raw) != spki_sha256 {
            return Err("the certificate is not for the responder key this server made".into());
        }
        store
            .install_ocsp_responder(&row.session_id, der, not_after)
            .map_err(|e| e.to_string())
    }

    /// Deletes responder keys that will never sign: their session ended unsigned, or
    /// their certificate expired.
    pub fn remove_useless_responder_keys(&self) {
        let mut store = lock(&self.store);
        let useless = match store.useless_ocsp_keys(now()) {
            Ok(list) => list,
            Err(e) => return tracing::warn!("cannot list OCSP responder keys: {e}"),
        };
        for (session_id, file) in useless {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("cannot delete the unused OCSP responder key {file}: {e}");
                    continue;
                }
            }
            if let Err(e) = store.forget_ocsp_responder(&session_id) {
                tracing::warn!("cannot forget OCSP responder of session {session_id}: {e}");
            } else {
                tracing::info!("deleted the OCSP responder key of session {session_id}: unused");
            }
        }
    }

    /// Logs a warning for each CA whose latest CRL runs out soon.
    pub fn check_crls(&self) {
        let now = time::OffsetDateTime::now_utc();
        match self.read_store(|s| super::publish::crl_warnings(s, now)) {
            Ok(warnings) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
            }
            Err(e) => tracing::warn!("cannot check the CRLs' nextUpdate: {e}"),
        }
    }

    /// Sets where relying parties find a CA's CRL, certificate and OCSP responder, for an
    /// operator whose token has role `ca-admin`.
    pub fn set_ca_urls(
        &self,
        operator: &str,
        ca_id: &str,
        req: crate::proto::CaUrls,
    ) -> ApiResult<serde_json::Value> {
        let role = lock(&self.store).api_role(operator)?;
        if role != Some(crate::store::ApiRole::CaAdmin) {
            return Err(self.audited_refusal(
                "ca-refused",
                Some(ca_id),
                &format!("{operator}: setting the CA's URLs needs role ca-admin"),
                ApiErr::new(
                    403,
                    "forbidden",
                    "setting a CA's URLs needs an API token with role ca-admin, or `nkpki serve \
                     ca set-urls` on the server host",
                ),
            ));
        }
        self.manifest(ca_id)?;
        super::publish::check_public_url(&req.public_url, ca_id)
            .map_err(|e| ApiErr::new(422, "bad-url", e.to_string()))?;
        lock(&self.store).set_ca_urls(
            ca_id,
            &req.public_url,
            req.ocsp,
            req.ocsp_require_signed,
            &format!("operator {operator}"),
        )?;
        let urls = self.read_store(|s| super::publish::ca_urls(s, ca_id))?;
        Ok(serde_json::json!({
            "ca_id": ca_id,
            "crl": urls.crl,
            "ca_issuers": urls.ca_issuers,
            "ocsp": urls.ocsp,
        }))
    }

    // ---- public documents -----------------------------------------------------------

    pub fn ca_certificate_der(&self, ca_id: &str) -> ApiResult<Vec<u8>> {
        Ok(self.manifest(ca_id)?.ca.der.clone())
    }

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

    /// Whether `operator`'s API token has role `ca-admin` (may register CAs): the web
    /// generator asks before it runs a ceremony it could not register.
    pub fn may_register_cas(&self, operator: &str) -> ApiResult<bool> {
        Ok(lock(&self.store).api_role(operator)? == Some(crate::store::ApiRole::CaAdmin))
    }

    /// Registers a CA from its manifest (and enrollment hashes), as `serve ca add` does, for
    /// an operator whose token has role `ca-admin`. Refusals are audited; nothing is stored.
    pub fn register_ca(
        &self,
        operator: &str,
        req: crate::proto::RegisterCa,
    ) -> ApiResult<serde_json::Value> {
        let refuse = |status: u16, code: &'static str, message: String| {
            self.audited_refusal(
                "ca-refused",
                None,
                &format!("{operator}: {message}"),
                ApiErr::new(status, code, message.clone()),
            )
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
            Ok(r) => Ok({
                // a reshared manifest replaces the cached one
                lock(&self.manifests).remove(&r.ca_id);
                serde_json::json!({
                "ca_id": r.ca_id,
                "set_version": r.set_version,
                "certificate_sha256": r.fingerprint,
                "registered_by": operator,
                })
            }),
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

    /// The metrics in the Prometheus text format, with the gauges read now: holders
    /// online and seconds to the latest CRL's nextUpdate, per CA.
    pub fn metrics_text(&self) -> ApiResult<String> {
        let seen: HashMap<(String, String), i64> = lock(&self.last_seen)
            .iter()
            .map(|(k, (t, _))| (k.clone(), *t))
            .collect();
        let t = now();
        self.metrics.set_event_streams(self.push.open_streams());
        {
            let store = lock(&self.store);
            for (ca_id, _) in store.ca_manifests()? {
                let online = store
                    .holders(&ca_id)?
                    .into_iter()
                    .filter(|h| {
                        let polled = seen.get(&(h.ca_id.clone(), h.holder_id.clone())).copied();
                        h.last_seen.max(polled).is_some_and(|s| t - s < 90)
                    })
                    .count();
                self.metrics
                    .set_holders_online(&ca_id, i64::try_from(online).unwrap_or(i64::MAX));
                if let Some(left) = store
                    .latest_crl(&ca_id)?
                    .and_then(|(der, _)| super::metrics::crl_seconds_left(&der, t))
                {
                    self.metrics.set_crl_next_update(&ca_id, left);
                }
            }
        }
        Ok(self.metrics.encode())
    }

    /// CAs and their holders' enrollment and liveness, for operators.
    pub fn cas(&self) -> ApiResult<serde_json::Value> {
        // the freshest last-seen times are in memory; the store has them up to the last flush
        let seen: HashMap<(String, String), i64> = lock(&self.last_seen)
            .iter()
            .map(|(k, (t, _))| (k.clone(), *t))
            .collect();
        let store = lock(&self.store);
        let mut out = Vec::new();
        for (ca_id, _) in store.ca_manifests()? {
            let holders: Vec<serde_json::Value> = store
                .holders(&ca_id)?
                .into_iter()
                .map(|mut h| {
                    let polled = seen.get(&(h.ca_id.clone(), h.holder_id.clone())).copied();
                    h.last_seen = h.last_seen.max(polled);
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
