//! What a holder approves is exactly what is issued: requests whose text could deceive a
//! holder are refused, the offer describes the certificate after the profile has applied,
//! and approval rules are judged on that certificate.

use crate::harness::Env;
use crate::online::sign_args;

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];

/// `openssl req` with a UTF-8 subject and the given extensions (raw text, any bytes).
fn raw_csr(env: &Env, name: &str, subject: &str, extensions: &[&str]) -> String {
    let csr = format!("{name}.csr");
    let key = format!("{name}.key");
    let mut args = vec![
        "req",
        "-new",
        "-utf8",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        &key,
        "-subj",
        subject,
        "-out",
        &csr,
    ];
    for e in extensions {
        args.push("-addext");
        args.push(e);
    }
    env.openssl(&args).ok();
    csr
}

#[test]
fn requests_with_terminal_tricks_are_refused_offline_and_online() {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.packaged_ceremony(5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&[]);
    let hostile: [(&str, String, Vec<String>, &str); 7] = [
        (
            "ansi-cn",
            "/CN=www.example.org\u{1b}[2K\rwww.bank.example".into(),
            vec!["subjectAltName=DNS:www.example.org".into()],
            "escape character",
        ),
        (
            "bidi-o",
            "/CN=www.example.org/O=Example \u{202e}gro.live".into(),
            vec!["subjectAltName=DNS:www.example.org".into()],
            "bidirectional",
        ),
        (
            "zero-width-dropped-attribute",
            // street is dropped by every profile: it is checked all the same
            "/CN=www.example.org/street=Main\u{200b}Street".into(),
            vec!["subjectAltName=DNS:www.example.org".into()],
            "zero-width",
        ),
        (
            "control-in-dns",
            "/CN=www.example.org".into(),
            vec!["subjectAltName=DNS:www.example.org,DNS:a\u{8}b.example.org".into()],
            "control character",
        ),
        (
            "escape-in-uri",
            "/CN=www.example.org".into(),
            vec![
                "subjectAltName=DNS:www.example.org,URI:https://x.example/\u{1b}]0;owned\u{7}"
                    .into(),
            ],
            "subjectAltName URI",
        ),
        (
            "c1-in-locality",
            "/CN=www.example.org/L=Paris\u{9b}31m".into(),
            vec!["subjectAltName=DNS:www.example.org".into()],
            "C1 control",
        ),
        (
            "bidi-in-ou",
            "/CN=www.example.org/OU=\u{2067}admins".into(),
            vec!["subjectAltName=DNS:www.example.org".into()],
            "bidirectional",
        ),
    ];
    for (name, subject, extensions, expected) in &hostile {
        let ext: Vec<&str> = extensions.iter().map(String::as_str).collect();
        let csr = raw_csr(&env, name, subject, &ext);
        let offline = env.sign(
            &[&holders[0], &holders[1], &holders[2]],
            &csr,
            "server",
            "30",
            &format!("{name}.crt"),
        );
        offline.fails_with(&[expected, "hint:"]);
        assert!(!env.path(&format!("{name}.crt")).exists());
        let out = format!("{name}-online.crt");
        let online = env.nkpki(&sign_args(&server.url, &ca_id, &csr, &out));
        // the operator's own client refuses to send it; the server refuses it too
        online.fails_with(&[expected]);
    }
    // the server refuses it on its own, whatever the client did, and records the refusal
    let csr = raw_csr(
        &env,
        "direct",
        "/CN=www.example.org\u{1b}[31m",
        &["subjectAltName=DNS:www.example.org"],
    );
    let body = serde_json::json!({
        "ca_id": ca_id,
        "kind": "issue",
        "csr_pem": String::from_utf8(env.read(&csr)).unwrap(),
        "profile": "server",
        "days": 30,
    });
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let client = nkpki::client::Client::new(
        &server.url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(token.trim());
    let refused = client
        .post::<_, serde_json::Value>("/api/v1/sessions", &body)
        .unwrap_err();
    match &refused {
        nkpki::client::ClientError::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 422);
            assert!(message.contains("escape character"), "{message}");
        }
        other => panic!("{other}"),
    }
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("session-refused"), "{audit}");
    assert!(
        !audit.contains('\u{1b}'),
        "the audit log must not carry the raw escape"
    );
}

#[test]
fn a_repeated_subject_attribute_is_refused_not_half_issued() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    let csr = raw_csr(
        &env,
        "two-ou",
        "/CN=www.example.org/OU=Web/OU=Administrators",
        &["subjectAltName=DNS:www.example.org"],
    );
    env.sign(
        &[&holders[0], &holders[1]],
        &csr,
        "server",
        "30",
        "two-ou.crt",
    )
    .fails_with(&["OU appears more than once"]);
    assert!(!env.path("two-ou.crt").exists());
}

