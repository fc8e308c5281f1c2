//! The Session page (`/ui/sessions/{id}`): k of M approvals, who answered and when, the
//! time left, cancel, the certificate or CRL once signed, and exactly what the holders are
//! asked to approve. `/ui/sessions/{id}/events` pushes its status (server-sent events)
//! for `static/app.js`; the page is whole without it.

use super::{SignedIn, WebError, WebResult, blocking, csrf_field, layout, page, shown};
use crate::proto::{SessionKind, SessionState, SessionStatus};
use crate::server::State;
use axum::Router;
use axum::extract::{Form, Path, State as AppState};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/ui/sessions/{id}", get(session_page))
        .route("/ui/sessions/{id}/events", get(events))
        .route("/ui/sessions/{id}/cancel", post(cancel))
        .route("/ui/sessions/{id}/certificate.pem", get(certificate))
        .route("/ui/sessions/{id}/crl.pem", get(crl))
}

fn well_formed(id: &str) -> WebResult<()> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(WebError::new(404, "There is no such session."))
    }
}

/// What the page shows beside the status: the request the holders approve.
struct Shown {
    status: SessionStatus,
    ca_name: String,
    total: u8,
    /// The CSR (PEM) or the revocation/CRL statement, as stored.
    request: String,
    request_sha256: String,
    reason: Option<String>,
}

fn gather(state: &State, id: &str) -> crate::server::ApiResult<Shown> {
    let status = state.status(id)?;
    let manifest = state.manifest(&status.ca_id)?;
    let row = state
        .read_store(|s| s.session(id))?
        .ok_or_else(|| crate::server::ApiErr::new(404, "not-found", "no such session"))?;
    Ok(Shown {
        ca_name: manifest.body.ca.name.clone(),
        total: manifest.body.share_set.total,
        request: row.request,
        request_sha256: row.request_sha256,
        reason: row.reason,
        status,
    })
}

async fn session_page(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(id): Path<String>,
) -> WebResult<Markup> {
    well_formed(&id)?;
    let i = id.clone();
    let shown_ = blocking(move || gather(&state, &i)).await?;
    Ok(page(
        &format!("Session {}", &id[..id.len().min(8)]),
        Some(&user),
        body(&user, &shown_),
    ))
}

fn kind_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Issue => "issue a certificate",
        SessionKind::IssueBatch => "issue a batch of certificates",
        SessionKind::Revoke => "revoke a certificate and sign a new CRL",
        SessionKind::Crl => "sign a new CRL",
        SessionKind::Policy => "change the CA policy (a new manifest)",
        SessionKind::Reshare => "reshare the CA to a new holder set",
    }
}

/// `k of M approvals`, what `#progress` says.
pub fn progress_text(status: &SessionStatus) -> String {
    format!(
        "{} of {} approvals",
        status.approved.len(),
        status.threshold
    )
}

fn answers(status: &SessionStatus) -> Markup {
    html! {
        ul #approvals {
            @for a in &status.answers {
                li data-outcome=(a.outcome) {
                    strong { (shown(&a.holder)) } " " (shown(&a.outcome)) " at " (layout::when(a.at))
                    @if !a.detail.is_empty() && a.outcome != "approved" {
                        ": " span.muted { (shown(&a.detail)) }
                    }
                }
            }
        }
        @if status.answers.is_empty() {
            p.muted #no-answers { "No holder has answered yet." }
        }
    }
}

