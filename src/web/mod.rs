//! The web UI: server-rendered pages (maud, escaped at compile time), for operators signed
//! in with their API token. Every page works without JavaScript; `static/app.js` only keeps
//! pages current. Pages answer HTML, errors included; the API's JSON stays under `/api/v1`.
//!
//! [`ui_router`] is merged into the server's router. Each page module adds its routes
//! there with one `.merge(module::routes())` line.

pub mod auth;
pub mod layout;
pub mod text;

mod audit;
mod ca;
pub mod generator;
mod overview;
pub mod request;
mod session;

pub use auth::{SignedIn, UiSessions, csrf_field};
pub use layout::page;
pub use text::shown;

use crate::server::{ApiErr, Peer, Refusal, State};
use axum::Router;
use axum::extract::{Extension, Form, Query, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use maud::{Markup, html};
use serde::Deserialize;
use std::sync::Arc;

/// Whether the connection a request came on is TLS (put in its extensions by the accept
/// loop): UI cookies are then `Secure`.
#[derive(Clone, Copy, Debug)]
pub struct Secure(pub bool);

/// The Content-Security-Policy of every UI response: no inline script or style, nothing
/// from elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A page that could not be shown: its status and a message for a person.
#[derive(Debug)]
pub struct WebError {
    pub status: u16,
    pub message: String,
}

impl WebError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        WebError {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiErr> for WebError {
    fn from(e: ApiErr) -> Self {
        WebError::new(e.status, e.message)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let title = status.canonical_reason().unwrap_or("Error");
        let body = page(
            title,
            None,
            html! {
                (layout::error_box(&shown(&self.message)))
                p { a href="/ui/" { "Back to the overview" } }
            },
        );
        (status, body).into_response()
    }
}

pub type WebResult<T> = Result<T, WebError>;

/// Runs blocking work (SQLite) off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiErr> + Send + 'static,
) -> WebResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| WebError::new(500, e.to_string()))?
        .map_err(WebError::from)
}

/// Whether `path` is served by the UI (its errors are pages, not the API's JSON).
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/") || path.starts_with("/static/")
}

/// The pages, the sign-in and the static assets, with the security headers on every
/// response and the same-origin check on every form post.
pub fn ui_router(state: Arc<State>) -> Router<Arc<State>> {
    let sessions = Arc::new(UiSessions::new());
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/static/{name}", get(asset))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/{*rest}", any(not_found))
        .merge(overview::routes())
        .merge(ca::routes())
        .merge(audit::routes())
        .merge(generator::routes(state))
        .merge(request::routes())
        .merge(session::routes())
        // the other page modules: one `.merge(module::routes())` line each, above this one
        .layer(middleware::from_fn(same_origin_posts))
        .layer(Extension(sessions))
        .layer(middleware::from_fn(security_headers))
}

pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn same_origin_posts(req: Request, next: Next) -> Response {
    match auth::same_origin(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn not_found(_: SignedIn) -> WebError {
    WebError::new(404, "There is no such page.")
}

const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("static/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/app.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("static/icon.svg"),
    ),
];

pub(crate) async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => WebError::new(404, "There is no such file.").into_response(),
    }
}

// ---- sign-in and sign-out ---------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Next_ {
    next: Option<String>,
}

fn sign_in_form(next: &str, error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            @if let Some(message) = error {
                (layout::error_box(message))
            }
            form method="post" action="/ui/sign-in" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input type="password" name="token" id="token" autocomplete="off" required autofocus
                    aria-describedby="token-help";
                @if let Some(message) = error {
                    (layout::field_error("token", message))
                }
                p.muted id="token-help" {
                    "The operator token `nkpki serve token create` printed. It is checked like \
                     the API's bearer and never stored in the browser: the server keeps your \
                     sign-in for 15 idle minutes, 8 hours at most."
                }
                p { button type="submit" id="sign-in" { "Sign in" } }
            }
        },
    )
}

async fn sign_in_page(Query(q): Query<Next_>) -> Markup {
    sign_in_form(&auth::local_next(q.next.as_deref()), None)
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

async fn sign_in(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    Extension(Peer(peer)): Extension<Peer>,
    Extension(sessions): Extension<Arc<UiSessions>>,
    secure: Option<Extension<Secure>>,
    form: Result<Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return WebError::new(400, "The sign-in form could not be read.").into_response();
    };
    let next = auth::local_next(form.next.as_deref());
    let refuse = |status: StatusCode, message: &str| {
        (status, sign_in_form(&next, Some(message))).into_response()
    };
    if !state.limiter.allows(peer) {
        state.refused(
            peer,
            Refusal::RateLimited,
            None,
            "auth-refused",
            "too many failed sign-ins",
        );
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins from your address. Wait a minute, then try again.",
        );
    }
    let token = form.token.trim().to_owned();
    if token.is_empty() {
        return refuse(StatusCode::UNAUTHORIZED, "Enter your API token.");
    }
    let s = state.clone();
    match blocking(move || s.operator(Some(&token))).await {
        Ok(operator) => {
            let _ = state.note(
                "ui-sign-in",
                &format!("operator {operator} signed in to the web UI from {peer}"),
            );
            let secure = secure.is_some_and(|Extension(Secure(s))| s);
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, sessions.start(&operator, secure));
            response
        }
        Err(e) if e.status == 401 => {
            state.refused(
                peer,
                Refusal::BogusBearer,
                None,
                "auth-refused",
                "unknown API token at web sign-in",
            );
            refuse(
                StatusCode::UNAUTHORIZED,
                "This API token is unknown or revoked.",
            )
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    user: SignedIn,
    Extension(sessions): Extension<Arc<UiSessions>>,
    secure: Option<Extension<Secure>>,
    Form(form): Form<CsrfForm>,
) -> WebResult<Response> {
    user.check_csrf(&form.csrf)?;
    let secure = secure.is_some_and(|Extension(Secure(s))| s);
    let _ = state.note(
        "ui-sign-out",
        &format!("operator {} signed out of the web UI", user.operator),
    );
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, sessions.end(&user, secure));
    Ok(response)
}
