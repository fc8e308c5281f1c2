//! The wire: every JSON body the server, the agents and the operator client exchange, and
//! exactly what each signature covers. `docs/protocol.md` explains the why.

use serde::{Deserialize, Serialize};

/// Path prefix of every API endpoint.
pub const API: &str = "/api/v1";

/// What a signing session does once M shares are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionKind {
    /// Issue a certificate for a CSR.
    Issue,
    /// Revoke a serial and sign a fresh CRL.
    Revoke,
    /// Sign a fresh CRL.
    Crl,
    /// Change the CA policy: sign the CA's manifest again with a new policy and the next
    /// policy revision (docs/policy.md, "Changing the policy online").
    Policy,
    /// Reshare the CA to a new holder set and threshold (`POST /api/v1/reshare`): the
    /// worker makes the new manifest and packages; the server switches to the new set
    /// once M′ of its holders have enrolled.
    Reshare,
    /// Issue one certificate for each CSR of a batch (`csr_pems`), approved once.
    IssueBatch,
}

/// Where a session is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    Waiting,
    Signed,
    Expired,
    Failed,
    Cancelled,
    /// The server restarted while the session was open; its secrets were in memory only.
    Aborted,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Waiting => "waiting",
            SessionState::Signed => "signed",
            SessionState::Expired => "expired",
            SessionState::Failed => "failed",
            SessionState::Cancelled => "cancelled",
            SessionState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "waiting" => SessionState::Waiting,
            "signed" => SessionState::Signed,
            "expired" => SessionState::Expired,
            "failed" => SessionState::Failed,
            "cancelled" => SessionState::Cancelled,
            "aborted" => SessionState::Aborted,
            _ => return None,
        })
    }
}

/// POST /api/v1/sessions (operator).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub ca_id: String,
    pub kind: SessionKind,
    /// For `issue`: the CSR, PEM.
    #[serde(default)]
    pub csr_pem: Option<String>,
    /// For `issue-batch`: the CSRs, PEM, in order (at most [`crate::pki::batch::MAX_BATCH`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub csr_pems: Vec<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub days: Option<u32>,
    /// For `revoke`: the serial (hex) and RFC 5280 reason name.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// For `policy`: the policy the new manifest carries (role ca-admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_policy: Option<NewPolicy>,
}

/// The policy a `policy` session proposes: a policy file's text (TOML, docs/policy.md), or
/// none at all (back to M approvals and no rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum NewPolicy {
    Toml(String),
    Clear,
}

/// `POST /api/v1/sessions/preview` (operator): what `POST /api/v1/sessions` with the same
/// body would open, built by the same code, with nothing stored, offered or audited.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionPreview {
    pub ca_id: String,
    pub ca_name: String,
    pub kind: SessionKind,
    /// Approvals needed (M) of how many holders (N).
    pub threshold: u8,
    pub total: u8,
    pub mode: SigningMode,
    /// True when the session would open; else `refusal` says why not.
    pub accepted: bool,
    #[serde(default)]
    pub refusal: Option<PreviewRefusal>,
    /// What the holders would approve: the CSR (PEM) or the revocation/CRL statement.
    #[serde(default)]
    pub request: Option<String>,
    #[serde(default)]
    pub request_sha256: Option<String>,
    /// Profile, days, serial, reason and (`issue`) the certificate as it would be
    /// issued. A preview's serial and start of validity are its own: the session draws
    /// a fresh serial and starts the validity when it opens.
    #[serde(default)]
    pub summary: Option<OfferSummary>,
    /// Seconds the holders would have to answer.
    pub session_ttl: i64,
}

/// Why a previewed session would be refused: the status, code and message the session
/// request would be answered with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRefusal {
    pub status: u16,
    pub code: String,
    pub error: String,
}

