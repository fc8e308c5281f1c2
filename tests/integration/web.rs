//! The web UI over loopback HTTP: sign-in, the session cookie, CSRF and cross-site
//! refusals, the security headers, and text from outside shown escaped.

use crate::harness::{Env, Server};
use reqwest::blocking::{Client, Response};
use reqwest::header::HeaderMap;

/// A holder name and a search that are HTML, with a control character.
pub const XSS: &str = "<img src=x onerror=alert(1)>";

/// A registered CA (its first holder named [`XSS`]), a running server and an API token.
pub struct Web {
    pub env: Env,
    pub server: Server,
    pub token: String,
    pub ca_id: String,
    pub http: Client,
}

impl Web {
    pub fn new() -> Self {
        let env = Env::new();
        let holders = env.holders(3);
        env.holders_json(&holders, &[]);
        let mut list: serde_json::Value =
            serde_json::from_slice(&env.read("holders.json")).unwrap();
        list[0]["holder_name"] = XSS.into();
        env.write("holders.json", serde_json::to_vec(&list).unwrap());
        env.ca_init(
            "ecdsa-p256",
            2,
            &["--package", "--server-url", "https://pki.example.org:8443"],
        )
        .ok();
        let ca_id = env.register();
        let server = env.serve(&[]);
        let token = String::from_utf8(env.read("op.token")).unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Web {
            env,
            server,
            token,
            ca_id,
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().unwrap()
    }

    pub fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> Response {
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send().unwrap()
    }

    /// Signs in with the operator's token; returns the `Cookie` header value to send.
    pub fn sign_in(&self) -> String {
        let r = self.post(
            "/ui/sign-in",
            None,
            &[("token", &self.token), ("next", "/ui/")],
            &[],
        );
        assert_eq!(r.status(), 303, "{}", r.text().unwrap());
        let set = set_cookie(r.headers());
        set.split(';').next().unwrap().to_owned()
    }

    /// The CSRF token on a page (the sign-out form has it).
    pub fn csrf(&self, cookie: &str) -> String {
        let page = self.get("/ui/", Some(cookie)).text().unwrap();
        let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
        page[at..at + 64].to_owned()
    }
}

/// `application/x-www-form-urlencoded` of `fields`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn set_cookie(headers: &HeaderMap) -> String {
    headers
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_owned()
}

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn web_every_page_needs_sign_in_and_comes_back_after_it() {
    let web = Web::new();
    let ca = web.ca_id.clone();
    let r = web.get("/", None);
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/ui/");
    for page in [
        "/ui/".to_owned(),
        format!("/ui/cas/{ca}"),
        format!("/ui/cas/{ca}/certificates/01.pem"),
        "/ui/audit".to_owned(),
        "/ui/audit?format=json".to_owned(),
        "/ui/requests/new".to_owned(),
        "/ui/sessions/00".to_owned(),
        "/ui/generator".to_owned(),
        "/ui/no-such-page".to_owned(),
    ] {
        let r = web.get(&page, None);
        assert_eq!(r.status(), 303, "{page}");
        assert!(
            location(&r).starts_with("/ui/sign-in?next=/ui/"),
            "{page}: {}",
            location(&r)
        );
    }
    // a form posted without a sign-in is not acted on
    let r = web.post("/ui/sign-out", None, &[("csrf", "x")], &[]);
    assert_eq!(r.status(), 303);
    // signed in, the browser is sent back where it was going
    let next = format!("/ui/cas/{ca}?page=1");
    let r = web.post(
        "/ui/sign-in",
        None,
        &[("token", &web.token), ("next", &next)],
        &[],
    );
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), next);
    // but never to another site
    let r = web.post(
        "/ui/sign-in",
        None,
        &[("token", &web.token), ("next", "//evil.example/ui/")],
        &[],
    );
    assert_eq!(location(&r), "/ui/");
}

#[test]
fn web_sign_in_refuses_a_wrong_token_and_sets_a_strict_cookie() {
    let web = Web::new();
    let r = web.post("/ui/sign-in", None, &[("token", "nkpki_op_wrong")], &[]);
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let page = r.text().unwrap();
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("id=\"token-error\""), "{page}");
    assert!(page.contains("unknown or revoked"), "{page}");
    assert!(
        !page.contains("nkpki_op_wrong"),
        "the refused token is echoed: {page}"
    );
    let r = web.post("/ui/sign-in", None, &[("token", "")], &[]);
    assert_eq!(r.status(), 401);
    assert!(r.text().unwrap().contains("Enter your API token"));

    let r = web.post("/ui/sign-in", None, &[("token", &web.token)], &[]);
    assert_eq!(r.status(), 303);
    let set = set_cookie(r.headers());
    for attr in [
        "nkpki_ui=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP gets no Secure cookie: {set}"
    );
    assert!(
        !set.contains(web.token.trim()),
        "the token is in the cookie"
    );
    let cookie = set.split(';').next().unwrap();
    let r = web.get("/ui/", Some(cookie));
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("Sign out"));
    // a made-up session id is not a sign-in
    let r = web.get("/ui/", Some("nkpki_ui=00112233"));
    assert_eq!(r.status(), 303);
}

