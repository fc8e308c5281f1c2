//! The Overview page (`/ui/`): every CA with its holders (enrolled, online, last answer)
//! and the sessions waiting for approvals.

use super::{SignedIn, WebResult, blocking, layout, page, shown};
use crate::manifest::VerifiedManifest;
use crate::pki::CertificateView;
use crate::proto::SessionKind;
use crate::server::{ApiResult, State};
use crate::store::{LastAnswer, OpenSession, now};
use axum::Router;
use axum::extract::State as AppState;
use axum::routing::get;
use maud::{Markup, html};
use std::collections::HashMap;
use std::sync::Arc;

/// A holder is online when its agent polled within this many seconds (agents poll at
/// least every 60 s; the server's `cas` listing and metrics use the same window).
pub const ONLINE_WINDOW: i64 = 90;

/// Most open sessions the page lists.
const MAX_OPEN: u32 = 200;

pub fn routes() -> Router<Arc<State>> {
    Router::new().route("/ui/", get(overview))
}

/// A holder as the store and the agents' polls know it.
pub(super) struct HolderLive {
    enrolled: bool,
    last_seen: Option<i64>,
}

/// A CA with its holders' enrollment, liveness and last answers.
pub(super) struct CaSummary {
    pub id: String,
    pub manifest: Arc<VerifiedManifest>,
    holders: HashMap<String, HolderLive>,
    answers: HashMap<String, LastAnswer>,
}

/// Every CA (or only `only`), summarised.
pub(super) fn summaries(state: &State, only: Option<&str>) -> ApiResult<Vec<CaSummary>> {
    let listing = state.cas()?;
    let mut out = Vec::new();
    for ca in listing.as_array().into_iter().flatten() {
        let id = ca["ca_id"].as_str().unwrap_or_default().to_owned();
        if only.is_some_and(|o| o != id) {
            continue;
        }
        let manifest = state.manifest(&id)?;
        let holders = ca["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                (
                    h["holder_id"].as_str().unwrap_or_default().to_owned(),
                    HolderLive {
                        enrolled: h["enrolled"].as_bool().unwrap_or(false),
                        last_seen: h["last_seen"].as_i64(),
                    },
                )
            })
            .collect();
        let answers = state.read_store(|s| s.last_answers(&id))?;
        out.push(CaSummary {
            id,
            manifest,
            holders,
            answers,
        });
    }
    Ok(out)
}

fn gather(state: &State) -> ApiResult<(Vec<CaSummary>, Vec<OpenSession>)> {
    let cas = summaries(state, None)?;
    let open = state.read_store(|s| s.open_sessions(MAX_OPEN))?;
    Ok((cas, open))
}

async fn overview(AppState(state): AppState<Arc<State>>, user: SignedIn) -> WebResult<Markup> {
    let (cas, open) = blocking(move || gather(&state)).await?;
    let thresholds: HashMap<&str, (u8, u8)> = cas
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                (c.manifest.threshold(), c.manifest.body.share_set.total),
            )
        })
        .collect();
    let t = now();
    Ok(page(
        "Overview",
        Some(&user),
        html! {
            div id="live" data-refresh="15" {
                section.card id="open-sessions" {
                    h2 { "Open sessions" }
                    @if open.is_empty() {
                        p.muted { "No session is waiting for approvals." }
                    } @else {
                        (sessions_table(&open, &thresholds, t))
                    }
                }
                @if cas.is_empty() {
                    p.muted { "No CA is registered yet." }
                }
                @for ca in &cas {
                    (ca_card(ca, t))
                }
            }
        },
    ))
}

/// What a session is about, in a few words.
fn session_subject(s: &OpenSession) -> String {
    let view = s.certificate_view.as_deref().unwrap_or_default();
    let Ok(kind) = serde_json::from_value::<SessionKind>(serde_json::Value::String(s.kind.clone()))
    else {
        return String::new();
    };
    match kind {
        SessionKind::Issue => serde_json::from_str::<CertificateView>(view)
            .map(|v| v.subject_string())
            .unwrap_or_default(),
        SessionKind::IssueBatch => match serde_json::from_str::<Vec<CertificateView>>(view) {
            Ok(views) => format!(
                "{} certificates ({}…)",
                views.len(),
                views
                    .first()
                    .map(|v| v.subject_string())
                    .unwrap_or_default()
            ),
            Err(_) => "a batch of certificates".to_owned(),
        },
        SessionKind::Revoke => format!("serial {}", s.serial.as_deref().unwrap_or("?")),
        SessionKind::Crl => "the next CRL".to_owned(),
        SessionKind::Policy => "a new CA policy".to_owned(),
        SessionKind::Reshare => "a new holder set".to_owned(),
    }
}

