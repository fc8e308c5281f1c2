//! The CA policy against the real peers: a policy set at the ceremony and changed offline
//! with M shares, each rule refusing before anything is signed, a name-constrained sub-CA
//! whose constraints OpenSSL enforces, and online approvals beyond M without shares.

use crate::harness::{Env, Holder, Run};

const POLICY: &str = r#"
version = 1

[server]
approvals = 4
required_holders = ["NK002"]
max_days = 90
dns_domains = ["example.org"]
ip_ranges = ["10.0.0.0/8"]
key_types = ["ecdsa-p256", "rsa-2048"]

[sub-ca]
approvals = 3
max_days = 365
permitted_dns = ["example.org"]
extended_key_usages = ["serverAuth"]
"#;

/// A refusal by the policy: exit code 3, every needle said, nothing written to `out`.
pub(crate) fn refused(env: &Env, run: &Run, out: &str, needles: &[&str]) {
    let err = run.stderr();
    assert_eq!(
        run.output.status.code(),
        Some(3),
        "`{}`: {err}",
        run.cmdline
    );
    for needle in needles {
        assert!(
            err.contains(needle),
            "`{}` must say {needle:?}: {err}",
            run.cmdline
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!env.path(out).exists(), "{out} must not be written");
}

fn pick<'a>(holders: &'a [Holder], ids: &[&str]) -> Vec<&'a Holder> {
    holders
        .iter()
        .filter(|h| ids.contains(&h.id.as_str()))
        .collect()
}

#[test]
fn bad_policies_are_refused_at_the_ceremony_naming_the_key() {
    let env = Env::new();
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.write("low.toml", POLICY.replace("approvals = 3", "approvals = 2"));
    env.ca_init("ecdsa-p256", 3, &["--policy", "low.toml"])
        .fails_with(&["sub-ca.approvals", "fewer than this CA's threshold M = 3"]);
    env.write(
        "typo.toml",
        POLICY.replace("max_days = 90", "max_dayz = 90"),
    );
    env.ca_init("ecdsa-p256", 3, &["--policy", "typo.toml"])
        .fails_with(&["max_dayz"]);
    env.write("nobody.toml", POLICY.replace("NK002", "NK009"));
    env.ca_init("ecdsa-p256", 3, &["--policy", "nobody.toml"])
        .fails_with(&["server.required_holders", "NK009"]);
    env.write(
        "open.toml",
        "version = 1\n[sub-ca]\napprovals = 3\nextended_key_usages = [\"serverAuth\"]\n",
    );
    env.ca_init("ecdsa-p256", 3, &["--policy", "open.toml"])
        .fails_with(&["unconstrained = true"]);
    assert!(
        !env.path("ca").exists(),
        "no ceremony output after a refusal"
    );

    // without a policy the manifest is what it always was: no `policy` key at all
    env.ca_init("ecdsa-p256", 3, &[]).ok();
    let manifest = String::from_utf8(env.read("ca/manifest.json")).unwrap();
    assert!(!manifest.contains("\"policy\""), "{manifest}");
}

