//! Bad inputs of the token and package issue: each gets a clear error, and nothing is
//! written to the token or the configuration.

use crate::harness::{Env, Holder};

/// Re-packs holder `h`'s package after `edit` changes its extracted files, and seals it
/// with the age CLI to the holder again: what a tamperer with the holder's key could do.
pub(crate) fn repack(env: &Env, h: &Holder, name: &str, edit: &str) {
    let key = h.key_file.to_str().unwrap();
    env.tool(
        "age",
        &[
            "-d",
            "-i",
            key,
            "-o",
            "orig.tar",
            &format!("ca/packages/{}.nkpkg", h.id),
        ],
    )
    .ok();
    let script = format!(
        "import tarfile, io, json\n\
         src = tarfile.open('orig.tar')\n\
         files = {{m.name: src.extractfile(m).read() for m in src.getmembers()}}\n\
         {edit}\n\
         out = tarfile.open('new.tar', 'w', format=tarfile.USTAR_FORMAT)\n\
         for n, d in files.items():\n\
         \x20   info = tarfile.TarInfo(n); info.size = len(d); out.addfile(info, io.BytesIO(d))\n\
         out.close()\n"
    );
    env.tool("python3", &["-c", &script]).ok();
    env.tool("age", &["-e", "-r", &h.recipient, "-o", name, "new.tar"])
        .ok();
}

fn no_share_on(env: &Env, token: &str) {
    let shares = env
        .nkpki(&["token", "shares", "--token", token, "--pin-file", "pin.txt"])
        .ok()
        .stdout();
    assert!(shares.contains("holds no nkpki share"), "{shares}");
}

#[test]
fn deploy_refuses_bad_packages() {
    let env = Env::new().with_softhsm(&["NK001", "NK002"]);
    let h = env.packaged_ceremony(3, 2);
    let pkg1 = "ca/packages/NK001.nkpkg";

    env.deploy(&h[1], "ca/packages/NK002.nkpkg", "NK001", &[])
        .fails_with(&[
            "this package is for holder NK002",
            "token is labelled NK001",
            "hint:",
        ]);

    let mut bytes = env.read(pkg1);
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    env.write("altered.nkpkg", &bytes);
    env.deploy(&h[0], "altered.nkpkg", "NK001", &[])
        .fails_with(&["altered.nkpkg", "cannot open the package"]);

    let whole = env.read(pkg1);
    env.write("truncated.nkpkg", &whole[..whole.len() * 2 / 3]);
    env.deploy(&h[0], "truncated.nkpkg", "NK001", &[])
        .fails_with(&["truncated.nkpkg"]);

    env.deploy(&h[1], pkg1, "NK001", &[])
        .fails_with(&["none of the given identities"]);

    repack(&env, &h[0], "dotdot.nkpkg", "files['../../evil'] = b'x'");
    env.deploy(&h[0], "dotdot.nkpkg", "NK001", &[])
        .fails_with(&["hostile", "../../evil"]);
    repack(
        &env,
        &h[0],
        "absolute.nkpkg",
        "files['/etc/cron.d/evil'] = b'x'",
    );
    env.deploy(&h[0], "absolute.nkpkg", "NK001", &[])
        .fails_with(&["hostile", "/etc/cron.d/evil"]);
    assert!(!std::path::Path::new("/etc/cron.d/evil").exists());

    repack(
        &env,
        &h[0],
        "forged.nkpkg",
        "s = json.loads(files['share.json']); v = s['value']; s['value'] = v[:-1] + ('1' if v[-1] == '0' else '0'); files['share.json'] = json.dumps(s).encode()",
    );
    env.deploy(&h[0], "forged.nkpkg", "NK001", &[])
        .fails_with(&["does not match the published commitments"]);

    repack(
        &env,
        &h[0],
        "edited.nkpkg",
        "files['manifest.json'] = files['manifest.json'].replace(b'Holder NK002', b'Mallory')",
    );
    env.deploy(&h[0], "edited.nkpkg", "NK001", &[])
        .fails_with(&["changed after the ceremony"]);

    repack(&env, &h[0], "missing.nkpkg", "del files['share.json']");
    env.deploy(&h[0], "missing.nkpkg", "NK001", &[])
        .fails_with(&["lacks share.json"]);

    no_share_on(&env, "NK001");
    assert!(
        !env.path("cfg-NK001").exists(),
        "a refused deploy wrote configuration"
    );
}

