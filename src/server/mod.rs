//! `nkpki serve`: the orchestrator. It holds no token and links no PKCS#11 code: shares
//! reach it only encrypted to a session key that lives in its memory, and the CA key exists
//! only between the last verified share and the end of the signature.

mod batch;
mod guard;
mod http;
mod listing;
mod metrics;
pub mod ocsp;
pub mod preview;
pub mod publish;
pub mod push;
mod state;
mod threshold;

pub use guard::Refusal;
pub use http::{MAX_BODY, Peer, api_router, open_metrics_router, router};
pub use listing::{CaListing, list_api_tokens, list_cas};
pub use metrics::Metrics;
pub use ocsp::ocsp_answer;
pub use publish::crl_next_update;
pub use state::{ApiErr, ApiResult, State, token_hash};

use crate::manifest::Manifest;
use crate::store::Store;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Enrollment(#[from] crate::enrollment::EnrollmentError),
    #[error(
        "the manifest's CA certificate has fingerprint {found}, not the expected {expected}\n\
         hint: compare with the fingerprint `nkpki ca-init` printed at the ceremony; a different \
         one means this is not that CA"
    )]
    FingerprintMismatch { expected: String, found: String },
}

/// How `serve` runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: String,
    pub data_dir: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub session_ttl: i64,
    /// Most simultaneous connections; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Most simultaneous connections from one address (0: no limit); more are refused.
    pub max_connections_per_address: usize,
    /// A second address serving `/metrics` without authentication (plain HTTP), for a
    /// monitoring system; without it `/metrics` needs an operator token.
    pub metrics_listen: Option<String>,
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServerError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How long requests in flight may take to finish once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Resolves when the process is asked to stop (SIGTERM or SIGINT), naming the signal.
async fn stop_signal() -> String {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM".to_owned(),
            _ = int.recv() => "SIGINT".to_owned(),
        },
        _ => {
            tracing::warn!("cannot watch for SIGTERM/SIGINT; the server stops only when killed");
            std::future::pending().await
        }
    }
}

/// Serves one connection; once the server stops, finishes the request in flight (if any)
/// and closes, instead of keeping an idle keep-alive connection open.
async fn serve_until_stopped<C>(conn: C, mut stop: tokio::sync::watch::Receiver<bool>)
where
    C: std::future::Future + GracefulConnection,
{
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// Resolves once the stop flag is set (never if its sender is gone without setting it).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let set = *stop.borrow_and_update();
        if set {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A hyper connection that can be told to finish its request and close.
trait GracefulConnection {
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConnection for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: std::pin::Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self);
    }
}

