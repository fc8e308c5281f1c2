//! The online load bar: N agents (default 200) long-polling with keep-alive on loopback and
//! M signing sessions (default 20), while 100 connections that never finish a request sit
//! on the server. Reports whether every agent was notified of every session, whether every
//! session completed, the latencies and the server's memory. Run through `make bench` (or
//! `cargo run --release --example loadbar -- target/release/nkpki --agents 2000 --sessions
//! 200`). With `--watchers N`, N "browsers" also hold the session event stream
//! (`/api/v1/sessions/{id}/events`) open on the sessions while the agents sign, and the
//! server's memory is read while they are connected. It prints figures and exits non-zero
//! on starvation; it makes no timing assertion.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use nkpki::ceremony::{self, CeremonyParams, Delivery, Holder, NitrokeyId};
use nkpki::client::{Client, Trust};
use nkpki::package::ServerInfo;
use nkpki::pki::{CaSubject, KeyAlgorithm};
use nkpki::proto::{self, Contribution, Envelope, SessionState, SessionStatus};
use nkpki::seal::Identities;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Holders per CA: `--agents N` makes N / 20 CAs.
const HOLDERS: usize = 20;
const THRESHOLD: u32 = 3;
const SILENT: usize = 100;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Holding {
    ca_id: String,
    holder_id: String,
    index: u8,
    code: String,
    share_json: Vec<u8>,
}

fn sign(key: &p256::ecdsa::SigningKey, msg: &[u8]) -> String {
    let sig: p256::ecdsa::Signature = key.sign(msg);
    B64.encode(sig.to_der().as_bytes())
}

/// `cas` ceremonies of twenty holders each, packaged to in-memory age keys and opened again.
fn ceremonies(data_dir: &std::path::Path, cas: usize) -> Res<Vec<Holding>> {
    let mut out = Vec::new();
    for c in 0..cas {
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
                    location: "Loopback".into(),
                    age_recipient: Some(id.to_public()),
                })
            })
            .collect::<Result<Vec<_>, &str>>()?;
        let subject = CaSubject {
            name: format!("Load CA {c}"),
            org: "nkpki load".into(),
            country: "FR".into(),
        };
        let mut params = CeremonyParams::new(
            subject,
            KeyAlgorithm::EcdsaP256,
            5,
            None,
            THRESHOLD,
            holders,
        )?;
        params.delivery = Delivery::Packages(ServerInfo::default());
        let output = ceremony::perform(&params, time::OffsetDateTime::now_utc())?;
        let manifest_json = output.manifest.to_json();
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
            out.push(Holding {
                ca_id: pkg.agent.ca_id.clone(),
                holder_id: pkg.agent.holder_id.clone(),
                index: pkg.share.index,
                code: pkg.agent.enrollment_code.clone(),
                share_json: pkg.share.to_json().as_bytes().to_vec(),
            });
        }
        nkpki::server::register_ca(
            data_dir,
            &manifest_json,
            Some(&enrollment.to_json()),
            &output.manifest.signed.certificate_sha256,
        )?;
    }
    Ok(out)
}

/// How many HTTP clients the simulated agents share.
const HTTP_CLIENTS: usize = 50;

