//! The dry run of a session: what `POST /api/v1/sessions` would open, checked and built by
//! the very code that opens it ([`State::prepare_session`]), with nothing stored, offered
//! or audited.

use super::state::{ApiResult, Prepared, State};
use crate::proto::{CreateSession, PreviewRefusal, SessionKind, SessionPreview, SigningMode};

/// Previews `req`. An unknown CA is answered as the session request would be (404
/// `unknown-ca`), and so is a failure of the server itself (5xx); every refusal of the
/// request itself (4xx) is the preview's verdict, `operator`'s role included.
pub fn preview(state: &State, operator: &str, req: &CreateSession) -> ApiResult<SessionPreview> {
    let manifest = state.manifest(&req.ca_id)?;
    let mut preview = SessionPreview {
        ca_id: req.ca_id.clone(),
        ca_name: manifest.body.ca.name.clone(),
        kind: req.kind,
        threshold: manifest.threshold(),
        total: manifest.body.share_set.total,
        mode: if super::threshold::key(&manifest).is_some() {
            SigningMode::Threshold
        } else {
            SigningMode::Reconstruct
        },
        accepted: false,
        refusal: None,
        request: None,
        request_sha256: None,
        summary: None,
        session_ttl: state.session_ttl,
    };
    let role_refusal = match req.kind {
        SessionKind::Policy => state.policy_proposer_refusal(operator)?,
        _ => None,
    };
    match role_refusal.map_or_else(|| state.prepare_session(&manifest, req), Err) {
        Ok(Prepared {
            request,
            request_sha256,
            summary,
            ..
        }) => {
            // the responder key an `ocsp` preview made is dropped here, never written
            preview.accepted = true;
            preview.request = Some(request);
            preview.request_sha256 = Some(request_sha256);
            preview.summary = Some(summary);
        }
        Err(e) if (400..500).contains(&e.status) => {
            preview.refusal = Some(PreviewRefusal {
                status: e.status,
                code: e.code.to_owned(),
                error: e.message,
            });
        }
        Err(e) => return Err(e),
    }
    Ok(preview)
}