/// Runs the server until the process is stopped. Prints `listening on ADDR` once bound.
pub fn run(opts: ServeOptions) -> Result<(), ServerError> {
    if let Err(why) = crate::harden::lock_memory() {
        tracing::warn!("{why}");
    }
    // configuration errors first, before anything in the store changes
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    // before anything in the data directory is read or written: one server per directory
    let _lock = crate::store::DataDirLock::acquire(&opts.data_dir)?;
    let mut store = Store::open(&opts.data_dir)?;
    let aborted = store.abort_open_sessions()?;
    if aborted > 0 {
        tracing::info!(
            "{aborted} session(s) left open by the previous run were aborted (their secrets were in memory only)"
        );
    }
    let state = Arc::new(State::new(store, opts.session_ttl));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServerError::Invalid(e.to_string()))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(|e| ServerError::Listen {
                addr: opts.listen.clone(),
                reason: e.to_string(),
            })?;
        let addr: SocketAddr = listener.local_addr().map_err(|e| ServerError::Listen {
            addr: opts.listen.clone(),
            reason: e.to_string(),
        })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let metrics_listener = match &opts.metrics_listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.map_err(|e| {
                ServerError::Listen {
                    addr: address.clone(),
                    reason: e.to_string(),
                }
            })?),
            None => None,
        };
        state.note(
            "server-started",
            &format!("nkpki {} on {scheme}://{addr}", env!("CARGO_PKG_VERSION")),
        )?;
        println!("listening on {scheme}://{addr}");
        tracing::info!("listening on {scheme}://{addr}");
        if let Some(listener) = metrics_listener {
            let address = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!("metrics on http://{address}/metrics (no authentication)");
            tokio::spawn(serve_metrics(
                listener,
                http::open_metrics_router(state.clone()),
            ));
        }
        let app = http::router(state.clone());
        let expiry = state.clone();
        tokio::spawn(async move {
            let mut ticks: u32 = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                ticks = ticks.wrapping_add(1);
                let s = expiry.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    s.expire();
                    if ticks % 10 == 0 {
                        s.housekeeping();
                    }
                    if ticks % 60 == 0 {
                        s.flush_last_seen();
                    }
                    // at start, then every ten minutes
                    if ticks % 1200 == 1 {
                        s.check_crls();
                    }
                    if ticks % 120 == 7 {
                        s.remove_useless_responder_keys();
                    }
                })
                .await;
            }
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
        let per_address = guard::ConnectionLimiter::new(opts.max_connections_per_address);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopping = stop_signal();
        tokio::pin!(stopping);
        let why = loop {
            let permit = tokio::select! {
                why = &mut stopping => break why,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break "the connection limiter closed".to_owned(),
                },
            };
            let accepted = tokio::select! {
                why = &mut stopping => break why,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            };
            let ip = peer.ip();
            let Some(slot) = per_address.admit(ip) else {
                drop(permit);
                let plain = tls.is_none();
                tokio::spawn(too_many_connections(stream, plain));
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            let tls = tls.clone();
            let stop = stop_rx.clone();
            let secure = crate::web::Secure(tls.is_some());
            tokio::spawn(async move {
                let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(http::Peer(ip));
                    req.extensions_mut().insert(secure);
                    app.clone().oneshot(req)
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(http::READ_TIMEOUT)
                    .keep_alive(true);
                match tls {
                    Some(acceptor) => {
                        if let Ok(Ok(stream)) =
                            tokio::time::timeout(http::READ_TIMEOUT, acceptor.accept(stream)).await
                        {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            serve_until_stopped(conn, stop).await;
                        }
                    }
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        serve_until_stopped(conn, stop).await;
                    }
                }
                drop(slot);
                drop(permit);
            });
        };
        // stop accepting; let requests in flight finish, for a bounded time
        drop(listener);
        tracing::info!("stopping ({why}): no new connections; finishing requests in flight");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while slots.available_permits() < opts.max_connections {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let s = state.clone();
        let reason = why.clone();
        let aborted = tokio::task::spawn_blocking(move || s.shutdown(&reason))
            .await
            .map_err(|e| ServerError::Invalid(e.to_string()))??;
        tracing::info!("stopped ({why}): {aborted} open session(s) aborted, their workers ended");
        Ok(())
    })
}

/// Serves `/metrics` on its own listener (`--metrics-listen`), with the header timeout of
/// the main one and at most [`MAX_METRICS_CONNECTIONS`] connections at once.
async fn serve_metrics(listener: tokio::net::TcpListener, app: axum::Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics listener: accept: {e}");
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| app.clone().oneshot(req));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(http::READ_TIMEOUT);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

/// Most connections the metrics listener serves at once: a monitoring system needs one.
const MAX_METRICS_CONNECTIONS: usize = 16;

/// Refuses a connection from an address that has too many: a 503 on plain HTTP (a TLS
/// client just sees the connection close), then the socket is dropped.
async fn too_many_connections(mut stream: tokio::net::TcpStream, plain: bool) {
    use tokio::io::AsyncWriteExt;
    if plain {
        let body =
            r#"{"error":"too many connections from your address","code":"too-many-connections"}"#;
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
        let _ = stream.shutdown().await;
    }
}

/// A CA ready to be stored: manifest verified, fingerprint matched, enrollment checked.
#[derive(Debug)]
pub struct Registration {
    pub ca_id: String,
    pub name: String,
    pub fingerprint: String,
    /// The manifest's share set version (1 until a reshare).
    pub set_version: u32,
    /// Every earlier share set's id (a reshared manifest's lineage).
    earlier_sets: Vec<crate::sss::SetId>,
    /// SHA-256 of the manifest this one supersedes (a reshared manifest's).
    supersedes: Option<String>,
    holders: Vec<(String, u8, Option<String>)>,
}

