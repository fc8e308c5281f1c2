//! Operator commands against a server (`sign --server`, `revoke`, `crl --sign`): the
//! connection options, opening a session and following it to its end.

use anyhow::Context;
use nkpki::client::{Client, ClientError, Trust};
use nkpki::proto::{API, CreateSession, SessionState, SessionStatus};
use std::path::PathBuf;
use std::time::Duration;

/// Documented exit codes of online operations.
pub const EXIT_POLICY: u8 = 3;
pub const EXIT_DECLINED: u8 = 4;
pub const EXIT_EXPIRED: u8 = 5;
pub const EXIT_SERVER: u8 = 6;

/// An error that ends the process with a specific exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

/// The environment variable that may hold an operator API token (opt-in, for scripts).
pub const API_TOKEN_ENV: &str = "NKPKI_API_TOKEN";

#[derive(Debug, Default, clap::Args)]
pub struct ServerArgs {
    /// The nkpki server, e.g. https://pki.example.org:8443
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The CA id (from the manifest / `ca-init` output)
    #[arg(long = "ca", value_name = "CA_ID")]
    pub ca: Option<String>,
    /// File holding the operator API token (default: $NKPKI_API_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Trust only this CA certificate (PEM) for the server's TLS certificate
    #[arg(long, value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 (hex of its DER)
    #[arg(long, value_name = "HEX", conflicts_with = "server_ca")]
    pub server_cert_sha256: Option<String>,
}

impl ServerArgs {
    pub fn url(&self) -> anyhow::Result<&str> {
        self.server.as_deref().context("--server URL is required")
    }

    pub fn ca(&self) -> anyhow::Result<&str> {
        self.ca
            .as_deref()
            .context("--ca CA_ID is required with --server")
    }

    pub fn trust(&self) -> Trust {
        match (&self.server_ca, &self.server_cert_sha256) {
            (Some(p), _) => Trust::CaFile(p.clone()),
            (None, Some(h)) => Trust::Pinned(h.clone()),
            _ => Trust::System,
        }
    }

    /// A client authenticated as the operator.
    pub fn operator_client(&self) -> anyhow::Result<Client> {
        let token = match &self.api_token_file {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("cannot read API token file {}", p.display()))?
                .trim()
                .to_owned(),
            None => std::env::var(API_TOKEN_ENV).map_err(|_| {
                super::hinted(
                    "no operator API token",
                    format!("pass --api-token-file FILE or set {API_TOKEN_ENV} (`nkpki serve token create` makes one)"),
                )
            })?,
        };
        Ok(Client::new(self.url()?, &self.trust(), Duration::from_secs(60))?.with_bearer(&token))
    }
}

pub fn server_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Api {
            status: 422,
            message,
            ..
        } => Exit(EXIT_POLICY, format!("refused by policy: {message}")).into(),
        ClientError::Api {
            status: 401,
            message,
            ..
        } => Exit(EXIT_SERVER, format!("not authorised: {message}")).into(),
        other => Exit(EXIT_SERVER, other.to_string()).into(),
    }
}

/// Opens a session and follows it until it ends; returns it when signed.
pub fn run_session(
    client: &Client,
    request: &CreateSession,
    quiet: bool,
) -> anyhow::Result<SessionStatus> {
    let status: SessionStatus = client
        .post(&format!("{API}/sessions"), request)
        .map_err(server_error)?;
    follow_session(client, status, quiet)
}

/// Follows an opened session until it ends; returns it when signed.
pub fn follow_session(
    client: &Client,
    mut status: SessionStatus,
    quiet: bool,
) -> anyhow::Result<SessionStatus> {
    if !quiet {
        eprintln!(
            "session {} opened: {} of the CA's holders must approve within {} s",
            status.session_id,
            status.needed(),
            status.seconds_left
        );
        for line in &status.policy {
            eprintln!("  {}", nkpki::pki::text::escape(line));
        }
        if !status.certificates.is_empty() {
            eprintln!(
                "the holders are shown a batch of {} certificates, exactly as they will be issued",
                status.certificates.len()
            );
        }
        if let Some(view) = &status.certificate {
            eprintln!("the holders are shown this certificate, exactly as it will be issued:");
            for line in view.lines() {
                eprintln!("  {line}");
            }
        }
    }
    let mut last = (usize::MAX, usize::MAX, usize::MAX);
    loop {
        let progress = (
            status.approved.len(),
            status.declined.len(),
            status.refused.len(),
        );
        if progress != last && !quiet {
            eprintln!(
                "  {} of {} approved{}{}{} — {} s left",
                status.approved.len(),
                status.needed(),
                list(" by ", &status.approved),
                list("; declined by ", &status.declined),
                list("; refused: ", &status.refused),
                status.seconds_left
            );
            last = progress;
        }
        match status.state {
            SessionState::Waiting => {}
            SessionState::Signed => return Ok(status),
            SessionState::Expired => {
                return Err(Exit(
                    EXIT_EXPIRED,
                    format!(
                        "the session expired with {} of {} approvals",
                        status.approved.len(),
                        status.needed()
                    ),
                )
                .into());
            }
            SessionState::Failed
                if status
                    .detail
                    .as_deref()
                    .is_some_and(|d| d.starts_with("declined")) =>
            {
                return Err(Exit(
                    EXIT_DECLINED,
                    format!("declined: {}", status.detail.clone().unwrap_or_default()),
                )
                .into());
            }
            other => {
                return Err(Exit(
                    EXIT_SERVER,
                    format!(
                        "the session ended {}: {}",
                        other.as_str(),
                        status.detail.clone().unwrap_or_default()
                    ),
                )
                .into());
            }
        }
        status = client
            .get(&format!("{API}/sessions/{}?wait=20", status.session_id))
            .map_err(server_error)?;
    }
}

fn list(prefix: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{prefix}{}", nkpki::pki::text::escape(&items.join(", ")))
    }
}
