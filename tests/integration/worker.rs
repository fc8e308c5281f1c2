//! The session worker: the real `nkpki session-worker` process, driven through
//! `WorkerHandle` (and through its raw pipes), with shares from a real ceremony sealed to
//! the worker's own recipient; OpenSSL and pkilint judge what it signs.

use crate::harness::{Env, Holder};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nkpki::manifest::{Manifest, VerifiedManifest};
use nkpki::pki::{self, CertificateView, Csr};
use nkpki::proto::{SignJob, WorkerReply, WorkerRequest};
use nkpki::worker::{Verdict, WorkerError, WorkerHandle, frame};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::task::Poll;

fn worker_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nkpki"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A 3-of-5 ceremony in `ca/`, its manifest, and its holders' age keys.
struct Ca {
    env: Env,
    holders: Vec<Holder>,
    manifest_json: String,
    manifest: VerifiedManifest,
}

impl Ca {
    fn new(key: &str) -> Self {
        let env = Env::new();
        let holders = env.ceremony(key, 5, 3);
        let manifest_json = String::from_utf8(env.read("ca/manifest.json")).unwrap();
        let manifest = Manifest::from_json(&manifest_json)
            .unwrap()
            .verify()
            .unwrap();
        Ca {
            env,
            holders,
            manifest_json,
            manifest,
        }
    }

    /// A holder's share, opened with the age CLI from the ceremony's sealed file.
    fn share(&self, id: &str) -> Vec<u8> {
        let h = self.holders.iter().find(|h| h.id == id).unwrap();
        self.env
            .tool(
                "age",
                &[
                    "-d",
                    "-i",
                    h.key_file.to_str().unwrap(),
                    &format!("ca/shares/{id}.age"),
                ],
            )
            .ok()
            .output
            .stdout
            .clone()
    }

    /// A holder's share sealed to `recipient`, as an agent would send it.
    fn sealed(&self, recipient: &str, id: &str) -> String {
        seal(recipient, &self.share(id))
    }

    /// A server-profile CSR and the certificate view the server would offer for it.
    fn request(&self) -> (String, CertificateView) {
        let csr_file = self.env.csr(
            "web",
            &["-newkey", "rsa:2048"],
            "/CN=web.example.org",
            &["subjectAltName=DNS:web.example.org"],
        );
        let csr = Csr::parse(&self.env.read(&csr_file)).unwrap();
        let terms = pki::Terms::new(
            "server".parse().unwrap(),
            30,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        let view = pki::check_request(&self.manifest.ca, &csr, &terms).unwrap();
        (B64.encode(&csr.der), view)
    }
}

fn seal(recipient: &str, plaintext: &[u8]) -> String {
    nkpki::seal::to_recipient(&nkpki::seal::parse_recipient(recipient).unwrap(), plaintext).unwrap()
}

/// A worker with the CA's session open, and its recipient.
async fn opened(ca: &Ca) -> (WorkerHandle, String) {
    let mut worker = WorkerHandle::spawn(&worker_program()).await.unwrap();
    let recipient = worker.open(&ca.manifest_json).await.unwrap();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (worker, recipient)
}

/// Three good contributions (NK001, NK003, NK005), each accepted and counted.
async fn three_shares(ca: &Ca, worker: &mut WorkerHandle, recipient: &str) {
    for (n, id) in ["NK001", "NK003", "NK005"].iter().enumerate() {
        let verdict = worker
            .contribute(id, &ca.sealed(recipient, id))
            .await
            .unwrap();
        let index = id[2..].parse().unwrap();
        assert_eq!(
            verdict,
            Verdict::Accepted {
                index,
                count: n as u8 + 1
            }
        );
    }
}

/// The process is gone: reaped, or at least a zombie that no longer runs.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn expect_refused(verdict: Verdict, code: &str, needle: &str) {
    match verdict {
        Verdict::Refused { code: c, why } => {
            assert_eq!(c, code, "{why}");
            assert!(why.contains(needle), "{why:?} lacks {needle:?}");
        }
        other => panic!("expected a {code} refusal, got {other:?}"),
    }
}

