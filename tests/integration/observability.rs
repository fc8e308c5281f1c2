//! What the server tells its operators: `/metrics` (behind an operator token, or on
//! `--metrics-listen`) with counters that move with real sessions, JSON log lines that carry
//! the session's id, and logs — at the most verbose filter — that hold no secret.

use crate::harness::{Env, contains};
use crate::online::sign_args;
use crate::online_attacks::FakeAgent;
use nkpki::client::{Client, Trust};
use nkpki::proto::{SessionOffer, SessionState, SessionStatus};
use std::io::{Read, Write};
use std::time::Duration;

/// GET `path` on a fresh connection (with `token` as bearer, if any): (status, body).
fn get(url: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name{labels}` (exactly as written) in a Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Every value a share's secret could be written as: its hex, upper-case hex and base64.
fn share_forms(share_json: &[u8]) -> Vec<String> {
    use base64::Engine;
    let share: serde_json::Value = serde_json::from_slice(share_json).unwrap();
    let hex = share["value"].as_str().unwrap().to_owned();
    let bytes = hex::decode(&hex).unwrap();
    vec![
        hex.clone(),
        hex.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(&bytes),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes),
    ]
}

fn open(op: &Client, body: serde_json::Value) -> SessionStatus {
    op.post("/api/v1/sessions", &body).unwrap()
}

fn offer_of(agent: &FakeAgent, session_id: &str) -> SessionOffer {
    agent
        .offers()
        .into_iter()
        .find(|o| o.session_id == session_id)
        .expect("the session is offered")
}

#[test]
fn metrics_move_with_sessions_and_json_logs_carry_the_session_and_no_secret() {
    let env = Env::new().with_env("NKPKI_LOG", "debug");
    let holders = env.packaged_ceremony(5, 3);
    let ca_id = env.register();
    let server = env.serve(&["--log-format", "json"]);
    let url = server.url.clone();
    let token = String::from_utf8(env.read("op.token"))
        .unwrap()
        .trim()
        .to_owned();
    let op = Client::new(&url, &Trust::System, Duration::from_secs(30))
        .unwrap()
        .with_bearer(&token);

    // /metrics is for operators
    let (status, body) = get(&url, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "unauthorized", "{body}");
    let (status, _) = get(&url, "/metrics", Some("nkpki_op_wrong"));
    assert_eq!(status, 401);
    let (status, before) = get(&url, "/metrics", Some(&token));
    assert_eq!(status, 200, "{before}");
    assert!(
        before.contains("# TYPE nkpki_contributions_accepted_total counter"),
        "{before}"
    );
    assert!(
        sample(
            &before,
            "nkpki_auth_refusals_total{code=\"unknown-bearer\"}"
        ) == Some(1.0),
        "{before}"
    );

    let mut agents: Vec<FakeAgent> = holders[..3]
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &url))
        .collect();
    let mut bearers = Vec::new();
    for a in &mut agents {
        a.enroll_with(&a.code.clone()).unwrap();
        bearers.push(a.login_bearer());
    }

    // an issue session: a duplicate contribution refused, then signed by three holders
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let csr_pem = String::from_utf8(env.read(&csr)).unwrap();
    let issue = open(
        &op,
        serde_json::json!({"ca_id": ca_id, "kind": "issue", "csr_pem": csr_pem, "profile": "server", "days": 10}),
    );
    let offer = offer_of(&agents[0], &issue.session_id);
    let first = agents[0].contribution(&offer, &agents[0].share_json);
    agents[0].send(&issue.session_id, &first).unwrap();
    let again = agents[0].send(&issue.session_id, &first).unwrap_err();
    assert_eq!(again.code(), Some("duplicate"), "{again:?}");
    for a in &agents[1..] {
        let offer = offer_of(a, &issue.session_id);
        a.send(&issue.session_id, &a.contribution(&offer, &a.share_json))
            .unwrap();
    }
    let signed: SessionStatus = op
        .get(&format!("/api/v1/sessions/{}", issue.session_id))
        .unwrap();
    assert_eq!(signed.state, SessionState::Signed, "{signed:?}");

    // a CRL session, for the time to its nextUpdate
    let crl = open(&op, serde_json::json!({"ca_id": ca_id, "kind": "crl"}));
    for a in &agents {
        let offer = offer_of(a, &crl.session_id);
        a.send(&crl.session_id, &a.contribution(&offer, &a.share_json))
            .unwrap();
    }

    let (status, after) = get(&url, "/metrics", Some(&token));
    assert_eq!(status, 200, "{after}");
    let series = |name: &str, labels: &str| sample(&after, &format!("{name}{{{labels}}}"));
    let of = |kind: &str, outcome: &str| {
        series(
            "nkpki_sessions_total",
            &format!("ca=\"{ca_id}\",kind=\"{kind}\",outcome=\"{outcome}\""),
        )
    };
    assert_eq!(of("issue", "opened"), Some(1.0), "{after}");
    assert_eq!(of("issue", "signed"), Some(1.0), "{after}");
    assert_eq!(of("crl", "signed"), Some(1.0), "{after}");
    assert_eq!(
        series("nkpki_contributions_refused_total", "code=\"duplicate\""),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "nkpki_contributions_accepted_total"),
        Some(6.0),
        "{after}"
    );
    assert_eq!(
        series("nkpki_holders_online", &format!("ca=\"{ca_id}\"")),
        Some(3.0),
        "{after}"
    );
    let left = series("nkpki_crl_next_update_seconds", &format!("ca=\"{ca_id}\"")).unwrap();
    let week = (nkpki::pki::CRL_VALIDITY_DAYS * 86_400) as f64;
    assert!(left > week - 120.0 && left <= week, "{left}");
    assert!(
        after.contains("nkpki_http_request_duration_seconds_bucket{")
            && after.contains("route=\"/api/v1/sessions/{id}/contribute\""),
        "{after}"
    );
    assert!(
        sample(&after, "nkpki_process_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "{after}"
    );

    // every line is JSON; the session's lines carry its id
    drop(server);
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let in_session = |line: &serde_json::Value, id: &str| {
        line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|s| s["session"] == id))
    };
    for needle in [
        "session opened",
        "share of",
        "refused (duplicate)",
        "session signed",
    ] {
        let matching: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
            })
            .collect();
        assert!(!matching.is_empty(), "no line says {needle:?}:\n{log}");
        for line in matching {
            let id = if in_session(line, &issue.session_id) {
                &issue.session_id
            } else {
                &crl.session_id
            };
            assert!(in_session(line, id), "{line}");
        }
    }
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            == "session opened: issue for alice, 3 of 5 approvals needed"
            && in_session(l, &issue.session_id)),
        "{log}"
    );
    // the request traces are there (debug), and nothing secret is
    assert!(log.contains("/api/v1/agent/login"), "{log}");
    let mut secrets = vec![token.clone()];
    secrets.extend(bearers);
    for a in &agents {
        secrets.push(a.code.clone());
        secrets.extend(share_forms(&a.share_json));
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the log:\n{log}"
        );
    }
    assert!(!log.to_lowercase().contains("authorization"), "{log}");
}

#[test]
fn metrics_listen_serves_metrics_without_a_token_on_its_own_address() {
    let env = Env::new();
    env.packaged_ceremony(3, 2);
    env.register();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let server = env.serve(&["--metrics-listen", &metrics_addr]);
    let metrics_url = format!("http://{metrics_addr}");
    let (status, text) = get(&metrics_url, "/metrics", None);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# TYPE nkpki_holders_online gauge"), "{text}");
    // only /metrics is there: the API is not
    let (status, body) = get(&metrics_url, "/api/v1/cas", None);
    assert_eq!(status, 404, "{body}");
    // and on the main address /metrics still needs a token
    let (status, _) = get(&server.url, "/metrics", None);
    assert_eq!(status, 401);
}

#[test]
fn a_full_online_session_logs_its_id_in_server_and_agents_and_no_secret() {
    const THREE: [&str; 3] = ["NK001", "NK002", "NK003"];
    let env = Env::new()
        .with_softhsm(&THREE)
        .with_env("NKPKI_LOG", "debug");
    let holders = env.packaged_ceremony(3, 2);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    let ca_id = env.register();
    let server = env.serve(&["--log-format", "json"]);
    let rule = [
        "--approve-profile",
        "server",
        "--approve-san-suffix",
        ".example.org",
        "--log-format",
        "json",
    ];
    let agents: Vec<_> = ["NK001", "NK002"]
        .iter()
        .map(|id| env.agent(id, &ca_id, &server.url, &rule))
        .collect();
    for id in ["NK001", "NK002"] {
        let log = env.wait_for(&format!("agent-{id}.log"), 20, |t| {
            t.contains("connected to")
        });
        assert!(log.contains("connected to"), "{log}");
    }
    let csr = env.csr(
        "www",
        &["-newkey", "rsa:2048"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    env.nkpki(&sign_args(&server.url, &ca_id, &csr, "www.crt"))
        .ok();
    env.openssl_verify("ca/ca.crt", "www.crt");
    for id in ["NK001", "NK002"] {
        env.wait_for(&format!("agent-{id}.log"), 20, |t| t.contains("share sent"));
    }
    // the agents first: a server gone would have them log their polls' URLs
    drop(agents);
    drop(server);

    // the session's id, as the server's audit log has it
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    let session_id = audit
        .lines()
        .find(|l| l.contains("session-signed"))
        .and_then(|l| {
            let row: serde_json::Value = serde_json::from_str(l).ok()?;
            row["session_id"].as_str().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{audit}"));

    // the secrets: the token PIN, the operator's API token, each share as the token holds it
    let mut secrets = vec![
        String::from_utf8(env.read("pin.txt"))
            .unwrap()
            .trim()
            .to_owned(),
        String::from_utf8(env.read("op.token"))
            .unwrap()
            .trim()
            .to_owned(),
    ];
    for id in THREE {
        let out = format!("{id}-share.json");
        env.pkcs11_tool(
            id,
            &[
                "--read-object",
                "--type",
                "data",
                "--label",
                &format!("nkpki-share-{ca_id}"),
                "-o",
                &out,
            ],
        )
        .ok();
        secrets.extend(share_forms(&env.read(&out)));
    }
    for file in ["serve.log", "agent-NK001.log", "agent-NK002.log"] {
        let log = std::fs::read_to_string(env.path(file)).unwrap();
        let mut of_session = 0;
        for line in log.lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{file}: {e}: {line}"));
            let message = value["fields"]["message"].as_str().unwrap_or_default();
            let in_span = value["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["session"] == session_id.as_str()));
            if message.contains(&session_id) || in_span {
                of_session += 1;
                assert!(
                    in_span,
                    "{file}: a line of the session lacks its id: {line}"
                );
            }
        }
        assert!(of_session >= 2, "{file} has no line of the session:\n{log}");
        for secret in &secrets {
            assert!(
                !contains(log.as_bytes(), secret.as_bytes()),
                "{file} holds a secret:\n{log}"
            );
        }
        assert!(!log.to_lowercase().contains("bearer "), "{file}:\n{log}");
    }
}
