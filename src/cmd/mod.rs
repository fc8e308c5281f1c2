//! Command-line definitions and dispatch: one file per subcommand, each an `Args` struct
//! and a `run` that turns arguments into validated values and one library call.

mod agent;
mod audit;
mod ca_init;
mod combine;
mod completions;
mod config_file;
mod crl;
mod deploy;
mod ocsp_responder;
mod online;
mod output;
mod package;
mod policy;
mod reshare;
mod reshare_online;
mod revoke;
mod serve;
mod serve_list;
mod session_worker;
mod sign;
mod sign_batch;
mod split;
mod token;
mod tokens;
mod unseal;

use clap::{Parser, Subcommand};
use std::fmt;

#[derive(Debug, Parser)]
#[command(
    name = "nkpki",
    version,
    about = "A certificate authority whose key is split M-of-N between token holders",
    long_about = "nkpki runs a certificate authority whose private key never exists whole at rest: \
                  it is wrapped under a key-encryption key split with Feldman-verifiable Shamir \
                  sharing, and any M of its N holders must bring their share to sign.",
    after_help = "Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad command line; \
                  online operations: 3 refused by policy, 4 declined, 5 expired, 6 server error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a key ceremony: CA key, self-signed certificate, manifest, one sealed share per holder
    CaInit(ca_init::Args),
    /// Split any secret into M-of-N verifiable share files
    Split(split::Args),
    /// Recover a secret from share files made by `nkpki split`
    Combine(combine::Args),
    /// Issue a certificate from a CSR with M of the CA's shares
    Sign(sign::Args),
    /// Holder's token: list, enroll the signing key, list shares, fire drill
    Token(token::Args),
    /// The CA policy: check a policy file, show a manifest's, set a new one with M shares
    Policy(policy::Args),
    /// Build deployment packages (one per holder) from a ceremony's share files
    Package(package::Args),
    /// Holder: install a deployment package onto a token
    Deploy(deploy::Args),
    /// Change a CA's holders and threshold with M current shares, keeping its key and certificate
    Reshare(reshare::Args),
    /// Run the signing server, or administer it (CAs, API tokens, holders)
    Serve(serve::Args),
    /// Holder: the daemon that answers signing sessions with the token's share
    Agent(agent::Args),
    /// Revoke a certificate through an M-of-N session (and sign a new CRL)
    Revoke(revoke::Args),
    /// Fetch the current CRL, or have a new one signed through an M-of-N session
    Crl(crl::Args),
    /// Have the server's delegated OCSP responder certified through an M-of-N session
    OcspResponder(ocsp_responder::Args),
    /// Check or export the server's hash-chained audit log
    Audit(audit::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to standard output
    Completions(completions::Args),
    /// Internal: write the man pages (`make man`)
    #[command(hide = true)]
    Man(completions::ManArgs),
    /// Internal: the one-shot process that holds a signing session's secrets for `serve`
    #[command(hide = true)]
    SessionWorker(session_worker::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CaInit(args) => ca_init::run(args),
        Command::Split(args) => split::run(args),
        Command::Combine(args) => combine::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Token(args) => token::run(args),
        Command::Package(args) => package::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Reshare(args) => reshare::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Revoke(args) => revoke::run(args),
        Command::Crl(args) => crl::run(args),
        Command::OcspResponder(args) => ocsp_responder::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => completions::man(args),
        Command::SessionWorker(args) => session_worker::run(args),
    }
}

/// A suggestion for the user, attached to an error as context and printed after it.
#[derive(Debug)]
pub struct Hint(pub String);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error with a hint on how to fix it.
pub fn hinted(message: impl fmt::Display, hint: impl Into<String>) -> anyhow::Error {
    anyhow::anyhow!("{message}").context(Hint(hint.into()))
}

/// Prints an error's cause chain, then its hint if it has one.
pub fn report(err: &anyhow::Error) {
    let hint = err.downcast_ref::<Hint>().map(|h| h.0.clone());
    let mut messages = err
        .chain()
        .map(|e| e.to_string())
        .filter(|m| Some(m) != hint.as_ref());
    if let Some(first) = messages.next() {
        eprintln!("error: {first}");
    }
    for cause in messages {
        eprintln!("  caused by: {cause}");
    }
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
}

/// Reads a file whole, naming it in the error.
pub fn read_file(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))
}

/// The exit code an error asks for (1 unless it is an online-operation [`online::Exit`]).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<online::Exit>().map_or(1, |e| e.0)
}

/// How a long-running role (`serve`, `agent`) writes its log lines to standard error.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log lines for people (`human`) or one JSON object per line for journald/ELK (`json`);
    /// NKPKI_LOG sets the filter (default `info`)
    #[arg(long, value_enum, env = "NKPKI_LOG_FORMAT", default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

impl LogArgs {
    /// Installs the process's logger in the chosen format.
    pub fn init(&self) {
        nkpki::logging::init(match self.log_format {
            LogFormat::Human => nkpki::logging::LogFormat::Human,
            LogFormat::Json => nkpki::logging::LogFormat::Json,
        });
    }
}
