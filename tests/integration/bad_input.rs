//! Every bad input the ceremony-core issue lists: a clear error (exit 1, no panic), a
//! message naming the problem, and nothing half-written.

use crate::harness::{Env, Holder};
use nkpki::sss::ShareFile;

fn ca_init_args<'a>(overrides: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut params: Vec<(&str, &str)> = vec![
        ("--name", "Root"),
        ("--org", "Org"),
        ("--country", "FR"),
        ("--key", "ecdsa-p256"),
        ("--validity-years", "10"),
        ("--threshold", "3"),
        ("--holders", "holders.json"),
        ("--out", "ca"),
    ];
    for (flag, value) in overrides {
        match params.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value,
            None => params.push((flag, value)),
        }
    }
    let mut args = vec!["ca-init"];
    for (f, v) in params {
        args.push(f);
        args.push(v);
    }
    args
}

#[test]
fn ca_init_parameters() {
    let env = Env::new();
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    let long = "x".repeat(256);
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec![("--name", "")], vec!["--name", "empty"]),
        (vec![("--name", &long)], vec!["--name", "256 characters"]),
        (vec![("--org", "  ")], vec!["--org", "empty"]),
        (vec![("--org", &long)], vec!["--org", "at most 64"]),
        (
            vec![("--name", &long[..65])],
            vec!["--name", "65 characters", "at most 64"],
        ),
        (
            vec![("--country", "fr")],
            vec!["--country", "two upper-case letters"],
        ),
        (vec![("--country", "FRA")], vec!["--country"]),
        (
            vec![("--key", "rsa-1024")],
            vec!["unknown key type", "rsa-1024"],
        ),
        (vec![("--key", "dsa")], vec!["unknown key type"]),
        (
            vec![("--validity-years", "0")],
            vec!["--validity-years", "1..=30"],
        ),
        (
            vec![("--validity-years", "31")],
            vec!["--validity-years", "1..=30"],
        ),
        (vec![("--threshold", "1")], vec!["--threshold", "2..=15"]),
        (vec![("--threshold", "16")], vec!["--threshold", "2..=15"]),
        (
            vec![("--threshold", "6")],
            vec!["--threshold", "more than the 5 shares"],
        ),
        (
            vec![("--holders", "missing.json")],
            vec!["cannot read holders file"],
        ),
    ];
    for (overrides, needles) in cases {
        env.nkpki(&ca_init_args(&overrides)).fails_with(&needles);
        assert!(
            !env.path("ca").exists(),
            "{overrides:?} left an output directory"
        );
    }
}

fn holders_case(
    env: &Env,
    holders: &[Holder],
    edit: impl Fn(&mut Vec<serde_json::Value>),
    needles: &[&str],
) {
    env.holders_json(holders, &[]);
    let mut list: Vec<serde_json::Value> =
        serde_json::from_slice(&env.read("holders.json")).unwrap();
    edit(&mut list);
    env.write("bad.json", serde_json::to_vec(&list).unwrap());
    env.nkpki(&ca_init_args(&[("--holders", "bad.json")]))
        .fails_with(needles);
    assert!(!env.path("ca").exists());
}

#[test]
fn ca_init_holders() {
    let env = Env::new();
    let holders = env.holders(21);
    let five = &holders[..5];
    holders_case(
        &env,
        &holders[..2],
        |_| {},
        &["2 holder(s) given", "between 3 and 20"],
    );
    holders_case(&env, &holders, |_| {}, &["21 holder(s) given"]);
    holders_case(
        &env,
        five,
        |l| l[1]["nitrokey_id"] = "NK1".into(),
        &["holders[1].nitrokey_id", "NK followed by three digits"],
    );
    holders_case(
        &env,
        five,
        |l| l[2]["nitrokey_id"] = "XX003".into(),
        &["holders[2].nitrokey_id"],
    );
    holders_case(
        &env,
        five,
        |l| l[3]["nitrokey_id"] = "NK001".into(),
        &["NK001 appears twice"],
    );
    holders_case(
        &env,
        five,
        |l| l[0]["holder_email"] = "not-an-address".into(),
        &["holders[0].holder_email", "not an e-mail"],
    );
    holders_case(
        &env,
        five,
        |l| l[0]["holder_email"] = "a b@example.org".into(),
        &["holder_email"],
    );
    holders_case(
        &env,
        five,
        |l| l[4]["age_recipient"] = "age1notarecipient".into(),
        &["holders[4].age_recipient", "not an age X25519 recipient"],
    );
    holders_case(
        &env,
        five,
        |l| l[0]["surprise"] = 1.into(),
        &["unknown field", "surprise"],
    );
    holders_case(
        &env,
        five,
        |l| l[1]["holder_name"] = "".into(),
        &["holders[1].holder_name", "empty"],
    );
    env.write("bad.json", b"{not json");
    env.nkpki(&ca_init_args(&[("--holders", "bad.json")]))
        .fails_with(&["not valid JSON"]);
}

