//! `nkpki agent`: the holder's daemon beside the token. It keeps a long-poll open to the
//! server, shows each signing request, asks the holder (or applies an explicit rule), and
//! on approval sends the share encrypted to that session alone, in an envelope signed by
//! the token that binds it to the exact request.

use crate::client::{Client, ClientError, Trust};
use crate::hsm::{HolderKey, Module, PinSource, Token, TokenSelector, read_pin};
use crate::manifest::{Manifest, VerifiedManifest};
use crate::package::AgentConfig;
use crate::pki::{self, Csr};
use crate::proto::{self, API, Contribution, Envelope, SessionKind, SessionOffer};
use crate::sss::Share;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::io::Write;
use std::time::Duration;

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

/// What the agent approves on its own, without asking: every condition given must hold.
/// Used by services, tests and the demo; each use is logged loudly.
#[derive(Clone, Debug, Default)]
pub struct ApprovalRule {
    pub profile: Option<String>,
    /// Every DNS or e-mail SAN must end with this suffix.
    pub san_suffix: Option<String>,
    /// Approve CRL signing and revocations too.
    pub allow_revocation: bool,
}

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
}

impl ApprovalRule {
    /// Why the rule does not cover the offer, if it does not.
    pub fn refuses(&self, offer: &SessionOffer) -> Option<String> {
        if offer.kind != SessionKind::Issue {
            return (!self.allow_revocation).then(|| {
                format!(
                    "{:?} sessions need a person (or --approve-revocations)",
                    offer.kind
                )
            });
        }
        if self.profile.is_none() && self.san_suffix.is_none() {
            return Some(
                "the rule names no profile and no SAN suffix: issue requests need a person".into(),
            );
        }
        if let Some(p) = &self.profile
            && &offer.summary.profile != p
        {
            return Some(format!("profile {} is not {p}", offer.summary.profile));
        }
        if let Some(suffix) = &self.san_suffix {
            let csr = match Csr::parse(offer.request.as_bytes()) {
                Ok(csr) => csr,
                Err(e) => return Some(format!("the request is not a valid CSR: {e}")),
            };
            if csr.sans.is_empty() {
                return Some("the CSR has no SAN to check against the rule".into());
            }
            // ".example.org" and "example.org" both cover example.org and the names below it
            let apex = suffix.trim_start_matches('.');
            for san in &csr.sans {
                let domain = match san {
                    pki::San::Dns(d) => d.as_str(),
                    pki::San::Email(e) => e.rsplit('@').next().unwrap_or_default(),
                    other => return Some(format!("SAN {other} is not covered by the rule")),
                };
                if !(domain == apex || domain.ends_with(&format!(".{apex}"))) {
                    return Some(format!("SAN {san} is not under {apex}"));
                }
            }
        }
        None
    }
}

fn log(line: &str) {
    let t = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    eprintln!("{t} {line}");
}

/// What the holder approves: the request's own digest, recomputed here, never taken from
/// the server.
pub fn request_digest(offer: &SessionOffer) -> Result<String, AgentError> {
    match offer.kind {
        SessionKind::Issue => Ok(Csr::parse(offer.request.as_bytes())
            .map_err(|e| AgentError::Refused(format!("the request is not a valid CSR: {e}")))?
            .digest()),
        _ => Ok(pki::sha256_hex(offer.request.as_bytes())),
    }
}

