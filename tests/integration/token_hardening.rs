//! Hardening of the holder's side: nothing executable comes from a package, the expected
//! fingerprint is checked before anything is written, the holder key is paired by CKA_ID,
//! share objects carry exactly `nkpki`, and plain http needs `--insecure-http`.

use crate::harness::{Env, Holder};
use crate::token_bad_input::repack;

fn ca_id(env: &Env) -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    manifest["signed"]["ca_id"].as_str().unwrap().to_owned()
}

/// The fingerprint of holder `id` as the ceremony logged it (what its QR code says).
fn ceremony_fingerprint(env: &Env, id: &str) -> String {
    let qr = env
        .tool("zbarimg", &["--quiet", "--raw", &format!("ca/qr/{id}.png")])
        .ok()
        .stdout();
    qr.trim().to_owned()
}

fn objects(env: &Env, token: &str) -> String {
    env.pkcs11_tool(token, &["--list-objects"]).ok().stdout()
}

#[test]
fn deploy_installs_its_own_unit_whatever_the_package_carries() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let h = env.packaged_ceremony(3, 2);
    // a package sealed to the holder's public recipient by anyone, with a unit of its own
    repack(
        &env,
        &h[0],
        "planted.nkpkg",
        "files['nkpki-agent.service'] = b'[Service]\\nExecStartPre=/bin/sh -c \"touch /tmp/nkpki-planted\"\\nExecStart=/bin/true\\n'",
    );
    env.deploy(
        &h[0],
        "planted.nkpkg",
        "NK001",
        &["--install-systemd", "--systemd-dir", "units"],
    )
    .ok();
    let ca_id = ca_id(&env);
    let unit =
        String::from_utf8(env.read(&format!("units/nkpki-agent-NK001-{}.service", &ca_id[..8])))
            .unwrap();
    assert!(!unit.contains("ExecStartPre"), "{unit}");
    assert!(!unit.contains("/bin/true"), "{unit}");
    let config_dir = std::fs::canonicalize(env.path("cfg-NK001"))
        .unwrap()
        .join(&ca_id);
    let expected = nkpki::package::agent_unit(
        &assert_cmd::cargo::cargo_bin("nkpki"),
        &config_dir,
        "NK001",
        &ca_id,
    )
    .unwrap();
    assert_eq!(unit, expected);
    // new packages carry no unit at all
    env.tool(
        "age",
        &[
            "-d",
            "-i",
            h[1].key_file.to_str().unwrap(),
            "-o",
            "nk002.tar",
            "ca/packages/NK002.nkpkg",
        ],
    )
    .ok();
    let list = env.tool("tar", &["tf", "nk002.tar"]).ok().stdout();
    assert!(!list.contains("nkpki-agent.service"), "{list}");
}

#[test]
fn a_wrong_expected_fingerprint_writes_nothing() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let h = env.packaged_ceremony(3, 2);
    let right = ceremony_fingerprint(&env, "NK001");
    assert!(right.starts_with("nkpki1:"), "{right}");
    // NK002's fingerprint: a package that is genuine, but not the one handed to NK001
    let wrong = ceremony_fingerprint(&env, "NK002");
    env.deploy(
        &h[0],
        "ca/packages/NK001.nkpkg",
        "NK001",
        &[
            "--expect-fingerprint",
            &wrong,
            "--install-systemd",
            "--systemd-dir",
            "units",
        ],
    )
    .fails_with(&[
        "the package's fingerprint is",
        &right,
        "nothing was written",
        "hint:",
    ]);
    let listed = objects(&env, "NK001");
    for kind in ["Data object", "Private Key Object", "Public Key Object"] {
        assert!(!listed.contains(kind), "{listed}");
    }
    assert!(!env.path("cfg-NK001").exists());
    assert!(!env.path("units").exists());

    let run = env.deploy(
        &h[0],
        "ca/packages/NK001.nkpkg",
        "NK001",
        &["--expect-fingerprint", &format!(" {right}\n")],
    );
    run.ok();
    assert!(
        run.stderr()
            .contains("fingerprint: matches the one you expect"),
        "{}",
        run.stderr()
    );
}

