//! `nkpki deploy`: a holder installs a deployment package onto a token.

use super::hinted;
use super::unseal::UnsealArgs;
use anyhow::Context;
use nkpki::hsm::{HsmError, Module, PinSource, TokenSelector, read_pin};
use nkpki::{fsx, offline, package};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  nkpki deploy NK001.nkpkg --token NK001 --expect-fingerprint 'nkpki1:…' --install-systemd\n\n\
                        The fingerprint is the text of the QR code handed over at the ceremony, apart from the package."
)]
pub struct Args {
    /// The package (NK001.nkpkg)
    #[arg(value_name = "PACKAGE")]
    package: PathBuf,
    /// The token: its label (e.g. NK001), its serial, or a PKCS#11 URI
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// PKCS#11 module (default: $NKPKI_PKCS11_MODULE, else OpenSC's opensc-pkcs11.so)
    #[arg(long, value_name = "PATH")]
    module: Option<PathBuf>,
    /// Read the token PIN from the first line of FILE (default: $NKPKI_PIN if set, else a prompt)
    #[arg(long, value_name = "FILE")]
    pin_file: Option<PathBuf>,
    #[command(flatten)]
    unseal: UnsealArgs,
    /// Where to write the agent configuration (default: $XDG_CONFIG_HOME/nkpki or ~/.config/nkpki)
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Also install a systemd user unit for the agent
    #[arg(long)]
    install_systemd: bool,
    /// Where the systemd unit goes (default: ~/.config/systemd/user)
    #[arg(long, value_name = "DIR", requires = "install_systemd")]
    systemd_dir: Option<PathBuf>,
    /// The fingerprint handed over at the ceremony (the QR code's text, `nkpki1:…`): a
    /// package with another one is refused before the token or any file is touched
    #[arg(long, value_name = "FP")]
    expect_fingerprint: Option<String>,
    /// Replace a share of this CA already on the token, and an existing configuration
    #[arg(long)]
    force: bool,
    /// A package of a newer share set (after `nkpki reshare`) replaces the old share
    /// without asking
    #[arg(long)]
    yes: bool,
}

/// The set version of the manifest already deployed in `config_dir`, if any; refuses one
/// of another CA certificate.
fn deployed_version(
    config_dir: &Path,
    new: &nkpki::manifest::VerifiedManifest,
) -> anyhow::Result<Option<u32>> {
    let path = config_dir.join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let Ok(old) = nkpki::manifest::Manifest::from_json(&text).and_then(|m| m.verify()) else {
        return Ok(None);
    };
    if old.ca_id() != new.ca_id() {
        return Ok(None);
    }
    if old.body.certificate_sha256 != new.body.certificate_sha256 {
        return Err(hinted(
            format!(
                "the package's CA certificate ({}) is not the one deployed here ({}): nothing \
                 was written",
                new.body.certificate_sha256, old.body.certificate_sha256
            ),
            "a reshare keeps the CA certificate; call the CA operator",
        ));
    }
    Ok(Some(old.set_version()))
}

/// Asks the holder to confirm replacing the share of set version `old` (unless `--yes`).
fn confirm_replace(old: u32, new: u32, token: &str, yes: bool) -> anyhow::Result<()> {
    eprintln!(
        "token {token} holds this CA's share of set version {old}; the package is set version \
                 {new} (the CA was reshared)"
    );
    if yes {
        return Ok(());
    }
    eprintln!("Replace the old share object with the new share? [y/N]");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("not confirmed: the old share stays on token {token}; nothing was written");
    }
    Ok(())
}

fn config_home() -> anyhow::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_CONFIG_HOME nor HOME is set; pass --config-dir")?;
    Ok(PathBuf::from(home).join(".config"))
}

