//! `--json` on every command a script reads: one JSON document on standard output, keys as
//! docs/cli.md documents them, values checked against what OpenSSL and pkcs11-tool read
//! from the same certificates, CRLs and tokens.

use crate::harness::{Env, Run, SOFTHSM_MODULE};
use serde_json::Value;

const THREE: [&str; 3] = ["NK001", "NK002", "NK003"];

/// The whole standard output as one JSON document (nothing else may be there).
fn json(run: &Run) -> Value {
    run.ok();
    serde_json::from_str(&run.stdout()).unwrap_or_else(|e| {
        panic!(
            "`{}`: stdout is not one JSON document ({e}):\n{}",
            run.cmdline,
            run.stdout()
        )
    })
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn sorted(mut list: Vec<&str>) -> Vec<&str> {
    list.sort_unstable();
    list
}

/// `openssl x509 -noout <flag>` on `cert`, the value after `=`.
fn x509_field(env: &Env, cert: &str, flag: &[&str]) -> String {
    let mut args = vec!["x509", "-in", cert, "-noout"];
    args.extend_from_slice(flag);
    let out = env.openssl(&args).ok().stdout();
    out.trim().split_once('=').unwrap().1.trim().to_owned()
}

/// `AA:BB:…` as lower-case hex without colons.
fn bare_hex(fingerprint: &str) -> String {
    fingerprint.replace(':', "").to_lowercase()
}

/// An RFC 3339 time as OpenSSL's `-dateopt iso_8601` prints it.
fn iso(rfc3339: &Value) -> String {
    rfc3339.as_str().unwrap().replacen('T', " ", 1)
}

#[test]
fn json_token_list_shares_and_drill() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    let ca = env.ca_id();

    // token list: one object per token; the serials are those pkcs11-tool lists
    let list = json(&env.nkpki(&["token", "list", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(
        keys(&list[0]),
        ["label", "manufacturer", "model", "pin", "serial"]
    );
    assert_eq!(keys(&list[0]["pin"]), ["count_low", "final_try", "locked"]);
    let slots = env
        .tool("pkcs11-tool", &["--module", SOFTHSM_MODULE, "--list-slots"])
        .ok()
        .stdout();
    for t in list {
        assert!(THREE.contains(&t["label"].as_str().unwrap()), "{t}");
        let serial = t["serial"].as_str().unwrap();
        assert!(
            !serial.is_empty()
                && slots.lines().any(|l| {
                    let l = l.trim();
                    l.starts_with("serial num") && l.ends_with(&format!(": {serial}"))
                }),
            "{serial} not in {slots}"
        );
        assert_eq!(t["pin"]["locked"], false);
    }

    // token shares: the share deploy wrote, no value
    let run = env.nkpki(&[
        "token",
        "shares",
        "--token",
        "NK002",
        "--pin-file",
        "pin.txt",
        "--json",
    ]);
    let shares = json(&run);
    let shares = shares.as_array().unwrap();
    assert_eq!(shares.len(), 1, "{shares:?}");
    let s = &shares[0];
    assert_eq!(
        keys(s),
        [
            "application",
            "ca_id",
            "holder",
            "index",
            "label",
            "threshold",
            "total"
        ]
    );
    assert_eq!(s["ca_id"], ca.as_str());
    assert_eq!(s["label"], format!("nkpki-share-{ca}"));
    assert_eq!(s["application"], "nkpki");
    assert_eq!(
        (&s["index"], &s["threshold"], &s["total"]),
        (&Value::from(2), &Value::from(2), &Value::from(3))
    );
    assert_eq!(s["holder"], "NK002");
    assert!(!run.stdout().contains("\"value\""), "{}", run.stdout());

    // token drill: what the text lines say, as one object; the holder key is the card's
    let drill = json(&env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK002",
        "--pin-file",
        "pin.txt",
        "--manifest",
        "ca/manifest.json",
        "--json",
    ]));
    assert_eq!(
        keys(&drill),
        [
            "ca_id",
            "ca_name",
            "holder_key",
            "objects",
            "seconds",
            "share",
            "token",
            "warnings"
        ]
    );
    assert_eq!(drill["ca_id"], ca.as_str());
    assert_eq!(drill["ca_name"], "Test Root CA");
    assert_eq!(drill["token"]["label"], "NK002");
    let nk002 = list.iter().find(|t| t["label"] == "NK002").unwrap();
    assert_eq!(drill["token"]["serial"], nk002["serial"]);
    assert_eq!(drill["share"]["index"], 2);
    assert_eq!(drill["share"]["holder"], "NK002");
    assert_eq!(
        (&drill["share"]["threshold"], &drill["share"]["total"]),
        (&Value::from(2), &Value::from(3))
    );
    assert_eq!(drill["objects"].as_array().unwrap().len(), 1);
    assert_eq!(drill["warnings"], Value::Array(vec![]));
    let card: Value =
        serde_json::from_slice(&env.read(&format!("cfg-NK002/{ca}/holder-card.json"))).unwrap();
    assert_eq!(drill["holder_key"]["present"], true);
    assert_eq!(drill["holder_key"]["fingerprint"], card["fingerprint"]);

    // an error with --json: standard output stays empty, the error is on standard error
    let run = env.nkpki(&[
        "token",
        "drill",
        "--token",
        "NK002",
        "--pin-file",
        "pin.txt",
        "--manifest",
        "missing.json",
        "--json",
    ]);
    run.fails_with(&["cannot read manifest missing.json"]);
    assert_eq!(run.stdout(), "");
}

#[test]
fn json_offline_sign_reports_the_issued_certificate() {
    let env = Env::new();
    let holders = env.ceremony("ecdsa-p256", 3, 2);
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org/O=Example",
        &["subjectAltName=DNS:www.example.org,IP:192.0.2.7"],
    );
    let signers = [&holders[1], &holders[2]];
    let run = env.sign_with(
        &signers,
        &csr,
        "server",
        "30",
        "www.crt",
        &["--chain", "--json"],
    );
    let report = json(&run);
    assert_eq!(
        keys(&report),
        sorted(vec![
            "ca_id",
            "chain",
            "days",
            "holders",
            "issuer",
            "not_after",
            "not_before",
            "out",
            "profile",
            "sans",
            "serial",
            "session",
            "sha256_fingerprint",
            "subject",
        ])
    );
    assert_certificate(&env, &report, "www.crt");
    assert_eq!(
        report["sans"],
        serde_json::json!(["DNS:www.example.org", "IP:192.0.2.7"])
    );
    assert_eq!(report["subject"], "CN=www.example.org, O=Example");
    assert_eq!(report["ca_id"], env.ca_id().as_str());
    assert_eq!(report["profile"], "server");
    assert_eq!(report["days"], 30);
    assert_eq!(report["chain"], true);
    assert_eq!(report["out"], "www.crt");
    assert_eq!(report["holders"], serde_json::json!(["NK002", "NK003"]));
    assert_eq!(report["session"], Value::Null);
}

