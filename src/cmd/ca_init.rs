//! `nkpki ca-init`: the key ceremony.

use super::hinted;
use anyhow::{Context, bail};
use nkpki::ceremony::{self, CaMode, CeremonyParams};
use nkpki::pki::{CaSubject, KeyAlgorithm};
use nkpki::sss::shoup::{self, SafePrimes, ThresholdError};
use nkpki::{fsx, seal};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;
use zeroize::Zeroizing;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  nkpki ca-init --name \"Example Root CA\" --org Example --country FR \\\n    \
                        --key rsa-4096 --validity-years 20 --threshold 3 --holders holders.json --out ca/\n\n\
                        holders.json is a list of {\"nitrokey_id\": \"NK001\", \"holder_name\": …, \
                        \"holder_email\": …, \"location\": …, \"age_recipient\": \"age1…\" (optional)}."
)]
pub struct Args {
    /// CA common name (1–64 characters, the X.509 limit)
    #[arg(long, required_unless_present = "web")]
    name: Option<String>,
    /// Organisation (1–64 characters)
    #[arg(long, required_unless_present = "web")]
    org: Option<String>,
    /// Country, two upper-case letters (ISO 3166)
    #[arg(long, required_unless_present = "web")]
    country: Option<String>,
    /// CA key type: rsa-2048, rsa-3072, rsa-4096, ecdsa-p256, ecdsa-p384
    #[arg(long, default_value = "rsa-4096")]
    key: String,
    /// CA mode: reconstruct (M shares rebuild the key for each signature) or threshold
    /// (Shoup threshold RSA: each holder signs with its share, the key is never whole again)
    #[arg(long, default_value = "reconstruct", value_name = "MODE")]
    mode: String,
    /// CA certificate validity in years (1–30)
    #[arg(long, default_value_t = 20)]
    validity_years: u32,
    /// How many holders must approve a signature (2–15)
    #[arg(long, default_value_t = 3)]
    threshold: u32,
    /// basicConstraints path length of the CA (default: unlimited)
    #[arg(long, value_name = "N")]
    path_len: Option<u8>,
    /// JSON list of holders, one share each (3–20)
    #[arg(long, value_name = "FILE", required_unless_present = "web")]
    holders: Option<PathBuf>,
    /// New directory for the ceremony output
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write generated passphrases to FILE (mode 0600) instead of showing them on the terminal
    #[arg(long, value_name = "FILE")]
    passphrases_to: Option<PathBuf>,
    /// Replace an existing --passphrases-to file
    #[arg(long)]
    force: bool,
    /// Make deployment packages (packages/NK001.nkpkg, qr/NK001.png, enrollment.json)
    /// instead of bare share files
    #[arg(long)]
    package: bool,
    /// With --package: the server URL the agents connect to
    #[arg(long, value_name = "URL", requires = "package")]
    server_url: Option<String>,
    /// With --package: SHA-256 (hex) of the server's TLS certificate, pinned by the agents
    #[arg(long, value_name = "HEX", requires = "package")]
    server_cert_sha256: Option<String>,
    /// With --package: accept a plain http:// --server-url (loopback, a test bench)
    #[arg(long, requires = "server_url")]
    insecure_http: bool,
    /// Fill in the generator form in a browser on this machine instead: serves the
    /// generator pages on loopback through a one-time URL, writes packages into --out as
    /// --package does, and exits when the ceremony is done
    #[arg(long, conflicts_with_all = ["name", "org", "country", "holders", "package", "passphrases_to"])]
    web: bool,
    /// With --web: the loopback address to serve on (default 127.0.0.1, a free port)
    #[arg(long, value_name = "ADDR:PORT", requires = "web")]
    listen: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.web {
        return run_web(args);
    }
    let key: KeyAlgorithm = args.key.parse()?;
    let mode: CaMode = args.mode.parse()?;
    let holders_path = args.holders.clone().unwrap_or_default();
    let holders_text = std::fs::read_to_string(&holders_path)
        .with_context(|| format!("cannot read holders file {}", holders_path.display()))?;
    let holders = ceremony::parse_holders(&holders_text)
        .with_context(|| format!("in {}", holders_path.display()))?;
    let subject = CaSubject {
        name: args.name.unwrap_or_default(),
        org: args.org.unwrap_or_default(),
        country: args.country.unwrap_or_default(),
    };
    let mut params = CeremonyParams::new(
        subject,
        key,
        args.validity_years,
        args.path_len,
        args.threshold,
        holders,
    )?
    .with_mode(mode)?;
    if args.package {
        let server = super::package::server_info(
            args.server_url.clone(),
            args.server_cert_sha256.clone(),
            args.insecure_http,
        )?;
        params.delivery = ceremony::Delivery::Packages(server);
    }

