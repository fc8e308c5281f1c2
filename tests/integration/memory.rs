//! What online sessions leave in live processes' memory (issue 12): after several sessions
//! for an RSA CA and an ECDSA CA, the `serve` process and every agent are read through
//! /proc/PID/mem and searched for the CA key in every form, the KEK and every share.

use crate::harness::{Env, Proc, Server};
use crate::memscan::{self, Needle};
use p256::elliptic_curve::PrimeField;
use p256::elliptic_curve::group::GroupEncoding;

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];
const APPROVERS: [&str; 3] = ["NK001", "NK003", "NK005"];
const RULE: [&str; 5] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
    "--approve-revocations",
];

/// A 3-of-5 CA with a `key` CA key, deployed on five SoftHSM tokens, served, with three
/// agents approving by rule.
struct Online {
    env: Env,
    ca_id: String,
    server: Server,
    agents: Vec<(&'static str, Proc)>,
}

fn online(key: &str) -> Online {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.packaged_ceremony_with_key(key, 5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&[]);
    let agents = APPROVERS
        .iter()
        .map(|id| (*id, env.agent(id, &ca_id, &server.url, &RULE)))
        .collect();
    for id in APPROVERS {
        let log = env.wait_for(&format!("agent-{id}.log"), 30, |t| {
            t.contains("connected to")
        });
        assert!(log.contains("connected to"), "{log}");
    }
    Online {
        env,
        ca_id,
        server,
        agents,
    }
}

/// Three certificates and a CRL, each approved by the three agents; returns once every
/// agent has logged its last contribution.
fn sessions(o: &Online) {
    let env = &o.env;
    for name in ["www", "api", "mail"] {
        let csr = env.csr(
            name,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            &format!("/CN={name}.example.org"),
            &[&format!("subjectAltName=DNS:{name}.example.org")],
        );
        env.nkpki(&[
            "sign",
            "--server",
            &o.server.url,
            "--ca",
            &o.ca_id,
            "--csr",
            &csr,
            "--days",
            "30",
            "--api-token-file",
            "op.token",
            "--out",
            &format!("{name}.crt"),
        ])
        .ok();
        env.openssl_verify("ca/ca.crt", &format!("{name}.crt"));
    }
    env.nkpki(&[
        "crl",
        "--server",
        &o.server.url,
        "--ca",
        &o.ca_id,
        "--sign",
        "--api-token-file",
        "op.token",
        "--out",
        "crl.pem",
    ])
    .ok();
    for id in APPROVERS {
        let log = env.wait_for(&format!("agent-{id}.log"), 30, |t| {
            t.matches("share sent").count() == 4
        });
        assert_eq!(log.matches("share sent").count(), 4, "{log}");
    }
}

/// Every secret of the CA: all five shares (read off the tokens with pkcs11-tool), the
/// KEK they interpolate to (checked against the first Feldman commitment), and the CA key
/// the manifest's share set recovers with three of them.
struct Secrets {
    shares: Vec<(u8, [u8; 32])>,
    kek: [u8; 32],
    pkcs8: Vec<u8>,
}

fn secrets(env: &Env, ca_id: &str) -> Secrets {
    let manifest = nkpki::manifest::Manifest::from_json(
        &String::from_utf8(env.read("ca/manifest.json")).unwrap(),
    )
    .unwrap()
    .verify()
    .unwrap();
    let mut parsed = Vec::new();
    let mut shares = Vec::new();
    for id in FIVE {
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
        let json = env.read(&out);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let mut value = [0u8; 32];
        hex::decode_to_slice(v["value"].as_str().unwrap(), &mut value).unwrap();
        shares.push((v["index"].as_u64().unwrap() as u8, value));
        parsed.push(serde_json::from_slice::<nkpki::sss::Share>(&json).unwrap());
        std::fs::remove_file(env.path(&out)).unwrap();
    }
    let pkcs8 = manifest
        .body
        .share_set
        .recover(&parsed[..3])
        .unwrap()
        .to_vec();
    let kek = interpolate_at_zero(&shares[..3]);
    let g_kek = p256::ProjectivePoint::GENERATOR * scalar(&kek);
    assert_eq!(
        hex::encode(g_kek.to_bytes()),
        manifest.body.share_set.commitments[0],
        "the KEK interpolated here must be the one the commitments publish"
    );
    Secrets { shares, kek, pkcs8 }
}

fn scalar(bytes: &[u8; 32]) -> p256::Scalar {
    p256::Scalar::from_repr((*bytes).into()).unwrap()
}

/// Lagrange interpolation at zero of (index, value) points over the P-256 scalar field.
fn interpolate_at_zero(points: &[(u8, [u8; 32])]) -> [u8; 32] {
    let mut sum = p256::Scalar::ZERO;
    for (i, (xi, yi)) in points.iter().enumerate() {
        let xi = p256::Scalar::from(u64::from(*xi));
        let mut basis = p256::Scalar::ONE;
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                let xj = p256::Scalar::from(u64::from(*xj));
                basis *= xj * (xj - xi).invert().unwrap();
            }
        }
        sum += scalar(yi) * basis;
    }
    sum.to_repr().into()
}

