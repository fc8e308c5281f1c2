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
    the old share objects (`nkpki token drill` names a token that still holds one).\n\n\
    Online (M holders approve on their agents; the server's session worker reshares):\n  \
    nkpki reshare --server https://pki.example.org:8443 --ca CA_ID --api-token-file admin.token \\\n    \
    --holders new-holders.json --threshold 3 --out ca-v2/\n\n\
    Every new holder needs an age_recipient (packages are sealed to it). The old set keeps \
    signing until M′ new holders have deployed their package and their agent has enrolled.")]
pub struct Args {
    /// The CA's current manifest.json (offline)
    #[arg(long, value_name = "FILE", required_unless_present = "server")]
    manifest: Option<PathBuf>,
    /// Online: the nkpki server, e.g. https://pki.example.org:8443 (a `reshare` session
    /// that M holders approve on their agents)
    #[arg(long, value_name = "URL", conflicts_with_all = ["manifest", "shares", "tokens", "insert_tokens", "package", "passphrases_to"])]
    server: Option<String>,
    /// Online: the CA id
    #[arg(
        long = "ca",
        visible_alias = "ca-id",
        value_name = "CA_ID",
        requires = "server"
    )]
    ca: Option<String>,
    /// Online: file holding an API token with role ca-admin (default: $NKPKI_API_TOKEN)
    #[arg(long, value_name = "FILE", requires = "server")]
    api_token_file: Option<PathBuf>,
    /// Online: trust only this CA certificate (PEM) for the server's TLS certificate
    #[arg(long, value_name = "FILE", requires = "server")]
    server_ca: Option<PathBuf>,
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
    /// With --package (or online): the server URL the agents connect to (online, default:
    /// --server)
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// With --package (or online): SHA-256 (hex) of the server's TLS certificate, pinned
    /// by the agents (online, also by this command)
    #[arg(long, value_name = "HEX")]
    server_cert_sha256: Option<String>,
    /// Accept a plain http:// server URL for the agents (loopback, a test bench)
    #[arg(long)]
    insecure_http: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.server.is_some() {
        return super::reshare_online::run(super::reshare_online::Online {
            server: super::online::ServerArgs {
                server: args.server,
                ca: args.ca,
                api_token_file: args.api_token_file,
                server_ca: args.server_ca,
                server_cert_sha256: args.server_cert_sha256.clone(),
            },
            holders: args.holders,
            threshold: args.threshold,
            out: args.out,
            server_url: args.server_url,
            server_cert_sha256: args.server_cert_sha256,
            insecure_http: args.insecure_http,
        });
    }
    if (args.server_url.is_some() || args.server_cert_sha256.is_some()) && !args.package {
        return Err(hinted(
            "--server-url and --server-cert-sha256 go into packages",
            "add --package (offline), or reshare online with --server",
        ));
    }
    let manifest_path = args
        .manifest
        .clone()
        .context("--manifest FILE is required offline")?;
    let manifest_text = String::from_utf8(super::read_file(&manifest_path, "manifest")?)
        .map_err(|_| anyhow::anyhow!("{} is not a manifest (not text)", manifest_path.display()))?;
    let current_manifest = Manifest::from_json(&manifest_text)
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
    let current = current_manifest
        .verify()
        .with_context(|| format!("manifest {}", manifest_path.display()))?;
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
