//! The Audit page (`/ui/audit`): the hash-chained log newest first, a page at a time, with
//! the chain's verification status, filtered by kind, holder and CA; `?format=json`
//! exports the entries the same filters select.

use super::{SignedIn, WebError, WebResult, blocking, layout, page, shown};
use crate::server::{ApiResult, State};
use crate::store::{AuditEntry, AuditFilter, AuditProblem};
use axum::Router;
use axum::extract::{Query, State as AppState};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Entries per page.
pub const PAGE_SIZE: u32 = 100;
/// Most entries one JSON export holds (the newest ones; `truncated` says so).
pub const MAX_EXPORT: u32 = 100_000;

pub fn routes() -> Router<Arc<State>> {
    Router::new().route("/ui/audit", get(audit))
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    kind: Option<String>,
    holder: Option<String>,
    ca: Option<String>,
    page: Option<u32>,
    format: Option<String>,
}

/// An empty or overlong filter field selects everything.
fn field(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s.len() <= 128)
}

struct AuditData {
    chain: Result<usize, AuditProblem>,
    total: u64,
    entries: Vec<AuditEntry>,
    kinds: Vec<String>,
    cas: Vec<String>,
}

fn read(state: &State, filter: &AuditFilter, offset: u32, limit: u32) -> ApiResult<AuditData> {
    Ok(state.read_store(|s| {
        let chain = s.verify_audit()?;
        let (total, entries) = s.audit_page(filter, offset, limit)?;
        let kinds = s.audit_kinds()?;
        let cas = s.cas()?.into_iter().map(|c| c.ca_id).collect();
        Ok::<_, crate::store::StoreError>(AuditData {
            chain,
            total,
            entries,
            kinds,
            cas,
        })
    })?)
}

async fn audit(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Query(q): Query<AuditQuery>,
) -> WebResult<Response> {
    let filter = AuditFilter {
        event: field(q.kind),
        holder_id: field(q.holder),
        ca_id: field(q.ca),
    };
    let page_number = q.page.unwrap_or(1).max(1);
    match q.format.as_deref() {
        Some("json") => {
            let f = filter.clone();
            let data = blocking(move || read(&state, &f, 0, MAX_EXPORT)).await?;
            Ok(export(&filter, data))
        }
        None | Some("html") => {
            let f = filter.clone();
            let offset = page_number.saturating_sub(1).saturating_mul(PAGE_SIZE);
            let data = blocking(move || read(&state, &f, offset, PAGE_SIZE)).await?;
            Ok(render(&user, &filter, &data, page_number).into_response())
        }
        Some(_) => Err(WebError::new(400, "format must be json or html.")),
    }
}

fn chain_json(chain: &Result<usize, AuditProblem>) -> serde_json::Value {
    match chain {
        Ok(n) => serde_json::json!({ "intact": true, "entries": n }),
        Err(p) => serde_json::json!({ "intact": false, "broken_at": p.seq, "problem": p.what }),
    }
}

/// The JSON export: the chain's status, the filter, and the selected entries in log
/// order (oldest first, as `nkpki audit export` writes them).
fn export(filter: &AuditFilter, data: AuditData) -> Response {
    let mut entries = data.entries;
    entries.reverse();
    let body = serde_json::json!({
        "chain": chain_json(&data.chain),
        "filter": { "kind": filter.event, "holder": filter.holder_id, "ca": filter.ca_id },
        "total": data.total,
        "truncated": data.total > entries.len() as u64,
        "entries": entries,
    });
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"nkpki-audit.json\""),
            ),
        ],
        serde_json::to_vec_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

/// `/ui/audit` with `filter` and the given extra parameters, as a link.
fn link(filter: &AuditFilter, extra: &str) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("kind", &filter.event),
        ("holder", &filter.holder_id),
        ("ca", &filter.ca_id),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", super::ca::query_escape(v)));
        }
    }
    if !extra.is_empty() {
        parts.push(extra.to_owned());
    }
    if parts.is_empty() {
        "/ui/audit".to_owned()
    } else {
        format!("/ui/audit?{}", parts.join("&"))
    }
}

fn render(user: &SignedIn, filter: &AuditFilter, data: &AuditData, page_number: u32) -> Markup {
    let pages = data.total.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let selected = |v: &Option<String>, x: &str| v.as_deref() == Some(x);
    page(
        "Audit log",
        Some(user),
        html! {
            section.card id="chain" {
                @match &data.chain {
                    Ok(n) => p.ok id="chain-status" {
                        "Chain verified: " (n) " entries, each linked to the one before it; none edited, removed or inserted."
                    },
                    Err(problem) => div.error role="alert" id="chain-status" {
                        "Chain BROKEN at entry " (problem.seq) ": " (shown(&problem.what))
                        ". Entries from there on cannot be trusted; compare with a backup."
                    },
                }
            }
            form.search method="get" action="/ui/audit" role="search" {
                div {
                    label for="kind" { "Kind" }
                    select name="kind" id="kind" {
                        option value="" { "any" }
                        @for k in &data.kinds {
                            option value=(k) selected[selected(&filter.event, k)] { (shown(k)) }
                        }
                    }
                }
                div {
                    label for="holder" { "Holder" }
                    input type="text" name="holder" id="holder" placeholder="NK001" maxlength="128"
                        value=(filter.holder_id.as_deref().unwrap_or_default());
                }
                div {
                    label for="ca" { "CA" }
                    select name="ca" id="ca" {
                        option value="" { "any" }
                        @for c in &data.cas {
                            option value=(c) selected[selected(&filter.ca_id, c)] { (c) }
                        }
                    }
                }
                button type="submit" { "Filter" }
                a.button.secondary id="export-json" href=(link(filter, "format=json")) download { "Export JSON" }
            }
            p id="audit-count" {
                (data.total) " entr" @if data.total == 1 { "y" } @else { "ies" }
                @if pages > 1 { " · page " (page_number) " of " (pages) }
            }
            div.table-wrap {
                table id="audit" {
                    thead { tr {
                        th { "#" } th { "Time" } th { "Kind" } th { "CA" } th { "Session" }
                        th { "Holder" } th { "Detail" }
                    } }
                    tbody {
                        @for e in &data.entries {
                            tr {
                                td { (e.seq) }
                                td { (layout::when(e.at)) }
                                td { a href=(link(&AuditFilter { event: Some(e.event.clone()), ..Default::default() }, "")) { (shown(&e.event)) } }
                                td { @if let Some(ca) = &e.ca_id { a.mono href={ "/ui/cas/" (ca) } { (shown(ca.get(..8).unwrap_or(ca))) "…" } } }
                                td { @if let Some(s) = &e.session_id { a.mono href={ "/ui/sessions/" (s) } { (shown(s.get(..8).unwrap_or(s))) "…" } } }
                                td { @if let Some(h) = &e.holder_id { (shown(h)) } }
                                td { (shown(&e.detail)) }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                nav.pager aria-label="Pages" {
                    @if page_number > 1 { a rel="prev" href=(link(filter, &format!("page={}", page_number - 1))) { "← Newer" } }
                    @if u64::from(page_number) < pages { a rel="next" href=(link(filter, &format!("page={}", page_number + 1))) { "Older →" } }
                }
            }
        },
    )
}