#[test]
fn ca_init_never_overwrites_a_ceremony() {
    let env = Env::new();
    env.ceremony("ecdsa-p256", 3, 2);
    let manifest = env.read("ca/manifest.json");
    let share = env.read("ca/shares/NK001.age");
    env.nkpki(&ca_init_args(&[("--threshold", "2")]))
        .fails_with(&["already exists", "hint:", "new --out"]);
    assert_eq!(env.read("ca/manifest.json"), manifest);
    assert_eq!(env.read("ca/shares/NK001.age"), share);
}

fn split_three_of_five(env: &Env, dir: &str) {
    env.write("secret", b"the secret");
    env.nkpki(&[
        "split", "-t", "3", "-n", "5", "--in", "secret", "--out", dir,
    ])
    .ok();
}

#[test]
fn combine_bad_shares() {
    let env = Env::new();
    split_three_of_five(&env, "a");
    split_three_of_five(&env, "b");
    env.nkpki(&["combine", "a/share-1", "a/share-2"])
        .fails_with(&["2 share(s) given", "needs 3"]);
    env.nkpki(&["combine", "a/share-1", "a/share-2", "a/share-2"])
        .fails_with(&["a/share-2", "same share (2)"]);
    env.nkpki(&["combine", "a/share-1", "a/share-2", "b/share-3"])
        .fails_with(&["b/share-3", "another secret"]);

    // one altered byte in the share value: the share is named
    let mut file: serde_json::Value = serde_json::from_slice(&env.read("a/share-4")).unwrap();
    let value = file["share"]["value"].as_str().unwrap().to_owned();
    let flipped = if value.starts_with('0') { "1" } else { "0" };
    file["share"]["value"] = format!("{flipped}{}", &value[1..]).into();
    env.write("a/bad-4", serde_json::to_vec(&file).unwrap());
    env.nkpki(&["combine", "a/share-1", "a/bad-4", "a/share-2"])
        .fails_with(&[
            "a/bad-4",
            "share 4",
            "does not match the published commitments",
        ]);

    // one altered byte in the public set it carries: named as corrupt
    let mut file: serde_json::Value = serde_json::from_slice(&env.read("a/share-5")).unwrap();
    let c = file["set"]["commitments"][1].as_str().unwrap().to_owned();
    file["set"]["commitments"][1] =
        format!("{}{}", &c[..10], if &c[10..11] == "a" { "b" } else { "a" })
            .to_owned()
            .into();
    let c2 = file["set"]["commitments"][1].as_str().unwrap().to_owned() + &c[11..];
    file["set"]["commitments"][1] = c2.into();
    env.write("a/bad-5", serde_json::to_vec(&file).unwrap());
    env.nkpki(&["combine", "a/share-1", "a/share-2", "a/bad-5"])
        .fails_with(&["a/bad-5", "corrupt"]);

    // truncated and non-share files
    let whole = env.read("a/share-3");
    env.write("a/trunc-3", &whole[..whole.len() / 2]);
    env.nkpki(&["combine", "a/share-1", "a/share-2", "a/trunc-3"])
        .fails_with(&["a/trunc-3", "not an nkpki share file"]);
    env.write("a/photo.jpg", [0xff, 0xd8, 0xff, 0xe0, 0, 0x10]);
    env.nkpki(&["combine", "a/share-1", "a/share-2", "a/photo.jpg"])
        .fails_with(&["a/photo.jpg", "not an nkpki share file"]);
    env.nkpki(&["combine", "a/share-1", "a/share-2", "a/missing"])
        .fails_with(&["cannot read share file", "a/missing"]);

    // a combined secret is never written over an existing file
    env.write("out.bin", b"keep me");
    env.nkpki(&[
        "combine",
        "a/share-1",
        "a/share-2",
        "a/share-3",
        "--out",
        "out.bin",
    ])
    .fails_with(&["out.bin"]);
    assert_eq!(env.read("out.bin"), b"keep me");
    let ok: ShareFile = serde_json::from_slice(&env.read("a/share-1")).unwrap();
    assert_eq!(ok.share.index, 1);
}

