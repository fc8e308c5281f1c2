//! Online reshare: a `reshare` session that M holders approve on their agents; the
//! server's session worker makes the new manifest and packages sealed to the new holders'
//! age recipients (the age CLI opens one); the old set keeps signing until M′ new holders
//! have deployed and enrolled, a new-set share is refused before that and an old-set share
//! after; a certificate issued by the new set verifies against the unchanged CA
//! certificate. And each bad request, refused before any holder is asked, and audited.

use crate::harness::{Env, Holder, Proc, Server};

/// A 3-of-5 packaged CA (NK001–NK005) deployed on SoftHSM tokens and registered, with a
/// `ca-admin` API token in `admin.token` (`op.token` is a plain operator's); the age keys
/// of NK001–NK007.
fn deployed_ca(env: &Env) -> (Vec<Holder>, String) {
    deployed_ca_of(env, 5, 3, &[])
}

/// A `threshold`-of-`n` packaged CA (NK001…) deployed and registered, as [`deployed_ca`];
/// the age keys of `n` + 2 holders.
fn deployed_ca_of(env: &Env, n: usize, threshold: usize, more: &[&str]) -> (Vec<Holder>, String) {
    let holders = env.holders(n + 2);
    env.holders_json(&holders[..n], &[]);
    let args = [
        &["--package", "--server-url", "https://pki.example.org:8443"][..],
        more,
    ]
    .concat();
    env.ca_init("ecdsa-p256", threshold, &args).ok();
    for h in &holders[..n] {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    env.admin_token();
    (holders, ca_id)
}

/// `nkpki reshare --server` of the holders.json written, to `out`.
fn reshare_online(
    env: &Env,
    server: &Server,
    ca_id: &str,
    threshold: &str,
    token: &str,
    out: &str,
) -> crate::harness::Run {
    env.nkpki(&[
        "reshare",
        "--server",
        &server.url,
        "--ca",
        ca_id,
        "--api-token-file",
        token,
        "--holders",
        "holders.json",
        "--threshold",
        threshold,
        "--out",
        out,
        "--insecure-http",
    ])
}

fn sign(env: &Env, server: &Server, ca_id: &str, csr: &str, out: &str) -> crate::harness::Run {
    env.nkpki(&[
        "sign",
        "--server",
        &server.url,
        "--ca",
        ca_id,
        "--csr",
        csr,
        "--days",
        "30",
        "--api-token-file",
        "op.token",
        "--out",
        out,
    ])
}

fn leaf_csr(env: &Env, name: &str) -> String {
    env.csr(
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    )
}

/// Starts holder `id`'s agent and waits until it is connected.
fn agent(env: &Env, server: &Server, ca_id: &str, id: &str, rule: &[&str]) -> Proc {
    let proc = env.agent(id, ca_id, &server.url, rule);
    let log = env.wait_for(&format!("agent-{id}.log"), 30, |t| {
        t.contains("connected to")
    });
    assert!(log.contains("connected to"), "{log}");
    proc
}

fn audit(env: &Env) -> String {
    env.nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout()
}

const RULE: [&str; 3] = ["--approve-profile", "server", "--approve-reshare"];

#[test]
fn an_online_reshare_switches_once_the_new_holders_enroll_and_the_new_set_signs() {
    let env = Env::new().with_softhsm(&[
        "NK001", "NK002", "NK003", "NK004", "NK005", "NK006", "NK007",
    ]);
    let (holders, ca_id) = deployed_ca(&env);
    let server = env.serve(&[]);
    let old: Vec<Proc> = ["NK001", "NK002", "NK003"]
        .iter()
        .map(|id| agent(&env, &server, &ca_id, id, &RULE))
        .collect();

    // 3-of-5 → 2-of-4: NK003 and NK004 stay, NK001, NK002, NK005 go, NK006 and NK007 come
    let new: Vec<Holder> = [2, 3, 5, 6].iter().map(|i| holders[*i].clone()).collect();
    env.holders_json(&new, &[]);
    let run = reshare_online(&env, &server, &ca_id, "2", "admin.token", "ca2");
    run.ok();
    assert!(
        run.stdout().contains("version 2, pending"),
        "{}",
        run.stdout()
    );
    let m2: serde_json::Value = serde_json::from_slice(&env.read("ca2/manifest.json")).unwrap();
    assert_eq!(m2["signed"]["set_version"], 2);
    assert_eq!(m2["signed"]["ca_id"].as_str(), Some(ca_id.as_str()));
    let m1: serde_json::Value = serde_json::from_slice(&env.read("ca/manifest.json")).unwrap();
    assert_eq!(
        m2["signed"]["certificate_sha256"],
        m1["signed"]["certificate_sha256"]
    );
    // the reference age CLI opens a package with the holder's own key
    let tar = env.path("NK006.tar");
    env.tool(
        "age",
        &[
            "-d",
            "-i",
            holders[5].key_file.to_str().unwrap(),
            "-o",
            tar.to_str().unwrap(),
            "ca2/packages/NK006.nkpkg",
        ],
    )
    .ok();
    let listing = env
        .tool("tar", &["tf", tar.to_str().unwrap()])
        .ok()
        .stdout();
    assert!(
        listing.contains("share.json") && listing.contains("agent.json"),
        "{listing}"
    );
    // …and not with another holder's
    let wrong = env.tool(
        "age",
        &[
            "-d",
            "-i",
            holders[0].key_file.to_str().unwrap(),
            "ca2/packages/NK006.nkpkg",
        ],
    );
    assert!(!wrong.output.status.success());
    let log = audit(&env);
    assert!(log.contains("reshare-pending"), "{log}");

    // NK006 deploys and enrolls: 1 of 2, no switch; its agent runs, is offered no session
    // of the current set, and the old set still signs
    env.deploy(&holders[5], "ca2/packages/NK006.nkpkg", "NK006", &[])
        .ok();
    let nk006 = agent(&env, &server, &ca_id, "NK006", &RULE);
    let log = env.wait_for("agent-NK006.log", 5, |t| t.contains("share set version 2"));
    assert!(log.contains("1 of the 2 enrollments"), "{log}");
    let csr = leaf_csr(&env, "before");
    let before = sign(&env, &server, &ca_id, &csr, "before.crt");
    before.ok();
    assert!(!before.stdout().contains("NK006"), "{}", before.stdout());
    env.openssl_verify("ca/ca.crt", "before.crt");
    assert!(!audit(&env).contains("share-set-switched"));

    // NK007 deploys and enrolls: the second enrollment switches the CA
    env.deploy(&holders[6], "ca2/packages/NK007.nkpkg", "NK007", &[])
        .ok();
    let nk007 = agent(&env, &server, &ca_id, "NK007", &RULE);
    let log = env.wait_for("agent-NK007.log", 5, |t| t.contains("switched to it"));
    assert!(log.contains("2 of the 2 enrollments"), "{log}");
    let log = audit(&env);
    assert!(log.contains("share-set-switched"), "{log}");
    drop(nk007);
    // the packages stay downloadable by a ca-admin, not by a plain operator
    let session = run
        .stderr()
        .split_whitespace()
        .skip_while(|w| *w != "session")
        .nth(1)
        .unwrap()
        .to_owned();
    let packages = |token: &str| {
        let auth = format!(
            "Authorization: Bearer {}",
            String::from_utf8(env.read(token)).unwrap().trim()
        );
        let url = format!("{}/api/v1/sessions/{session}/packages", server.url);
        env.tool(
            "curl",
            &[
                "-sS",
                "-o",
                "packages.json",
                "-w",
                "%{http_code}",
                "-H",
                &auth,
                &url,
            ],
        )
        .ok()
        .stdout()
    };
    assert_eq!(packages("op.token"), "403");
    assert_eq!(packages("admin.token"), "200");
    let download: serde_json::Value = serde_json::from_slice(&env.read("packages.json")).unwrap();
    assert_eq!(download["state"], "switched");
    assert_eq!(download["enrolled"], serde_json::json!(["NK006", "NK007"]));
    // the set is the one requested; its sealed packages are gone since the switch
    let manifest: serde_json::Value =
        serde_json::from_str(download["result"]["manifest_json"].as_str().unwrap()).unwrap();
    let ids: Vec<&str> = manifest["signed"]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["nitrokey_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["NK003", "NK004", "NK006", "NK007"]);
    assert_eq!(
        manifest["signed"]["share_set"]["threshold"], 2,
        "{manifest}"
    );
    assert_eq!(download["result"]["packages"], serde_json::json!([]));

    // after the switch: NK003's old share is refused as superseded; NK006 and NK007 sign
    let csr = leaf_csr(&env, "after");
    std::thread::scope(|s| {
        let signing = s.spawn(|| sign(&env, &server, &ca_id, &csr, "after.crt"));
        let log = env.wait_for("agent-NK003.log", 30, |t| {
            t.contains("superseded-share-set")
        });
        assert!(log.contains("superseded-share-set"), "{log}");
        let _nk007 = agent(&env, &server, &ca_id, "NK007", &RULE);
        let run = signing.join().unwrap();
        run.ok();
        assert!(
            run.stdout().contains("NK006") && run.stdout().contains("NK007"),
            "{}",
            run.stdout()
        );
    });
    env.openssl_verify("ca/ca.crt", "after.crt");
    drop(nk006);
    drop(old);

    // NK003 stays, had enrolled its token for the old set and not for the new one: its new
    // package's code is spent at the switch (`code-used`), not a wrong code
    env.deploy(&holders[2], "ca2/packages/NK003.nkpkg", "NK003", &["--yes"])
        .ok();
    let _ = std::fs::remove_dir_all(env.path("machine-NK003"));
    drop(agent(&env, &server, &ca_id, "NK003", &RULE));
    let log = audit(&env);
    assert!(
        log.contains("the enrollment code was already used")
            && !log.contains("wrong enrollment code"),
        "{log}"
    );
}

#[test]
fn a_pending_set_answers_no_session_and_goes_stale_at_a_policy_change() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let (holders, ca_id) = deployed_ca_of(&env, 3, 2, &[]);
    let server = env.serve(&[]);
    let rule = [&RULE[..], &["--approve-policy-changes"]].concat();
    let nk001 = agent(&env, &server, &ca_id, "NK001", &rule);
    let nk002 = agent(&env, &server, &ca_id, "NK002", &rule);
    // 2-of-3 → 3-of-4: NK001 and NK002 stay, NK004 and NK005 come
    let new: Vec<Holder> = [0, 1, 3, 4].iter().map(|i| holders[*i].clone()).collect();
    env.holders_json(&new, &[]);
    reshare_online(&env, &server, &ca_id, "3", "admin.token", "ca2").ok();
    // NK004 and NK005 enroll for the pending set: 2 of the 3 the switch needs
    for (i, id) in [(3, "NK004"), (4, "NK005")] {
        env.deploy(&holders[i], &format!("ca2/packages/{id}.nkpkg"), id, &[])
            .ok();
    }
    let pending: Vec<Proc> = ["NK004", "NK005"]
        .iter()
        .map(|id| agent(&env, &server, &ca_id, id, &RULE))
        .collect();
    let log = env.wait_for("agent-NK005.log", 5, |t| t.contains("share set version 2"));
    assert!(log.contains("2 of the 3 enrollments"), "{log}");

    // with one current holder's agent up, the pending holders see the session and their
    // refused answers would end it (3 holders, 2 refusals); they are offered nothing, and
    // the second current holder completes it
    drop(nk002);
    let csr = leaf_csr(&env, "pending");
    let run = std::thread::scope(|s| {
        let signing = s.spawn(|| sign(&env, &server, &ca_id, &csr, "pending.crt"));
        let log = env.wait_for("agent-NK001.log", 30, |t| t.contains("share sent"));
        assert!(log.contains("share sent"), "{log}");
        let log = env.wait_for("agent-NK004.log", 3, |t| t.contains("pending-share-set"));
        assert!(!log.contains("pending-share-set"), "{log}");
        let nk002 = agent(&env, &server, &ca_id, "NK002", &rule);
        let run = signing.join().unwrap();
        (run, nk002)
    });
    let (run, nk002) = run;
    run.ok();
    assert!(
        run.stdout().contains("NK001")
            && run.stdout().contains("NK002")
            && !run.stdout().contains("NK004")
            && !run.stdout().contains("NK005"),
        "{}",
        run.stdout()
    );
    env.openssl_verify("ca/ca.crt", "pending.crt");

    // a policy change replaces the manifest the pending set supersedes: the set is stale,
    // and the enrollment that would have switched to it is refused clearly
    env.write(
        "policy.toml",
        "version = 1\n[server]\napprovals = 2\nmax_days = 200\n",
    );
    env.nkpki(&[
        "policy",
        "propose",
        "--server",
        &server.url,
        "--ca",
        &ca_id,
        "--api-token-file",
        "admin.token",
        "--policy",
        "policy.toml",
    ])
    .ok();
    assert!(audit(&env).contains("reshare-stale"));
    drop(nk001);
    drop(nk002);
    env.deploy(&holders[0], "ca2/packages/NK001.nkpkg", "NK001", &["--yes"])
        .ok();
    let _ = std::fs::remove_dir_all(env.path("machine-NK001"));
    let _nk001 = env.agent("NK001", &ca_id, &server.url, &RULE);
    let log = env.wait_for("agent-NK001.log", 30, |t| t.contains("stale-share-set"));
    assert!(
        log.contains("stale-share-set") && log.contains("reshares again"),
        "{log}"
    );
    assert!(!audit(&env).contains("share-set-switched"));
    drop(pending);
}

#[test]
fn a_reshare_needs_the_strictest_quorum_of_the_ca_policy() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    env.write(
        "policy.toml",
        "version = 1\n[server]\napprovals = 4\nmax_days = 200\n",
    );
    let (holders, ca_id) = deployed_ca_of(&env, 5, 3, &["--policy", "policy.toml"]);
    let server = env.serve(&[]);
    let _agents: Vec<Proc> = ["NK001", "NK002", "NK003", "NK004"]
        .iter()
        .map(|id| agent(&env, &server, &ca_id, id, &RULE))
        .collect();
    let new: Vec<Holder> = [0, 1, 2, 5].iter().map(|i| holders[*i].clone()).collect();
    env.holders_json(&new, &[]);
    let run = reshare_online(&env, &server, &ca_id, "3", "admin.token", "ca2");
    run.ok();
    // [server] asks 4: M shares and one approval without a share
    assert!(run.stderr().contains("4 of 4 approved"), "{}", run.stderr());
    assert!(
        run.stdout().contains("NK001")
            && run.stdout().contains("NK002")
            && run.stdout().contains("NK003")
            && run.stdout().contains("NK004"),
        "{}",
        run.stdout()
    );
}

