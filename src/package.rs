//! Deployment packages: everything one holder needs, in one age-encrypted tar file
//! (`NK001.nkpkg`) that the reference `age` CLI also opens. Contents:
//!
//! | entry | what |
//! |---|---|
//! | `share.json` | the holder's share (secret) |
//! | `manifest.json` | the CA's signed public manifest |
//! | `agent.json` | the agent's configuration, with the one-time enrollment code |
//! | `INSTRUCTIONS.md` | what this is and what to do, in plain words |
//! | `fingerprint.png` | QR code of the fingerprint (the one that counts is handed over apart) |
//!
//! Nothing executable comes from a package: `deploy --install-systemd` writes its unit from
//! [`agent_unit`], and the `nkpki-agent.service` that older packages carried is ignored.

use crate::manifest::{Manifest, ManifestError, VerifiedManifest};
use crate::seal::{self, Identities, SealError};
use crate::sss::Share;
use age::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

pub const EXTENSION: &str = "nkpkg";
const MAX_ENTRY: u64 = 4 << 20;
/// A systemd unit that older packages carried: accepted, never used (see [`agent_unit`]).
const IGNORED_UNIT: &str = "nkpki-agent.service";
const ENTRIES: [&str; 6] = [
    "share.json",
    "manifest.json",
    "agent.json",
    "INSTRUCTIONS.md",
    "fingerprint.png",
    IGNORED_UNIT,
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackageError {
    #[error("cannot open the package: {0}")]
    Open(SealError),
    #[error("the package is damaged: {0}")]
    Damaged(String),
    #[error("the package holds an entry with a hostile or unexpected name {0:?}")]
    HostileEntry(String),
    #[error("the package lacks {0}")]
    Missing(&'static str),
    #[error("the package's manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the package is inconsistent: {0}")]
    Inconsistent(String),
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// The agent's configuration, as `deploy` installs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub format: String,
    /// The orchestrating server, e.g. `https://pki.example.org:8443`.
    pub server_url: Option<String>,
    /// SHA-256 of the server's TLS certificate (DER, hex), when pinned.
    pub server_cert_sha256: Option<String>,
    pub ca_id: String,
    pub holder_id: String,
    /// The token holding the share (its label).
    pub token: String,
    /// PKCS#11 module; absent means the default (OpenSC).
    #[serde(default)]
    pub module: Option<String>,
    /// Path of the manifest copy, filled in by `deploy`.
    #[serde(default)]
    pub manifest: Option<String>,
    /// One-time code the agent presents when it first enrolls with the server.
    pub enrollment_code: String,
}

// the enrollment code is a credential: never in `Debug` output
impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("server_url", &self.server_url)
            .field("ca_id", &self.ca_id)
            .field("holder_id", &self.holder_id)
            .field("token", &self.token)
            .field("enrollment_code", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Where the server is and how to pin it; the same for every holder of a CA.
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    pub url: Option<String>,
    pub cert_sha256: Option<String>,
}

/// Why a server URL or pin was refused (the field is the flag's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfoProblem {
    /// `server_url` or `server_cert_sha256`.
    pub field: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

/// Checks the server URL the agents connect to (https://, or plain http:// only with
/// `insecure_http`) and the pin (64 hex digits); shared by `ca-init`, `package` and the
/// generator form.
pub fn check_server_info(
    url: Option<String>,
    cert_sha256: Option<String>,
    insecure_http: bool,
) -> Result<ServerInfo, ServerInfoProblem> {
    let url = url.filter(|u| !u.trim().is_empty());
    let cert_sha256 = cert_sha256.filter(|h| !h.trim().is_empty());
    if let Some(u) = &url {
        if is_plain_http(u) {
            if !insecure_http {
                return Err(ServerInfoProblem {
                    field: "server_url",
                    message: format!("--server-url {u:?} is plain http: the agents would refuse it"),
                    hint: Some(
                        "give the server's https:// URL, or pass --insecure-http for a network you \
                         trust (loopback, a test bench); the agents then need --insecure-http too"
                            .into(),
                    ),
                });
            }
        } else if !u
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            return Err(ServerInfoProblem {
                field: "server_url",
                message: format!("--server-url {u:?} must start with https://"),
                hint: None,
            });
        }
        if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ServerInfoProblem {
                field: "server_url",
                message: format!("--server-url {u:?} contains spaces or control characters"),
                hint: None,
            });
        }
    }
    if let Some(h) = &cert_sha256
        && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(ServerInfoProblem {
            field: "server_cert_sha256",
            message: "--server-cert-sha256 must be 64 hex digits (the SHA-256 of the server \
                      certificate's DER)"
                .into(),
            hint: None,
        });
    }
    Ok(ServerInfo {
        url,
        cert_sha256: cert_sha256.map(|h| h.to_lowercase()),
    })
}

