//! The CA policy changed online, against the real peers: a ca-admin proposes it, holders'
//! agents check and approve the new manifest, the server signs it and enforces it at once,
//! and the agents adopt it; bad proposals are refused (and audited) before any holder is
//! asked, and a declined or expired proposal changes nothing.

use crate::harness::{Env, Server};
use crate::policy::{PRIMES, RULE, deployed_with_policy, deployed_with_policy_as, refused};

const LOOSE: &str = r#"
version = 1

[server]
approvals = 3
max_days = 200
dns_domains = ["example.org"]

[revocation]
approvals = 4
"#;

fn propose(
    env: &Env,
    server: &Server,
    ca_id: &str,
    policy: &[&str],
    token: &str,
) -> crate::harness::Run {
    let mut args = vec![
        "policy",
        "propose",
        "--server",
        &server.url,
        "--ca",
        ca_id,
        "--api-token-file",
        token,
    ];
    args.extend_from_slice(policy);
    env.nkpki(&args)
}

fn sign(
    env: &Env,
    server: &Server,
    ca_id: &str,
    csr: &str,
    days: &str,
    out: &str,
) -> crate::harness::Run {
    env.nkpki(&[
        "sign",
        "--server",
        &server.url,
        "--ca",
        ca_id,
        "--csr",
        csr,
        "--days",
        days,
        "--api-token-file",
        "op.token",
        "--out",
        out,
    ])
}

/// The policy revision of the manifest the server has registered for `ca_id`, and its
/// policy as `policy show --server` prints it.
fn registered_revision(env: &Env, server: &Server, ca_id: &str) -> (u64, String) {
    let run = env.nkpki(&[
        "policy",
        "show",
        "--server",
        &server.url,
        "--ca",
        ca_id,
        "--api-token-file",
        "op.token",
    ]);
    run.ok();
    let shown = run.stderr();
    let revision = shown
        .rsplit("policy revision ")
        .next()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision in {shown:?}"));
    (revision, run.stdout())
}

fn www_csr(env: &Env) -> String {
    env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    )
}

/// A manifest file on disk: verified (by `policy show`), and its policy revision.
fn manifest_on_disk(env: &Env, path: &str) -> (u64, String) {
    let shown = env
        .nkpki(&["policy", "show", "--manifest", path])
        .ok()
        .stdout();
    let json: serde_json::Value = serde_json::from_slice(&env.read(path)).unwrap();
    (
        json["signed"]["policy_revision"].as_u64().unwrap_or(0),
        shown,
    )
}

fn policy_changes_online(key: &str, more: &[&str], env: Env) {
    let ca_id = deployed_with_policy_as(&env, LOOSE, key, more);
    env.admin_token();
    let server = env.serve(&[]);
    let rule = [&RULE[..], &["--approve-policy-changes"]].concat();
    let _agents: Vec<_> = ["NK001", "NK002", "NK003", "NK004"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &rule))
        .collect();
    let csr = www_csr(&env);
    // 100 days pass the loose policy
    sign(&env, &server, &ca_id, &csr, "100", "before.crt").ok();
    env.openssl_verify("ca/ca.crt", "before.crt");

    env.write(
        "strict.toml",
        LOOSE.replace("max_days = 200", "max_days = 60"),
    );
    let run = propose(
        &env,
        &server,
        &ca_id,
        &["--policy", "strict.toml"],
        "admin.token",
    );
    run.ok();
    assert!(
        run.stdout()
            .contains("new CA policy in force from now: policy revision 1"),
        "{}",
        run.stdout()
    );
    // the current policy's strictest quorum ([revocation]: 4) governs its change: M shares
    // and one approval without a share
    assert!(run.stderr().contains("4 of 4 approved"), "{}", run.stderr());
    assert!(
        run.stderr().contains("policy [policy]: 4 approvals"),
        "{}",
        run.stderr()
    );

    // enforced at once, no restart: the same request is refused now
    refused(
        &env,
        &sign(&env, &server, &ca_id, &csr, "100", "after.crt"),
        "after.crt",
        &["server.max_days", "100 days asked, at most 60 allowed"],
    );
    let (revision, shown) = registered_revision(&env, &server, &ca_id);
    assert_eq!(revision, 1);
    assert!(shown.contains("\"max_days\": 60"), "{shown}");
    // the ceremony laptop's copy is brought up to date from the server
    assert_eq!(manifest_on_disk(&env, "ca/manifest.json").0, 0);
    env.nkpki(&[
        "policy",
        "show",
        "--server",
        &server.url,
        "--ca",
        &ca_id,
        "--api-token-file",
        "op.token",
        "--out",
        "ca/manifest.json",
    ])
    .ok();
    assert_eq!(manifest_on_disk(&env, "ca/manifest.json").0, 1);
    assert_eq!(manifest_on_disk(&env, "ca/manifest.json.previous").0, 0);

    // every approving agent adopted the new manifest: on disk, verified, revision 1
    for id in ["NK001", "NK002", "NK003", "NK004"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 30, |t| {
            t.contains("adopted the CA's new manifest")
        });
        assert!(log.contains("policy revision 1 (was 0)"), "{log}");
        let path = format!("cfg-{id}/{ca_id}/manifest.json");
        let (revision, shown) = manifest_on_disk(&env, &path);
        assert_eq!(revision, 1, "{id}");
        assert!(shown.contains("\"max_days\": 60"), "{id}: {shown}");
        let (previous, _) = manifest_on_disk(&env, &format!("{path}.previous"));
        assert_eq!(previous, 0, "{id} keeps the previous manifest");
    }
    // and they sign under it: a request within the new policy still passes
    sign(&env, &server, &ca_id, &csr, "30", "within.crt").ok();
    env.openssl_verify("ca/ca.crt", "within.crt");
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("ca-policy-changed"), "{audit}");

    // the web UI shows the session as the new policy, not the whole manifest body
    let session = run.stderr().split_whitespace().nth(1).unwrap().to_owned();
    let web = crate::web::Web::over(env, server, ca_id);
    let cookie = web.sign_in();
    let page = web
        .get(&format!("/ui/sessions/{session}"), Some(&cookie))
        .text()
        .unwrap();
    assert!(page.contains("change the CA policy"), "{page}");
    assert!(page.contains("id=\"policy-revision\">1<"), "{page}");
    assert!(page.contains("&quot;max_days&quot;: 60"), "{page}");
    assert!(!page.contains("BEGIN CERTIFICATE"), "{page}");
}