fn body(user: &SignedIn, s: &Shown) -> Markup {
    let st = &s.status;
    let waiting = st.state == SessionState::Waiting;
    let events = format!("/ui/sessions/{}/events", st.session_id);
    // a policy session's request is a whole manifest body: its policy is what changes
    let new_manifest = (st.kind == SessionKind::Policy)
        .then(|| serde_json::from_str::<crate::manifest::ManifestBody>(&s.request).ok())
        .flatten();
    html! {
        section.card #session data-events=[waiting.then_some(events.as_str())]
            data-threshold=(st.threshold) {
            (layout::facts(&[
                ("What", html! { (kind_name(st.kind)) }),
                ("CA", html! { a href={ "/ui/cas/" (st.ca_id) } { (shown(&s.ca_name)) } }),
                ("Requested by", html! { (shown(&st.requester)) }),
                ("State", html! { strong #state data-state=(st.state.as_str()) { (st.state.as_str()) } }),
                ("Time left", html! {
                    span #time-left data-seconds=(st.seconds_left) {
                        @if waiting { (layout::ago(st.seconds_left)) " (until " (layout::when(st.expires_at)) ")" }
                        @else { "—" }
                    }
                }),
                ("Progress", html! {
                    span #progress { (progress_text(st)) }
                    " " progress #progress-bar max=(st.threshold) value=(st.approved.len()) {}
                    span.muted { " (" (s.total) " holders)" }
                }),
            ]))
            @if let Some(detail) = &st.detail {
                p #detail { (shown(detail)) }
            }
        }
        section.card {
            h2 { "Answers" }
            (answers(st))
        }
        @if st.state == SessionState::Signed {
            section.card #signed {
                h2 { "Signed" }
                @if st.certificate_pem.is_some() {
                    p { a.button #certificate-download href={ "/ui/sessions/" (st.session_id) "/certificate.pem" }
                        download { "Download the certificate (PEM)" } }
                    @if let Some(serial) = &st.serial {
                        p { "Serial " code { (serial) } " · "
                            (super::request::revoke_link(&st.ca_id, serial)) }
                    }
                }
                @if st.crl_pem.is_some() {
                    p { a.button #crl-download href={ "/ui/sessions/" (st.session_id) "/crl.pem" }
                        download { "Download the CRL (PEM)" } }
                }
            }
        }
        section.card #approving {
            h2 { "What the holders approve" }
            @if let Some(view) = &st.certificate {
                (super::request::certificate_facts(view, st.state == SessionState::Signed))
            }
            @if let Some(body) = &new_manifest {
                p { "The CA's manifest again, with policy revision "
                    strong #policy-revision { (body.policy_revision) } " and this policy:" }
                pre #new-policy { (body.policy.as_ref().map_or_else(
                    || "(none: M approvals, no rule)".to_owned(),
                    crate::policy::Policy::to_json_pretty)) }
            } @else if st.kind == SessionKind::IssueBatch {
                p { "A batch of " (st.certificates.len()) " certificates, approved together:" }
                table #batch {
                    thead { tr { th { "#" } th { "Serial" } th { "Subject" } } }
                    tbody {
                        @for (i, c) in st.certificates.iter().enumerate() {
                            tr { td { (i + 1) } td { code { (c.serial) } } td { (shown(&c.subject)) } }
                        }
                    }
                }
            } @else if st.kind != SessionKind::Issue {
                @if let Some(serial) = &st.serial {
                    p { "Revoke serial " code #revoke-serial { (serial) } ", reason "
                        strong { (shown(s.reason.as_deref().unwrap_or("unspecified"))) } "." }
                }
                p { "The statement each holder's token signs:" }
                pre #statement { (shown(&s.request)) }
            }
            p.muted { "Request SHA-256 (what the agents show): " code { (s.request_sha256) } }
        }
        @if waiting {
            form method="post" action={ "/ui/sessions/" (st.session_id) "/cancel" } #cancel-form {
                (csrf_field(user))
                button.secondary type="submit" #cancel { "Cancel the session" }
            }
        }
    }
}

async fn events(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match crate::server::push::session_events(state, &user.operator, &id).await {
        Ok(sse) => sse.into_response(),
        Err(e) => WebError::from(e).into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn cancel(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> WebResult<Response> {
    well_formed(&id)?;
    user.check_csrf(&form.csrf)?;
    let (operator, i) = (user.operator.clone(), id.clone());
    blocking(move || state.cancel(&operator, &i)).await?;
    Ok(Redirect::to(&format!("/ui/sessions/{id}")).into_response())
}

fn pem_download(name: String, pem: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        pem,
    )
        .into_response()
}

async fn certificate(
    AppState(state): AppState<Arc<State>>,
    _: SignedIn,
    Path(id): Path<String>,
) -> WebResult<Response> {
    well_formed(&id)?;
    let i = id.clone();
    let status = blocking(move || state.status(&i)).await?;
    let pem = status
        .certificate_pem
        .ok_or_else(|| WebError::new(404, "This session has no certificate (yet)."))?;
    let serial = status.serial.unwrap_or(id);
    Ok(pem_download(format!("{serial}.pem"), pem))
}

async fn crl(
    AppState(state): AppState<Arc<State>>,
    _: SignedIn,
    Path(id): Path<String>,
) -> WebResult<Response> {
    well_formed(&id)?;
    let i = id.clone();
    let status = blocking(move || state.status(&i)).await?;
    let pem = status
        .crl_pem
        .ok_or_else(|| WebError::new(404, "This session has no CRL (yet)."))?;
    Ok(pem_download(format!("{}.crl.pem", status.ca_id), pem))
}