#[test]
fn offline_signing_follows_every_rule_and_a_sub_ca_is_name_constrained() {
    let env = Env::new();
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.write("policy.toml", POLICY);
    let init = env.ca_init("ecdsa-p256", 3, &["--policy", "policy.toml"]);
    init.ok();
    assert!(init.stdout().contains("Policy:"), "{}", init.stdout());
    let shown = env
        .nkpki(&["policy", "show", "--manifest", "ca/manifest.json"])
        .ok()
        .stdout();
    assert!(
        shown.contains("\"required_holders\"") && shown.contains("NK002"),
        "{shown}"
    );

    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org,IP:10.1.2.3"],
    );
    // M = 3 shares are not the 4 approvals the server profile asks for
    let three = pick(&holders, &["NK001", "NK002", "NK003"]);
    refused(
        &env,
        &env.sign(&three, &csr, "server", "30", "www.crt"),
        "www.crt",
        &["needs 4 approvals", "3 were given"],
    );
    // four, but not the required holder
    let no_nk002 = pick(&holders, &["NK001", "NK003", "NK004", "NK005"]);
    refused(
        &env,
        &env.sign(&no_nk002, &csr, "server", "30", "www.crt"),
        "www.crt",
        &["requires holder NK002"],
    );
    let four = pick(&holders, &["NK001", "NK002", "NK003", "NK004"]);
    let run = env.sign(&four, &csr, "server", "30", "www.crt");
    run.ok();
    assert!(
        run.stderr()
            .contains("policy [server]: 4 approvals, including NK002"),
        "the verdict is shown before signing: {}",
        run.stderr()
    );
    env.openssl_verify("ca/ca.crt", "www.crt");

    // each rule, broken once: refused before any share is opened, naming the rule
    let cases: [(&str, &[&str], &str, &str, &str); 4] = [
        (
            "long",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "DNS:a.example.org",
            "91",
            "server.max_days",
        ),
        (
            "dom",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "DNS:www.example.com",
            "30",
            "server.dns_domains",
        ),
        (
            "ip",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "IP:192.0.2.7",
            "30",
            "server.ip_ranges",
        ),
        (
            "p384",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            "DNS:b.example.org",
            "30",
            "server.key_types",
        ),
    ];
    for (name, newkey, san, days, rule) in cases {
        let csr = env.csr(name, newkey, "/CN=x", &[&format!("subjectAltName={san}")]);
        let out = format!("{name}.crt");
        refused(
            &env,
            &env.sign(&four, &csr, "server", days, &out),
            &out,
            &[rule],
        );
    }
    // a common name outside the judged names (only an IP address in the SANs)
    let cn = env.csr(
        "cn",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=bank.example.com",
        &["subjectAltName=IP:10.1.2.3"],
    );
    refused(
        &env,
        &env.sign(&four, &cn, "server", "30", "cn.crt"),
        "cn.crt",
        &["server.dns_domains", "common name"],
    );
    // a profile the policy has no section for is not issued
    let client = env.csr(
        "cl",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=alice",
        &[],
    );
    refused(
        &env,
        &env.sign(&four, &client, "client", "30", "cl.crt"),
        "cl.crt",
        &["no [client] section"],
    );

    // the sub-CA: critical name constraints from the policy, path length 0, serverAuth
    let sub_csr = env.csr(
        "sub",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=Constrained Sub CA/O=nkpki tests/C=FR",
        &[],
    );
    env.sign(&three, &sub_csr, "sub-ca", "365", "sub.crt").ok();
    let text = env
        .openssl(&["x509", "-in", "sub.crt", "-noout", "-text"])
        .ok()
        .stdout();
    for needle in [
        "X509v3 Name Constraints: critical",
        "DNS:example.org",
        // no IP range is permitted: every address is excluded
        "Excluded:",
        "IP:0.0.0.0/0.0.0.0",
        "pathlen:0",
        "TLS Web Server Authentication",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    env.openssl_verify("ca/ca.crt", "sub.crt");
    env.pkilint_cert("sub.crt");

    // the sub-CA's key signs a leaf inside and one outside its constraints
    env.write(
        "leaf.ext",
        "subjectAltName=DNS:shop.example.org\nextendedKeyUsage=serverAuth\n",
    );
    env.write(
        "evil.ext",
        "subjectAltName=DNS:shop.example.com\nextendedKeyUsage=serverAuth\n",
    );
    env.write(
        "ip.ext",
        "subjectAltName=IP:10.1.2.3\nextendedKeyUsage=serverAuth\n",
    );
    for (leaf, ext) in [
        ("inside", "leaf.ext"),
        ("outside", "evil.ext"),
        ("ip", "ip.ext"),
    ] {
        let csr = env.csr(
            leaf,
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            "/CN=shop",
            &[],
        );
        env.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "sub.crt",
            "-CAkey",
            "sub.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            ext,
            "-out",
            &format!("{leaf}.crt"),
        ])
        .ok();
    }
    let inside = env.openssl(&[
        "verify",
        "-CAfile",
        "ca/ca.crt",
        "-untrusted",
        "sub.crt",
        "inside.crt",
    ]);
    inside.ok();
    assert!(inside.stdout().contains(": OK"), "{}", inside.stdout());
    let outside = env.openssl(&[
        "verify",
        "-CAfile",
        "ca/ca.crt",
        "-untrusted",
        "sub.crt",
        "outside.crt",
    ]);
    let said = outside.stdout() + &outside.stderr();
    assert!(
        !outside.output.status.success() && said.contains("permitted subtree violation"),
        "OpenSSL must refuse a leaf outside the constraints: {said}"
    );
    // an IP address, a kind the policy does not permit, is excluded
    let ip = env.openssl(&[
        "verify",
        "-CAfile",
        "ca/ca.crt",
        "-untrusted",
        "sub.crt",
        "ip.crt",
    ]);
    let said = ip.stdout() + &ip.stderr();
    assert!(
        !ip.output.status.success() && said.contains("excluded subtree violation"),
        "OpenSSL must refuse a leaf with an IP address: {said}"
    );

    // a sub-CA request naming something outside the constraints is refused
    let wide = env.csr(
        "wide",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=Wide Sub CA",
        &["subjectAltName=DNS:ca.example.com"],
    );
    env.sign(&three, &wide, "sub-ca", "365", "wide.crt")
        .fails_with(&["DNS:ca.example.com", "outside the name constraints"]);
    assert!(!env.path("wide.crt").exists());
}