/// A session as operators see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionStatus {
    pub session_id: String,
    pub ca_id: String,
    pub kind: SessionKind,
    pub state: SessionState,
    pub requester: String,
    pub threshold: u8,
    pub approved: Vec<String>,
    pub declined: Vec<String>,
    /// Holders whose contribution was refused, with why.
    pub refused: Vec<String>,
    /// Every answer in the order it came, with its time.
    #[serde(default)]
    pub answers: Vec<Answer>,
    pub expires_at: i64,
    pub seconds_left: i64,
    #[serde(default)]
    pub detail: Option<String>,
    /// `issue`: the certificate as it will be (or was) issued.
    #[serde(default)]
    pub certificate: Option<crate::pki::CertificateView>,
    /// PEM, once signed (`issue`).
    #[serde(default)]
    pub certificate_pem: Option<String>,
    #[serde(default)]
    pub serial: Option<String>,
    /// PEM, once signed (`revoke`, `crl`).
    #[serde(default)]
    pub crl_pem: Option<String>,
    /// Approvals the session needs: the CA policy's for its profile (at least `threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals_required: Option<u8>,
    /// Holders the CA policy requires among the approvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_holders: Vec<String>,
    /// The CA policy's rule for this session, in a few lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    /// `issue-batch`: every certificate, in the order of the CSRs (PEM once signed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<BatchCertificate>,
}

/// One certificate of a batch, as operators see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCertificate {
    pub serial: String,
    pub subject: String,
    /// PEM, once signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
}

/// `GET /api/v1/sessions/{id}/certificates`: a session's certificates, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionCertificates {
    pub session_id: String,
    pub state: SessionState,
    pub certificates: Vec<BatchCertificate>,
}

/// What an `issue-batch` session issues: the summary a holder is shown first, and every
/// certificate, which the agent recomputes one by one from the CSRs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSummary {
    pub count: u32,
    /// Every profile in the batch (one: a batch has one profile).
    pub profiles: Vec<String>,
    /// Every distinct name (CN and SAN) of the batch, sorted.
    pub names: Vec<String>,
    /// SHA-256 over the certificates' digests in order
    /// ([`crate::pki::batch::certificates_digest`]): what the envelope's
    /// `certificate_sha256` binds.
    pub certificates_sha256: String,
    /// Every certificate as it will be issued, in the order of the CSRs.
    pub certificates: Vec<crate::pki::CertificateView>,
}

impl BatchSummary {
    /// The summary of `certificates`: what the server offers, and what an agent rebuilds
    /// from its own recomputation to compare.
    pub fn of(certificates: Vec<crate::pki::CertificateView>) -> Self {
        let mut profiles: Vec<String> = certificates.iter().map(|v| v.profile.clone()).collect();
        profiles.sort();
        profiles.dedup();
        BatchSummary {
            count: u32::try_from(certificates.len()).unwrap_or(u32::MAX),
            profiles,
            names: crate::pki::batch::distinct_names(&certificates),
            certificates_sha256: crate::pki::batch::certificates_digest(&certificates),
            certificates,
        }
    }
}

impl SessionStatus {
    /// Approvals the session needs before it signs.
    pub fn needed(&self) -> u8 {
        self.approvals_required.unwrap_or(self.threshold)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The CA policy's rule for a session, as the server read it from the manifest (agents
/// judge the request against their own copy of the manifest's policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferPolicy {
    /// Approvals needed, at least M.
    pub approvals: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_holders: Vec<String>,
    /// The rule in a few lines.
    pub summary: Vec<String>,
}

/// One holder's answer to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub holder: String,
    /// `approved`, `declined` or `refused` (a contribution the server refused).
    pub outcome: String,
    /// The holder's reason (a decline) or the server's (a refusal); may be empty.
    #[serde(default)]
    pub detail: String,
    /// Unix seconds.
    pub at: i64,
}

/// How a CA signs online, chosen at its ceremony.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SigningMode {
    /// M shares of the KEK rebuild the key in a one-shot session worker.
    #[default]
    Reconstruct,
    /// Shoup threshold RSA: each holder sends a signature share on the offered
    /// to-be-signed bytes; the key is never whole.
    Threshold,
}