/// Serial, validity, fingerprint and issuer of `report` are those OpenSSL reads in `cert`.
fn assert_certificate(env: &Env, report: &Value, cert: &str) {
    assert_eq!(
        report["serial"],
        x509_field(env, cert, &["-serial"]).to_lowercase().as_str()
    );
    assert_eq!(
        report["sha256_fingerprint"],
        bare_hex(&x509_field(env, cert, &["-fingerprint", "-sha256"])).as_str()
    );
    assert_eq!(
        iso(&report["not_before"]),
        x509_field(env, cert, &["-startdate", "-dateopt", "iso_8601"])
    );
    assert_eq!(
        iso(&report["not_after"]),
        x509_field(env, cert, &["-enddate", "-dateopt", "iso_8601"])
    );
    // OpenSSL's one-line names, in certificate order, with spaces around `=`
    for (key, flag) in [("subject", "-subject"), ("issuer", "-issuer")] {
        assert_eq!(
            report[key],
            x509_field(env, cert, &[flag]).replace(" = ", "=").as_str()
        );
    }
    assert_eq!(report["issuer"], "C=FR, O=nkpki tests, CN=Test Root CA");
}

#[test]
fn json_online_sign_revoke_crl_server_lists_and_audit_export() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    let ca = env.register();
    let server = env.serve(&[]);
    let rule = [
        "--approve-profile",
        "server",
        "--approve-san-suffix",
        ".example.org",
        "--approve-revocations",
    ];
    let _agents: Vec<_> = ["NK001", "NK003"]
        .iter()
        .map(|id| env.agent(id, &ca, &server.url, &rule))
        .collect();
    for id in ["NK001", "NK003"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
        assert!(log.contains("connected to"), "{log}");
    }

    // serve ca list: the registered CA, its certificate as OpenSSL reads it, its holders
    let cas = json(&env.nkpki(&["serve", "ca", "list", "--data-dir", "data", "--json"]));
    let cas = cas.as_array().unwrap();
    assert_eq!(cas.len(), 1);
    let c = &cas[0];
    assert_eq!(
        keys(c),
        [
            "ca_id",
            "certificate",
            "holders",
            "name",
            "registered_at",
            "threshold",
            "total"
        ]
    );
    assert_eq!(c["ca_id"], ca.as_str());
    assert_eq!(c["name"], "Test Root CA");
    assert_eq!(
        (&c["threshold"], &c["total"]),
        (&Value::from(2), &Value::from(3))
    );
    assert_eq!(
        c["certificate"]["sha256_fingerprint"],
        bare_hex(&env.ca_fingerprint("ca")).as_str()
    );
    assert_eq!(
        iso(&c["certificate"]["not_after"]),
        x509_field(&env, "ca/ca.crt", &["-enddate", "-dateopt", "iso_8601"])
    );
    let holders_seen = c["holders"].as_array().unwrap();
    assert_eq!(holders_seen.len(), 3);
    assert_eq!(
        keys(&holders_seen[0]),
        ["enrolled", "holder_id", "last_seen", "share_index"]
    );
    for h in holders_seen {
        let enrolled = ["NK001", "NK003"].contains(&h["holder_id"].as_str().unwrap());
        assert_eq!(h["enrolled"], enrolled, "{h}");
    }
    let nk002 = holders_seen
        .iter()
        .find(|h| h["holder_id"] == "NK002")
        .unwrap();
    assert_eq!(
        (&nk002["share_index"], &nk002["last_seen"]),
        (&Value::from(2), &Value::Null)
    );

    // sign --server: the certificate as issued, and the final session
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let mut sign = crate::online::sign_args(&server.url, &ca, &csr, "www.crt");
    sign.push("--json");
    let report = json(&env.nkpki(&sign));
    env.openssl_verify("ca/ca.crt", "www.crt");
    assert_certificate(&env, &report, "www.crt");
    assert_eq!(report["subject"], "CN=www.example.org");
    assert_eq!(report["sans"], serde_json::json!(["DNS:www.example.org"]));
    assert_eq!(
        (&report["ca_id"], &report["days"]),
        (&Value::from(ca.as_str()), &Value::from(30))
    );
    assert_eq!(
        (&report["out"], &report["chain"]),
        (&Value::from("www.crt"), &Value::from(false))
    );
    assert_eq!(report["session"]["state"], "signed");
    assert_eq!(report["session"]["serial"], report["serial"]);
    assert_eq!(
        sorted(
            report["holders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
                .collect()
        ),
        ["NK001", "NK003"]
    );
    let serial = report["serial"].as_str().unwrap().to_owned();

    // revoke: the serial, the reason, and the new CRL listing it
    let revoked = json(&env.nkpki(&[
        "revoke",
        "--server",
        &server.url,
        "--ca",
        &ca,
        "--serial",
        &serial.to_uppercase(),
        "--reason",
        "keyCompromise",
        "--api-token-file",
        "op.token",
        "--crl-out",
        "crl.pem",
        "--json",
    ]));
    assert_eq!(
        keys(&revoked),
        ["ca_id", "crl", "crl_out", "reason", "serial", "session"]
    );
    assert_eq!(
        (&revoked["serial"], &revoked["reason"]),
        (&Value::from(serial.as_str()), &Value::from("keyCompromise"))
    );
    assert_eq!(revoked["crl_out"], "crl.pem");
    assert_eq!(revoked["session"]["state"], "signed");
    let crl = &revoked["crl"];
    assert_eq!(
        keys(crl),
        [
            "issuer",
            "next_update",
            "number",
            "revoked",
            "sha256",
            "this_update"
        ]
    );
    assert_eq!(crl["revoked"].as_array().unwrap().len(), 1);
    assert_eq!(crl["revoked"][0]["serial"], serial.as_str());
    assert_eq!(crl["revoked"][0]["reason"], "keyCompromise");
    let crl_field = |flag: &[&str]| {
        let mut args = vec!["crl", "-in", "crl.pem", "-noout"];
        args.extend_from_slice(flag);
        let out = env.openssl(&args).ok().stdout();
        out.trim().split_once('=').unwrap().1.trim().to_owned()
    };
    assert_eq!(
        crl["number"].as_u64().unwrap(),
        u64::from_str_radix(crl_field(&["-crlnumber"]).trim_start_matches("0x"), 16).unwrap()
    );
    assert_eq!(
        iso(&crl["this_update"]),
        crl_field(&["-lastupdate", "-dateopt", "iso_8601"])
    );
    assert_eq!(
        iso(&crl["next_update"]),
        crl_field(&["-nextupdate", "-dateopt", "iso_8601"])
    );
    env.openssl(&[
        "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
    ])
    .ok();
    let digest = env
        .openssl(&["dgst", "-sha256", "-r", "crl.der"])
        .ok()
        .stdout();
    assert_eq!(crl["sha256"], digest.split_whitespace().next().unwrap());

    // crl (fetch): the same CRL, no session
    let fetched = json(&env.nkpki(&[
        "crl",
        "--server",
        &server.url,
        "--ca",
        &ca,
        "--out",
        "fetched.pem",
        "--json",
    ]));
    assert_eq!(keys(&fetched), ["ca_id", "crl", "out", "session", "signed"]);
    assert_eq!(
        (&fetched["signed"], &fetched["session"]),
        (&Value::from(false), &Value::Null)
    );
    assert_eq!(fetched["crl"], revoked["crl"]);
    assert_eq!(env.read("fetched.pem"), env.read("crl.pem"));

    // crl --sign: the next CRL, listing the same revocation, and its session
    let resigned = json(&env.nkpki(&[
        "crl",
        "--server",
        &server.url,
        "--ca",
        &ca,
        "--sign",
        "--api-token-file",
        "op.token",
        "--out",
        "next.pem",
        "--json",
    ]));
    assert_eq!(resigned["signed"], true);
    assert_eq!(resigned["out"], "next.pem");
    assert_eq!(resigned["session"]["kind"], "crl");
    assert_eq!(resigned["session"]["state"], "signed");
    assert_eq!(
        resigned["crl"]["number"].as_u64(),
        crl["number"].as_u64().map(|n| n + 1)
    );
    assert_eq!(resigned["crl"]["revoked"], crl["revoked"]);

    // a failure with --json: the documented exit code, nothing on standard output
    let other = env.csr(
        "oth",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.com",
        &["subjectAltName=DNS:www.example.com"],
    );
    let mut declined = crate::online::sign_args(&server.url, &ca, &other, "oth.crt");
    declined.push("--json");
    let run = env.nkpki(&declined);
    assert_eq!(run.output.status.code(), Some(4), "{}", run.stderr());
    assert_eq!(run.stdout(), "");
    assert!(run.stderr().contains("declined"), "{}", run.stderr());

    // serve token list: active and revoked tokens, never a token or its hash
    let secret = env
        .nkpki(&[
            "serve",
            "token",
            "create",
            "--data-dir",
            "data",
            "--name",
            "bob",
            "--role",
            "ca-admin",
        ])
        .ok()
        .stdout();
    env.nkpki(&[
        "serve",
        "token",
        "revoke",
        "--data-dir",
        "data",
        "--name",
        "bob",
    ])
    .ok();
    let run = env.nkpki(&["serve", "token", "list", "--data-dir", "data", "--json"]);
    let tokens = json(&run);
    assert!(!run.stdout().contains(secret.trim()));
    let tokens = tokens.as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        keys(&tokens[0]),
        ["created_at", "name", "revoked", "revoked_at", "role"]
    );
    let alice = tokens.iter().find(|t| t["name"] == "alice").unwrap();
    assert_eq!(
        (&alice["role"], &alice["revoked"], &alice["revoked_at"]),
        (&Value::from("operator"), &Value::from(false), &Value::Null)
    );
    let bob = tokens.iter().find(|t| t["name"] == "bob").unwrap();
    assert_eq!(
        (&bob["role"], &bob["revoked"]),
        (&Value::from("ca-admin"), &Value::from(true))
    );
    let revoked_at = bob["revoked_at"].as_str().unwrap();
    time::OffsetDateTime::parse(revoked_at, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{revoked_at}: {e}"));
    assert!(revoked_at >= bob["created_at"].as_str().unwrap());
    // the table says the same
    let table = env
        .nkpki(&["serve", "token", "list", "--data-dir", "data"])
        .ok()
        .stdout();
    let bob_row = table.lines().find(|l| l.starts_with("bob ")).unwrap();
    assert!(
        bob_row.contains("ca-admin") && bob_row.ends_with(revoked_at),
        "{table}"
    );
    let cas_table = env
        .nkpki(&["serve", "ca", "list", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(
        cas_table.starts_with(&format!("CA {ca}  Test Root CA  2 of 3")),
        "{cas_table}"
    );
    assert!(
        cas_table.contains("NK002    share 2   not enrolled last seen -"),
        "{cas_table}"
    );

    // audit export --json: the entries of the JSON lines, in one array, with RFC 3339 times
    let lines = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    let entries = json(&env.nkpki(&["audit", "export", "--data-dir", "data", "--json"]));
    let entries = entries.as_array().unwrap();
    let lines: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(entries.len() >= lines.len() && lines.len() > 5);
    for (entry, line) in entries.iter().zip(&lines) {
        let mut without_time = entry.clone();
        let time = without_time
            .as_object_mut()
            .unwrap()
            .remove("time")
            .unwrap();
        assert_eq!(&without_time, line);
        let at = time::OffsetDateTime::parse(
            time.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(Value::from(at.unix_timestamp()), line["at"]);
    }
    assert_eq!(entries[0]["seq"], 1);
    assert!(
        entries
            .iter()
            .any(|e| e["event"] == "api-token-revoked" && e["detail"] == "bob")
    );
}

#[test]
fn json_listings_refuse_a_directory_without_a_database() {
    let env = Env::new();
    std::fs::create_dir(env.path("empty")).unwrap();
    for what in ["ca", "token"] {
        let run = env.nkpki(&["serve", what, "list", "--data-dir", "empty", "--json"]);
        run.fails_with(&["empty holds no nkpki database"]);
        assert_eq!(run.stdout(), "");
        assert!(
            !env.path("empty/nkpki.sqlite3").exists(),
            "a listing created a database"
        );
    }
}
