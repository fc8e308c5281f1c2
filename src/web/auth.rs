//! Browser sign-in: server-side UI sessions behind an opaque cookie, their CSRF tokens,
//! and the checks every state-changing form passes. The cookie carries only a random id;
//! the server keeps who signed in, and forgets it on sign-out, after 15 idle minutes or
//! after 8 hours whatever happens.

use super::WebError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The cookie holding a UI session's id.
pub const COOKIE: &str = "nkpki_ui";
/// A UI session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// A UI session ends this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);
/// Most UI sessions held at once; signing in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut buf);
    hex::encode(buf)
}

/// Equal strings, compared in time that depends on their lengths only.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

struct UiSession {
    operator: String,
    /// The SHA-256 of the API token signed in with, re-checked on each page (`None` for a
    /// session started otherwise, as `ca-init --web` does).
    token_sha256: Option<String>,
    csrf: String,
    started: Instant,
    last_used: Instant,
}

/// The signed-in browsers, in memory: a restart signs everyone out. Keyed by the SHA-256
/// of the cookie's id, so the table holds nothing a browser could present.
pub struct UiSessions {
    sessions: Mutex<HashMap<String, UiSession>>,
}

impl std::fmt::Debug for UiSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UiSessions(<redacted>)")
    }
}

impl UiSessions {
    pub fn new() -> Self {
        UiSessions {
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a UI session for `operator` (who proved it with an API token, or with the
    /// one-time URL key of `ca-init --web`); returns the `Set-Cookie` value to send
    /// (`secure`: the page is served over TLS, the cookie is marked `Secure`).
    pub fn start(&self, operator: &str, secure: bool) -> HeaderValue {
        self.start_session(operator, None, secure)
    }

    /// Starts a UI session for the operator of an API token (its SHA-256): the session
    /// ends as soon as the token is found revoked (see [`UiSessions::credential`]).
    pub fn start_for_token(&self, operator: &str, token_sha256: &str, secure: bool) -> HeaderValue {
        self.start_session(operator, Some(token_sha256.to_owned()), secure)
    }

    fn start_session(
        &self,
        operator: &str,
        token_sha256: Option<String>,
        secure: bool,
    ) -> HeaderValue {
        let id = random_hex(32);
        let now = Instant::now();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| alive(s, now));
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            crate::pki::sha256_hex(id.as_bytes()),
            UiSession {
                operator: operator.to_owned(),
                token_sha256,
                csrf: random_hex(32),
                started: now,
                last_used: now,
            },
        );
        cookie(&id, ABSOLUTE.as_secs(), secure)
    }

    /// The signed-in operator of a cookie id, if its session is alive (which it keeps so).
    pub fn get(&self, id: &str) -> Option<SignedIn> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<SignedIn> {
        let key = crate::pki::sha256_hex(id.as_bytes());
        let mut sessions = lock(&self.sessions);
        let session = sessions.get_mut(&key)?;
        if !alive(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(SignedIn {
            operator: session.operator.clone(),
            csrf: session.csrf.clone(),
            key,
        })
    }

    /// The API token (SHA-256) a cookie id's session was started with, to check it is
    /// still valid; `None` for an unknown session or one started without a token.
    pub fn credential(&self, id: &str) -> Option<String> {
        let key = crate::pki::sha256_hex(id.as_bytes());
        lock(&self.sessions)
            .get(&key)
            .and_then(|s| s.token_sha256.clone())
    }

    /// Ends every UI session started with this API token (it was revoked).
    pub fn end_token(&self, token_sha256: &str) {
        lock(&self.sessions).retain(|_, s| s.token_sha256.as_deref() != Some(token_sha256));
    }

    /// Ends a UI session (sign-out); returns the `Set-Cookie` value that clears the cookie.
    pub fn end(&self, user: &SignedIn, secure: bool) -> HeaderValue {
        lock(&self.sessions).remove(&user.key);
        cookie("", 0, secure)
    }

    /// How many UI sessions are alive.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        lock(&self.sessions)
            .values()
            .filter(|s| alive(s, now))
            .count()
    }
}

impl Default for UiSessions {
    fn default() -> Self {
        Self::new()
    }
}

fn cookie(id: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("nkpki_ui=; Max-Age=0"))
}

fn alive(s: &UiSession, now: Instant) -> bool {
    now.saturating_duration_since(s.last_used) < IDLE
        && now.saturating_duration_since(s.started) < ABSOLUTE
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A signed-in browser. As an extractor it answers a redirect to the sign-in page (which
/// comes back here afterwards) when the request has no live UI session.
#[derive(Clone)]
pub struct SignedIn {
    /// The name of the API token the operator signed in with.
    pub operator: String,
    /// The session's CSRF token: every form carries it ([`csrf_field`]).
    pub csrf: String,
    key: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

impl SignedIn {
    /// Refuses a form whose `csrf` field is not this session's token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), WebError> {
        if same(submitted, &self.csrf) {
            Ok(())
        } else {
            Err(WebError::new(
                403,
                "This form is stale or did not come from this site (its CSRF token does not \
                 match your sign-in). Reload the page and submit it again.",
            ))
        }
    }
}

/// The hidden field every state-changing form carries.
pub fn csrf_field(user: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

/// Where the sign-in page sends a browser back to: a local page only (no open redirect).
pub fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/ui/".to_owned(),
    }
}

/// The sign-in page's address that comes back to `path`.
pub fn sign_in_url(path_and_query: &str) -> String {
    let next: String = local_next(Some(path_and_query))
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/ui/sign-in?next={next}")
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let signed_in = parts
            .extensions
            .get::<Arc<UiSessions>>()
            .zip(cookie_value(&parts.headers, COOKIE))
            .and_then(|(sessions, id)| sessions.get(id));
        match signed_in {
            Some(user) => Ok(user),
            None => {
                // a form posted after the sign-in expired comes back to its page
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/ui/", |p| p.as_str())
                    .to_owned();
                let back = if parts.method == Method::GET {
                    path
                } else {
                    parts.uri.path().to_owned()
                };
                Err(Redirect::to(&sign_in_url(&back)).into_response())
            }
        }
    }
}