fn ca_key_needles(key: &str, pkcs8: &[u8]) -> Vec<Needle> {
    if key.starts_with("rsa") {
        memscan::rsa_key(pkcs8)
    } else {
        use p256::pkcs8::DecodePrivateKey;
        let scalar: [u8; 32] = p256::SecretKey::from_pkcs8_der(pkcs8)
            .unwrap()
            .to_bytes()
            .into();
        memscan::ec_key(pkcs8, &scalar)
    }
}

fn every_needle(key: &str, s: &Secrets) -> Vec<Needle> {
    let mut needles = ca_key_needles(key, &s.pkcs8);
    needles.extend(memscan::kek(&s.kek));
    for (index, value) in &s.shares {
        needles.extend(memscan::share(*index, value));
    }
    needles
}

/// The scanner finds what is there: a secret planted in a process of our own is found,
/// in every encoding, at the right place.
#[test]
fn the_scanner_finds_a_planted_secret() {
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xa5);
    let planted = format!("{}:{}", hex::encode(secret), hex::encode_upper(secret));
    // a child that holds the hex text in its memory (its environment), then sleeps
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .env("PLANTED", &planted)
        .spawn()
        .unwrap();
    // scan the program, not the test's own memory that the child has before its exec
    let exe = format!("/proc/{}/exe", child.id());
    while !std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("sleep")) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let report = memscan::scan(child.id(), &memscan::share(9, &secret));
    child.kill().unwrap();
    child.wait().unwrap();
    let copies = report.copies();
    eprintln!("{report}");
    assert!(
        copies.get("share 9 (hex)").is_some_and(|n| *n >= 1),
        "{report}"
    );
    assert!(
        copies.get("share 9 (HEX)").is_some_and(|n| *n >= 1),
        "{report}"
    );
    assert!(
        report.hits.iter().all(|h| h.region == "[stack]"),
        "{report}"
    );
    assert!(!report.found("share 1"));
}

#[test]
fn agent_memory_holds_no_share_after_contributing() {
    let o = online("ecdsa-p256");
    sessions(&o);
    let s = secrets(&o.env, &o.ca_id);
    let needles = every_needle("ecdsa-p256", &s);
    let mut failures = String::new();
    for (id, agent) in &o.agents {
        let report = memscan::scan(agent.pid(), &needles);
        eprintln!("agent {id}: {report}");
        if !report.hits.is_empty() {
            failures.push_str(&format!("agent {id}: {report}"));
        }
    }
    assert!(failures.is_empty(), "secrets left in agents:\n{failures}");
}

fn server_memory_after_sessions(key: &str) {
    let o = online(key);
    sessions(&o);
    let s = secrets(&o.env, &o.ca_id);
    let report = memscan::scan(o.server.proc.pid(), &every_needle(key, &s));
    eprintln!("serve ({key} CA): {report}");
    assert!(
        report.hits.is_empty(),
        "secrets left in the server:\n{report}"
    );
}

#[test]
fn server_memory_after_rsa_sessions() {
    server_memory_after_sessions("rsa-2048");
}

#[test]
fn server_memory_after_ecdsa_sessions() {
    server_memory_after_sessions("ecdsa-p256");
}
