//! Server push: `GET /api/v1/sessions/{id}/events` delivers the session's status as the
//! agents answer, ends with the session, and gives its slot back when the client goes.

use crate::harness::Env;
use std::io::BufRead;

const THREE: [&str; 3] = ["NK001", "NK002", "NK003"];
const RULE: [&str; 4] = [
    "--approve-profile",
    "server",
    "--approve-san-suffix",
    ".example.org",
];

/// A server-sent event stream read line by line.
pub(crate) struct Events {
    lines: std::io::Lines<std::io::BufReader<reqwest::blocking::Response>>,
}

impl Events {
    pub(crate) fn from_response(response: reqwest::blocking::Response) -> Self {
        Events {
            lines: std::io::BufReader::new(response).lines(),
        }
    }

    /// The next event as (name, data); `None` when the stream ended. Comments
    /// (keep-alives) are skipped.
    pub(crate) fn next(&mut self) -> Option<(String, String)> {
        let (mut name, mut data) = (String::new(), String::new());
        loop {
            let line = self.lines.next()?.ok()?;
            if line.is_empty() {
                if !data.is_empty() || !name.is_empty() {
                    return Some((name, data));
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
    }

    /// The next `status` event's session status.
    pub(crate) fn status(&mut self) -> Option<nkpki::proto::SessionStatus> {
        loop {
            let (name, data) = self.next()?;
            if name == "status" {
                return Some(serde_json::from_str(&data).unwrap());
            }
        }
    }
}

pub(crate) fn http() -> reqwest::blocking::Client {
    // one TLS crypto provider for the process, as the library's client has
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

fn token(env: &Env) -> String {
    String::from_utf8(env.read("op.token"))
        .unwrap()
        .trim()
        .to_owned()
}

fn open(env: &Env, url: &str, session: &str) -> Events {
    let response = http()
        .get(format!("{url}/api/v1/sessions/{session}/events"))
        .bearer_auth(token(env))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    Events {
        lines: std::io::BufReader::new(response).lines(),
    }
}

fn open_session(env: &Env, url: &str, name: &str) -> String {
    let csr = env.csr(
        name,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &format!("/CN={name}.example.org"),
        &[&format!("subjectAltName=DNS:{name}.example.org")],
    );
    let body = serde_json::json!({
        "ca_id": env.ca_id(),
        "kind": "issue",
        "csr_pem": String::from_utf8(env.read(&csr)).unwrap(),
        "days": 30,
    });
    let status: serde_json::Value = http()
        .post(format!("{url}/api/v1/sessions"))
        .bearer_auth(token(env))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    status["session_id"].as_str().unwrap().to_owned()
}

fn streams_open(env: &Env, url: &str) -> u64 {
    let text = http()
        .get(format!("{url}/metrics"))
        .bearer_auth(token(env))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("nkpki_event_streams "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_event_stream_shows_each_approval_and_ends_with_the_certificate() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let session = open_session(&env, &server.url, "www");
    let mut events = open(&env, &server.url, &session);
    let first = events.status().unwrap();
    assert_eq!(first.state, nkpki::proto::SessionState::Waiting);
    assert!(first.answers.is_empty() && first.seconds_left > 0);
    assert_eq!(first.threshold, 2);
    // a second page on the same session shares the watcher and sees the same
    let mut second = open(&env, &server.url, &session);
    assert_eq!(second.status().unwrap().session_id, session);

    // one holder approves: the stream says so, with who and when
    let _one = env.agent("NK001", &ca_id, &server.url, &RULE);
    let after_one = loop {
        let s = events.status().unwrap();
        if !s.approved.is_empty() {
            break s;
        }
    };
    assert_eq!(after_one.approved, ["NK001"]);
    assert_eq!(after_one.answers.len(), 1);
    assert_eq!(after_one.answers[0].holder, "NK001");
    assert_eq!(after_one.answers[0].outcome, "approved");
    assert!(after_one.answers[0].at > 0);
    assert_eq!(after_one.state, nkpki::proto::SessionState::Waiting);

    // the second: the session is signed, the certificate is in the last event
    let _two = env.agent("NK002", &ca_id, &server.url, &RULE);
    let last = loop {
        let s = events.status().unwrap();
        if s.state != nkpki::proto::SessionState::Waiting {
            break s;
        }
    };
    assert_eq!(last.state, nkpki::proto::SessionState::Signed);
    let pem = last.certificate_pem.unwrap();
    env.write("www.crt", &pem);
    env.openssl_verify("ca/ca.crt", "www.crt");
    assert!(events.next().is_none(), "the stream ends with the session");
    let also = loop {
        let s = second.status().unwrap();
        if s.state != nkpki::proto::SessionState::Waiting {
            break s;
        }
    };
    assert_eq!(also.certificate_pem.unwrap(), pem);
    assert!(second.next().is_none());
    // a final session: one event, then the end
    let mut late = open(&env, &server.url, &session);
    assert_eq!(
        late.status().unwrap().state,
        nkpki::proto::SessionState::Signed
    );
    assert!(late.next().is_none());
}

#[test]
fn event_streams_refuse_strangers_and_unknown_sessions_and_close_when_the_client_goes() {
    let env = Env::new().with_softhsm(&THREE);
    env.packaged_and_deployed(3, 2);
    env.register();
    let server = env.serve(&[]);
    let session = open_session(&env, &server.url, "www");
    let anonymous = http()
        .get(format!("{}/api/v1/sessions/{session}/events", server.url))
        .send()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    for bad in ["00000000000000000000000000000000", "not-hex"] {
        let missing = http()
            .get(format!("{}/api/v1/sessions/{bad}/events", server.url))
            .bearer_auth(token(&env))
            .send()
            .unwrap();
        assert_eq!(missing.status(), 404, "{bad}");
        let body: serde_json::Value = missing.json().unwrap();
        assert_eq!(body["code"], "not-found");
    }
    // streams are counted while open and given back when their client goes away
    assert_eq!(streams_open(&env, &server.url), 0);
    let mut a = open(&env, &server.url, &session);
    let mut b = open(&env, &server.url, &session);
    a.status().unwrap();
    b.status().unwrap();
    assert_eq!(streams_open(&env, &server.url), 2);
    drop(a);
    drop(b);
    // the server notices at its next keep-alive at the latest
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while streams_open(&env, &server.url) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(
        streams_open(&env, &server.url),
        0,
        "a closed stream must not leak"
    );
}