/// Checks what registering a CA needs, touching no store: the manifest verifies (signature,
/// certificate bound to the shares), its certificate's SHA-256 fingerprint is the one the
/// operator expects (as `ca-init` printed it), and every `enrollment.json` entry is signed
/// with its holder's share.
pub fn prepare_registration(
    manifest_json: &str,
    enrollment_json: Option<&str>,
    expected_fingerprint: &str,
) -> Result<Registration, ServerError> {
    let expected = crate::manifest::normalize_fingerprint(expected_fingerprint).ok_or_else(|| {
        ServerError::Invalid(format!(
            "{expected_fingerprint:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
        ))
    })?;
    let manifest = Manifest::from_json(manifest_json)?.verify()?;
    let found = &manifest.body.certificate_sha256;
    if crate::manifest::normalize_fingerprint(found).as_deref() != Some(expected.as_str()) {
        return Err(ServerError::FingerprintMismatch {
            expected,
            found: found.clone(),
        });
    }
    let codes = match enrollment_json {
        Some(text) => crate::enrollment::EnrollmentFile::verify(text, &manifest)?.holders,
        None => Default::default(),
    };
    let holders = manifest
        .body
        .holders
        .iter()
        .map(|h| {
            (
                h.nitrokey_id.clone(),
                h.index,
                codes
                    .get(&h.nitrokey_id)
                    .map(|e| e.enrollment_code_sha256.clone()),
            )
        })
        .collect();
    Ok(Registration {
        ca_id: manifest.ca_id().0.clone(),
        name: manifest.body.ca.name.clone(),
        fingerprint: found.clone(),
        set_version: manifest.set_version(),
        earlier_sets: manifest
            .body
            .earlier_sets
            .iter()
            .map(|e| e.set_id.clone())
            .collect(),
        supersedes: manifest.body.supersedes.clone(),
        holders,
    })
}

/// Stores a prepared registration; `by` names who registered it, for the audit log.
pub fn register_prepared(
    store: &mut Store,
    manifest_json: &str,
    registration: &Registration,
    by: &str,
) -> Result<(), ServerError> {
    let note = format!("fingerprint {}; by {by}", registration.fingerprint);
    let Some(stored) = store.ca_manifest(&registration.ca_id)? else {
        return Ok(store.add_ca(
            &registration.ca_id,
            &registration.name,
            manifest_json,
            &registration.holders,
            &note,
        )?);
    };
    // the same CA again: only a reshared manifest that descends from the stored one
    let stored_version = check_successor(&stored, registration)?;
    store.replace_share_set(
        &registration.ca_id,
        manifest_json,
        &registration.holders,
        &format!(
            "share set version {stored_version} -> {}; {note}",
            registration.set_version
        ),
    )?;
    Ok(())
}

/// The checks a reshared manifest passes before it replaces the registered one
/// (`stored_json`): a newer set version, the same certificate, the registered set among its
/// earlier sets, and `supersedes` naming exactly the registered manifest. Returns the
/// registered set version.
pub(crate) fn check_successor(
    stored_json: &str,
    registration: &Registration,
) -> Result<u32, ServerError> {
    let stored = Manifest::from_json(stored_json)?;
    let stored_version = stored.signed.set_version;
    let conflict = |why: String| {
        Err(ServerError::Store(crate::store::StoreError::Conflict(
            format!("CA {} is already registered {why}", registration.ca_id),
        )))
    };
    if registration.set_version <= stored_version {
        return conflict(format!(
            "with share set version {stored_version}; this manifest is version {} (only a \
             newer reshared manifest replaces it)",
            registration.set_version
        ));
    }
    if stored.signed.certificate_sha256 != registration.fingerprint
        || !registration
            .earlier_sets
            .contains(&stored.signed.share_set.id())
    {
        return conflict(
            "and this manifest does not descend from the registered one (another \
             certificate, or the registered share set is not among its earlier sets)"
                .into(),
        );
    }
    // made from the registered manifest itself, not from another copy of it (an older
    // one, or one from before a policy change, which would bring its policy back)
    let registered = stored.digest();
    if registration.supersedes.as_deref() != Some(registered.as_str()) {
        return conflict(format!(
            "and this manifest supersedes another manifest than the registered one (SHA-256 \
             {registered}): it was made from an older copy, or skips a version (hint: reshare \
             from the registered manifest, or register each reshared version in turn)"
        ));
    }
    Ok(stored_version)
}

/// Registers a CA from its ceremony manifest, as an administrator on the server host (who
/// can write the data directory): see [`prepare_registration`]. Returns the CA id.
pub fn register_ca(
    data_dir: &Path,
    manifest_json: &str,
    enrollment_json: Option<&str>,
    expected_fingerprint: &str,
) -> Result<String, ServerError> {
    const BY: &str = "the server host's administrator (serve ca add)";
    let mut store = Store::open(data_dir)?;
    let result = prepare_registration(manifest_json, enrollment_json, expected_fingerprint)
        .and_then(|r| register_prepared(&mut store, manifest_json, &r, BY).map(|()| r));
    match result {
        Ok(registration) => Ok(registration.ca_id),
        Err(e) => {
            store.audit("ca-refused", None, None, None, &format!("{BY}: {e}"))?;
            Err(e)
        }
    }
}

