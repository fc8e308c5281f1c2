//! The New request page (`/ui/requests/new`): a CSR pasted (or picked from a file), a
//! profile and a validity; then the dry run's answer (the certificate as it would be
//! issued and the verdict); then a one-time confirmation that opens the session. Also the
//! form that opens a revocation session from the CA's pages.

use super::{SignedIn, WebError, WebResult, blocking, csrf_field, layout, page, shown};
use crate::pki::{self, CertificateView, Csr};
use crate::proto::{CreateSession, SessionKind, SessionPreview};
use crate::server::State;
use axum::extract::{Extension, Form, Path, Query, State as AppState};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Router, http::StatusCode};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Profiles a pasted CSR may ask for (`ocsp` certifies the server's own key, never a CSR).
pub const PROFILES: [&str; 3] = ["server", "client", "sub-ca"];
/// Validity the form accepts; the CA's own end date may refuse less.
pub const MAX_DAYS: u32 = 3650;
/// How long a preview's confirmation stays good.
pub const CONFIRM_TTL: Duration = Duration::from_secs(10 * 60);
/// Most confirmations and drafts remembered at once.
const MAX_FORMS: usize = 1024;
/// Largest CSR the form takes.
const MAX_CSR: usize = 64 << 10;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut buf);
    hex::encode(buf)
}

/// A preview's one-time confirmation: bound to the operator and to exactly what was
/// previewed; once used, it remembers the session it opened.
struct Confirmation {
    operator: String,
    digest: String,
    issued: Instant,
    opened: Option<String>,
}

/// The page's memory: confirmations, and requests kept across an expired sign-in.
#[derive(Default)]
pub struct RequestForms {
    confirmations: Mutex<HashMap<String, Confirmation>>,
    drafts: Mutex<HashMap<String, (Instant, RequestForm)>>,
}

impl std::fmt::Debug for RequestForms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestForms")
    }
}

fn prune<V>(map: &mut HashMap<String, V>, age: impl Fn(&V) -> Instant) {
    let now = Instant::now();
    map.retain(|_, v| now.saturating_duration_since(age(v)) < CONFIRM_TTL * 6);
    if map.len() >= MAX_FORMS
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| age(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

impl RequestForms {
    fn confirmation(&self, operator: &str, digest: &str) -> String {
        let nonce = random_hex(16);
        let mut all = lock(&self.confirmations);
        prune(&mut all, |c| c.issued);
        all.insert(
            nonce.clone(),
            Confirmation {
                operator: operator.to_owned(),
                digest: digest.to_owned(),
                issued: Instant::now(),
                opened: None,
            },
        );
        nonce
    }

    fn keep_draft(&self, form: RequestForm) -> String {
        let id = random_hex(16);
        let mut drafts = lock(&self.drafts);
        prune(&mut drafts, |(t, _)| *t);
        drafts.insert(id.clone(), (Instant::now(), form));
        id
    }

    fn take_draft(&self, id: &str) -> Option<RequestForm> {
        lock(&self.drafts).remove(id).map(|(_, form)| form)
    }
}

pub fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/ui/requests/new", get(new_request).post(preview))
        .route("/ui/requests", post(confirm))
        .route("/ui/cas/{id}/revoke", get(revoke_page).post(revoke))
        .layer(Extension(Arc::new(RequestForms::default())))
}

/// The request form's fields (names as the browser sends them).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    pub ca: String,
    #[serde(default)]
    pub csr: String,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub days: String,
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub confirm: String,
}

/// A form's errors, by field (`""`: the page).
type Errors = Vec<(&'static str, String)>;

fn error_for<'a>(errors: &'a Errors, field: &str) -> Option<&'a str> {
    errors
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, m)| m.as_str())
}

/// The request checked field by field: the session request, or every error.
fn validate(state: &State, form: &RequestForm) -> Result<CreateSession, Errors> {
    let mut errors = Errors::new();
    if state.manifest(&form.ca).is_err() {
        errors.push(("ca", "Choose one of the registered CAs.".into()));
    }
    let csr = form.csr.trim();
    if csr.is_empty() {
        errors.push(("csr", "Paste a certificate signing request (PEM).".into()));
    } else if csr.len() > MAX_CSR {
        errors.push(("csr", format!("This is over {MAX_CSR} bytes: not a CSR.")));
    } else if let Some(kind) = wrong_kind(csr) {
        errors.push(("csr", kind));
    } else if let Err(e) = Csr::parse(csr.as_bytes()) {
        errors.push((
            "csr",
            format!("This is not a certificate signing request: {e}"),
        ));
    }
    if !PROFILES.contains(&form.profile.as_str()) {
        errors.push((
            "profile",
            format!("Unknown profile; choose {}.", PROFILES.join(", ")),
        ));
    }
    let days = form.days.trim().parse::<u32>().ok();
    match days {
        Some(d) if (1..=MAX_DAYS).contains(&d) => {}
        _ => errors.push((
            "days",
            format!("Give a validity from 1 to {MAX_DAYS} days."),
        )),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CreateSession {
        ca_id: form.ca.clone(),
        kind: SessionKind::Issue,
        csr_pem: Some(csr.to_owned()),
        csr_pems: Vec::new(),
        profile: Some(form.profile.clone()),
        days,
        serial: None,
        reason: None,
        new_policy: None,
    })
}

