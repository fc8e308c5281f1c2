//! The web UI over loopback HTTP: sign-in, the session cookie, CSRF and cross-site
//! refusals, the security headers, and text from outside shown escaped.

use crate::harness::{Env, Server};
use std::time::{Duration, Instant};

const THREE: [&str; 3] = ["NK001", "NK002", "NK003"];
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
        Web::over(env, server, ca_id)
    }

    /// A browser for a server already running in `env` (with `op.token` written).
    pub fn over(env: Env, server: Server, ca_id: String) -> Self {
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
    // a search echoed back, with an escape character in it
    let q = "%1B%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E";
    let ca = web.ca_id.clone();
    let page = web
        .get(&format!("/ui/cas/{ca}?q={q}"), Some(&cookie))
        .text()
        .unwrap();
    assert!(
        page.contains("␛&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(!page.contains(XSS) && !page.contains('\u{1b}'), "{page}");
}

/// A signed certificate's PEM as the CLI wrote it.
fn pem_of(env: &Env, file: &str) -> String {
    String::from_utf8(env.read(file)).unwrap().trim().to_owned()
}

#[test]
fn web_ca_page_lists_searches_downloads_and_opens_a_crl_session() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    let ca = env.register();
    let server = env.serve(&[]);
    let rule = [
        "--approve-profile",
        "server",
        "--approve-san-suffix",
        ".example.org",
        "--approve-revocations",
    ];
    let _agents: Vec<_> = ["NK001", "NK003"]
        .iter()
        .map(|id| env.agent(id, &ca, &server.url, &rule))
        .collect();
    for id in ["NK001", "NK003"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
        assert!(log.contains("connected to"), "{log}");
    }
    let p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let www = env.csr(
        "www",
        &p256,
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    env.nkpki(&crate::online::sign_args(&server.url, &ca, &www, "www.crt"))
        .ok();
    let api = env.csr(
        "api",
        &p256,
        "/CN=api.example.org",
        &["subjectAltName=DNS:api.example.org,DNS:alt-name.example.org"],
    );
    env.nkpki(&crate::online::sign_args(&server.url, &ca, &api, "api.crt"))
        .ok();
    let www_serial = env.cert_serial("www.crt");
    let api_serial = env.cert_serial("api.crt");
    let web = Web::over(env, server, ca.clone());
    let cookie = web.sign_in();

    // the Overview: holders' enrollment, liveness and last answers
    let overview = web.get("/ui/", Some(&cookie)).text().unwrap();
    assert!(overview.contains("2 of 3 holders"), "{overview}");
    assert_eq!(overview.matches(">online<").count(), 2, "{overview}");
    assert!(
        overview.contains("never seen") && overview.contains("not enrolled"),
        "{overview}"
    );
    assert!(overview.contains("approved"), "{overview}");

    let page = |q: &str| {
        let r = web.get(&format!("/ui/cas/{ca}{q}"), Some(&cookie));
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    };
    let all = page("");
    assert!(all.contains("2 certificates"), "{all}");
    assert!(
        all.contains(&www_serial) && all.contains(&api_serial),
        "{all}"
    );
    assert!(all.contains(&format!("href=\"/ca/{ca}.crt\"")), "{all}");
    assert!(all.contains(&format!("href=\"/ca/{ca}.der\"")), "{all}");
    assert!(all.contains("DNS:alt-name.example.org"), "{all}");
    assert!(all.contains("has not signed a CRL yet"), "{all}");
    // searched by SAN, CN, serial (any case, with colons) and by nothing that matches
    for (q, expect, not) in [
        ("alt-name", &api_serial, &www_serial),
        ("WWW.example", &www_serial, &api_serial),
        (&api_serial[..8].to_uppercase(), &api_serial, &www_serial),
    ] {
        let found = page(&format!("?q={q}"));
        assert!(found.contains("1 certificate matching"), "{q}: {found}");
        assert!(
            found.contains(expect.as_str()) && !found.contains(not.as_str()),
            "{q}"
        );
    }
    let colons: Vec<String> = api_serial.as_bytes()[..6]
        .chunks(2)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    assert!(page(&format!("?q={}", colons.join(":"))).contains("1 certificate matching"));
    assert!(page("?q=%25").contains("0 certificates matching"));

    // each certificate downloads as the PEM the CLI got
    let r = web.get(
        &format!("/ui/cas/{ca}/certificates/{api_serial}.pem"),
        Some(&cookie),
    );
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("{api_serial}.pem"))
    );
    assert_eq!(r.text().unwrap().trim(), pem_of(&web.env, "api.crt"));
    let r = web.get(
        &format!("/ui/cas/{ca}/certificates/abcdef.pem"),
        Some(&cookie),
    );
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .unwrap()
            .contains("no certificate with serial abcdef")
    );
    assert_eq!(
        web.get(&format!("/ui/cas/{ca}/certificates/x.pem"), Some(&cookie))
            .status(),
        404
    );
    assert_eq!(web.get("/ui/cas/nope", Some(&cookie)).status(), 404);

    // a revocation shows, with the CRL it made
    web.env
        .revoke_online(&web.server.url, &ca, &www_serial, "1.crl");
    let after = page("");
    assert!(after.contains("keyCompromise"), "{after}");
    assert!(after.contains("CRL number 1"), "{after}");
    assert!(
        after.contains(&format!("href=\"/crl/{ca}.crl\"")),
        "{after}"
    );

    // "Sign a new CRL" needs the form's CSRF token, then opens a session and shows it
    let r = web.post(
        &format!("/ui/cas/{ca}/crl"),
        Some(&cookie),
        &[("csrf", "nope")],
        &[],
    );
    assert_eq!(r.status(), 403);
    let csrf = web.csrf(&cookie);
    let r = web.post(
        &format!("/ui/cas/{ca}/crl"),
        Some(&cookie),
        &[("csrf", &csrf)],
        &[],
    );
    assert_eq!(r.status(), 303);
    let to = location(&r);
    let session = to.strip_prefix("/ui/sessions/").expect(&to).to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        let status: serde_json::Value = web
            .http
            .get(web.url(&format!("/api/v1/sessions/{session}")))
            .bearer_auth(web.token.trim())
            .send()
            .unwrap()
            .json()
            .unwrap();
        if status["state"] != "waiting" || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(state["kind"], "crl", "{state}");
    assert_eq!(state["state"], "signed", "{state}");
    assert!(page("").contains("CRL number 2"));
}

