//! Command-line options for opening age-sealed files (shares, packages): identity files,
//! a passphrase file for automation, or a prompt. Shared by `sign`, `package` and `deploy`.

use age::secrecy::SecretString;
use anyhow::Context;
use nkpki::seal::Identities;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, Default, clap::Args)]
pub struct UnsealArgs {
    /// An age identity file that opens X25519-sealed files (repeat as needed)
    #[arg(long = "identity", value_name = "FILE")]
    pub identities: Vec<PathBuf>,
    /// File of `NK001: passphrase` lines for passphrase-sealed files, matched by file name
    /// (default: prompt)
    #[arg(long, value_name = "FILE")]
    pub passphrases_from: Option<PathBuf>,
}

/// Opens sealed files with what the options provide.
#[derive(Debug)]
pub struct Unsealer {
    pub identities: Identities,
    pub passphrases: Passphrases,
}

/// Passphrases from a file, or from a prompt.
#[derive(Debug)]
pub struct Passphrases(Option<HashMap<String, SecretString>>);

impl UnsealArgs {
    pub fn unsealer(&self) -> anyhow::Result<Unsealer> {
        let mut identities = Identities::default();
        for path in &self.identities {
            identities.add_file(path)?;
        }
        let passphrases = match &self.passphrases_from {
            Some(p) => Some(read_passphrases(p)?),
            None => None,
        };
        Ok(Unsealer {
            identities,
            passphrases: Passphrases(passphrases),
        })
    }
}

impl Passphrases {
    /// The passphrase for `path`: its line in the passphrase file (by file stem), or a
    /// prompt on the terminal.
    pub fn get(&mut self, path: &Path) -> Option<SecretString> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self.0.as_mut() {
            Some(map) => map.remove(&stem),
            None => rpassword::prompt_password(format!("Passphrase for {}: ", path.display()))
                .ok()
                .map(SecretString::from),
        }
    }
}

/// Reads `NK001: passphrase` lines.
fn read_passphrases(path: &Path) -> anyhow::Result<HashMap<String, SecretString>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
    );
    let mut map = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (id, pass) = line.split_once(':').with_context(|| {
            format!(
                "{} line {}: expected `NK001: passphrase`",
                path.display(),
                n + 1
            )
        })?;
        map.insert(
            id.trim().to_owned(),
            SecretString::from(pass.trim().to_owned()),
        );
    }
    Ok(map)
}
