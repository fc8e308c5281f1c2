//! Online signing for a threshold-mode CA (issue 8): certificates, revocations and CRLs
//! signed from three agents' signature shares; forged, misdirected and stolen signature
//! shares refused and attributed; agents refusing a TBS that is not the request's; and no
//! share or key component in the server's memory or data directory.

use crate::harness::{Env, Holder, children};
use crate::memscan::{self, Needle};
use crate::online::sign_args;
use crate::online_attacks::{FakeAgent, open_session, refused};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nkpki::client::{Client, Trust};
use nkpki::manifest::{Manifest, VerifiedManifest};
use nkpki::proto::{self, SessionOffer, SessionState, SessionStatus};
use nkpki::sss::shoup::{self, KeyShare};
use num_bigint::BigUint;
use std::time::Duration;

const APPROVERS: [&str; 3] = ["NK001", "NK003", "NK005"];
const RULE: [&str; 5] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-revocations",
];
/// Safe primes of the test ceremonies (public, tests only): `ca-init` reads them in debug
/// builds instead of spending minutes searching.
const PRIMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/threshold/rsa-2048.primes"
);

pub(crate) fn threshold_env(tokens: &[&str]) -> Env {
    Env::new()
        .with_softhsm(tokens)
        .with_env("NKPKI_TEST_SAFE_PRIMES", PRIMES)
}

/// A packaged 3-of-5 threshold-mode rsa-2048 ceremony into `ca/`.
pub(crate) fn threshold_ceremony(env: &Env) -> Vec<Holder> {
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.ca_init(
        "rsa-2048",
        3,
        &[
            "--mode",
            "threshold",
            "--package",
            "--server-url",
            "https://pki.example.org:8443",
        ],
    )
    .ok();
    holders
}

fn manifest(env: &Env) -> VerifiedManifest {
    Manifest::from_json(&String::from_utf8(env.read("ca/manifest.json")).unwrap())
        .unwrap()
        .verify()
        .unwrap()
}

fn key_share(manifest: &VerifiedManifest, share_json: &[u8]) -> KeyShare {
    let share: nkpki::sss::Share = serde_json::from_slice(share_json).unwrap();
    manifest.body.share_set.key_share(&share).unwrap()
}

fn operator(env: &Env, url: &str) -> Client {
    let token = String::from_utf8(env.read("op.token")).unwrap();
    Client::new(url, &Trust::System, Duration::from_secs(30))
        .unwrap()
        .with_bearer(token.trim())
}

fn audit_export(env: &Env) -> String {
    env.nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout()
}

/// p, q, d (as Shoup deals it, and as ordinary RSA would have it) and every key share s_i,
/// in the forms a process or a file could hold them.
fn key_needles(manifest: &VerifiedManifest, shares: &[Vec<u8>]) -> Vec<Needle> {
    let text = std::fs::read_to_string(PRIMES).unwrap();
    let prime = |name: &str| {
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap();
        BigUint::parse_bytes(hex.trim().as_bytes(), 16).unwrap()
    };
    let (p, q) = (prime("p"), prime("q"));
    let one = BigUint::from(1u8);
    let e = BigUint::from(65537u32);
    let m = ((&p - &one) / 2u8) * ((&q - &one) / 2u8);
    let phi = (&p - &one) * (&q - &one);
    let mut needles = memscan::number("p", &p, 128);
    needles.extend(memscan::number("q", &q, 128));
    needles.extend(memscan::number("d mod p'q'", &e.modinv(&m).unwrap(), 256));
    needles.extend(memscan::number(
        "d mod lambda",
        &e.modinv(&(&m * 2u8)).unwrap(),
        256,
    ));
    needles.extend(memscan::number("d mod phi", &e.modinv(&phi).unwrap(), 256));
    for json in shares {
        let share: nkpki::sss::Share = serde_json::from_slice(json).unwrap();
        let ks = manifest.body.share_set.key_share(&share).unwrap();
        let bytes = ks.to_bytes();
        let s = BigUint::from_bytes_be(&bytes[1..]);
        let value = format!("share {}", share.index);
        needles.extend(memscan::number(&value, &s, bytes.len() - 1));
        let hex = hex::encode(&bytes[1..]);
        needles.extend(memscan::pieces(&value, "hex", hex.as_bytes()));
        needles.extend(memscan::pieces(
            &value,
            "HEX",
            hex.to_uppercase().as_bytes(),
        ));
    }
    needles
}