/// A session as agents see it: everything the holder must be shown to decide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOffer {
    pub session_id: String,
    pub ca_id: String,
    pub ca_name: String,
    pub kind: SessionKind,
    pub requester: String,
    /// The request itself (PEM CSR for `issue`; the statement approved otherwise).
    pub request: String,
    /// SHA-256 (hex) of `request`'s DER (CSR) or UTF-8 (otherwise), or for `issue-batch`
    /// the batch digest over its CSRs ([`crate::pki::batch::batch_digest`]): what the
    /// envelope binds.
    pub request_sha256: String,
    pub summary: OfferSummary,
    /// Server nonce, hex.
    pub nonce: String,
    pub expires_at: i64,
    /// The session's age X25519 recipient: shares are encrypted to it alone. Empty in
    /// threshold mode (nothing secret is sent).
    pub recipient: String,
    #[serde(default)]
    pub mode: SigningMode,
    /// Threshold mode: the exact DER TBSCertificate (`issue`) or TBSCertList (`revoke`,
    /// `crl`), base64, that the signature shares sign. The agent parses it, recomputes it
    /// and shows what it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tbs: Option<String>,
    /// The CA policy's rule for the session; absent without a policy (M approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<OfferPolicy>,
    /// The session already holds M shares and waits for the policy's further approvals:
    /// answer with an approval envelope, without a share ([`Envelope::is_approval_only`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub approval_only: bool,
}

/// The terms of a session. For `issue`, the agent recomputes the certificate from the CSR
/// and these terms with the code that issues, and refuses an offer whose `certificate`
/// differs from its own result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferSummary {
    pub profile: String,
    pub days: u32,
    /// Start of validity, Unix seconds (`issue`).
    #[serde(default)]
    pub not_before: i64,
    /// The serial to be issued (`issue`) or revoked (`revoke`), hex.
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The certificate as it will be issued (`issue`).
    #[serde(default)]
    pub certificate: Option<crate::pki::CertificateView>,
    /// `issue-batch`: the batch (`certificate` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSummary>,
}

/// `PUT /api/v1/cas/<ca-id>/urls` (role ca-admin): where relying parties find the CA's
/// CRL (`<public_url>/crl/<ca-id>.crl`), certificate (`/ca/<ca-id>.der`) and, with `ocsp`,
/// OCSP responder (`/ocsp/<ca-id>`); certificates issued from then on carry them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaUrls {
    pub public_url: String,
    #[serde(default)]
    pub ocsp: bool,
    /// The OCSP responder answers signed requests only (others get sigRequired).
    #[serde(default)]
    pub ocsp_require_signed: bool,
}

/// What holders approve in a `revoke` session: re-derived from the stored serial and
/// reason before anything is signed.
pub fn revoke_statement(ca_id: &str, serial_hex: &str, reason: &str) -> String {
    format!("revoke serial {serial_hex} of CA {ca_id} ({reason})")
}

/// What holders approve in a `crl` session.
pub fn crl_statement(ca_id: &str) -> String {
    format!("sign a new CRL for CA {ca_id}")
}

/// The signed statement of a contribution. The holder's token signs the compact JSON of
/// this struct (field order as declared).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub ca_id: String,
    pub session_id: String,
    pub nonce: String,
    pub expires_at: i64,
    pub holder_id: String,
    pub request_sha256: String,
    /// The terms the holder was shown and approves: profile and validity in days.
    pub profile: String,
    pub days: u32,
    /// SHA-256 of the certificate as it will be issued ([`crate::pki::CertificateView::digest`]),
    /// for `issue` sessions.
    pub certificate_sha256: Option<String>,
    /// SHA-256 of the sealed share's armoured text; empty in threshold mode.
    pub ciphertext_sha256: String,
    /// Threshold mode: SHA-256 (hex) of the to-be-signed DER the holder approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tbs_sha256: Option<String>,
    /// Threshold mode: SHA-256 (hex) of the signature share's compact JSON
    /// ([`signature_share_sha256`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_share_sha256: Option<String>,
}

