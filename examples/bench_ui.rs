//! The web UI's render bench: a CA with N issued certificates (default 10,000) filled into
//! the store directly, then `nkpki serve` is asked for its CA page (first, middle and last
//! page, and searches by CN, SAN and serial), its Overview and its Audit page by a
//! signed-in client on loopback. Prints median and 95th-percentile times; asserts nothing.
//! Run through `make bench`, or `cargo run --release --example bench_ui --
//! target/release/nkpki --certificates 10000`.

use nkpki::ceremony::{self, CeremonyParams, Delivery, Holder, NitrokeyId};
use nkpki::package::ServerInfo;
use nkpki::pki::{CaSubject, KeyAlgorithm};
use nkpki::seal::Identities;
use std::io::BufRead;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const HOLDERS: usize = 5;
const RUNS: usize = 25;

/// A 3-of-5 CA registered in `data`; returns its id and a certificate PEM to store.
fn register(data: &std::path::Path) -> Res<(String, String)> {
    let identities: Vec<age::x25519::Identity> = (0..HOLDERS)
        .map(|_| age::x25519::Identity::generate())
        .collect();
    let holders = identities
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Ok(Holder {
                nitrokey_id: NitrokeyId::parse(&format!("NK{:03}", i + 1)).ok_or("id")?,
                holder_name: format!("Holder {i}"),
                holder_email: format!("h{i}@example.org"),
                location: "Bench".into(),
                age_recipient: Some(id.to_public()),
            })
        })
        .collect::<Result<Vec<_>, &str>>()?;
    let subject = CaSubject {
        name: "Bench CA".into(),
        org: "nkpki bench".into(),
        country: "FR".into(),
    };
    let mut params = CeremonyParams::new(subject, KeyAlgorithm::EcdsaP256, 5, None, 3, holders)?;
    params.delivery = Delivery::Packages(ServerInfo::default());
    let output = ceremony::perform(&params, time::OffsetDateTime::now_utc())?;
    let mut enrollment = nkpki::enrollment::EnrollmentFile::new(&output.manifest.signed.ca_id);
    for (sealed, identity) in output.shares.iter().zip(identities) {
        let mut ids = Identities::default();
        ids.add(identity);
        let pkg = nkpki::package::open(sealed.armored.as_bytes(), &ids, || None)?;
        if let Some(extras) = &sealed.package {
            enrollment
                .holders
                .insert(pkg.agent.holder_id.clone(), extras.enrollment.clone());
        }
    }
    nkpki::server::register_ca(
        data,
        &output.manifest.to_json(),
        Some(&enrollment.to_json()),
        &output.manifest.signed.certificate_sha256,
    )?;
    Ok((
        output.manifest.signed.ca_id.to_string(),
        output.manifest.signed.certificate.clone(),
    ))
}

/// `n` signed issue sessions and their certificates (1 in 50 revoked), in one transaction.
fn fill(data: &std::path::Path, ca_id: &str, pem: &str, n: usize) -> Res<()> {
    let store = nkpki::store::Store::open(data)?;
    let conn = store.conn();
    conn.execute_batch("BEGIN")?;
    let t0 = nkpki::store::now() - n as i64;
    for i in 0..n {
        let session = format!("{:032x}", i + 1);
        let serial = format!("{:040x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
        let host = format!("host{i}.example.org");
        let view = serde_json::json!({ "sans": [format!("DNS:{host}"), format!("DNS:alt{i}.example.net")] });
        let at = t0 + i as i64;
        conn.execute(
            "INSERT INTO sessions (session_id, ca_id, kind, state, requester, request, request_sha256,
                profile, days, serial, nonce, recipient, created_at, expires_at, detail, certificate_view)
             VALUES (?1, ?2, 'issue', 'signed', 'bench', '', '', 'server', 90, ?3, '', '', ?4, ?4, 'bench', ?5)",
            rusqlite::params![session, ca_id, serial, at, view.to_string()],
        )?;
        conn.execute(
            "INSERT INTO certificates (serial, ca_id, session_id, subject, not_after, pem, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![serial, ca_id, session, format!("CN={host}"), at + 90 * 86400, pem, at],
        )?;
        if i % 50 == 0 {
            conn.execute(
                "INSERT INTO revocations (serial, ca_id, reason, revoked_at, session_id) VALUES (?1, ?2, 'superseded', ?3, ?4)",
                rusqlite::params![serial, ca_id, at + 1, session],
            )?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let nkpki = args.next().unwrap_or_else(|| "target/release/nkpki".into());
    let mut n = 10_000;
    while let Some(a) = args.next() {
        if a == "--certificates" {
            n = args.next().ok_or("--certificates N")?.parse()?;
        }
    }
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let (ca_id, pem) = register(&data)?;
    let started = Instant::now();
    fill(&data, &ca_id, &pem, n)?;
    println!(
        "stored {n} certificates in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let token = nkpki::server::create_api_token(&data, "bench", nkpki::store::ApiRole::Operator)?;
    let mut server = std::process::Command::new(&nkpki)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()?;
    let signed_in = http
        .post(format!("{url}/ui/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()?;
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("sign-in failed")?
        .to_owned();
    let pages = n.div_ceil(50).max(1);
    let cases = [
        ("CA page, first page".to_owned(), format!("/ui/cas/{ca_id}")),
        (
            format!("CA page, page {}", pages / 2),
            format!("/ui/cas/{ca_id}?page={}", pages / 2),
        ),
        (
            format!("CA page, last page ({pages})"),
            format!("/ui/cas/{ca_id}?page={pages}"),
        ),
        (
            "CA page, search by CN".into(),
            format!("/ui/cas/{ca_id}?q=host4242.example"),
        ),
        (
            "CA page, search by SAN".into(),
            format!("/ui/cas/{ca_id}?q=alt777.example.net"),
        ),
        (
            "CA page, search by serial prefix".into(),
            format!(
                "/ui/cas/{ca_id}?q={}",
                &format!("{:040x}", 4242u128 * 0x9e37_79b9_7f4a_7c15)[..12]
            ),
        ),
        ("Overview".into(), "/ui/".into()),
        (
            "Audit page (chain verified on each view)".into(),
            "/ui/audit".into(),
        ),
    ];
    println!("{n} issued certificates, {RUNS} requests each, loopback, signed in");
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "page", "median_ms", "p95_ms", "kB"
    );
    for (name, path) in cases {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            let r = http
                .get(format!("{url}{path}"))
                .header("cookie", &cookie)
                .send()?;
            let status = r.status();
            let body = r.bytes()?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            if !status.is_success() {
                return Err(format!("{path}: {status}").into());
            }
            size = body.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name:<44} {:>9.1} {:>9.1} {:>9.1}",
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            size as f64 / 1024.0
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
