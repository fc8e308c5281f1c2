//! Where a token PIN comes from: a file, an opt-in environment variable for automation, or
//! a prompt on the terminal. Never from a command-line value.

use super::HsmError;
use secrecy::SecretString;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// The environment variable that supplies a PIN when set (for services and tests).
pub const PIN_ENV: &str = "NKPKI_PIN";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// First line of a file (mode should be 0600).
    File(PathBuf),
    /// `NKPKI_PIN`.
    Env,
    /// Ask on the terminal.
    Prompt,
}

impl PinSource {
    /// `--pin-file` wins, then `NKPKI_PIN` if set, then the prompt.
    pub fn resolve(pin_file: Option<PathBuf>) -> Self {
        match pin_file {
            Some(p) => PinSource::File(p),
            None if std::env::var_os(PIN_ENV).is_some() => PinSource::Env,
            None => PinSource::Prompt,
        }
    }
}

/// Reads the PIN for `token` from `source`.
pub fn read_pin(source: &PinSource, token: &str) -> Result<SecretString, HsmError> {
    let pin = match source {
        PinSource::File(path) => {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                HsmError::NoPin(format!("cannot read PIN file {}: {e}", path.display()))
            })?);
            Zeroizing::new(
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('\r')
                    .to_owned(),
            )
        }
        PinSource::Env => {
            eprintln!("note: using the PIN from {PIN_ENV} for token {token}");
            Zeroizing::new(
                std::env::var(PIN_ENV)
                    .map_err(|_| HsmError::NoPin(format!("{PIN_ENV} is not valid UTF-8")))?,
            )
        }
        PinSource::Prompt => Zeroizing::new(
            rpassword::prompt_password(format!("PIN for token {token}: ")).map_err(|_| {
                HsmError::NoPin("no terminal to ask on; use --pin-file or NKPKI_PIN".into())
            })?,
        ),
    };
    if pin.is_empty() {
        return Err(HsmError::NoPin(format!(
            "the PIN for token {token} is empty"
        )));
    }
    Ok(SecretString::from(pin.as_str()))
}