#[test]
fn deploy_refuses_a_second_share_without_force() {
    let env = Env::new().with_softhsm(&["NK001"]);
    let h = env.packaged_ceremony(3, 2);
    env.deploy(&h[0], "ca/packages/NK001.nkpkg", "NK001", &[])
        .ok();
    env.deploy(&h[0], "ca/packages/NK001.nkpkg", "NK001", &[])
        .fails_with(&["already exists", "--force"]);
    let key = h[0].key_file.to_str().unwrap();
    env.nkpki(&[
        "deploy",
        "ca/packages/NK001.nkpkg",
        "--token",
        "NK001",
        "--identity",
        key,
        "--pin-file",
        "pin.txt",
        "--config-dir",
        "other",
    ])
    .fails_with(&["already holds a share of CA", "--force"]);
    env.deploy(&h[0], "ca/packages/NK001.nkpkg", "NK001", &["--force"])
        .ok();
    let shares = env
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
    assert_eq!(
        shares.lines().count(),
        1,
        "--force must replace, not add: {shares}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    let ca_id = manifest["signed"]["ca_id"].as_str().unwrap();
    let remove = [
        "token",
        "remove-share",
        "--token",
        "NK001",
        "--ca",
        ca_id,
        "--pin-file",
        "pin.txt",
    ];
    env.nkpki(&remove).ok();
    no_share_on(&env, "NK001");
    env.nkpki(&remove).fails_with(&["holds no share"]);
}

#[test]
fn passphrase_sealed_package() {
    let env = Env::new().with_softhsm(&["NK002"]);
    let holders = env.holders(3);
    env.holders_json(&holders, &["NK002"]);
    env.ca_init(
        "ecdsa-p256",
        2,
        &["--package", "--passphrases-to", "pass.txt"],
    )
    .ok();
    env.write("wrong.txt", "NK002: not-it\n");
    let base = [
        "deploy",
        "ca/packages/NK002.nkpkg",
        "--token",
        "NK002",
        "--pin-file",
        "pin.txt",
        "--config-dir",
        "c",
    ];
    let mut wrong = base.to_vec();
    wrong.extend(["--passphrases-from", "wrong.txt"]);
    env.nkpki(&wrong).fails_with(&["wrong passphrase"]);
    let mut right = base.to_vec();
    right.extend(["--passphrases-from", "pass.txt"]);
    env.nkpki(&right).ok();
}

#[test]
fn token_selection_pins_and_modules() {
    let env = Env::new().with_softhsm(&["NK001", "NK002"]);
    let h = env.packaged_ceremony(3, 2);
    env.write("bad-pin.txt", "000000\n");
    let key = h[0].key_file.to_str().unwrap();
    let deploy = |token: &str, pin: &str, extra: &[&str]| {
        let mut a = vec![
            "deploy",
            "ca/packages/NK001.nkpkg",
            "--token",
            token,
            "--identity",
            key,
            "--pin-file",
            pin,
            "--config-dir",
            "c",
        ];
        a.extend_from_slice(extra);
        env.nkpki(&a)
    };
    // one wrong PIN: reported once with what the token says, never retried
    let run = deploy("NK001", "bad-pin.txt", &[]);
    run.fails_with(&["wrong PIN for token NK001"]);
    assert_eq!(run.stderr().matches("wrong PIN").count(), 1);
    no_share_on(&env, "NK001");

    deploy("NK009", "pin.txt", &[]).fails_with(&["no token matches \"NK009\"", "NK001", "NK002"]);
    env.init_token("NK001");
    deploy("NK001", "pin.txt", &[]).fails_with(&["2 tokens match \"NK001\"", "serial"]);
    deploy("pkcs11:", "pin.txt", &[]).fails_with(&["invalid PKCS#11 URI"]);

    deploy(
        "NK002",
        "pin.txt",
        &["--module", "/nonexistent/opensc-pkcs11.so"],
    )
    .fails_with(&["does not exist"]);
    env.write("not-a-module.so", b"\x7fELF but not really");
    deploy("NK002", "pin.txt", &["--module", "not-a-module.so"])
        .fails_with(&["not a usable PKCS#11 module"]);
    let libz = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    if let Some(libz) = libz {
        deploy("NK002", "pin.txt", &["--module", libz])
            .fails_with(&["not a usable PKCS#11 module"]);
    }
    // a drill against another CA's manifest
    let other = Env::new();
    other.ceremony("ecdsa-p256", 3, 2);
    std::fs::copy(other.path("ca/manifest.json"), env.path("other.json")).unwrap();
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK002",
        "--manifest",
        "other.json",
        "--pin-file",
        "pin.txt",
    ])
    .fails_with(&["holds no share of CA"]);
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK002",
        "--manifest",
        "ca/manifest.json",
        "--pin-file",
        "bad-pin.txt",
    ])
    .fails_with(&["wrong PIN"]);
    // no PIN source at all: no terminal to prompt on
    env.nkpki(&["token", "shares", "--token", "NK002"])
        .fails_with(&["no PIN available", "--pin-file"]);
}
