//! `nkpki audit`: check and export the server's hash-chained audit log.

use super::output::{JsonFlag, print_json, rfc3339};
use anyhow::bail;
use nkpki::store::{AuditEntry, Store, verify_chain};
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
    /// Print every entry as JSON lines (with --json: one JSON array)
    Export {
        #[arg(
            long,
            value_name = "DIR",
            env = "NKPKI_DATA_DIR",
            default_value = "/var/lib/nkpki"
        )]
        data_dir: PathBuf,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// An entry of `audit export --json`: the exported line's fields, and `at` as RFC 3339.
#[derive(Debug, serde::Serialize)]
struct ExportedEntry<'a> {
    #[serde(flatten)]
    entry: &'a AuditEntry,
    time: Option<String>,
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
        Sub::Export { data_dir, output } => {
            if !data_dir.join("nkpki.sqlite3").exists() {
                bail!("{} holds no nkpki database", data_dir.display());
            }
            let store = Store::open(&data_dir)?;
            let entries = store.audit_entries()?;
            if output.json {
                let out: Vec<ExportedEntry<'_>> = entries
                    .iter()
                    .map(|entry| ExportedEntry {
                        entry,
                        time: rfc3339(entry.at),
                    })
                    .collect();
                return print_json(&out);
            }
            for entry in entries {
                println!("{}", serde_json::to_string(&entry)?);
            }
        }
    }
    Ok(())
}
