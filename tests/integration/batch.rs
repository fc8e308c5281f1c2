//! Batch issuance against the real peers: one session of several OpenSSL CSRs approved
//! once by M agents, every certificate verified by OpenSSL; a forged CSR, a policy
//! violation, an over-limit batch and a threshold CA each refused before any holder is
//! asked, with nothing stored.

use crate::harness::{Env, Run};
use nkpki::client::{Client, ClientError, Trust};
use nkpki::proto::{SessionCertificates, SessionStatus};
use std::time::Duration;

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];
const RULE: [&str; 5] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-revocations",
];

fn operator(env: &Env, url: &str) -> Client {
    let token = String::from_utf8(env.read("op.token")).unwrap();
    Client::new(url, &Trust::System, Duration::from_secs(60))
        .unwrap()
        .with_bearer(token.trim())
}

fn audit(env: &Env) -> String {
    env.nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout()
}

/// `n` P-256 CSRs `dir/host{i}.csr` for host{i}.example.org (OpenSSL).
fn csr_dir(env: &Env, dir: &str, n: usize) -> Vec<String> {
    std::fs::create_dir_all(env.path(dir)).unwrap();
    (1..=n)
        .map(|i| {
            let name = format!("{dir}/host{i}");
            let newkey: &[&str] = if i % 2 == 0 {
                &["-newkey", "rsa:2048"]
            } else {
                &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
            };
            env.csr(
                &name,
                newkey,
                &format!("/CN=host{i}.example.org"),
                &[&format!("subjectAltName=DNS:host{i}.example.org")],
            )
        })
        .collect()
}

/// The PEM of `csr` with one bit of its signature flipped: it parses, and its proof of
/// possession fails.
fn forged(env: &Env, csr: &str) -> String {
    let block = pem::parse(env.read(csr)).unwrap();
    let mut der = block.contents().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    nkpki::pki::pem_encode("CERTIFICATE REQUEST", &der)
}

fn batch_args<'a>(url: &'a str, ca: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "sign",
        "--server",
        url,
        "--ca",
        ca,
        "--days",
        "30",
        "--api-token-file",
        "op.token",
    ];
    args.extend_from_slice(extra);
    args
}

/// The PEM text of each CSR file.
fn pems<S: AsRef<str>>(env: &Env, csrs: &[S]) -> Vec<String> {
    csrs.iter()
        .map(|c| String::from_utf8(env.read(c.as_ref())).unwrap())
        .collect()
}

/// A session request for a batch of `pems` with the server profile, 30 days.
fn batch_body(ca_id: &str, pems: &[String]) -> serde_json::Value {
    serde_json::json!({"ca_id": ca_id, "kind": "issue-batch", "csr_pems": pems,
        "profile": "server", "days": 30})
}