/// Every needle found in a file under `dir`, as "file: needle".
fn scan_files(dir: &std::path::Path, needles: &[Needle]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(scan_files(&path, needles));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        for n in needles {
            if memchr::memmem::find(&bytes, &n.bytes).is_some() {
                found.push(format!(
                    "{}: {} ({}, offset {})",
                    path.display(),
                    n.value,
                    n.form,
                    n.offset
                ));
            }
        }
    }
    found
}

#[test]
fn a_threshold_ca_signs_revokes_and_lists_online_and_the_server_holds_no_secret() {
    let env = threshold_env(&APPROVERS);
    let holders = threshold_ceremony(&env);
    for h in holders
        .iter()
        .filter(|h| APPROVERS.contains(&h.id.as_str()))
    {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&[]);
    let agents: Vec<_> = APPROVERS
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    for id in APPROVERS {
        let log = env.wait_for(&format!("agent-{id}.log"), 30, |t| {
            t.contains("connected to")
        });
        assert!(log.contains("connected to"), "{log}");
    }

    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let run = env.nkpki(&sign_args(&server.url, &ca_id, &csr, "www.crt"));
    run.ok();
    assert!(run.stderr().contains("3 of 3 approved"), "{}", run.stderr());
    env.openssl_verify("ca/ca.crt", "www.crt");
    env.pkilint_cert("www.crt");
    env.pkilint_chain("ca/ca.crt", "www.crt");
    // no worker was started: nothing secret was ever held for this CA
    assert!(children(server.proc.pid()).is_empty());

    let serial = env.cert_serial("www.crt");
    env.revoke_online(&server.url, &ca_id, &serial, "crl.pem");
    let run = env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "ca/ca.crt",
        "-CRLfile",
        "crl.pem",
        "www.crt",
    ]);
    let said = run.stdout() + &run.stderr();
    assert!(said.contains("certificate revoked"), "{said}");
    env.nkpki(&[
        "crl",
        "--server",
        &server.url,
        "--ca",
        &ca_id,
        "--sign",
        "--api-token-file",
        "op.token",
        "--out",
        "crl2.pem",
    ])
    .ok();
    env.openssl(&["crl", "-in", "crl2.pem", "-CAfile", "ca/ca.crt", "-noout"])
        .ok();
    let text = env
        .openssl(&["crl", "-in", "crl2.pem", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(text.contains("Key Compromise"), "{text}");
    let lint = env.tool(
        crate::harness::pkilint("lint_crl"),
        &[
            "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", "crl2.pem",
        ],
    );
    assert!(
        lint.output.status.success(),
        "lint_crl: {}{}",
        lint.stdout(),
        lint.stderr()
    );

    for id in APPROVERS {
        let log = env.wait_for(&format!("agent-{id}.log"), 30, |t| {
            t.matches("signature share sent").count() == 3
        });
        assert_eq!(log.matches("signature share sent").count(), 3, "{log}");
        // each agent remembers what the CRLs it approved said: CRL 2 and the revoked serial
        let history = env.wait_for(
            &format!("cfg-{id}/{ca_id}/agent.crl-history.json"),
            30,
            |t| t.contains("\"highest_number\": 2"),
        );
        assert!(history.contains("\"highest_number\": 2"), "{history}");
        assert!(history.contains(&serial), "{history}");
    }
    let export = audit_export(&env);
    assert_eq!(
        export.matches("the CA key was not rebuilt").count(),
        3,
        "{export}"
    );

    // no share, no p, q or d in the live server or its data directory
    let m = manifest(&env);
    let shares: Vec<Vec<u8>> = holders
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &server.url).share_json)
        .collect();
    let needles = key_needles(&m, &shares);
    // the needles are right: the shares' own package copies hold them
    assert!(
        !scan_files(&env.path(&format!("pkg-{}", holders[0].id)), &needles).is_empty(),
        "the scan finds a share where one is"
    );
    let report = memscan::scan(server.proc.pid(), &needles);
    eprintln!("serve (threshold CA): {report}");
    assert!(report.hits.is_empty(), "secrets in the server:\n{report}");
    // nor in the agents, once they have sent their signature shares: each key share was
    // wiped after use
    for (id, agent) in APPROVERS.iter().zip(&agents) {
        let report = memscan::scan(agent.pid(), &needles);
        eprintln!("agent {id} (threshold CA): {report}");
        assert!(report.hits.is_empty(), "secrets in agent {id}:\n{report}");
    }
    let on_disk = scan_files(&env.path("data"), &needles);
    assert!(
        on_disk.is_empty(),
        "secrets in the data directory: {on_disk:?}"
    );
}

