//! The web pages in a real headless Chromium (tests/integration/browser.rs): sign-in on
//! every page, text from outside shown as text, cross-site form posts refused, and page
//! screenshots for the README (`make screenshots`).

use crate::browser::Browser;
use crate::harness::{Env, Holder, Server};
use fantoccini::key::Key;

/// A holder name and a CSR common name that are HTML.
const XSS: &str = "<img src=x onerror=alert(1)>";

/// A registered 2-of-3 CA (its first holder named [`XSS`]), a running server, an operator
/// API token and a browser that is not signed in.
struct Site {
    // dropped in this order: the browser, the server, then the directory
    browser: Browser,
    server: Server,
    token: String,
    ca_id: String,
    /// The test's directory (CA, data, tokens), kept until the end.
    #[allow(dead_code)]
    env: Env,
}

impl Site {
    fn new() -> Self {
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
        let browser = Browser::start(&server.url);
        Site {
            browser,
            server,
            token,
            ca_id,
            env,
        }
    }

    /// Signs in with the operator token from the sign-in page, as a person would.
    fn sign_in(&self) {
        let b = &self.browser;
        b.goto("/ui/sign-in");
        b.fill("#token", &self.token);
        b.click("#sign-in");
        b.wait_for("#sign-out", 10);
    }
}

/// Every page's URL that needs a signed-in operator.
fn pages(ca_id: &str) -> Vec<String> {
    vec![
        "/ui/".into(),
        format!("/ui/cas/{ca_id}"),
        "/ui/audit".into(),
        "/ui/requests/new".into(),
        "/ui/generator".into(),
        "/ui/sessions/0123456789abcdef".into(),
    ]
}

/// The harness itself: a headless Chromium on its own chromedriver loads a page of the
/// real server and reads it.
#[test]
fn browser_loads_the_server_health_page() {
    let env = Env::new();
    let server = env.serve(&[]);
    let browser = Browser::start(&server.url);
    browser.goto("/healthz");
    assert_eq!(browser.path(), "/healthz");
    let text = browser.body_text();
    assert!(text.contains("\"ok\""), "healthz said {text:?}");
}

/// Each page sends a browser that is not signed in to the sign-in page (remembering where
/// it was going); a wrong token is refused beside its field; the operator's token signs
/// in and lands on the page asked for; sign-out ends the sign-in for every page.
#[test]
fn browser_every_page_needs_sign_in_and_sign_out_ends_it() {
    let site = Site::new();
    let b = &site.browser;
    for page in pages(&site.ca_id) {
        b.goto(&page);
        let path = b.wait_path("/ui/sign-in", 10);
        assert!(path.contains("next="), "{page} went to {path}");
        assert!(b.exists("#token"), "{page}: no token field on {path}");
        assert!(!b.exists("#sign-out"), "{page}: signed in without a token");
    }
    b.screenshots("sign-in");

    b.goto("/ui/audit");
    b.wait_path("/ui/sign-in", 10);
    b.fill("#token", "nkpki_not-a-real-token");
    b.click("#sign-in");
    b.wait_for("#token-error", 10);
    assert!(
        b.text("#token-error").contains("unknown"),
        "{}",
        b.body_text()
    );
    assert!(!b.exists("#sign-out"));

    b.fill("#token", &site.token);
    b.click("#sign-in");
    b.wait_path("/ui/audit", 10);
    assert_eq!(
        b.path(),
        "/ui/audit",
        "sign-in should return to the page asked for"
    );
    let cookies = b.cookies();
    assert!(
        cookies.iter().any(|(name, _)| name == "nkpki_ui"),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .all(|(_, value)| !value.contains(site.token.trim())),
        "the API token must not be kept in a cookie"
    );
    for page in pages(&site.ca_id) {
        b.goto(&page);
        assert_eq!(b.path(), page, "{page} not shown signed in");
    }

    b.goto("/ui/");
    b.click("#sign-out");
    b.wait_path("/ui/sign-in", 10);
    for page in pages(&site.ca_id) {
        b.goto(&page);
        b.wait_path("/ui/sign-in", 10);
    }
}

