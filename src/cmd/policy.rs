//! `nkpki policy`: check a CA policy file, show a manifest's policy, set a new one on the
//! ceremony laptop with M shares (a new manifest signed by the CA key), or propose one to
//! a server, where M holders approve it in a `policy` session.

use super::hinted;
use anyhow::Context;
use nkpki::manifest::{Manifest, VerifiedManifest};
use nkpki::policy::Policy;
use nkpki::{fsx, offline};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Check a policy file (and, with --manifest, against that CA's threshold and holders)
    #[command(
        after_help = "Example:\n  nkpki policy check --policy policy.toml --manifest ca/manifest.json"
    )]
    Check {
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
    },
    /// Print the policy a manifest carries (as the manifest's JSON holds it), or say it has
    /// none: a manifest file, or the manifest a server has registered for a CA
    #[command(
        after_help = "Examples:\n  nkpki policy show --manifest ca/manifest.json\n  \
        nkpki policy show --server https://pki.example.org:8443 --ca <CA_ID> --api-token-file op.token \\\n    \
        --out ca/manifest.json"
    )]
    Show {
        #[arg(long, value_name = "FILE", required_unless_present = "server")]
        manifest: Option<PathBuf>,
        #[command(flatten)]
        server: super::online::ServerArgs,
        /// With --server: also write the registered manifest (verified) to FILE, e.g. over
        /// the ceremony laptop's copy after an online policy change (the old one is kept
        /// as FILE.previous)
        #[arg(long, value_name = "FILE", requires = "server")]
        out: Option<PathBuf>,
    },
    /// Online: propose a new policy (or none) for a CA registered on a server; M holders
    /// (or what the current policy asks) approve it on their agents, then the server signs
    /// the new manifest and enforces it at once (needs an API token with role ca-admin)
    #[command(
        after_help = "Example:\n  nkpki policy propose --server https://pki.example.org:8443 \\\n    \
        --ca <CA_ID> --policy policy.toml --api-token-file admin.token"
    )]
    Propose(ProposeArgs),
    /// Offline, with M shares: write the CA's manifest again with a new policy, signed by
    /// the CA key (the previous manifest is kept as manifest.json.previous)
    #[command(after_help = "Example (on the ceremony laptop, no network):\n  \
        nkpki policy set --ca ca/ --policy policy.toml \\\n    \
        --share NK001.age --share NK003.age --share NK004.age --identity holder-keys.txt")]
    Set(SetArgs),
}

#[derive(Debug, clap::Args)]
struct ProposeArgs {
    #[command(flatten)]
    server: super::online::ServerArgs,
    /// The new policy (TOML, docs/policy.md)
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "clear",
        required_unless_present = "clear"
    )]
    policy: Option<PathBuf>,
    /// Remove the policy (back to M approvals, no rule)
    #[arg(long)]
    clear: bool,
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// The ceremony directory holding manifest.json
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// The new policy (TOML, docs/policy.md)
    #[arg(long, value_name = "FILE", conflicts_with = "clear")]
    policy: Option<PathBuf>,
    /// Remove the policy (back to M approvals, no rule)
    #[arg(long)]
    clear: bool,
    /// A sealed share file (repeat)
    #[arg(long = "share", value_name = "FILE")]
    shares: Vec<PathBuf>,
    #[command(flatten)]
    unseal: super::unseal::UnsealArgs,
    /// A token holding a share: label, serial or PKCS#11 URI (repeat)
    #[arg(long = "token", value_name = "TOKEN")]
    tokens: Vec<String>,
    /// One reader: ask for the holders' tokens one after another until the threshold is met
    #[arg(long, conflicts_with = "tokens")]
    insert_tokens: bool,
    #[command(flatten)]
    token_access: super::tokens::TokenAccess,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Check { policy, manifest } => {
            let policy = read_policy(&policy)?;
            match manifest {
                Some(path) => {
                    let m = read_manifest(&path)?;
                    policy
                        .check_for_ca(m.threshold(), &holder_ids(&m))
                        .context("the policy does not fit this CA")?;
                    println!(
                        "policy OK for CA {} ({} of {})",
                        m.ca_id(),
                        m.threshold(),
                        m.body.share_set.total
                    );
                }
                None => {
                    println!("policy OK (format only; give --manifest to check it against a CA)")
                }
            }
            Ok(())
        }
        Command::Show {
            manifest,
            server,
            out,
        } => {
            let m = match manifest {
                Some(path) => read_manifest(&path)?,
                None => {
                    let (raw, verified) = registered_manifest(&server)?;
                    if let Some(out) = out {
                        write_keeping_previous(&out, raw.to_json().as_bytes())?;
                        eprintln!("registered manifest written to {}", out.display());
                    }
                    verified
                }
            };
            match &m.body.policy {
                Some(p) => println!("{}", p.to_json_pretty()),
                None => println!(
                    "# no CA policy: every session needs {} approvals (M), no other rule",
                    m.threshold()
                ),
            }
            Ok(())
        }
        Command::Set(args) => set(args),
        Command::Propose(args) => propose(args),
    }
}

/// The manifest a server has registered for `--ca`, verified here.
fn registered_manifest(
    server: &super::online::ServerArgs,
) -> anyhow::Result<(Manifest, VerifiedManifest)> {
    let client = server.operator_client()?;
    let ca = server.ca()?;
    let manifest: Manifest = client
        .get(&format!("{}/cas/{ca}/manifest", nkpki::proto::API))
        .map_err(super::online::server_error)?;
    let verified = manifest
        .verify()
        .context("the server's manifest does not verify")?;
    anyhow::ensure!(
        verified.ca_id().0 == ca,
        "the server answered with the manifest of another CA"
    );
    eprintln!(
        "manifest of CA {ca} registered on {}: policy revision {}",
        server.url()?,
        verified.body.policy_revision
    );
    Ok((manifest, verified))
}

