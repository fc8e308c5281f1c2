//! `nkpki crl`: fetch a CA's current CRL, or have a new one signed (M-of-N session).

use super::online::{self, ServerArgs};
use anyhow::Context;
use nkpki::proto::{CreateSession, SessionKind};
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ca = args.server.ca()?.to_owned();
    let pem = if args.sign {
        let client = args.server.operator_client()?;
        let request = CreateSession {
            ca_id: ca,
            kind: SessionKind::Crl,
            csr_pem: None,
            profile: None,
            days: None,
            serial: None,
            reason: None,
        };
        let status = online::run_session(&client, &request, args.server.json)?;
        if args.server.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        status.crl_pem.context("the server returned no CRL")?
    } else {
        let client = nkpki::client::Client::new(
            args.server.url()?,
            &args.server.trust(),
            std::time::Duration::from_secs(30),
        )?;
        let bytes = client
            .document(&format!("/crl/{ca}.pem"))
            .map_err(|e| online::Exit(online::EXIT_SERVER, e.to_string()))?;
        String::from_utf8(bytes).context("the CRL is not PEM text")?
    };
    nkpki::fsx::write_new(&args.out, pem.as_bytes(), 0o644, true)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if args.server.json {
        eprintln!("CRL written to {}", args.out.display());
    } else {
        println!("CRL written to {}", args.out.display());
    }
    Ok(())
}