#[test]
fn sign_bad_shares_and_manifests() {
    let env = Env::new();
    let h = env.ceremony("ecdsa-p256", 5, 3);
    let other = Env::new();
    let oh = other.ceremony("ecdsa-p256", 5, 3);
    let csr = env.csr(
        "s",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=s.example.org",
        &["subjectAltName=DNS:s.example.org"],
    );

    env.sign(&[&h[0], &h[1]], &csr, "server", "30", "x.crt")
        .fails_with(&["2 valid share(s) given", "needs 3"]);
    env.sign(&[&h[0], &h[1], &h[1]], &csr, "server", "30", "x.crt")
        .fails_with(&["NK002.age", "same share (2)"]);

    // a share of another CA
    std::fs::copy(other.path("ca/shares/NK003.age"), env.path("foreign.age")).unwrap();
    let id = |h: &Holder| h.key_file.to_string_lossy().into_owned();
    let base = [
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--days",
        "30",
        "--out",
        "x.crt",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: Vec<String>| env.nkpki(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(with(&[
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "foreign.age",
        "--identity",
        &id(&h[0]),
        "--identity",
        &id(&h[1]),
        "--identity",
        &id(&oh[2]),
    ]))
    .fails_with(&["foreign.age", "another share set"]);

    // the wrong identity
    run(with(&[
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "ca/shares/NK003.age",
        "--identity",
        &id(&h[0]),
        "--identity",
        &id(&h[1]),
    ]))
    .fails_with(&["NK003.age", "none of the given identities"]);

    // one altered byte in the sealed file
    let mut sealed = env.read("ca/shares/NK003.age");
    let mid = sealed.len() / 2;
    sealed[mid] = if sealed[mid] == b'A' { b'B' } else { b'A' };
    env.write("altered.age", &sealed);
    run(with(&[
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "altered.age",
        "--identity",
        &id(&h[0]),
        "--identity",
        &id(&h[1]),
        "--identity",
        &id(&h[2]),
    ]))
    .fails_with(&["altered.age"]);

    // a holder who alters the share inside and re-seals it with the age CLI is named
    let plain = env
        .tool("age", &["-d", "-i", &id(&h[2]), "ca/shares/NK003.age"])
        .ok()
        .output
        .stdout
        .clone();
    let mut share: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let v = share["value"].as_str().unwrap().to_owned();
    share["value"] = format!("{}{}", &v[..63], if v.ends_with('0') { "1" } else { "0" }).into();
    env.write("forged.json", serde_json::to_vec(&share).unwrap());
    env.tool(
        "age",
        &[
            "-e",
            "-a",
            "-r",
            &h[2].recipient,
            "-o",
            "forged.age",
            "forged.json",
        ],
    )
    .ok();
    run(with(&[
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "forged.age",
        "--identity",
        &id(&h[0]),
        "--identity",
        &id(&h[1]),
        "--identity",
        &id(&h[2]),
    ]))
    .fails_with(&[
        "forged.age",
        "share 3",
        "does not match the published commitments",
    ]);

    // truncated and non-share files
    let whole = env.read("ca/shares/NK003.age");
    env.write("trunc.age", &whole[..whole.len() / 2]);
    run(with(&[
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "trunc.age",
        "--identity",
        &id(&h[0]),
        "--identity",
        &id(&h[1]),
        "--identity",
        &id(&h[2]),
    ]))
    .fails_with(&["trunc.age", "cannot open"]);
    env.tool(
        "age",
        &[
            "-e",
            "-a",
            "-r",
            &h[2].recipient,
            "-o",
            "notshare.age",
            "ca/ca.crt",
        ],
    )
    .ok();
    run(with(&[
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--share",
        "notshare.age",
        "--identity",
        &id(&h[0]),
        "--identity",
        &id(&h[1]),
        "--identity",
        &id(&h[2]),
    ]))
    .fails_with(&["notshare.age", "not an nkpki share"]);

    // a manifest edited after the ceremony
    let text = String::from_utf8(env.read("ca/manifest.json")).unwrap();
    let edited = text.replacen("\"threshold\": 3", "\"threshold\": 2", 1);
    assert_ne!(edited, text);
    env.write("edited.json", &edited);
    let edited_name = text.replacen("Holder NK002", "Mallory", 1);
    env.write("edited2.json", &edited_name);
    for m in ["edited.json", "edited2.json"] {
        let mut args = with(&[
            "--share",
            "ca/shares/NK001.age",
            "--share",
            "ca/shares/NK002.age",
            "--identity",
            &id(&h[0]),
            "--identity",
            &id(&h[1]),
        ]);
        args[3] = m.to_owned();
        run(args).fails_with(&[m, "changed after the ceremony"]);
    }
    assert!(!env.path("x.crt").exists());
}

#[test]
fn sign_wrong_passphrase() {
    let env = Env::new();
    let holders = env.holders(3);
    env.holders_json(&holders, &["NK001"]);
    env.ca_init("ecdsa-p256", 2, &["--passphrases-to", "pass.txt"])
        .ok();
    env.write("wrong.txt", "NK001: not-the-passphrase\n");
    let csr = env.csr("c", &["-newkey", "ed25519"], "/CN=c", &[]);
    let args = [
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--profile",
        "client",
        "--share",
        "ca/shares/NK001.age",
        "--share",
        "ca/shares/NK002.age",
        "--identity",
        holders[1].key_file.to_str().unwrap(),
        "--out",
        "c.crt",
    ];
    let mut wrong = args.to_vec();
    wrong.extend(["--passphrases-from", "wrong.txt"]);
    env.nkpki(&wrong)
        .fails_with(&["NK001.age", "wrong passphrase"]);
    // no passphrase and no terminal to ask on
    env.nkpki(&args).fails_with(&["NK001.age", "no passphrase"]);
}

#[test]
fn sign_refuses_bad_csrs() {
    let env = Env::new();
    let h = env.ceremony("ecdsa-p256", 3, 2);
    let two = [&h[0], &h[1]];
    // bad signature: flip a byte of the signature in the DER
    let good = env.csr(
        "g",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=g.example.org",
        &["subjectAltName=DNS:g.example.org"],
    );
    env.openssl(&["req", "-in", &good, "-outform", "DER", "-out", "g.der"])
        .ok();
    env.sign(&two, "g.der", "server", "30", "ok-der.crt").ok();
    let mut der = env.read("g.der");
    let n = der.len();
    der[n - 5] ^= 0x01;
    env.write("badsig.der", &der);
    env.sign(&two, "badsig.der", "server", "30", "x.crt")
        .fails_with(&["signature does not verify"]);

    let weak = env.csr(
        "w",
        &["-newkey", "rsa:1024"],
        "/CN=w.example.org",
        &["subjectAltName=DNS:w.example.org"],
    );
    env.sign(&two, &weak, "server", "30", "x.crt")
        .fails_with(&["1024 bits", "at least 2048"]);

    env.write("garbage.pem", "-----BEGIN CERTIFICATE REQUEST-----\nnot base64 at all!\n-----END CERTIFICATE REQUEST-----\n");
    env.sign(&two, "garbage.pem", "server", "30", "x.crt")
        .fails_with(&["malformed certificate signing request"]);
    env.write("garbage.der", [0x30, 0x82, 0x01]);
    env.sign(&two, "garbage.der", "server", "30", "x.crt")
        .fails_with(&["malformed certificate signing request"]);
    env.sign(&two, "ca/ca.crt", "server", "30", "x.crt")
        .fails_with(&["not a CERTIFICATE REQUEST"]);

    let pss = env.csr(
        "pss",
        &["-newkey", "rsa:2048", "-sigopt", "rsa_padding_mode:pss"],
        "/CN=p.example.org",
        &["subjectAltName=DNS:p.example.org"],
    );
    env.sign(&two, &pss, "server", "30", "x.crt")
        .fails_with(&["RSA-PSS"]);

    let nosan = env.csr(
        "n",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=n.example.org",
        &[],
    );
    env.sign(&two, &nosan, "server", "30", "x.crt")
        .fails_with(&["server profile needs", "subjectAltName"]);

    // the CA is valid five years: ten years is refused, with the maximum in the message
    env.sign(&two, &good, "server", "3650", "x.crt")
        .fails_with(&["ends after the CA certificate", "at most"]);
    env.sign(&two, &good, "server", "0", "x.crt")
        .fails_with(&["at least one day"]);
    let usage = env.sign(&two, &good, "webmail", "30", "x.crt");
    assert_eq!(usage.output.status.code(), Some(2));
    assert!(
        usage.stderr().contains("unknown profile"),
        "{}",
        usage.stderr()
    );
    assert!(!env.path("x.crt").exists());
}