#[test]
fn web_failed_sign_ins_are_rate_limited_and_not_audited_one_by_one() {
    let web = Web::new();
    let mut statuses = Vec::new();
    for i in 0..30 {
        let r = web.post(
            "/ui/sign-in",
            None,
            &[("token", &format!("nkpki_op_{i}"))],
            &[],
        );
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    // even the right token waits now: the address spent its allowance
    let r = web.post("/ui/sign-in", None, &[("token", &web.token)], &[]);
    assert_eq!(r.status(), 429);
    assert!(r.text().unwrap().contains("Too many failed sign-ins"));
    drop(web.server);
    let export = web
        .env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    let refusals = export.lines().filter(|l| l.contains("auth-refus")).count();
    assert!(
        refusals <= 2,
        "{refusals} audit entries for 31 refused sign-ins:\n{export}"
    );
}

#[test]
fn web_posts_need_the_csrf_token_and_this_origin() {
    let web = Web::new();
    let cookie = web.sign_in();
    let csrf = web.csrf(&cookie);
    for form in [
        vec![],
        vec![("csrf", "0".repeat(64))],
        vec![("csrf", csrf[1..].to_owned())],
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = web.post("/ui/sign-out", Some(&cookie), &form, &[]);
        assert_eq!(r.status(), 403);
        let page = r.text().unwrap();
        assert!(page.contains("CSRF"), "{page}");
    }
    // a cross-site form, even with the right token, is refused
    let r = web.post(
        "/ui/sign-out",
        Some(&cookie),
        &[("csrf", &csrf)],
        &[("origin", "https://evil.example")],
    );
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("another site"));
    let r = web.post(
        "/ui/sign-out",
        Some(&cookie),
        &[("csrf", &csrf)],
        &[("sec-fetch-site", "cross-site")],
    );
    assert_eq!(r.status(), 403);
    let r = web.post(
        "/ui/sign-in",
        None,
        &[("token", &web.token)],
        &[("origin", "https://evil.example")],
    );
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none());
    // still signed in after all that; then a real sign-out ends the sign-in
    assert_eq!(web.get("/ui/", Some(&cookie)).status(), 200);
    let origin = web.server.url.clone();
    let r = web.post(
        "/ui/sign-out",
        Some(&cookie),
        &[("csrf", &csrf)],
        &[("origin", &origin), ("sec-fetch-site", "same-origin")],
    );
    assert_eq!(r.status(), 303);
    assert!(set_cookie(r.headers()).contains("Max-Age=0"));
    assert_eq!(web.get("/ui/", Some(&cookie)).status(), 303);
}

#[test]
fn web_responses_carry_the_security_headers() {
    let web = Web::new();
    let cookie = web.sign_in();
    let ca = web.ca_id.clone();
    for (path, cookie) in [
        ("/ui/sign-in".to_owned(), None),
        ("/ui/".to_owned(), Some(cookie.as_str())),
        (format!("/ui/cas/{ca}"), Some(cookie.as_str())),
        ("/ui/audit".to_owned(), Some(cookie.as_str())),
        ("/ui/no-such-page".to_owned(), Some(cookie.as_str())),
        ("/static/app.css".to_owned(), None),
        ("/static/app.js".to_owned(), None),
    ] {
        let r = web.get(&path, cookie);
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .expect(&path)
            .to_str()
            .unwrap();
        for part in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{path}");
        assert_eq!(
            h.get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
        let cache = h.get("cache-control").unwrap().to_str().unwrap().to_owned();
        let content_type = h.get("content-type").unwrap().to_str().unwrap().to_owned();
        if path.starts_with("/static/") {
            assert!(cache.contains("max-age="), "{path}: {cache}");
        } else {
            assert_eq!(cache, "no-store", "{path}");
            assert!(
                content_type.starts_with("text/html"),
                "{path}: {content_type}"
            );
            // no inline script or style anywhere
            let page = r.text().unwrap();
            assert!(
                !page.contains("<script>") && !page.contains("style="),
                "{path}"
            );
            assert!(
                !page.contains(" on") || !page.contains("onclick="),
                "{path}"
            );
        }
    }
    // the API keeps its JSON errors
    let r = web.get("/api/v1/nothing", None);
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(r.headers().get("content-security-policy").is_none());
}

#[test]
fn web_text_from_outside_is_escaped_and_controls_shown() {
    let web = Web::new();
    let cookie = web.sign_in();
    // a holder's name from the manifest
    let page = web.get("/ui/", Some(&cookie)).text().unwrap();
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(!page.contains(XSS), "{page}");
}
