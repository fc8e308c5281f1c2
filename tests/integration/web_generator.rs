//! The generator ("New CA") over loopback HTTP: every limit answered beside its field with
//! nothing registered, a valid form registering the CA with packages that the age CLI opens
//! and that deploy on SoftHSM, and `ca-init --web` (loopback only, a one-time URL, the
//! same output directory as `ca-init --package`, exiting when done).

use crate::harness::{Env, Holder};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use std::io::BufRead;
use std::time::{Duration, Instant};

/// A browser without JavaScript: one cookie jar of one cookie, no redirects followed.
struct Browser {
    client: Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Browser {
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            base: base.trim_end_matches('/').to_owned(),
            cookie: None,
        }
    }

    fn answer(&mut self, response: reqwest::blocking::Response) -> Page {
        if let Some(set) = response.headers().get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        Page {
            status: response.status(),
            location: response
                .headers()
                .get(LOCATION)
                .map(|l| l.to_str().unwrap().to_owned()),
            body: response.text().unwrap(),
        }
    }

    fn get(&mut self, path: &str) -> Page {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        let response = req.send().unwrap();
        self.answer(response)
    }

    fn post(&mut self, path: &str, pairs: &[(String, String)]) -> Page {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode(pairs));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, c);
        }
        let response = req.send().unwrap();
        self.answer(response)
    }

    fn sign_in(&mut self, token: &str) {
        let page = self.post(
            "/ui/sign-in",
            &[
                ("token".into(), token.into()),
                ("next".into(), "/ui/generator".into()),
            ],
        );
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        assert!(self.cookie.is_some());
    }
}

