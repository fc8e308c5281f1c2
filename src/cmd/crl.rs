//! `nkpki crl`: fetch a CA's current CRL, or have a new one signed (M-of-N session).

use super::online::{self, ServerArgs};
use super::output::{JsonFlag, print_json};
use anyhow::Context;
use nkpki::pki::CrlSummary;
use nkpki::proto::{CreateSession, SessionKind, SessionStatus};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  nkpki crl --server https://pki.example.org:8443 --ca <CA_ID> --out crl.pem\n  \
    nkpki crl --server … --ca <CA_ID> --sign --api-token-file op.token --out crl.pem"
)]
pub struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Open a session to sign a fresh CRL (needs an operator token and M approvals)
    #[arg(long)]
    sign: bool,
    /// Where to write the CRL (PEM)
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    output: JsonFlag,
}

/// What `crl --json` prints.
#[derive(Debug, serde::Serialize)]
struct CrlReport<'a> {
    ca_id: &'a str,
    out: String,
    /// A new CRL was signed (`--sign`), rather than the current one fetched.
    signed: bool,
    crl: CrlSummary,
    session: Option<&'a SessionStatus>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ca = args.server.ca()?.to_owned();
    let (pem, status) = if args.sign {
        let client = args.server.operator_client()?;
        let request = CreateSession {
            ca_id: ca.clone(),
            kind: SessionKind::Crl,
            csr_pem: None,
            csr_pems: Vec::new(),
            profile: None,
            days: None,
            serial: None,
            reason: None,
            new_policy: None,
        };
        let status = online::run_session(&client, &request, args.output.json)?;
        let pem = status
            .crl_pem
            .clone()
            .context("the server returned no CRL")?;
        (pem, Some(status))
    } else {
        let client = nkpki::client::Client::new(
            args.server.url()?,
            &args.server.trust(),
            std::time::Duration::from_secs(30),
        )?;
        let bytes = client
            .document(&format!("/crl/{ca}.pem"))
            .map_err(|e| online::Exit(online::EXIT_SERVER, e.to_string()))?;
        (
            String::from_utf8(bytes).context("the CRL is not PEM text")?,
            None,
        )
    };
    nkpki::fsx::write_new(&args.out, pem.as_bytes(), 0o644, true)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if args.output.json {
        print_json(&CrlReport {
            ca_id: &ca,
            out: args.out.display().to_string(),
            signed: args.sign,
            crl: CrlSummary::from_pem(&pem)?,
            session: status.as_ref(),
        })
    } else {
        println!("CRL written to {}", args.out.display());
        Ok(())
    }
}