    if !fsx::is_absent_or_empty(&args.out)? {
        return Err(hinted(
            format!("{} already exists and is not empty", args.out.display()),
            "choose a new --out directory; an existing ceremony is never overwritten",
        ));
    }
    let need_passphrases = params
        .holders
        .iter()
        .filter(|h| h.age_recipient.is_none())
        .count();
    if need_passphrases > 0 && args.passphrases_to.is_none() && !std::io::stderr().is_terminal() {
        return Err(hinted(
            format!(
                "{need_passphrases} holder(s) have no age_recipient, so their shares get fresh \
                 passphrases, but there is no terminal to show them on"
            ),
            "give each holder an age_recipient, or pass --passphrases-to FILE",
        ));
    }
    if let Some(p) = &args.passphrases_to
        && p.exists()
        && !args.force
    {
        bail!(
            "{} already exists; refusing to overwrite it (use --force)",
            p.display()
        );
    }

    let started = std::time::Instant::now();
    let output = match params.mode {
        CaMode::Reconstruct => ceremony::perform(&params, OffsetDateTime::now_utc())?,
        CaMode::Threshold => {
            let bits = params.key.rsa_bits().unwrap_or_default();
            let primes = safe_primes(bits)?;
            ceremony::perform_threshold(&params, primes, OffsetDateTime::now_utc())?
        }
    };

    let staged = fsx::StagedDir::new(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let dir = staged.path();
    output
        .write_to(dir)
        .with_context(|| format!("cannot write the ceremony into {}", dir.display()))?;

    let mut passphrases = Zeroizing::new(String::new());
    for share in &output.shares {
        if let Some(p) = &share.passphrase {
            let _ = writeln!(passphrases, "{}: {}", share.nitrokey_id, seal::reveal(p));
        }
    }
    if !passphrases.is_empty() {
        match &args.passphrases_to {
            Some(path) => {
                fsx::write_new(path, passphrases.as_bytes(), 0o600, args.force)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "warning: share passphrases were written in clear to {}; hand each to its holder \
                     and delete the file",
                    path.display()
                );
            }
            None => {
                eprintln!("\nShare passphrases — shown once; give each to its holder only:\n");
                eprint!("{}", passphrases.as_str());
                eprintln!();
            }
        }
    }
    if let Err(e) = staged.commit() {
        if let Some(path) = args
            .passphrases_to
            .as_ref()
            .filter(|_| !passphrases.is_empty())
        {
            let _ = std::fs::remove_file(path);
        }
        return Err(e)
            .with_context(|| format!("cannot move the ceremony into {}", args.out.display()));
    }

