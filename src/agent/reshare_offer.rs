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

/// What the holder is shown for a `reshare` offer (every string escaped); `None` for
/// other kinds.
pub(super) fn lines(offer: &SessionOffer) -> Option<Vec<String>> {
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
    out.push(format!(
        "New agents:  {}",
        esc(s.server_url.as_deref().unwrap_or("(no server URL)"))
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