#[test]
fn worker_issues_exactly_the_approved_certificate_and_exits() {
    let ca = Ca::new("rsa-2048");
    let (csr_der, view) = ca.request();
    let rt = runtime();

    // a view that issuance would not make (a SAN the CSR lacks) is refused unsigned
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    rt.block_on(three_shares(&ca, &mut worker, &recipient));
    let mut forged = view.clone();
    forged.sans.push("DNS:evil.example.org".into());
    let pid = worker.id().unwrap();
    let err = rt
        .block_on(worker.sign(SignJob::Issue {
            csr_der: csr_der.clone(),
            view: Box::new(forged),
        }))
        .unwrap_err();
    assert!(
        matches!(&err, WorkerError::Failed(why) if why.contains("differs from the one the holders approved")),
        "{err}"
    );
    assert!(gone(pid), "the worker still runs after a failed job");

    // the approved view is issued, once, and the worker is gone afterwards
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    rt.block_on(three_shares(&ca, &mut worker, &recipient));
    let pid = worker.id().unwrap();
    let der = rt
        .block_on(worker.sign(SignJob::Issue {
            csr_der,
            view: Box::new(view.clone()),
        }))
        .unwrap();
    assert!(gone(pid), "the worker still runs after signing");
    ca.env
        .write("web.crt", pki::pem_encode("CERTIFICATE", &der).as_bytes());
    ca.env.openssl_verify("ca/ca.crt", "web.crt");
    ca.env.pkilint_cert("web.crt");
    ca.env.pkilint_chain("ca/ca.crt", "web.crt");
    let serial = ca
        .env
        .openssl(&["x509", "-in", "web.crt", "-noout", "-serial"])
        .ok()
        .stdout();
    assert_eq!(
        serial.trim().trim_start_matches("serial=").to_lowercase(),
        view.serial
    );
}

#[test]
fn worker_issues_a_batch_with_the_key_rebuilt_once_or_nothing() {
    // an RSA CA: the batch signs through ring
    let ca = Ca::new("rsa-2048");
    let requests: Vec<(String, CertificateView)> = (0..3).map(|_| ca.request()).collect();
    let csr_ders: Vec<String> = requests.iter().map(|(d, _)| d.clone()).collect();
    let views: Vec<CertificateView> = requests.iter().map(|(_, v)| v.clone()).collect();
    let rt = runtime();
    let timeout = std::time::Duration::from_secs(60);

    // one certificate of the batch differs from what issuance makes: nothing is signed
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    rt.block_on(three_shares(&ca, &mut worker, &recipient));
    let mut forged = views.clone();
    forged[1].sans.push("DNS:evil.example.org".into());
    let err = rt
        .block_on(worker.sign_batch(
            SignJob::IssueBatch {
                csr_ders: csr_ders.clone(),
                views: forged,
            },
            timeout,
        ))
        .unwrap_err();
    assert!(
        matches!(&err, WorkerError::Failed(why) if why.contains("certificate 2 of the batch would differ")),
        "{err}"
    );

    let (mut worker, recipient) = rt.block_on(opened(&ca));
    rt.block_on(three_shares(&ca, &mut worker, &recipient));
    let pid = worker.id().unwrap();
    let ders = rt
        .block_on(worker.sign_batch(
            SignJob::IssueBatch {
                csr_ders,
                views: views.clone(),
            },
            timeout,
        ))
        .unwrap();
    assert!(gone(pid), "the worker still runs after signing");
    assert_eq!(ders.len(), 3);
    for (i, (der, view)) in ders.iter().zip(&views).enumerate() {
        let file = format!("batch{i}.crt");
        ca.env
            .write(&file, pki::pem_encode("CERTIFICATE", der).as_bytes());
        ca.env.openssl_verify("ca/ca.crt", &file);
        assert_eq!(ca.env.cert_serial(&file), view.serial);
    }
    ca.env.pkilint_cert("batch0.crt");
}

