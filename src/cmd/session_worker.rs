//! `nkpki session-worker` (hidden): the one-shot process in which `nkpki serve` keeps one
//! signing session's secrets. Spoken to in frames over standard input and output, never
//! by hand; it logs only to standard error.

use anyhow::{Context, bail};
use std::io::IsTerminal;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit after this many seconds whatever happens (the server sets it from the session's
    /// time to live)
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    lifetime_seconds: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("session-worker is started by `nkpki serve` and speaks only over a pipe");
    }
    // `main` has already disabled core dumps and ptrace; lock memory too where allowed
    let mut warnings = nkpki::harden::process();
    warnings.extend(nkpki::harden::lock_memory().err());
    warnings.extend(nkpki::harden::core_dump_risk());
    for warning in warnings {
        eprintln!("session-worker: warning: {warning}");
    }
    nkpki::worker::exit_after(std::time::Duration::from_secs(args.lifetime_seconds));
    nkpki::worker::run_worker(stdin.lock(), std::io::stdout().lock()).context("session worker")
}
