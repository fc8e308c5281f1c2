//! `nkpki agent`: the holder's daemon beside the token. It keeps a long-poll open to the
//! server, shows each signing request, asks the holder (or applies an explicit rule), and
//! on approval sends the share encrypted to that session alone, in an envelope signed by
//! the token that binds it to the exact request.

mod batch;
mod crl_history;
pub mod policy_offer;
mod reshare_offer;

pub use crl_history::CrlHistory;

use crate::client::{Client, ClientError, Trust};
use crate::hsm::{HolderKey, Module, PinSource, Token, TokenSelector, read_pin};
use crate::manifest::{Manifest, VerifiedManifest};
use crate::package::AgentConfig;
use crate::pki::{self, CertificateView, Csr};
use crate::policy::{Request, Verdict};
use crate::proto::{self, API, Contribution, Envelope, SessionKind, SessionOffer, SigningMode};
use crate::sss::Share;
use crate::sss::shoup;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::Write;
use std::time::Duration;

/// How long an agent waits before it tries again to fetch or write a newer manifest.
const ADOPTION_RETRY: Duration = Duration::from_secs(60);

/// What became of the server's newer manifest.
enum Adoption {
    Adopted,
    /// It did not check out: never asked for again in this run.
    Refused,
    /// It could not be fetched or written: asked for again after [`ADOPTION_RETRY`].
    Deferred,
}

/// Seconds each long-poll waits for news; every poll is also the agent's heartbeat.
pub const HEARTBEAT_SECS: u64 = 30;
/// Reconnection: this many quick attempts, then slower ones.
pub const QUICK_RETRIES: u32 = 5;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    #[error("agent configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("{0}")]
    Refused(String),
}

/// What the agent approves on its own, without asking: every condition given must hold,
/// judged on the certificate as it will be issued (never on the raw CSR). Used by
/// services, tests and the demo; each use is logged loudly.
#[derive(Clone, Debug, Default)]
pub struct ApprovalRule {
    pub profile: Option<String>,
    /// Every DNS name and e-mail domain must be this domain or below it.
    pub san_suffix: Option<String>,
    /// Subject attributes allowed besides a CN equal to one of the certificate's SANs, as
    /// (type, value); a value of `*` allows any value of that type.
    pub subject_attributes: Vec<(String, String)>,
    /// Longest validity approved; [`DEFAULT_MAX_DAYS`] when not given.
    pub max_days: Option<u32>,
    /// Approve CRL signing and revocations too.
    pub allow_revocation: bool,
    /// Approve CA policy changes too (`--approve-policy-changes`): the new manifest is
    /// still recomputed and checked here; only the holder's look is skipped.
    pub allow_policy_changes: bool,
    /// Approve a reshare of the CA too (`--approve-reshare`).
    pub allow_reshare: bool,
}

/// The longest validity a rule approves unless it says otherwise (the CA/Browser Forum's
/// limit for TLS server certificates).
pub const DEFAULT_MAX_DAYS: u32 = 397;

/// How decisions are made.
#[derive(Clone, Debug)]
pub enum Approval {
    /// Ask on the terminal (and the PIN for each approval).
    Interactive,
    /// Apply the rule; decline what it does not cover.
    Rule(ApprovalRule),
}

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub config: AgentConfig,
    pub module: Option<std::path::PathBuf>,
    pub pin: PinSource,
    pub approval: Approval,
    pub trust: Trust,
    /// Stop after this many sessions answered (tests); None runs for ever.
    pub max_sessions: Option<usize>,
    /// Accept a plain `http://` server URL (`--insecure-http`), with a warning.
    pub insecure_http: bool,
    /// Where this agent keeps what a threshold CA's CRLs said ([`CrlHistory`]); None keeps
    /// nothing (tests that drive `recompute` alone).
    pub crl_history: Option<std::path::PathBuf>,
}

impl ApprovalRule {
    /// Why the rule does not cover the offer, if it does not. `view` is the certificate
    /// as it will be issued, computed by this agent (for `issue` sessions).
    pub fn refuses(&self, offer: &SessionOffer, view: Option<&CertificateView>) -> Option<String> {
        if offer.kind == SessionKind::Policy {
            return (!self.allow_policy_changes).then(|| {
                "a CA policy change needs a person (or --approve-policy-changes)".to_owned()
            });
        }
        if offer.kind == SessionKind::Reshare {
            return (!self.allow_reshare)
                .then(|| "a reshare needs a person (or --approve-reshare)".to_owned());
        }
        if offer.kind == SessionKind::IssueBatch {
            return Some("a batch is judged certificate by certificate (refuses_batch)".into());
        }
        if offer.kind != SessionKind::Issue {
            return (!self.allow_revocation).then(|| {
                format!(
                    "{:?} sessions need a person (or --approve-revocations)",
                    offer.kind
                )
            });
        }
        let Some(view) = view else {
            return Some("no certificate to judge".into());
        };
        self.refuses_certificate(view)
    }