/// Writes `bytes` to `path`, the file there before (if any) kept as `path.previous`.
fn write_keeping_previous(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.exists() {
        let mut previous = path.as_os_str().to_owned();
        previous.push(".previous");
        let previous = PathBuf::from(previous);
        fsx::write_new(&previous, &super::read_file(path, "manifest")?, 0o644, true)
            .with_context(|| format!("cannot write {}", previous.display()))?;
    }
    fsx::write_new(path, bytes, 0o644, true)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn propose(args: ProposeArgs) -> anyhow::Result<()> {
    use nkpki::proto::{CreateSession, NewPolicy, SessionKind};
    let new_policy = match &args.policy {
        Some(file) => {
            // the server checks it (strictly, and against the CA) and audits a refusal
            let text = String::from_utf8(super::read_file(file, "policy")?).map_err(|_| {
                anyhow::anyhow!("{} is not a policy file (not text)", file.display())
            })?;
            NewPolicy::Toml(text)
        }
        None => NewPolicy::Clear,
    };
    let client = args.server.operator_client()?;
    let request = CreateSession {
        ca_id: args.server.ca()?.to_owned(),
        kind: SessionKind::Policy,
        csr_pem: None,
        csr_pems: Vec::new(),
        profile: None,
        days: None,
        serial: None,
        reason: None,
        new_policy: Some(new_policy),
    };
    let status = super::online::run_session(&client, &request, false)?;
    println!(
        "CA {}: {}",
        status.ca_id,
        status.detail.as_deref().unwrap_or("new CA policy in force")
    );
    Ok(())
}

fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = String::from_utf8(super::read_file(path, "policy")?)
        .map_err(|_| anyhow::anyhow!("{} is not a policy file (not text)", path.display()))?;
    Policy::from_toml(&text).with_context(|| format!("policy {}", path.display()))
}

fn read_manifest(path: &Path) -> anyhow::Result<VerifiedManifest> {
    let text = String::from_utf8(super::read_file(path, "manifest")?)
        .map_err(|_| anyhow::anyhow!("{} is not a manifest (not text)", path.display()))?;
    Manifest::from_json(&text)
        .and_then(|m| m.verify())
        .with_context(|| format!("manifest {}", path.display()))
}

fn holder_ids(m: &VerifiedManifest) -> Vec<String> {
    m.body
        .holders
        .iter()
        .map(|h| h.nitrokey_id.clone())
        .collect()
}

fn set(args: SetArgs) -> anyhow::Result<()> {
    let path = args.ca.join("manifest.json");
    let manifest = read_manifest(&path)?;
    let policy = match (&args.policy, args.clear) {
        (Some(file), _) => {
            let policy = read_policy(file)?;
            policy
                .check_for_ca(manifest.threshold(), &holder_ids(&manifest))
                .with_context(|| format!("policy {}", file.display()))?;
            Some(policy)
        }
        (None, true) => None,
        (None, false) => {
            return Err(hinted(
                "no policy given",
                "--policy FILE sets one, --clear removes it",
            ));
        }
    };
    if args.shares.is_empty() && args.tokens.is_empty() && !args.insert_tokens {
        return Err(hinted(
            "no share given",
            "give --share FILE, --token TOKEN or --insert-tokens (M shares sign the new manifest)",
        ));
    }
    let mut unsealer = args.unseal.unsealer()?;
    let mut shares = Vec::new();
    for file in &args.shares {
        let what = file.display().to_string();
        let armored = super::read_file(file, "share file")?;
        let pass = || unsealer.passphrases.get(file);
        shares.push((
            what.clone(),
            offline::open_share(&manifest, &armored, &what, &unsealer.identities, pass)?,
        ));
        eprintln!("share from {what}: verified against the manifest");
    }
    if args.insert_tokens {
        let needed = manifest.threshold() as usize;
        shares.extend(super::tokens::insert_one_by_one(
            &manifest,
            &args.token_access,
            shares.len(),
            needed,
        )?);
    } else if !args.tokens.is_empty() {
        shares.extend(super::tokens::read_named(
            &manifest,
            &args.token_access,
            &args.tokens,
        )?);
    }
    let mut body = manifest.body.clone();
    body.policy = policy;
    body.policy_revision = body
        .policy_revision
        .checked_add(1)
        .context("the manifest's policy revision is at its limit")?;
    let signed = offline::resign_manifest(&manifest, body, &shares)?;
    drop(shares);
    let json = signed.to_json();
    let previous = args.ca.join("manifest.json.previous");
    write_keeping_previous(&path, json.as_bytes())?;
    println!(
        "Policy {} for CA {}; new manifest signed by the CA key -> {} (previous kept as {})",
        if signed.signed.policy.is_some() {
            "set"
        } else {
            "removed"
        },
        signed.signed.ca_id,
        path.display(),
        previous.display()
    );
    eprintln!(
        "note: a server keeps enforcing the previous policy until the new manifest is \
         registered there (`nkpki serve ca set-policy --manifest FILE`, then a restart), and \
         holders' agents until they are given it (docs/policy.md)"
    );
    Ok(())
}