/// Keyboard only: the token field has the focus on the sign-in page, Enter signs in,
/// Tab reaches every link of the navigation and then "Sign out", and Enter on it signs out.
#[test]
fn browser_keyboard_alone_signs_in_moves_through_the_menu_and_signs_out() {
    let site = Site::new();
    let b = &site.browser;
    b.goto("/ui/sign-in");
    b.wait_for("#token", 10);
    assert_eq!(
        b.focused(),
        "token",
        "the token field should have the focus"
    );
    b.keys(site.token.trim());
    b.key(Key::Enter);
    b.wait_for("#sign-out", 10);
    assert_eq!(b.path(), "/ui/");
    let mut reached = Vec::new();
    for _ in 0..12 {
        b.key(Key::Tab);
        let focused = b.focused();
        if focused == "sign-out" {
            break;
        }
        reached.push(b.execute(
            "return document.activeElement.getAttribute('href') || '';",
            vec![],
        ));
    }
    assert_eq!(
        b.focused(),
        "sign-out",
        "Tab never reached Sign out: {reached:?}"
    );
    for href in ["/ui/", "/ui/requests/new", "/ui/generator", "/ui/audit"] {
        assert!(
            reached.contains(&serde_json::json!(href)),
            "Tab skipped {href}: {reached:?}"
        );
    }
    b.key(Key::Enter);
    b.wait_path("/ui/sign-in", 10);
    b.goto("/ui/");
    b.wait_path("/ui/sign-in", 10);
}

/// A holder named `<img src=x onerror=alert(1)>` is shown as that text on the overview:
/// no image element, no dialog.
#[test]
fn browser_html_in_a_holder_name_is_text() {
    let site = Site::new();
    site.sign_in();
    let b = &site.browser;
    b.goto("/ui/");
    b.wait_for("#sign-out", 10);
    assert!(b.body_text().contains(XSS), "{}", b.body_text());
    assert!(!b.exists("img[src=x]"), "the holder name became an element");
    assert_eq!(b.open_dialog(), None, "a script from the page ran");
    b.screenshots("overview");
}

/// A page on another origin that auto-submits a sign-out form to nkpki is refused, and
/// the operator stays signed in: from another loopback port (same site, so the browser
/// even sends the SameSite cookie; the Origin check and the CSRF token refuse it) and
/// from `localhost` (another site).
#[test]
fn browser_cross_site_form_post_is_refused() {
    let site = Site::new();
    site.sign_in();
    let b = &site.browser;
    let attacker = Attacker::serve(&format!(
        "<!doctype html><title>prize</title>\
         <form method=post action='{}/ui/sign-out'>\
         <input type=hidden name=csrf value=guessed></form>\
         <script>document.forms[0].submit()</script>",
        site.server.url
    ));
    for host in ["127.0.0.1", "localhost"] {
        b.goto(&format!("http://{host}:{}/", attacker.port));
        // the form lands on nkpki, which answers with its refusal
        b.wait_path("/ui/sign-out", 10);
        let refused = b.wait_text("div.error[role=alert]", 10, |t| !t.is_empty());
        assert!(refused.contains("another site"), "from {host}: {refused}");
        b.goto("/ui/");
        assert_eq!(
            b.path(),
            "/ui/",
            "a post from {host} signed the operator out"
        );
        assert!(b.exists("#sign-out"));
    }
}