/// A form body, `application/x-www-form-urlencoded`.
fn encode(pairs: &[(String, String)]) -> String {
    let escape = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of hidden field `name` in a page.
fn hidden(body: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&needle)
        .unwrap_or_else(|| panic!("no field {name} in {body}"))
        + needle.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// A valid form for `holders` (NK001… sealed to their age keys, except those listed in
/// `passphrase`), with the csrf and nonce of `form_page`.
fn valid_form(form_page: &str, holders: &[Holder], passphrase: &[&str]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("csrf", hidden(form_page, "csrf")),
        ("nonce", hidden(form_page, "nonce")),
        ("name", "Web Root CA".into()),
        ("org", "nkpki tests".into()),
        ("country", "FR".into()),
        ("key", "ecdsa-p256".into()),
        ("mode", "reconstruct".into()),
        ("validity_years", "5".into()),
        ("threshold", "2".into()),
        ("server_url", "https://pki.example.org:8443".into()),
        ("server_cert_sha256", String::new()),
        ("action", "generate".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (i, h) in holders.iter().enumerate() {
        let recipient = if passphrase.contains(&h.id.as_str()) {
            String::new()
        } else {
            h.recipient.clone()
        };
        for (field, value) in [
            ("id", h.id.clone()),
            ("name", format!("Holder {}", h.id)),
            ("email", format!("{}@example.org", h.id.to_lowercase())),
            ("location", "Paris".into()),
            ("recipient", recipient),
        ] {
            pairs.push((format!("holders-{i}-{field}"), value));
        }
    }
    pairs
}

fn set(pairs: &mut Vec<(String, String)>, name: &str, value: &str) {
    pairs.retain(|(k, _)| k != name);
    pairs.push((name.to_owned(), value.to_owned()));
}

fn token(env: &Env, name: &str, role: &[&str]) -> String {
    let mut args = vec![
        "serve",
        "token",
        "create",
        "--data-dir",
        "data",
        "--name",
        name,
    ];
    args.extend_from_slice(role);
    env.nkpki(&args).ok().stdout().trim().to_owned()
}

fn registered_cas(server: &str, token: &str) -> Vec<serde_json::Value> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = Client::new()
        .get(format!("{server}/api/v1/cas"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value
        .as_array()
        .or_else(|| value["cas"].as_array())
        .cloned()
        .unwrap_or_else(|| panic!("CA list: {text}"))
}

#[test]
fn every_generator_limit_is_shown_beside_its_field_and_registers_nothing() {
    let env = Env::new();
    let admin = token(&env, "root-admin", &["--role", "ca-admin"]);
    let server = env.serve(&[]);
    let mut browser = Browser::new(&server.url);
    // signed out: back to the sign-in page, which returns here
    let page = browser.get("/ui/generator");
    assert!(page.status.is_redirection());
    assert!(
        page.location
            .as_deref()
            .unwrap()
            .starts_with("/ui/sign-in?next=/ui/generator"),
        "{:?}",
        page.location
    );
    browser.sign_in(&admin);
    let form = browser.get("/ui/generator");
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains("id=\"server-memory-notice\""));
    assert!(form.body.contains("CA key exists in the server's memory"));
    let holders = env.holders(3);
    let good = valid_form(&form.body, &holders, &[]);

    let long_name = "x".repeat(65);
    let long_holder = "n".repeat(256);
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("name", long_name.clone(), "name", "at most 64"),
        ("name", " ".into(), "name", "must not be empty"),
        ("org", String::new(), "org", "must not be empty"),
        ("org", long_name.clone(), "org", "at most 64"),
        ("country", "fr".into(), "country", "two upper-case letters"),
        ("country", "FRA".into(), "country", "two upper-case letters"),
        ("key", "rsa-1024".into(), "key", "is not a key type"),
        (
            "mode",
            "threshold".into(),
            "key",
            "cannot be a threshold-mode key",
        ),
        ("mode", "split".into(), "mode", "not a CA mode"),
        (
            "validity_years",
            "0".into(),
            "validity_years",
            "outside 1..=30",
        ),
        (
            "validity_years",
            "31".into(),
            "validity_years",
            "outside 1..=30",
        ),
        (
            "validity_years",
            "ten".into(),
            "validity_years",
            "not a whole number",
        ),
        ("threshold", "1".into(), "threshold", "outside 2..=15"),
        ("threshold", "16".into(), "threshold", "outside 2..=15"),
        (
            "threshold",
            "4".into(),
            "threshold",
            "more than the 3 shares",
        ),
        (
            "holders-1-id",
            "NK1".into(),
            "holders-1-id",
            "NK followed by three digits",
        ),
        (
            "holders-1-id",
            "NK001".into(),
            "holders-1-id",
            "appears twice",
        ),
        (
            "holders-0-name",
            String::new(),
            "holders-0-name",
            "must not be empty",
        ),
        (
            "holders-0-name",
            long_holder,
            "holders-0-name",
            "at most 255",
        ),
        (
            "holders-2-email",
            "alice@".into(),
            "holders-2-email",
            "not an e-mail address",
        ),
        (
            "holders-2-location",
            String::new(),
            "holders-2-location",
            "must not be empty",
        ),
        (
            "holders-0-recipient",
            "age1nope".into(),
            "holders-0-recipient",
            "not an age X25519 recipient",
        ),
        (
            "server_url",
            "http://127.0.0.1:1".into(),
            "server_url",
            "plain http",
        ),
        (
            "server_cert_sha256",
            "abcd".into(),
            "server_cert_sha256",
            "64 hex digits",
        ),
    ];
    for (field, value, error_field, needle) in &cases {
        let mut pairs = good.clone();
        set(&mut pairs, field, value);
        let page = browser.post("/ui/generator", &pairs);
        assert_eq!(
            page.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value:?}"
        );
        let beside = format!("<p class=\"field-error\" id=\"{error_field}-error\">");
        let at = page
            .body
            .find(&beside)
            .unwrap_or_else(|| panic!("{field}={value:?}: no {beside} in {}", page.body));
        let message = &page.body[at..at + page.body[at..].find("</p>").unwrap()];
        assert!(message.contains(needle), "{field}={value:?}: {message}");
        // beside its field: the input comes right before its error
        let input = page.body.find(&format!("id=\"{error_field}\"")).unwrap();
        assert!(input < at, "{field}: the error is not after its field");
        // the typed values are kept
        assert!(page.body.contains("value=\"Web Root CA\"") || *field == "name");
    }
    // too few and too many holders
    let mut two: Vec<(String, String)> = good
        .iter()
        .filter(|(k, _)| !k.starts_with("holders-2-"))
        .cloned()
        .collect();
    set(&mut two, "threshold", "2");
    let page = browser.post("/ui/generator", &two);
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("id=\"holders-error\""), "{}", page.body);
    assert!(page.body.contains("2 holder(s) given; between 3 and 20"));
    let mut many = good.clone();
    for i in 3..21 {
        for (field, value) in [
            ("id", format!("NK{:03}", i + 1)),
            ("name", "H".into()),
            ("email", "h@example.org".into()),
            ("location", "L".into()),
        ] {
            many.push((format!("holders-{i}-{field}"), value));
        }
    }
    let page = browser.post("/ui/generator", &many);
    assert!(page.body.contains("21 holder(s) given"), "{}", page.body);

    // rows added and removed without JavaScript
    let mut add = good.clone();
    set(&mut add, "action", "add");
    let page = browser.post("/ui/generator", &add);
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("id=\"holders-3-id\""));
    assert!(!page.body.contains("field-error"));
    let mut remove = good.clone();
    set(&mut remove, "action", "remove-0");
    let page = browser.post("/ui/generator", &remove);
    assert!(!page.body.contains("id=\"holders-2-id\""));
    assert!(page.body.contains("value=\"NK002\""));
    assert!(!page.body.contains("value=\"NK001\""));

    // a stale nonce, a missing CSRF token, a cross-site post
    let mut stale = good.clone();
    set(&mut stale, "nonce", "0123456789abcdef0123456789abcdef");
    let page = browser.post("/ui/generator", &stale);
    assert_eq!(page.status, StatusCode::CONFLICT);
    assert!(page.body.contains("This form is stale"), "{}", page.body);
    let mut forged = good.clone();
    set(&mut forged, "csrf", "forged");
    let page = browser.post("/ui/generator", &forged);
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let cross = browser
        .client
        .post(format!("{}/ui/generator", server.url))
        .header(COOKIE, browser.cookie.clone().unwrap())
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&good))
        .send()
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);

    assert!(registered_cas(&server.url, &admin).is_empty());
}