/// The `application:` line pkcs11-tool prints for the data object labelled `label`.
fn application_of(listed: &str, label: &str) -> String {
    let block = listed
        .split("Data object")
        .find(|b| b.contains(&format!("'{label}'")))
        .unwrap_or_else(|| panic!("no data object {label} in {listed}"));
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("application:"))
        .unwrap_or_else(|| panic!("no application line in {block}"))
        .trim()
        .to_owned()
}

#[test]
fn the_share_object_says_exactly_nkpki_and_the_drill_shows_it() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let h = env.packaged_ceremony(3, 2);
    env.deploy(&h[0], "ca/packages/NK001.nkpkg", "NK001", &[])
        .ok();
    let ca_id = ca_id(&env);
    let label = format!("nkpki-share-{ca_id}");
    let listed = objects(&env, "NK001");
    // pkcs11-tool quotes the value: anything read past the name would show inside
    assert_eq!(application_of(&listed, &label), "'nkpki'", "{listed}");
    let drill = env
        .nkpki(&[
            "token",
            "drill",
            "--token",
            "NK001",
            "--manifest",
            "ca/manifest.json",
            "--pin-file",
            "pin.txt",
        ])
        .ok()
        .stdout();
    assert!(
        drill.contains(&format!(
            "Object:     label \"{label}\", application \"nkpki\""
        )),
        "{drill}"
    );

    // what OpenSC stored for nkpki before: the name and garbage after it; the object stays
    // modifiable on OpenSC, so the drill reports it rather than trusting the attribute
    env.pkcs11_tool(
        "NK001",
        &[
            "--read-object",
            "--type",
            "data",
            "--label",
            &label,
            "-o",
            "share.json",
        ],
    )
    .ok();
    env.pkcs11_tool(
        "NK001",
        &["--delete-object", "--type", "data", "--label", &label],
    )
    .ok();
    env.pkcs11_tool(
        "NK001",
        &[
            "--write-object",
            "share.json",
            "--type",
            "data",
            "--label",
            &label,
            "--application-label",
            "nkpkiU",
            "--private",
        ],
    )
    .ok();
    let run = env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK001",
        "--manifest",
        "ca/manifest.json",
        "--pin-file",
        "pin.txt",
    ]);
    run.ok();
    assert!(
        run.stderr()
            .contains("CKA_APPLICATION reads \"nkpkiU\", not \"nkpki\""),
        "{}",
        run.stderr()
    );
}

/// Deploys NK001 and returns the holder key's fingerprint that deploy printed.
fn deployed_key(env: &Env, h: &[Holder]) -> String {
    let out = env
        .deploy(&h[0], "ca/packages/NK001.nkpkg", "NK001", &[])
        .ok()
        .stdout();
    out.lines()
        .find_map(|l| l.split("(fingerprint ").nth(1))
        .unwrap()
        .trim_end_matches(')')
        .to_owned()
}

fn enrolled_fingerprint(env: &Env) -> crate::harness::Run {
    env.nkpki(&[
        "token",
        "enroll",
        "--token",
        "NK001",
        "--pin-file",
        "pin.txt",
    ])
}

/// A P-256 public key made by OpenSSL, written to the token by pkcs11-tool as a public
/// object labelled like nkpki's holder key, with CKA_ID `id` (hex); returns its fingerprint.
fn decoy(env: &Env, name: &str, id: &str) -> String {
    let key = format!("{name}.pem");
    let der = format!("{name}.der");
    env.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", &key])
        .ok();
    env.openssl(&[
        "ec", "-in", &key, "-pubout", "-outform", "DER", "-out", &der,
    ])
    .ok();
    env.pkcs11_tool(
        "NK001",
        &[
            "--write-object",
            &der,
            "--type",
            "pubkey",
            "--label",
            "nkpki-holder-key",
            "--id",
            id,
        ],
    )
    .ok();
    nkpki::package::sha256_hex(&env.read(&der))
}

