//! The New request, Session and revocation pages over loopback HTTP: every bad input of
//! the request form shown beside its field, the preview then a one-time confirmation, the
//! session's approvals pushed to the page as agents answer, the certificate downloaded,
//! then revoked from the pages.

use crate::harness::Env;
use crate::session_events::Events;
use crate::web::{Web, set_cookie};
use reqwest::blocking::Response;

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The value of hidden field `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    let end = page[at..].find('"').unwrap();
    page[at..at + end].to_owned()
}

fn csr_text(env: &Env, name: &str, subject: &str, san: &str) -> String {
    let mut ext = Vec::new();
    let san = format!("subjectAltName={san}");
    if !san.ends_with('=') {
        ext.push(san.as_str());
    }
    let file = env.csr(
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        subject,
        &ext,
    );
    String::from_utf8(env.read(&file)).unwrap()
}

fn request<'a>(
    web: &'a Web,
    csrf: &'a str,
    csr: &'a str,
    profile: &'a str,
    days: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("ca", &web.ca_id),
        ("csr", csr),
        ("profile", profile),
        ("days", days),
    ]
}

/// The preview page's confirmation form fields, as the browser would send them back.
fn confirm_fields(page: &str) -> Vec<(String, String)> {
    let at = page
        .find("id=\"confirm-form\"")
        .expect("a confirmation form");
    let form = &page[at..page[at..].find("</form>").unwrap() + at];
    ["csrf", "confirm", "ca", "csr", "profile", "days"]
        .iter()
        .map(|n| ((*n).to_owned(), html_unescape(&hidden(form, n))))
        .collect()
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn post_fields(web: &Web, path: &str, cookie: &str, fields: &[(String, String)]) -> Response {
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    web.post(path, Some(cookie), &refs, &[])
}

fn sessions_opened(env: &Env) -> usize {
    env.nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout()
        .matches("\"session-opened\"")
        .count()
}

fn ui_events(web: &Web, cookie: &str, session: &str) -> Events {
    let r = crate::session_events::http()
        .get(web.url(&format!("/ui/sessions/{session}/events")))
        .header("cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    Events::from_response(r)
}

#[test]
fn web_request_form_shows_each_bad_input_beside_its_field() {
    let web = Web::new();
    let cookie = web.sign_in();
    let csrf = web.csrf(&cookie);
    let page = web.get("/ui/requests/new", Some(&cookie)).text().unwrap();
    for id in ["id=\"ca\"", "id=\"csr\"", "id=\"profile\"", "id=\"days\""] {
        assert!(page.contains(id), "{id}: {page}");
    }
    let good = csr_text(
        &web.env,
        "good",
        "/CN=www.example.org",
        "DNS:www.example.org",
    );
    let certificate = String::from_utf8(web.env.read("ca/ca.crt")).unwrap();
    let key = String::from_utf8(web.env.read("good.key")).unwrap();
    let cases: [(&str, &str, &str, &str, &str); 7] = [
        (
            "",
            "server",
            "90",
            "csr-error",
            "Paste a certificate signing request",
        ),
        (
            "hello",
            "server",
            "90",
            "csr-error",
            "not a certificate signing request",
        ),
        (
            &certificate,
            "server",
            "90",
            "csr-error",
            "This is a certificate, not a certificate signing request",
        ),
        (&key, "server", "90", "csr-error", "This is a private key"),
        (&good, "nonsense", "90", "profile-error", "Unknown profile"),
        (&good, "server", "0", "days-error", "from 1 to 3650 days"),
        (
            &good,
            "server",
            "99999",
            "days-error",
            "from 1 to 3650 days",
        ),
    ];
    for (csr, profile, days, field, message) in cases {
        let r = web.post(
            "/ui/requests/new",
            Some(&cookie),
            &request(&web, &csrf, csr, profile, days),
            &[],
        );
        assert_eq!(r.status(), 422, "{field} {message}");
        let page = r.text().unwrap();
        let at = page
            .find(&format!("id=\"{field}\""))
            .unwrap_or_else(|| panic!("{field}: {page}"));
        assert!(page[at..].contains(message), "{field}: {page}");
        // what was typed is kept in the form
        assert!(page.contains("id=\"csr\""));
    }
    // a CA that is not registered
    let mut fields = request(&web, &csrf, &good, "server", "90");
    fields[1] = ("ca", "0123456789abcdef0123456789abcdef");
    let page = web
        .post("/ui/requests/new", Some(&cookie), &fields, &[])
        .text()
        .unwrap();
    assert!(page.contains("id=\"ca-error\""), "{page}");
    // a CSR the CA's policy refuses: the verdict, and no confirmation
    let no_san = csr_text(&web.env, "nosan", "/CN=nosan.example.org", "");
    let r = web.post(
        "/ui/requests/new",
        Some(&cookie),
        &request(&web, &csrf, &no_san, "server", "90"),
        &[],
    );
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(
        page.contains("role=\"alert\"") && page.contains("Refused (policy)"),
        "{page}"
    );
    assert!(!page.contains("confirm-form"), "{page}");
    // without the CSRF token nothing is previewed
    let r = web.post(
        "/ui/requests/new",
        Some(&cookie),
        &request(&web, "", &good, "server", "90"),
        &[],
    );
    assert_eq!(r.status(), 403);
    assert_eq!(sessions_opened(&web.env), 0);
}

#[test]
fn web_preview_then_one_confirmation_opens_exactly_one_session() {
    let web = Web::new();
    let cookie = web.sign_in();
    let csrf = web.csrf(&cookie);
    let csr = csr_text(
        &web.env,
        "www",
        "/CN=<img src=x onerror=alert(1)>",
        "DNS:www.example.org,DNS:api.example.org",
    );
    let r = web.post(
        "/ui/requests/new",
        Some(&cookie),
        &request(&web, &csrf, &csr, "server", "30"),
        &[],
    );
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(page.contains("Accepted."), "{page}");
    assert!(page.contains("DNS:api.example.org"), "{page}");
    assert!(page.contains("ECDSA"), "{page}");
    assert!(page.contains("30 days"), "{page}");
    assert!(!page.contains("<img src=x"), "the CSR's CN must be escaped");
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert_eq!(sessions_opened(&web.env), 0, "the preview opens nothing");
    let fields = confirm_fields(&page);

    // a confirmation whose request was changed after the review is refused
    let mut changed = fields.clone();
    changed[5].1 = "31".into();
    let r = post_fields(&web, "/ui/requests", &cookie, &changed);
    assert_eq!(r.status(), 409);
    assert!(r.text().unwrap().contains("role=\"alert\""));
    // a made-up one too
    let mut forged = fields.clone();
    forged[1].1 = "00".repeat(16);
    assert_eq!(
        post_fields(&web, "/ui/requests", &cookie, &forged).status(),
        409
    );

    // the confirmation opens the session and goes to its page
    let r = post_fields(&web, "/ui/requests", &cookie, &fields);
    assert_eq!(r.status(), 303);
    let session_page = location(&r);
    assert!(session_page.starts_with("/ui/sessions/"), "{session_page}");
    // the same form again (a double submit, a replay) opens nothing more
    let again = post_fields(&web, "/ui/requests", &cookie, &fields);
    assert_eq!(again.status(), 303);
    assert_eq!(location(&again), session_page);
    assert_eq!(sessions_opened(&web.env), 1);

    // the session page, readable without JavaScript
    let page = web.get(&session_page, Some(&cookie)).text().unwrap();
    assert!(page.contains("id=\"progress\""), "{page}");
    assert!(page.contains("0 of 2 approvals"), "{page}");
    assert!(page.contains("id=\"approvals\""), "{page}");
    assert!(page.contains("DNS:www.example.org"), "{page}");
    assert!(page.contains("id=\"cancel-form\""), "{page}");
    assert!(!page.contains("<img src=x"));
    assert!(!page.contains("certificate-download"));
    let id = session_page.rsplit('/').next().unwrap().to_owned();
    // its event stream, with the browser's cookie
    let mut events = ui_events(&web, &cookie, &id);
    let first = events.status().unwrap();
    assert_eq!(first.session_id, id);
    assert_eq!(first.state, nkpki::proto::SessionState::Waiting);
    // cancel: refused without the CSRF token, done with it
    let r = web.post(
        &format!("/ui/sessions/{id}/cancel"),
        Some(&cookie),
        &[("csrf", "x")],
        &[],
    );
    assert_eq!(r.status(), 403);
    let r = web.post(
        &format!("/ui/sessions/{id}/cancel"),
        Some(&cookie),
        &[("csrf", &csrf)],
        &[],
    );
    assert_eq!(r.status(), 303);
    let last = events.status().unwrap();
    assert_eq!(last.state, nkpki::proto::SessionState::Cancelled);
    assert!(events.next().is_none());
    let page = web.get(&session_page, Some(&cookie)).text().unwrap();
    assert!(page.contains("data-state=\"cancelled\""), "{page}");
    assert!(!page.contains("id=\"cancel-form\""));
    // sessions that do not exist
    assert_eq!(
        web.get(
            "/ui/sessions/00000000000000000000000000000000",
            Some(&cookie)
        )
        .status(),
        404
    );
    assert_eq!(
        web.get("/ui/sessions/zz/events", Some(&cookie)).status(),
        404
    );
}

#[test]
fn web_an_expired_sign_in_keeps_the_pasted_csr() {
    let web = Web::new();
    let cookie = web.sign_in();
    let csrf = web.csrf(&cookie);
    let csr = csr_text(
        &web.env,
        "kept",
        "/CN=kept.example.org",
        "DNS:kept.example.org",
    );
    // the sign-in is gone (a stale cookie): the form goes to sign-in, not lost
    let r = web.post(
        "/ui/requests/new",
        Some("nkpki_ui=0000000000000000000000000000000000000000000000000000000000000000"),
        &request(&web, &csrf, &csr, "client", "45"),
        &[],
    );
    assert_eq!(r.status(), 303);
    let to = location(&r);
    assert!(
        to.starts_with("/ui/sign-in?next=/ui/requests/new%3Fdraft%3D"),
        "{to}"
    );
    let next = to
        .strip_prefix("/ui/sign-in?next=")
        .unwrap()
        .replace("%3F", "?")
        .replace("%3D", "=");
    let r = web.post(
        "/ui/sign-in",
        None,
        &[("token", &web.token), ("next", &next)],
        &[],
    );
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), next);
    let fresh = set_cookie(r.headers())
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body_line = csr.lines().nth(1).unwrap().to_owned();
    let page = web.get(&next, Some(&fresh)).text().unwrap();
    assert!(page.contains(&body_line), "{page}");
    assert!(page.contains("value=\"45\""), "{page}");
    assert!(page.contains("<option value=\"client\" selected"), "{page}");
    // a draft is given back once
    let page = web.get(&next, Some(&fresh)).text().unwrap();
    assert!(!page.contains(&body_line));
}

#[test]
fn web_a_session_fills_up_live_then_its_certificate_is_revoked_from_the_pages() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003"]);
    env.packaged_and_deployed(3, 2);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let web = Web {
        env,
        server,
        token,
        ca_id: ca_id.clone(),
        http: reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let cookie = web.sign_in();
    let csrf = web.csrf(&cookie);
    let csr = csr_text(
        &web.env,
        "www",
        "/CN=www.example.org",
        "DNS:www.example.org",
    );
    let page = web
        .post(
            "/ui/requests/new",
            Some(&cookie),
            &request(&web, &csrf, &csr, "server", "30"),
            &[],
        )
        .text()
        .unwrap();
    let r = post_fields(&web, "/ui/requests", &cookie, &confirm_fields(&page));
    assert_eq!(r.status(), 303);
    let session_page = location(&r);
    let id = session_page.rsplit('/').next().unwrap().to_owned();
    let mut events = ui_events(&web, &cookie, &id);
    assert!(events.status().unwrap().approved.is_empty());

    let rule = [
        "--approve-profile",
        "server",
        "--approve-san-suffix",
        ".example.org",
        "--approve-revocations",
    ];
    let _one = web.env.agent("NK001", &ca_id, &web.server.url, &rule);
    let one = loop {
        let s = events.status().unwrap();
        if !s.approved.is_empty() {
            break s;
        }
    };
    assert_eq!(one.answers[0].holder, "NK001");
    let page = web.get(&session_page, Some(&cookie)).text().unwrap();
    assert!(page.contains("1 of 2 approvals"), "{page}");
    let at = page.find("id=\"approvals\"").unwrap();
    assert!(page[at..].contains("NK001"), "{page}");
    let _two = web.env.agent("NK002", &ca_id, &web.server.url, &rule);
    let signed = loop {
        let s = events.status().unwrap();
        if s.state != nkpki::proto::SessionState::Waiting {
            break s;
        }
    };
    assert_eq!(signed.state, nkpki::proto::SessionState::Signed);
    let page = web.get(&session_page, Some(&cookie)).text().unwrap();
    assert!(page.contains("id=\"certificate-download\""), "{page}");
    let pem = web
        .get(&format!("/ui/sessions/{id}/certificate.pem"), Some(&cookie))
        .text()
        .unwrap();
    web.env.write("www.crt", &pem);
    web.env.openssl_verify("ca/ca.crt", "www.crt");
    let serial = web.env.cert_serial("www.crt");

    // revoke it from the pages: the form, then a revocation session the holders approve
    let r = web.get(
        &format!("/ui/cas/{ca_id}/revoke?serial={serial}"),
        Some(&cookie),
    );
    assert_eq!(r.status(), 200);
    let page = r.text().unwrap();
    assert!(page.contains("id=\"reason\""), "{page}");
    assert_eq!(
        web.get(
            &format!("/ui/cas/{ca_id}/revoke?serial=abcdef"),
            Some(&cookie)
        )
        .status(),
        404
    );
    let r = web.post(
        &format!("/ui/cas/{ca_id}/revoke"),
        Some(&cookie),
        &[
            ("csrf", "x"),
            ("serial", &serial),
            ("reason", "keyCompromise"),
        ],
        &[],
    );
    assert_eq!(r.status(), 403);
    let r = web.post(
        &format!("/ui/cas/{ca_id}/revoke"),
        Some(&cookie),
        &[
            ("csrf", &csrf),
            ("serial", &serial),
            ("reason", "keyCompromise"),
        ],
        &[],
    );
    assert_eq!(r.status(), 303);
    let revocation = location(&r);
    let page = web.get(&revocation, Some(&cookie)).text().unwrap();
    assert!(page.contains("id=\"statement\""), "{page}");
    assert!(
        page.contains(&serial) && page.contains("keyCompromise"),
        "{page}"
    );
    let rid = revocation.rsplit('/').next().unwrap().to_owned();
    let mut events = ui_events(&web, &cookie, &rid);
    let done = loop {
        let s = events.status().unwrap();
        if s.state != nkpki::proto::SessionState::Waiting {
            break s;
        }
    };
    assert_eq!(done.state, nkpki::proto::SessionState::Signed, "{done:?}");
    let page = web.get(&revocation, Some(&cookie)).text().unwrap();
    assert!(page.contains("id=\"crl-download\""), "{page}");
    let crl = web
        .get(&format!("/ui/sessions/{rid}/crl.pem"), Some(&cookie))
        .text()
        .unwrap();
    web.env.write("ca.crl", &crl);
    let listed = web
        .env
        .openssl(&["crl", "-in", "ca.crl", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(
        listed
            .to_lowercase()
            .replace(':', "")
            .contains(&serial.to_lowercase()),
        "{listed}"
    );
    // and a new CRL from the CA's pages
    let r = web.post(
        &format!("/ui/cas/{ca_id}/crl"),
        Some(&cookie),
        &[("csrf", &csrf)],
        &[],
    );
    assert_eq!(r.status(), 303);
    let page = web.get(&location(&r), Some(&cookie)).text().unwrap();
    assert!(
        page.contains("sign a new CRL") && page.contains("id=\"statement\""),
        "{page}"
    );
}