/// A built package, ready to hand over.
#[derive(Debug)]
pub struct BuiltPackage {
    pub holder: String,
    /// Armoured age file.
    pub armored: String,
    /// Set when sealed to a fresh passphrase.
    pub passphrase: Option<SecretString>,
    /// SHA-256 (hex) of the enrollment code: the server-side record.
    pub enrollment_code_sha256: String,
    /// The fingerprint the QR code carries.
    pub fingerprint: String,
    /// The QR code itself, for the ceremony to print and hand over separately.
    pub qr_png: Vec<u8>,
}

/// A random one-time enrollment code, `XXXXX-XXXXX-XXXXX-XXXXX` (100 bits).
pub fn enrollment_code() -> Zeroizing<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut random = Zeroizing::new([0u8; 20]);
    rand::Rng::fill_bytes(&mut rand::rng(), random.as_mut());
    let mut code = Zeroizing::new(String::with_capacity(23));
    for (i, b) in random.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            code.push('-');
        }
        code.push(ALPHABET[(b & 31) as usize] as char);
    }
    code
}

/// Whether `url` is plain `http://` (any case): refused for agents unless the holder
/// passes `--insecure-http`.
pub fn is_plain_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The text a holder compares: CA id, holder, share index, the CA certificate's
/// fingerprint (first 16 hex digits) and the share's public fingerprint.
pub fn fingerprint(manifest: &VerifiedManifest, share: &Share) -> Result<String, PackageError> {
    let share_fp = manifest
        .body
        .share_set
        .fingerprint_of(share)
        .map_err(|e| PackageError::Inconsistent(e.to_string()))?;
    let cert: String = manifest
        .body
        .certificate_sha256
        .chars()
        .filter(|c| *c != ':')
        .take(16)
        .collect();
    Ok(format!(
        "nkpki1:{}:{}:{}:{}:{}",
        manifest.ca_id(),
        share.holder.as_deref().unwrap_or("-"),
        share.index,
        cert.to_lowercase(),
        share_fp
    ))
}

