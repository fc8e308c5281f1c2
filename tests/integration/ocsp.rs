//! Relying parties check revocation: issued certificates point to the CA's CRL, certificate
//! and OCSP responder; OpenSSL fetches the CRL from the URL inside a certificate, asks the
//! delegated responder with `openssl ocsp`, and every bad OCSP request gets its RFC 6960
//! error status.

use crate::harness::{Env, Holder};

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];
const AGENTS: [&str; 3] = ["NK001", "NK003", "NK005"];
const SERVER_RULE: [&str; 5] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-revocations",
];
const OCSP_RULE: [&str; 6] = [
    "--approve-profile",
    "ocsp",
    "--approve-max-days",
    "30",
    "--approve-subject",
    "CN=*",
];

fn deployed(env: &Env) -> (Vec<Holder>, String) {
    let holders = env.packaged_ceremony(5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    (holders, ca_id)
}

fn agents(env: &Env, ca_id: &str, url: &str, rule: &[&str]) -> Vec<crate::harness::Proc> {
    let procs: Vec<_> = AGENTS
        .iter()
        .map(|id| env.agent(id, ca_id, url, rule))
        .collect();
    for id in AGENTS {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.matches("connected to").count() >= 1
        });
        assert!(log.contains("connected to"), "{log}");
    }
    procs
}

fn set_urls(env: &Env, ca_id: &str, url: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "serve",
        "ca",
        "set-urls",
        "--data-dir",
        "data",
        "--ca",
        ca_id,
        "--public-url",
        url,
    ];
    args.extend_from_slice(extra);
    env.nkpki(&args).ok().stdout()
}

fn curl(env: &Env, args: &[&str], out: &str) {
    let mut all = vec!["-sS", "--fail", "-o", out];
    all.extend_from_slice(args);
    env.tool("curl", &all).ok();
}

/// `openssl ocsp` against the server, returning everything it said and whether it
/// succeeded.
fn ask(env: &Env, args: &[&str]) -> (String, bool) {
    let run = env.openssl(&[&["ocsp"], args].concat());
    (run.stdout() + &run.stderr(), run.output.status.success())
}

/// What `openssl ocsp` makes of an answer body the server gave.
fn answer_text(env: &Env, file: &str) -> String {
    let run = env.openssl(&["ocsp", "-respin", file, "-resp_text", "-noverify"]);
    run.stdout() + &run.stderr()
}

