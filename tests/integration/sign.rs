//! Offline signing: real CSRs of every shape from OpenSSL, each certificate verified by
//! OpenSSL and linted by pkilint.

use crate::harness::Env;

#[test]
fn every_csr_kind_and_profile_is_issued_verified_and_lint_clean() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p384", 5, 3);
    let three = [&holders[4], &holders[0], &holders[2]];
    /// name, -newkey arguments, subject, -addext values, profile
    type Case<'a> = (&'a str, Vec<&'a str>, &'a str, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "rsa2048",
            vec!["-newkey", "rsa:2048"],
            "/CN=www.example.org/O=Example",
            vec!["subjectAltName=DNS:www.example.org,DNS:example.org,IP:192.0.2.1,IP:2001:db8::1"],
            "server",
        ),
        (
            "rsa4096",
            vec!["-newkey", "rsa:4096"],
            "/CN=big.example.org",
            vec!["subjectAltName=DNS:big.example.org"],
            "server",
        ),
        (
            "p256",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "/CN=p256.example.org",
            vec![
                "subjectAltName=DNS:p256.example.org",
                "subjectKeyIdentifier=hash",
            ],
            "server",
        ),
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "/CN=alice/O=Example",
            vec!["subjectAltName=email:alice@example.org"],
            "client",
        ),
        (
            "ed25519",
            vec!["-newkey", "ed25519"],
            "/CN=ed.example.org",
            vec!["subjectAltName=DNS:ed.example.org,IP:198.51.100.7"],
            "server",
        ),
        (
            "subca",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "/CN=Issuing CA 1/O=Example/C=FR",
            vec!["basicConstraints=critical,CA:TRUE"],
            "sub-ca",
        ),
    ];
    for (name, newkey, subject, exts, profile) in cases {
        let csr = env.csr(name, &newkey, subject, &exts);
        let out = format!("{name}.crt");
        let run = env.sign(&three, &csr, profile, "30", &out);
        run.ok();
        env.openssl_verify("ca/ca.crt", &out);
        env.pkilint_cert(&out);
        env.pkilint_chain("ca/ca.crt", &out);
        let text = env
            .openssl(&["x509", "-in", &out, "-noout", "-text"])
            .ok()
            .stdout();
        match profile {
            "server" => {
                assert!(
                    text.contains("TLS Web Server Authentication"),
                    "{name}: {text}"
                );
                assert!(
                    text.contains("CA:FALSE") || !text.contains("CA:TRUE"),
                    "{name}: {text}"
                );
            }
            "client" => assert!(
                text.contains("TLS Web Client Authentication")
                    && text.contains("email:alice@example.org")
            ),
            _ => {
                assert!(text.contains("CA:TRUE, pathlen:0"), "{name}: {text}");
                assert!(!text.contains("Extended Key Usage"), "{name}: {text}");
            }
        }
        assert!(text.contains("Subject Key Identifier"), "{name}: {text}");
        if name == "p256" {
            assert!(
                run.stderr()
                    .contains("requested extension subjectKeyIdentifier"),
                "{}",
                run.stderr()
            );
        }
        if name == "rsa2048" {
            assert!(text.contains("IP Address:2001:DB8:0:0:0:0:0:1"), "{text}");
        }
    }
}

#[test]
fn chain_output_and_refusal_to_overwrite() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    let csr = env.csr(
        "s",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=s.example.org",
        &["subjectAltName=DNS:s.example.org"],
    );
    let mut args_holders = vec![&holders[0], &holders[1]];
    env.sign(&args_holders, &csr, "server", "7", "s.crt").ok();
    let before = env.read("s.crt");
    args_holders.reverse();
    env.sign(&args_holders, &csr, "server", "7", "s.crt")
        .fails_with(&["already exists", "--force"]);
    assert_eq!(
        env.read("s.crt"),
        before,
        "an existing certificate was changed"
    );

    let mut args: Vec<String> = [
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--days",
        "7",
        "--out",
        "chain.pem",
        "--chain",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for h in &holders[1..] {
        args.extend([
            "--share".into(),
            format!("ca/shares/{}.age", h.id),
            "--identity".into(),
            h.key_file.to_string_lossy().into_owned(),
        ]);
    }
    env.nkpki(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let chain = String::from_utf8(env.read("chain.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain.ends_with(&String::from_utf8(env.read("ca/ca.crt")).unwrap()));
    // two different certificates for the same CSR have different serials
    let serial = |f: &str| {
        env.openssl(&["x509", "-in", f, "-noout", "-serial"])
            .ok()
            .stdout()
    };
    assert_ne!(serial("s.crt"), serial("chain.pem"));
}