fn refused(result: Result<SessionStatus, ClientError>, status: u16, code: &str) -> String {
    match result {
        Err(ClientError::Api {
            status: s,
            code: c,
            message,
        }) if s == status && c == code => message,
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

fn no_session_stored(env: &Env) {
    let audit = audit(env);
    assert!(
        !audit.contains("session-opened") && !audit.contains("certificate-issued"),
        "nothing may be opened or issued: {audit}"
    );
}

#[test]
fn a_batch_is_issued_in_one_session_and_every_certificate_verifies() {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.packaged_ceremony(5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&[]);
    let _agents: Vec<_> = ["NK001", "NK003", "NK005"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    csr_dir(&env, "csrs", 5);

    // the dry run shows the batch and opens nothing
    let dry = env.nkpki(&batch_args(
        &server.url,
        &ca_id,
        &["--csr-dir", "csrs", "--dry-run"],
    ));
    dry.ok();
    let shown = dry.stdout();
    assert!(shown.contains("5 certificates"), "{shown}");
    assert!(shown.contains("DNS:host4.example.org"), "{shown}");
    assert!(shown.contains("accepted"), "{shown}");

    let run = env.nkpki(&batch_args(
        &server.url,
        &ca_id,
        &["--csr-dir", "csrs", "--out-dir", "certs", "--json"],
    ));
    run.ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let certificates = report["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 5, "{report}");
    assert_eq!(report["holders"].as_array().unwrap().len(), 3, "{report}");
    let mut serials = Vec::new();
    for (i, c) in certificates.iter().enumerate() {
        let out = format!("certs/host{}.crt", i + 1);
        assert_eq!(c["out"].as_str().unwrap(), out);
        env.openssl_verify("ca/ca.crt", &out);
        let serial = env.cert_serial(&out);
        assert_eq!(c["serial"].as_str().unwrap().to_lowercase(), serial);
        let text = env
            .openssl(&["x509", "-in", &out, "-noout", "-subject"])
            .ok()
            .stdout();
        assert!(
            text.contains(&format!("host{}.example.org", i + 1)),
            "{text}"
        );
        serials.push(serial);
    }
    let mut distinct = serials.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "every certificate has its own serial");
    env.pkilint_cert("certs/host2.crt");
    env.pkilint_chain("ca/ca.crt", "certs/host1.crt");

    // one approval each: every agent judged the whole batch by its rule
    for id in ["NK001", "NK003", "NK005"] {
        let log = std::fs::read_to_string(env.path(&format!("agent-{id}.log"))).unwrap();
        assert!(log.contains("a batch of 5 certificates"), "{log}");
    }
    // the session lists every certificate with its PEM
    let op = operator(&env, &server.url);
    let session_id = report["session_id"].as_str().unwrap();
    let listed: SessionCertificates = op
        .get(&format!("/api/v1/sessions/{session_id}/certificates"))
        .unwrap();
    assert_eq!(listed.certificates.len(), 5);
    assert!(listed.certificates.iter().all(|c| c.pem.is_some()));
    assert_eq!(
        listed
            .certificates
            .iter()
            .map(|c| c.serial.to_lowercase())
            .collect::<Vec<_>>(),
        serials
    );
    let audit = audit(&env);
    assert_eq!(audit.matches("certificate-issued").count(), 5, "{audit}");

    // every certificate is recorded as issued: one of them is revoked like any other; a
    // revoke session lists no certificate, waiting or signed
    let revoke: SessionStatus = op
        .post(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca_id, "kind": "revoke", "serial": serials[2],
                "reason": "keyCompromise"}),
        )
        .unwrap();
    let revoke_certificates = |op: &Client| -> SessionCertificates {
        op.get(&format!(
            "/api/v1/sessions/{}/certificates",
            revoke.session_id
        ))
        .unwrap()
    };
    assert!(revoke_certificates(&op).certificates.is_empty());
    let mut signed = revoke.clone();
    for _ in 0..20 {
        if signed.state != nkpki::proto::SessionState::Waiting {
            break;
        }
        signed = op
            .get(&format!("/api/v1/sessions/{}?wait=10", revoke.session_id))
            .unwrap();
    }
    assert_eq!(
        signed.state,
        nkpki::proto::SessionState::Signed,
        "{signed:?}"
    );
    assert!(revoke_certificates(&op).certificates.is_empty());
    env.write("crl.pem", signed.crl_pem.unwrap());
    let crl = env
        .openssl(&["crl", "-in", "crl.pem", "-noout", "-text"])
        .ok()
        .stdout()
        .to_lowercase();
    assert!(crl.contains(&serials[2]), "{crl}");
    // the batch's own status still lists its certificates, and no CRL
    let after: SessionStatus = op.get(&format!("/api/v1/sessions/{session_id}")).unwrap();
    assert_eq!(after.certificates.len(), 5);
    assert!(after.crl_pem.is_none(), "a batch session signed no CRL");

    // the CA page finds a batch certificate by a SAN and lists each with its own SANs
    drop(_agents);
    let web = crate::web::Web::over(env, server, ca_id.clone());
    let cookie = web.sign_in();
    let page = |q: &str| {
        web.get(&format!("/ui/cas/{ca_id}{q}"), Some(&cookie))
            .text()
            .unwrap()
    };
    let found = page("?q=DNS%3Ahost4.example");
    assert!(found.contains("1 certificate matching"), "{found}");
    assert!(found.contains("DNS:host4.example.org"), "{found}");
    let all = page("");
    for i in 1..=5 {
        assert!(all.contains(&format!("DNS:host{i}.example.org")), "{all}");
    }
}

#[test]
fn a_forged_csr_or_an_oversized_batch_is_refused_before_any_holder_is_asked() {
    let env = Env::new();
    env.packaged_ceremony(5, 3);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let op = operator(&env, &server.url);
    let csrs = csr_dir(&env, "csrs", 5);
    // CSR 3's signature is broken
    env.write("csrs/host3.csr", forged(&env, &csrs[2]));

    // the CLI checks every CSR first and sends nothing
    let run = env.nkpki(&batch_args(
        &server.url,
        &ca_id,
        &["--csr-dir", "csrs", "--out-dir", "certs"],
    ));
    run.fails_with(&["CSR 3 of 5", "host3.csr", "nothing was sent"]);
    assert!(!env.path("certs/host1.crt").exists());

    // the server does the same for a body sent to it directly, naming the CSR
    let pems = pems(&env, &csrs);
    let message = refused(
        op.post("/api/v1/sessions", &batch_body(&ca_id, &pems)),
        422,
        "policy",
    );
    assert!(
        message.contains("CSR 3 of 5 (CN=host3.example.org)") && message.contains("signature"),
        "{message}"
    );
    // the same batch in a dry run is refused the same way
    let preview: nkpki::proto::SessionPreview = op
        .post("/api/v1/sessions/preview", &batch_body(&ca_id, &pems))
        .unwrap();
    assert!(!preview.accepted);
    assert!(
        preview
            .refusal
            .unwrap()
            .error
            .contains("CSR 3 of 5 (CN=host3.example.org)")
    );

    // 1,001 CSRs: the server refuses the count before reading one
    let one = String::from_utf8(env.read(&csrs[0])).unwrap();
    let message = refused(
        op.post(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca_id, "kind": "issue-batch",
                "csr_pems": vec![one.clone(); 1001], "profile": "server", "days": 30}),
        ),
        422,
        "batch-too-large",
    );
    assert!(message.contains("limit of 1000"), "{message}");
    // CSRs sent with another kind of session are refused, not ignored
    for kind in ["crl", "revoke"] {
        let message = refused(
            op.post(
                "/api/v1/sessions",
                &serde_json::json!({"ca_id": ca_id, "kind": kind, "csr_pems": [one.clone()],
                    "serial": "01"}),
            ),
            400,
            "bad-request",
        );
        assert!(message.contains("issue-batch sessions only"), "{message}");
    }
    // and the CLI refuses before anything is sent (no server listens on port 9)
    std::fs::create_dir_all(env.path("many")).unwrap();
    for i in 0..1001 {
        std::fs::copy(env.path(&csrs[0]), env.path(&format!("many/{i:04}.csr"))).unwrap();
    }
    let run: Run = env.nkpki(&batch_args(
        "http://127.0.0.1:9",
        &ca_id,
        &["--csr-dir", "many", "--out-dir", "certs"],
    ));
    run.fails_with(&["1001 CSRs", "limit of 1000", "nothing was sent"]);
    // two CSRs that would write one certificate file, refused before anything is sent
    std::fs::copy(env.path(&csrs[0]), env.path("many/0000.pem")).unwrap();
    env.nkpki(&batch_args(
        "http://127.0.0.1:9",
        &ca_id,
        &[
            "--csr",
            "many/0000.csr",
            "--csr",
            "many/0000.pem",
            "--out-dir",
            "certs",
        ],
    ))
    .fails_with(&["would both be written to certs/0000.crt"]);

    // every refusal of the server is audited; no session was opened, nothing issued
    let audit_text = audit(&env);
    assert!(
        audit_text.contains("session-refused") && audit_text.contains("CSR 3 of 5"),
        "{audit_text}"
    );
    assert!(
        audit_text.contains("over the limit of 1000"),
        "{audit_text}"
    );
    no_session_stored(&env);
}

