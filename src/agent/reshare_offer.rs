//! The agent's side of an online reshare: what a `reshare` offer asks (checked against the
//! holder's own manifest and shown in full: the old and the new holders and thresholds,
//! each new holder's age recipient), and the enrollment of this token for a new share set
//! that the server has not switched to yet.

use super::{Agent, AgentError, Approving};
use crate::client::ClientError;
use crate::manifest::VerifiedManifest;
use crate::pki;
use crate::proto::{self, API, RESHARE_FORMAT, ReshareStatement, SessionOffer};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

fn statement(offer: &SessionOffer) -> Result<ReshareStatement, AgentError> {
    serde_json::from_str(&offer.request)
        .map_err(|e| AgentError::Refused(format!("the reshare request is malformed: {e}")))
}

/// Checks a `reshare` offer: it reshares this CA from the very set this holder's manifest
/// describes (version, id, threshold, holders), to the next version, and every new holder
/// has an age recipient its package will be sealed to.
pub(super) fn recompute(
    offer: &SessionOffer,
    manifest: &VerifiedManifest,
) -> Result<Approving, AgentError> {
    let refused = |why: &str| Err(AgentError::Refused(why.to_owned()));
    let s = statement(offer)?;
    let current_holders: Vec<String> = manifest
        .body
        .holders
        .iter()
        .map(|h| h.nitrokey_id.clone())
        .collect();
    if s.format != RESHARE_FORMAT || s.ca_id != offer.ca_id || s.ca_id != manifest.ca_id().0 {
        return refused("the reshare request is not for this CA");
    }
    if s.current_set_id != manifest.body.share_set.id().0
        || s.current_set_version != manifest.set_version()
        || s.current_threshold != manifest.threshold()
        || s.current_holders != current_holders
    {
        return refused(
            "the reshare request describes another current share set than this holder's \
             manifest (an older or newer manifest on one side?)",
        );
    }
    let mine = &manifest.digest;
    if &s.supersedes != mine {
        return Err(AgentError::Refused(format!(
            "the reshare request supersedes manifest {}, not this holder's manifest {mine}: \
             one side holds an older manifest (after a policy change this agent adopts the \
             new manifest within a minute; if the refusal stays, compare the manifests)",
            pki::text::escape(&s.supersedes)
        )));
    }
    if s.new_set_version != manifest.set_version() + 1 {
        return refused("the reshare request skips a share set version");
    }
    for h in &s.holders {
        let recipient = h.age_recipient.as_deref().unwrap_or_default();
        if crate::seal::parse_recipient(recipient).is_err() {
            return Err(AgentError::Refused(format!(
                "new holder {} has no valid age recipient",
                pki::text::escape(&h.nitrokey_id)
            )));
        }
    }
    Ok(Approving {
        request_sha256: pki::sha256_hex(offer.request.as_bytes()),
        certificate: None,
        tbs: None,
        crl: None,
        batch: Vec::new(),
    })
}

/// The server an agent talks to and how it trusts it.
pub(super) struct OwnServer {
    pub url: String,
    /// The certificate pin it uses (`server_cert_sha256`, `--server-cert-sha256`), if any.
    pub pin: Option<String>,
    /// It was started with `--insecure-http`.
    pub insecure_http: bool,
}