/// One agent: enroll, log in, long-poll; record when each session was first seen;
/// holders 1..=THRESHOLD contribute one second after seeing a session.
fn agent(
    client: Client,
    h: Holding,
    seen: Arc<Mutex<HashMap<(String, String), Instant>>>,
    signed: Arc<Mutex<HashMap<String, Instant>>>,
    stop: Arc<AtomicBool>,
) -> Res<()> {
    let mut seed = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut seed);
    let key = p256::ecdsa::SigningKey::from_slice(&seed)?;
    let mut client = client;
    let pem = key.verifying_key().to_public_key_pem(Default::default())?;
    let enroll = proto::Enroll {
        ca_id: h.ca_id.clone(),
        holder_id: h.holder_id.clone(),
        enrollment_code: h.code.clone(),
        signature: sign(
            &key,
            &proto::enroll_signed_bytes(&h.ca_id, &h.holder_id, &pem),
        ),
        public_key_pem: pem,
    };
    let _: serde_json::Value = client.post("/api/v1/enroll", &enroll)?;
    let c: proto::Challenge = client.post(
        "/api/v1/agent/challenge",
        &proto::ChallengeRequest {
            ca_id: h.ca_id.clone(),
            holder_id: h.holder_id.clone(),
        },
    )?;
    let login = proto::Login {
        ca_id: h.ca_id.clone(),
        holder_id: h.holder_id.clone(),
        signature: sign(
            &key,
            &proto::login_signed_bytes(&h.ca_id, &h.holder_id, &c.challenge),
        ),
        challenge: c.challenge,
    };
    let ok: proto::LoginOk = client.post("/api/v1/agent/login", &login)?;
    client.set_bearer(Some(ok.bearer));
    let mut answered: Vec<String> = Vec::new();
    let mut pending: Vec<(Instant, proto::SessionOffer)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let wait = if pending.is_empty() { 20 } else { 1 };
        // like `nkpki agent`: offers already seen are skipped, so the poll waits for news
        let skip: Vec<&str> = answered.iter().rev().take(64).map(String::as_str).collect();
        let poll: proto::Poll = client.get(&format!(
            "/api/v1/agent/poll?wait={wait}&skip={}",
            skip.join(",")
        ))?;
        let now = Instant::now();
        for offer in poll.sessions {
            if answered.contains(&offer.session_id) {
                continue;
            }
            seen.lock()
                .map_err(|_| "lock")?
                .entry((
                    h.holder_id.clone() + "@" + &h.ca_id,
                    offer.session_id.clone(),
                ))
                .or_insert(now);
            answered.push(offer.session_id.clone());
            if u32::from(h.index) <= THRESHOLD {
                pending.push((now + Duration::from_secs(1), offer));
            }
        }
        let due: Vec<proto::SessionOffer> = {
            let (due, later): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|(t, _)| *t <= Instant::now());
            pending = later;
            due.into_iter().map(|(_, o)| o).collect()
        };
        for offer in due {
            let recipient = nkpki::seal::parse_recipient(&offer.recipient)?;
            let ciphertext = nkpki::seal::to_recipient(&recipient, &h.share_json)?;
            let envelope = Envelope {
                ca_id: offer.ca_id.clone(),
                session_id: offer.session_id.clone(),
                nonce: offer.nonce.clone(),
                expires_at: offer.expires_at,
                holder_id: h.holder_id.clone(),
                request_sha256: offer.request_sha256.clone(),
                profile: offer.summary.profile.clone(),
                days: offer.summary.days,
                certificate_sha256: offer.summary.certificate.as_ref().map(|v| v.digest()),
                ciphertext_sha256: nkpki::pki::sha256_hex(ciphertext.as_bytes()),
                tbs_sha256: None,
                signature_share_sha256: None,
            };
            let signature = sign(&key, &envelope.signed_bytes());
            let status: SessionStatus = client.post(
                &format!("/api/v1/sessions/{}/contribute", offer.session_id),
                &Contribution {
                    envelope,
                    ciphertext,
                    signature,
                    signature_share: None,
                },
            )?;
            // the M-th contribution's answer is the signed session: when it was signed
            if status.state == SessionState::Signed {
                signed
                    .lock()
                    .map_err(|_| "lock")?
                    .insert(status.session_id, Instant::now());
            }
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The server's resident memory now and at its peak, in MB, from /proc.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The server's user + system CPU time, in seconds, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the fields after the command name, which is in parentheses
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name; 100 Hz
    (ticks(11) + ticks(12)) / 100.0
}

/// `--agents N --sessions N --watchers N`, and the server binary.
struct Args {
    nkpki: String,
    agents: usize,
    sessions: usize,
    watchers: usize,
}

/// A browser on a session page: holds its event stream until the server ends it; returns
/// the `status` events received and whether the last one was final.
fn watch(addr: &str, token: &str, id: &str) -> Res<(usize, bool)> {
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(180)))?;
    write!(
        c,
        "GET /api/v1/sessions/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer \
         {token}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )?;
    let (mut events, mut last) = (0, false);
    for line in std::io::BufReader::new(c).lines() {
        let line = line?;
        if line.starts_with("event: status") {
            events += 1;
        } else if line.starts_with("data: ") {
            last = !line.contains("\"state\":\"waiting\"");
        }
    }
    Ok((events, last))
}