#[test]
fn one_csr_the_ca_policy_forbids_refuses_the_whole_batch() {
    let env = Env::new();
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.write(
        "policy.toml",
        "version = 1\n\n[server]\napprovals = 3\nmax_days = 90\ndns_domains = [\"example.org\"]\n",
    );
    env.ca_init(
        "ecdsa-p256",
        3,
        &[
            "--policy",
            "policy.toml",
            "--package",
            "--server-url",
            "https://pki.example.org:8443",
        ],
    )
    .ok();
    let ca_id = env.register();
    let server = env.serve(&[]);
    let op = operator(&env, &server.url);
    let csrs = csr_dir(&env, "csrs", 3);
    let outside = env.csr(
        "csrs/host2",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.com",
        &["subjectAltName=DNS:www.example.com"],
    );
    assert_eq!(outside, csrs[1]);
    let run = env.nkpki(&batch_args(
        &server.url,
        &ca_id,
        &["--csr-dir", "csrs", "--out-dir", "certs"],
    ));
    assert_eq!(run.output.status.code(), Some(3), "{}", run.stderr());
    for needle in ["CSR 2 of 3 (CN=www.example.com)", "server.dns_domains"] {
        assert!(run.stderr().contains(needle), "{}", run.stderr());
    }
    assert!(!env.path("certs/host1.crt").exists());
    let audit_text = audit(&env);
    assert!(
        audit_text.contains("session-refused") && audit_text.contains("CSR 2 of 3"),
        "{audit_text}"
    );
    no_session_stored(&env);
    // with the manifest at hand, `sign` judges every certificate itself and opens nothing
    let local = env.nkpki(&batch_args(
        &server.url,
        &ca_id,
        &[
            "--csr-dir",
            "csrs",
            "--out-dir",
            "certs",
            "--manifest",
            "ca/manifest.json",
        ],
    ));
    assert_eq!(local.output.status.code(), Some(3), "{}", local.stderr());
    for needle in [
        "CSR 2 of 3 (csrs/host2.csr)",
        "server.dns_domains",
        "no session was opened",
    ] {
        assert!(local.stderr().contains(needle), "{}", local.stderr());
    }
    assert_eq!(
        audit(&env).matches("session-refused").count(),
        1,
        "the local refusal never reached the server"
    );
    // a batch the policy allows whole opens
    let pems = pems(&env, &[&csrs[0], &csrs[2]]);
    let status: SessionStatus = op
        .post("/api/v1/sessions", &batch_body(&ca_id, &pems))
        .unwrap();
    assert_eq!(status.certificates.len(), 2);
    assert!(status.certificates.iter().all(|c| c.pem.is_none()));
}

