//! `nkpki reshare` on the ceremony laptop: M current shares (SoftHSM tokens or share
//! files) give a new holder set and threshold under the same CA key and certificate
//! (OpenSSL verifies a certificate signed afterwards against the old CA certificate);
//! newer packages replace the old share on the token, old shares are named as such; and
//! the bad inputs, each refused with nothing written.

use crate::harness::{Env, Holder};

const SERVER: &str = "https://pki.example.org:8443";

fn manifest(env: &Env, path: &str) -> serde_json::Value {
    serde_json::from_slice(&env.read(path)).unwrap()
}

fn leaf_csr(env: &Env) -> String {
    env.csr(
        "leaf",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    )
}

/// `nkpki reshare` of `ca/manifest.json` with the holders.json already written.
fn reshare(env: &Env, threshold: &str, out: &str, extra: &[&str]) -> crate::harness::Run {
    let mut args = vec![
        "reshare",
        "--manifest",
        "ca/manifest.json",
        "--holders",
        "holders.json",
        "--threshold",
        threshold,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    env.nkpki(&args)
}

/// `--share ca/shares/ID.age --identity KEY` for each holder.
fn share_args(holders: &[&Holder]) -> Vec<String> {
    holders
        .iter()
        .flat_map(|h| {
            [
                "--share".to_owned(),
                format!("ca/shares/{}.age", h.id),
                "--identity".to_owned(),
                h.key_file.display().to_string(),
            ]
        })
        .collect()
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn sign_from_tokens(env: &Env, manifest: &str, tokens: &[&str], out: &str) -> crate::harness::Run {
    let mut args = vec![
        "sign",
        "--offline",
        "--manifest",
        manifest,
        "--csr",
        "leaf.csr",
        "--out",
        out,
        "--pin-file",
        "pin.txt",
    ];
    for t in tokens {
        args.extend(["--token", t]);
    }
    env.nkpki(&args)
}

#[test]
fn a_reshare_from_tokens_keeps_the_ca_and_newer_packages_replace_the_old_shares() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004"]);
    let holders = env.holders(4);
    env.holders_json(&holders[..3], &[]);
    env.ca_init("ecdsa-p256", 2, &["--package", "--server-url", SERVER])
        .ok();
    for h in &holders[..3] {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let old = manifest(&env, "ca/manifest.json");

    // NK001 leaves, NK004 joins, the threshold goes from 2 to 3
    env.holders_json(&holders[1..], &[]);
    let run = reshare(
        &env,
        "3",
        "ca2",
        &[
            "--token",
            "NK001",
            "--token",
            "NK002",
            "--pin-file",
            "pin.txt",
            "--package",
            "--server-url",
            SERVER,
        ],
    );
    run.ok();
    assert!(
        run.stdout().contains("Removed:      NK001"),
        "{}",
        run.stdout()
    );
    let new = manifest(&env, "ca2/manifest.json");
    assert_eq!(new["signed"]["ca_id"], old["signed"]["ca_id"]);
    assert_eq!(
        new["signed"]["certificate_sha256"],
        old["signed"]["certificate_sha256"]
    );
    assert_eq!(new["signed"]["set_version"], 2);
    assert_eq!(new["signed"]["share_set"]["threshold"], 3);
    assert_ne!(new["signed"]["share_set"], old["signed"]["share_set"]);
    assert_eq!(env.read("ca2/ca.crt"), env.read("ca/ca.crt"));
    // the old manifest has no new field: it still reads and verifies as before
    assert!(old["signed"].get("set_version").is_none());
    // supersedes: SHA-256 of the old manifest.json as the ceremony wrote it
    let digest = env
        .openssl(&["dgst", "-sha256", "-r", "ca/manifest.json"])
        .ok()
        .stdout();
    assert_eq!(
        new["signed"]["supersedes"].as_str().unwrap(),
        digest.split_whitespace().next().unwrap()
    );
    let log: serde_json::Value = serde_json::from_slice(&env.read("ca2/reshare.json")).unwrap();
    assert_eq!(log["old"]["threshold"], 2);
    assert_eq!(log["new"]["threshold"], 3);
    assert_eq!(log["removed_holders"], serde_json::json!(["NK001"]));
    assert_eq!(log["added_holders"], serde_json::json!(["NK004"]));
    assert_eq!(log["new"]["fingerprints"].as_array().unwrap().len(), 3);
    assert!(env.path("ca2/reshare.log").exists());
    assert!(env.path("ca2/packages/NK004.nkpkg").exists());
    assert!(!env.path("ca2/packages/NK001.nkpkg").exists());

    // NK002 confirms with --yes, NK003 answers the prompt, NK004 is a fresh token
    let run = env.deploy(&holders[1], "ca2/packages/NK002.nkpkg", "NK002", &["--yes"]);
    run.ok();
    assert!(run.stdout().contains("set version 2"), "{}", run.stdout());
    let key3 = holders[2].key_file.display().to_string();
    let deploy3 = [
        "deploy",
        "ca2/packages/NK003.nkpkg",
        "--token",
        "NK003",
        "--identity",
        &key3,
        "--pin-file",
        "pin.txt",
        "--config-dir",
        "cfg-NK003",
    ];
    env.nkpki_stdin(&deploy3, b"n\n")
        .fails_with(&["not confirmed", "nothing was written"]);
    env.nkpki_stdin(&deploy3, b"y\n").ok();
    env.deploy(&holders[3], "ca2/packages/NK004.nkpkg", "NK004", &[])
        .ok();

    // an old package never replaces a newer share
    env.deploy(
        &holders[1],
        "ca/packages/NK002.nkpkg",
        "NK002",
        &["--force"],
    )
    .fails_with(&["older than the version 2", "nothing was written"]);

    // the drill names the token that still holds an old share
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK001",
        "--pin-file",
        "pin.txt",
        "--manifest",
        "ca2/manifest.json",
    ])
    .fails_with(&["old share set (version 1, current is 2)"]);
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK002",
        "--pin-file",
        "pin.txt",
        "--manifest",
        "ca2/manifest.json",
    ])
    .ok();

    // the new set signs; OpenSSL verifies it against the unchanged CA certificate
    leaf_csr(&env);
    sign_from_tokens(
        &env,
        "ca2/manifest.json",
        &["NK002", "NK003", "NK004"],
        "leaf.pem",
    )
    .ok();
    env.openssl_verify("ca/ca.crt", "leaf.pem");
    // an old share does not count in the new set
    sign_from_tokens(
        &env,
        "ca2/manifest.json",
        &["NK001", "NK002", "NK003"],
        "leaf2.pem",
    )
    .fails_with(&["old share set (version 1, current is 2)"]);
    assert!(!env.path("leaf2.pem").exists());
}