/// A PEM block of another kind than a CSR, named for the person who pasted it.
fn wrong_kind(text: &str) -> Option<String> {
    let label = text
        .strip_prefix("-----BEGIN ")?
        .split_once("-----")?
        .0
        .trim();
    match label {
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => None,
        "CERTIFICATE" => Some(
            "This is a certificate, not a certificate signing request: paste the CSR the \
             certificate is for."
                .into(),
        ),
        l if l.contains("PRIVATE KEY") => Some(
            "This is a private key, not a certificate signing request. Nothing was kept; \
             treat the key as exposed if this page is not yours."
                .into(),
        ),
        l => Some(format!(
            "This is a {} block, not a CERTIFICATE REQUEST.",
            shown(l)
        )),
    }
}

/// What a confirmation binds: the CA, the CSR's DER, the profile and the days.
fn request_digest(req: &CreateSession) -> String {
    let der = req
        .csr_pem
        .as_deref()
        .and_then(|p| Csr::parse(p.as_bytes()).ok())
        .map(|c| c.digest())
        .unwrap_or_default();
    pki::sha256_hex(
        format!(
            "{}\n{}\n{}\n{}",
            req.ca_id,
            der,
            req.profile.as_deref().unwrap_or_default(),
            req.days.unwrap_or_default()
        )
        .as_bytes(),
    )
}

/// The CAs to choose from: (id, name).
fn ca_choices(state: &State) -> Vec<(String, String)> {
    let listing = state.cas().unwrap_or_default();
    listing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ca| {
            let id = ca["ca_id"].as_str()?.to_owned();
            let name = state
                .manifest(&id)
                .map(|m| m.body.ca.name.clone())
                .unwrap_or_default();
            Some((id, name))
        })
        .collect()
}

