//! A CA cannot be substituted under its own id: a manifest whose certificate was swapped
//! for an attacker's (same share set, re-signed with the attacker's key) is refused by every
//! command that reads it, registration needs the expected fingerprint and an administrator,
//! and `enrollment.json` cannot be edited on its way to the server.

use crate::harness::Env;
use nkpki::client::{Client, ClientError, Trust};
use nkpki::manifest::Manifest;
use nkpki::pki::{self, CaKey, CaSubject};
use nkpki::proto::RegisterCa;
use std::time::Duration;

/// The attacker's copy of `dir/manifest.json`: same share set and CA id, a certificate of
/// the attacker's key with the same subject, re-signed with that key. With `rebind`, the
/// attacker also re-binds the share set to the new key and takes the id that goes with it.
fn forge(env: &Env, dir: &str, rebind: bool) -> String {
    let genuine =
        Manifest::from_json(&String::from_utf8(env.read(&format!("{dir}/manifest.json"))).unwrap())
            .unwrap();
    let mut body = genuine.signed.clone();
    let key = CaKey::generate(body.ca.key.parse().unwrap()).unwrap();
    let subject = CaSubject {
        name: body.ca.name.clone(),
        org: body.ca.org.clone(),
        country: body.ca.country.clone(),
    };
    let der = pki::self_signed(&key, &subject, 5, None, time::OffsetDateTime::now_utc()).unwrap();
    body.certificate = pki::pem_encode("CERTIFICATE", &der);
    body.certificate_sha256 = pki::fingerprint(&der);
    if rebind {
        let spki = pki::CaCertificate::from_der(&der).unwrap().spki_der;
        body.share_set.binding = Some(nkpki::sss::binding_of(&spki));
        body.ca_id = body.share_set.id();
    }
    let forged = Manifest::sign(body, &key).unwrap().to_json();
    env.write(&format!("{dir}/forged.json"), &forged);
    forged
}

