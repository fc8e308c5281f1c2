//! Threshold-mode CAs on the ceremony laptop: `ca-init --mode threshold`, deployment and
//! drills on SoftHSM tokens, offline signing from tokens and share files (OpenSSL and
//! pkilint check the result), and the bad inputs: ECDSA keys, tampered manifests, shares of
//! another CA or of the other mode, duplicates, too few shares, Ctrl-C during safe-prime
//! generation.

use crate::harness::Env;
use std::io::{BufRead, BufReader};

const PRIMES_2048: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/threshold/rsa-2048.primes"
);

/// A test environment whose (debug) `nkpki` takes the checked-in rsa-2048 safe primes.
fn env(tokens: &[&str]) -> Env {
    let env = Env::new().with_env("NKPKI_TEST_SAFE_PRIMES", PRIMES_2048);
    if tokens.is_empty() {
        env
    } else {
        env.with_softhsm(tokens)
    }
}

/// A 2-of-3 threshold-mode rsa-2048 ceremony into `out`, holders already written.
fn threshold_init(env: &Env, out: &str, extra: &[&str]) {
    let mut args = vec![
        "ca-init",
        "--name",
        "Threshold Root CA",
        "--org",
        "nkpki tests",
        "--country",
        "FR",
        "--key",
        "rsa-2048",
        "--mode",
        "threshold",
        "--validity-years",
        "5",
        "--threshold",
        "2",
        "--holders",
        "holders.json",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    env.nkpki(&args).ok();
}

fn csr(env: &Env) -> String {
    env.csr(
        "leaf",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    )
}

fn sign_with_files(
    env: &Env,
    manifest: &str,
    shares: &[(&str, &str)],
    out: &str,
) -> crate::harness::Run {
    let mut args: Vec<String> = [
        "sign",
        "--offline",
        "--manifest",
        manifest,
        "--csr",
        "leaf.csr",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (file, key) in shares {
        args.extend(["--share".into(), file.to_string()]);
        args.extend(["--identity".into(), key.to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    env.nkpki(&refs)
}

fn manifest_json(env: &Env, path: &str) -> serde_json::Value {
    serde_json::from_slice(&env.read(path)).unwrap()
}

#[test]
fn a_threshold_ceremony_records_the_key_deploys_drills_and_signs_offline_from_tokens() {
    let env = env(&["NK001", "NK002"]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    threshold_init(
        &env,
        "ca",
        &["--package", "--server-url", "https://pki.example.org:8443"],
    );

    // the manifest records the mode and the whole public key, and n is the certificate's
    let m = manifest_json(&env, "ca/manifest.json");
    let set = &m["signed"]["share_set"];
    assert_eq!(set["scheme"], "shoup-rsa/pkcs1v15-sha256");
    assert!(set.get("wrapped").is_none(), "{set}");
    let key = &set["threshold_key"];
    assert_eq!(key["e"], 65537);
    assert_eq!(key["verification_keys"].as_array().unwrap().len(), 3);
    let modulus = env
        .openssl(&["x509", "-in", "ca/ca.crt", "-noout", "-modulus"])
        .ok()
        .stdout();
    assert_eq!(
        modulus.trim().trim_start_matches("Modulus="),
        key["n"].as_str().unwrap().to_uppercase()
    );
    let log = String::from_utf8(env.read("ca/ceremony.log")).unwrap();
    assert!(log.contains("mode=threshold"), "{log}");
    assert!(log.contains("Shoup threshold-RSA shares 2-of-3"), "{log}");

    // holders deploy, drill and list as in reconstruct mode
    for (h, token) in holders.iter().zip(["NK001", "NK002"]) {
        let out = env
            .deploy(h, &format!("ca/packages/{}.nkpkg", h.id), token, &[])
            .ok()
            .stdout();
        assert!(
            out.contains("nkpki1:"),
            "the QR fingerprint is shown: {out}"
        );
    }
    let drill = env
        .nkpki(&[
            "token",
            "drill",
            "--token",
            "NK002",
            "--manifest",
            "ca/manifest.json",
            "--pin-file",
            "pin.txt",
        ])
        .ok()
        .stdout();
    assert!(drill.contains("share 2"), "{drill}");
    let ca_id = m["signed"]["ca_id"].as_str().unwrap().to_owned();
    let listed = env
        .nkpki(&[
            "token",
            "shares",
            "--token",
            "NK001",
            "--pin-file",
            "pin.txt",
        ])
        .ok()
        .stdout();
    assert!(
        listed.contains(&ca_id) && listed.contains("share 1 of 3"),
        "{listed}"
    );

    // offline signing, one token after the other
    csr(&env);
    let run = env
        .nkpki(&[
            "sign",
            "--offline",
            "--manifest",
            "ca/manifest.json",
            "--csr",
            "leaf.csr",
            "--token",
            "NK001",
            "--token",
            "NK002",
            "--pin-file",
            "pin.txt",
            "--out",
            "leaf.pem",
        ])
        .ok()
        .stderr();
    assert!(run.contains("the CA key is never rebuilt"), "{run}");
    assert_eq!(run.matches("the share is wiped").count(), 2, "{run}");
    env.openssl_verify("ca/ca.crt", "leaf.pem");
    env.pkilint_cert("leaf.pem");
}

#[test]
fn share_files_sign_offline_and_fewer_or_duplicated_shares_do_not() {
    let env = env(&[]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    threshold_init(&env, "ca", &[]);
    csr(&env);
    let key = |i: usize| holders[i].key_file.to_string_lossy().into_owned();
    let (k1, k2, k3) = (key(0), key(1), key(2));

    sign_with_files(
        &env,
        "ca/manifest.json",
        &[("ca/shares/NK003.age", &k3), ("ca/shares/NK002.age", &k2)],
        "leaf.pem",
    )
    .ok();
    env.openssl_verify("ca/ca.crt", "leaf.pem");
    env.pkilint_cert("leaf.pem");
    // the signature is an ordinary PKCS#1 v1.5 SHA-256 one
    let text = env
        .openssl(&["x509", "-in", "leaf.pem", "-noout", "-text"])
        .ok()
        .stdout();
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");

    sign_with_files(
        &env,
        "ca/manifest.json",
        &[("ca/shares/NK001.age", &k1)],
        "one.pem",
    )
    .fails_with(&["1 valid share(s) given; this CA needs 2"]);
    sign_with_files(
        &env,
        "ca/manifest.json",
        &[("ca/shares/NK001.age", &k1), ("ca/shares/NK001.age", &k1)],
        "twice.pem",
    )
    .fails_with(&["are the same share (1)"]);
    assert!(!env.path("one.pem").exists() && !env.path("twice.pem").exists());
}

#[test]
fn an_ecdsa_key_is_refused_in_threshold_mode() {
    let env = env(&[]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    env.ca_init("ecdsa-p256", 2, &["--mode", "threshold"])
        .fails_with(&[
            "ecdsa-p256 cannot be a threshold-mode key",
            "--mode reconstruct",
        ]);
    env.ca_init("rsa-2048", 2, &["--mode", "shamir"])
        .fails_with(&["\"shamir\" is not a CA mode (reconstruct or threshold)"]);
    assert!(!env.path("ca").exists());
}

#[test]
fn a_manifest_with_a_tampered_verification_key_or_modulus_is_refused() {
    let env = env(&[]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    threshold_init(&env, "ca", &[]);
    csr(&env);
    let k1 = holders[0].key_file.to_string_lossy().into_owned();
    let original = manifest_json(&env, "ca/manifest.json");
    let key = &original["signed"]["share_set"]["threshold_key"];
    let n = key["n"].as_str().unwrap().to_owned();
    let v1 = key["verification_keys"][0].as_str().unwrap().to_owned();

    let tamper = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut m = original.clone();
        edit(&mut m["signed"]["share_set"]["threshold_key"]);
        let path = format!("ca/{name}.json");
        env.write(&path, serde_json::to_vec_pretty(&m).unwrap());
        path
    };
    // v_2 out of range (>= n)
    let out_of_range = tamper("v2-out-of-range", &|k| {
        k["verification_keys"][1] = "ff".repeat(256).into();
    });
    // v_2 replaced by a valid-looking value (v_1): caught by the manifest's signature
    let swapped = tamper("v2-swapped", &|k| {
        k["verification_keys"][1] = v1.clone().into();
    });
    // n replaced by another odd 2048-bit number above every v_i
    let other_n = tamper("other-n", &|k| {
        k["n"] = format!("ff{}", &n[2..]).into();
    });
    // n not a 2048, 3072 or 4096-bit number
    let short_n = tamper("short-n", &|k| {
        k["n"] = n[2..].to_owned().into();
    });
    for (path, needle) in [
        (&out_of_range, "verification key v_2 is out of range"),
        (&swapped, "signature does not verify"),
        (&short_n, "the threshold public key is malformed"),
    ] {
        sign_with_files(&env, path, &[("ca/shares/NK001.age", &k1)], "x.pem").fails_with(&[needle]);
    }
    // another n either shares a factor with some v_i (refused as it is parsed) or not
    // (refused by the signature)
    let run = sign_with_files(&env, &other_n, &[("ca/shares/NK001.age", &k1)], "x.pem");
    let err = run.fails_with(&[]).stderr();
    assert!(
        err.contains("signature does not verify") || err.contains("not a unit mod n"),
        "{err}"
    );
    assert!(!env.path("x.pem").exists());
}

#[test]
fn a_share_of_another_ca_or_of_the_other_mode_is_refused() {
    let env = env(&[]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    threshold_init(&env, "ca", &[]);
    threshold_init(&env, "other", &[]);
    env.nkpki(&[
        "ca-init",
        "--name",
        "Reconstruct Root CA",
        "--org",
        "nkpki tests",
        "--country",
        "FR",
        "--key",
        "rsa-2048",
        "--threshold",
        "2",
        "--holders",
        "holders.json",
        "--out",
        "classic",
    ])
    .ok();
    csr(&env);
    let key = |i: usize| holders[i].key_file.to_string_lossy().into_owned();
    let (k1, k2) = (key(0), key(1));

    // a threshold share of another threshold CA
    sign_with_files(
        &env,
        "ca/manifest.json",
        &[
            ("ca/shares/NK001.age", &k1),
            ("other/shares/NK002.age", &k2),
        ],
        "x.pem",
    )
    .fails_with(&["other/shares/NK002.age", "belongs to another share set"]);
    // a reconstruct-mode share offered to a threshold CA
    sign_with_files(
        &env,
        "ca/manifest.json",
        &[
            ("ca/shares/NK001.age", &k1),
            ("classic/shares/NK002.age", &k2),
        ],
        "x.pem",
    )
    .fails_with(&["share 2 is a reconstruct-mode share, but this CA is in threshold mode"]);
    // a threshold share offered to a reconstruct-mode CA
    sign_with_files(
        &env,
        "classic/manifest.json",
        &[
            ("classic/shares/NK001.age", &k1),
            ("ca/shares/NK002.age", &k2),
        ],
        "x.pem",
    )
    .fails_with(&["share 2 is a threshold-mode share, but this CA is in reconstruct mode"]);
    assert!(!env.path("x.pem").exists());
}

#[test]
fn ctrl_c_during_safe_prime_generation_stops_cleanly_and_writes_nothing() {
    let env = Env::new();
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
        .args([
            "ca-init",
            "--name",
            "Interrupted CA",
            "--org",
            "nkpki tests",
            "--country",
            "FR",
            "--key",
            "rsa-4096",
            "--mode",
            "threshold",
            "--threshold",
            "2",
            "--holders",
            "holders.json",
            "--out",
            "ca",
        ])
        .current_dir(env.dir.path())
        .env_remove("NKPKI_TEST_SAFE_PRIMES")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // wait until the search reports progress, then interrupt it
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no progress: {seen}"
        );
        seen.push_str(&line);
        if line.contains("candidates tested") {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let exit = child.wait().unwrap();
    assert!(!exit.success(), "{seen}{rest}");
    assert!(
        rest.contains("interrupted: safe-prime generation stopped; nothing was written"),
        "{seen}{rest}"
    );
    assert!(!env.path("ca").exists());
}

#[test]
fn tokens_inserted_one_after_another_sign_offline_each_share_wiped_before_the_next() {
    let env = env(&["NK001", "NK002"]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    threshold_init(
        &env,
        "ca",
        &["--package", "--server-url", "https://pki.example.org:8443"],
    );
    for (h, token) in holders.iter().zip(["NK001", "NK002"]) {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), token, &[])
            .ok();
    }
    csr(&env);
    let (inserted, transcript) = env.run_inserting_tokens(&[
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        "leaf.csr",
        "--insert-tokens",
        "--pin-file",
        "pin.txt",
        "--out",
        "leaf.pem",
    ]);
    assert_eq!(inserted, 2, "{transcript}");
    // each share was used and wiped before the next token was asked for
    let first_wipe = transcript.find("the share is wiped").unwrap();
    let second_ask = transcript
        .match_indices("Insert a holder's token")
        .nth(1)
        .unwrap()
        .0;
    assert!(first_wipe < second_ask, "{transcript}");
    env.openssl_verify("ca/ca.crt", "leaf.pem");
}
