//! The generator ("New CA") pages: the form (rows added and removed by submit buttons,
//! each error beside its field, a one-time nonce so a double submit runs one ceremony),
//! the ceremony `ca-init --package` runs, and a result page with the packages, the
//! passphrases (shown once) and a printable sheet per holder. On the server the CA is
//! registered as `serve ca add` registers it; under `ca-init --web` the ceremony is written
//! to the output directory instead and the process ends when the operator is done.

use super::auth::{self, UiSessions};
use super::{SignedIn, WebError, WebResult, csrf_field, layout, page, shown};
use crate::generator::{self, FieldErrors, Generated, GeneratorForm, KEYS, MODES, row_field};
use crate::server::State;
use axum::Router;
use axum::extract::{Extension, Form, Path, Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, watch};
use zeroize::Zeroizing;

/// How long a result (its packages, its passphrases until shown) stays in memory.
pub const RESULT_TTL: Duration = Duration::from_secs(10 * 60);
/// How long a form's nonce stays valid.
const NONCE_TTL: Duration = Duration::from_secs(60 * 60);
/// Most nonces held at once (the oldest go first).
const MAX_NONCES: usize = 1024;
/// The operator a `ca-init --web` UI session is for.
pub const LOCAL_OPERATOR: &str = "ca-init";

const NOTICE: &str = "Generating on the server means the CA key exists in the server's memory \
     during generation: whoever controls this server while it runs could copy it. For a CA \
     that must never have been whole on a networked machine, run `nkpki ca-init --web` (or \
     `ca-init --package`) on an air-gapped laptop and register the result with `serve ca add`.";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    rand::Rng::fill_bytes(&mut rand::rng(), &mut buf);
    hex::encode(&*buf)
}

/// Where a finished ceremony goes.
enum Target {
    /// Registered on this server, by the signed-in operator (role `ca-admin`).
    Server(Arc<State>),
    /// Written into a new directory (`ca-init --web`); `finished` is set when the
    /// operator is done, and the process ends.
    Directory {
        out: PathBuf,
        finished: watch::Sender<bool>,
    },
}

/// A finished ceremony kept for its result page.
struct Held {
    generated: Generated,
    owner: String,
    created: Instant,
    /// The result page was shown (with the passphrases, which are then wiped).
    shown: bool,
    downloaded: HashSet<String>,
}

/// A form's one-time nonce: the first submit runs the ceremony, any later one waits for
/// it and gets its outcome (a result id, or the message of what failed).
struct Nonce {
    issued: Instant,
    outcome: Arc<OnceCell<Result<String, String>>>,
}

/// The generator's state: where results go, the results held, the nonces issued.
pub struct Generator {
    target: Target,
    results: Mutex<HashMap<String, Held>>,
    nonces: Mutex<HashMap<String, Nonce>>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Generator(<redacted>)")
    }
}

impl Generator {
    fn new(target: Target) -> Self {
        Generator {
            target,
            results: Mutex::new(HashMap::new()),
            nonces: Mutex::new(HashMap::new()),
        }
    }

    fn is_local(&self) -> bool {
        matches!(self.target, Target::Directory { .. })
    }

    fn issue_nonce(&self) -> String {
        let nonce = random_hex(16);
        let now = Instant::now();
        let mut nonces = lock(&self.nonces);
        nonces.retain(|_, n| now.saturating_duration_since(n.issued) < NONCE_TTL);
        if nonces.len() >= MAX_NONCES
            && let Some(oldest) = nonces
                .iter()
                .min_by_key(|(_, n)| n.issued)
                .map(|(k, _)| k.clone())
        {
            nonces.remove(&oldest);
        }
        nonces.insert(
            nonce.clone(),
            Nonce {
                issued: now,
                outcome: Arc::new(OnceCell::new()),
            },
        );
        nonce
    }

    fn nonce(&self, nonce: &str) -> Option<Arc<OnceCell<Result<String, String>>>> {
        let nonces = lock(&self.nonces);
        nonces
            .get(nonce)
            .filter(|n| n.issued.elapsed() < NONCE_TTL)
            .map(|n| Arc::clone(&n.outcome))
    }