impl Envelope {
    /// An approval without a share (version 1 of approvals): neither a sealed share's
    /// digest nor a signature share's. It counts toward a CA policy's approvals beyond M,
    /// never toward the M shares that sign.
    pub fn is_approval_only(&self) -> bool {
        self.ciphertext_sha256.is_empty() && self.signature_share_sha256.is_none()
    }

    /// The bytes the signature covers. A threshold envelope (one naming a TBS) and an
    /// approval without a share each have their own first line, so that no kind of
    /// statement can pass for another.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut bytes = if self.is_approval_only() {
            b"nkpki approval v1\n".to_vec()
        } else if self.tbs_sha256.is_some() {
            b"nkpki threshold contribution v1\n".to_vec()
        } else {
            b"nkpki contribution v2\n".to_vec()
        };
        bytes.extend_from_slice(&serde_json::to_vec(self).unwrap_or_default());
        bytes
    }
}

/// What a threshold signature share's proof is bound to besides the message: this CA and
/// this session, so that a share made for one session proves nothing in another.
pub fn threshold_context(ca_id: &str, session_id: &str) -> Vec<u8> {
    format!("nkpki threshold v1\n{ca_id}\n{session_id}\n").into_bytes()
}

/// SHA-256 (hex) of a signature share's compact JSON: what the envelope binds.
pub fn signature_share_sha256(share: &crate::sss::shoup::SignatureShare) -> String {
    crate::pki::sha256_hex(&serde_json::to_vec(share).unwrap_or_default())
}

/// POST /api/v1/sessions/{id}/contribute (agent).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contribution {
    pub envelope: Envelope,
    /// The share, age-encrypted (armoured) to the session's recipient; empty in threshold
    /// mode.
    pub ciphertext: String,
    /// Threshold mode: the holder's signature share on the offered TBS, with its proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_share: Option<crate::sss::shoup::SignatureShare>,
    /// ECDSA P-256 / SHA-256 DER signature by the holder's token key, base64.
    pub signature: String,
    /// Threshold mode: the share set the agent's share belongs to, so that a share of a
    /// superseded set (after a reshare) is named as such rather than as a bad proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_set_id: Option<crate::sss::SetId>,
}

/// POST /api/v1/sessions/{id}/decline (agent).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decline {
    pub holder_id: String,
    pub reason: String,
}

/// POST /api/v1/agent/challenge → a nonce; POST /api/v1/agent/login with the token's
/// signature over it → a bearer token for polling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub ca_id: String,
    pub holder_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Challenge {
    pub challenge: String,
    pub expires_at: i64,
}

/// What the holder's token signs to log in: domain-separated so it can never be mistaken
/// for a contribution.
pub fn login_signed_bytes(ca_id: &str, holder_id: &str, challenge: &str) -> Vec<u8> {
    format!("nkpki agent login v1\n{ca_id}\n{holder_id}\n{challenge}\n").into_bytes()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub ca_id: String,
    pub holder_id: String,
    pub challenge: String,
    pub signature: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct LoginOk {
    pub bearer: String,
    pub expires_at: i64,
}

/// POST /api/v1/enroll (agent, once): the one-time code proves the package; the signature
/// proves possession of the token key being registered.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enroll {
    pub ca_id: String,
    pub holder_id: String,
    pub enrollment_code: String,
    pub public_key_pem: String,
    pub signature: String,
}

pub fn enroll_signed_bytes(ca_id: &str, holder_id: &str, public_key_pem: &str) -> Vec<u8> {
    format!("nkpki agent enroll v1\n{ca_id}\n{holder_id}\n{public_key_pem}").into_bytes()
}