/// Shows the holder what it is asked to approve, read from the request itself (and the
/// CA name from the holder's own manifest), never from the server's description.
fn show(offer: &SessionOffer, digest: &str, ca_name: &str) {
    let s = &offer.summary;
    eprintln!("\n──────── signing request {} ────────", offer.session_id);
    eprintln!("CA:          {ca_name} ({})", offer.ca_id);
    eprintln!("Requester:   {}", offer.requester);
    eprintln!("Kind:        {:?}", offer.kind);
    match Csr::parse(offer.request.as_bytes()) {
        Ok(csr) if offer.kind == SessionKind::Issue => {
            eprintln!("Subject:     {}", csr.subject_string());
            if !csr.sans.is_empty() {
                eprintln!(
                    "SANs:        {}",
                    csr.sans
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            eprintln!("Key:         {}", csr.key);
        }
        _ => eprintln!("Request:     {}", offer.request),
    }
    eprintln!("Profile:     {}   validity {} days", s.profile, s.days);
    eprintln!("Digest:      SHA-256 {digest}");
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
        log(&format!(
            "enrolled token key {} with the server",
            self.key.fingerprint()
        ));
        Ok(())
    }

    /// Logs in to the token with a PIN asked now: in interactive mode the PIN is checked
    /// for every approval, not carried over from an earlier login.
    fn fresh_token_login(&mut self) -> Result<(), AgentError> {
        self.token.logout()?;
        self.logged_in_token = false;
        self.token_login()
    }

    /// Whether to approve; `None` when nobody can be asked (no terminal): the session is
    /// then left unanswered rather than declined.
    fn decide(&mut self, offer: &SessionOffer, digest: &str) -> Result<Option<bool>, AgentError> {
        match &self.opts.approval {
            Approval::Rule(rule) => match rule.refuses(offer) {
                None => {
                    log(&format!(
                        "AUTO-APPROVED by rule (non-interactive mode): session {} {}",
                        offer.session_id, offer.summary.subject
                    ));
                    Ok(Some(true))
                }
                Some(why) => {
                    log(&format!(
                        "declined by rule: session {}: {why}",
                        offer.session_id
                    ));
                    Ok(Some(false))
                }
            },
            Approval::Interactive => {
                show(offer, digest, &self.manifest.body.ca.name);
                eprint!("Approve this request? [y/N] ");
                let _ = std::io::stderr().flush();
                let mut answer = String::new();
                let read = std::io::stdin()
                    .read_line(&mut answer)
                    .map_err(|e| AgentError::Config(e.to_string()))?;
                if read == 0 {
                    log(&format!(
                        "no one to ask (standard input closed): session {} left unanswered; \
                         run the agent in a terminal or give it an approval rule",
                        offer.session_id
                    ));
                    return Ok(None);
                }
                Ok(Some(matches!(answer.trim(), "y" | "Y" | "yes")))
            }
        }
    }

    fn answer(&mut self, offer: &SessionOffer) -> Result<(), AgentError> {
        if offer.ca_id != self.opts.config.ca_id {
            return Err(AgentError::Refused(format!(
                "offer for another CA {}",
                offer.ca_id
            )));
        }
        let digest = request_digest(offer)?;
        if digest != offer.request_sha256 {
            return Err(AgentError::Refused(
                "the server's digest does not match the request it shows".into(),
            ));
        }
        let Some(approved) = self.decide(offer, &digest)? else {
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
            log(&format!("declined session {}", offer.session_id));
            return Ok(());
        }
        let interactive = matches!(self.opts.approval, Approval::Interactive);
        if interactive {
            self.fresh_token_login()?;
        } else {
            self.token_login()?;
        }
        let share_json = self.token.read_share(&self.opts.config.ca_id)?;
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
            ca_id: offer.ca_id.clone(),
            session_id: offer.session_id.clone(),
            nonce: offer.nonce.clone(),
            expires_at: offer.expires_at,
            holder_id: self.opts.config.holder_id.clone(),
            request_sha256: digest,
            profile: offer.summary.profile.clone(),
            days: offer.summary.days,
            ciphertext_sha256: pki::sha256_hex(ciphertext.as_bytes()),
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
            },
        )?;
        log(&format!(
            "share sent for session {}: {} of {} approvals, state {}",
            offer.session_id,
            status.approved.len(),
            status.threshold,
            status.state.as_str()
        ));
        Ok(())
    }
}

