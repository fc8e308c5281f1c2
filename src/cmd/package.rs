//! `nkpki package`: deployment packages from a ceremony's share files.

use super::unseal::UnsealArgs;
use anyhow::{Context, bail};
use nkpki::enrollment::{self, EnrollmentFile};
use nkpki::manifest::Manifest;
use nkpki::package::{self, ServerInfo};
use nkpki::{fsx, offline, seal};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  nkpki package --ceremony ca/ --share ca/shares/NK001.age --identity NK001.key \\\n    \
                        --server-url https://pki.example.org:8443 --out packages/\n\n\
                        Each package is sealed to the holder's age recipient from the manifest, or to a fresh \
                        passphrase. `nkpki ca-init --package` does the same within the ceremony."
)]
pub struct Args {
    /// The ceremony directory (its manifest.json is used)
    #[arg(long, value_name = "DIR")]
    ceremony: PathBuf,
    /// A sealed share file to package (repeat)
    #[arg(long = "share", value_name = "FILE", required = true)]
    shares: Vec<PathBuf>,
    #[command(flatten)]
    unseal: UnsealArgs,
    /// The server URL the agents connect to
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// SHA-256 (hex) of the server's TLS certificate, pinned by the agents
    #[arg(long, value_name = "HEX")]
    server_cert_sha256: Option<String>,
    /// Accept a plain http:// --server-url (loopback, a test bench); refused otherwise
    #[arg(long, requires = "server_url")]
    insecure_http: bool,
    /// Directory for NK001.nkpkg, NK001.png and enrollment.json
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write generated package passphrases to FILE (0600) instead of the terminal
    #[arg(long, value_name = "FILE")]
    passphrases_to: Option<PathBuf>,
}

/// Validates the server options shared by `package` and `ca-init --package`: https, or
/// plain http only with `--insecure-http` (and a loud warning).
pub fn server_info(
    url: Option<String>,
    cert_sha256: Option<String>,
    insecure_http: bool,
) -> anyhow::Result<ServerInfo> {
    let server =
        package::check_server_info(url, cert_sha256, insecure_http).map_err(|e| match e.hint {
            Some(hint) => super::hinted(e.message, hint),
            None => anyhow::anyhow!(e.message),
        })?;
    if let Some(u) = &server.url
        && package::is_plain_http(u)
    {
        eprintln!(
            "WARNING: --server-url {u} is plain http (--insecure-http): anyone on the path \
             between the agents and the server can read and alter what they say; the \
             agents must be started with --insecure-http"
        );
    }
    Ok(server)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let server = server_info(args.server_url, args.server_cert_sha256, args.insecure_http)?;
    let manifest_path = args.ceremony.join("manifest.json");
    let manifest_json = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = Manifest::from_json(&manifest_json)
        .and_then(|m| m.verify())
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
    let mut unsealer = args.unseal.unsealer()?;
    let mut shares = Vec::new();
    for path in &args.shares {
        let armored = super::read_file(path, "share file")?;
        let pass = || unsealer.passphrases.get(path);
        shares.push(offline::open_share(
            &manifest,
            &armored,
            &path.display().to_string(),
            &unsealer.identities,
            pass,
        )?);
    }
    let mut built = Vec::new();
    let mut entries = Vec::new();
    for share in &shares {
        let holder = manifest
            .holder(share.index)
            .with_context(|| format!("no holder for share {}", share.index))?;
        let recipient = match &holder.age_recipient {
            Some(r) => Some(seal::parse_recipient(r)?),
            None => None,
        };
        let b = package::build(
            &manifest_json,
            &manifest,
            share,
            &server,
            recipient.as_ref(),
        )?;
        entries.push(enrollment::sign_entry(&manifest, share, &b.enrollment_code_sha256)?.1);
        built.push(b);
    }
    drop(shares);
    if built.iter().any(|b| b.passphrase.is_some())
        && args.passphrases_to.is_none()
        && !std::io::stderr().is_terminal()
    {
        bail!(
            "some holders have no age_recipient, so their packages get passphrases, but there is no terminal to show them on; pass --passphrases-to FILE"
        );
    }

    // refuse before writing anything: a half-written set of packages helps no one
    let pkg_path = |holder: &str| args.out.join(format!("{holder}.{}", package::EXTENSION));
    if let Some(existing) = built
        .iter()
        .map(|b| pkg_path(&b.holder))
        .find(|p| p.exists())
    {
        bail!(
            "{} already exists; packages are never overwritten (choose another --out)",
            existing.display()
        );
    }
    if let Some(p) = args.passphrases_to.as_ref().filter(|p| p.exists()) {
        bail!(
            "{} already exists; refusing to overwrite passphrases",
            p.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // earlier runs' entries for other holders are kept (each is checked: a tampered file
    // must not pass through this run unnoticed)
    let enrollment_path = args.out.join("enrollment.json");
    let mut enrollment = match std::fs::read_to_string(&enrollment_path) {
        Ok(text) => EnrollmentFile::verify(&text, &manifest)
            .with_context(|| format!("{} (choose another --out)", enrollment_path.display()))?,
        Err(_) => EnrollmentFile::new(manifest.ca_id()),
    };
    for (b, entry) in built.iter().zip(entries) {
        let path = pkg_path(&b.holder);
        fsx::write_new(&path, b.armored.as_bytes(), 0o600, false)
            .with_context(|| format!("cannot write {}", path.display()))?;
        fsx::write_new(
            &args.out.join(format!("{}.png", b.holder)),
            &b.qr_png,
            0o644,
            true,
        )?;
        enrollment.holders.insert(b.holder.clone(), entry);
        println!("{}  fingerprint {}", path.display(), b.fingerprint);
    }
    fsx::write_new(
        &enrollment_path,
        enrollment.to_json().as_bytes(),
        0o644,
        true,
    )?;

    let mut passphrases = Zeroizing::new(String::new());
    for b in &built {
        if let Some(p) = &b.passphrase {
            let _ = writeln!(passphrases, "{}: {}", b.holder, seal::reveal(p));
        }
    }
    if !passphrases.is_empty() {
        match &args.passphrases_to {
            Some(path) => {
                fsx::write_new(path, passphrases.as_bytes(), 0o600, false)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "warning: package passphrases were written in clear to {}",
                    path.display()
                );
            }
            None => eprint!(
                "\nPackage passphrases — shown once; give each to its holder only:\n\n{}\n",
                passphrases.as_str()
            ),
        }
    }
    Ok(())
}