#[test]
fn a_huge_validity_is_an_error_not_a_crash() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    let csr = env.csr(
        "w",
        &["-newkey", "ed25519"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    env.sign(
        &[&holders[0], &holders[1]],
        &csr,
        "server",
        "4294967295",
        "w.crt",
    )
    .fails_with(&["ends after the CA certificate does"]);
}

#[test]
fn the_certificate_shown_is_the_certificate_issued() {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.packaged_ceremony(5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&[]);
    // a SAN-suffix rule alone: it must never approve a sub-CA, whose profile drops the
    // SANs the rule checks
    let suffix_only = ["--approve-san-suffix", ".example.org"];
    let _agents: Vec<_> = ["NK001", "NK002", "NK003"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &suffix_only))
        .collect();
    for id in ["NK001", "NK002", "NK003"] {
        env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
    }
    let sub = env.csr(
        "sub",
        &["-newkey", "ed25519"],
        "/CN=Rogue Intermediate",
        &["subjectAltName=DNS:www.example.org"],
    );
    let run = env.nkpki(&[
        "sign",
        "--server",
        &server.url,
        "--ca",
        &ca_id,
        "--csr",
        &sub,
        "--profile",
        "sub-ca",
        "--days",
        "30",
        "--api-token-file",
        "op.token",
        "--out",
        "sub.crt",
    ]);
    assert_eq!(run.output.status.code(), Some(4), "{}", run.stderr());
    assert!(!env.path("sub.crt").exists());
    let log = std::fs::read_to_string(env.path("agent-NK001.log")).unwrap();
    assert!(log.contains("sub-CA certificate needs a person"), "{log}");

    // an ordinary request: the status shows the certificate before it is signed, and the
    // certificate signed is that one, field for field
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org/emailAddress=web@example.org",
        &["subjectAltName=DNS:www.example.org,email:web@example.org"],
    );
    let run = env.nkpki(&sign_args(&server.url, &ca_id, &csr, "www.crt"));
    run.ok();
    let stderr = run.stderr();
    assert!(stderr.contains("exactly as it will be issued"), "{stderr}");
    assert!(
        stderr.contains("Dropped:     subject attribute emailAddress"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Dropped:     subjectAltName email:web@example.org"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SANs:        DNS:www.example.org\n"),
        "{stderr}"
    );
    assert!(stderr.contains("Ext. usage:  serverAuth"), "{stderr}");
    assert!(stderr.contains("CA:          no (end entity)"), "{stderr}");
    let shown = |label: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {stderr}"))
            .trim()
            .to_owned()
    };
    let serial = shown("Serial:");
    let validity = shown("Validity:");
    let text = env
        .openssl(&[
            "x509",
            "-in",
            "www.crt",
            "-noout",
            "-serial",
            "-startdate",
            "-enddate",
            "-subject",
            "-ext",
            "subjectAltName,basicConstraints,extendedKeyUsage",
            "-dateopt",
            "iso_8601",
        ])
        .ok()
        .stdout();
    assert!(
        text.to_lowercase().contains(&format!("serial={serial}")),
        "{text} vs {serial}"
    );
    assert!(
        text.contains("DNS:www.example.org") && !text.contains("web@example.org"),
        "{text}"
    );
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    assert!(!text.contains("CA:TRUE"), "{text}");
    // "30 days, 2026-11-29T14:50:00Z to 2026-12-29T14:50:00Z" against OpenSSL's ISO 8601
    let (start, end) = validity
        .strip_prefix("30 days, ")
        .and_then(|r| r.split_once(" to "))
        .unwrap_or_else(|| panic!("{validity}"));
    let iso = |t: &str| t.replace('T', " ");
    assert!(
        text.contains(&format!("notBefore={}", iso(start))),
        "{text} vs {validity}"
    );
    assert!(
        text.contains(&format!("notAfter={}", iso(end))),
        "{text} vs {validity}"
    );
    env.openssl_verify("ca/ca.crt", "www.crt");
    env.pkilint_cert("www.crt");
}

#[test]
fn an_agent_refuses_an_offer_that_describes_another_certificate() {
    use nkpki::manifest::Manifest;
    use nkpki::proto::{OfferSummary, SessionKind, SessionOffer};
    let env = Env::new();
    env.ceremony("ecdsa-p256", 3, 2);
    let manifest = Manifest::from_json(&String::from_utf8(env.read("ca/manifest.json")).unwrap())
        .unwrap()
        .verify()
        .unwrap();
    let csr_path = env.csr(
        "w",
        &["-newkey", "ed25519"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let csr = nkpki::pki::Csr::parse(&env.read(&csr_path)).unwrap();
    let terms = nkpki::pki::Terms::new(
        nkpki::pki::Profile::Server,
        30,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let view = nkpki::pki::check_request(&manifest.ca, &csr, &terms).unwrap();
    let offer = |view: nkpki::pki::CertificateView| SessionOffer {
        session_id: "s".into(),
        ca_id: manifest.ca_id().0.clone(),
        ca_name: "Test Root CA".into(),
        kind: SessionKind::Issue,
        requester: "alice".into(),
        request: String::from_utf8(env.read(&csr_path)).unwrap(),
        request_sha256: csr.digest(),
        summary: OfferSummary {
            profile: "server".into(),
            days: 30,
            not_before: view.not_before,
            serial: Some(view.serial.clone()),
            reason: None,
            certificate: Some(view),
            batch: None,
        },
        nonce: String::new(),
        expires_at: 0,
        recipient: String::new(),
        mode: Default::default(),
        tbs: None,
        policy: None,
        approval_only: false,
    };
    let approving = nkpki::agent::recompute(&offer(view.clone()), &manifest).unwrap();
    assert_eq!(approving.certificate.as_ref(), Some(&view));
    // a server that shows one name and would issue another is caught
    let mut lying = view.clone();
    lying.subject = vec![("CN".into(), "www.example.com".into())];
    let err = nkpki::agent::recompute(&offer(lying), &manifest).unwrap_err();
    assert!(err.to_string().contains("another certificate"), "{err}");
    // and so is one that hides the CA flag
    let mut hidden = view.clone();
    hidden.extended_key_usage = vec![];
    assert!(nkpki::agent::recompute(&offer(hidden), &manifest).is_err());
}