fn request_form(
    user: &SignedIn,
    cas: &[(String, String)],
    form: &RequestForm,
    errors: &Errors,
) -> Markup {
    let profile = if form.profile.is_empty() {
        "server"
    } else {
        form.profile.as_str()
    };
    let days = if form.days.is_empty() {
        "90"
    } else {
        form.days.as_str()
    };
    html! {
        @if let Some(message) = error_for(errors, "") {
            (layout::error_box(message))
        }
        form method="post" action="/ui/requests/new" id="request-form" {
            (csrf_field(user))
            label for="ca" { "CA" }
            select name="ca" id="ca" {
                @for (id, name) in cas {
                    option value=(id) selected[*id == form.ca] { (shown(name)) " (" (id) ")" }
                }
            }
            @if let Some(m) = error_for(errors, "ca") { (layout::field_error("ca", m)) }
            label for="csr" { "Certificate signing request (PEM)" }
            textarea name="csr" id="csr" spellcheck="false" autocomplete="off"
                placeholder="-----BEGIN CERTIFICATE REQUEST-----" { (form.csr) }
            p.muted {
                label.inline for="csr-file" { "Or pick the file: " }
                input type="file" id="csr-file" accept=".csr,.pem,.req,text/plain" data-fills="csr";
                " (needs JavaScript; without it, paste the PEM)"
            }
            @if let Some(m) = error_for(errors, "csr") { (layout::field_error("csr", m)) }
            label for="profile" { "Profile" }
            select name="profile" id="profile" {
                @for p in PROFILES {
                    option value=(p) selected[p == profile] { (p) }
                }
            }
            @if let Some(m) = error_for(errors, "profile") { (layout::field_error("profile", m)) }
            label for="days" { "Validity (days)" }
            input type="number" name="days" id="days" min="1" max=(MAX_DAYS) value=(days);
            @if let Some(m) = error_for(errors, "days") { (layout::field_error("days", m)) }
            p { button type="submit" id="preview" { "Show what would be issued" } }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DraftQuery {
    draft: Option<String>,
}

async fn new_request(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Extension(forms): Extension<Arc<RequestForms>>,
    Query(q): Query<DraftQuery>,
) -> WebResult<Markup> {
    let cas = blocking(move || Ok(ca_choices(&state))).await?;
    let mut form = q
        .draft
        .as_deref()
        .and_then(|id| forms.take_draft(id))
        .unwrap_or_default();
    if form.ca.is_empty()
        && let Some((id, _)) = cas.first()
    {
        form.ca = id.clone();
    }
    let mut errors = Errors::new();
    if cas.is_empty() {
        errors.push(("", "No CA is registered on this server yet.".into()));
    }
    Ok(page(
        "New request",
        Some(&user),
        request_form(&user, &cas, &form, &errors),
    ))
}

/// A form posted after the sign-in expired: kept, and the browser sent to sign in and
/// back to it.
fn keep_for_sign_in(forms: &RequestForms, form: RequestForm) -> Response {
    let draft = forms.keep_draft(RequestForm {
        csrf: String::new(),
        confirm: String::new(),
        ..form
    });
    Redirect::to(&super::auth::sign_in_url(&format!(
        "/ui/requests/new?draft={draft}"
    )))
    .into_response()
}

async fn preview(
    AppState(state): AppState<Arc<State>>,
    user: Result<SignedIn, Response>,
    Extension(forms): Extension<Arc<RequestForms>>,
    Form(form): Form<RequestForm>,
) -> WebResult<Response> {
    let user = match user {
        Ok(user) => user,
        Err(_) => return Ok(keep_for_sign_in(&forms, form)),
    };
    user.check_csrf(&form.csrf)?;
    let s = state.clone();
    let f = form.clone();
    let operator = user.operator.clone();
    let checked = blocking(move || {
        let cas = ca_choices(&s);
        let previewed = match validate(&s, &f) {
            Ok(req) => Ok((crate::server::preview::preview(&s, &operator, &req)?, req)),
            Err(errors) => Err(errors),
        };
        Ok((cas, previewed))
    })
    .await?;
    let (cas, previewed) = checked;
    let (preview, req) = match previewed {
        Ok(p) => p,
        Err(errors) => {
            let body = request_form(&user, &cas, &form, &errors);
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page("New request", Some(&user), body),
            )
                .into_response());
        }
    };
    let confirm = preview
        .accepted
        .then(|| forms.confirmation(&user.operator, &request_digest(&req)));
    Ok(page(
        "New request: review",
        Some(&user),
        preview_body(&user, &cas, &form, &preview, confirm.as_deref()),
    )
    .into_response())
}

/// The certificate as it would be issued, field by field.
pub fn certificate_facts(view: &CertificateView, serial_known: bool) -> Markup {
    let list = |items: &[String]| -> Markup {
        html! {
            @if items.is_empty() { span.muted { "none" } }
            @else { ul.plain { @for i in items { li { code { (shown(i)) } } } } }
        }
    };
    layout::facts(&[
        ("Profile", html! { (shown(&view.profile)) }),
        (
            "Subject",
            html! { code #subject { (shown(&view.subject_string())) } },
        ),
        ("Names (SANs)", html! { div #sans { (list(&view.sans)) } }),
        ("Key", html! { span #key { (shown(&view.key)) } }),
        (
            "Validity",
            html! {
                span #validity { (view.days) " days: " (layout::when(view.not_before))
                " to " (layout::when(view.not_after)) }
            },
        ),
        (
            "CA",
            html! {
                @match (view.is_ca, view.path_len) {
                    (false, _) => "no (end entity)",
                    (true, Some(n)) => { "YES, path length " (n) },
                    (true, None) => "YES, no path length limit",
                }
            },
        ),
        ("Key usage", list(&view.key_usage)),
        ("Extended key usage", list(&view.extended_key_usage)),
        ("Name constraints", list(&view.name_constraints)),
        (
            "Serial",
            if serial_known {
                html! { code { (view.serial) } }
            } else {
                html! { span.muted { "drawn when the session opens" } }
            },
        ),
        (
            "Not copied from the CSR",
            html! { div #dropped { (list(&view.dropped)) } },
        ),
    ])
}

fn preview_body(
    user: &SignedIn,
    cas: &[(String, String)],
    form: &RequestForm,
    preview: &SessionPreview,
    confirm: Option<&str>,
) -> Markup {
    let view = preview
        .summary
        .as_ref()
        .and_then(|s| s.certificate.as_ref());
    html! {
        section.card #verdict {
            @match &preview.refusal {
                None => p.ok { strong { "Accepted." } " The CA's policy allows this request. "
                    "Opening the session asks " (preview.threshold) " of the " (preview.total)
                    " holders of " (shown(&preview.ca_name)) " to approve exactly this certificate within "
                    (layout::ago(preview.session_ttl)) "." },
                Some(r) => (layout::error_box(&format!("Refused ({}): {}", r.code, shown(&r.error)))),
            }
        }
        @if let Some(view) = view {
            section.card #preview {
                h2 { "The certificate as it would be issued" }
                (certificate_facts(view, false))
            }
        }
        @if let Some(nonce) = confirm {
            form method="post" action="/ui/requests" id="confirm-form" {
                (csrf_field(user))
                input type="hidden" name="confirm" value=(nonce);
                input type="hidden" name="ca" value=(form.ca);
                input type="hidden" name="csr" value=(form.csr);
                input type="hidden" name="profile" value=(form.profile);
                input type="hidden" name="days" value=(form.days);
                p { button type="submit" id="open-session" { "Open the session" } }
            }
        }
        h2 { "Change the request" }
        (request_form(user, cas, form, &Errors::new()))
    }
}

async fn confirm(
    AppState(state): AppState<Arc<State>>,
    user: Result<SignedIn, Response>,
    Extension(forms): Extension<Arc<RequestForms>>,
    Form(form): Form<RequestForm>,
) -> WebResult<Response> {
    let user = match user {
        Ok(user) => user,
        Err(_) => return Ok(keep_for_sign_in(&forms, form)),
    };
    user.check_csrf(&form.csrf)?;
    let s = state.clone();
    let f = form.clone();
    let checked = blocking(move || Ok((ca_choices(&s), validate(&s, &f)))).await?;
    let req = match checked {
        (_, Ok(req)) => req,
        (cas, Err(errors)) => {
            let body = request_form(&user, &cas, &form, &errors);
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                page("New request", Some(&user), body),
            )
                .into_response());
        }
    };
    let digest = request_digest(&req);
    // the confirmation is spent before the session opens: a double submit or a replay
    // finds it spent and opens nothing
    let stale = {
        let mut all = lock(&forms.confirmations);
        match all.get_mut(&form.confirm) {
            Some(c) if c.operator == user.operator && c.digest == digest => {
                match c.opened.as_deref() {
                    Some("") => {
                        return Err(WebError::new(
                            409,
                            "This request was already submitted and its session is being \
                             opened; it is listed on the overview.",
                        ));
                    }
                    Some(opened) => {
                        return Ok(Redirect::to(&format!("/ui/sessions/{opened}")).into_response());
                    }
                    None => {}
                }
                if c.issued.elapsed() > CONFIRM_TTL {
                    Some(
                        "This review is more than 10 minutes old. Check it again, then open the session.",
                    )
                } else {
                    c.opened = Some(String::new());
                    None
                }
            }
            _ => Some(
                "This confirmation is stale, was already used, or does not match the request \
                 shown. Check the request again, then open the session.",
            ),
        }
    };
    if let Some(message) = stale {
        let s = state.clone();
        let cas = blocking(move || Ok(ca_choices(&s))).await?;
        let body = request_form(&user, &cas, &form, &vec![("", message.to_owned())]);
        return Ok((StatusCode::CONFLICT, page("New request", Some(&user), body)).into_response());
    }
    let operator = user.operator.clone();
    let opened = blocking(move || state.create_session(&operator, req)).await;
    let mut all = lock(&forms.confirmations);
    match opened {
        Ok(status) => {
            if let Some(c) = all.get_mut(&form.confirm) {
                c.opened = Some(status.session_id.clone());
            }
            Ok(Redirect::to(&format!("/ui/sessions/{}", status.session_id)).into_response())
        }
        Err(e) => {
            all.remove(&form.confirm);
            Err(e)
        }
    }
}

// ---- revocation and CRL sessions ---------------------------------------------------

/// The reasons a revocation may give (RFC 5280 names).
fn reasons() -> &'static [&'static str] {
    &pki::REASONS
}

#[derive(Debug, Default, Deserialize)]
struct SerialQuery {
    #[serde(default)]
    serial: String,
}

/// A button (a form) that leads to the revocation form of `serial`: for the CA page's
/// certificate rows.
pub fn revoke_link(ca_id: &str, serial: &str) -> Markup {
    html! {
        a.button.secondary href={ "/ui/cas/" (ca_id) "/revoke?serial=" (serial) } { "Revoke…" }
    }
}

fn well_formed_serial(serial: &str) -> bool {
    !serial.is_empty() && serial.len() <= 64 && serial.bytes().all(|b| b.is_ascii_hexdigit())
}

async fn revoke_page(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(ca): Path<String>,
    Query(q): Query<SerialQuery>,
) -> WebResult<Markup> {
    let serial = q.serial.to_lowercase();
    if !well_formed_serial(&serial) {
        return Err(WebError::new(
            404,
            "Give the serial of a certificate (hex).",
        ));
    }
    let (c, s) = (ca.clone(), serial.clone());
    let (name, known) = blocking(move || {
        let name = state.manifest(&c)?.body.ca.name.clone();
        let known = state.read_store(|st| st.certificate_known(&c, &s))?;
        Ok((name, known))
    })
    .await?;
    if !known {
        return Err(WebError::new(
            404,
            format!("CA {ca} issued no certificate with serial {serial} through this server."),
        ));
    }
    Ok(page(
        "Revoke a certificate",
        Some(&user),
        revoke_form(&user, &ca, &name, &serial, None),
    ))
}

fn revoke_form(
    user: &SignedIn,
    ca: &str,
    ca_name: &str,
    serial: &str,
    error: Option<&str>,
) -> Markup {
    html! {
        @if let Some(e) = error { (layout::error_box(e)) }
        p { "Revoking certificate " code { (serial) } " of " (shown(ca_name)) " opens a session: "
            "the CA's holders approve the revocation and sign the new CRL that lists it." }
        form method="post" action={ "/ui/cas/" (ca) "/revoke" } id="revoke-form" {
            (csrf_field(user))
            input type="hidden" name="serial" value=(serial);
            label for="reason" { "Reason" }
            select name="reason" id="reason" {
                @for r in reasons() { option value=(r) { (r) } }
            }
            p { button type="submit" id="revoke" { "Open the revocation session" } }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    serial: String,
    #[serde(default)]
    reason: String,
}

async fn revoke(
    AppState(state): AppState<Arc<State>>,
    user: SignedIn,
    Path(ca): Path<String>,
    Form(form): Form<RevokeForm>,
) -> WebResult<Response> {
    user.check_csrf(&form.csrf)?;
    let req = CreateSession {
        ca_id: ca.clone(),
        kind: SessionKind::Revoke,
        csr_pem: None,
        csr_pems: Vec::new(),
        profile: None,
        days: None,
        serial: Some(form.serial.to_lowercase()),
        reason: Some(form.reason.clone()),
        new_policy: None,
    };
    open_and_show(state, user, req).await
}

/// Opens a revocation session and goes to its page; a refusal is shown as a page.
async fn open_and_show(
    state: Arc<State>,
    user: SignedIn,
    req: CreateSession,
) -> WebResult<Response> {
    let operator = user.operator.clone();
    let status = blocking(move || state.create_session(&operator, req)).await?;
    Ok(Redirect::to(&format!("/ui/sessions/{}", status.session_id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_pem_blocks_are_named_not_parsed() {
        assert!(wrong_kind("-----BEGIN CERTIFICATE REQUEST-----\nMIIB").is_none());
        assert!(wrong_kind("MIIB not pem").is_none());
        assert!(
            wrong_kind("-----BEGIN CERTIFICATE-----\nMIIB")
                .unwrap()
                .contains("a certificate, not")
        );
        assert!(
            wrong_kind("-----BEGIN EC PRIVATE KEY-----\nMHc")
                .unwrap()
                .contains("private key")
        );
        let odd = wrong_kind("-----BEGIN X\u{1b}Y-----\n").unwrap();
        assert!(!odd.contains('\u{1b}'), "{odd}");
    }

    #[test]
    fn a_confirmation_binds_every_field_of_the_request() {
        let req = |ca: &str, profile: &str, days: u32| CreateSession {
            ca_id: ca.into(),
            kind: SessionKind::Issue,
            csr_pem: None,
            csr_pems: Vec::new(),
            profile: Some(profile.into()),
            days: Some(days),
            serial: None,
            reason: None,
            new_policy: None,
        };
        let base = request_digest(&req("a", "server", 90));
        assert_eq!(base, request_digest(&req("a", "server", 90)));
        assert_ne!(base, request_digest(&req("b", "server", 90)));
        assert_ne!(base, request_digest(&req("a", "client", 90)));
        assert_ne!(base, request_digest(&req("a", "server", 91)));
        let forms = RequestForms::default();
        let one = forms.confirmation("alice", &base);
        let two = forms.confirmation("alice", &base);
        assert_ne!(one, two, "each preview has its own nonce");
        let draft = forms.keep_draft(RequestForm {
            csr: "x".into(),
            ..RequestForm::default()
        });
        assert_eq!(forms.take_draft(&draft).unwrap().csr, "x");
        assert!(
            forms.take_draft(&draft).is_none(),
            "a draft is given back once"
        );
    }
}