#[test]
fn a_reshare_from_share_files_signs_with_the_new_files_and_chains_twice() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    let all: Vec<&Holder> = holders.iter().collect();
    env.holders_json(&holders, &[]);
    let mut args = share_args(&all[..2]);
    args.extend(["--threshold".into(), "3".into()]);
    let run = env.nkpki(
        &[
            &[
                "reshare",
                "--manifest",
                "ca/manifest.json",
                "--holders",
                "holders.json",
                "--out",
                "ca2",
            ][..],
            &refs(&args)[..],
        ]
        .concat(),
    );
    run.ok();
    assert!(env.path("ca2/shares/NK003.age").exists());
    leaf_csr(&env);
    let mut sign = vec![
        "sign".to_owned(),
        "--offline".into(),
        "--manifest".into(),
        "ca2/manifest.json".into(),
        "--csr".into(),
        "leaf.csr".into(),
        "--out".into(),
        "leaf.pem".into(),
    ];
    for h in &holders {
        sign.extend([
            "--share".into(),
            format!("ca2/shares/{}.age", h.id),
            "--identity".into(),
            h.key_file.display().to_string(),
        ]);
    }
    env.nkpki(&refs(&sign)).ok();
    env.openssl_verify("ca/ca.crt", "leaf.pem");

    // a second reshare (back to 2 of 3) chains on: version 3, two earlier sets
    let mut again = vec![
        "reshare".to_owned(),
        "--manifest".into(),
        "ca2/manifest.json".into(),
        "--holders".into(),
        "holders.json".into(),
        "--threshold".into(),
        "2".into(),
        "--out".into(),
        "ca3".into(),
    ];
    for h in &holders {
        again.extend([
            "--share".into(),
            format!("ca2/shares/{}.age", h.id),
            "--identity".into(),
            h.key_file.display().to_string(),
        ]);
    }
    env.nkpki(&refs(&again)).ok();
    let third = manifest(&env, "ca3/manifest.json");
    assert_eq!(third["signed"]["set_version"], 3);
    assert_eq!(third["signed"]["earlier_sets"].as_array().unwrap().len(), 2);
    assert_eq!(
        third["signed"]["ca_id"],
        manifest(&env, "ca/manifest.json")["signed"]["ca_id"]
    );

    // a server takes the versions in turn: version 3 does not supersede the registered 1
    let fingerprint = env.ca_fingerprint("ca");
    let add = |dir: &str| {
        env.nkpki(&[
            "serve",
            "ca",
            "add",
            "--data-dir",
            "data",
            "--manifest",
            &format!("{dir}/manifest.json"),
            "--expect-fingerprint",
            &fingerprint,
        ])
    };
    add("ca").ok();
    add("ca3").fails_with(&["supersedes another manifest than the registered one"]);
    add("ca2").ok();
    add("ca3").ok();
}