    /// Why the rule does not cover the certificate `view` (as this agent computed it).
    pub fn refuses_certificate(&self, view: &CertificateView) -> Option<String> {
        if self.profile.is_none() && self.san_suffix.is_none() {
            return Some(
                "the rule names no profile and no SAN suffix: issue requests need a person".into(),
            );
        }
        match &self.profile {
            Some(p) if &view.profile != p => {
                return Some(format!("profile {} is not {p}", view.profile));
            }
            // a sub-CA can issue anything below it: only a rule naming the profile covers it
            None if view.is_ca || view.profile == "sub-ca" => {
                return Some(
                    "a sub-CA certificate needs a person or an explicit --approve-profile sub-ca"
                        .into(),
                );
            }
            _ => {}
        }
        let max_days = self.max_days.unwrap_or(DEFAULT_MAX_DAYS);
        if view.days > max_days {
            return Some(format!(
                "a validity of {} days is over the rule's {max_days}",
                view.days
            ));
        }
        if let Some(suffix) = &self.san_suffix {
            if view.sans.is_empty() {
                return Some("the certificate has no SAN to check against the rule".into());
            }
            // ".example.org" and "example.org" both cover example.org and the names below it
            let apex = suffix.trim_start_matches('.');
            for san in &view.sans {
                let domain = if let Some(d) = san.strip_prefix("DNS:") {
                    d
                } else if let Some(e) = san.strip_prefix("email:") {
                    e.rsplit('@').next().unwrap_or_default()
                } else {
                    return Some(format!("SAN {san} is not covered by the rule"));
                };
                if !(domain == apex || domain.ends_with(&format!(".{apex}"))) {
                    return Some(format!("SAN {san} is not under {apex}"));
                }
            }
        }
        for (kind, value) in &view.subject {
            let names_a_san = kind == "CN"
                && view.sans.iter().any(|san| {
                    san.split_once(':')
                        .is_some_and(|(_, name)| name.eq_ignore_ascii_case(value))
                });
            let allowed = names_a_san
                || self
                    .subject_attributes
                    .iter()
                    .any(|(k, v)| k == kind && (v == "*" || v == value));
            if !allowed {
                return Some(format!(
                    "subject {kind}={value} is not covered by the rule (a CN must equal a SAN; \
                     other attributes need --approve-subject {kind}=VALUE)"
                ));
            }
        }
        None
    }
}

/// What the holder is asked to approve, recomputed here from the request itself, the
/// holder's own manifest and the session's terms — never taken from the server.
#[derive(Debug)]
pub struct Approving {
    /// SHA-256 of the request (the CSR's DER, or the statement's text).
    pub request_sha256: String,
    /// `issue`: the certificate as it will be issued.
    pub certificate: Option<CertificateView>,
    /// Threshold mode: the exact bytes to sign (a TBSCertificate or TBSCertList), checked
    /// against what the request and the terms give.
    pub tbs: Option<Vec<u8>>,
    /// Threshold `revoke` and `crl`: the CRL as the TBS says it.
    pub crl: Option<pki::CrlContents>,
    /// `issue-batch`: every certificate as it will be issued, in order.
    pub batch: Vec<CertificateView>,
}

/// Where the agent configured by `config` keeps its [`CrlHistory`]: beside it, e.g.
/// `agent.json` → `agent.crl-history.json`.
pub fn crl_history_path(config: &std::path::Path) -> std::path::PathBuf {
    config.with_extension("crl-history.json")
}

/// Recomputes what `offer` asks the holder to approve, and refuses an offer whose own
/// description differs from that (a server describing one certificate and issuing another).
pub fn recompute(
    offer: &SessionOffer,
    manifest: &VerifiedManifest,
) -> Result<Approving, AgentError> {
    let refused = |why: String| AgentError::Refused(why);
    check_mode(offer, manifest)?;
    match offer.kind {
        SessionKind::Policy => policy_offer::recompute(offer, manifest),
        SessionKind::Reshare => reshare_offer::recompute(offer, manifest),
        SessionKind::IssueBatch => batch::recompute(offer, manifest),
        SessionKind::Issue => {
            let csr = Csr::parse(offer.request.as_bytes())
                .map_err(|e| refused(format!("the request is not a CSR nkpki can show: {e}")))?;
            let described = offer.summary.certificate.as_ref().ok_or_else(|| {
                refused("the offer does not say what certificate it issues".into())
            })?;
            let terms = pki::Terms::of_view(described).map_err(|e| refused(e.to_string()))?;
            if described.profile != offer.summary.profile || described.days != offer.summary.days {
                return Err(refused(
                    "the offer's terms and its certificate disagree".into(),
                ));
            }
            let view = pki::check_request(&manifest.ca, &csr, &terms)
                .map_err(|e| refused(format!("the request cannot be issued: {e}")))?;
            if &view != described {
                return Err(refused(
                    "the server describes another certificate than this request issues".into(),
                ));
            }
            let tbs = match offer.mode {
                SigningMode::Reconstruct => None,
                SigningMode::Threshold => {
                    let tbs = offered_tbs(offer)?;
                    pki::check_tbs_certificate(&manifest.ca, &csr, &terms, &tbs)
                        .map_err(|e| refused(e.to_string()))?;
                    Some(tbs)
                }
            };
            Ok(Approving {
                request_sha256: csr.digest(),
                certificate: Some(view),
                tbs,
                crl: None,
                batch: Vec::new(),
            })
        }
        SessionKind::Revoke | SessionKind::Crl => {
            let expected = match offer.kind {
                SessionKind::Revoke => proto::revoke_statement(
                    &offer.ca_id,
                    offer.summary.serial.as_deref().unwrap_or_default(),
                    offer.summary.reason.as_deref().unwrap_or_default(),
                ),
                _ => proto::crl_statement(&offer.ca_id),
            };
            if offer.request != expected {
                return Err(refused(
                    "the statement does not match the session's terms".into(),
                ));
            }
            let (tbs, crl) = match offer.mode {
                SigningMode::Reconstruct => (None, None),
                SigningMode::Threshold => {
                    let tbs = offered_tbs(offer)?;
                    let crl = pki::read_tbs_crl(&manifest.ca, &tbs)
                        .map_err(|e| refused(e.to_string()))?;
                    check_crl_terms(offer, &crl)?;
                    (Some(tbs), Some(crl))
                }
            };
            Ok(Approving {
                request_sha256: pki::sha256_hex(offer.request.as_bytes()),
                certificate: None,
                tbs,
                crl,
                batch: Vec::new(),
            })
        }
    }
}

