//! `nkpki split`: any secret into M-of-N share files.

use anyhow::{Context, bail};
use nkpki::{fsx, standalone};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  nkpki split --threshold 3 --shares 5 --in secret.bin --out shares/\n  \
                        nkpki combine shares/share-1 shares/share-4 shares/share-5 --out secret.bin"
)]
pub struct Args {
    /// How many shares recover the secret (M)
    #[arg(long, short = 't', value_parser = clap::value_parser!(u8).range(2..=255))]
    threshold: u8,
    /// How many shares to make (N)
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u8).range(2..=255))]
    shares: u8,
    /// The secret to split (default: standard input)
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Directory for share-1 … share-N (created if absent)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace share files that already exist
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.threshold > args.shares {
        bail!(
            "--threshold {} is more than --shares {}: the secret could never be recovered",
            args.threshold,
            args.shares
        );
    }
    let mut secret = Zeroizing::new(Vec::new());
    match &args.input {
        Some(path) => {
            let mut f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.by_ref()
                .take(standalone::MAX_SECRET as u64 + 1)
                .read_to_end(&mut secret)?;
        }
        None => {
            if std::io::stdin().is_terminal() {
                bail!(
                    "no --in FILE given and standard input is a terminal; pipe the secret in or use --in"
                );
            }
            std::io::stdin()
                .take(standalone::MAX_SECRET as u64 + 1)
                .read_to_end(&mut secret)?;
        }
    }
    if secret.is_empty() {
        bail!("the secret is empty: nothing to split");
    }
    if secret.len() > standalone::MAX_SECRET {
        bail!(
            "the secret is larger than {} bytes; split a key that encrypts it instead",
            standalone::MAX_SECRET
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let paths: Vec<PathBuf> = (1..=args.shares)
        .map(|i| args.out.join(format!("share-{i}")))
        .collect();
    if !args.force
        && let Some(existing) = paths.iter().find(|p| p.exists())
    {
        bail!(
            "{} already exists; refusing to overwrite shares (use --force)",
            existing.display()
        );
    }
    let texts = standalone::split(&secret, args.threshold, args.shares)?;
    drop(secret);
    for (path, text) in paths.iter().zip(&texts) {
        fsx::write_new(path, text.as_bytes(), 0o600, args.force)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "wrote {} shares to {} ({} of them recover the secret; each can be checked on its own)",
        args.shares,
        args.out.display(),
        args.threshold
    );
    Ok(())
}