fn write(path: &Path, bytes: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    fsx::write_new(path, bytes, mode, force)
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let armored = super::read_file(&args.package, "package")?;
    let mut unsealer = args.unseal.unsealer()?;
    let pass = || unsealer.passphrases.get(&args.package);
    let pkg = package::open(&armored, &unsealer.identities, pass)
        .with_context(|| format!("package {}", args.package.display()))?;
    let ca_id = pkg.manifest.ca_id().0.clone();
    let holder = pkg.agent.holder_id.clone();
    eprintln!(
        "package:    {} for holder {holder}, CA {} ({ca_id})",
        args.package.display(),
        pkg.manifest.body.ca.name
    );
    // before any side effect: no share write, no key generation, no file
    match &args.expect_fingerprint {
        Some(expected) if expected.trim() != pkg.fingerprint => {
            return Err(hinted(
                format!(
                    "the package's fingerprint is {}, not the {} you expect: \
                     nothing was written",
                    pkg.fingerprint,
                    expected.trim()
                ),
                "do not use this package; call the CA operator (a package with another \
                 fingerprint was not made for you at the ceremony)",
            ));
        }
        Some(_) => eprintln!("fingerprint: matches the one you expect"),
        None => eprintln!(
            "warning: no --expect-fingerprint; compare the fingerprint printed below with the \
             QR code handed over at the ceremony before you use the token"
        ),
    }
    if let Some(url) = pkg
        .agent
        .server_url
        .as_deref()
        .filter(|u| package::is_plain_http(u))
    {
        eprintln!(
            "warning: the package's server URL {url} is plain http: the agent refuses it \
             unless started with --insecure-http"
        );
    }

    let config_dir = match &args.config_dir {
        Some(d) => d.clone(),
        None => config_home()?.join("nkpki"),
    }
    .join(&ca_id);
    // the agent configuration and the systemd unit refer to it: make it absolute
    let config_dir = std::path::absolute(&config_dir)
        .with_context(|| format!("cannot resolve {}", config_dir.display()))?;
    let agent_path = config_dir.join("agent.json");
    let new_version = pkg.manifest.set_version();
    let deployed = deployed_version(&config_dir, &pkg.manifest)?;
    if let Some(old) = deployed.filter(|old| *old > new_version) {
        return Err(hinted(
            format!(
                "this package is of share set version {new_version}, older than the version {old} \
                 deployed here: nothing was written"
            ),
            "an old package must never replace a newer share; use the newest package",
        ));
    }
    let upgrade = deployed.filter(|old| *old < new_version);
    if agent_path.exists() && !args.force && upgrade.is_none() {
        return Err(hinted(
            format!(
                "{} already exists: this CA is already deployed here",
                agent_path.display()
            ),
            "pass --force to replace the share on the token and the configuration",
        ));
    }

    let module = Module::load(args.module.as_deref())?;
    let token = module.open(&TokenSelector::parse(&args.token)?)?;
    if token.holder_label() != holder {
        return Err(hinted(
            format!(
                "this package is for holder {holder}, but the token is labelled {}",
                token.label()
            ),
            format!("plug in {holder}'s token; a package is deployed only onto its holder's token"),
        ));
    }
    let pin = read_pin(&PinSource::resolve(args.pin_file.clone()), token.label())?;
    token.login(&pin)?;
    drop(pin);

    // a share of an earlier set of this CA on the token: the package supersedes it
    let on_token = match token.read_share(&ca_id) {
        Ok(bytes) => serde_json::from_slice::<nkpki::sss::Share>(&bytes)
            .ok()
            .and_then(|s| pkg.manifest.superseded_version(&s.set_id)),
        Err(_) => None,
    };
    let replace = match on_token.or(upgrade) {
        Some(old) => {
            confirm_replace(old, new_version, token.label(), args.yes)?;
            true
        }
        None => args.force,
    };
    token
        .write_share(&ca_id, pkg.share.to_json().as_bytes(), replace)
        .map_err(|e| match e {
            HsmError::ShareExists { .. } => hinted(
                e,
                "pass --force to replace it (the old share object is deleted)",
            ),
            HsmError::DeviceMemory(_) => hinted(
                e,
                "free space on the token (pkcs11-tool --list-objects) or use another token",
            ),
            other => other.into(),
        })?;
    // read back what the token stored, and check it as a drill would
    let stored = offline::share_from_token(&pkg.manifest, &token)?;
    if stored.index != pkg.share.index {
        anyhow::bail!("the token returned a different share than was written");
    }
    drop(stored);
    let (key, created) = token.ensure_holder_key()?;
    // its public key is what the server will know this holder by: prove it is this key's
    token.prove_holder_key(&key)?;

    std::fs::create_dir_all(&config_dir)
        .with_context(|| format!("cannot create {}", config_dir.display()))?;
    let manifest_path = config_dir.join("manifest.json");
    write(&manifest_path, pkg.manifest_json.as_bytes(), 0o644, true)?;
    let mut agent = pkg.agent.clone();
    agent.token = token.holder_label().to_owned();
    agent.module = args.module.as_ref().map(|m| m.display().to_string());
    agent.manifest = Some(manifest_path.display().to_string());
    let agent_json = zeroize::Zeroizing::new(serde_json::to_string_pretty(&agent)? + "\n");
    write(
        &agent_path,
        agent_json.as_bytes(),
        0o600,
        args.force || replace,
    )?;
    let card = serde_json::json!({
        "nitrokey_id": holder,
        "ca_id": ca_id,
        "token_serial": token.summary().serial,
        "public_key_pem": key.public_key_pem(),
        "fingerprint": key.fingerprint(),
    });
    write(
        &config_dir.join("holder-card.json"),
        (serde_json::to_string_pretty(&card)? + "\n").as_bytes(),
        0o644,
        true,
    )?;
    write(
        &config_dir.join("INSTRUCTIONS.md"),
        pkg.instructions.as_bytes(),
        0o644,
        true,
    )?;

    if args.install_systemd {
        let dir = match &args.systemd_dir {
            Some(d) => d.clone(),
            None => config_home()?.join("systemd/user"),
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("nkpki"));
        // from nkpki's own template: a package never supplies anything executable
        let unit = package::agent_unit(&exe, &config_dir, &holder, &ca_id)?;
        let name = format!("nkpki-agent-{holder}-{}", &ca_id[..8.min(ca_id.len())]);
        let unit_path = dir.join(format!("{name}.service"));
        write(&unit_path, unit.as_bytes(), 0o644, true)?;
        eprintln!(
            "systemd:    {} — put the PIN in {}/pin (0600) and an approval rule in ExecStart, then: \
             systemctl --user enable --now {name}",
            unit_path.display(),
            config_dir.display()
        );
    }

    println!(
        "Share {} of CA {ca_id} (set version {new_version}) written to token {} (serial {})",
        pkg.share.index,
        token.label(),
        token.summary().serial
    );
    println!(
        "Holder key: {} (fingerprint {})",
        if created {
            "generated on the token"
        } else {
            "already present"
        },
        key.fingerprint()
    );
    println!("Agent configuration: {}", agent_path.display());
    println!("Fingerprint: {}", pkg.fingerprint);
    println!(
        "Compare it with the QR code handed over at the ceremony; if they differ, call the CA operator."
    );
    eprintln!(
        "deployed in {:.2} s; delete {} once the drill passes",
        started.elapsed().as_secs_f64(),
        args.package.display()
    );
    Ok(())
}
