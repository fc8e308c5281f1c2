//! The server's store under ordinary faults: a second server on the same data directory,
//! a damaged database, and backups taken while the server runs.

use crate::harness::{Env, children};

/// A registered CA and an operator token in `data/`, without tokens or agents.
fn registered(env: &Env) -> String {
    env.packaged_ceremony(3, 2);
    env.register()
}

/// A 2-of-3 CA deployed on the tokens NK001..NK003 and registered, as [`registered`].
fn deployed(env: &Env) -> String {
    let holders = env.packaged_ceremony(3, 2);
    for h in &holders {
        env.deploy(h, &format!("ca/packages/{}.nkpkg", h.id), &h.id, &[])
            .ok();
    }
    env.register()
}

/// A client with the operator token of [`registered`].
fn operator(env: &Env, url: &str) -> nkpki::client::Client {
    let token = String::from_utf8(env.read("op.token")).unwrap();
    nkpki::client::Client::new(
        url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(token.trim())
}

fn open_session(env: &Env, url: &str, ca_id: &str) -> serde_json::Value {
    operator(env, url)
        .post(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca_id, "kind": "crl"}),
        )
        .unwrap()
}

/// The session's state once it has left `waiting` (or still `waiting` after 20 s).
fn settled_state(env: &Env, url: &str, id: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let state = session_state(env, url, id);
        if state != "waiting" || std::time::Instant::now() > deadline {
            return state;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The status of a session that must have failed because its stored request or
/// certificate was changed.
fn failed_as_unapproved(env: &Env, url: &str, id: &str) -> serde_json::Value {
    assert_eq!(settled_state(env, url, id), "failed");
    let status: serde_json::Value = operator(env, url)
        .get(&format!("/api/v1/sessions/{id}"))
        .unwrap();
    assert!(
        status["detail"]
            .as_str()
            .unwrap()
            .contains("not the one the holders approved"),
        "{status}"
    );
    status
}

fn session_state(env: &Env, url: &str, id: &str) -> String {
    let status: serde_json::Value = operator(env, url)
        .get(&format!("/api/v1/sessions/{id}"))
        .unwrap();
    status["state"].as_str().unwrap().to_owned()
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused_and_changes_nothing() {
    let env = Env::new();
    let ca_id = registered(&env);
    let first = env.serve(&[]);
    let session = open_session(&env, &first.url, &ca_id);
    let id = session["session_id"].as_str().unwrap();
    // on another port, and on the same one: both refused before touching the store
    for listen in ["127.0.0.1:0", first.url.trim_start_matches("http://")] {
        let second = env.nkpki(&["serve", "--listen", listen, "--data-dir", "data"]);
        second.fails_with(&[
            "in use by another nkpki serve",
            &format!("PID {}", first.proc.child.id()),
        ]);
    }
    assert_eq!(session_state(&env, &first.url, id), "waiting");
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(!audit.contains("aborted"), "{audit}");
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn a_backup_taken_while_serving_restores_and_verifies() {
    let env = Env::new();
    let ca_id = registered(&env);
    let server = env.serve(&[]);
    let session = open_session(&env, &server.url, &ca_id);
    env.nkpki(&[
        "serve",
        "backup",
        "--data-dir",
        "data",
        "--out",
        "backup.sqlite3",
    ])
    .ok();
    // never over an existing file
    env.nkpki(&[
        "serve",
        "backup",
        "--data-dir",
        "data",
        "--out",
        "backup.sqlite3",
    ])
    .fails_with(&["already exists"]);
    drop(server);
    // restore: the copy alone in a fresh directory
    std::fs::create_dir(env.path("restored")).unwrap();
    std::fs::copy(
        env.path("backup.sqlite3"),
        env.path("restored/nkpki.sqlite3"),
    )
    .unwrap();
    env.nkpki(&["audit", "verify", "--data-dir", "restored"])
        .ok();
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "restored"])
        .ok()
        .stdout();
    assert!(
        audit.contains(session["session_id"].as_str().unwrap()),
        "the backup holds the session opened before it: {audit}"
    );
}

#[test]
fn a_damaged_database_is_refused_with_a_pointer_to_the_backups() {
    let env = Env::new();
    registered(&env);
    // enough rows to spread over many pages
    for i in 0..60 {
        env.nkpki(&[
            "serve",
            "token",
            "create",
            "--data-dir",
            "data",
            "--name",
            &format!("operator-{i}"),
        ])
        .ok();
    }
    let db = env.path("data/nkpki.sqlite3");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages > 4, "{pages} pages");
    let middle = pages / 2 * page;
    bytes[middle..middle + page].fill(0xA5);
    std::fs::write(&db, &bytes).unwrap();
    let run = env.nkpki(&["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"]);
    run.fails_with(&["is damaged", "serve backup", "operator-guide.md"]);
}

#[test]
fn a_session_whose_worker_dies_fails_cleanly_and_the_next_one_signs() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003"]);
    let ca_id = deployed(&env);
    let server = env.serve(&[]);
    let session = open_session(&env, &server.url, &ca_id);
    let id = session["session_id"].as_str().unwrap().to_owned();
    let workers = children(server.proc.child.id());
    assert_eq!(workers.len(), 1, "one worker per open session: {workers:?}");
    env.tool("kill", &["-9", &workers[0].to_string()]).ok();
    let rule = ["--approve-revocations"];
    let _agents: Vec<_> = ["NK001", "NK002"]
        .iter()
        .map(|h| env.agent(h, &ca_id, &server.url, &rule))
        .collect();
    assert_eq!(settled_state(&env, &server.url, &id), "failed");
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("the session's worker failed"), "{audit}");
    // the server goes on: a new session gets a new worker and signs
    let next = open_session(&env, &server.url, &ca_id);
    let next_id = next["session_id"].as_str().unwrap().to_owned();
    assert_eq!(settled_state(&env, &server.url, &next_id), "signed");
    assert!(
        children(server.proc.child.id()).is_empty(),
        "the worker exited after signing"
    );
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn sigterm_aborts_open_sessions_records_it_and_exits_cleanly() {
    let env = Env::new();
    let ca_id = registered(&env);
    let mut server = env.serve(&[]);
    let session = open_session(&env, &server.url, &ca_id);
    let id = session["session_id"].as_str().unwrap().to_owned();
    let pid = server.proc.child.id();
    let workers = children(pid);
    assert_eq!(workers.len(), 1, "{workers:?}");
    env.tool("kill", &["-TERM", &pid.to_string()]).ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.proc.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    assert!(
        !std::path::Path::new(&format!("/proc/{}", workers[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", workers[0]))
                .unwrap_or_default()
                .contains(") Z "),
        "the session's worker outlived the server"
    );
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert!(
        log.contains("stopped (SIGTERM): 1 open session(s) aborted"),
        "{log}"
    );
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    assert!(audit.contains("server-stopped"), "{audit}");
    assert!(
        audit.contains(&id) && audit.contains("the server stopped (SIGTERM)"),
        "{audit}"
    );
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
    // the next start finds nothing left open to abort
    let again = env.serve(&[]);
    drop(again);
    let log = std::fs::read_to_string(env.path("serve.log")).unwrap();
    assert!(!log.contains("left open by the previous run"), "{log}");
}

/// A small tmpfs mounted over a directory for one test; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// None (and a note) where this machine does not let the test mount one.
    fn mount(dir: std::path::PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            Some(SmallDisk(dir))
        } else {
            eprintln!(
                "skipped: cannot mount a tmpfs here (needs root): the full-disk test did not run"
            );
            None
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_session_cleanly_and_the_ending_is_recorded_once_space_returns() {
    use crate::online_attacks::FakeAgent;
    let env = Env::new();
    let Some(_disk) = SmallDisk::mount(env.path("data"), "8m") else {
        return;
    };
    let holders = env.packaged_ceremony(3, 2);
    let ca_id = env.register();
    let server = env.serve(&[]);
    let mut agents: Vec<FakeAgent> = holders[..2]
        .iter()
        .map(|h| FakeAgent::from_package(&env, h, &server.url))
        .collect();
    for a in &mut agents {
        let code = a.code.clone();
        a.enroll_with(&code).unwrap();
        a.login();
    }
    let session = open_session(&env, &server.url, &ca_id);
    let id = session["session_id"].as_str().unwrap().to_owned();
    let offer = agents[0]
        .offers()
        .into_iter()
        .find(|o| o.session_id == id)
        .unwrap();
    // fill the disk to the last byte
    let fill = env.tool("dd", &["if=/dev/zero", "of=data/fill", "bs=4096"]);
    assert!(
        !fill.output.status.success(),
        "dd should have run out of space"
    );
    let contribution = agents[0].contribution(&offer, &agents[0].share_json);
    match agents[0].send(&id, &contribution) {
        Err(nkpki::client::ClientError::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (503, "store-unavailable"));
        }
        other => panic!("{other:?}"),
    }
    // the operator is told at once, and the worker holding the share is gone
    assert_eq!(session_state(&env, &server.url, &id), "failed");
    assert!(
        children(server.proc.child.id()).is_empty(),
        "the failed session's worker (holding a share) must be gone"
    );
    // space returns: the ending is written, and the audit chain holds
    std::fs::remove_file(env.path("data/fill")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let audit = loop {
        let audit = env
            .nkpki(&["audit", "export", "--data-dir", "data"])
            .ok()
            .stdout();
        if audit.contains("recorded late") || std::time::Instant::now() > deadline {
            break audit;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        audit.contains("session-failed") && audit.contains("recorded late"),
        "{audit}"
    );
    assert!(audit.contains("the store refused a write"), "{audit}");
    drop(server);
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn concurrent_administration_beside_a_busy_server_loses_nothing() {
    let env = Env::new();
    let ca_id = registered(&env);
    let server = env.serve(&[]);
    let bin = assert_cmd::cargo::cargo_bin("nkpki");
    let writers: Vec<_> = (0..12)
        .map(|i| {
            std::process::Command::new(&bin)
                .args(["serve", "token", "create", "--data-dir", "data", "--name"])
                .arg(format!("admin-{i}"))
                .current_dir(env.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let sessions: Vec<String> = (0..6)
        .map(|_| {
            open_session(&env, &server.url, &ca_id)["session_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let audit = env
        .nkpki(&["audit", "export", "--data-dir", "data"])
        .ok()
        .stdout();
    for i in 0..12 {
        assert!(
            audit.contains(&format!("admin-{i}")),
            "admin-{i} lost: {audit}"
        );
    }
    for id in &sessions {
        assert!(audit.contains(id.as_str()), "session {id} lost");
    }
    env.nkpki(&["audit", "verify", "--data-dir", "data"]).ok();
}

#[test]
fn a_request_changed_in_the_database_during_its_session_is_not_signed() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003"]);
    let ca_id = deployed(&env);
    let server = env.serve(&[]);
    let session = open_session(&env, &server.url, &ca_id);
    let id = session["session_id"].as_str().unwrap().to_owned();
    // someone with write access to the database swaps the request the holders will approve
    let db = rusqlite::Connection::open(env.path("data/nkpki.sqlite3")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let changed = db
        .execute(
            "UPDATE sessions SET request = request || ' (changed)' WHERE session_id = ?1",
            [&id],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let rule = ["--approve-revocations"];
    let _agents: Vec<_> = ["NK001", "NK002"]
        .iter()
        .map(|h| env.agent(h, &ca_id, &server.url, &rule))
        .collect();
    let status = failed_as_unapproved(&env, &server.url, &id);
    assert!(status["crl_pem"].is_null(), "nothing signed: {status}");
}

#[test]
fn a_certificate_changed_in_the_database_during_its_session_is_not_issued() {
    let env = Env::new().with_softhsm(&["NK001", "NK002", "NK003"]);
    let ca_id = deployed(&env);
    let server = env.serve(&[]);
    let csr = env.csr(
        "www",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/CN=www.example.org",
        &["subjectAltName=DNS:www.example.org"],
    );
    let session: serde_json::Value = operator(&env, &server.url)
        .post(
            "/api/v1/sessions",
            &serde_json::json!({
                "ca_id": ca_id,
                "kind": "issue",
                "csr_pem": String::from_utf8(env.read(&csr)).unwrap(),
                "profile": "server",
                "days": 30,
            }),
        )
        .unwrap();
    let id = session["session_id"].as_str().unwrap().to_owned();
    // the stored certificate view (what the worker is told to issue) gets a longer life
    let db = rusqlite::Connection::open(env.path("data/nkpki.sqlite3")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let view: String = db
        .query_row(
            "SELECT certificate_view FROM sessions WHERE session_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let mut view: serde_json::Value = serde_json::from_str(&view).unwrap();
    let not_after = view["not_after"].as_i64().expect("a not_after in the view");
    view["not_after"] = serde_json::json!(not_after + 3 * 365 * 86_400);
    db.execute(
        "UPDATE sessions SET certificate_view = ?2 WHERE session_id = ?1",
        rusqlite::params![id, view.to_string()],
    )
    .unwrap();
    drop(db);
    let rule = [
        "--approve-profile",
        "server",
        "--approve-san-suffix",
        "example.org",
    ];
    let _agents: Vec<_> = ["NK001", "NK002"]
        .iter()
        .map(|h| env.agent(h, &ca_id, &server.url, &rule))
        .collect();
    let status = failed_as_unapproved(&env, &server.url, &id);
    assert!(
        status["certificate_pem"].is_null(),
        "nothing issued: {status}"
    );
}
