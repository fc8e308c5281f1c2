//! `nkpki revoke`: revoke a serial through an M-of-N session; the session signs a new CRL.

use super::online::{self, ServerArgs};
use super::output::{JsonFlag, print_json};
use anyhow::Context;
use nkpki::pki::CrlSummary;
use nkpki::proto::{CreateSession, SessionKind, SessionStatus};
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
    #[command(flatten)]
    output: JsonFlag,
}

/// What `revoke --json` prints.
#[derive(Debug, serde::Serialize)]
struct RevokeReport<'a> {
    ca_id: &'a str,
    serial: &'a str,
    reason: &'a str,
    crl_out: Option<String>,
    /// The CRL the session signed, read back.
    crl: Option<CrlSummary>,
    session: &'a SessionStatus,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let client = args.server.operator_client()?;
    let serial = args.serial.trim_start_matches("serial=").to_lowercase();
    let request = CreateSession {
        ca_id: args.server.ca()?.to_owned(),
        kind: SessionKind::Revoke,
        csr_pem: None,
        csr_pems: Vec::new(),
        profile: None,
        days: None,
        serial: Some(serial.clone()),
        reason: Some(args.reason.clone()),
        new_policy: None,
    };
    let status = online::run_session(&client, &request, args.output.json)?;
    if let (Some(path), Some(pem)) = (&args.crl_out, &status.crl_pem) {
        nkpki::fsx::write_new(path, pem.as_bytes(), 0o644, true)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.output.json {
        print_json(&RevokeReport {
            ca_id: &request.ca_id,
            serial: &serial,
            reason: &args.reason,
            crl_out: args.crl_out.as_ref().map(|p| p.display().to_string()),
            crl: status
                .crl_pem
                .as_deref()
                .map(CrlSummary::from_pem)
                .transpose()?,
            session: &status,
        })?;
    } else {
        println!(
            "revoked serial {}; {}",
            args.serial,
            status.detail.unwrap_or_default()
        );
    }
    Ok(())
}
