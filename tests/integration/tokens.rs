//! Tokens and deployment packages on SoftHSM2, one throwaway token directory per test,
//! with OpenSC's pkcs11-tool, the age CLI and zbarimg as peers.

use crate::harness::{Env, PIN};
use nkpki::sss::Share;

const FIVE: [&str; 5] = ["NK001", "NK002", "NK003", "NK004", "NK005"];

#[test]
fn package_deploy_drill_and_sign_with_three_tokens() {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.packaged_ceremony(5, 3);
    assert!(env.path("ca/enrollment.json").is_file());
    assert!(
        !env.path("ca/shares").exists(),
        "packages replace bare share files"
    );

    // the age CLI opens a package; it is a tar of the documented entries
    let key = holders[0].key_file.to_str().unwrap();
    env.tool(
        "age",
        &[
            "-d",
            "-i",
            key,
            "-o",
            "nk001.tar",
            "ca/packages/NK001.nkpkg",
        ],
    )
    .ok();
    let list = env.tool("tar", &["tf", "nk001.tar"]).ok().stdout();
    for entry in [
        "share.json",
        "manifest.json",
        "agent.json",
        "INSTRUCTIONS.md",
        "fingerprint.png",
    ] {
        assert!(
            list.lines().any(|l| l == entry),
            "{entry} missing from {list}"
        );
    }

    let mut fingerprints = Vec::new();
    for h in &holders {
        let run = env.deploy(
            h,
            &format!("ca/packages/{}.nkpkg", h.id),
            &h.id,
            &["--install-systemd", "--systemd-dir", "units"],
        );
        run.ok();
        let fp = run
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("Fingerprint: "))
            .unwrap()
            .to_owned();
        fingerprints.push(fp);
    }
    // the QR code handed over at the ceremony carries the same fingerprint
    let qr = env
        .tool("zbarimg", &["--quiet", "--raw", "ca/qr/NK002.png"])
        .ok()
        .stdout();
    assert_eq!(qr.trim(), fingerprints[1]);

    // configuration written for the agent, owner-only where it holds the enrollment code
    let manifest_text = String::from_utf8(env.read("ca/manifest.json")).unwrap();
    let ca_id =
        serde_json::from_str::<serde_json::Value>(&manifest_text).unwrap()["signed"]["ca_id"]
            .as_str()
            .unwrap()
            .to_owned();
    let agent = env.path(&format!("cfg-NK001/{ca_id}/agent.json"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&agent).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let unit =
        String::from_utf8(env.read(&format!("units/nkpki-agent-NK001-{}.service", &ca_id[..8])))
            .unwrap();
    assert!(unit.contains("--pin-file"), "{unit}");
    assert!(unit.contains(&agent.display().to_string()), "{unit}");

    // pkcs11-tool reads the share object nkpki wrote, and sees a non-extractable key
    let label = format!("nkpki-share-{ca_id}");
    env.pkcs11_tool(
        "NK003",
        &[
            "--read-object",
            "--type",
            "data",
            "--label",
            &label,
            "-o",
            "nk003.json",
        ],
    )
    .ok();
    let share: Share = serde_json::from_slice(&env.read("nk003.json")).unwrap();
    assert_eq!((share.index, share.holder.as_deref()), (3, Some("NK003")));
    let objects = env.pkcs11_tool("NK003", &["--list-objects"]).ok().stdout();
    assert!(objects.contains("never extractable"), "{objects}");
    assert!(
        objects.contains("application: nkpki")
            || objects.contains("app:  nkpki")
            || objects.contains("nkpki")
    );

    for id in FIVE {
        let run = env.nkpki(&[
            "token",
            "drill",
            "--token",
            id,
            "--manifest",
            "ca/manifest.json",
            "--pin-file",
            "pin.txt",
        ]);
        run.ok();
        assert!(run.stdout().contains("Drill OK"), "{}", run.stdout());
        assert!(
            !run.stdout().contains(
                &serde_json::to_value(&share).unwrap()["value"]
                    .as_str()
                    .unwrap()
                    .to_string()
            )
        );
    }
    let shares = env
        .nkpki(&[
            "token",
            "shares",
            "--token",
            "NK004",
            "--pin-file",
            "pin.txt",
        ])
        .ok()
        .stdout();
    assert!(
        shares.contains(&ca_id) && shares.contains("share 4 of 5"),
        "{shares}"
    );

    let csr = env.csr(
        "t",
        &["-newkey", "rsa:2048"],
        "/CN=t.example.org",
        &["subjectAltName=DNS:t.example.org"],
    );
    env.nkpki(&[
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--token",
        "NK002",
        "--token",
        "pkcs11:token=NK004",
        "--token",
        "NK005",
        "--pin-file",
        "pin.txt",
        "--out",
        "t.crt",
    ])
    .ok();
    env.openssl_verify("ca/ca.crt", "t.crt");
    env.pkilint_cert("t.crt");
    // two tokens are not enough
    env.nkpki(&[
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--token",
        "NK001",
        "--token",
        "NK003",
        "--pin-file",
        "pin.txt",
        "--out",
        "u.crt",
    ])
    .fails_with(&["2 valid share(s) given", "needs 3"]);

    // the holder card
    let card = env
        .nkpki(&[
            "token",
            "enroll",
            "--token",
            "NK001",
            "--pin-file",
            "pin.txt",
        ])
        .ok()
        .stdout();
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    assert!(
        card["public_key_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN PUBLIC KEY")
    );
    let list = env.nkpki(&["token", "list"]).ok().stdout();
    assert_eq!(
        list.lines().filter(|l| l.starts_with("NK00")).count(),
        5,
        "{list}"
    );
}

