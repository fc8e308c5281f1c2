//! Online signing on loopback: the real server, real agents beside SoftHSM tokens, OpenSSL
//! and pkilint checking what comes out, and the data directory checked for secrets.

use crate::harness::{Env, Holder, contains};
use nkpki::sss::Share;

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];
const RULE: [&str; 5] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-revocations",
];

/// A packaged 3-of-5 ceremony deployed onto five tokens, registered with a server.
fn deployed(env: &Env) -> (Vec<Holder>, String) {
    let holders = env.packaged_ceremony(5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    (holders, ca_id)
}

pub(crate) fn sign_args<'a>(url: &'a str, ca: &'a str, csr: &'a str, out: &'a str) -> Vec<&'a str> {
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
        "--out",
        out,
    ]
}

/// The CA key, rebuilt here from the shares pkcs11-tool reads off three tokens, to look
/// for it where it must not be.
fn ca_key_material(env: &Env, ca_id: &str) -> (Vec<u8>, Vec<u8>) {
    let manifest = nkpki::manifest::Manifest::from_json(
        &String::from_utf8(env.read("ca/manifest.json")).unwrap(),
    )
    .unwrap()
    .verify()
    .unwrap();
    let shares: Vec<Share> = ["NK002", "NK004", "NK005"]
        .iter()
        .map(|id| {
            let out = format!("{id}-share.json");
            env.pkcs11_tool(
                id,
                &[
                    "--read-object",
                    "--type",
                    "data",
                    "--label",
                    &format!("nkpki-share-{ca_id}"),
                    "-o",
                    &out,
                ],
            )
            .ok();
            serde_json::from_slice(&env.read(&out)).unwrap()
        })
        .collect();
    let pkcs8 = manifest.body.share_set.recover(&shares).unwrap().to_vec();
    let scalar = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_der(&pkcs8)
            .unwrap()
            .to_bytes()
            .to_vec()
    };
    (pkcs8, scalar)
}