#[test]
fn worker_refuses_bad_contributions_and_does_not_count_them() {
    let ca = Ca::new("ecdsa-p256");
    let other = Ca::new("ecdsa-p256");
    let rt = runtime();
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    let mut send = |holder: &str, ciphertext: &str| {
        rt.block_on(worker.contribute(holder, ciphertext)).unwrap()
    };

    // a share of another CA
    expect_refused(
        send("NK001", &other.sealed(&recipient, "NK001")),
        "bad-share",
        "failed verification",
    );
    // a share whose value was altered: the Feldman check names it
    let mut tampered: serde_json::Value = serde_json::from_slice(&ca.share("NK001")).unwrap();
    let value = tampered["value"].as_str().unwrap().to_owned();
    let flipped = if value.starts_with('0') { "1" } else { "0" };
    tampered["value"] = format!("{flipped}{}", &value[1..]).into();
    expect_refused(
        send(
            "NK001",
            &seal(&recipient, &serde_json::to_vec(&tampered).unwrap()),
        ),
        "bad-share",
        "the share sent by NK001",
    );
    // NK002's share sent by NK001
    expect_refused(
        send("NK001", &ca.sealed(&recipient, "NK002")),
        "bad-share",
        "belongs to NK002",
    );
    // sealed to the session and to someone else as well (two -r with the age CLI)
    ca.env.write("NK001.share", ca.share("NK001"));
    let eavesdropper = &other.holders[0].recipient;
    ca.env
        .tool(
            "age",
            &[
                "-a",
                "-r",
                &recipient,
                "-r",
                eavesdropper,
                "-o",
                "two.age",
                "NK001.share",
            ],
        )
        .ok();
    let two = String::from_utf8(ca.env.read("two.age")).unwrap();
    expect_refused(send("NK001", &two), "bad-ciphertext", "sealed to 2 X25519");
    // sealed to another key only, not age at all, not a share inside
    expect_refused(
        send("NK001", &seal(eavesdropper, &ca.share("NK001"))),
        "bad-ciphertext",
        "cannot be decrypted with the session key",
    );
    expect_refused(
        send("NK001", "-----BEGIN AGE ENCRYPTED FILE-----\nnonsense\n"),
        "bad-ciphertext",
        "cannot be decrypted",
    );
    expect_refused(
        send("NK001", &seal(&recipient, b"{\"not\":\"a share\"}")),
        "bad-share",
        "not a share",
    );

    // none of that counted: NK001's real share is the first one in, and only once
    assert_eq!(
        send("NK001", &ca.sealed(&recipient, "NK001")),
        Verdict::Accepted { index: 1, count: 1 }
    );
    expect_refused(
        send("NK001", &ca.sealed(&recipient, "NK001")),
        "duplicate",
        "already in",
    );

    // signing with one share of three fails cleanly, and the worker is gone
    let pid = worker.id().unwrap();
    let err = rt
        .block_on(worker.sign(SignJob::Crl {
            revoked: Vec::new(),
            number: 1,
            now: 1_800_000_000,
        }))
        .unwrap_err();
    assert!(
        matches!(&err, WorkerError::Failed(why) if why.contains("only 1 of the 3 shares")),
        "{err}"
    );
    assert!(gone(pid), "the worker still runs after refusing to sign");
}

