//! `nkpki reshare`: change a CA's holders and threshold on the ceremony laptop, keeping
//! its key and certificate.

use super::hinted;
use anyhow::{Context, bail};
use nkpki::ceremony::{self, Delivery};
use nkpki::manifest::Manifest;
use nkpki::reshare::{self, ReshareRequest};
use nkpki::{fsx, offline, seal};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use time::OffsetDateTime;
use zeroize::Zeroizing;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example (on the ceremony laptop, no network):\n  \
    nkpki reshare --manifest ca/manifest.json --holders new-holders.json --threshold 4 \\\n    \
    --insert-tokens --pin-file pin.txt --package --server-url https://pki.example.org:8443 --out ca-v2/\n\n\
    M shares of the current set rebuild the CA key in memory; a new KEK wraps it for the new \
    holders. The CA key and certificate do not change. Deploy every new package, then remove \
    the old share objects (`nkpki token drill` names a token that still holds one).")]
pub struct Args {
    /// The CA's current manifest.json
    #[arg(long, value_name = "FILE")]
    manifest: PathBuf,
    /// JSON list of the new holders, one share each (3–20), in the format of ca-init's
    #[arg(long, value_name = "FILE")]
    holders: PathBuf,
    /// How many of the new holders must approve a signature (2–15)
    #[arg(long)]
    threshold: u32,
    /// A sealed share file of the current set (repeat)
    #[arg(long = "share", value_name = "FILE")]
    shares: Vec<PathBuf>,
    #[command(flatten)]
    unseal: super::unseal::UnsealArgs,
    /// A token holding a share of the current set: label, serial or PKCS#11 URI (repeat)
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// One reader: ask for the holders' tokens one after another until the threshold is met
    #[arg(long, conflicts_with = "tokens")]
    insert_tokens: bool,
    #[command(flatten)]
    token_access: super::tokens::TokenAccess,
    /// New directory for the new manifest, shares or packages and the reshare log
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write generated passphrases to FILE (mode 0600) instead of showing them on the terminal
    #[arg(long, value_name = "FILE")]
    passphrases_to: Option<PathBuf>,
    /// Replace an existing --passphrases-to file
    #[arg(long)]
    force: bool,
    /// Make deployment packages (packages/NK001.nkpkg, qr/, enrollment.json) instead of
    /// bare share files
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let manifest_text = String::from_utf8(super::read_file(&args.manifest, "manifest")?)
        .map_err(|_| anyhow::anyhow!("{} is not a manifest (not text)", args.manifest.display()))?;
    let current_manifest = Manifest::from_json(&manifest_text)
        .with_context(|| format!("manifest {}", args.manifest.display()))?;
    let current = current_manifest
        .verify()
        .with_context(|| format!("manifest {}", args.manifest.display()))?;
    let holders_text = std::fs::read_to_string(&args.holders)
        .with_context(|| format!("cannot read holders file {}", args.holders.display()))?;
    let holders = ceremony::parse_holders(&holders_text)
        .with_context(|| format!("in {}", args.holders.display()))?;
    let delivery = if args.package {
        Delivery::Packages(super::package::server_info(
            args.server_url.clone(),
            args.server_cert_sha256.clone(),
            args.insecure_http,
        )?)
    } else {
        Delivery::ShareFiles
    };
    let request = ReshareRequest::new(&current, holders, args.threshold, delivery)?;
    if !fsx::is_absent_or_empty(&args.out)? {
        return Err(hinted(
            format!("{} already exists and is not empty", args.out.display()),
            "choose a new --out directory; an earlier ceremony or reshare is never overwritten",
        ));
    }
    if args.shares.is_empty() && args.tokens.is_empty() && !args.insert_tokens {
        return Err(hinted(
            "no share given",
            "give --share FILE, --token TOKEN or --insert-tokens (M shares of the current set)",
        ));
    }
    let need_passphrases = request
        .holders()
        .iter()
        .filter(|h| h.age_recipient.is_none())
        .count();
    if need_passphrases > 0 && args.passphrases_to.is_none() && !std::io::stderr().is_terminal() {
        return Err(hinted(
            format!(
                "{need_passphrases} new holder(s) have no age_recipient, so their shares get \
                 fresh passphrases, but there is no terminal to show them on"
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

    eprintln!(
        "CA:        {} ({}), fingerprint SHA-256 {}",
        nkpki::pki::text::escape(&current.body.ca.name),
        current.ca_id(),
        current.body.certificate_sha256
    );
    eprintln!(
        "Current:   set version {}, {} of {} ({})",
        current.set_version(),
        current.threshold(),
        current.body.share_set.total,
        current
            .body
            .holders
            .iter()
            .map(|h| h.nitrokey_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "New:       set version {}, {} of {} ({})",
        current.set_version() + 1,
        request.threshold(),
        request.holders().len(),
        request
            .holders()
            .iter()
            .map(|h| h.nitrokey_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let started = std::time::Instant::now();
    let mut unsealer = args.unseal.unsealer()?;
    let mut shares = Vec::with_capacity(args.shares.len() + args.tokens.len());
    for path in &args.shares {
        let what = path.display().to_string();
        let armored = super::read_file(path, "share file")?;
        let pass = || unsealer.passphrases.get(path);
        let share = offline::open_share(&current, &armored, &what, &unsealer.identities, pass)?;
        eprintln!(
            "{} from {what}: verified against the manifest",
            share.describe()
        );
        shares.push((what, share));
    }
    if args.insert_tokens {
        let more = super::tokens::insert_one_by_one(
            &current,
            &args.token_access,
            shares.len(),
            usize::from(current.threshold()),
        )?;
        shares.extend(more);
    } else if !args.tokens.is_empty() {
        shares.extend(super::tokens::read_named(
            &current,
            &args.token_access,
            &args.tokens,
        )?);
    }
    let out = reshare::reshare(
        &current_manifest,
        &current,
        &shares,
        &request,
        OffsetDateTime::now_utc(),
    )?;
    drop(shares);

    let staged = fsx::StagedDir::new(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    out.write_to(staged.path())
        .with_context(|| format!("cannot write the reshare into {}", args.out.display()))?;
    let mut passphrases = Zeroizing::new(String::new());
    for share in &out.output.shares {
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
                    "warning: share passphrases were written in clear to {}; hand each to its \
                     holder and delete the file",
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
    staged
        .commit()
        .with_context(|| format!("cannot move the reshare into {}", args.out.display()))?;

    let m = &out.output.manifest.signed;
    println!("CA id:        {} (unchanged)", m.ca_id);
    println!("Fingerprint:  SHA-256 {} (unchanged)", m.certificate_sha256);
    println!(
        "Share set:    version {} ({}), {} of {}",
        m.set_version,
        m.share_set.id(),
        m.share_set.threshold,
        m.share_set.total
    );
    println!(
        "Supersedes:   manifest SHA-256 {}",
        out.record.old.manifest_sha256
    );
    if !out.record.removed_holders.is_empty() {
        println!("Removed:      {}", out.record.removed_holders.join(", "));
    }
    if !out.record.added_holders.is_empty() {
        println!("Added:        {}", out.record.added_holders.join(", "));
    }
    println!("Output:       {}/", args.out.display());
    println!("Took:         {:.2} s", started.elapsed().as_secs_f64());
    eprintln!(
        "next: deploy every new package (`nkpki deploy`), register the new manifest with the \
         server (`nkpki serve ca add`), then remove every old share object: M old shares and \
         the old manifest still open the old wrapped key"
    );
    Ok(())
}
