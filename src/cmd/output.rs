//! `--json`: one flag and one printer for every command whose result a script reads, so
//! each prints one JSON document on standard output and nothing else there.

use serde::Serialize;
use std::io::Write;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct JsonFlag {
    /// Print the result as one JSON document on standard output (shapes: docs/cli.md,
    /// "JSON output"); progress and errors stay on standard error
    #[arg(long)]
    pub json: bool,
}

/// Prints `value` as pretty JSON and a newline on standard output.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Unix seconds as RFC 3339 UTC (`2026-11-29T17:15:30Z`); `None` when out of range.
pub fn rfc3339(unix: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}