#[test]
fn worker_signs_a_crl_that_openssl_and_pkilint_accept() {
    let ca = Ca::new("ecdsa-p256");
    let rt = runtime();
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    rt.block_on(three_shares(&ca, &mut worker, &recipient));
    // a fourth share is not taken: M are in
    let fourth = rt
        .block_on(worker.contribute("NK002", &ca.sealed(&recipient, "NK002")))
        .unwrap();
    expect_refused(fourth, "not-waiting", "already holds the shares it needs");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let der = rt
        .block_on(worker.sign(SignJob::Crl {
            revoked: vec![("0a1b2c3d4e5f".into(), "keyCompromise".into(), now - 60)],
            number: 7,
            now,
        }))
        .unwrap();
    ca.env
        .write("crl.pem", pki::pem_encode("X509 CRL", &der).as_bytes());
    let check = ca.env.openssl(&[
        "crl",
        "-in",
        "crl.pem",
        "-CAfile",
        "ca/ca.crt",
        "-noout",
        "-text",
    ]);
    check.ok();
    assert!(check.stderr().contains("verify OK"), "{}", check.stderr());
    let text = check.stdout();
    assert!(text.contains("0A1B2C3D4E5F"), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    let lint = ca.env.tool(
        crate::harness::pkilint("lint_crl"),
        &[
            "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", "crl.pem",
        ],
    );
    assert!(
        lint.output.status.success(),
        "lint_crl: {}{}",
        lint.stdout(),
        lint.stderr()
    );
}

#[test]
fn worker_refuses_a_manifest_that_does_not_verify() {
    let ca = Ca::new("ecdsa-p256");
    let forged = ca
        .manifest_json
        .replacen("Test Root CA", "Test Rogue CA", 1);
    assert_ne!(forged, ca.manifest_json);
    let rt = runtime();
    let mut worker = rt.block_on(WorkerHandle::spawn(&worker_program())).unwrap();
    let pid = worker.id().unwrap();
    let err = rt.block_on(worker.open(&forged)).unwrap_err();
    assert!(
        matches!(&err, WorkerError::Failed(why) if why.contains("manifest does not verify")),
        "{err}"
    );
    assert!(gone(pid));
    // and the handle is spent: no further exchange, no hang
    let again = rt.block_on(worker.contribute("NK001", "x")).unwrap_err();
    assert!(matches!(again, WorkerError::Gone), "{again}");
}

#[test]
fn aborting_or_dropping_the_handle_ends_the_worker() {
    let ca = Ca::new("ecdsa-p256");
    let rt = runtime();

    let (mut worker, recipient) = rt.block_on(opened(&ca));
    let verdict = rt
        .block_on(worker.contribute("NK002", &ca.sealed(&recipient, "NK002")))
        .unwrap();
    assert_eq!(verdict, Verdict::Accepted { index: 2, count: 1 });
    let pid = worker.id().unwrap();
    // the worker holding a share writes no core file
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "{core}"
    );
    rt.block_on(worker.abort());
    assert!(gone(pid), "abort left the worker running");

    // a worker killed behind the handle's back is an error at the next call, not a hang
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    let pid = worker.id().unwrap();
    ca.env.tool("kill", &["-KILL", &pid.to_string()]).ok();
    let err = rt
        .block_on(worker.contribute("NK002", &ca.sealed(&recipient, "NK002")))
        .unwrap_err();
    assert!(matches!(err, WorkerError::Died(_)), "{err}");
    assert!(gone(pid));

    let (worker, _) = rt.block_on(opened(&ca));
    let pid = worker.id().unwrap();
    drop(worker);
    // the kill is sent on drop; give the kernel a moment to deliver it
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gone(pid), "dropping the handle left the worker running");
}

#[test]
fn a_worker_past_its_lifetime_exits_on_its_own() {
    let ca = Ca::new("ecdsa-p256");
    let rt = runtime();
    let mut worker = rt
        .block_on(WorkerHandle::spawn_with_lifetime(
            &worker_program(),
            std::time::Duration::from_secs(1),
        ))
        .unwrap();
    let recipient = rt.block_on(worker.open(&ca.manifest_json)).unwrap();
    let pid = worker.id().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !gone(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone(pid), "the worker outlived its lifetime");
    let err = rt
        .block_on(worker.contribute("NK001", &ca.sealed(&recipient, "NK001")))
        .unwrap_err();
    assert!(matches!(err, WorkerError::Died(_)), "{err}");
}