#[test]
fn reshare_bad_inputs_are_refused_and_nothing_is_written() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    let all: Vec<&Holder> = holders.iter().collect();
    env.holders_json(&holders, &[]);
    let two = share_args(&all[..2]);
    let with = |threshold: &str, extra: &[String]| reshare(&env, threshold, "ca2", &refs(extra));

    // fewer than M valid shares
    with("2", &share_args(&all[..1])).fails_with(&[
        "1 valid share(s) of the current set given; resharing this CA needs 2",
        "nothing was changed",
    ]);
    // the same share twice
    let mut twice = share_args(&all[..1]);
    twice.extend(share_args(&all[..1]));
    with("2", &twice).fails_with(&["are the same share (1)"]);

    // a forged share: one digit of the value changed, sealed again to its holder
    let h = &holders[0];
    let plain = env
        .tool(
            "age",
            &[
                "-d",
                "-i",
                h.key_file.to_str().unwrap(),
                "ca/shares/NK001.age",
            ],
        )
        .ok()
        .stdout();
    let mut share: serde_json::Value = serde_json::from_str(&plain).unwrap();
    let value = share["value"].as_str().unwrap().to_owned();
    let last = if value.ends_with('0') { "1" } else { "0" };
    share["value"] = format!("{}{last}", &value[..value.len() - 1]).into();
    env.write("forged.json", serde_json::to_vec(&share).unwrap());
    env.tool(
        "age",
        &["-a", "-r", &h.recipient, "-o", "forged.age", "forged.json"],
    )
    .ok();
    let mut forged = vec![
        "--share".to_owned(),
        "forged.age".into(),
        "--identity".into(),
        h.key_file.display().to_string(),
    ];
    forged.extend(share_args(&all[1..2]));
    with("2", &forged).fails_with(&["does not match the published commitments"]);

    // a share of another CA
    let other = [
        "ca-init",
        "--name",
        "Other CA",
        "--org",
        "nkpki tests",
        "--country",
        "FR",
        "--key",
        "ecdsa-p256",
        "--validity-years",
        "5",
        "--threshold",
        "2",
        "--holders",
        "holders.json",
        "--out",
        "other",
    ];
    env.nkpki(&other).ok();
    let mut foreign = share_args(&all[..1]);
    foreign.extend([
        "--share".into(),
        "other/shares/NK002.age".into(),
        "--identity".into(),
        holders[1].key_file.display().to_string(),
    ]);
    with("2", &foreign).fails_with(&["belongs to another share set"]);

    // a new threshold out of limits
    with("1", &two).fails_with(&["--threshold", "outside 2..=15"]);
    with("16", &two).fails_with(&["--threshold", "outside 2..=15"]);
    with("4", &two).fails_with(&["more than the 3 shares"]);
    // too few holders, duplicate and malformed ids
    env.holders_json(&holders[..2], &[]);
    with("2", &two).fails_with(&["2 holder(s) given; between 3 and 20 are required"]);
    let entry = |id: &str| {
        serde_json::json!({"nitrokey_id": id, "holder_name": "H", "holder_email": "h@example.org",
                           "location": "Paris", "age_recipient": holders[0].recipient})
    };
    env.write(
        "holders.json",
        serde_json::to_vec(&[entry("NK001"), entry("NK002"), entry("NK002")]).unwrap(),
    );
    with("2", &two).fails_with(&["NK002 appears twice"]);
    env.write(
        "holders.json",
        serde_json::to_vec(&[entry("NK001"), entry("NK02"), entry("NK003")]).unwrap(),
    );
    with("2", &two).fails_with(&["\"NK02\" is not NK followed by three digits"]);
    assert!(!env.path("ca2").exists());

    // an output directory that exists
    env.holders_json(&holders, &[]);
    std::fs::create_dir(env.path("ca2")).unwrap();
    env.write("ca2/keep.txt", b"earlier work");
    with("2", &two).fails_with(&["ca2 already exists and is not empty"]);
    assert_eq!(env.read("ca2/keep.txt"), b"earlier work");
    assert_eq!(std::fs::read_dir(env.path("ca2")).unwrap().count(), 1);
    // the current CA is untouched by any of it
    assert_eq!(
        manifest(&env, "ca/manifest.json")["signed"].get("set_version"),
        None
    );
}

