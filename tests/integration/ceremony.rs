//! `nkpki ca-init`: what it writes, that peers accept it, and that no secret is in clear.

use crate::harness::{Env, contains};
use nkpki::manifest::Manifest;
use nkpki::sss::Share;
use std::os::unix::fs::PermissionsExt;

fn mode(env: &Env, name: &str) -> u32 {
    std::fs::metadata(env.path(name))
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn ceremony_output_is_complete_and_accepted_by_openssl_pkilint_and_age() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 5, 3);

    for f in ["ca/ca.crt", "ca/manifest.json", "ca/ceremony.log"] {
        assert!(env.path(f).is_file(), "{f} missing");
    }
    for h in &holders {
        assert_eq!(mode(&env, &format!("ca/shares/{}.age", h.id)), 0o600);
    }
    assert_eq!(mode(&env, "ca/shares"), 0o700);

    // the CA certificate: self-signed, CA extensions, lint-clean
    env.openssl_verify("ca/ca.crt", "ca/ca.crt");
    let text = env
        .openssl(&["x509", "-in", "ca/ca.crt", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("Subject Key Identifier") && text.contains("Authority Key Identifier"));
    assert!(
        text.contains("Subject: C = FR, O = nkpki tests, CN = Test Root CA"),
        "{text}"
    );
    env.pkilint_cert("ca/ca.crt");

    // the manifest verifies, and its certificate is ca.crt
    let manifest =
        Manifest::from_json(&String::from_utf8(env.read("ca/manifest.json")).unwrap()).unwrap();
    let verified = manifest.verify().unwrap();
    assert_eq!(
        verified.ca.pem().as_bytes(),
        env.read("ca/ca.crt").as_slice()
    );
    assert_eq!(verified.threshold(), 3);
    assert_eq!(verified.body.holders.len(), 5);

    // the reference age CLI opens each share with its holder's key
    let mut shares = Vec::new();
    for h in &holders {
        let out = env
            .tool(
                "age",
                &[
                    "-d",
                    "-i",
                    h.key_file.to_str().unwrap(),
                    &format!("ca/shares/{}.age", h.id),
                ],
            )
            .ok()
            .output
            .stdout
            .clone();
        let share: Share = serde_json::from_slice(&out).unwrap();
        assert_eq!(share.holder.as_deref(), Some(h.id.as_str()));
        verified.check_share(&share, &h.id).unwrap();
        shares.push(share);
    }
    // and another holder's key does not
    env.tool(
        "age",
        &[
            "-d",
            "-i",
            holders[1].key_file.to_str().unwrap(),
            "ca/shares/NK001.age",
        ],
    )
    .output
    .status
    .success()
    .then(|| panic!("NK002's key opened NK001's share"));

    // rebuild the CA key from three shares, then look for it in every file written
    let pkcs8 = verified.body.share_set.recover(&shares[2..5]).unwrap();
    let key = nkpki::pki::CaKey::from_pkcs8_der(&pkcs8).unwrap();
    assert_eq!(key.spki_der().unwrap(), verified.ca.spki_der);
    let scalar = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_der(&pkcs8)
            .unwrap()
            .to_bytes()
            .to_vec()
    };
    let share_values: Vec<String> = shares
        .iter()
        .map(|s| {
            serde_json::to_value(s).unwrap()["value"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for file in env.files_below("ca") {
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
        for v in &share_values {
            assert!(
                !contains(&bytes, v.as_bytes()),
                "{} holds a share in clear",
                file.display()
            );
        }
    }
    let log = String::from_utf8(env.read("ca/ceremony.log")).unwrap();
    assert!(log.contains(&verified.body.certificate_sha256), "{log}");
}

#[test]
fn rsa_4096_ceremony_makes_a_lint_clean_ca() {
    let env = Env::new();
    let holders = env.ceremony("rsa-4096", 3, 2);
    let text = env
        .openssl(&["x509", "-in", "ca/ca.crt", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(text.contains("Public-Key: (4096 bit)"), "{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");
    env.pkilint_cert("ca/ca.crt");
    let csr = env.csr(
        "srv",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=rsa.example.org",
        &["subjectAltName=DNS:rsa.example.org"],
    );
    env.sign(&[&holders[0], &holders[2]], &csr, "server", "30", "srv.crt")
        .ok();
    env.openssl_verify("ca/ca.crt", "srv.crt");
    env.pkilint_cert("srv.crt");
    env.pkilint_chain("ca/ca.crt", "srv.crt");
}

#[test]
fn holders_without_recipient_get_passphrases_that_open_their_shares() {
    let env = Env::new();
    let holders = env.holders(4);
    env.holders_json(&holders, &["NK002", "NK004"]);
    env.ca_init("ecdsa-p384", 3, &["--passphrases-to", "pass.txt"])
        .ok();
    assert_eq!(mode(&env, "pass.txt"), 0o600);
    let pass = String::from_utf8(env.read("pass.txt")).unwrap();
    let ids: Vec<&str> = pass.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(ids, ["NK002", "NK004"]);

    let csr = env.csr(
        "c",
        &["-newkey", "ed25519"],
        "/CN=client one",
        &["subjectAltName=email:one@example.org"],
    );
    env.nkpki(&[
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--profile",
        "client",
        "--days",
        "10",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "ca/shares/NK004.age",
        "--share",
        "ca/shares/NK001.age",
        "--identity",
        holders[0].key_file.to_str().unwrap(),
        "--passphrases-from",
        "pass.txt",
        "--out",
        "c.crt",
    ])
    .ok();
    env.openssl_verify("ca/ca.crt", "c.crt");
    env.pkilint_cert("c.crt");
}

#[test]
fn passphrases_need_a_terminal_or_a_file() {
    let env = Env::new();
    let holders = env.holders(3);
    env.holders_json(&holders, &["NK003"]);
    env.ca_init("ecdsa-p256", 2, &[])
        .fails_with(&["no terminal", "hint:", "--passphrases-to"]);
    assert!(!env.path("ca").exists());
}