#[test]
fn an_exchange_dropped_half_way_spends_the_handle() {
    let ca = Ca::new("ecdsa-p256");
    let rt = runtime();
    let (mut worker, recipient) = rt.block_on(opened(&ca));
    let sealed = ca.sealed(&recipient, "NK001");
    let pid = worker.id().unwrap().to_string();
    // the request goes out at the first poll to a stopped worker, which cannot answer yet;
    // the caller's future is then dropped, as when an HTTP client goes away
    ca.env.tool("kill", &["-STOP", &pid]).ok();
    rt.block_on(async {
        let mut exchange = std::pin::pin!(worker.contribute("NK001", &sealed));
        let first = std::future::poll_fn(|cx| Poll::Ready(exchange.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "answered at once: {first:?}");
    });
    ca.env.tool("kill", &["-CONT", &pid]).ok();
    // its reply will be in the pipe: the handle must not read it as the next one's
    let err = rt
        .block_on(worker.contribute("NK003", &ca.sealed(&recipient, "NK003")))
        .unwrap_err();
    assert!(matches!(err, WorkerError::Gone), "{err}");
    let pid = worker.id().unwrap();
    rt.block_on(worker.abort());
    assert!(gone(pid));
}

/// The worker over its raw pipes: stdout carries frames only, bad input gets a `Failed`
/// frame and exit 1, the end of input exit 0.
fn raw(stdin: &[u8]) -> (std::process::Output, Vec<WorkerReply>) {
    let mut child = Command::new(worker_program())
        .arg("session-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let mut replies = Vec::new();
    let mut rest = out.stdout.as_slice();
    while let Some(reply) = frame::read::<WorkerReply>(&mut rest).unwrap() {
        replies.push(reply);
    }
    (out, replies)
}

fn framed(request: &WorkerRequest) -> Vec<u8> {
    let mut buf = Vec::new();
    frame::write(&mut buf, request).unwrap();
    buf
}

#[test]
fn worker_pipe_protocol_errors_end_it_cleanly() {
    // nothing in, nothing out, exit 0
    let (out, replies) = raw(b"");
    assert!(out.status.success(), "{out:?}");
    assert!(replies.is_empty());

    // a contribution before the session is open
    let (out, replies) = raw(&framed(&WorkerRequest::Contribution {
        holder_id: "NK001".into(),
        ciphertext: "x".into(),
    }));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        matches!(&replies[..], [WorkerReply::Failed { why }] if why.contains("before the session is open")),
        "{replies:?}"
    );

    // a frame that is not a request, and a length over the limit
    let junk = br#"{"op":"open","manifest_json":"{}","extra":true}"#;
    let mut bytes = (junk.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(junk);
    let (out, replies) = raw(&bytes);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        matches!(&replies[..], [WorkerReply::Failed { why }] if why.contains("malformed frame")),
        "{replies:?}"
    );
    let (out, replies) = raw(&u32::MAX.to_be_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        matches!(&replies[..], [WorkerReply::Failed { why }] if why.contains("over the")),
        "{replies:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");

    // an abort after open: one `opened` frame, exit 0
    let ca = Ca::new("ecdsa-p256");
    let mut input = framed(&WorkerRequest::Open {
        manifest_json: ca.manifest_json.clone(),
    });
    input.extend(framed(&WorkerRequest::Abort {}));
    let (out, replies) = raw(&input);
    assert!(out.status.success(), "{out:?}");
    assert!(
        matches!(&replies[..], [WorkerReply::Opened { recipient }] if recipient.starts_with("age1")),
        "{replies:?}"
    );
}

#[test]
fn a_missing_worker_program_is_a_clear_error() {
    let rt = runtime();
    let err = rt
        .block_on(WorkerHandle::spawn(Path::new("/nonexistent/nkpki")))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start the session worker /nonexistent/nkpki"),
        "{err}"
    );
}
