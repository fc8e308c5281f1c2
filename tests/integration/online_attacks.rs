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

pub(crate) struct FakeAgent {
    client: Client,
    key: p256::ecdsa::SigningKey,
    ca_id: String,
    id: String,
    pub(crate) code: String,
    pub(crate) share_json: Vec<u8>,
}

fn sign(key: &p256::ecdsa::SigningKey, msg: &[u8]) -> String {
    let sig: p256::ecdsa::Signature = key.sign(msg);
    B64.encode(sig.to_der().as_bytes())
}

impl FakeAgent {
    /// Opens holder `h`'s package with the age CLI and keeps its share and enrollment code.
    pub(crate) fn from_package(env: &Env, h: &Holder, url: &str) -> Self {
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

    pub(crate) fn enroll_with(&self, code: &str) -> Result<serde_json::Value, ClientError> {
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

    pub(crate) fn login(&mut self) {
        self.login_bearer();
    }

    /// Logs in and returns the bearer the server issued.
    pub(crate) fn login_bearer(&mut self) -> String {
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
        self.client.set_bearer(Some(ok.bearer.clone()));
        ok.bearer
    }

    pub(crate) fn offers(&self) -> Vec<SessionOffer> {
        let poll: proto::Poll = self.client.get("/api/v1/agent/poll?wait=5").unwrap();
        poll.sessions
    }

    /// A correct contribution for `offer`, with the share `share_json`.
    pub(crate) fn contribution(&self, offer: &SessionOffer, share_json: &[u8]) -> Contribution {
        let recipient = nkpki::seal::parse_recipient(&offer.recipient).unwrap();
        let ciphertext = nkpki::seal::to_recipient(&recipient, share_json).unwrap();
        self.contribution_sealed(offer, ciphertext)
    }

    pub(crate) fn resign(&self, c: &mut Contribution) {
        c.signature = sign(&self.key, &c.envelope.signed_bytes());
    }

    pub(crate) fn send(
        &self,
        session_id: &str,
        c: &Contribution,
    ) -> Result<SessionStatus, ClientError> {
        self.client
            .post(&format!("/api/v1/sessions/{session_id}/contribute"), c)
    }
}

pub(crate) fn refused(
    result: Result<SessionStatus, ClientError>,
    status: u16,
    code: &str,
) -> String {
    match result {
        Err(ClientError::Api {
            status: s,
            code: c,
            message,
        }) if s == status && c == code => message,
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

pub(crate) fn open_session(op: &Client, ca_id: &str, csr_pem: &str) -> SessionStatus {
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
    let body = "x".repeat(nkpki::server::MAX_BODY + 1);
    let big = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
        token.trim(),
        body.len()
    );
    assert!(raw_http(&url, big.as_bytes()).contains("413"));
    // the caller is authenticated before the body is read: a stranger announcing a body it
    // never sends is refused at once (not after the body timeout, 408)
    let announced = format!(
        "POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = raw_http(&url, announced.as_bytes());
    assert!(answer.contains("401"), "{answer}");
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
    let c_session = open_session(&op, &ca_id, &csr_b);
    let offers = agents[0].offers();
    assert_eq!(offers.len(), 3, "every session is offered: {offers:?}");
    let offer = |id: &str| offers.iter().find(|o| o.session_id == id).unwrap().clone();
    let (offer_a, offer_b, offer_c) = (
        offer(&a.session_id),
        offer(&b.session_id),
        offer(&c_session.session_id),
    );

    // every refusal below is the holder's answer to that session: each case takes a
    // (holder, session) pair of its own
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

    let mut other_csr = agents[1].contribution(&offer_b, &agents[1].share_json);
    other_csr.envelope.request_sha256 = offer_a.request_sha256.clone();
    agents[1].resign(&mut other_csr);
    refused(
        agents[1].send(&b.session_id, &other_csr),
        409,
        "wrong-request",
    );

    // the holder's signature covers the terms it was shown: another validity is refused
    let mut longer = agents[1].contribution(&offer_c, &agents[1].share_json);
    longer.envelope.days = 3650;
    agents[1].resign(&mut longer);
    refused(
        agents[1].send(&c_session.session_id, &longer),
        409,
        "wrong-terms",
    );

    // a share that fails Feldman verification: refused, and the holder is recorded
    let mut share: serde_json::Value = serde_json::from_slice(&agents[2].share_json).unwrap();
    let v = share["value"].as_str().unwrap().to_owned();
    share["value"] = format!("{}{}", &v[..63], if v.ends_with('0') { '1' } else { '0' }).into();
    let bad_share = agents[2].contribution(&offer_a, &serde_json::to_vec(&share).unwrap());
    let why = refused(agents[2].send(&a.session_id, &bad_share), 422, "bad-share");
    assert!(why.contains("commitments"), "{why}");
    // the refusal was NK003's answer: a good share afterwards is a duplicate, and the
    // session is no longer offered to it
    let honest = agents[2].contribution(&offer_a, &agents[2].share_json);
    refused(agents[2].send(&a.session_id, &honest), 409, "duplicate");
    assert!(
        agents[2]
            .offers()
            .iter()
            .all(|o| o.session_id != a.session_id),
        "a refused holder is not offered the session again"
    );

    // a share of another CA
    let other = Env::new();
    let oh = other.packaged_ceremony(5, 3);
    let foreign = FakeAgent::from_package(&other, &oh[3], &url);
    let c = agents[3].contribution(&offer_c, &foreign.share_json);
    refused(agents[3].send(&c_session.session_id, &c), 422, "bad-share");

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

    // the holders that were not refused on session A complete it
    for agent in &agents[3..5] {
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

impl FakeAgent {
    /// A threshold-mode contribution for `offer`: the signature share `share`, in an
    /// envelope naming the TBS digest `tbs_sha256`, signed by this holder's key.
    pub(crate) fn threshold_contribution(
        &self,
        offer: &SessionOffer,
        tbs_sha256: &str,
        share: nkpki::sss::shoup::SignatureShare,
    ) -> Contribution {
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
            ciphertext_sha256: String::new(),
            tbs_sha256: Some(tbs_sha256.to_owned()),
            signature_share_sha256: Some(proto::signature_share_sha256(&share)),
        };
        let signature = sign(&self.key, &envelope.signed_bytes());
        Contribution {
            envelope,
            ciphertext: String::new(),
            signature,
            signature_share: Some(share),
            share_set_id: None,
        }
    }

    /// A contribution for `offer` whose (signed) ciphertext is `ciphertext`.
    pub(crate) fn contribution_sealed(
        &self,
        offer: &SessionOffer,
        ciphertext: String,
    ) -> Contribution {
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
            tbs_sha256: None,
            signature_share_sha256: None,
        };
        let signature = sign(&self.key, &envelope.signed_bytes());
        Contribution {
            envelope,
            ciphertext,
            signature,
            signature_share: None,
            share_set_id: None,
        }
    }

    fn challenge(&self, ca_id: &str, holder_id: &str) -> proto::Challenge {
        self.client
            .post(
                "/api/v1/agent/challenge",
                &proto::ChallengeRequest {
                    ca_id: ca_id.to_owned(),
                    holder_id: holder_id.to_owned(),
                },
            )
            .unwrap()
    }

    /// A login for `holder_id` signed with this agent's key: (status, code, message).
    fn login_as(&self, ca_id: &str, holder_id: &str) -> (u16, String, String) {
        let c = self.challenge(ca_id, holder_id);
        let signature = sign(
            &self.key,
            &proto::login_signed_bytes(ca_id, holder_id, &c.challenge),
        );
        let result: Result<proto::LoginOk, ClientError> = self.client.post(
            "/api/v1/agent/login",
            &proto::Login {
                ca_id: ca_id.to_owned(),
                holder_id: holder_id.to_owned(),
                challenge: c.challenge,
                signature,
            },
        );
        match result {
            Err(ClientError::Api {
                status,
                code,
                message,
            }) => (status, code, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

/// The share sealed to the session's recipient and to `extra` other X25519 keys.
fn sealed_to_many(recipient: &str, share_json: &[u8], extra: usize) -> String {
    let session = nkpki::seal::parse_recipient(recipient).unwrap();
    let others: Vec<age::x25519::Recipient> = (0..extra)
        .map(|_| age::x25519::Identity::generate().to_public())
        .collect();
    let recipients = std::iter::once(&session)
        .chain(others.iter())
        .map(|r| r as &dyn age::Recipient);
    let encryptor = age::Encryptor::with_recipients(recipients).unwrap();
    let mut out = Vec::new();
    let armor =
        age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor).unwrap();
    let mut w = encryptor.wrap_output(armor).unwrap();
    w.write_all(share_json).unwrap();
    w.finish().unwrap().finish().unwrap();
    String::from_utf8(out).unwrap()
}

fn audit_rows(env: &Env) -> usize {
    env.nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout()
        .lines()
        .count()
}

#[test]
fn no_holder_and_no_stranger_can_stall_the_server() {
    let env = Env::new();
    let holders = env.packaged_ceremony(5, 3);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let url = server.url.clone();
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let op = Client::new(&url, &Trust::System, Duration::from_secs(30))
        .unwrap()
        .with_bearer(token.trim());
    let mut agents: Vec<FakeAgent> = holders
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &url))
        .collect();
    // NK005 never enrolls
    for a in agents[..4].iter_mut() {
        a.enroll_with(&a.code).unwrap();
        a.login();
    }

    // --- a stranger cannot tell enrolled, unenrolled and unknown holders apart ---
    let stranger = FakeAgent {
        client: Client::new(&url, &Trust::System, Duration::from_secs(10)).unwrap(),
        key: p256::ecdsa::SigningKey::from_slice(&[42u8; 32]).unwrap(),
        ca_id: ca_id.clone(),
        id: "NK999".into(),
        code: String::new(),
        share_json: vec![],
    };
    let shape = |c: &proto::Challenge| {
        (
            c.challenge.len(),
            c.challenge.split('.').count(),
            (c.expires_at - nkpki::store::now()) / 5,
        )
    };
    let enrolled = stranger.challenge(&ca_id, "NK001");
    for (ca, holder) in [
        (ca_id.as_str(), "NK005"),
        (ca_id.as_str(), "NK999"),
        ("0123456789abcdef", "NK001"),
    ] {
        assert_eq!(
            shape(&stranger.challenge(ca, holder)),
            shape(&enrolled),
            "{holder} of {ca}"
        );
    }
    let login_enrolled = stranger.login_as(&ca_id, "NK001");
    assert_eq!(login_enrolled.0, 401);
    assert_eq!(login_enrolled.1, "login-failed");
    assert_eq!(stranger.login_as(&ca_id, "NK005"), login_enrolled);
    assert_eq!(stranger.login_as(&ca_id, "NK999"), login_enrolled);
    let bad_code = |holder: &FakeAgent| match holder.enroll_with("AAAAA-AAAAA-AAAAA-AAAAA") {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("{other:?}"),
    };
    let enrolled_code = bad_code(&agents[0]);
    assert_eq!(enrolled_code.1, "bad-code");
    assert_eq!(bad_code(&agents[4]), enrolled_code, "an unenrolled holder");
    assert_eq!(bad_code(&stranger), enrolled_code, "an unknown holder");
    agents[4].enroll_with(&agents[4].code).unwrap();
    agents[4].login();

    // --- a holder's many-stanza or oversized contribution is refused without decrypting ---
    let csr = String::from_utf8(env.read(&env.csr(
        "a",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=a.example.org",
        &["subjectAltName=DNS:a.example.org"],
    )))
    .unwrap();
    let a = open_session(&op, &ca_id, &csr);
    let offer = agents[0].offers().pop().unwrap();
    assert_eq!(offer.session_id, a.session_id);
    // an agent that will not answer a session asks the poll to skip it: the poll then
    // waits for news instead of offering the same session again
    let skipped: proto::Poll = agents[0]
        .client
        .get(&format!("/api/v1/agent/poll?wait=1&skip={}", a.session_id))
        .unwrap();
    assert!(skipped.sessions.is_empty(), "{:?}", skipped.sessions);

    let two = sealed_to_many(&offer.recipient, &agents[0].share_json, 1);
    let two = agents[0].contribution_sealed(&offer, two);
    let why = refused(agents[0].send(&a.session_id, &two), 400, "bad-ciphertext");
    assert!(why.contains("2 recipient stanzas"), "{why}");
    // the refusal is NK001's answer: a replay is a duplicate, and a is no longer offered
    refused(agents[0].send(&a.session_id, &two), 409, "duplicate");
    let good = agents[0].contribution(&offer, &agents[0].share_json);
    refused(agents[0].send(&a.session_id, &good), 409, "duplicate");
    assert!(agents[0].offers().is_empty(), "NK001 answered session a");

    let oversized = sealed_to_many(&offer.recipient, &agents[1].share_json, 300);
    let oversized = agents[1].contribution_sealed(&offer, oversized);
    let why = refused(
        agents[1].send(&a.session_id, &oversized),
        400,
        "bad-ciphertext",
    );
    assert!(why.contains("bytes"), "{why}");

    // replayed again and again while others are served: each a duplicate, refused at once
    let sender = {
        let client = agents[1].client.clone();
        let (id, oversized) = (a.session_id.clone(), oversized.clone());
        std::thread::spawn(move || {
            (0..20)
                .map(|_| {
                    client
                        .post::<_, SessionStatus>(
                            &format!("/api/v1/sessions/{id}/contribute"),
                            &oversized,
                        )
                        .unwrap_err()
                })
                .collect::<Vec<_>>()
        })
    };
    for _ in 0..10 {
        assert!(raw_http(&url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").contains("200"));
        let status: SessionStatus = op
            .get(&format!("/api/v1/sessions/{}", a.session_id))
            .unwrap();
        assert_eq!(status.state, proto::SessionState::Waiting);
    }
    for e in sender.join().unwrap() {
        assert_eq!(e.code(), Some("duplicate"), "{e:?}");
    }
    // thousands of stanzas: the body is over the agents' limit and never parsed
    let huge = sealed_to_many(&offer.recipient, &agents[2].share_json, 3000);
    let huge = agents[2].contribution_sealed(&offer, huge);
    let e = agents[2].send(&a.session_id, &huge).unwrap_err();
    assert_eq!(e.code(), Some("too-large"), "{e:?}");
    // NK003 (whose huge contribution was never read), NK004 and NK005 complete the session
    for agent in &agents[2..5] {
        agent
            .send(
                &a.session_id,
                &agent.contribution(&offer, &agent.share_json),
            )
            .unwrap();
    }
    let status: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", a.session_id))
        .unwrap();
    assert_eq!(status.state, proto::SessionState::Signed, "{status:?}");
    assert_eq!(status.approved, ["NK003", "NK004", "NK005"]);
    assert_eq!(status.refused.len(), 2, "{:?}", status.refused);

    // --- a burst of bogus bearers: counted and rate-limited, not audited one by one ---
    let before = audit_rows(&env);
    let bogus = Client::new(&url, &Trust::System, Duration::from_secs(10))
        .unwrap()
        .with_bearer("0123456789");
    let codes: Vec<String> = (0..100)
        .map(|_| {
            bogus
                .get::<proto::Poll>("/api/v1/agent/poll")
                .unwrap_err()
                .code()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(codes[0], "unauthorized");
    assert_eq!(codes.last().unwrap(), "rate-limited", "{codes:?}");
    let e = op.get::<serde_json::Value>("/api/v1/cas").unwrap_err();
    assert!(
        matches!(&e, ClientError::Api { status: 429, .. }),
        "the address is limited before its bearer is looked up: {e:?}"
    );
    let after = audit_rows(&env);
    assert!(
        after < before + 5,
        "100 refusals wrote {} audit rows",
        after - before
    );
    assert!(raw_http(&url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").contains("200"));
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn connections_per_address_are_capped() {
    let env = Env::new();
    let server = env.serve(&["--max-connections-per-address", "4"]);
    let addr = server.url.trim_start_matches("http://").to_owned();
    let mut held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // the server counts a connection once it accepted it: the fifth is refused
    let mut refused_answer = String::new();
    for _ in 0..50 {
        refused_answer = raw_http(&server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        if refused_answer.contains("503") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refused_answer.contains("503"), "{refused_answer:?}");
    // one closed, one more is admitted
    held.pop();
    let mut answer = String::new();
    for _ in 0..50 {
        answer = raw_http(&server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        if answer.contains("200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answer.contains("200"), "{answer:?}");
}

#[test]
fn an_agent_enrolls_again_after_its_holder_is_reset() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003"]);
    let holders = env.packaged_ceremony(3, 2);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&[]);
    let rule = ["--approve-profile", "server"];
    let start = || {
        let agent = env.agent("NK001", &ca_id, &server.url, &rule);
        let log = env.wait_for("agent-NK001.log", 20, |t| {
            t.contains("connected to") || t.contains("error")
        });
        (agent, log)
    };
    // first start: the login fails alike for every unenrolled holder, so the agent enrolls
    let (agent, log) = start();
    assert!(
        log.contains("enrolled token key") && log.contains("connected to"),
        "{log}"
    );
    drop(agent);
    // a restart logs in with the enrolled key
    let (agent, log) = start();
    assert!(
        log.contains("connected to") && !log.contains("enrolled token key"),
        "{log}"
    );
    drop(agent);
    // the operator resets the holder: the old code no longer helps, and the agent says so
    let code = env
        .nkpki(&[
            "serve",
            "holder",
            "reset",
            "--data-dir",
            "data",
            "--ca",
            &ca_id,
            "--holder",
            "NK001",
        ])
        .ok()
        .stdout();
    let (agent, log) = start();
    assert!(
        log.contains("not the holder's current one") && log.contains("serve holder reset"),
        "{log}"
    );
    drop(agent);
    // with the new code in agent.json it enrolls again
    let config = format!("cfg-NK001/{ca_id}/agent.json");
    let mut agent_json: serde_json::Value = serde_json::from_slice(&env.read(&config)).unwrap();
    agent_json["enrollment_code"] = code.trim().into();
    env.write(&config, serde_json::to_vec(&agent_json).unwrap());
    let (_agent, log) = start();
    assert!(
        log.contains("enrolled token key") && log.contains("connected to"),
        "{log}"
    );
}

/// Sends raw bytes on a new connection (closed after the answer) and returns all of it.
fn raw_answer(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

#[test]
fn the_frameworks_own_answers_keep_the_api_error_shape() {
    let env = Env::new();
    let server = env.serve(&[]);
    let ask = |method: &str, path: &str, extra: &str| {
        let answer = raw_answer(
            &server.url,
            &format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"),
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
        (head.to_lowercase(), body.to_owned())
    };
    // an unknown path, a known path with another method (no 405), under the API or not
    for (method, path) in [
        ("GET", "/nowhere"),
        ("DELETE", "/healthz"),
        ("GET", "/api/v1/sessions"),
        ("PUT", "/api/v1/agent/poll"),
        ("GET", "/api/v1/nowhere"),
    ] {
        let (head, body) = ask(method, path, "");
        assert!(head.starts_with("http/1.1 404"), "{method} {path}: {head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        let error: proto::ApiError = serde_json::from_str(&body).unwrap();
        assert_eq!(error.code, "not-found", "{body}");
        assert_eq!(error.error, format!("no endpoint {method} {path}"));
    }
    // a body that is not JSON, from a caller who needs no authentication
    let (head, body) = ask(
        "POST",
        "/api/v1/agent/challenge",
        "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(head.starts_with("http/1.1 400"), "{head}");
    let error: proto::ApiError = serde_json::from_str(&body).unwrap();
    assert_eq!(error.code, "bad-json", "{body}");
    // every answer names its request: the caller's id echoed, or a new one
    let (head, _) = ask("GET", "/healthz", "X-Request-Id: trace-me-42\r\n");
    assert!(head.contains("x-request-id: trace-me-42"), "{head}");
    let (head, _) = ask("GET", "/healthz", "");
    assert!(head.contains("x-request-id: "), "{head}");
}
