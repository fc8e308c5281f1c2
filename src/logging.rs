//! Logs of the long-running roles (`serve`, `agent`, the session worker) through `tracing`:
//! a human format by default, JSON lines for journald/ELK. Lines inside a session's span carry
//! its id. What is logged never includes a secret: no header is recorded, and no share,
//! PIN, bearer or API token is ever a field or part of a message.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// The environment variable that picks the format when `--log-format` is not given, and
/// that the server passes on to its session workers.
pub const FORMAT_VAR: &str = "NKPKI_LOG_FORMAT";
/// The environment variable with a `tracing` filter (`info` when unset, e.g. `nkpki=debug`).
pub const FILTER_VAR: &str = "NKPKI_LOG";

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-01-01T12:00:00.000000Z  INFO session{session=… ca=…}: message`
    #[default]
    Human,
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, `spans`.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?} is not human or json")),
        }
    }
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The format this process logs in (what its session workers are told to use).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Installs the process's logger, once; later calls (and a logger already set) change
/// nothing.
pub fn init(format: LogFormat) {
    if FORMAT.set(format).is_err() {
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env(FILTER_VAR)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
}

/// The span of one signing session's work: every line logged in it carries the session's id
/// (and its CA's).
pub fn session_span(session_id: &str, ca_id: &str) -> tracing::Span {
    tracing::info_span!("session", session = %session_id, ca = %ca_id)
}