#[test]
fn a_reconstruct_ca_changes_its_policy_online_and_agents_adopt_it() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    policy_changes_online("ecdsa-p256", &[], env);
}

#[test]
fn a_threshold_ca_changes_its_policy_online_from_signature_shares() {
    let env = Env::new()
        .with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"])
        .with_env("NKPKI_TEST_SAFE_PRIMES", PRIMES);
    policy_changes_online("rsa-2048", &["--mode", "threshold"], env);
}

#[test]
fn bad_policy_proposals_are_refused_before_any_holder_is_asked() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let ca_id = deployed_with_policy(&env, LOOSE);
    env.admin_token();
    let server = env.serve(&[]);
    let cases = [
        (
            LOOSE.replace("max_days = 200", "maxdays = 60"),
            "unknown field `maxdays`",
        ),
        (
            LOOSE.replace("max_days = 200", "max_days = \"sixty\""),
            "the policy file is not valid",
        ),
        (
            LOOSE.replace("approvals = 3", "approvals = 2"),
            "fewer than this CA's threshold M = 3",
        ),
        (
            LOOSE.replace(
                "approvals = 3",
                "approvals = 3\nrequired_holders = [\"NK009\"]",
            ),
            "\"NK009\" is not a holder of this CA",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let file = format!("bad-{i}.toml");
        env.write(&file, text);
        let run = propose(&env, &server, &ca_id, &["--policy", &file], "admin.token");
        assert_eq!(run.output.status.code(), Some(3), "{}", run.stderr());
        assert!(run.stderr().contains(needle), "{needle}: {}", run.stderr());
    }
    // an operator without role ca-admin may not propose one
    env.write(
        "strict.toml",
        LOOSE.replace("max_days = 200", "max_days = 60"),
    );
    let run = propose(
        &env,
        &server,
        &ca_id,
        &["--policy", "strict.toml"],
        "op.token",
    );
    assert_eq!(run.output.status.code(), Some(6), "{}", run.stderr());
    assert!(run.stderr().contains("role ca-admin"), "{}", run.stderr());
    // and its dry run says so too (not audited: a preview records nothing)
    let preview: serde_json::Value = crate::preview::client(&env, &server.url)
        .post(
            "/api/v1/sessions/preview",
            &serde_json::json!({
                "ca_id": ca_id,
                "kind": "policy",
                "new_policy": {"toml": String::from_utf8(env.read("strict.toml")).unwrap()},
            }),
        )
        .unwrap();
    assert_eq!(preview["accepted"], false, "{preview}");
    assert_eq!(preview["refusal"]["status"], 403, "{preview}");
    // nothing opened, nothing changed, every refusal audited
    assert!(!env.read("serve.log").is_empty());
    assert!(
        !String::from_utf8_lossy(&env.read("serve.log")).contains("session opened"),
        "no session may open"
    );
    assert_eq!(registered_revision(&env, &server, &ca_id).0, 0);
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert_eq!(audit.matches("session-refused").count(), 5, "{audit}");
    assert!(!audit.contains("ca-policy-changed"), "{audit}");
}

#[test]
fn a_declined_or_expired_policy_session_changes_nothing() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003", "NK004", "NK005"]);
    let ca_id = deployed_with_policy(&env, LOOSE);
    env.admin_token();
    env.write(
        "strict.toml",
        LOOSE.replace("max_days = 200", "max_days = 60"),
    );
    {
        // no one approves within the session's time
        let server = env.serve(&["--session-ttl", "10"]);
        let run = propose(
            &env,
            &server,
            &ca_id,
            &["--policy", "strict.toml"],
            "admin.token",
        );
        assert_eq!(run.output.status.code(), Some(5), "{}", run.stderr());
        assert_eq!(registered_revision(&env, &server, &ca_id).0, 0);
    }
    let server = env.serve(&[]);
    // agents with a rule but without --approve-policy-changes decline it
    let _agents: Vec<_> = ["NK001", "NK002", "NK003", "NK004", "NK005"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &RULE))
        .collect();
    let run = propose(
        &env,
        &server,
        &ca_id,
        &["--policy", "strict.toml"],
        "admin.token",
    );
    assert_eq!(run.output.status.code(), Some(4), "{}", run.stderr());
    let log = env.wait_for("agent-NK001.log", 10, |t| t.contains("declined by rule"));
    assert!(
        log.contains("a CA policy change needs a person (or --approve-policy-changes)"),
        "{log}"
    );
    assert_eq!(registered_revision(&env, &server, &ca_id).0, 0);
    // the old policy still rules, on the server and on the agents
    let csr = www_csr(&env);
    sign(&env, &server, &ca_id, &csr, "100", "www.crt").ok();
    env.openssl_verify("ca/ca.crt", "www.crt");
    let (revision, _) = manifest_on_disk(&env, &format!("cfg-NK001/{ca_id}/manifest.json"));
    assert_eq!(revision, 0);
    assert!(
        !env.path(&format!("cfg-NK001/{ca_id}/manifest.json.previous"))
            .exists()
    );
}