/// `nkpki_event_streams` from the server's metrics.
fn streams_open(addr: &str, token: &str) -> usize {
    let read = || -> Res<String> {
        let mut c = std::net::TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            c,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Connection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut c, &mut text)?;
        Ok(text)
    };
    read()
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("nkpki_event_streams "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn args() -> Res<Args> {
    let mut out = Args {
        nkpki: "target/release/nkpki".into(),
        agents: 200,
        sessions: 20,
        watchers: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--agents" => out.agents = it.next().ok_or("--agents N")?.parse()?,
            "--sessions" => out.sessions = it.next().ok_or("--sessions N")?.parse()?,
            "--watchers" => out.watchers = it.next().ok_or("--watchers N")?.parse()?,
            _ => out.nkpki = a,
        }
    }
    if out.agents < HOLDERS || out.agents % HOLDERS != 0 || out.sessions == 0 {
        return Err(
            format!("--agents must be a multiple of {HOLDERS}, --sessions at least 1").into(),
        );
    }
    Ok(out)
}

fn main() -> Res<()> {
    let args = args()?;
    let cas = args.agents / HOLDERS;
    // every agent holds a connection, and so does the server: raise the descriptor limit
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let wanted = (4 * args.agents as u64 + 1024).min(limit.maximum.unwrap_or(u64::MAX));
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        },
    );
    let nkpki = args.nkpki.clone();
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    println!(
        "setting up {cas} CAs x {HOLDERS} holders (threshold {THRESHOLD}) for {} agents and {} sessions ...",
        args.agents, args.sessions
    );
    let holdings = ceremonies(&data, cas)?;
    let token = nkpki::server::create_api_token(&data, "load", nkpki::store::ApiRole::Operator)?;
    // every agent is on loopback here: one address, so no per-address connection limit
    // (older servers, measured for comparison, have no such limit nor option)
    let help = std::process::Command::new(&nkpki)
        .args(["serve", "--help"])
        .output()?;
    let per_address: &[&str] =
        if String::from_utf8_lossy(&help.stdout).contains("--max-connections-per-address") {
            &["--max-connections-per-address", "0"]
        } else {
            &[]
        };
    let mut server = std::process::Command::new(&nkpki)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .args(per_address)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().ok_or("stdout")?).read_line(&mut line)?;
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    let addr = url.trim_start_matches("http://").to_owned();

    // 100 connections that never finish a request, renewed as the server drops them
    let stop = Arc::new(AtomicBool::new(false));
    let silent_stop = stop.clone();
    let silent_addr = addr.clone();
    let silent = std::thread::spawn(move || {
        let mut conns: Vec<std::net::TcpStream> = Vec::new();
        while !silent_stop.load(Ordering::SeqCst) {
            conns.retain(|c| c.peer_addr().is_ok());
            while conns.len() < SILENT {
                match std::net::TcpStream::connect(&silent_addr) {
                    Ok(mut c) => {
                        let _ = c.write_all(b"GET /healthz HTTP/1.1\r\nHost: slow");
                        conns.push(c);
                    }
                    Err(_) => break,
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    let seen = Arc::new(Mutex::new(HashMap::new()));
    let signed = Arc::new(Mutex::new(HashMap::new()));
    // the agents share a few HTTP clients (each has its own runtime thread and file
    // descriptors): thousands of real agents are thousands of processes, here they are
    // threads of one process, whose file-descriptor limit they must fit in
    let pool: Vec<Client> = (0..HTTP_CLIENTS.min(holdings.len()).max(1))
        .map(|_| Client::new(&url, &Trust::System, Duration::from_secs(60)))
        .collect::<Result<_, _>>()?;
    let agents: Vec<_> = holdings
        .into_iter()
        .enumerate()
        .map(|(i, h)| {
            let client = pool[i % pool.len()].clone();
            let (seen, signed, stop) = (seen.clone(), signed.clone(), stop.clone());
            let who = format!("{}@{}", h.holder_id, h.ca_id);
            std::thread::spawn(move || {
                agent(client, h, seen, signed, stop).map_err(|e| format!("{who}: {e}"))
            })
        })
        .collect();
    let op = Client::new(&url, &Trust::System, Duration::from_secs(60))?.with_bearer(&token);
    // wait (up to a minute) until every agent has logged in and polls
    let started = Instant::now();
    let (ca_ids, online) = loop {
        std::thread::sleep(Duration::from_secs(1));
        let cas: serde_json::Value = op.get("/api/v1/cas")?;
        let ca_ids: Vec<String> = cas
            .as_array()
            .ok_or("cas")?
            .iter()
            .filter_map(|c| c["ca_id"].as_str().map(str::to_owned))
            .collect();
        let online = cas
            .as_array()
            .ok_or("cas")?
            .iter()
            .flat_map(|c| c["holders"].as_array().cloned().unwrap_or_default())
            .filter(|h| h["online"] == true)
            .count();
        if online >= args.agents || started.elapsed() > Duration::from_secs(60) {
            break (ca_ids, online);
        }
    };
    println!(
        "{online} of {} agents online; opening {} sessions",
        args.agents, args.sessions
    );
    let (rss_idle, _) = rss_mb(server.id());
    let cpu_idle = cpu_secs(server.id());
    // open -> signed twice: to the answer of the contribution that completed the session
    // (the server's latency), and as an operator polling every open session's status in
    // turn, five times a second, sees it (which adds that client's own latency)
    let opened: Arc<Mutex<Vec<(String, String, Instant)>>> = Arc::default();
    let all_opened = Arc::new(AtomicBool::new(false));
    let poller = {
        let (op, opened, all_opened) = (op.clone(), opened.clone(), all_opened.clone());
        std::thread::spawn(move || -> Result<HashMap<String, f64>, String> {
            let mut polled: HashMap<String, f64> = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(180);
            while Instant::now() < deadline {
                let now_open = opened.lock().map_err(|_| "lock")?.clone();
                if all_opened.load(Ordering::SeqCst) && polled.len() >= now_open.len() {
                    break;
                }
                for (_, id, at) in &now_open {
                    if polled.contains_key(id) {
                        continue;
                    }
                    let s: SessionStatus = op
                        .get(&format!("/api/v1/sessions/{id}"))
                        .map_err(|e| e.to_string())?;
                    if s.state == SessionState::Signed {
                        polled.insert(id.clone(), at.elapsed().as_secs_f64());
                    } else if s.state != SessionState::Waiting {
                        println!("session {id} ended {:?}: {:?}", s.state, s.detail);
                        polled.insert(id.clone(), f64::NAN);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(polled)
        })
    };
    // the browsers' streams, and what the server holds while they are open: the most
    // streams seen open at once, and the resident memory at that moment
    let mut watchers = Vec::new();
    let sampling = Arc::new(AtomicBool::new(args.watchers > 0));
    let sampler = {
        let (addr, token, sampling, pid) =
            (addr.clone(), token.clone(), sampling.clone(), server.id());
        std::thread::spawn(move || {
            let mut best = (0usize, 0.0f64);
            while sampling.load(Ordering::SeqCst) {
                let n = streams_open(&addr, &token);
                if n > best.0 {
                    best = (n, rss_mb(pid).0);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            best
        })
    };
    // sessions spread over the CAs, opened at 20 per second
    for i in 0..args.sessions {
        let ca = &ca_ids[i % ca_ids.len()];
        let status: SessionStatus = op.post(
            "/api/v1/sessions",
            &serde_json::json!({"ca_id": ca, "kind": "crl"}),
        )?;
        let here = args.watchers / args.sessions + usize::from(i < args.watchers % args.sessions);
        for _ in 0..here {
            let (addr, token, id) = (addr.clone(), token.clone(), status.session_id.clone());
            watchers.push(std::thread::spawn(move || {
                watch(&addr, &token, &id).map_err(|e| e.to_string())
            }));
        }
        opened
            .lock()
            .map_err(|_| "lock")?
            .push((ca.clone(), status.session_id, Instant::now()));
        std::thread::sleep(Duration::from_millis(50));
    }
    all_opened.store(true, Ordering::SeqCst);
    let polled = poller.join().map_err(|_| "poller")??;
    let mut watched = (0usize, 0usize, 0usize);
    for w in watchers {
        match w.join() {
            Ok(Ok((events, last))) => {
                watched.0 += 1;
                watched.1 += events;
                watched.2 += usize::from(last);
            }
            Ok(Err(e)) => println!("watcher error: {e}"),
            Err(_) => println!("watcher panicked"),
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let (most_streams, rss_streams) = sampler.join().map_err(|_| "sampler")?;
    let opened = opened.lock().map_err(|_| "lock")?.clone();
    let done: HashMap<String, f64> = {
        let signed = signed.lock().map_err(|_| "lock")?;
        opened
            .iter()
            .map(|(_, id, at)| {
                let t = signed
                    .get(id)
                    .map_or(f64::NAN, |t| t.duration_since(*at).as_secs_f64());
                (id.clone(), t)
            })
            .collect()
    };
    stop.store(true, Ordering::SeqCst);

    let seen = seen.lock().map_err(|_| "lock")?.clone();
    let mut latencies = Vec::new();
    let mut missed = 0;
    let mut starved_agents = std::collections::HashSet::new();
    for (ca, id, at) in &opened {
        for i in 1..=HOLDERS {
            let agent = format!("NK{i:03}@{ca}");
            match seen.get(&(agent.clone(), id.clone())) {
                Some(t) => latencies.push(t.duration_since(*at).as_secs_f64() * 1000.0),
                None => {
                    missed += 1;
                    starved_agents.insert(agent);
                }
            }
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mut completion: Vec<f64> = done.values().copied().filter(|v| v.is_finite()).collect();
    completion.sort_by(|a, b| a.total_cmp(b));
    let mut seen_by_operator: Vec<f64> =
        polled.values().copied().filter(|v| v.is_finite()).collect();
    seen_by_operator.sort_by(|a, b| a.total_cmp(b));
    let signed = completion.len();
    println!(
        "notifications: {} of {} delivered; {} agents missed at least one",
        latencies.len(),
        opened.len() * HOLDERS,
        starved_agents.len()
    );
    println!(
        "notification latency ms: p50 {:.1}  p95 {:.1}  max {:.1}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "sessions signed: {signed} of {}; open -> signed s: p50 {:.2}  p95 {:.2}  max {:.2}  (holders wait 1 s before contributing)",
        opened.len(),
        percentile(&completion, 0.5),
        percentile(&completion, 0.95),
        completion.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  as a polling operator sees it s: p50 {:.2}  p95 {:.2}  max {:.2}",
        percentile(&seen_by_operator, 0.5),
        percentile(&seen_by_operator, 0.95),
        seen_by_operator.last().copied().unwrap_or(f64::NAN)
    );
    let (rss, hwm) = rss_mb(server.id());
    println!(
        "server CPU s: {:.1} over the sessions ({:.1} in all)",
        cpu_secs(server.id()) - cpu_idle,
        cpu_secs(server.id())
    );
    println!(
        "server memory MB: RSS {rss:.0} (idle with every agent connected {rss_idle:.0}), peak {hwm:.0}"
    );
    println!("silent connections held open during the run: {SILENT}");
    if args.watchers > 0 {
        println!(
            "event streams: {} of {} browsers held one to the end; {} saw their session's final \
             status; {} status events in all",
            watched.0, args.watchers, watched.2, watched.1
        );
        println!(
            "  most streams open at once: {most_streams}; server RSS then {rss_streams:.0} MB \
             ({:.1} KB per stream over idle)",
            (rss_streams - rss_idle) * 1024.0 / most_streams.max(1) as f64
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = silent.join();
    for a in agents {
        if let Ok(Err(e)) = a.join() {
            if !e.contains("error sending request") {
                println!("agent error: {e}");
            }
        }
    }
    if missed > 0 || signed < opened.len() || watched.2 < args.watchers {
        return Err(format!(
            "load bar NOT met: {missed} missed notifications, {signed}/{} sessions signed, \
             {}/{} event streams saw the end",
            opened.len(),
            watched.2,
            args.watchers
        )
        .into());
    }
    println!("load bar met");
    Ok(())
}