/// GET /api/v1/agent/poll answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Poll {
    pub sessions: Vec<SessionOffer>,
    /// The registered manifest has a newer policy revision than the agent said it holds
    /// (`policy_revision=N` in the poll's query): fetch it from
    /// `GET /api/v1/cas/{id}/manifest`, check it, adopt it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestNews>,
}

/// What a poll says of a newer registered manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestNews {
    pub policy_revision: u32,
}

/// Every error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    /// A stable, machine-readable code (`policy`, `unauthorized`, `not-found`, …).
    pub code: String,
}

/// POST /api/v1/cas (operator whose token has role `ca-admin`): register a CA from its
/// ceremony manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCa {
    /// manifest.json, as text.
    pub manifest: String,
    /// The CA certificate's SHA-256 fingerprint as `ca-init` printed it (`AA:BB:…`, or 64
    /// hex digits); a manifest whose certificate has another is refused.
    pub expected_fingerprint: String,
    /// enrollment.json, as text, when the ceremony made packages.
    #[serde(default)]
    pub enrollment: Option<String>,
}

// Bearers and enrollment codes are credentials: never in `Debug` output.
impl std::fmt::Debug for LoginOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginOk")
            .field("bearer", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl std::fmt::Debug for Enroll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroll")
            .field("ca_id", &self.ca_id)
            .field("holder_id", &self.holder_id)
            .field("enrollment_code", &"<redacted>")
            .field("public_key_pem", &self.public_key_pem)
            .finish_non_exhaustive()
    }
}

// ---- online reshare (docs/ceremony.md, "Online reshare") ----------------------------

/// One holder of the new set, as in the offline holders file; online, `age_recipient` is
/// required (the new packages are sealed to it, never to a passphrase).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareHolder {
    pub nitrokey_id: String,
    pub holder_name: String,
    pub holder_email: String,
    pub location: String,
    #[serde(default)]
    pub age_recipient: Option<String>,
}

/// `POST /api/v1/reshare` (role ca-admin): open a `reshare` session.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenReshare {
    pub ca_id: String,
    /// M′, 2–15 and at most the new holders.
    pub threshold: u32,
    /// The new holders in share order (3–20).
    pub holders: Vec<ReshareHolder>,
    /// The server URL the new agents connect to (written into each package's agent.json).
    #[serde(default)]
    pub server_url: Option<String>,
    #[serde(default)]
    pub server_cert_sha256: Option<String>,
    /// Allow a plain http:// `server_url` (loopback, a test bench).
    #[serde(default)]
    pub insecure_http: bool,
}

/// What the holders approve in a `reshare` session: the request as text is the compact
/// JSON of this struct (field order as declared), and its SHA-256 is what envelopes bind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareStatement {
    /// `nkpki-reshare-request/1`.
    pub format: String,
    pub ca_id: String,
    /// The current set: its version, id, threshold and holders (share order).
    pub current_set_version: u32,
    pub current_set_id: String,
    pub current_threshold: u8,
    pub current_holders: Vec<String>,
    /// SHA-256 of the registered manifest the new one will supersede.
    pub supersedes: String,
    /// The new set.
    pub new_set_version: u32,
    pub threshold: u32,
    pub holders: Vec<ReshareHolder>,
    pub server_url: Option<String>,
    pub server_cert_sha256: Option<String>,
}

pub const RESHARE_FORMAT: &str = "nkpki-reshare-request/1";

impl ReshareStatement {
    /// The exact text the holders are offered.
    pub fn to_request(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One new holder's package, age-encrypted to its recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResharePackage {
    pub holder_id: String,
    /// `NK004.nkpkg`.
    pub file_name: String,
    /// Armoured age file.
    pub armored: String,
    /// What the holder compares after deploying.
    pub fingerprint: String,
}

/// What a `reshare` job makes (nothing in it is secret in clear).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareResult {
    pub manifest_json: String,
    pub enrollment_json: String,
    /// The reshare log (`reshare.json`) and its text log (`reshare.log`).
    pub record_json: String,
    pub log: String,
    pub packages: Vec<ResharePackage>,
}