#[test]
fn a_threshold_mode_ca_is_re_dealt_from_m_key_shares_and_the_new_shares_sign() {
    let primes = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/threshold/rsa-2048.primes"
    );
    let env = Env::new().with_env("NKPKI_TEST_SAFE_PRIMES", primes);
    let holders = env.holders(4);
    env.holders_json(&holders[..3], &[]);
    env.ca_init("rsa-2048", 2, &["--mode", "threshold"]).ok();
    let all: Vec<&Holder> = holders.iter().collect();
    env.holders_json(&holders, &[]);
    // one share is not enough, and nothing is written
    reshare(&env, "3", "ca2", &refs(&share_args(&all[..1])))
        .fails_with(&["1 valid share(s) of the current set given"]);
    assert!(!env.path("ca2").exists());
    reshare(&env, "3", "ca2", &refs(&share_args(&all[1..3]))).ok();
    let old = manifest(&env, "ca/manifest.json");
    let new = manifest(&env, "ca2/manifest.json");
    assert_eq!(new["signed"]["ca_id"], old["signed"]["ca_id"]);
    assert_eq!(new["signed"]["set_version"], 2);
    let (old_key, new_key) = (
        &old["signed"]["share_set"]["threshold_key"],
        &new["signed"]["share_set"]["threshold_key"],
    );
    assert_eq!(new_key["n"], old_key["n"]);
    assert_ne!(new_key["verification_keys"], old_key["verification_keys"]);
    assert_eq!(new_key["total"], 4);
    assert_eq!(env.read("ca2/ca.crt"), env.read("ca/ca.crt"));

    // three of the four new shares sign; OpenSSL verifies against the old CA certificate
    leaf_csr(&env);
    let mut sign = vec![
        "sign".to_owned(),
        "--offline".into(),
        "--manifest".into(),
        "ca2/manifest.json".into(),
        "--csr".into(),
        "leaf.csr".into(),
        "--out".into(),
        "leaf.pem".into(),
    ];
    for h in [&holders[0], &holders[2], &holders[3]] {
        sign.extend([
            "--share".into(),
            format!("ca2/shares/{}.age", h.id),
            "--identity".into(),
            h.key_file.display().to_string(),
        ]);
    }
    env.nkpki(&refs(&sign)).ok();
    env.openssl_verify("ca/ca.crt", "leaf.pem");
    // an old share is named as such
    let mut old_share = sign.clone();
    old_share[7] = "leaf2.pem".into();
    old_share[9] = "ca/shares/NK001.age".into();
    env.nkpki(&refs(&old_share))
        .fails_with(&["old share set (version 1, current is 2)"]);
}

/// POSTs `dir`'s manifest and enrollment to the server's `/cas` as a ca-admin; returns
/// the HTTP status and the answer.
fn post_ca(env: &Env, url: &str, dir: &str) -> (String, String) {
    let body = serde_json::json!({
        "manifest": String::from_utf8(env.read(&format!("{dir}/manifest.json"))).unwrap(),
        "enrollment": String::from_utf8(env.read(&format!("{dir}/enrollment.json"))).unwrap(),
        "expected_fingerprint": env.ca_fingerprint(dir),
    });
    env.write("register.json", serde_json::to_vec(&body).unwrap());
    let token = String::from_utf8(env.read("admin.token")).unwrap();
    let auth = format!("Authorization: Bearer {}", token.trim());
    let run = env
        .tool(
            "curl",
            &[
                "-sS",
                "-o",
                "answer.json",
                "-w",
                "%{http_code}",
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                "@register.json",
                &format!("{url}/api/v1/cas"),
            ],
        )
        .ok()
        .stdout();
    (
        run,
        String::from_utf8(env.read("answer.json")).unwrap_or_default(),
    )
}

#[test]
fn the_server_switches_to_a_reshared_set_and_refuses_old_shares_with_a_clear_code() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004"]);
    server_switch(&env, "ecdsa-p256", &[]);
}

