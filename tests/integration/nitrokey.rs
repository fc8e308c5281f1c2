//! On a real Nitrokey HSM 2 through OpenSC, when one is plugged in and named:
//! `NKPKI_TEST_NITROKEY_MODULE` (e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so),
//! `NKPKI_TEST_NITROKEY_TOKEN` (its label or a PKCS#11 URI) and `NKPKI_TEST_NITROKEY_PIN`
//! (a file holding the user PIN). Skipped otherwise. It writes a test share, drills it and
//! deletes it again; the token's other objects are not touched (the holder key is created
//! if absent and kept).

use crate::harness::Env;

#[test]
fn real_nitrokey_deploy_drill_and_remove() {
    let (Ok(module), Ok(token), Ok(pin)) = (
        std::env::var("NKPKI_TEST_NITROKEY_MODULE"),
        std::env::var("NKPKI_TEST_NITROKEY_TOKEN"),
        std::env::var("NKPKI_TEST_NITROKEY_PIN"),
    ) else {
        eprintln!(
            "skipped: set NKPKI_TEST_NITROKEY_MODULE, _TOKEN and _PIN to run against a real Nitrokey"
        );
        return;
    };
    let env = Env::new();
    let list = env
        .nkpki(&["token", "list", "--module", &module])
        .ok()
        .stdout();
    assert!(!list.contains("no token present"), "{list}");
    let holders = env.packaged_ceremony(3, 2);
    let label = holders[0].id.clone();
    let key = holders[0].key_file.to_string_lossy().into_owned();
    // the package is for NK001: the token must be labelled so, or the deploy is refused
    let run = env.nkpki(&[
        "deploy",
        "ca/packages/NK001.nkpkg",
        "--token",
        &token,
        "--module",
        &module,
        "--identity",
        &key,
        "--pin-file",
        &pin,
        "--config-dir",
        "cfg",
    ]);
    if !run.output.status.success() {
        assert!(run.stderr().contains("labelled"), "{}", run.stderr());
        eprintln!("skipped the share part: the token is not labelled {label}");
        return;
    }
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        &token,
        "--module",
        &module,
        "--manifest",
        "ca/manifest.json",
        "--pin-file",
        &pin,
    ])
    .ok();
    let manifest: serde_json::Value =
        serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    let ca_id = manifest["signed"]["ca_id"].as_str().unwrap();
    env.nkpki(&[
        "token",
        "remove-share",
        "--token",
        &token,
        "--module",
        &module,
        "--ca",
        ca_id,
        "--pin-file",
        &pin,
    ])
    .ok();
}