/// Logs in the five holders as software agents speaking the protocol themselves.
fn fake_agents(env: &Env, holders: &[Holder], url: &str) -> Vec<FakeAgent> {
    let mut agents: Vec<FakeAgent> = holders
        .iter()
        .map(|h| FakeAgent::from_package(env, h, url))
        .collect();
    for a in agents.iter_mut() {
        a.enroll_with(&a.code.clone()).unwrap();
        a.login();
    }
    agents
}

fn tbs_of(offer: &SessionOffer) -> Vec<u8> {
    assert_eq!(offer.mode, proto::SigningMode::Threshold);
    assert!(
        offer.recipient.is_empty(),
        "no session key in threshold mode"
    );
    B64.decode(offer.tbs.as_deref().unwrap()).unwrap()
}

#[test]
fn forged_misdirected_and_stolen_signature_shares_are_refused_and_attributed() {
    let env = threshold_env(&[]);
    let holders = threshold_ceremony(&env);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let op = operator(&env, &server.url);
    let agents = fake_agents(&env, &holders, &server.url);
    let m = manifest(&env);
    let key = m.threshold_key().unwrap();
    let shares: Vec<KeyShare> = agents
        .iter()
        .map(|a| key_share(&m, &a.share_json))
        .collect();
    let csr = |name: &str| {
        String::from_utf8(env.read(&env.csr(
            name,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            &format!("/CN={name}.example.org"),
            &[&format!("subjectAltName=DNS:{name}.example.org")],
        )))
        .unwrap()
    };
    let a = open_session(&op, &ca_id, &csr("a"));
    let b = open_session(&op, &ca_id, &csr("b"));
    let offers = agents[0].offers();
    let offer = |id: &str| offers.iter().find(|o| o.session_id == id).unwrap().clone();
    let (offer_a, offer_b) = (offer(&a.session_id), offer(&b.session_id));
    let (tbs_a, tbs_b) = (tbs_of(&offer_a), tbs_of(&offer_b));
    let (sha_a, sha_b) = (
        nkpki::pki::sha256_hex(&tbs_a),
        nkpki::pki::sha256_hex(&tbs_b),
    );
    let context = |o: &SessionOffer| proto::threshold_context(&o.ca_id, &o.session_id);
    let sign = |i: usize, tbs: &[u8], o: &SessionOffer| {
        shoup::sign_share(key, &shares[i], tbs, &context(o), &mut rand::rng()).unwrap()
    };

    // NK001: an honest signature share is accepted
    let good = agents[0].threshold_contribution(&offer_a, &sha_a, sign(0, &tbs_a, &offer_a));
    let status = agents[0].send(&a.session_id, &good).unwrap();
    assert_eq!(status.approved, ["NK001"]);

    // NK002: a forged proof (z altered)
    let mut forged = sign(1, &tbs_a, &offer_a);
    let last = forged.z.len() - 1;
    forged.z[last] ^= 1;
    let c = agents[1].threshold_contribution(&offer_a, &sha_a, forged);
    let why = refused(
        agents[1].send(&a.session_id, &c),
        422,
        "bad-signature-share",
    );
    assert!(why.contains("fails its proof"), "{why}");

    // NK003: a signature share made for session B's TBS, sent to session A under A's digest
    let misdirected = sign(2, &tbs_b, &offer_a);
    let c = agents[2].threshold_contribution(&offer_a, &sha_a, misdirected);
    let why = refused(
        agents[2].send(&a.session_id, &c),
        422,
        "bad-signature-share",
    );
    assert!(why.contains("fails its proof"), "{why}");

    // NK004: NK001's index (a stolen or duplicated share) is not NK004's to bring
    let stolen = sign(0, &tbs_a, &offer_a);
    let c = agents[3].threshold_contribution(&offer_a, &sha_a, stolen);
    let why = refused(
        agents[3].send(&a.session_id, &c),
        422,
        "bad-signature-share",
    );
    assert!(why.contains("belongs to NK001"), "{why}");

    // three refusals out of five: session A can no longer be signed, and nothing was
    let status: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", a.session_id))
        .unwrap();
    assert_eq!(status.state, SessionState::Failed, "{status:?}");
    assert!(status.certificate_pem.is_none());
    let export = audit_export(&env);
    for holder in ["NK002", "NK003", "NK004"] {
        assert!(
            export.lines().any(|l| l.contains("contribution-refused")
                && l.contains(holder)
                && l.contains("signature share")),
            "{holder} must be named: {export}"
        );
    }
    assert!(!export.contains("certificate-issued"), "{export}");

    // session B: an envelope naming another TBS, a sealed share instead of a signature
    // share, and a proof made for another session are refused too
    let c = agents[0].threshold_contribution(&offer_b, &sha_a, sign(0, &tbs_b, &offer_b));
    refused(agents[0].send(&b.session_id, &c), 409, "wrong-tbs");
    let mut sealed = agents[1].threshold_contribution(&offer_b, &sha_b, sign(1, &tbs_b, &offer_b));
    sealed.ciphertext = "-----BEGIN AGE ENCRYPTED FILE-----".into();
    refused(agents[1].send(&b.session_id, &sealed), 400, "bad-envelope");
    let replayed = sign(2, &tbs_b, &offer_a);
    let c = agents[2].threshold_contribution(&offer_b, &sha_b, replayed);
    let why = refused(
        agents[2].send(&b.session_id, &c),
        422,
        "bad-signature-share",
    );
    assert!(why.contains("fails its proof"), "{why}");
    let status: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", b.session_id))
        .unwrap();
    assert_eq!(status.state, SessionState::Failed, "{status:?}");

    // the honest holders sign a third session
    let c_status = open_session(&op, &ca_id, &csr("c"));
    let offer_c = agents[0]
        .offers()
        .into_iter()
        .find(|o| o.session_id == c_status.session_id)
        .unwrap();
    let tbs_c = tbs_of(&offer_c);
    let sha_c = nkpki::pki::sha256_hex(&tbs_c);
    for i in [0, 2, 4] {
        let c = agents[i].threshold_contribution(&offer_c, &sha_c, sign(i, &tbs_c, &offer_c));
        agents[i].send(&c_status.session_id, &c).unwrap();
    }
    let done: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", c_status.session_id))
        .unwrap();
    assert_eq!(done.state, SessionState::Signed, "{done:?}");
    env.write("c.crt", done.certificate_pem.unwrap());
    env.openssl_verify("ca/ca.crt", "c.crt");

    // one CRL at a time: its number and list are fixed when its session opens
    let crl = serde_json::json!({"ca_id": ca_id, "kind": "crl"});
    let first: SessionStatus = op.post("/api/v1/sessions", &crl).unwrap();
    let why = refused(op.post("/api/v1/sessions", &crl), 409, "crl-session-open");
    assert!(why.contains(&first.session_id), "{why}");
    assert!(audit_export(&env).contains("is still open"));
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn an_agent_refuses_a_threshold_offer_whose_tbs_is_not_the_request() {
    use nkpki::proto::{OfferSummary, SessionKind, SigningMode};
    let env = threshold_env(&[]);
    threshold_ceremony(&env);
    let m = manifest(&env);
    let csr_path = env.csr(
        "w",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let csr = nkpki::pki::Csr::parse(&env.read(&csr_path)).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let terms = nkpki::pki::Terms::new(nkpki::pki::Profile::Server, 30, now).unwrap();
    let view = nkpki::pki::check_request(&m.ca, &csr, &terms).unwrap();
    let offer = |kind: SessionKind, tbs: Option<Vec<u8>>| SessionOffer {
        session_id: "s".into(),
        ca_id: m.ca_id().0.clone(),
        ca_name: "Test Root CA".into(),
        kind,
        requester: "alice".into(),
        request: match kind {
            SessionKind::Issue | SessionKind::IssueBatch => {
                String::from_utf8(env.read(&csr_path)).unwrap()
            }
            SessionKind::Revoke => proto::revoke_statement(&m.ca_id().0, "0a0b", "keyCompromise"),
            SessionKind::Crl | SessionKind::Policy | SessionKind::Reshare => {
                proto::crl_statement(&m.ca_id().0)
            }
        },
        request_sha256: String::new(),
        summary: OfferSummary {
            profile: "server".into(),
            days: 30,
            not_before: view.not_before,
            serial: Some(match kind {
                SessionKind::Issue => view.serial.clone(),
                _ => "0a0b".into(),
            }),
            reason: Some("keyCompromise".into()),
            certificate: (kind == SessionKind::Issue).then(|| view.clone()),
            batch: None,
        },
        nonce: String::new(),
        expires_at: 0,
        recipient: String::new(),
        mode: SigningMode::Threshold,
        tbs: tbs.map(|t| B64.encode(t)),
        policy: None,
        approval_only: false,
    };
    let refusal = |o: SessionOffer| nkpki::agent::recompute(&o, &m).unwrap_err().to_string();

    let tbs = nkpki::pki::tbs_certificate(&m.ca, &csr, &terms).unwrap();
    // a server asking a threshold CA's agent for its sealed key share is refused
    let sealed = SessionOffer {
        mode: SigningMode::Reconstruct,
        recipient: "age1qqqq".into(),
        ..offer(SessionKind::Issue, Some(tbs.clone()))
    };
    let why = refusal(sealed);
    assert!(why.contains("never leaves this machine"), "{why}");
    let ok = nkpki::agent::recompute(&offer(SessionKind::Issue, Some(tbs.clone())), &m).unwrap();
    assert_eq!(ok.tbs.as_deref(), Some(tbs.as_slice()));
    assert_eq!(ok.certificate.as_ref(), Some(&view));

    // a TBS for a longer validity than the offer describes
    let longer = nkpki::pki::Terms {
        days: 365,
        ..terms.clone()
    };
    let other = nkpki::pki::tbs_certificate(&m.ca, &csr, &longer).unwrap();
    let why = refusal(offer(SessionKind::Issue, Some(other)));
    assert!(why.contains("validity differs"), "{why}");
    // a TBS for a sub-CA
    let sub_ca = nkpki::pki::Terms {
        profile: nkpki::pki::Profile::SubCa,
        ..terms.clone()
    };
    let other = nkpki::pki::tbs_certificate(&m.ca, &csr, &sub_ca).unwrap();
    let why = refusal(offer(SessionKind::Issue, Some(other)));
    assert!(why.contains("extensions"), "{why}");
    // bytes that are no TBSCertificate, and none at all
    let why = refusal(offer(
        SessionKind::Issue,
        Some(b"\x30\x02\x05\x00".to_vec()),
    ));
    assert!(why.contains("does not parse"), "{why}");
    let why = refusal(offer(SessionKind::Issue, None));
    assert!(why.contains("without to-be-signed bytes"), "{why}");

    // a revocation whose CRL does not revoke the serial approved
    let revoked = |serial: &str| nkpki::pki::Revoked {
        serial_hex: serial.into(),
        reason: "keyCompromise".into(),
        revoked_at: now.unix_timestamp(),
    };
    let crl = nkpki::pki::tbs_crl(&m.ca, 2, &[revoked("0a0b")], now).unwrap();
    let ok = nkpki::agent::recompute(&offer(SessionKind::Revoke, Some(crl)), &m).unwrap();
    assert_eq!(ok.crl.unwrap().revoked.len(), 1);
    let crl = nkpki::pki::tbs_crl(&m.ca, 2, &[revoked("0c0d")], now).unwrap();
    let why = refusal(offer(SessionKind::Revoke, Some(crl)));
    assert!(why.contains("does not revoke serial 0a0b"), "{why}");
    // a CRL dated two days ago, and a certificate offered as a CRL
    let old = now - time::Duration::days(2);
    let crl = nkpki::pki::tbs_crl(&m.ca, 2, &[], old).unwrap();
    let why = refusal(offer(SessionKind::Crl, Some(crl)));
    assert!(why.contains("not now"), "{why}");
    let why = refusal(offer(SessionKind::Crl, Some(tbs)));
    assert!(why.contains("CRL does not parse"), "{why}");
}
