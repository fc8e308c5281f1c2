//! The CA page (`/ui/cas/{id}`): the CA certificate and its downloads, the holders, the
//! issued certificates (paged, searched by CN, SAN or serial, each downloadable), the
//! revocations and the CRL, with a button that opens a session to sign the next CRL.

use super::overview::{holders_table, summaries};
use super::{SignedIn, WebError, WebResult, blocking, csrf_field, layout, page, shown};
use crate::proto::{CreateSession, SessionKind};
use crate::server::{ApiErr, ApiResult, State};
use crate::store::{IssuedRow, now};
use axum::Router;
use axum::extract::{Form, Path, Query, State as AppState};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Issued certificates per page.
pub const PAGE_SIZE: u32 = 50;
/// Longest search accepted.
const MAX_QUERY: usize = 200;

pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/ui/cas/{id}", get(ca_page))
        .route("/ui/cas/{id}/certificates/{file}", get(certificate_pem))
        .route("/ui/cas/{id}/crl", post(sign_crl))
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct CaQuery {
    #[serde(default)]
    q: String,
    page: Option<u32>,
}

/// Everything the CA page shows, read in one go.
pub struct CaPageData {
    summary: super::overview::CaSummary,
    total: u64,
    issued: Vec<IssuedRow>,
    revocations: Vec<(String, String, i64)>,
    crls: Vec<(i64, i64)>,
}

/// Reads one page of a CA's certificates (1-based `page_number`, `q` as on the page).
pub fn ca_page_data(state: &State, id: &str, q: &str, page_number: u32) -> ApiResult<CaPageData> {
    state.manifest(id)?;
    let summary = summaries(state, Some(id))?
        .into_iter()
        .next()
        .ok_or_else(|| ApiErr::new(404, "unknown-ca", format!("no CA {id} is registered")))?;
    let offset = page_number.saturating_sub(1).saturating_mul(PAGE_SIZE);
    let ((total, issued), revocations, crls) = state.read_store(|s| {
        Ok::<_, crate::store::StoreError>((
            s.issued_certificates(id, q, offset, PAGE_SIZE)?,
            s.revocations(id)?,
            s.crl_list(id, 5)?,
        ))
    })?;
    Ok(CaPageData {
        summary,
        total,
        issued,
        revocations,
        crls,
    })
}