    /// Runs the ceremony, registers or writes it, and holds the result: its id.
    async fn run(
        self: Arc<Self>,
        params: crate::ceremony::CeremonyParams,
        operator: String,
    ) -> Result<String, String> {
        if let Target::Server(state) = &self.target {
            let (s, op) = (Arc::clone(state), operator.clone());
            let may = super::blocking(move || s.may_register_cas(&op))
                .await
                .map_err(|e| e.message)?;
            if !may {
                return Err(format!(
                    "Your API token ({operator}) cannot register CAs: the generator needs a \
                     token with role ca-admin (`nkpki serve token create --role ca-admin`). \
                     No ceremony was run."
                ));
            }
        }
        let generated = tokio::task::spawn_blocking(move || {
            generator::generate(&params, &AtomicBool::new(false))
        })
        .await
        .map_err(|e| format!("the ceremony stopped: {e}"))?
        .map_err(|e| format!("the ceremony failed: {e}"))?;

        let generated = match &self.target {
            Target::Server(state) => {
                let req = crate::proto::RegisterCa {
                    manifest: generated.output.manifest.to_json(),
                    expected_fingerprint: generated.fingerprint().to_owned(),
                    enrollment: generated.output.enrollment_json(),
                };
                let (s, op) = (Arc::clone(state), operator.clone());
                super::blocking(move || s.register_ca(&op, req))
                    .await
                    .map_err(|e| {
                        format!(
                            "The CA was generated but could not be registered, so it was \
                             discarded: {}",
                            e.message
                        )
                    })?;
                generated
            }
            Target::Directory { out, .. } => {
                let out = out.clone();
                tokio::task::spawn_blocking(move || {
                    write_directory(&out, &generated).map(|()| generated)
                })
                .await
                .map_err(|e| format!("writing the ceremony stopped: {e}"))??
            }
        };

        let id = random_hex(16);
        lock(&self.results).insert(
            id.clone(),
            Held {
                generated,
                owner: operator,
                created: Instant::now(),
                shown: false,
                downloaded: HashSet::new(),
            },
        );
        let this = Arc::clone(&self);
        let expiring = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RESULT_TTL).await;
            this.drop_result(&expiring);
        });
        Ok(id)
    }

    /// Drops a result (its packages are wiped); under `ca-init --web` that ends the run.
    fn drop_result(&self, id: &str) {
        let removed = lock(&self.results).remove(id);
        drop(removed);
        if let Target::Directory { finished, .. } = &self.target {
            let _ = finished.send(true);
        }
    }
}

/// Writes the ceremony as `ca-init --package` does: a new directory, staged then renamed.
fn write_directory(out: &std::path::Path, generated: &Generated) -> Result<(), String> {
    if !crate::fsx::is_absent_or_empty(out).map_err(|e| e.to_string())? {
        return Err(format!(
            "{} already exists and is not empty; nothing was written",
            out.display()
        ));
    }
    let staged = crate::fsx::StagedDir::new(out)
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    generated
        .output
        .write_to(staged.path())
        .map_err(|e| format!("cannot write the ceremony into {}: {e}", out.display()))?;
    staged
        .commit()
        .map_err(|e| format!("cannot move the ceremony into {}: {e}", out.display()))
}

/// The generator's routes on the server (`ui_router` merges them).
pub fn routes(state: Arc<State>) -> Router<Arc<State>> {
    pages(Arc::new(Generator::new(Target::Server(state))))
}

fn pages<S: Clone + Send + Sync + 'static>(generator: Arc<Generator>) -> Router<S> {
    Router::new()
        .route("/ui/generator", get(form_page).post(submit))
        .route("/ui/generator/result/{id}", get(result_page))
        .route("/ui/generator/result/{id}/done", post(done))
        .route("/ui/generator/result/{id}/packages/{file}", get(download))
        .layer(Extension(generator))
}

// ---- the form ---------------------------------------------------------------------

fn user_for_page<'a>(g: &Generator, user: &'a SignedIn) -> Option<&'a SignedIn> {
    (!g.is_local()).then_some(user)
}

fn field_error(errors: &FieldErrors, field: &str) -> Markup {
    html! {
        @if let Some(message) = errors.get(field) {
            (layout::field_error(field, &shown(message)))
        }
    }
}