#[test]
fn certificates_carry_urls_where_the_crl_and_the_ocsp_responder_answer() {
    let env = Env::new().with_softhsm(&FIVE);
    let (_holders, ca_id) = deployed(&env);
    let server = env.serve(&[]);
    let url = server.url.clone();
    let said = set_urls(&env, &ca_id, &url, &["--ocsp"]);
    assert!(said.contains(&format!("{url}/ocsp/{ca_id}")), "{said}");
    let ocsp_url = format!("{url}/ocsp/{ca_id}");

    // the responder's certificate: an ordinary session the holders approve
    let ocsp_agents = agents(&env, &ca_id, &url, &OCSP_RULE);
    let run = env.nkpki(&[
        "ocsp-responder",
        "--server",
        &url,
        "--ca",
        &ca_id,
        "--days",
        "7",
        "--api-token-file",
        "op.token",
        "--out",
        "responder.crt",
    ]);
    run.ok();
    assert!(run.stderr().contains("Responder:"), "{}", run.stderr());
    let text = env
        .openssl(&["x509", "-in", "responder.crt", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(text.contains("OCSP Signing"), "{text}");
    assert!(text.contains("OCSP No Check"), "{text}");
    assert!(!text.contains("CRL Distribution"), "{text}");
    env.openssl_verify("ca/ca.crt", "responder.crt");
    env.pkilint_cert("responder.crt");
    let keys = env.files_below("data/ocsp");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&keys[0]).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    drop(ocsp_agents);

    let _agents = agents(&env, &ca_id, &url, &SERVER_RULE);
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let run = env.nkpki(&crate::online::sign_args(&url, &ca_id, &csr, "www.crt"));
    run.ok();
    // the holders were shown the URLs before they approved
    assert!(
        run.stderr()
            .contains(&format!("CRL URL:     {url}/crl/{ca_id}.crl")),
        "{}",
        run.stderr()
    );
    let text = env
        .openssl(&["x509", "-in", "www.crt", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(
        text.contains(&format!("URI:{url}/crl/{ca_id}.crl")),
        "{text}"
    );
    assert!(
        text.contains(&format!("CA Issuers - URI:{url}/ca/{ca_id}.der")),
        "{text}"
    );
    assert!(text.contains(&format!("OCSP - URI:{ocsp_url}")), "{text}");
    env.pkilint_cert("www.crt");
    env.pkilint_chain("ca/ca.crt", "www.crt");

    // the CA certificate, as DER, where the certificate says
    curl(&env, &[&format!("{url}/ca/{ca_id}.der")], "issuer.der");
    env.openssl(&[
        "x509",
        "-in",
        "ca/ca.crt",
        "-outform",
        "DER",
        "-out",
        "ca.der",
    ])
    .ok();
    assert_eq!(env.read("issuer.der"), env.read("ca.der"));

    // a CRL signed, then fetched from the URL inside the certificate
    env.nkpki(&[
        "crl",
        "--server",
        &url,
        "--ca",
        &ca_id,
        "--sign",
        "--api-token-file",
        "op.token",
        "--out",
        "signed.pem",
    ])
    .ok();
    let cdp = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("URI:")
                .filter(|u| u.ends_with(".crl"))
        })
        .unwrap()
        .to_owned();
    curl(&env, &[&cdp], "fetched.crl");
    env.openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        "fetched.crl",
        "-out",
        "fetched.pem",
    ])
    .ok();
    let crl_text = env
        .openssl(&["crl", "-in", "fetched.pem", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(crl_text.contains("X509v3 CRL Number"), "{crl_text}");
    assert!(crl_text.contains("Next Update"), "{crl_text}");
    let run = env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "ca/ca.crt",
        "-CRLfile",
        "fetched.pem",
        "www.crt",
    ]);
    assert!(
        run.output.status.success(),
        "{}{}",
        run.stdout(),
        run.stderr()
    );

    // OCSP: good, with the nonce echoed and the delegated responder's signature verified
    let base = [
        "-issuer",
        "ca/ca.crt",
        "-CAfile",
        "ca/ca.crt",
        "-url",
        &ocsp_url,
    ];
    let (said, ok) = ask(
        &env,
        &[&base[..], &["-cert", "www.crt", "-resp_text"]].concat(),
    );
    assert!(ok, "{said}");
    assert!(said.contains("www.crt: good"), "{said}");
    assert!(said.contains("Response verify OK"), "{said}");
    assert!(said.contains("OCSP Nonce"), "{said}");
    assert!(!said.contains("WARNING"), "{said}");
    assert!(said.contains("Next Update"), "{said}");
    // a serial the CA never issued is unknown
    let (said, _) = ask(&env, &[&base[..], &["-serial", "0x1234"]].concat());
    assert!(said.contains("0x1234: unknown"), "{said}");

    // revoke it: the responder says so at once, with time and reason
    let serial = env.cert_serial("www.crt");
    env.revoke_online(&url, &ca_id, &serial, "crl2.pem");
    let (said, ok) = ask(&env, &[&base[..], &["-cert", "www.crt"]].concat());
    assert!(ok, "{said}");
    assert!(said.contains("www.crt: revoked"), "{said}");
    assert!(said.contains("Reason: keyCompromise"), "{said}");
    assert!(said.contains("Revocation Time"), "{said}");

    // GET (RFC 6960 appendix A.1): base64 of the request in the path, percent-encoded
    env.openssl(&[
        "ocsp",
        "-issuer",
        "ca/ca.crt",
        "-cert",
        "www.crt",
        "-no_nonce",
        "-reqout",
        "req.der",
    ])
    .ok();
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        env.read("req.der"),
    );
    let path = b64
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    curl(&env, &[&format!("{ocsp_url}/{path}")], "get.der");
    let said = answer_text(&env, "get.der");
    assert!(said.contains("Cert Status: revoked"), "{said}");

    // a request signed by a certificate of this CA is answered when signatures are required
    let api = env.csr(
        "api",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=api.example.org",
        &["subjectAltName=DNS:api.example.org"],
    );
    env.nkpki(&crate::online::sign_args(&url, &ca_id, &api, "api.crt"))
        .ok();
    set_urls(&env, &ca_id, &url, &["--ocsp", "--ocsp-require-signed"]);
    let (said, _) = ask(&env, &[&base[..], &["-cert", "api.crt"]].concat());
    assert!(said.contains("sigrequired (5)"), "{said}");
    let (said, ok) = ask(
        &env,
        &[
            &base[..],
            &[
                "-cert", "api.crt", "-signer", "api.crt", "-signkey", "api.key",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{said}");
    assert!(said.contains("api.crt: good"), "{said}");
    // signed by the revoked certificate: refused
    let (said, _) = ask(
        &env,
        &[
            &base[..],
            &[
                "-cert", "api.crt", "-signer", "www.crt", "-signkey", "www.key",
            ],
        ]
        .concat(),
    );
    assert!(said.contains("unauthorized (6)"), "{said}");
}

#[test]
fn bad_ocsp_requests_get_their_ocsp_error_status() {
    let env = Env::new();
    env.packaged_ceremony(3, 2);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let url = server.url.clone();
    let ocsp_url = format!("{url}/ocsp/{ca_id}");
    // another CA: its issuer hashes are not this CA's
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "other.key",
        "-subj",
        "/CN=Other CA",
        "-days",
        "2",
        "-out",
        "other.crt",
    ])
    .ok();
    let post = |body: &str, out: &str, target: &str| {
        env.tool(
            "curl",
            &[
                "-sS",
                "-o",
                out,
                "-w",
                "%{http_code} %{content_type}",
                "-H",
                "Content-Type: application/ocsp-request",
                "--data-binary",
                &format!("@{body}"),
                target,
            ],
        )
        // the server may answer an oversized body before it is all sent, and close: curl
        // then reports a send failure after it has the answer
        .stdout()
    };

    // not DER at all
    env.write("junk.der", b"this is not an OCSP request");
    let http = post("junk.der", "junk.resp", &ocsp_url);
    assert_eq!(http, "200 application/ocsp-response");
    assert!(answer_text(&env, "junk.resp").contains("malformedrequest (1)"));
    // oversized: over the responder's limit, and over the server's body limit
    for (size, name) in [(20_000usize, "big"), (200_000, "huge")] {
        env.write(&format!("{name}.der"), vec![0x30u8; size]);
        let http = post(&format!("{name}.der"), &format!("{name}.resp"), &ocsp_url);
        assert_eq!(http, "200 application/ocsp-response", "{name}");
        assert!(
            answer_text(&env, &format!("{name}.resp")).contains("malformedrequest (1)"),
            "{name}"
        );
    }
    // a GET whose path is not base64
    env.tool(
        "curl",
        &[
            "-sS",
            "-o",
            "get.resp",
            &format!("{ocsp_url}/not%20base64!"),
        ],
    )
    .ok();
    assert!(answer_text(&env, "get.resp").contains("malformedrequest (1)"));

    // well-formed requests: an unknown CA, another issuer, no responder yet
    let ask_url = |target: &str, issuer: &str| {
        let run = env.openssl(&[
            "ocsp",
            "-issuer",
            issuer,
            "-serial",
            "0x1234",
            "-url",
            target,
            "-noverify",
        ]);
        run.stdout() + &run.stderr()
    };
    let unknown_ca = format!("{url}/ocsp/{}", "0".repeat(ca_id.len()));
    assert!(ask_url(&unknown_ca, "ca/ca.crt").contains("unauthorized (6)"));
    assert!(ask_url(&ocsp_url, "other.crt").contains("unauthorized (6)"));
    assert!(ask_url(&ocsp_url, "ca/ca.crt").contains("unauthorized (6)"));
    // unsigned when signatures are required
    set_urls(&env, &ca_id, &url, &["--ocsp", "--ocsp-require-signed"]);
    assert!(ask_url(&ocsp_url, "ca/ca.crt").contains("sigrequired (5)"));
    // signed, but by a certificate of another CA
    let said = {
        let run = env.openssl(&[
            "ocsp",
            "-issuer",
            "ca/ca.crt",
            "-serial",
            "0x1234",
            "-url",
            &ocsp_url,
            "-noverify",
            "-signer",
            "other.crt",
            "-signkey",
            "other.key",
        ]);
        run.stdout() + &run.stderr()
    };
    assert!(said.contains("unauthorized (6)"), "{said}");
    // the ocsp profile is never issued for a CSR from outside, nor for long
    let csr = env.csr(
        "mine",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=mine",
        &[],
    );
    let mut args = crate::online::sign_args(&url, &ca_id, &csr, "mine.crt");
    args.extend(["--profile", "ocsp"]);
    let run = env.nkpki(&args);
    assert_eq!(run.output.status.code(), Some(3), "{}", run.stderr());
    assert!(run.stderr().contains("never a CSR"), "{}", run.stderr());
    let run = env.nkpki(&[
        "ocsp-responder",
        "--server",
        &url,
        "--ca",
        &ca_id,
        "--days",
        "31",
        "--api-token-file",
        "op.token",
    ]);
    assert_eq!(run.output.status.code(), Some(3), "{}", run.stderr());
    assert!(run.stderr().contains("at most 30 days"), "{}", run.stderr());
    assert!(!env.path("data/ocsp").exists());
    // setting the URLs over the API needs role ca-admin
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let run = env.tool(
        "curl",
        &[
            "-sS",
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--data",
            r#"{"public_url":"http://evil.example"}"#,
            &format!("{url}/api/v1/cas/{ca_id}/urls"),
        ],
    );
    assert!(run.stdout().contains("\"forbidden\""), "{}", run.stdout());
    let admin = env
        .nkpki(&[
            "serve",
            "token",
            "create",
            "--data-dir",
            "data",
            "--name",
            "carol",
            "--role",
            "ca-admin",
        ])
        .ok()
        .stdout();
    let put = |body: &str| {
        env.tool(
            "curl",
            &[
                "-sS",
                "-X",
                "PUT",
                "-H",
                &format!("Authorization: Bearer {}", admin.trim()),
                "--data",
                body,
                &format!("{url}/api/v1/cas/{ca_id}/urls"),
            ],
        )
        .stdout()
    };
    let said = put(r#"{"public_url":"ftp://pki.example.org"}"#);
    assert!(said.contains("\"bad-url\""), "{said}");
    let said = put(&format!(r#"{{"public_url":"{url}","ocsp":true}}"#));
    assert!(said.contains(&format!("{url}/ocsp/{ca_id}")), "{said}");
    // a responder session that ends unsigned leaves no key behind: opened, then aborted by
    // a restart, its key is deleted
    let run = env.tool(
        "curl",
        &[
            "-sS",
            "-H",
            &format!("Authorization: Bearer {token}"),
            "--data",
            &format!(r#"{{"ca_id":"{ca_id}","kind":"issue","profile":"ocsp"}}"#),
            &format!("{url}/api/v1/sessions"),
        ],
    );
    assert!(run.stdout().contains("\"waiting\""), "{}", run.stdout());
    assert_eq!(env.files_below("data/ocsp").len(), 1);
    drop(server);
    let _server = env.serve(&[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.files_below("data/ocsp").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(env.files_below("data/ocsp").is_empty());
    // a bad public URL is refused before anything is stored
    env.nkpki(&[
        "serve",
        "ca",
        "set-urls",
        "--data-dir",
        "data",
        "--ca",
        &ca_id,
        "--public-url",
        "https://pki.example.org/a b",
    ])
    .fails_with(&["cannot go into a certificate", "hint:"]);
}
