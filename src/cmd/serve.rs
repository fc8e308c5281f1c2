//! `nkpki serve`: run the orchestrator, and its administration (CAs, API tokens, holders).

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
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
    nkpki serve --listen 0.0.0.0:8443 --data-dir /var/lib/nkpki --tls-cert server.crt --tls-key server.key\n  \
    nkpki serve --config /etc/nkpki/serve.toml --listen 127.0.0.1:9443"
)]
pub struct Args {
    #[command(subcommand)]
    admin: Option<Admin>,
    /// Read options from this TOML file (keys are the flags' names, e.g. `listen`,
    /// `data-dir`); flags and NKPKI_* variables override it
    #[arg(long, value_name = "FILE", env = "NKPKI_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the chosen one is printed)
    #[arg(long, env = "NKPKI_LISTEN", default_value = "127.0.0.1:8443")]
    listen: String,
    /// The server's state directory (SQLite database; nothing secret)
    #[arg(
        long,
        value_name = "DIR",
        env = "NKPKI_DATA_DIR",
        default_value = "/var/lib/nkpki"
    )]
    data_dir: PathBuf,
    /// TLS certificate chain (PEM); without it the server speaks plain HTTP
    #[arg(long, value_name = "FILE", env = "NKPKI_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long, value_name = "FILE", env = "NKPKI_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds a signing session stays open
    #[arg(long, env = "NKPKI_SESSION_TTL", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(10..=86_400))]
    session_ttl: i64,
    /// Most simultaneous connections
    #[arg(long, env = "NKPKI_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Most simultaneous connections from one address (0: no limit); raise it when many
    /// agents share an address (NAT, a reverse proxy)
    #[arg(long, env = "NKPKI_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64)]
    max_connections_per_address: usize,
    /// Also serve /metrics, without authentication, on this address (plain HTTP; for the
    /// monitoring system only). Without it /metrics needs an operator API token
    #[arg(long, value_name = "ADDR", env = "NKPKI_METRICS_LISTEN")]
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
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
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
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
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
        /// Base URL for relying parties, as `serve ca set-urls --public-url` (which can
        /// also set it later)
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// As `serve ca set-urls --ocsp`
        #[arg(long, requires = "public_url")]
        ocsp: bool,
    },
    /// List the registered CAs: certificate, threshold, holders' enrollment and last poll
    List {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[command(flatten)]
        output: super::output::JsonFlag,
    },
    /// Set where relying parties find the CA's CRL, certificate and OCSP responder;
    /// certificates issued from then on carry these URLs
    #[command(after_help = "Example:\n  \
        nkpki serve ca set-urls --data-dir /var/lib/nkpki --ca <CA_ID> --public-url http://pki.example.org --ocsp")]
    SetUrls {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[arg(long, value_name = "CA_ID")]
        ca: String,
        #[command(flatten)]
        urls: UrlArgs,
    },
    /// Register the new manifest `nkpki policy set` made for a registered CA (only its CA
    /// policy may differ); the server enforces it from its next start
    SetPolicy {
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
        data_dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct UrlArgs {
    /// Base URL where this server is reachable by relying parties over plain HTTP (e.g.
    /// http://pki.example.org): certificates carry <URL>/crl/<CA_ID>.crl and
    /// <URL>/ca/<CA_ID>.der (and <URL>/ocsp/<CA_ID> with --ocsp)
    #[arg(long, value_name = "URL")]
    public_url: String,
    /// Certificates also name the CA's OCSP responder (`nkpki ocsp-responder` installs it)
    #[arg(long, requires = "public_url")]
    ocsp: bool,
    /// The OCSP responder answers signed requests only (unsigned ones get sigRequired)
    #[arg(long, requires = "ocsp")]
    ocsp_require_signed: bool,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCmd {
    /// Create an operator API token; it is printed once and stored hashed
    Create {
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// `operator` (sessions, revocations, CRLs) or `ca-admin` (also registers CAs over
        /// the API)
        #[arg(long, value_enum, default_value_t = Role::Operator)]
        role: Role,
    },
    /// List the operators' API tokens, revoked ones too (names, roles, times; never a token)
    List {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/nkpki")]
        data_dir: PathBuf,
        #[command(flatten)]
        output: super::output::JsonFlag,
    },
    /// Revoke an operator's API token (effective at once, also on a running server)
    Revoke {
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
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
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
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
            public_url,
            ocsp,
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
            if let Some(public_url) = public_url {
                let urls = UrlArgs {
                    public_url,
                    ocsp,
                    ocsp_require_signed: false,
                };
                set_urls(&data_dir, &ca_id, &urls)?;
            }
        }
        Some(Admin::Ca(CaCmd::List { data_dir, output })) => {
            super::serve_list::cas(&data_dir, output.json)?;
        }
        Some(Admin::Token(TokenCmd::List { data_dir, output })) => {
            super::serve_list::api_tokens(&data_dir, output.json)?;
        }
        Some(Admin::Ca(CaCmd::SetUrls { data_dir, ca, urls })) => set_urls(&data_dir, &ca, &urls)?,
        Some(Admin::Ca(CaCmd::SetPolicy { data_dir, manifest })) => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let summary = server::update_policy(&data_dir, &text)
                .with_context(|| format!("manifest {}", manifest.display()))?;
            println!("{summary}");
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
            let args = match &args.config {
                Some(path) => with_config_file(path)?,
                None => args,
            };
            let tls = match (args.tls_cert, args.tls_key) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => {
                    return Err(super::hinted(
                        "a TLS certificate needs its key, and a key its certificate",
                        "set both tls-cert and tls-key (flags, NKPKI_TLS_* or the config file), or neither",
                    ));
                }
            };
            args.log.init();
            server::run(ServeOptions {
                listen: args.listen,
                data_dir: args.data_dir,
                tls,
                session_ttl: args.session_ttl,
                max_connections: args.max_connections,
                max_connections_per_address: args.max_connections_per_address,
                metrics_listen: args.metrics_listen,
            })?
        }
    }
    Ok(())
}

/// The serve options again, with the config file's values under the flags and NKPKI_*
/// variables: the command line is parsed a second time with the file's values as defaults.
fn with_config_file(path: &std::path::Path) -> anyhow::Result<Args> {
    let cli = super::Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .context("internal: no serve subcommand")?;
    let defaults = super::config_file::load(serve, path)?;
    let matches = cli
        .mut_subcommand("serve", |serve| defaults.apply(serve))
        .try_get_matches_from(std::env::args_os())?;
    match super::Cli::from_arg_matches(&matches)?.command {
        super::Command::Serve(args) => Ok(args),
        _ => anyhow::bail!("internal: the command line is no longer `serve`"),
    }
}

fn set_urls(data_dir: &std::path::Path, ca_id: &str, urls: &UrlArgs) -> anyhow::Result<()> {
    let set = server::set_ca_urls(
        data_dir,
        ca_id,
        &urls.public_url,
        urls.ocsp,
        urls.ocsp_require_signed,
    )?;
    println!("certificates of CA {ca_id} will carry:");
    for url in set.crl.iter().chain(&set.ca_issuers).chain(&set.ocsp) {
        println!("  {url}");
    }
    Ok(())
}