/// Refuses a state-changing request a browser says comes from another site: its `Origin`
/// is not this host, or `Sec-Fetch-Site` is `cross-site`/`same-site`. A request carrying
/// neither (not a browser) still needs the form's CSRF token.
pub fn same_origin(method: &Method, headers: &HeaderMap) -> Result<(), WebError> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refused = || {
        WebError::new(
            403,
            "This form was sent from another site, and is refused. Open the page on this \
             server and submit it from there.",
        )
    };
    let fetch_site = headers
        .get("sec-fetch-site")
        .map(|site| site.to_str().unwrap_or_default());
    if let Some(site) = fetch_site {
        if site != "same-origin" && site != "none" {
            return Err(refused());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        // every page is served with `Referrer-Policy: no-referrer`, so a browser posts its
        // forms with `Origin: null`; its `Sec-Fetch-Site` then says where they come from
        if origin == "null" && fetch_site == Some("same-origin") {
            return Ok(());
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .unwrap_or_default();
        if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(refused());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_or_old_and_on_sign_out() {
        let sessions = UiSessions::new();
        let cookie = sessions.start("alice", false);
        let text = cookie.to_str().unwrap();
        let id = text
            .strip_prefix("nkpki_ui=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let t0 = Instant::now();
        let user = sessions.get_at(id, t0).unwrap();
        assert_eq!(user.operator, "alice");
        assert!(sessions.get_at("not-a-session", t0).is_none());
        // used every 10 minutes, it lives until the absolute limit
        let mut t = t0;
        while t.duration_since(t0) + Duration::from_secs(600) < ABSOLUTE {
            t += Duration::from_secs(600);
            assert!(sessions.get_at(id, t).is_some());
        }
        assert!(sessions.get_at(id, t0 + ABSOLUTE).is_none());
        // idle beyond 15 minutes
        let cookie = sessions.start("bob", false);
        let id = cookie.to_str().unwrap()[9..]
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let t1 = Instant::now();
        assert!(sessions.get_at(&id, t1 + IDLE).is_none());
        let cookie = sessions.start("carol", false);
        let id = cookie.to_str().unwrap()[9..]
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let user = sessions.get(&id).unwrap();
        let cleared = sessions.end(&user, false);
        assert!(cleared.to_str().unwrap().contains("Max-Age=0"));
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn cookies_are_strict_and_secure_under_tls() {
        let plain = UiSessions::new().start("alice", false);
        let plain = plain.to_str().unwrap();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(plain.contains(attr), "{plain}");
        }
        assert!(!plain.contains("Secure"));
        let tls = UiSessions::new().start("alice", true);
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn csrf_tokens_must_match_exactly() {
        let sessions = UiSessions::new();
        let cookie = sessions.start("alice", false);
        let id = cookie.to_str().unwrap()[9..]
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let user = sessions.get(&id).unwrap();
        assert!(user.check_csrf(&user.csrf.clone()).is_ok());
        assert!(user.check_csrf("").is_err());
        assert!(user.check_csrf(&user.csrf[1..]).is_err());
        assert!(!format!("{user:?}").contains(&user.csrf));
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_next(Some("/ui/cas/abc?page=2")), "/ui/cas/abc?page=2");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\x",
            "/api/v1/cas",
        ] {
            assert_eq!(local_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(
            sign_in_url("/ui/audit?kind=x&holder=NK001"),
            "/ui/sign-in?next=/ui/audit%3Fkind%3Dx%26holder%3DNK001"
        );
        assert_eq!(
            sign_in_url("https://evil.example/"),
            "/ui/sign-in?next=/ui/"
        );
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("pki.example:8443"));
        assert!(same_origin(&Method::POST, &h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://pki.example:8443"),
        );
        assert!(same_origin(&Method::POST, &h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(same_origin(&Method::POST, &h).is_err());
        assert!(same_origin(&Method::GET, &h).is_ok());
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(same_origin(&Method::POST, &h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&Method::POST, &h).is_ok());
    }

    /// What Chromium sends for a form on a page with `Referrer-Policy: no-referrer`.
    #[test]
    fn a_null_origin_is_accepted_only_with_same_origin_fetch_metadata() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8443"));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(same_origin(&Method::POST, &h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(same_origin(&Method::POST, &h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("none"));
        assert!(same_origin(&Method::POST, &h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&Method::POST, &h).is_ok());
    }
}
