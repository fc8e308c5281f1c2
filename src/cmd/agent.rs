//! `nkpki agent`: the holder's daemon.

use anyhow::Context;
use nkpki::agent::{self, AgentOptions, Approval, ApprovalRule};
use nkpki::client::Trust;
use nkpki::hsm::PinSource;
use nkpki::package::AgentConfig;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  nkpki agent --config ~/.config/nkpki/<ca-id>/agent.json\n  \
    nkpki agent --config agent.json --pin-file pin --approve-profile server --approve-san-suffix .example.org \\\n    \
    --approve-max-days 90"
)]
pub struct Args {
    /// The configuration written by `nkpki deploy`
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// PKCS#11 module (default: the configuration's, else $NKPKI_PKCS11_MODULE, else OpenSC)
    #[arg(long, value_name = "PATH")]
    module: Option<PathBuf>,
    /// Read the token PIN from the first line of FILE (default: $NKPKI_PIN if set, else a prompt)
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    /// Non-interactive rule: approve certificate requests only with this profile (every
    /// condition given must hold; requests the rule does not cover are declined)
    #[arg(long, value_name = "PROFILE")]
    approve_profile: Option<String>,
    /// Non-interactive rule: approve only if every DNS name and e-mail domain is DOMAIN or
    /// below it (`example.org` and `.example.org` both mean example.org and its subdomains)
    #[arg(long, value_name = "DOMAIN")]
    approve_san_suffix: Option<String>,
    /// Non-interactive rule: allow this subject attribute (TYPE=VALUE, or TYPE=* for any
    /// value; repeat). Without it only a CN equal to one of the certificate's SANs passes
    #[arg(long = "approve-subject", value_name = "TYPE=VALUE", value_parser = parse_attribute)]
    approve_subject: Vec<(String, String)>,
    /// Non-interactive rule: approve at most this validity in days (default 397)
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    approve_max_days: Option<u32>,
    /// Non-interactive: also approve revocations and CRL signing
    #[arg(long)]
    approve_revocations: bool,
    /// Non-interactive: also approve CA policy changes (the new manifest is still checked
    /// against this holder's; without this flag an agent with a rule declines them)
    #[arg(long)]
    approve_policy_changes: bool,
    /// Non-interactive: also approve a reshare of the CA (a new holder set and threshold);
    /// without it an unattended agent declines every reshare
    #[arg(long)]
    approve_reshare: bool,
    /// Trust only this CA certificate (PEM) for the server's TLS certificate
    #[arg(long, value_name = "FILE")]
    server_ca: Option<PathBuf>,
    /// Server URL, overriding the configuration's server_url
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Exit after answering N sessions (for scripts and tests)
    #[arg(long, value_name = "N")]
    max_sessions: Option<usize>,
    /// Accept a plain http:// server URL (loopback, a test bench); refused otherwise
    #[arg(long)]
    insecure_http: bool,
    #[command(flatten)]
    log: super::LogArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    args.log.init();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let mut config: AgentConfig = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not an nkpki agent configuration",
            args.config.display()
        )
    })?;
    if let Some(url) = args.server {
        config.server_url = Some(url);
    }
    let rule_given = args.approve_profile.is_some()
        || args.approve_san_suffix.is_some()
        || args.approve_revocations
        || args.approve_policy_changes
        || args.approve_reshare;
    if !rule_given && (!args.approve_subject.is_empty() || args.approve_max_days.is_some()) {
        return Err(super::hinted(
            "--approve-subject and --approve-max-days only narrow a rule",
            "add --approve-profile PROFILE and/or --approve-san-suffix DOMAIN",
        ));
    }
    let approval = if rule_given {
        Approval::Rule(ApprovalRule {
            profile: args.approve_profile,
            san_suffix: args.approve_san_suffix,
            subject_attributes: args.approve_subject,
            max_days: args.approve_max_days,
            allow_revocation: args.approve_revocations,
            allow_policy_changes: args.approve_policy_changes,
            allow_reshare: args.approve_reshare,
        })
    } else {
        Approval::Interactive
    };
    let trust = match args.server_ca {
        Some(p) => Trust::CaFile(p),
        None => Trust::System,
    };
    agent::run(AgentOptions {
        config,
        module: args.module,
        pin: PinSource::resolve(args.pin_file),
        approval,
        trust,
        max_sessions: args.max_sessions,
        insecure_http: args.insecure_http,
        crl_history: Some(nkpki::agent::crl_history_path(&args.config)),
    })?;
    Ok(())
}

/// `O=Example Org` → ("O", "Example Org").
fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((kind, value)) if !kind.trim().is_empty() && !value.is_empty() => {
            Ok((kind.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not TYPE=VALUE (for example O=Example or OU=*)"
        )),
    }
}
