//! `nkpki audit`: check and export the server's hash-chained audit log.

use anyhow::bail;
use nkpki::store::{Store, verify_chain};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Recompute the chain: report the first edited, deleted or missing entry
    Verify {
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
        data_dir: PathBuf,
    },
    /// Print every entry as JSON lines
    Export {
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
        data_dir: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Sub::Verify { data_dir } => {
            if !data_dir.join("nkpki.sqlite3").exists() {
                bail!("{} holds no nkpki database", data_dir.display());
            }
            let store = Store::open(&data_dir)?;
            match verify_chain(store.conn())? {
                Ok(n) => println!("audit log OK: {n} entries, chain intact"),
                Err(problem) => bail!(
                    "audit log BROKEN at entry {}: {}",
                    problem.seq,
                    problem.what
                ),
            }
        }
        Sub::Export { data_dir } => {
            if !data_dir.join("nkpki.sqlite3").exists() {
                bail!("{} holds no nkpki database", data_dir.display());
            }
            let store = Store::open(&data_dir)?;
            for entry in store.audit_entries()? {
                println!("{}", serde_json::to_string(&entry)?);
            }
        }
    }
    Ok(())
}