/// A pin as compared: hex digits only, lower case (`AA:BB…` and `aabb…` are one pin).
fn normal_pin(pin: &str) -> String {
    pin.chars()
        .filter(|c| *c != ':')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A URL as compared: no trailing `/`, lower case.
fn normal_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Checks where the reshare points the new agents (`server_url` and `server_cert_sha256`
/// go into every package's `agent.json`): a plain http URL only for an agent that itself
/// runs with `--insecure-http`; and for the server this agent uses, no other pin than the
/// one this agent trusts it by.
pub(super) fn check_new_agents(offer: &SessionOffer, own: &OwnServer) -> Result<(), AgentError> {
    let s = statement(offer)?;
    let Some(url) = s.server_url.as_deref() else {
        return Ok(());
    };
    if crate::package::is_plain_http(url) && !own.insecure_http {
        return Err(AgentError::Refused(format!(
            "the new agents would reach the server by plain http ({}): refused (an agent \
             started with --insecure-http accepts it)",
            pki::text::escape(url)
        )));
    }
    // the checks `ca-init --package` and the server make of the URL and pin
    if let Err(p) =
        crate::package::check_server_info(s.server_url.clone(), s.server_cert_sha256.clone(), true)
    {
        return Err(AgentError::Refused(format!(
            "where the new agents would connect: {}",
            pki::text::escape(&p.message)
        )));
    }
    if normal_url(url) == normal_url(&own.url)
        && let Some(pin) = &own.pin
        && s.server_cert_sha256.as_deref().map(normal_pin) != Some(normal_pin(pin))
    {
        return Err(AgentError::Refused(format!(
            "the new agents would trust server {} by certificate {}, but this agent trusts \
             that server by certificate {}: refused",
            pki::text::escape(url),
            pki::text::escape(s.server_cert_sha256.as_deref().unwrap_or("(system roots)")),
            pki::text::escape(pin)
        )));
    }
    Ok(())
}

/// What the holder is shown for a `reshare` offer (every string escaped), with the policy
/// of this holder's manifest, which the new set inherits; `None` for other kinds.
pub(super) fn lines(offer: &SessionOffer, manifest: &VerifiedManifest) -> Option<Vec<String>> {
    if offer.kind != proto::SessionKind::Reshare {
        return None;
    }
    let s = statement(offer).ok()?;
    let esc = pki::text::escape;
    let mut out = vec![
        format!("Reshare:     the CA key and certificate stay; its KEK and shares are replaced"),
        format!(
            "Current:     set version {}, {} of {} ({})",
            s.current_set_version,
            s.current_threshold,
            s.current_holders.len(),
            esc(&s.current_holders.join(", "))
        ),
        format!(
            "New:         set version {}, {} of {}",
            s.new_set_version,
            s.threshold,
            s.holders.len()
        ),
    ];
    for h in &s.holders {
        let status = if s.current_holders.contains(&h.nitrokey_id) {
            "kept"
        } else {
            "added"
        };
        out.push(format!(
            "  {} ({status}): {} <{}>, {}; package sealed to {}",
            esc(&h.nitrokey_id),
            esc(&h.holder_name),
            esc(&h.holder_email),
            esc(&h.location),
            esc(h.age_recipient.as_deref().unwrap_or("(none)"))
        ));
    }
    let removed: Vec<&str> = s
        .current_holders
        .iter()
        .filter(|c| !s.holders.iter().any(|h| &h.nitrokey_id == *c))
        .map(String::as_str)
        .collect();
    if !removed.is_empty() {
        out.push(format!("Removed:     {}", esc(&removed.join(", "))));
    }
    out.push(
        match (&manifest.body.policy, manifest.body.policy_revision) {
            (Some(_), revision) => format!("Policy:      inherited (revision {revision})"),
            (None, _) => "Policy:      none (inherited: the new set has none either)".to_owned(),
        },
    );
    let url = s.server_url.as_deref().unwrap_or("(no server URL)");
    out.push(format!(
        "New agents:  {}{}",
        esc(url),
        if crate::package::is_plain_http(url) {
            "  !! PLAIN HTTP: anyone on the path reads and alters what the agents see !!"
        } else {
            ""
        }
    ));
    out.push(format!(
        "  trusting:  {}",
        match &s.server_cert_sha256 {
            Some(pin) => format!("only the server certificate with SHA-256 {}", esc(pin)),
            None => "the system's root certificates".to_owned(),
        }
    ));
    Some(out)
}

/// An agent whose manifest is a reshared one (it supersedes another) enrolls its token
/// for that share set first: if the server holds the set pending, this counts toward the
/// switch; if the set is already the CA's, or the code is not a pending set's (an offline
/// reshare registered by an operator), the usual login follows.
pub(super) fn enroll_for_new_set(agent: &mut Agent) -> Result<(), AgentError> {
    if agent.manifest.body.supersedes.is_none() {
        return Ok(());
    }
    let ca_id = agent.opts.config.ca_id.clone();
    let holder_id = agent.opts.config.holder_id.clone();
    agent.token_login()?;
    let pem = agent.key.public_key_pem();
    let signature = B64.encode(agent.token.sign(
        &agent.key,
        &proto::enroll_signed_bytes(&ca_id, &holder_id, &pem),
    )?);
    let enroll = proto::Enroll {
        ca_id,
        holder_id,
        enrollment_code: agent.opts.config.enrollment_code.clone(),
        public_key_pem: pem,
        signature,
    };
    let answer: Result<serde_json::Value, ClientError> =
        agent.client.post(&format!("{API}/enroll"), &enroll);
    match answer {
        Ok(v) => match v.get("share_set_version").and_then(|n| n.as_u64()) {
            Some(version) => tracing::info!(
                "enrolled token key {} for share set version {version}: {} of the {} \
                 enrollments the switch needs{}",
                agent.key.fingerprint(),
                v["new_set_enrolled"].as_u64().unwrap_or(0),
                v["new_set_needed"].as_u64().unwrap_or(0),
                if v["switched"].as_bool().unwrap_or(false) {
                    "; the server has switched to it"
                } else {
                    "; until the switch the current set signs, and this share is refused"
                }
            ),
            None => tracing::info!(
                "enrolled token key {} with the server",
                agent.key.fingerprint()
            ),
        },
        Err(e) if matches!(e.code(), Some("code-used" | "bad-code")) => {
            tracing::debug!("no enrollment for a pending share set: {e}");
        }
        Err(e) => tracing::warn!("could not enroll for the new share set: {e}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::ceremony::{self, CeremonyParams, Holder, NitrokeyId};
    use crate::pki::{CaSubject, KeyAlgorithm};
    use crate::proto::ReshareHolder;

    fn holder(i: u32) -> Holder {
        Holder {
            nitrokey_id: NitrokeyId::parse(&format!("NK00{i}")).unwrap(),
            holder_name: format!("Holder {i}"),
            holder_email: format!("h{i}@example.org"),
            location: "Paris".into(),
            age_recipient: Some(age::x25519::Identity::generate().to_public()),
        }
    }

    /// A 2-of-3 CA's verified manifest, with a policy when `policy` is given.
    fn manifest(policy: Option<&str>) -> VerifiedManifest {
        let subject = CaSubject {
            name: "Reshare CA".into(),
            org: "nkpki tests".into(),
            country: "FR".into(),
        };
        let mut params = CeremonyParams::new(
            subject,
            KeyAlgorithm::EcdsaP256,
            5,
            None,
            2,
            (1..=3).map(holder).collect(),
        )
        .unwrap();
        if let Some(text) = policy {
            params = params
                .with_policy(crate::policy::Policy::from_toml(text).unwrap())
                .unwrap();
        }
        ceremony::perform(&params, time::OffsetDateTime::now_utc())
            .unwrap()
            .manifest
            .verify()
            .unwrap()
    }

    fn statement(m: &VerifiedManifest, url: &str, pin: Option<&str>) -> ReshareStatement {
        ReshareStatement {
            format: RESHARE_FORMAT.into(),
            ca_id: m.ca_id().0.clone(),
            current_set_version: m.set_version(),
            current_set_id: m.body.share_set.id().0,
            current_threshold: m.threshold(),
            current_holders: m
                .body
                .holders
                .iter()
                .map(|h| h.nitrokey_id.clone())
                .collect(),
            supersedes: m.digest.clone(),
            new_set_version: m.set_version() + 1,
            threshold: 2,
            holders: [2, 3, 4]
                .map(|i| {
                    let h = holder(i);
                    ReshareHolder {
                        nitrokey_id: h.nitrokey_id.to_string(),
                        holder_name: h.holder_name,
                        holder_email: h.holder_email,
                        location: h.location,
                        age_recipient: h.age_recipient.map(|r| r.to_string()),
                    }
                })
                .to_vec(),
            server_url: Some(url.into()),
            server_cert_sha256: pin.map(Into::into),
        }
    }

    fn offer(s: &ReshareStatement) -> SessionOffer {
        serde_json::from_value(serde_json::json!({
            "session_id": "s1",
            "ca_id": s.ca_id,
            "ca_name": "Reshare CA",
            "kind": "reshare",
            "requester": "admin",
            "request": s.to_request(),
            "request_sha256": "",
            "summary": {"profile": "reshare", "days": 0},
            "nonce": "00",
            "expires_at": 0,
            "recipient": "",
        }))
        .unwrap()
    }

    fn own(url: &str, pin: Option<&str>, insecure_http: bool) -> OwnServer {
        OwnServer {
            url: url.into(),
            pin: pin.map(Into::into),
            insecure_http,
        }
    }

    const URL: &str = "https://pki.example.org:8443";
    const PIN: &str = "aa11bb22cc33dd44ee55ff6600112233445566778899aabbccddeeff00112233";

    #[test]
    fn the_holder_sees_the_new_agents_pin_plain_http_and_the_inherited_policy() {
        let m = manifest(Some("version = 1\n[server]\napprovals = 3\n"));
        let shown = lines(&offer(&statement(&m, URL, Some(PIN))), &m)
            .unwrap()
            .join("\n");
        assert!(shown.contains(&format!("New agents:  {URL}\n")), "{shown}");
        assert!(
            shown.contains(&format!("only the server certificate with SHA-256 {PIN}")),
            "{shown}"
        );
        assert!(
            shown.contains("Policy:      inherited (revision 0)"),
            "{shown}"
        );
        let plain = lines(&offer(&statement(&m, "http://10.0.0.1:8080", None)), &m)
            .unwrap()
            .join("\n");
        assert!(plain.contains("PLAIN HTTP"), "{plain}");
        assert!(plain.contains("the system's root certificates"), "{plain}");
        let none = manifest(None);
        let shown = lines(&offer(&statement(&none, URL, None)), &none)
            .unwrap()
            .join("\n");
        assert!(shown.contains("Policy:      none"), "{shown}");
    }

    #[test]
    fn a_reshare_of_another_manifest_than_the_holders_is_refused() {
        let m = manifest(None);
        let mut s = statement(&m, URL, None);
        assert!(recompute(&offer(&s), &m).is_ok());
        s.supersedes = "00".repeat(32);
        let Err(AgentError::Refused(why)) = recompute(&offer(&s), &m) else {
            panic!("a statement superseding another manifest was accepted");
        };
        assert!(
            why.contains("not this holder's manifest") && why.contains("older manifest"),
            "{why}"
        );
    }

    #[test]
    fn new_agents_must_trust_this_server_by_the_same_pin_and_not_by_plain_http() {
        let m = manifest(None);
        let check = |s: &ReshareStatement, own: &OwnServer| check_new_agents(&offer(s), own);
        // the same server, the same pin (in upper case): accepted
        check(
            &statement(&m, URL, Some(&PIN.to_uppercase())),
            &own(URL, Some(PIN), false),
        )
        .unwrap();
        // another pin, or none, for the server this agent pins: refused
        let other = "ff".repeat(32);
        for pin in [Some(other.as_str()), None] {
            let Err(AgentError::Refused(why)) =
                check(&statement(&m, URL, pin), &own(URL, Some(PIN), false))
            else {
                panic!("another pin for this agent's server was accepted");
            };
            assert!(why.contains("this agent trusts that server"), "{why}");
        }
        // another server: its pin is the operator's to give
        check(
            &statement(&m, "https://other.example.org", Some(&other)),
            &own(URL, Some(PIN), false),
        )
        .unwrap();
        // an agent without a pin: any pin
        check(&statement(&m, URL, Some(&other)), &own(URL, None, false)).unwrap();
        // plain http only for an agent that runs --insecure-http itself
        let plain = statement(&m, "http://10.0.0.1:8080", None);
        let Err(AgentError::Refused(why)) = check(&plain, &own(URL, None, false)) else {
            panic!("plain http for the new agents was accepted");
        };
        assert!(why.contains("plain http"), "{why}");
        check(&plain, &own("http://10.0.0.1:8080", None, true)).unwrap();
        // a URL or pin the server should have refused
        let Err(AgentError::Refused(why)) = check(
            &statement(&m, "ftp://pki.example.org", None),
            &own(URL, None, true),
        ) else {
            panic!("an ftp URL for the new agents was accepted");
        };
        assert!(why.contains("must start with https://"), "{why}");
        assert!(check(&statement(&m, URL, Some("not-hex")), &own(URL, None, false)).is_err());
    }
}