fn sign_offline(
    env: &Env,
    manifest: &str,
    holders: &[&crate::harness::Holder],
) -> crate::harness::Run {
    let mut args: Vec<String> = vec![
        "sign".into(),
        "--offline".into(),
        "--manifest".into(),
        manifest.into(),
        "--csr".into(),
        "req.csr".into(),
        "--days".into(),
        "30".into(),
        "--out".into(),
        "out.crt".into(),
    ];
    for h in holders {
        args.push("--share".into());
        args.push(format!("ca/shares/{}.age", h.id));
        args.push("--identity".into());
        args.push(h.key_file.to_string_lossy().into_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.nkpki(&args)
}

#[test]
fn a_substituted_certificate_is_refused_offline() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    env.csr(
        "req",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let genuine: serde_json::Value = serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    assert_eq!(genuine["signed"]["version"], 2);
    // the binding is the SHA-256 of the certificate's SubjectPublicKeyInfo, as OpenSSL sees it
    env.openssl(&[
        "x509",
        "-in",
        "ca/ca.crt",
        "-noout",
        "-pubkey",
        "-out",
        "ca.pub",
    ])
    .ok();
    env.openssl(&[
        "pkey", "-pubin", "-in", "ca.pub", "-outform", "DER", "-out", "spki.der",
    ])
    .ok();
    let spki_sha256 = env
        .openssl(&["dgst", "-sha256", "-r", "spki.der"])
        .ok()
        .stdout();
    assert_eq!(
        genuine["signed"]["share_set"]["binding"].as_str().unwrap(),
        spki_sha256.split_whitespace().next().unwrap()
    );

    // same id, swapped certificate: the manifest itself is refused
    forge(&env, "ca", false);
    sign_offline(&env, "ca/forged.json", &[&holders[0], &holders[1]])
        .fails_with(&["certificate was substituted"]);
    // `nkpki package` signs each enrollment entry with the share it packages, run after run
    let package = |ceremony: &str, h: &crate::harness::Holder, out: &str| {
        env.nkpki(&[
            "package",
            "--ceremony",
            ceremony,
            "--share",
            &format!("ca/shares/{}.age", h.id),
            "--identity",
            h.key_file.to_str().unwrap(),
            "--out",
            out,
        ])
    };
    package("ca", &holders[0], "pkgs").ok();
    package("ca", &holders[1], "pkgs").ok();
    let e: serde_json::Value = serde_json::from_slice(&env.read("pkgs/enrollment.json")).unwrap();
    assert_eq!(e["format"], "nkpki-enrollment/2");
    assert_eq!(e["holders"].as_object().unwrap().len(), 2, "{e}");
    let mut tampered = e.clone();
    tampered["holders"]["NK001"]["enrollment_code_sha256"] = "ef".repeat(32).into();
    env.write(
        "pkgs/enrollment.json",
        serde_json::to_vec(&tampered).unwrap(),
    );
    package("ca", &holders[2], "pkgs").fails_with(&["NK001 is not signed with NK001's share"]);
    env.write("pkgs/enrollment.json", serde_json::to_vec(&e).unwrap());
    env.nkpki(&[
        "serve",
        "ca",
        "add",
        "--data-dir",
        "data",
        "--manifest",
        "ca/manifest.json",
        "--enrollment",
        "pkgs/enrollment.json",
        "--expect-fingerprint",
        &env.ca_fingerprint("ca"),
    ])
    .ok();

    std::fs::rename(env.path("ca/forged.json"), env.path("forged-dir.json")).unwrap();
    std::fs::create_dir(env.path("forged")).unwrap();
    std::fs::copy(
        env.path("forged-dir.json"),
        env.path("forged/manifest.json"),
    )
    .unwrap();
    package("forged", &holders[0], "forged-pkgs").fails_with(&["certificate was substituted"]);

    // re-bound to the attacker's key, the id changes and the genuine shares do not fit
    forge(&env, "ca", true);
    sign_offline(&env, "ca/forged.json", &[&holders[0], &holders[1]])
        .fails_with(&["belongs to another share set"]);
    assert!(!env.path("out.crt").exists());

    // the genuine manifest still signs
    sign_offline(&env, "ca/manifest.json", &[&holders[0], &holders[1]]).ok();
    env.openssl_verify("ca/ca.crt", "out.crt");
}

#[test]
fn a_version_1_manifest_is_refused_with_what_to_do() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    env.csr(
        "req",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let mut m: serde_json::Value = serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    m["signed"]["version"] = 1.into();
    m["signed"]["share_set"]
        .as_object_mut()
        .unwrap()
        .remove("binding");
    env.write("v1.json", serde_json::to_vec_pretty(&m).unwrap());
    sign_offline(&env, "v1.json", &[&holders[0], &holders[1]]).fails_with(&[
        "manifest format version 1 (made by nkpki 0.1.0) is not accepted",
        "does not bind",
        "hint: run the ceremony again",
    ]);
    env.nkpki(&[
        "serve",
        "ca",
        "add",
        "--data-dir",
        "data",
        "--manifest",
        "v1.json",
        "--expect-fingerprint",
        &env.ca_fingerprint("ca"),
    ])
    .fails_with(&["version 1 (made by nkpki 0.1.0)"]);
}

/// Rewrites a package with `manifest` in place of its own, as someone who can open and
/// re-seal it (here: with the holder's own age key) would.
fn swap_package_manifest(env: &Env, h: &crate::harness::Holder, manifest: &str) -> String {
    let key = h.key_file.to_str().unwrap();
    let package = format!("ca/packages/{}.nkpkg", h.id);
    env.tool("age", &["-d", "-i", key, "-o", "pkg.tar", &package])
        .ok();
    std::fs::create_dir(env.path("pkg")).unwrap();
    let names = env.tool("tar", &["-tf", "pkg.tar"]).ok().stdout();
    env.tool("tar", &["-xf", "pkg.tar", "-C", "pkg"]).ok();
    std::fs::copy(env.path(manifest), env.path("pkg/manifest.json")).unwrap();
    let mut args = vec!["-cf", "forged.tar", "-C", "pkg"];
    args.extend(names.lines());
    env.tool("tar", &args).ok();
    let out = format!("forged-{}.nkpkg", h.id);
    env.tool(
        "age",
        &["-e", "-a", "-r", &h.recipient, "-o", &out, "forged.tar"],
    )
    .ok();
    out
}

#[test]
fn a_substituted_certificate_is_refused_by_drill_and_deploy() {
    let env = Env::new().with_softhsm(&["NK001", "NK002"]);
    let holders = env.packaged_ceremony(3, 2);
    env.write("pin.txt", "123456\n");
    env.deploy(&holders[0], "ca/packages/NK001.nkpkg", "NK001", &[])
        .ok();
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK001",
        "--manifest",
        "ca/manifest.json",
        "--pin-file",
        "pin.txt",
    ])
    .ok();
    forge(&env, "ca", false);
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK001",
        "--manifest",
        "ca/forged.json",
        "--pin-file",
        "pin.txt",
    ])
    .fails_with(&["certificate was substituted"]);

    let forged_pkg = swap_package_manifest(&env, &holders[1], "ca/forged.json");
    env.deploy(&holders[1], &forged_pkg, "NK002", &[])
        .fails_with(&["certificate was substituted"]);
    // nothing reached the token
    let listed = env.pkcs11_tool("NK002", &["--login", "--pin", "123456", "--list-objects"]);
    assert!(!listed.stdout().contains("nkpki"), "{}", listed.stdout());
}