/// Replaces a registered CA's manifest by one whose only change is its CA policy (made
/// by `nkpki policy set` with M shares), as an administrator on the server host. The new
/// manifest must verify and describe the same CA: same id, certificate, shares, holders.
/// A running server reads it at its next start. Returns a one-line summary.
pub fn update_policy(data_dir: &Path, manifest_json: &str) -> Result<String, ServerError> {
    const BY: &str = "the server host's administrator (serve ca set-policy)";
    let mut store = Store::open(data_dir)?;
    let result = (|| {
        let new = Manifest::from_json(manifest_json)?.verify()?;
        let ca_id = new.ca_id().0.clone();
        let old_json = store
            .ca_manifests()?
            .into_iter()
            .find(|(id, _)| *id == ca_id)
            .map(|(_, m)| m)
            .ok_or_else(|| {
                ServerError::Invalid(format!(
                    "CA {ca_id} is not registered here (hint: `serve ca add` registers a new CA)"
                ))
            })?;
        let old = Manifest::from_json(&old_json)?.verify()?;
        let (mut a, mut b) = (old.body.clone(), new.body.clone());
        (a.policy, a.policy_revision) = (None, 0);
        (b.policy, b.policy_revision) = (None, 0);
        if a != b {
            return Err(ServerError::Invalid(
                "the new manifest changes more than the CA policy (certificate, shares, holders \
                 or parameters differ); only a policy change is accepted here"
                    .into(),
            ));
        }
        if new.body.policy_revision <= old.body.policy_revision {
            return Err(ServerError::Invalid(format!(
                "the manifest's policy revision ({}) is not newer than the registered one ({}): \
                 it is an older or the same manifest (hint: `nkpki policy set` makes the next \
                 revision)",
                new.body.policy_revision, old.body.policy_revision
            )));
        }
        let summary = match &new.body.policy {
            Some(_) => format!("CA {ca_id}: new CA policy in force from the next start"),
            None => format!("CA {ca_id}: CA policy removed, from the next start"),
        };
        store.replace_manifest(&ca_id, manifest_json, &format!("{summary}; by {BY}"))?;
        Ok(summary)
    })();
    if let Err(e) = &result {
        store.audit("ca-refused", None, None, None, &format!("{BY}: {e}"))?;
    }
    result
}

/// Sets a CA's public base URL (and OCSP) on the server host, as `serve ca set-urls`
/// does; returns the URLs certificates will carry.
pub fn set_ca_urls(
    data_dir: &Path,
    ca_id: &str,
    public_url: &str,
    ocsp: bool,
    ocsp_require_signed: bool,
) -> Result<crate::pki::Urls, ServerError> {
    publish::check_public_url(public_url, ca_id)
        .map_err(|e| ServerError::Invalid(e.to_string()))?;
    let mut store = Store::open(data_dir)?;
    store.set_ca_urls(
        ca_id,
        public_url,
        ocsp,
        ocsp_require_signed,
        "the server host's administrator (serve ca set-urls)",
    )?;
    Ok(publish::ca_urls(&store, ca_id)?)
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Creates an operator API token with `role`; only its hash is stored. Returns the token
/// (shown once).
pub fn create_api_token(
    data_dir: &Path,
    name: &str,
    role: crate::store::ApiRole,
) -> Result<String, ServerError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(ServerError::Invalid(
            "--name must be 1-64 characters of letters, digits, - _ . @".into(),
        ));
    }
    let token = random_token("nkpki_op_");
    Store::open(data_dir)?.add_api_token(name, &token_hash(&token), role)?;
    Ok(token)
}

/// Writes a consistent copy of the server's database to `out`; safe while a server runs.
pub fn backup(data_dir: &Path, out: &Path) -> Result<(), ServerError> {
    Ok(Store::open(data_dir)?.backup(out)?)
}

/// Revokes an operator's API token.
pub fn revoke_api_token(data_dir: &Path, name: &str) -> Result<(), ServerError> {
    Ok(Store::open(data_dir)?.revoke_api_token(name)?)
}

/// Operator action: a holder lost its token or must re-enroll. Returns a new one-time code.
pub fn reset_holder(data_dir: &Path, ca_id: &str, holder_id: &str) -> Result<String, ServerError> {
    let code = crate::package::enrollment_code();
    Store::open(data_dir)?.reset_holder(ca_id, holder_id, &token_hash(&code))?;
    Ok(code.to_string())
}