fn instructions(manifest: &VerifiedManifest, share: &Share, server: &ServerInfo) -> String {
    let holder = manifest.holder(share.index);
    let name = holder.map(|h| h.holder_name.as_str()).unwrap_or("holder");
    let id = share.holder.as_deref().unwrap_or("NK???");
    let ca = &manifest.body.ca.name;
    format!(
        "# Your nkpki deployment package — {id}\n\n\
         Hello {name},\n\n\
         This package makes you one of the {total} holders of the certificate authority\n\
         **{ca}** (CA id `{ca_id}`). Its signing key is split so that any {threshold} of the\n\
         {total} holders must approve before a certificate is signed. This package carries\n\
         your share of that key. Keep it secret until it is deployed, then delete it.\n\n\
         ## 1. Read the fingerprint you were handed\n\n\
         At the ceremony you were handed a QR code apart from this package (on paper, or by\n\
         another channel). Read its text with any QR reader (`zbarimg --raw {id}.png`, a\n\
         phone): one line starting with `nkpki1:`. Take it from that QR code, never from a\n\
         file that came with this package: a fingerprint travelling with the package proves\n\
         nothing.\n\n\
         ## 2. Deploy the share onto your Nitrokey\n\n\
         Plug in your token (labelled `{id}`) and run, with that text:\n\n\
         ```sh\n\
         nkpki deploy {id}.nkpkg --token {id} --expect-fingerprint 'nkpki1:…'\n\
         ```\n\n\
         `deploy` compares the package's fingerprint with yours before it touches the token\n\
         or writes any file, and refuses a package that does not match: then do not use it,\n\
         and call the CA operator. You will be asked for the package's passphrase (or give\n\
         `--identity` with your age key) and for your token PIN. The share is written to the\n\
         token as a private object; it is never stored as a file on your computer.\n\
         The CA certificate's SHA-256 fingerprint is `{cert_fp}`.\n\n\
         ## 3. Run the agent\n\n\
         Run `nkpki agent --config <config dir>/{ca_id}/agent.json` (deploy prints the path;\n\
         server: {server}). The agent shows you each signing request and asks for your\n\
         approval and PIN. `deploy --install-systemd` installs a user service for unattended\n\
         use; read the comments at its top first: a service approves only what an explicit\n\
         rule allows.\n\n\
         ## 4. Fire drill\n\n\
         Now, and every few months, check that your token and PIN still work:\n\n\
         ```sh\n\
         nkpki token drill --token {id} --manifest <config dir>/{ca_id}/manifest.json\n\
         ```\n\n\
         ## If something goes wrong\n\n\
         - **Token lost or stolen:** tell the CA operator at once. A token without its PIN is\n\
           useless, and fewer than {threshold} shares cannot sign, but the operator should plan\n\
           a new ceremony, so that the lost share stops counting.\n\
         - **PIN locked:** do not try to reset the token yourself. The operator, with the\n\
           token's SO PIN, can unblock it, or a new ceremony replaces your share.\n\
         - **Wrong fingerprint or a drill that fails:** stop and call the operator.\n",
        total = manifest.body.share_set.total,
        threshold = manifest.threshold(),
        ca_id = manifest.ca_id(),
        cert_fp = manifest.body.certificate_sha256,
        server = server.url.as_deref().unwrap_or("not configured yet"),
    )
}

/// Quotes `path` as one word of a systemd `ExecStart=` line: in double quotes, with `\\`,
/// `"`, `%` (specifiers) and `$` (variables) escaped; control characters are refused.
fn unit_word(path: &Path) -> Result<String, PackageError> {
    let text = path
        .to_str()
        .filter(|t| !t.chars().any(char::is_control))
        .ok_or_else(|| {
            PackageError::Inconsistent(format!(
                "{} cannot appear in a systemd unit",
                path.display()
            ))
        })?;
    let mut word = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => word.push_str("\\\""),
            '\\' => word.push_str("\\\\"),
            '%' => word.push_str("%%"),
            '$' => word.push_str("$$"),
            c => word.push(c),
        }
    }
    word.push('"');
    Ok(word)
}

/// The systemd user unit `deploy --install-systemd` writes, from this fixed template:
/// the binary and the configuration directory are local; only the holder and CA ids come
/// from the package, and they are checked first. Nothing executable comes from a package.
pub fn agent_unit(
    exe: &Path,
    config_dir: &Path,
    holder: &str,
    ca_id: &str,
) -> Result<String, PackageError> {
    if crate::ceremony::NitrokeyId::parse(holder).is_none() {
        return Err(PackageError::Inconsistent(format!(
            "holder id {holder:?} is not NK followed by three digits"
        )));
    }
    if ca_id.is_empty() || !ca_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PackageError::Inconsistent(format!(
            "CA id {ca_id:?} is not alphanumeric"
        )));
    }
    let exe = unit_word(exe)?;
    let config = unit_word(&config_dir.join("agent.json"))?;
    let pin = unit_word(&config_dir.join("pin"))?;
    Ok(format!(
        "# A systemd user unit for the nkpki agent of token {holder}, CA {ca_id}, written by\n\
         # `nkpki deploy` from its own template.\n\
         # As a service the agent has no terminal: it reads the PIN from the file `pin` beside\n\
         # agent.json (one line, mode 0600) and approves only what an explicit rule allows; add\n\
         # the rule you accept (--approve-profile, --approve-san-suffix) to ExecStart, or run\n\
         # `nkpki agent --config …` in a terminal to approve each request yourself.\n\
         [Unit]\n\
         Description=nkpki agent for token {holder} (CA {ca_id})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\n\
         [Service]\n\
         ExecStart={exe} agent --config {config} --pin-file {pin}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         NoNewPrivileges=yes\n\
         PrivateTmp=yes\n\
         LimitCORE=0\n\n\
         [Install]\n\
         WantedBy=default.target\n"
    ))
}

