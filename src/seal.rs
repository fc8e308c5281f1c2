//! age encryption of secrets that leave the ceremony: to a holder's X25519 recipient, or to
//! a fresh passphrase. Files are ASCII-armoured so they survive mail and copy-paste, and
//! the reference `age` CLI opens them.

use age::secrecy::{ExposeSecret, SecretString};
use std::io::{Read, Write};
use std::iter;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("invalid age recipient {0:?} (expected an X25519 recipient, age1…)")]
    BadRecipient(String),
    #[error("invalid age identity file {path}: {reason}")]
    BadIdentity { path: String, reason: String },
    #[error("not an age file (or truncated): {0}")]
    NotAge(String),
    #[error("none of the given identities can open it (encrypted to another recipient)")]
    NoMatchingIdentity,
    #[error("it is sealed to an age recipient but no identity was given (--identity FILE)")]
    NeedIdentity,
    #[error("it is passphrase-encrypted but no passphrase was available")]
    NeedPassphrase,
    #[error("wrong passphrase, or the file was altered")]
    WrongPassphrase,
    #[error("the file is corrupt or was altered (authentication failed)")]
    Corrupt,
    #[error("age encryption failed: {0}")]
    Encrypt(String),
}

/// Parses an X25519 recipient (`age1…`).
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, SealError> {
    text.trim()
        .parse()
        .map_err(|_| SealError::BadRecipient(text.to_owned()))
}

fn armored(recipient: &dyn age::Recipient, plaintext: &[u8]) -> Result<String, SealError> {
    let encryptor = age::Encryptor::with_recipients(iter::once(recipient))
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armor)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    writer
        .write_all(plaintext)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    writer
        .finish()
        .and_then(|armor| armor.finish())
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    String::from_utf8(out).map_err(|e| SealError::Encrypt(e.to_string()))
}

/// Encrypts to an X25519 recipient, armoured. age copies the plaintext into its own 64 KiB
/// chunk buffer and frees it without wiping; the binary's zeroizing allocator wipes it
/// (see `main.rs`). The caller keeps `plaintext` in a `Zeroizing` buffer and drops it at once.
pub fn to_recipient(
    recipient: &age::x25519::Recipient,
    plaintext: &[u8],
) -> Result<String, SealError> {
    armored(recipient, plaintext)
}

/// Encrypts to a passphrase (scrypt, work factor calibrated by age to about a second).
pub fn to_passphrase(passphrase: &SecretString, plaintext: &[u8]) -> Result<String, SealError> {
    let recipient = age::scrypt::Recipient::new(passphrase.clone());
    armored(&recipient, plaintext)
}

/// A fresh passphrase: 26 characters from a 32-letter alphabet without look-alikes, in
/// groups of five (130 bits).
pub fn generate_passphrase() -> SecretString {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut random = Zeroizing::new([0u8; 26]);
    rand::Rng::fill_bytes(&mut rand::rng(), random.as_mut());
    let mut text = String::with_capacity(32);
    for (i, b) in random.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            text.push('-');
        }
        text.push(ALPHABET[(b & 31) as usize] as char);
    }
    SecretString::from(text)
}

/// Identities to try on X25519-encrypted files, read from age identity files.
#[derive(Default)]
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} keys, <redacted>)", self.keys.len())
    }
}

impl Identities {
    /// Reads every `AGE-SECRET-KEY-1…` line of an identity file (comments allowed).
    pub fn add_file(&mut self, path: &std::path::Path) -> Result<(), SealError> {
        let bad = |reason: String| SealError::BadIdentity {
            path: path.display().to_string(),
            reason,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
        let before = self.keys.len();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let key = line
                .parse::<age::x25519::Identity>()
                .map_err(|_| bad("a line is not an AGE-SECRET-KEY-1… identity".into()))?;
            self.keys.push(key);
        }
        if self.keys.len() == before {
            return Err(bad("no identity in the file".into()));
        }
        Ok(())
    }

    pub fn add(&mut self, identity: age::x25519::Identity) {
        self.keys.push(identity);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Whether an (armoured or binary) age file is passphrase-encrypted.
pub fn is_passphrase_encrypted(ciphertext: &[u8]) -> Result<bool, SealError> {
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(ciphertext))
        .map_err(|e| SealError::NotAge(e.to_string()))?;
    Ok(decryptor.is_scrypt())
}

type Decryptor<'a> = age::Decryptor<age::armor::ArmoredReader<std::io::BufReader<&'a [u8]>>>;

fn decryptor(ciphertext: &[u8]) -> Result<Decryptor<'_>, SealError> {
    age::Decryptor::new_buffered(age::armor::ArmoredReader::new(ciphertext))
        .map_err(|e| SealError::NotAge(e.to_string()))
}

/// Decrypts with `identities`, mapping age's errors to what the user must hear.
fn decrypt<'a>(
    decryptor: Decryptor<'_>,
    identities: impl Iterator<Item = &'a dyn age::Identity>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let scrypt = decryptor.is_scrypt();
    let mut reader = decryptor.decrypt(identities).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys
        | age::DecryptError::DecryptionFailed
        | age::DecryptError::KeyDecryptionFailed
            if scrypt =>
        {
            SealError::WrongPassphrase
        }
        age::DecryptError::NoMatchingKeys => SealError::NoMatchingIdentity,
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            SealError::NotAge(e.to_string())
        }
        _ => SealError::Corrupt,
    })?;
    let mut plaintext = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut plaintext)
        .map_err(|_| SealError::Corrupt)?;
    Ok(plaintext)
}

/// Opens an age file with the identities, or with the passphrase `passphrase` gives when
/// the file is passphrase-encrypted (asked only then).
pub fn open(
    ciphertext: &[u8],
    identities: &Identities,
    passphrase: impl FnOnce() -> Option<SecretString>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let decryptor = decryptor(ciphertext)?;
    if decryptor.is_scrypt() {
        let identity = age::scrypt::Identity::new(passphrase().ok_or(SealError::NeedPassphrase)?);
        decrypt(decryptor, iter::once(&identity as &dyn age::Identity))
    } else if identities.keys.is_empty() {
        Err(SealError::NeedIdentity)
    } else {
        decrypt(
            decryptor,
            identities.keys.iter().map(|k| k as &dyn age::Identity),
        )
    }
}

/// Opens an age file sealed to one X25519 identity held in memory (a session key).
pub fn open_with_identity(
    ciphertext: &[u8],
    identity: &age::x25519::Identity,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let decryptor = decryptor(ciphertext)?;
    if decryptor.is_scrypt() {
        return Err(SealError::NoMatchingIdentity);
    }
    decrypt(decryptor, iter::once(identity as &dyn age::Identity))
}

/// Opens an X25519-sealed age file with any [`age::Identity`] (the session worker's key,
/// which also checks the header's recipients).
pub fn open_with(
    ciphertext: &[u8],
    identity: &dyn age::Identity,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let decryptor = decryptor(ciphertext)?;
    if decryptor.is_scrypt() {
        return Err(SealError::NoMatchingIdentity);
    }
    decrypt(decryptor, iter::once(identity))
}

/// Exposes a passphrase for display; kept in one place so uses are easy to audit.
pub fn reveal(passphrase: &SecretString) -> &str {
    passphrase.expose_secret()
}
