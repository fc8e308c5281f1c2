//! The server against misbehaving clients: bad HTTP, bad operators, and holders whose
//! contributions are forged, replayed, duplicated, late or carry a bad share. The holders
//! here speak the protocol with software keys, as a compromised agent could.

use crate::harness::{Env, Holder};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nkpki::client::{Client, ClientError, Trust};
use nkpki::proto::{self, Contribution, Envelope, SessionOffer, SessionStatus};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use std::io::{Read, Write};
use std::time::Duration;

struct FakeAgent {
    client: Client,
    key: p256::ecdsa::SigningKey,
    ca_id: String,
    id: String,
    code: String,
    share_json: Vec<u8>,
}

fn sign(key: &p256::ecdsa::SigningKey, msg: &[u8]) -> String {
    let sig: p256::ecdsa::Signature = key.sign(msg);
    B64.encode(sig.to_der().as_bytes())
}

impl FakeAgent {
    /// Opens holder `h`'s package with the age CLI and keeps its share and enrollment code.
    fn from_package(env: &Env, h: &Holder, url: &str) -> Self {
        let dir = format!("pkg-{}", h.id);
        std::fs::create_dir_all(env.path(&dir)).unwrap();
        let tar = format!("{dir}/p.tar");
        env.tool(
            "age",
            &[
                "-d",
                "-i",
                h.key_file.to_str().unwrap(),
                "-o",
                &tar,
                &format!("ca/packages/{}.nkpkg", h.id),
            ],
        )
        .ok();
        env.tool("tar", &["xf", &tar, "-C", &dir]).ok();
        let agent: serde_json::Value =
            serde_json::from_slice(&env.read(&format!("{dir}/agent.json"))).unwrap();
        FakeAgent {
            client: Client::new(url, &Trust::System, Duration::from_secs(30)).unwrap(),
            key: p256::ecdsa::SigningKey::from_slice(&[h.id.as_bytes()[4]; 32]).unwrap(),
            ca_id: agent["ca_id"].as_str().unwrap().to_owned(),
            id: h.id.clone(),
            code: agent["enrollment_code"].as_str().unwrap().to_owned(),
            share_json: env.read(&format!("{dir}/share.json")),
        }
    }

    fn enroll_with(&self, code: &str) -> Result<serde_json::Value, ClientError> {
        let pem = String::from_utf8(
            self.key
                .verifying_key()
                .to_public_key_pem(Default::default())
                .unwrap()
                .into_bytes(),
        )
        .unwrap();
        let signature = sign(
            &self.key,
            &proto::enroll_signed_bytes(&self.ca_id, &self.id, &pem),
        );
        let body = proto::Enroll {
            ca_id: self.ca_id.clone(),
            holder_id: self.id.clone(),
            enrollment_code: code.to_owned(),
            public_key_pem: pem,
            signature,
        };
        self.client.post("/api/v1/enroll", &body)
    }

    fn login(&mut self) {
        let c: proto::Challenge = self
            .client
            .post(
                "/api/v1/agent/challenge",
                &proto::ChallengeRequest {
                    ca_id: self.ca_id.clone(),
                    holder_id: self.id.clone(),
                },
            )
            .unwrap();
        let signature = sign(
            &self.key,
            &proto::login_signed_bytes(&self.ca_id, &self.id, &c.challenge),
        );
        let ok: proto::LoginOk = self
            .client
            .post(
                "/api/v1/agent/login",
                &proto::Login {
                    ca_id: self.ca_id.clone(),
                    holder_id: self.id.clone(),
                    challenge: c.challenge,
                    signature,
                },
            )
            .unwrap();
        self.client.set_bearer(Some(ok.bearer));
    }

    fn offers(&self) -> Vec<SessionOffer> {
        let poll: proto::Poll = self.client.get("/api/v1/agent/poll?wait=5").unwrap();
        poll.sessions
    }

    /// A correct contribution for `offer`, with the share `share_json`.
    fn contribution(&self, offer: &SessionOffer, share_json: &[u8]) -> Contribution {
        let recipient = nkpki::seal::parse_recipient(&offer.recipient).unwrap();
        let ciphertext = nkpki::seal::to_recipient(&recipient, share_json).unwrap();
        let envelope = Envelope {
            ca_id: offer.ca_id.clone(),
            session_id: offer.session_id.clone(),
            nonce: offer.nonce.clone(),
            expires_at: offer.expires_at,
            holder_id: self.id.clone(),
            request_sha256: offer.request_sha256.clone(),
            profile: offer.summary.profile.clone(),
            days: offer.summary.days,
            certificate_sha256: offer.summary.certificate.as_ref().map(|v| v.digest()),
            ciphertext_sha256: nkpki::pki::sha256_hex(ciphertext.as_bytes()),
        };
        let signature = sign(&self.key, &envelope.signed_bytes());
        Contribution {
            envelope,
            ciphertext,
            signature,
        }
    }