#[test]
fn a_threshold_mode_server_refuses_signature_shares_of_the_superseded_set() {
    let primes = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/threshold/rsa-2048.primes"
    );
    let env = Env::new()
        .with_softhsm(&["NK001", "NK002", "NK003", "NK004"])
        .with_env("NKPKI_TEST_SAFE_PRIMES", primes);
    server_switch(&env, "rsa-2048", &["--mode", "threshold"]);
}

/// A 2-of-3 packaged CA (`key`, ca-init `mode`) deployed and registered, reshared to
/// NK002–NK004 from tokens; agents with old shares are refused once the server has the new
/// manifest, and the new set signs online.
fn server_switch(env: &Env, key: &str, mode: &[&str]) {
    let holders = env.holders(4);
    env.holders_json(&holders[..3], &[]);
    env.ca_init(
        key,
        2,
        &[mode, &["--package", "--server-url", SERVER][..]].concat(),
    )
    .ok();
    for h in &holders[..3] {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    env.admin_token();
    env.holders_json(&holders[1..], &[]);
    reshare(
        env,
        "2",
        "ca2",
        &[
            "--token",
            "NK001",
            "--token",
            "NK002",
            "--pin-file",
            "pin.txt",
            "--package",
            "--server-url",
            SERVER,
        ],
    )
    .ok();

    // two holders' machines still hold the old shares
    let server = env.serve(&[]);
    let rule = ["--approve-profile", "server"];
    let old_agents: Vec<_> = ["NK002", "NK003"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &rule))
        .collect();
    for id in ["NK002", "NK003"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("enrolled token key")
        });
        assert!(log.contains("enrolled token key"), "{log}");
    }
    // the reshared manifest replaces the registered one; the older one never does
    let (status, answer) = post_ca(env, &server.url, "ca2");
    assert_eq!(status, "201", "{answer}");
    assert!(answer.contains("\"set_version\":2"), "{answer}");
    let (status, answer) = post_ca(env, &server.url, "ca");
    assert_eq!(status, "409", "{answer}");
    assert!(answer.contains("share set version 2"), "{answer}");

    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let sign = |out: &str| {
        env.nkpki(&[
            "sign",
            "--server",
            &server.url,
            "--ca",
            &ca_id,
            "--csr",
            &csr,
            "--days",
            "30",
            "--api-token-file",
            "op.token",
            "--out",
            out,
        ])
    };
    let refused = sign("old.crt");
    assert!(!refused.output.status.success(), "{}", refused.stderr());
    assert!(!env.path("old.crt").exists());
    let log = env.wait_for("agent-NK002.log", 20, |t| {
        t.contains("superseded-share-set")
    });
    assert!(log.contains("superseded-share-set"), "{log}");
    assert!(
        log.contains("old share set (version 1, current is 2)"),
        "{log}"
    );
    drop(old_agents);

    // the holders deploy the new packages; the new set signs online
    for h in &holders[1..] {
        env.deploy(
            h,
            &format!("ca2/packages/{}.nkpkg", h.id),
            &h.id,
            &["--yes"],
        )
        .ok();
        let _ = std::fs::remove_dir_all(env.path(&format!("machine-{}", h.id)));
    }
    let _new_agents: Vec<_> = ["NK002", "NK004"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &rule))
        .collect();
    env.wait_for("agent-NK004.log", 20, |t| t.contains("enrolled token key"));
    sign("new.crt").ok();
    env.openssl_verify("ca/ca.crt", "new.crt");
}

#[test]
fn a_reshare_with_tokens_inserted_one_after_another() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003"]);
    let holders = env.packaged_and_deployed(3, 2);
    env.holders_json(&holders, &[]);
    let (inserted, transcript) = env.run_inserting_tokens(&[
        "reshare",
        "--manifest",
        "ca/manifest.json",
        "--holders",
        "holders.json",
        "--threshold",
        "3",
        "--insert-tokens",
        "--pin-file",
        "pin.txt",
        "--out",
        "ca2",
    ]);
    assert_eq!(inserted, 2, "{transcript}");
    assert!(
        transcript.contains("New:       set version 2, 3 of 3"),
        "{transcript}"
    );
    let new = manifest(&env, "ca2/manifest.json");
    assert_eq!(new["signed"]["share_set"]["threshold"], 3);
    assert!(env.path("ca2/shares/NK003.age").exists());
}
