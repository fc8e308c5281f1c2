//! The server's store under ordinary faults: a second server on the same data directory,
//! a damaged database, and backups taken while the server runs.

use crate::harness::Env;

/// A registered CA and an operator token in `data/`, without tokens or agents.
fn registered(env: &Env) -> String {
    env.packaged_ceremony(3, 2);
    env.register()
}

fn open_session(env: &Env, url: &str, ca_id: &str) -> serde_json::Value {
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let client = nkpki::client::Client::new(
        url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(token.trim());
    client
        .post(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca_id, "kind": "crl"}),
        )
        .unwrap()
}

fn session_state(env: &Env, url: &str, id: &str) -> String {
    let token = String::from_utf8(env.read("op.token")).unwrap();
    let client = nkpki::client::Client::new(
        url,
        &nkpki::client::Trust::System,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
    .with_bearer(token.trim());
    let status: serde_json::Value = client.get(&format!("/api/v1/sessions/{id}")).unwrap();
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