/// A one-page web server on another loopback port (another origin), answering every
/// request with the same HTML; stops when dropped.
struct Attacker {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attacker {
    fn serve(html: &str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let body = html.to_owned();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        conn.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                            .unwrap();
                        let mut buf = [0u8; 4096];
                        let _ = conn.read(&mut buf);
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        });
        Attacker {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keyboard only through the generator: Tab from the top of the page reaches the form,
/// each Tab moves to the next field in reading order (CA, server, then each holder's row),
/// typing fills them (a letter picks the key), and Enter on "Generate the CA" runs the
/// ceremony and shows the result page with a download per holder.
#[test]
fn browser_keyboard_alone_fills_and_submits_the_generator() {
    let site = Site::new();
    let admin = site.env.admin_token();
    // the age keys Site::new made for the CA it registered
    let holders: Vec<Holder> = (1..=3)
        .map(|i| {
            let id = format!("NK{i:03}");
            let key_file = site.env.path(&format!("{id}.key"));
            let text = std::fs::read_to_string(&key_file).unwrap();
            let recipient = text
                .lines()
                .find_map(|l| l.strip_prefix("# public key: "))
                .unwrap()
                .to_owned();
            Holder {
                id,
                key_file,
                recipient,
            }
        })
        .collect();
    let b = &site.browser;
    b.goto("/ui/sign-in?next=/ui/generator");
    b.wait_for("#token", 10);
    b.keys(&admin);
    b.key(Key::Enter);
    b.wait_path("/ui/generator", 10);
    b.wait_for("#generate", 10);
    b.screenshots("generator");

    let mut tabs = 0;
    while b.focused() != "name" {
        b.key(Key::Tab);
        tabs += 1;
        assert!(tabs < 30, "Tab never reached the CA name field");
    }
    let mut fields: Vec<(String, String)> = vec![
        ("name".into(), "Keyboard Root CA".into()),
        ("org".into(), "nkpki tests".into()),
        ("country".into(), "FR".into()),
        // a select: typing "e" picks the first key starting with it, ecdsa-p256
        ("key".into(), "e".into()),
        ("mode".into(), String::new()),
        ("validity_years".into(), "5".into()),
        ("threshold".into(), "2".into()),
        ("server_url".into(), String::new()),
        ("server_cert_sha256".into(), String::new()),
        ("insecure_http".into(), String::new()),
    ];
    for (i, h) in holders.iter().enumerate() {
        for (field, value) in [
            ("id", h.id.clone()),
            ("name", format!("Holder {}", h.id)),
            ("email", format!("{}@example.org", h.id.to_lowercase())),
            ("location", "Paris".into()),
            ("recipient", h.recipient.clone()),
        ] {
            fields.push((format!("holders-{i}-{field}"), value));
        }
        fields.push((format!("remove-{i}"), String::new()));
    }
    fields.push(("add-holder".into(), String::new()));
    fields.push(("generate".into(), String::new()));
    for (n, (field, value)) in fields.iter().enumerate() {
        if n > 0 {
            b.key(Key::Tab);
        }
        assert_eq!(&b.focused(), field, "Tab order: expected {field} next");
        if !value.is_empty() {
            b.keys(value);
        }
    }
    b.key(Key::Enter);
    b.wait_path("/ui/generator/result/", 120);
    let fingerprint = b.text("#ca-fingerprint");
    assert!(fingerprint.contains("SHA-256"), "{fingerprint}");
    for h in &holders {
        assert!(
            b.exists(&format!("#download-{}", h.id)),
            "{}",
            b.body_text()
        );
    }
    b.screenshots("generator-result");
    // a package, downloaded with the browser's sign-in, opens with its holder's age key
    let href = b
        .attr(&format!("#download-{}", holders[0].id), "href")
        .unwrap();
    let (status, package) = b.fetch(&href);
    assert_eq!(status, 200);
    site.env.write("NK001.nkpkg", &package);
    let key = holders[0].key_file.to_str().unwrap();
    site.env
        .tool("age", &["-d", "-i", key, "-o", "NK001.tar", "NK001.nkpkg"])
        .ok();
    let listing = site.env.tool("tar", &["-tf", "NK001.tar"]).ok().stdout();
    assert!(!listing.trim().is_empty(), "an empty package");
}

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];
const RULE: [&str; 5] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-revocations",
];

