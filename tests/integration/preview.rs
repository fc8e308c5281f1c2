//! The dry run (`POST /api/v1/sessions/preview`, `sign --server --dry-run`): it shows
//! exactly what the session then issues, refuses what the session refuses, and stores,
//! offers and audits nothing.

use crate::harness::Env;
use crate::online::sign_args;

const THREE: [&str; 3] = ["NK001", "NK002", "NK003"];
const RULE: [&str; 6] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-subject",
    "O=Example",
];

pub(crate) fn client(env: &Env, url: &str) -> nkpki::client::Client {
    let token = String::from_utf8(env.read("op.token")).unwrap();
    nkpki::client::Client::new(
        url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(token.trim())
}

fn audit(env: &Env) -> String {
    env.nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout()
}

fn dry_run_args<'a>(url: &'a str, ca: &'a str, csr: &'a str) -> Vec<&'a str> {
    vec![
        "sign",
        "--server",
        url,
        "--ca",
        ca,
        "--csr",
        csr,
        "--days",
        "30",
        "--api-token-file",
        "op.token",
        "--dry-run",
    ]
}

#[test]
fn dry_run_shows_what_is_then_issued_and_opens_nothing() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    let ca_id = env.register();
    let server = env.serve(&[]);
    // a CSR asking for more than the profile gives: CA:TRUE is dropped
    let csr = env.csr(
        "www",
        &["-newkey", "rsa:2048"],
        "/CN=www.example.org/O=Example",
        &[
            "subjectAltName=DNS:www.example.org,DNS:api.example.org",
            "basicConstraints=critical,CA:TRUE",
        ],
    );
    let before = audit(&env);
    let mut args = dry_run_args(&server.url, &ca_id, &csr);
    args.push("--json");
    let run = env.nkpki(&args);
    run.ok();
    let preview: nkpki::proto::SessionPreview = serde_json::from_str(&run.stdout()).unwrap();
    assert!(preview.accepted && preview.refusal.is_none(), "{preview:?}");
    assert_eq!((preview.threshold, preview.total), (2, 3));
    let view = preview.summary.unwrap().certificate.unwrap();
    assert_eq!(view.sans, ["DNS:www.example.org", "DNS:api.example.org"]);
    assert!(!view.is_ca, "the profile drops CA:TRUE: {view:?}");
    assert!(
        view.dropped.iter().any(|d| d.contains("basicConstraints")),
        "{:?}",
        view.dropped
    );
    assert_eq!(view.key, "RSA-2048");
    // the plain text form says the same and that nothing was opened
    let text = env.nkpki(&dry_run_args(&server.url, &ca_id, &csr));
    text.ok();
    assert!(
        text.stdout().contains("Verdict:     accepted"),
        "{}",
        text.stdout()
    );
    assert!(
        text.stdout().contains("DNS:api.example.org"),
        "{}",
        text.stdout()
    );
    // nothing stored, offered or audited
    assert_eq!(
        audit(&env),
        before,
        "a dry run must not touch the audit log"
    );
    assert!(!before.contains("session-opened"));

    // now the session itself, approved by two agents
    let _agents: Vec<_> = ["NK001", "NK002"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    let mut sign = sign_args(&server.url, &ca_id, &csr, "www.crt");
    sign.push("--json");
    let signed = env.nkpki(&sign);
    signed.ok();
    let report: serde_json::Value = serde_json::from_str(&signed.stdout()).unwrap();
    let issued_view: nkpki::pki::CertificateView =
        serde_json::from_value(report["session"]["certificate"].clone()).unwrap();
    // the same certificate but for the serial and the start, drawn when the session opened
    let mut expected = view.clone();
    expected.serial = issued_view.serial.clone();
    expected.not_before = issued_view.not_before;
    expected.not_after = issued_view.not_after;
    assert_eq!(issued_view, expected);
    assert_eq!(
        issued_view.not_after - issued_view.not_before,
        view.not_after - view.not_before
    );
    // and the certificate itself, read by x509-parser and OpenSSL
    let pem = String::from_utf8(env.read("www.crt")).unwrap();
    let summary = nkpki::pki::CertificateSummary::from_pem(&pem).unwrap();
    assert_eq!(summary.subject, view.subject_string());
    assert_eq!(summary.sans, view.sans);
    let openssl = env
        .openssl(&["x509", "-in", "www.crt", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(openssl.contains("Public-Key: (2048 bit)"), "{openssl}");
    assert!(!openssl.contains("CA:TRUE"), "{openssl}");
    assert!(
        openssl.contains("TLS Web Server Authentication"),
        "{openssl}"
    );
    env.openssl_verify("ca/ca.crt", "www.crt");
}

#[test]
fn dry_run_refuses_as_the_session_would_and_audits_nothing() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let client = client(&env, &server.url);
    let bad_bodies = [
        serde_json::json!({"ca_id": ca_id, "kind": "issue", "csr_pem": "not a CSR", "days": 30}),
        serde_json::json!({"ca_id": ca_id, "kind": "issue", "profile": "nonsense",
            "csr_pem": String::from_utf8(env.read(&env.csr("p", &["-newkey", "rsa:2048"],
                "/CN=p.example.org", &["subjectAltName=DNS:p.example.org"]))).unwrap()}),
        serde_json::json!({"ca_id": ca_id, "kind": "issue", "days": 99999,
            "csr_pem": String::from_utf8(env.read("p.csr")).unwrap()}),
        serde_json::json!({"ca_id": ca_id, "kind": "issue"}),
        serde_json::json!({"ca_id": ca_id, "kind": "revoke", "serial": "01"}),
    ];
    for body in &bad_bodies {
        let before = audit(&env);
        let preview: nkpki::proto::SessionPreview =
            client.post("/api/v1/sessions/preview", body).unwrap();
        assert!(!preview.accepted, "{body}: {preview:?}");
        let refusal = preview.refusal.unwrap();
        assert_eq!(audit(&env), before, "{body}: a dry run audits nothing");
        match client
            .post::<_, serde_json::Value>("/api/v1/sessions", body)
            .unwrap_err()
        {
            nkpki::client::ClientError::Api {
                status,
                code,
                message,
            } => {
                assert_eq!(
                    (status, code.as_str(), message.as_str()),
                    (
                        refusal.status,
                        refusal.code.as_str(),
                        refusal.error.as_str()
                    ),
                    "{body}"
                );
            }
            other => panic!("{other}"),
        }
    }
    // an unknown CA is answered as the session request is
    let unknown = serde_json::json!({"ca_id": "00", "kind": "crl"});
    match client
        .post::<_, serde_json::Value>("/api/v1/sessions/preview", &unknown)
        .unwrap_err()
    {
        nkpki::client::ClientError::Api { status, code, .. } => {
            assert_eq!((status, code.as_str()), (404, "unknown-ca"));
        }
        other => panic!("{other}"),
    }
    // the CLI: exit 3 and the verdict, as `sign --server` refuses the same CSR
    let csr = env.csr(
        "nosan",
        &["-newkey", "rsa:2048"],
        "/CN=nosan.example.org",
        &[],
    );
    let dry = env.nkpki(&dry_run_args(&server.url, &ca_id, &csr));
    assert_eq!(dry.output.status.code(), Some(3), "{}", dry.stderr());
    assert!(
        dry.stdout().contains("Verdict:     refused (422 policy)"),
        "{}",
        dry.stdout()
    );
    let real = env.nkpki(&sign_args(&server.url, &ca_id, &csr, "nosan.crt"));
    assert_eq!(real.output.status.code(), Some(3), "{}", real.stderr());
    let why = real.stderr();
    let why = why
        .lines()
        .find(|l| l.contains("refused by policy"))
        .unwrap();
    assert!(dry.stderr().contains(why), "{}\n{why}", dry.stderr());
    // nothing was ever opened
    let log = audit(&env);
    assert!(!log.contains("session-opened"), "{log}");
}
