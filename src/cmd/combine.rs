//! `nkpki combine`: recover a secret from `nkpki split` share files.

use anyhow::{Context, bail};
use nkpki::{fsx, standalone};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use zeroize::Zeroizing;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  nkpki combine shares/share-1 shares/share-4 shares/share-5 --out secret.bin"
)]
pub struct Args {
    /// Share files (at least the threshold)
    #[arg(required = true, value_name = "SHARE")]
    shares: Vec<PathBuf>,
    /// Where to write the secret (default: standard output, only when it is not a terminal)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace --out if it exists
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.out.is_none() && std::io::stdout().is_terminal() {
        bail!(
            "refusing to print a secret on a terminal; use --out FILE or redirect standard output"
        );
    }
    let mut files = Vec::with_capacity(args.shares.len());
    for path in &args.shares {
        let bytes = Zeroizing::new(super::read_file(path, "share file")?);
        let text = String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| {
                anyhow::anyhow!("{} is not an nkpki share file (not text)", path.display())
            })?;
        files.push((path.display().to_string(), text));
    }
    let secret = standalone::combine(&files)?;
    match &args.out {
        Some(path) => fsx::write_new(path, &secret, 0o600, args.force).with_context(|| {
            format!(
                "cannot write {} (use --force to replace it)",
                path.display()
            )
        })?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&secret)?;
            out.flush()?;
        }
    }
    Ok(())
}