#[test]
fn a_decoy_public_key_is_never_paired_with_the_holder_key() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let h = env.packaged_ceremony(3, 2);
    let real = deployed_key(&env, &h);
    let other_id = decoy(&env, "decoy1", "0102");
    let card: serde_json::Value =
        serde_json::from_str(&enrolled_fingerprint(&env).ok().stdout()).unwrap();
    assert_eq!(card["fingerprint"], real.as_str());
    assert_ne!(card["fingerprint"], other_id.as_str());

    // a decoy that copies the CKA_ID too is refused, not guessed at
    let id_hex = hex::encode(b"nkpki-holder-key");
    decoy(&env, "decoy2", &id_hex);
    enrolled_fingerprint(&env).fails_with(&[
        "token NK001 holds 2 public keys with the private key's CKA_ID",
        "nkpki-holder-key",
    ]);
}

#[test]
fn plain_http_needs_insecure_http_at_package_and_agent() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    env.ca_init(
        "ecdsa-p256",
        2,
        &["--package", "--server-url", "http://pki.example.org"],
    )
    .fails_with(&["plain http", "--insecure-http", "hint:"]);
    assert!(!env.path("ca").exists());
    let run = env.ca_init(
        "ecdsa-p256",
        2,
        &[
            "--package",
            "--server-url",
            "http://pki.example.org",
            "--insecure-http",
        ],
    );
    run.ok();
    assert!(
        run.stderr()
            .contains("WARNING: --server-url http://pki.example.org is plain http"),
        "{}",
        run.stderr()
    );

    // `package` from bare share files: the same rule
    let bare = Env::new();
    let h = bare.ceremony("ecdsa-p256", 3, 2);
    let package = |extra: &[&str]| {
        let key = h[0].key_file.to_string_lossy().into_owned();
        let mut args = vec![
            "package",
            "--ceremony",
            "ca",
            "--share",
            "ca/shares/NK001.age",
            "--identity",
            &key,
            "--server-url",
            "HTTP://pki.example.org",
            "--out",
            "pk",
        ];
        args.extend_from_slice(extra);
        bare.nkpki(&args)
    };
    package(&[]).fails_with(&["plain http", "hint:"]);
    assert!(!bare.path("pk").exists());
    let run = package(&["--insecure-http"]);
    run.ok();
    assert!(run.stderr().contains("WARNING"), "{}", run.stderr());

    // the agent refuses the http URL its package carries, before it touches the token
    let run = env.deploy(&holders[0], "ca/packages/NK001.nkpkg", "NK001", &[]);
    run.ok();
    assert!(
        run.stderr().contains("plain http"),
        "deploy should warn: {}",
        run.stderr()
    );
    let config = format!("cfg-NK001/{}/agent.json", ca_id(&env));
    env.nkpki(&["agent", "--config", &config, "--pin-file", "pin.txt"])
        .fails_with(&["http://pki.example.org is plain http", "--insecure-http"]);
    // with the flag it warns and goes on (to a server that is not there: it keeps retrying)
    let log = {
        let _agent = crate::harness::Proc {
            child: std::process::Command::new(assert_cmd::cargo::cargo_bin("nkpki"))
                .args([
                    "agent",
                    "--config",
                    &config,
                    "--pin-file",
                    "pin.txt",
                    "--server",
                    "http://127.0.0.1:9",
                    "--insecure-http",
                ])
                .current_dir(env.dir.path())
                .env("SOFTHSM2_CONF", env.path("softhsm2.conf"))
                .env("NKPKI_PKCS11_MODULE", crate::harness::SOFTHSM_MODULE)
                .env_remove("NKPKI_PIN")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(env.path("agent-http.log")).unwrap())
                .spawn()
                .unwrap(),
        };
        env.wait_for("agent-http.log", 20, |t| t.contains("retrying"))
    };
    assert!(
        log.contains("WARNING: plain http to http://127.0.0.1:9"),
        "{log}"
    );
}