#[test]
fn a_threshold_ca_refuses_a_batch_with_a_hint() {
    let env = crate::threshold_online::threshold_env(&[]);
    crate::threshold_online::threshold_ceremony(&env);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let op = operator(&env, &server.url);
    let csrs = csr_dir(&env, "csrs", 2);
    let pems = pems(&env, &csrs);
    let message = refused(
        op.post("/api/v1/sessions", &batch_body(&ca_id, &pems)),
        409,
        "batch-threshold",
    );
    assert!(
        message.contains("threshold") && message.contains("hint:"),
        "{message}"
    );
    no_session_stored(&env);
}

/// The agent recomputes every certificate of a batch offer and refuses one that differs,
/// a summary that is not the certificates', or CSRs out of order.
#[test]
fn an_agent_recomputes_every_certificate_of_a_batch_offer() {
    use nkpki::manifest::Manifest;
    use nkpki::proto::{BatchSummary, OfferSummary, SessionKind, SessionOffer};
    let env = Env::new();
    env.ceremony("ecdsa-p256", 3, 2);
    let manifest = Manifest::from_json(&String::from_utf8(env.read("ca/manifest.json")).unwrap())
        .unwrap()
        .verify()
        .unwrap();
    let paths = csr_dir(&env, "csrs", 3);
    let csrs: Vec<nkpki::pki::Csr> = paths
        .iter()
        .map(|p| nkpki::pki::Csr::parse(&env.read(p)).unwrap())
        .collect();
    let now = time::OffsetDateTime::now_utc();
    let views: Vec<nkpki::pki::CertificateView> = csrs
        .iter()
        .map(|csr| {
            let terms = nkpki::pki::Terms::new(nkpki::pki::Profile::Server, 30, now).unwrap();
            nkpki::pki::check_request(&manifest.ca, csr, &terms).unwrap()
        })
        .collect();
    let bundle = |order: &[usize]| -> String {
        order
            .iter()
            .map(|&i| nkpki::pki::pem_encode("CERTIFICATE REQUEST", &csrs[i].der))
            .collect()
    };
    let offer = |request: String, batch: BatchSummary| SessionOffer {
        session_id: "s".into(),
        ca_id: manifest.ca_id().0.clone(),
        ca_name: "Test Root CA".into(),
        kind: SessionKind::IssueBatch,
        requester: "alice".into(),
        request,
        request_sha256: String::new(),
        summary: OfferSummary {
            profile: "server".into(),
            days: 30,
            not_before: views[0].not_before,
            serial: None,
            reason: None,
            certificate: None,
            batch: Some(batch),
        },
        nonce: String::new(),
        expires_at: 0,
        recipient: String::new(),
        mode: Default::default(),
        tbs: None,
        policy: None,
        approval_only: false,
    };
    let honest = offer(bundle(&[0, 1, 2]), BatchSummary::of(views.clone()));
    let approving = nkpki::agent::recompute(&honest, &manifest).unwrap();
    assert_eq!(approving.batch, views);
    let digests: Vec<String> = csrs.iter().map(|c| c.digest()).collect();
    assert_eq!(
        approving.request_sha256,
        nkpki::pki::batch::batch_digest(&digests)
    );

    // one certificate of three describes another name
    let mut lying = views.clone();
    lying[1].sans = vec!["DNS:www.bank.example".into()];
    let err = nkpki::agent::recompute(
        &offer(bundle(&[0, 1, 2]), BatchSummary::of(lying)),
        &manifest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("certificate 2 of 3"), "{err}");
    // the CSRs in another order than their certificates
    let err = nkpki::agent::recompute(
        &offer(bundle(&[0, 2, 1]), BatchSummary::of(views.clone())),
        &manifest,
    )
    .unwrap_err();
    assert!(err.to_string().contains("certificate 2 of 3"), "{err}");
    // a summary that hides a name
    let mut hiding = BatchSummary::of(views.clone());
    hiding.names.retain(|n| !n.contains("host3"));
    let err = nkpki::agent::recompute(&offer(bundle(&[0, 1, 2]), hiding), &manifest).unwrap_err();
    assert!(err.to_string().contains("summary"), "{err}");
    // one CSR more than certificates
    let err = nkpki::agent::recompute(
        &offer(bundle(&[0, 1, 2, 0]), BatchSummary::of(views.clone())),
        &manifest,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("4 CSRs and 3 certificates"),
        "{err}"
    );
    // two certificates with one serial
    let mut twice = views.clone();
    twice[2].serial = twice[0].serial.clone();
    assert!(
        nkpki::agent::recompute(
            &offer(bundle(&[0, 1, 2]), BatchSummary::of(twice)),
            &manifest
        )
        .is_err()
    );
}