/// `GET /api/v1/sessions/{id}/packages` (role ca-admin): a signed `reshare` session's new
/// share set and where the switch stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReshareDownload {
    pub session_id: String,
    pub ca_id: String,
    pub set_version: u32,
    /// `pending` (the old set still signs), `switched`, or `replaced` (a later reshare
    /// took its place before the switch).
    pub state: String,
    /// New-set holders enrolled so far, and how many the switch needs (M′).
    pub enrolled: Vec<String>,
    pub needed: u8,
    pub result: ReshareResult,
}

// ---- the session worker's pipe (docs/protocol.md, "The session worker") -------------

/// Server → session worker, one frame each: `Open` first, then contributions, then one
/// `Sign` (or `Abort`). Nothing here is secret: shares arrive sealed to the worker's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WorkerRequest {
    /// The CA's registered manifest.json; the worker verifies it and makes the session key.
    Open { manifest_json: String },
    /// A holder's share, age-armoured to the session's recipient, as the agent sent it.
    Contribution {
        holder_id: String,
        ciphertext: String,
    },
    /// Rebuild the key from the shares held, do this job, reply, exit.
    Sign { job: SignJob },
    /// Wipe and exit.
    Abort {},
}

/// What the worker signs once it holds M shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SignJob {
    /// Reshare the CA as `request` says (the canonical [`ReshareStatement`] JSON the
    /// holders approved); the reply's bytes are the JSON of a [`ReshareResult`].
    Reshare { request: String },
    /// Issue the certificate `view` describes for the CSR (DER, base64); the worker
    /// refuses if issuance would make anything else.
    Issue {
        csr_der: String,
        view: Box<crate::pki::CertificateView>,
    },
    /// Sign CRL number `number` at `now` (Unix seconds) listing `revoked` as
    /// (serial hex, RFC 5280 reason name, revocation time in Unix seconds).
    Crl {
        revoked: Vec<(String, String, i64)>,
        number: u64,
        now: i64,
    },
    /// Sign this manifest body (compact JSON, exactly the bytes the holders approved):
    /// the worker's manifest with only its policy changed and the next policy revision.
    /// The reply's `der` is the raw signature.
    Manifest { body_json: String },
    /// Issue one certificate per CSR (DER, base64), each exactly as its view says, with the
    /// key rebuilt once; the worker refuses the whole batch if any would differ.
    IssueBatch {
        csr_ders: Vec<String>,
        views: Vec<crate::pki::CertificateView>,
    },
}

/// Session worker → server, one frame per request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WorkerReply {
    /// The session's age X25519 recipient (the identity never leaves the worker).
    Opened { recipient: String },
    /// The share checked out; the worker now holds `count` shares.
    Accepted {
        holder_id: String,
        index: u8,
        count: u8,
    },
    /// The contribution was refused and not kept; `code` as the API's (`bad-ciphertext`,
    /// `bad-share`, `duplicate`, `not-waiting`).
    Refused {
        holder_id: String,
        code: String,
        why: String,
    },
    /// The certificate or CRL, DER, base64 (for a `reshare` job: the JSON of a
    /// [`ReshareResult`], base64). The worker exits after this reply.
    Signed { der: String },
    /// A batch's certificates, DER, base64, in the order of the job. The worker exits after
    /// this reply.
    SignedBatch { ders: Vec<String> },
    /// The request could not be done; the worker exits after this reply.
    Failed { why: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug() {
        let login = LoginOk {
            bearer: "bearer-secret-1234".into(),
            expires_at: 1,
        };
        let enroll = Enroll {
            ca_id: "c".into(),
            holder_id: "NK001".into(),
            enrollment_code: "CODE-SECRET-5678".into(),
            public_key_pem: String::new(),
            signature: String::new(),
        };
        let shown = format!("{login:?} {enroll:?}");
        assert!(!shown.contains("bearer-secret-1234"), "{shown}");
        assert!(!shown.contains("CODE-SECRET-5678"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