fn append(
    builder: &mut tar::Builder<&mut Vec<u8>>,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), PackageError> {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, data)
        .map_err(|e| PackageError::Damaged(format!("writing {name}: {e}")))
}

/// Builds the package of one holder: sealed to `recipient`, or to a fresh passphrase.
pub fn build(
    manifest_json: &str,
    manifest: &VerifiedManifest,
    share: &Share,
    server: &ServerInfo,
    recipient: Option<&age::x25519::Recipient>,
) -> Result<BuiltPackage, PackageError> {
    let what = share.describe();
    manifest.check_share(share, &what)?;
    let holder = share
        .holder
        .clone()
        .or_else(|| manifest.holder(share.index).map(|h| h.nitrokey_id.clone()))
        .ok_or_else(|| PackageError::Inconsistent("the share names no holder".into()))?;
    let fp = fingerprint(manifest, share)?;
    let code = enrollment_code();
    let agent = AgentConfig {
        format: "nkpki-agent-config/1".into(),
        server_url: server.url.clone(),
        server_cert_sha256: server.cert_sha256.clone(),
        ca_id: manifest.ca_id().0.clone(),
        holder_id: holder.clone(),
        token: holder.clone(),
        module: None,
        manifest: None,
        enrollment_code: code.to_string(),
    };
    let agent_json = Zeroizing::new(serde_json::to_string_pretty(&agent).unwrap_or_default());
    let qr_png = crate::qr::png(&fp).map_err(|e| PackageError::Damaged(e.to_string()))?;

    let mut tar_bytes = Zeroizing::new(Vec::new());
    {
        let mut builder = tar::Builder::new(&mut *tar_bytes);
        append(
            &mut builder,
            "share.json",
            share.to_json().as_bytes(),
            0o600,
        )?;
        append(
            &mut builder,
            "manifest.json",
            manifest_json.as_bytes(),
            0o644,
        )?;
        append(&mut builder, "agent.json", agent_json.as_bytes(), 0o600)?;
        append(
            &mut builder,
            "INSTRUCTIONS.md",
            instructions(manifest, share, server).as_bytes(),
            0o644,
        )?;
        append(&mut builder, "fingerprint.png", &qr_png, 0o644)?;
        builder
            .finish()
            .map_err(|e| PackageError::Damaged(e.to_string()))?;
    }
    let (armored, passphrase) = match recipient {
        Some(r) => (seal::to_recipient(r, &tar_bytes)?, None),
        None => {
            let pass = seal::generate_passphrase();
            (seal::to_passphrase(&pass, &tar_bytes)?, Some(pass))
        }
    };
    Ok(BuiltPackage {
        holder,
        armored,
        passphrase,
        enrollment_code_sha256: sha256_hex(code.as_bytes()),
        fingerprint: fp,
        qr_png,
    })
}

/// An opened and checked package.
#[derive(Debug)]
pub struct OpenedPackage {
    pub share: Share,
    pub manifest_json: String,
    pub manifest: VerifiedManifest,
    pub agent: AgentConfig,
    pub instructions: String,
    pub qr_png: Vec<u8>,
    pub fingerprint: String,
}

fn text(name: &'static str, bytes: Vec<u8>) -> Result<String, PackageError> {
    String::from_utf8(bytes).map_err(|_| PackageError::Damaged(format!("{name} is not text")))
}