#[test]
fn web_audit_page_filters_exports_and_shows_a_broken_chain() {
    let web = Web::new();
    let cookie = web.sign_in();
    web.sign_in();
    let ca = web.ca_id.clone();
    let page = web.get("/ui/audit", Some(&cookie)).text().unwrap();
    assert!(page.contains("Chain verified"), "{page}");
    assert!(
        page.contains("ui-sign-in") && page.contains("ca-registered"),
        "{page}"
    );
    // newest first
    let table = &page[page.find("id=\"audit\"").unwrap()..];
    let first_sign_in = table.find("signed in to the web UI").unwrap();
    assert!(
        first_sign_in < table.find("ca-registered").unwrap(),
        "{table}"
    );

    let export = |query: &str| -> serde_json::Value {
        let r = web.get(&format!("/ui/audit?format=json{query}"), Some(&cookie));
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        r.json().unwrap()
    };
    let signed_in = export("&kind=ui-sign-in");
    assert_eq!(signed_in["chain"]["intact"], true, "{signed_in}");
    let entries = signed_in["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{signed_in}");
    assert!(entries.iter().all(|e| e["event"] == "ui-sign-in"));
    assert!(
        entries[0]["seq"].as_i64() < entries[1]["seq"].as_i64(),
        "log order"
    );
    let of_ca = export(&format!("&ca={ca}"));
    let entries = of_ca["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["ca_id"] == ca.as_str()), "{of_ca}");
    assert_eq!(export("&holder=NK009")["total"], 0);
    let filtered = web
        .get("/ui/audit?kind=ui-sign-in", Some(&cookie))
        .text()
        .unwrap();
    assert!(filtered.contains("2 entries"), "{filtered}");
    assert!(!filtered.contains("ca-registered</a>"), "{filtered}");
    assert_eq!(web.get("/ui/audit?format=xml", Some(&cookie)).status(), 400);

    // an entry edited behind the server's back breaks the chain, and the page says where
    web.env
        .tool(
            "python3",
            &[
                "-c",
                "import sqlite3; c = sqlite3.connect('data/nkpki.sqlite3'); \
                 c.execute(\"UPDATE audit SET detail = 'nothing happened' WHERE seq = 2\"); c.commit()",
            ],
        )
        .ok();
    let page = web.get("/ui/audit", Some(&cookie)).text().unwrap();
    assert!(page.contains("Chain BROKEN at entry 2"), "{page}");
    assert!(page.contains("role=\"alert\""));
    assert_eq!(export("")["chain"]["broken_at"], 2);
}