#[test]
fn share_written_by_pkcs11_tool_is_found_and_used() {
    let env = Env::new().with_softhsm(&["NK001", "NK002"]);
    let h = env.ceremony("ecdsa-p256", 3, 2);
    for (i, id) in ["NK001", "NK002"].iter().enumerate() {
        let key = h[i].key_file.to_str().unwrap();
        let json = format!("{id}.json");
        env.tool(
            "age",
            &["-d", "-i", key, "-o", &json, &format!("ca/shares/{id}.age")],
        )
        .ok();
        // the original design's deploy script, with a label of its own choosing
        env.pkcs11_tool(
            id,
            &[
                "--write-object",
                &json,
                "--type",
                "data",
                "--label",
                &format!("shamir_share_{id}"),
                "--private",
            ],
        )
        .ok();
    }
    env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK002",
        "--manifest",
        "ca/manifest.json",
        "--pin-file",
        "pin.txt",
    ])
    .ok();
    let csr = env.csr(
        "c",
        &["-newkey", "ed25519"],
        "/CN=c1",
        &["subjectAltName=email:c1@example.org"],
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
        "--token",
        "NK001",
        "--token",
        "NK002",
        "--pin-file",
        "pin.txt",
        "--out",
        "c.crt",
    ])
    .ok();
    env.openssl_verify("ca/ca.crt", "c.crt");
}

#[test]
fn tokens_inserted_one_after_another_in_one_reader() {
    let env = Env::new().with_softhsm(&FIVE);
    let holders = env.packaged_ceremony(5, 3);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let csr = env.csr(
        "s",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=s.example.org",
        &["subjectAltName=DNS:s.example.org"],
    );
    let (inserted, transcript) = env.run_inserting_tokens(&[
        "sign",
        "--offline",
        "--manifest",
        "ca/manifest.json",
        "--csr",
        &csr,
        "--insert-tokens",
        "--pin-file",
        "pin.txt",
        "--out",
        "s.crt",
    ]);
    assert_eq!(inserted, 3, "{transcript}");
    assert_eq!(
        transcript.matches("verified against the manifest").count(),
        3,
        "{transcript}"
    );
    env.openssl_verify("ca/ca.crt", "s.crt");
    let _ = PIN;
}