/// Opens a package, refuses hostile entries, and checks it: manifest signature, share
/// against the commitments, and that share, agent configuration and manifest agree on
/// the holder.
pub fn open(
    armored: &[u8],
    identities: &Identities,
    passphrase: impl FnOnce() -> Option<SecretString>,
) -> Result<OpenedPackage, PackageError> {
    let plain = seal::open(armored, identities, passphrase).map_err(PackageError::Open)?;
    let mut archive = tar::Archive::new(plain.as_slice());
    let mut found: Vec<(&'static str, Zeroizing<Vec<u8>>)> = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| PackageError::Damaged(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| PackageError::Damaged(e.to_string()))?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = ENTRIES
            .iter()
            .find(|n| **n == raw_name)
            .ok_or_else(|| PackageError::HostileEntry(raw_name.clone()))?;
        if entry.header().entry_type() != tar::EntryType::Regular
            || found.iter().any(|(n, _)| n == name)
        {
            return Err(PackageError::HostileEntry(raw_name));
        }
        let mut data = Zeroizing::new(Vec::new());
        if entry.header().size().unwrap_or(u64::MAX) > MAX_ENTRY {
            return Err(PackageError::Damaged(format!(
                "{name} is larger than {MAX_ENTRY} bytes"
            )));
        }
        entry
            .by_ref()
            .take(MAX_ENTRY)
            .read_to_end(&mut data)
            .map_err(|e| PackageError::Damaged(format!("{name}: {e}")))?;
        found.push((name, data));
    }
    let mut take = |name: &'static str| {
        found
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| found.swap_remove(i).1)
            .ok_or(PackageError::Missing(name))
    };
    let share_bytes = take("share.json")?;
    let share: Share = serde_json::from_slice(&share_bytes)
        .map_err(|e| PackageError::Damaged(format!("share.json: {e}")))?;
    let manifest_json = text("manifest.json", take("manifest.json")?.to_vec())?;
    let manifest = Manifest::from_json(&manifest_json)?.verify()?;
    let agent_bytes = take("agent.json")?;
    let agent: AgentConfig = serde_json::from_slice(&agent_bytes)
        .map_err(|e| PackageError::Damaged(format!("agent.json: {e}")))?;
    let instructions = text("INSTRUCTIONS.md", take("INSTRUCTIONS.md")?.to_vec())?;
    let qr_png = take("fingerprint.png")?.to_vec();
    // packages before 0.2 carried a unit; `deploy` writes its own, so it is ignored
    let _ = take(IGNORED_UNIT);

    manifest.check_share(&share, "the package's share")?;
    let expected = manifest.holder(share.index).ok_or_else(|| {
        PackageError::Inconsistent(format!("no holder for share {}", share.index))
    })?;
    if agent.ca_id != manifest.ca_id().0 || agent.holder_id != expected.nitrokey_id {
        return Err(PackageError::Inconsistent(format!(
            "agent.json names holder {} of CA {}, the share is {}'s of CA {}",
            agent.holder_id,
            agent.ca_id,
            expected.nitrokey_id,
            manifest.ca_id()
        )));
    }
    let fingerprint = fingerprint(&manifest, &share)?;
    Ok(OpenedPackage {
        share,
        manifest_json,
        manifest,
        agent,
        instructions,
        qr_png,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_recognised_in_any_case() {
        assert!(is_plain_http("http://127.0.0.1:8080"));
        assert!(is_plain_http("HTTP://pki.example.org"));
        assert!(!is_plain_http("https://pki.example.org"));
        assert!(!is_plain_http("http"));
    }

    #[test]
    fn the_unit_quotes_local_paths_and_checks_package_ids() {
        let unit = agent_unit(
            Path::new("/opt/nk pki/bin/nkpki"),
            Path::new("/home/a%b/$HOME/\"x\"/cfg"),
            "NK001",
            "0a3ab9b8",
        )
        .unwrap();
        assert!(unit.contains(
            "ExecStart=\"/opt/nk pki/bin/nkpki\" agent --config \"/home/a%%b/$$HOME/\\\"x\\\"/cfg/agent.json\""
        ));
        assert!(!unit.contains("ExecStartPre"));
        let exe = Path::new("/usr/bin/nkpki");
        let dir = Path::new("/home/a/.config/nkpki/0a3a");
        assert!(agent_unit(exe, dir, "NK001\nExecStartPre=/bin/sh", "0a3a").is_err());
        assert!(agent_unit(exe, dir, "NK001", "0a3a\nExecStartPre=x").is_err());
        assert!(agent_unit(exe, Path::new("/home/a\n[Service]"), "NK001", "0a3a").is_err());
    }
}
