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
    /// The session it serves (so that its log lines carry the session's id)
    #[arg(long, value_name = "ID")]
    session: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("session-worker is started by `nkpki serve` and speaks only over a pipe");
    }
    // the server passes its own log format on
    nkpki::logging::init(
        std::env::var(nkpki::logging::FORMAT_VAR)
            .ok()
            .and_then(|f| f.parse().ok())
            .unwrap_or_default(),
    );
    let _in = args
        .session
        .as_deref()
        .map(|id| tracing::info_span!("session-worker", session = %id).entered());
    // `main` has already disabled core dumps and ptrace; lock memory too where allowed
    let mut warnings = nkpki::harden::process();
    warnings.extend(nkpki::harden::lock_memory().err());
    warnings.extend(nkpki::harden::core_dump_risk());
    for warning in warnings {
        tracing::warn!("session-worker: {warning}");
    }
    nkpki::worker::exit_after(std::time::Duration::from_secs(args.lifetime_seconds));
    nkpki::worker::run_worker(stdin.lock(), std::io::stdout().lock()).context("session worker")
}