#[test]
fn holders_of_both_sets_enroll_their_tokens_for_the_new_set_with_the_new_package() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let (holders, ca_id) = deployed_ca(&env);
    let server = env.serve(&[]);
    let old: Vec<Proc> = ["NK001", "NK002", "NK003"]
        .iter()
        .map(|id| agent(&env, &server, &ca_id, id, &RULE))
        .collect();
    // 3-of-5 → 2-of-3 among holders who stay
    env.holders_json(&holders[2..5], &[]);
    reshare_online(&env, &server, &ca_id, "2", "admin.token", "ca2").ok();
    drop(old);
    // NK004 and NK005 were enrolled already: their new packages' codes count them
    for (i, id) in [(3, "NK004"), (4, "NK005")] {
        env.deploy(
            &holders[i],
            &format!("ca2/packages/{id}.nkpkg"),
            id,
            &["--yes"],
        )
        .ok();
        let _ = std::fs::remove_dir_all(env.path(&format!("machine-{id}")));
    }
    let _nk004 = agent(&env, &server, &ca_id, "NK004", &RULE);
    let log = env.wait_for("agent-NK004.log", 5, |t| t.contains("share set version 2"));
    assert!(log.contains("1 of the 2 enrollments"), "{log}");
    let _nk005 = agent(&env, &server, &ca_id, "NK005", &RULE);
    let log = env.wait_for("agent-NK005.log", 5, |t| t.contains("switched to it"));
    assert!(log.contains("2 of the 2 enrollments"), "{log}");
    let csr = leaf_csr(&env, "kept");
    let run = sign(&env, &server, &ca_id, &csr, "kept.crt");
    run.ok();
    assert!(
        run.stdout().contains("NK004") && run.stdout().contains("NK005"),
        "{}",
        run.stdout()
    );
    env.openssl_verify("ca/ca.crt", "kept.crt");
}