#[test]
fn a_valid_form_registers_the_ca_and_its_packages_open_and_deploy() {
    let env = Env::new().with_softhsm(&["NK001", "NK003"]);
    let admin = token(&env, "root-admin", &["--role", "ca-admin"]);
    let plain = token(&env, "alice", &[]);
    let server = env.serve(&[]);
    let holders = env.holders(3);

    // an operator without role ca-admin: refused before any ceremony, nothing registered
    let mut alice = Browser::new(&server.url);
    alice.sign_in(&plain);
    let form = alice.get("/ui/generator");
    let page = alice.post("/ui/generator", &valid_form(&form.body, &holders, &[]));
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.body.contains("role ca-admin"), "{}", page.body);
    assert!(page.body.contains("No ceremony was run"));
    assert!(registered_cas(&server.url, &admin).is_empty());

    let mut browser = Browser::new(&server.url);
    browser.sign_in(&admin);
    let form = browser.get("/ui/generator");
    let pairs = valid_form(&form.body, &holders, &["NK003"]);
    let first = browser.post("/ui/generator", &pairs);
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.body);
    let result = first.location.unwrap();
    assert!(result.starts_with("/ui/generator/result/"), "{result}");
    // the same form again (a double submit) runs no second ceremony
    let again = browser.post("/ui/generator", &pairs);
    assert_eq!(again.location.as_deref(), Some(result.as_str()));
    let cas = registered_cas(&server.url, &admin);
    assert_eq!(cas.len(), 1, "{cas:?}");
    let ca_id = cas[0]["ca_id"].as_str().unwrap().to_owned();

    // the result page: fingerprint, packages, the passphrase once, the sheets
    let page = browser.get(&result);
    assert_eq!(page.status, StatusCode::OK);
    let fingerprint = hidden_text(&page.body, "id=\"ca-fingerprint\">SHA-256 ");
    assert_eq!(fingerprint.len(), 95, "{fingerprint}");
    let passphrase = hidden_text(&page.body, "id=\"passphrase-NK003\">");
    assert_eq!(passphrase.len(), 26 + 5, "{passphrase}");
    assert!(!page.body.contains("id=\"passphrase-NK001\""));
    for h in &holders {
        assert!(page.body.contains(&format!("id=\"sheet-{}\"", h.id)));
        assert!(page.body.contains(&format!("id=\"download-{}\"", h.id)));
    }
    assert!(page.body.contains("data:image/png;base64,"));
    assert!(page.body.contains(&ca_id));
    let reload = browser.get(&result);
    assert!(
        !reload.body.contains(&passphrase),
        "the passphrase was shown twice"
    );
    assert!(reload.body.contains("were shown once"));

    // the packages: the age CLI opens the recipient's; deploy takes both kinds
    for h in &holders {
        let file = format!("{}.nkpkg", h.id);
        let download = browser.get(&format!("{result}/packages/{file}"));
        assert_eq!(download.status, StatusCode::OK);
        env.write(&file, &download.body);
    }
    let key = holders[0].key_file.to_str().unwrap();
    let opened = env.tool("age", &["-d", "-i", key, "-o", "NK001.tar", "NK001.nkpkg"]);
    opened.ok();
    let listing = env.tool("tar", &["tf", "NK001.tar"]).ok().stdout();
    for entry in [
        "share.json",
        "manifest.json",
        "agent.json",
        "INSTRUCTIONS.md",
    ] {
        assert!(listing.contains(entry), "{listing}");
    }
    let sheet_fp = |id: &str| {
        let sheet = &page.body[page.body.find(&format!("id=\"sheet-{id}\"")).unwrap()..];
        hidden_text(sheet, "class=\"fingerprint\">")
    };
    env.deploy(
        &holders[0],
        "NK001.nkpkg",
        "NK001",
        &["--expect-fingerprint", &sheet_fp("NK001")],
    )
    .ok();
    env.write("pass.txt", format!("NK003: {passphrase}\n"));
    env.deploy(
        &holders[2],
        "NK003.nkpkg",
        "NK003",
        &[
            "--passphrases-from",
            "pass.txt",
            "--expect-fingerprint",
            &sheet_fp("NK003"),
        ],
    )
    .ok();
    let manifest =
        std::fs::read_to_string(env.path(&format!("cfg-NK001/{ca_id}/manifest.json"))).unwrap();
    assert!(
        manifest.contains(&fingerprint),
        "{fingerprint} not in {manifest}"
    );

    // Done: the packages are wiped and the result is gone
    let done = browser.post(
        &format!("{result}/done"),
        &[("csrf".into(), hidden(&page.body, "csrf"))],
    );
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(browser.get(&result).status, StatusCode::NOT_FOUND);
    assert_eq!(
        browser
            .get(&format!("{result}/packages/NK001.nkpkg"))
            .status,
        StatusCode::NOT_FOUND
    );
}