/// A labelled text input named and identified `field`, with its error beside it.
fn text_input(errors: &FieldErrors, field: &str, label: &str, value: &str, extra: &str) -> Markup {
    let invalid = errors.contains_key(field);
    html! {
        div.field {
            label for=(field) { (label) }
            input type="text" name=(field) id=(field) value=(value)
                aria-invalid=(if invalid { "true" } else { "false" })
                aria-describedby=(if invalid { format!("{field}-error") } else { String::new() })
                placeholder=(extra);
            (field_error(errors, field))
        }
    }
}

fn select(errors: &FieldErrors, field: &str, label: &str, options: &[&str], value: &str) -> Markup {
    html! {
        div.field {
            label for=(field) { (label) }
            select name=(field) id=(field) {
                @for option in options {
                    option value=(option) selected[*option == value] { (option) }
                }
                @if !options.contains(&value) {
                    option value=(value) selected { (shown(value)) }
                }
            }
            (field_error(errors, field))
        }
    }
}

fn form_markup(
    g: &Generator,
    user: &SignedIn,
    form: &GeneratorForm,
    errors: &FieldErrors,
) -> Markup {
    let nonce = g.issue_nonce();
    html! {
        @if !g.is_local() {
            p.notice role="note" id="server-memory-notice" { (NOTICE) }
        }
        @if let Some(message) = errors.get("form") {
            (layout::error_box(&shown(message)))
        } @else if !errors.is_empty() {
            (layout::error_box("Some fields need correcting; each problem is shown beside its field. Nothing was generated."))
        }
        form method="post" action="/ui/generator" id="generator" {
            (csrf_field(user))
            input type="hidden" name="nonce" value=(nonce);
            fieldset {
                legend { "Certificate authority" }
                (text_input(errors, "name", "CA name (common name, 1–64 characters)", &form.name, "Example Root CA"))
                (text_input(errors, "org", "Organisation (1–64 characters)", &form.org, "Example"))
                (text_input(errors, "country", "Country (two upper-case letters)", &form.country, "FR"))
                (select(errors, "key", "Key", &KEYS, &form.key))
                (select(errors, "mode", "Mode (reconstruct: M shares rebuild the key per signature; threshold: Shoup threshold RSA)", &MODES, &form.mode))
                (text_input(errors, "validity_years", "Validity in years (1–30)", &form.validity_years, "20"))
                (text_input(errors, "threshold", "Threshold: approvals needed (2–15, at most the holders)", &form.threshold, "3"))
            }
            fieldset {
                legend { "Where the agents connect (optional)" }
                (text_input(errors, "server_url", "Server URL (https://…)", &form.server_url, "https://pki.example.org:8443"))
                (text_input(errors, "server_cert_sha256", "SHA-256 of the server's TLS certificate (64 hex digits)", &form.server_cert_sha256, ""))
                div.field {
                    label for="insecure_http" {
                        input type="checkbox" name="insecure_http" id="insecure_http" value="on" checked[form.insecure_http];
                        " Accept a plain http:// URL (a test bench on loopback only)"
                    }
                }
            }
            fieldset id="holders" {
                legend { "Holders (3–20, one Nitrokey each)" }
                (field_error(errors, "holders"))
                @for (i, row) in form.holders.iter().enumerate() {
                    fieldset.holder id={ "holder-" (i) } {
                        legend { "Holder " (i + 1) }
                        (text_input(errors, &row_field(i, "id"), "Nitrokey id (NK and three digits)", &row.id, "NK001"))
                        (text_input(errors, &row_field(i, "name"), "Holder name", &row.name, ""))
                        (text_input(errors, &row_field(i, "email"), "E-mail", &row.email, ""))
                        (text_input(errors, &row_field(i, "location"), "Location (site)", &row.location, ""))
                        (text_input(errors, &row_field(i, "recipient"), "age recipient (optional: empty seals to a passphrase shown once)", &row.recipient, "age1…"))
                        button.secondary type="submit" name="action" value={ "remove-" (i) } id={ "remove-" (i) } formnovalidate { "Remove holder " (i + 1) }
                    }
                }
                p { button.secondary type="submit" name="action" value="add" id="add-holder" formnovalidate { "Add holder" } }
            }
            p { button type="submit" name="action" value="generate" id="generate" { "Generate the CA" } }
        }
    }
}

fn form_response(
    g: &Generator,
    user: &SignedIn,
    form: &GeneratorForm,
    errors: &FieldErrors,
    status: StatusCode,
) -> Response {
    let body = form_markup(g, user, form, errors);
    (status, page("New CA", user_for_page(g, user), body)).into_response()
}