    fn resign(&self, c: &mut Contribution) {
        c.signature = sign(&self.key, &c.envelope.signed_bytes());
    }

    fn send(&self, session_id: &str, c: &Contribution) -> Result<SessionStatus, ClientError> {
        self.client
            .post(&format!("/api/v1/sessions/{session_id}/contribute"), c)
    }
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

fn open_session(op: &Client, ca_id: &str, csr_pem: &str) -> SessionStatus {
    op.post("/api/v1/sessions", &serde_json::json!({"ca_id": ca_id, "kind": "issue", "csr_pem": csr_pem, "profile": "server", "days": 10}))
        .unwrap()
}

/// Sends raw bytes on a new connection and returns the status line of the answer.
fn raw_http(url: &str, request: &[u8]) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn http_operators_and_contributions_are_checked() {
    let env = Env::new();
    let holders = env.packaged_ceremony(5, 3);
    let ca_id = env.register();
    let server = env.serve(&["--session-ttl", "20"]);
    let url = server.url.clone();
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let op = Client::new(&url, &Trust::System, Duration::from_secs(30))
        .unwrap()
        .with_bearer(token.trim());

    // --- HTTP and operator authentication ---
    let silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(url.trim_start_matches("http://")).unwrap())
        .collect();
    assert!(
        raw_http(&url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").contains("200"),
        "health with silent clients around"
    );
    assert!(raw_http(&url, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n").contains("404"));
    let body = "x".repeat(2 << 20);
    let big = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert!(raw_http(&url, big.as_bytes()).contains("413"));
    let bad = "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer TOKEN\r\nContent-Length: 9\r\n\r\n{not json";
    assert!(raw_http(&url, bad.replace("TOKEN", token.trim()).as_bytes()).contains("400"));
    let anon = Client::new(&url, &Trust::System, Duration::from_secs(10)).unwrap();
    let e = anon
        .post::<_, SessionStatus>(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca_id, "kind": "crl"}),
        )
        .unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 401, .. }), "{e:?}");
    let wrong = anon.clone().with_bearer("nkpki_op_wrong");
    let e = wrong
        .post::<_, SessionStatus>(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca_id, "kind": "crl"}),
        )
        .unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 401, .. }), "{e:?}");
    // a CSR the policy refuses never reaches holders: exit code 3 from `sign`
    let nosan = env.csr(
        "nosan",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=nosan",
        &[],
    );
    let run = env.nkpki(&[
        "sign",
        "--server",
        &url,
        "--ca",
        &ca_id,
        "--csr",
        &nosan,
        "--api-token-file",
        "op.token",
        "--out",
        "x.crt",
    ]);
    assert_eq!(run.output.status.code(), Some(3), "{}", run.stderr());
    assert!(run.stderr().contains("subjectAltName"), "{}", run.stderr());
    let e = op
        .post::<_, SessionStatus>(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": "nope", "kind": "crl"}),
        )
        .unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 404, .. }), "{e:?}");

    // --- enrollment ---
    let mut agents: Vec<FakeAgent> = holders
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &url))
        .collect();
    let e = agents[0]
        .enroll_with("AAAAA-AAAAA-AAAAA-AAAAA")
        .unwrap_err();
    assert_eq!(e.code(), Some("bad-code"), "{e:?}");
    for a in &agents {
        a.enroll_with(&a.code).unwrap();
    }
    let e = agents[0].enroll_with(&agents[0].code.clone()).unwrap_err();
    assert_eq!(
        e.code(),
        Some("code-used"),
        "a second use of the code: {e:?}"
    );
    let e = anon
        .post::<_, proto::Challenge>(
            "/api/v1/agent/challenge",
            &proto::ChallengeRequest {
                ca_id: ca_id.clone(),
                holder_id: "NK999".into(),
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), Some("unknown-holder"), "{e:?}");
    for a in agents.iter_mut() {
        a.login();
    }

    // --- contributions ---
    let csr_a = String::from_utf8(env.read(&env.csr(
        "a",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=a.example.org",
        &["subjectAltName=DNS:a.example.org"],
    )))
    .unwrap();
    let csr_b = String::from_utf8(env.read(&env.csr(
        "b",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=b.example.org",
        &["subjectAltName=DNS:b.example.org"],
    )))
    .unwrap();
    let a = open_session(&op, &ca_id, &csr_a);
    let b = open_session(&op, &ca_id, &csr_b);
    let offers = agents[0].offers();
    assert_eq!(offers.len(), 2, "both sessions are offered: {offers:?}");
    let offer_a = offers
        .iter()
        .find(|o| o.session_id == a.session_id)
        .unwrap()
        .clone();
    let offer_b = offers
        .iter()
        .find(|o| o.session_id == b.session_id)
        .unwrap()
        .clone();

    let good = agents[0].contribution(&offer_a, &agents[0].share_json);
    let status = agents[0].send(&a.session_id, &good).unwrap();
    assert_eq!(status.approved, ["NK001"]);
    refused(agents[0].send(&a.session_id, &good), 409, "duplicate");
    // replayed into another session
    refused(agents[0].send(&b.session_id, &good), 409, "wrong-session");

    let mut forged = agents[1].contribution(&offer_a, &agents[1].share_json);
    forged.signature = agents[2]
        .contribution(&offer_a, &agents[2].share_json)
        .signature;
    refused(agents[1].send(&a.session_id, &forged), 400, "bad-signature");

    let mut other_csr = agents[1].contribution(&offer_a, &agents[1].share_json);
    other_csr.envelope.request_sha256 = offer_b.request_sha256.clone();
    agents[1].resign(&mut other_csr);
    refused(
        agents[1].send(&a.session_id, &other_csr),
        409,
        "wrong-request",
    );

    // the holder's signature covers the terms it was shown: another validity is refused
    let mut longer = agents[1].contribution(&offer_a, &agents[1].share_json);
    longer.envelope.days = 3650;
    agents[1].resign(&mut longer);
    refused(agents[1].send(&a.session_id, &longer), 409, "wrong-terms");

    // a share that fails Feldman verification: refused, and the holder is recorded
    let mut share: serde_json::Value = serde_json::from_slice(&agents[2].share_json).unwrap();
    let v = share["value"].as_str().unwrap().to_owned();
    share["value"] = format!("{}{}", &v[..63], if v.ends_with('0') { '1' } else { '0' }).into();
    let bad_share = agents[2].contribution(&offer_a, &serde_json::to_vec(&share).unwrap());
    let why = refused(agents[2].send(&a.session_id, &bad_share), 422, "bad-share");
    assert!(why.contains("commitments"), "{why}");

    // a share of another CA
    let other = Env::new();
    let oh = other.packaged_ceremony(5, 3);
    let foreign = FakeAgent::from_package(&other, &oh[3], &url);
    let c = agents[3].contribution(&offer_a, &foreign.share_json);
    refused(agents[3].send(&a.session_id, &c), 422, "bad-share");

    let status: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", a.session_id))
        .unwrap();
    assert_eq!(status.state, proto::SessionState::Waiting);
    assert_eq!(status.approved, ["NK001"]);
    assert!(
        status
            .refused
            .iter()
            .any(|r| r.starts_with("NK003:") && r.contains("verification")),
        "{:?}",
        status.refused
    );
    let export = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(
        export.lines().any(|l| l.contains("contribution-refused")
            && l.contains("NK003")
            && l.contains("commitments")),
        "{export}"
    );
    assert!(
        export
            .lines()
            .any(|l| l.contains("enrollment-refused") && l.contains("NK001")),
        "{export}"
    );

    // the honest holders still complete session A
    for agent in &agents[1..3] {
        let c = agent.contribution(&offer_a, &agent.share_json);
        agent.send(&a.session_id, &c).unwrap();
    }
    let done: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", a.session_id))
        .unwrap();
    assert_eq!(done.state, proto::SessionState::Signed, "{done:?}");
    env.write("a.crt", done.certificate_pem.unwrap());
    env.openssl_verify("ca/ca.crt", "a.crt");

    // after expiry nothing is accepted
    std::thread::sleep(Duration::from_secs(21));
    let late = agents[4].contribution(&offer_b, &agents[4].share_json);
    let e = agents[4].send(&b.session_id, &late).unwrap_err();
    assert!(
        matches!(e.code(), Some("not-waiting") | Some("expired")),
        "{e:?}"
    );
    let expired: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", b.session_id))
        .unwrap();
    assert_eq!(expired.state, proto::SessionState::Expired);

    // clients that never sent a request were cut off by the header timeout
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).unwrap_or(0),
            0,
            "a silent connection is closed"
        );
    }
    // a revoked operator token stops working at once, on the running server too
    env.nkpki(&[
        "serve",
        "token",
        "revoke",
        "--data-dir",
        "data",
        "--name",
        "alice",
    ])
    .ok();
    let e = op.get::<serde_json::Value>("/api/v1/cas").unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 401, .. }), "{e:?}");
    env.nkpki(&[
        "serve",
        "token",
        "revoke",
        "--data-dir",
        "data",
        "--name",
        "alice",
    ])
    .fails_with(&["not found"]);
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}