/// The session's mode must be the CA's: above all, a threshold CA's key share is never
/// sealed and sent, whatever a server asks.
fn check_mode(offer: &SessionOffer, manifest: &VerifiedManifest) -> Result<(), AgentError> {
    match (offer.mode, manifest.threshold_key().is_some()) {
        (SigningMode::Reconstruct, true) => Err(AgentError::Refused(
            "the server asks for a sealed share, but this CA is in threshold mode: its key \
             share never leaves this machine, only signature shares do"
                .into(),
        )),
        (SigningMode::Threshold, false) => Err(AgentError::Refused(
            "the server offers a threshold session, but this CA is in reconstruct mode (its \
             manifest has no threshold key)"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The offer's to-be-signed bytes.
fn offered_tbs(offer: &SessionOffer) -> Result<Vec<u8>, AgentError> {
    let text = offer.tbs.as_deref().ok_or_else(|| {
        AgentError::Refused("a threshold offer without to-be-signed bytes".into())
    })?;
    B64.decode(text)
        .map_err(|e| AgentError::Refused(format!("the to-be-signed bytes are not base64: {e}")))
}

/// A threshold CRL must say what the session's statement does: a revocation lists the
/// serial with the reason approved, and every CRL is valid the CA's usual time.
fn check_crl_terms(offer: &SessionOffer, crl: &pki::CrlContents) -> Result<(), AgentError> {
    let refused = |why: String| Err(AgentError::Refused(why));
    let now = time::OffsetDateTime::now_utc();
    // dated when its session opened: not in the future (clock skew aside), and not before
    // the longest session a server keeps open (`serve --session-ttl`, a day at most)
    let skew = time::Duration::minutes(10);
    if crl.this_update > now + skew || crl.this_update < now - time::Duration::days(1) - skew {
        return refused(format!(
            "the to-be-signed CRL is dated {}, not now",
            crl.this_update
        ));
    }
    if crl.next_update != Some(crl.this_update + time::Duration::days(pki::CRL_VALIDITY_DAYS)) {
        return refused(format!(
            "the to-be-signed CRL is not valid {} days",
            pki::CRL_VALIDITY_DAYS
        ));
    }
    if offer.kind == SessionKind::Revoke {
        let serial = offer.summary.serial.as_deref().unwrap_or_default();
        let reason = offer.summary.reason.as_deref().unwrap_or_default();
        if !crl
            .revoked
            .iter()
            .any(|r| r.serial_hex == serial && r.reason == reason)
        {
            return refused(format!(
                "the to-be-signed CRL does not revoke serial {serial} ({reason})"
            ));
        }
    }
    Ok(())
}

/// Shows the holder what it is asked to approve: the certificate as this agent computed
/// it (and the CA name from the holder's own manifest); every string escaped.
fn show(
    offer: &SessionOffer,
    approving: &Approving,
    manifest: &VerifiedManifest,
    verdict: &Verdict,
) {
    let ca_name = manifest.body.ca.name.as_str();
    let esc = pki::text::escape;
    eprintln!(
        "\n──────── signing request {} ────────",
        esc(&offer.session_id)
    );
    eprintln!("CA:          {} ({})", esc(ca_name), esc(&offer.ca_id));
    eprintln!("Requester:   {}", esc(&offer.requester));
    eprintln!("Kind:        {:?}", offer.kind);
    match &approving.certificate {
        Some(view) => {
            eprintln!("The certificate, exactly as it will be issued:");
            for line in view.lines() {
                eprintln!("  {line}");
            }
        }
        // a policy change is shown by `decide`, rule by rule, from the holder's manifest
        None if offer.kind == SessionKind::Policy => {}
        None => match reshare_offer::lines(offer, manifest) {
            Some(lines) => lines.iter().for_each(|l| eprintln!("{l}")),
            None => eprintln!("Statement:   {}", esc(&offer.request)),
        },
    }
    if let Some(crl) = &approving.crl {
        eprintln!(
            "The CRL, exactly as it will be signed: number {}, from {} to {}",
            crl.number,
            crl.this_update,
            crl.next_update
                .map_or_else(|| "(none)".to_owned(), |t| t.to_string())
        );
        for r in &crl.revoked {
            eprintln!(
                "  revoked {} ({}) at {}",
                esc(&r.serial_hex),
                esc(&r.reason),
                r.revoked_at
            );
        }
    }
    if let Some(tbs) = &approving.tbs {
        eprintln!(
            "Signs:       {} bytes to be signed, SHA-256 {} (threshold: no share leaves the token)",
            tbs.len(),
            pki::sha256_hex(tbs)
        );
    }
    for (i, line) in verdict.summary.iter().enumerate() {
        let label = if i == 0 {
            "Policy:     "
        } else {
            "            "
        };
        eprintln!("{label} {}", esc(line));
    }
    if offer.approval_only {
        eprintln!(
            "Approval:    the session holds M shares already: approving sends an approval \
             signed by your token, and no share"
        );
    }
    eprintln!("Digest:      SHA-256 {}", approving.request_sha256);
    let left = offer.expires_at - crate::store::now();
    eprintln!("Expires in:  {left} s");
}

struct Agent {
    opts: AgentOptions,
    manifest: VerifiedManifest,
    client: Client,
    module: Module,
    token: Token,
    key: HolderKey,
    logged_in_token: bool,
}

impl Agent {
    fn pin(&self) -> Result<secrecy::SecretString, AgentError> {
        Ok(read_pin(&self.opts.pin, self.token.label())?)
    }

    fn token_login(&mut self) -> Result<(), AgentError> {
        if !self.logged_in_token {
            let pin = self.pin()?;
            self.token.login(&pin)?;
            self.logged_in_token = true;
            // private-object handles do not survive a logout: look the key up again
            self.key = self.token.holder_key()?.ok_or_else(|| {
                AgentError::Config("the holder key vanished from the token".into())
            })?;
        }
        Ok(())
    }

    /// Logs in to the server by signing a challenge with the token. The server answers
    /// every failed login alike (`login-failed`), so that a stranger cannot tell which
    /// holders have enrolled: on that answer the agent enrolls its token key with the
    /// one-time code from its configuration, then logs in again.
    fn server_login(&mut self) -> Result<(), AgentError> {
        self.client.set_bearer(None);
        match self.login_with_challenge() {
            Err(AgentError::Client(e)) if e.code() == Some("login-failed") => {
                self.enroll()?;
                self.login_with_challenge()
            }
            other => other,
        }
    }

    fn login_with_challenge(&mut self) -> Result<(), AgentError> {
        let ca_id = self.opts.config.ca_id.clone();
        let holder_id = self.opts.config.holder_id.clone();
        let challenge: proto::Challenge = self.client.post(
            &format!("{API}/agent/challenge"),
            &proto::ChallengeRequest {
                ca_id: ca_id.clone(),
                holder_id: holder_id.clone(),
            },
        )?;
        self.token_login()?;
        let signature = B64.encode(self.token.sign(
            &self.key,
            &proto::login_signed_bytes(&ca_id, &holder_id, &challenge.challenge),
        )?);
        let ok: proto::LoginOk = self.client.post(
            &format!("{API}/agent/login"),
            &proto::Login {
                ca_id,
                holder_id,
                challenge: challenge.challenge,
                signature,
            },
        )?;
        self.client.set_bearer(Some(ok.bearer));
        if matches!(self.opts.approval, Approval::Interactive) {
            self.token.logout()?;
            self.logged_in_token = false;
        }
        Ok(())
    }

    /// Registers the token key with the one-time enrollment code.
    fn enroll(&mut self) -> Result<(), AgentError> {
        let ca_id = self.opts.config.ca_id.clone();
        let holder_id = self.opts.config.holder_id.clone();
        self.token_login()?;
        let pem = self.key.public_key_pem();
        let signature = B64.encode(self.token.sign(
            &self.key,
            &proto::enroll_signed_bytes(&ca_id, &holder_id, &pem),
        )?);
        let enroll = proto::Enroll {
            ca_id,
            holder_id,
            enrollment_code: self.opts.config.enrollment_code.clone(),
            public_key_pem: pem,
            signature,
        };
        let enrolled: Result<serde_json::Value, ClientError> =
            self.client.post(&format!("{API}/enroll"), &enroll);
        match enrolled {
            Ok(_) => {}
            Err(e) if e.code() == Some("code-used") => {
                return Err(AgentError::Refused(
                    "the server refused this token's login, and the enrollment code in agent.json \
                     was already used (hint: if the token or its key changed, ask an operator for \
                     `nkpki serve holder reset` and put the new code in agent.json)"
                        .into(),
                ));
            }
            Err(e) if e.code() == Some("bad-code") => {
                return Err(AgentError::Refused(format!(
                    "the server refused this token's login, and the enrollment code in \
                     agent.json is not the holder's current one ({e}) (hint: check the server \
                     URL and CA; after `nkpki serve holder reset` put the new code in agent.json)"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            "enrolled token key {} with the server",
            self.key.fingerprint()
        );
        Ok(())
    }

    /// Reads the share right after a fresh login, with the PIN read now (asked again in
    /// interactive mode; the file or NKPKI_PIN with a rule). A login kept since the last
    /// session is not trusted: on a Nitrokey through OpenSC, any other program opening the
    /// card (`pkcs11-tool -L`, `nkpki token list`) drops it, and the share read would fail.
    /// A login lost even so is logged and recovered once.
    fn read_share_freshly_logged_in(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, AgentError> {
        let label = self.token.label().to_owned();
        let state = self.token.pin_state();
        if matches!(self.opts.approval, Approval::Rule(_)) && (state.count_low || state.final_try) {
            // a wrong PIN file would otherwise spend one try per session until the PIN locks
            return Err(AgentError::Refused(format!(
                "token {label} reports its PIN {}: an agent with a rule spends no PIN tries \
                 unattended; check the PIN file, then restart the agent",
                state.describe()
            )));
        }
        let pin = self.pin()?;
        self.logged_in_token = false;
        let ca_id = self.opts.config.ca_id.clone();
        let share_json = self.token.with_fresh_login(
            &pin,
            |token| token.read_share(&ca_id),
            |e| {
                tracing::info!(
                    "token {label}: the login was lost before the share was read ({e}); \
                     another program may have opened the token; logging in again once"
                )
            },
        )?;
        drop(pin);
        self.logged_in_token = true;
        // private-object handles do not survive a logout: look the key up again
        self.key = self
            .token
            .holder_key()?
            .ok_or_else(|| AgentError::Config("the holder key vanished from the token".into()))?;
        Ok(share_json)
    }

    /// Whether to approve; `None` when nobody can be asked (no terminal): the session is
    /// then left unanswered rather than declined.
    fn decide(
        &mut self,
        offer: &SessionOffer,
        approving: &Approving,
        verdict: &Verdict,
    ) -> Result<Option<bool>, AgentError> {
        if offer.kind == SessionKind::IssueBatch {
            return batch::decide(&self.opts.approval, offer, approving, verdict);
        }
        match &self.opts.approval {
            Approval::Rule(rule) => match rule.refuses(offer, approving.certificate.as_ref()) {
                None => {
                    tracing::info!(
                        "AUTO-APPROVED by rule (non-interactive mode): session {} {}",
                        offer.session_id,
                        pki::text::escape(&match &approving.certificate {
                            Some(view) => format!(
                                "{} [{}] {} days",
                                view.subject_string(),
                                view.sans.join(", "),
                                view.days
                            ),
                            None if offer.kind == SessionKind::Policy => format!(
                                "CA policy change: {}",
                                policy_offer::describe(offer, &self.manifest).join("; ")
                            ),
                            None => offer.request.clone(),
                        })
                    );
                    Ok(Some(true))
                }
                Some(why) => {
                    tracing::info!(
                        "declined by rule: session {}: {}",
                        offer.session_id,
                        pki::text::escape(&why)
                    );
                    Ok(Some(false))
                }
            },
            Approval::Interactive => {
                show(offer, approving, &self.manifest, verdict);
                if offer.kind == SessionKind::Policy {
                    eprintln!("CA policy change (this holder's manifest against the new one):");
                    for line in policy_offer::describe(offer, &self.manifest) {
                        eprintln!("  {}", pki::text::escape(&line));
                    }
                }
                eprint!("Approve this request? [y/N] ");
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                let read = std::io::stdin()
                    .read_line(&mut answer)
                    .map_err(|e| AgentError::Config(e.to_string()))?;
                if read == 0 {
                    tracing::info!(
                        "no one to ask (standard input closed): session {} left unanswered; \
                         run the agent in a terminal or give it an approval rule",
                        offer.session_id
                    );
                    return Ok(None);
                }
                Ok(Some(matches!(answer.trim(), "y" | "Y" | "yes")))
            }
        }
    }

    /// The server this agent talks to, and how it trusts it: what a reshare's new agents
    /// are compared with.
    fn own_server(&self) -> reshare_offer::OwnServer {
        let cfg = &self.opts.config;
        let pin = match (&self.opts.trust, &cfg.server_cert_sha256) {
            (Trust::Pinned(pin), _) | (Trust::System, Some(pin)) => Some(pin.clone()),
            _ => None,
        };
        reshare_offer::OwnServer {
            url: cfg.server_url.clone().unwrap_or_default(),
            pin,
            insecure_http: self.opts.insecure_http,
        }
    }

    fn answer(&mut self, offer: &SessionOffer) -> Result<(), AgentError> {
        if offer.ca_id != self.opts.config.ca_id {
            return Err(AgentError::Refused(format!(
                "offer for another CA {}",
                offer.ca_id
            )));
        }
        let approving = recompute(offer, &self.manifest)?;
        if offer.kind == SessionKind::Reshare {
            reshare_offer::check_new_agents(offer, &self.own_server())?;
        }
        if approving.request_sha256 != offer.request_sha256 {
            return Err(AgentError::Refused(
                "the server's digest does not match the request it shows".into(),
            ));
        }
        // a threshold CRL must not roll back what CRLs approved here said
        let crl_history = match (&approving.crl, &self.opts.crl_history) {
            (Some(crl), Some(path)) => {
                let history = CrlHistory::load(path, &offer.ca_id)?;
                if let Some(why) = history.refuses(crl) {
                    return Err(AgentError::Refused(why));
                }
                Some((history, path.clone(), crl.clone()))
            }
            _ => None,
        };
        // the request is judged by the policy of this holder's own signed manifest, whatever
        // the server says
        let verdict = match &approving.certificate {
            _ if offer.kind == SessionKind::IssueBatch => {
                batch::judge(&self.manifest, &approving.batch)?
            }
            _ if offer.kind == SessionKind::Policy => policy_offer::verdict(&self.manifest),
            // a reshare needs the strictest quorum of the policy, as a policy change does
            None if offer.kind == SessionKind::Reshare => crate::policy::reshare_verdict(
                self.manifest.body.policy.as_ref(),
                self.manifest.threshold(),
            ),
            Some(view) => self.manifest.verdict(&Request::Issue(view)),
            None if offer.kind == SessionKind::Revoke => self.manifest.verdict(&Request::Revoke),
            None => self.manifest.verdict(&Request::Crl),
        };
        if !verdict.allowed() {
            return Err(AgentError::Refused(format!(
                "the CA policy in this holder's manifest refuses the request: {}",
                verdict.refusal()
            )));
        }
        let Some(approved) = self.decide(offer, &approving, &verdict)? else {
            return Ok(());
        };
        if !approved {
            let decline = proto::Decline {
                holder_id: self.opts.config.holder_id.clone(),
                reason: "declined by the holder".into(),
            };
            let _: proto::SessionStatus = self.client.post(
                &format!("{API}/sessions/{}/decline", offer.session_id),
                &decline,
            )?;
            tracing::info!("declined session {}", offer.session_id);
            return Ok(());
        }
        if offer.approval_only {
            return self.send_approval(offer, &approving);
        }
        if approving.tbs.is_some() {
            self.send_signature_share(offer, approving)?;
            if let Some((mut history, path, crl)) = crl_history {
                history.record(&crl, &path)?;
            }
            return Ok(());
        }
        check_mode(offer, &self.manifest)?;
        let interactive = matches!(self.opts.approval, Approval::Interactive);
        let share_json = self.read_share_freshly_logged_in()?;
        // the value is decoded from the hex text in `share_json` straight into the share's
        // boxed, wiped value: no owned copy of the text; both are dropped once sealed
        let share: Share = serde_json::from_slice(&share_json).map_err(|e| {
            AgentError::Refused(format!("the share on the token is unreadable: {e}"))
        })?;
        self.manifest.check_share(
            &share,
            &format!("the share on token {}", self.token.label()),
        )?;
        let recipient = crate::seal::parse_recipient(&offer.recipient)
            .map_err(|e| AgentError::Refused(e.to_string()))?;
        let ciphertext = crate::seal::to_recipient(&recipient, &share_json)
            .map_err(|e| AgentError::Refused(e.to_string()))?;
        drop(share_json);
        drop(share);
        let envelope = Envelope {
            ciphertext_sha256: pki::sha256_hex(ciphertext.as_bytes()),
            ..self.envelope(offer, &approving)
        };
        let signature = B64.encode(self.token.sign(&self.key, &envelope.signed_bytes())?);
        if interactive {
            // keep the token locked between approvals
            self.token.logout()?;
            self.logged_in_token = false;
        }
        let status: proto::SessionStatus = self.client.post(
            &format!("{API}/sessions/{}/contribute", offer.session_id),
            &Contribution {
                envelope,
                ciphertext,
                signature,
                signature_share: None,
                share_set_id: None,
            },
        )?;
        tracing::info!(
            "share sent for session {}: {} of {} approvals, state {}",
            offer.session_id,
            status.approved.len(),
            status.needed(),
            status.state.as_str()
        );
        Ok(())
    }
}

impl Agent {
    /// Adopts the server's newer manifest if it checks out ([`policy_offer::check_newer`]);
    /// a refusal is logged and the agent keeps its own.
    fn adopt_registered_manifest(&mut self, path: &str) -> Adoption {
        match policy_offer::adopt(&self.client, &self.manifest, std::path::Path::new(path)) {
            Ok(new) => {
                self.manifest = new;
                Adoption::Adopted
            }
            Err(e @ (AgentError::Refused(_) | AgentError::Manifest(_))) => {
                tracing::warn!("the server's newer manifest was NOT adopted: {e}");
                Adoption::Refused
            }
            Err(e) => {
                tracing::warn!(
                    "cannot adopt the server's newer manifest now (retry in {} s): {e}",
                    ADOPTION_RETRY.as_secs()
                );
                Adoption::Deferred
            }
        }
    }

    /// An approval without a share (the session holds M shares and the CA policy asks for
    /// more approvals): the envelope alone, signed by the token; the share stays on it.
    fn send_approval(
        &mut self,
        offer: &SessionOffer,
        approving: &Approving,
    ) -> Result<(), AgentError> {
        self.token_login()?;
        let envelope = Envelope {
            tbs_sha256: approving.tbs.as_deref().map(pki::sha256_hex),
            ..self.envelope(offer, approving)
        };
        let signature = B64.encode(self.token.sign(&self.key, &envelope.signed_bytes())?);
        if matches!(self.opts.approval, Approval::Interactive) {
            self.token.logout()?;
            self.logged_in_token = false;
        }
        let status: proto::SessionStatus = self.client.post(
            &format!("{API}/sessions/{}/contribute", offer.session_id),
            &Contribution {
                envelope,
                ciphertext: String::new(),
                signature,
                signature_share: None,
                share_set_id: None,
            },
        )?;
        tracing::info!(
            "approval (no share) sent for session {}: {} of {} approvals, state {}",
            offer.session_id,
            status.approved.len(),
            status.needed(),
            status.state.as_str()
        );
        Ok(())
    }

    /// The envelope every answer to `offer` signs, binding the session and what the holder
    /// approved; each kind of answer fills in what it carries (ciphertext, TBS, signature
    /// share).
    fn envelope(&self, offer: &SessionOffer, approving: &Approving) -> Envelope {
        Envelope {
            ca_id: offer.ca_id.clone(),
            session_id: offer.session_id.clone(),
            nonce: offer.nonce.clone(),
            expires_at: offer.expires_at,
            holder_id: self.opts.config.holder_id.clone(),
            request_sha256: approving.request_sha256.clone(),
            profile: offer.summary.profile.clone(),
            days: offer.summary.days,
            certificate_sha256: match offer.kind {
                SessionKind::IssueBatch => Some(pki::batch::certificates_digest(&approving.batch)),
                _ => approving.certificate.as_ref().map(CertificateView::digest),
            },
            ciphertext_sha256: String::new(),
            tbs_sha256: None,
            signature_share_sha256: None,
        }
    }

    /// Threshold mode: turns the key share on the token into a signature share on exactly
    /// the approved TBS (with its proof, bound to this session), wipes the key share, and
    /// sends the signature share in an envelope signed by the token. Nothing secret leaves.
    fn send_signature_share(
        &mut self,
        offer: &SessionOffer,
        approving: Approving,
    ) -> Result<(), AgentError> {
        let tbs = approving
            .tbs
            .as_deref()
            .ok_or_else(|| AgentError::Refused("nothing to sign".into()))?;
        let interactive = matches!(self.opts.approval, Approval::Interactive);
        let label = self.token.label().to_owned();
        threshold_key(&self.manifest)?;
        let share_bytes = self.read_share_freshly_logged_in()?;
        let key = threshold_key(&self.manifest)?;
        let share = key_share_from_token(&self.manifest, &share_bytes, &label)?;
        drop(share_bytes);
        let context = proto::threshold_context(&offer.ca_id, &offer.session_id);
        let signed = shoup::sign_share(key, &share, tbs, &context, &mut rand::rng());
        // the key share is wiped here, before anything is sent
        drop(share);
        let signature_share = signed.map_err(|e| {
            AgentError::Refused(format!("cannot sign with the share on token {label}: {e}"))
        })?;
        let envelope = Envelope {
            tbs_sha256: Some(pki::sha256_hex(tbs)),
            signature_share_sha256: Some(proto::signature_share_sha256(&signature_share)),
            ..self.envelope(offer, &approving)
        };
        let signature = B64.encode(self.token.sign(&self.key, &envelope.signed_bytes())?);
        if interactive {
            self.token.logout()?;
            self.logged_in_token = false;
        }
        let status: proto::SessionStatus = self.client.post(
            &format!("{API}/sessions/{}/contribute", offer.session_id),
            &Contribution {
                envelope,
                ciphertext: String::new(),
                signature,
                signature_share: Some(signature_share),
                share_set_id: Some(self.manifest.body.share_set.id()),
            },
        )?;
        tracing::info!(
            "signature share sent for session {}: {} of {} approvals, state {}",
            offer.session_id,
            status.approved.len(),
            status.needed(),
            status.state.as_str()
        );
        Ok(())
    }
}

/// The CA's threshold public key, from the holder's own manifest.
fn threshold_key(manifest: &VerifiedManifest) -> Result<&shoup::ThresholdKey, AgentError> {
    manifest.threshold_key().ok_or_else(|| {
        AgentError::Refused(
            "a threshold offer, but this CA's manifest has no threshold key (reconstruct mode)"
                .into(),
        )
    })
}

/// The key share s_i read from the token, checked against the manifest (its set, its
/// holder, and v^{s_i} = v_i).
fn key_share_from_token(
    manifest: &VerifiedManifest,
    bytes: &[u8],
    label: &str,
) -> Result<shoup::KeyShare, AgentError> {
    let what = format!("the share on token {label}");
    let share: Share = serde_json::from_slice(bytes)
        .map_err(|e| AgentError::Refused(format!("{what} is unreadable: {e}")))?;
    manifest.check_share(&share, &what)?;
    manifest
        .body
        .share_set
        .key_share(&share)
        .map_err(|e| AgentError::Refused(format!("{what}: {e}")))
}

/// Runs the agent: connect, enroll if needed, log in, then answer sessions for ever (or
/// until `max_sessions`).
pub fn run(opts: AgentOptions) -> Result<(), AgentError> {
    let cfg = &opts.config;
    let url = cfg
        .server_url
        .clone()
        .ok_or_else(|| AgentError::Config("no server_url in the configuration".into()))?;
    if crate::package::is_plain_http(&url) {
        if !opts.insecure_http {
            return Err(AgentError::Config(format!(
                "the server URL {url} is plain http: refused; use the server's https:// URL, \
                 or pass --insecure-http on a network you trust (loopback, a test bench)"
            )));
        }
        tracing::warn!(
            "WARNING: plain http to {url} (--insecure-http): anyone on the path can read and \
             alter what the server and this agent say, including the requests shown to you"
        );
    }
    let manifest_path = cfg
        .manifest
        .clone()
        .ok_or_else(|| AgentError::Config("no manifest path in the configuration".into()))?;
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| AgentError::Config(format!("{manifest_path}: {e}")))?;
    let manifest = Manifest::from_json(&text)?.verify()?;
    if manifest.ca_id().0 != cfg.ca_id {
        return Err(AgentError::Config(
            "the manifest belongs to another CA than the configuration".into(),
        ));
    }
    let trust = match (&opts.trust, &cfg.server_cert_sha256) {
        (Trust::System, Some(pin)) => Trust::Pinned(pin.clone()),
        (t, _) => t.clone(),
    };
    let client = Client::new(&url, &trust, Duration::from_secs(HEARTBEAT_SECS + 15))?;
    let module_path = opts
        .module
        .clone()
        .or_else(|| cfg.module.clone().map(Into::into));
    let module = Module::load(module_path.as_deref())?;
    let token = module.open(&TokenSelector::parse(&cfg.token)?)?;
    // the holder's private key is a private object: visible only once logged in
    token.login(&read_pin(&opts.pin, token.label())?)?;
    let key = token.holder_key()?.ok_or_else(|| {
        AgentError::Config(format!(
            "token {} has no holder key; run `nkpki deploy` or `nkpki token enroll`",
            cfg.token
        ))
    })?;
    let mut agent = Agent {
        opts: opts.clone(),
        manifest,
        client,
        module,
        token,
        key,
        logged_in_token: true,
    };
    if matches!(agent.opts.approval, Approval::Rule(_)) {
        tracing::warn!(
            "WARNING: non-interactive mode: requests matching the approval rule are signed WITHOUT asking anyone",
        );
    }
    let _ = &agent.module;
    reshare_offer::enroll_for_new_set(&mut agent)?;
    // sessions answered, declined, failed or left unanswered, until they expire: the poll
    // asks the server to skip them, so it waits for news instead of offering them again
    let mut done: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut handled: usize = 0;
    let mut failures: u32 = 0;
    let mut logged_in = false;
    // a newer registered manifest this agent refused (another key, other shares, …)
    let mut ignored_revision: u32 = 0;
    let mut deferred: Option<(u32, std::time::Instant)> = None;
    loop {
        if !logged_in {
            match agent.server_login() {
                Ok(()) => {
                    logged_in = true;
                    failures = 0;
                    tracing::info!(
                        "connected to {url} as {} (CA {})",
                        agent.opts.config.holder_id,
                        agent.opts.config.ca_id
                    );
                }
                // the server is down, overloaded or failing: retrying can fix it
                Err(AgentError::Client(
                    e @ (ClientError::Unreachable { .. }
                    | ClientError::Api {
                        status: 429 | 500..=599,
                        ..
                    }),
                )) => {
                    failures += 1;
                    backoff(failures, &e.to_string());
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let t = crate::store::now();
        done.retain(|_, expires_at| *expires_at > t);
        let mut skip: Vec<(&String, &i64)> = done.iter().collect();
        skip.sort_by_key(|(_, expires_at)| std::cmp::Reverse(**expires_at));
        let skip: Vec<&str> = skip.iter().take(64).map(|(id, _)| id.as_str()).collect();
        let started = std::time::Instant::now();
        let polled: Result<proto::Poll, ClientError> = agent.client.get(&format!(
            "{API}/agent/poll?wait={}&skip={}&policy_revision={}",
            HEARTBEAT_SECS - 5,
            skip.join(","),
            agent
                .manifest
                .body
                .policy_revision
                .max(ignored_revision)
                .max(match deferred {
                    Some((revision, since)) if since.elapsed() < ADOPTION_RETRY => revision,
                    _ => 0,
                })
        ));
        match polled {
            Ok(poll) => {
                failures = 0;
                if let Some(news) = &poll.manifest {
                    // the poll says the revision was seen: not asked about it again (for
                    // a while, if it could not be fetched or written)
                    match agent.adopt_registered_manifest(&manifest_path) {
                        Adoption::Adopted => deferred = None,
                        Adoption::Refused => {
                            ignored_revision = ignored_revision.max(news.policy_revision);
                        }
                        Adoption::Deferred => {
                            deferred = Some((news.policy_revision, std::time::Instant::now()));
                        }
                    }
                }
                let mut news = false;
                for offer in &poll.sessions {
                    if done.contains_key(&offer.session_id) {
                        continue;
                    }
                    news = true;
                    let _in =
                        crate::logging::session_span(&offer.session_id, &offer.ca_id).entered();
                    match agent.answer(offer) {
                        // not answered yet: it is offered again after reconnecting
                        Err(AgentError::Client(e @ ClientError::Unreachable { .. })) => {
                            tracing::warn!("session {}: {e}; will retry", offer.session_id);
                        }
                        outcome => {
                            done.insert(offer.session_id.clone(), offer.expires_at);
                            handled += 1;
                            if let Err(e) = outcome {
                                tracing::warn!("session {}: {e}", offer.session_id);
                            }
                        }
                    }
                }
                if agent.opts.max_sessions.is_some_and(|m| handled >= m) {
                    return Ok(());
                }
                // a server that ignores `skip` must not make this a busy loop
                if !news && started.elapsed() < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            Err(ClientError::Api { status: 401, .. }) => logged_in = false,
            Err(e) => {
                failures += 1;
                backoff(failures, &e.to_string());
            }
        }
    }
}

/// Waits before reconnecting: 1, 2, 3, 4, 5 s for the quick attempts, then 30 s.
fn backoff(failures: u32, why: &str) {
    let delay = backoff_delay(failures, rand::random::<f64>());
    tracing::warn!(
        "server unreachable ({why}); attempt {failures}, retrying in {:.1} s",
        delay.as_secs_f64()
    );
    std::thread::sleep(delay);
}

/// About 1, 2, 3, 4, 5 s for the quick attempts, then about 30 s; each spread by up to a
/// half either way (`spread` in 0..1), so that agents cut off by one outage do not all
/// come back in the same instant.
fn backoff_delay(failures: u32, spread: f64) -> Duration {
    let base = if failures <= QUICK_RETRIES {
        f64::from(failures.max(1))
    } else {
        30.0
    };
    Duration::from_secs_f64(base * (0.5 + spread.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::OfferSummary;

    fn offer(kind: SessionKind) -> SessionOffer {
        SessionOffer {
            session_id: "s".into(),
            ca_id: "c".into(),
            ca_name: "CA".into(),
            kind,
            requester: "op".into(),
            request: String::new(),
            request_sha256: String::new(),
            summary: OfferSummary {
                profile: String::new(),
                days: 30,
                not_before: 0,
                serial: None,
                reason: None,
                certificate: None,
                batch: None,
            },
            nonce: String::new(),
            expires_at: 0,
            recipient: String::new(),
            mode: SigningMode::Reconstruct,
            tbs: None,
            policy: None,
            approval_only: false,
        }
    }

    fn view(profile: &str, subject: &[(&str, &str)], sans: &[&str], days: u32) -> CertificateView {
        CertificateView {
            profile: profile.into(),
            serial: "01".into(),
            subject: subject
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            key: "ECDSA P-256".into(),
            not_before: 0,
            not_after: 0,
            days,
            is_ca: profile == "sub-ca",
            path_len: (profile == "sub-ca").then_some(0),
            key_usage: vec![],
            extended_key_usage: vec![],
            name_constraints: vec![],
            crl_urls: vec![],
            ca_issuers_urls: vec![],
            ocsp_urls: vec![],
            dropped: vec![],
        }
    }

    fn suffix_rule() -> ApprovalRule {
        ApprovalRule {
            san_suffix: Some(".example.org".into()),
            ..Default::default()
        }
    }

    #[test]
    fn reconnections_are_spread_and_capped() {
        assert_eq!(backoff_delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(backoff_delay(3, 0.0), Duration::from_secs_f64(1.5));
        assert_eq!(backoff_delay(6, 1.0), Duration::from_secs(45));
        assert_eq!(backoff_delay(1000, 0.0), Duration::from_secs(15));
        assert!(backoff_delay(u32::MAX, 2.0) <= Duration::from_secs(45));
    }

    #[test]
    fn a_rule_for_revocations_alone_approves_no_certificate() {
        let rule = ApprovalRule {
            allow_revocation: true,
            ..Default::default()
        };
        let v = view("server", &[], &["DNS:www.example.org"], 30);
        assert!(rule.refuses(&offer(SessionKind::Issue), Some(&v)).is_some());
        assert!(rule.refuses(&offer(SessionKind::Crl), None).is_none());
        assert!(
            ApprovalRule::default()
                .refuses(&offer(SessionKind::Revoke), None)
                .is_some()
        );
    }

    #[test]
    fn a_suffix_covers_the_domain_and_below_only() {
        for suffix in ["example.org", ".example.org"] {
            let rule = ApprovalRule {
                san_suffix: Some(suffix.into()),
                ..Default::default()
            };
            let judge = |san: &str| {
                rule.refuses(
                    &offer(SessionKind::Issue),
                    Some(&view("server", &[], &[san], 30)),
                )
            };
            assert_eq!(judge("DNS:www.example.org"), None);
            assert_eq!(judge("DNS:example.org"), None);
            assert!(judge("DNS:evilexample.org").is_some());
            assert!(judge("IP:192.0.2.1").is_some());
        }
    }

    #[test]
    fn a_suffix_rule_never_approves_a_sub_ca() {
        // the sub-ca profile drops every SAN: the rule has nothing to check and must refuse
        let sub_ca = view("sub-ca", &[("CN", "Evil Intermediate")], &[], 30);
        let why = suffix_rule()
            .refuses(&offer(SessionKind::Issue), Some(&sub_ca))
            .unwrap();
        assert!(why.contains("sub-CA"), "{why}");
        let explicit = ApprovalRule {
            profile: Some("sub-ca".into()),
            subject_attributes: vec![("CN".into(), "Team Intermediate".into())],
            ..Default::default()
        };
        let team = view("sub-ca", &[("CN", "Team Intermediate")], &[], 30);
        assert_eq!(
            explicit.refuses(&offer(SessionKind::Issue), Some(&team)),
            None
        );
        assert!(
            explicit
                .refuses(&offer(SessionKind::Issue), Some(&sub_ca))
                .is_some()
        );
    }

    #[test]
    fn rules_bound_the_subject_and_the_validity() {
        let rule = suffix_rule();
        let ok = view(
            "client",
            &[("CN", "alice@example.org")],
            &["email:alice@example.org"],
            30,
        );
        assert_eq!(rule.refuses(&offer(SessionKind::Issue), Some(&ok)), None);
        // an administrator-style name that is not one of the SANs needs an explicit rule
        let admin = view(
            "client",
            &[("CN", "Administrator")],
            &["email:alice@example.org"],
            30,
        );
        assert!(
            rule.refuses(&offer(SessionKind::Issue), Some(&admin))
                .is_some()
        );
        let org = view(
            "server",
            &[("CN", "www.example.org"), ("O", "Example")],
            &["DNS:www.example.org"],
            30,
        );
        assert!(
            rule.refuses(&offer(SessionKind::Issue), Some(&org))
                .is_some()
        );
        let with_org = ApprovalRule {
            subject_attributes: vec![("O".into(), "Example".into())],
            ..suffix_rule()
        };
        assert_eq!(
            with_org.refuses(&offer(SessionKind::Issue), Some(&org)),
            None
        );
        let long = view(
            "server",
            &[],
            &["DNS:www.example.org"],
            DEFAULT_MAX_DAYS + 1,
        );
        assert!(
            rule.refuses(&offer(SessionKind::Issue), Some(&long))
                .is_some()
        );
        let short = ApprovalRule {
            max_days: Some(10),
            ..suffix_rule()
        };
        let month = view("server", &[], &["DNS:www.example.org"], 30);
        assert!(
            short
                .refuses(&offer(SessionKind::Issue), Some(&month))
                .is_some()
        );
    }
}