async fn form_page(user: SignedIn, Extension(g): Extension<Arc<Generator>>) -> Response {
    form_response(
        &g,
        &user,
        &GeneratorForm::default(),
        &FieldErrors::new(),
        StatusCode::OK,
    )
}

async fn submit(
    user: SignedIn,
    Extension(g): Extension<Arc<Generator>>,
    form: Result<Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> WebResult<Response> {
    let Ok(Form(pairs)) = form else {
        return Err(WebError::new(400, "The form could not be read."));
    };
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    user.check_csrf(value("csrf"))?;
    let mut form =
        match GeneratorForm::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            Ok(form) => form,
            Err(errors) => {
                return Ok(form_response(
                    &g,
                    &user,
                    &GeneratorForm::default(),
                    &errors,
                    StatusCode::UNPROCESSABLE_ENTITY,
                ));
            }
        };
    let action = value("action");
    if action == "add" {
        form.add_row();
        return Ok(form_response(
            &g,
            &user,
            &form,
            &FieldErrors::new(),
            StatusCode::OK,
        ));
    }
    if let Some(index) = action.strip_prefix("remove-") {
        if let Ok(index) = index.parse::<usize>() {
            form.remove_row(index);
        }
        return Ok(form_response(
            &g,
            &user,
            &form,
            &FieldErrors::new(),
            StatusCode::OK,
        ));
    }
    let params = match form.validate() {
        Ok(params) => params,
        Err(errors) => {
            return Ok(form_response(
                &g,
                &user,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ));
        }
    };
    let Some(outcome) = g.nonce(value("nonce")) else {
        let errors = FieldErrors::from([(
            "form".to_owned(),
            "This form is stale (it was issued too long ago, or before the server restarted). \
             Nothing was generated; check the values below and submit again."
                .to_owned(),
        )]);
        return Ok(form_response(
            &g,
            &user,
            &form,
            &errors,
            StatusCode::CONFLICT,
        ));
    };
    // a spawned task: a browser that gives up does not cancel a ceremony half-way, and a
    // second submit of the same form waits for the first one's outcome
    let (runner, operator) = (Arc::clone(&g), user.operator.clone());
    let result = tokio::spawn(async move {
        outcome
            .get_or_init(|| runner.run(params, operator))
            .await
            .clone()
    })
    .await
    .map_err(|e| WebError::new(500, format!("the ceremony stopped: {e}")))?;
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/ui/generator/result/{id}")).into_response()),
        Err(message) => {
            let errors = FieldErrors::from([("form".to_owned(), message)]);
            Ok(form_response(
                &g,
                &user,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
    }
}

// ---- the result -------------------------------------------------------------------

fn gone() -> WebError {
    WebError::new(
        404,
        format!(
            "This result is gone: packages are kept in memory for {} minutes after the \
             ceremony, or until you press Done, and are then wiped.",
            RESULT_TTL.as_secs() / 60
        ),
    )
}

fn qr_img(png: &[u8], id: &str) -> Markup {
    let data = base64::engine::general_purpose::STANDARD.encode(png);
    html! {
        img.qr src={ "data:image/png;base64," (data) } alt={ "QR code of " (id) "'s package fingerprint" };
    }
}

async fn result_page(
    user: SignedIn,
    Extension(g): Extension<Arc<Generator>>,
    Path(id): Path<String>,
) -> WebResult<Response> {
    let mut results = lock(&g.results);
    let held = results
        .get_mut(&id)
        .filter(|h| h.owner == user.operator && h.created.elapsed() < RESULT_TTL)
        .ok_or_else(gone)?;
    let first_view = !held.shown;
    let generated = &held.generated;
    let m = &generated.output.manifest.signed;
    let body = html! {
        @if !g.is_local() {
            p.notice role="note" id="server-memory-notice" { (NOTICE) }
        }
        section.no-print {
            (layout::facts(&[
                ("CA", html! { (shown(&m.ca.name)) ", " (shown(&m.ca.org)) ", " (shown(&m.ca.country)) }),
                ("CA id", html! { code id="ca-id" { (m.ca_id.0) } }),
                ("Fingerprint", html! { code id="ca-fingerprint" { "SHA-256 " (m.certificate_sha256) } }),
                ("Key", html! { (m.ca.key) }),
                ("Threshold", html! { (m.share_set.threshold) " of " (m.share_set.total) }),
            ]))
            @match &g.target {
                Target::Server(_) => p { "The CA is registered on this server. " a href={ "/ui/cas/" (m.ca_id.0) } { "Open its page" } "." },
                Target::Directory { out, .. } => p { "The ceremony was written to " code { (shown(&out.display().to_string())) } " (the same files as " code { "ca-init --package" } ")." },
            }
            p {
                "Hand each holder their package, and their sheet apart from it. The packages \
                 stay downloadable for " (RESULT_TTL.as_secs() / 60) " minutes or until you \
                 press Done; then they are wiped from memory."
            }
            @if first_view {
                p.warn { "Passphrases are shown on this page once: write each down for its holder now. Reloading this page will not show them again." }
            } @else {
                p.warn { "The passphrases were shown once, when this page was first opened, and are no longer available." }
            }
            div.table-wrap {
                table id="packages" {
                    thead { tr { th { "Nitrokey" } th { "Holder" } th { "Location" } th { "Package" } th { "Sealed to" } } }
                    tbody {
                        @for share in &generated.output.shares {
                            @let holder = generated.holder(share.index);
                            tr {
                                td { (share.nitrokey_id.as_str()) }
                                td { (shown(holder.map_or("", |h| h.holder_name.as_str()))) }
                                td { (shown(holder.map_or("", |h| h.location.as_str()))) }
                                td { a id={ "download-" (share.nitrokey_id.as_str()) } download=(share.file_name)
                                    href={ "/ui/generator/result/" (id) "/packages/" (share.file_name) } { (share.file_name) } }
                                td {
                                    @match (&share.passphrase, holder.and_then(|h| h.age_recipient.as_deref())) {
                                        (Some(pass), _) if first_view => { "passphrase " code.passphrase id={ "passphrase-" (share.nitrokey_id.as_str()) } { (crate::seal::reveal(pass)) } }
                                        (_, Some(recipient)) => { "age recipient " code { (shown(recipient)) } }
                                        _ => { "a passphrase (shown once)" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            p { "Print this page for the holder sheets below: each prints on a page of its own, without the rest." }
            form method="post" action={ "/ui/generator/result/" (id) "/done" } {
                (csrf_field(&user))
                button type="submit" id="done" { "Done: wipe the packages from memory" }
            }
        }
        @for share in &generated.output.shares {
            @let holder = generated.holder(share.index);
            section.sheet id={ "sheet-" (share.nitrokey_id.as_str()) } {
                h2 { "Holder sheet — " (share.nitrokey_id.as_str()) }
                (layout::facts(&[
                    ("Holder", html! { (shown(holder.map_or("", |h| h.holder_name.as_str()))) }),
                    ("Site", html! { (shown(holder.map_or("", |h| h.location.as_str()))) }),
                    ("CA", html! { (shown(&m.ca.name)) " (CA id " (m.ca_id.0) ")" }),
                    ("CA fingerprint", html! { code { "SHA-256 " (m.certificate_sha256) } }),
                    ("Package fingerprint", html! { code.fingerprint { (share.fingerprint) } }),
                ]))
                @if let Some(extras) = &share.package {
                    (qr_img(&extras.qr_png, share.nitrokey_id.as_str()))
                }
                p {
                    "Deploy with " code { "nkpki deploy " (share.file_name) " --token " (share.nitrokey_id.as_str()) " --expect-fingerprint '…'" }
                    ", the fingerprint read from this sheet's QR code, never from a file that came with the package."
                }
            }
        }
    };
    // shown once: the passphrases are wiped as soon as the page is built
    held.shown = true;
    for share in &mut held.generated.output.shares {
        share.passphrase = None;
    }
    let all_fetched = held.downloaded.len() == held.generated.output.shares.len();
    drop(results);
    if all_fetched && g.is_local() {
        g.drop_result(&id);
    }
    Ok(page("New CA: result", user_for_page(&g, &user), body).into_response())
}

async fn download(
    user: SignedIn,
    Extension(g): Extension<Arc<Generator>>,
    Path((id, file)): Path<(String, String)>,
) -> WebResult<Response> {
    let mut results = lock(&g.results);
    let held = results
        .get_mut(&id)
        .filter(|h| h.owner == user.operator && h.created.elapsed() < RESULT_TTL)
        .ok_or_else(gone)?;
    let share = held
        .generated
        .output
        .shares
        .iter()
        .find(|s| s.file_name == file)
        .ok_or_else(|| WebError::new(404, "There is no such package in this result."))?;
    let body = share.armored.clone();
    let disposition =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", share.file_name))
            .map_err(|e| WebError::new(500, e.to_string()))?;
    held.downloaded.insert(file);
    let all_fetched = held.shown && held.downloaded.len() == held.generated.output.shares.len();
    drop(results);
    if all_fetched && g.is_local() {
        g.drop_result(&id);
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Zeroizing::new(body).to_string(),
    )
        .into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn done(
    user: SignedIn,
    Extension(g): Extension<Arc<Generator>>,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    user.check_csrf(&form.csrf)?;
    let owned = lock(&g.results)
        .get(&id)
        .is_some_and(|h| h.owner == user.operator);
    if owned {
        g.drop_result(&id);
    }
    let body = html! {
        p id="done-message" { "The packages and passphrases were wiped from memory." }
        @match &g.target {
            Target::Server(_) => p { a href="/ui/" { "Back to the overview" } },
            Target::Directory { out, .. } => p {
                "nkpki ca-init has finished; the ceremony is in "
                code { (shown(&out.display().to_string())) } ". You can close this tab."
            },
        }
    };
    Ok(page("New CA: done", user_for_page(&g, &user), body).into_response())
}

// ---- ca-init --web ----------------------------------------------------------------

/// The one-time key of the URL `ca-init --web` prints; spent by its first use.
struct OneTimeKey(Mutex<Option<Zeroizing<String>>>);

#[derive(Deserialize)]
struct KeyQuery {
    #[serde(default)]
    key: String,
}

async fn start(
    Extension(key): Extension<Arc<OneTimeKey>>,
    Extension(sessions): Extension<Arc<UiSessions>>,
    Query(q): Query<KeyQuery>,
) -> Response {
    let spent = {
        let mut slot = lock(&key.0);
        match slot.as_ref() {
            Some(k) if auth::same(k, &q.key) => {
                *slot = None;
                true
            }
            _ => false,
        }
    };
    if !spent {
        return WebError::new(
            403,
            "This one-time URL is wrong or was already used. Use the browser tab it opened, \
             or restart `nkpki ca-init --web` for a new one.",
        )
        .into_response();
    }
    let mut response = Redirect::to("/ui/generator").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions.start(LOCAL_OPERATOR, false));
    response
}

async fn local_sign_in() -> WebError {
    WebError::new(
        403,
        "Open the one-time URL `nkpki ca-init --web` printed on its terminal. It works once; \
         this browser then stays signed in.",
    )
}

async fn local_not_found() -> WebError {
    WebError::new(404, "There is no such page.")
}

async fn local_same_origin(req: Request, next: Next) -> Response {
    match auth::same_origin(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Serves the generator alone for `ca-init --web` on `listener` (loopback) until the
/// ceremony written into `out` is done; `key` is the one-time URL's key.
pub async fn serve_directory(
    listener: tokio::net::TcpListener,
    out: PathBuf,
    key: Zeroizing<String>,
) -> std::io::Result<bool> {
    let (finished, mut done) = watch::channel(false);
    let generator = Arc::new(Generator::new(Target::Directory { out, finished }));
    let sessions = Arc::new(UiSessions::new());
    let app: Router = pages(generator)
        .route("/", get(|| async { Redirect::to("/ui/generator") }))
        .route("/ui/start", get(start))
        .route("/ui/sign-in", get(local_sign_in))
        .route("/static/{name}", get(super::asset))
        .fallback(local_not_found)
        .layer(middleware::from_fn(local_same_origin))
        .layer(Extension(sessions))
        .layer(Extension(Arc::new(OneTimeKey(Mutex::new(Some(key))))))
        .layer(middleware::from_fn(super::security_headers));
    let mut stopped = done.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stopped.wait_for(|d| *d).await;
    });
    tokio::select! {
        result = server => result?,
        _ = async {
            let _ = done.wait_for(|d| *d).await;
            // connections a browser keeps open get a few seconds, then the process ends
            tokio::time::sleep(Duration::from_secs(5)).await;
        } => {}
    }
    let finished = *done.borrow();
    Ok(finished)
}