/// The text of the element that starts right after `marker`.
fn hidden_text(body: &str, marker: &str) -> String {
    let at = body
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {body}"))
        + marker.len();
    body[at..].split('<').next().unwrap().to_owned()
}

#[test]
fn ca_init_web_refuses_a_non_loopback_listen() {
    let env = Env::new();
    env.nkpki(&[
        "ca-init",
        "--web",
        "--listen",
        "0.0.0.0:8470",
        "--out",
        "ca",
    ])
    .fails_with(&["not a loopback address", "hint:", "127.0.0.1"]);
    env.nkpki(&[
        "ca-init",
        "--web",
        "--listen",
        "192.0.2.1:8470",
        "--out",
        "ca",
    ])
    .fails_with(&["not a loopback address"]);
    assert!(!env.path("ca").exists());
}

fn file_names(env: &Env, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = env
        .files_below(dir)
        .iter()
        .map(|p| {
            p.strip_prefix(env.path(dir))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn ca_init_web_writes_what_ca_init_writes_through_a_one_time_url_and_exits() {
    let env = Env::new();
    let holders = env.holders(3);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
        .args(["ca-init", "--web", "--out", "web-ca"])
        .current_dir(env.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let url = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no URL printed");
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_owned();
        }
    };
    let (base, path) = url.split_at(url.find("/ui/").unwrap());
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let mut browser = Browser::new(base);
    // not signed in, a wrong key: refused
    let page = browser.get("/ui/generator");
    assert!(page.status.is_redirection());
    assert_eq!(
        browser.get("/ui/start?key=00").status,
        StatusCode::FORBIDDEN
    );
    // the one-time URL works once
    let page = browser.get(path);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/ui/generator"));
    let mut other = Browser::new(base);
    assert_eq!(other.get(path).status, StatusCode::FORBIDDEN);
    assert!(other.cookie.is_none());

    let form = browser.get("/ui/generator");
    assert_eq!(form.status, StatusCode::OK);
    assert!(!form.body.contains("id=\"server-memory-notice\""));
    // a limit on the laptop too
    let mut bad = valid_form(&form.body, &holders, &[]);
    set(&mut bad, "threshold", "4");
    let page = browser.post("/ui/generator", &bad);
    assert!(page.body.contains("id=\"threshold-error\""));
    assert!(!env.path("web-ca").exists());

    let pairs = valid_form(&page.body, &holders, &[]);
    let result = browser.post("/ui/generator", &pairs);
    assert_eq!(result.status, StatusCode::SEE_OTHER, "{}", result.body);
    let result = result.location.unwrap();
    let page = browser.get(&result);
    assert_eq!(page.status, StatusCode::OK);

    // the same files as ca-init --package
    env.holders_json(&holders, &[]);
    env.ca_init(
        "ecdsa-p256",
        2,
        &["--package", "--server-url", "https://pki.example.org:8443"],
    )
    .ok();
    assert_eq!(file_names(&env, "web-ca"), file_names(&env, "ca"));
    let key = holders[1].key_file.to_str().unwrap();
    env.tool(
        "age",
        &[
            "-d",
            "-i",
            key,
            "-o",
            "NK002.tar",
            "web-ca/packages/NK002.nkpkg",
        ],
    )
    .ok();

    // Done ends the process
    let done = browser.post(
        &format!("{result}/done"),
        &[("csrf".into(), hidden(&page.body, "csrf"))],
    );
    assert_eq!(done.status, StatusCode::OK);
    assert!(done.body.contains("nkpki ca-init has finished"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ca-init --web did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("web-ca/"), "{out}");
}
