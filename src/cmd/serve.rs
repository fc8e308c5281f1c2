//! `nkpki serve`: run the orchestrator, and its administration (CAs, API tokens, holders).

use anyhow::Context;
use nkpki::server::{self, ServeOptions};
use nkpki::store::ApiRole;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  \
    nkpki serve ca add --data-dir /var/lib/nkpki --manifest ca/manifest.json --enrollment ca/enrollment.json \\\n      \
    --expect-fingerprint 3A:5F:…:C2\n  \
    nkpki serve token create --data-dir /var/lib/nkpki --name alice\n  \
    nkpki serve token create --data-dir /var/lib/nkpki --name bob --role ca-admin\n  \
    nkpki serve --listen 0.0.0.0:8443 --data-dir /var/lib/nkpki --tls-cert server.crt --tls-key server.key"
)]
pub struct Args {
    #[command(subcommand)]
    admin: Option<Admin>,
    /// Address to listen on (port 0 picks a free port; the chosen one is printed)
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// The server's state directory (SQLite database; nothing secret)
    #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
    data_dir: PathBuf,
    /// TLS certificate chain (PEM); without it the server speaks plain HTTP
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a signing session stays open
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(i64).range(10..=86_400))]
    session_ttl: i64,
    /// Most simultaneous connections
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// Most simultaneous connections from one address (0: no limit); raise it when many
    /// agents share an address (NAT, a reverse proxy)
    #[arg(long, default_value_t = 64)]
    max_connections_per_address: usize,
    /// Also serve /metrics, without authentication, on this address (plain HTTP; for the
    /// monitoring system only). Without it /metrics needs an operator API token
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    #[command(flatten)]
    log: super::LogArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Admin {
    /// Register CAs
    #[command(subcommand)]
    Ca(CaCmd),
    /// Operators' API tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Holders
    #[command(subcommand)]
    Holder(HolderCmd),
    /// Write a consistent copy of the database (safe while the server runs)
    #[command(after_help = "Example:\n  \
        nkpki serve backup --data-dir /var/lib/nkpki --out /backup/nkpki-$(date +%F).sqlite3")]
    Backup {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        /// The backup file to create (it must not exist)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
enum CaCmd {
    /// Register a CA from its ceremony manifest (and the holders' enrollment codes)
    Add {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// enrollment.json from `ca-init --package` or `nkpki package`
        #[arg(long, value_name = "FILE")]
        enrollment: Option<PathBuf>,
        /// The CA certificate's SHA-256 fingerprint, as `ca-init` printed it (AA:BB:… or 64
        /// hex digits): a manifest whose certificate has another is refused
        #[arg(long, value_name = "SHA256")]
        expect_fingerprint: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum TokenCmd {
    /// Create an operator API token; it is printed once and stored hashed
    Create {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// `operator` (sessions, revocations, CRLs) or `ca-admin` (also registers CAs over
        /// the API)
        #[arg(long, value_enum, default_value_t = Role::Operator)]
        role: Role,
    },
    /// Revoke an operator's API token (effective at once, also on a running server)
    Revoke {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Role {
    Operator,
    CaAdmin,
}

impl From<Role> for ApiRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Operator => ApiRole::Operator,
            Role::CaAdmin => ApiRole::CaAdmin,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum HolderCmd {
    /// Forget a holder's token key and print a new one-time enrollment code
    Reset {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[arg(long)]
        ca: String,
        #[arg(long)]
        holder: String,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.admin {
        Some(Admin::Ca(CaCmd::Add {
            data_dir,
            manifest,
            enrollment,
            expect_fingerprint,
        })) => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let codes = match &enrollment {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let ca_id =
                server::register_ca(&data_dir, &text, codes.as_deref(), &expect_fingerprint)
                    .with_context(|| format!("manifest {}", manifest.display()))?;
            println!("registered CA {ca_id}");
        }
        Some(Admin::Token(TokenCmd::Create {
            data_dir,
            name,
            role,
        })) => {
            let token = server::create_api_token(&data_dir, &name, role.into())?;
            eprintln!(
                "API token for {name} (shown once; store it in a file readable only by its user):"
            );
            println!("{token}");
        }
        Some(Admin::Token(TokenCmd::Revoke { data_dir, name })) => {
            server::revoke_api_token(&data_dir, &name)?;
            println!("revoked the API token of {name}");
        }
        Some(Admin::Holder(HolderCmd::Reset {
            data_dir,
            ca,
            holder,
        })) => {
            let code = server::reset_holder(&data_dir, &ca, &holder)?;
            eprintln!(
                "new one-time enrollment code for {holder} (give it to the holder; put it in agent.json):"
            );
            println!("{code}");
        }
        Some(Admin::Backup { data_dir, out }) => {
            server::backup(&data_dir, &out)
                .with_context(|| format!("backing up {}", data_dir.display()))?;
            println!("backup written to {} (integrity checked)", out.display());
        }
        None => {
            args.log.init();
            server::run(ServeOptions {
                listen: args.listen,
                data_dir: args.data_dir,
                tls: args.tls_cert.zip(args.tls_key),
                session_ttl: args.session_ttl,
                max_connections: args.max_connections,
                max_connections_per_address: args.max_connections_per_address,
                metrics_listen: args.metrics_listen,
            })?
        }
    }
    Ok(())
}