/// The main scenario, from the pages: sign in; generate a 3-of-5 CA from the
/// generator form; download the five packages; deploy three on SoftHSM; paste a CSR on
/// New request, see what would be issued, open the session; start the three agents one
/// by one: the session page shows each approval arrive without reloading; download the
/// certificate (`openssl verify`); revoke it from the pages; the new CRL lists it.
#[test]
fn browser_generate_request_live_approvals_download_revoke_crl() {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.holders(5);
    let server = env.serve(&[]);
    let admin = env.admin_token();
    env.write("op.token", &admin);
    let b = Browser::start(&server.url);
    b.goto("/ui/sign-in?next=/ui/generator");
    b.fill("#token", &admin);
    b.click("#sign-in");
    b.wait_path("/ui/generator", 10);

    // the generator: five rows (three by default, two added), 3 of 5
    b.fill("#name", "Browser Root CA");
    b.fill("#org", "nkpki tests");
    b.fill("#country", "FR");
    b.select("#key", "ecdsa-p256");
    b.fill("#validity_years", "5");
    for _ in 0..2 {
        let rows = b.find_all("fieldset.holder").len();
        b.click("#add-holder");
        b.wait_for(&format!("#holder-{rows}"), 10);
    }
    b.fill("#threshold", "3");
    for (i, h) in holders.iter().enumerate() {
        b.fill(&format!("#holders-{i}-id"), &h.id);
        b.fill(&format!("#holders-{i}-name"), &format!("Holder {}", h.id));
        b.fill(
            &format!("#holders-{i}-email"),
            &format!("{}@example.org", h.id.to_lowercase()),
        );
        b.fill(&format!("#holders-{i}-location"), "Paris");
        b.fill(&format!("#holders-{i}-recipient"), &h.recipient);
    }
    b.click("#generate");
    b.wait_path("/ui/generator/result/", 120);
    let ca_id = b.text("#ca-id");
    std::fs::create_dir_all(env.path("ca/packages")).unwrap();
    for h in &holders {
        let href = b.attr(&format!("#download-{}", h.id), "href").unwrap();
        let (status, package) = b.fetch(&href);
        assert_eq!(status, 200, "{href}");
        env.write(&format!("ca/packages/{}.nkpkg", h.id), &package);
    }
    let (status, ca_pem) = b.fetch(&format!("/ca/{ca_id}.crt"));
    assert_eq!(status, 200, "the CA certificate at /ca/{ca_id}.crt");
    env.write("ca.crt", &ca_pem);

    // three holders deploy their package and start their agent
    let three = ["NK001", "NK003", "NK005"];
    for h in holders.iter().filter(|h| three.contains(&h.id.as_str())) {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }

    // New request: the preview first, then the session
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let csr_pem = String::from_utf8(env.read(&csr)).unwrap();
    b.goto("/ui/requests/new");
    b.select("#ca", &ca_id);
    b.fill("#csr", &csr_pem);
    b.select("#profile", "server");
    b.fill("#days", "30");
    b.screenshots("new-request");
    b.click("#preview");
    b.wait_for("#open-session", 10);
    assert!(
        b.text("#sans").contains("www.example.org"),
        "{}",
        b.body_text()
    );
    b.screenshots("request-preview");
    b.click("#open-session");
    b.wait_path("/ui/sessions/", 10);
    // no agent runs yet: the page shows the session waiting
    b.wait_text("#progress", 10, |t| t.contains("0 of 3"));
    assert!(!b.exists("#certificate-download"));
    // a marker in the page: it survives only if the page is never reloaded
    b.execute("window.nkpkiMarker = 'same page';", vec![]);
    // the agents start one by one: each approval appears on the same page (the page
    // reloads itself only once the session is over, to offer the download)
    let mut agents = Vec::new();
    for (n, id) in three.iter().enumerate().take(2) {
        agents.push(env.agent(id, &ca_id, &server.url, &RULE));
        b.wait_text("#progress", 60, |t| t.contains(&format!("{} of 3", n + 1)));
        b.wait_text("#approvals", 10, |t| t.contains(id));
        assert_eq!(
            b.execute("return window.nkpkiMarker || null;", vec![]),
            serde_json::json!("same page"),
            "the session page was reloaded instead of updated live"
        );
    }
    agents.push(env.agent(three[2], &ca_id, &server.url, &RULE));
    let progress = b.wait_text("#progress", 90, |t| t.contains("3 of 3"));
    assert!(progress.contains("approvals"), "{progress}");
    let approvals = b.wait_text("#approvals", 30, |t| three.iter().all(|id| t.contains(id)));
    assert!(!approvals.contains("NK002"), "{approvals}");
    assert_eq!(b.find_all("#approvals li").len(), 3, "{approvals}");
    b.wait_for("#certificate-download", 60);
    b.screenshots("session");
    let href = b.attr("#certificate-download", "href").unwrap();
    let (status, pem) = b.fetch(&href);
    assert_eq!(status, 200);
    env.write("www.crt", &pem);
    env.openssl_verify("ca.crt", "www.crt");
    let serial = env.cert_serial("www.crt");

    // revoke it from the pages; the agents approve the revocation and sign the CRL
    b.goto(&format!("/ui/cas/{ca_id}"));
    b.screenshots("ca");
    b.goto(&format!("/ui/cas/{ca_id}/revoke?serial={serial}"));
    b.select("#reason", "keyCompromise");
    b.click("#revoke");
    b.wait_path("/ui/sessions/", 10);
    b.wait_for("#crl-download", 90);
    let href = b.attr("#crl-download", "href").unwrap();
    let (status, crl) = b.fetch(&href);
    assert_eq!(status, 200);
    env.write("ca.crl", &crl);
    let text = env
        .openssl(&["crl", "-in", "ca.crl", "-noout", "-text"])
        .ok()
        .stdout()
        .to_uppercase();
    assert!(
        text.contains(&serial.to_uppercase()),
        "the CRL does not list {serial}:\n{text}"
    );
    b.goto("/ui/audit");
    b.screenshots("audit");
}

/// A CSR whose common name is `<img src=x onerror=alert(1)>` (made by `openssl req`) is
/// shown as text on the request preview: no image element, no dialog.
#[test]
fn browser_html_in_a_csr_is_text() {
    let site = Site::new();
    site.sign_in();
    let b = &site.browser;
    let csr = site.env.csr(
        "xss",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &format!("/CN={XSS}"),
        &["subjectAltName=DNS:www.example.org"],
    );
    let csr_pem = String::from_utf8(site.env.read(&csr)).unwrap();
    b.goto("/ui/requests/new");
    b.select("#ca", &site.ca_id);
    b.fill("#csr", &csr_pem);
    b.click("#preview");
    b.wait_for("#subject", 10);
    assert!(b.text("#subject").contains(XSS), "{}", b.body_text());
    assert!(!b.exists("img[src=x]"), "the CSR's name became an element");
    assert_eq!(b.open_dialog(), None, "a script from the CSR ran");
}