/// An approval covers exactly the batch offered: an envelope naming another list of CSRs
/// (one left out) or one certificate instead of the list is refused; the holders' own
/// envelopes sign it.
#[test]
fn an_envelope_approves_exactly_the_batch_it_names() {
    use crate::online_attacks::FakeAgent;
    let env = Env::new();
    let holders = env.packaged_ceremony(5, 3);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let op = operator(&env, &server.url);
    let mut agents: Vec<FakeAgent> = holders[..3]
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &server.url))
        .collect();
    for a in agents.iter_mut() {
        a.enroll_with(&a.code.clone()).unwrap();
        a.login();
    }
    let csrs = csr_dir(&env, "csrs", 3);
    let pems = pems(&env, &csrs);
    let opened: SessionStatus = op
        .post("/api/v1/sessions", &batch_body(&ca_id, &pems))
        .unwrap();
    let offer = agents[0]
        .offers()
        .into_iter()
        .find(|o| o.session_id == opened.session_id)
        .unwrap();
    let batch = offer.summary.batch.clone().unwrap();
    assert_eq!(batch.count, 3);
    assert!(batch.names.contains(&"DNS:host2.example.org".to_owned()));
    let approve = |a: &FakeAgent| {
        let mut c = a.contribution(&offer, &a.share_json);
        c.envelope.certificate_sha256 = Some(batch.certificates_sha256.clone());
        a.resign(&mut c);
        c
    };

    // the first two CSRs only: another batch digest
    let digests: Vec<String> = csrs[..2]
        .iter()
        .map(|c| nkpki::pki::Csr::parse(&env.read(c)).unwrap().digest())
        .collect();
    let mut shorter = approve(&agents[0]);
    shorter.envelope.request_sha256 = nkpki::pki::batch::batch_digest(&digests);
    agents[0].resign(&mut shorter);
    refused(
        agents[0].send(&offer.session_id, &shorter),
        409,
        "wrong-request",
    );
    // one certificate's digest in place of the list's
    let mut one = approve(&agents[1]);
    one.envelope.certificate_sha256 = Some(batch.certificates[0].digest());
    agents[1].resign(&mut one);
    refused(
        agents[1].send(&offer.session_id, &one),
        409,
        "wrong-certificate",
    );

    // the batch as offered, approved by three holders: all three certificates are issued
    let fresh: Vec<FakeAgent> = holders[2..5]
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &server.url))
        .collect();
    let mut last = None;
    for (i, a) in fresh.into_iter().enumerate() {
        if i > 0 {
            a.enroll_with(&a.code.clone()).unwrap();
        }
        let mut a = a;
        a.login();
        last = Some(a.send(&offer.session_id, &approve(&a)).unwrap());
    }
    let status = last.unwrap();
    assert_eq!(
        status.state,
        nkpki::proto::SessionState::Signed,
        "{status:?}"
    );
    assert_eq!(status.certificates.len(), 3);
    assert!(status.crl_pem.is_none() && status.certificate_pem.is_none());
    for (i, c) in status.certificates.iter().enumerate() {
        let file = format!("issued{i}.crt");
        env.write(&file, c.pem.as_deref().unwrap());
        env.openssl_verify("ca/ca.crt", &file);
        assert_eq!(c.serial, batch.certificates[i].serial);
    }
}