#[test]
fn a_policy_is_changed_offline_with_m_shares() {
    let env = Env::new();
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.write("policy.toml", POLICY);
    env.ca_init("ecdsa-p256", 3, &["--policy", "policy.toml"])
        .ok();
    let before = env.read("ca/manifest.json");
    let shares: Vec<String> = ["NK001", "NK002", "NK003"]
        .iter()
        .flat_map(|id| {
            let h = holders.iter().find(|h| h.id == *id).unwrap();
            [
                "--share".to_owned(),
                format!("ca/shares/{id}.age"),
                "--identity".to_owned(),
                h.key_file.to_string_lossy().into_owned(),
            ]
        })
        .collect();
    let set = |policy: &str, count: usize| {
        let mut args = vec!["policy", "set", "--ca", "ca", "--policy", policy];
        args.extend(shares[..4 * count].iter().map(String::as_str));
        env.nkpki(&args)
    };
    // a new policy that asks fewer approvals than M is refused; nothing changes
    env.write("low.toml", "version = 1\n[server]\napprovals = 2\n");
    set("low.toml", 3).fails_with(&["server.approvals", "fewer than this CA's threshold M = 3"]);
    // M - 1 shares cannot sign a new manifest
    env.write(
        "relaxed.toml",
        "version = 1\n[server]\napprovals = 3\nmax_days = 200\n",
    );
    set("relaxed.toml", 2).fails_with(&["2 valid share(s) given; this CA needs 3"]);
    assert_eq!(env.read("ca/manifest.json"), before);

    let fingerprint = env.ca_fingerprint("ca");
    env.nkpki(&[
        "serve",
        "ca",
        "add",
        "--data-dir",
        "data",
        "--manifest",
        "ca/manifest.json",
        "--expect-fingerprint",
        &fingerprint,
    ])
    .ok();
    set("relaxed.toml", 3).ok();
    assert_eq!(env.read("ca/manifest.json.previous"), before);
    // the server takes the new manifest: same CA, only the policy changed
    let took = env
        .nkpki(&[
            "serve",
            "ca",
            "set-policy",
            "--data-dir",
            "data",
            "--manifest",
            "ca/manifest.json",
        ])
        .ok()
        .stdout();
    assert!(took.contains("new CA policy"), "{took}");
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("ca-policy-changed"), "{audit}");
    // the manifest from before the change is validly signed, but older: refused
    env.nkpki(&[
        "serve",
        "ca",
        "set-policy",
        "--data-dir",
        "data",
        "--manifest",
        "ca/manifest.json.previous",
    ])
    .fails_with(&["policy revision (0) is not newer than the registered one (1)"]);
    // a manifest that changes anything else (here: its holders) is not a policy change
    let mut other: serde_json::Value =
        serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    other["signed"]["holders"][0]["location"] = "Lyon".into();
    env.write("other.json", serde_json::to_vec(&other).unwrap());
    env.nkpki(&[
        "serve",
        "ca",
        "set-policy",
        "--data-dir",
        "data",
        "--manifest",
        "other.json",
    ])
    .fails_with(&["signature does not verify"]);
    env.nkpki(&[
        "policy",
        "check",
        "--policy",
        "relaxed.toml",
        "--manifest",
        "ca/manifest.json",
    ])
    .ok();
    // the CA is the same; the new rule applies: 3 approvals, 200 days
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.net",
        &["subjectAltName=DNS:www.example.net"],
    );
    let three = pick(&holders, &["NK003", "NK004", "NK005"]);
    env.sign(&three, &csr, "server", "200", "www.crt").ok();
    env.openssl_verify("ca/ca.crt", "www.crt");
}