#[test]
fn registering_a_ca_needs_its_fingerprint_and_an_administrator() {
    let env = Env::new();
    env.packaged_ceremony(3, 2);
    let fingerprint = env.ca_fingerprint("ca");
    let add = |manifest: &str, enrollment: &str, fp: &str| {
        env.nkpki(&[
            "serve",
            "ca",
            "add",
            "--data-dir",
            "data",
            "--manifest",
            manifest,
            "--enrollment",
            enrollment,
            "--expect-fingerprint",
            fp,
        ])
    };
    let usage = env.nkpki(&[
        "serve",
        "ca",
        "add",
        "--data-dir",
        "data",
        "--manifest",
        "ca/manifest.json",
    ]);
    assert_eq!(usage.output.status.code(), Some(2));
    assert!(
        usage.stderr().contains("--expect-fingerprint"),
        "{}",
        usage.stderr()
    );
    add("ca/manifest.json", "ca/enrollment.json", "00:11")
        .fails_with(&["not a SHA-256 fingerprint"]);
    let wrong = format!("{}00", &fingerprint[..fingerprint.len() - 2]);
    let wrong = if wrong == fingerprint {
        format!("{}11", &fingerprint[..fingerprint.len() - 2])
    } else {
        wrong
    };
    add("ca/manifest.json", "ca/enrollment.json", &wrong)
        .fails_with(&["not the expected", "hint: compare"]);
    // the attacker's manifest carries the attacker's fingerprint, and is refused anyway
    forge(&env, "ca", false);
    let forged_fp = Manifest::from_json(&String::from_utf8(env.read("ca/forged.json")).unwrap())
        .unwrap()
        .signed
        .certificate_sha256;
    add("ca/forged.json", "ca/enrollment.json", &forged_fp)
        .fails_with(&["certificate was substituted"]);
    // a tampered enrollment.json: another code hash for NK002
    let mut e: serde_json::Value = serde_json::from_slice(&env.read("ca/enrollment.json")).unwrap();
    assert_eq!(e["format"], "nkpki-enrollment/2");
    e["holders"]["NK002"]["enrollment_code_sha256"] = "ab".repeat(32).into();
    env.write("tampered.json", serde_json::to_vec(&e).unwrap());
    add("ca/manifest.json", "tampered.json", &fingerprint)
        .fails_with(&["NK002 is not signed with NK002's share"]);
    let v1 = serde_json::json!({
        "format": "nkpki-enrollment/1",
        "ca_id": e["ca_id"],
        "enrollment_code_sha256": {"NK001": "ab".repeat(32)},
    });
    env.write("v1-enrollment.json", serde_json::to_vec(&v1).unwrap());
    add("ca/manifest.json", "v1-enrollment.json", &fingerprint)
        .fails_with(&["nkpki-enrollment/1", "not signed"]);
    // nothing of the above was stored: the genuine registration goes through
    let lower = fingerprint.replace(':', "").to_lowercase();
    add("ca/manifest.json", "ca/enrollment.json", &lower).ok();
    let export = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    let registered: Vec<&str> = export
        .lines()
        .filter(|l| l.contains("ca-registered"))
        .collect();
    assert_eq!(registered.len(), 1, "{export}");
    assert!(registered[0].contains(&fingerprint), "{export}");
    assert!(registered[0].contains("server host"), "{export}");
    let refused: Vec<&str> = export
        .lines()
        .filter(|l| l.contains("ca-refused"))
        .collect();
    assert_eq!(refused.len(), 5, "{export}");
    assert!(refused[1].contains("not the expected"), "{export}");
    assert!(refused[2].contains("substituted"), "{export}");
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn registering_a_ca_over_the_api_needs_the_ca_admin_role() {
    let env = Env::new();
    env.packaged_ceremony(3, 2);
    let fingerprint = env.ca_fingerprint("ca");
    let token = |name: &str, role: &[&str]| {
        let mut args = vec![
            "serve",
            "token",
            "create",
            "--data-dir",
            "data",
            "--name",
            name,
        ];
        args.extend_from_slice(role);
        env.nkpki(&args).ok().stdout().trim().to_owned()
    };
    let plain = token("alice", &[]);
    let admin = token("bob", &["--role", "ca-admin"]);
    let usage = env.nkpki(&[
        "serve",
        "token",
        "create",
        "--data-dir",
        "data",
        "--name",
        "carol",
        "--role",
        "root",
    ]);
    assert_eq!(usage.output.status.code(), Some(2));
    assert!(
        usage.stderr().contains("invalid value 'root'"),
        "{}",
        usage.stderr()
    );
    let server = env.serve(&[]);
    let client = |t: &str| {
        Client::new(&server.url, &Trust::System, Duration::from_secs(30))
            .unwrap()
            .with_bearer(t)
    };
    let manifest = String::from_utf8(env.read("ca/manifest.json")).unwrap();
    let enrollment = String::from_utf8(env.read("ca/enrollment.json")).unwrap();
    let body = |manifest: &str, enrollment: &str, fp: &str| RegisterCa {
        manifest: manifest.to_owned(),
        enrollment: Some(enrollment.to_owned()),
        expected_fingerprint: fp.to_owned(),
    };
    let refused = |t: &str, b: &RegisterCa, status: u16, code: &str| {
        let e = client(t)
            .post::<_, serde_json::Value>("/api/v1/cas", b)
            .unwrap_err();
        assert!(
            matches!(&e, ClientError::Api { status: s, .. } if *s == status),
            "{e:?}"
        );
        assert_eq!(e.code(), Some(code), "{e:?}");
    };
    refused(
        &plain,
        &body(&manifest, &enrollment, &fingerprint),
        403,
        "forbidden",
    );
    let wrong = fingerprint.replace(
        &fingerprint[..2],
        if &fingerprint[..2] == "00" {
            "11"
        } else {
            "00"
        },
    );
    refused(
        &admin,
        &body(&manifest, &enrollment, &wrong),
        422,
        "fingerprint-mismatch",
    );
    let forged = forge(&env, "ca", false);
    let forged_fp = Manifest::from_json(&forged)
        .unwrap()
        .signed
        .certificate_sha256;
    refused(
        &admin,
        &body(&forged, &enrollment, &forged_fp),
        422,
        "bad-manifest",
    );
    let mut e: serde_json::Value = serde_json::from_str(&enrollment).unwrap();
    e["holders"]["NK001"]["enrollment_code_sha256"] = "cd".repeat(32).into();
    refused(
        &admin,
        &body(&manifest, &e.to_string(), &fingerprint),
        422,
        "bad-enrollment",
    );
    // a body without the fingerprint is not a registration request
    let e = client(&admin)
        .post::<_, serde_json::Value>(
            "/api/v1/cas",
            &serde_json::json!({"manifest": manifest, "enrollment": enrollment}),
        )
        .unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 400, .. }), "{e:?}");

    let listed: serde_json::Value = client(&plain).get("/api/v1/cas").unwrap();
    assert_eq!(listed, serde_json::json!([]), "nothing was stored");
    let ok: serde_json::Value = client(&admin)
        .post("/api/v1/cas", &body(&manifest, &enrollment, &fingerprint))
        .unwrap();
    assert_eq!(ok["registered_by"], "bob");
    assert_eq!(ok["certificate_sha256"], fingerprint.as_str());
    refused(
        &admin,
        &body(&manifest, &enrollment, &fingerprint),
        409,
        "conflict",
    );

    let export = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    let refusals = export.lines().filter(|l| l.contains("ca-refused")).count();
    assert_eq!(refusals, 5, "{export}");
    assert!(
        export
            .lines()
            .any(|l| l.contains("ca-refused") && l.contains("alice") && l.contains("ca-admin")),
        "{export}"
    );
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}