fn sessions_table(open: &[OpenSession], thresholds: &HashMap<&str, (u8, u8)>, t: i64) -> Markup {
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { "Session" } th { "CA" } th { "Kind" } th { "For" }
                    th { "Requested by" } th { "Approvals" } th { "Time left" }
                } }
                tbody {
                    @for s in open {
                        tr {
                            td { a.mono href={ "/ui/sessions/" (s.session_id) } { (s.session_id.get(..12).unwrap_or(&s.session_id)) "…" } }
                            td { a href={ "/ui/cas/" (s.ca_id) } { code { (s.ca_id.get(..12).unwrap_or(&s.ca_id)) "…" } } }
                            td { (s.kind) @if let Some(p) = &s.profile { @if s.kind == "issue" { " (" (shown(p)) ")" } } }
                            td { (shown(&session_subject(s))) }
                            td { (shown(&s.requester)) }
                            td {
                                @let m = thresholds.get(s.ca_id.as_str()).map_or(0, |(m, _)| *m);
                                (s.approvals) " of " (m)
                            }
                            td { (layout::ago(s.expires_at - t)) }
                        }
                    }
                }
            }
        }
    }
}

fn ca_card(ca: &CaSummary, t: i64) -> Markup {
    let m = &ca.manifest;
    let mode = if m.threshold_key().is_some() {
        "threshold signing (the key is never rebuilt)"
    } else {
        "reconstruct (the key is rebuilt in the session's worker)"
    };
    html! {
        section.card.ca {
            h2 { a href={ "/ui/cas/" (ca.id) } { (shown(&m.ca.subject)) } }
            (layout::facts(&[
                ("CA id", html! { code { (ca.id) } }),
                ("Fingerprint (SHA-256)", html! { code { (shown(&m.body.certificate_sha256)) } }),
                ("Key", html! { (shown(&m.body.ca.key)) }),
                ("Approvals", html! { (m.threshold()) " of " (m.body.share_set.total) " holders" }),
                ("Valid", html! { "from " (shown(&m.body.created_at)) " until " (layout::when(m.ca.not_after.unix_timestamp())) }),
                ("Mode", html! { (mode) }),
            ]))
            h3 { "Holders" }
            (holders_table(ca, t))
        }
    }
}

/// The holders of a CA: token, name, location, enrollment, agent liveness, last answer.
pub(super) fn holders_table(ca: &CaSummary, t: i64) -> Markup {
    let m = &ca.manifest;
    html! {
            div.table-wrap {
                table.holders {
                    thead { tr {
                        th { "Token" } th { "Holder" } th { "Location" } th { "Enrolled" }
                        th { "Agent" } th { "Last answer" }
                    } }
                    tbody {
                        @for h in &m.body.holders {
                            @let live = ca.holders.get(&h.nitrokey_id);
                            tr {
                                td { code { (shown(&h.nitrokey_id)) } }
                                td { (shown(&h.holder_name)) br; span.muted { (shown(&h.holder_email)) } }
                                td { (shown(&h.location)) }
                                td {
                                    @if live.is_some_and(|l| l.enrolled) { span.ok { "enrolled" } }
                                    @else { span.warn { "not enrolled" } }
                                }
                                td { (liveness(live.and_then(|l| l.last_seen), t)) }
                                td {
                                    @if let Some((outcome, at, session)) = ca.answers.get(&h.nitrokey_id) {
                                        (shown(outcome)) " "
                                        a href={ "/ui/sessions/" (session) } { (layout::ago(t - at)) " ago" }
                                    } @else {
                                        span.muted { "none yet" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
    }
}

/// Online, or since when not.
pub fn liveness(last_seen: Option<i64>, t: i64) -> Markup {
    match last_seen {
        Some(seen) if t - seen < ONLINE_WINDOW => html! { span.badge.ok { "online" } },
        Some(seen) => html! {
            span.badge.bad { "offline" } " since " (layout::when(seen)) " (" (layout::ago(t - seen)) " ago)"
        },
        None => html! { span.badge.muted { "never seen" } },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn open(kind: &str, view: Option<String>) -> OpenSession {
        OpenSession {
            session_id: "s".into(),
            ca_id: "ca".into(),
            kind: kind.into(),
            requester: "op".into(),
            created_at: 0,
            expires_at: 0,
            profile: None,
            serial: Some("0a".into()),
            certificate_view: view,
            approvals: 0,
        }
    }

    #[test]
    fn every_kind_of_open_session_says_what_it_is_for() {
        let view = |cn: &str| {
            serde_json::json!({"profile": "server", "serial": "0a", "subject": [["CN", cn]],
                "sans": [], "key": "P-256", "not_before": 0, "not_after": 1, "days": 1,
                "is_ca": false, "path_len": null, "key_usage": [], "extended_key_usage": [],
                "name_constraints": [], "dropped": []})
        };
        let batch = serde_json::json!([view("host1.example.org"), view("host2.example.org")]);
        assert_eq!(
            session_subject(&open("issue-batch", Some(batch.to_string()))),
            "2 certificates (CN=host1.example.org…)"
        );
        assert_eq!(
            session_subject(&open("issue", Some(view("one").to_string()))),
            "CN=one"
        );
        assert_eq!(session_subject(&open("revoke", None)), "serial 0a");
        assert_eq!(session_subject(&open("crl", None)), "the next CRL");
        assert_eq!(session_subject(&open("policy", None)), "a new CA policy");
        assert_eq!(session_subject(&open("reshare", None)), "a new holder set");
    }
}