const ONLINE_POLICY: &str = r#"
version = 1

[server]
approvals = 4
required_holders = ["NK005"]
max_days = 60
dns_domains = ["example.org"]
"#;

pub(crate) const RULE: [&str; 4] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
];

/// A packaged 3-of-5 ceremony with `policy`, deployed onto five tokens and registered.
pub(crate) fn deployed_with_policy(env: &Env, policy: &str) -> String {
    deployed_with_policy_as(env, policy, "ecdsa-p256", &[])
}

/// [`deployed_with_policy`] with a `key` and more `ca-init` arguments (e.g. the mode).
pub(crate) fn deployed_with_policy_as(env: &Env, policy: &str, key: &str, more: &[&str]) -> String {
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.write("policy.toml", policy);
    let args = [
        more,
        &[
            "--policy",
            "policy.toml",
            "--package",
            "--server-url",
            "https://pki.example.org:8443",
        ],
    ]
    .concat();
    env.ca_init(key, 3, &args).ok();
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    env.register()
}

#[test]
fn online_a_quorum_above_m_takes_approvals_without_shares() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let ca_id = deployed_with_policy(&env, ONLINE_POLICY);
    let server = env.serve(&[]);
    let sign = |csr: &str, days: &str, out: &str| {
        env.nkpki(&[
            "sign",
            "--server",
            &server.url,
            "--ca",
            &ca_id,
            "--csr",
            csr,
            "--days",
            days,
            "--api-token-file",
            "op.token",
            "--out",
            out,
        ])
    };
    // refused by the server before any holder is asked, naming the rule
    let far = env.csr(
        "far",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.com",
        &["subjectAltName=DNS:www.example.com"],
    );
    refused(
        &env,
        &sign(&far, "30", "far.crt"),
        "far.crt",
        &["server.dns_domains"],
    );
    // with the manifest at hand, `sign` shows the verdict and opens no session at all
    let local = env.nkpki(&[
        "sign",
        "--server",
        &server.url,
        "--ca",
        &ca_id,
        "--csr",
        &far,
        "--days",
        "30",
        "--api-token-file",
        "op.token",
        "--out",
        "far.crt",
        "--manifest",
        "ca/manifest.json",
    ]);
    refused(
        &env,
        &local,
        "far.crt",
        &["server.dns_domains", "no session was opened"],
    );
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert_eq!(
        audit.matches("session-refused").count(),
        1,
        "the server's refusal is audited, the local one never reached it: {audit}"
    );
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    refused(
        &env,
        &sign(&csr, "61", "long.crt"),
        "long.crt",
        &["server.max_days"],
    );

    // three holders give the M shares; the session then waits for the policy's fourth
    // approval, which must be NK005's: its agent, started late, approves without a share
    let _first: Vec<_> = ["NK001", "NK002", "NK003"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    let run = std::thread::scope(|scope| {
        let signing = scope.spawn(|| sign(&csr, "30", "www.crt"));
        for id in ["NK001", "NK002", "NK003"] {
            let log = env.wait_for(&format!("agent-{id}.log"), 60, |t| t.contains("share sent"));
            assert!(log.contains("share sent"), "{log}");
        }
        let status = env.wait_for("serve.log", 10, |t| t.matches("accepted: ").count() >= 3);
        assert!(
            !status.contains("session signed"),
            "M shares must not sign alone: {status}"
        );
        let _late = env.agent("NK005", &ca_id, &server.url, &RULE);
        let log = env.wait_for("agent-NK005.log", 60, |t| {
            t.contains("approval (no share) sent")
        });
        assert!(log.contains("approval (no share) sent"), "{log}");
        signing.join().unwrap()
    });
    run.ok();
    assert!(run.stderr().contains("4 of 4 approved"), "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("policy [server]: 4 approvals, including NK005"),
        "{}",
        run.stderr()
    );
    env.openssl_verify("ca/ca.crt", "www.crt");
    env.pkilint_cert("www.crt");
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("approval without a share"), "{audit}");
}