/// Runs the agent: connect, enroll if needed, log in, then answer sessions for ever (or
/// until `max_sessions`).
pub fn run(opts: AgentOptions) -> Result<(), AgentError> {
    let cfg = &opts.config;
    let url = cfg
        .server_url
        .clone()
        .ok_or_else(|| AgentError::Config("no server_url in the configuration".into()))?;
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
        log(
            "WARNING: non-interactive mode: requests matching the approval rule are signed WITHOUT asking anyone",
        );
    }
    let _ = &agent.module;
    // sessions answered, declined, failed or left unanswered, until they expire: the poll
    // asks the server to skip them, so it waits for news instead of offering them again
    let mut done: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut handled: usize = 0;
    let mut failures: u32 = 0;
    let mut logged_in = false;
    loop {
        if !logged_in {
            match agent.server_login() {
                Ok(()) => {
                    logged_in = true;
                    failures = 0;
                    log(&format!(
                        "connected to {url} as {} (CA {})",
                        agent.opts.config.holder_id, agent.opts.config.ca_id
                    ));
                }
                Err(AgentError::Client(
                    e @ (ClientError::Unreachable { .. } | ClientError::Api { status: 429, .. }),
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
            "{API}/agent/poll?wait={}&skip={}",
            HEARTBEAT_SECS - 5,
            skip.join(",")
        ));
        match polled {
            Ok(poll) => {
                failures = 0;
                let mut news = false;
                for offer in &poll.sessions {
                    if done.contains_key(&offer.session_id) {
                        continue;
                    }
                    news = true;
                    match agent.answer(offer) {
                        // not answered yet: it is offered again after reconnecting
                        Err(AgentError::Client(e @ ClientError::Unreachable { .. })) => {
                            log(&format!("session {}: {e}; will retry", offer.session_id));
                        }
                        outcome => {
                            done.insert(offer.session_id.clone(), offer.expires_at);
                            handled += 1;
                            if let Err(e) = outcome {
                                log(&format!("session {}: {e}", offer.session_id));
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
    let secs = if failures <= QUICK_RETRIES {
        u64::from(failures)
    } else {
        30
    };
    log(&format!(
        "server unreachable ({why}); attempt {failures}, retrying in {secs} s"
    ));
    std::thread::sleep(Duration::from_secs(secs));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::OfferSummary;

    fn offer(kind: SessionKind, profile: &str, request: &str) -> SessionOffer {
        SessionOffer {
            session_id: "s".into(),
            ca_id: "c".into(),
            ca_name: "CA".into(),
            kind,
            requester: "op".into(),
            request: request.into(),
            request_sha256: String::new(),
            summary: OfferSummary {
                subject: String::new(),
                sans: vec![],
                key: String::new(),
                profile: profile.into(),
                days: 30,
                serial: None,
                reason: None,
            },
            nonce: String::new(),
            expires_at: 0,
            recipient: String::new(),
        }
    }

    #[test]
    fn a_rule_for_revocations_alone_approves_no_certificate() {
        let rule = ApprovalRule {
            allow_revocation: true,
            ..Default::default()
        };
        assert!(
            rule.refuses(&offer(SessionKind::Issue, "server", ""))
                .is_some()
        );
        assert!(rule.refuses(&offer(SessionKind::Crl, "crl", "")).is_none());
        assert!(
            ApprovalRule::default()
                .refuses(&offer(SessionKind::Revoke, "revoke", ""))
                .is_some()
        );
    }

    #[test]
    fn a_suffix_covers_the_domain_and_below_only() {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let csr_for = |name: &str| {
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            let signer = TestKey(key.clone());
            params.serialize_request(&signer).unwrap().pem().unwrap()
        };
        for suffix in ["example.org", ".example.org"] {
            let rule = ApprovalRule {
                san_suffix: Some(suffix.into()),
                ..Default::default()
            };
            assert!(
                rule.refuses(&offer(
                    SessionKind::Issue,
                    "server",
                    &csr_for("www.example.org")
                ))
                .is_none()
            );
            assert!(
                rule.refuses(&offer(
                    SessionKind::Issue,
                    "server",
                    &csr_for("example.org")
                ))
                .is_none()
            );
            assert!(
                rule.refuses(&offer(
                    SessionKind::Issue,
                    "server",
                    &csr_for("evilexample.org")
                ))
                .is_some()
            );
            assert!(
                rule.refuses(&offer(SessionKind::Issue, "server", "not a csr"))
                    .is_some()
            );
        }
    }

    struct TestKey(p256::ecdsa::SigningKey);

    impl rcgen::PublicKeyData for TestKey {
        fn der_bytes(&self) -> &[u8] {
            Box::leak(self.0.verifying_key().to_sec1_bytes())
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }

    impl rcgen::SigningKey for TestKey {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            use p256::ecdsa::signature::Signer;
            let sig: p256::ecdsa::Signature = self.0.sign(msg);
            Ok(sig.to_der().as_bytes().to_vec())
        }
    }
}
