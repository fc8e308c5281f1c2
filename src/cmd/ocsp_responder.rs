//! `nkpki ocsp-responder`: have the holders approve a certificate for the server's OCSP
//! responder key (made on the server; the session is an ordinary M-of-N one).

use super::online::{self, ServerArgs};
use anyhow::Context;
use nkpki::proto::{CreateSession, SessionKind};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  \
    nkpki ocsp-responder --server https://pki.example.org:8443 --ca <CA_ID> --api-token-file op.token --days 30")]
pub struct Args {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    output: super::output::JsonFlag,
    /// Validity of the responder certificate (at most 30 days: it is never checked for
    /// revocation); renew it before it ends
    #[arg(long, default_value_t = nkpki::pki::OCSP_MAX_DAYS)]
    days: u32,
    /// Also write the responder certificate (PEM) here
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let client = args.server.operator_client()?;
    let request = CreateSession {
        ca_id: args.server.ca()?.to_owned(),
        kind: SessionKind::Issue,
        csr_pem: None,
        csr_pems: Vec::new(),
        profile: Some("ocsp".into()),
        days: Some(args.days),
        serial: None,
        reason: None,
        new_policy: None,
    };
    let status = online::run_session(&client, &request, args.output.json)?;
    if args.output.json {
        super::output::print_json(&status)?;
    }
    let pem = status
        .certificate_pem
        .context("the server returned no certificate")?;
    if let Some(out) = &args.out {
        nkpki::fsx::write_new(out, pem.as_bytes(), 0o644, false)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    eprintln!(
        "the OCSP responder certificate (serial {}) is signed and installed on the server",
        status.serial.unwrap_or_default()
    );
    Ok(())
}