#[test]
fn online_reshare_bad_requests_are_refused_before_any_holder_is_asked() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let (holders, ca_id) = deployed_ca(&env);
    let server = env.serve(&["--session-ttl", "10"]);
    let set = |ids: &[usize]| ids.iter().map(|i| holders[*i].clone()).collect::<Vec<_>>();

    let refused = |threshold: &str, token: &str, needles: &[&str]| {
        let run = reshare_online(&env, &server, &ca_id, threshold, token, "out");
        assert!(!run.output.status.success(), "{}", run.stdout());
        let err = run.stderr();
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err}");
        }
        assert!(!env.path("out").exists());
    };
    env.holders_json(&set(&[0, 1, 2, 5]), &[]);
    refused("16", "admin.token", &["outside 2..=15"]);
    refused("5", "admin.token", &["more than the 4 shares"]);
    refused("1", "admin.token", &["outside 2..=15"]);
    // a plain operator may sign, not reshare
    refused("2", "op.token", &["role ca-admin"]);
    // a new holder without a recipient
    env.holders_json(&set(&[0, 1, 2, 5]), &["NK006"]);
    refused("2", "admin.token", &["NK006", "has no age_recipient"]);
    // duplicate and malformed holder ids
    let mut entries: serde_json::Value = serde_json::from_slice(&env.read("holders.json")).unwrap();
    entries[3] = entries[0].clone();
    env.write("holders.json", serde_json::to_vec(&entries).unwrap());
    refused("2", "admin.token", &["holders[3].nitrokey_id", "NK001"]);
    entries[3]["nitrokey_id"] = "NK12".into();
    entries[3]["age_recipient"] = holders[5].recipient.clone().into();
    env.write("holders.json", serde_json::to_vec(&entries).unwrap());
    refused("2", "admin.token", &["holders[3].nitrokey_id"]);
    // one age recipient for two holders
    env.holders_json(&set(&[0, 1, 2, 5]), &[]);
    let mut twins: serde_json::Value = serde_json::from_slice(&env.read("holders.json")).unwrap();
    twins[3]["age_recipient"] = twins[2]["age_recipient"].clone();
    env.write("holders.json", serde_json::to_vec(&twins).unwrap());
    refused(
        "2",
        "admin.token",
        &["NK003 and NK006 have the same age recipient"],
    );
    // two holders
    env.holders_json(&set(&[0, 1]), &[]);
    refused("2", "admin.token", &["between 3 and 20"]);
    let log = audit(&env);
    assert_eq!(
        log.matches("session-refused").count(),
        9,
        "every refusal is audited: {log}"
    );

    // fewer than M approvals: the session expires and nothing changes
    env.holders_json(&set(&[0, 1, 2, 5]), &[]);
    let _agents: Vec<Proc> = ["NK001", "NK002"]
        .iter()
        .map(|id| agent(&env, &server, &ca_id, id, &RULE))
        .collect();
    let run = reshare_online(&env, &server, &ca_id, "2", "admin.token", "out");
    assert_eq!(run.output.status.code(), Some(5), "{}", run.stderr());
    assert!(
        run.stderr().contains("expired with 2 of 3"),
        "{}",
        run.stderr()
    );
    assert!(!env.path("out").exists());
    let log = audit(&env);
    assert!(!log.contains("reshare-pending"), "{log}");
    // an agent without --approve-reshare declines a reshare
    let _nk003 = agent(
        &env,
        &server,
        &ca_id,
        "NK003",
        &["--approve-profile", "server"],
    );
    let run = reshare_online(&env, &server, &ca_id, "2", "admin.token", "out");
    assert!(!run.output.status.success());
    let log = env.wait_for("agent-NK003.log", 5, |t| t.contains("--approve-reshare"));
    assert!(log.contains("a reshare needs a person"), "{log}");
    assert!(!audit(&env).contains("reshare-pending"));
}

#[test]
fn a_threshold_mode_ca_is_not_reshared_online() {
    let primes = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/threshold/rsa-2048.primes"
    );
    let env = Env::new().with_env("NKPKI_TEST_SAFE_PRIMES", primes);
    let holders = env.holders(3);
    env.holders_json(&holders, &[]);
    env.ca_init(
        "rsa-2048",
        2,
        &[
            "--mode",
            "threshold",
            "--package",
            "--server-url",
            "https://pki.example.org:8443",
        ],
    )
    .ok();
    let ca_id = env.register();
    env.admin_token();
    let server = env.serve(&[]);
    let run = reshare_online(&env, &server, &ca_id, "2", "admin.token", "out");
    assert!(!run.output.status.success());
    let err = run.stderr();
    assert!(
        err.contains("re-dealing a threshold key needs the key whole")
            && err.contains("docs/ceremony.md"),
        "{err}"
    );
    assert!(!env.path("out").exists());
    assert!(audit(&env).contains("session-refused"));
}