#[test]
fn three_agents_sign_revoke_and_the_audit_chain_holds() {
    let env = Env::new().with_softhsm(&FIVE);
    let (_holders, ca_id) = deployed(&env);
    let server = env.serve(&[]);
    let _agents: Vec<_> = ["NK001", "NK003", "NK005"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    for id in ["NK001", "NK003", "NK005"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
        assert!(
            log.contains("connected to") && log.contains("enrolled token key"),
            "{log}"
        );
    }

    let csr = env.csr(
        "www",
        &["-newkey", "rsa:2048"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org,DNS:example.org"],
    );
    let run = env.nkpki(&sign_args(&server.url, &ca_id, &csr, "www.crt"));
    run.ok();
    assert!(run.stderr().contains("3 of 3 approved"), "{}", run.stderr());
    env.openssl_verify("ca/ca.crt", "www.crt");
    env.pkilint_cert("www.crt");
    env.pkilint_chain("ca/ca.crt", "www.crt");
    for id in ["NK001", "NK003", "NK005"] {
        let log = std::fs::read_to_string(env.path(&format!("agent-{id}.log"))).unwrap();
        assert!(
            log.contains("AUTO-APPROVED by rule"),
            "the rule's use must be logged loudly: {log}"
        );
    }

    // a request the rule does not cover is declined by every agent: exit code 4
    let other = env.csr(
        "oth",
        &["-newkey", "ed25519"],
        "/CN=www.example.com",
        &["subjectAltName=DNS:www.example.com"],
    );
    let declined = env.nkpki(&sign_args(&server.url, &ca_id, &other, "oth.crt"));
    assert_eq!(
        declined.output.status.code(),
        Some(4),
        "{}",
        declined.stderr()
    );

    // revoke it: M-of-N again, a new CRL that OpenSSL and pkilint accept
    let serial = env.cert_serial("www.crt");
    env.revoke_online(&server.url, &ca_id, &serial, "crl.pem");
    env.nkpki(&[
        "crl",
        "--server",
        &server.url,
        "--ca",
        &ca_id,
        "--out",
        "fetched.pem",
    ])
    .ok();
    assert_eq!(env.read("crl.pem"), env.read("fetched.pem"));
    let crl_text = env
        .openssl(&["crl", "-in", "crl.pem", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(
        crl_text
            .to_lowercase()
            .contains(&serial.to_uppercase().to_lowercase()),
        "{crl_text}"
    );
    assert!(crl_text.contains("Key Compromise"), "{crl_text}");
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
    assert!(
        !run.output.status.success() && said.contains("certificate revoked"),
        "{said}"
    );
    // a certificate that is not revoked passes the same CRL check
    let other = env.csr(
        "api",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=api.example.org",
        &["subjectAltName=DNS:api.example.org"],
    );
    env.nkpki(&sign_args(&server.url, &ca_id, &other, "api.crt"))
        .ok();
    env.openssl(&[
        "verify",
        "-crl_check",
        "-CAfile",
        "ca/ca.crt",
        "-CRLfile",
        "crl.pem",
        "api.crt",
    ])
    .ok();
    let lint = env.tool(
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

    // the audit chain verifies; no CA key material anywhere in the data directory
    let audit = env
        .nkpki(&["audit", "verify", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("chain intact"), "{audit}");
    let export = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    for event in [
        "ca-registered",
        "holder-enrolled",
        "session-opened",
        "contribution-approved",
        "session-signed",
        "certificate-issued",
        "contribution-declined",
        "certificate-revoked",
        "crl-signed",
    ] {
        assert!(export.contains(event), "audit lacks {event}");
    }
    // the key was rebuilt in a one-shot worker process, not in the server
    assert!(
        export.contains("verified against the commitments by the session worker")
            && export.contains("the worker that held the CA key and the shares has exited"),
        "{export}"
    );
    drop(server);
    let (pkcs8, scalar) = ca_key_material(&env, &ca_id);
    for file in env.files_below("data") {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, &pkcs8),
            "{} holds the CA key",
            file.display()
        );
        assert!(
            !contains(&bytes, &scalar),
            "{} holds the CA private scalar",
            file.display()
        );
    }

    // an edited audit entry is found
    env.tool("python3", &["-c", "import sqlite3; c = sqlite3.connect('data/nkpki.sqlite3'); c.execute(\"UPDATE audit SET detail = 'nothing happened' WHERE seq = 3\"); c.commit()"]).ok();
    env.nkpki(&["audit", "verify", "--data-dir", "data"])
        .fails_with(&["BROKEN at entry 3", "edited"]);
}

#[test]
fn server_killed_mid_session_reports_it_aborted() {
    let env = Env::new().with_softhsm(&FIVE);
    let (_holders, ca_id) = deployed(&env);
    let mut server = env.serve(&[]);
    let _one = env.agent("NK002", &ca_id, &server.url, &RULE);
    env.wait_for("agent-NK002.log", 20, |t| t.contains("connected to"));
    let csr = env.csr(
        "s",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=s.example.org",
        &["subjectAltName=DNS:s.example.org"],
    );
    let client = nkpki::client::Client::new(
        &server.url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(String::from_utf8(env.read("op.token")).unwrap().trim());
    let status: nkpki::proto::SessionStatus = client
        .post("/api/v1/sessions", &serde_json::json!({"ca_id": ca_id, "kind": "issue", "csr_pem": String::from_utf8(env.read(&csr)).unwrap(), "profile": "server", "days": 10}))
        .unwrap();
    env.wait_for("agent-NK002.log", 20, |t| t.contains("share sent"));
    let workers = crate::harness::children(server.proc.child.id());
    assert_eq!(
        workers.len(),
        1,
        "the session's worker holds the share: {workers:?}"
    );
    server.proc.child.kill().unwrap();
    server.proc.child.wait().unwrap();
    // the worker, holding NK002's share, sees its pipe close and exits by itself
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while alive(workers[0]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker outlived the killed server"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let server = env.serve(&[]);
    let client = nkpki::client::Client::new(
        &server.url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(String::from_utf8(env.read("op.token")).unwrap().trim());
    let after: nkpki::proto::SessionStatus = client
        .get(&format!("/api/v1/sessions/{}", status.session_id))
        .unwrap();
    assert_eq!(
        after.state,
        nkpki::proto::SessionState::Aborted,
        "{after:?}"
    );
    assert_eq!(after.approved, ["NK002"]);
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
    let export = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(export.contains("session-aborted"), "{export}");
    drop(server);
    let (pkcs8, scalar) = ca_key_material(&env, &ca_id);
    let share_value = String::from_utf8(env.read("NK002-share.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&share_value).unwrap();
    let value = value["value"].as_str().unwrap();
    for file in env.files_below("data") {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, &pkcs8) && !contains(&bytes, &scalar),
            "{} holds CA key material",
            file.display()
        );
        assert!(
            !contains(&bytes, value.as_bytes()),
            "{} holds a received share",
            file.display()
        );
    }
}

/// A loopback TCP relay to the server that the test can cut and restore: the agent's
/// network.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    fn start(target: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let target = target.trim_start_matches("http://").to_owned();
        let (u, c) = (up.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !u.load(Ordering::SeqCst) {
                    drop(client); // the network is down: connections are reset
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                c.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut c1, &mut s1));
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || std::io::copy(&mut s2, &mut c2));
            }
        });
        Relay { port, up, conns }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn an_agent_that_loses_the_network_comes_back_and_contributes() {
    let env = Env::new().with_softhsm(&FIVE);
    let (_holders, ca_id) = deployed(&env);
    let server = env.serve(&[]);
    let relay = Relay::start(&server.url);
    let relayed = format!("http://127.0.0.1:{}", relay.port);
    let _a = env.agent("NK001", &ca_id, &server.url, &RULE);
    let _b = env.agent("NK002", &ca_id, &server.url, &RULE);
    let _c = env.agent("NK004", &ca_id, &relayed, &RULE);
    for id in ["NK001", "NK002", "NK004"] {
        env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
    }
    relay.cut();
    let csr = env.csr(
        "r",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=r.example.org",
        &["subjectAltName=DNS:r.example.org"],
    );
    let mut sign = std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
        .args(sign_args(&server.url, &ca_id, &csr, "r.crt"))
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(env.path("sign.log")).unwrap())
        .spawn()
        .unwrap();
    let log = env.wait_for("agent-NK004.log", 20, |t| t.contains("server unreachable"));
    assert!(log.contains("server unreachable"), "{log}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    relay.restore();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = sign.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = sign.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let logs = [
        "sign.log",
        "agent-NK004.log",
        "agent-NK001.log",
        "serve.log",
    ]
    .map(|f| {
        format!(
            "--- {f}\n{}",
            std::fs::read_to_string(env.path(f)).unwrap_or_default()
        )
    })
    .join("\n");
    assert!(
        status.is_some_and(|s| s.success()),
        "the session completed once NK004 came back:\n{logs}"
    );
    let log = std::fs::read_to_string(env.path("agent-NK004.log")).unwrap();
    assert!(log.contains("share sent"), "{log}");
    env.openssl_verify("ca/ca.crt", "r.crt");
}

#[test]
fn tls_with_a_private_ca_a_pinned_certificate_and_an_interactive_holder() {
    let env = Env::new().with_softhsm(&FIVE);
    let (_holders, ca_id) = deployed(&env);
    // the server's TLS certificate from a private CA, made by OpenSSL
    env.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "tlsca.key",
        "-out",
        "tlsca.crt",
        "-subj",
        "/CN=TLS test CA",
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ])
    .ok();
    env.openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
    ])
    .ok();
    env.write("ext.cnf", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    env.openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "tlsca.crt",
        "-CAkey",
        "tlsca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "srv.crt",
    ])
    .ok();
    let server = env.serve(&["--tls-cert", "srv.crt", "--tls-key", "srv.key"]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let url = server.url.replace("127.0.0.1", "localhost");
    let der = env
        .openssl(&["x509", "-in", "srv.crt", "-outform", "DER"])
        .ok()
        .output
        .stdout
        .clone();
    let pin = nkpki::pki::sha256_hex(&der);

    let mut rule: Vec<&str> = RULE.to_vec();
    rule.extend(["--server-ca", "tlsca.crt"]);
    let _a = env.agent("NK001", &ca_id, &url, &rule);
    let _b = env.agent("NK002", &ca_id, &url, &rule);
    // NK003 approves by hand: its agent asks on standard input
    std::fs::copy(env.path("pin.txt"), env.path("pin3.txt")).unwrap();
    let conf = env.own_token_conf("NK003");
    let mut manual = std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
        .args([
            "agent",
            "--config",
            &format!("cfg-NK003/{ca_id}/agent.json"),
            "--pin-file",
            "pin3.txt",
            "--server",
            &url,
            "--server-ca",
            "tlsca.crt",
            "--max-sessions",
            "2",
        ])
        .current_dir(env.dir.path())
        .env("SOFTHSM2_CONF", &conf)
        .env("NKPKI_PKCS11_MODULE", crate::harness::SOFTHSM_MODULE)
        .stdin(std::process::Stdio::piped())
        .stderr(std::fs::File::create(env.path("agent-NK003.log")).unwrap())
        .spawn()
        .unwrap();
    for id in ["NK001", "NK002", "NK003"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
        assert!(log.contains("connected to https://localhost"), "{log}");
    }
    let csr = env.csr(
        "t",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=t.example.org",
        &["subjectAltName=DNS:t.example.org"],
    );
    // `sign --server` in the background, trusting the server by its pinned certificate
    let spawn_sign = |out: &str, extra: &[&str]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
            .args([
                "sign",
                "--server",
                &url,
                "--server-cert-sha256",
                &pin,
                "--ca",
                &ca_id,
                "--csr",
                &csr,
            ])
            .args(["--api-token-file", "op.token", "--out", out, "--json"])
            .args(extra)
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let sign = spawn_sign("t.crt", &["--chain"]);
    let shown = env.wait_for("agent-NK003.log", 20, |t| {
        t.contains("Approve this request?")
    });
    for field in [
        "CA:",
        "Requester:   alice",
        "Subject:     CN=t.example.org",
        "SANs:",
        "Key:         ECDSA P-256",
        "Profile:     server",
        "Digest:",
    ] {
        assert!(
            shown.contains(field),
            "the holder must see {field}: {shown}"
        );
    }
    std::io::Write::write_all(manual.stdin.as_mut().unwrap(), b"y\n").unwrap();
    let out = sign.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = &report["session"];
    assert_eq!(status["state"], "signed");
    assert!(
        status["approved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h == "NK003"),
        "{status}"
    );

    // the PIN is checked at every approval: a wrong one sends nothing
    env.write("pin3.txt", "999999\n");
    let second = spawn_sign("t2.crt", &[]);
    env.wait_for("agent-NK003.log", 20, |t| {
        t.matches("Approve this request?").count() == 2
    });
    std::io::Write::write_all(manual.stdin.as_mut().unwrap(), b"y\n").unwrap();
    let log = env.wait_for("agent-NK003.log", 20, |t| t.contains("wrong PIN"));
    assert!(log.contains("wrong PIN"), "{log}");
    assert!(manual.wait().unwrap().success());
    let _d = env.agent("NK004", &ca_id, &url, &rule);
    let out = second.wait_with_output().unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let approved: Vec<&str> = report["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        !approved.contains(&"NK003") && approved.contains(&"NK004"),
        "{report}"
    );
    env.openssl_verify("ca/ca.crt", "t.crt");
    assert_eq!(
        String::from_utf8(env.read("t.crt"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    // a wrong pin, or no trust at all, is a server error (exit 6) before anything is sent
    let wrong_pin = "00".repeat(32);
    let run = env.nkpki(&[
        "sign",
        "--server",
        &url,
        "--server-cert-sha256",
        &wrong_pin,
        "--ca",
        &ca_id,
        "--csr",
        &csr,
        "--api-token-file",
        "op.token",
        "--out",
        "u.crt",
    ]);
    assert_eq!(run.output.status.code(), Some(6), "{}", run.stderr());
    let run = env.nkpki(&[
        "sign",
        "--server",
        &url,
        "--ca",
        &ca_id,
        "--csr",
        &csr,
        "--api-token-file",
        "op.token",
        "--out",
        "u.crt",
    ]);
    assert_eq!(run.output.status.code(), Some(6), "{}", run.stderr());
}