#[test]
fn online_a_required_holder_who_declines_ends_the_session() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let ca_id = deployed_with_policy(&env, ONLINE_POLICY);
    let server = env.serve(&[]);
    let _agents: Vec<_> = ["NK001", "NK002", "NK003", "NK004"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    // NK005 approves only client certificates: it declines this one
    let _nk005 = env.agent(
        "NK005",
        &ca_id,
        &server.url,
        &["--approve-profile", "client"],
    );
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let run = env.nkpki(&[
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
        "www.crt",
    ]);
    assert_eq!(run.output.status.code(), Some(4), "{}", run.stderr());
    assert!(run.stderr().contains("declined"), "{}", run.stderr());
    assert!(!env.path("www.crt").exists());
}

/// Safe primes of the test ceremonies (public, tests only).
pub(crate) const PRIMES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/threshold/rsa-2048.primes"
);

#[test]
fn a_threshold_ca_changes_its_policy_from_tokens_and_takes_approvals_without_shares() {
    let env = Env::new()
        .with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"])
        .with_env("NKPKI_TEST_SAFE_PRIMES", PRIMES);
    let ca_id = deployed_with_policy_as(&env, ONLINE_POLICY, "rsa-2048", &["--mode", "threshold"]);
    // a stricter validity, signed from three tokens' signature shares (the key is never whole)
    env.write(
        "strict.toml",
        ONLINE_POLICY.replace("max_days = 60", "max_days = 30"),
    );
    env.nkpki(&[
        "policy",
        "set",
        "--ca",
        "ca",
        "--policy",
        "strict.toml",
        "--token",
        "NK001",
        "--token",
        "NK002",
        "--token",
        "NK003",
        "--pin-file",
        "pin.txt",
    ])
    .ok();
    env.nkpki(&[
        "serve",
        "ca",
        "set-policy",
        "--data-dir",
        "data",
        "--manifest",
        "ca/manifest.json",
    ])
    .ok();
    let server = env.serve(&[]);
    let sign = |days: &str, out: &str| {
        env.nkpki(&[
            "sign",
            "--server",
            &server.url,
            "--ca",
            &ca_id,
            "--csr",
            "www.csr",
            "--days",
            days,
            "--api-token-file",
            "op.token",
            "--out",
            out,
        ])
    };
    env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    refused(
        &env,
        &sign("45", "long.crt"),
        "long.crt",
        &["server.max_days", "at most 30"],
    );

    let _first: Vec<_> = ["NK001", "NK002", "NK003"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    let run = std::thread::scope(|scope| {
        let signing = scope.spawn(|| sign("30", "www.crt"));
        for id in ["NK001", "NK002", "NK003"] {
            let log = env.wait_for(&format!("agent-{id}.log"), 60, |t| {
                t.contains("signature share sent")
            });
            assert!(log.contains("signature share sent"), "{log}");
        }
        let _late = env.agent("NK005", &ca_id, &server.url, &RULE);
        let log = env.wait_for("agent-NK005.log", 60, |t| {
            t.contains("approval (no share) sent")
        });
        assert!(log.contains("approval (no share) sent"), "{log}");
        signing.join().unwrap()
    });
    run.ok();
    assert!(run.stderr().contains("4 of 4 approved"), "{}", run.stderr());
    env.openssl_verify("ca/ca.crt", "www.crt");
}

#[test]
fn an_approval_without_a_share_counts_only_once_m_shares_are_in() {
    use crate::online_attacks::{FakeAgent, open_session, refused as api_refused};
    use nkpki::client::{Client, Trust};
    use nkpki::proto::{SessionState, SessionStatus};

    let env = Env::new();
    let holders = env.holders(5);
    env.holders_json(&holders, &[]);
    env.write("policy.toml", ONLINE_POLICY);
    env.ca_init(
        "ecdsa-p256",
        3,
        &[
            "--policy",
            "policy.toml",
            "--package",
            "--server-url",
            "https://pki.example.org:8443",
        ],
    )
    .ok();
    let ca_id = env.register();
    let server = env.serve(&[]);
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let op = Client::new(
        &server.url,
        &Trust::System,
        std::time::Duration::from_secs(30),
    )
    .unwrap()
    .with_bearer(token.trim());
    let mut agents: Vec<FakeAgent> = holders
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &server.url))
        .collect();
    for a in &mut agents {
        a.enroll_with(&a.code.clone()).unwrap();
        a.login();
    }
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let csr_pem = String::from_utf8(env.read(&csr)).unwrap();
    let session = open_session(&op, &ca_id, &csr_pem);
    assert_eq!((session.threshold, session.needed()), (3, 4));
    assert_eq!(session.required_holders, ["NK005"]);

    let approval = |a: &FakeAgent| {
        let offer = a.offers().into_iter().next().expect("an offer");
        let mut c = a.contribution_sealed(&offer, String::new());
        c.envelope.ciphertext_sha256 = String::new();
        a.resign(&mut c);
        assert!(
            c.envelope
                .signed_bytes()
                .starts_with(b"nkpki approval v1\n")
        );
        (offer, c)
    };
    // before M shares, an approval without a share is refused
    let (offer, c) = approval(&agents[0]);
    assert!(!offer.approval_only);
    let policy = offer.policy.clone().expect("the offer carries the rule");
    assert_eq!(
        (policy.approvals, policy.required_holders),
        (4, vec!["NK005".to_owned()])
    );
    api_refused(agents[0].send(&session.session_id, &c), 409, "share-needed");
    // three shares: M, but not the policy's four approvals nor NK005
    for a in &agents[1..4] {
        let offer = a.offers().into_iter().next().expect("an offer");
        let c = a.contribution(&offer, &a.share_json);
        let status = a.send(&session.session_id, &c).unwrap();
        assert_eq!(status.state, SessionState::Waiting);
    }
    // NK005 is now asked for an approval only, and its approval signs
    let (offer, c) = approval(&agents[4]);
    assert!(offer.approval_only, "M shares are in: {offer:?}");
    let status: SessionStatus = agents[4].send(&session.session_id, &c).unwrap();
    assert_eq!(status.state, SessionState::Signed, "{status:?}");
    assert_eq!(status.approved, ["NK002", "NK003", "NK004", "NK005"]);
    env.write("www.crt", status.certificate_pem.unwrap());
    env.openssl_verify("ca/ca.crt", "www.crt");
}
