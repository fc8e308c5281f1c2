//! `nkpki revoke`: revoke a serial through an M-of-N session; the session signs a new CRL.

use super::online::{self, ServerArgs};
use nkpki::proto::{CreateSession, SessionKind};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  nkpki revoke --server https://pki.example.org:8443 --ca <CA_ID> --serial 5d4f93… \
    --reason keyCompromise --api-token-file op.token --crl-out crl.pem"
)]
pub struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Serial number of the certificate (hex, as `openssl x509 -serial` prints it)
    #[arg(long)]
    serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise
    #[arg(long, default_value = "unspecified")]
    reason: String,
    /// Write the new CRL (PEM) here
    #[arg(long, value_name = "FILE")]
    crl_out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let client = args.server.operator_client()?;
    let request = CreateSession {
        ca_id: args.server.ca()?.to_owned(),
        kind: SessionKind::Revoke,
        csr_pem: None,
        profile: None,
        days: None,
        serial: Some(args.serial.trim_start_matches("serial=").to_lowercase()),
        reason: Some(args.reason),
    };
    let status = online::run_session(&client, &request, args.server.json)?;
    if let (Some(path), Some(pem)) = (&args.crl_out, &status.crl_pem) {
        nkpki::fsx::write_new(path, pem.as_bytes(), 0o644, true)?;
    }
    if args.server.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "revoked serial {}; {}",
            args.serial,
            status.detail.unwrap_or_default()
        );
    }
    Ok(())
}