    let m = &output.manifest.signed;
    println!("CA id:        {}", m.ca_id);
    println!(
        "Subject:      CN={}, O={}, C={}",
        m.ca.name, m.ca.org, m.ca.country
    );
    println!("Key:          {}", m.ca.key);
    println!("Mode:         {mode}");
    println!("Fingerprint:  SHA-256 {}", m.certificate_sha256);
    println!(
        "Threshold:    {} of {}",
        m.share_set.threshold, m.share_set.total
    );
    let contents = if args.package {
        "ca.crt, manifest.json, packages/, qr/, enrollment.json, ceremony.log"
    } else {
        "ca.crt, manifest.json, shares/, ceremony.log"
    };
    println!("Output:       {}/ ({contents})", args.out.display());
    println!("Took:         {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The loopback address `--listen` names (default 127.0.0.1 on a free port); any other
/// address is refused: the generator holds the CA key and serves passphrases.
fn loopback_listen(listen: Option<&str>) -> anyhow::Result<std::net::SocketAddr> {
    let text = listen.unwrap_or("127.0.0.1:0");
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        hinted(
            format!("--listen {text:?} is not an address and port"),
            "give a loopback address and port, e.g. --listen 127.0.0.1:8470",
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(hinted(
            format!(
                "--listen {addr} is not a loopback address: ca-init --web serves the CA key's \
                 ceremony and its passphrases, to this machine only"
            ),
            "use 127.0.0.1:PORT or [::1]:PORT, and run the browser on this machine",
        ));
    }
    Ok(addr)
}

/// `ca-init --web`: the generator pages alone, on loopback, behind a one-time URL.
fn run_web(args: Args) -> anyhow::Result<()> {
    let addr = loopback_listen(args.listen.as_deref())?;
    if !fsx::is_absent_or_empty(&args.out)? {
        return Err(hinted(
            format!("{} already exists and is not empty", args.out.display()),
            "choose a new --out directory; an existing ceremony is never overwritten",
        ));
    }
    let mut random = Zeroizing::new([0u8; 24]);
    rand::Rng::fill_bytes(&mut rand::rng(), random.as_mut());
    let key = Zeroizing::new(hex::encode(*random));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the web server")?;
    let out = args.out.clone();
    let finished = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        eprintln!(
            "Open this one-time URL in a browser on this machine (it works once):\n\n  \
             http://{bound}/ui/start?key={}\n\nThe ceremony will be written to {}; \
             nkpki exits when you press Done on the result page.",
            key.as_str(),
            out.display()
        );
        anyhow::Ok(nkpki::web::generator::serve_directory(listener, out, key).await?)
    })?;
    if finished && args.out.join("manifest.json").exists() {
        println!(
            "Output:       {}/ (ca.crt, manifest.json, packages/, qr/, enrollment.json, ceremony.log)",
            args.out.display()
        );
    }
    Ok(())
}

/// Two safe primes for a threshold-mode CA, with progress on stderr; Ctrl-C stops the
/// search and the ceremony, before anything is written.
fn safe_primes(bits: usize) -> anyhow::Result<SafePrimes> {
    if let Some(primes) = ceremony::test_safe_primes() {
        eprintln!("debug build: safe primes read from NKPKI_TEST_SAFE_PRIMES");
        return Ok(primes?);
    }
    let cancel = Arc::new(AtomicBool::new(false));
    watch_interrupt(Arc::clone(&cancel))?;
    eprintln!(
        "Generating two {}-bit safe primes for the threshold key (minutes for rsa-4096; Ctrl-C stops)",
        bits / 2
    );
    let mut last = (0u8, 0u64);
    let mut progress = |p: shoup::PrimeProgress| {
        if p.prime != last.0 || p.candidates >= last.1 + 250 {
            eprintln!(
                "  safe prime {} of 2: {} candidates tested",
                p.prime, p.candidates
            );
            last = (p.prime, p.candidates);
        }
    };
    match shoup::generate_safe_primes(bits, &mut progress, &cancel) {
        Ok(primes) => {
            eprintln!("  both safe primes found");
            Ok(primes)
        }
        Err(ThresholdError::Cancelled) => Err(hinted(
            "interrupted: safe-prime generation stopped; nothing was written",
            "run `nkpki ca-init` again to start over",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Sets `cancel` on SIGINT instead of letting it kill the process mid-ceremony. The
/// handler is registered before this returns.
fn watch_interrupt(cancel: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("cannot start the interrupt watcher")?;
    let mut interrupt = {
        let _guard = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot watch for Ctrl-C")?
    };
    std::thread::spawn(move || {
        runtime.block_on(async move {
            if interrupt.recv().await.is_some() {
                cancel.store(true, Ordering::Relaxed);
            }
        });
    });
    Ok(())
}