/// The CA page's HTML for `data`.
/// `typed` is the search as it came (shown), `q` the search made (controls removed).
pub fn render_ca_page(
    user: &SignedIn,
    data: &CaPageData,
    typed: &str,
    q: &str,
    page_number: u32,
) -> Markup {
    let ca = &data.summary;
    let m = &ca.manifest;
    let id = &ca.id;
    let t = now();
    let pages = data.total.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let link = |p: u64| {
        let mut url = format!("/ui/cas/{id}?page={p}");
        if !q.is_empty() {
            url.push_str("&q=");
            url.push_str(&query_escape(q));
        }
        url
    };
    let mode = if m.threshold_key().is_some() {
        "threshold signing"
    } else {
        "reconstruct"
    };
    page(
        &shown(&m.ca.subject),
        Some(user),
        html! {
            section.card id="certificate" {
                h2 { "CA certificate" }
                (layout::facts(&[
                    ("Subject", html! { (shown(&m.ca.subject)) }),
                    ("CA id", html! { code { (id) } }),
                    ("Fingerprint (SHA-256)", html! { code { (shown(&m.body.certificate_sha256)) } }),
                    ("Key", html! { (shown(&m.body.ca.key)) }),
                    ("Valid", html! { "from " (shown(&m.body.created_at)) " until " (layout::when(m.ca.not_after.unix_timestamp())) }),
                    ("Path length", html! { @match m.ca.path_len { Some(n) => (n), None => "unlimited" } }),
                    ("Approvals", html! { (m.threshold()) " of " (m.body.share_set.total) " holders · " (mode) }),
                ]))
                div.actions {
                    a.button id="ca-pem" href={ "/ca/" (id) ".crt" } download { "Download PEM" }
                    a.button.secondary id="ca-der" href={ "/ca/" (id) ".der" } download { "Download DER" }
                }
            }
            section.card id="holders" {
                h2 { "Holders" }
                (holders_table(ca, t))
            }
            section.card id="issued" {
                h2 { "Issued certificates" }
                form.search method="get" action={ "/ui/cas/" (id) } role="search" {
                    div {
                        label for="q" { "Search by CN, SAN or serial" }
                        input type="search" name="q" id="q" value=(q) maxlength="200";
                    }
                    button type="submit" { "Search" }
                    @if !typed.is_empty() { a href={ "/ui/cas/" (id) } { "Clear" } }
                }
                p id="issued-count" {
                    (data.total) " certificate" @if data.total != 1 { "s" }
                    @if !typed.is_empty() { " matching “" (shown(typed)) "”" }
                    @if pages > 1 { " · page " (page_number) " of " (pages) }
                }
                @if !data.issued.is_empty() {
                    div.table-wrap {
                        table id="certificates" {
                            thead { tr {
                                th { "Serial" } th { "Subject" } th { "Names" } th { "Issued" }
                                th { "Expires" } th { "Status" }
                            } }
                            tbody {
                                @for c in &data.issued {
                                    tr {
                                        td { a.mono href={ "/ui/cas/" (id) "/certificates/" (c.serial) ".pem" } download { (c.serial) } }
                                        td { (shown(&c.subject)) }
                                        td { @for (i, san) in c.sans.iter().enumerate() { @if i > 0 { ", " } (shown(san)) } }
                                        td { (layout::when(c.issued_at)) }
                                        td { (layout::when(c.not_after)) }
                                        td {
                                            @if let Some((reason, at)) = &c.revoked {
                                                span.badge.bad { "revoked" } " " (shown(reason)) ", " (layout::when(*at))
                                            } @else if c.not_after < t {
                                                span.badge.muted { "expired" }
                                            } @else {
                                                span.badge.ok { "valid" }
                                                " " (super::request::revoke_link(id, &c.serial))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if pages > 1 {
                    nav.pager aria-label="Pages" {
                        @if page_number > 1 { a rel="prev" href=(link(u64::from(page_number) - 1)) { "← Newer" } }
                        @if u64::from(page_number) < pages { a rel="next" href=(link(u64::from(page_number) + 1)) { "Older →" } }
                    }
                }
            }
            section.card id="revocations" {
                h2 { "Revocations" }
                @if data.revocations.is_empty() {
                    p.muted { "No certificate of this CA is revoked." }
                } @else {
                    div.table-wrap {
                        table {
                            thead { tr { th { "Serial" } th { "Reason" } th { "Revoked" } } }
                            tbody {
                                @for (serial, reason, at) in data.revocations.iter().rev() {
                                    tr { td.mono { (shown(serial)) } td { (shown(reason)) } td { (layout::when(*at)) } }
                                }
                            }
                        }
                    }
                }
            }
            section.card id="crl" {
                h2 { "Certificate revocation list" }
                @if let Some((number, at)) = data.crls.first() {
                    p { "CRL number " (number) ", signed " (layout::when(*at)) "." }
                    div.actions {
                        a.button id="crl-der" href={ "/crl/" (id) ".crl" } download { "Download CRL (DER)" }
                        a.button.secondary id="crl-pem" href={ "/crl/" (id) ".pem" } download { "Download CRL (PEM)" }
                    }
                } @else {
                    p.muted { "This CA has not signed a CRL yet." }
                }
                form method="post" action={ "/ui/cas/" (id) "/crl" } {
                    (csrf_field(user))
                    p.muted { "Signing a CRL opens a session: " (m.threshold()) " holders must approve it." }
                    button type="submit" id="sign-crl" { "Sign a new CRL" }
                }
            }
        },
    )
}

/// `s` percent-encoded for a query string.
pub(super) fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn ca_page(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<CaQuery>,
) -> WebResult<Markup> {
    // what was typed is shown (controls made visible); what is searched has none
    let typed: String = query.q.chars().take(MAX_QUERY).collect();
    let q: String = typed
        .chars()
        .filter(|c| crate::pki::text::unsafe_char(*c).is_none())
        .collect();
    let page_number = query.page.unwrap_or(1).max(1);
    let (i, search) = (id.clone(), q.clone());
    let data = blocking(move || ca_page_data(&state, &i, &search, page_number)).await?;
    Ok(render_ca_page(&user, &data, &typed, &q, page_number))
}

async fn certificate_pem(
    AppState(state): AppState<Arc<State>>,
    _: SignedIn,
    Path((id, file)): Path<(String, String)>,
) -> WebResult<Response> {
    let serial = file
        .strip_suffix(".pem")
        .filter(|s| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_lowercase)
        .ok_or_else(|| WebError::new(404, "There is no such certificate."))?;
    let s = serial.clone();
    let pem = blocking(move || Ok(state.read_store(|store| store.issued_pem(&id, &s))?)).await?;
    let pem = pem.ok_or_else(|| {
        WebError::new(
            404,
            format!("This CA issued no certificate with serial {serial}."),
        )
    })?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{serial}.pem\""))
        .map_err(|e| WebError::new(500, e.to_string()))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        pem,
    )
        .into_response())
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// Opens a session to sign the CA's next CRL (as `POST /api/v1/sessions` with kind `crl`
/// does) and shows it.
async fn sign_crl(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> WebResult<Redirect> {
    user.check_csrf(&form.csrf)?;
    let operator = user.operator.clone();
    let status = blocking(move || {
        state.create_session(
            &operator,
            CreateSession {
                ca_id: id,
                kind: SessionKind::Crl,
                csr_pem: None,
                csr_pems: Vec::new(),
                profile: None,
                days: None,
                serial: None,
                reason: None,
                new_policy: None,
            },
        )
    })
    .await?;
    Ok(Redirect::to(&format!("/ui/sessions/{}", status.session_id)))
}
